"""A PLUMED-COLVAR reporter for biased runs: time, CVs, each bias's energy and its c(t)/rct, zed, neff.

Fields are named as PLUMED prints them (``<label>.bias``, ``<label>.rct``, ``opes.zed``, ...), so the
files feed :func:`cvlearn.analysis.reweighting.metad_weights` / ``opes_weights`` and PLUMED tools alike.
It is an OpenMM reporter (``simulation.reporters.append``) and also an ``on_report(simulation, frame)``
callable for :func:`openmm_plugin.simulation.run_md`. The file is rewritten atomically every
``flush_every`` reports and on :meth:`close`; when resuming it keeps the rows older than its first report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import openmm.unit as unit

from cvlearn.data.colvar import read_colvar, write_colvar
from openmm_plugin.cv_evaluation import CVEvaluator


class BiasReporter:
    """COLVAR rows (time ps, CVs, extra columns, total bias and each bias's fields, kJ/mol) every interval.

    Parameters
    ----------
    path : str or Path
        The COLVAR file.
    bias
        The bias (its leaves give the ``<label>.*`` columns).
    cv_or_evaluator : torch.nn.Module or CVEvaluator
        The exported CV, or the PythonForce's evaluator (shares its call count).
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
    """

    def __init__(self, path: str | Path, bias, cv_or_evaluator, report_interval_steps: int, *,
                 cv_names: Sequence[str] | None = None, flush_every: int = 100, resume: bool = True,
                 extra: dict[str, Callable[[np.ndarray], float]] | None = None):
        self.path = Path(path)
        self.bias = bias
        self.evaluator = cv_or_evaluator if isinstance(cv_or_evaluator, CVEvaluator) else CVEvaluator(cv_or_evaluator)
        if int(report_interval_steps) < 1:
            raise ValueError(f"report_interval_steps: expected a positive integer, found {report_interval_steps}")
        self.interval = int(report_interval_steps)
        names = list(cv_names) if cv_names is not None else [f"cv{i}" for i in range(self.evaluator.n_cvs)]
        if len(names) != self.evaluator.n_cvs:
            raise ValueError(f"cv_names: expected {self.evaluator.n_cvs} names, found {names}")
        self.leaves = bias.leaves()
        self.extra = dict(extra or {})  # name -> f(all positions nm): analysis columns such as phi
        self.fields = ["time", *names, *self.extra, "bias"]
        for leaf in self.leaves:
            self.fields.append(f"{leaf.label}.bias")
            self.fields += [f"{leaf.label}.{k}" for k in leaf.colvar_values()]
        self.rows: list[list[float]] = []
        self.flush_every = max(1, int(flush_every))
        self._resume = resume and self.path.is_file()

    def _load_previous(self, time_ps: float) -> None:
        columns = read_colvar(self.path)
        if list(columns) != self.fields:
            raise ValueError(f"{self.path}: existing COLVAR has fields {list(columns)}, this run writes {self.fields}")
        table = np.column_stack([columns[f] for f in self.fields]) if columns["time"].size else np.zeros((0, len(self.fields)))
        self.rows = [list(r) for r in table if r[0] < time_ps - 1e-9]  # rows before this report's time

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
        s = self.evaluator.values(positions[self.evaluator.atom_indices])
        total, _ = self.bias.energy_and_gradient(s)
        row = [time_ps, *s.tolist(), *(float(f(positions)) for f in self.extra.values()), total]
        for leaf in self.leaves:
            row.append(leaf.energy_and_gradient(s)[0])
            row += list(leaf.colvar_values().values())
        self.rows.append(row)
        if len(self.rows) % self.flush_every == 0:
            self.flush()

    def __call__(self, simulation, frame: int) -> None:
        self.report(simulation)

    def flush(self) -> None:
        write_colvar(self.path, self.fields, np.asarray(self.rows).reshape(-1, len(self.fields)))

    close = flush
