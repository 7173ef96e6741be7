"""What every featurizer shares: atomic numbers from the topology, the nm → Å edge, and the batched entry point.

A featurizer holds ``n_atoms`` atomic numbers and a GNN (``.gnn``). ``forward_graphs(z [G, n], pos_nm [G, n, 3])``
runs G graphs of ``n`` atoms each (their own elements) in one GNN call; ``forward`` / ``forward_with_vectors``
are that call with the featurizer's own elements, in slices of bounded size (``forward_graphs_bounded``).
Windowed tokens use ``forward_graphs_bounded`` with padded windows.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from cvlearn.units import ANGSTROM_PER_NM

# Atom pairs (graphs x atoms²) per GNN call. Past a few thousand pairs the per-edge tensors outgrow the CPU caches
# and time per edge rises: ViSNet (6 x 64) on λ6-85 windows of 49 atoms, 1 thread, measured 26-28 ms/window at
# 1-16 windows per call, 33 at 42, 81 at 168. Slicing bounds the memory of a batch too.
MAX_PAIRS_PER_CALL = 4096


def checked_atomic_numbers(atomic_numbers: Sequence[int], max_z: int) -> Tensor:
    """Atomic numbers as a long tensor, checked against the embedding table, so a bad element fails before the GNN.

    Parameters
    ----------
    atomic_numbers : sequence of int
        One element per atom, n_atoms of them.
    max_z : int
        Size of the GNN's element embedding table; valid numbers are 1..max_z-1.

    Returns
    -------
    Tensor
        Long tensor [n_atoms].
    """
    z = torch.as_tensor(list(atomic_numbers), dtype=torch.long)
    if z.ndim != 1 or z.numel() == 0:
        raise ValueError(f"atomic_numbers must be a non-empty 1-D sequence, got shape {tuple(z.shape)}")
    if int(z.min()) < 1 or int(z.max()) >= max_z:
        raise ValueError(f"atomic_numbers must lie in [1, {max_z}), got {z.tolist()}")
    return z


def seeded(seed: int | None, build):
    """Build a module with a fixed seed without disturbing the caller's random stream.

    Parameters
    ----------
    seed : int or None
        Seed of the initial weights; None uses (and advances) the global stream.
    build : callable
        Zero-argument constructor.

    Returns
    -------
    object
        What ``build`` returns.
    """
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return build()


class FeaturizerBase(torch.nn.Module):
    """What every featurizer shares, so tokens, windows and exports treat ET, ViSNet and TensorNet alike.

    Subclasses implement :meth:`forward_graphs`; positions come in as nm and are converted to Å inside.

    Attributes
    ----------
    atomic_numbers : Tensor
        Buffer ``[n_atoms]`` of the featurized atoms' elements.
    n_atoms, hidden_channels : int
        Atom count and per-atom feature width (= n_features).
    config
        The architecture dataclass (e.g. :class:`ETConfig`).
    gnn : torch.nn.Module
        The representation model, whose state dict checkpoints hold.
    """

    def _init_common(self, atomic_numbers: Sequence[int], config, max_z: int, hidden_channels: int) -> None:
        z = checked_atomic_numbers(atomic_numbers, max_z)
        self.config = config
        self.n_atoms = int(z.numel())
        self.hidden_channels = int(hidden_channels)
        self.angstrom_per_nm = ANGSTROM_PER_NM  # an attribute, so TorchScript carries the constant
        self.max_pairs_per_call = MAX_PAIRS_PER_CALL
        self.register_buffer("atomic_numbers", z)

    def forward_graphs(self, z: Tensor, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        """Run G graphs of n atoms each in one GNN call.

        Parameters
        ----------
        z : Tensor
            Atomic numbers [G, n] (each graph its own elements; n == ``n_atoms``).
        pos_nm : Tensor
            Positions [G, n, 3], nm.

        Returns
        -------
        scalars : Tensor
            [G, n, n_features].
        vectors : Tensor
            Equivariant vectors [G, n, 3, n_features].
        """
        raise NotImplementedError

    def _graphs_per_call(self, n_atoms: int) -> int:
        return max(1, self.max_pairs_per_call // (n_atoms * n_atoms))

    def scalars_graphs(self, z: Tensor, pos_nm: Tensor) -> Tensor:
        """Scalars only; GNNs that can skip work nobody reads (the last layer's vector update) override it."""
        return self.forward_graphs(z, pos_nm)[0]

    def forward_graphs_bounded(self, z: Tensor, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        """``forward_graphs`` in slices of at most ``max_pairs_per_call`` atom pairs (one graph at least)."""
        per_call = self._graphs_per_call(z.shape[1])
        if z.shape[0] <= per_call:
            return self.forward_graphs(z, pos_nm)
        xs: List[Tensor] = []
        vs: List[Tensor] = []
        for start in range(0, z.shape[0], per_call):
            x, v = self.forward_graphs(z[start:start + per_call], pos_nm[start:start + per_call])
            xs.append(x)
            vs.append(v)
        return torch.cat(xs), torch.cat(vs)

    def scalars_graphs_bounded(self, z: Tensor, pos_nm: Tensor) -> Tensor:
        """``scalars_graphs`` in the same bounded slices."""
        per_call = self._graphs_per_call(z.shape[1])
        if z.shape[0] <= per_call:
            return self.scalars_graphs(z, pos_nm)
        return torch.cat([self.scalars_graphs(z[start:start + per_call], pos_nm[start:start + per_call])
                          for start in range(0, z.shape[0], per_call)])

    @torch.jit.export
    def forward_with_vectors(self, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        """Scalars [n_frames, n_atoms, n_features] and equivariant vectors [n_frames, n_atoms, 3, n_features]
        from ``pos_nm`` [n_frames, n_atoms, 3] (nm)."""
        z = self.atomic_numbers.unsqueeze(0).expand(pos_nm.shape[0], self.n_atoms)
        return self.forward_graphs_bounded(z, pos_nm)

    def forward(self, pos_nm: Tensor) -> Tensor:
        """Embeddings [n_frames, n_atoms, n_features] from ``pos_nm`` [n_frames, n_atoms, 3] (nm)."""
        z = self.atomic_numbers.unsqueeze(0).expand(pos_nm.shape[0], self.n_atoms)
        return self.scalars_graphs_bounded(z, pos_nm)

    def resized(self, atomic_numbers: Sequence[int]):
        """The same architecture and weights for another atom list (e.g. padded sliding windows).

        Parameters
        ----------
        atomic_numbers : sequence of int
            Elements of the new atom list.

        Returns
        -------
        FeaturizerBase
            A new featurizer of the same class, weights copied, on this one's device and dtype.
        """
        other = type(self)(atomic_numbers, self.config, seed=None)
        other.gnn.load_state_dict(self.gnn.state_dict(), strict=True)
        return other.to(self.atomic_numbers.device).to(next(self.gnn.parameters()).dtype)
