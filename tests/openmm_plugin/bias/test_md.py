"""Biases inside real OpenMM runs: analytic free energies, both routes, restart, walkers, COLVAR, call counts."""

import shutil

import numpy as np
import openmm
import openmm.app as app
import pytest

from cvlearn.data.colvar import read_colvar
from cvlearn.analysis.reweighting import free_energy_profile, metad_weights, opes_weights
from cvlearn.units import kt_kjmol
from openmm_plugin.bias import (BiasReporter, BiasRunner, BiasSum, Metadynamics, OPESExplore,
                                OPESMetad, Wall)
from openmm_plugin.forces import TorchBiasForce, python_bias_force
from tests.openmm_plugin.bias import double_well as dw
from tests.openmm_plugin.bias.double_well import one_thread  # noqa: F401 (autouse)

KT = kt_kjmol(dw.TEMPERATURE_K)



def _topology(n):
    top = app.Topology()
    residue = top.addResidue("X", top.addChain())
    for _ in range(n):
        top.addAtom("X", app.element.hydrogen, residue)
    return top


def _simulation(system, seed=0, positions=None):
    n = system.getNumParticles()
    sim = app.Simulation(_topology(n), system, dw.make_integrator(seed), openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(dw.start_positions(n) if positions is None else positions)
    sim.context.setVelocitiesToTemperature(dw.TEMPERATURE_K, seed + 1)
    return sim


def _make_bias(method):
    if method == "opes-metad":
        return OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=100, temperature_k=dw.TEMPERATURE_K)
    if method == "opes-explore":
        return OPESExplore(sigma=0.05, barrier_kjmol=15.0, pace_steps=100, temperature_k=dw.TEMPERATURE_K)
    return Metadynamics(sigma=0.05, height_kjmol=1.0, pace_steps=100, temperature_k=dw.TEMPERATURE_K, bias_factor=5.0,
                        lower=-1.2, upper=1.2, use_grid=True)


@pytest.mark.parametrize("method", ["opes-metad", "opes-explore", "metad"])
def test_double_well_free_energy_within_half_kt(method, tmp_path):
    cv = dw.coordinate_cv(tmp_path / "cv.pt")
    bias = _make_bias(method)
    system = dw.make_system()
    force = python_bias_force(cv, bias)
    system.addForce(force)
    sim = _simulation(system)
    runner = BiasRunner(bias, callback=force.callback)
    reporter = BiasReporter(tmp_path / "COLVAR", bias, cv, 50, cv_names=["x"])
    sim.reporters.append(reporter)
    runner.step(sim, 72000)
    reporter.close()
    colvar = read_colvar(tmp_path / "COLVAR")
    keep = slice(len(colvar["x"]) // 5, None)
    if method == "metad":
        weights = metad_weights(colvar["bias"][keep], colvar["metad.rct"][keep], dw.TEMPERATURE_K)
    else:
        weights = opes_weights(colvar["bias"][keep], dw.TEMPERATURE_K)
    fes, x = free_energy_profile(colvar["x"][keep], weights, dw.TEMPERATURE_K, bins=24, range_x=(-0.9, 0.9))
    reference = dw.potential_kjmol(x)
    region = reference < 3 * KT
    assert np.all(np.isfinite(fes[region]))
    error = fes[region] - reference[region]
    error -= error.mean()
    assert np.abs(error).max() < 0.5 * KT
    assert np.sum(np.diff(np.sign(colvar["x"])) != 0) > 20  # it crossed the 5 kT barrier many times


def _energy_forces(sim, groups=None):
    state = sim.context.getState(getEnergy=True, getForces=True, groups=groups if groups is not None else -1)
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


def test_adaptive_torch_route_refreshes_to_the_python_bias(tmp_path):
    cv = dw.coordinate_cv(tmp_path / "cv.pt")
    bias = OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=50, temperature_k=dw.TEMPERATURE_K)
    system = dw.make_system()
    torch_force = TorchBiasForce(system, cv, bias, force_group=1)
    sim = _simulation(system)
    runner = BiasRunner(bias, cv=cv, on_update=torch_force.refresh)
    runner.step(sim, 500)
    assert torch_force.refreshes == 10 and len(bias.records) == 10
    x = sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value[0, 0]
    energy, forces = _energy_forces(sim, {1})
    v, g = bias.energy_and_gradient([x])
    assert energy == pytest.approx(v, rel=1e-9) and forces[0, 0] == pytest.approx(-g[0], rel=1e-7)


def test_two_dimensional_cv_costs_one_model_call_per_step(tmp_path):
    cv = dw.coordinate_cv(tmp_path / "cv.pt", dims=(0, 1))
    bias = BiasSum([OPESMetad(sigma=[0.05, 0.05], barrier_kjmol=15.0, pace_steps=25, temperature_k=dw.TEMPERATURE_K),
                    Wall([0.8, 0.3], 100.0, side="upper")])
    system = dw.make_system()
    force = python_bias_force(cv, bias)
    system.addForce(force)
    sim = _simulation(system)
    runner = BiasRunner(bias, callback=force.callback)
    calls_before = int(cv.model.calls)
    runner.step(sim, 200)
    assert int(cv.model.calls) - calls_before == 200  # one per step; depositions reuse the cached value
    assert len(bias.leaves()[0].records) == 8


def _restartable_run(tmp_path, n_particles=1):
    cv = dw.coordinate_cv(tmp_path / "cv.pt")
    bias = BiasSum([OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=40, temperature_k=dw.TEMPERATURE_K),
                    Metadynamics(sigma=0.05, height_kjmol=0.5, pace_steps=30, temperature_k=dw.TEMPERATURE_K,
                                 lower=-1.2, upper=1.2)])
    system = dw.make_system()
    force = python_bias_force(cv, bias)
    system.addForce(force)
    sim = _simulation(system)
    runner = BiasRunner(bias, callback=force.callback, save_path=tmp_path / "bias_state.npz", save_every_steps=600)
    return sim, runner, bias


def test_restart_reproduces_the_bias_exactly(tmp_path):
    sim_a, runner_a, bias_a = _restartable_run(tmp_path)
    runner_a.step(sim_a, 1200)  # saves at 600 and 1200
    saved = {k: v.copy() for k, v in bias_a.state_dict().items()}
    shutil.copy(tmp_path / "bias_state.npz", tmp_path / "at_1200.npz")
    runner_a.step(sim_a, 900)
    # "killed" after step 1200: a fresh process state restores and continues
    sim_b, runner_b, bias_b = _restartable_run(tmp_path)
    assert runner_b.restore(sim_b, tmp_path / "at_1200.npz")
    assert sim_b.currentStep == 1200
    restored = bias_b.state_dict()
    assert saved.keys() == restored.keys() and all(np.array_equal(saved[k], restored[k]) for k in saved)
    runner_b.step(sim_b, 900)
    final_a, final_b = bias_a.state_dict(), bias_b.state_dict()
    assert all(np.array_equal(final_a[k], final_b[k]) for k in final_a)
    assert _energy_forces(sim_a)[0] == _energy_forces(sim_b)[0]
    for s in np.linspace(-1, 1, 7):
        assert bias_a.energy_and_gradient([s])[0] == bias_b.energy_and_gradient([s])[0]


def test_multiple_walkers_share_kernels_through_files(tmp_path):
    cv = dw.coordinate_cv(tmp_path / "cv.pt")
    walkers = []
    for walker in range(3):
        bias = BiasSum([Metadynamics(sigma=0.05, height_kjmol=1.0, pace_steps=50, temperature_k=dw.TEMPERATURE_K,
                                     lower=-1.2, upper=1.2),
                        OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=50, temperature_k=dw.TEMPERATURE_K)])
        system = dw.make_system()
        force = python_bias_force(cv, bias)
        system.addForce(force)
        sim = _simulation(system, seed=walker)
        walkers.append((sim, BiasRunner(bias, callback=force.callback, walkers_dir=tmp_path / "walkers",
                                        walker_id=walker), bias))
    for _ in range(4):  # round robin, as separate processes would interleave
        for sim, runner, _ in walkers:
            runner.step(sim, 100)
    for sim, runner, _ in walkers:
        runner.sync_walkers()
    metads = [bias.leaves()[0] for _, _, bias in walkers]
    opes = [bias.leaves()[1] for _, _, bias in walkers]
    assert all(len(m.records) == 8 for m in metads)
    assert all(len(m.heights) == 24 for m in metads)  # 8 own + 2 x 8 from the other walkers
    assert all(o.counter == 1 + 24 for o in opes)
    probe = np.linspace(-0.8, 0.8, 9)
    for m in metads[1:]:
        assert np.allclose([m.energy_and_gradient([p])[0] for p in probe],
                           [metads[0].energy_and_gradient([p])[0] for p in probe], rtol=1e-12)
    assert sorted(p.name for p in (tmp_path / "walkers").iterdir()) == sorted(
        f"{label}.walker{w}.npz" for label in ("metad", "opes") for w in range(3))


def test_colvar_resumes_and_parses(tmp_path):
    sim, runner, bias = _restartable_run(tmp_path)
    reporter = BiasReporter(tmp_path / "COLVAR", bias, runner.evaluator, 100, cv_names=["x"], flush_every=3)
    sim.reporters.append(reporter)
    runner.step(sim, 1000)
    reporter.close()
    colvar = read_colvar(tmp_path / "COLVAR")
    assert list(colvar) == ["time", "x", "bias", "opes.bias", "opes.rct", "opes.zed", "opes.neff", "opes.nker",
                            "metad.bias", "metad.rct", "metad.nker"]
    assert np.allclose(colvar["time"], np.arange(1, 11) * 100 * dw.TIMESTEP_PS)
    assert np.allclose(colvar["bias"], colvar["opes.bias"] + colvar["metad.bias"])
    # a resumed run (restored at step 600) keeps the rows up to its time and continues
    sim_b, runner_b, bias_b = _restartable_run(tmp_path)
    runner_b.restore(sim_b)
    reporter_b = BiasReporter(tmp_path / "COLVAR", bias_b, runner_b.evaluator, 100, cv_names=["x"])
    sim_b.reporters.append(reporter_b)
    runner_b.step(sim_b, 400)
    reporter_b.close()
    again = read_colvar(tmp_path / "COLVAR")
    assert np.allclose(again["time"], colvar["time"]) and np.array_equal(again["x"], colvar["x"])



def test_a_resume_keeps_the_row_at_its_checkpoint_whatever_the_time_rounding(tmp_path):
    """OpenMM's time is a running sum of the step: after 710,000 steps of 2 fs it reads 1419.99999998 ps while the
    COLVAR row written at that step says 1420 (10 digits). The row at the checkpoint must survive the cut-back, or
    the file loses it and every later row pairs with the next trajectory frame."""
    from cvlearn.data.colvar import write_colvar

    elapsed = 0.0
    for _ in range(710_000):
        elapsed += 0.002
    assert elapsed != 1420.0  # the rounding this is about
    cv = dw.coordinate_cv(tmp_path / "cv.pt")
    bias = _make_bias("opes-metad")
    fields = BiasReporter(tmp_path / "probe", bias, cv, 500).fields
    rows = np.zeros((1421, len(fields)))
    rows[:, 0] = np.arange(1, 1422)  # a row per ps, the last one after the checkpoint
    write_colvar(tmp_path / "COLVAR", fields, rows)
    reporter = BiasReporter(tmp_path / "COLVAR", bias, cv, 500)
    reporter.keep_until(elapsed)
    assert read_colvar(tmp_path / "COLVAR")["time"][-1] == 1420.0 and len(reporter.rows) == 1420

def test_runner_stops_when_the_simulation_blows_up(tmp_path):
    """A NaN CV at a deposition raises at once (a blown-up walker must not run on for hours)."""
    cv = dw.coordinate_cv(tmp_path / "cv.pt")
    bias = _make_bias("opes-metad")
    system = dw.make_system()
    force = python_bias_force(cv, bias)
    system.addForce(force)
    sim = _simulation(system)
    runner = BiasRunner(bias, callback=force.callback)
    runner.step(sim, 100)  # fine so far
    sim.context.setPositions(np.full((system.getNumParticles(), 3), np.nan))
    with pytest.raises(FloatingPointError, match="blown up"):
        runner.step(sim, 200)


def test_mts_restart_after_a_deposition_is_exact(tmp_path):
    """MTS keeps a step's slow forces for the next first kick; after a deposition they must be recomputed (else the
    uninterrupted run kicks with the old bias once per deposition and a restored run, which recomputes, parts from it)."""
    from openmm_plugin.simulation import BIAS_GROUP, make_integrator

    def run():
        cv = dw.coordinate_cv(tmp_path / "cv.pt")
        bias = OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=40, temperature_k=dw.TEMPERATURE_K)
        system = dw.make_system()
        force = python_bias_force(cv, bias, force_group=BIAS_GROUP)
        system.addForce(force)
        integrator = make_integrator(dw.TEMPERATURE_K, dw.FRICTION_PER_PS, dw.TIMESTEP_PS, seed=3,
                                     bias_group=BIAS_GROUP, bias_every_steps=2)
        assert isinstance(integrator, openmm.CustomIntegrator)
        sim = app.Simulation(_topology(1), system, integrator, openmm.Platform.getPlatformByName("Reference"))
        sim.context.setPositions(dw.start_positions(1))
        sim.context.setVelocitiesToTemperature(dw.TEMPERATURE_K, 4)
        return sim, BiasRunner(bias, callback=force.callback, save_path=tmp_path / "bias_state.npz",
                               save_every_steps=600)

    sim_a, runner_a = run()
    runner_a.step(sim_a, 600)  # deposits at 600, then saves
    shutil.copy(tmp_path / "bias_state.npz", tmp_path / "at_600.npz")
    runner_a.step(sim_a, 200)
    sim_b, runner_b = run()
    assert runner_b.restore(sim_b, tmp_path / "at_600.npz")
    runner_b.step(sim_b, 200)
    a, b = (s.context.getState(getPositions=True).getPositions(asNumpy=True)._value for s in (sim_a, sim_b))
    np.testing.assert_array_equal(a, b)
