"""One call from an exported CV file to a biased OpenMM System: :func:`bias_cv`.

It does what ``cvlearn bias`` does (the stage is built on it): read the CV's contract, check it against the
System, build the bias with defaults from the contract (:func:`openmm_plugin.bias.params.make_bias`), add the
bias force (PythonForce, TorchForce or native route), and return a :class:`BiasedCV` that attaches the COLVAR reporter and
checkpoint to the user's Simulation and runs the deposition loop.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import openmm
import openmm.unit as unit

from cvlearn.distributed import check_device
from cvlearn.errors import ConfigError
from cvlearn.export import load_cv, load_eager_cv
from openmm_plugin.bias.params import WallParams, make_bias, params_class
from openmm_plugin.bias.native import native_bias_force
from openmm_plugin.bias.reporter import BiasReporter, TrajectoryReporter
from openmm_plugin.bias.runner import BiasRunner
from openmm_plugin.forces import python_bias_force
from openmm_plugin.simulation import BIAS_GROUP
from openmm_plugin.torch_force import TorchBiasForce

logger = logging.getLogger(__name__)

__all__ = ["BiasedCV", "NATIVE_GRID_BINS", "ROUTES", "bias_cv", "check_cv_matches_system", "native_cv_forces"]

ROUTES = ("python", "torch", "native")
NATIVE_GRID_BINS = 128  # points per 2π: spacing 0.049 rad, under a fifth of OPES's default σ floor on a torsion


@dataclasses.dataclass
class BiasedCV:
    """A CV biased in a System: the pieces :func:`bias_cv` built, and the two calls that use them.

    Attributes
    ----------
    bias : openmm_plugin.bias.Bias
        The bias on the CV (numpy state; ``bias.leaves()`` for each term).
    force : openmm.PythonForce, openmm_plugin.torch_force.TorchBiasForce or openmm_plugin.bias.native.NativeBiasForce
        The force added to the System (TorchForce and native routes: the wrapper that refreshes it at each
        deposition).
    runner : BiasRunner
        Deposition, checkpoint and walker bookkeeping.
    cv : torch.nn.Module
        The exported CV (TorchScript, or its eager twin with ``compile``).
    spec : cvlearn.export.CVSpec
        The CV's contract.
    system : openmm.System
        The System holding the bias force.
    reporter : BiasReporter or None
        The COLVAR reporter, once :meth:`attach` made it (None without ``colvar``).
    """

    bias: object
    force: object
    runner: BiasRunner
    cv: object
    spec: object
    system: openmm.System
    colvar: Optional[Path] = None
    report_interval_steps: int = 500
    mts_substeps: int = 1
    reporter: Optional[BiasReporter] = None
    trajectory: Optional[Path] = None
    timestep_ps: Optional[float] = None
    trajectory_reporter: Optional[TrajectoryReporter] = None

    def attach(self, simulation) -> bool:
        """Add the COLVAR reporter to ``simulation`` and restore the saved state if there is one.

        Set the starting positions (and velocities) before calling it: a restored checkpoint replaces them.

        Parameters
        ----------
        simulation : openmm.app.Simulation
            Built from :attr:`system` (which holds the bias force).

        Returns
        -------
        bool
            Whether a checkpoint (``save_path``) was restored.
        """
        if self.trajectory is not None and self.timestep_ps is None:
            raise ValueError("attach: a trajectory needs timestep_ps (the integrator's step, ps) in bias_cv")
        if simulation.system is not self.system:
            raise ValueError("attach: expected a Simulation built from the System given to bias_cv (it holds the "
                             "bias force), found another System")
        restored = self.runner.save_path is not None and self.runner.restore(simulation)
        if self.colvar is not None and self.reporter is None:
            names = colvar_cv_names(self.spec)
            self.reporter = BiasReporter(self.colvar, self.bias, self.runner.evaluator,
                                         self.report_interval_steps // self.mts_substeps, cv_names=names,
                                         guard=self.runner.guard)
            self.reporter.keep_until(simulation.context.getState().getTime().value_in_unit(unit.picosecond))
            simulation.reporters.append(self.reporter)
        if self.trajectory is not None and self.trajectory_reporter is None:
            self.trajectory_reporter = TrajectoryReporter(
                self.trajectory, simulation.topology, self.timestep_ps * self.mts_substeps,
                self.report_interval_steps // self.mts_substeps, periodic=self.system.usesPeriodicBoundaryConditions())
            self.trajectory_reporter.keep_until(simulation.currentStep)
            simulation.reporters.append(self.trajectory_reporter)
        self.runner.on_save = self._flush  # the COLVAR and trajectory on disk always reach the checkpoint
        if restored:
            logger.info("resumed at step %d (outer steps)", simulation.currentStep)
        return restored

    def run(self, simulation, n_steps: int) -> None:
        """Advance by ``n_steps`` MD steps, depositing, reporting and checkpointing when due.

        Parameters
        ----------
        simulation : openmm.app.Simulation
            The attached simulation.
        n_steps : int
            MD steps of the inner time step (a multiple of ``mts_substeps``).
        """
        if int(n_steps) % self.mts_substeps:
            raise ValueError(f"n_steps: expected a multiple of mts_substeps={self.mts_substeps}, found {n_steps}")
        try:
            self.runner.step(simulation, int(n_steps) // self.mts_substeps)
        except BaseException:
            # A run that blew up or was stopped keeps its COLVAR rows and frames up to there, the record of what
            # went wrong (else they wait for the next checkpoint, which never comes); a resume cuts both back to
            # its checkpoint.
            self._flush()
            raise

    def _flush(self) -> None:
        for reporter in (self.reporter, self.trajectory_reporter):
            if reporter is not None:
                reporter.flush()

    def close(self, simulation=None) -> None:
        """Write the COLVAR, close the trajectory and (with ``save_path`` and ``simulation``) save a last checkpoint."""
        if self.reporter is not None:
            self.reporter.close()
        if self.trajectory_reporter is not None:
            self.trajectory_reporter.close()
        if simulation is not None and self.runner.save_path is not None:
            self.runner.save(simulation)


def native_cv_forces(spec, system: openmm.System, cv_label: str = "the CV") -> list[openmm.Force]:
    """One ``CustomTorsionForce("theta")`` per component of a CV file of native torsions (``spec.extra["native"]``,
    written by :func:`openmm_plugin.bias.torsions.export_torsion_cv`), System atom indices; minimum-image bond
    vectors when the System is periodic, so a molecule that crosses the box keeps its angles.

    Why a CV file and not a list of atoms: the COLVAR names, periods, particle count and ranges then come from the
    same contract as on the other routes, and the same file runs on the python route (its TorchScript twin)."""
    torsions = (spec.extra.get("native") or {}).get("torsions")
    if not torsions:
        raise ConfigError(f"{cv_label}: route 'native' expected a CV file of OpenMM-native torsions "
                          "(openmm_plugin.bias.torsions.export_torsion_cv), found a CV without them (a learned CV "
                          "runs on route 'python' or 'torch')", key="route")
    if len(torsions) != int(spec.n_cvs) or not 1 <= len(torsions) <= 3:
        raise ConfigError(f"{cv_label}: route 'native' expected 1 to 3 torsions, one per CV component "
                          f"(OpenMM tables have at most 3 axes), found {len(torsions)} for {spec.n_cvs} components",
                          key="route")
    forces = []
    for quad in torsions:
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*[int(a) for a in quad], [])
        force.setUsesPeriodicBoundaryConditions(system.usesPeriodicBoundaryConditions())
        forces.append(force)
    return forces


def colvar_cv_names(spec) -> list[str]:
    """The COLVAR field of each CV component: the CV file's ``cv_names``, else ``cv0``, ``cv1``, ..."""
    return list(spec.extra.get("cv_names") or [f"cv{i}" for i in range(int(spec.n_cvs))])


def check_cv_matches_system(spec, system: openmm.System, cv_label: str = "the CV",
                            system_label: str = "the System") -> None:
    """:class:`ConfigError` (one line naming the CV file, the System's source and both counts) unless the System
    has the particle count the CV was exported for.

    Parameters
    ----------
    spec : cvlearn.export.CVSpec
    system : openmm.System
    cv_label, system_label : str
        Where each came from, for the message.
    """
    n_cv, n_system = int(spec.n_particles), int(system.getNumParticles())
    if n_cv != n_system:
        raise ConfigError(f"{cv_label}: CV expects {n_cv} particles, {system_label} has {n_system}", key="cv")


def _method_params(method: str, params, method_kwargs: dict):
    """The method's parameter object from ``params`` or from keyword arguments (lists become tuples)."""
    cls = params_class(method)
    if params is not None and method_kwargs:
        raise TypeError(f"bias_cv: give the {method} parameters as `params` or as keyword arguments, not both "
                        f"(found params and {sorted(method_kwargs)})")
    if params is not None or cls is None:
        if method_kwargs:
            raise TypeError(f"bias_cv: method {method!r} takes no parameters, found {sorted(method_kwargs)}")
        return params
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(method_kwargs) - names)
    if unknown:
        raise TypeError(f"bias_cv: unknown parameter(s) {unknown} for method {method!r}; allowed: {sorted(names)}")
    as_tuple = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v if isinstance(v, str) else (v,)  # noqa: E731
    tuples = {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}
    return cls(**{k: as_tuple(v) if k in tuples and v is not None else v for k, v in method_kwargs.items()})


def bias_cv(system: openmm.System, cv: str | Path, method: str = "opes-metad", *, temperature_k: float = 300.0,
            params=None, walls: WallParams | None = None, components: Sequence[int] | None = None, periods=None,
            range_margin_fraction: float = 0.3, walls_at_training_range: bool | None = False, route: str = "python",
            compile: bool | str = False, force_group: int = BIAS_GROUP, mts_substeps: int = 1,
            colvar: str | Path | None = None, report_interval_steps: int = 500, save_path: str | Path | None = None,
            save_every_steps: int | None = None, walkers_dir: str | Path | None = None, walker_id: int = 0,
            system_label: str = "the System", trajectory: str | Path | None = None, timestep_ps: float | None = None,
            guard=None, device="cpu", cuda_graphs: bool = False, native_grid_bins: int = NATIVE_GRID_BINS,
            **method_kwargs) -> BiasedCV:
    """Bias the exported CV in ``cv`` in ``system``: check the CV's contract, build the bias, add its force.

    Parameters
    ----------
    system : openmm.System
        The System to bias; the bias force is added to it (build the Simulation after this call).
    cv : str or Path
        An exported CV file (:func:`cvlearn.export.export_cv`).
    method : {"metad", "opes-metad", "opes-explore", "restraint", "walls"}
        The bias method.
    temperature_k : float
        Temperature, K (well-tempering, OPES).
    params : MetadParams, OPESParams or RestraintParams, optional
        The method's parameters as an object; or give them as keyword arguments (``**method_kwargs``).
    walls : WallParams, optional
        Upper/lower walls added to the method.
    components : sequence of int, optional
        CV components to bias (default all).
    periods : None, float or sequence, optional
        Per biased component; default the CV contract's ``component_periods``.
    range_margin_fraction : float
        Margin around the CV's training range (fraction of its width) for default metadynamics bounds and walls.
    walls_at_training_range : bool or None
        Walls at the training range ± margin (kappa ``walls.*_kappa_kjmol``, default 100 kJ/mol per CV unit²);
        None (``cvlearn bias``'s default; here False keeps ``bias`` the method's own object): when the CV file
        carries a training range and ``walls`` places no wall; a learned CV is trusted only where it was trained.
    route : {"python", "torch", "native"}
        PythonForce (live bias, one model call per step), TorchForce (refreshed at each deposition), or ``native``
        for a CV file of OpenMM-native CVs (:func:`openmm_plugin.bias.torsions.export_torsion_cv`): OpenMM computes
        the CVs and the bias is a table in a ``CustomCVForce`` (:mod:`openmm_plugin.bias.native`), at near the cost
        of unbiased MD.
    compile : bool or {"aot", "inductor"}
        Python route: compile the CV's eager twin (:class:`openmm_plugin.cv_evaluation.CVEvaluator`).
    force_group : int
        Force group of the bias (the slow group of an MTS integrator).
    mts_substeps : int
        k of ``make_integrator(..., bias_every_steps=k)``: paces, intervals and ``run`` steps are MD steps and
        must be multiples of k.
    colvar : str or Path, optional
        COLVAR file written by the reporter :meth:`BiasedCV.attach` adds.
    report_interval_steps : int
        MD steps between COLVAR rows.
    save_path : str or Path, optional
        ``.npz`` checkpoint (bias + OpenMM state) restored by ``attach`` when present.
    save_every_steps : int, optional
        MD steps between checkpoints (needs ``save_path``).
    walkers_dir : str or Path, optional
        Directory shared by multiple walkers; ``walker_id`` is this one's id.
    system_label : str
        Where the System came from, for messages.
    trajectory : str or Path, optional
        DCD written by ``attach``'s :class:`TrajectoryReporter`, a frame at every COLVAR row (frame k = row k).
    timestep_ps : float, optional
        The integrator's (inner) step, ps; needed with ``trajectory``.
    guard : openmm_plugin.bias.guard.ForceGuard, optional
        Cap on the per-atom bias force (PythonForce route), counted in the COLVAR and the log.
    device : str or torch.device
        Python route: where the CV runs (``cpu``, ``cuda``, ``cuda:N``), whatever the OpenMM platform (CV on the GPU
        with MD on the CPU platform is allowed). The torch route runs the CV on the Context's platform (CUDA: in its
        CUDA context), so it takes ``cpu`` here.
    cuda_graphs : bool
        Torch route: the TorchForce's ``useCUDAGraphs`` property (the CUDA platform replays the CV as a CUDA graph).
    native_grid_bins : int
        Native route: table points per CV period (spacing 2π/bins for torsions); keep OPES's smallest σ at two
        spacings or more (:mod:`openmm_plugin.bias.native`: cubic-spline error ~0.04 (Δ/σ)⁴ of the summed height).
    **method_kwargs
        Fields of the method's parameter class, e.g. ``sigma=0.1, barrier_kjmol=30, pace_steps=500`` for OPES.

    Returns
    -------
    BiasedCV
        ``.force``, ``.bias``, ``.runner``, ``.spec``, ``.cv``; ``.attach(simulation)``, ``.run(simulation, n)``.

    Examples
    --------
    >>> import openmm.app as app
    >>> from openmm_plugin import bias_cv
    >>> from openmm_plugin.bias.torsions import export_torsion_cv
    >>> from openmm_plugin.simulation import make_integrator
    >>> from systems import alanine_dipeptide
    >>> ala2 = alanine_dipeptide.build()
    >>> _ = export_torsion_cv("phi_psi.pt", alanine_dipeptide.phi_psi_indices(ala2.topology), ala2.topology)
    >>> biased = bias_cv(ala2.system, "phi_psi.pt", method="opes-metad", temperature_k=300, sigma=0.3,
    ...                  barrier_kjmol=30, pace_steps=50, colvar="COLVAR", report_interval_steps=50)
    >>> simulation = app.Simulation(ala2.topology, ala2.system, make_integrator(300, 1.0, 0.002, bias_group=1))
    >>> simulation.context.setPositions(ala2.positions_nm)
    >>> biased.attach(simulation)
    False
    >>> biased.run(simulation, 200)
    >>> biased.close()
    >>> biased.bias.periods.tolist()  # the torsion CV's contract made the kernels periodic
    [6.283185307179586, 6.283185307179586]
    """
    if route not in ROUTES:
        raise ConfigError(f"expected one of {list(ROUTES)}, found {route!r}", key="route")
    if compile and route != "python":
        raise ConfigError("compile: true needs route 'python' (a TorchForce runs TorchScript)", key="compile")
    check_device(device)  # "device: expected 'cpu', 'cuda' or 'cuda:N', found ..." before anything is built
    if str(device) != "cpu" and route != "python":
        raise ConfigError(f"expected 'cpu' with route {route!r} (a TorchForce or a native CV runs on the OpenMM "
                          f"platform's device: the CUDA platform runs it on its GPU), found {str(device)!r}",
                          key="device")
    if cuda_graphs and route != "torch":
        raise ConfigError(f"expected false with route {route!r} (useCUDAGraphs is a TorchForce property, route "
                          "'torch'), found true",
                          key="cuda_graphs")
    if guard is not None and route != "python":
        raise ConfigError(f"a bias-force guard needs route 'python' (route {route!r}: the bias forces never reach "
                          "Python)", key="force_guard_kjmol_nm")
    k = int(mts_substeps)
    for name, value in (("report_interval_steps", report_interval_steps), ("save_every_steps", save_every_steps)):
        if value is not None and int(value) % k:
            raise ConfigError(f"expected a multiple of mts_substeps={k}, found {value}", key=name)
    params = _method_params(method, params, method_kwargs)
    cv_label = str(cv)
    module, spec = load_cv(cv)
    check_cv_matches_system(spec, system, cv_label, system_label)
    bias = make_bias(method, spec.n_cvs, temperature_k=temperature_k, params=params, walls=walls,
                     components=components, periods=periods, spec=spec, range_margin_fraction=range_margin_fraction,
                     walls_at_training_range=walls_at_training_range, pace_divisor=k, cv_label=cv_label)
    callback, on_update, native = None, None, None
    if route == "native":
        native = native_bias_force(native_cv_forces(spec, system, cv_label), bias, native_grid_bins, -math.pi,
                                   math.pi, True, force_group=force_group, cv_names=colvar_cv_names(spec),
                                   system=system)
        force = native
    elif route == "python":
        module = load_eager_cv(cv) if compile else module
        force = python_bias_force(module, bias, force_group=force_group, compile=compile, system=system,
                                  device=device)
        system.addForce(force)
        callback = force.callback
    else:
        force = TorchBiasForce(system, module, bias, force_group=force_group, cuda_graphs=cuda_graphs)
        on_update = force.refresh if bias.adaptive else None
    runner = BiasRunner(bias, cv=module if callback is None and native is None else None, callback=callback,
                        native=native, save_path=save_path,
                        save_every_steps=None if save_every_steps is None else int(save_every_steps) // k,
                        walkers_dir=walkers_dir, walker_id=walker_id, on_update=on_update, guard=guard)
    return BiasedCV(bias=bias, force=force, runner=runner, cv=module, spec=spec, system=system,
                    colvar=None if colvar is None else Path(colvar), report_interval_steps=int(report_interval_steps),
                    mts_substeps=k, trajectory=None if trajectory is None else Path(trajectory),
                    timestep_ps=timestep_ps)
