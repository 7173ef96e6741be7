"""The one splitter: by whole trajectory, in time, at random, every n-th trajectory."""

import numpy as np
import pytest

from cvlearn.data.splits import (Segment, every_nth_split, random_split, split_by_trajectory, split_structures,
                                 take_segments, temporal_split)
from cvlearn.structures import Structure


def _water(i: int) -> Structure:
    rng = np.random.default_rng(i)
    pos = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]) + 0.05 * rng.normal(size=(3, 3))
    return Structure(np.array([8, 1, 1]), pos, energy_ev=-10.0 - i, forces_ev_per_angstrom=rng.normal(size=(3, 3)))


def test_split_multiple_trajectories():
    lengths = [100, 80, 120, 90, 50, 70, 60, 110]
    train, val = split_by_trajectory(lengths, validation_fraction=0.25, seed=1)
    assert len(val) == 2 and len(train) == 6
    assert sorted(s.traj for s in train + val) == list(range(8))
    assert all(s.start == 0 and s.stop == lengths[s.traj] for s in train + val)
    assert split_by_trajectory(lengths, 0.25, seed=1) == (train, val)
    assert split_by_trajectory(lengths, 0.25, seed=2) != (train, val)
    # at least one on each side
    assert [len(x) for x in split_by_trajectory([10, 10], 0.01)] == [1, 1]
    assert [len(x) for x in split_by_trajectory([10, 10, 10], 0.99)] == [1, 2]


def test_split_single_trajectory_in_time():
    train, val = split_by_trajectory([100], validation_fraction=0.3)
    assert train == [Segment(0, 0, 70)] and val == [Segment(0, 70, 100)]
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="validation_fraction"):
            split_by_trajectory([100], validation_fraction=bad)


def test_take_segments():
    arrays = [np.arange(10), np.arange(20, 25)]
    out = take_segments(arrays, [Segment(1, 0, 5), Segment(0, 7, 10)])
    assert [o.tolist() for o in out] == [[20, 21, 22, 23, 24], [7, 8, 9]]
    with pytest.raises(IndexError):
        take_segments(arrays, [Segment(2, 0, 1)])


def test_random_and_temporal_splits():
    items = [_water(i) for i in range(10)]
    train, val, test = temporal_split(items, (0.8, 0.1, 0.1))
    assert [s.energy_ev for s in train] == [s.energy_ev for s in items[:8]] and test[0] is items[9]
    parts = random_split(items, (0.6, 0.2, 0.2), seed=3)
    assert [len(p) for p in parts] == [6, 2, 2]
    assert sorted(s.energy_ev for p in parts for s in p) == sorted(s.energy_ev for s in items)
    again = random_split(items, (0.6, 0.2, 0.2), seed=3)
    assert [s.energy_ev for s in again[1]] == [s.energy_ev for s in parts[1]]
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(items, (0.5, 0.1), seed=0)



def test_split_structures_holds_out_at_least_one():
    items = list(range(10))
    train, val = split_structures(items, 0.25, seed=4)
    assert len(val) == 2 and len(train) == 8 and sorted(train + val) == items
    assert split_structures(items, 0.25, seed=4) == (train, val)
    order = np.random.default_rng(4).permutation(10)
    assert val == [int(i) for i in order[:2]]  # the same draw as before the merge
    assert len(split_structures(items, 0.01)[1]) == 1
    with pytest.raises(ValueError, match="validation_fraction"):
        split_structures(items, 1.0)


def test_every_nth_split():
    assert every_nth_split(7, 3) == ([0, 1, 3, 4, 6], [2, 5])
    assert every_nth_split(1, 2) == ([0], [])
    with pytest.raises(ValueError, match="validation_every"):
        every_nth_split(4, 1)
