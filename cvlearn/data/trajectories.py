"""Trajectories in, validated arrays and time-lagged pairs out.

Bad frames and mismatched topologies are caught here, at load time, with the file named, so that they
never surface later as a NaN loss or a shape error deep inside training. Validation data are split off
by whole trajectories (frames of one trajectory are correlated, so a random frame split would leak),
and time-lagged pairs never cross a trajectory boundary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple, Sequence, TypeVar

import mdtraj
import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


class Segment(NamedTuple):
    """Frames ``start:stop`` of trajectory number ``traj``."""

    traj: int
    start: int
    stop: int


def _file_atom_count(path: Path) -> int | None:
    """Atoms per frame as stored in a trajectory file (None where the format cannot tell us cheaply)."""
    try:
        with mdtraj.open(str(path)) as handle:
            first = handle.read(n_frames=1)
        xyz = first[0] if isinstance(first, tuple) else first
        return int(np.asarray(xyz).shape[1])
    except Exception:  # only used to improve an error message that is raised anyway
        return None


def load_trajectories(
    traj_paths: Sequence[str | Path],
    top_path: str | Path,
    atom_indices: Sequence[int] | None = None,
    stride: int = 1,
) -> list[mdtraj.Trajectory]:
    """Load trajectories with mdtraj and check that every one matches the topology and is finite.

    Atom selection happens after validation, so a file with the wrong atom count is never mistaken for
    a valid selection.
    """
    if isinstance(traj_paths, (str, Path)):
        raise TypeError(f"traj_paths: expected a sequence of paths, found a single path {str(traj_paths)!r}")
    if len(traj_paths) == 0:
        raise ValueError("traj_paths: expected at least one trajectory file, found an empty sequence")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, found {stride!r}")
    top_path = Path(top_path)
    if not top_path.is_file():
        raise FileNotFoundError(f"topology file {str(top_path)!r} does not exist")
    topology = mdtraj.load_topology(str(top_path))
    if atom_indices is not None:
        atom_indices = np.asarray(atom_indices, dtype=int).reshape(-1)
        if atom_indices.size == 0:
            raise ValueError("atom_indices: expected at least one atom index, found none")
        bad = atom_indices[(atom_indices < 0) | (atom_indices >= topology.n_atoms)]
        if bad.size:
            raise ValueError(
                f"atom_indices: expected indices in [0, {topology.n_atoms}) for topology {str(top_path)!r}, "
                f"found {bad[:10].tolist()}"
            )

    trajectories = []
    for raw in traj_paths:
        path = Path(raw)
        if not path.is_file():
            raise FileNotFoundError(f"trajectory file {str(path)!r} does not exist")
        try:
            traj = mdtraj.load(str(path), top=topology, stride=stride)
        except ValueError as err:
            n_file = _file_atom_count(path)
            if n_file is not None and n_file != topology.n_atoms:
                raise ValueError(
                    f"trajectory {str(path)!r} has {n_file} atoms per frame but topology {str(top_path)!r} "
                    f"has {topology.n_atoms} atoms"
                ) from err
            raise ValueError(f"could not load trajectory {str(path)!r} with topology {str(top_path)!r}: {err}") from err
        if traj.n_atoms != topology.n_atoms:  # formats where mdtraj does not check
            raise ValueError(
                f"trajectory {str(path)!r} has {traj.n_atoms} atoms per frame but topology {str(top_path)!r} "
                f"has {topology.n_atoms} atoms"
            )
        finite = np.isfinite(traj.xyz).all(axis=(1, 2))
        if not finite.all():
            first_bad = int(np.argmin(finite))
            raise ValueError(
                f"trajectory {str(path)!r} has non-finite (NaN/inf) coordinates in frame {first_bad} "
                f"(frame index after stride {stride}; {int((~finite).sum())} bad frames of {traj.n_frames})"
            )
        if atom_indices is not None:
            traj = traj.atom_slice(atom_indices)
        logger.info("loaded %s: %d frames, %d atoms", path, traj.n_frames, traj.n_atoms)
        trajectories.append(traj)
    return trajectories


def split_by_trajectory(
    n_frames_per_traj: Sequence[int], val_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Segment], list[Segment]]:
    """Split into (train, validation) segments: whole trajectories when there are several, else in time.

    With >= 2 trajectories, round(val_fraction * n) of them (at least one, leaving at least one for
    training) are drawn at random with ``seed``. A single trajectory gives its first 1 - val_fraction to
    training and the rest to validation.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction: expected a value in (0, 1), found {val_fraction!r}")
    lengths = [int(n) for n in n_frames_per_traj]
    if not lengths:
        raise ValueError("n_frames_per_traj: expected at least one trajectory, found none")
    if any(n < 1 for n in lengths):
        raise ValueError(f"n_frames_per_traj: expected positive frame counts, found {lengths}")

    if len(lengths) == 1:
        n = lengths[0]
        n_train = int(round(n * (1.0 - val_fraction)))
        if n_train < 1 or n_train >= n:
            raise ValueError(
                f"cannot split a single trajectory of {n} frames with val_fraction={val_fraction}: "
                "one side would be empty"
            )
        return [Segment(0, 0, n_train)], [Segment(0, n_train, n)]

    n_val = min(max(int(round(val_fraction * len(lengths))), 1), len(lengths) - 1)
    order = np.random.default_rng(seed).permutation(len(lengths))
    val_ids = sorted(int(i) for i in order[:n_val])
    train_ids = sorted(int(i) for i in order[n_val:])
    return [Segment(i, 0, lengths[i]) for i in train_ids], [Segment(i, 0, lengths[i]) for i in val_ids]


def take_segments(arrays: Sequence, segments: Sequence[Segment]) -> list:
    """Slice per-trajectory arrays (numpy, torch or mdtraj) by segments, one output per segment."""
    out = []
    for seg in segments:
        if not 0 <= seg.traj < len(arrays):
            raise IndexError(f"segment {seg} refers to trajectory {seg.traj}, but there are {len(arrays)} trajectories")
        n = len(arrays[seg.traj])
        if not 0 <= seg.start <= seg.stop <= n:
            raise IndexError(f"segment {seg} is outside trajectory {seg.traj} of {n} frames")
        out.append(arrays[seg.traj][seg.start : seg.stop])
    return out


def lagged_pairs(arrays: Sequence[ArrayT], lag: int) -> tuple[ArrayT, ArrayT]:
    """(x_t, x_{t+lag}) concatenated over trajectories, never pairing frames of different trajectories.

    Trajectories with lag or fewer frames contribute nothing; if that leaves no pair at all, raise.
    """
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 1:
        raise ValueError(f"lag: expected an integer >= 1 (frames), found {lag!r}")
    if len(arrays) == 0:
        raise ValueError("arrays: expected at least one trajectory, found none")
    is_torch = isinstance(arrays[0], torch.Tensor)
    if not all(isinstance(a, torch.Tensor) == is_torch for a in arrays):
        raise TypeError(f"arrays: expected all numpy arrays or all torch tensors, found {[type(a).__name__ for a in arrays]}")
    trailing = {tuple(a.shape[1:]) for a in arrays}
    if len(trailing) > 1:
        raise ValueError(f"arrays: expected the same per-frame shape in every trajectory, found {sorted(trailing)}")
    lengths = [len(a) for a in arrays]
    kept = [a for a in arrays if len(a) > lag]
    if not kept:
        raise ValueError(f"lag {lag} frames ≥ length of every trajectory (lengths {lengths})")
    cat = torch.cat if is_torch else np.concatenate
    return cat([a[:-lag] for a in kept]), cat([a[lag:] for a in kept])
