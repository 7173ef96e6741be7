"""Independent models that a fit returns: CV lobes (graph, token, distance), the VAMP model, the energy model;
and the one chunked no-grad evaluation helper."""

from cvlearn.models.evaluation import eval_mode, evaluate_chunked
from cvlearn.models.cv import (DistanceCV, GraphCV, PairwiseDistances, TokenCV, VAMPModel, embed_frames, fit_head_scaler,
                               vamp_warm_start)
from cvlearn.models.potential import EnergyModel

__all__ = ["DistanceCV", "EnergyModel", "GraphCV", "PairwiseDistances", "TokenCV", "VAMPModel", "embed_frames",
           "eval_mode", "evaluate_chunked", "fit_head_scaler", "vamp_warm_start"]
