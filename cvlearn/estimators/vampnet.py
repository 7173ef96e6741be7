"""VAMPNet: train a lobe (any network frames -> n_cvs) to maximise a VAMP score, deeptime-style.

``VAMPNet(lobe, ...).fit(train, validation)`` trains and returns the estimator; ``fetch_model()`` returns
an independent ``VAMPModel``: the lobe followed by a fixed linear projection onto the estimated VAMP
singular functions, so output k is the k-th slowest CV, mean-free with unit variance on the training data.

Biased data: ``fit(..., train_weights=[w_i per frame])`` weights the pair (x_t, x_{t+lag}) by the weight
of its *instantaneous* frame w_t (reweighting the start of each pair to equilibrium; valid when the bias
barely changes the dynamics within one lag, e.g. a quasi-static bias), or ``train_pairs`` gives explicit
(i0, it, weight) pairs per trajectory, e.g. built on a rescaled time axis by :mod:`cvlearn.data.lagged`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from cvlearn.data import lagged_pairs
from cvlearn.estimators.scores import COVARIANCE_MODES, covariances, koopman_svd, score_function, vamp_score
from cvlearn.estimators.trainer import load_run_state, save_run_state

logger = logging.getLogger(__name__)


class VAMPModel(torch.nn.Module):
    """Lobe followed by the VAMP projection ``(lobe(x) - mean0) @ projection``.

    ``projection = C00^{-1/2} U`` with U the left singular vectors of the half-weighted Koopman matrix,
    fitted on the training pairs, slowest first. If epsilon truncation dropped (near-)linearly dependent
    lobe outputs, there are fewer CVs than lobe outputs: ``projection`` is [n_lobe_outputs, n_cvs].
    The affine map leaves every VAMP score unchanged; the projection runs in float64 and the result is cast
    back to the lobe's output dtype.
    """

    def __init__(self, lobe: torch.nn.Module, mean: torch.Tensor, projection: torch.Tensor,
                 singular_values: torch.Tensor, lagtime: int):
        super().__init__()
        self.lobe = lobe
        self.lagtime: int = int(lagtime)
        self.register_buffer("mean", mean.detach().to(torch.float64).clone())
        self.register_buffer("projection", projection.detach().to(torch.float64).clone())
        self.register_buffer("singular_values", singular_values.detach().to(torch.float64).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lobe(x)
        return ((y.to(self.mean.dtype) - self.mean) @ self.projection).to(y.dtype)

    def with_lobe(self, lobe: torch.nn.Module) -> "VAMPModel":
        """The same projection behind another lobe computing the same outputs, e.g. a head trained on stored
        tokens put back behind its featurizer for export (``TokenCV.on_featurizer``)."""
        return VAMPModel(lobe, self.mean, self.projection, self.singular_values, self.lagtime)


def _as_trajectories(data: Sequence[torch.Tensor], name: str) -> list[torch.Tensor]:
    if isinstance(data, torch.Tensor) or len(data) == 0:
        raise ValueError(f"{name}: expected a non-empty list of per-trajectory tensors [T_i, ...], "
                         f"found {type(data).__name__ if isinstance(data, torch.Tensor) else 'an empty sequence'}")
    out = [torch.as_tensor(x) for x in data]
    shapes = sorted({tuple(x.shape[1:]) for x in out})
    if any(x.ndim < 1 for x in out) or len(shapes) != 1:
        raise ValueError(f"{name}: expected every trajectory to have the same per-frame shape, found {shapes}")
    return out


def _pair_indices(trajectories: Sequence[torch.Tensor], lag: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i0, it) into the concatenated frames: pairs are built once as indices, not copies."""
    offsets, start = [], 0
    for x in trajectories:
        offsets.append(torch.arange(start, start + len(x)))
        start += len(x)
    try:
        return lagged_pairs(offsets, lag)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err


PairSpec = Sequence[tuple]  # per trajectory: (i0, it, weight) with frame indices local to that trajectory
CHECKPOINT_FORMAT = "cvlearn.VAMPNet.checkpoint/1"
LR_SCHEDULES = ("cosine", "plateau", "exponential")


def _weighted_pair_indices(trajectories: Sequence[torch.Tensor], lag: int, name: str, weights=None,
                           pairs: PairSpec | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Global (i0, it, w) for the concatenated frames: lagged pairs with the instantaneous frame's weight,
    or the explicit per-trajectory pairs ``pairs``; w is None when unweighted."""
    if weights is not None and pairs is not None:
        raise ValueError(f"{name}: give frame weights or explicit pairs, not both")
    offsets = torch.cumsum(torch.tensor([0] + [len(x) for x in trajectories]), 0).tolist()
    if pairs is not None:
        if len(pairs) != len(trajectories):
            raise ValueError(f"{name}_pairs: expected one (i0, it, weight) triple per trajectory ({len(trajectories)}), "
                             f"found {len(pairs)}")
        i0s, its, ws = [], [], []
        for k, (x, triple) in enumerate(zip(trajectories, pairs)):
            i0, it, w = (torch.as_tensor(a) for a in triple)
            if not (i0.shape == it.shape == w.shape) or i0.ndim != 1:
                raise ValueError(f"{name}_pairs[{k}]: expected three 1-D arrays of equal length, found shapes "
                                 f"{tuple(i0.shape)}, {tuple(it.shape)}, {tuple(w.shape)}")
            if len(i0) and (int(min(i0.min(), it.min())) < 0 or int(max(i0.max(), it.max())) >= len(x)):
                raise ValueError(f"{name}_pairs[{k}]: expected frame indices in [0, {len(x)}), found "
                                 f"[{int(min(i0.min(), it.min()))}, {int(max(i0.max(), it.max()))}]")
            i0s.append(i0.long() + offsets[k])
            its.append(it.long() + offsets[k])
            ws.append(w.double())
        i0, it, w = torch.cat(i0s), torch.cat(its), torch.cat(ws)
    else:
        i0, it = _pair_indices(trajectories, lag, name)
        w = None
        if weights is not None:
            if isinstance(weights, torch.Tensor) or len(weights) != len(trajectories):
                raise ValueError(f"{name}_weights: expected a list of per-frame weight arrays, one per trajectory "
                                 f"({len(trajectories)}), found {type(weights).__name__} of length {len(weights)}")
            ws = []
            for k, (x, wk) in enumerate(zip(trajectories, weights)):
                wk = torch.as_tensor(wk, dtype=torch.float64).reshape(-1)
                if len(wk) != len(x):
                    raise ValueError(f"{name}_weights[{k}]: expected {len(x)} frame weights, found {len(wk)}")
                if len(x) > lag:
                    ws.append(wk[:-lag])  # the pair (t, t+lag) carries the weight of frame t
            w = torch.cat(ws)
    if w is not None and (not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0):
        raise ValueError(f"{name}: expected finite, non-negative pair weights with a positive sum")
    if len(i0) < 2:
        raise ValueError(f"{name}: expected at least 2 time-lagged pairs at lag {lag}, found {len(i0)}")
    return i0, it, w


@contextlib.contextmanager
def no_tf32(device: torch.device):
    """TF32 matmuls (Ampere+) keep ~10 mantissa bits: covariance inverses and VAMP scores need float32/64."""
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class VAMPNet:
    """Estimator: trains ``lobe`` on -score (VAMP-1, VAMP-2 or VAMP-E) with Adam and early stopping on the
    validation score.

    Seed the lobe's initialisation yourself (before building it); ``seed`` fixes shuffling and dropout.
    After ``fit`` the lobe holds the weights of the best validation epoch. ``mode`` is the covariance
    inverse (``"trunc"`` as deeptime's VAMP, ``"regularize"``/``"clamp"`` as deeptime's VAMPNet options).
    ``lr_schedule``: None, ``"cosine"`` (to 1 % over max_epochs), ``"exponential"`` (x0.95 per epoch),
    ``"plateau"`` (halve after patience//2 stale epochs) or ``callable(optimizer) -> scheduler`` (stepped
    once per epoch). History rows hold ``train_<score>``, ``val_<score>``, ``val_vamp2`` and ``lr``.
    """

    def __init__(self, lobe: torch.nn.Module, *, lagtime: int, learning_rate: float = 1e-3, batch_size: int = 1024,
                 max_epochs: int = 50, patience: int = 10, epsilon: float = 1e-6, seed: int = 0, device: str = "cpu",
                 weight_decay: float = 0.0, progress: bool = True, score: str = "vamp2", mode: str = "trunc",
                 lr_schedule: str | Callable | None = None, min_epochs: int = 0):
        for name, value, low in (("lagtime", lagtime, 1), ("batch_size", batch_size, 2),
                                 ("max_epochs", max_epochs, 1), ("patience", patience, 1), ("min_epochs", min_epochs, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, found {learning_rate!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon: expected a positive number, found {epsilon!r}")
        if mode not in COVARIANCE_MODES:
            raise ValueError(f"mode: expected one of {list(COVARIANCE_MODES)}, found {mode!r}")
        if lr_schedule is not None and not callable(lr_schedule) and lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: expected None, a callable or one of {list(LR_SCHEDULES)}, found {lr_schedule!r}")
        self._score_fn = score_function(score)
        self.score_name = str(score).lower().replace("-", "").replace("_", "")
        self.lobe = lobe
        self.lagtime = lagtime
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        # End-to-end GNN training can sit near VAMP-2 = 1 for several epochs before it finds the slow process;
        # early stopping only starts counting once min_epochs have run.
        self.min_epochs = min_epochs
        self.epsilon = epsilon
        self.seed = seed
        self.device = torch.device(device)
        self.weight_decay = weight_decay
        self.progress = progress
        self.mode = mode
        self.lr_schedule = lr_schedule
        self.history: list[dict] = []
        self.best_epoch: int = -1
        self.best_val_score: float = float("-inf")
        self.best_val_vamp2: float = float("-inf")
        self._train: list[torch.Tensor] | None = None
        self._train_pairs: tuple | None = None

    @torch.no_grad()
    def _outputs(self, frames: torch.Tensor, chunk: int) -> torch.Tensor:
        """Lobe outputs for all frames, in eval mode and in chunks to bound memory."""
        was_training = self.lobe.training
        self.lobe.eval()
        try:
            return torch.cat([self.lobe(frames[i:i + chunk].to(self.device)) for i in range(0, len(frames), chunk)])
        finally:
            self.lobe.train(was_training)

    def _eval(self, y: torch.Tensor, pairs: tuple, r) -> float:
        i0, it, w = pairs
        w = None if w is None else w.to(y.device)
        if isinstance(r, str):
            fn = score_function(r)
            return float(fn(y[i0], y[it], self.epsilon, weights=w, mode=self.mode))
        return float(vamp_score(y[i0], y[it], r=r, epsilon=self.epsilon, weights=w, mode=self.mode))

    def _score_pairs(self, frames: torch.Tensor, pairs: tuple, r=2) -> float:
        if len(pairs) == 2:
            pairs = (*pairs, None)
        return self._eval(self._outputs(frames, max(self.batch_size, 1024)), pairs, r)

    def score(self, data: Sequence[torch.Tensor], r: float | str = 2, *, weights=None, pairs: PairSpec | None = None) -> float:
        """VAMP-r (r >= 1, or ``"vamp1"|"vamp2"|"vampe"``) of the current lobe's outputs on the lagged pairs of
        the given trajectories (re-estimated on them), optionally weighted as in :meth:`fit`."""
        data = _as_trajectories(data, "data")
        return self._score_pairs(torch.cat(data), _weighted_pair_indices(data, self.lagtime, "data", weights, pairs), r=r)

    def _config(self, n_train: int, n_val: int) -> dict:
        schedule = self.lr_schedule if isinstance(self.lr_schedule, (str, type(None))) else "callable"
        config = {"lagtime": self.lagtime, "batch_size": self.batch_size, "score": self.score_name, "mode": self.mode,
                  "epsilon": self.epsilon, "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                  "seed": self.seed, "lr_schedule": schedule, "n_train_pairs": n_train, "n_val_pairs": n_val}
        if schedule == "cosine":
            config["max_epochs"] = self.max_epochs  # the cosine period: a longer run is a different schedule
        return config

    def _make_scheduler(self, optimizer):
        if self.lr_schedule is None:
            return None
        if callable(self.lr_schedule):
            return self.lr_schedule(optimizer)
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.max_epochs,
                                                              eta_min=0.01 * self.learning_rate)
        if self.lr_schedule == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.95)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                          patience=max(1, self.patience // 2))

    def fit(self, train: Sequence[torch.Tensor], validation: Sequence[torch.Tensor], *, train_weights=None,
            validation_weights=None, train_pairs: PairSpec | None = None, validation_pairs: PairSpec | None = None,
            checkpoint_path: str | Path | None = None) -> "VAMPNet":
        """Train; with ``checkpoint_path`` the full state is saved atomically after every epoch, and a run
        whose checkpoint exists resumes from it (same data and settings; ``max_epochs``/``patience`` may grow,
        except ``max_epochs`` under the cosine schedule, whose period it is)."""
        train = _as_trajectories(train, "train")
        validation = _as_trajectories(validation, "validation")
        if train[0].shape[1:] != validation[0].shape[1:]:
            raise ValueError(f"validation: expected per-frame shape {tuple(train[0].shape[1:])} as in train, "
                             f"found {tuple(validation[0].shape[1:])}")
        train_frames, val_frames = torch.cat(train).to(self.device), torch.cat(validation)
        i0, it, w = _weighted_pair_indices(train, self.lagtime, "train", train_weights, train_pairs)
        val_pairs = _weighted_pair_indices(validation, self.lagtime, "validation", validation_weights, validation_pairs)
        n_pairs = len(i0)
        n_batches = max(1, n_pairs // self.batch_size)  # equal batches of batch_size..2*batch_size-1 pairs

        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.lobe.to(self.device)
        # A lobe may ask for per-part learning rates (e.g. a gently fine-tuned pre-trained featurizer).
        params = (self.lobe.param_groups(self.learning_rate) if hasattr(self.lobe, "param_groups")
                  else [p for p in self.lobe.parameters() if p.requires_grad])
        optimizer = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        scheduler = self._make_scheduler(optimizer)
        self.history, self.best_epoch = [], -1
        self.best_val_score, self.best_val_vamp2 = float("-inf"), float("-inf")
        best_state, stale, first_epoch, done = copy.deepcopy(self.lobe.state_dict()), 0, 0, False
        config = self._config(n_pairs, len(val_pairs[0]))
        if checkpoint_path is not None and Path(checkpoint_path).is_file():
            ckpt = self._load_checkpoint(Path(checkpoint_path), config)
            self.lobe.load_state_dict(ckpt["lobe"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None and ckpt["scheduler"] is not None:
                scheduler.load_state_dict(ckpt["scheduler"])
            generator.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
            self.history, self.best_epoch, stale = list(ckpt["history"]), ckpt["best_epoch"], ckpt["stale"]
            self.best_val_score, self.best_val_vamp2 = ckpt["best_val_score"], ckpt["best_val_vamp2"]
            best_state, first_epoch = ckpt["best_state"], ckpt["epoch"] + 1
            done = ckpt["stopped_early"] and stale >= self.patience
            logger.info("resuming from %s after epoch %d", checkpoint_path, ckpt["epoch"])
        logger.info("VAMPNet (%s): %d train pairs in %d batches, %d validation pairs, lag %d frames%s",
                    self.score_name, n_pairs, n_batches, len(val_pairs[0]), self.lagtime,
                    ", weighted" if w is not None else "")
        name = self.score_name
        epochs = tqdm(range(first_epoch, self.max_epochs), desc="VAMPNet", disable=not self.progress or done)
        with no_tf32(self.device):
            recalibration_frames = torch.randperm(len(train_frames), generator=torch.Generator().manual_seed(self.seed))[:4096]
            for epoch in ([] if done else epochs):
                self.lobe.train()
                total = 0.0
                for batch in torch.tensor_split(torch.randperm(n_pairs, generator=generator), n_batches):
                    b0, bt = i0[batch].to(self.device), it[batch].to(self.device)
                    y = self.lobe(torch.cat([train_frames[b0], train_frames[bt]]))
                    bw = None if w is None else w[batch].to(self.device)
                    score = self._score_fn(y[:len(batch)], y[len(batch):], self.epsilon, weights=bw, mode=self.mode)
                    if not torch.isfinite(score):
                        raise FloatingPointError(f"{name} became {float(score)} in epoch {epoch}; try a lower "
                                                 f"learning_rate (now {self.learning_rate}) or a larger epsilon")
                    optimizer.zero_grad()
                    (-score).backward()
                    optimizer.step()
                    total += float(score.detach()) * len(batch)
                train_score = total / n_pairs
                if hasattr(self.lobe, "recalibrate"):
                    # Normalisation statistics that lag a moving featurizer make eval-mode scores noisy;
                    # a lobe may refresh them on training frames before it is evaluated.
                    self.lobe.recalibrate(train_frames[recalibration_frames].to(self.device))
                y_val = self._outputs(val_frames, max(self.batch_size, 1024))
                val_score = self._eval(y_val, val_pairs, name)
                val_vamp2 = val_score if name == "vamp2" else self._eval(y_val, val_pairs, 2)
                lr = optimizer.param_groups[0]["lr"]
                self.history.append({"epoch": epoch, f"train_{name}": train_score, f"val_{name}": val_score,
                                     "val_vamp2": val_vamp2, "lr": lr})
                epochs.set_postfix({f"train_{name}": f"{train_score:.4f}", f"val_{name}": f"{val_score:.4f}"})
                logger.info("epoch %d: train %s %.5f, validation %s %.5f", epoch, name, train_score, name, val_score)
                if scheduler is not None:
                    scheduler.step(val_score) if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) \
                        else scheduler.step()
                if val_score > self.best_val_score:
                    self.best_val_score, self.best_val_vamp2, self.best_epoch, stale = val_score, val_vamp2, epoch, 0
                    best_state = copy.deepcopy(self.lobe.state_dict())
                else:
                    stale += 1
                stop = stale >= self.patience and epoch + 1 >= self.min_epochs
                if checkpoint_path is not None:
                    self._save_checkpoint(Path(checkpoint_path), config, epoch, optimizer, scheduler, generator,
                                          best_state, stale, stop)
                if stop:
                    logger.info("early stop after epoch %d: no improvement for %d epochs", epoch, stale)
                    break
        epochs.close()
        self.lobe.load_state_dict(best_state)
        logger.info("restored best epoch %d (validation %s %.5f)", self.best_epoch, name, self.best_val_score)
        self._train = train  # references only; the projection is fitted on these in fetch_model()
        self._train_pairs = (i0, it, w)
        return self

    def _save_checkpoint(self, path: Path, config: dict, epoch: int, optimizer, scheduler, generator, best_state,
                         stale: int, stopped: bool) -> None:
        state = {"format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch, "lobe": self.lobe.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": None if scheduler is None else scheduler.state_dict(),
                 "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "history": self.history,
                 "best_state": best_state, "best_epoch": self.best_epoch, "best_val_score": self.best_val_score,
                 "best_val_vamp2": self.best_val_vamp2, "stale": stale, "stopped_early": stopped}
        save_run_state(path, state)

    def _load_checkpoint(self, path: Path, config: dict) -> dict:
        return load_run_state(path, fmt=CHECKPOINT_FORMAT, config=config, device=self.device, what="VAMPNet")

    def fetch_model(self) -> VAMPModel:
        """An independent copy of the lobe plus the VAMP projection fitted on the (weighted) training pairs."""
        if self._train is None:
            raise RuntimeError("VAMPNet.fetch_model(): call fit() first")
        i0, it, w = self._train_pairs
        y = self._outputs(torch.cat(self._train), max(self.batch_size, 1024)).to(torch.float64)
        y0, yt = y[i0], y[it]
        w = None if w is None else w.to(y.device)
        singular_values, projection, _ = koopman_svd(*covariances(y0, yt, w), epsilon=self.epsilon)
        if projection.shape[1] < y.shape[1]:
            logger.warning("VAMP projection keeps %d of %d lobe outputs (the rest fell below epsilon=%g)",
                           projection.shape[1], y.shape[1], self.epsilon)
        mean = y0.mean(dim=0) if w is None else (w[:, None] / w.sum() * y0).sum(dim=0)
        lobe = copy.deepcopy(self.lobe).eval()
        return VAMPModel(lobe, mean, projection, singular_values, self.lagtime)
