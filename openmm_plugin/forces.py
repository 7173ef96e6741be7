"""The two routes from an exported CV to an OpenMM Force, each applying a bias V(s(x)) at one model call per step.

* PythonForce route (here, :func:`python_bias_force`, OpenMM ≥ 8.6): an ``openmm.PythonForce`` restricted to the
  CV atoms holds the *live* bias object, so adaptive methods (metadynamics, OPES) change the next force evaluation
  without touching the Context. It caches the CV of its last evaluation, which the runner uses for depositions
  (the positions the step's forces were computed at, as PLUMED deposits). ``device="cuda"`` runs the CV on a GPU
  whatever the OpenMM platform (:class:`openmm_plugin.cv_evaluation.CVEvaluator`): CV on the GPU with MD on the
  CPU platform works, as does the CUDA platform, whose PythonForce hands positions to Python on the host.
* TorchForce route (:mod:`openmm_plugin.torch_force`, openmm-torch; its names are also importable from here): one
  TorchScript module = CV + a frozen bias, rebuilt at each deposition of an adaptive bias; it runs on the
  Context's platform (on CUDA in the Context's own CUDA context, optionally as a CUDA graph).

The plain CV component as a force (energy = ``scale * s_k``, forces = ``-scale ∂s_k/∂x``) is the linear bias
:class:`CVComponent` through either route (:func:`python_force_for_cv`, :func:`torch_force_for_cv`).
"""

from __future__ import annotations

import io
import logging
import numpy as np
import openmm
import torch

from openmm_plugin.cv_evaluation import CVEvaluator, acting_components

logger = logging.getLogger(__name__)


# --- the linear bias V(s) = scale * s_k ----------------------------------------------------------------------
class CVComponent:
    """The "bias" V(s) = ``scale * s[component]`` (kJ/mol): one CV component read as an energy.

    Parameters
    ----------
    n_cvs : int
        Dimension of the CV vector.
    component : int
        Index of the component in ``[0, n_cvs)``.
    scale : float
        Factor on the component (kJ/mol per CV unit).
    """

    adaptive = False

    def __init__(self, n_cvs: int, component: int = 0, scale: float = 1.0):
        if not 0 <= int(component) < int(n_cvs):
            raise ValueError(f"component must lie in [0, {int(n_cvs)}) for this CV, got {component}")
        self.n_cvs, self.component, self.scale = int(n_cvs), int(component), float(scale)
        self.label = f"cv{self.component}"
        self._gradient = self.scale * np.eye(self.n_cvs)[self.component]

    def energy_and_gradient(self, s: np.ndarray) -> tuple[float, np.ndarray]:
        """``(scale * s_k, dV/ds [n_cvs])``."""
        return self.scale * float(np.asarray(s).reshape(-1)[self.component]), self._gradient

    def update(self, s: np.ndarray, step: int) -> bool:
        return False

    def leaves(self) -> list:
        return [self]

    def acts_on(self) -> tuple[int, ...]:
        return (self.component,)

    def to_torch(self) -> torch.nn.Module:
        return _TorchCVComponent(self.component, self.scale)


class _TorchCVComponent(torch.nn.Module):
    def __init__(self, component: int, scale: float):
        super().__init__()
        self.component = component
        self.scale = scale

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.scale * s[self.component]


def _system_is_periodic(system: openmm.System) -> bool:
    """Whether a force of ``system`` other than cvlearn's own (named ``cvlearn ...``) uses periodic boundaries."""
    return any(force.usesPeriodicBoundaryConditions() for force in system.getForces()
               if not force.getName().startswith("cvlearn "))


def check_cv_fits_system(cv: torch.nn.Module, system: openmm.System) -> None:
    """Raise ``ValueError`` unless ``system`` has the particle count and the periodicity ``cv`` was exported for.

    Checked before any Context exists: a CV on the wrong System reads the wrong atoms (PythonForce route) or
    fails inside a running force (TorchForce route). A periodic CV needs a periodic System (its box); a
    non-periodic CV in a periodic System runs, but reads a molecule split by the box edge as it comes, so it
    logs a warning.

    Parameters
    ----------
    cv : torch.nn.Module
        Exported CV (``n_particles``, ``atom_indices``, ``periodic``).
    system : openmm.System
        The System its force goes into (cvlearn's own forces in it are ignored for the periodicity).
    """
    n_cv, n_system = int(cv.n_particles), int(system.getNumParticles())
    if n_cv != n_system:
        raise ValueError(f"cv: expected a System of {n_cv} particles (the CV was exported for {n_cv}), found a System "
                         f"of {n_system} particles")
    cv_periodic, system_periodic = bool(getattr(cv, "periodic", False)), _system_is_periodic(system)
    if cv_periodic and not system_periodic:
        raise ValueError(f"cv: {_cv_name(cv)} is periodic (forward takes box vectors) but the System has no periodic "
                         "box; export it with periodic=False for a non-periodic System")
    if system_periodic and not cv_periodic:
        logger.warning("cv: %s is not periodic but the System has periodic boundaries: its values and forces are "
                       "wrong whenever the molecule crosses the box edge; export it with periodic=True",
                       _cv_name(cv))


def _cv_name(cv: torch.nn.Module) -> str:
    return f"the CV on {len(cv.atom_indices)} atoms" if hasattr(cv, "atom_indices") else "the CV"


# --- PythonForce route ---------------------------------------------------------------------------------------
class BiasCallback:
    """The PythonForce computation ``state -> (V kJ/mol, -dV/dx kJ/mol/nm)`` on the CV atoms; picklable.

    OpenMM serialises PythonForces with pickle, so the CV travels as bytes (TorchScript, or ``torch.save`` for
    the eager twin).

    Parameters
    ----------
    cv : torch.nn.Module
        Exported CV (``cvlearn.export.load_cv``), or its eager twin (``load_eager_cv``) when ``compile``.
    bias
        A bias on the ``n_cvs`` CV components (``energy_and_gradient``, ``n_cvs``, ``label``).
    compile : bool or {"aot", "inductor"}
        Compile the CV (:class:`CVEvaluator`: ``True`` is ahead of time on the CPU, ``torch.compile`` on a GPU).
    device : str or torch.device
        Where the CV runs (``cpu``, ``cuda``, ``cuda:N``).
    """

    def __init__(self, cv: torch.nn.Module, bias, compile: bool | str = False, device="cpu"):
        self.evaluator = CVEvaluator(cv, compile=compile, device=device)
        if bias.n_cvs != self.evaluator.n_cvs:
            raise ValueError(f"bias {bias.label!r} acts on {bias.n_cvs} CVs but the CV module has {self.evaluator.n_cvs}")
        self.evaluator.acts_on = acting_components(bias, self.evaluator.n_cvs)  # the rows its warm-up compiles
        self.bias = bias
        self.guard = None
        self.last_cv: np.ndarray | None = None
        self.last_energy_kjmol = float("nan")
        self.evaluations = 0

    def __call__(self, state: openmm.State):
        positions = np.asarray(state.getPositions(asNumpy=True)._value)
        box = np.asarray(state.getPeriodicBoxVectors(asNumpy=True)._value) if self.evaluator.periodic else None
        s, energy, forces = self.evaluator.bias_energy_forces(positions, self.bias, box_nm=box)
        if self.guard is not None:  # openmm_plugin.bias.guard.ForceGuard, set by BiasRunner(guard=...)
            forces = self.guard.apply(forces)
        self.last_cv, self.last_energy_kjmol = s, energy
        self.evaluations += 1
        return energy, forces

    def __getstate__(self):
        buffer = io.BytesIO()
        cv = self.evaluator.cv
        scripted = isinstance(cv, torch.jit.ScriptModule)
        torch.jit.save(cv, buffer) if scripted else torch.save(cv, buffer)
        return {"cv": buffer.getvalue(), "scripted": scripted, "compile": self.evaluator.compile_mode or False,
                "bias": self.bias, "device": str(self.evaluator.device)}

    def __setstate__(self, state):
        buffer = io.BytesIO(state["cv"])
        cv = (torch.jit.load(buffer, map_location="cpu") if state.get("scripted", True)
              else torch.load(buffer, map_location="cpu", weights_only=False))
        self.__init__(cv, state["bias"], compile=state.get("compile", False), device=state.get("device", "cpu"))


def python_bias_force(cv: torch.nn.Module, bias, force_group: int | None = None, compile: bool | str = False,
                      system: openmm.System | None = None, device="cpu") -> openmm.PythonForce:
    """A PythonForce restricted to the CV atoms whose energy is ``bias`` on ``cv``.

    ``compile=True`` (pass the eager CV) compiles the CV's value and Jacobian into one graph (ahead of time on the
    CPU): the ala2 sampling CV costs 0.29 vs 1.72 ms per MD step through TorchScript (bias every step,
    ``benchmarks/results/bias_speed_pairs.md``).

    Parameters
    ----------
    cv : torch.nn.Module
        Exported CV ``positions [n_particles, 3] nm -> s [n_cvs]``.
    bias
        Bias on all ``n_cvs`` components (e.g. :class:`openmm_plugin.bias.Metadynamics`, :class:`CVComponent`).
    force_group : int, optional
        OpenMM force group (e.g. the slow group of an MTS integrator).
    compile : bool or {"aot", "inductor"}
        Compile the CV (needs the eager twin; :class:`CVEvaluator`).
    system : openmm.System, optional
        The System the force will be added to: its particle count is checked against the CV's
        (:func:`check_cv_fits_system`); the force sees only the CV atoms, so it cannot check this itself.
    device : str or torch.device
        Where the CV runs (``cpu``, ``cuda``, ``cuda:N``), independent of the OpenMM platform.

    Returns
    -------
    openmm.PythonForce
        The force; its :class:`BiasCallback` is ``force.callback`` (cached CV, evaluation count).
    """
    if system is not None:
        check_cv_fits_system(cv, system)
    callback = BiasCallback(cv, bias, compile=compile, device=device)
    force = openmm.PythonForce(callback)
    force.setParticles(callback.evaluator.atom_indices)
    force.setUsesPeriodicBoundaryConditions(callback.evaluator.periodic)  # the State then carries the box
    force.setName(f"cvlearn bias {bias.label}")
    if force_group is not None:
        force.setForceGroup(int(force_group))
    force.callback = callback  # the Python object stays reachable (SWIG proxies accept attributes)
    return force


def python_force_for_cv(cv: torch.jit.ScriptModule, component: int = 0, scale: float = 1.0,
                        device="cpu") -> openmm.PythonForce:
    """A PythonForce whose energy (kJ/mol) is ``scale * cv(positions)[component]``.

    Parameters
    ----------
    cv : torch.jit.ScriptModule
        Exported CV.
    component : int
        CV component in ``[0, n_cvs)``.
    scale : float
        kJ/mol per CV unit.
    device : str or torch.device
        Where the CV runs.

    Returns
    -------
    openmm.PythonForce
    """
    return python_bias_force(cv, CVComponent(int(cv.n_cvs), component, scale), device=device)


# The TorchForce route lives in openmm_plugin.torch_force; its names stay importable from here.
_TORCH_ROUTE = ("CVBias", "TorchBiasForce", "import_openmmtorch", "scripted_cv_bias", "set_cuda_graphs",
                "torch_bias_force", "torch_force_for_cv")


def __getattr__(name: str):
    if name in _TORCH_ROUTE:
        from openmm_plugin import torch_force

        return getattr(torch_force, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
