"""Process-group helpers: no-ops in one process; real 2-rank gloo groups for the collectives and their gradients."""

import pytest
import torch

from cvlearn import distributed
from cvlearn.errors import ConfigError


@pytest.mark.parametrize("sizes", [None, [5.0, 1.0, 1.0, 1.0, 1.0, 3.0, 2.0]])
def test_shard_indices_cover_every_item_once_and_balance(sizes):
    shards = [distributed.shard_indices(7, r, 3, sizes) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert shards == [distributed.shard_indices(7, r, 3, sizes) for r in range(3)]  # deterministic
    if sizes is None:
        assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    else:  # largest first to the least-loaded rank: loads 5, 5, 4 instead of round robin's 7, 4, 3
        assert sorted(sum(sizes[i] for i in s) for s in shards) == [4.0, 5.0, 5.0]
    assert distributed.shard_indices(2, 2, 3) == []  # more ranks than items: some ranks idle
    with pytest.raises(ValueError, match="rank, world"):
        distributed.shard_indices(3, 3, 3)
    with pytest.raises(ValueError, match="sizes"):
        distributed.shard_indices(3, 0, 2, [1.0])


def test_single_process_helpers_are_no_ops(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.init_from_env() is False and not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_rank0()) == (0, 1, True)
    x = torch.randn(3, requires_grad=True)
    assert distributed.all_reduce_sum(x) is x
    assert distributed.broadcast_object({"a": 1}) == {"a": 1} and distributed.all_gather_object(2) == [2]
    assert distributed.on_rank0(lambda: 7) == 7
    module = torch.nn.Linear(2, 2)
    assert distributed.wrap_ddp(module, "cpu") is module
    distributed.barrier()


def test_init_from_env_names_missing_variables(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        distributed.init_from_env()


def _collectives(values: list[float]):
    """Per rank: its value x_r; the sum's value and d(sum^2)/dx_r through the autograd-aware all-reduce."""
    r = distributed.rank()
    x = torch.tensor([values[r]], dtype=torch.float64, requires_grad=True)
    total = distributed.all_reduce_sum(x)
    (total ** 2).sum().backward()
    written = distributed.on_rank0(lambda: f"from rank {distributed.rank()}")
    return {"rank": r, "world": distributed.world_size(), "total": float(total), "grad": float(x.grad),
            "rank0_result": written, "gathered": distributed.all_gather_object(r * 10)}


def test_all_reduce_sum_and_its_gradient_across_two_processes():
    out = distributed.spawn(_collectives, 2, [1.5, 2.0])
    assert [o["rank"] for o in out] == [0, 1] and all(o["world"] == 2 for o in out)
    assert all(o["total"] == 3.5 for o in out)
    # Every rank holds the same loss L = S^2; backward sums the ranks' dL/dS = 2S, so each gets 2 * 2S = 14:
    # world_size times the single-process gradient, which DDP's average divides back out.
    assert all(o["grad"] == 2 * 2 * 3.5 for o in out)
    assert all(o["rank0_result"] == "from rank 0" for o in out)
    assert all(o["gathered"] == [0, 10] for o in out)
