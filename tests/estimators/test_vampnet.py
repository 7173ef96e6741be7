"""VAMPNet on a toy process with one slow coordinate hidden by a rotation."""

import copy

import numpy as np
import pytest
import torch

from cvlearn.estimators import VAMPNet
from cvlearn.models import VAMPModel
from cvlearn.estimators.scores import covariances, deeptime_vamp_score, vamp_score
from cvlearn.data import lagged_pairs

PHIS = (0.99, 0.1)
LAG = 5
ANGLE = 0.7


def toy(n_traj, n_frames, seed):
    """Two independent AR(1)s (slow phi=0.99, fast phi=0.1), rotated so neither input axis is the slow one."""
    rng = np.random.default_rng(seed)
    phis = np.array(PHIS)
    rot = np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]])
    out = []
    for _ in range(n_traj):
        z = np.empty((n_frames, 2))
        z[0] = rng.normal(size=2) / np.sqrt(1 - phis**2)
        for t in range(1, n_frames):
            z[t] = phis * z[t - 1] + rng.normal(size=2)
        out.append(torch.tensor(z @ rot.T, dtype=torch.float32))
    return out


def mlp(n_out=1):
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, n_out))


@pytest.fixture(scope="module")
def fitted():
    train, val = toy(4, 1500, seed=0), toy(2, 1500, seed=1)
    torch.manual_seed(0)
    estimator = VAMPNet(mlp(), lagtime=LAG, learning_rate=1e-2, batch_size=1024, max_epochs=20, patience=4,
                        progress=False)
    assert estimator.fit(train, val) is estimator
    return estimator, train, val


def test_learns_the_slow_coordinate(fitted):
    estimator, _, val = fitted
    theory = 1 + PHIS[0] ** (2 * LAG)
    slow = [v.double() @ torch.tensor([np.cos(ANGLE), np.sin(ANGLE)], dtype=torch.float64) for v in val]
    reference = deeptime_vamp_score([s[:, None] for s in slow], LAG)  # the true slow coordinate, same data
    assert estimator.best_val_vamp2 == pytest.approx(theory, abs=0.05)
    assert estimator.best_val_vamp2 > reference - 0.01
    assert [h["epoch"] for h in estimator.history] == list(range(len(estimator.history)))
    assert estimator.best_val_vamp2 == max(h["val_vamp2"] for h in estimator.history)
    assert estimator.history[estimator.best_epoch]["val_vamp2"] == estimator.best_val_vamp2


def test_best_weights_are_restored(fitted):
    estimator, _, val = fitted
    assert estimator.score(val) == pytest.approx(estimator.best_val_vamp2, abs=1e-6)


def test_model_outputs_are_vamp_singular_functions(fitted):
    estimator, train, val = fitted
    model = estimator.fetch_model()
    assert isinstance(model, VAMPModel) and model.projection.shape == (1, 1)
    with torch.no_grad():
        raw = [estimator.lobe(v) for v in val]
        out = [model(v) for v in val]
        y0, yt = lagged_pairs([model(t).double() for t in train], LAG)
    # an affine map leaves the score unchanged; and it agrees with deeptime on the same outputs
    assert vamp_score(*lagged_pairs(out, LAG)).item() == pytest.approx(
        vamp_score(*lagged_pairs(raw, LAG)).item(), abs=1e-6)
    assert vamp_score(*lagged_pairs(out, LAG)).item() == pytest.approx(deeptime_vamp_score(out, LAG), abs=1e-5)
    # mean-free and unit variance on the training pairs; for one CV the singular value is |corr(y0, yt)|
    c00, c0t, ctt = covariances(y0, yt)
    assert y0.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert c00.item() == pytest.approx(1.0, abs=1e-5)
    assert model.singular_values.item() == pytest.approx(abs(c0t.item()) / (c00.item() * ctt.item()) ** 0.5, rel=1e-6)


def test_fetched_model_is_independent(fitted):
    estimator, _, val = fitted
    model = estimator.fetch_model()
    saved = copy.deepcopy(estimator.lobe.state_dict())
    with torch.no_grad():
        before = model(val[0])
        for p in estimator.lobe.parameters():
            p.add_(1.0)
        after = model(val[0])
    estimator.lobe.load_state_dict(saved)
    torch.testing.assert_close(before, after, rtol=0, atol=0)
    assert model.lobe is not estimator.lobe


def test_model_scripts(fitted, tmp_path):
    estimator, _, val = fitted
    model = estimator.fetch_model()
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(val[0]), model(val[0]), rtol=0, atol=0)
    torch.jit.save(scripted, str(tmp_path / "cv.pt"))
    loaded = torch.jit.load(str(tmp_path / "cv.pt"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(val[0]), model(val[0]), rtol=0, atol=0)
    assert {"mean", "projection", "singular_values"} <= set(model.state_dict())


def test_truncation_shrinks_output_dim():
    """Two identical lobe outputs are linearly dependent: epsilon truncation leaves one CV."""

    class Duplicate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 1)

        def forward(self, x):
            y = self.linear(x)
            return torch.cat([y, y], dim=1)

    data = toy(2, 300, seed=2)
    torch.manual_seed(0)
    model = VAMPNet(Duplicate(), lagtime=2, max_epochs=1, progress=False).fit(data[:1], data[1:]).fetch_model()
    assert model.projection.shape == (2, 1) and model(data[0]).shape == (300, 1)


def test_input_validation():
    data = toy(2, 50, seed=3)
    estimator = VAMPNet(mlp(), lagtime=50, max_epochs=1, progress=False)
    with pytest.raises(ValueError, match="lag(time)? 50"):
        estimator.fit(data[:1], data[1:])
    with pytest.raises(ValueError, match="train"):
        VAMPNet(mlp(), lagtime=1, progress=False).fit([], data)
    with pytest.raises(ValueError, match="per-frame shape"):
        VAMPNet(mlp(), lagtime=1, progress=False).fit([data[0], torch.zeros(50, 3)], data)
    with pytest.raises(ValueError, match="per-frame shape"):
        VAMPNet(mlp(), lagtime=1, progress=False).fit(data, [torch.zeros(50, 3)])
    with pytest.raises(ValueError, match="lagtime"):
        VAMPNet(mlp(), lagtime=0)
    with pytest.raises(RuntimeError, match="fit"):
        VAMPNet(mlp(), lagtime=1).fetch_model()


def test_several_cvs_are_whitened_and_ordered():
    """A linear 2-output lobe: the projection recovers both processes, slowest first, whitened."""
    train = toy(4, 1500, seed=4)
    torch.manual_seed(0)
    model = VAMPNet(torch.nn.Linear(2, 2), lagtime=1, max_epochs=1, progress=False).fit(train, train).fetch_model()
    s = model.singular_values
    assert s.shape == (2,) and s[0] >= s[1]
    assert s[0].item() == pytest.approx(PHIS[0], abs=0.02) and s[1].item() == pytest.approx(PHIS[1], abs=0.05)
    with torch.no_grad():
        y0, yt = lagged_pairs([model(t).double() for t in train], 1)
    torch.testing.assert_close(covariances(y0, yt)[0], torch.eye(2, dtype=torch.float64), atol=1e-5, rtol=0)
    assert vamp_score(y0, yt, r=1).item() == pytest.approx(1 + s.sum().item(), abs=1e-5)
