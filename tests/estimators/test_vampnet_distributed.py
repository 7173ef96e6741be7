"""Data-parallel VAMP training on 2 real gloo processes equals one process on the same global batches."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cvlearn import distributed
from cvlearn.estimators import VAMPNet, vamp_score

D_IN, D_OUT = 4, 3


class _Lobe(torch.nn.Module):
    """An MLP plus a trainable parameter its output never uses (as PyG's ViSNet has): DDP must cope."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(D_IN, 16), torch.nn.Tanh(), torch.nn.Linear(16, D_OUT))
        self.spare = torch.nn.Linear(2, 2)

    def forward(self, x):
        return self.net(x)


def _lobe() -> torch.nn.Module:
    torch.manual_seed(3)
    return _Lobe().double()


def _grads(module) -> list:
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def _trajectories() -> list[torch.Tensor]:
    """Three uneven trajectories of a slow 2-state switch hidden among fast noise (4 features)."""
    rng = np.random.default_rng(0)
    out = []
    for n in (150, 110, 90):
        state = np.cumsum(rng.random(n) < 0.05) % 2
        x = rng.normal(size=(n, D_IN)) * 0.3
        x[:, 0] += 2.0 * state - 1.0
        x[:, 1] += 0.5 * x[:, 0] + np.sin(np.arange(n) / 3.0)
        out.append(torch.from_numpy(x))
    return out


def _batch(weighted: bool):
    g = torch.Generator().manual_seed(1)
    x0, xt = (torch.randn(37, D_IN, generator=g, dtype=torch.float64) for _ in range(2))
    xt = 0.8 * x0 + 0.6 * xt + 3.0  # correlated, and far from zero mean (the means must be global)
    w = torch.rand(37, generator=g, dtype=torch.float64) + 0.1 if weighted else None
    return x0, xt, w


def _loss_and_grads(lobe, x0, xt, w, reduce=None):
    y0, yt = lobe(x0), lobe(xt)
    loss = -vamp_score(y0, yt, r=2, weights=w, reduce=reduce)
    loss.backward()
    return float(loss.detach()), _grads(lobe)


def _fit(checkpoint: str | None):
    lobe = _lobe()
    net = VAMPNet(lobe, lagtime=2, learning_rate=5e-3, batch_size=64, max_epochs=4, patience=2, seed=7,
                  progress=False, lr_schedule="cosine")
    train, val = _trajectories()[:2], _trajectories()[2:]
    net.fit(train, val, checkpoint_path=checkpoint)
    return net.history, [p.detach().clone() for p in lobe.parameters()]


def _worker(checkpoint: str):
    """On each rank: the DDP loss/gradients of its slice of a global batch, then a short VAMPNet fit."""
    r, n = distributed.rank(), distributed.world_size()
    out = {}
    for weighted in (False, True):
        x0, xt, w = _batch(weighted)
        mine = torch.tensor_split(torch.arange(len(x0)), n)[r]
        model = distributed.wrap_ddp(_lobe(), "cpu")
        y0, yt = model(x0[mine]), model(xt[mine])
        loss = -vamp_score(y0, yt, r=2, weights=None if w is None else w[mine], reduce=distributed.all_reduce_sum)
        loss.backward()
        local = float(vamp_score(y0.detach(), yt.detach(), r=2, weights=None if w is None else w[mine]))
        out[weighted] = (float(loss.detach()), _grads(model.module), local)
    out["fit"] = _fit(checkpoint)
    out["ddp"] = isinstance(model, torch.nn.parallel.DistributedDataParallel)
    return out


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("ddp") / "vampnet.pt"
    return distributed.spawn(_worker, 2, str(checkpoint)), checkpoint


@pytest.mark.parametrize("weighted", [False, True])
def test_ddp_vamp2_loss_and_gradients_equal_one_process(two_ranks, weighted):
    ranks, _ = two_ranks
    assert all(o["ddp"] for o in ranks)
    x0, xt, w = _batch(weighted)
    loss, grads = _loss_and_grads(_lobe(), x0, xt, w)
    for o in ranks:
        ddp_loss, ddp_grads, _ = o[weighted]
        assert ddp_loss == pytest.approx(loss, abs=1e-10)
        assert [g is None for g in ddp_grads] == [h is None for h in grads] == [False] * 4 + [True] * 2
        for g, h in zip(ddp_grads[:4], grads[:4]):
            assert torch.allclose(g, h, rtol=0, atol=1e-6), float((g - h).abs().max())
    # The union's score is not the mean of the per-rank scores: that is why the sums are all-reduced.
    per_rank = [o[weighted][2] for o in ranks]
    assert abs(np.mean(per_rank) - (-loss)) > 1e-3


def test_ddp_vampnet_fit_equals_one_process_fit(two_ranks, tmp_path):
    ranks, checkpoint = two_ranks
    history, params = _fit(str(tmp_path / "single.pt"))
    for o in ranks:
        ddp_history, ddp_params = o["fit"]
        assert len(ddp_history) == len(history) == 4
        for a, b in zip(ddp_history, history):  # same scores, so the same early-stopping decisions
            assert a["train_vamp2"] == pytest.approx(b["train_vamp2"], abs=1e-8)
            assert a["val_vamp2"] == pytest.approx(b["val_vamp2"], abs=1e-8)
        for p, q in zip(ddp_params, params):
            assert torch.allclose(p, q, rtol=0, atol=1e-6), float((p - q).abs().max())
    rows = [[{k: v for k, v in row.items() if k != "seconds"} for row in o["fit"][0]] for o in ranks]
    assert rows[0] == rows[1]  # identical numbers on both ranks (broadcast from rank 0); timings are per rank
    assert history[-1]["val_vamp2"] > history[0]["val_vamp2"]  # it really trained
    state = torch.load(checkpoint, weights_only=False)  # written by rank 0, resumable by a single process
    assert state["epoch"] == 3 and len(state["history"]) == 4
    assert not list(Path(checkpoint).parent.glob(".*"))  # no temporaries left by a second writer
