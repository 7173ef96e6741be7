"""SIGKILL a real ``cvlearn simulate`` / ``cvlearn bias`` subprocess mid-run, resume it, and get the uninterrupted run.

Dynamics on the Reference platform are deterministic and the checkpoint carries the integrator's RNG, so a run
killed at any point and resumed must end bit for bit where the uninterrupted run ends: same trajectory frames
(none duplicated), same hills, same COLVAR rows. Kill points are drawn at random (seeded) after a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import yaml

from cvlearn.data.colvar import read_colvar
from cvlearn.run_dir import RunMismatchError
from openmm_plugin.stages.bias import BiasConfig, run_bias
from openmm_plugin.stages.simulate import SimulateConfig, run_simulate

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "alanine_dipeptide_T300_s0"
SIMULATE = dict(system="alanine_dipeptide", ns=0.04, report_interval_ps=1.0, checkpoint_interval_ps=1.0)  # 20000 steps


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "openmm_plugin.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_after_new_checkpoint(process: subprocess.Popen, checkpoint: Path, rng: random.Random) -> None:
    """Wait for a checkpoint newer than the one there now, sleep a random moment, SIGKILL."""
    before = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
    deadline = time.monotonic() + 300
    while not (checkpoint.exists() and checkpoint.stat().st_mtime_ns != before):
        if process.poll() is not None:
            pytest.fail(f"the run ended (rc {process.returncode}) before a checkpoint: {process.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("no checkpoint within 300 s")
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.4))
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    if process.returncode != -signal.SIGKILL:
        pytest.fail(f"the run ended by itself (rc {process.returncode}) before the kill; make it longer")


def _only(folder: Path, names: set[str]) -> None:
    found = {p.name for p in folder.iterdir()}
    assert found == names, f"left behind: {sorted(found - names)}, missing: {sorted(names - found)}"


@pytest.mark.slow
def test_killed_simulate_resumes_to_the_uninterrupted_run(tmp_path):
    reference = run_simulate(SimulateConfig(out=str(tmp_path / "ref"), **SIMULATE))
    out = tmp_path / "killed"
    args = ["simulate", "--system", "alanine_dipeptide", "--ns", str(SIMULATE["ns"]), "--out", str(out),
            "--report-interval-ps", "1.0", "--checkpoint-interval-ps", "1.0"]
    rng = random.Random(14)
    for _ in range(2):  # two kills at random points, the second one in the resumed run
        _kill_after_new_checkpoint(_start(args), out / f"{PREFIX}.chk.npz", rng)
        assert not (out / f"{PREFIX}.dcd").exists()  # an unfinished trajectory never looks finished
        assert '"finished": false' in (out / f"{PREFIX}.run.json").read_text()
    resumed = run_simulate(SimulateConfig(out=str(out), **SIMULATE))
    assert not resumed.skipped and resumed.n_frames == reference.n_frames == 40
    a = mdtraj.load(str(reference.trajectory_path), top=str(reference.topology_path))
    b = mdtraj.load(str(resumed.trajectory_path), top=str(resumed.topology_path))
    assert b.n_frames == a.n_frames  # frames past the checkpoint were cut, none duplicated
    np.testing.assert_array_equal(b.xyz, a.xyz)
    _only(out, {f"{PREFIX}.dcd", f"{PREFIX}.pdb", f"{PREFIX}.run.json"})  # no temp, part or checkpoint file
    assert run_simulate(SimulateConfig(out=str(out), **SIMULATE)).skipped

    with pytest.raises(RunMismatchError, match=r"ns: 0\.04 -> 0\.01\).*--restart-fresh"):
        run_simulate(SimulateConfig(out=str(out), **{**SIMULATE, "ns": 0.01}))
    fresh = run_simulate(SimulateConfig(out=str(out), **{**SIMULATE, "ns": 0.005}), restart_fresh=True)
    assert fresh.n_frames == 5 and not fresh.skipped


def _bias_config(cv_path, out, **changes) -> dict:
    config = {"cv": str(cv_path), "system": "alanine_dipeptide", "out": str(out), "method": "metad", "route": "python",
              "n_steps": 2400,
              "report_interval_steps": 40, "save_every_steps": 200, "components": [0],
              "metad": {"sigma": [0.1], "height_kjmol": 1.0, "pace_steps": 40, "lower": [-10.0], "upper": [10.0]}}
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


def _rows(colvar: dict) -> np.ndarray:
    return np.column_stack(list(colvar.values()))


@pytest.mark.slow
def test_killed_bias_resumes_to_the_uninterrupted_run(exported_cv64, tmp_path):
    _, cv_path = exported_cv64
    ref_path = tmp_path / "ref.yaml"
    ref_path.write_text(yaml.safe_dump(_bias_config(cv_path, tmp_path / "ref")))
    reference = run_bias(_config_from(ref_path))
    ref_colvar = _rows(read_colvar(tmp_path / "ref" / "COLVAR"))
    assert ref_colvar.shape[0] == 60 and reference["md_steps_run"] == 2400

    out = tmp_path / "killed"
    config_path = tmp_path / "bias.yaml"
    config_path.write_text(yaml.safe_dump(_bias_config(cv_path, out)))
    rng = random.Random(6)
    for _ in range(2):
        _kill_after_new_checkpoint(_start(["bias", "--config", str(config_path)]), out / "bias_state.npz", rng)
        with np.load(out / "bias_state.npz") as state:
            checkpoint_step = int(state["runner/step"])
        rows = _rows(read_colvar(out / "COLVAR"))
        # every row up to the checkpoint is on disk, and what is there is the uninterrupted run's rows
        assert rows[-1, 0] >= checkpoint_step * 0.002 - 1e-9
        np.testing.assert_array_equal(rows, ref_colvar[: rows.shape[0]])
        assert not (out / "summary.json").exists() and '"finished": false' in (out / "run.json").read_text()

    summary = run_bias(_config_from(config_path))
    assert summary["md_steps_run"] < 2400  # it resumed
    _assert_same_bias_run(out, tmp_path / "ref")
    _only(out, {"COLVAR", "trajectory.dcd", "bias_state.npz", "final.pdb", "summary.json", "run.json"})
    assert run_bias(_config_from(config_path)) == json.loads(json.dumps(summary))  # finished: skipped

    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(_bias_config(cv_path, out, metad={"sigma": [0.3]})))
    result = subprocess.run([sys.executable, "-m", "openmm_plugin.cli", "bias", "--config", str(changed)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2  # a config error, one line naming the difference
    assert "metad.sigma: [0.1] -> [0.3]" in result.stderr and "--restart-fresh" in result.stderr
    assert "Traceback" not in result.stderr
    assert (out / "summary.json").exists()  # the refused rerun touched nothing


def _assert_same_bias_run(out: Path, ref: Path) -> None:
    """``out`` holds ``ref``'s run bit for bit: every COLVAR row once, the hills, the final structure, and the
    trajectory (frame k at COLVAR row k)."""
    rows = _rows(read_colvar(ref / "COLVAR"))
    np.testing.assert_array_equal(_rows(read_colvar(out / "COLVAR")), rows)  # all rows, none twice
    assert (out / "final.pdb").read_text() == (ref / "final.pdb").read_text()
    with np.load(out / "bias_state.npz") as a, np.load(ref / "bias_state.npz") as b:
        hills = [k for k in b.files if k.startswith("bias/")]
        assert hills and set(hills) == {k for k in a.files if k.startswith("bias/")}
        for key in hills:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ours = mdtraj.load(str(out / "trajectory.dcd"), top=str(out / "final.pdb"))
    theirs = mdtraj.load(str(ref / "trajectory.dcd"), top=str(ref / "final.pdb"))
    assert ours.n_frames == theirs.n_frames == rows.shape[0]
    np.testing.assert_array_equal(ours.xyz, theirs.xyz)


def _config_from(path: Path) -> BiasConfig:
    from cvlearn.config import load_config

    return load_config(BiasConfig, path)


@pytest.mark.slow
def test_a_finished_bias_run_extends_to_the_uninterrupted_longer_run(exported_cv64, tmp_path):
    """``--n-steps`` above the recorded steps extends a finished run from its last checkpoint: the COLVAR, hills,
    trajectory and final structure are the longer uninterrupted run's; lowering it is refused."""
    _, cv_path = exported_cv64
    ref_path = tmp_path / "ref.yaml"
    ref_path.write_text(yaml.safe_dump(_bias_config(cv_path, tmp_path / "ref")))
    run_bias(_config_from(ref_path))  # 2400 steps in one go
    out = tmp_path / "extended"
    config_path = tmp_path / "bias.yaml"
    config_path.write_text(yaml.safe_dump(_bias_config(cv_path, out, n_steps=1200)))
    assert run_bias(_config_from(config_path))["md_steps_run"] == 1200
    assert '"finished": true' in (out / "run.json").read_text()

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "openmm_plugin.cli", "bias", "--config", str(config_path),
                             "--n-steps", "2400"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("1200 steps")  # only the extension ran
    record = json.loads((out / "run.json").read_text())
    assert record["finished"] and record["config"]["n_steps"] == 2400
    assert record["extensions"] == [{"n_steps": [1200, 2400]}]
    _assert_same_bias_run(out, tmp_path / "ref")

    longer = _config_from(config_path)  # n_steps 1200 in the file: a shortening, refused before any step
    with pytest.raises(RunMismatchError, match=r"n_steps: 2400 -> 1200\) \(n_steps can be raised, to extend the run, "
                                               r"not lowered\); pass --restart-fresh"):
        run_bias(longer)
