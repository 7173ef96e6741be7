"""Neighbour lists in plain torch, so that featurizers script and load in any process.

torchmd-net's default ``OptimizedDistance`` calls a custom op (``torchmdnet::warp_neighbor_brute_fwd``) that
exists only after ``import torchmdnet``; an exported CV built on it would not load inside OpenMM. Frames of
one molecular system all have the same atoms, so the candidate pairs are fixed and can be enumerated once.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


class FixedTopologyNeighbors(torch.nn.Module):
    """All pairs ``cutoff_lower <= r < cutoff_upper`` (Å) within each frame of ``n_atoms`` atoms, plus self loops.

    Drop-in for torchmd-net's ``OptimizedDistance(loop=True, return_vecs=True)``: same edge convention
    (``edge_vec = pos[i] - pos[j]`` for ``edge_index = [i, j]``, both directions, self loops with zero length),
    with ``pos`` the flattened ``[n_frames * n_atoms, 3]`` positions of consecutive frames.
    Self loops are appended as constants, so the gradient never sees ``|0|``.

    Parameters
    ----------
    n_atoms : int
        Atoms per frame.
    cutoff_lower, cutoff_upper : float
        Distance range of the kept pairs, Å.
    """

    def __init__(self, n_atoms: int, cutoff_lower: float, cutoff_upper: float):
        super().__init__()
        if n_atoms < 1:
            raise ValueError(f"n_atoms must be >= 1, got {n_atoms}")
        self.n_atoms = n_atoms
        self.cutoff_lower = float(cutoff_lower)
        self.cutoff_upper = float(cutoff_upper)
        i, j = torch.meshgrid(torch.arange(n_atoms), torch.arange(n_atoms), indexing="ij")
        off_diagonal = i != j
        # Not saved in checkpoints: derived from n_atoms.
        self.register_buffer("pair_i", i[off_diagonal].contiguous(), persistent=False)
        self.register_buffer("pair_j", j[off_diagonal].contiguous(), persistent=False)

    def forward(
        self, pos: Tensor, batch: Optional[Tensor] = None, box: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Edges of ``pos`` [n_frames * n_atoms, 3] (Å): ``edge_index`` [2, E], ``edge_weight`` [E] (Å) and
        ``edge_vec`` [E, 3] (Å). ``batch`` is ignored (frames are consecutive blocks); a ``box`` raises."""
        if box is not None:
            raise RuntimeError("FixedTopologyNeighbors does not apply periodic boundaries; make the molecule whole first")
        n_frames = pos.shape[0] // self.n_atoms
        if n_frames * self.n_atoms != pos.shape[0]:
            raise RuntimeError(f"expected a multiple of {self.n_atoms} atoms, got {pos.shape[0]}")
        offsets = (torch.arange(n_frames, device=pos.device) * self.n_atoms).unsqueeze(1)
        src = (self.pair_i.unsqueeze(0) + offsets).reshape(-1)
        dst = (self.pair_j.unsqueeze(0) + offsets).reshape(-1)
        vec = pos.index_select(0, src) - pos.index_select(0, dst)
        dist = torch.linalg.vector_norm(vec, dim=1)
        keep = (dist < self.cutoff_upper) & (dist >= self.cutoff_lower)
        loops = torch.arange(pos.shape[0], device=pos.device)
        edge_index = torch.cat([torch.stack([src[keep], dst[keep]]), torch.stack([loops, loops])], dim=1)
        edge_weight = torch.cat([dist[keep], torch.zeros(pos.shape[0], dtype=pos.dtype, device=pos.device)])
        edge_vec = torch.cat([vec[keep], torch.zeros(pos.shape[0], 3, dtype=pos.dtype, device=pos.device)])
        return edge_index, edge_weight, edge_vec
