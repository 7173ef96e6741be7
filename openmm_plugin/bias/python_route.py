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
    """PythonForce computation ``state -> (V, -dV/dx)``; picklable (the CV travels as bytes).

    ``compile=True``: ``cv`` is the eager CV (``cvlearn.export.load_eager_cv``), run through ``torch.compile``.
    """

    def __init__(self, cv: torch.nn.Module, bias, compile: bool = False):
        self.evaluator = CVEvaluator(cv, compile=compile)
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
        cv = self.evaluator.cv
        scripted = isinstance(cv, torch.jit.ScriptModule)
        torch.jit.save(cv, buffer) if scripted else torch.save(cv, buffer)
        return {"cv": buffer.getvalue(), "scripted": scripted, "compile": self.evaluator.compiled, "bias": self.bias}

    def __setstate__(self, state):
        buffer = io.BytesIO(state["cv"])
        cv = (torch.jit.load(buffer, map_location="cpu") if state.get("scripted", True)
              else torch.load(buffer, map_location="cpu", weights_only=False))
        self.__init__(cv, state["bias"], compile=state.get("compile", False))


def python_bias_force(cv: torch.nn.Module, bias, force_group: int | None = None,
                      compile: bool = False) -> openmm.PythonForce:
    """A PythonForce restricted to the CV atoms applying ``bias`` to ``cv``; the callback is ``force.callback``.

    ``compile=True`` (pass the eager CV, ``cvlearn.export.load_eager_cv``) compiles the CV's forward and backward
    with ``torch.compile``: on ala2 0.73 vs 1.60 ms per MD step (bias every step, measured).
    """
    callback = BiasCallback(cv, bias, compile=compile)
    force = openmm.PythonForce(callback)
    force.setParticles(callback.evaluator.atom_indices)
    force.setName(f"cvlearn bias {bias.label}")
    if force_group is not None:
        force.setForceGroup(int(force_group))
    force.callback = callback  # the Python object stays reachable (SWIG proxies accept attributes)
    return force
