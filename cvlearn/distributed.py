"""Process-group helpers for ``torchrun``: one code path that is a no-op in a single process.

``torchrun --nproc_per_node N --no-python cvlearn learn ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; :func:`init_from_env` joins them into a group (gloo on
CPU, NCCL when CUDA is available). Everything else here works with or without a group, so library code calls
it unconditionally: without one, :func:`rank` is 0, :func:`world_size` 1, :func:`barrier` does nothing and
:func:`all_reduce_sum` returns its input.

What is sharded where: the embedding store shards trajectory files across ranks (whole files, see
:func:`shard_indices`); VAMPNet gives each rank a slice of every global batch and all-reduces the covariance
sums (see :func:`cvlearn.estimators.scores.covariances`), so the loss is that of the global batch.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import tempfile
from typing import Callable, Sequence

import torch
import torch.distributed as dist

from cvlearn.errors import ConfigError

__all__ = [
    "all_gather_object", "all_reduce_sum", "barrier", "broadcast_object", "check_device", "default_device", "destroy",
    "init_from_env", "is_distributed", "is_rank0", "local_rank", "no_tf32", "on_rank0", "rank", "rank_device",
    "shard_indices", "spawn", "wrap_ddp", "world_size",
]

ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the group (0 without a group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK`` set by torchrun; 0 otherwise): picks the GPU."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_rank0() -> bool:
    """Whether this process writes shared outputs (manifests, checkpoints, results)."""
    return rank() == 0


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else CPU: one device per rank."""
    return torch.device(f"cuda:{local_rank()}") if torch.cuda.is_available() else torch.device("cpu")


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check_device(device, key: str = "device") -> torch.device:
    """``device`` (``cpu``, ``cuda`` or ``cuda:N``, or a ``torch.device``) checked before any compute.

    The one validation of every ``device`` setting (stage configs, :class:`openmm_plugin.cv_evaluation.CVEvaluator`):
    a malformed string, CUDA on a machine where torch sees none, or a GPU index it does not have raise one line.

    Parameters
    ----------
    device : str or torch.device
    key : str
        The setting's name in the message.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        Naming ``key``: what was expected and what was found.
    """
    text = str(device) if isinstance(device, torch.device) else device
    if not isinstance(text, str) or not _DEVICE.fullmatch(text):
        raise ConfigError(f"expected 'cpu', 'cuda' or 'cuda:N', found {device!r}", key=key)
    found = torch.device(text)
    if found.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"expected 'cpu' or a CUDA device this machine has, found {text!r} but "
                              "torch.cuda.is_available() is False on this machine", key=key)
        n = torch.cuda.device_count()
        if found.index is not None and found.index >= n:
            raise ConfigError(f"expected a CUDA index below {n} (torch sees {n} CUDA device(s)), found {text!r}",
                              key=key)
    return found


def rank_device(device, key: str = "device") -> torch.device:
    """The device this process computes on: ``device`` checked; a bare ``cuda`` is this rank's GPU.

    Under torchrun a bare ``cuda`` becomes :func:`default_device` (``cuda:LOCAL_RANK``), so one config drives every
    rank; an explicit ``cuda:N`` or ``cpu`` is kept.
    """
    found = check_device(device, key)
    return default_device() if found.type == "cuda" and found.index is None else found


@contextlib.contextmanager
def no_tf32(device: torch.device):
    """TF32 matmuls (Ampere+) keep ~10 mantissa bits: covariance inverses, VAMP scores and CV forces need float32/64.

    Context manager: turns TF32 off for CUDA matmuls and cuDNN inside the block and restores the old flags.

    Parameters
    ----------
    device : torch.device or str
        Device of the computation; a no-op unless it is CUDA.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def init_from_env(backend: str | None = None, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by torchrun's environment; a no-op in a plain single process.

    Parameters
    ----------
    backend : str or None
        ``"gloo"`` or ``"nccl"``; None picks NCCL when CUDA is available, else gloo.
    timeout_s : float
        Collective timeout in seconds (a rank that dies makes the others fail after it, not hang forever).

    Returns
    -------
    bool
        True when this process is now one rank of a group of more than one.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    n = int(os.environ.get("WORLD_SIZE", 1))
    if n <= 1:
        return False
    missing = [k for k in ENV_VARS if k not in os.environ]
    if missing:
        raise ConfigError(f"expected all of {list(ENV_VARS)} with WORLD_SIZE={n}, found {missing} unset: launch "
                          "with torchrun", key="environment")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def destroy() -> None:
    """Leave the process group (if any); call once at the end of a distributed run."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a group)."""
    if is_distributed():
        dist.barrier()


def shard_indices(n_items: int, rank: int, world: int, sizes: Sequence[float] | None = None) -> list[int]:
    """Items (e.g. trajectory files, never split) that ``rank`` of ``world`` handles; the same on every rank.

    Without ``sizes``: round robin (item i goes to rank i mod world). With ``sizes`` (e.g. frames or bytes per
    file): largest first, each to the least-loaded rank (ties to the lower rank), which balances uneven files.
    Either way every item belongs to exactly one rank, and the result depends only on the arguments.

    Parameters
    ----------
    n_items : int
    rank, world : int
        This rank and the number of ranks (``0 <= rank < world``).
    sizes : sequence of float, optional
        ``[n_items]`` cost of each item.

    Returns
    -------
    list of int
        Indices of this rank's items, ascending.
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank, world: expected 0 <= rank < world, found rank={rank}, world={world}")
    if sizes is None:
        return list(range(rank, n_items, world))
    if len(sizes) != n_items:
        raise ValueError(f"sizes: expected {n_items} item sizes, found {len(sizes)}")
    load, owner = [0.0] * world, [0] * n_items
    for i in sorted(range(n_items), key=lambda i: (-float(sizes[i]), i)):
        owner[i] = min(range(world), key=lambda r: (load[r], r))
        load[owner[i]] += float(sizes[i])
    return [i for i in range(n_items) if owner[i] == rank]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks, differentiable (returns ``tensor`` itself without a group).

    Backward all-reduces the incoming gradients as well (``torch.distributed.nn.functional.all_reduce``), so
    a loss built from the sums and evaluated identically on every rank gives each rank ``world`` times its
    share of the gradient; DDP's gradient average then yields exactly the single-process gradient.

    Parameters
    ----------
    tensor : Tensor
        Any shape; the same shape and dtype on every rank.

    Returns
    -------
    Tensor
        Same shape: the element-wise sum over ranks.
    """
    if not is_distributed():
        return tensor
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (picklable objects; identity without a group)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` without a group)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def on_rank0(fn: Callable, *args, **kwargs):
    """Run ``fn`` on rank 0 only (e.g. write a shared file), wait for it, and return its result on every rank."""
    result = fn(*args, **kwargs) if is_rank0() else None
    return broadcast_object(result)  # also a barrier: nobody reads the file before it exists


def wrap_ddp(module: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` under a group, else ``module`` itself.

    DDP broadcasts rank 0's parameters and buffers at construction (every rank starts from the same model) and
    averages gradients over ranks in backward, overlapped with it. ``broadcast_buffers=False``: buffers (e.g.
    normalisation statistics) are not re-broadcast at every forward; use SyncBatchNorm where batch statistics
    must span the global batch. ``find_unused_parameters=True``: some lobes hold trainable parameters that the
    output never touches (PyG's ViSNet leaves 7 unused in end-to-end training), which plain DDP rejects; the
    price is one walk over the autograd graph per step, small next to the step itself.

    Parameters
    ----------
    module : torch.nn.Module
        Already on ``device``.
    device : torch.device or str
        This rank's device.

    Returns
    -------
    torch.nn.Module
    """
    if not is_distributed() or not any(p.requires_grad for p in module.parameters()):
        return module
    device = torch.device(device)
    ids = [device.index if device.index is not None else local_rank()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                                     find_unused_parameters=True)


def _spawned(index: int, fn: Callable, n_procs: int, port: int, backend: str, threads: int, out: str, args) -> None:
    os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=str(n_procs), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    init_from_env(backend)
    try:
        result = fn(*args)
        barrier()
    finally:
        destroy()
    torch.save(result, os.path.join(out, f"rank{index}.pt"))


def spawn(fn: Callable, n_procs: int, *args, backend: str = "gloo", threads: int = 1) -> list:
    """Run ``fn(*args)`` in ``n_procs`` fresh processes joined in a group, as torchrun would; return their results.

    For tests and benchmarks on one machine: a free local port, torchrun's environment variables, ``threads``
    intra-op threads per process. ``fn`` must be importable (module level) and its result picklable.

    Parameters
    ----------
    fn : callable
        Runs on every rank, inside the group.
    n_procs : int
        Number of ranks.
    *args
        Passed to ``fn`` (pickled).
    backend : str
        ``"gloo"`` (CPU) or ``"nccl"``.
    threads : int
        ``torch.set_num_threads`` in each process.

    Returns
    -------
    list
        ``fn``'s result on each rank, in rank order.
    """
    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as out:
        mp.start_processes(_spawned, args=(fn, n_procs, port, backend, threads, out, args), nprocs=n_procs,
                           join=True, start_method="spawn")
        return [torch.load(os.path.join(out, f"rank{r}.pt"), weights_only=False) for r in range(n_procs)]
