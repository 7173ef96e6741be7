"""Estimators (configure, ``fit()`` → self, ``fetch_model()`` → an independent model), their scores and helpers.

VAMPNet learns CVs; DenoisingPretrainer pre-trains a featurizer backbone; ForceFieldFinetuner fits energies and
forces. All three train through the one resumable :class:`Trainer` loop. Scores (VAMP-1, VAMP-2, VAMP-E, matching
deeptime's) and the denoising and energy + force losses live in :mod:`cvlearn.estimators.scores`; baselines and
several seeds sit beside them. The models they return live in :mod:`cvlearn.models`.
"""

from cvlearn.estimators.scores import (
    COVARIANCE_MODES,
    covariances,
    deeptime_vamp_score,
    denoising_loss,
    energy_force_loss,
    koopman_svd,
    score_function,
    vamp1_score,
    vamp2_loss,
    vamp2_score,
    vamp_score,
    vamp_score_cv,
    vampe_score,
)
from cvlearn.estimators.trainer import Trainer, make_scheduler
from cvlearn.estimators.vampnet import VAMPNet
from cvlearn.estimators.multiseed import SeedResults, fit_seeds, heldout_vamp2
from cvlearn.estimators.pretrainer import DenoisingPretrainer
from cvlearn.estimators.finetuner import ForceFieldFinetuner

__all__ = [
    "COVARIANCE_MODES", "DenoisingPretrainer", "ForceFieldFinetuner", "SeedResults", "Trainer", "VAMPNet",
    "covariances", "deeptime_vamp_score", "denoising_loss", "energy_force_loss", "fit_seeds", "heldout_vamp2",
    "koopman_svd", "make_scheduler", "score_function", "vamp1_score", "vamp2_loss", "vamp2_score", "vamp_score", "vamp_score_cv", "vampe_score",
]
