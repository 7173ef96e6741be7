"""OPES's adaptive σ (PLUMED's SIGMA=ADAPTIVE / ADAPTIVE_SIGMA_STRIDE): estimate, safety in a run, restart."""

import numpy as np
import openmm
import pytest
from scipy.integrate import quad

from cvlearn.units import kt_kjmol
from openmm_plugin.bias import BiasRunner, OPESExplore, OPESMetad, native_bias_force
from tests.openmm_plugin.bias import double_well as dw
from tests.openmm_plugin.bias.test_md import _simulation


def _feed(bias, samples, first_step=1):
    deposited = []
    for step, s in enumerate(samples, start=first_step):
        if bias.update(np.atleast_1d(s), step):
            deposited.append(step)
    return deposited


def test_adaptive_sigma_is_the_std_of_the_first_stride_and_waits_for_it():
    rng = np.random.default_rng(0)
    samples = rng.normal([0.2, -1.0], [0.3, 0.05], size=(2000, 2))
    bias = OPESMetad(sigma="adaptive", barrier_kjmol=20.0, pace_steps=50, temperature_k=300.0, n_cvs=2)
    assert bias.adaptive_sigma_stride == 500  # PLUMED's default, 10 x PACE
    deposited = _feed(bias, samples)
    assert deposited[0] == 500 and deposited[1:4] == [550, 600, 650]  # nothing before the stride
    first = bias.records[0]
    sigma_first = first[2 + 2:]  # log-weight, height, centre (2), sigma (2)
    w = np.exp(first[0])  # neff after the first kernel sets the usual shrinking, as PLUMED
    size = (1 + bias.epsilon ** bias.prefactor + w) ** 2 / (1 + bias.epsilon ** (2 * bias.prefactor) + w * w)
    neff_rescale = (size * 4 / 4) ** (-1 / 6)
    assert np.allclose(sigma_first / neff_rescale, samples[:500].std(axis=0), rtol=1e-9)
    # explore: σ from the plain M2 (no γ factor), as PLUMED
    explore = OPESExplore(sigma="adaptive", barrier_kjmol=20.0, pace_steps=50, temperature_k=300.0, n_cvs=2,
                          fixed_sigma=True)
    _feed(explore, samples[:500])
    assert np.allclose(explore.records[0][4:], samples[:500].std(axis=0), rtol=1e-9)


def test_adaptive_sigma_min_and_errors():
    bias = OPESMetad(sigma="adaptive", barrier_kjmol=20.0, pace_steps=10, temperature_k=300.0, fixed_sigma=True,
                     sigma_min=0.5, adaptive_sigma_stride=20)
    _feed(bias, np.random.default_rng(1).normal(0, 0.01, 40))
    assert np.all(bias.sigmas >= 0.5)
    with pytest.raises(ValueError, match="needs sigma='adaptive'"):
        OPESMetad(sigma=0.1, barrier_kjmol=20.0, pace_steps=10, temperature_k=300.0, adaptive_sigma_stride=100)
    with pytest.raises(ValueError, match=">= pace_steps"):
        OPESMetad(sigma="adaptive", barrier_kjmol=20.0, pace_steps=10, temperature_k=300.0, adaptive_sigma_stride=5)
    with pytest.raises(ValueError, match="inf"):
        OPESMetad(sigma="adaptive", barrier_kjmol=20.0, pace_steps=10, temperature_k=300.0, bias_factor=np.inf)


def test_adaptive_state_round_trips_mid_measurement_and_after():
    samples = np.random.default_rng(2).normal(0.0, 0.2, 900)

    def make():
        return OPESMetad(sigma="adaptive", barrier_kjmol=20.0, pace_steps=50, temperature_k=300.0)

    for cut in (300, 700):  # before the stride ends, and after the first depositions
        a = make()
        _feed(a, samples[:cut])
        b = make()
        b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
        _feed(a, samples[cut:], first_step=cut + 1)
        _feed(b, samples[cut:], first_step=cut + 1)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa)
    with pytest.raises(ValueError, match="adaptive-sigma"):
        make().load_state_dict(OPESMetad(sigma=0.1, barrier_kjmol=20.0, pace_steps=50, temperature_k=300.0).state_dict())


def _basin_std() -> float:
    beta = 1.0 / kt_kjmol(dw.TEMPERATURE_K)
    weight = lambda x: np.exp(-beta * dw.potential_kjmol(x))  # noqa: E731
    z = quad(weight, -2.0, 0.0)[0]
    mean = quad(lambda x: x * weight(x), -2.0, 0.0)[0] / z
    return float(np.sqrt(quad(lambda x: (x - mean) ** 2 * weight(x), -2.0, 0.0)[0] / z))


def _adaptive_native_run(tmp_path):
    bias = OPESMetad(sigma="adaptive", barrier_kjmol=15.0, pace_steps=100, temperature_k=dw.TEMPERATURE_K,
                     adaptive_sigma_stride=4000, adaptive_sigma_sample_steps=2)
    system = dw.make_system()
    cv_force = openmm.CustomExternalForce("x")
    cv_force.addParticle(0, [])
    native = native_bias_force([cv_force], bias, 480, -1.2, 1.2, False, force_group=3, system=system)
    sim = _simulation(system)
    return sim, BiasRunner(bias, native=native, save_path=tmp_path / "state.npz", save_every_steps=10000), bias


def test_adaptive_sigma_in_a_double_well_run_is_the_basin_std_and_the_run_stays_sane(tmp_path):
    """Langevin particle in the 5 kT double well, CV = x natively; σ measured over the first 4000 steps (20 ps)."""
    sim, runner, bias = _adaptive_native_run(tmp_path)
    runner.step(sim, 4000)
    assert len(bias.records) == 1  # the first kernel at the end of the stride
    log_w = bias.records[0][0]
    neff = (1 + bias.epsilon ** bias.prefactor + np.exp(log_w)) ** 2 / (1 + bias.epsilon ** (2 * bias.prefactor)
                                                                         + np.exp(2 * log_w))
    sigma0 = bias.records[0][-1] / (neff * 3 / 4) ** (-1 / 5)
    assert sigma0 == pytest.approx(_basin_std(), rel=0.15)
    runner.step(sim, 16000)  # saves at 10000 and 20000
    x = runner.current_cv(sim)
    assert np.all(np.isfinite(x)) and abs(x[0]) < 1.2
    assert len(bias.records) == 161 and np.all(np.isfinite(bias.sigmas)) and np.all(bias.sigmas > 0)
    assert bias.sigmas.max() < 2 * _basin_std()
    # restart from the checkpoint: the adaptive estimate comes back exactly
    sim_b, runner_b, bias_b = _adaptive_native_run(tmp_path)
    assert runner_b.restore(sim_b) and sim_b.currentStep == 20000
    assert bias_b.n_samples == bias.n_samples == 10000 and bias_b.m2_adjusted
    assert np.array_equal(bias_b.av_m2, bias.av_m2) and np.array_equal(bias_b.av_cv, bias.av_cv)
