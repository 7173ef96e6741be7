"""Biased toy simulations: reweighting recovers unbiased statistics; rescaled-time pairs; bias columns."""

import numpy as np
import pytest
import torch

from cvlearn.data.colvar import write_colvar
from cvlearn.data.lagged import (biased_pairs, frame_weights, lagged_pairs, log_weights_from_colvar, rescaled_time,
                                 rescaled_time_pairs)
from cvlearn.estimators import VAMPNet
from cvlearn.estimators.scores import covariances
from cvlearn.units import kt_kjmol

BETA = 1.0  # reduced units for the toy: energies in kT


def u(x):
    return 3.0 * (x**2 - 1.0) ** 2  # double well, barrier 3 kT


def du(x):
    return 12.0 * x * (x**2 - 1.0)


def static_bias(x):
    return -0.8 * u(x)  # flattens 80 % of the barrier; the biased run samples exp(-β(U + V))


def langevin(rng, n_walkers, n_steps, bias_grad, dt=1e-3, stride=10):
    """Overdamped Langevin (D = 1) in numpy, many walkers at once; frames every ``stride`` steps."""
    x = rng.choice([-1.0, 1.0], size=n_walkers)
    frames = []
    for step in range(n_steps):
        x = x - (du(x) + bias_grad(x)) * dt + np.sqrt(2 * dt) * rng.normal(size=n_walkers)
        if step % stride == 0:
            frames.append(x.copy())
    return np.array(frames).T  # [walkers, frames]


def features(x):
    return np.stack([x, x**2], axis=-1)


def exact_c00():
    grid = np.linspace(-3, 3, 20001)
    p = np.exp(-BETA * u(grid))
    p /= p.sum()
    f = features(grid)
    mean = p @ f
    return (f - mean).T @ ((f - mean) * p[:, None])


def test_reweighted_biased_run_recovers_unbiased_covariance():
    rng = np.random.default_rng(0)
    traj = langevin(rng, 200, 3000, lambda x: -0.8 * du(x))[:, 20:]
    lag = 5
    x0 = torch.tensor(features(traj[:, :-lag]).reshape(-1, 2))
    xt = torch.tensor(features(traj[:, lag:]).reshape(-1, 2))
    w = torch.tensor(np.exp(BETA * static_bias(traj[:, :-lag])).reshape(-1))  # instantaneous-frame weights
    c00_w, _, _ = covariances(x0, xt, w)
    c00_raw, _, _ = covariances(x0, xt)
    exact = torch.tensor(exact_c00())
    assert torch.allclose(c00_w, exact, rtol=0.08, atol=0.02)
    assert not torch.allclose(c00_raw, exact, rtol=0.08, atol=0.02)  # without weights it is wrong


def test_rescaled_time_pairs_reduce_to_lagged_pairs_without_bias():
    b = rescaled_time(np.zeros(20), dt_ps=0.5)
    for method in ("interval", "nearest"):
        i0, it, w = rescaled_time_pairs(b, 1.5, method)
        assert np.array_equal(i0, np.arange(17)) and np.array_equal(it, np.arange(3, 20))
        assert np.allclose(w, 0.5)


def test_rescaled_time_pairs_on_a_toy_axis():
    b = rescaled_time(np.log([1, 2, 1, 0.5, 3, 1, 1, 1]), dt_ps=1.0)  # boundaries 0 1 3 4 4.5 7.5 8.5 9.5 10.5
    assert np.allclose(b, [0, 1, 3, 4, 4.5, 7.5, 8.5, 9.5, 10.5])
    i0, it, w = rescaled_time_pairs(b, 2.5, "interval")
    # frame 0 = [0, 1) shifted to [2.5, 3.5): half in frame 1 = [1, 3), half in frame 2 = [3, 4)
    assert list(zip(i0[:2], it[:2], w[:2])) == [(0, 1, 0.5), (0, 2, 0.5)]
    assert w.sum() == pytest.approx(b[-1] - 2.5)  # every point of the axis that has a partner, once
    for i in range(8):  # each start frame carries its own rescaled duration (where the partner exists)
        if b[i + 1] + 2.5 <= b[-1]:
            assert w[i0 == i].sum() == pytest.approx(b[i + 1] - b[i])
    i0n, itn, wn = rescaled_time_pairs(b, 2.5, "nearest")
    assert list(itn[:3]) == [2, 3, 4]  # shifted centres 3.0, 4.5, 6.0 → frame centres 3.5, 4.25, 6.0
    assert np.allclose(wn, np.diff(b)[i0n])


def test_frames_below_the_axis_resolution_have_no_pairs():
    """An OPES-explore run's weights span e^31 (ala2, 2 ns): after a heavy frame, light ones add less than float64
    resolves, so boundaries repeat. Those frames get no pair; the rest are paired as usual."""
    lw = np.zeros(12)
    lw[3] = 45.0  # e^45 > 1/eps: frames 4.. add nothing to t' at 1 ps each
    b = rescaled_time(lw, 1.0)
    assert np.any(np.diff(b) == 0) and np.all(np.diff(b) >= 0)
    for method in ("interval", "nearest"):
        i0, it, w = rescaled_time_pairs(b, 1.5, method)
        assert len(i0) > 0 and np.all(w > 0)
        zero = np.nonzero(np.diff(b) == 0)[0]
        assert not np.isin(i0, zero).any() and not np.isin(it, zero).any()
    i0, it, w = rescaled_time_pairs(b, 1.5, "interval")
    assert w.sum() == pytest.approx(b[-1] - 1.5)
    with pytest.raises(ValueError, match="non-decreasing"):
        rescaled_time_pairs(np.array([0.0, 2.0, 1.0]), 0.5)
    with pytest.raises(ValueError, match="positive time"):
        rescaled_time_pairs(np.zeros(4), 0.5)


def test_rescaled_time_rejects_overflow_and_bad_input():
    with pytest.raises(ValueError, match="overflows"):
        rescaled_time(np.array([800.0, 0.0]), 1.0)
    with pytest.raises(ValueError, match="dt_ps"):
        rescaled_time(np.zeros(3), 0.0)
    assert rescaled_time(np.array([800.0, 0.0]) - 800.0, 1.0, normalise=True)[-1] == pytest.approx(2.0)


def test_log_weights_from_colvar_finds_the_bias(tmp_path):
    t = np.arange(5.0)
    path = tmp_path / "COLVAR"
    write_colvar(path, ["time", "cv0", "bias", "metad.bias", "metad.rct"], np.column_stack([t, t, t, 2 * t, t]))
    kt = kt_kjmol(300.0)
    assert np.allclose(log_weights_from_colvar(path, 300.0), t / kt)  # metad.bias − metad.rct
    assert np.allclose(log_weights_from_colvar(path, 300.0, bias_column="bias"), t / kt)
    write_colvar(path, ["time", "opes.bias", "opes.rct"], np.column_stack([t, t, 0 * t]))
    assert np.allclose(log_weights_from_colvar(path, 300.0), t / kt)
    write_colvar(path, ["time", "phi"], np.column_stack([t, t]))
    with pytest.raises(ValueError, match="expected one bias column"):
        log_weights_from_colvar(path, 300.0)
    w = frame_weights([np.array([0.0, 1.0]), np.array([3.0])])
    assert w[1][0] == 1.0 and w[0][1] == pytest.approx(np.exp(-2.0))


def test_vampnet_trains_on_biased_toy_with_weights_and_rescaled_time():
    rng = np.random.default_rng(1)
    traj = langevin(rng, 6, 6000, lambda x: -0.8 * du(x))
    log_w = [BETA * static_bias(x) for x in traj]
    data = [torch.tensor(features(x), dtype=torch.float32) for x in traj]
    torch.manual_seed(0)
    lobe = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    est = VAMPNet(lobe, lagtime=5, batch_size=256, max_epochs=3, progress=False, learning_rate=1e-2)
    est.fit(data[:4], data[4:], train_weights=frame_weights(log_w[:4]), validation_weights=frame_weights(log_w[4:]))
    assert est.best_val_vamp2 > 1.3
    pairs = biased_pairs(log_w, dt_ps=0.01, lagtime_ps=0.05, normalise=True)
    est2 = VAMPNet(lobe, lagtime=5, batch_size=256, max_epochs=2, progress=False).fit(
        data[:4], data[4:], train_pairs=pairs[:4], validation_pairs=pairs[4:])
    model = est2.fetch_model()
    out = model(data[0]).detach()
    assert out.shape == (len(data[0]), 1) and torch.isfinite(out).all()
    # the slow CV separates the wells: |corr(cv, x)| is high
    assert abs(np.corrcoef(out[:, 0].numpy(), traj[0])[0, 1]) > 0.8


def test_lagged_pairs_never_cross_boundaries():
    # value = 1000 * trajectory + frame, so a pair across trajectories would be visible
    lengths = [7, 2, 5]
    arrays = [np.stack([1000 * i + np.arange(n)] * 2, axis=1) for i, n in enumerate(lengths)]
    x0, xt = lagged_pairs(arrays, 2)
    assert isinstance(x0, np.ndarray) and x0.shape == (5 + 0 + 3, 2)
    assert np.all(xt - x0 == 2) and np.all(x0 // 1000 == xt // 1000)
    t0, tt = lagged_pairs([torch.from_numpy(a) for a in arrays], 1)
    assert isinstance(t0, torch.Tensor) and len(t0) == 6 + 1 + 4 and torch.all(tt - t0 == 1)


def test_lagged_pairs_errors():
    arrays = [np.zeros((5, 2)), np.zeros((3, 2))]
    with pytest.raises(ValueError, match=r"lagtime 5 frames .* \(lengths \[5, 3\]\)"):
        lagged_pairs(arrays, 5)
    with pytest.raises(ValueError, match="lagtime"):
        lagged_pairs(arrays, 0)
    with pytest.raises(ValueError, match="per-frame shape"):
        lagged_pairs([np.zeros((5, 2)), np.zeros((5, 3))], 1)
    assert lagged_pairs([np.arange(4)], lagtime=3)[1].tolist() == [3]
