"""The one resumable training loop: early stopping, min_epochs, slices, resume, strict checkpoints, scheduling."""

import math

import pytest
import torch

from cvlearn.estimators.trainer import Trainer, load_run_state, make_scheduler, save_run_state

FMT = "test.Trainer.checkpoint/1"


def regression(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 3, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(64, generator=g)


def make(*, monitor="val_loss", mode="min", patience=2, min_epochs=0, max_epochs=6, lr=0.05, config=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    shuffle = torch.Generator().manual_seed(1)
    trainer = Trainer({"model": model}, optimizer, None, fmt=FMT, config=config or {"lr": lr}, what="toy",
                      max_epochs=max_epochs, monitor=monitor, mode=mode, patience=patience, min_epochs=min_epochs,
                      generators={"shuffle": shuffle}, progress=False)
    x, y = regression()

    def run_epoch(epoch):
        order = torch.randperm(len(x), generator=shuffle)
        for batch in order.split(16):
            trainer.step(((model(x[batch]).squeeze(-1) - y[batch]) ** 2).mean(), epoch)
        with torch.no_grad():
            return {"val_loss": float(((model(x).squeeze(-1) - y) ** 2).mean())}

    return trainer, model, run_epoch


def test_history_rows_and_best_epoch():
    trainer, model, run_epoch = make(max_epochs=4, patience=10)
    trainer.fit(run_epoch)
    assert [r["epoch"] for r in trainer.history] == [0, 1, 2, 3]
    assert all({"val_loss", "lr", "seconds"} <= set(r) for r in trainer.history)
    losses = [r["val_loss"] for r in trainer.history]
    assert trainer.best_epoch == losses.index(min(losses)) and trainer.best_value == min(losses)


def test_early_stopping_respects_min_epochs_and_restores_best_weights():
    # lr far too large: the loss explodes after the first epoch, so every later epoch is stale
    trainer, model, run_epoch = make(max_epochs=20, patience=2, min_epochs=6, lr=0.9)
    trainer.fit(run_epoch)
    assert len(trainer.history) == 6  # stale after 2 epochs, but min_epochs holds it to 6
    with torch.no_grad():
        x, y = regression()
        restored = float(((model(x).squeeze(-1) - y) ** 2).mean())
    assert restored == pytest.approx(trainer.best_value)


def test_without_monitor_all_epochs_run_and_the_last_weights_stay():
    trainer, model, run_epoch = make(monitor=None, max_epochs=3)
    trainer.fit(run_epoch)
    assert len(trainer.history) == 3 and trainer.best_epoch == -1
    with torch.no_grad():
        x, y = regression()
        assert float(((model(x).squeeze(-1) - y) ** 2).mean()) == pytest.approx(trainer.history[-1]["val_loss"])


def test_slices_resume_to_the_same_run(tmp_path):
    straight, model_a, run_a = make(max_epochs=5, patience=10)
    straight.fit(run_a)
    path = tmp_path / "run.pt"
    first, _, run_b = make(max_epochs=5, patience=10)
    first.fit(run_b, checkpoint_path=path, until_epoch=2)
    assert len(first.history) == 2
    resumed, model_c, run_c = make(max_epochs=5, patience=10)
    resumed.fit(run_c, checkpoint_path=path)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in straight.history]
    for p, q in zip(model_a.parameters(), model_c.parameters()):
        assert torch.equal(p, q)


def test_checkpoints_refuse_other_runs_and_old_formats(tmp_path):
    path = tmp_path / "run.pt"
    trainer, _, run_epoch = make(max_epochs=2)
    trainer.fit(run_epoch, checkpoint_path=path)
    other, _, run_other = make(max_epochs=2, config={"lr": 0.5})
    with pytest.raises(ValueError, match="different run; lr: expected 0.5, found 0.05"):
        other.fit(run_other, checkpoint_path=path)
    save_run_state(path, {"format": "test.Trainer.checkpoint/0", "config": {}})
    with pytest.raises(ValueError, match=r"expected format 'test.Trainer.checkpoint/1', found 'test.Trainer.checkpoint/0'"):
        trainer.fit(run_epoch, checkpoint_path=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable toy checkpoint"):
        load_run_state(path, fmt=FMT, config={}, device="cpu", what="toy")


def test_non_finite_loss_raises():
    trainer, _, _ = make()
    with pytest.raises(FloatingPointError, match="toy loss became nan in epoch 3; try a lower learning_rate"):
        trainer.step(torch.tensor(math.nan, requires_grad=True), 3)


def test_make_scheduler():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert make_scheduler(None, opt, learning_rate=1.0, max_epochs=5) is None
    cosine = make_scheduler("cosine", opt, learning_rate=1.0, max_epochs=4, cosine_floor=0.05)
    for _ in range(4):
        opt.step()
        cosine.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="lr_schedule: expected None, a callable or one of"):
        make_scheduler("linear", opt, learning_rate=1.0, max_epochs=5)
    with pytest.raises(ValueError, match="mode"):
        Trainer({}, opt, fmt=FMT, config={}, what="toy", max_epochs=1, mode="up")
