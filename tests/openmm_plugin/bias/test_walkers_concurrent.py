"""Multiple walkers as real concurrent OS processes sharing one ``walkers_dir`` (metadynamics and OPES).

Four walker processes run the analytic double well at once; one is SIGKILLed between two checkpoints (after
it deposited past its last checkpoint and the others read those kernels) and is then restarted alone. After a
last sync, every walker's state must hold every walker's deposited kernels exactly once (none lost, none
replayed twice), and ``walkers_dir`` must hold only the complete per-walker files (no temporaries).
"""

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from openmm_plugin.bias import BiasRunner, Metadynamics, OPESMetad
from tests.openmm_plugin.bias import double_well as dw

REPO = Path(__file__).resolve().parents[3]
N_WALKERS = 4
N_STEPS = 2000
PACE_STEPS = 50
SAVE_EVERY_STEPS = 500
KILLED = 3  # the walker that dies
KILL_AT = 1250  # 5 depositions after its checkpoint at step 1000
WAIT_AT = 1900  # the others wait here until it died, so they surely replayed those 5 rows
LABELS = {"metad": "metad", "opes": "opes"}


def make_bias(method):
    """The bias of every walker; OPES without compression so each deposition stays one kernel."""
    if method == "metad":
        return Metadynamics(sigma=0.05, height_kjmol=1.0, pace_steps=PACE_STEPS, temperature_k=dw.TEMPERATURE_K,
                            bias_factor=5.0, lower=-1.2, upper=1.2)
    return OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=PACE_STEPS, temperature_k=dw.TEMPERATURE_K,
                     compression_threshold=0.0)


# One walker process: build its run, resume its checkpoint if any, wait for the others (so the walkers
# really overlap), then step; optionally SIGKILL itself at `kill_at` or wait at `wait_at` for a marker file.
WALKER_SCRIPT = """
import json, os, signal, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
from openmm_plugin.bias import BiasRunner
from openmm_plugin.forces import python_bias_force
from tests.openmm_plugin.bias import double_well as dw
from tests.openmm_plugin.bias.test_md import _simulation
from tests.openmm_plugin.bias.test_walkers_concurrent import make_bias, SAVE_EVERY_STEPS

cfg = json.loads(sys.argv[1])
root, w = Path(cfg["root"]), cfg["walker"]

def wait_for(paths):
    deadline = time.monotonic() + 120
    while not all(Path(p).exists() for p in paths):
        if time.monotonic() > deadline:
            sys.exit(f"walker {w}: timed out waiting for {paths}")
        time.sleep(0.02)

cv = dw.coordinate_cv(root / f"cv{w}.pt")
bias = make_bias(cfg["method"])
system = dw.make_system()
force = python_bias_force(cv, bias)
system.addForce(force)
sim = _simulation(system, seed=w)
runner = BiasRunner(bias, callback=force.callback, save_path=root / f"state{w}.npz",
                    save_every_steps=SAVE_EVERY_STEPS, walkers_dir=root / "walkers", walker_id=w)
runner.restore(sim)
(root / f"ready{w}").touch()
wait_for(cfg["barrier"])
if cfg.get("kill_at"):
    runner.step(sim, cfg["kill_at"] - sim.currentStep)
    (root / "died").touch()
    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final save: as a node failure
if cfg.get("wait_at"):
    runner.step(sim, cfg["wait_at"] - sim.currentStep)
    wait_for([root / "died"])
runner.step(sim, cfg["n_steps"] - sim.currentStep)
print(json.dumps({"walker": w, "step": sim.currentStep}))
"""


def _launch(root, method, walker, barrier, **extra):
    cfg = {"root": str(root), "method": method, "walker": walker, "n_steps": N_STEPS,
           "barrier": [str(root / f"ready{w}") for w in barrier], **extra}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(root / "walker.py"), json.dumps(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs):
    results = {}
    try:
        for w, proc in procs.items():
            out, err = proc.communicate(timeout=180)
            results[w] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def _kernels(leaf, method) -> list[tuple]:
    """Kernels in a bias state, one tuple each (metad: height, centre; OPES: height, centre, sigma)."""
    if method == "metad":
        table = np.column_stack([leaf.heights, leaf.centers])
    else:
        table = np.column_stack([leaf.heights, leaf.centers, leaf.sigmas])
    return [tuple(row) for row in table]


def _deposited(records, method) -> list[tuple]:
    """The kernels a walker deposited, from its own records (OPES rows start with the log-weight)."""
    return [tuple(row) for row in (records if method == "metad" else records[:, 1:])]


def _final_states(root, method, cv):
    """Each walker's last checkpoint, plus one more sync (what its next step would replay)."""
    states = {}
    for w in range(N_WALKERS):
        bias = make_bias(method)
        runner = BiasRunner(bias, cv=cv, walkers_dir=root / "walkers", walker_id=w)
        assert runner.restore(path=root / f"state{w}.npz")
        runner.sync_walkers()
        states[w] = bias
    return states


def _check_every_kernel_once(root, method, cv, steps):
    label = LABELS[method]
    walkers = root / "walkers"
    assert sorted(p.name for p in walkers.iterdir()) == [f"{label}.walker{w}.npz" for w in range(N_WALKERS)]
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no atomic-write leftovers
    states = _final_states(root, method, cv)
    own = {}
    for w, bias in states.items():
        with np.load(walkers / f"{label}.walker{w}.npz") as data:
            shared = data["records"]
        assert np.array_equal(shared, bias.records), f"walker {w}: its shared file differs from its own records"
        assert len(bias.records) == steps[w] // PACE_STEPS, f"walker {w}: {len(bias.records)} depositions"
        own[w] = _deposited(bias.records, method)
    expected = Counter(k for w in own for k in own[w])
    assert len(expected) == sum(len(v) for v in own.values())  # kernels are distinguishable
    for w, bias in states.items():
        found = Counter(_kernels(bias, method))
        lost = {v: sum(found[k] == 0 for k in own[v]) for v in own}
        twice = {v: sum(found[k] > 1 for k in own[v]) for v in own}
        foreign = sum(n for k, n in found.items() if k not in expected)
        assert not any(lost.values()) and not any(twice.values()) and foreign == 0, (
            f"walker {w}: kernels lost per depositing walker {lost}, read twice {twice}, from nowhere {foreign}")
        if method == "opes":
            assert bias.counter == 1 + sum(expected.values())
    probe = np.linspace(-0.8, 0.8, 9)
    reference = [states[0].energy_and_gradient([p])[0] for p in probe]
    for bias in states.values():  # same kernels, possibly replayed in another order
        assert np.allclose([bias.energy_and_gradient([p])[0] for p in probe], reference, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module", params=["metad", "opes"])
def four_walkers(request, tmp_path_factory):
    """Four concurrent walker processes; walker 3 is SIGKILLed at step 1250 (last checkpoint 1000)."""
    method = request.param
    root = tmp_path_factory.mktemp(f"walkers_{method}")
    (root / "walker.py").write_text(WALKER_SCRIPT)
    everyone = list(range(N_WALKERS))
    procs = {w: _launch(root, method, w, everyone, **({"kill_at": KILL_AT} if w == KILLED else {"wait_at": WAIT_AT}))
             for w in everyone}
    results = _wait(procs)
    for w, (code, out, err) in results.items():
        expected_code = -9 if w == KILLED else 0
        assert code == expected_code, f"walker {w}: exit {code}\n{out}\n{err[-3000:]}"
    cv = dw.coordinate_cv(root / "cv.pt")
    return method, root, cv


@pytest.mark.slow
def test_concurrent_walkers_share_every_kernel_once(four_walkers):
    """Before the restart: the survivors ran to the end; the dead walker's file holds what it deposited."""
    method, root, cv = four_walkers
    with np.load(root / f"state{KILLED}.npz") as data:
        assert int(data["runner/step"]) == 1000
    # the dead walker's shared file is complete up to its death: its state is what the file says
    label = LABELS[method]
    with np.load(root / "walkers" / f"{label}.walker{KILLED}.npz") as data:
        assert data["records"].shape[0] == KILL_AT // PACE_STEPS
    check = root.parent / f"{root.name}_before_restart"
    shutil.copytree(root, check)
    # stand-in for the dead walker's final state: its own file (its checkpoint is older)
    bias = make_bias(method)
    runner = BiasRunner(bias, cv=cv, walkers_dir=check / "walkers", walker_id=KILLED)
    assert runner.restore(path=check / f"state{KILLED}.npz")
    with np.load(check / "walkers" / f"{label}.walker{KILLED}.npz") as data:
        rows = data["records"]
    bias.apply_records(rows[len(bias.records):])
    bias.records = rows
    runner.save(path=check / f"state{KILLED}.npz")
    _check_every_kernel_once(check, method, cv, {w: N_STEPS if w != KILLED else KILL_AT for w in range(N_WALKERS)})


@pytest.mark.slow
def test_killed_walker_restarts_alone_and_ends_with_every_kernel_once(four_walkers, tmp_path):
    """The SIGKILLed walker resumes from its checkpoint, alone; nothing it shared before dying is lost or doubled."""
    method, root, cv = four_walkers
    shutil.copytree(root, tmp_path / "run")
    root = tmp_path / "run"
    results = _wait({KILLED: _launch(root, method, KILLED, [KILLED])})
    code, out, err = results[KILLED]
    assert code == 0, f"restarted walker: exit {code}\n{out}\n{err[-3000:]}"
    assert json.loads(out.strip().splitlines()[-1]) == {"walker": KILLED, "step": N_STEPS}
    # it kept the 5 kernels it shared after its checkpoint (the others replayed them), then deposited on
    steps = {w: N_STEPS for w in range(N_WALKERS)}
    steps[KILLED] = N_STEPS + (KILL_AT - 1000)
    _check_every_kernel_once(root, method, cv, steps)
