"""``cvlearn simulate``: unbiased MD of a named system from ``systems/`` into ``<out>/<system>_T<K>_s<seed>.dcd/.pdb``."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import openmm

from cvlearn.config import check_output_dir
from cvlearn.run_dir import open_run
from openmm_plugin.simulation import MDResult, partial_paths, make_integrator, output_paths, platform_by_name, run_md
from systems import BUILTIN_SYSTEMS, builtin_system

logger = logging.getLogger(__name__)

SYSTEMS = BUILTIN_SYSTEMS


@dataclass(frozen=True)
class SimulateConfig:
    """Settings of ``cvlearn simulate``.

    ``fast`` uses the system's CPU-affordable settings (``FAST_BUILD`` options and ``FAST_TIMESTEP_PS``, e.g.
    λ6-85: a 1.5 nm OBC cutoff, 3-amu hydrogens, 4 fs steps).
    """

    system: str = "alanine_dipeptide"  # a built-in system (systems.BUILTIN_SYSTEMS)
    ns: float = 1.0
    temperature_k: float = 300.0
    seed: int = 0
    out: str = "runs/md"
    report_interval_ps: float = 1.0
    platform: str = "Reference"
    fast: bool = False
    checkpoint_interval_ps: float = 10.0  # an OpenMM checkpoint this often: a killed run resumes from it

    def __post_init__(self):
        if self.system not in SYSTEMS:
            raise ValueError(f"system: expected one of {SYSTEMS}, found {self.system!r}")
        if not self.ns > 0 or not self.report_interval_ps > 0:
            raise ValueError(f"ns and report_interval_ps: expected positive numbers, found {self.ns!r}, "
                             f"{self.report_interval_ps!r}")
        if not self.checkpoint_interval_ps > 0:
            raise ValueError(f"checkpoint_interval_ps: expected a positive number, found {self.checkpoint_interval_ps!r}")
        if not 0 < self.ns < float("inf"):
            raise ValueError(f"ns: expected a finite positive number, found {self.ns!r}")
        if not 0 < self.temperature_k < float("inf"):
            raise ValueError(f"temperature_k: expected a temperature > 0 K, found {self.temperature_k!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**31 - 1:
            raise ValueError(f"seed: expected an integer in [0, 2**31 - 2], found {self.seed!r}")
        platform_by_name(self.platform)  # "platform: expected one of the installed OpenMM platforms [...]"
        check_output_dir(self.out, "out")  # before any compute, not when the trajectory is written


def output_prefix(config: SimulateConfig) -> str:
    """``<out>/<system>_T<K>_s<seed>``: the path of a run's files (``.dcd``, ``.pdb``, ``.run.json``) less suffix."""
    return f"{config.out}/{config.system}_T{config.temperature_k:g}_s{config.seed}"


def run_simulate(config: SimulateConfig, *, restart_fresh: bool = False) -> MDResult:
    """Build ``config.system``, run ``config.ns`` of Langevin MD, write a DCD frame every ``report_interval_ps``.

    The run is recorded in ``<prefix>.run.json`` (config + hash of the built System and positions). A rerun under
    the same record resumes from the last checkpoint (every ``checkpoint_interval_ps``) and appends to the
    trajectory, or is skipped when finished; under another config it is refused with the difference.

    Parameters
    ----------
    config : SimulateConfig
    restart_fresh : bool
        Delete this run's outputs and checkpoint and start over.

    Returns
    -------
    MDResult
        Paths of ``<out>/<system>_T<K>_s<seed>.dcd`` / ``.pdb``, frame count and speed.
    """
    system = config.system
    module = builtin_system(system)
    if config.fast and not hasattr(module, "FAST_BUILD"):
        raise ValueError(f"--fast: {system} has no CPU-affordable settings (only {fast_systems()} do)")
    build_options, dt = (module.FAST_BUILD, module.FAST_TIMESTEP_PS) if config.fast else ({}, module.TIMESTEP_PS)
    n_steps = max(1, round(config.ns * 1000.0 / dt))
    interval = max(1, min(n_steps, round(config.report_interval_ps / dt)))
    prefix = output_prefix(config)
    molecule = module.build(**build_options)
    identity = {"system_xml": _sha256(openmm.XmlSerializer.serialize(molecule.system)),
                "positions_nm": _sha256(np.ascontiguousarray(molecule.positions_nm, dtype=np.float64).tobytes())}
    run = open_run(prefix + ".run.json", config, outputs=[*output_paths(prefix), *partial_paths(prefix)],
                   restart_fresh=restart_fresh, ignore=("out", "checkpoint_interval_ps"), extra=identity)
    result = run_md(molecule.topology, molecule.system, molecule.positions_nm,
                    make_integrator(config.temperature_k, module.FRICTION_PER_PS, dt, seed=config.seed),
                    out_prefix=prefix, n_steps=n_steps, report_interval_steps=interval, platform=config.platform,
                    seed=config.seed, temperature_k=config.temperature_k, desc=f"MD {system}",
                    checkpoint_every_steps=max(1, round(config.checkpoint_interval_ps / dt)))
    if not run.finished:
        run.mark_finished(n_frames=result.n_frames)
    return result


def _sha256(data: str | bytes) -> str:
    return "sha256:" + hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def fast_systems() -> list[str]:
    """The built-in systems that have CPU-affordable MD settings (``--fast``)."""
    return [name for name in SYSTEMS if hasattr(builtin_system(name), "FAST_BUILD")]
