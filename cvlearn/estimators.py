"""VAMPNet: train a lobe (any network frames -> n_cvs) to maximise VAMP-2, deeptime-style.

``VAMPNet(lobe, ...).fit(train, validation)`` trains and returns the estimator; ``fetch_model()`` returns
an independent ``VAMPModel``: the lobe followed by a fixed linear projection onto the estimated VAMP
singular functions, so output k is the k-th slowest CV, mean-free with unit variance on the training data.
"""

from __future__ import annotations

import copy
import logging
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .data import lagged_pairs
from .losses import covariances, koopman_svd, vamp_score

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


class VAMPNet:
    """Estimator: trains ``lobe`` on -VAMP-2 with Adam and early stopping on validation VAMP-2.

    Seed the lobe's initialisation yourself (before building it); ``seed`` fixes shuffling and dropout.
    After ``fit`` the lobe holds the weights of the best validation epoch.
    """

    def __init__(self, lobe: torch.nn.Module, *, lagtime: int, learning_rate: float = 1e-3, batch_size: int = 1024,
                 max_epochs: int = 50, patience: int = 10, epsilon: float = 1e-6, seed: int = 0, device: str = "cpu",
                 weight_decay: float = 0.0, progress: bool = True):
        for name, value, low in (("lagtime", lagtime, 1), ("batch_size", batch_size, 2),
                                 ("max_epochs", max_epochs, 1), ("patience", patience, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, found {learning_rate!r}")
        if not epsilon > 0:
            raise ValueError(f"epsilon: expected a positive number, found {epsilon!r}")
        self.lobe = lobe
        self.lagtime = lagtime
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.epsilon = epsilon
        self.seed = seed
        self.device = torch.device(device)
        self.weight_decay = weight_decay
        self.progress = progress
        self.history: list[dict] = []
        self.best_epoch: int = -1
        self.best_val_vamp2: float = float("-inf")
        self._train: list[torch.Tensor] | None = None

    @torch.no_grad()
    def _outputs(self, frames: torch.Tensor, chunk: int) -> torch.Tensor:
        """Lobe outputs for all frames, in eval mode and in chunks to bound memory."""
        was_training = self.lobe.training
        self.lobe.eval()
        try:
            return torch.cat([self.lobe(frames[i:i + chunk].to(self.device)) for i in range(0, len(frames), chunk)])
        finally:
            self.lobe.train(was_training)

    def _score_pairs(self, frames: torch.Tensor, pairs: tuple[torch.Tensor, torch.Tensor], r: float = 2) -> float:
        y = self._outputs(frames, max(self.batch_size, 1024))
        return float(vamp_score(y[pairs[0]], y[pairs[1]], r=r, epsilon=self.epsilon))

    def score(self, data: Sequence[torch.Tensor], r: float = 2) -> float:
        """VAMP-r of the current lobe's outputs on the lagged pairs of the given trajectories."""
        data = _as_trajectories(data, "data")
        return self._score_pairs(torch.cat(data), _pair_indices(data, self.lagtime, "data"), r=r)

    def fit(self, train: Sequence[torch.Tensor], validation: Sequence[torch.Tensor]) -> "VAMPNet":
        train = _as_trajectories(train, "train")
        validation = _as_trajectories(validation, "validation")
        if train[0].shape[1:] != validation[0].shape[1:]:
            raise ValueError(f"validation: expected per-frame shape {tuple(train[0].shape[1:])} as in train, "
                             f"found {tuple(validation[0].shape[1:])}")
        train_frames, val_frames = torch.cat(train).to(self.device), torch.cat(validation)
        i0, it = _pair_indices(train, self.lagtime, "train")
        val_pairs = _pair_indices(validation, self.lagtime, "validation")
        n_pairs = len(i0)
        if n_pairs < 2:
            raise ValueError(f"train: expected at least 2 time-lagged pairs at lag {self.lagtime}, found {n_pairs}")
        n_batches = max(1, n_pairs // self.batch_size)  # equal batches of batch_size..2*batch_size-1 pairs

        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.lobe.to(self.device)
        # A lobe may ask for per-part learning rates (e.g. a gently fine-tuned pre-trained featurizer).
        params = (self.lobe.param_groups(self.learning_rate) if hasattr(self.lobe, "param_groups")
                  else [p for p in self.lobe.parameters() if p.requires_grad])
        optimizer = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        self.history, self.best_epoch, self.best_val_vamp2 = [], -1, float("-inf")
        best_state, stale = copy.deepcopy(self.lobe.state_dict()), 0
        logger.info("VAMPNet: %d train pairs in %d batches, %d validation pairs, lag %d frames",
                    n_pairs, n_batches, len(val_pairs[0]), self.lagtime)

        epochs = tqdm(range(self.max_epochs), desc="VAMPNet", disable=not self.progress)
        for epoch in epochs:
            self.lobe.train()
            total = 0.0
            for batch in torch.tensor_split(torch.randperm(n_pairs, generator=generator), n_batches):
                b0, bt = i0[batch].to(self.device), it[batch].to(self.device)
                y = self.lobe(torch.cat([train_frames[b0], train_frames[bt]]))
                score = vamp_score(y[:len(batch)], y[len(batch):], r=2, epsilon=self.epsilon)
                if not torch.isfinite(score):
                    raise FloatingPointError(f"VAMP-2 became {float(score)} in epoch {epoch}; "
                                             f"try a lower learning_rate (now {self.learning_rate}) or a larger epsilon")
                optimizer.zero_grad()
                (-score).backward()
                optimizer.step()
                total += float(score.detach()) * len(batch)
            train_vamp2 = total / n_pairs
            val_vamp2 = self._score_pairs(val_frames, val_pairs)
            self.history.append({"epoch": epoch, "train_vamp2": train_vamp2, "val_vamp2": val_vamp2})
            epochs.set_postfix(train_vamp2=f"{train_vamp2:.4f}", val_vamp2=f"{val_vamp2:.4f}")
            logger.info("epoch %d: train VAMP-2 %.5f, validation VAMP-2 %.5f", epoch, train_vamp2, val_vamp2)
            if val_vamp2 > self.best_val_vamp2:
                self.best_val_vamp2, self.best_epoch, stale = val_vamp2, epoch, 0
                best_state = copy.deepcopy(self.lobe.state_dict())
            else:
                stale += 1
                if stale >= self.patience:
                    logger.info("early stop after epoch %d: no improvement for %d epochs", epoch, stale)
                    break
        epochs.close()
        self.lobe.load_state_dict(best_state)
        logger.info("restored best epoch %d (validation VAMP-2 %.5f)", self.best_epoch, self.best_val_vamp2)
        self._train = train  # references only; the projection is fitted on these in fetch_model()
        return self

    def fetch_model(self) -> VAMPModel:
        """An independent copy of the lobe plus the VAMP projection fitted on the training pairs."""
        if self._train is None:
            raise RuntimeError("VAMPNet.fetch_model(): call fit() first")
        i0, it = _pair_indices(self._train, self.lagtime, "train")
        y = self._outputs(torch.cat(self._train), max(self.batch_size, 1024)).to(torch.float64)
        y0, yt = y[i0], y[it]
        singular_values, projection, _ = koopman_svd(*covariances(y0, yt), epsilon=self.epsilon)
        if projection.shape[1] < y.shape[1]:
            logger.warning("VAMP projection keeps %d of %d lobe outputs (the rest fell below epsilon=%g)",
                           projection.shape[1], y.shape[1], self.epsilon)
        lobe = copy.deepcopy(self.lobe).eval()
        return VAMPModel(lobe, y0.mean(dim=0), projection, singular_values, self.lagtime)
