"""Pre-trained geometric GNN featurizers: positions in nm → per-atom embeddings computed on Å geometry."""

from cvlearn.featurizers.checkpoints import load_featurizer_weights
from cvlearn.featurizers.equivariant_transformer import GEOM2VEC_ET, ETConfig, ETFeaturizer
from cvlearn.featurizers.neighbors import FixedTopologyNeighbors

__all__ = ["ETConfig", "ETFeaturizer", "FixedTopologyNeighbors", "GEOM2VEC_ET", "load_featurizer_weights"]
