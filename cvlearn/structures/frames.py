"""MD trajectory frames as unlabelled ``Structure`` records (for denoising pre-training on one's own system).

Frames stream from disk with ``mdtraj.iterload``; positions are converted nm -> Å here, at the edge. Atomic
numbers come from the topology's elements, never from masses (hydrogen mass repartitioning changes masses).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from cvlearn.structures.records import Structure
from cvlearn.units import ANGSTROM_PER_NM

__all__ = ["trajectory_structures"]


def trajectory_structures(traj_paths: str | os.PathLike | Iterable[str | os.PathLike], topology: str | os.PathLike,
                          stride: int = 1, selection: str | Iterable[int] | None = None,
                          chunk_frames: int = 1000) -> Iterator[Structure]:
    """Stream frames of one or more trajectory files (Å); ``selection`` is an mdtraj DSL string or atom indices."""
    import mdtraj

    if isinstance(traj_paths, (str, os.PathLike)):
        traj_paths = [traj_paths]
    traj_paths = [Path(p) for p in traj_paths]
    if int(stride) != stride or stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, found {stride!r}")
    topology = Path(topology)
    if not topology.is_file():
        raise FileNotFoundError(f"topology file not found: {topology}")
    top = mdtraj.load_topology(str(topology))
    if selection is None:
        atoms = np.arange(top.n_atoms)
    elif isinstance(selection, str):
        try:
            atoms = top.select(selection)
        except Exception as exc:  # mdtraj raises its own ValueError subclasses for DSL errors
            raise ValueError(f"selection {selection!r} is not valid mdtraj DSL for {topology}: {exc}") from exc
        if len(atoms) == 0:
            raise ValueError(f"selection {selection!r} matches no atom of {topology}")
    else:
        atoms = np.asarray(list(selection), dtype=np.int64)
        if atoms.size == 0 or atoms.min() < 0 or atoms.max() >= top.n_atoms:
            raise ValueError(f"selection: atom indices must lie in [0, {top.n_atoms}) for {topology}, "
                             f"found {atoms.tolist()[:10]}")
    numbers = []
    for i in atoms:
        element = top.atom(int(i)).element
        if element is None or element.atomic_number in (None, 0):
            raise ValueError(f"{topology}: atom {int(i)} ({top.atom(int(i))}) has no element; cannot featurize it")
        numbers.append(element.atomic_number)
    numbers = np.asarray(numbers, dtype=np.int64)
    for path in traj_paths:
        if not path.is_file():
            raise FileNotFoundError(f"trajectory file not found: {path}")
        frame = 0
        for chunk in mdtraj.iterload(str(path), top=top, chunk=chunk_frames, stride=stride, atom_indices=atoms):
            if chunk.n_atoms != len(atoms):
                raise ValueError(f"{path}: {chunk.n_atoms} atoms per frame, topology selection has {len(atoms)}")
            for xyz in chunk.xyz:
                yield Structure(numbers=numbers, positions_angstrom=xyz.astype(np.float64) * ANGSTROM_PER_NM,
                                source=f"{path}#{frame * stride}")
                frame += 1
