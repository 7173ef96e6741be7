"""The one place that builds integrators and Simulations, and a small, generic MD runner.

:func:`make_integrator` gives a Langevin integrator (middle scheme), or an MTS Langevin integrator whose
bias force group is evaluated every ``bias_every_steps`` inner steps; :func:`make_simulation` picks the
platform by name. :func:`run_md` writes ``<out_prefix>.dcd`` (one frame every ``report_interval_steps``)
and ``<out_prefix>.pdb`` (topology + starting positions), and skips the run when both already exist. The
trajectory grows as ``<out_prefix>.part.dcd`` and is renamed at the real end; with ``checkpoint_every_steps``
an OpenMM checkpoint (``<out_prefix>.chk.npz``) lets a killed run resume and append without duplicates. A biased run plugs in through ``advance`` (e.g. ``meta.step``) and a CV
reporter through ``on_report``.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
from cvlearn.io import atomic_path, remove_stale_temporaries
from cvlearn.progress import progress_bar

logger = logging.getLogger(__name__)

BIAS_GROUP = 1  # the force group of bias forces: the slow group of the MTS integrator
_SECONDS_PER_DAY = 86400.0
_NS_PER_PS = 1e-3


@dataclass
class MDResult:
    """What a run produced and how fast it went (timings cover ``advance`` calls only).

    Attributes
    ----------
    trajectory_path, topology_path : Path
        ``<out_prefix>.dcd`` and ``<out_prefix>.pdb``.
    n_steps, n_frames : int
        Steps run (integrator steps) and frames written.
    seconds, ms_per_step, ns_per_day : float
        Wall time of the stepping (s), per step (ms) and speed (ns/day); NaN when the run was skipped.
    skipped : bool
        The outputs existed and nothing ran.
    """

    trajectory_path: Path
    topology_path: Path
    n_steps: int
    n_frames: int
    seconds: float
    ms_per_step: float
    ns_per_day: float
    skipped: bool


def output_paths(out_prefix: str | Path) -> tuple[Path, Path]:
    """``(<out_prefix>.dcd, <out_prefix>.pdb)`` as Paths; the prefix may itself contain dots."""
    prefix = str(out_prefix)
    return Path(prefix + ".dcd"), Path(prefix + ".pdb")


def partial_paths(out_prefix: str | Path) -> tuple[Path, Path]:
    """``(<out_prefix>.part.dcd, <out_prefix>.chk.npz)``: the trajectory while it is written, and its checkpoint."""
    prefix = str(out_prefix)
    return Path(prefix + ".part.dcd"), Path(prefix + ".chk.npz")


def _save_md_checkpoint(path: Path, dcd_handle, context, n_frames: int, seconds: float, start_positions,
                        n_steps: int, report_interval_steps: int, checkpoint_state=None) -> None:
    """Flush the trajectory (and ``checkpoint_state.on_save``, e.g. a COLVAR) to disk, then record the OpenMM
    checkpoint with the trajectory's length and ``checkpoint_state.state_dict()`` (e.g. the hills) in one file."""
    extra = {}
    if checkpoint_state is not None:
        if getattr(checkpoint_state, "on_save", None) is not None:
            checkpoint_state.on_save()
        extra = {f"state/{k}": v for k, v in checkpoint_state.state_dict().items()}
    dcd_handle.flush()
    os.fsync(dcd_handle.fileno())
    checkpoint = context.createCheckpoint()
    context.loadCheckpoint(checkpoint)  # go on as a resumed run would: no forces cached from before (e.g. new hills)
    state = {"openmm": np.frombuffer(checkpoint, dtype=np.uint8),
             "n_frames": np.array(n_frames), "dcd_bytes": np.array(dcd_handle.tell()), "seconds": np.array(seconds),
             "start_positions_nm": np.asarray(start_positions.value_in_unit(u.nanometer), dtype=np.float64),
             "n_steps": np.array(n_steps), "report_interval_steps": np.array(report_interval_steps), **extra}
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **state)


def _load_md_checkpoint(path: Path, part_path: Path, n_steps: int, report_interval_steps: int) -> dict | None:
    """The checkpoint of an interrupted run of the same length and frame interval, or None (start over)."""
    if not path.is_file() or not part_path.is_file():
        return None
    with np.load(path) as data:
        state = {k: data[k] for k in data.files}
    found = (int(state["n_steps"]), int(state["report_interval_steps"]))
    if found != (n_steps, report_interval_steps):
        raise ValueError(f"{path}: checkpoint of a run with (n_steps, report_interval_steps) = {found}, this run "
                         f"has {(n_steps, report_interval_steps)}; delete it to start over")
    if part_path.stat().st_size < int(state["dcd_bytes"]):
        raise ValueError(f"{part_path}: shorter ({part_path.stat().st_size} bytes) than at the checkpoint "
                         f"{path} ({int(state['dcd_bytes'])} bytes); delete both to start over")
    return {"openmm": state["openmm"].tobytes(), "n_frames": int(state["n_frames"]),
            "dcd_bytes": int(state["dcd_bytes"]), "seconds": float(state["seconds"]),
            "start_positions_nm": state["start_positions_nm"],
            "state": {k[6:]: v for k, v in state.items() if k.startswith("state/")}}


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, found {value!r}")
    return int(value)


def make_integrator(temperature_k: float, friction_per_ps: float, timestep_ps: float, *, seed: int = 0,
                    bias_group: int | None = None, bias_every_steps: int = 1) -> openmm.Integrator:
    """Langevin dynamics with a fixed random seed; with ``bias_every_steps`` k > 1, multiple time steps.

    OpenMM reads a random-number seed of 0 as "pick a new one per Context" (not reproducible), so the
    integrator gets ``seed + 1``: every ``seed >= 0`` gives a distinct, reproducible noise stream.

    Parameters
    ----------
    temperature_k : float
        Bath temperature, K.
    friction_per_ps : float
        Friction coefficient, 1/ps.
    timestep_ps : float
        The (inner) MD time step, ps.
    seed : int
        Random seed in ``[0, 2**31 - 2]``.
    bias_group : int, optional
        Force group of the bias force; required when ``bias_every_steps > 1``. Every other force must be in
        group 0.
    bias_every_steps : int
        k: the bias group is evaluated once per outer step of ``k * timestep_ps`` and group 0 every inner step
        (``openmm.MTSLangevinIntegrator``); 1 gives ``openmm.LangevinMiddleIntegrator``.

    Returns
    -------
    openmm.Integrator
        Its ``getStepSize()`` is the outer step ``k * timestep_ps``; ``simulation.step(n)`` makes ``n * k`` MD
        steps.
    """
    if isinstance(seed, bool) or int(seed) != seed or not 0 <= seed < 2**31 - 1:
        raise ValueError(f"seed: expected an integer in [0, 2**31 - 2], found {seed!r}")
    k = _check_positive_int("bias_every_steps", bias_every_steps)
    if not temperature_k > 0 or not friction_per_ps > 0 or not timestep_ps > 0:
        raise ValueError(f"temperature_k, friction_per_ps, timestep_ps: expected positive numbers, found "
                         f"{temperature_k!r}, {friction_per_ps!r}, {timestep_ps!r}")
    if k == 1:
        integrator = openmm.LangevinMiddleIntegrator(temperature_k * u.kelvin, friction_per_ps / u.picosecond,
                                                     timestep_ps * u.picosecond)
    else:
        if bias_group is None or not 0 < int(bias_group) < 32:
            raise ValueError(f"bias_group: expected a force group in [1, 31] with bias_every_steps={k}, "
                             f"found {bias_group!r}")
        integrator = openmm.MTSLangevinIntegrator(temperature_k * u.kelvin, friction_per_ps / u.picosecond,
                                                  k * timestep_ps * u.picosecond, [(0, k), (int(bias_group), 1)])
    integrator.setRandomNumberSeed(int(seed) + 1)
    return integrator


def make_simulation(topology: app.Topology, system: openmm.System, integrator: openmm.Integrator,
                    platform: str = "Reference") -> app.Simulation:
    """An ``app.Simulation`` on the OpenMM platform named ``platform``.

    Parameters
    ----------
    topology : app.Topology
    system : openmm.System
    integrator : openmm.Integrator
        E.g. from :func:`make_integrator`.
    platform : str
        ``"Reference"``, ``"CPU"``, ``"CUDA"``, ``"OpenCL"``, ... (must be installed).

    Returns
    -------
    app.Simulation
    """
    return app.Simulation(topology, system, integrator, platform_by_name(platform))


def platform_by_name(name: str) -> openmm.Platform:
    """The installed OpenMM platform called ``name``; the error lists the installed ones."""
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name not in names:
        raise ValueError(f"platform: expected one of the installed OpenMM platforms {names}, found {name!r}")
    return openmm.Platform.getPlatformByName(name)


def run_md(
    topology: app.Topology | None,
    system: openmm.System | None,
    positions_nm: np.ndarray | None,
    integrator: openmm.Integrator | None,
    *,
    out_prefix: str | Path,
    n_steps: int,
    report_interval_steps: int,
    platform: str = "Reference",
    seed: int = 0,
    temperature_k: float | None = None,
    minimize: bool = False,
    advance: Callable[[app.Simulation, int], None] | None = None,
    on_report: Callable[[app.Simulation, int], None] | None = None,
    simulation: app.Simulation | None = None,
    progress: bool = True,
    desc: str = "MD",
    timestep_ps: float | None = None,
    checkpoint_every_steps: int | None = None,
    checkpoint_state=None,
) -> MDResult:
    """Run ``n_steps`` of MD and write a DCD frame every ``report_interval_steps`` steps; returns an :class:`MDResult`.

    With ``simulation`` given, its context is used as is (``topology``, ``system`` and
    ``integrator`` may then be None); ``positions_nm`` (if given) replaces its positions.
    Velocities are drawn at ``temperature_k`` (default: the integrator's temperature) with ``seed``.
    ``advance(simulation, n)`` defaults to ``simulation.step(n)``; ``on_report(simulation, i)`` is
    called after frame ``i`` (0-based) is written. ``timestep_ps`` (default: the integrator's step
    size, the outer step for multiple-time-step integrators) is only used for ns/day and the DCD header.

    Parameters
    ----------
    topology, system, integrator
        What :func:`make_simulation` needs (None when ``simulation`` is given).
    positions_nm : np.ndarray or None
        ``[n_particles, 3]`` start positions, nm.
    out_prefix : str or Path
        Writes ``<out_prefix>.dcd`` and ``<out_prefix>.pdb``; both existing: the run is skipped.
    n_steps, report_interval_steps : int
        Steps in all and between frames (integrator steps: outer steps with MTS).
    platform : str
        OpenMM platform name.
    seed : int
        Seed of the initial velocities.
    temperature_k : float, optional
        Temperature of the initial velocities, K.
    minimize : bool
        Minimise the energy first.
    advance, on_report : callable, optional
        ``advance(simulation, n)`` (e.g. ``BiasRunner.step``) and ``on_report(simulation, frame)``.
    simulation : app.Simulation, optional
        An existing simulation to continue.
    progress : bool
        Progress bar.
    desc : str
        Name of the run in logs.
    timestep_ps : float, optional
        Step per ``n_steps`` unit, ps (for ns/day and the DCD header).
    checkpoint_every_steps : int, optional
        Save an OpenMM checkpoint (state + integrator RNG) to ``<out_prefix>.chk.npz`` at the first frame after
        every this many steps, and resume from it when it exists: the run continues from the checkpoint and
        appends to the trajectory, so a killed run loses at most this many steps. State outside the Context (an
        ``advance`` such as ``BiasRunner.step``) needs ``checkpoint_state``. Without it a rerun starts over.
    checkpoint_state : object, optional
        E.g. a ``BiasRunner``: its ``state_dict()`` goes into the same checkpoint, ``load_state_dict(state, source)``
        restores it, and its ``on_save()`` (e.g. ``BiasReporter.flush``) runs first, so a COLVAR reaches the checkpoint.

    Returns
    -------
    MDResult
    """
    n_steps = _check_positive_int("n_steps", n_steps)
    report_interval_steps = _check_positive_int("report_interval_steps", report_interval_steps)
    if report_interval_steps > n_steps:
        raise ValueError(
            f"report_interval_steps: expected at most n_steps={n_steps} (else no frame is written), "
            f"found {report_interval_steps}"
        )
    if checkpoint_every_steps is not None:
        checkpoint_every_steps = _check_positive_int("checkpoint_every_steps", checkpoint_every_steps)
    trajectory_path, topology_path = output_paths(out_prefix)
    for path in (trajectory_path, topology_path, *partial_paths(out_prefix)):
        remove_stale_temporaries(path)  # left by a kill during an atomic write of an earlier run

    if trajectory_path.exists() and topology_path.exists():
        from cvlearn.data.trajectories import trajectory_frame_count

        n_frames = trajectory_frame_count(trajectory_path, topology_path)
        logger.info("%s: %s and %s exist (%d frames), skipping", desc, trajectory_path, topology_path, n_frames)
        return MDResult(trajectory_path, topology_path, n_steps, n_frames, 0.0, math.nan, math.nan, True)

    if simulation is None:
        if topology is None or system is None or integrator is None or positions_nm is None:
            raise ValueError("run_md: without `simulation`, topology, system, positions_nm and integrator are required")
        simulation = make_simulation(topology, system, integrator, platform)
    elif integrator is not None and integrator is not simulation.integrator:
        raise ValueError("integrator: expected None or the integrator of `simulation`, found another integrator")
    topology, system, integrator = simulation.topology, simulation.system, simulation.integrator
    context = simulation.context

    if positions_nm is not None:
        positions_nm = np.asarray(positions_nm, dtype=np.float64)
        if positions_nm.shape != (system.getNumParticles(), 3):
            raise ValueError(
                f"positions_nm: expected shape ({system.getNumParticles()}, 3), found {positions_nm.shape}"
            )
        context.setPositions(positions_nm * u.nanometer)
    if minimize:
        simulation.minimizeEnergy()
    if temperature_k is None:
        if not hasattr(integrator, "getTemperature"):
            raise ValueError(
                f"temperature_k: required because {type(integrator).__name__} has no getTemperature()"
            )
        temperature_k = integrator.getTemperature().value_in_unit(u.kelvin)
    if hasattr(integrator, "getRandomNumberSeed") and integrator.getRandomNumberSeed() == 0:
        logger.warning("%s: integrator random seed is 0, so OpenMM picks one per Context: not reproducible", desc)
    context.setVelocitiesToTemperature(temperature_k * u.kelvin, int(seed))
    if timestep_ps is None:
        timestep_ps = integrator.getStepSize().value_in_unit(u.picosecond)
    advance = advance if advance is not None else (lambda sim, n: sim.step(n))

    start_positions = context.getState(getPositions=True).getPositions()
    periodic = topology.getPeriodicBoxVectors() is not None
    n_frames = n_steps // report_interval_steps
    remainder = n_steps - n_frames * report_interval_steps
    logger.info(
        "%s: %d steps (%.3f ns) at %.1f K on %s, %d frames -> %s",
        desc, n_steps, n_steps * timestep_ps * _NS_PER_PS, temperature_k,
        context.getPlatform().getName(), n_frames, trajectory_path,
    )

    part_path, checkpoint_path = partial_paths(out_prefix)
    part_path.parent.mkdir(parents=True, exist_ok=True)
    if checkpoint_every_steps is None:
        resume = None
    else:
        resume = _load_md_checkpoint(checkpoint_path, part_path, n_steps, report_interval_steps)
    if resume is not None:
        context.loadCheckpoint(resume["openmm"])
        if checkpoint_state is not None:
            checkpoint_state.load_state_dict(resume["state"], str(checkpoint_path))
        start_positions = resume["start_positions_nm"] * u.nanometer
        frames_done, seconds = resume["n_frames"], resume["seconds"]
        logger.info("%s: resuming from %s at frame %d of %d", desc, checkpoint_path, frames_done, n_frames)
    else:
        frames_done, seconds = 0, 0.0
    steps_done = frames_done * report_interval_steps
    last_checkpoint = steps_done

    try:
        with open(part_path, "r+b" if resume is not None else "wb") as handle:
            if resume is not None:  # drop frames written after the checkpoint, so none is duplicated
                handle.truncate(resume["dcd_bytes"])
                handle.seek(8)
                handle.write(struct.pack("<i", frames_done))
            dcd = app.DCDFile(handle, topology, timestep_ps * u.picosecond, 0, report_interval_steps,
                              append=resume is not None)
            bar = progress_bar(total=n_steps, initial=steps_done, desc=desc, unit="step", disable=not progress,
                               leave=False, mininterval=2.0)
            try:
                for frame in range(frames_done, n_frames):
                    t0 = time.perf_counter()
                    advance(simulation, report_interval_steps)
                    seconds += time.perf_counter() - t0
                    state = context.getState(getPositions=True, enforcePeriodicBox=False)
                    box = state.getPeriodicBoxVectors() if periodic else None
                    dcd.writeModel(state.getPositions(), periodicBoxVectors=box)
                    if on_report is not None:
                        on_report(simulation, frame)
                    bar.update(report_interval_steps)
                    done = (frame + 1) * report_interval_steps
                    bar.set_postfix(ns_per_day=f"{done * timestep_ps * _NS_PER_PS / max(seconds, 1e-9) * _SECONDS_PER_DAY:.1f}")
                    if checkpoint_every_steps is not None and done - last_checkpoint >= checkpoint_every_steps \
                            and frame + 1 < n_frames:
                        _save_md_checkpoint(checkpoint_path, handle, context, frame + 1, seconds, start_positions,
                                            n_steps, report_interval_steps, checkpoint_state)
                        last_checkpoint = done
                if remainder:
                    t0 = time.perf_counter()
                    advance(simulation, remainder)
                    seconds += time.perf_counter() - t0
                    bar.update(remainder)
            finally:
                bar.close()
    except BaseException:
        if checkpoint_every_steps is None:  # nothing to resume from: leave nothing behind
            part_path.unlink(missing_ok=True)
        raise
    with atomic_path(topology_path) as tmp_pdb:
        with open(tmp_pdb, "w") as handle:
            app.PDBFile.writeFile(topology, start_positions, handle)
    os.replace(part_path, trajectory_path)  # the trajectory appears complete or not at all
    if checkpoint_path.exists():
        checkpoint_path.unlink()

    ms_per_step = seconds * 1000.0 / n_steps
    ns_per_day = n_steps * timestep_ps * _NS_PER_PS / seconds * _SECONDS_PER_DAY if seconds > 0 else math.inf
    logger.info("%s: done in %.1f s stepping (%.3f ms/step, %.1f ns/day)", desc, seconds, ms_per_step, ns_per_day)
    return MDResult(trajectory_path, topology_path, n_steps, n_frames, seconds, ms_per_step, ns_per_day, False)
