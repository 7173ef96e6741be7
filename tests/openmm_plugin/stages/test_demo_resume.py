"""SIGKILL a real ``cvlearn demo --quick`` in each biased run, rerun it, and get the uninterrupted COLVARs.

The Reference platform with fixed seeds is deterministic, and the demo's checkpoint holds the OpenMM state (with
the integrator's RNG) and the hills together, so the resumed COLVAR equals the uninterrupted one row for row (the
learned-CV run: up to float32 rounding). The killed demo reuses the uninterrupted demo's training MD and CV.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from cvlearn.data.colvar import read_colvar
from openmm_plugin.stages.demo import QUICK
from tests.openmm_plugin.stages.test_demo import ROOT
from tests.openmm_plugin.test_kill_resume import _kill_after_new_checkpoint, _rows, _start

REFERENCE, LEARNED = "biased_reference_phi_psi", "biased_learned_cv"


def _demo(out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "openmm_plugin.cli", "demo", "--quick", "--out", str(out), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)


def _kill_in(run: str, out, rng: random.Random, ref_rows: np.ndarray) -> int:
    """Start the demo, SIGKILL it after a checkpoint of ``run``; the COLVAR on disk reaches that checkpoint."""
    _kill_after_new_checkpoint(_start(["demo", "--quick", "--out", str(out)]), out / f"{run}.chk.npz", rng)
    with np.load(out / f"{run}.chk.npz") as state:
        checkpoint_rows = int(state["n_frames"])
    rows = _rows(read_colvar(out / f"{run}.colvar"))
    assert 0 < checkpoint_rows < len(ref_rows) and len(rows) >= checkpoint_rows  # every row up to the checkpoint
    np.testing.assert_array_equal(rows, ref_rows[:len(rows)])
    assert not (out / f"{run}.json").exists() and not (out / "metrics.json").exists()
    return checkpoint_rows


@pytest.mark.slow
def test_killed_demo_resumes_its_biased_runs_to_the_uninterrupted_colvars(tmp_path):
    reference = tmp_path / "reference"
    result = _demo(reference)
    assert result.returncode == 0, result.stderr[-3000:]
    ref = {run: _rows(read_colvar(reference / f"{run}.colvar")) for run in (REFERENCE, LEARNED)}

    out = tmp_path / "killed"  # the finished stages of the same config (training MD, CV), without the biased runs
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("biased_*", "metrics.json", "report.md"))
    rng = random.Random(14)
    _kill_in(REFERENCE, out, rng, ref[REFERENCE])
    checkpoint_rows = _kill_in(LEARNED, out, rng, ref[LEARNED])  # the φ/ψ run resumed and finished, then this kill
    result = _demo(out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stderr
    rows = {run: _rows(read_colvar(out / f"{run}.colvar")) for run in (REFERENCE, LEARNED)}
    for run in (REFERENCE, LEARNED):
        assert np.all(np.diff(rows[run][:, 0]) > 0), run  # strictly increasing time: no row twice
        np.testing.assert_array_equal(rows[run][:, 0], ref[run][:, 0])  # and none missing
    np.testing.assert_array_equal(rows[REFERENCE], ref[REFERENCE])  # Reference platform, float64 torsions: exact
    # The learned run (float32 GNN, MTS) resumes to within ~1e-5 at the first row after the checkpoint (measured);
    # MD is chaotic, so later rows drift apart: compare what is exact and the first resumed row.
    np.testing.assert_array_equal(rows[LEARNED][:checkpoint_rows], ref[LEARNED][:checkpoint_rows])
    np.testing.assert_allclose(rows[LEARNED][checkpoint_rows], ref[LEARNED][checkpoint_rows], rtol=1e-3, atol=1e-3)
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith((".part.dcd", ".chk.npz"))]

    changed = tmp_path / "changed.yaml"  # a rerun under another config is refused, naming the difference
    changed.write_text(yaml.safe_dump({**dataclasses.asdict(QUICK), "height_kjmol": 2.0}))
    result = _demo(out, "--config", str(changed))
    assert result.returncode == 2 and "height_kjmol: 1.2 -> 2.0" in result.stderr, result.stderr[-3000:]
    assert "--restart-fresh" in result.stderr and "Traceback" not in result.stderr
