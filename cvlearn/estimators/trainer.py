"""The one resumable training loop behind every estimator (VAMPNet, DenoisingPretrainer, ForceFieldFinetuner).

An estimator hands :class:`Trainer` its modules, optimizer, scheduler and random generators, and a function that
runs one epoch and returns that epoch's numbers; the trainer does the rest the same way for all of them: the epoch
loop, the learning-rate schedule, early stopping on a monitored validation number with the best weights restored,
``min_epochs``/``patience``, a progress bar, the history, and one checkpoint file per run written atomically after
every epoch. A run whose checkpoint exists resumes after its last epoch, but only when the checkpoint's format tag
and every setting that shapes the run match; otherwise it refuses, naming what differs.

Under ``torchrun`` (:mod:`cvlearn.distributed`) every rank runs the loop; rank 0's epoch numbers are broadcast so
the history, schedule and early-stopping decisions are identical on all ranks, and only rank 0 writes the checkpoint
(every rank reads it to resume, so it must sit on a shared filesystem).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from cvlearn import distributed
from cvlearn.io import atomic_path
from cvlearn.progress import progress_bar

logger = logging.getLogger(__name__)

LR_SCHEDULES = ("cosine", "plateau", "exponential")


def save_run_state(path: Path, state: dict) -> None:
    """Write ``state`` (weights, optimizer, RNG, history, ...) to ``path`` atomically.

    Why atomic: a run killed mid-write must leave the previous resumable state, not a truncated file.

    Parameters
    ----------
    path : Path
        Destination file (written via a temporary file, then moved into place).
    state : dict
        Anything ``torch.save`` accepts.
    """
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_run_state(path: Path, *, fmt: str, config: dict, device, what: str) -> dict:
    """Read a run checkpoint; raise if it is unreadable, of another format, or written with other settings.

    Parameters
    ----------
    path : Path
        The checkpoint file.
    fmt : str
        The format tag the file must carry (e.g. ``"cvlearn.VAMPNet.checkpoint/2"``).
    config : dict
        Settings that shape the run; each must equal the recorded one.
    device : str or torch.device
        Where tensors are loaded.
    what : str
        Name of the run kind, for messages.

    Returns
    -------
    dict
        The saved state.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:  # torch raises many types for unreadable files; keep the cause
        raise ValueError(f"checkpoint_path {str(path)!r}: not a readable {what} checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != fmt:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"checkpoint_path {str(path)!r}: expected format {fmt!r}, found {found!r}")
    diff = {k: (v, state["config"].get(k)) for k, v in config.items() if state["config"].get(k) != v}
    if diff:
        raise ValueError(f"checkpoint_path {str(path)!r} was written by a different run; "
                         + "; ".join(f"{k}: expected {a!r}, found {b!r}" for k, (a, b) in diff.items()))
    return state


def make_scheduler(schedule, optimizer: torch.optim.Optimizer, *, learning_rate: float, max_epochs: int,
                   patience: int = 1, mode: str = "max", cosine_floor: float = 0.01):
    """The learning-rate scheduler of every estimator, stepped once per epoch by :class:`Trainer`.

    Parameters
    ----------
    schedule : None, str or callable
        None (constant rate), ``"cosine"`` (to ``cosine_floor * learning_rate`` over ``max_epochs``),
        ``"exponential"`` (x0.95 per epoch), ``"plateau"`` (halve after ``patience // 2`` stale epochs of the
        monitored number, which ``mode`` says is maximised or minimised) or ``callable(optimizer) -> scheduler``.
    optimizer : torch.optim.Optimizer
    learning_rate, max_epochs, patience, mode, cosine_floor
        As above.

    Returns
    -------
    scheduler or None
    """
    if schedule is None:
        return None
    if callable(schedule):
        return schedule(optimizer)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs,
                                                          eta_min=cosine_floor * learning_rate)
    if schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)
    if schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5,
                                                          patience=max(1, patience // 2))
    raise ValueError(f"lr_schedule: expected None, a callable or one of {list(LR_SCHEDULES)}, found {schedule!r}")


no_tf32 = distributed.no_tf32  # defined beside the other device helpers, importable without this package


def check_count(name: str, value, low: int) -> None:
    """Raise ValueError unless ``value`` is an integer (not a bool) >= ``low``.

    Parameters
    ----------
    name : str
        Argument name, for the message.
    value
        The value checked (e.g. a count of epochs or frames).
    low : int
        Smallest allowed value.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")


class Trainer:
    """One resumable training run: the epoch loop shared by all estimators.

    Parameters
    ----------
    modules : dict of str to torch.nn.Module
        What is trained and saved (e.g. ``{"lobe": lobe}``); the best epoch's weights are restored into them.
    optimizer : torch.optim.Optimizer
    scheduler : LR scheduler or None
        Stepped once per epoch, with the monitored number when it is a ``ReduceLROnPlateau``.
    fmt : str
        Checkpoint format tag; a file with another tag is refused.
    config : dict
        Settings that shape the run, recorded in the checkpoint and compared on resume.
    what : str
        Name of the run, for the progress bar, logs and messages.
    max_epochs : int
        Epochs in all (a resumed run counts the epochs already done).
    monitor : str or None
        History key of the validation number for early stopping and best-weight restore; None trains all
        ``max_epochs`` and keeps the last weights.
    mode : {"max", "min"}
        Whether ``monitor`` is maximised (a score) or minimised (a loss).
    patience : int
        Stop after this many epochs without improvement of ``monitor`` ...
    min_epochs : int
        ... but not before this many epochs in all.
    generators : dict of str to torch.Generator
        Random streams saved and restored with the run (the global torch RNG is saved as well).
    grad_clip : float or None
        Clip the gradient norm over all optimised parameters to this value in :meth:`step`.
    device : str or torch.device
    progress : bool
        Show a progress bar over epochs.
    postfix : sequence of str
        History keys shown on the progress bar.
    """

    def __init__(self, modules: dict, optimizer: torch.optim.Optimizer, scheduler=None, *, fmt: str, config: dict,
                 what: str, max_epochs: int, monitor: str | None = None, mode: str = "max", patience: int = 1,
                 min_epochs: int = 0, generators: dict | None = None, grad_clip: float | None = None,
                 device="cpu", progress: bool = True, postfix: Sequence[str] = ()):
        if mode not in ("max", "min"):
            raise ValueError(f"mode: expected 'max' or 'min', found {mode!r}")
        self.modules, self.optimizer, self.scheduler = dict(modules), optimizer, scheduler
        self.fmt, self.config, self.what = fmt, config, what
        self.max_epochs, self.monitor, self.mode = max_epochs, monitor, mode
        self.patience, self.min_epochs = patience, min_epochs
        self.generators = dict(generators or {})
        self.grad_clip = grad_clip
        self.device = torch.device(device)
        self.progress, self.postfix = progress, tuple(postfix)
        self.history: list[dict] = []
        self.best_epoch = -1
        self.best_value = -math.inf if mode == "max" else math.inf
        self.stale = 0

    # -- one optimisation step --------------------------------------------------------------------------------
    def step(self, loss: torch.Tensor, epoch: int, hint: str = "") -> None:
        """Backpropagate ``loss`` (a scalar to minimise) and update; raise FloatingPointError if it is not finite."""
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.what} loss became {float(loss.detach())} in epoch {epoch}; try a lower "
                                     f"learning_rate (now {self.optimizer.param_groups[0]['lr']}){hint}")
        self.optimizer.zero_grad()
        loss.backward()
        if self.grad_clip is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self.optimizer.step()

    # -- state ------------------------------------------------------------------------------------------------
    def _weights(self) -> dict:
        return {name: copy.deepcopy(m.state_dict()) for name, m in self.modules.items()}

    def _save(self, path: Path, epoch: int, best_state, stopped: bool) -> None:
        save_run_state(path, {
            "format": self.fmt, "config": self.config, "epoch": epoch,
            "modules": {name: m.state_dict() for name, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generators": {name: g.get_state() for name, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(), "history": self.history, "best_state": best_state,
            "best_epoch": self.best_epoch, "best_value": self.best_value, "stale": self.stale,
            "stopped_early": stopped})

    def _resume(self, path: Path) -> tuple[int, object, bool]:
        state = load_run_state(path, fmt=self.fmt, config=self.config, device=self.device, what=self.what)
        for name, m in self.modules.items():
            m.load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        for name, g in self.generators.items():
            g.set_state(state["generators"][name])
        torch.set_rng_state(state["torch_rng"])
        self.history, self.best_epoch = list(state["history"]), state["best_epoch"]
        self.best_value, self.stale = state["best_value"], state["stale"]
        done = bool(state["stopped_early"]) and self._should_stop(state["epoch"])
        logger.info("resuming from %s after epoch %d", path, state["epoch"])
        return state["epoch"] + 1, state["best_state"], done

    def _should_stop(self, epoch: int) -> bool:
        return self.monitor is not None and self.stale >= self.patience and epoch + 1 >= self.min_epochs

    def _improved(self, value: float) -> bool:
        return value > self.best_value if self.mode == "max" else value < self.best_value

    # -- the loop ---------------------------------------------------------------------------------------------
    def fit(self, run_epoch: Callable[[int], dict], *, checkpoint_path: str | Path | None = None,
            until_epoch: int | None = None) -> "Trainer":
        """Run epochs ``run_epoch(epoch) -> {name: number}`` until ``max_epochs`` or early stopping.

        Parameters
        ----------
        run_epoch : callable
            Trains one epoch and validates; returns that epoch's numbers (must include ``monitor``).
        checkpoint_path : str or Path, optional
            Save the full state here after every epoch; resume from it if it exists.
        until_epoch : int, optional
            Stop this call after that many epochs in all (schedules still span ``max_epochs``), so a long run
            can be done in slices, each resuming from the checkpoint.

        Returns
        -------
        Trainer
            self; ``history`` holds one row per epoch (``epoch``, the numbers, ``lr``, ``seconds``).
        """
        path = None if checkpoint_path is None else Path(checkpoint_path)
        best_state = self._weights() if self.monitor is not None else None
        first_epoch, done = 0, False
        if path is not None and path.is_file():
            first_epoch, best_state, done = self._resume(path)
        last = self.max_epochs if until_epoch is None else min(self.max_epochs, int(until_epoch))
        bar = progress_bar(range(first_epoch, last), desc=self.what,
                           disable=not self.progress or done or not distributed.is_rank0())
        with no_tf32(self.device):
            for epoch in ([] if done else bar):
                started = time.perf_counter()
                numbers = distributed.broadcast_object(run_epoch(epoch))  # same decisions on every rank
                row = {"epoch": epoch, **numbers, "lr": self.optimizer.param_groups[0]["lr"],
                       "seconds": time.perf_counter() - started}
                self.history.append(row)
                bar.set_postfix({k: f"{row[k]:.4g}" for k in self.postfix})
                logger.info("%s epoch %d: %s", self.what, epoch,
                            ", ".join(f"{k} {v:.5g}" for k, v in numbers.items() if isinstance(v, float)))
                if self.scheduler is not None:
                    if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        self.scheduler.step(row[self.monitor])
                    else:
                        self.scheduler.step()
                stop = False
                if self.monitor is not None:
                    if self._improved(row[self.monitor]):
                        self.best_value, self.best_epoch, self.stale = row[self.monitor], epoch, 0
                        best_state = self._weights()
                    else:
                        self.stale += 1
                    stop = self._should_stop(epoch)
                if path is not None and distributed.is_rank0():
                    self._save(path, epoch, best_state, stop)
                if stop:
                    logger.info("early stop after epoch %d: no improvement for %d epochs", epoch, self.stale)
                    break
        bar.close()
        distributed.barrier()  # the last checkpoint is on disk before any rank goes on
        if self.monitor is not None:
            for name, m in self.modules.items():
                m.load_state_dict(best_state[name])
            logger.info("restored best epoch %d (%s %.5g)", self.best_epoch, self.monitor, self.best_value)
        return self
