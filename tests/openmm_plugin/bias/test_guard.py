"""The bias-force guard: caps per-atom forces, counts them into the COLVAR, and stops a run restartably."""

import inspect

import numpy as np
import pytest

from cvlearn.data.colvar import read_colvar
from cvlearn.errors import RunError
from openmm_plugin.bias import BiasReporter, BiasRunner, ForceGuard, HarmonicRestraint
from openmm_plugin.forces import BiasCallback, python_bias_force
from tests.openmm_plugin.bias import double_well as dw
from tests.openmm_plugin.bias.test_md import _energy_forces, _simulation, _make_bias


def test_cap_keeps_directions_and_counts():
    guard = ForceGuard(10.0)
    small = np.array([[1.0, 2.0, 2.0], [0.0, 0.0, -9.0]])
    assert guard.apply(small) is small and guard.n_capped == 0
    assert guard.max_seen_kjmol_nm == pytest.approx(9.0)
    forces = np.array([[30.0, 40.0, 0.0], [1.0, 0.0, 0.0], [np.nan, 0.0, 0.0], [0.0, -20.0, 0.0]])
    capped = guard.apply(forces)
    assert np.allclose(capped[0], [6.0, 8.0, 0.0]) and np.allclose(capped[1], forces[1])
    assert np.array_equal(capped[2], np.zeros(3)) and np.allclose(capped[3], [0.0, -10.0, 0.0])
    assert np.all(np.linalg.norm(capped, axis=1) <= 10.0 + 1e-12)
    assert guard.n_capped == 3 and guard.n_evaluations_capped == 1 and not guard.tripped
    assert guard.colvar_values() == {"capped": 3.0}
    for bad in (dict(max_force_kjmol_nm=0.0), dict(max_force_kjmol_nm=1.0, mode="warn"),
                dict(max_force_kjmol_nm=1.0, check_every_steps=0)):
        with pytest.raises(ValueError):
            ForceGuard(**bad)
    with pytest.raises(ValueError, match="shape"):
        guard.apply(np.zeros(3))


def _guarded_run(tmp_path, guard):
    cv = dw.coordinate_cv(tmp_path / "cv.pt")
    bias = _make_bias("opes-metad")
    system = dw.make_system()
    force = python_bias_force(cv, bias)
    system.addForce(force)
    sim = _simulation(system)
    runner = BiasRunner(bias, callback=force.callback, guard=guard, save_path=tmp_path / "state.npz",
                        save_every_steps=200)
    reporter = BiasReporter(tmp_path / "COLVAR", bias, force.callback.evaluator, 50, guard=guard, flush_every=1)
    sim.reporters.append(reporter)
    return sim, runner, force


def test_guard_column_in_colvar_and_stop_saves_a_restartable_state(tmp_path):
    guard = ForceGuard(1e4, mode="stop", check_every_steps=50)
    sim, runner, force = _guarded_run(tmp_path, guard)
    assert force.callback.guard is guard  # BiasCallback finds it here
    runner.step(sim, 200)
    guard.apply(np.array([[1e6, 0.0, 0.0]]))  # as BiasCallback would on a force beyond the cap
    with pytest.raises(RunError, match="state at the stop saved to .*state.stopped.npz"):
        runner.step(sim, 200)
    assert sim.currentStep == 250  # stopped at the next check
    colvar = read_colvar(tmp_path / "COLVAR")
    assert "guard.capped" in colvar and colvar["guard.capped"][-1] == 1.0 and colvar["guard.capped"][0] == 0.0
    # the stopped state restores (guard counts included) and runs on without tripping again
    (tmp_path / "b").mkdir()
    sim_b, runner_b, _ = _guarded_run(tmp_path / "b", ForceGuard(1e4, mode="stop", check_every_steps=50))
    assert runner_b.restore(sim_b, tmp_path / "state.stopped.npz") and sim_b.currentStep == 250
    assert runner_b.guard.n_capped == 1 and not runner_b.guard.tripped
    runner_b.step(sim_b, 100)


@pytest.mark.skipif("guard" not in inspect.getsource(BiasCallback.__call__),
                    reason="needs the 3-line ForceGuard hook in forces.BiasCallback.__call__")
def test_guard_caps_the_forces_openmm_receives(tmp_path):
    cv = dw.coordinate_cv(tmp_path / "cv.pt")
    bias = HarmonicRestraint([0.5], 1000.0)  # at x = -0.5: |F| = 1000 kJ/mol/nm
    system = dw.make_system()
    force = python_bias_force(cv, bias, force_group=1)
    system.addForce(force)
    sim = _simulation(system)
    guard = ForceGuard(100.0)
    BiasRunner(bias, callback=force.callback, guard=guard)
    _, forces = _energy_forces(sim, {1})
    assert np.linalg.norm(forces[0]) == pytest.approx(100.0) and forces[0, 0] > 0
    assert guard.n_capped == 1


@pytest.mark.parametrize("interval_s, at_most", [("3600", 1), ("0", None)])
def test_a_guard_that_caps_every_step_logs_a_line_per_log_interval(tmp_path, monkeypatch, caplog, interval_s, at_most):
    """Capping at every evaluation (an 11 MB log in an ala2 explore run before): the first capping warns, then one
    line per CVLEARN_PROGRESS_INTERVAL_S at most; the counts stay exact."""
    monkeypatch.setenv("CVLEARN_PROGRESS_INTERVAL_S", interval_s)
    guard = ForceGuard(1e-6, check_every_steps=10)  # every bias force is over the cap
    sim, runner, _ = _guarded_run(tmp_path, guard)
    with caplog.at_level("INFO", logger="openmm_plugin.bias.runner"):
        for _ in range(20):
            runner.step(sim, 10)
    lines = [r for r in caplog.records if "bias force guard" in r.getMessage()]
    assert guard.n_evaluations_capped >= 50 and lines[0].levelname == "WARNING"
    if at_most is not None:
        assert len(lines) == at_most
    else:
        assert len(lines) >= 5  # no limit: every check that found new caps says so


def test_a_temperature_only_guard_says_it_has_no_cap():
    guard = ForceGuard(None, max_kinetic_temperature_k=400.0)
    assert guard.apply(np.array([[1e6, 0.0, 0.0]]))[0, 0] == 1e6 and guard.n_capped == 0
    assert guard.summary().startswith("bias force guard (cap, no cap): largest bias force 1e+06 kJ/mol/nm; kinetic")
