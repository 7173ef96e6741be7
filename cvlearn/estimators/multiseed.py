"""Train the same model with several seeds and report mean ± std: one seed is an anecdote, not a result."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from cvlearn.data import lagged_pairs
from cvlearn.estimators import VAMPModel, VAMPNet
from cvlearn.estimators.scores import vamp_score

logger = logging.getLogger(__name__)


@dataclass
class SeedResults:
    """Per-seed scores (``values``: held-out VAMP-2 of the first ``dim`` CVs) and their mean ± sample std."""

    seeds: list[int]
    values: list[float]
    validation: list[float]
    seconds: list[float]
    models: list[VAMPModel] = field(default_factory=list, repr=False)
    histories: list[list[dict]] = field(default_factory=list, repr=False)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.std:.4f} (n={len(self.values)})"


@torch.no_grad()
def model_outputs(model: torch.nn.Module, trajectories: Sequence[torch.Tensor], chunk: int = 2048) -> list[torch.Tensor]:
    """Model outputs per trajectory, in eval mode and in chunks."""
    model.eval()
    return [torch.cat([model(t[i:i + chunk]) for i in range(0, len(t), chunk)]).double() for t in trajectories]


def heldout_vamp2(model: torch.nn.Module, test: Sequence[torch.Tensor], lag: int, dim: int | None = None,
                  epsilon: float = 1e-6) -> float:
    """VAMP-2 of the model's first ``dim`` outputs on held-out trajectories (the VAMPNet papers' test score)."""
    out = model_outputs(model, test)
    if dim is not None:
        out = [o[:, :dim] for o in out]
    return float(vamp_score(*lagged_pairs(out, lag), r=2, epsilon=epsilon))


def fit_seeds(make_lobe: Callable[[int], torch.nn.Module], train: Sequence[torch.Tensor],
              validation: Sequence[torch.Tensor], seeds: Sequence[int], *, test: Sequence[torch.Tensor] | None = None,
              dim: int | None = None, prepare: Callable[[torch.nn.Module], None] | None = None,
              fit_kwargs: dict | None = None, **estimator_kwargs) -> SeedResults:
    """For each seed: ``make_lobe(seed)`` (seeded before the call), optional ``prepare(lobe)`` (e.g. fit the
    head scaler), ``VAMPNet(lobe, seed=seed, **estimator_kwargs).fit(train, validation, **fit_kwargs)``, then
    VAMP-2 of the fetched model on ``test`` (``validation`` when None)."""
    if len(seeds) < 1:
        raise ValueError("seeds: expected at least one seed, found none")
    result = SeedResults([], [], [], [])
    for seed in seeds:
        started = time.perf_counter()
        torch.manual_seed(seed)
        lobe = make_lobe(seed)
        if prepare is not None:
            prepare(lobe)
        estimator = VAMPNet(lobe, seed=seed, **estimator_kwargs).fit(train, validation, **(fit_kwargs or {}))
        model = estimator.fetch_model()
        value = heldout_vamp2(model, test if test is not None else validation, estimator.lagtime, dim, estimator.epsilon)
        result.seeds.append(int(seed))
        result.values.append(value)
        result.validation.append(estimator.best_val_vamp2)
        result.seconds.append(time.perf_counter() - started)
        result.models.append(model)
        result.histories.append(estimator.history)
        logger.info("seed %d: held-out VAMP-2 %.4f (validation %.4f)", seed, value, estimator.best_val_vamp2)
    return result
