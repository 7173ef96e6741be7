"""ForceFieldFinetuner on a tiny EMT-labelled ethanol set: learning, early stopping, resume, pre-trained backbones."""

from __future__ import annotations

import copy

import pytest
import torch

from cvlearn.estimators.finetuner import ForceFieldFinetuner, evaluate_potential
from cvlearn.estimators.scores import energy_force_loss
from tests.models.test_potential import TINY_ET, emt_structures, tiny_backbone


@pytest.fixture(scope="module")
def data():
    return emt_structures(24, seed=0), emt_structures(8, seed=1)


def finetuner(**kwargs):
    settings = dict(kind="et", config=TINY_ET, head_hidden=16, max_epochs=6, patience=3, max_atoms=90,
                    learning_rate=3e-3, progress=False)
    return ForceFieldFinetuner(**{**settings, **kwargs})


def loss_of(model, structures):
    """Sum over ``structures`` of the per-structure losses at the default weights (energy 1, forces 100)."""
    return energy_force_loss(model, structures, 1.0, 100.0, torch.float32, torch.device("cpu"))[0].detach()


def test_loss_decreases_and_gradients_reach_the_backbone(data):
    train, val = data
    est = finetuner(max_epochs=8)
    before = copy.deepcopy(est.model.backbone.state_dict())
    model = est.fit(train, val).fetch_model()
    history = est.history
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert min(r["val_loss"] for r in history) < 0.5 * history[0]["val_loss"]
    changed = [k for k, v in model.backbone.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > 5, "fine-tuning must update the backbone, not only the head"
    metrics = est.evaluate(model, val)
    assert set(metrics) == {"energy_mae_mev", "energy_mae_mev_per_atom", "force_mae_mev_per_angstrom", "n_structures"}
    best = history[est.best_epoch]
    assert metrics["force_mae_mev_per_angstrom"] == pytest.approx(best["val_force_mae_mev_per_angstrom"])
    assert metrics["energy_mae_mev_per_atom"] == pytest.approx(metrics["energy_mae_mev"] / 9)

    # fetch_model() is independent of the estimator
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert not torch.equal(next(model.parameters()), next(est.model.parameters()))


def test_loss_is_a_mean_over_structures_of_per_atom_means(data):
    """Per-structure reduction: a batch's loss sum equals the sum of each structure's loss alone."""
    train, _ = data
    model = finetuner().model.eval()
    mixed = train[:2] + emt_structures(2, seed=9, name="H2O")
    together = loss_of(model, mixed)
    alone = sum(float(loss_of(model, [s])) for s in mixed)
    assert float(together) == pytest.approx(alone, rel=1e-5)


def test_early_stopping_restores_the_best_weights(data):
    train, val = data
    est = finetuner(learning_rate=1e-2, patience=2, max_epochs=30).fit(train, val)
    losses = [r["val_loss"] for r in est.history]
    assert len(losses) < 30 and est.best_epoch < len(losses) - 1, "the run must stop early after a worse epoch"
    assert est.best_epoch == min(range(len(losses)), key=losses.__getitem__)
    model = est.fetch_model()
    total = sum(float(loss_of(model, [s])) for s in val)
    assert total / len(val) == pytest.approx(losses[est.best_epoch], rel=1e-4)
    assert total / len(val) < losses[-1]


def test_resume_after_a_kill_reaches_the_same_state(data, tmp_path):
    train, val = data
    straight = finetuner(max_epochs=4, patience=10).fit(train, val)
    ckpt = tmp_path / "finetune.ckpt"
    finetuner(max_epochs=2, patience=10).fit(train, val, checkpoint_path=ckpt)  # "killed" after epoch 1
    resumed = finetuner(max_epochs=4, patience=10).fit(train, val, checkpoint_path=ckpt)
    assert [r["epoch"] for r in resumed.history] == [0, 1, 2, 3]
    expected = [r["val_loss"] for r in straight.history]
    assert [r["val_loss"] for r in resumed.history] == pytest.approx(expected, rel=1e-6)
    for k, v in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="different run"):
        finetuner(max_epochs=4, force_weight=10.0).fit(train, val, checkpoint_path=ckpt)


def test_pretrained_backbone_and_frozen_backbone(data, tmp_path):
    train, val = data
    backbone = tiny_backbone(seed=7)
    backbone.save(tmp_path / "backbone.pt", note="pre-trained stand-in")
    est = finetuner(pretrained=tmp_path / "backbone.pt", backbone_lr_scale=0.0, max_epochs=2, config=None)
    for k, v in backbone.state_dict().items():
        assert torch.equal(est.model.backbone.state_dict()[k], v)
    model = est.fit(train, val).fetch_model()
    for k, v in backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), f"{k} changed although the backbone was frozen"
    assert est.history[-1]["train_loss"] < est.history[0]["train_loss"]


def test_inputs_are_checked(data):
    train, val = data
    from cvlearn.structures.records import Structure

    unlabelled = [Structure(s.numbers, s.positions_angstrom, s.energy_ev, source="no forces") for s in val]
    with pytest.raises(ValueError, match="no forces"):
        finetuner().fit(train, unlabelled)
    with pytest.raises(ValueError, match="max_atoms"):
        finetuner(max_atoms=0)
    with pytest.raises(RuntimeError, match="fit"):
        finetuner().fetch_model()
    assert evaluate_potential is ForceFieldFinetuner.evaluate
