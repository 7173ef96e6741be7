"""Data-parallel energy + force fine-tuning on 2 real gloo processes equals one process on the same global batches
(the force loss's double backward included); a 2-rank checkpoint resumes in one process."""

from pathlib import Path

import pytest
import torch

from cvlearn import distributed
from cvlearn.estimators.data_parallel import ForwardAs
from cvlearn.estimators.finetuner import ForceFieldFinetuner
from tests.models.test_potential import TINY_ET, emt_structures


def _structures(n: int, seed: int) -> list:
    """Labelled ethanol (9 atoms) and water (3 atoms) interleaved: slices differ in structures and atoms."""
    big, small = emt_structures(n, seed=seed), emt_structures(n, seed=seed, name="H2O")
    return [s for pair in zip(big, small) for s in pair]


def _estimator(**kwargs) -> ForceFieldFinetuner:
    settings = dict(kind="et", config=TINY_ET, head_hidden=8, max_epochs=6, patience=2, max_atoms=30,
                    learning_rate=3e-3, dtype=torch.float64, progress=False)
    return ForceFieldFinetuner(**{**settings, **kwargs})


def _loss_and_grads(group: list, ddp: bool = False):
    est = _estimator()
    est.model.train()  # forces keep their graph: the force term reaches the weights by double backward
    net = distributed.wrap_ddp(ForwardAs(est.model, "energy_and_forces"), "cpu") if ddp else None
    loss, sums = est.batch_loss(group, net)
    (loss / len(group)).backward()
    grads = [p.grad.clone() for p in est.model.parameters() if p.grad is not None]
    return float(loss.detach()), grads, sums, isinstance(net, torch.nn.parallel.DistributedDataParallel)


def _fit(checkpoint: str | None, **kwargs):
    est = _estimator(**kwargs).fit(_structures(6, 0), _structures(3, 1), checkpoint_path=checkpoint)
    return est.history, est.best_epoch, [p.detach().clone() for p in est.model.parameters()]


STOPS_EARLY = {"learning_rate": 1e-2, "max_epochs": 20}  # stops after 8 epochs, best epoch 5 (patience 2)


def _worker(full: str, partial: str):
    batches = {"mixed": _structures(3, 2)[:5], "one": _structures(1, 2)[:1]}  # "one": rank 1 has no structure
    out = {name: _loss_and_grads(group, ddp=True) for name, group in batches.items()}
    out["fit"] = _fit(full, **STOPS_EARLY)
    _fit(partial, max_epochs=2, patience=10)  # a 2-rank run "killed" after two epochs
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return distributed.spawn(_worker, 2, str(tmp / "full.pt"), str(tmp / "partial.pt")), tmp


@pytest.mark.parametrize("batch", ["mixed", "one"])
def test_ddp_energy_force_loss_and_gradients_equal_one_process(two_ranks, batch):
    ranks, _ = two_ranks
    group = _structures(3, 2)[:5] if batch == "mixed" else _structures(1, 2)[:1]
    loss, grads, sums, _ = _loss_and_grads(group)
    for r, (ddp_loss, ddp_grads, ddp_sums, wrapped) in enumerate(o[batch] for o in ranks):
        assert wrapped
        assert ddp_loss == pytest.approx(loss, rel=1e-12)
        assert len(ddp_grads) == len(grads) > 10
        for g, h in zip(ddp_grads, grads):
            assert torch.allclose(g, h, rtol=0, atol=1e-10), float((g - h).abs().max())
    # each rank's error sums are its slice's: together they are the batch's
    both = [o[batch][2] for o in ranks]
    assert both[0]["n_force_components"] + both[1]["n_force_components"] == sums["n_force_components"]
    assert both[0]["force_abs"] + both[1]["force_abs"] == pytest.approx(sums["force_abs"], rel=1e-12)
    assert (both[1]["n_force_components"] == 0) == (batch == "one")


def test_ddp_fit_equals_one_process_fit_and_its_checkpoint_resumes_in_one_process(two_ranks):
    ranks, tmp = two_ranks
    history, best_epoch, params = _fit(None, **STOPS_EARLY)
    assert min(r["val_loss"] for r in history) < history[0]["val_loss"]  # it really trained ...
    assert len(history) < 20 and best_epoch < len(history) - 1  # ... and stopped early, restoring an earlier epoch
    for o in ranks:
        ddp_history, ddp_best, ddp_params = o["fit"]
        assert len(ddp_history) == len(history) and ddp_best == best_epoch  # the same early-stopping decisions
        for a, b in zip(ddp_history, history):
            for key in ("train_loss", "val_loss", "val_energy_mae_mev", "val_force_mae_mev_per_angstrom"):
                assert a[key] == pytest.approx(b[key], rel=1e-9), key
        for p, q in zip(ddp_params, params):
            assert torch.allclose(p, q, rtol=0, atol=1e-8), float((p - q).abs().max())
    assert len(torch.load(tmp / "full.pt", weights_only=False)["history"]) == len(history)  # rank 0 wrote it
    assert not list(Path(tmp).glob(".*"))  # no temporaries left by a second writer
    straight, _, straight_params = _fit(None, max_epochs=4, patience=10)
    resumed, _, resumed_params = _fit(str(tmp / "partial.pt"), max_epochs=4, patience=10)  # one process goes on
    assert [r["epoch"] for r in resumed] == [0, 1, 2, 3]
    assert [r["val_loss"] for r in resumed] == pytest.approx([r["val_loss"] for r in straight], rel=1e-9)
    for p, q in zip(resumed_params, straight_params):
        assert torch.allclose(p, q, rtol=0, atol=1e-8), float((p - q).abs().max())
