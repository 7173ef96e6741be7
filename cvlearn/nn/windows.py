"""Sliding-window graph context: each residue token sees only residues within ±k of it.

For residue t the graph holds the selected atoms of residues ``t-k .. t+k`` (in token order; clipped at the ends)
and only the atoms of residue t are pooled into its token. Cost grows linearly with the number of residues
(a whole-molecule graph with a long cutoff grows faster and mixes far residues into every token).

Batching: every (frame, window) pair is one small graph; they go through the GNN a few thousand atom pairs at a
time (``FeaturizerBase.forward_graphs_bounded``; scalars only when no vectors are asked for), so time and memory stay linear in frames x residues. Windows
have different atom counts, so each is padded to the largest with dummy atoms placed 100 Å apart and ≥ 10⁴ Å from
the window: beyond any cutoff, they exchange no messages (every GNN here is local: messages only along edges
within the cutoff, normalisations per atom), so real atoms get exactly the features of the unpadded window.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from cvlearn.data.selection import residue_index_of_atoms
from cvlearn.nn.tokens import MoleculeTokens

_DUMMY_Z = 1  # any valid element: dummies never touch real atoms
_DUMMY_START_NM = 1000.0
_DUMMY_SPACING_NM = 10.0


def window_atoms(residue_of_atom: Sequence[int], half_width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per token t: (atom indices of the window, boolean mask of the centre residue's atoms within it).

    Parameters
    ----------
    residue_of_atom : sequence of int
        0-based token (residue) index of each selected atom, length ``n_atoms``.
    half_width : int
        Residues on each side of the centre residue (>= 0); windows are clipped at the chain ends.

    Returns
    -------
    list of (ndarray, ndarray)
        One pair per token (``max(residue_of_atom) + 1`` tokens): int64 atom indices ``[n_window]`` into the
        selection and a bool mask ``[n_window]`` marking the centre residue's atoms.
    """
    if isinstance(half_width, bool) or int(half_width) != half_width or half_width < 0:
        raise ValueError(f"half_width: expected an integer >= 0 (residues on each side), found {half_width!r}")
    res = np.asarray(list(residue_of_atom), dtype=np.int64)
    if res.size == 0:
        raise ValueError("residue_of_atom: expected at least one atom, found none")
    n_tokens = int(res.max()) + 1
    out = []
    for t in range(n_tokens):
        idx = np.flatnonzero((res >= t - half_width) & (res <= t + half_width))
        out.append((idx, res[idx] == t))
    return out


class WindowTokens(torch.nn.Module):
    """Per-residue tokens from ±``half_width``-residue windows: ``[B, n_atoms, 3]`` nm → ``[B, n_tokens, F]``.

    ``featurizer`` supplies architecture, weights and the selected atoms' elements (its ``atomic_numbers``);
    ``residue_of_atom`` maps each of its atoms to a 0-based token. Pooling is ``sum`` or ``mean`` over the
    centre residue's atoms. ``atomic_numbers`` and ``residue_of_atom`` keep the whole selection (the inner
    featurizer holds one window's elements), for what :func:`cvlearn.export.export_cv` records.

    Parameters
    ----------
    featurizer : torch.nn.Module
        A :class:`~cvlearn.nn.featurizers.base.FeaturizerBase` over the selected atoms (resized per window).
    residue_of_atom : sequence of int
        0-based token index of each of the featurizer's ``n_atoms`` atoms.
    half_width : int
        Residues on each side of each token's residue.
    reduce : {"sum", "mean"}
        Pooling of the centre residue's atom features into its token.
    """

    def __init__(self, featurizer: torch.nn.Module, residue_of_atom: Sequence[int], half_width: int = 2,
                 reduce: str = "sum"):
        super().__init__()
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce: expected 'sum' or 'mean', found {reduce!r}")
        if len(residue_of_atom) != featurizer.n_atoms:
            raise ValueError(f"residue_of_atom: expected {featurizer.n_atoms} entries (one per featurized atom), "
                             f"found {len(residue_of_atom)}")
        windows = window_atoms(residue_of_atom, half_width)
        self.half_width = int(half_width)
        self.n_atoms = featurizer.n_atoms
        self.n_tokens = len(windows)
        self.hidden_channels = featurizer.hidden_channels
        self.window_size = max(len(idx) for idx, _ in windows)
        z_all = featurizer.atomic_numbers.cpu()
        gather = torch.zeros(self.n_tokens, self.window_size, dtype=torch.long)
        valid = torch.zeros(self.n_tokens, self.window_size, dtype=torch.bool)
        weight = torch.zeros(self.n_tokens, self.window_size)
        z = torch.full((self.n_tokens, self.window_size), _DUMMY_Z, dtype=torch.long)
        for t, (idx, centre) in enumerate(windows):
            n = len(idx)
            gather[t, :n] = torch.as_tensor(idx)
            valid[t, :n] = True
            z[t, :n] = z_all[torch.as_tensor(idx)]
            weight[t, :n] = torch.as_tensor(centre, dtype=torch.float32)
            if reduce == "mean":
                weight[t] /= weight[t].sum()
        offsets = torch.zeros(self.window_size, 3)
        offsets[:, 0] = _DUMMY_START_NM + _DUMMY_SPACING_NM * torch.arange(self.window_size)
        self.register_buffer("gather", gather)
        self.register_buffer("valid", valid)
        self.register_buffer("weight", weight)
        self.register_buffer("window_z", z)
        self.register_buffer("dummy_offsets", offsets)
        # The selection as a whole (not in the state dict): what an export records as the CV's atoms.
        self.register_buffer("atomic_numbers", z_all.clone(), persistent=False)
        self.register_buffer("residue_of_atom", torch.as_tensor(list(residue_of_atom), dtype=torch.long),
                             persistent=False)
        self.n_padded = int((~valid).sum())
        self.featurizer = featurizer.resized(z[0].tolist())  # same weights, graphs of window_size atoms

    def _windows(self, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        """Elements ``[B*T, w]`` and padded window positions ``[B*T, w, 3]``."""
        b, t, w = pos_nm.shape[0], self.n_tokens, self.window_size
        pos = pos_nm.index_select(1, self.gather.reshape(-1)).reshape(b, t, w, 3)
        anchor = pos[:, :, :1, :]  # first atom of each window is always real
        dummies = anchor + self.dummy_offsets.to(pos.dtype).view(1, 1, w, 3)
        pos = torch.where(self.valid.view(1, t, w, 1), pos, dummies)
        z = self.window_z.unsqueeze(0).expand(b, t, w).reshape(b * t, w)
        return z, pos.reshape(b * t, w, 3)

    @torch.jit.export
    def forward_with_vectors(self, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        b, t, w = pos_nm.shape[0], self.n_tokens, self.window_size
        x, vec = self.featurizer.forward_graphs_bounded(*self._windows(pos_nm))
        f = x.shape[-1]
        weight = self.weight.to(x.dtype)
        tokens = torch.einsum("btwf,tw->btf", x.reshape(b, t, w, f), weight)
        vectors = torch.einsum("btwcf,tw->btcf", vec.reshape(b, t, w, 3, f), weight)
        return tokens, vectors

    def forward(self, pos_nm: Tensor) -> Tensor:
        b, t, w = pos_nm.shape[0], self.n_tokens, self.window_size
        x = self.featurizer.scalars_graphs_bounded(*self._windows(pos_nm))
        return torch.einsum("btwf,tw->btf", x.reshape(b, t, w, x.shape[-1]), self.weight.to(x.dtype))


def make_token_embedder(featurizer: torch.nn.Module, topology, atom_indices: Sequence[int], context: str = "molecule",
                        half_width: int = 2, reduce: str = "sum") -> torch.nn.Module:
    """Tokens of the selected atoms: ``context="molecule"`` (one graph) or ``"window"`` (±``half_width`` residues).

    Parameters
    ----------
    featurizer : torch.nn.Module
        Featurizer over the selected atoms.
    topology : mdtraj.Topology or openmm.app.Topology
        Topology holding ``atom_indices``; gives each atom its residue (token).
    atom_indices : sequence of int
        Selected atoms, in the featurizer's order.
    context : {"molecule", "window"}
        One whole-molecule graph (:class:`MoleculeTokens`) or per-residue windows (:class:`WindowTokens`).
    half_width, reduce
        Window half width in residues (``"window"`` only) and token pooling (``"sum"`` or ``"mean"``).

    Returns
    -------
    torch.nn.Module
        Maps positions ``[n_frames, n_atoms, 3]`` nm to tokens ``[n_frames, n_tokens, n_features]``.
    """
    residue_of_atom = residue_index_of_atoms(topology, atom_indices)
    if context == "molecule":
        return MoleculeTokens(featurizer, residue_of_atom, reduce)
    if context == "window":
        return WindowTokens(featurizer, residue_of_atom, half_width, reduce)
    raise ValueError(f"context: expected 'molecule' or 'window', found {context!r}")
