"""VAMPNet: train a lobe (any network frames -> n_cvs) to maximise a VAMP score, deeptime-style.

``VAMPNet(lobe, ...).fit(train, validation)`` trains and returns the estimator; ``fetch_model()`` returns
an independent ``VAMPModel``: the lobe followed by a fixed linear projection onto the estimated VAMP
singular functions, so output k is the k-th slowest CV, mean-free with unit variance on the training data.

Biased data: ``fit(..., train_weights=[w_i per frame])`` weights the pair (x_t, x_{t+lagtime}) by the weight
of its *instantaneous* frame w_t (reweighting the start of each pair to equilibrium; valid when the bias
barely changes the dynamics within one lag, e.g. a quasi-static bias), or ``train_pairs`` gives explicit
(i0, it, weight) pairs per trajectory, e.g. built on a rescaled time axis by :mod:`cvlearn.data.lagged`.

Under ``torchrun`` (a process group from :func:`cvlearn.distributed.init_from_env`) every rank holds the data, draws
the same global batches (same seed) and takes its contiguous slice of each; the lobe runs inside
``DistributedDataParallel``. The score is computed from covariance sums all-reduced with an autograd-aware
collective, so loss and gradient are those of the global batch (the mean of per-rank VAMP scores is not the VAMP
score of the union). Backward of that collective sums the ranks' identical upstream gradients, giving each rank
``world_size`` times its share; DDP's average divides that back out, so no extra scaling is applied (checked by
tests/estimators/test_vampnet_distributed.py). Validation pairs are sharded the same way. Dropout masks are drawn per
rank, so a lobe with dropout does not reproduce the single-process run exactly; batch norm sees per-rank
statistics (use SyncBatchNorm).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Callable, Sequence

import torch

from cvlearn.data import lagged_pairs
from cvlearn.distributed import all_reduce_sum, is_distributed, rank, world_size, wrap_ddp
from cvlearn.estimators.smoothness import SmoothnessTerm
from cvlearn.estimators.scores import COVARIANCE_MODES, covariances, koopman_svd, score_function, vamp_score
from cvlearn.estimators.trainer import LR_SCHEDULES, Trainer, check_count, make_scheduler
from cvlearn.models.cv import VAMPModel
from cvlearn.models.evaluation import evaluate_chunked

logger = logging.getLogger(__name__)


def _as_trajectories(data: Sequence[torch.Tensor], name: str) -> list[torch.Tensor]:
    if isinstance(data, torch.Tensor) or len(data) == 0:
        raise ValueError(f"{name}: expected a non-empty list of per-trajectory tensors [T_i, ...], "
                         f"found {type(data).__name__ if isinstance(data, torch.Tensor) else 'an empty sequence'}")
    out = [torch.as_tensor(x) for x in data]
    shapes = sorted({tuple(x.shape[1:]) for x in out})
    if any(x.ndim < 1 for x in out) or len(shapes) != 1:
        raise ValueError(f"{name}: expected every trajectory to have the same per-frame shape, found {shapes}")
    return out


def _pair_indices(trajectories: Sequence[torch.Tensor], lagtime: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i0, it) into the concatenated frames: pairs are built once as indices, not copies."""
    offsets, start = [], 0
    for x in trajectories:
        offsets.append(torch.arange(start, start + len(x)))
        start += len(x)
    try:
        return lagged_pairs(offsets, lagtime)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from err


PairSpec = Sequence[tuple]  # per trajectory: (i0, it, weight) with frame indices local to that trajectory
CHECKPOINT_FORMAT = "cvlearn.VAMPNet.checkpoint/2"


def _weighted_pair_indices(trajectories: Sequence[torch.Tensor], lagtime: int, name: str, weights=None,
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
        i0, it = _pair_indices(trajectories, lagtime, name)
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
                if len(x) > lagtime:
                    ws.append(wk[:-lagtime])  # the pair (t, t+lagtime) carries the weight of frame t
            w = torch.cat(ws)
    if w is not None and (not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0):
        raise ValueError(f"{name}: expected finite, non-negative pair weights with a positive sum")
    if len(i0) < 2:
        raise ValueError(f"{name}: expected at least 2 time-lagged pairs at lagtime {lagtime}, found {len(i0)}")
    return i0, it, w


class VAMPNet:
    """Estimator: trains ``lobe`` on -score (VAMP-1, VAMP-2 or VAMP-E) with Adam and early stopping on the
    validation score, through the shared :class:`~cvlearn.estimators.trainer.Trainer`.

    Seed the lobe's initialisation yourself (before building it); ``seed`` fixes shuffling and dropout.
    After ``fit`` the lobe holds the weights of the best validation epoch. History rows hold
    ``train_<score>``, ``val_<score>``, ``val_vamp2``, ``lr`` and ``seconds``.

    Parameters
    ----------
    lobe : torch.nn.Module
        Frames ``[n_frames, ...]`` (e.g. positions nm ``[n_frames, n_atoms, 3]``) → outputs ``[n_frames, n_out]``.
        A lobe may offer ``param_groups(learning_rate)`` (per-part learning rates) and ``recalibrate(frames)``
        (refresh normalisation statistics before each validation).
    lagtime : int
        Lag time in frames.
    learning_rate : float
        Adam learning rate.
    batch_size : int
        Pairs per batch (batches hold ``batch_size`` to ``2 * batch_size - 1`` pairs).
    max_epochs, patience, min_epochs : int
        At most ``max_epochs``; stop after ``patience`` epochs without a better validation score, but not
        before ``min_epochs`` (end-to-end GNN training can sit near VAMP-2 = 1 for a few epochs).
    epsilon : float
        Eigenvalue cutoff of the covariance inverses.
    seed : int
        Shuffling and dropout.
    device : str
    weight_decay : float
    progress : bool
        Progress bar over epochs.
    score : {"vamp2", "vamp1", "vampe"}
        The training and early-stopping score.
    mode : {"trunc", "regularize", "clamp"}
        The covariance inverse (``"trunc"`` as deeptime's VAMP, the others as deeptime's VAMPNet options).
    lr_schedule : None, str or callable
        See :func:`~cvlearn.estimators.trainer.make_scheduler` (cosine to 1 % over ``max_epochs``; plateau
        halves after ``patience // 2`` stale epochs).
    distributed : bool or None
        Train data-parallel over the ranks of the process group (see the module docstring); None: whenever a
        group of more than one rank is initialised. False trains independently on every rank.
    smoothness, smoothness_frames : float, int
        λ > 0 adds λ · tr(C⁻¹ G) (nm⁻², the whitened Dirichlet form of the lobe outputs, see
        :mod:`cvlearn.estimators.smoothness`) to the loss: G on ``smoothness_frames`` random frames of each batch, C
        the covariance of the outputs on the batch's instantaneous frames (one more forward pass of them).
        0 (default) trains exactly as without it. Not supported data-parallel.
    smoothness_inputs : callable, optional
        Positions nm → lobe inputs (e.g. the frozen featurizer's token embedder) when the lobe does not take
        positions; ``fit(train_positions=...)`` then gives the positions of the training frames.
    """

    def __init__(self, lobe: torch.nn.Module, *, lagtime: int, learning_rate: float = 1e-3, batch_size: int = 1024,
                 max_epochs: int = 50, patience: int = 10, epsilon: float = 1e-6, seed: int = 0, device: str = "cpu",
                 weight_decay: float = 0.0, progress: bool = True, score: str = "vamp2", mode: str = "trunc",
                 lr_schedule: str | Callable | None = None, min_epochs: int = 0, distributed: bool | None = None,
                 smoothness: float = 0.0, smoothness_frames: int = 32, smoothness_inputs: Callable | None = None):
        for name, value, low in (("lagtime", lagtime, 1), ("batch_size", batch_size, 2),
                                 ("max_epochs", max_epochs, 1), ("patience", patience, 1), ("min_epochs", min_epochs, 0)):
            check_count(name, value, low)
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
        self.min_epochs = min_epochs
        self.epsilon = epsilon
        self.seed = seed
        self.device = torch.device(device)
        self.weight_decay = weight_decay
        self.progress = progress
        self.mode = mode
        self.lr_schedule = lr_schedule
        self.distributed = distributed
        SmoothnessTerm(smoothness, smoothness_frames, torch.zeros(2, 1, 3))  # validates both
        self.smoothness, self.smoothness_frames = smoothness, smoothness_frames
        self.smoothness_inputs = smoothness_inputs
        self.history: list[dict] = []
        self.best_epoch: int = -1
        self.best_val_score: float = float("-inf")
        self.best_val_vamp2: float = float("-inf")
        self._train: list[torch.Tensor] | None = None
        self._train_pairs: tuple | None = None

    def _outputs(self, frames: torch.Tensor) -> torch.Tensor:
        """Lobe outputs for all frames, in eval mode and in chunks to bound memory."""
        return evaluate_chunked(self.lobe, frames, chunk_size=max(self.batch_size, 1024), modules=(self.lobe,),
                                device=self.device)

    def _eval(self, y: torch.Tensor, pairs: tuple, r, reduce=None) -> float:
        i0, it, w = pairs
        w = None if w is None else w.to(y.device)
        if isinstance(r, str):
            fn = score_function(r)
            return float(fn(y[i0], y[it], self.epsilon, weights=w, mode=self.mode, reduce=reduce))
        return float(vamp_score(y[i0], y[it], r=r, epsilon=self.epsilon, weights=w, mode=self.mode, reduce=reduce))

    def _sharded_eval(self, frames: torch.Tensor, pairs: tuple, scores: Sequence, reduce) -> list[float]:
        """Scores of ``pairs``; under a group each rank evaluates the frames of its slice of the pairs only."""
        if reduce is None:
            y = self._outputs(frames)
            return [self._eval(y, pairs, r) for r in scores]
        i0, it, w = pairs
        sel = torch.tensor_split(torch.arange(len(i0)), world_size())[rank()]
        need, inverse = torch.unique(torch.cat([i0[sel], it[sel]]), return_inverse=True)
        y = self._outputs(frames[need])
        local = (inverse[:len(sel)], inverse[len(sel):], None if w is None else w[sel])
        return [self._eval(y, local, r, reduce) for r in scores]

    def score(self, data: Sequence[torch.Tensor], r: float | str = 2, *, weights=None,
              pairs: PairSpec | None = None) -> float:
        """VAMP score of the current lobe's outputs on the lagged pairs of ``data`` (re-estimated on them).

        Parameters
        ----------
        data : list of Tensor [T_i, ...]
            Trajectories of lobe inputs.
        r : float or str
            VAMP-r with r >= 1, or ``"vamp1"``, ``"vamp2"``, ``"vampe"``.
        weights, pairs
            Frame weights or explicit pairs, as in :meth:`fit`.

        Returns
        -------
        float
        """
        data = _as_trajectories(data, "data")
        pairs = _weighted_pair_indices(data, self.lagtime, "data", weights, pairs)
        return self._eval(self._outputs(torch.cat(data)), pairs, r)

    def _config(self, n_train: int, n_val: int) -> dict:
        schedule = self.lr_schedule if isinstance(self.lr_schedule, (str, type(None))) else "callable"
        config = {"lagtime": self.lagtime, "batch_size": self.batch_size, "score": self.score_name, "mode": self.mode,
                  "epsilon": self.epsilon, "learning_rate": self.learning_rate, "weight_decay": self.weight_decay,
                  "seed": self.seed, "lr_schedule": schedule, "n_train_pairs": n_train, "n_val_pairs": n_val}
        if schedule == "cosine":
            config["max_epochs"] = self.max_epochs  # the cosine period: a longer run is a different schedule
        if self.smoothness > 0:  # absent at 0, so checkpoints of runs without it still resume
            config.update(smoothness=self.smoothness, smoothness_frames=self.smoothness_frames)
        return config

    def fit(self, train: Sequence[torch.Tensor], validation: Sequence[torch.Tensor], *, train_weights=None,
            validation_weights=None, train_pairs: PairSpec | None = None, validation_pairs: PairSpec | None = None,
            checkpoint_path: str | Path | None = None,
            train_positions: Sequence[torch.Tensor] | None = None) -> "VAMPNet":
        """Train on the lagged pairs of ``train``, stopping early on the score of ``validation``.

        Parameters
        ----------
        train, validation : list of Tensor [T_i, ...]
            Trajectories of lobe inputs (e.g. positions nm ``[T_i, n_atoms, 3]``), split by whole trajectory.
        train_weights, validation_weights : list of array [T_i], optional
            Per-frame weights (e.g. reweighting factors of a biased run); pair (t, t + lagtime) carries the
            weight of frame t.
        train_pairs, validation_pairs : list of (i0 [n], it [n], weight [n]), optional
            Explicit pairs per trajectory (frame indices local to it), e.g. on a rescaled time axis.
        checkpoint_path : str or Path, optional
            The full state is saved here atomically after every epoch; a run whose checkpoint exists resumes
            from it (same data and settings; ``max_epochs``/``patience`` may grow, except ``max_epochs`` under
            the cosine schedule, whose period it is).
        train_positions : list of Tensor [T_i, n_atoms, 3], optional
            Positions (nm) of the training frames for the smoothness penalty; None: ``train`` (the lobe takes
            positions).

        Returns
        -------
        VAMPNet
            self, with the lobe at its best validation epoch.
        """
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
        shard = is_distributed() if self.distributed is None else bool(self.distributed) and is_distributed()
        reduce, n_ranks, me = (all_reduce_sum, world_size(), rank()) if shard else (None, 1, 0)
        if shard and min(self.batch_size, len(val_pairs[0])) < n_ranks:
            raise ValueError(f"batch_size ({self.batch_size}) and validation pairs ({len(val_pairs[0])}): expected "
                             f"at least one per rank ({n_ranks} ranks)")

        smooth = None
        if self.smoothness > 0:
            if shard:
                raise ValueError("smoothness: not supported in data-parallel training; train on one rank")
            positions = torch.cat(_as_trajectories(train_positions, "train_positions")) if train_positions is not None \
                else train_frames
            if len(positions) != len(train_frames):
                raise ValueError(f"train_positions: expected {len(train_frames)} frames as in train, "
                                 f"found {len(positions)}")
            smooth = SmoothnessTerm(self.smoothness, self.smoothness_frames, positions, self.smoothness_inputs,
                                    seed=self.seed + 1, device=self.device)
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.lobe.to(self.device)
        model = wrap_ddp(self.lobe, self.device) if shard else self.lobe  # broadcasts rank 0's weights
        # A lobe may ask for per-part learning rates (e.g. a gently fine-tuned pre-trained featurizer).
        params = (self.lobe.param_groups(self.learning_rate) if hasattr(self.lobe, "param_groups")
                  else [p for p in self.lobe.parameters() if p.requires_grad])
        optimizer = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        scheduler = make_scheduler(self.lr_schedule, optimizer, learning_rate=self.learning_rate,
                                   max_epochs=self.max_epochs, patience=self.patience, mode="max")
        name = self.score_name
        generators = {"shuffle": generator, **({"smoothness": smooth.generator} if smooth is not None else {})}
        trainer = Trainer({"lobe": self.lobe}, optimizer, scheduler, fmt=CHECKPOINT_FORMAT,
                          config=self._config(n_pairs, len(val_pairs[0])), what="VAMPNet",
                          max_epochs=self.max_epochs, monitor=f"val_{name}", mode="max", patience=self.patience,
                          min_epochs=self.min_epochs, generators=generators, device=self.device,
                          progress=self.progress, postfix=(f"train_{name}", f"val_{name}"))
        logger.info("VAMPNet (%s): %d train pairs in %d batches, %d validation pairs, lag %d frames%s",
                    name, n_pairs, n_batches, len(val_pairs[0]), self.lagtime, ", weighted" if w is not None else "")
        recalibration_frames = torch.randperm(len(train_frames), generator=torch.Generator().manual_seed(self.seed))[:4096]

        def run_epoch(epoch: int) -> dict:
            self.lobe.train()
            total = 0.0
            for batch in torch.tensor_split(torch.randperm(n_pairs, generator=generator), n_batches):
                mine = torch.tensor_split(batch, n_ranks)[me]  # this rank's slice of the global batch
                b0, bt = i0[mine].to(self.device), it[mine].to(self.device)
                y = model(torch.cat([train_frames[b0], train_frames[bt]]))
                bw = None if w is None else w[mine].to(self.device)
                score = self._score_fn(y[:len(mine)], y[len(mine):], self.epsilon, weights=bw, mode=self.mode,
                                       reduce=reduce)  # the global batch's score: covariance sums all-reduced
                loss = -score if smooth is None else smooth(self.lobe, i0[mine], train_frames[b0]) - score
                trainer.step(loss, epoch, hint=" or a larger epsilon")
                total += float(score.detach()) * len(batch)
            if hasattr(self.lobe, "recalibrate"):
                # Normalisation statistics that lag a moving featurizer make eval-mode scores noisy;
                # a lobe may refresh them on training frames before it is evaluated.
                self.lobe.recalibrate(train_frames[recalibration_frames].to(self.device))
            scores = self._sharded_eval(val_frames, val_pairs, [name] if name == "vamp2" else [name, 2], reduce)
            val_score, val_vamp2 = scores[0], scores[-1]
            return {f"train_{name}": total / n_pairs, f"val_{name}": val_score, "val_vamp2": val_vamp2}

        trainer.fit(run_epoch, checkpoint_path=checkpoint_path)
        self.history, self.best_epoch, self.best_val_score = trainer.history, trainer.best_epoch, trainer.best_value
        self.best_val_vamp2 = self.history[self.best_epoch]["val_vamp2"] if self.best_epoch >= 0 else float("-inf")
        self._train = train  # references only; the projection is fitted on these in fetch_model()
        self._train_pairs = (i0, it, w)
        return self

    def fetch_model(self) -> VAMPModel:
        """An independent copy of the lobe plus the VAMP projection fitted on the (weighted) training pairs.

        Returns
        -------
        VAMPModel
            Frames → CVs ``[n_frames, n_cvs]``, slowest first, mean-free with unit variance on the training data.
        """
        if self._train is None:
            raise RuntimeError("VAMPNet.fetch_model(): call fit() first")
        i0, it, w = self._train_pairs
        y = self._outputs(torch.cat(self._train)).to(torch.float64)
        y0, yt = y[i0], y[it]
        w = None if w is None else w.to(y.device)
        singular_values, projection, _ = koopman_svd(*covariances(y0, yt, w), epsilon=self.epsilon)
        if projection.shape[1] < y.shape[1]:
            logger.warning("VAMP projection keeps %d of %d lobe outputs (the rest fell below epsilon=%g)",
                           projection.shape[1], y.shape[1], self.epsilon)
        mean = y0.mean(dim=0) if w is None else (w[:, None] / w.sum() * y0).sum(dim=0)
        lobe = copy.deepcopy(self.lobe).eval()
        return VAMPModel(lobe, mean, projection, singular_values, self.lagtime)
