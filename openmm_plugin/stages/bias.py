"""``cvlearn bias``: bias an exported learned CV on any System.

The System comes from exactly one source: ``system`` (a built-in, e.g. alanine dipeptide), ``system_xml`` + ``pdb``
(a serialized OpenMM System and its structure) or ``forcefield`` + ``pdb`` (force-field files applied to the PDB;
see :mod:`openmm_plugin.user_system`). Methods: ``metad``, ``opes-metad``, ``opes-explore``, ``restraint``
(umbrella window) and ``walls`` (walls only); walls from ``walls`` are added to any method. Periods and metadynamics
bounds left out come from the CV file's contract (:func:`openmm_plugin.bias.params.make_bias`). Routes: ``python``
(PythonForce, adaptive, one model call per step), ``torch`` (TorchForce; adaptive biases are refreshed at each
deposition) or ``native`` (a CV file of torsions, :func:`openmm_plugin.bias.torsions.export_torsion_cv`: OpenMM
computes them and the bias is a table refreshed at each deposition, near the cost of unbiased MD). Devices: the OpenMM ``platform`` (by name) runs the MD; the python route runs the CV on ``device``
(``cuda`` with platform ``CPU`` is allowed: CV on the GPU, MD on the CPU); the torch route runs it inside the
Context, on the CUDA platform in its CUDA context (``cuda_graphs`` replays it as a CUDA graph). ``mts_substeps``
k > 1 evaluates the bias force every k-th step (MTSLangevinIntegrator); step counts
in the config are always in MD steps of ``timestep_ps`` and must then be multiples of k. Outputs in ``out``:
COLVAR, bias_state.npz (bias + OpenMM checkpoint, saved every ``save_every_steps``; a rerun resumes from it),
final.pdb and summary.json, all written atomically; a finished run is skipped, or extended by a larger ``n_steps``. The set-up is
:func:`openmm_plugin.bias.setup.bias_cv`, the one-call Python API.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch

from cvlearn.config import check_input_file, check_output_dir
from cvlearn.distributed import check_device
from cvlearn.errors import ConfigError, RunError
from cvlearn.export import load_cv
from cvlearn.io import atomic_path, write_json_atomic
from cvlearn.run_dir import open_run
from openmm_plugin.bias.params import (METHODS, MetadParams, OPESParams, RestraintParams, WallParams, check_positive,
                                       make_bias)
from openmm_plugin.bias.guard import ForceGuard
from openmm_plugin.bias.native import MIN_GRID_BINS
from openmm_plugin.bias.setup import NATIVE_GRID_BINS, ROUTES, bias_cv
from openmm_plugin.cv_evaluation import COMPILE_CHOICES
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, make_simulation, platform_by_name
from openmm_plugin.user_system import check_system_source, load_system

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "BiasConfig", "MetadParams", "OPESParams", "RestraintParams", "WallParams", "build_bias",
           "quick_config", "run_bias"]


@dataclass(frozen=True)
class BiasConfig:
    """Settings of ``cvlearn bias`` (steps are MD steps of ``timestep_ps``; energies kJ/mol; K; nm; ps)."""

    cv: str = ""  # the exported CV file: required (no silent fallback to another run's CV)
    # the System: exactly one of `system`, `system_xml` + `pdb`, `forcefield` + `pdb`
    system: Optional[str] = None  # a built-in system (systems.BUILTIN_SYSTEMS)
    system_xml: Optional[str] = None  # a serialized openmm.System (XmlSerializer)
    forcefield: Optional[tuple[str, ...]] = None  # force-field XML files, e.g. [amber14-all.xml, amber14/tip3p.xml]
    pdb: Optional[str] = None  # the structure (positions, topology; its box for periodic Systems)
    nonbonded_method: Optional[str] = None  # forcefield: PME | NoCutoff | CutoffPeriodic | CutoffNonPeriodic | ...
    nonbonded_cutoff_nm: float = 1.0
    constraints: str = "HBonds"  # forcefield: none | HBonds | AllBonds | HAngles
    rigid_water: bool = True
    hydrogen_mass_amu: Optional[float] = None
    minimize: bool = False  # minimise before a fresh start (user PDBs are usually equilibrated)
    timestep_ps: Optional[float] = None  # default: the built-in system's, else 0.002
    friction_per_ps: Optional[float] = None  # default: the built-in system's, else 1.0
    out: str = "runs/bias"
    method: str = "opes-metad"
    route: str = "python"  # python | torch | native (a CV file of native torsions: export_torsion_cv)
    native_grid_bins: int = NATIVE_GRID_BINS  # native route: table points per 2π
    compile: Union[bool, str] = False  # python route: compile the CV's eager twin (true: ahead of time on the CPU,
    # torch.compile on a GPU; or 'aot' | 'inductor'; ala2 GNN CV: 0.29 vs 1.72 ms/step, bias_speed_pairs)
    device: str = "cpu"  # python route: where the CV runs (cpu | cuda | cuda:N), whatever the platform
    cuda_graphs: bool = False  # torch route on the CUDA platform: the TorchForce replays the CV as a CUDA graph
    components: Optional[tuple[int, ...]] = None  # CV components the bias (and walls) act on (default: all)
    periods: Optional[tuple[Optional[float], ...]] = None  # per biased component; None: the CV file's periods
    range_margin_fraction: float = 0.3  # margin around the CV's training range (default metad bounds, walls)
    # walls at the training range ± margin (kappa default 100); None: on for a CV file that carries its training
    # range (a learned CV: trusted only where it was trained) unless walls.upper_at/lower_at place them
    walls_at_training_range: Optional[bool] = None
    temperature_k: float = 300.0
    n_steps: int = 500_000
    report_interval_steps: int = 500
    save_every_steps: int = 50_000
    seed: int = 0
    mts_substeps: int = 1
    torch_threads: int = 1
    platform: str = "Reference"
    walkers_dir: Optional[str] = None
    walker_id: int = 0
    trajectory: bool = True  # trajectory.dcd: a frame at every COLVAR row (frame k = row k), for `cvlearn analyze`
    force_guard_kjmol_nm: Optional[float] = None  # cap on each atom's bias force (python route); None: no cap
    force_guard_mode: str = "cap"  # cap (count in COLVAR `guard.capped`) | stop (save a restartable state, exit 1)
    force_guard_max_temperature_k: Optional[float] = None  # stop (restartable) when the 2000-step mean T_kin exceeds it,
    # in either force_guard_mode (e.g. 1.5 x temperature_k: healthy ala2 at 300 K peaked at 395 K over 400 ps)
    metad: MetadParams = field(default_factory=MetadParams)
    opes: OPESParams = field(default_factory=OPESParams)
    restraint: RestraintParams = field(default_factory=RestraintParams)
    walls: WallParams = field(default_factory=WallParams)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, found {self.method!r}")
        if self.route not in ROUTES:
            raise ValueError(f"route: expected one of {list(ROUTES)}, found {self.route!r}")
        if self.compile not in COMPILE_CHOICES:
            raise ValueError(f"compile: expected true, false, 'aot' or 'inductor', found {self.compile!r}")
        if self.compile and self.route != "python":
            raise ValueError("compile: true needs route 'python' (a TorchForce runs TorchScript, which torch.compile "
                             "cannot compile)")
        try:
            check_device(self.device)  # "device: expected 'cpu', 'cuda' or 'cuda:N', found ..."
        except ConfigError as err:  # as ValueError "device: ...", so load_config prefixes the file
            raise ValueError(str(err)) from None
        if self.device != "cpu" and self.route != "python":
            raise ValueError(f"device: expected 'cpu' with route {self.route!r} (a TorchForce or a native CV runs on "
                             f"the platform's device: set platform: CUDA), found {self.device!r}")
        if self.cuda_graphs and (self.route != "torch" or self.platform != "CUDA"):
            raise ValueError(f"cuda_graphs: true needs route 'torch' and platform 'CUDA', found route {self.route!r} "
                             f"and platform {self.platform!r}")
        k = int(self.mts_substeps)
        if k < 1:
            raise ValueError(f"mts_substeps: expected >= 1, found {self.mts_substeps}")
        check_positive(self, "temperature_k", "n_steps", "report_interval_steps", "save_every_steps", "torch_threads",
                       "timestep_ps", "friction_per_ps", "nonbonded_cutoff_nm", "hydrogen_mass_amu",
                       "force_guard_kjmol_nm", "force_guard_max_temperature_k", "native_grid_bins")
        if self.route == "native" and (isinstance(self.native_grid_bins, bool) or
                                       not isinstance(self.native_grid_bins, int) or
                                       self.native_grid_bins < MIN_GRID_BINS):
            raise ValueError(f"native_grid_bins: expected an integer >= {MIN_GRID_BINS}, found "
                             f"{self.native_grid_bins!r}")
        if self.force_guard_mode not in ("cap", "stop"):
            raise ValueError(f"force_guard_mode: expected 'cap' or 'stop', found {self.force_guard_mode!r}")
        for key in ("force_guard_kjmol_nm", "force_guard_max_temperature_k"):
            if getattr(self, key) is not None and self.route != "python":
                raise ValueError(f"{key}: needs route 'python' (the guard lives in the PythonForce's callback)")
        if not 0 <= self.range_margin_fraction:
            raise ValueError(f"range_margin_fraction: expected a fraction >= 0, found {self.range_margin_fraction!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**31 - 2:
            raise ValueError(f"seed: expected an integer in [0, 2**31 - 3], found {self.seed!r}")
        if self.components is not None and (not self.components or len(set(self.components)) != len(self.components)
                                            or any(not isinstance(c, int) or c < 0 for c in self.components)):
            raise ValueError(f"components: expected distinct CV component indices >= 0, found {self.components!r}")
        if self.periods is not None and any(p is not None and not p >= 0 for p in self.periods):
            raise ValueError(f"periods: expected periods >= 0 (null or 0: not periodic), found {self.periods!r}")
        platform_by_name(self.platform)  # "platform: expected one of the installed OpenMM platforms [...]"
        check_output_dir(self.out, "out")
        for name in ("n_steps", "report_interval_steps", "save_every_steps"):
            if int(getattr(self, name)) % k:
                raise ValueError(f"{name}: expected a multiple of mts_substeps={k}, found {getattr(self, name)}")
        try:  # last, so a config without a System still reports its other errors first
            check_system_source(self.system, self.system_xml, self.pdb, self.forcefield, self.nonbonded_method,
                                self.constraints)
        except ConfigError as err:  # as ValueError "<key>: ...", so load_config prefixes the file
            raise ValueError(str(err)) from None

    def method_params(self):
        """The parameters of ``method`` (None for ``walls``)."""
        return {"metad": self.metad, "restraint": self.restraint, "walls": None}.get(self.method, self.opes)


QUICK_STEPS = 2000  # --quick: a smoke test of the whole set-up (every file written, a few depositions)


def quick_config(config: BiasConfig) -> BiasConfig:
    """``config`` cut to :data:`QUICK_STEPS` MD steps with rows, checkpoints and depositions to match."""
    k = int(config.mts_substeps)
    fit = lambda steps: max(k, min(int(steps), QUICK_STEPS // 10) // k * k)  # noqa: E731
    opes = config.opes
    stride = 2 * fit(opes.pace_steps) if opes.adaptive else None  # adaptive σ: estimated over two paces
    return dataclasses.replace(
        config, n_steps=QUICK_STEPS // k * k, report_interval_steps=fit(config.report_interval_steps),
        save_every_steps=fit(config.save_every_steps) * 5, metad=dataclasses.replace(config.metad,
                                                                                     pace_steps=fit(config.metad.pace_steps)),
        opes=dataclasses.replace(opes, pace_steps=fit(opes.pace_steps), adaptive_sigma_stride=stride))


def build_bias(config: BiasConfig, n_cvs: int, pace_divisor: int = 1, spec=None):
    """The bias of ``config`` on an ``n_cvs``-dimensional CV (see :func:`openmm_plugin.bias.params.make_bias`).

    Parameters
    ----------
    config : BiasConfig
    n_cvs : int
        Dimension of the exported CV.
    pace_divisor : int
        The MTS factor: paces in the config are MD steps, the runner counts outer steps.
    spec : cvlearn.export.CVSpec, optional
        The CV's contract (periods, training range).

    Returns
    -------
    Bias
    """
    return make_bias(config.method, n_cvs, temperature_k=config.temperature_k, params=config.method_params(),
                     walls=config.walls, components=config.components, periods=config.periods, spec=spec,
                     range_margin_fraction=config.range_margin_fraction,
                     walls_at_training_range=config.walls_at_training_range, pace_divisor=pace_divisor,
                     cv_label=config.cv or "the CV")


def _check_force_groups(system: openmm.System, k: int, source: str) -> None:
    """With MTS only groups 0 (every step) and the bias group are integrated: any other group would be dropped."""
    groups = sorted({f.getForceGroup() for f in system.getForces()} - {0})
    if k > 1 and groups:
        raise ConfigError(f"expected every force of {source} in force group 0 (mts_substeps={k} integrates only "
                          f"group 0 and the bias group {BIAS_GROUP}), found groups {groups}", key="mts_substeps")


def _guard(config: BiasConfig) -> ForceGuard | None:
    """The bias-force guard the config asks for: a force cap, a kinetic-temperature watch, or both."""
    if config.force_guard_kjmol_nm is None and config.force_guard_max_temperature_k is None:
        return None
    return ForceGuard(config.force_guard_kjmol_nm, mode=config.force_guard_mode,
                      max_kinetic_temperature_k=config.force_guard_max_temperature_k)


def run_bias(config: BiasConfig, *, restart_fresh: bool = False) -> dict:
    """Run (or resume, or skip) one biased run on the configured System.

    ``<out>/run.json`` records the config and the hashes of the CV file, the System (its XML) and the PDB: a
    rerun resumes from ``bias_state.npz`` (the COLVAR cut back to its time) or skips a finished run only when they
    match, and is refused with the difference otherwise. A larger ``n_steps`` extends the run, finished or not:
    MD, bias, COLVAR and trajectory go on from the last checkpoint as if it had been one run.

    Parameters
    ----------
    config : BiasConfig
    restart_fresh : bool
        Delete this run's outputs (not a shared ``walkers_dir``) and start over.

    Returns
    -------
    dict
        The summary also written to ``<out>/summary.json``: steps run, seconds, ms/step, ns/day, the biases'
        COLVAR values and the number of model calls.
    """
    out = Path(config.out)
    summary_path = out / "summary.json"
    torch.set_num_threads(int(config.torch_threads))
    check_input_file(config.cv, "cv", "exported CV")
    load_cv(config.cv)  # a CV file that does not load fails before the System is built
    loaded = load_system(system=config.system, system_xml=config.system_xml, pdb=config.pdb,
                         forcefield=config.forcefield, nonbonded_method=config.nonbonded_method,
                         nonbonded_cutoff_nm=config.nonbonded_cutoff_nm, constraints=config.constraints,
                         rigid_water=config.rigid_water, hydrogen_mass_amu=config.hydrogen_mass_amu,
                         timestep_ps=config.timestep_ps, friction_per_ps=config.friction_per_ps)
    molecule, system, k = loaded.molecule, loaded.molecule.system, int(config.mts_substeps)
    _check_force_groups(system, k, loaded.source)
    system_hash = _sha256(openmm.XmlSerializer.serialize(system))  # before the bias force goes in
    biased = bias_cv(system, config.cv, config.method, temperature_k=config.temperature_k,
                     params=config.method_params(), walls=config.walls, components=config.components,
                     periods=config.periods, range_margin_fraction=config.range_margin_fraction,
                     walls_at_training_range=config.walls_at_training_range, route=config.route,
                     compile=config.compile, force_group=BIAS_GROUP, mts_substeps=k, colvar=out / "COLVAR",
                     report_interval_steps=config.report_interval_steps, save_path=out / "bias_state.npz",
                     save_every_steps=config.save_every_steps, walkers_dir=config.walkers_dir,
                     walker_id=config.walker_id, system_label=loaded.source,
                     trajectory=out / "trajectory.dcd" if config.trajectory else None, timestep_ps=loaded.timestep_ps,
                     guard=_guard(config), device=config.device, cuda_graphs=config.cuda_graphs,
                     native_grid_bins=config.native_grid_bins)
    # every value is checked before the run is recorded
    run = open_run(out / "run.json", config, {"cv": config.cv, **loaded.input_files}, restart_fresh=restart_fresh,
                   outputs=[out / name for name in ("COLVAR", "trajectory.dcd", "bias_state.npz", "bias_state.stopped.npz",
                                                    "final.pdb", "summary.json")],
                   ignore=("out", "torch_threads", "device", "cuda_graphs"), extendable=("n_steps",),
                   extra={"system_xml": system_hash})
    if run.extended:
        logger.info("%s: extending the run from %d to %d MD steps", out, *run.extended["n_steps"])
    if run.finished and summary_path.is_file():
        logger.info("%s: run finished, skipping", out)
        return json.loads(summary_path.read_text())
    integrator = make_integrator(config.temperature_k, loaded.friction_per_ps, loaded.timestep_ps, seed=config.seed,
                                 bias_group=BIAS_GROUP, bias_every_steps=k)
    simulation = make_simulation(molecule.topology, system, integrator, config.platform)
    simulation.context.setPositions(molecule.positions_nm)
    if not biased.attach(simulation):  # a fresh start (else the checkpoint's state)
        if config.minimize:
            simulation.minimizeEnergy()
        simulation.context.setVelocitiesToTemperature(config.temperature_k * unit.kelvin, config.seed + 1)
    start_step = simulation.currentStep
    tick = time.perf_counter()
    # A resumed run warms the CV up (torch.compile: a 30-60 s compile) here, not in its first timed step, so that
    # ms/step is the steady cost (a fresh start has warmed up in setVelocitiesToTemperature).
    biased.runner.evaluator.values_from_context(simulation.context)
    warm_up_seconds = time.perf_counter() - tick
    t0 = time.perf_counter()
    biased.run(simulation, max(0, config.n_steps - start_step * k))
    seconds = time.perf_counter() - t0
    _check_not_blown_up(simulation, k)  # before the last checkpoint and final.pdb are written
    biased.close(simulation)
    md_steps = config.n_steps - start_step * k
    ms_per_step = seconds * 1e3 / md_steps if md_steps else float("nan")
    with atomic_path(out / "final.pdb") as tmp:
        with open(tmp, "w") as handle:
            app.PDBFile.writeFile(molecule.topology, simulation.context.getState(getPositions=True).getPositions(),
                                  handle)
    summary = {"config": dataclasses.asdict(config), "system": loaded.source, "md_steps_run": md_steps,
               "seconds": seconds, "warm_up_seconds": warm_up_seconds, "ms_per_step": ms_per_step,
               "ns_per_day": loaded.timestep_ps * 1e-3 / (ms_per_step * 1e-3) * 86400 if md_steps else float("nan"),
               "bias": {leaf.label: leaf.colvar_values() for leaf in biased.bias.leaves()},
               "model_calls": biased.runner.evaluator.calls,
               **({"force_guard": biased.runner.guard.summary()} if biased.runner.guard is not None else {})}
    write_json_atomic(summary_path, summary)
    if simulation.currentStep * k >= config.n_steps:  # only a run that really reached its end is finished
        run.mark_finished(md_steps=int(simulation.currentStep) * k)
    return summary


def _check_not_blown_up(simulation, k: int, max_nm: float = 1e3) -> None:
    """:class:`RunError` (``cvlearn`` exit 1) when positions are not finite or have flown beyond ``max_nm``."""
    x = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    extent = float(np.max(np.abs(x))) if np.all(np.isfinite(x)) else float("inf")
    if extent > max_nm:
        raise RunError(f"step {simulation.currentStep * k}: the simulation blew up (max |x| = {extent:.3g} nm); try "
                       "a smaller timestep or MTS factor, a weaker bias, or walls at the CV's trusted range")


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
