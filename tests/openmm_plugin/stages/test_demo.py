"""The main job end to end with --quick settings: real MD, a real GNN VAMPNet, real metadynamics."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openmm_plugin.cli import main

REQUIRED_KEYS = ["vamp2_val", "vamp2_val_deeptime", "vamp2_val_baseline_distances", "n_cvs", "lagtime_ps",
                 "training_phi_transitions", "biased_ns", "biased_phi_transitions", "deltaF_C7ax_C7eq_kjmol",
                 "deltaF_reference_kjmol", "ms_per_step_unbiased", "ms_per_step_biased"]


ROOT = Path(__file__).resolve().parents[3]
MAX_LOG_BYTES = 50_000


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """One quick demo, run as a batch job runs it: a subprocess whose stdout and stderr go to a file (not a TTY)."""
    out = tmp_path_factory.mktemp("demo")
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as handle:
        result = subprocess.run([sys.executable, "-m", "openmm_plugin.cli", "demo", "--quick", "--out", str(out)],
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=handle,
                                stderr=subprocess.STDOUT, timeout=1800)
    assert result.returncode == 0, log.read_text()[-5000:]
    return out


def test_batch_log_is_small(demo_dir):
    """Progress bars do not flood a batch job's log: rate-limited plain lines, no carriage-return redraws."""
    text = (demo_dir.parent / f"{demo_dir.name}.log").read_text()
    assert len(text.encode()) < MAX_LOG_BYTES, f"{len(text.encode())} bytes:\n{text[:3000]}"
    assert "\r" not in text and "report:" in text


def test_outputs_exist(demo_dir):
    for name in ("report.md", "metrics.json", "cv.pt", "cv_on_phi_psi.png", "fes_phi_psi.png", "learn/training_curves.png", "learn/report.md",
                 "biased_learned_cv.colvar", "biased_reference_phi_psi.colvar"):
        assert (demo_dir / name).stat().st_size > 0, name
    assert not list(demo_dir.rglob(".*.tmp*")) and not list(demo_dir.glob(".*"))  # no half-written leftovers


def test_biased_runs_use_cvlearns_engine(demo_dir):
    """Both biased runs go through one PythonForce: one model call per (outer) step for the 2-D learned CV (plus one
    per deposition where an MTS integrator must recompute the forces it keeps), and a PLUMED-style COLVAR with V(s,t) and
    c(t) for reweighting."""
    from cvlearn.data.colvar import read_colvar

    for name, cvs in (("biased_learned_cv", ["cv1", "cv2"]), ("biased_reference_phi_psi", ["phi", "psi"])):
        run = json.loads((demo_dir / f"{name}.json").read_text())
        assert 0 < run["bias_changes_per_step"] < 0.1
        assert 0 <= run["bias_recomputes_per_step"] <= run["bias_changes_per_step"]
        assert run["bias_force_calls_per_step"] == pytest.approx(1.0 + run["bias_recomputes_per_step"], abs=0.002)
        colvar = read_colvar(demo_dir / f"{name}.colvar")
        assert list(colvar)[:3] == ["time", *cvs] and {"metad.bias", "metad.rct"} <= set(colvar)
        assert colvar["metad.rct"][-1] > 0  # c(t) grows as hills are deposited


def test_metrics(demo_dir):
    metrics = json.loads((demo_dir / "metrics.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in metrics, key
    assert metrics["vamp2_val"] == pytest.approx(metrics["vamp2_val_deeptime"], abs=1e-5)
    assert 1.0 <= metrics["vamp2_val"] <= 1.0 + metrics["n_cvs"]
    assert metrics["ms_per_step_unbiased"] > 0 and metrics["ms_per_step_biased"] > 0
    assert math.isfinite(metrics["deltaF_C7ax_C7eq_kjmol"]) or metrics["biased_phi_transitions"] == 0


def test_rerun_skips_finished_stages(demo_dir, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in demo_dir.rglob("*.dcd")}
    assert main(["demo", "--quick", "--out", str(demo_dir)]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in demo_dir.rglob("*.dcd") if p.parent.name != "timing"}
    assert all(before[name] == mtime for name, mtime in after.items())


def test_config_file_rejects_unknown_keys(tmp_path, capsys):
    config = tmp_path / "demo.yaml"
    config.write_text("seed: 1\nnot_a_setting: 3\n")
    assert main(["demo", "--config", str(config), "--out", str(tmp_path / "out")]) == 2  # one line, exit 2
    assert "not_a_setting" in capsys.readouterr().err
