"""VAMPNet training options: score variants, weights, schedules, early stopping, resumable checkpoints, seeds."""

import copy

import numpy as np
import pytest
import torch

from cvlearn.estimators import VAMPNet
from cvlearn.estimators.multiseed import fit_seeds
from tests.estimators.test_vampnet import LAG, mlp, toy

KW = dict(lagtime=LAG, learning_rate=1e-2, batch_size=512, progress=False)


@pytest.fixture(scope="module")
def data():
    return toy(3, 800, seed=0), toy(1, 800, seed=1)


def fresh(n_out=1):
    torch.manual_seed(0)
    return mlp(n_out)


@pytest.mark.parametrize("score", ["vamp1", "vampe"])
def test_other_scores_train(data, score):
    train, val = data
    est = VAMPNet(fresh(), score=score, max_epochs=6, patience=6, **KW).fit(train, val)
    assert est.best_val_score == max(h[f"val_{score}"] for h in est.history)
    assert est.score(val) == pytest.approx(est.best_val_vamp2, abs=1e-6)
    assert est.best_val_vamp2 > 1.5  # theory 1 + 0.99**10 = 1.904; a random lobe scores ~1.1


def test_uniform_weights_train_like_unweighted(data):
    train, val = data
    a = VAMPNet(fresh(), max_epochs=3, **KW).fit(train, val)
    b = VAMPNet(fresh(), max_epochs=3, **KW).fit(train, val, train_weights=[np.full(len(t), 2.0) for t in train],
                                                  validation_weights=[np.ones(len(v)) for v in val])
    for p, q in zip(a.lobe.parameters(), b.lobe.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_explicit_pairs_equal_lagged_pairs(data):
    train, val = data
    pairs = [(np.arange(len(t) - LAG), np.arange(LAG, len(t)), np.ones(len(t) - LAG)) for t in train]
    a = VAMPNet(fresh(), max_epochs=2, **KW).fit(train, val)
    b = VAMPNet(fresh(), max_epochs=2, **KW).fit(train, val, train_pairs=pairs)
    assert a.history[-1]["val_vamp2"] == pytest.approx(b.history[-1]["val_vamp2"], abs=1e-5)


def test_bad_weights_are_rejected(data):
    train, val = data
    est = VAMPNet(fresh(), max_epochs=1, **KW)
    with pytest.raises(ValueError, match=r"train_weights\[0\]: expected 800 frame weights, found 10"):
        est.fit(train, val, train_weights=[np.ones(10)] * 3)
    with pytest.raises(ValueError, match="score"):
        VAMPNet(fresh(), score="vamp3", **KW)
    with pytest.raises(ValueError, match="lr_schedule"):
        VAMPNet(fresh(), lr_schedule="linear", **KW)


class Snapshots:
    """An lr 'scheduler' that records the weights evaluated each epoch and wrecks them after epoch 2."""

    def __init__(self, optimizer, lobe):
        self.optimizer, self.lobe, self.states = optimizer, lobe, []

    def step(self, *args):
        self.states.append(copy.deepcopy(self.lobe.state_dict()))
        if len(self.states) == 3:
            for group in self.optimizer.param_groups:
                group["lr"] = 5.0  # validation scores collapse from here on

    def state_dict(self):
        return {}


def test_early_stopping_restores_best_weights(data):
    train, val = data
    lobe = fresh()
    holder = {}
    est = VAMPNet(lobe, max_epochs=20, patience=3, lr_schedule=lambda opt: holder.setdefault("s", Snapshots(opt, lobe)),
                  **KW).fit(train, val)
    snapshots = holder["s"].states
    scores = [h["val_vamp2"] for h in est.history]
    assert est.best_epoch == int(np.argmax(scores)) and est.best_epoch < len(scores) - 1
    assert len(scores) == est.best_epoch + 1 + 3  # stopped after `patience` stale epochs
    for name, value in est.lobe.state_dict().items():
        assert torch.equal(value, snapshots[est.best_epoch][name])
    assert est.score(val) == pytest.approx(max(scores), abs=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "plateau", "exponential"])
def test_lr_schedules_change_the_rate(data, schedule):
    train, val = data
    est = VAMPNet(fresh(), max_epochs=4, patience=4, lr_schedule=schedule, **KW).fit(train, val)
    assert est.history[0]["lr"] == pytest.approx(1e-2)
    if schedule != "plateau":
        assert est.history[-1]["lr"] < 1e-2


def test_checkpoint_resumes_to_the_same_result(data, tmp_path):
    train, val = data
    full = VAMPNet(fresh(), max_epochs=5, patience=5, lr_schedule="exponential", **KW).fit(train, val)
    path = tmp_path / "ckpt.pt"
    VAMPNet(fresh(), max_epochs=2, patience=5, lr_schedule="exponential", **KW).fit(train, val, checkpoint_path=path)
    assert path.is_file()
    # "killed" after epoch 2; a new process builds a new lobe (different init) and resumes
    torch.manual_seed(123)
    resumed = VAMPNet(mlp(), max_epochs=5, patience=5, lr_schedule="exponential", **KW).fit(train, val, checkpoint_path=path)
    assert [h["epoch"] for h in resumed.history] == list(range(5))
    assert resumed.history[-1]["val_vamp2"] == pytest.approx(full.history[-1]["val_vamp2"], abs=1e-9)
    for p, q in zip(full.lobe.parameters(), resumed.lobe.parameters()):
        assert torch.equal(p, q)
    # a finished checkpoint returns immediately with the best weights
    again = VAMPNet(fresh(), max_epochs=5, patience=5, lr_schedule="exponential", **KW).fit(train, val, checkpoint_path=path)
    assert again.best_val_vamp2 == resumed.best_val_vamp2
    with pytest.raises(ValueError, match="lagtime: expected 3, found 5"):
        VAMPNet(fresh(), **{**KW, "lagtime": 3}, max_epochs=5).fit(train, val, checkpoint_path=path)


def test_fit_seeds_reports_mean_and_std(data):
    train, val = data
    result = fit_seeds(lambda seed: mlp(), train, val, seeds=[0, 1, 2], max_epochs=2, **KW)
    assert len(result.values) == 3 and len(result.models) == 3
    assert result.mean == pytest.approx(np.mean(result.values)) and result.std >= 0
    assert "±" in str(result)
