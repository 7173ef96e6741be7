"""The TorchScript route: one module = CV + bias, run by openmm-torch's ``TorchForce`` (energy = V).

Static biases (restraints, walls, a frozen metadynamics/OPES bias) are exact as buffers of the module.
Adaptive biases cannot change inside a running TorchForce with openmmtorch 1.5: the Python
``TorchForce(module)`` serialises the module into the force (a copy), global parameters are scalars
only (passed as separate arguments, so a growing kernel list cannot travel through them), and a
TorchForce inside a CustomCVForce segfaults (XML deserialisation). :class:`TorchBiasForce` therefore
refreshes the force at deposition: it swaps in a new TorchForce holding the current kernels and
calls ``Context.reinitialize(preserveState=True)``; its cost per deposition is measured in
``benchmarks/bias_speed.py``. Between depositions the step costs one TorchScript call, no Python.
"""

from __future__ import annotations

import torch

import openmm


class CVBias(torch.nn.Module):
    """``positions [n_particles, 3] nm -> V(s(x))`` kJ/mol: the exported CV followed by a bias module."""

    def __init__(self, cv: torch.jit.ScriptModule, bias: torch.nn.Module):
        super().__init__()
        self.cv = cv
        self.bias = bias

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.bias(self.cv(positions).to(torch.float64)).to(positions.dtype)


def scripted_cv_bias(cv: torch.jit.ScriptModule, bias) -> torch.jit.ScriptModule:
    """TorchScript of CV + the current (frozen) ``bias``."""
    if bias.n_cvs != int(cv.n_cvs):
        raise ValueError(f"bias {bias.label!r} acts on {bias.n_cvs} CVs but the CV module has {int(cv.n_cvs)}")
    return torch.jit.script(CVBias(cv, bias.to_torch()))


def torch_bias_force(cv: torch.jit.ScriptModule, bias, force_group: int | None = None):
    """An openmm-torch ``TorchForce`` whose energy is the current ``bias`` on ``cv``."""
    import openmmtorch  # after torch (openmmtorch needs torch's CUDA libraries loaded first)

    force = openmmtorch.TorchForce(scripted_cv_bias(cv, bias))
    force.setName(f"cvlearn torch bias {bias.label}")
    if force_group is not None:
        force.setForceGroup(int(force_group))
    return force


class TorchBiasForce:
    """A TorchForce carrying CV + bias in a System, refreshed (rebuilt + Context reinitialised) on demand."""

    def __init__(self, system: openmm.System, cv: torch.jit.ScriptModule, bias, force_group: int | None = None):
        self.system = system
        self.cv = cv
        self.bias = bias
        self.force_group = force_group
        self.index = system.addForce(torch_bias_force(cv, bias, force_group))
        self.refreshes = 0

    def refresh(self, simulation) -> None:
        """Replace the force by one holding the bias's current state; positions/velocities/step are kept."""
        if simulation.system is not self.system:
            raise ValueError("TorchBiasForce.refresh: the simulation was built from another System than this force's")
        self.system.removeForce(self.index)
        self.index = self.system.addForce(torch_bias_force(self.cv, self.bias, self.force_group))
        simulation.context.reinitialize(preserveState=True)
        self.refreshes += 1
