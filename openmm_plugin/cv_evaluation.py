"""One model call per step for any CV dimension: values, Jacobian, and the bias force through one backward.

The cheap way to bias a d-dimensional learned CV is the chain rule in the right order: evaluate s(x)
once, get dV/ds from the (cheap, numpy) bias, then back-propagate the scalar (dV/ds · s) once:
∂V/∂x = Σ_i dV/ds_i ∂s_i/∂x. That costs one forward + one backward whatever d is, where a
BiasVariable per component (``app.Metadynamics``) costs d forwards and d backwards. The full Jacobian
(for analysis) uses batched vector-Jacobian products (``is_grads_batched``) or d backward passes.

``compile=True`` compiles the CV's eager twin (``cvlearn.export.load_eager_cv``) with inductor, which fuses the
per-step forward and backward into a few C++ kernels, where TorchScript dispatches ~1,100 tiny ops (ala2, 2-layer
dense ET: 0.70 vs 2.01 ms per forward + backward, measured in bias_speed). On the CPU the Jacobian graph below is
compiled ahead of time (:class:`cvlearn.compiling.AheadOfTime`: AOTInductor, kernels launched from C++, no guards:
0.32 vs 0.50 ms per call through ``torch.compile`` for the ala2 sampling GNN CV, 0.04 vs 0.10 for its distance
twin; per MD step 0.60 and 0.30 ms, ``bias_speed --pairs``; with the settings of
:data:`cvlearn.compiling.AOT_INDUCTOR_OPTIONS` and the dense ET's per-pair filters, 0.29 and 0.14 ms); on a GPU it
goes through ``torch.compile``
(``compile="aot"`` asks for AOTInductor there too: on the H200 its process ended in the first compile with no error,
``benchmarks/results/gpu_rows_program.md``). The first call compiles (~20-30 s on 2 cores) and checks the
compiled result against the eager CV: a compiler error or a disagreement says why and falls back (AOT →
torch.compile → eager).
Inductor's ``cpp_wrapper`` (kernels launched from C++) is not used: it cut the GNN CV's forward + backward by ~20 %
(0.98 vs 1.23 ms) but not the MD step (bias_speed --pairs: GNN/distance 2.31x, as before), and under torch 2.9.1 on
Python 3.11 each call releases four references to ``None`` that it does not own, so a long run would free ``None``
(measured: -4,002 over 1,000 calls; the benchmark process died at exit with "none_dealloc").

A periodic CV (``cv.periodic``, exported with ``periodic=True``) takes the box vectors ``box_nm [3, 3]`` with every
call and makes its molecule whole itself; a non-periodic CV ignores a box, so callers may always pass it.

The compiled route goes further: one compiled graph returns s and the Jacobian rows of the components the bias
acts on (``bias.acts_on()``; ``torch.func.jacrev``), and the numpy bias then gives F = -Σ_i dV/ds_i ∂s_i/∂x. One
compiled call instead of a compiled forward, a host round trip and a compiled backward through the autograd engine:
on the ala2 sampling CVs (OPES on one component of two) 0.80-0.98 vs 1.19-1.44 ms per call for the GNN CV and
0.15-0.22 vs 0.38-0.52 ms for the distance CV; per MD step (bias_speed --pairs, idle 2 cores, two runs each) 1.20 and
1.04 vs 1.39 and 1.46 ms, and 0.46 and 0.44 vs 0.65 and 0.60 ms.

``device="cuda"`` keeps a copy of the CV on the GPU and crosses the bus once each way per step: positions and box go
over as one tensor; s and its Jacobian ds/dx (one forward and one batched backward; compiled: the one graph above)
come back as one tensor, and the numpy bias then gives V and
F = -Σ_i dV/ds_i ∂s_i/∂x on the host. (The TorchScript CPU route back-propagates
dV/ds instead, which needs s on the host first: two round trips, free on the CPU but two syncs on a GPU.) TF32 is off
during evaluation (:func:`cvlearn.distributed.no_tf32`); the CV keeps its own dtype, as on the CPU.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch

from cvlearn.compiling import AheadOfTime, CompiledOrEager
from cvlearn.distributed import check_device, no_tf32


COMPILE_CHOICES = (False, True, "aot", "inductor")  # CVEvaluator's compile, also `compile` in a bias config
COMPILE_DEFAULT = {"cpu": "aot"}  # compile=True's route per device type; others "inductor" (benchmarks/gpu_rows.py)


class CVEvaluator:
    """Runs an exported CV on the CV atoms' positions (nm) and counts its model calls.

    Parameters
    ----------
    cv : torch.nn.Module
        The TorchScript module (``cvlearn.export.load_cv``) or its eager twin (``load_eager_cv``); it must have
        ``selected``, ``atom_indices`` and ``n_cvs``. On another device than its own, the evaluator runs a copy.
    compile : bool or {"aot", "inductor"}
        Compile the CV (needs the eager twin). ``True`` picks the faster route measured for the device: ahead of
        time (``"aot"``, AOTInductor) on the CPU, ``"inductor"`` (``torch.compile``) on a GPU.
    device : str or torch.device
        ``cpu``, ``cuda`` or ``cuda:N`` (:func:`cvlearn.distributed.check_device`).
    single_transfer : bool, optional
        Bias forces from the Jacobian, one copy each way per step (see the module doc); None: on for CUDA only.
    """

    def __init__(self, cv: torch.nn.Module, compile: bool | str = False, device="cpu",
                 single_transfer: bool | None = None):
        for attribute in ("selected", "atom_indices", "n_cvs"):
            if not hasattr(cv, attribute):
                raise ValueError(f"cv: expected an exported CV (cvlearn.export.export_cv) with `{attribute}`, "
                                 f"found {type(cv).__name__} without it")
        if compile not in COMPILE_CHOICES:
            raise ValueError(f"compile: expected False, True, 'aot' or 'inductor', found {compile!r}")
        if compile and isinstance(cv, torch.jit.ScriptModule):
            raise ValueError("compile=True: expected the eager CV (cvlearn.export.load_eager_cv(path)), found a "
                             "TorchScript module, which torch.compile cannot compile")
        self.device = check_device(device)
        self.atom_indices = [int(i) for i in cv.atom_indices.tolist()]
        self.cv = _frozen(_on_device(cv, self.device)) if compile else _on_device(cv, self.device)
        default = COMPILE_DEFAULT.get(self.device.type, "inductor")
        self.compile_mode = (compile if isinstance(compile, str) else default) if compile else None
        self._selected = (CompiledOrEager(self.cv.selected, "the CV", fullgraph=True, dynamic=False) if compile
                          else self.cv.selected)
        self.n_cvs = int(cv.n_cvs)
        self.periodic = bool(getattr(cv, "periodic", False))  # files exported before periodic CVs lack it
        self.single_transfer = self.device.type != "cpu" if single_transfer is None else bool(single_transfer)
        self.acts_on = tuple(range(self.n_cvs))  # rows the warm-up compiles; BiasCallback sets its bias's
        self._jacobians: dict[tuple[int, ...], AheadOfTime | CompiledOrEager] = {}
        self.calls = 0
        self._warm = False

    @property
    def compiled(self) -> bool:
        """Whether the CV runs compiled (:attr:`compile_mode` ``"aot"`` or ``"inductor"``)."""
        return self.compile_mode is not None

    def _precise(self):
        """TF32 off for the evaluation on CUDA (forces need float32 mantissas); nothing to do on the CPU."""
        return no_tf32(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _inputs(self, positions_nm: np.ndarray, box_nm, grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Positions (and the box of a periodic CV) as float64 tensors on the device: one host→device copy."""
        pos = np.asarray(positions_nm, dtype=np.float64)
        n = len(self.atom_indices)
        if pos.shape != (n, 3):
            raise ValueError(f"positions_nm: expected the {n} CV atoms, shape ({n}, 3), found {tuple(pos.shape)}")
        box = self._box(box_nm)
        host = torch.from_numpy(np.ascontiguousarray(pos if box is None else np.concatenate([pos, box])))
        x = host.to(self.device) if self.device.type != "cpu" else host
        return x[:n].requires_grad_(grad), None if box is None else x[n:]

    def _box(self, box_nm) -> np.ndarray | None:
        """The box as float64 ``[3, 3]`` for a periodic CV (None for a non-periodic one, which ignores it)."""
        if not self.periodic:
            return None
        if box_nm is None:
            raise ValueError("box_nm: this CV is periodic (exported with periodic=True): pass the box vectors "
                             "[3, 3] nm, e.g. state.getPeriodicBoxVectors(asNumpy=True)")
        box = np.array(box_nm, dtype=np.float64)
        if box.shape != (3, 3):
            raise ValueError(f"box_nm: expected box vectors of shape (3, 3) nm, found {tuple(box.shape)}")
        return box

    def _call(self, pos: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        # Without a box, one argument: CV files exported before periodic CVs take ``selected(positions)`` only.
        return self._selected(pos) if box is None else self._selected(pos, box)

    def warm_up(self, positions_nm: np.ndarray, box_nm: np.ndarray | None = None, calls: int = 3) -> None:
        """Forward + backward ``calls`` times before the first counted call (done once, by the first call itself).

        TorchScript's profiling executor runs its first calls on an unoptimised graph whose float32 rounding
        differs from the optimised one; a run resumed from a checkpoint would take its first steps there while the
        uninterrupted run took them optimised, and the two part (measured: 1e-6 in the CV after the checkpoint,
        chaotic growth to O(1) within 10 ps). With the warm-up every session evaluates on the same graph, so a
        resumed walker repeats the uninterrupted one. Compiling (``compile=True``) happens here too.
        """
        self._warm = True
        with self._precise():
            for _ in range(calls):
                pos, box = self._inputs(positions_nm, box_nm, True)
                if self.compiled:
                    self._compiled_jacobian(self.acts_on)(*self._args(pos.detach(), box))
                elif self.single_transfer:
                    self._jacobian(pos, box, batched=True)
                else:
                    s = self._call(pos, box)
                    torch.autograd.grad(s, pos, grad_outputs=torch.ones_like(s))
                with torch.no_grad():
                    self._call(*self._inputs(positions_nm, box_nm, False))

    @staticmethod
    def _args(pos: torch.Tensor, box: torch.Tensor | None) -> tuple:
        return (pos,) if box is None else (pos, box)

    def _compiled_jacobian(self, rows: tuple[int, ...]) -> AheadOfTime | CompiledOrEager:
        """``(pos[, box]) -> (ds_rows/dx [len(rows), n_selected, 3], s [n_cvs])`` as one compiled graph, per row set.

        ``jacrev`` vmaps one vector-Jacobian product per row inside the graph: no autograd engine, no saved
        activations, and only the rows a bias can move (one for OPES on component 0 of a 2-D CV)."""
        if rows not in self._jacobians:
            selected, index = self.cv.selected, list(rows)

            def rows_and_values(pos, *box):
                s = selected(pos, *box)
                return s[index], s.detach()

            jacobian = torch.func.jacrev(rows_and_values, argnums=0, has_aux=True)
            options = dict(fullgraph=True, dynamic=False)
            self._jacobians[rows] = (AheadOfTime(jacobian, "the CV's Jacobian", **options)
                                     if self.compile_mode == "aot"
                                     else CompiledOrEager(jacobian, "the CV's Jacobian", check=True, **options))
        return self._jacobians[rows]

    def _jacobian(self, pos: torch.Tensor, box: torch.Tensor | None, batched: bool,
                  rows: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """s ``[n_cvs]`` and ds/dx ``[len(rows), n_selected, 3]`` (all rows by default): compiled, one graph
        (:meth:`_compiled_jacobian`); else one forward, then one backward per component or one batched (vmapped)
        backward."""
        rows = tuple(range(self.n_cvs)) if rows is None else rows
        if self.compiled:
            jac, s = self._compiled_jacobian(rows)(*self._args(pos.detach(), box))
            return s, jac
        s = self._call(pos, box)
        eye = torch.eye(self.n_cvs, dtype=s.dtype, device=s.device)[list(rows)]
        if len(rows) == 1:
            return s, torch.autograd.grad(s, pos, grad_outputs=eye[0])[0].unsqueeze(0)
        if batched:
            return s, torch.autograd.grad(s, pos, grad_outputs=eye, is_grads_batched=True)[0]
        return s, torch.stack([torch.autograd.grad(s, pos, grad_outputs=e, retain_graph=i < len(rows) - 1)[0]
                               for i, e in enumerate(eye)])

    def _with_jacobian(self, positions_nm, box_nm, batched: bool,
                       rows: tuple[int, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """s ``[n_cvs]`` and ds/dx ``[len(rows), n_selected, 3]`` (all rows by default) on the host: one copy each
        way."""
        with self._precise():
            s, jac = self._jacobian(*self._inputs(positions_nm, box_nm, not self.compiled), batched, rows)
            flat = torch.cat([s.detach().reshape(-1).to(jac.dtype), jac.reshape(-1)]).cpu().numpy()  # device→host
        return flat[:self.n_cvs].astype(np.float64), flat[self.n_cvs:].reshape(-1, len(self.atom_indices), 3)

    def values(self, positions_nm: np.ndarray, box_nm: np.ndarray | None = None) -> np.ndarray:
        """CV values without gradient.

        Parameters
        ----------
        positions_nm : np.ndarray
            ``[n_selected, 3]`` positions of the CV atoms, nm.
        box_nm : np.ndarray, optional
            ``[3, 3]`` periodic box vectors (rows), nm; required by a periodic CV, ignored by others.

        Returns
        -------
        np.ndarray
            ``[n_cvs]`` float64.
        """
        if not self._warm:
            self.warm_up(positions_nm, box_nm)
        self.calls += 1
        with torch.no_grad(), self._precise():
            return self._call(*self._inputs(positions_nm, box_nm, False)).cpu().numpy().astype(np.float64)

    def values_from_context(self, context) -> np.ndarray:
        """CV values at an OpenMM Context's current state: its CV atoms' positions, and its box for a periodic CV.

        Parameters
        ----------
        context : openmm.Context

        Returns
        -------
        np.ndarray
            ``[n_cvs]`` float64.
        """
        state = context.getState(getPositions=True)
        positions = np.asarray(state.getPositions(asNumpy=True)._value)[self.atom_indices]
        box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value) if self.periodic else None
        return self.values(positions, box)

    def bias_energy_forces(self, positions_nm: np.ndarray, bias,
                           box_nm: np.ndarray | None = None) -> tuple[np.ndarray, float, np.ndarray]:
        """CV, bias energy and bias forces with one forward and one backward pass.

        Parameters
        ----------
        positions_nm : np.ndarray
            ``[n_selected, 3]`` positions of the CV atoms, nm.
        bias
            Any object with ``energy_and_gradient(s) -> (V kJ/mol, dV/ds [n_cvs])``.
        box_nm : np.ndarray, optional
            ``[3, 3]`` periodic box vectors (rows), nm; required by a periodic CV, ignored by others.

        Returns
        -------
        tuple
            ``(s [n_cvs], V kJ/mol, forces [n_selected, 3] kJ/mol/nm)``.
        """
        if not self._warm:
            self.warm_up(positions_nm, box_nm)
        self.calls += 1
        if self.compiled or self.single_transfer:
            rows = acting_components(bias, self.n_cvs)
            s_np, jac = self._with_jacobian(positions_nm, box_nm, batched=True, rows=rows)
            energy, dv_ds = bias.energy_and_gradient(s_np)
            dv_ds = np.asarray(dv_ds, dtype=np.float64).reshape(-1)
            if len(rows) < self.n_cvs and np.any(np.delete(dv_ds, rows)):
                raise ValueError(f"bias {getattr(bias, 'label', '')!r}: acts_on() names components {list(rows)} but "
                                 f"dV/ds = {dv_ds.tolist()} is non-zero on another")
            return s_np, float(energy), -np.tensordot(dv_ds[list(rows)], jac, axes=1)
        with self._precise():
            pos, box = self._inputs(positions_nm, box_nm, True)
            s = self._call(pos, box)
            s_np = s.detach().cpu().numpy().astype(np.float64)
            energy, dv_ds = bias.energy_and_gradient(s_np)
            if not np.any(dv_ds):
                return s_np, float(energy), np.zeros(tuple(pos.shape))
            dv_ds = torch.from_numpy(np.asarray(dv_ds)).to(device=s.device, dtype=s.dtype)
            (grad,) = torch.autograd.grad(s, pos, grad_outputs=dv_ds)
        return s_np, float(energy), -grad.cpu().numpy()

    def jacobian(self, positions_nm: np.ndarray, batched: bool = True,
                 box_nm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """CV and its Jacobian from one forward; batched vector-Jacobian products or one backward per CV.

        Parameters
        ----------
        positions_nm : np.ndarray
            ``[n_selected, 3]`` positions of the CV atoms, nm.
        batched : bool
            One batched backward (``is_grads_batched``) instead of ``n_cvs`` backward passes.
        box_nm : np.ndarray, optional
            ``[3, 3]`` periodic box vectors (rows), nm; required by a periodic CV, ignored by others.

        Returns
        -------
        tuple
            ``(s [n_cvs], ds/dx [n_cvs, n_selected, 3] 1/nm)``.
        """
        if not self._warm:
            self.warm_up(positions_nm, box_nm)
        self.calls += 1
        return self._with_jacobian(positions_nm, box_nm, batched)


def acting_components(bias, n_cvs: int) -> tuple[int, ...]:
    """``bias.acts_on()`` (the components its dV/ds can be non-zero on), or all ``n_cvs`` for a bias without it."""
    acts_on = getattr(bias, "acts_on", None)
    return tuple(int(c) for c in acts_on()) if callable(acts_on) else tuple(range(n_cvs))


def _frozen(cv: torch.nn.Module) -> torch.nn.Module:
    """``cv`` itself when no parameter requires grad (exported CVs), else a copy whose parameters do not.

    Why: torch 2.9.1's ``torch.compile(jacrev(f))`` of two or more rows returns an all-zero Jacobian when ``f``
    passes through a nonlinear layer (SiLU) whose parameters require grad (eager jacrev is right; measured on a
    distance MLP), so a user's trainable module would get zero bias forces, silently. A frozen copy is also an
    inference graph: no parameter gradients traced."""
    if not any(p.requires_grad for p in cv.parameters()):
        return cv
    return copy.deepcopy(cv).requires_grad_(False)


def _on_device(cv: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``cv`` itself when its tensors already live on ``device``, else a copy moved there (the caller's stays put)."""
    tensors = list(cv.parameters()) + list(cv.buffers())
    if all(t.device == device for t in tensors):
        return cv
    return copy.deepcopy(cv).to(device)
