"""Atoms → per-residue tokens: the unit that token mixers and VAMP heads see."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


class ResidueTokens(torch.nn.Module):
    """Pool per-atom features into per-residue tokens: a fixed index map, no parameters, exportable.

    Parameters
    ----------
    residue_of_atom : sequence of int
        Token index of each atom (see :func:`cvlearn.data.selection.residue_index_of_atoms`), contiguous from 0.
    reduce : {"sum", "mean"}
        Sum or mean over each token's atoms.
    """

    def __init__(self, residue_of_atom: Sequence[int], reduce: str = "sum"):
        super().__init__()
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        index = torch.as_tensor(list(residue_of_atom), dtype=torch.long)
        if index.numel() == 0 or int(index.min()) < 0:
            raise ValueError("residue_of_atom must be a non-empty list of 0-based token indices")
        self.n_tokens = int(index.max()) + 1
        counts = torch.bincount(index, minlength=self.n_tokens)
        if bool(torch.any(counts == 0)):
            raise ValueError(f"token indices must be contiguous from 0; empty tokens in {index.tolist()}")
        self.register_buffer("index", index)
        scale = 1.0 / counts.double() if reduce == "mean" else torch.ones(self.n_tokens, dtype=torch.float64)
        self.register_buffer("scale", scale.float())
        self.reduce = reduce

    def forward(self, atom_features: Tensor) -> Tensor:
        """Pool ``atom_features`` [n_frames, n_atoms, n_features] into tokens [n_frames, n_tokens, n_features]."""
        shape = (atom_features.shape[0], self.n_tokens, atom_features.shape[2])
        tokens = torch.zeros(shape, dtype=atom_features.dtype, device=atom_features.device)
        tokens = tokens.index_add(1, self.index, atom_features)
        return tokens * self.scale.to(atom_features.dtype).view(1, -1, 1)


class MoleculeTokens(torch.nn.Module):
    """Whole molecule as one graph: featurize the selected atoms, pool per residue (scalars and vectors).

    The simplest token context: every atom sees every other atom within the featurizer's cutoff. For long
    chains use the ±k-residue windows of :mod:`cvlearn.nn.windows`.

    Parameters
    ----------
    featurizer : torch.nn.Module
        A featurizer of the selected atoms (``n_atoms``, ``hidden_channels``; nm in, Å inside).
    residue_of_atom : sequence of int
        Token index of each featurized atom, length ``featurizer.n_atoms``.
    reduce : {"sum", "mean"}
        Pooling over each token's atoms.
    """

    def __init__(self, featurizer: torch.nn.Module, residue_of_atom: Sequence[int], reduce: str = "sum"):
        super().__init__()
        if len(residue_of_atom) != featurizer.n_atoms:
            raise ValueError(f"residue_of_atom: expected {featurizer.n_atoms} entries (one per featurized atom), "
                             f"found {len(residue_of_atom)}")
        self.featurizer = featurizer
        self.pool = ResidueTokens(residue_of_atom, reduce)
        self.n_tokens = self.pool.n_tokens
        self.n_atoms = featurizer.n_atoms
        self.hidden_channels = featurizer.hidden_channels

    @torch.jit.export
    def forward_with_vectors(self, pos_nm: Tensor):
        """Tokens [n_frames, n_tokens, n_features] and pooled equivariant vectors [n_frames, n_tokens, 3, n_features]
        from ``pos_nm`` [n_frames, n_atoms, 3] (nm)."""
        x, vec = self.featurizer.forward_with_vectors(pos_nm)
        b, n, _, f = vec.shape
        vec = self.pool(vec.reshape(b, n, 3 * f)).reshape(b, self.n_tokens, 3, f)
        return self.pool(x), vec

    def forward(self, pos_nm: Tensor) -> Tensor:
        """Tokens [n_frames, n_tokens, n_features] from ``pos_nm`` [n_frames, n_atoms, 3] (nm)."""
        return self.pool(self.featurizer(pos_nm))
