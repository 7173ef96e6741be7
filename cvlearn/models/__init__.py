"""Independent models that a fit returns: CV lobes (graph, token, distance) and the energy model."""

from cvlearn.models.cv import DistanceCV, GraphCV, PairwiseDistances, TokenCV, embed_frames, fit_head_scaler, vamp_warm_start
from cvlearn.models.potential import EnergyModel

__all__ = ["DistanceCV", "EnergyModel", "GraphCV", "PairwiseDistances", "TokenCV", "embed_frames", "fit_head_scaler",
           "vamp_warm_start"]
