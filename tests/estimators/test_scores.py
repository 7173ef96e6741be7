"""VAMP scores in torch against deeptime and against processes with known singular values."""

import numpy as np
import pytest
import torch
from deeptime.covariance import Covariance

from cvlearn.data import lagged_pairs
from cvlearn.estimators.scores import covariances, deeptime_vamp_score, koopman_svd, vamp2_loss, vamp_score


def ar1(rng, n_frames, phis, mix=None):
    """Independent AR(1) components (unit stationary variance), optionally linearly mixed and shifted."""
    phis = np.asarray(phis, dtype=float)
    noise = np.sqrt(1 - phis**2)
    z = np.empty((n_frames, len(phis)))
    z[0] = rng.normal(size=len(phis))
    for t in range(1, n_frames):
        z[t] = phis * z[t - 1] + noise * rng.normal(size=len(phis))
    return z if mix is None else z @ mix + 3.0


@pytest.fixture(scope="module")
def trajectories():
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(4, 4))
    return [ar1(rng, n, [0.95, 0.7, 0.3, 0.0], mix) for n in (400, 650, 300, 3)]  # the last is shorter than lag


@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("lag", [1, 5])
def test_matches_deeptime(trajectories, r, lag):
    x0, xt = lagged_pairs([torch.tensor(a) for a in trajectories], lag)
    ours = vamp_score(x0, xt, r=r).item()
    assert ours == pytest.approx(deeptime_vamp_score(trajectories, lag, r=r), abs=1e-5)


def test_dim_matches_deeptime(trajectories):
    from deeptime.decomposition import VAMP

    x0, xt = lagged_pairs([torch.tensor(a) for a in trajectories], 2)
    ref = VAMP(lagtime=2).fit([a for a in trajectories if len(a) > 2]).fetch_model().score(2, dim=2)
    assert vamp_score(x0, xt, r=2, dim=2).item() == pytest.approx(ref, abs=1e-8)


def test_float32_input_is_scored_in_float64(trajectories):
    x0, xt = lagged_pairs([torch.tensor(a, dtype=torch.float32) for a in trajectories], 3)
    score = vamp_score(x0, xt)
    assert score.dtype == torch.float64
    ref = deeptime_vamp_score([a.astype(np.float32) for a in trajectories], 3)
    assert score.item() == pytest.approx(ref, abs=1e-5)


def test_covariances_match_deeptime_convention(trajectories):
    """Mean-free with separate means for x0 and xt, divided by N (no Bessel correction), weighted as deeptime."""
    x0, xt = lagged_pairs(trajectories, 2)
    rng = np.random.default_rng(1)
    for w in (None, rng.uniform(0.1, 2.0, size=len(x0))):
        ref = Covariance(compute_c0t=True, remove_data_mean=True, bessels_correction=False)
        ref = ref.partial_fit((x0, xt), weights=w).fetch_model()
        c00, c0t, _ = covariances(torch.tensor(x0), torch.tensor(xt), None if w is None else torch.tensor(w))
        np.testing.assert_allclose(c00.numpy(), ref.cov_00, atol=1e-12)
        np.testing.assert_allclose(c0t.numpy(), ref.cov_0t, atol=1e-12)
    # Ctt, which deeptime cannot weight: explicit formula
    w = torch.tensor(rng.uniform(0.1, 2.0, size=len(x0)))
    xt_t = torch.tensor(xt)
    mean_t = (w[:, None] * xt_t).sum(0) / w.sum()
    expected = ((xt_t - mean_t).T * w) @ (xt_t - mean_t) / w.sum()
    torch.testing.assert_close(covariances(torch.tensor(x0), xt_t, w)[2], expected)


def test_uniform_weights_equal_unweighted(trajectories):
    x0, xt = lagged_pairs([torch.tensor(a) for a in trajectories], 2)
    for r in (1, 2):
        plain = vamp_score(x0, xt, r=r)
        weighted = vamp_score(x0, xt, r=r, weights=torch.full((len(x0),), 3.7))
        assert weighted.item() == pytest.approx(plain.item(), abs=1e-12)


def test_gradient_flows(trajectories):
    x0, xt = lagged_pairs([torch.tensor(a, dtype=torch.float32) for a in trajectories], 2)
    proj = torch.randn(4, 2, requires_grad=True)
    for r in (1, 2):
        proj.grad = None
        loss = -vamp_score(x0 @ proj, xt @ proj, r=r)
        loss.backward()
        assert proj.grad is not None and torch.isfinite(proj.grad).all() and proj.grad.abs().sum() > 0
    assert vamp2_loss(x0, xt).item() == pytest.approx(-vamp_score(x0, xt).item())


def test_ar1_singular_value():
    """A single AR(1) with coefficient phi has singular value phi**lag at lag."""
    phi, lag = 0.8, 2
    x = ar1(np.random.default_rng(2), 50_000, [phi])
    x0, xt = lagged_pairs([torch.tensor(x)], lag)
    assert vamp_score(x0, xt, r=1).item() == pytest.approx(1 + phi**lag, abs=0.02)
    assert vamp_score(x0, xt, r=2).item() == pytest.approx(1 + phi ** (2 * lag), abs=0.02)


def test_two_state_markov_chain_with_rank_deficient_features():
    """One-hot features of a 2-state chain: C00 has rank 1 after mean removal (epsilon truncation), and the
    only non-trivial singular value is the second eigenvalue 1 - a - b of the transition matrix."""
    a, b, n = 0.05, 0.1, 40_000
    rng = np.random.default_rng(3)
    states = np.empty(n, dtype=int)
    states[0] = 0
    flips = rng.uniform(size=n)
    for t in range(1, n):
        states[t] = 1 - states[t - 1] if flips[t] < (a if states[t - 1] == 0 else b) else states[t - 1]
    onehot = np.eye(2)[states]
    x0, xt = lagged_pairs([torch.tensor(onehot)], 1)
    s, u, v = koopman_svd(*covariances(x0, xt))
    assert len(s) == 1  # the constant direction was truncated, as deeptime does
    assert s.item() == pytest.approx(1 - a - b, abs=0.02)
    assert vamp_score(x0, xt).item() == pytest.approx(deeptime_vamp_score([onehot], 1), abs=1e-8)


def test_collapsed_features_score_one():
    x = torch.ones(100, 3)
    assert vamp_score(x[:-1], x[1:]).item() == 1.0


def test_invalid_arguments():
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match="r: expected"):
        vamp_score(x, x, r=0.5)
    with pytest.raises(ValueError, match="same shape"):
        vamp_score(x, x[:, :1])
    with pytest.raises(ValueError, match="weights"):
        vamp_score(x, x, weights=torch.ones(3))
