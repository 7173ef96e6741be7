"""Pre-trained geometric GNN featurizers: positions in nm → per-atom embeddings computed on Å geometry."""

from cvlearn.nn.featurizers.checkpoints import CheckpointMismatchError, load_featurizer_weights, save_featurizer_checkpoint
from cvlearn.nn.featurizers.equivariant_transformer import GEOM2VEC_ET, ETConfig, ETFeaturizer
from cvlearn.nn.featurizers.neighbors import FixedTopologyNeighbors
from cvlearn.nn.featurizers.registry import (
    FEATURIZERS,
    GEOM2VEC_CONFIGS,
    featurizer_from_checkpoint,
    kind_of,
    load_geom2vec,
    make_featurizer,
)
from cvlearn.nn.featurizers.tensornet import GEOM2VEC_TENSORNET, TensorNetConfig, TensorNetFeaturizer
from cvlearn.nn.featurizers.visnet import GEOM2VEC_VISNET, ViSNetConfig, ViSNetFeaturizer

__all__ = [
    "CheckpointMismatchError", "ETConfig", "ETFeaturizer", "FEATURIZERS", "FixedTopologyNeighbors", "GEOM2VEC_CONFIGS",
    "GEOM2VEC_ET", "GEOM2VEC_TENSORNET", "GEOM2VEC_VISNET", "TensorNetConfig", "TensorNetFeaturizer", "ViSNetConfig",
    "ViSNetFeaturizer", "featurizer_from_checkpoint", "kind_of", "load_featurizer_weights", "load_geom2vec",
    "make_featurizer", "save_featurizer_checkpoint",
]
