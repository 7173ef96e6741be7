"""The one way to run a network over many frames for its outputs: no autograd, eval mode, bounded memory.

Training code (VAMPNet validation, head-scaler fits, warm starts, frozen-featurizer embeddings, held-out scores)
all evaluate a module over thousands of frames; doing it in chunks without autograd keeps memory flat, and
switching to eval mode (dropout off, running normalisation statistics) gives the numbers the exported model gives.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block and restore each one's own training flag afterwards.

    Why: evaluation inside training (dropout off) must not leave a module in the wrong mode, even on error.

    Parameters
    ----------
    *modules : torch.nn.Module
        Modules switched to eval for the duration of the ``with`` block.
    """
    flags = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, flag in zip(modules, flags):
            m.train(flag)


@torch.no_grad()
def evaluate_chunked(fn: Callable[[Tensor], Tensor], inputs: Tensor, *, chunk_size: int = 1024,
                     modules: tuple = (), device: str | torch.device | None = None) -> Tensor:
    """``fn`` over ``inputs`` in chunks along the first axis, without autograd, concatenated.

    Parameters
    ----------
    fn : callable
        Maps a chunk ``[n, ...]`` to outputs ``[n, ...]`` (e.g. a lobe: positions nm ``[n, n_atoms, 3]`` → CVs
        ``[n, n_cvs]``).
    inputs : Tensor [n_frames, ...]
        Frames to evaluate.
    chunk_size : int
        Frames per call of ``fn``; bounds memory, not the result.
    modules : tuple of torch.nn.Module
        Put in eval mode during the evaluation (their training flags are restored afterwards); empty leaves
        every module as it is.
    device : str or torch.device, optional
        Move each chunk here before ``fn``.

    Returns
    -------
    Tensor [n_frames, ...]
        The outputs, detached.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an integer >= 1, found {chunk_size!r}")
    with eval_mode(*modules):
        chunks = (inputs[i:i + chunk_size] for i in range(0, len(inputs), chunk_size))
        return torch.cat([fn(c if device is None else c.to(device)) for c in chunks])
