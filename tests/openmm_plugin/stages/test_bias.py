"""``cvlearn bias --config`` end to end on alanine dipeptide, and example 07 as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cvlearn.data.colvar import read_colvar
from cvlearn.config import load_config
from openmm_plugin.stages.bias import BiasConfig
from openmm_plugin.cli import main

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "07_opes_learned_cv.py"


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("method,route", [("opes-explore", "python"), ("metad", "python"), ("restraint", "torch")])
def test_cli_runs_resumes_and_skips(method, route, exported_cv64, tmp_path):
    _, cv_path = exported_cv64
    config = {"cv": str(cv_path), "out": str(tmp_path / "run"), "method": method, "route": route, "n_steps": 200,
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
    with pytest.raises(ValueError, match="system: expected one of the built-in systems"):
        load_config(BiasConfig, _write(tmp_path / "e.yaml", {"system": "ubiquitin"}))
    assert load_config(BiasConfig, _write(tmp_path / "f.yaml", {"system": "pentapeptide_wlall"})).system == "pentapeptide_wlall"


def test_system_must_match_the_cv(exported_cv64, tmp_path):
    """The System comes from the config's built-in system; a CV exported for another particle count is refused."""
    from openmm_plugin.stages.bias import run_bias

    _, cv_path = exported_cv64
    with pytest.raises(ValueError, match="system pentapeptide_wlall has 103"):
        run_bias(BiasConfig(cv=str(cv_path), out=str(tmp_path / "x"), system="pentapeptide_wlall"))


def test_example_07_quick(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "COLVAR fields" in result.stdout and (tmp_path / "out" / "bias.yaml").is_file()
    config = load_config(BiasConfig, tmp_path / "out" / "bias.yaml")  # the written config loads back
    assert config.method == "opes-metad"


def test_compile_needs_the_python_route():
    from openmm_plugin.stages.bias import BiasConfig

    with pytest.raises(ValueError, match="route 'python'"):
        BiasConfig(route="torch", compile=True)
    assert BiasConfig(route="python", compile=True).compile
