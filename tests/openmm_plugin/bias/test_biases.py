"""Bias objects on their own: analytic walls/restraints, OPES/metad bookkeeping, state round trips."""

import numpy as np
import pytest
import torch

from openmm_plugin.bias import BiasSum, HarmonicRestraint, Metadynamics, OnComponents, OPESExplore, OPESMetad, Wall


def _fd_gradient(bias, s, h=1e-6):
    return np.array([(bias.energy_and_gradient(s + h * e)[0] - bias.energy_and_gradient(s - h * e)[0]) / (2 * h)
                     for e in np.eye(len(s))])


def _deposited(bias, points):
    for k, p in enumerate(points, start=1):
        bias.update(np.asarray(p, dtype=float), k * bias.pace_steps)
    return bias


def _all_biases():
    rng = np.random.default_rng(0)
    pts = rng.normal(scale=0.3, size=(40, 2))
    return [
        HarmonicRestraint([0.1, -0.2], [100.0, 50.0]),
        HarmonicRestraint([3.0, 0.0], 20.0, periods=[2 * np.pi, None], label="torsion_umbrella"),
        Wall([0.5, 0.4], 200.0, side="upper", exp=4, eps=0.5, offset=0.1),
        Wall([-0.5, -0.4], [200.0, 0.0], side="lower"),
        _deposited(Metadynamics(sigma=[0.1, 0.2], height_kjmol=1.2, pace_steps=10, temperature_k=300,
                                lower=[-np.pi, -2], upper=[np.pi, 2], periods=[2 * np.pi, None]), pts),
        _deposited(OPESMetad(sigma=[0.1, 0.1], barrier_kjmol=20.0, pace_steps=10, temperature_k=300), pts),
        _deposited(OPESExplore(sigma=[0.1, 0.1], barrier_kjmol=20.0, pace_steps=10, temperature_k=300,
                               periods=[2 * np.pi, None]), pts),
    ]


@pytest.mark.parametrize("index", range(7))
def test_gradient_matches_finite_differences_and_torch_snapshot(index):
    bias = _all_biases()[index]
    for s in np.random.default_rng(1).normal(scale=0.5, size=(5, 2)):
        v, g = bias.energy_and_gradient(s)
        assert np.allclose(g, _fd_gradient(bias, s), rtol=1e-5, atol=1e-6)
        module = torch.jit.script(bias.to_torch())
        st = torch.tensor(s, requires_grad=True)
        vt = module(st)
        (gt,) = torch.autograd.grad(vt, st)
        assert float(vt.detach()) == pytest.approx(v, rel=1e-10, abs=1e-10)
        assert np.allclose(gt.numpy(), g, rtol=1e-8, atol=1e-10)


def test_walls_and_restraint_are_analytic():
    upper = Wall([1.0], 50.0, side="upper", exp=2, eps=0.5, offset=0.2)
    v, g = upper.energy_and_gradient([1.1])  # u = (1.1 - 1.0 + 0.2) / 0.5 = 0.6
    assert v == pytest.approx(50.0 * 0.6 ** 2) and g[0] == pytest.approx(2 * 50.0 * 0.6 / 0.5)
    assert upper.energy_and_gradient([0.7]) == (0.0, pytest.approx([0.0]))
    lower = Wall([1.0], 50.0, side="lower", exp=3)
    v, g = lower.energy_and_gradient([0.8])
    assert v == pytest.approx(50.0 * 0.2 ** 3) and g[0] == pytest.approx(-3 * 50.0 * 0.2 ** 2)
    ring = HarmonicRestraint([3.0], 10.0, periods=2 * np.pi)
    v, g = ring.energy_and_gradient([-3.0])  # minimum image: d = -3 - 3 + 2π
    d = -6.0 + 2 * np.pi
    assert v == pytest.approx(5.0 * d * d) and g[0] == pytest.approx(10.0 * d)


def test_state_dict_round_trip_gives_identical_bias():
    for bias, fresh in zip(_all_biases(), _all_biases()):
        if not bias.adaptive:
            continue
        fresh.load_state_dict({k: v.copy() for k, v in bias.state_dict().items()})
        for s in np.random.default_rng(2).normal(scale=0.5, size=(4, 2)):
            assert fresh.energy_and_gradient(s)[0] == bias.energy_and_gradient(s)[0]


def test_opes_follows_plumed_conventions():
    opes = OPESMetad(sigma=[0.1], barrier_kjmol=20.0, pace_steps=5, temperature_k=300)
    kt = opes.kbt
    assert opes.bias_factor == pytest.approx(20.0 / kt)
    assert opes.epsilon == pytest.approx(np.exp(-20.0 / kt / (1 - 1 / opes.bias_factor)))
    assert opes.energy_and_gradient([0.0])[0] == pytest.approx(-20.0)  # empty KDE: V = -ΔE
    assert not opes.update([0.0], 0)  # no deposition at step 0 (PLUMED skips the first step)
    assert opes.update([0.0], 5) and opes.update([0.01], 10)
    assert len(opes.heights) == 1  # the second kernel is merged (within 1 σ)
    assert opes.counter == 3
    assert opes.colvar_values()["zed"] > 0
    explore = OPESExplore(sigma=[0.1], barrier_kjmol=20.0, pace_steps=5, temperature_k=300)
    assert explore.sigma0[0] == pytest.approx(0.1 * np.sqrt(explore.bias_factor))
    with pytest.raises(ValueError, match="bias factor"):
        OPESMetad(sigma=[0.1], barrier_kjmol=20.0, pace_steps=5, temperature_k=300, bias_factor=0.5)


def test_metad_grid_matches_kernels_and_well_tempering():
    kwargs = dict(sigma=[0.2, 0.3], height_kjmol=2.0, pace_steps=1, temperature_k=300, bias_factor=6.0,
                  lower=[-np.pi, -2.0], upper=[np.pi, 2.0], periods=[2 * np.pi, None], grid_bins=[200, 200])
    exact, grid = Metadynamics(**kwargs), Metadynamics(use_grid=True, **kwargs)
    rng = np.random.default_rng(3)
    for k, p in enumerate(rng.uniform(-1.5, 1.5, size=(30, 2)), start=1):
        exact.update(p, k)
        grid.update(p, k)
    assert exact.heights[0] == 2.0 and np.all(exact.heights[1:] <= 2.0)
    for s in rng.uniform(-1.5, 1.5, size=(10, 2)):
        assert grid.energy_and_gradient(s)[0] == pytest.approx(exact.energy_and_gradient(s)[0], abs=0.02)
    assert np.isfinite(exact.rct_kjmol())


def test_bias_sum_and_errors():
    total = BiasSum([HarmonicRestraint([0.0], 10.0), Wall([1.0], 5.0, side="upper")])
    assert total.energy_and_gradient([2.0])[0] == pytest.approx(20.0 + 5.0)
    with pytest.raises(ValueError, match="unique"):
        BiasSum([HarmonicRestraint([0.0], 1.0), HarmonicRestraint([1.0], 1.0)])
    with pytest.raises(ValueError, match="same number of CVs"):
        BiasSum([HarmonicRestraint([0.0], 1.0), HarmonicRestraint([0.0, 1.0], 1.0, label="r2")])
    with pytest.raises(ValueError, match="expected a CV vector of 1"):
        total.energy_and_gradient([1.0, 2.0])


@pytest.mark.parametrize("index", range(7))
def test_energy_on_grid_equals_the_pointwise_bias(index):
    """The native route's table source: every bias's grid equals its energy at the grid points."""
    bias = _all_biases()[index]
    axes = [np.linspace(-np.pi, np.pi, 13, endpoint=False), np.linspace(-1.5, 1.5, 9)]
    grid = bias.energy_on_grid(axes)
    assert grid.shape == (13, 9)
    expected = [[bias.energy_and_gradient([a, b])[0] for b in axes[1]] for a in axes[0]]
    assert np.allclose(grid, expected, rtol=1e-10, atol=1e-10)


def test_metad_energy_on_its_own_axes_is_its_grid_and_components_broadcast():
    metad = _all_biases()[4]
    assert np.array_equal(metad.energy_on_grid(metad.axes), metad.grid)
    inner = _deposited(OPESMetad(sigma=0.1, barrier_kjmol=20.0, pace_steps=10, temperature_k=300), [[0.1], [0.3]])
    on_second = OnComponents(inner, [1], 2)
    axes = [np.linspace(-1, 1, 5), np.linspace(-1, 1, 7)]
    grid = BiasSum([on_second]).energy_on_grid(axes)
    assert np.allclose(grid, np.broadcast_to(inner.energy_on_grid([axes[1]])[None, :], (5, 7)))
