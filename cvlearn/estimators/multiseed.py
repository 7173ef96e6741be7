"""Train the same model with several seeds and report mean ± std: one seed is an anecdote, not a result."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from cvlearn.data import lagged_pairs
from cvlearn.estimators.scores import vamp_score
from cvlearn.estimators.vampnet import VAMPNet
from cvlearn.models.cv import VAMPModel
from cvlearn.models.evaluation import evaluate_chunked

logger = logging.getLogger(__name__)


@dataclass
class SeedResults:
    """Per-seed results of :func:`fit_seeds` and their mean ± sample std.

    Attributes
    ----------
    seeds : list of int
    values : list of float
        Held-out VAMP-2 of the first ``dim`` CVs, per seed.
    validation : list of float
        Best validation VAMP-2, per seed.
    seconds : list of float
        Wall time per seed, s.
    models : list of VAMPModel
    histories : list of list of dict
    """

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


def model_outputs(model: torch.nn.Module, trajectories: Sequence[torch.Tensor],
                  chunk_size: int = 2048) -> list[torch.Tensor]:
    """Model outputs per trajectory (float64), in eval mode and in chunks.

    Parameters
    ----------
    model : torch.nn.Module
        Frames ``[n, ...]`` → outputs ``[n, n_out]``.
    trajectories : list of Tensor [T_i, ...]
    chunk_size : int
        Frames per model call.

    Returns
    -------
    list of Tensor [T_i, n_out]
    """
    device = next(model.parameters(), torch.empty(0)).device  # frames go to the model, outputs come back to the CPU
    return [evaluate_chunked(model, t, chunk_size=chunk_size, modules=(model,), device=device).double().cpu()
            for t in trajectories]


def heldout_vamp2(model: torch.nn.Module, test: Sequence[torch.Tensor], lagtime: int, dim: int | None = None,
                  epsilon: float = 1e-6) -> float:
    """VAMP-2 of the model's first ``dim`` outputs on held-out trajectories (the VAMPNet papers' test score).

    Parameters
    ----------
    model : torch.nn.Module
        Frames → CVs ``[n, n_cvs]``, e.g. a :class:`~cvlearn.models.cv.VAMPModel`.
    test : list of Tensor [T_i, ...]
        Held-out trajectories.
    lagtime : int
        Lag time in frames.
    dim : int, optional
        Score only the first ``dim`` outputs.
    epsilon : float
        Eigenvalue cutoff of the covariance inverses.

    Returns
    -------
    float
        VAMP-2, re-estimated on ``test`` (1 + sum of squared singular values).
    """
    out = model_outputs(model, test)
    if dim is not None:
        out = [o[:, :dim] for o in out]
    return float(vamp_score(*lagged_pairs(out, lagtime), r=2, epsilon=epsilon))


def fit_seeds(make_lobe: Callable[[int], torch.nn.Module], train: Sequence[torch.Tensor],
              validation: Sequence[torch.Tensor], seeds: Sequence[int], *, test: Sequence[torch.Tensor] | None = None,
              dim: int | None = None, prepare: Callable[[torch.nn.Module], None] | None = None,
              fit_kwargs: dict | None = None, **estimator_kwargs) -> SeedResults:
    """Fit one VAMPNet per seed and score each on held-out data.

    For each seed: ``make_lobe(seed)`` (seeded before the call), optional ``prepare(lobe)`` (e.g. fit the head
    scaler), ``VAMPNet(lobe, seed=seed, **estimator_kwargs).fit(train, validation, **fit_kwargs)``, then VAMP-2
    of the fetched model on ``test`` (``validation`` when None).

    Parameters
    ----------
    make_lobe : callable
        ``seed -> lobe``.
    train, validation : list of Tensor [T_i, ...]
        Trajectories of lobe inputs, split by whole trajectory.
    seeds : sequence of int
    test : list of Tensor [T_i, ...], optional
        Held-out trajectories for the reported score.
    dim : int, optional
        Score only the first ``dim`` CVs.
    prepare : callable, optional
        ``lobe -> None``, run before fitting.
    fit_kwargs : dict, optional
        Passed to :meth:`VAMPNet.fit` (e.g. ``checkpoint_path``).
    **estimator_kwargs
        Passed to :class:`VAMPNet` (``lagtime`` in frames is required).

    Returns
    -------
    SeedResults
    """
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
