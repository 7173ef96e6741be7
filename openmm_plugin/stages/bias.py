"""``cvlearn bias``: bias an exported learned CV on a built-in system (``system``, default alanine dipeptide).

Methods: ``metad``, ``opes-metad``, ``opes-explore``, ``restraint`` (umbrella window) and ``walls`` (walls
only); walls from ``walls`` are added to any method. Routes: ``python`` (PythonForce, adaptive, one
model call per step) or ``torch`` (TorchForce; adaptive biases are refreshed at each deposition).
``mts_substeps`` k > 1 evaluates the bias force every k-th step (MTSLangevinIntegrator); step counts in
the config are always in MD steps of ``timestep_ps`` and must then be multiples of k. Outputs in
``out``: COLVAR, bias_state.npz (bias + OpenMM checkpoint, saved every ``save_every_steps``; a rerun
resumes from it), final.pdb and summary.json, all written atomically; a finished run is skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import torch

from cvlearn.config import check_input_file, check_output_dir
from cvlearn.errors import ConfigError, RunError
from cvlearn.export import load_cv, load_eager_cv
from cvlearn.io import atomic_path, write_json_atomic
from cvlearn.run_dir import open_run
from openmm_plugin.bias.base import BiasSum, OnComponents
from openmm_plugin.bias.metad import Metadynamics
from openmm_plugin.bias.opes import OPES
from openmm_plugin.bias.reporter import BiasReporter
from openmm_plugin.bias.restraints import HarmonicRestraint, Wall
from openmm_plugin.bias.runner import BiasRunner
from openmm_plugin.forces import TorchBiasForce, python_bias_force
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, make_simulation, platform_by_name
from systems import BUILTIN_SYSTEMS, builtin_system

logger = logging.getLogger(__name__)

METHODS = ("metad", "opes-metad", "opes-explore", "restraint", "walls")


@dataclass(frozen=True)
class MetadParams:
    """Well-tempered metadynamics (:class:`openmm_plugin.bias.Metadynamics`): widths and bounds in CV units,
    ``pace_steps`` in MD steps, ``grid_bins`` per CV (PLUMED: PACE, GRID_BIN)."""

    sigma: tuple[float, ...] = (0.1,)  # one value is broadcast to every biased component
    height_kjmol: float = 1.2
    bias_factor: Optional[float] = 8.0
    pace_steps: int = 500
    lower: tuple[float, ...] = (-5.0,)
    upper: tuple[float, ...] = (5.0,)
    grid_bins: Optional[tuple[int, ...]] = None
    use_grid: bool = True

    def __post_init__(self):
        _check_positive(self, "height_kjmol", "pace_steps", "sigma", "grid_bins")
        if self.bias_factor is not None and not self.bias_factor > 1:
            raise ValueError(f"bias_factor: expected > 1 (or null for plain metadynamics), found {self.bias_factor!r}")


@dataclass(frozen=True)
class OPESParams:
    """OPES (:class:`openmm_plugin.bias.OPES`): ``sigma`` in CV units, ``pace_steps`` in MD steps."""

    sigma: tuple[float, ...] = (0.1,)  # one value is broadcast to every biased component
    barrier_kjmol: float = 30.0
    bias_factor: Optional[float] = None
    pace_steps: int = 500
    compression_threshold: float = 1.0
    fixed_sigma: bool = False

    def __post_init__(self):
        _check_positive(self, "barrier_kjmol", "pace_steps", "sigma")
        if self.bias_factor is not None and not self.bias_factor > 1:
            raise ValueError(f"bias_factor: expected > 1 (or null for the default βΔE), found {self.bias_factor!r}")


@dataclass(frozen=True)
class RestraintParams:
    """Harmonic restraint (umbrella window): ``center`` in CV units, ``kappa_kjmol`` per CV unit²."""

    center: tuple[float, ...] = (0.0,)
    kappa_kjmol: tuple[float, ...] = (100.0,)

    def __post_init__(self):
        if any(not k >= 0 for k in self.kappa_kjmol):
            raise ValueError(f"kappa_kjmol: expected force constants >= 0, found {self.kappa_kjmol!r}")


@dataclass(frozen=True)
class WallParams:
    """PLUMED-style upper/lower walls at ``*_at`` (CV units); a kappa of 0 leaves that wall out."""

    upper_at: Optional[tuple[float, ...]] = None
    upper_kappa_kjmol: float = 0.0
    lower_at: Optional[tuple[float, ...]] = None
    lower_kappa_kjmol: float = 0.0
    exp: float = 2.0

    def __post_init__(self):
        for name in ("upper_kappa_kjmol", "lower_kappa_kjmol"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected a force constant >= 0, found {getattr(self, name)!r}")
        _check_positive(self, "exp")


@dataclass(frozen=True)
class BiasConfig:
    """Settings of ``cvlearn bias`` (steps are MD steps of the system's ``TIMESTEP_PS``; energies kJ/mol; K)."""

    cv: str = ""  # the exported CV file: required (no silent fallback to another run's CV)
    system: str = "alanine_dipeptide"  # a built-in system (systems.BUILTIN_SYSTEMS)
    out: str = "runs/bias"
    method: str = "opes-metad"
    route: str = "python"
    compile: bool = False  # python route: torch.compile the CV's eager twin (ala2: 0.73 vs 1.60 ms/step)
    components: Optional[tuple[int, ...]] = None  # CV components the bias (and walls) act on (default: all)
    periods: Optional[tuple[Optional[float], ...]] = None  # per biased component; None = not periodic
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
    metad: MetadParams = field(default_factory=MetadParams)
    opes: OPESParams = field(default_factory=OPESParams)
    restraint: RestraintParams = field(default_factory=RestraintParams)
    walls: WallParams = field(default_factory=WallParams)

    def __post_init__(self):
        if self.system not in BUILTIN_SYSTEMS:
            raise ValueError(f"system: expected one of the built-in systems {BUILTIN_SYSTEMS}, found {self.system!r}")
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, found {self.method!r}")
        if self.route not in ("python", "torch"):
            raise ValueError(f"route: expected 'python' or 'torch', found {self.route!r}")
        if self.compile and self.route != "python":
            raise ValueError("compile: true needs route 'python' (a TorchForce runs TorchScript, which torch.compile "
                             "cannot compile)")
        k = int(self.mts_substeps)
        if k < 1:
            raise ValueError(f"mts_substeps: expected >= 1, found {self.mts_substeps}")
        _check_positive(self, "temperature_k", "n_steps", "report_interval_steps", "save_every_steps", "torch_threads")
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


def _check_positive(config, *names: str) -> None:
    """Each named field (a number, or a tuple of numbers, or None) is > 0; NaN fails too."""
    for name in names:
        value = getattr(config, name)
        if value is not None and any(isinstance(v, bool) or not v > 0 for v in np.atleast_1d(value).tolist()):
            expected = "values > 0" if isinstance(value, tuple) else "an integer >= 1" if isinstance(value, int) \
                else "a value > 0"
            raise ValueError(f"{name}: expected {expected}, found {value!r}")


def build_bias(config: BiasConfig, n_cvs: int, pace_divisor: int = 1):
    """The bias of ``config`` on an ``n_cvs``-dimensional CV.

    Parameters
    ----------
    config : BiasConfig
    n_cvs : int
        Dimension of the exported CV.
    pace_divisor : int
        The MTS factor: paces in the config are MD steps, the runner counts outer steps.

    Returns
    -------
    Bias
        One bias, or a :class:`BiasSum` (method + walls), on the configured components.
    """
    if config.components is not None and any(c >= n_cvs for c in config.components):
        raise ConfigError(f"expected component indices in [0, {n_cvs}) of this {n_cvs}-dimensional CV "
                          f"({config.cv or 'the CV'}), found {list(config.components)}", key="components")
    components = list(range(n_cvs)) if config.components is None else [int(c) for c in config.components]
    d = len(components)
    periods = None if config.periods is None else _per_cv(config.periods, d, "periods")
    terms = []
    if config.method == "metad":
        p = config.metad
        if p.pace_steps % pace_divisor:
            raise ValueError(f"metad.pace_steps: expected a multiple of mts_substeps={pace_divisor}, found {p.pace_steps}")
        terms.append(Metadynamics(sigma=_per_cv(p.sigma, d, "metad.sigma"), height_kjmol=p.height_kjmol,
                                  pace_steps=p.pace_steps // pace_divisor, temperature_k=config.temperature_k,
                                  bias_factor=p.bias_factor, lower=_per_cv(p.lower, d, "metad.lower"),
                                  upper=_per_cv(p.upper, d, "metad.upper"), periods=periods,
                                  grid_bins=None if p.grid_bins is None else _per_cv(p.grid_bins, d, "metad.grid_bins"),
                                  use_grid=p.use_grid))
    elif config.method in ("opes-metad", "opes-explore"):
        p = config.opes
        if p.pace_steps % pace_divisor:
            raise ValueError(f"opes.pace_steps: expected a multiple of mts_substeps={pace_divisor}, found {p.pace_steps}")
        terms.append(OPES(sigma=_per_cv(p.sigma, d, "opes.sigma"), barrier_kjmol=p.barrier_kjmol,
                          pace_steps=p.pace_steps // pace_divisor,
                          temperature_k=config.temperature_k, bias_factor=p.bias_factor,
                          explore=config.method == "opes-explore", periods=periods,
                          compression_threshold=p.compression_threshold, fixed_sigma=p.fixed_sigma))
    elif config.method == "restraint":
        r = config.restraint
        terms.append(HarmonicRestraint(_per_cv(r.center, d, "restraint.center"),
                                       _per_cv(r.kappa_kjmol, d, "restraint.kappa_kjmol"), periods=periods))
    w = config.walls
    if w.upper_at is not None and w.upper_kappa_kjmol > 0:
        terms.append(Wall(_per_cv(w.upper_at, d, "walls.upper_at"), w.upper_kappa_kjmol, side="upper", exp=w.exp))
    if w.lower_at is not None and w.lower_kappa_kjmol > 0:
        terms.append(Wall(_per_cv(w.lower_at, d, "walls.lower_at"), w.lower_kappa_kjmol, side="lower", exp=w.exp))
    if not terms:
        raise ValueError(f"method {config.method!r}: nothing to bias (for 'walls' give walls.upper_at/lower_at and kappas)")
    if components != list(range(n_cvs)):
        terms = [OnComponents(t, components, n_cvs) for t in terms]
    return terms[0] if len(terms) == 1 else BiasSum(terms)


def _per_cv(values, d: int, key: str) -> list:
    """One value per biased component: a single value is broadcast to all ``d``; another length names ``key``."""
    values = np.atleast_1d(values).tolist()
    if len(values) == 1:
        return values * d
    if len(values) != d:
        raise ConfigError(f"expected 1 or {d} values (one per biased CV component), found {len(values)}: {values}",
                          key=key)
    return values


def run_bias(config: BiasConfig, *, restart_fresh: bool = False) -> dict:
    """Run (or resume, or skip) one biased run of ``config.system``.

    ``<out>/run.json`` records the config and the hashes of the CV file and the System: a rerun resumes from
    ``bias_state.npz`` (the COLVAR cut back to its time) or skips a finished run only when they match, and is
    refused with the difference otherwise.

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
    cv, spec = load_cv(config.cv)
    builtin = builtin_system(config.system)
    molecule = builtin.build()
    if int(cv.n_particles) != molecule.topology.getNumAtoms():
        raise ValueError(f"{config.cv}: CV expects {int(cv.n_particles)} particles, system {config.system} has "
                         f"{molecule.topology.getNumAtoms()}")
    k = int(config.mts_substeps)
    bias = build_bias(config, int(cv.n_cvs), pace_divisor=k)  # every value checked before the run is recorded
    run = open_run(out / "run.json", config, {"cv": config.cv}, restart_fresh=restart_fresh,
                   outputs=[out / name for name in ("COLVAR", "bias_state.npz", "final.pdb", "summary.json")],
                   ignore=("out", "torch_threads"),
                   extra={"system_xml": _sha256(openmm.XmlSerializer.serialize(molecule.system))})
    if run.finished and summary_path.is_file():
        logger.info("%s: run finished, skipping", out)
        return json.loads(summary_path.read_text())
    system = molecule.system
    callback, on_update = None, None
    if config.route == "python":
        force = python_bias_force(load_eager_cv(config.cv) if config.compile else cv, bias, force_group=BIAS_GROUP,
                                  compile=config.compile)
        system.addForce(force)
        callback = force.callback
    else:
        torch_force = TorchBiasForce(system, cv, bias, force_group=BIAS_GROUP)
        on_update = torch_force.refresh if bias.adaptive else None
    integrator = make_integrator(config.temperature_k, builtin.FRICTION_PER_PS, builtin.TIMESTEP_PS, seed=config.seed,
                                 bias_group=BIAS_GROUP, bias_every_steps=k)
    simulation = make_simulation(molecule.topology, system, integrator, config.platform)
    runner = BiasRunner(bias, cv=cv, callback=callback, save_path=out / "bias_state.npz",
                        save_every_steps=config.save_every_steps // k, walkers_dir=config.walkers_dir,
                        walker_id=config.walker_id, on_update=on_update)
    names = spec.extra.get("cv_names") or [f"cv{i}" for i in range(int(cv.n_cvs))]
    reporter = BiasReporter(out / "COLVAR", bias, runner.evaluator, config.report_interval_steps // k, cv_names=names)
    runner.on_save = reporter.flush  # the COLVAR on disk always reaches the checkpoint
    if not runner.restore(simulation):
        simulation.context.setPositions(molecule.positions_nm)
        simulation.context.setVelocitiesToTemperature(config.temperature_k * unit.kelvin, config.seed + 1)
    else:
        logger.info("resumed at step %d (outer steps)", simulation.currentStep)
    reporter.keep_until(simulation.context.getState().getTime().value_in_unit(unit.picosecond))
    simulation.reporters.append(reporter)
    total_outer = config.n_steps // k
    start_step = simulation.currentStep
    t0 = time.perf_counter()
    runner.step(simulation, max(0, total_outer - start_step))
    seconds = time.perf_counter() - t0
    _check_not_blown_up(simulation, k)  # before the last checkpoint and final.pdb are written
    reporter.close()
    runner.save(simulation)
    md_steps = (total_outer - start_step) * k
    ms_per_step = seconds * 1e3 / md_steps if md_steps else float("nan")
    with atomic_path(out / "final.pdb") as tmp:
        with open(tmp, "w") as handle:
            app.PDBFile.writeFile(molecule.topology, simulation.context.getState(getPositions=True).getPositions(), handle)
    summary = {"config": dataclasses.asdict(config), "md_steps_run": md_steps, "seconds": seconds,
               "ms_per_step": ms_per_step, "ns_per_day": builtin.TIMESTEP_PS * 1e-3 / (ms_per_step * 1e-3) * 86400
               if md_steps else float("nan"), "bias": {leaf.label: leaf.colvar_values() for leaf in bias.leaves()},
               "model_calls": runner.evaluator.calls}
    write_json_atomic(summary_path, summary)
    if simulation.currentStep >= total_outer:  # only a run that really reached its end is finished
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
