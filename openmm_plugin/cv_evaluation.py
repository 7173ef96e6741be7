"""One model call per step for any CV dimension: values, Jacobian, and the bias force through one backward.

The cheap way to bias a d-dimensional learned CV is the chain rule in the right order: evaluate s(x)
once, get dV/ds from the (cheap, numpy) bias, then back-propagate the scalar (dV/ds · s) once:
∂V/∂x = Σ_i dV/ds_i ∂s_i/∂x. That costs one forward + one backward whatever d is, where a
BiasVariable per component (``app.Metadynamics``) costs d forwards and d backwards. The full Jacobian
(for analysis) uses batched vector-Jacobian products (``is_grads_batched``) or d backward passes.

``compile=True`` runs the CV's eager twin (``cvlearn.export.load_eager_cv``) through ``torch.compile``: inductor
fuses the per-step forward and backward into a few C++ kernels, where TorchScript dispatches ~1,100 tiny ops
(ala2, 2-layer dense ET: 0.70 vs 2.01 ms per forward + backward, measured in bias_speed). The first call compiles (~30 s on
2 cores); if compiling fails, the evaluator says why and stays eager.

A periodic CV (``cv.periodic``, exported with ``periodic=True``) takes the box vectors ``box_nm [3, 3]`` with every
call and makes its molecule whole itself; a non-periodic CV ignores a box, so callers may always pass it.
"""

from __future__ import annotations

import numpy as np
import torch

from cvlearn.compiling import CompiledOrEager


class CVEvaluator:
    """Runs an exported CV on the CV atoms' positions (nm) and counts its model calls.

    Parameters
    ----------
    cv : torch.nn.Module
        The TorchScript module (``cvlearn.export.load_cv``) or its eager twin (``load_eager_cv``); it must have
        ``selected``, ``atom_indices`` and ``n_cvs``.
    compile : bool
        Run ``cv.selected`` through ``torch.compile`` (needs the eager twin).
    """

    def __init__(self, cv: torch.nn.Module, compile: bool = False):
        for attribute in ("selected", "atom_indices", "n_cvs"):
            if not hasattr(cv, attribute):
                raise ValueError(f"cv: expected an exported CV (cvlearn.export.export_cv) with `{attribute}`, "
                                 f"found {type(cv).__name__} without it")
        if compile and isinstance(cv, torch.jit.ScriptModule):
            raise ValueError("compile=True: expected the eager CV (cvlearn.export.load_eager_cv(path)), found a "
                             "TorchScript module, which torch.compile cannot compile")
        self.cv = cv
        self.compiled = bool(compile)
        self._selected = (CompiledOrEager(cv.selected, "the CV", fullgraph=True, dynamic=False) if compile
                          else cv.selected)
        self.n_cvs = int(cv.n_cvs)
        self.atom_indices = [int(i) for i in cv.atom_indices.tolist()]
        self.periodic = bool(getattr(cv, "periodic", False))  # files exported before periodic CVs lack it
        self.calls = 0

    def _positions(self, positions_nm: np.ndarray, grad: bool) -> torch.Tensor:
        pos = torch.from_numpy(np.ascontiguousarray(positions_nm, dtype=np.float64))
        if pos.shape != (len(self.atom_indices), 3):
            raise ValueError(f"positions_nm: expected the {len(self.atom_indices)} CV atoms, shape "
                             f"({len(self.atom_indices)}, 3), found {tuple(pos.shape)}")
        return pos.requires_grad_(grad)

    def _box(self, box_nm) -> torch.Tensor | None:
        """The box as a float64 tensor for a periodic CV (None for a non-periodic one, which ignores it)."""
        if not self.periodic:
            return None
        if box_nm is None:
            raise ValueError("box_nm: this CV is periodic (exported with periodic=True): pass the box vectors "
                             "[3, 3] nm, e.g. state.getPeriodicBoxVectors(asNumpy=True)")
        box = torch.from_numpy(np.array(box_nm, dtype=np.float64))
        if box.shape != (3, 3):
            raise ValueError(f"box_nm: expected box vectors of shape (3, 3) nm, found {tuple(box.shape)}")
        return box

    def _call(self, pos: torch.Tensor, box: torch.Tensor | None) -> torch.Tensor:
        # Without a box, one argument: CV files exported before periodic CVs take ``selected(positions)`` only.
        return self._selected(pos) if box is None else self._selected(pos, box)

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
        self.calls += 1
        with torch.no_grad():
            return self._call(self._positions(positions_nm, False), self._box(box_nm)).numpy().astype(np.float64)

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
        self.calls += 1
        pos, box = self._positions(positions_nm, True), self._box(box_nm)
        s = self._call(pos, box)
        s_np = s.detach().numpy().astype(np.float64)
        energy, dv_ds = bias.energy_and_gradient(s_np)
        if not np.any(dv_ds):
            return s_np, float(energy), np.zeros(pos.shape)
        (grad,) = torch.autograd.grad(s, pos, grad_outputs=torch.from_numpy(np.asarray(dv_ds)).to(s.dtype))
        return s_np, float(energy), -grad.numpy()

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
        self.calls += 1
        pos, box = self._positions(positions_nm, True), self._box(box_nm)
        s = self._call(pos, box)
        eye = torch.eye(self.n_cvs, dtype=s.dtype)
        if batched:
            (jac,) = torch.autograd.grad(s, pos, grad_outputs=eye, is_grads_batched=True)
        else:
            jac = torch.stack([torch.autograd.grad(s, pos, grad_outputs=eye[i], retain_graph=i < self.n_cvs - 1)[0]
                               for i in range(self.n_cvs)])
        return s.detach().numpy().astype(np.float64), jac.numpy()
