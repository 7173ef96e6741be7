"""Readers on files of the users' formats, written here: mdshare ala2 heavy-atom npz + PDB, XTC + PDB."""

import mdtraj
import numpy as np
import pytest

from cvlearn.data.readers import read_mdshare_ala2_npz, read_mdshare_pentapeptide
from cvlearn.data.trajectories import load_trajectories


@pytest.fixture(scope="module")
def ala2_pdb(ala2, tmp_path_factory):
    path = tmp_path_factory.mktemp("ala2") / "alanine-dipeptide-nowater.pdb"
    mdtraj.Trajectory(ala2.positions_nm[None].astype(np.float32), mdtraj.Topology.from_openmm(ala2.topology)).save_pdb(
        str(path))
    return path


def test_mdshare_ala2_npz(ala2, ala2_heavy, ala2_pdb, tmp_path):
    heavy, _ = ala2_heavy
    rng = np.random.default_rng(0)
    arrays = [(ala2.positions_nm[heavy][None] + 0.005 * rng.normal(size=(n, 10, 3))).reshape(n, 30) for n in (7, 5, 6)]
    path = tmp_path / "alanine-dipeptide-3x250ns-heavy-atom-positions.npz"
    np.savez(path, *arrays)  # keys arr_0, arr_1, arr_2 like mdshare's file
    trajs = read_mdshare_ala2_npz(path, ala2_pdb)
    assert [t.n_frames for t in trajs] == [7, 5, 6] and all(t.n_atoms == 10 for t in trajs)
    assert np.allclose(trajs[1].xyz, arrays[1].reshape(5, 10, 3), atol=1e-6)
    expected = [a.element.symbol for a in ala2.topology.atoms() if a.element.symbol != "H"]
    assert [a.element.symbol for a in trajs[0].topology.atoms] == expected
    np.savez(tmp_path / "angstrom.npz", *(a * 10 for a in arrays))
    with pytest.raises(ValueError, match="looks like Å"):
        read_mdshare_ala2_npz(tmp_path / "angstrom.npz", ala2_pdb)
    np.savez(tmp_path / "wrong.npz", arrays[0][:, :27])
    with pytest.raises(ValueError, match=r"expected shape \[n_frames, 30\]"):
        read_mdshare_ala2_npz(tmp_path / "wrong.npz", ala2_pdb)


def test_xtc_and_pdb(tmp_path):
    from systems import pentapeptide_wlall

    wlall = pentapeptide_wlall.build(minimize=False)
    top = mdtraj.Topology.from_openmm(wlall.topology)
    traj = mdtraj.Trajectory(np.repeat(wlall.positions_nm[None], 4, 0).astype(np.float32), top)
    traj.save_xtc(str(tmp_path / "pentapeptide-00-500ns-impl-solv.xtc"))
    traj[:1].save_pdb(str(tmp_path / "pentapeptide-impl-solv.pdb"))
    heavy = read_mdshare_pentapeptide([tmp_path / "pentapeptide-00-500ns-impl-solv.xtc"],
                                      tmp_path / "pentapeptide-impl-solv.pdb")
    assert heavy[0].n_frames == 4 and heavy[0].n_atoms == 48
    assert np.allclose(heavy[0].xyz[0], traj.xyz[0][top.select("not element H")], atol=2e-3)  # XTC precision
    full = load_trajectories([tmp_path / "pentapeptide-00-500ns-impl-solv.xtc"], tmp_path / "pentapeptide-impl-solv.pdb")
    assert full[0].n_atoms == 103
    with pytest.raises(FileNotFoundError, match="nope.xtc"):
        load_trajectories([tmp_path / "nope.xtc"], tmp_path / "pentapeptide-impl-solv.pdb")
