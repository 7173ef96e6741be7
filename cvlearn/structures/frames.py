"""MD trajectory frames as unlabelled ``Structure`` records (for denoising pre-training on one's own system).

Frames stream from disk through the one trajectory reader (:func:`cvlearn.data.trajectories.iter_trajectory`,
validated chunk by chunk); positions are converted nm -> Å here, at the edge. Atomic numbers come from the
topology's elements (:func:`cvlearn.data.selection.atomic_numbers`), never from masses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from cvlearn.data.selection import atomic_numbers, resolve_selection
from cvlearn.data.trajectories import iter_trajectory, read_topology
from cvlearn.structures.records import Structure
from cvlearn.units import ANGSTROM_PER_NM

__all__ = ["trajectory_structures"]


def trajectory_structures(traj_paths: str | os.PathLike | Iterable[str | os.PathLike], topology: str | os.PathLike,
                          stride: int = 1, selection: str | Iterable[int] | None = None,
                          chunk_frames: int = 1000) -> Iterator[Structure]:
    """Stream the frames of one or more trajectory files as ``Structure`` records.

    Parameters
    ----------
    traj_paths : str, path or iterable of them
        Trajectory files of the system in ``topology``.
    topology : str or path
        Topology file of all atoms in the files.
    stride : int
        Keep every ``stride``-th frame.
    selection : str, iterable of int or None
        mdtraj selection string or atom indices; None keeps every atom.
    chunk_frames : int
        Frames read from disk at a time.

    Returns
    -------
    Iterator[Structure]
        One per frame: atomic numbers ``[n_selected]``, positions ``[n_selected, 3]`` (Å), ``source``
        ``"<file>#<frame in the file>"``.
    """
    if isinstance(traj_paths, (str, os.PathLike)):
        traj_paths = [traj_paths]
    traj_paths = [Path(p) for p in traj_paths]
    top, _ = read_topology(topology)
    if selection is not None and not isinstance(selection, str):
        selection = np.asarray(list(selection), dtype=np.int64)
    atoms = resolve_selection(top, selection)
    if atoms is None:
        atoms = np.arange(top.n_atoms)
    numbers = np.asarray(atomic_numbers(top, atoms), dtype=np.int64)
    for path in traj_paths:
        frame = 0
        for chunk in iter_trajectory(path, topology, selection=atoms, stride=stride, chunk_frames=chunk_frames):
            for xyz in chunk.xyz:
                yield Structure(numbers=numbers, positions_angstrom=xyz.astype(np.float64) * ANGSTROM_PER_NM,
                                source=f"{path}#{frame * stride}")
                frame += 1
