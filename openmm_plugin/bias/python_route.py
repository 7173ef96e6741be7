"""The PythonForce route: one ``openmm.PythonForce`` whose energy is the total bias V(s(x)).

Restricted to the CV atoms (``setParticles``), it calls the learned CV once per step whatever its
dimension, and it biases adaptive methods (metadynamics, OPES) because it holds the live bias object:
a deposition changes the next force evaluation without touching the Context. It caches the CV value of
its last evaluation, which the driver uses for depositions (the positions the step's forces were
computed at, as PLUMED deposits).
"""

from __future__ import annotations

import io

import numpy as np
import openmm
import torch

from openmm_plugin.bias.cv_evaluation import CVEvaluator


class BiasCallback:
    """PythonForce computation ``state -> (V, -dV/dx)``; picklable (the TorchScript CV travels as bytes)."""

    def __init__(self, cv: torch.jit.ScriptModule, bias):
        self.evaluator = CVEvaluator(cv)
        if bias.n_cvs != self.evaluator.n_cvs:
            raise ValueError(f"bias {bias.label!r} acts on {bias.n_cvs} CVs but the CV module has {self.evaluator.n_cvs}")
        self.bias = bias
        self.last_cv: np.ndarray | None = None
        self.last_energy_kjmol = float("nan")
        self.evaluations = 0

    def __call__(self, state: openmm.State):
        positions = np.asarray(state.getPositions(asNumpy=True)._value)
        s, energy, forces = self.evaluator.bias_energy_forces(positions, self.bias)
        self.last_cv, self.last_energy_kjmol = s, energy
        self.evaluations += 1
        return energy, forces

    def __getstate__(self):
        buffer = io.BytesIO()
        torch.jit.save(self.evaluator.cv, buffer)
        return {"cv": buffer.getvalue(), "bias": self.bias}

    def __setstate__(self, state):
        self.__init__(torch.jit.load(io.BytesIO(state["cv"]), map_location="cpu"), state["bias"])


def python_bias_force(cv: torch.jit.ScriptModule, bias, force_group: int | None = None) -> openmm.PythonForce:
    """A PythonForce restricted to the CV atoms applying ``bias`` to ``cv``; the callback is ``force.callback``."""
    callback = BiasCallback(cv, bias)
    force = openmm.PythonForce(callback)
    force.setParticles(callback.evaluator.atom_indices)
    force.setName(f"cvlearn bias {bias.label}")
    if force_group is not None:
        force.setForceGroup(int(force_group))
    force.callback = callback  # the Python object stays reachable (SWIG proxies accept attributes)
    return force
