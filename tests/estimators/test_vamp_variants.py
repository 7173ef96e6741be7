"""VAMP-1 / VAMP-E / weighted scores against deeptime and against a Markov chain with exact singular values."""

import numpy as np
import pytest
import torch
from deeptime.decomposition import VAMP
from deeptime.decomposition.deep import vamp_score as deeptime_torch_score

from cvlearn.data import lagged_pairs
from cvlearn.estimators.scores import score_function, vamp1_score, vamp2_score, vamp_score, vamp_score_cv, vampe_score

# 3-state reversible chain: detailed balance by construction (symmetric flux matrix)
FLUX = np.array([[0.60, 0.03, 0.01], [0.03, 0.20, 0.02], [0.01, 0.02, 0.08]])
PI = FLUX.sum(axis=1)
T = FLUX / PI[:, None]


def exact_singular_values():
    """Singular values of Π^{1/2} T Π^{-1/2} without the constant one (mean removal takes it out)."""
    s = np.linalg.svd(np.diag(PI**0.5) @ T @ np.diag(PI**-0.5), compute_uv=False)
    return np.sort(s)[::-1][1:]


def chain(rng, n, start):
    states = np.empty(n, dtype=int)
    states[0] = start
    cum = np.cumsum(T, axis=1)
    u = rng.random(n)
    for t in range(1, n):
        states[t] = np.searchsorted(cum[states[t - 1]], u[t])
    return states


@pytest.fixture(scope="module")
def smooth_data():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(3000, 3)), 0) * 0.05
    x = np.sin(x) + 0.1 * rng.normal(size=x.shape)
    x[:, 1] += 0.5 * x[:, 0] ** 2  # non-reversible-looking, correlated features
    return x


def test_vamp1_vamp2_vampe_agree_with_deeptime(smooth_data):
    x = smooth_data
    a, b = torch.tensor(x[:-5]), torch.tensor(x[5:])
    model = VAMP(lagtime=5).fit(x).fetch_model()
    assert float(vamp1_score(a, b)) == pytest.approx(model.score(1), abs=1e-8)
    assert float(vamp2_score(a, b)) == pytest.approx(model.score(2), abs=1e-8)
    assert float(vampe_score(a, b)) == pytest.approx(model.score("E"), abs=1e-8)
    assert float(vampe_score(a, b, dim=2)) == pytest.approx(model.score("E", dim=2), abs=1e-8)
    # deeptime's torch VAMPNet losses (Bessel-corrected covariances: same scores up to truncation)
    assert float(vamp1_score(a, b)) == pytest.approx(float(deeptime_torch_score(a, b, "VAMP1")), abs=1e-8)
    assert float(vamp2_score(a, b)) == pytest.approx(float(deeptime_torch_score(a, b, "VAMP2")), abs=1e-8)
    assert float(vampe_score(a, b)) == pytest.approx(float(deeptime_torch_score(a, b, "VAMPE")), abs=2e-3)


@pytest.mark.parametrize("r", [1, 2, "E"])
def test_cross_validated_scores_agree_with_deeptime(smooth_data, r):
    x = smooth_data
    train, test = x[:2000], x[2000:]
    ref = VAMP(lagtime=5).fit(train).fetch_model().score(r, test_model=VAMP(lagtime=5).fit(test).fetch_model(), dim=2)
    pairs = lambda y: (torch.tensor(y[:-5]), torch.tensor(y[5:]))  # noqa: E731
    assert vamp_score_cv(pairs(train), pairs(test), r, dim=2) == pytest.approx(ref, abs=1e-8)


@pytest.mark.parametrize("name", ["vamp1", "vamp2", "vampe"])
def test_uniform_weights_equal_unweighted(smooth_data, name):
    a, b = torch.tensor(smooth_data[:-5]), torch.tensor(smooth_data[5:])
    fn = score_function(name)
    assert float(fn(a, b, weights=torch.full((len(a),), 3.7))) == pytest.approx(float(fn(a, b)), abs=1e-10)


def test_regularisation_modes_are_close_for_well_conditioned_data(smooth_data):
    a, b = torch.tensor(smooth_data[:-5]), torch.tensor(smooth_data[5:])
    ref = float(vamp2_score(a, b))
    for mode in ("regularize", "clamp"):
        assert float(vamp2_score(a, b, mode=mode)) == pytest.approx(ref, abs=1e-3)
    with pytest.raises(ValueError, match="mode"):
        vamp2_score(a, b, mode="svd")


def test_weighted_vamp2_recovers_exact_markov_chain_singular_values():
    """Pairs start from a biased distribution q ≠ π and move with the true T; weights π/q on the start frame
    make C00, C0t and Ctt the equilibrium ones, so the weighted score is exact (up to sampling noise)."""
    rng = np.random.default_rng(1)
    q = np.array([0.15, 0.35, 0.50])  # biased start distribution
    n = 100_000
    start = rng.choice(3, size=n, p=q)
    cum = np.cumsum(T, axis=1)
    end = (rng.random(n)[:, None] > cum[start]).sum(axis=1)
    onehot = np.eye(3)
    x0, xt = torch.tensor(onehot[start]), torch.tensor(onehot[end])
    w = torch.tensor(PI[start] / q[start])
    s = exact_singular_values()
    exact2, exact1 = 1 + (s**2).sum(), 1 + s.sum()
    assert float(vamp_score(x0, xt, weights=w)) == pytest.approx(exact2, abs=0.01)
    assert float(vamp_score(x0, xt, r=1, weights=w)) == pytest.approx(exact1, abs=0.01)
    assert float(vampe_score(x0, xt, weights=w)) == pytest.approx(exact2, abs=0.01)
    assert abs(float(vamp_score(x0, xt)) - exact2) > 0.02  # unweighted is biased: the test has teeth


def test_unbiased_chain_matches_exact_and_deeptime():
    rng = np.random.default_rng(2)
    states = chain(rng, 60_000, 0)
    x = np.eye(3)[states]
    s = exact_singular_values()
    ours = float(vamp_score(*lagged_pairs([torch.tensor(x)], 1)))
    assert ours == pytest.approx(VAMP(lagtime=1).fit(x).fetch_model().score(2), abs=1e-6)
    assert ours == pytest.approx(1 + (s**2).sum(), abs=0.02)
