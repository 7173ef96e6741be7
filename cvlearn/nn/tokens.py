"""Atoms → per-residue tokens: the unit that token mixers and VAMP heads see."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def residue_index_of_atoms(topology, atom_indices: Sequence[int]) -> list[int]:
    """0-based token index of each selected atom: residues renumbered in order of first appearance.

    ``topology`` is an mdtraj or OpenMM topology; residues without selected atoms get no token.
    """
    atoms = list(topology.atoms() if callable(topology.atoms) else topology.atoms)  # OpenMM method, mdtraj property
    order: dict[int, int] = {}
    out = []
    for i in atom_indices:
        res = atoms[i].residue.index
        out.append(order.setdefault(res, len(order)))
    return out


class ResidueTokens(torch.nn.Module):
    """Pool per-atom features ``[n_frames, n_atoms, F]`` into per-residue tokens ``[n_frames, n_tokens, F]``."""

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
        shape = (atom_features.shape[0], self.n_tokens, atom_features.shape[2])
        tokens = torch.zeros(shape, dtype=atom_features.dtype, device=atom_features.device)
        tokens = tokens.index_add(1, self.index, atom_features)
        return tokens * self.scale.to(atom_features.dtype).view(1, -1, 1)


class MoleculeTokens(torch.nn.Module):
    """Whole molecule as one graph: featurize the selected atoms, pool per residue (scalars and vectors).

    ``forward(pos_nm [B, n_atoms, 3]) -> [B, n_tokens, F]``; ``forward_with_vectors`` adds ``[B, n_tokens, 3, F]``.
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
        x, vec = self.featurizer.forward_with_vectors(pos_nm)
        b, n, _, f = vec.shape
        vec = self.pool(vec.reshape(b, n, 3 * f)).reshape(b, self.n_tokens, 3, f)
        return self.pool(x), vec

    def forward(self, pos_nm: Tensor) -> Tensor:
        return self.pool(self.featurizer(pos_nm))
