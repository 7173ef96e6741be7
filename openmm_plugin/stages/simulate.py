"""``cvlearn simulate``: unbiased MD of a named system from ``systems/`` into ``<out>/<system>_T<K>_s<seed>.dcd/.pdb``."""

from __future__ import annotations

import argparse
import importlib
import logging

from openmm_plugin.simulation import MDResult, output_paths, run_md

logger = logging.getLogger(__name__)

SYSTEMS = ("alanine_dipeptide", "pentapeptide_wlall", "lambda6_85")


def simulate_system(system: str, *, ns: float, temperature_k: float, seed: int, out: str,
                    report_interval_ps: float = 1.0, platform: str = "Reference", fast: bool = False) -> MDResult:
    """Build ``system``, run ``ns`` nanoseconds of Langevin MD and write a DCD frame every ``report_interval_ps``.

    ``fast`` uses the system's CPU-affordable settings (``FAST_BUILD`` options and ``FAST_TIMESTEP_PS``, e.g.
    λ6-85: a 1.5 nm OBC cutoff, 3-amu hydrogens, 4 fs steps). Existing outputs are kept and not rebuilt."""
    if system not in SYSTEMS:
        raise ValueError(f"--system: expected one of {SYSTEMS}, found {system!r}")
    if not ns > 0 or not report_interval_ps > 0:
        raise ValueError(f"--ns and --report-interval-ps: expected positive numbers, found {ns!r}, {report_interval_ps!r}")
    module = importlib.import_module(f"systems.{system}")
    if fast and not hasattr(module, "FAST_BUILD"):
        raise ValueError(f"--fast: {system} has no CPU-affordable settings (only {fast_systems()} do)")
    build_options, dt = (module.FAST_BUILD, module.FAST_TIMESTEP_PS) if fast else ({}, module.TIMESTEP_PS)
    n_steps = max(1, round(ns * 1000.0 / dt))
    interval = max(1, min(n_steps, round(report_interval_ps / dt)))
    prefix = f"{out}/{system}_T{temperature_k:g}_s{seed}"
    if all(p.exists() for p in output_paths(prefix)):  # run_md reports the existing files; no build needed
        return run_md(None, None, None, None, out_prefix=prefix, n_steps=n_steps, report_interval_steps=interval,
                      desc=f"MD {system}")
    molecule = module.build(**build_options)
    return run_md(molecule.topology, molecule.system, molecule.positions_nm,
                  module.make_integrator(temperature_k=temperature_k, seed=seed, timestep_ps=dt), out_prefix=prefix,
                  n_steps=n_steps, report_interval_steps=interval, platform=platform, seed=seed,
                  temperature_k=temperature_k, desc=f"MD {system}")


def fast_systems() -> list[str]:
    """The built-in systems that have CPU-affordable MD settings (``--fast``)."""
    return [name for name in SYSTEMS if hasattr(importlib.import_module(f"systems.{name}"), "FAST_BUILD")]


def _run(args: argparse.Namespace) -> int:
    result = simulate_system(args.system, ns=args.ns, temperature_k=args.temperature, seed=args.seed, out=args.out,
                             report_interval_ps=args.report_interval_ps, platform=args.platform, fast=args.fast)
    print(f"trajectory: {result.trajectory_path} ({result.n_frames} frames)"
          + (" [existed, skipped]" if result.skipped else f", {result.ns_per_day:.1f} ns/day"))
    print(f"topology:   {result.topology_path}")
    return 0


def add_simulate_parser(commands) -> None:
    """Register ``simulate`` on the CLI's sub-parsers."""
    p = commands.add_parser("simulate", help="unbiased MD of a built-in system (trajectory DCD + PDB)")
    p.add_argument("--system", required=True, choices=SYSTEMS)
    p.add_argument("--ns", type=float, required=True, help="simulated time in ns")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/md", help="output directory (default: runs/md)")
    p.add_argument("--report-interval-ps", type=float, default=1.0, help="ps between frames (default 1)")
    p.add_argument("--platform", default="Reference", help="OpenMM platform (default Reference; λ6-85 runs faster on CPU)")
    p.add_argument("--fast", action="store_true",
                   help="the system's CPU-affordable settings (λ6-85: 1.5 nm OBC cutoff, 3-amu hydrogens, 4 fs steps)")
    p.set_defaults(func=_run)
