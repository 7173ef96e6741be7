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

from openmm_plugin.bias import BiasRunner, BiasSum, Metadynamics, OPESMetad
from tests.openmm_plugin.bias import double_well as dw

REPO = Path(__file__).resolve().parents[3]
N_WALKERS = 4
N_STEPS = 2000
PACE_STEPS = 50
SAVE_EVERY_STEPS = 500
KILLED = 3  # the walker that dies
KILL_AT = 1250  # 5 depositions after its checkpoint at step 1000
WAIT_AT = 1900  # the others wait here until it died, so they surely replayed those 5 rows
METHODS = ["metad", "opes"]  # also the bias labels, hence the file names


def make_bias():
    """Every walker's bias: metadynamics + OPES (own files each); OPES uncompressed, one kernel per deposition."""
    return BiasSum([Metadynamics(sigma=0.05, height_kjmol=1.0, pace_steps=PACE_STEPS, temperature_k=dw.TEMPERATURE_K,
                                 bias_factor=5.0, lower=-1.2, upper=1.2),
                    OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=PACE_STEPS, temperature_k=dw.TEMPERATURE_K,
                              compression_threshold=0.0)])


def _leaf(bias, method):
    return next(b for b in bias.leaves() if b.label == method)


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
bias = make_bias()
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


def _launch(root, walker, barrier, **extra):
    cfg = {"root": str(root), "walker": walker, "n_steps": N_STEPS,
           "barrier": [str(root / f"ready{w}") for w in barrier], **extra}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(root / "walker.py"), json.dumps(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs) -> dict[int, tuple]:
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


def _final_states(root, cv) -> dict[int, BiasSum]:
    """Each walker's last checkpoint, plus one more sync (what its next step would replay)."""
    states = {}
    for w in range(N_WALKERS):
        bias = make_bias()
        runner = BiasRunner(bias, cv=cv, walkers_dir=root / "walkers", walker_id=w)
        assert runner.restore(path=root / f"state{w}.npz")
        runner.sync_walkers()
        states[w] = bias
    return states


def _check_every_kernel_once(root, method, cv, n_deposited):
    walkers = root / "walkers"
    assert sorted(p.name for p in walkers.iterdir()) == sorted(
        f"{label}.walker{w}.npz" for label in METHODS for w in range(N_WALKERS))
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no atomic-write leftovers
    states = {w: _leaf(bias, method) for w, bias in _final_states(root, cv).items()}
    own = {}
    for w, leaf in states.items():
        with np.load(walkers / f"{method}.walker{w}.npz") as data:
            shared = data["records"]
        assert np.array_equal(shared, leaf.records), f"walker {w}: its shared file differs from its own records"
        own[w] = _deposited(leaf.records, method)
    expected = Counter(k for w in own for k in own[w])
    assert len(expected) == sum(len(v) for v in own.values())  # kernels are distinguishable
    for w, leaf in states.items():
        found = Counter(_kernels(leaf, method))
        lost = {v: sum(found[k] == 0 for k in own[v]) for v in own}
        twice = {v: sum(found[k] > 1 for k in own[v]) for v in own}
        foreign = sum(n for k, n in found.items() if k not in expected)
        assert not any(lost.values()) and not any(twice.values()) and foreign == 0, (
            f"walker {w}: kernels lost per depositing walker {lost}, read twice {twice}, from nowhere {foreign}")
        if method == "opes":
            assert leaf.counter == 1 + sum(expected.values())
    assert {w: len(k) for w, k in own.items()} == n_deposited
    probe = np.linspace(-0.8, 0.8, 9)
    reference = [states[0].energy_and_gradient([p])[0] for p in probe]
    for leaf in states.values():  # same kernels, possibly replayed in another order
        assert np.allclose([leaf.energy_and_gradient([p])[0] for p in probe], reference, rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    return dw.coordinate_cv(tmp_path_factory.mktemp("cv") / "cv.pt")


@pytest.fixture(scope="module")
def four_walkers(tmp_path_factory):
    """Four concurrent walker processes; walker 3 is SIGKILLed at step 1250 (last checkpoint 1000)."""
    root = tmp_path_factory.mktemp("walkers")
    (root / "walker.py").write_text(WALKER_SCRIPT)
    everyone = list(range(N_WALKERS))
    procs = {w: _launch(root, w, everyone, **({"kill_at": KILL_AT} if w == KILLED else {"wait_at": WAIT_AT}))
             for w in everyone}
    for w, (code, out, err) in _wait(procs).items():
        assert code == (-9 if w == KILLED else 0), f"walker {w}: exit {code}\n{out}\n{err[-3000:]}"
    with np.load(root / f"state{KILLED}.npz") as data:
        assert int(data["runner/step"]) == 1000
    return root


@pytest.fixture(scope="module")
def restarted(four_walkers, tmp_path_factory):
    """The SIGKILLed walker resumed alone from its checkpoint (on a copy of the shared directory)."""
    root = tmp_path_factory.mktemp("restarted") / "run"
    shutil.copytree(four_walkers, root)
    code, out, err = _wait({KILLED: _launch(root, KILLED, [KILLED])})[KILLED]
    assert code == 0, f"restarted walker: exit {code}\n{out}\n{err[-3000:]}"
    assert json.loads(out.strip().splitlines()[-1]) == {"walker": KILLED, "step": N_STEPS}
    return root


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_concurrent_walkers_share_every_kernel_once(four_walkers, method, cv, tmp_path):
    """Before the restart: the survivors hold every kernel of the others, the dead one's up to its death."""
    root = tmp_path / "run"
    shutil.copytree(four_walkers, root)
    with np.load(root / "walkers" / f"{method}.walker{KILLED}.npz") as data:
        rows = data["records"]
    assert rows.shape[0] == KILL_AT // PACE_STEPS  # its file reached its death; its checkpoint is older
    # stand-in for the dead walker's state at its death: its checkpoint plus the rows it shared since
    bias = make_bias()
    runner = BiasRunner(bias, cv=cv)
    assert runner.restore(path=root / f"state{KILLED}.npz")
    for leaf in bias.leaves():
        with np.load(root / "walkers" / f"{leaf.label}.walker{KILLED}.npz") as data:
            shared = data["records"]
        leaf.apply_records(shared[len(leaf.records):])
        leaf.records = shared
    runner.save(path=root / f"state{KILLED}.npz")
    n_deposited = {w: (KILL_AT if w == KILLED else N_STEPS) // PACE_STEPS for w in range(N_WALKERS)}
    _check_every_kernel_once(root, method, cv, n_deposited)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_killed_walker_restarts_alone_and_ends_with_every_kernel_once(restarted, method, cv):
    """Kernels the walker shared between its checkpoint and its death stay (the others replayed them): it
    keeps them and deposits on, so none is lost (the others' replay count is past them) or doubled."""
    n_deposited = {w: N_STEPS // PACE_STEPS for w in range(N_WALKERS)}
    n_deposited[KILLED] = (N_STEPS + KILL_AT - 1000) // PACE_STEPS
    _check_every_kernel_once(restarted, method, cv, n_deposited)


def test_a_fresh_walker_refuses_another_runs_file_of_its_id(tmp_path):
    """Starting walker 0 afresh where a walker 0 already shared kernels would overwrite rows the others replayed."""
    from cvlearn.errors import RunError
    from openmm_plugin.forces import python_bias_force
    from tests.openmm_plugin.bias.test_md import _simulation

    def walker():
        bias = make_bias()
        system = dw.make_system()
        force = python_bias_force(dw.coordinate_cv(tmp_path / "cv.pt"), bias)
        system.addForce(force)
        runner = BiasRunner(bias, callback=force.callback, walkers_dir=tmp_path / "walkers", walker_id=0)
        return runner, _simulation(system, seed=0)

    runner, sim = walker()
    runner.step(sim, 4 * PACE_STEPS)
    runner, sim = walker()  # a fresh start, same id, same directory
    with pytest.raises(RunError, match="holds 4 depositions of walker 0"):
        runner.step(sim, PACE_STEPS)
