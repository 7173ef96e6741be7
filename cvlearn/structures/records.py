"""One record for every structure dataset, and the batches the GNN trainers consume.

Readers (extxyz, xxMD, SDF, trajectory frames) yield ``Structure`` records in the dataset's own units, Å and eV,
as the DFT world writes them; trainers turn lists of records into padded-free graph batches with ``collate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Structure:
    """One molecular geometry; energy (eV) and forces (eV/Å) when labelled.

    Parameters
    ----------
    numbers : np.ndarray
        ``[n_atoms]`` int atomic numbers.
    positions_angstrom : np.ndarray
        ``[n_atoms, 3]`` float64 positions (Å).
    energy_ev : float or None
        Energy (eV).
    forces_ev_per_angstrom : np.ndarray or None
        ``[n_atoms, 3]`` float64 forces (eV/Å).
    source : str
        File and index, for error messages.
    """

    numbers: np.ndarray  # int [n_atoms] atomic numbers
    positions_angstrom: np.ndarray  # float64 [n_atoms, 3]
    energy_ev: Optional[float] = None
    forces_ev_per_angstrom: Optional[np.ndarray] = None  # float64 [n_atoms, 3]
    source: str = ""  # file and index, for error messages

    def __post_init__(self):
        n = len(self.numbers)
        if np.shape(self.positions_angstrom) != (n, 3):
            raise ValueError(f"{self.source or 'structure'}: positions must be [{n}, 3] for {n} atomic numbers, "
                             f"found {np.shape(self.positions_angstrom)}")
        if self.forces_ev_per_angstrom is not None and np.shape(self.forces_ev_per_angstrom) != (n, 3):
            raise ValueError(f"{self.source or 'structure'}: forces must be [{n}, 3], "
                             f"found {np.shape(self.forces_ev_per_angstrom)}")

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)


class GraphBatch(NamedTuple):
    """Concatenated molecules: ``z [N]``, ``pos [N, 3]`` (Å), ``batch [N]`` graph index, optional labels.

    One flat graph list so a GNN runs molecules of any sizes in one call (built by :func:`collate`).

    Attributes
    ----------
    z, batch : Tensor
        Atomic numbers and 0-based graph index of each atom, ``[N]`` (long).
    pos : Tensor
        Positions ``[N, 3]``, Å.
    n_graphs : int
        Number of molecules G.
    energy, forces : Tensor or None
        Energies ``[G]`` (eV, float64) and forces ``[N, 3]`` (eV/Å), or None when some structure is unlabelled.
    """

    z: Tensor
    pos: Tensor
    batch: Tensor
    n_graphs: int
    energy: Optional[Tensor]  # [G] eV
    forces: Optional[Tensor]  # [N, 3] eV/Å


def collate(structures: list[Structure], dtype: torch.dtype = torch.float32) -> GraphBatch:
    """Stack structures of any sizes into one graph batch; labels only if every structure has them.

    Parameters
    ----------
    structures : list of Structure
        ``n_graphs`` structures with ``N`` atoms in all.
    dtype : torch.dtype
        Floating dtype of positions and labels.

    Returns
    -------
    GraphBatch
        ``z [N]``, ``pos [N, 3]`` (Å), ``batch [N]``; energies ``[n_graphs]`` (eV) and forces ``[N, 3]`` (eV/Å)
        when every structure is labelled (energies always float64).
    """
    if not structures:
        raise ValueError("collate: expected at least one structure")
    z = torch.as_tensor(np.concatenate([s.numbers for s in structures]), dtype=torch.long)
    pos = torch.as_tensor(np.concatenate([s.positions_angstrom for s in structures]), dtype=dtype)
    batch = torch.repeat_interleave(torch.arange(len(structures)), torch.tensor([s.n_atoms for s in structures]))
    energy = forces = None
    if all(s.energy_ev is not None for s in structures):
        energy = torch.tensor([s.energy_ev for s in structures], dtype=torch.float64)
    if all(s.forces_ev_per_angstrom is not None for s in structures):
        forces = torch.as_tensor(np.concatenate([s.forces_ev_per_angstrom for s in structures]), dtype=dtype)
    return GraphBatch(z, pos, batch, len(structures), energy, forces)


def bounded_batches(structures: Iterable[Structure], max_atoms: int, max_graphs: int | None = None
                    ) -> Iterator[list[Structure]]:
    """Group a stream into lists of at most ``max_atoms`` atoms (and ``max_graphs`` graphs), order kept.

    Why: graph size, not structure count, sets memory; a bound on atoms keeps peak memory flat across datasets.

    Parameters
    ----------
    structures : iterable of Structure
    max_atoms : int
        Most atoms in one batch (a larger structure forms a batch of its own).
    max_graphs : int or None
        Most structures in one batch.

    Returns
    -------
    Iterator[list of Structure]
    """
    if max_atoms < 1:
        raise ValueError(f"max_atoms must be >= 1, got {max_atoms}")
    group: list[Structure] = []
    atoms = 0
    for s in structures:
        if s.n_atoms > max_atoms:
            raise ValueError(f"{s.source or 'structure'} has {s.n_atoms} atoms, more than max_atoms={max_atoms}")
        if group and (atoms + s.n_atoms > max_atoms or (max_graphs is not None and len(group) >= max_graphs)):
            yield group
            group, atoms = [], 0
        group.append(s)
        atoms += s.n_atoms
    if group:
        yield group
