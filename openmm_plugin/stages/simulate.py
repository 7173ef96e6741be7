"""``cvlearn simulate``: unbiased MD of a named system from ``systems/`` into ``<out>/<system>_T<K>_s<seed>.dcd/.pdb``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from openmm_plugin.simulation import MDResult, make_integrator, output_paths, run_md
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

    def __post_init__(self):
        if self.system not in SYSTEMS:
            raise ValueError(f"system: expected one of {SYSTEMS}, found {self.system!r}")
        if not self.ns > 0 or not self.report_interval_ps > 0:
            raise ValueError(f"ns and report_interval_ps: expected positive numbers, found {self.ns!r}, "
                             f"{self.report_interval_ps!r}")


def run_simulate(config: SimulateConfig) -> MDResult:
    """Build ``config.system``, run ``config.ns`` of Langevin MD, write a DCD frame every ``report_interval_ps``.

    Existing outputs are kept and not rebuilt.

    Parameters
    ----------
    config : SimulateConfig

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
    prefix = f"{config.out}/{system}_T{config.temperature_k:g}_s{config.seed}"
    if all(p.exists() for p in output_paths(prefix)):  # run_md reports the existing files; no build needed
        return run_md(None, None, None, None, out_prefix=prefix, n_steps=n_steps, report_interval_steps=interval,
                      desc=f"MD {system}")
    molecule = module.build(**build_options)
    return run_md(molecule.topology, molecule.system, molecule.positions_nm,
                  make_integrator(config.temperature_k, module.FRICTION_PER_PS, dt, seed=config.seed), out_prefix=prefix,
                  n_steps=n_steps, report_interval_steps=interval, platform=config.platform, seed=config.seed,
                  temperature_k=config.temperature_k, desc=f"MD {system}")


def fast_systems() -> list[str]:
    """The built-in systems that have CPU-affordable MD settings (``--fast``)."""
    return [name for name in SYSTEMS if hasattr(builtin_system(name), "FAST_BUILD")]
