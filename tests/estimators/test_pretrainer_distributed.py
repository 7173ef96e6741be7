"""Data-parallel denoising pre-training on 2 real gloo processes equals one process on the same global batches;
a 2-rank checkpoint resumes in one process."""

from pathlib import Path

import pytest
import torch

from cvlearn import distributed
from cvlearn.estimators.data_parallel import ForwardAs, rank_share
from cvlearn.estimators.pretrainer import DenoisingPretrainer
from tests.models.test_potential import emt_structures

TINY = {"hidden_channels": 16, "num_layers": 1, "num_rbf": 8, "num_heads": 2}


def _structures(n: int, seed: int) -> list:
    """Ethanol (9 atoms) and water (3 atoms) interleaved: uneven sizes, so slices balance atoms, not counts."""
    big, small = emt_structures(n, seed=seed), emt_structures(n, seed=seed, name="H2O")
    return [s for pair in zip(big, small) for s in pair]


def _estimator(max_epochs: int = 3) -> DenoisingPretrainer:
    est = DenoisingPretrainer("et", TINY, noise_sigma_angstrom=0.2, learning_rate=3e-3, max_epochs=max_epochs,
                              max_atoms=30, seed=4, progress=False)
    est.backbone.double(), est.head.double()  # float64: DDP and one process agree to rounding
    return est


def _loss_and_grads(group: list, net=None) -> tuple[float, list]:
    est = _estimator()
    est.backbone.train(), est.head.train()
    net = None if net is None else net(est)
    loss = est.batch_loss(group, torch.Generator().manual_seed(11), net)
    loss.backward()
    grads = [p.grad.clone() for p in (*est.backbone.parameters(), *est.head.parameters()) if p.grad is not None]
    return float(loss.detach()), grads, isinstance(net, torch.nn.parallel.DistributedDataParallel)


def _fit(checkpoint: str | None, until_epoch: int | None = None):
    est = _estimator().fit(_structures(6, 0), _structures(3, 1), checkpoint_path=checkpoint, until_epoch=until_epoch)
    return est.history, [p.detach().clone() for p in (*est.backbone.parameters(), *est.head.parameters())]


def _ddp(est):
    return distributed.wrap_ddp(ForwardAs(est.backbone, head=est.head), "cpu")


def _worker(full: str, partial: str):
    batches = {"mixed": _structures(3, 2)[:5], "one": _structures(1, 2)[:1]}  # "one": rank 1 has no structure
    out = {name: _loss_and_grads(group, _ddp) for name, group in batches.items()}
    out["fit"] = _fit(full)
    _fit(partial, until_epoch=1)  # a 2-rank run stopped after its first epoch
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    return distributed.spawn(_worker, 2, str(tmp / "full.pt"), str(tmp / "partial.pt")), tmp


def test_rank_shares_cover_the_batch_once_balanced_by_atoms():
    group = _structures(3, 0)  # 9, 3, 9, 3, 9, 3 atoms
    shares = [rank_share(group, r, 2) for r in range(2)]
    assert [len(s.structures) for s in shares] == [3, 3] and shares[0].atom_stop == shares[1].atom_start == 21
    assert shares[0].structures + shares[1].structures == group and shares[1].atom_stop == 36
    idle = rank_share(group[:1], 1, 2)
    assert idle.weight == 0.0 and idle.n_atoms_here == 0 and rank_share(group[:1], 0, 2).n_atoms_here == 9
    assert rank_share(group, 0, 1).structures == group


@pytest.mark.parametrize("batch", ["mixed", "one"])
def test_ddp_loss_and_gradients_equal_one_process(two_ranks, batch):
    ranks, _ = two_ranks
    group = _structures(3, 2)[:5] if batch == "mixed" else _structures(1, 2)[:1]
    loss, grads, _ = _loss_and_grads(group)
    for ddp_loss, ddp_grads, wrapped in (o[batch] for o in ranks):
        assert wrapped
        assert ddp_loss == pytest.approx(loss, rel=1e-12)
        assert len(ddp_grads) == len(grads) > 10
        for g, h in zip(ddp_grads, grads):
            assert torch.allclose(g, h, rtol=0, atol=1e-10), float((g - h).abs().max())


def test_ddp_fit_equals_one_process_fit_and_its_checkpoint_resumes_in_one_process(two_ranks, tmp_path):
    ranks, tmp = two_ranks
    history, params = _fit(None)
    assert history[-1]["val_loss"] < history[0]["val_loss"]  # it really trained
    for o in ranks:
        ddp_history, ddp_params = o["fit"]
        assert len(ddp_history) == len(history) == 3
        for a, b in zip(ddp_history, history):
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-9)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-9)
        for p, q in zip(ddp_params, params):
            assert torch.allclose(p, q, rtol=0, atol=1e-8), float((p - q).abs().max())
    assert torch.load(tmp / "full.pt", weights_only=False)["epoch"] == 2  # rank 0 wrote it
    assert not list(Path(tmp).glob(".*"))  # no temporaries left by a second writer
    assert len(torch.load(tmp / "partial.pt", weights_only=False)["history"]) == 1
    resumed, resumed_params = _fit(str(tmp / "partial.pt"))  # one process takes over the 2-rank run
    assert [r["train_loss"] for r in resumed] == pytest.approx([r["train_loss"] for r in history], rel=1e-9)
    for p, q in zip(resumed_params, params):
        assert torch.allclose(p, q, rtol=0, atol=1e-8), float((p - q).abs().max())
