"""Data-parallel training on structures (denoising pre-training, energy + force fine-tuning) under ``torchrun``.

The scheme is VAMPNet's: every rank holds all structures, draws the same global batches (same seeds, the same
``bounded_batches`` grouping as one process) and takes one contiguous slice of each, balanced by atoms
(:func:`rank_share`). The model runs inside ``DistributedDataParallel`` (:func:`cvlearn.distributed.wrap_ddp`).

Loss and gradient equal those of one process on the global batch. Each rank's loss is its slice's sum of the
per-atom (pre-training) or per-structure (fine-tuning) terms divided by the GLOBAL count, and
:func:`cvlearn.distributed.all_reduce_sum` (an autograd-aware all-reduce) adds the ranks' parts: every rank then
holds the global batch's loss (the same finite check, the same logged number, no rank raising alone), and backward of
that collective gives each rank ``world_size`` times its own share of the gradient, which DDP's gradient average
divides back out. The Trainer clips the gradient after backward, so it clips the averaged (global) gradient, as one
process would.

Why DDP and not a hand-made gradient all-reduce: DDP broadcasts rank 0's weights at construction, buckets the
gradients and overlaps their all-reduce with backward (what matters on GPUs), and needs no hook between the Trainer's
backward and its gradient clip. Two things make it work here. (1) DDP hooks ``forward`` only, so the whole
computation of a step is made the wrapped module's ``forward`` (:class:`ForwardAs`: the denoiser's backbone + head,
the energy model's ``energy_and_forces``). Forces are ``autograd.grad`` with respect to the positions only: that
never runs the parameters' gradient accumulators, where DDP's hooks sit, so the force loss's double backward reaches
DDP once, in ``loss.backward()``. (2) DDP needs every rank in every backward: a rank whose slice of a global batch
is empty (fewer structures than ranks) runs the batch's first structure with weight 0 (:attr:`Share.weight`), which
adds exact zeros to the gradient.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

import torch

from cvlearn import distributed

__all__ = ["ForwardAs", "Share", "rank_share", "sum_over_ranks", "use_data_parallel"]


def use_data_parallel(flag: bool | None) -> bool:
    """Whether to train data-parallel: ``flag`` None means whenever a group of more than one rank is initialised."""
    return distributed.is_distributed() if flag is None else bool(flag) and distributed.is_distributed()


@dataclass(frozen=True)
class Share:
    """One rank's part of a global batch of structures.

    Attributes
    ----------
    structures : list of Structure
        This rank's structures (never empty: an idle rank gets the batch's first structure with ``weight`` 0).
    atom_start, atom_stop : int
        Its atoms' rows in the global batch's collated order (``collate(global_batch).pos[atom_start:atom_stop]``).
    weight : float
        1.0, or 0.0 for an idle rank's stand-in (its loss terms are multiplied by it).
    n_structures, n_atoms : int
        The global batch's counts (the loss normalisers).
    """

    structures: list
    atom_start: int
    atom_stop: int
    weight: float
    n_structures: int
    n_atoms: int

    @property
    def n_atoms_here(self) -> int:
        """Atoms of this rank's slice that count (0 for an idle rank)."""
        return (self.atom_stop - self.atom_start) if self.weight else 0


def rank_share(group: Sequence, rank: int, world: int) -> Share:
    """Rank ``rank``'s contiguous slice of the global batch ``group``, balanced by atoms; the same on every rank.

    Boundary ``r`` sits where the cumulative atom count comes closest to ``r / world`` of the batch's atoms (on a
    tie the lower rank takes the structure), so the slices cover ``group`` exactly once, in order. With ``world`` 1
    the share is the whole batch.

    Parameters
    ----------
    group : sequence of Structure
        One global batch (e.g. from ``bounded_batches``), at least one structure.
    rank, world : int
        This rank and the number of ranks.

    Returns
    -------
    Share
    """
    group = list(group)
    if not group:
        raise ValueError("group: expected at least one structure, found none")
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank, world: expected 0 <= rank < world, found rank={rank}, world={world}")
    cum = [0]
    for s in group:
        cum.append(cum[-1] + int(s.n_atoms))
    total = cum[-1]

    def boundary(r: int) -> int:
        target = r * total / world
        i = bisect.bisect_left(cum, target)
        if i > 0 and target - cum[i - 1] < cum[i] - target:
            i -= 1
        return i

    bounds = [0] + [boundary(r) for r in range(1, world)] + [len(group)]
    for r in range(1, world + 1):  # monotone even where structures are much larger than a rank's target
        bounds[r] = max(bounds[r], bounds[r - 1])
    lo, hi = bounds[rank], bounds[rank + 1]
    if lo == hi:  # idle: a stand-in forward keeps DDP's backward collective in step, with weight 0
        return Share(group[:1], 0, cum[1], 0.0, len(group), total)
    return Share(group[lo:hi], cum[lo], cum[hi], 1.0, len(group), total)


def sum_over_ranks(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise float64 sum of ``values`` over ranks in one collective (``values`` themselves without a group).

    ``device``: where the collective runs (the rank's CUDA device under NCCL).
    """
    box = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    return distributed.all_reduce_sum(box).cpu().tolist()


class ForwardAs(torch.nn.Module):
    """``forward(*args)`` = ``module.<method>(*args)``, or ``head(*module(*args))`` when a ``head`` is given.

    Why: DDP synchronises only what runs inside the wrapped module's ``forward``; this makes a whole training
    computation (a backbone plus its denoising head, or an energy model's ``energy_and_forces``) that forward.

    Parameters
    ----------
    module : torch.nn.Module
    method : str
        Name of the method of ``module`` called (``"forward"`` for the module itself).
    head : torch.nn.Module, optional
        Applied to the unpacked outputs of ``module``.
    """

    def __init__(self, module: torch.nn.Module, method: str = "forward", head: torch.nn.Module | None = None):
        super().__init__()
        self.module, self.method, self.head = module, method, head

    def forward(self, *args):
        out = getattr(self.module, self.method)(*args)
        return out if self.head is None else self.head(*out)
