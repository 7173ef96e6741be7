"""Put an exported CV into an OpenMM System: as a TorchForce (openmm-torch) or a PythonForce (OpenMM ≥ 8.6).

Both forces report *one CV component as their "energy"* (dimensionless CV value read as kJ/mol) and
−∂CV/∂x as their forces. That is what ``app.Metadynamics`` expects of a ``BiasVariable`` force.

Why two routes: with openmmtorch 1.5 a TorchForce inside a CustomCVForce (which ``app.Metadynamics``
builds) segfaults at Context creation (its XML deserialisation crashes), so biasing goes through the
PythonForce route; the TorchForce route is used where the CV force stands alone.
"""

from __future__ import annotations

import io

import numpy as np
import torch

import openmm

from openmm_plugin.bias.cv_evaluation import CVEvaluator


def _component_module(cv: torch.jit.ScriptModule, component: int, scale: float) -> torch.jit.ScriptModule:
    class CVComponent(torch.nn.Module):
        def __init__(self, cv: torch.nn.Module, component: int, scale: float):
            super().__init__()
            self.cv = cv
            self.component = component
            self.scale = scale

        def forward(self, positions: torch.Tensor) -> torch.Tensor:
            return self.scale * self.cv(positions)[self.component]

    return torch.jit.script(CVComponent(cv, component, scale))


def _check_component(cv: torch.jit.ScriptModule, component: int) -> None:
    if not 0 <= component < cv.n_cvs:
        raise ValueError(f"component must lie in [0, {cv.n_cvs}) for this CV, got {component}")


def torch_force_for_cv(cv: torch.jit.ScriptModule, component: int = 0, scale: float = 1.0):
    """An openmm-torch ``TorchForce`` whose energy (kJ/mol) is ``scale * cv(positions)[component]``."""
    import openmmtorch  # after torch, as openmmtorch needs torch's CUDA libraries loaded first

    _check_component(cv, component)
    return openmmtorch.TorchForce(_component_module(cv, component, scale))


class CVCallback:
    """The PythonForce computation: one CV component and its gradient, on the CV's particles only.

    It is the bias engine's :class:`~openmm_plugin.bias.cv_evaluation.CVEvaluator` applied to the linear "bias"
    V(s) = s_k, so dV/ds is one-hot and one backward pass gives -ds_k/dx. Picklable (OpenMM serialises
    PythonForces with pickle): the TorchScript module travels as bytes.
    """

    def __init__(self, cv: torch.jit.ScriptModule, component: int):
        _check_component(cv, component)
        self.evaluator = CVEvaluator(cv)
        self.component = component
        self._unit_gradient = np.eye(self.evaluator.n_cvs)[component]

    def energy_and_gradient(self, s: np.ndarray) -> tuple[float, np.ndarray]:
        return float(s[self.component]), self._unit_gradient

    def __call__(self, state: openmm.State):
        _, value, forces = self.evaluator.bias_energy_forces(state.getPositions(asNumpy=True)._value, self)
        return value, forces

    def __getstate__(self):
        buffer = io.BytesIO()
        torch.jit.save(self.evaluator.cv, buffer)
        return {"cv": buffer.getvalue(), "component": self.component}

    def __setstate__(self, state):
        self.__init__(torch.jit.load(io.BytesIO(state["cv"]), map_location="cpu"), state["component"])


def python_force_for_cv(cv: torch.jit.ScriptModule, component: int = 0) -> openmm.PythonForce:
    """An ``openmm.PythonForce`` restricted to the CV's atoms whose energy is ``cv(positions)[component]``."""
    force = openmm.PythonForce(CVCallback(cv, component))
    force.setParticles([int(i) for i in cv.atom_indices.tolist()])
    return force
