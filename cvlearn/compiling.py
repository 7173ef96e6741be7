"""``torch.compile`` with a way back: one wrapper for every place that compiles a model call.

Inductor needs a working C++ compiler and raises its backend errors at the first call, not at ``torch.compile``;
the wrapper then logs why and stays with the eager call, so a machine without a compiler is slower, not broken.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

logger = logging.getLogger(__name__)


class CompiledOrEager:
    """Calls ``torch.compile(fn, **options)``; if that fails, warns once (naming ``what``) and calls ``fn``.

    Parameters
    ----------
    fn : callable
        The eager function or module to compile.
    what : str
        Name shown in the warning (e.g. ``"VAMPNet training step"``).
    **options
        Passed to ``torch.compile`` (``mode``, ``dynamic``, ...).
    """

    def __init__(self, fn: Callable, what: str, **options):
        self.eager = fn
        self.what = what
        self.fn = torch.compile(fn, **options)

    def __call__(self, *args):
        try:
            return self.fn(*args)
        except Exception as err:  # inductor raises backend errors (no compiler, ...) at the first call
            if self.fn is self.eager:
                raise
            logger.warning("torch.compile of %s failed (%s: %s); running it eagerly", self.what, type(err).__name__, err)
            self.fn = self.eager
            return self.eager(*args)
