"""Estimators (configure, ``fit()`` → self, ``fetch_model()`` → an independent model), their scores and helpers.

VAMPNet learns CVs; DenoisingPretrainer pre-trains a featurizer backbone; ForceFieldFinetuner fits energies and
forces. Scores (VAMP-1, VAMP-2, VAMP-E) match deeptime's; baselines and several seeds sit beside them.
"""

from cvlearn.estimators.scores import (
    COVARIANCE_MODES,
    covariances,
    deeptime_vamp_score,
    koopman_svd,
    score_function,
    vamp1_score,
    vamp2_loss,
    vamp2_score,
    vamp_score,
    vamp_score_cv,
    vampe_score,
)
from cvlearn.estimators.vampnet import VAMPModel, VAMPNet
from cvlearn.estimators.multiseed import SeedResults, fit_seeds, heldout_vamp2
from cvlearn.estimators.pretrainer import DenoisingPretrainer
from cvlearn.estimators.finetuner import ForceFieldFinetuner

__all__ = [
    "COVARIANCE_MODES", "DenoisingPretrainer", "ForceFieldFinetuner", "SeedResults", "VAMPModel", "VAMPNet",
    "covariances", "deeptime_vamp_score", "fit_seeds", "heldout_vamp2", "koopman_svd", "score_function",
    "vamp1_score", "vamp2_loss", "vamp2_score", "vamp_score", "vamp_score_cv", "vampe_score",
]
