"""The one place for train/validation splits, with one naming: ``validation_fraction`` and ``seed``.

Frames of one MD trajectory are correlated, so MD data are split by whole trajectory
(:func:`split_by_trajectory`, :func:`every_nth_split`) or in time (:func:`temporal_split`); a random split
(:func:`random_split`, :func:`split_structures`) is right only for independent samples.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


class Segment(NamedTuple):
    """Frames ``start:stop`` of trajectory number ``traj``.

    Attributes
    ----------
    traj : int
        Index of the trajectory in the list being split.
    start, stop : int
        Half-open frame range (frames, not ps).
    """

    traj: int
    start: int
    stop: int


def _check_fraction(validation_fraction: float) -> float:
    if isinstance(validation_fraction, bool) or not 0.0 < float(validation_fraction) < 1.0:
        raise ValueError(f"validation_fraction: expected a value in (0, 1), found {validation_fraction!r}")
    return float(validation_fraction)


def split_by_trajectory(n_frames_per_traj: Sequence[int], validation_fraction: float = 0.25, seed: int = 0
                        ) -> tuple[list[Segment], list[Segment]]:
    """Split into (train, validation) segments: whole trajectories when there are several, else in time.

    With >= 2 trajectories, round(validation_fraction * n) of them (at least one, leaving at least one for
    training) are drawn at random with ``seed``. A single trajectory gives its first 1 - validation_fraction
    to training and the rest to validation.

    Parameters
    ----------
    n_frames_per_traj : sequence of int
        ``[n_trajectories]`` frame counts.
    validation_fraction : float
        In (0, 1): fraction of trajectories (or of frames, for one trajectory) held out.
    seed : int
        Seed of the draw.

    Returns
    -------
    train, validation : list of Segment
        Segments to pass to :func:`take_segments`.
    """
    validation_fraction = _check_fraction(validation_fraction)
    lengths = [int(n) for n in n_frames_per_traj]
    if not lengths:
        raise ValueError("n_frames_per_traj: expected at least one trajectory, found none")
    if any(n < 1 for n in lengths):
        raise ValueError(f"n_frames_per_traj: expected positive frame counts, found {lengths}")

    if len(lengths) == 1:
        n = lengths[0]
        n_train = int(round(n * (1.0 - validation_fraction)))
        if n_train < 1 or n_train >= n:
            raise ValueError(f"cannot split a single trajectory of {n} frames with validation_fraction="
                             f"{validation_fraction}: one side would be empty")
        return [Segment(0, 0, n_train)], [Segment(0, n_train, n)]

    n_val = min(max(int(round(validation_fraction * len(lengths))), 1), len(lengths) - 1)
    order = np.random.default_rng(seed).permutation(len(lengths))
    val_ids = sorted(int(i) for i in order[:n_val])
    train_ids = sorted(int(i) for i in order[n_val:])
    return [Segment(i, 0, lengths[i]) for i in train_ids], [Segment(i, 0, lengths[i]) for i in val_ids]


def take_segments(arrays: Sequence, segments: Sequence[Segment]) -> list:
    """Slice per-trajectory arrays by segments, one output per segment.

    Parameters
    ----------
    arrays : sequence of arrays
        Per-trajectory numpy arrays, torch tensors or mdtraj trajectories, frames first.
    segments : sequence of Segment

    Returns
    -------
    list
        ``arrays[seg.traj][seg.start:seg.stop]`` for each segment.
    """
    out = []
    for seg in segments:
        if not 0 <= seg.traj < len(arrays):
            raise IndexError(f"segment {seg} refers to trajectory {seg.traj}, but there are {len(arrays)} trajectories")
        n = len(arrays[seg.traj])
        if not 0 <= seg.start <= seg.stop <= n:
            raise IndexError(f"segment {seg} is outside trajectory {seg.traj} of {n} frames")
        out.append(arrays[seg.traj][seg.start : seg.stop])
    return out


def every_nth_split(n_trajectories: int, validation_every: int) -> tuple[list[int], list[int]]:
    """Trajectory ids split deterministically: every ``validation_every``-th one is validation.

    Parameters
    ----------
    n_trajectories : int
        Number of trajectories, in manifest order.
    validation_every : int
        >= 2; trajectories ``validation_every - 1, 2 * validation_every - 1, ...`` go to validation.

    Returns
    -------
    train_ids, validation_ids : list of int
    """
    if isinstance(validation_every, bool) or int(validation_every) != validation_every or validation_every < 2:
        raise ValueError(f"validation_every: expected an integer >= 2, found {validation_every!r}")
    is_val = [i % validation_every == validation_every - 1 for i in range(int(n_trajectories))]
    return [i for i, v in enumerate(is_val) if not v], [i for i, v in enumerate(is_val) if v]


def _counts(n: int, fractions: Sequence[float]) -> list[int]:
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 1 or len(fractions) == 0 or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {list(fractions)}")
    counts = np.floor(fractions * n).astype(int)
    counts[0] += n - counts.sum()  # the remainder goes to the first (training) part
    return counts.tolist()


def _cut(items: list, order: Sequence[int], counts: Sequence[int]) -> list[list]:
    parts, start = [], 0
    for count in counts:
        parts.append([items[i] for i in order[start:start + count]])
        start += count
    return parts


def random_split(items: Sequence[T], fractions: Sequence[float], seed: int = 0) -> list[list[T]]:
    """Shuffle with ``seed`` and cut into parts of the given fractions (for independent samples).

    Parameters
    ----------
    items : sequence
        Independent samples, e.g. ``Structure`` records.
    fractions : sequence of float
        Non-negative, summing to 1; the rounding remainder goes to the first part.
    seed : int

    Returns
    -------
    list of lists
        One list per fraction.
    """
    items = list(items)
    return _cut(items, np.random.default_rng(seed).permutation(len(items)), _counts(len(items), fractions))


def temporal_split(items: Sequence[T], fractions: Sequence[float]) -> list[list[T]]:
    """Contiguous blocks in order (for one MD trajectory: no near-duplicate frames across parts).

    Parameters
    ----------
    items : sequence
        Frames in time order.
    fractions : sequence of float
        Non-negative, summing to 1; the rounding remainder goes to the first part.

    Returns
    -------
    list of lists
        One list per fraction.
    """
    items = list(items)
    return _cut(items, range(len(items)), _counts(len(items), fractions))


def split_structures(items: Sequence[T], validation_fraction: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """Random (train, validation) split of independent samples, with at least one validation sample.

    For MD frames split by trajectory instead (:func:`split_by_trajectory`).

    Parameters
    ----------
    items : sequence
        Independent samples, e.g. ``Structure`` records.
    validation_fraction : float
        In (0, 1); floor(validation_fraction * n), at least 1, samples are held out.
    seed : int

    Returns
    -------
    train, validation : list
    """
    validation_fraction = _check_fraction(validation_fraction)
    items = list(items)
    n_val = max(1, int(math.floor(validation_fraction * len(items))))
    order = np.random.default_rng(seed).permutation(len(items))
    val, train = _cut(items, order, [n_val, len(items) - n_val])
    return train, val
