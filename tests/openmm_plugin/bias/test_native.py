"""The native route: a tabulated bias of OpenMM CVs in a CustomCVForce, driven by the same Bias/runner/reporter."""

import numpy as np
import openmm
import pytest

from cvlearn.data.colvar import read_colvar
from openmm_plugin.bias import (BiasReporter, BiasRunner, BiasSum, Metadynamics, OPESMetad, Wall,
                                native_bias_force)
from tests.openmm_plugin.bias import double_well as dw
from tests.openmm_plugin.bias.test_md import _simulation

GROUP = 3


def _context(system):
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def _x_force():
    force = openmm.CustomExternalForce("x")
    force.addParticle(0, [])
    return force


def _deposited(bias, points):
    for k, p in enumerate(points, start=1):
        bias.update(np.atleast_1d(np.asarray(p, dtype=float)), k * bias.pace_steps)
    return bias


def _table_errors(bias, bins, xs):
    system = dw.make_system()
    native = native_bias_force([_x_force()], bias, bins, -1.2, 1.2, False, force_group=GROUP, system=system)
    context = _context(system)
    errors = []
    for x in xs:
        context.setPositions([[x, 0.0, 0.0]])
        errors.append(native.energy_kjmol(context) - bias.energy_and_gradient([x])[0])
    return np.abs(errors), native


def test_metad_table_within_the_cubic_spline_bound_and_fourth_order():
    rng = np.random.default_rng(1)
    xs = np.random.default_rng(0).uniform(-1.1, 1.1, 200)
    errors = {}
    for bins in (48, 96):
        bias = _deposited(Metadynamics(sigma=0.05, height_kjmol=1.0, pace_steps=1, temperature_k=300.0, lower=-1.2,
                                       upper=1.2, bias_factor=5.0, grid_bins=bins), rng.normal(-0.5, 0.1, 60))
        errors[bins], native = _table_errors(bias, bins, xs)
        # (5/384) Δ⁴ max|V''''|, with |V''''| <= Σ h_k 3/σ⁴ for Gaussians of width σ
        bound = 5 / 384 * native.spacing[0] ** 4 * 3 * bias.heights.sum() / 0.05 ** 4
        assert errors[bins].max() < bound
    assert errors[48].max() / errors[96].max() > 8  # ~Δ⁴ convergence (16 in the limit)
    assert errors[96].max() < 0.01


def test_opes_table_matches_the_bias_within_grid_spacing():
    rng = np.random.default_rng(1)
    bias = _deposited(OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=1, temperature_k=300.0),
                      np.r_[rng.normal(-0.5, 0.1, 30), rng.normal(0.5, 0.1, 30)])
    xs = np.random.default_rng(0).uniform(-1.1, 1.1, 300)
    errors, native = _table_errors(bias, 192, xs)
    fine = np.linspace(-1.2, 1.2, 4001)
    slope = np.abs(np.diff([bias.energy_and_gradient([x])[0] for x in fine]) / np.diff(fine)).max()
    # Truncated kernels (PLUMED's KERNEL_CUTOFF) make dV/ds jump at their edges: there the error is O(Δ |V'|) ...
    assert errors.max() < native.spacing[0] * slope
    # ... elsewhere the spline is far more accurate
    assert np.median(errors) < 1e-3 and np.quantile(errors, 0.9) < 0.05


def _chain_system(n=5):
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0)
    return system


def _torsion(a, b, c, d):
    force = openmm.CustomTorsionForce("theta")
    force.addTorsion(a, b, c, d, [])
    return force


@pytest.mark.parametrize("kind", ["opes", "metad"])
def test_periodic_torsion_bias_forces_are_minus_the_gradient_of_the_context_energy(kind):
    rng = np.random.default_rng(2)
    centers = rng.uniform(-np.pi, np.pi, size=(30, 2))
    if kind == "opes":
        bias = _deposited(OPESMetad(sigma=[0.3, 0.3], barrier_kjmol=20.0, pace_steps=1, temperature_k=300.0,
                                    periods=[2 * np.pi] * 2), centers)
    else:
        bias = _deposited(Metadynamics(sigma=[0.3, 0.3], height_kjmol=1.0, pace_steps=1, temperature_k=300.0,
                                       lower=[-np.pi] * 2, upper=[np.pi] * 2, periods=[2 * np.pi] * 2), centers)
    system = _chain_system()
    native = native_bias_force([_torsion(0, 1, 2, 3), _torsion(1, 2, 3, 4)], bias, 72, -np.pi, np.pi, True,
                               force_group=GROUP, system=system, cv_names=["phi", "psi"])
    context = _context(system)
    for _ in range(3):
        pos = np.cumsum(rng.normal(scale=0.15, size=(5, 3)), axis=0)
        context.setPositions(pos)
        s = native.values_from_context(context)
        assert np.all(np.abs(s) <= np.pi)
        assert native.energy_kjmol(context) == pytest.approx(bias.energy_and_gradient(s)[0], abs=0.05)
        forces = context.getState(getForces=True, groups={GROUP}).getForces(asNumpy=True)._value
        h = 1e-5
        for atom in range(5):
            for k in range(3):
                energies = []
                for sign in (1, -1):
                    moved = pos.copy()
                    moved[atom, k] += sign * h
                    context.setPositions(moved)
                    energies.append(native.energy_kjmol(context))
                assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(forces[atom, k], rel=1e-4, abs=1e-4)
        context.setPositions(pos)


def test_expression_cv_and_static_terms_are_tabulated_once():
    """A CustomCVForce expression as the CV (distance difference), OPES + a wall; the wall's grid is cached."""
    system = _chain_system(3)
    d01, d12 = openmm.CustomBondForce("r"), openmm.CustomBondForce("r")
    d01.addBond(0, 1, [])
    d12.addBond(1, 2, [])
    diff = openmm.CustomCVForce("a - b")
    diff.addCollectiveVariable("a", d01)
    diff.addCollectiveVariable("b", d12)
    opes = _deposited(OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=1, temperature_k=300.0),
                      np.random.default_rng(3).normal(0.0, 0.1, 20))
    wall = Wall([0.4], 100.0, side="upper")
    bias = BiasSum([opes, wall])
    native = native_bias_force([diff], bias, 400, -1.0, 1.0, False, force_group=GROUP, system=system)
    context = _context(system)
    context.setPositions([[0, 0, 0], [0.35, 0, 0], [0.35, 0.3, 0]])
    s = native.values_from_context(context)
    assert s[0] == pytest.approx(0.05)
    assert native.energy_kjmol(context) == pytest.approx(bias.energy_and_gradient(s)[0], abs=1e-3)
    assert list(native._static) == [1]  # the wall, computed once; OPES is recomputed at every refresh


def _native_run(tmp_path, bias):
    system = dw.make_system()
    native = native_bias_force([_x_force()], bias, 240, -1.2, 1.2, False, force_group=GROUP, system=system)
    sim = _simulation(system)
    runner = BiasRunner(bias, native=native, save_path=tmp_path / "state.npz", save_every_steps=500)
    return sim, runner, native


def test_runner_deposits_refreshes_reports_and_restores_the_native_bias(tmp_path):
    bias = OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=100, temperature_k=dw.TEMPERATURE_K)
    sim, runner, native = _native_run(tmp_path, bias)
    reporter = BiasReporter(tmp_path / "COLVAR", bias, native, 100)
    sim.reporters.append(reporter)
    runner.step(sim, 1000)
    reporter.close()
    assert len(bias.records) == 10 and native.refreshes == 10
    assert native.calls == 10 + 10  # one CV read per deposition and per report, none per step
    x = native.values_from_context(sim.context)
    assert native.energy_kjmol(sim.context) == pytest.approx(bias.energy_and_gradient(x)[0], abs=0.02)
    colvar = read_colvar(tmp_path / "COLVAR")
    assert list(colvar)[:3] == ["time", "cv0", "bias"] and len(colvar["cv0"]) == 10
    assert np.all(np.isfinite(colvar["bias"])) and np.array_equal(colvar["bias"], colvar["opes.bias"])
    # a fresh process restores the bias and the table from the checkpoint
    bias_b = OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=100, temperature_k=dw.TEMPERATURE_K)
    sim_b, runner_b, native_b = _native_run(tmp_path, bias_b)
    assert runner_b.restore(sim_b)
    assert native_b.refreshes == 1 and sim_b.currentStep == 1000
    assert native_b.energy_kjmol(sim_b.context) == native.energy_kjmol(sim.context)


def test_native_errors():
    bias = OPESMetad(sigma=0.05, barrier_kjmol=15.0, pace_steps=1, temperature_k=300.0)
    with pytest.raises(ValueError, match="periods"):
        native_bias_force([_x_force()], bias, 100, -np.pi, np.pi, True)
    with pytest.raises(ValueError, match="1 to 3"):
        native_bias_force([_x_force()] * 4, bias, 100, -1, 1, False)
    with pytest.raises(ValueError, match="acts on 1 CVs"):
        native_bias_force([_x_force()] * 2, bias, 100, -1, 1, False)
    with pytest.raises(ValueError, match="one bool"):
        native_bias_force([_x_force()], bias, 100, -1, 1, [False])
    native = native_bias_force([_x_force()], bias, 100, -1.2, 1.2, False)
    sim = _simulation(dw.make_system())  # the force was never added
    with pytest.raises(ValueError, match="not in the simulation's System"):
        BiasRunner(bias, native=native).step(sim, 1)
    with pytest.raises(ValueError, match="exactly one"):
        BiasRunner(bias)
