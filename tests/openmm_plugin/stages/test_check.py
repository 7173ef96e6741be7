"""``cvlearn check``: passes on a real exported CV, fails (exit 1) on a CV with wrong forces, exit 2 on bad inputs."""

import json

import openmm
import openmm.app as app
import pytest
import torch

from cvlearn.export import export_cv
from openmm_plugin.cli import main
from openmm_plugin.stages.check import CheckConfig, format_table, run_check


@pytest.fixture(scope="module")
def ala2_pdb(tmp_path_factory, ala2):
    path = tmp_path_factory.mktemp("pdb") / "ala2.pdb"
    with open(path, "w") as handle:
        app.PDBFile.writeFile(ala2.topology, openmm.unit.Quantity(ala2.positions_nm, openmm.unit.nanometer), handle)
    return path


class DetachedDistance(torch.nn.Module):
    """d + d²: invariant, but the d² term is detached, so autograd misses it (a real wrong-forces bug)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1, dtype=torch.float64), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = ((x[:, 0] - x[:, 1]) ** 2).sum(dim=-1, keepdim=True).sqrt()
        return self.scale * (d + d.detach() ** 2)


def test_passes_on_exported_cv(exported_cv64, ala2_pdb, tmp_path):
    _, path = exported_cv64
    rows = run_check(CheckConfig(cv=str(path), pdb=str(ala2_pdb), n_perturbed=1, json_out=str(tmp_path / "c.json")))
    assert [row.status for row in rows[:5]] == ["pass"] * 5, format_table(rows)
    assert rows[-1].status == "not applicable (CV is not periodic)"
    saved = json.loads((tmp_path / "c.json").read_text())
    assert [r["status"] for r in saved["rows"]] == [row.status for row in rows]


def test_cli_passes_with_system_xml(exported_cv64, ala2, ala2_pdb, tmp_path, capsys):
    """The real ala2 System (its own forces in other groups) as --system; table printed, exit 0."""
    _, path = exported_cv64
    xml = tmp_path / "system.xml"
    xml.write_text(openmm.XmlSerializer.serialize(ala2.system))
    assert main(["check", str(path), "--pdb", str(ala2_pdb), "--system", str(xml)]) == 0
    out = capsys.readouterr().out
    assert "finite-difference forces" in out and "TorchForce" in out and "FAIL" not in out


def test_wrong_forces_fail_with_exit_1(tmp_path, ala2, ala2_pdb, capsys):
    path = tmp_path / "broken.pt"
    export_cv(DetachedDistance(), path, atom_indices=[4, 14], n_particles=22, atomic_numbers=[6, 6],
              residue_of_atom=[0, 1], dtype=torch.float64, dense_et=False)
    assert main(["check", str(path), "--pdb", str(ala2_pdb)]) == 1
    captured = capsys.readouterr()
    fd_line = next(line for line in captured.out.splitlines() if line.startswith("finite-difference"))
    assert fd_line.endswith("FAIL")
    assert "checks failed: finite-difference forces" in captured.err


def test_bad_inputs_exit_2(exported_cv64, ala2, ala2_pdb, tmp_path, capsys):
    _, path = exported_cv64
    heavy_only = app.Modeller(ala2.topology, openmm.unit.Quantity(ala2.positions_nm, openmm.unit.nanometer))
    heavy_only.delete([a for a in heavy_only.topology.atoms() if a.element.symbol == "H"])
    small = tmp_path / "heavy.pdb"
    with open(small, "w") as handle:
        app.PDBFile.writeFile(heavy_only.topology, heavy_only.positions, handle)
    not_cv = tmp_path / "notes.pt"
    not_cv.write_text("not a CV")
    for argv, message in ((["check", str(path), "--pdb", str(small)], "expected 22 atoms"),
                          (["check", str(tmp_path / "missing.pt"), "--pdb", str(ala2_pdb)], "does not exist"),
                          (["check", str(not_cv), "--pdb", str(ala2_pdb)], "not a TorchScript file")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


# --- periodic CVs ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def periodic_cv(tmp_path_factory, ala2, ala2_heavy):
    from tests.conftest import make_tiny_cv

    heavy, z = ala2_heavy
    path = tmp_path_factory.mktemp("cv") / "periodic.pt"
    export_cv(make_tiny_cv(ala2.topology, heavy, z), path, atom_indices=heavy, n_particles=22, topology=ala2.topology,
              periodic=True)  # float32, as users export: the float64 rows use the eager twin
    return path


def test_periodic_cv_passes_with_the_pdb_box(periodic_cv, ala2, tmp_path, capsys):
    """ala2 in a 2.1 nm box, every atom wrapped into it after moving the molecule onto a corner (so it is split)."""
    import copy

    import numpy as np

    box = np.eye(3) * 2.1
    positions = ala2.positions_nm - ala2.positions_nm[6] + 0.05
    positions -= np.floor(positions / 2.1) * 2.1
    assert np.ptp(positions, axis=0).max() > 1.05  # the molecule is cut by the box edge
    topology = copy.deepcopy(ala2.topology)
    topology.setPeriodicBoxVectors(box * openmm.unit.nanometer)
    pdb = tmp_path / "boxed.pdb"
    with open(pdb, "w") as handle:
        app.PDBFile.writeFile(topology, openmm.unit.Quantity(positions, openmm.unit.nanometer), handle)
    assert "CRYST1" in pdb.read_text()
    rows = run_check(CheckConfig(cv=str(periodic_cv), pdb=str(pdb), n_perturbed=1))
    assert [row.status for row in rows] == ["pass"] * 6, format_table(rows)
    assert rows[-1].check.startswith("periodic-image invariance") and rows[-1].value < 1e-9
    assert main(["check", str(periodic_cv), "--pdb", str(pdb)]) == 0
    assert "periodic-image invariance" in capsys.readouterr().out


def test_periodic_cv_without_a_box_exits_2(periodic_cv, ala2, ala2_pdb, tmp_path, capsys):
    xml = tmp_path / "vacuum.xml"
    xml.write_text(openmm.XmlSerializer.serialize(ala2.system))
    for argv, message in (([], "has no box (CRYST1 record) and no periodic --system was given"),
                          (["--system", str(xml)], "is periodic (forward takes box vectors) but the System has no "
                                                   "periodic box")):
        assert main(["check", str(periodic_cv), "--pdb", str(ala2_pdb), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
