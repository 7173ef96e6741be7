"""A PLUMED-COLVAR reporter for biased runs: time, CVs, each bias's energy and its c(t)/rct, zed, neff.

Fields are named as PLUMED prints them (``<label>.bias``, ``<label>.rct``, ``opes.zed``, ...), so the
files feed :func:`cvlearn.analysis.reweighting.metad_weights` / ``opes_weights`` and PLUMED tools alike.
It is an OpenMM reporter (``simulation.reporters.append``) and also an ``on_report(simulation, frame)``
callable for :func:`openmm_plugin.simulation.run_md`. The file is rewritten atomically every
``flush_every`` reports, at every bias checkpoint (``BiasRunner(on_save=reporter.flush)``) and on :meth:`close`.
When resuming, :meth:`keep_until` cuts the file back to the checkpoint's time, so it holds every row up to the
checkpoint and none after; without that call the rows older than the first new report are kept.
With the native route the CV values come from the Context (a :class:`NativeBiasForce` is the evaluator); with a
:class:`ForceGuard`, the column ``guard.capped`` counts the capped bias forces so far.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import openmm.unit as unit

from cvlearn.data.colvar import read_colvar, write_colvar
from openmm_plugin.bias.native import NativeBiasForce
from openmm_plugin.bias.runner import BLOWN_UP
from openmm_plugin.cv_evaluation import CVEvaluator


def _tolerance(time_ps: float) -> float:
    """How far a COLVAR time may be from a Context's time at the same step, ps.

    OpenMM's time is a running sum of the step (710,000 steps of 0.002 ps: 1419.99999998 ps) and the file keeps 10
    digits (1420): with an absolute 1e-9 ps a resumed walker dropped the row at its checkpoint (measured: 2,999 of
    3,000 rows, its frames then one ahead of its rows). 1e-7 of the time stays below one 2-fs step up to 20 ns and
    above the running sum's error (2e-8 ps at 1.4 ns; at most ~1e-10 of the time per 10^6 steps)."""
    return max(1e-9, 1e-7 * abs(float(time_ps)))


class BiasReporter:
    """COLVAR rows (time ps, CVs, extra columns, total bias and each bias's fields, kJ/mol) every interval.

    Parameters
    ----------
    path : str or Path
        The COLVAR file.
    bias
        The bias (its leaves give the ``<label>.*`` columns).
    cv_or_evaluator : torch.nn.Module, CVEvaluator or NativeBiasForce
        The exported CV, the PythonForce's evaluator (shares its call count), or the native route's force.
    report_interval_steps : int
        Steps between rows (as an OpenMM reporter; as ``on_report`` every call writes a row).
    cv_names : sequence of str, optional
        ``[n_cvs]`` column names (default ``cv0``, ``cv1``, ...).
    flush_every : int
        Rows between atomic rewrites of the file.
    resume : bool
        Keep the rows of an existing file older than the first report.
    extra : dict, optional
        ``name -> f(positions [n_particles, 3] nm) -> float`` analysis columns (e.g. φ).
    guard : openmm_plugin.bias.guard.ForceGuard, optional
        Adds ``guard.capped`` (capped atom-forces so far).
    """

    def __init__(self, path: str | Path, bias, cv_or_evaluator, report_interval_steps: int, *,
                 cv_names: Sequence[str] | None = None, flush_every: int = 100, resume: bool = True,
                 extra: dict[str, Callable[[np.ndarray], float]] | None = None, guard=None):
        self.path = Path(path)
        self.bias = bias
        self.native = isinstance(cv_or_evaluator, NativeBiasForce)
        self.evaluator = (cv_or_evaluator if isinstance(cv_or_evaluator, (CVEvaluator, NativeBiasForce))
                          else CVEvaluator(cv_or_evaluator))
        self.guard = guard
        if int(report_interval_steps) < 1:
            raise ValueError(f"report_interval_steps: expected a positive integer, found {report_interval_steps}")
        self.interval = int(report_interval_steps)
        default = self.evaluator.cv_names if self.native else [f"cv{i}" for i in range(self.evaluator.n_cvs)]
        names = list(cv_names) if cv_names is not None else default
        if len(names) != self.evaluator.n_cvs:
            raise ValueError(f"cv_names: expected {self.evaluator.n_cvs} names, found {names}")
        self.leaves = bias.leaves()
        self.extra = dict(extra or {})  # name -> f(all positions nm): analysis columns such as phi
        self.fields = ["time", *names, *self.extra, "bias"]
        for leaf in self.leaves:
            self.fields.append(f"{leaf.label}.bias")
            self.fields += [f"{leaf.label}.{k}" for k in leaf.colvar_values()]
        if guard is not None:
            self.fields += [f"{guard.label}.{k}" for k in guard.colvar_values()]
        self.rows: list[list[float]] = []
        self.flush_every = max(1, int(flush_every))
        self._resume = resume and self.path.is_file()

    def _load_previous(self, time_ps: float, keep_equal: bool = False) -> None:
        columns = read_colvar(self.path)
        if list(columns) != self.fields:
            raise ValueError(f"{self.path}: existing COLVAR has fields {list(columns)}, this run writes {self.fields}")
        table = np.column_stack([columns[f] for f in self.fields]) if columns["time"].size else np.zeros((0, len(self.fields)))
        limit = time_ps + (_tolerance(time_ps) if keep_equal else -_tolerance(time_ps))
        self.rows = [list(r) for r in table if r[0] < limit]

    def keep_until(self, time_ps: float) -> None:
        """Resume at ``time_ps`` (ps, the restored checkpoint's time): keep the file's rows up to it, drop later ones.

        Rows after a checkpoint were written by a run that was then killed; the resumed run writes them again.
        Call it once, before the first report (e.g. right after ``BiasRunner.restore``, or at time 0 for a start).
        """
        if self._resume:
            self._load_previous(float(time_ps), keep_equal=True)
            self._resume = False
            self.flush()
        else:
            self.rows = [r for r in self.rows if r[0] < float(time_ps) + _tolerance(time_ps)]

    # OpenMM reporter protocol
    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": []}

    def report(self, simulation, state=None) -> None:
        positions = np.asarray(simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
                               .value_in_unit(unit.nanometer))
        time_ps = simulation.context.getState().getTime().value_in_unit(unit.picosecond)
        if self._resume:
            self._load_previous(time_ps)
            self._resume = False
        s = self.evaluator.values_from_context(simulation.context)  # the box too, for a periodic CV
        total, _ = self.bias.energy_and_gradient(s)
        row = [time_ps, *s.tolist(), *(float(f(positions)) for f in self.extra.values()), total]
        for leaf in self.leaves:
            row.append(leaf.energy_and_gradient(s)[0])
            row += list(leaf.colvar_values().values())
        if self.guard is not None:
            row += list(self.guard.colvar_values().values())
        self.rows.append(row)
        if len(self.rows) % self.flush_every == 0:
            self.flush()

    def __call__(self, simulation, frame: int) -> None:
        self.report(simulation)

    def flush(self) -> None:
        """Rewrite the file with every row so far (atomically); before the first report of a resume, keep it."""
        if self._resume:
            return
        write_colvar(self.path, self.fields, np.asarray(self.rows).reshape(-1, len(self.fields)))

    close = flush


class TrajectoryReporter:
    """A DCD frame every ``report_interval_steps`` (with the box for periodic Systems), cut back on resume.

    Frames are written at the same steps as :class:`BiasReporter` rows, so frame k is COLVAR row k (the pairing
    ``cvlearn analyze`` and :func:`cvlearn.data.lagged.load_biased_run` read). The file is flushed by
    :meth:`flush` (hook it to ``BiasRunner.on_save`` with the COLVAR's); :meth:`keep_until` drops the frames a
    killed run wrote after its last checkpoint, so a resumed run neither duplicates nor loses frames.

    Parameters
    ----------
    path : str or Path
        The DCD file.
    topology : openmm.app.Topology
    timestep_ps : float
        Step of the simulation's ``currentStep`` (the outer step for MTS integrators), ps.
    report_interval_steps : int
        Steps between frames.
    periodic : bool
        Write box vectors (a periodic System).
    """

    def __init__(self, path: str | Path, topology, timestep_ps: float, report_interval_steps: int,
                 periodic: bool = False):
        if int(report_interval_steps) < 1:
            raise ValueError(f"report_interval_steps: expected a positive integer, found {report_interval_steps}")
        self.path = Path(path)
        self.topology = topology
        self.timestep_ps = float(timestep_ps)
        self.interval = int(report_interval_steps)
        self.periodic = bool(periodic)
        self._handle = None
        self._dcd = None

    def _frame_bytes(self) -> int:
        n = self.topology.getNumAtoms()
        return (56 if self.periodic else 0) + 3 * (4 * n + 8)  # [cell record] + x, y, z records

    def keep_until(self, step: int) -> None:
        """Open the file for step ``step`` (0: a fresh start): keep frames at steps ≤ ``step``, drop later ones."""
        import struct

        import openmm.app as app

        keep = int(step) // self.interval
        if keep > 0 and not self.path.is_file():
            raise ValueError(f"{self.path}: missing, but the run resumes at step {step} and its frames up to there "
                             "are gone; delete the run's outputs to start over (--restart-fresh)")
        if keep > 0:
            handle = open(self.path, "r+b")
            handle.seek(8)
            written = struct.unpack("<i", handle.read(4))[0]
            if written < keep:
                handle.close()
                raise ValueError(f"{self.path}: holds {written} frames, the checkpoint at step {step} expects "
                                 f"{keep}; delete the run's outputs to start over (--restart-fresh)")
            header = handle.seek(0, 2) - written * self._frame_bytes()
            handle.truncate(header + keep * self._frame_bytes())
            handle.seek(8)
            handle.write(struct.pack("<i", keep))
            handle.seek(0, 2)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "w+b")
        self._handle = handle
        self._dcd = app.DCDFile(handle, self.topology, self.timestep_ps * unit.picosecond, 0, self.interval,
                                append=keep > 0)

    def describeNextReport(self, simulation):
        steps = self.interval - simulation.currentStep % self.interval
        return {"steps": steps, "periodic": None, "include": []}

    def report(self, simulation, state=None) -> None:
        if self._dcd is None:
            self.keep_until(simulation.currentStep)
        state = simulation.context.getState(getPositions=True, enforcePeriodicBox=False)
        positions = state.getPositions(asNumpy=True)
        if not np.all(np.isfinite(positions._value)):  # else DCDFile's generic "Particle position is NaN"
            raise FloatingPointError(f"step {simulation.currentStep}: a position is NaN; {BLOWN_UP}")
        self._dcd.writeModel(positions, periodicBoxVectors=state.getPeriodicBoxVectors() if self.periodic else None)

    def __call__(self, simulation, frame: int) -> None:
        self.report(simulation)

    def flush(self) -> None:
        """Push written frames to disk (at every checkpoint: the file then holds every frame up to it)."""
        import os

        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self.flush()
            self._handle.close()
            self._handle = self._dcd = None
