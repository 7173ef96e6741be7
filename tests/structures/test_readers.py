"""Structure readers: each format is written here (ASE extxyz, handmade SDF, zipped xxMD tree, DCD) and read back."""

from __future__ import annotations

import gzip
import zipfile

import numpy as np
import pytest

from cvlearn.structures import (ExtxyzFormatError, MissingLabelError, SDFFormatError, Structure, list_xxmd_splits,
                              load_xxmd, read_extxyz, read_sdf, trajectory_structures, write_extxyz, write_xxmd)


def _water(i: int, labelled: bool = True) -> Structure:
    rng = np.random.default_rng(i)
    pos = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]]) + 0.05 * rng.normal(size=(3, 3))
    return Structure(np.array([8, 1, 1]), pos, energy_ev=-10.0 - i if labelled else None,
                     forces_ev_per_angstrom=rng.normal(size=(3, 3)) if labelled else None)


# ----------------------------------------------------------------------------------------------- extxyz
def test_extxyz_round_trip(tmp_path):
    structures = [_water(i) for i in range(4)]
    assert write_extxyz(tmp_path / "w.xyz", structures) == 4
    back = list(read_extxyz(tmp_path / "w.xyz"))
    assert len(back) == 4
    for a, b in zip(structures, back):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_allclose(a.positions_angstrom, b.positions_angstrom, atol=1e-7)
        assert b.energy_ev == pytest.approx(a.energy_ev)
        np.testing.assert_allclose(a.forces_ev_per_angstrom, b.forces_ev_per_angstrom, atol=1e-7)
    assert back[2].source.endswith("w.xyz#2")


def test_extxyz_energy_from_info_key(tmp_path):
    import ase.io
    from ase import Atoms

    atoms = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    atoms.info["total_energy"] = -31.5
    atoms.arrays["forces"] = np.array([[0.1, 0, 0], [-0.1, 0, 0]])
    ase.io.write(tmp_path / "h2.xyz", atoms, format="extxyz")
    (s,) = read_extxyz(tmp_path / "h2.xyz")
    assert s.energy_ev == pytest.approx(-31.5)
    np.testing.assert_allclose(s.forces_ev_per_angstrom[0], [0.1, 0, 0])


def test_extxyz_missing_forces_names_file_and_frame(tmp_path):
    write_extxyz(tmp_path / "w.xyz", [_water(0), Structure(np.array([8, 1, 1]), _water(1).positions_angstrom,
                                                           energy_ev=-3.0)])
    reader = read_extxyz(tmp_path / "w.xyz")
    next(reader)
    with pytest.raises(MissingLabelError, match=r"w\.xyz: frame 1 has no forces"):
        next(reader)
    unlabelled = list(read_extxyz(tmp_path / "w.xyz", require_labels=False))
    assert unlabelled[1].forces_ev_per_angstrom is None and unlabelled[1].energy_ev == pytest.approx(-3.0)


def test_extxyz_wrong_atom_count_names_file_and_frame(tmp_path):
    write_extxyz(tmp_path / "w.xyz", [_water(0), _water(1)])
    lines = (tmp_path / "w.xyz").read_text().splitlines()
    lines[5] = "4"  # second frame claims 4 atoms but has 3 (and the file ends early)
    (tmp_path / "bad.xyz").write_text("\n".join(lines) + "\n")
    reader = read_extxyz(tmp_path / "bad.xyz")
    next(reader)
    with pytest.raises(ExtxyzFormatError, match=r"bad\.xyz: frame 1 could not be parsed"):
        next(reader)


def test_extxyz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.xyz"):
        read_extxyz(tmp_path / "nope.xyz")


# ----------------------------------------------------------------------------------------------- xxMD
def _xxmd_tree(root):
    splits = {"train": [_water(i) for i in range(5)], "val": [_water(10 + i) for i in range(2)],
              "test": [_water(20 + i) for i in range(3)]}
    write_xxmd(root, "mal", splits)
    write_xxmd(root, "azo", {"train": [_water(30)]})
    return splits


def test_xxmd_directory_and_zip(tmp_path):
    splits = _xxmd_tree(tmp_path / "tree")
    assert (tmp_path / "tree" / "xxMD-DFT" / "mal" / "mal_val.xyz").is_file()
    archive = tmp_path / "xxMD.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted((tmp_path / "tree").rglob("*.xyz")):
            z.write(f, f"xxMD-main/{f.relative_to(tmp_path / 'tree').as_posix()}")
    for root in (tmp_path / "tree", tmp_path / "tree" / "xxMD-DFT", archive):
        assert list_xxmd_splits(root, "mal") == ["test", "train", "val"]
        for split, expected in splits.items():
            got = list(load_xxmd(root, "mal", split))
            assert len(got) == len(expected)
            np.testing.assert_allclose(got[-1].forces_ev_per_angstrom, expected[-1].forces_ev_per_angstrom, atol=1e-7)
    assert "mal_test.xyz#0" in next(iter(load_xxmd(archive, "mal", "test"))).source


def test_xxmd_per_molecule_zip(tmp_path):
    """The xxMD repository ships xxMD-DFT/mal/mal.zip holding the split files at its top level."""
    splits = _xxmd_tree(tmp_path / "tree")
    folder = tmp_path / "repo" / "xxMD-DFT" / "mal"
    folder.mkdir(parents=True)
    with zipfile.ZipFile(folder / "mal.zip", "w") as z:
        for f in sorted((tmp_path / "tree" / "xxMD-DFT" / "mal").glob("*.xyz")):
            z.write(f, f.name)
    for root in (tmp_path / "repo", folder / "mal.zip"):
        assert list_xxmd_splits(root, "mal") == ["test", "train", "val"]
        assert len(list(load_xxmd(root, "mal", "train"))) == len(splits["train"])


def test_xxmd_missing_split_lists_available(tmp_path):
    _xxmd_tree(tmp_path)
    with pytest.raises(KeyError, match=r"available splits: \['train'\]"):
        load_xxmd(tmp_path, "azo", "test")
    with pytest.raises(FileNotFoundError, match="molecule 'sti'"):
        load_xxmd(tmp_path, "sti", "train")


# ----------------------------------------------------------------------------------------------- SDF
MOLFILE_WATER = """water
  handwritten 3D

  3  2  0  0  0  0  0  0  0  0999 V2000
    0.0000    0.0000    0.1173 O   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000    0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0
    0.0000   -0.7572   -0.4692 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
M  END
> <PUBCHEM_ID>
962

$$$$
"""
MOLFILE_METHANOL = """methanol
  handwritten 3D

  6  5  0  0  0  0  0  0  0  0999 V2000
   -0.0467    0.6630    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0
   -0.0467   -0.7570    0.0000 O   0  0  0  0  0  0  0  0  0  0  0  0
   -1.0864    0.9813    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
    0.4411    1.0654    0.8964 H   0  0  0  0  0  0  0  0  0  0  0  0
    0.4411    1.0654   -0.8964 H   0  0  0  0  0  0  0  0  0  0  0  0
    0.8759   -1.0646    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0
  1  2  1  0
  1  3  1  0
  1  4  1  0
  1  5  1  0
  2  6  1  0
M  END
$$$$
"""


@pytest.mark.parametrize("gz", [False, True])
def test_sdf_two_molecules(tmp_path, gz):
    text = MOLFILE_WATER + MOLFILE_METHANOL
    path = tmp_path / ("m.sdf.gz" if gz else "m.sdf")
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    water, methanol = list(read_sdf(path))
    np.testing.assert_array_equal(water.numbers, [8, 1, 1])
    np.testing.assert_array_equal(methanol.numbers, [6, 8, 1, 1, 1, 1])
    np.testing.assert_allclose(methanol.positions_angstrom[5], [0.8759, -1.0646, 0.0])
    assert water.energy_ev is None and "record 1" in methanol.source


def test_sdf_truncated_and_bad_counts(tmp_path):
    truncated = tmp_path / "t.sdf"
    truncated.write_text(MOLFILE_WATER + "\n".join(MOLFILE_METHANOL.splitlines()[:6]) + "\n")
    reader = read_sdf(truncated)
    next(reader)
    with pytest.raises(SDFFormatError, match=r"t\.sdf record 1: truncated at end of file"):
        next(reader)
    short = tmp_path / "s.sdf"
    short.write_text("\n".join(MOLFILE_WATER.splitlines()[:5]) + "\n$$$$\n")
    with pytest.raises(SDFFormatError, match=r"s\.sdf record 0: truncated record, counts line declares 3 atoms"):
        list(read_sdf(short))
    bad = tmp_path / "b.sdf"
    bad.write_text(MOLFILE_WATER.replace("  3  2  0", "  x  2  0"))
    with pytest.raises(SDFFormatError, match=r"b\.sdf record 0: bad counts line"):
        list(read_sdf(bad))


# ----------------------------------------------------------------------------------------------- trajectory
def test_trajectory_structures_from_dcd(tmp_path, ala2):
    import mdtraj
    import openmm.app as app

    pdb = tmp_path / "ala2.pdb"
    with open(pdb, "w") as f:
        app.PDBFile.writeFile(ala2.topology, ala2.positions_nm * 10.0, f)  # PDBFile takes Å as plain numbers
    top = mdtraj.load_topology(str(pdb))
    rng = np.random.default_rng(0)
    xyz = ala2.positions_nm[None] + 0.005 * rng.normal(size=(6, top.n_atoms, 3))
    mdtraj.Trajectory(xyz.astype(np.float32), top).save_dcd(str(tmp_path / "t.dcd"))

    frames = list(trajectory_structures(tmp_path / "t.dcd", pdb, stride=2))
    assert len(frames) == 3
    expected_z = [a.element.atomic_number for a in ala2.topology.atoms()]
    np.testing.assert_array_equal(frames[0].numbers, expected_z)
    np.testing.assert_allclose(frames[1].positions_angstrom, xyz[2] * 10.0, atol=1e-3)  # DCD stores float32 Å
    assert frames[1].source.endswith("t.dcd#2")

    heavy = list(trajectory_structures([tmp_path / "t.dcd"] * 2, pdb, selection="not element H"))
    assert len(heavy) == 12 and heavy[0].n_atoms == 10 and 1 not in heavy[0].numbers
    with pytest.raises(ValueError, match="matches no atom"):
        next(trajectory_structures(tmp_path / "t.dcd", pdb, selection="name XX"))
