"""``torch.compile`` with a way back: one wrapper for every place that compiles a model call.

Inductor needs a working C++ compiler and raises its backend errors at the first call, not at ``torch.compile``;
the wrapper then logs why and stays with the eager call, so a machine without a compiler is slower, not broken.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

logger = logging.getLogger(__name__)


RELATIVE_TOLERANCE = 1e-4  # of each output's largest magnitude; float32 compiled/eager differ by ~1e-6 of it


def disagreement(got, want) -> float | None:
    """Largest ``|got - want|`` relative to ``max |want|`` over matching outputs (tensors or tuples of them), or
    None when they agree within :data:`RELATIVE_TOLERANCE`."""
    got, want = torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)
    if len(got) != len(want) or any(g.shape != w.shape for g, w in zip(got, want)):
        return float("inf")  # checked first: subtracting mismatched shapes would broadcast or raise
    worst = 0.0
    for g, w in zip(got, want):
        g, w = g.detach().double(), w.detach().double()
        scale = float(w.abs().max()) if w.numel() else 0.0
        error = float((g - w).abs().max()) if w.numel() else 0.0
        if not error <= RELATIVE_TOLERANCE * scale + 1e-12:  # NaN fails too
            worst = max(worst, error / scale if scale > 0 and error == error else float("inf"))
    return worst or None


class CompiledOrEager:
    """Calls ``torch.compile(fn, **options)``; if that fails, warns once (naming ``what``) and calls ``fn``.

    Parameters
    ----------
    fn : callable
        The eager function or module to compile.
    what : str
        Name shown in the warning (e.g. ``"VAMPNet training step"``).
    check : bool
        Compare the first compiled call with ``fn`` on the same arguments and run ``fn`` from then on if they
        disagree (:func:`disagreement`). Why: inductor has miscompiled Jacobians here (torch 2.9.1: all-zero rows
        through a SiLU with trainable parameters; wrong rows of a dense ET variant with ≤ 4 attention heads), and a
        wrong bias force is silent. Costs one eager call.
    **options
        Passed to ``torch.compile`` (``mode``, ``dynamic``, ...).
    """

    def __init__(self, fn: Callable, what: str, check: bool = False, **options):
        self.eager = fn
        self.what = what
        self.fn = torch.compile(fn, **options)
        self._check = check

    def __call__(self, *args):
        try:
            out = self.fn(*args)
        except Exception as err:  # inductor raises backend errors (no compiler, ...) at the first call
            if self.fn is self.eager:
                raise
            logger.warning("torch.compile of %s failed (%s: %s); running it eagerly", self.what, type(err).__name__, err)
            self.fn = self.eager
            return self.eager(*args)
        if self._check:
            self._check = False
            want = self.eager(*args)
            error = disagreement(out, want)
            if error is not None:
                logger.warning("torch.compile of %s disagrees with the eager call (relative error %.2g); running "
                               "it eagerly", self.what, error)
                self.fn = self.eager
                return want
        return out


# Inductor settings for the ahead-of-time build (``AheadOfTime``), each measured on the ala2 sampling CVs (value +
# Jacobian row per call, 1 thread; bias_speed --pairs for the MD step):
# - ``realize_opcount_threshold`` 6 (default 30): inductor inlines a pointwise chain of up to 30 ops into each of
#   its consumers, which in a dense pair graph recomputed, e.g., each pair's cosine cutoff once per attention head,
#   in scalar code; stored once past 6 ops: GNN CV 0.21 -> 0.17 ms (4, 6 and 8 alike, 1-2 and 12-16 slower);
# - ``memory_planning``: the call's intermediate buffers come from one allocation instead of one each, which cost
#   more inside an MD run (Python and OpenMM allocate in between) than in a timing loop: GNN CV 0.195 -> 0.171 ms
#   per call inside the MD step, its distance twin 0.041 -> 0.037;
# - matrix products of <= 10 rows as generated loops (``decompose_mm_pass``; the default decomposes only 1-row
#   ones), which fuse with their neighbours instead of a library call each (the MLP head's matrix-vector products
#   and a 10-atom molecule's projections): GNN CV 0.160 -> 0.145 ms (1-row ones only: 0.149), distance CV 0.024
#   -> 0.016 ms.
# With the dense ET's per-pair filters (``cvlearn.nn.featurizers.dense_et``), side by side on the same loaded
# machine: ala2 GNN CV 0.362 -> 0.288 ms per MD step, its distance twin 0.158 -> 0.136; WLALL's 48-atom GNN CV
# 8.6 -> 3.1 ms per call (value + 2 Jacobian rows).
AOT_INDUCTOR_OPTIONS = {"realize_opcount_threshold": 6, "memory_planning": True,
                        "post_grad_fusion_options": {"decompose_mm_pass": {"cpu_max_first_dimension_decomposition": 10}}}


class AheadOfTime:
    """``fn`` compiled ahead of time at its first call's shapes, run from C++ (AOTInductor); else :class:`CompiledOrEager`.

    Why: for a small model the per-call cost of ``torch.compile`` is its Python side, not its kernels: guards, the
    Python wrapper that launches each of ~50 kernels and allocates their buffers (ala2 GNN CV, forward + Jacobian
    row: 0.48-0.50 ms per call, of which kernels ~0.3). AOTInductor builds the same kernels and launches them from
    C++, with no guards: 0.32 ms for that CV and 0.04 vs 0.10 ms for the distance CV (``bias_speed --pairs`` for
    the MD step). Inductor's ``cpp_wrapper`` would do the same inside ``torch.compile`` but frees references to
    ``None`` it does not own under torch 2.9.1 (``openmm_plugin.cv_evaluation``); the AOT runner does not (measured:
    no loss of ``None`` references over 10,000 calls).

    The function is traced once with real inputs (``make_fx``: every op, forward and backward, including
    ``torch.func`` transforms), exported and compiled (~20-30 s on 2 cores). The trace fixes shapes, dtypes and
    the device of the first call's arguments and any Python-level control flow; use it for functions that
    ``torch.compile(fullgraph=True, dynamic=False)`` accepts, called with one set of shapes (a CV on its atoms).
    The first call's result is compared with the eager call's (:func:`disagreement`). Any failure (no C++
    compiler, an op the exporter refuses, a disagreement) logs why and falls back to ``torch.compile`` (checked the
    same way), then to eager.

    Parameters
    ----------
    fn : callable
        Takes and returns tensors (or tuples of them).
    what : str
        Name shown in a warning.
    **options
        Passed to the ``torch.compile`` fallback.
    """

    def __init__(self, fn: Callable, what: str, **options):
        self.eager = fn
        self.what = what
        self._options = options
        self.fn: Callable | None = None
        self.ahead_of_time = False

    def __call__(self, *args):
        if self.fn is None:
            self.fn = self._build(args)
        return self.fn(*args)

    def _build(self, args: tuple) -> Callable:
        import tempfile
        from pathlib import Path

        from torch.fx.experimental.proxy_tensor import make_fx

        try:
            graph = make_fx(self.eager, tracing_mode="real")(*args)
            program = torch.export.export(graph, tuple(args), strict=False)
            with tempfile.TemporaryDirectory(prefix="cvlearn_aoti_") as directory, \
                    torch._inductor.config.patch(AOT_INDUCTOR_OPTIONS):
                package = torch._inductor.aoti_compile_and_package(program,
                                                                   package_path=str(Path(directory) / "fn.pt2"))
                runner = torch._inductor.aoti_load_package(package)
            error = disagreement(runner(*args), self.eager(*args))
            if error is not None:
                raise ArithmeticError(f"it disagrees with the eager call (relative error {error:.2g})")
            self.ahead_of_time = True
            return runner
        except Exception as err:  # a backend or exporter error, or a miscompile: slower, not broken
            logger.warning("ahead-of-time compile of %s failed (%s: %s); using torch.compile", self.what,
                           type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            return CompiledOrEager(self.eager, self.what, check=True, **self._options)
