"""Loading and validating trajectories, splitting by trajectory, time-lagged pairs."""

import mdtraj
import numpy as np
import pytest
import torch

from cvlearn.data import Segment, lagged_pairs, load_trajectories, split_by_trajectory, take_segments


def make_topology(n_atoms):
    top = mdtraj.Topology()
    residue = top.add_residue("MOL", top.add_chain())
    for i in range(n_atoms):
        top.add_atom(f"C{i}", mdtraj.element.carbon, residue)
    return top


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    top = make_topology(3)
    xyz = rng.uniform(0, 2, size=(10, 3, 3)).astype(np.float32)
    mdtraj.Trajectory(xyz[:1], top).save_pdb(str(tmp_path / "top.pdb"))
    mdtraj.Trajectory(xyz, top).save_dcd(str(tmp_path / "good.dcd"))
    bad = xyz.copy()
    bad[6, 1, 0] = np.nan
    mdtraj.Trajectory(bad, top).save_dcd(str(tmp_path / "nan.dcd"))
    mdtraj.Trajectory(rng.uniform(size=(4, 4, 3)), make_topology(4)).save_dcd(str(tmp_path / "four.dcd"))
    return tmp_path, xyz


def test_load_stride_and_selection(files):
    tmp, xyz = files
    (traj,) = load_trajectories([tmp / "good.dcd"], tmp / "top.pdb")
    assert traj.n_frames == 10 and traj.n_atoms == 3
    np.testing.assert_allclose(traj.xyz, xyz, atol=1e-5)
    (sub,) = load_trajectories([str(tmp / "good.dcd")], str(tmp / "top.pdb"), atom_indices=[0, 2], stride=3)
    assert sub.n_frames == 4 and sub.n_atoms == 2
    np.testing.assert_allclose(sub.xyz, xyz[::3][:, [0, 2]], atol=1e-5)


def test_atom_count_mismatch_names_both_files(files):
    tmp, _ = files
    for selection in (None, [0, 1]):  # a selection must not hide the mismatch
        with pytest.raises(ValueError) as err:
            load_trajectories([tmp / "four.dcd"], tmp / "top.pdb", atom_indices=selection)
        message = str(err.value)
        assert "four.dcd" in message and "top.pdb" in message and "4 atoms" in message and "3 atoms" in message


def test_nan_frame_is_named(files):
    tmp, _ = files
    with pytest.raises(ValueError, match=r"nan\.dcd.*frame 6"):
        load_trajectories([tmp / "good.dcd", tmp / "nan.dcd"], tmp / "top.pdb")
    with pytest.raises(ValueError, match=r"frame 3"):
        load_trajectories([tmp / "nan.dcd"], tmp / "top.pdb", stride=2)


def test_missing_files(files):
    tmp, _ = files
    with pytest.raises(FileNotFoundError, match="missing.dcd"):
        load_trajectories([tmp / "good.dcd", tmp / "missing.dcd"], tmp / "top.pdb")
    with pytest.raises(FileNotFoundError, match="nope.pdb"):
        load_trajectories([tmp / "good.dcd"], tmp / "nope.pdb")


def test_bad_arguments(files):
    tmp, _ = files
    with pytest.raises(ValueError, match="stride"):
        load_trajectories([tmp / "good.dcd"], tmp / "top.pdb", stride=0)
    with pytest.raises(ValueError, match="atom_indices"):
        load_trajectories([tmp / "good.dcd"], tmp / "top.pdb", atom_indices=[0, 3])


def test_split_multiple_trajectories():
    lengths = [100, 80, 120, 90, 50, 70, 60, 110]
    train, val = split_by_trajectory(lengths, val_fraction=0.25, seed=1)
    assert len(val) == 2 and len(train) == 6
    assert sorted(s.traj for s in train + val) == list(range(8))
    assert all(s.start == 0 and s.stop == lengths[s.traj] for s in train + val)
    assert split_by_trajectory(lengths, 0.25, seed=1) == (train, val)
    assert split_by_trajectory(lengths, 0.25, seed=2) != (train, val)
    # at least one on each side
    assert [len(x) for x in split_by_trajectory([10, 10], 0.01)] == [1, 1]
    assert [len(x) for x in split_by_trajectory([10, 10, 10], 0.99)] == [1, 2]


def test_split_single_trajectory_in_time():
    train, val = split_by_trajectory([100], val_fraction=0.3)
    assert train == [Segment(0, 0, 70)] and val == [Segment(0, 70, 100)]
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            split_by_trajectory([100], val_fraction=bad)


def test_take_segments():
    arrays = [np.arange(10), np.arange(20, 25)]
    out = take_segments(arrays, [Segment(1, 0, 5), Segment(0, 7, 10)])
    assert [o.tolist() for o in out] == [[20, 21, 22, 23, 24], [7, 8, 9]]
    with pytest.raises(IndexError):
        take_segments(arrays, [Segment(2, 0, 1)])


def test_lagged_pairs_never_cross_boundaries():
    # value = 1000 * trajectory + frame, so a pair across trajectories would be visible
    lengths = [7, 2, 5]
    arrays = [np.stack([1000 * i + np.arange(n)] * 2, axis=1) for i, n in enumerate(lengths)]
    x0, xt = lagged_pairs(arrays, 2)
    assert isinstance(x0, np.ndarray) and x0.shape == (5 + 0 + 3, 2)
    assert np.all(xt - x0 == 2) and np.all(x0 // 1000 == xt // 1000)
    t0, tt = lagged_pairs([torch.from_numpy(a) for a in arrays], 1)
    assert isinstance(t0, torch.Tensor) and len(t0) == 6 + 1 + 4 and torch.all(tt - t0 == 1)


def test_lagged_pairs_errors():
    arrays = [np.zeros((5, 2)), np.zeros((3, 2))]
    with pytest.raises(ValueError, match=r"lag 5 frames .* \(lengths \[5, 3\]\)"):
        lagged_pairs(arrays, 5)
    with pytest.raises(ValueError, match="lag"):
        lagged_pairs(arrays, 0)
    with pytest.raises(ValueError, match="per-frame shape"):
        lagged_pairs([np.zeros((5, 2)), np.zeros((5, 3))], 1)
