"""The one trajectory reader: loading and streaming, validated against the topology."""

import mdtraj
import numpy as np
import pytest

from cvlearn.data import iter_trajectory, load_trajectories, trajectory_frame_count


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
    (sub,) = load_trajectories([str(tmp / "good.dcd")], str(tmp / "top.pdb"), selection=[0, 2], stride=3)
    assert sub.n_frames == 4 and sub.n_atoms == 2
    np.testing.assert_allclose(sub.xyz, xyz[::3][:, [0, 2]], atol=1e-5)


def test_atom_count_mismatch_names_both_files(files):
    tmp, _ = files
    for selection in (None, [0, 1]):  # a selection must not hide the mismatch
        with pytest.raises(ValueError) as err:
            load_trajectories([tmp / "four.dcd"], tmp / "top.pdb", selection=selection)
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
    with pytest.raises(ValueError, match="selection"):
        load_trajectories([tmp / "good.dcd"], tmp / "top.pdb", selection=[0, 3])


def test_selection_string_matches_indices(files):
    tmp, xyz = files
    (by_name,) = load_trajectories([tmp / "good.dcd"], tmp / "top.pdb", selection="name C1")
    np.testing.assert_allclose(by_name.xyz, xyz[:, [1]], atol=1e-5)
    with pytest.raises(ValueError, match="selection"):
        load_trajectories([tmp / "good.dcd"], tmp / "top.pdb", selection="name XX")


def test_streaming_equals_loading(files):
    tmp, xyz = files
    chunks = list(iter_trajectory(tmp / "good.dcd", tmp / "top.pdb", selection=[2, 0], stride=2, chunk_frames=2))
    assert [c.n_frames for c in chunks] == [2, 2, 1] and all(c.n_atoms == 2 for c in chunks)
    np.testing.assert_allclose(np.concatenate([c.xyz for c in chunks]), xyz[::2][:, [2, 0]], atol=1e-5)
    assert trajectory_frame_count(tmp / "good.dcd", tmp / "top.pdb") == 10


def test_streaming_validates_every_chunk(files):
    tmp, _ = files
    with pytest.raises(ValueError, match=r"nan\.dcd.*frame 6 of the file"):
        list(iter_trajectory(tmp / "nan.dcd", tmp / "top.pdb", chunk_frames=4))
    with pytest.raises(ValueError, match="4 atoms per frame.*3 atoms"):
        list(iter_trajectory(tmp / "four.dcd", tmp / "top.pdb", selection=[0], chunk_frames=2))
    with pytest.raises(ValueError, match="chunk_frames"):
        iter_trajectory(tmp / "good.dcd", tmp / "top.pdb", chunk_frames=-1)
