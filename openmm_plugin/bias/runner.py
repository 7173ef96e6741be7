"""The driver: step a Simulation, deposit every pace, checkpoint the bias, share it between walkers.

``BiasRunner.step(simulation, n)`` plays the role of ``app.Metadynamics.step``: it advances in chunks
up to the next deposition, takes the CV value (cached by the PythonForce from its last evaluation, else
one evaluation at the current positions), updates the bias, and, every ``save_every_steps``, writes
the whole bias state plus the OpenMM checkpoint (positions, velocities, RNG, step) atomically to one
``.npz``; :meth:`BiasRunner.restore` resumes from it exactly. With ``walkers_dir``, each walker writes
its own deposition records to ``<walkers_dir>/<label>.walker<id>.npz`` (atomically) and replays the
new rows of the others' files, as ``app.Metadynamics``'s ``biasDir`` does. With ``native`` (a
:class:`openmm_plugin.bias.native.NativeBiasForce`), the CV comes from the Context's ``CustomCVForce`` and each
change of the bias refreshes its table. With ``guard`` (:class:`openmm_plugin.bias.guard.ForceGuard`), capped bias
forces (and a kinetic temperature over the guard's limit) are logged, and a tripped guard (a cap in mode ``"stop"``,
or heat in either mode) saves ``<save_path stem>.stopped.npz`` and raises ``RunError``.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import openmm

from cvlearn.errors import RunError
from cvlearn.io import atomic_path
from cvlearn.progress import log_interval_s
from openmm_plugin.cv_evaluation import CVEvaluator

logger = logging.getLogger(__name__)

_FORMAT = 1


BLOWN_UP = ("the simulation has blown up (try a smaller MTS factor or timestep, walls at the CV's trusted range, or a "
            "smoother CV: learn with smoothness, e.g. 1e-4)")


class BiasRunner:
    """Deposition, checkpoint and multiple-walker bookkeeping for one bias (possibly a :class:`BiasSum`).

    Parameters
    ----------
    bias
        The bias (adaptive leaves deposit every ``pace_steps``).
    cv : torch.nn.Module, optional
        The exported CV, when there is no PythonForce ``callback`` (TorchForce route).
    callback : openmm_plugin.forces.BiasCallback, optional
        The PythonForce's callback: its cached CV of the last force evaluation is deposited at.
    save_path : str or Path, optional
        ``.npz`` checkpoint (bias state + OpenMM checkpoint).
    save_every_steps : int, optional
        Steps between checkpoints (needs ``save_path``).
    walkers_dir : str or Path, optional
        Directory shared by multiple walkers.
    walker_id : int
        This walker's id.
    sync_every_steps : int, optional
        Steps between reading the other walkers' depositions (default: the smallest pace).
    on_update : callable, optional
        ``on_update(simulation)`` after the bias changed (e.g. ``TorchBiasForce.refresh``).
    on_save : callable, optional
        ``on_save()`` right before each checkpoint is written (e.g. ``BiasReporter.flush``), so the time series
        on disk always reach the checkpoint.
    native : openmm_plugin.bias.native.NativeBiasForce, optional
        The native route (OpenMM CVs, tabulated bias) instead of ``cv``/``callback``; refreshed at each change.
    guard : openmm_plugin.bias.guard.ForceGuard, optional
        The bias-force cap; set as ``callback.guard`` for the PythonForce, logged, and checked for ``"stop"``.
    """

    def __init__(self, bias, *, cv=None, callback=None, save_path: str | Path | None = None,
                 save_every_steps: int | None = None, walkers_dir: str | Path | None = None, walker_id: int = 0,
                 sync_every_steps: int | None = None, on_update: Callable | None = None,
                 on_save: Callable[[], None] | None = None, native=None, guard=None):
        if sum(x is not None for x in (cv, callback, native)) != 1:
            raise ValueError("BiasRunner: give exactly one of the PythonForce `callback` (cached CV values), the `cv` "
                             "module (TorchForce route) or `native` (NativeBiasForce)")
        self.bias = bias
        self.callback = callback
        self.native = native
        self.guard = guard
        if guard is not None and callback is not None:
            callback.guard = guard  # BiasCallback.__call__ caps its forces with it
        self._guard_logged = 0
        self._guard_logged_at = -float("inf")  # time.monotonic() of the last guard line
        self.evaluator = native if native is not None else callback.evaluator if callback is not None else CVEvaluator(cv)
        self.save_path = None if save_path is None else Path(save_path)
        if save_every_steps is not None and self.save_path is None:
            raise ValueError("BiasRunner: save_every_steps needs save_path")
        self.save_every_steps = save_every_steps
        self.walkers_dir = None if walkers_dir is None else Path(walkers_dir)
        self.walker_id = int(walker_id)
        self.adaptive = [b for b in bias.leaves() if b.adaptive]
        paces = [b.pace_steps for b in self.adaptive]
        self.sync_every_steps = sync_every_steps or (min(paces) if paces else None)
        self.applied: dict[str, int] = {}  # "<label>.walker<id>" -> rows of that file already replayed
        if native is not None:
            user_update = on_update
            on_update = native.refresh if user_update is None else (lambda sim: (native.refresh(sim), user_update(sim)))
        self.on_update = on_update
        self.on_save = on_save
        self._last_callback_evaluations = -1
        self._system_checked = False
        self.n_bias_changes = 0  # depositions and walker syncs that changed the bias, this session
        self.n_stale_marks = 0  # of those, the ones that made a CustomIntegrator recompute its kept forces
        if self.walkers_dir is not None:
            self.walkers_dir.mkdir(parents=True, exist_ok=True)

    # --- stepping ------------------------------------------------------------------------------------
    def _events(self) -> list[int]:
        periods = [b.pace_steps for b in self.adaptive] + self._sample_steps()
        if self.guard is not None and (self.guard.mode == "stop" or self.guard.watches_temperature):
            periods.append(self.guard.check_every_steps)
        if self.save_every_steps:
            periods.append(self.save_every_steps)
        if self.walkers_dir is not None and self.sync_every_steps:
            periods.append(self.sync_every_steps)
        return periods

    def _sample_steps(self) -> list[int]:
        """Steps between CV samples of biases that observe more often than they deposit (OPES adaptive σ)."""
        return [b.sample_steps for b in self.adaptive if getattr(b, "sample_steps", None)]

    def _due(self, step: int) -> bool:
        return any(step % p == 0 for p in [b.pace_steps for b in self.adaptive] + self._sample_steps())

    def current_cv(self, simulation) -> np.ndarray:
        """CV at the last force evaluation if the PythonForce ran since the last call, else evaluated once now."""
        if self.native is not None:
            return self.native.values_from_context(simulation.context)
        cb = self.callback
        if cb is not None and cb.last_cv is not None and cb.evaluations != self._last_callback_evaluations:
            self._last_callback_evaluations = cb.evaluations
            return cb.last_cv
        return self.evaluator.values_from_context(simulation.context)  # with the box for a periodic CV

    def step(self, simulation, n_steps: int) -> None:
        """Advance ``simulation`` by ``n_steps`` (outer) steps, depositing, syncing and saving when due."""
        n_steps = int(n_steps)
        if n_steps < 0:
            raise ValueError(f"n_steps: expected >= 0, found {n_steps}")
        if not self._system_checked:  # a CV on the wrong System reads the wrong atoms silently: refuse before MD
            if self.native is not None:
                self.native.check_system(simulation.system)
            else:
                from openmm_plugin.forces import check_cv_fits_system

                check_cv_fits_system(self.evaluator.cv, simulation.system)
            if self.walkers_dir is not None:
                self._check_own_walker_files()
            self._system_checked = True
        periods = self._events()
        end = simulation.currentStep + n_steps
        while simulation.currentStep < end:
            now = simulation.currentStep
            next_event = min([(now // p + 1) * p for p in periods] + [end])
            simulation.step(next_event - now)
            now = simulation.currentStep
            if self._due(now):
                cv = self.current_cv(simulation)
                if not np.all(np.isfinite(cv)):  # stop here, not after hours of NaN steps and a NaN bias
                    raise FloatingPointError(f"step {now}: the CV is {cv.tolist()}; {BLOWN_UP}")
                changed = self.bias.update(cv, now)
                if changed and self.walkers_dir is not None:
                    self.write_walker_files()
                if changed:
                    self._bias_changed(simulation)
            if self.walkers_dir is not None and self.sync_every_steps and now % self.sync_every_steps == 0:
                if self.sync_walkers():
                    self._bias_changed(simulation)
            if self.save_every_steps and now % self.save_every_steps == 0:
                self.save(simulation)
            if self.guard is not None:  # last: a stopped state includes this step's deposition, as a checkpoint
                self._check_guard(simulation)

    def _bias_changed(self, simulation) -> None:
        """Tell the force route that the bias changed: refresh its copy, or mark a PythonForce's forces stale.

        A CustomIntegrator (the MTS integrator) keeps the forces of a step's end for the next step's first kick and
        recomputes them only when the Context changes; a live PythonForce bias changes without the Context knowing,
        so that kick would use the old bias (measured: a resumed run, which recomputes them, left the uninterrupted
        one by 5e-3 nm within 300 outer steps). Setting the same positions marks them stale: one getState and one
        more bias evaluation per deposition (``n_stale_marks`` counts them; other integrators recompute every step).
        """
        self.n_bias_changes += 1
        if self.on_update is not None:
            self.on_update(simulation)
        elif self.native is None and isinstance(simulation.integrator, openmm.CustomIntegrator):
            self.n_stale_marks += 1
            context = simulation.context
            context.setPositions(context.getState(getPositions=True).getPositions(asNumpy=True))

    # --- bias-force guard ----------------------------------------------------------------------------
    def _check_guard(self, simulation) -> None:
        guard = self.guard
        hot_before = guard.n_hot
        guard.observe(simulation)  # a kinetic-temperature sample, when it watches one
        if guard.n_hot > hot_before and hot_before == 0:
            logger.warning("step %d: %s", simulation.currentStep, guard.summary())
        if guard.n_capped > self._guard_logged:
            # the first capping warns at once; later ones at most one line per log interval (a run that caps at
            # every step would otherwise write a line per step)
            now = time.monotonic()
            if self._guard_logged == 0 or now - self._guard_logged_at >= log_interval_s():
                log = logger.warning if self._guard_logged == 0 else logger.info
                log("step %d: %s", simulation.currentStep, guard.summary())
                self._guard_logged, self._guard_logged_at = guard.n_capped, now
        if guard.tripped:
            where = "no save_path configured, nothing saved"
            if self.save_path is not None:
                stopped = self.save_path.with_name(self.save_path.name.removesuffix(".npz") + ".stopped.npz")
                where = f"state at the stop saved to {self.save(simulation, stopped)}"
                if self.save_path.is_file():
                    where += f"; last regular checkpoint {self.save_path}"
            raise RunError(f"step {simulation.currentStep}: {guard.summary()} ({where}); {guard.advice()}")

    # --- multiple walkers ----------------------------------------------------------------------------
    def _walker_file(self, label: str, walker: int) -> Path:
        return self.walkers_dir / f"{label}.walker{walker}.npz"

    def write_walker_files(self) -> None:
        for b in self.adaptive:
            with atomic_path(self._walker_file(b.label, self.walker_id)) as tmp:
                with open(tmp, "wb") as handle:
                    np.savez(handle, records=b.records)

    def _check_own_walker_files(self) -> None:
        """Before the first step: a file of this walker id holding more rows than this walker has is another run's
        (a fresh start in a used ``walkers_dir``, or two walkers with one id); writing over it would lose kernels the
        other walkers already replayed."""
        for b in self.adaptive:
            path = self._walker_file(b.label, self.walker_id)
            rows = _records(path)
            if rows is not None and rows.shape[0] > len(b.records):
                raise RunError(f"{path}: holds {rows.shape[0]} depositions of walker {self.walker_id}, this walker "
                               f"has {len(b.records)}; restore its checkpoint, give it another walker_id, or start "
                               "all walkers in a new walkers_dir")

    def _adopt_shared_rows(self) -> None:
        """After a restore: rows this walker shared after its checkpoint stay its own (the others replayed them).

        Without this, its next write would replace them with new rows the others never read (their replay count
        is past them) while they keep kernels this walker no longer has.
        """
        for b in self.adaptive:
            path = self._walker_file(b.label, self.walker_id)
            rows = _records(path)
            if rows is None:
                continue
            n = len(b.records)
            if rows.shape[0] < n or not np.array_equal(rows[:n], b.records):
                raise RunError(f"{path}: expected this walker's shared depositions to start with the {n} rows of its "
                               f"checkpoint, found {rows.shape[0]} rows that differ (another run's walkers_dir?)")
            if rows.shape[0] > n:
                b.apply_records(rows[n:])
                b.records = np.array(rows, dtype=np.float64)
                logger.info("%s: kept %d depositions shared after the checkpoint", path, rows.shape[0] - n)

    def sync_walkers(self) -> bool:
        """Replay rows that other walkers deposited since the last sync; returns whether anything was new."""
        changed = False
        for b in self.adaptive:
            pattern = re.compile(rf"^{re.escape(b.label)}\.walker(\d+)\.npz$")
            for path in sorted(self.walkers_dir.glob(f"{b.label}.walker*.npz")):
                match = pattern.match(path.name)
                if match is None or int(match.group(1)) == self.walker_id:
                    continue
                rows = _records(path)
                key = path.stem
                done = self.applied.get(key, 0)
                if rows.shape[0] > done:
                    b.apply_records(rows[done:])
                    self.applied[key] = rows.shape[0]
                    changed = True
        return changed

    # --- checkpoint ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"bias/{k}": np.asarray(v) for k, v in self.bias.state_dict().items()}
        state["runner/format"] = np.array(_FORMAT)
        state["runner/applied_keys"] = np.array(sorted(self.applied), dtype=str)
        state["runner/applied_rows"] = np.array([self.applied[k] for k in sorted(self.applied)], dtype=np.int64)
        if self.guard is not None:
            state.update({f"guard/{k}": v for k, v in self.guard.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray], source: str = "state") -> None:
        if int(state.get("runner/format", -1)) != _FORMAT:
            raise ValueError(f"{source}: expected a BiasRunner checkpoint of format {_FORMAT}, "
                             f"found {state.get('runner/format')}")
        self.bias.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("bias/")})
        self.applied = {str(k): int(n) for k, n in zip(state["runner/applied_keys"], state["runner/applied_rows"])}
        self._last_callback_evaluations = -1
        if self.guard is not None and "guard/counts" in state:
            self.guard.load_state_dict({"counts": state["guard/counts"]})
            self._guard_logged = self.guard.n_capped

    def save(self, simulation=None, path: str | Path | None = None) -> Path:
        """Bias state (+ the OpenMM checkpoint of ``simulation``) to one ``.npz``, atomically."""
        path = Path(path) if path is not None else self.save_path
        if path is None:
            raise ValueError("BiasRunner.save: no path given and no save_path configured")
        if self.on_save is not None:
            self.on_save()
        state = self.state_dict()
        if simulation is not None:
            state["runner/step"] = np.array(simulation.currentStep)  # for people and tests: where it stands
            state["openmm/checkpoint"] = np.frombuffer(simulation.context.createCheckpoint(), dtype=np.uint8)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **state)
        return path

    def restore(self, simulation=None, path: str | Path | None = None) -> bool:
        """Load a checkpoint written by :meth:`save`; False (nothing changed) when the file does not exist."""
        path = Path(path) if path is not None else self.save_path
        if path is None or not path.is_file():
            return False
        with np.load(path) as data:
            state = {k: data[k] for k in data.files}
        self.load_state_dict(state, str(path))
        if self.walkers_dir is not None:
            self._adopt_shared_rows()
        if simulation is not None:
            if "openmm/checkpoint" not in state:
                raise ValueError(f"{path}: has no OpenMM checkpoint; it was saved without a simulation")
            simulation.context.loadCheckpoint(state["openmm/checkpoint"].tobytes())
        if self.on_update is not None and simulation is not None:
            self.on_update(simulation)
        logger.info("restored bias state from %s", path)
        return True


def _records(path: Path) -> np.ndarray | None:
    """The deposition records of one walker file (written atomically by :meth:`BiasRunner.write_walker_files`),
    or None when the walker has not written it yet."""
    if not path.is_file():
        return None
    with np.load(path) as data:
        return data["records"]
