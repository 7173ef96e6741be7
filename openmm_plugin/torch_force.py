"""The TorchForce route (openmm-torch): one TorchScript module = the exported CV + a frozen bias, run by OpenMM.

Static biases are exact as buffers of the module. Adaptive biases cannot change inside a running TorchForce with
openmmtorch 1.5 (the force holds a serialised copy, global parameters are scalars only, and a TorchForce inside a
CustomCVForce segfaults at Context creation), so :class:`TorchBiasForce` swaps in a new force at each deposition
and reinitialises the Context (cost measured in ``benchmarks/bias_speed.py``).

Device: a TorchForce runs where its Context runs. On the CUDA platform the module runs on that Context's GPU (the
platform's ``DeviceIndex``), sharing its CUDA context, and ``cuda_graphs=True`` sets the force's ``useCUDAGraphs``
property: openmm-torch then captures the forward + backward once and replays it every step (no per-op launch
cost; the module must be capturable: static shapes, no host syncs). On the Reference/CPU platforms the property is
ignored and the module runs on the CPU. (The PythonForce route chooses its device itself:
:func:`openmm_plugin.forces.python_bias_force` ``device=``.)
"""

from __future__ import annotations

import logging
from typing import Optional

import openmm
import torch

from openmm_plugin.forces import CVComponent, check_cv_fits_system

logger = logging.getLogger(__name__)

__all__ = ["CVBias", "TorchBiasForce", "import_openmmtorch", "scripted_cv_bias", "set_cuda_graphs",
           "torch_bias_force", "torch_force_for_cv"]


def import_openmmtorch():
    """``openmmtorch``, with its kernels registered whatever the import order.

    OpenMM loads its plugins when ``openmm`` is first imported; imported before torch, the TorchForce kernels fail
    to load (libOpenMMTorchReference needs torch's libnvrtc), and every Context with a TorchForce then fails with
    "does not support all required kernels". Those libraries are loaded again here, after torch.
    """
    import re

    root = logging.getLogger()
    quiet = _DropSimtkNotice()
    root.addFilter(quiet)  # openmmtorch 1.5 imports simtk.openmm, whose notice says nothing to a cvlearn user
    try:
        import openmmtorch
    finally:
        root.removeFilter(quiet)

    for failure in openmm.Platform.getPluginLoadFailures():
        found = re.match(r"Error loading library (\S*libOpenMMTorch(?:Reference|CPU)\S*?):", failure)
        if found and found.group(1) not in _RELOADED:
            _RELOADED.add(found.group(1))
            try:
                openmm.Platform.loadPluginLibrary(found.group(1))
            except Exception as err:  # noqa: BLE001 (any loader error: the Context reports the missing kernel)
                logger.warning("could not load the TorchForce kernels %s: %s", found.group(1), err)
    return openmmtorch


_RELOADED: set = set()


class _DropSimtkNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "simtk.openmm" not in record.getMessage()


class CVBias(torch.nn.Module):
    """``positions [n_particles, 3] nm, box [3, 3] nm or None -> V(s(x))`` kJ/mol: the exported CV and a bias.

    One scriptable module, so a TorchForce gets the bias and its forces (autograd) in a single call. A periodic
    CV gets the box the TorchForce passes (``setUsesPeriodicBoundaryConditions(True)``); ``periodic`` is a
    TorchScript constant, so a CV file exported before periodic CVs (``forward(positions)`` only) still scripts.

    Parameters
    ----------
    cv : torch.jit.ScriptModule
        Exported CV: positions ``[n_particles, 3]`` nm → CVs ``[n_cvs]``.
    bias : torch.nn.Module
        ``s [n_cvs]`` (float64) → scalar energy, kJ/mol (e.g. a bias's ``to_torch()``).
    """

    __constants__ = ["periodic"]

    def __init__(self, cv: torch.jit.ScriptModule, bias: torch.nn.Module):
        super().__init__()
        self.cv = cv
        self.bias = bias
        self.periodic = bool(getattr(cv, "periodic", False))

    def forward(self, positions: torch.Tensor, box: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.periodic:
            s = self.cv(positions, box)
        else:
            s = self.cv(positions)
        return self.bias(s.to(torch.float64)).to(positions.dtype)


def scripted_cv_bias(cv: torch.jit.ScriptModule, bias) -> torch.jit.ScriptModule:
    """TorchScript of the CV followed by the current (frozen) ``bias`` (its ``to_torch()`` snapshot).

    Parameters
    ----------
    cv : torch.jit.ScriptModule
        Exported CV ``positions [n_particles, 3] nm -> s [n_cvs]``.
    bias
        Bias on all ``n_cvs`` components.

    Returns
    -------
    torch.jit.ScriptModule
        ``positions [n_particles, 3] nm, box [3, 3] nm or None -> V`` kJ/mol (a 0-d tensor in the positions'
        dtype).
    """
    if bias.n_cvs != int(cv.n_cvs):
        raise ValueError(f"bias {bias.label!r} acts on {bias.n_cvs} CVs but the CV module has {int(cv.n_cvs)}")
    return torch.jit.script(CVBias(cv, bias.to_torch()))


def torch_bias_force(cv: torch.jit.ScriptModule, bias, force_group: int | None = None, cuda_graphs: bool = False):
    """An openmm-torch ``TorchForce`` whose energy is the current ``bias`` on ``cv``.

    Parameters
    ----------
    cv : torch.jit.ScriptModule
        Exported CV ``positions [n_particles, 3] nm -> s [n_cvs]``.
    bias
        Bias on all ``n_cvs`` components with a ``to_torch()`` snapshot.
    force_group : int, optional
        OpenMM force group.
    cuda_graphs : bool
        Set the force's ``useCUDAGraphs`` property (used by the CUDA platform only; see the module doc).

    Returns
    -------
    openmmtorch.TorchForce
    """
    force = import_openmmtorch().TorchForce(scripted_cv_bias(cv, bias))
    set_cuda_graphs(force, cuda_graphs)
    force.setUsesPeriodicBoundaryConditions(bool(getattr(cv, "periodic", False)))  # then forward gets the box
    force.setName(f"cvlearn torch bias {bias.label}")
    if force_group is not None:
        force.setForceGroup(int(force_group))
    return force


def set_cuda_graphs(force, enabled: bool) -> None:
    """Set a TorchForce's ``useCUDAGraphs`` property to ``"true"``/``"false"`` (openmm-torch 1.5 has it).

    Asking for graphs from an openmm-torch without the property raises ``ValueError`` rather than silently running
    without them; ``"false"`` there is what it does anyway.
    """
    try:
        force.setProperty("useCUDAGraphs", "true" if enabled else "false")
    except Exception as err:  # noqa: BLE001 (openmm.OpenMMException: "Unknown property")
        if enabled:
            raise ValueError(f"cuda_graphs: expected a TorchForce with the useCUDAGraphs property, found none in this "
                             f"openmm-torch ({err})") from err


def torch_force_for_cv(cv: torch.jit.ScriptModule, component: int = 0, scale: float = 1.0, cuda_graphs: bool = False):
    """An openmm-torch ``TorchForce`` whose energy (kJ/mol) is ``scale * cv(positions)[component]``.

    Parameters
    ----------
    cv : torch.jit.ScriptModule
        Exported CV.
    component : int
        CV component in ``[0, n_cvs)``.
    scale : float
        kJ/mol per CV unit.
    cuda_graphs : bool
        Set the force's ``useCUDAGraphs`` property (CUDA platform only).

    Returns
    -------
    openmmtorch.TorchForce
    """
    return torch_bias_force(cv, CVComponent(int(cv.n_cvs), component, scale), cuda_graphs=cuda_graphs)


class TorchBiasForce:
    """A TorchForce carrying CV + bias in a System, refreshed (rebuilt + Context reinitialised) on demand.

    Parameters
    ----------
    system : openmm.System
        The System the force is added to (and replaced in at each refresh).
    cv : torch.jit.ScriptModule
        Exported CV.
    bias
        The (possibly adaptive) bias; each refresh freezes its current state.
    force_group : int, optional
        OpenMM force group.
    cuda_graphs : bool
        ``useCUDAGraphs`` on every force it builds (CUDA platform only).
    """

    def __init__(self, system: openmm.System, cv: torch.jit.ScriptModule, bias, force_group: int | None = None,
                 cuda_graphs: bool = False):
        check_cv_fits_system(cv, system)
        self.system = system
        self.cv = cv
        self.bias = bias
        self.force_group = force_group
        self.cuda_graphs = bool(cuda_graphs)
        self.index = system.addForce(torch_bias_force(cv, bias, force_group, self.cuda_graphs))
        self.refreshes = 0

    def refresh(self, simulation) -> None:
        """Replace the force by one holding the bias's current state; positions/velocities/step are kept."""
        if simulation.system is not self.system:
            raise ValueError("TorchBiasForce.refresh: the simulation was built from another System than this force's")
        self.system.removeForce(self.index)
        self.index = self.system.addForce(torch_bias_force(self.cv, self.bias, self.force_group, self.cuda_graphs))
        simulation.context.reinitialize(preserveState=True)
        self.refreshes += 1
