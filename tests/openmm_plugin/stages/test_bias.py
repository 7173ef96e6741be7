"""``cvlearn bias --config`` end to end: a built-in system, a serialized System + PDB, force-field files + PDB; the
CV's contract checked against the System; example 07 as a user runs it."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cvlearn.config import from_dict, load_config
from cvlearn.data.colvar import read_colvar
from cvlearn.errors import ConfigError
from cvlearn.export import load_cv
from openmm_plugin.bias.runner import BiasRunner
from openmm_plugin.bias.torsions import export_torsion_cv
from openmm_plugin.cli import main
from openmm_plugin.stages.bias import BiasConfig, build_bias, run_bias
from systems import alanine_dipeptide

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "07_opes_learned_cv.py"


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("method,route", [("opes-explore", "python"), ("metad", "python"), ("restraint", "torch")])
def test_cli_runs_resumes_and_skips(method, route, exported_cv64, tmp_path):
    _, cv_path = exported_cv64
    config = {"cv": str(cv_path), "system": "alanine_dipeptide", "out": str(tmp_path / "run"), "method": method,
              "route": route, "n_steps": 200,
              "report_interval_steps": 50, "save_every_steps": 100, "components": [1],
              "opes": {"sigma": [0.1], "barrier_kjmol": 20.0, "pace_steps": 50},
              "metad": {"sigma": [0.1], "pace_steps": 50, "lower": [-10.0], "upper": [10.0]},
              "restraint": {"center": [0.0], "kappa_kjmol": [10.0]},
              "walls": {"upper_at": [2.0], "upper_kappa_kjmol": 50.0}}
    path = _write(tmp_path / "bias.yaml", config)
    assert main(["bias", "--config", str(path)]) == 0
    out = tmp_path / "run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["md_steps_run"] == 200
    colvar = read_colvar(out / "COLVAR")
    assert len(colvar["time"]) == 4 and "upper_walls.bias" in colvar
    assert (out / "bias_state.npz").is_file() and (out / "final.pdb").is_file()
    assert main(["bias", "--config", str(path)]) == 0  # finished: skipped
    assert json.loads((out / "summary.json").read_text()) == summary


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match="unknown key"):
        load_config(BiasConfig, _write(tmp_path / "a.yaml", {"method": "opes-metad", "sigmaa": 1}))
    with pytest.raises(ValueError, match="unknown key"):
        load_config(BiasConfig, _write(tmp_path / "b.yaml", {"opes": {"hight": 1}}))
    with pytest.raises(ValueError, match="method"):
        load_config(BiasConfig, _write(tmp_path / "c.yaml", {"method": "abf"}))
    with pytest.raises(ValueError, match="multiple of mts_substeps"):
        load_config(BiasConfig, _write(tmp_path / "d.yaml", {"mts_substeps": 4, "n_steps": 1001}))
    with pytest.raises(ValueError, match=r"e\.yaml: system: expected one of the built-in systems"):
        load_config(BiasConfig, _write(tmp_path / "e.yaml", {"system": "ubiquitin"}))
    with pytest.raises(ValueError, match=r"g\.yaml: system: expected exactly one of `system` \(a built-in: .*\), "
                                         r"`system_xml` \+ `pdb`, or `forcefield` \+ `pdb`; found none$"):
        load_config(BiasConfig, _write(tmp_path / "g.yaml", {"method": "metad"}))
    with pytest.raises(ValueError, match=r"h\.yaml: system: expected exactly one .*found `system` and `forcefield`$"):
        load_config(BiasConfig, _write(tmp_path / "h.yaml", {"system": "alanine_dipeptide",
                                                             "forcefield": ["amber14-all.xml"], "pdb": "x.pdb"}))
    with pytest.raises(ValueError, match=r"i\.yaml: pdb: required with `system_xml`"):
        load_config(BiasConfig, _write(tmp_path / "i.yaml", {"system_xml": "s.xml"}))
    loaded = load_config(BiasConfig, _write(tmp_path / "f.yaml", {"system": "pentapeptide_wlall"}))
    assert loaded.system == "pentapeptide_wlall"




def test_example_07_quick(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "COLVAR fields" in result.stdout and (tmp_path / "out" / "bias.yaml").is_file()
    config = load_config(BiasConfig, tmp_path / "out" / "bias.yaml")  # the written config loads back
    assert config.method == "opes-metad"


def test_compile_needs_the_python_route(tmp_path):
    with pytest.raises(ValueError, match="route 'python'"):
        BiasConfig(route="torch", compile=True, system="alanine_dipeptide")
    assert BiasConfig(route="python", compile=True, system="alanine_dipeptide").compile
    # a route by name, or one line naming the file and key
    ala2 = {"system": "alanine_dipeptide"}
    assert load_config(BiasConfig, _write(tmp_path / "aot.yaml", {"compile": "inductor", **ala2})).compile == "inductor"
    with pytest.raises(ConfigError, match=r"fast\.yaml.*compile: expected true, false, 'aot' or 'inductor', found"):
        load_config(BiasConfig, _write(tmp_path / "fast.yaml", {"compile": "fast", **ala2}))


# --- any System: serialized System + PDB, force-field files + PDB ------------------------------------------------
@pytest.fixture(scope="module")
def ala2_files(tmp_path_factory, ala2):
    """The built-in ala2 as a user brings it: System XML, PDB, and a φ/ψ torsion CV (periodic, range ±π)."""
    from tests.openmm_plugin.test_user_system import write_pdb, write_xml

    folder = tmp_path_factory.mktemp("ala2_files")
    export_torsion_cv(folder / "phi_psi.pt", alanine_dipeptide.phi_psi_indices(ala2.topology), ala2.topology)
    return (write_xml(folder / "ala2.xml", ala2.system),
            write_pdb(folder / "ala2.pdb", ala2.topology, ala2.positions_nm), folder / "phi_psi.pt")


def _bias_config(cv, out, **changes) -> BiasConfig:
    config = {"cv": str(cv), "out": str(out), "method": "opes-metad", "n_steps": 200, "report_interval_steps": 50,
              "save_every_steps": 100, "opes": {"sigma": [0.3], "barrier_kjmol": 20.0, "pace_steps": 50}, **changes}
    return from_dict(BiasConfig, config, "bias.yaml")


def _killed_at_second_save(config, monkeypatch) -> None:
    """Run ``config`` and kill it (KeyboardInterrupt) at its second checkpoint, as a kill by hand would."""
    save, calls = BiasRunner.save, []

    def killed_at_second_save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return save(self, *args, **kwargs)

    monkeypatch.setattr(BiasRunner, "save", killed_at_second_save)
    with pytest.raises(KeyboardInterrupt):
        run_bias(config)
    monkeypatch.undo()


def test_system_xml_and_pdb_run_resume_and_skip(ala2_files, tmp_path, monkeypatch):
    """A run killed after its first checkpoint resumes there: the COLVAR has every row once, run.json hashes the PDB."""
    xml, pdb, cv = ala2_files
    config = _bias_config(cv, tmp_path / "run", system_xml=str(xml), pdb=str(pdb))
    _killed_at_second_save(config, monkeypatch)
    summary = run_bias(config)
    assert summary["md_steps_run"] == 100 and summary["system"] == f"system_xml {xml} + pdb {pdb}"
    colvar = read_colvar(tmp_path / "run" / "COLVAR")
    np.testing.assert_allclose(colvar["time"], [0.1, 0.2, 0.3, 0.4])
    assert "torsion0" in colvar and summary["bias"]["opes"]["nker"] >= 1
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(record["inputs"]) == {"cv", "system_xml", "pdb"} and record["extra"]["system_xml"].startswith("sha256:")
    assert run_bias(config) == json.loads(json.dumps(summary))  # finished: skipped (the summary read back)


def test_forcefield_and_pdb(tmp_path, ala2_files):
    """amber14-all on an ACE-ALA-NME PDB in vacuum (NoCutoff), minimised before the start; periods from the CV."""
    import openmm.app as app

    from systems.peptides import build_capped_peptide
    from tests.openmm_plugin.test_user_system import write_pdb

    topology, positions = build_capped_peptide("A", app.ForceField("amber14-all.xml"))
    pdb = write_pdb(tmp_path / "ace_ala_nme.pdb", topology, positions)
    cv = ala2_files[2]
    config = _bias_config(cv, tmp_path / "run", forcefield=["amber14-all.xml"], pdb=str(pdb),
                          nonbonded_method="NoCutoff", minimize=True, method="metad",
                          metad={"sigma": [0.3], "pace_steps": 50, "height_kjmol": 1.0})
    summary = run_bias(config)
    assert summary["md_steps_run"] == 200 and summary["system"].startswith("forcefield ['amber14-all.xml'] + pdb")
    colvar = read_colvar(tmp_path / "run" / "COLVAR")
    assert len(colvar["time"]) == 4 and np.all(np.abs(colvar["torsion1"]) <= np.pi)
    _, spec = load_cv(cv)
    bias = build_bias(config, 2, spec=spec)  # the run's bias: periodic kernels and one period of grid per torsion
    assert bias.periods.tolist() == [2 * np.pi] * 2 and bias.lower.tolist() == [-np.pi] * 2


def test_config_periods_that_differ_from_the_cv_are_warned(ala2_files, tmp_path, caplog):
    _, spec = load_cv(ala2_files[2])
    config = _bias_config(ala2_files[2], tmp_path / "run", system="alanine_dipeptide", periods=[3.0])
    with caplog.at_level(logging.WARNING):
        bias = build_bias(config, 2, spec=spec)
    assert bias.periods.tolist() == [3.0, 3.0]
    assert "the config gives [3.0, 3.0]" in caplog.text and "says [6.283185307179586, 6.283185307179586]" in caplog.text


def test_contract_and_file_errors(ala2_files, ala2, tmp_path):
    import openmm.app as app
    import openmm.unit as unit

    from systems.peptides import build_capped_peptide
    from tests.openmm_plugin.test_user_system import write_pdb

    xml, pdb, cv = ala2_files
    modeller = app.Modeller(ala2.topology, ala2.positions_nm * unit.nanometer)
    modeller.delete([next(a for a in modeller.topology.atoms() if a.element.symbol == "H")])
    short = write_pdb(tmp_path / "short.pdb", modeller.topology, modeller.positions.value_in_unit(unit.nanometer))
    with pytest.raises(ConfigError, match=r"^pdb: expected 22 atoms \(the System in .*ala2\.xml has 22 particles\), "
                                          r"found 21 in .*short\.pdb$"):
        run_bias(_bias_config(cv, tmp_path / "a", system_xml=str(xml), pdb=str(short)))
    with pytest.raises(FileNotFoundError, match=r"^pdb: PDB file '.*nothere\.pdb' does not exist$"):
        run_bias(_bias_config(cv, tmp_path / "b", system_xml=str(xml), pdb=str(tmp_path / "nothere.pdb")))
    topology, positions = build_capped_peptide("AA", app.ForceField("amber14-all.xml"))
    aa = write_pdb(tmp_path / "aa.pdb", topology, positions)
    with pytest.raises(ConfigError, match=r"^cv: .*phi_psi\.pt: CV expects 22 particles, forcefield "
                                          r"\['amber14-all\.xml'\] \+ pdb .*aa\.pdb has 32$"):
        run_bias(_bias_config(cv, tmp_path / "c", forcefield=["amber14-all.xml"], pdb=str(aa),
                              nonbonded_method="NoCutoff"))
    with pytest.raises(ConfigError, match=r"^components: expected component indices in \[0, 2\) of this "
                                          r"2-dimensional CV \(.*phi_psi\.pt\), found \[0, 3\]$"):
        run_bias(_bias_config(cv, tmp_path / "d", system="alanine_dipeptide", components=[0, 3]))
    assert not any((tmp_path / name).exists() for name in "abcd")  # refused before anything was written


def test_walker_id_and_seed_flags_override_the_config(tmp_path):
    """One config for a job array: each ``cvlearn bias`` gets its walker id and seed on the command line."""
    from openmm_plugin.cli import bias_config, build_parser

    path = _write(tmp_path / "bias.yaml", {"cv": "cv.pt", "system": "alanine_dipeptide", "walkers_dir": "shared",
                                           "walker_id": 0, "seed": 1})
    args = build_parser().parse_args(["bias", "--config", str(path), "--walker-id", "3", "--seed", "7",
                                      "--out", str(tmp_path / "w3")])
    config = bias_config(args)
    assert (config.walker_id, config.seed, config.out, config.walkers_dir) == (3, 7, str(tmp_path / "w3"), "shared")
    assert bias_config(build_parser().parse_args(["bias", "--config", str(path)])).walker_id == 0
    with pytest.raises(ConfigError, match="seed"):
        bias_config(build_parser().parse_args(["bias", "--config", str(path), "--seed", "-2"]))


def test_temperature_guard_alone_and_with_a_cap():
    from openmm_plugin.stages.bias import _guard

    assert _guard(BiasConfig(system="alanine_dipeptide")) is None
    hot = _guard(BiasConfig(system="alanine_dipeptide", force_guard_max_temperature_k=450.0, force_guard_mode="stop"))
    assert hot.watches_temperature and hot.max_kinetic_temperature_k == 450.0 and hot.max_force_kjmol_nm == np.inf
    both = _guard(BiasConfig(system="alanine_dipeptide", force_guard_kjmol_nm=2000.0, force_guard_max_temperature_k=450.0))
    assert both.max_force_kjmol_nm == 2000.0 and both.watches_temperature
    with pytest.raises(ValueError, match="force_guard_max_temperature_k: needs route 'python'"):
        BiasConfig(system="alanine_dipeptide", route="torch", force_guard_max_temperature_k=450.0)
    with pytest.raises(ValueError, match="force_guard_max_temperature_k"):
        BiasConfig(system="alanine_dipeptide", force_guard_max_temperature_k=-1.0)


def test_a_resumed_run_warms_the_cv_up_before_the_clock_starts(ala2_files, tmp_path, monkeypatch):
    """A fresh start warms the CV up in setVelocitiesToTemperature; a resumed one did so in its first timed step,
    so torch.compile's 30-60 s compile counted as MD time (a resumed walker's ms/step). Now it is timed apart."""
    import time

    from openmm_plugin.cv_evaluation import CVEvaluator

    xml, pdb, cv = ala2_files
    config = _bias_config(cv, tmp_path / "run", system_xml=str(xml), pdb=str(pdb))
    _killed_at_second_save(config, monkeypatch)
    real = CVEvaluator.warm_up
    monkeypatch.setattr(CVEvaluator, "warm_up", lambda self, *a, **k: (time.sleep(3.0), real(self, *a, **k))[1])
    summary = run_bias(config)  # resumed from the checkpoint: no setVelocitiesToTemperature
    assert summary["warm_up_seconds"] >= 3.0 > summary["seconds"]
    assert summary["ms_per_step"] == pytest.approx(summary["seconds"] * 1e3 / summary["md_steps_run"])


def test_native_route_runs_resumes_and_skips(ala2_files, tmp_path, monkeypatch):
    """``route: native`` through ``cvlearn bias``'s stage: a torsion CV file, killed at a checkpoint and resumed, with
    the same COLVAR and records as the python route; a learned CV on it is refused in one line."""
    xml, pdb, cv = ala2_files
    config = _bias_config(cv, tmp_path / "run", system_xml=str(xml), pdb=str(pdb), route="native",
                          native_grid_bins=96)
    _killed_at_second_save(config, monkeypatch)
    summary = run_bias(config)
    assert summary["md_steps_run"] == 100 and summary["config"]["route"] == "native"
    assert summary["model_calls"] >= 4  # CV reads from the Context: depositions and COLVAR rows, never per step
    colvar = read_colvar(tmp_path / "run" / "COLVAR")
    np.testing.assert_allclose(colvar["time"], [0.1, 0.2, 0.3, 0.4])
    assert "torsion0" in colvar and summary["bias"]["opes"]["nker"] >= 1
    assert run_bias(config) == json.loads(json.dumps(summary))  # finished: skipped
    with pytest.raises(ValueError, match=r"native_grid_bins: expected an integer >= 4, found 2"):
        _bias_config(cv, tmp_path / "other", system="alanine_dipeptide", route="native", native_grid_bins=2)
    with pytest.raises(ValueError, match=r"force_guard_kjmol_nm: needs route 'python'"):
        _bias_config(cv, tmp_path / "other", system="alanine_dipeptide", route="native", force_guard_kjmol_nm=1e3)
