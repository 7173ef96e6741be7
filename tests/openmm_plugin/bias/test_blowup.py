"""Issue 17's blow-up mechanism in miniature (benchmarks/blowup.py measured it on ala2).

A truncated OPES kernel (PLUMED's KERNEL_CUTOFF, value at the cutoff subtracted) makes dV/ds jump at its edge by
kT(1-1/γ)·(r_c/σ)·h/(N·Z); through a steep CV (|∇s| = 20/nm here, ~200/nm for the learned ala2 CV between C7eq and
C7ax) that is a jump in the force, which velocity Verlet cannot integrate: each crossing adds an energy error of up
to ΔF·v·dt. Untruncated kernels (a large ``kernel_cutoff``) have no jump and conserve energy. A thermostatted run
that heats this way is what the ForceGuard's kinetic-temperature watch stops, with a restartable state.
"""

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch

from cvlearn.errors import RunError
from cvlearn.export import export_cv
from openmm_plugin.bias import BiasRunner, ForceGuard, HarmonicRestraint, OPESMetad
from openmm_plugin.bias.guard import degrees_of_freedom
from openmm_plugin.forces import python_bias_force
from tests.openmm_plugin.bias import double_well as dw
from tests.openmm_plugin.bias.double_well import one_thread  # noqa: F401 (autouse)

SIGMA = 0.4  # CV units, as the sampling benchmark's 0.396
STEEP_PER_NM = 20.0  # |ds/dx|
MASS_AMU = 12.0
DT_PS = 0.002



def _opes(kernel_cutoff=None):
    """OPES-metad in the state that blew ala2 up: one heavy kernel (the explored basin) at s = 0 and 15 light ones
    far away (a basin visited at the bias floor), so the heavy kernel's h/(N·Z) is ~16."""
    opes = OPESMetad(sigma=SIGMA, barrier_kjmol=30.0, pace_steps=500, temperature_k=300.0, kernel_cutoff=kernel_cutoff)
    light = [[-12.0, 1e-5, -10.0 - 1.5 * k, SIGMA] for k in range(15)]
    opes.apply_records(np.array([[0.0, 1.0, 0.0, SIGMA], *light]))
    return opes


def _edge(opes) -> float:
    return -np.sqrt(opes.cutoff2) * SIGMA


def test_truncated_kernel_makes_dv_ds_jump_at_its_edge_untruncated_does_not():
    opes = _opes()
    h_over_nz = opes.heights[0] / opes.kde_norm / opes.zed
    assert h_over_nz > 10  # the heavy kernel dominates Z's average over 16 centres
    predicted = opes.kbt * opes.prefactor * np.sqrt(opes.cutoff2) / SIGMA * h_over_nz
    e = _edge(opes)
    outside, inside = (opes.energy_and_gradient([e - 1e-9])[1][0], opes.energy_and_gradient([e + 1e-9])[1][0])
    assert abs(outside) < 1e-3 and inside == pytest.approx(predicted, rel=1e-3)  # a jump, from 0 to ~500 per unit
    smooth = _opes(kernel_cutoff=15.0)
    s = np.linspace(e - 1.0, e + 1.0, 20001)
    slope = np.array([smooth.energy_and_gradient([x])[1][0] for x in s])
    assert np.abs(slope).max() < predicted / 5  # same kernels, no truncation: a bounded slope
    assert np.abs(np.diff(slope)).max() < 0.05  # ... and continuous (steps of 1e-4 CV units)


def _crossing_energy_errors(tmp_path, kernel_cutoff) -> tuple[np.ndarray, np.ndarray]:
    """|ΔE_total| and the bias energy it went down (kJ/mol) of one free particle that crosses the heavy kernel's edge with Verlet at 2 fs, for eight
    starting offsets spread over one step's length (the error depends on where the steps fall around the edge)."""
    module = dw.Coordinates((0,))
    module.scale.data.fill_(STEEP_PER_NM)  # s = 20·x: a steep CV
    cv = export_cv(module, tmp_path / f"cv{kernel_cutoff}.pt", atom_indices=[0], n_particles=1, atomic_numbers=[6],
                   residue_of_atom=[0], dtype=torch.float64)
    opes = _opes(kernel_cutoff)
    system = openmm.System()
    system.addParticle(MASS_AMU)
    force = python_bias_force(cv, opes)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(DT_PS), openmm.Platform.getPlatformByName("Reference"))
    speed_nm_ps = 1.0
    x_edge = _edge(_opes()) / STEEP_PER_NM  # the default kernels' edge, for both
    errors, drops = [], []
    for offset in np.linspace(0.0, 1.0, 8, endpoint=False):
        x0 = x_edge + (6 + offset) * speed_nm_ps * DT_PS  # six steps inside the kernel, moving out
        context.setPositions([[x0, 0.0, 0.0]])
        context.setVelocities([[-speed_nm_ps, 0.0, 0.0]])
        energy, potential = [], []
        for _ in range(2):
            state = context.getState(getEnergy=True)
            potential.append(state.getPotentialEnergy()._value)
            energy.append(potential[-1] + state.getKineticEnergy()._value)
            context.getIntegrator().step(15)  # well past the edge
        errors.append(abs(energy[1] - energy[0]))
        drops.append(potential[0] - potential[1])
    return np.array(errors), np.array(drops)


def test_a_steep_cv_through_a_truncated_kernel_edge_breaks_energy_conservation(tmp_path):
    truncated, drop_t = _crossing_energy_errors(tmp_path, None)
    untruncated, drop_u = _crossing_energy_errors(tmp_path, 15.0)
    assert drop_t.min() > 5.0 and drop_u.min() > 5.0  # both went down the bias slope (kJ/mol)
    opes = _opes()
    force_jump = opes.kbt * opes.prefactor * np.sqrt(opes.cutoff2) / SIGMA * opes.heights[0] / opes.kde_norm / opes.zed
    bound = force_jump * STEEP_PER_NM * 1.0 * DT_PS  # ΔF·v·dt
    assert truncated.mean() > 1.0 and truncated.max() <= 1.5 * bound  # kJ/mol per crossing, from the kink
    assert untruncated.max() < 0.1 * truncated.mean()  # the same bias without the kink conserves energy


def _particles_system(n: int) -> openmm.System:
    return dw.make_system(n_particles=n)


def _guarded(tmp_path, temperature_k: float, n: int = 30, mode: str = "stop"):
    system = _particles_system(n)
    cv = dw.coordinate_cv(tmp_path / "cv.pt", n_particles=n)
    bias = HarmonicRestraint([-dw.MINIMUM_NM], 10.0)
    force = python_bias_force(cv, bias)
    system.addForce(force)
    top = app.Topology()
    residue = top.addResidue("X", top.addChain())
    for _ in range(n):
        top.addAtom("X", app.element.hydrogen, residue)
    integrator = openmm.LangevinMiddleIntegrator(temperature_k, dw.FRICTION_PER_PS, dw.TIMESTEP_PS)
    integrator.setRandomNumberSeed(7)
    sim = app.Simulation(top, system, integrator, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(dw.start_positions(n))
    sim.context.setVelocitiesToTemperature(temperature_k, 3)
    guard = ForceGuard(1e9, mode=mode, check_every_steps=10, max_kinetic_temperature_k=1.5 * dw.TEMPERATURE_K,
                       temperature_window_steps=200)
    runner = BiasRunner(bias, callback=force.callback, guard=guard, save_path=tmp_path / "state.npz")
    return sim, runner, guard


@pytest.mark.parametrize("mode", ["stop", "cap"])  # heat stops a run in either mode: nothing to cap about it
def test_temperature_guard_stops_a_heating_run_restartably_and_spares_a_healthy_one(tmp_path, mode):
    (tmp_path / "cold").mkdir()
    sim, runner, guard = _guarded(tmp_path / "cold", dw.TEMPERATURE_K, mode=mode)
    runner.step(sim, 1000)  # 300 K against a 450 K limit: no false alarm
    assert guard.n_hot == 0 and abs(guard.t_kin_window_k - dw.TEMPERATURE_K) < 0.2 * dw.TEMPERATURE_K
    assert degrees_of_freedom(sim.system) == 3 * 30
    sim, runner, guard = _guarded(tmp_path, 3 * dw.TEMPERATURE_K, mode=mode)  # a run that is "heating": 900 K
    with pytest.raises(RunError, match="the run heats up.*kernel_cutoff"):
        runner.step(sim, 1000)
    assert sim.currentStep == 200  # the first full window
    assert guard.n_hot == 1 and guard.t_kin_window_k > 1.5 * dw.TEMPERATURE_K
    assert (tmp_path / "state.stopped.npz").is_file()
    (tmp_path / "b").mkdir()
    sim_b, runner_b, guard_b = _guarded(tmp_path / "b", dw.TEMPERATURE_K)
    assert runner_b.restore(sim_b, tmp_path / "state.stopped.npz") and sim_b.currentStep == 200
    assert guard_b.n_hot == 1 and not guard_b.tripped  # restored counts, re-armed


def test_guard_temperature_options_are_checked_and_old_states_load():
    with pytest.raises(ValueError, match="max_kinetic_temperature_k"):
        ForceGuard(1e3, max_kinetic_temperature_k=-1.0)
    with pytest.raises(ValueError, match="temperature_window_steps"):
        ForceGuard(1e3, check_every_steps=100, max_kinetic_temperature_k=450.0, temperature_window_steps=150)
    guard = ForceGuard(1e3)
    guard.load_state_dict({"counts": np.array([2.0, 1.0, 5e3])})  # saved before the temperature watch
    assert guard.n_capped == 2 and guard.n_hot == 0 and not guard.watches_temperature
