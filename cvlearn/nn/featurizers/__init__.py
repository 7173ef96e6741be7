"""Pre-trained geometric GNN featurizers: positions in nm → per-atom embeddings computed on Å geometry.

Every featurizer maps ``positions_nm`` [n_frames, n_atoms, 3] (nm) to embeddings [n_frames, n_atoms, n_features]
(``n_features == hidden_channels``) and, through ``forward_with_vectors``, equivariant vectors
[n_frames, n_atoms, 3, n_features]. nm become Å at the featurizer's edge and nowhere else; cutoffs are Å
(``cutoff_angstrom``).

Naming: the architecture configs (:class:`ETConfig`, :class:`ViSNetConfig`, :class:`TensorNetConfig`) keep the
torchmd-net / PyG hyper-parameter names (``hidden_channels``, ``num_layers``, ``num_rbf``, ``num_heads``,
``max_z``) instead of the house's ``n_*`` for counts, on purpose: every checkpoint stores these fields and loads
strictly against them, geom2vec and torchmd-net checkpoints are described in them, and users of those libraries
know them. Everything outside these configs follows the house rule.
"""

from cvlearn.nn.featurizers.quiet_warp import quiet_warp

quiet_warp()  # before torchmd-net imports warp: no start-up banner

from cvlearn.nn.featurizers.checkpoints import CheckpointMismatchError, load_featurizer_weights, save_featurizer_checkpoint
from cvlearn.nn.featurizers.equivariant_transformer import GEOM2VEC_ET, ETConfig, ETFeaturizer
from cvlearn.nn.featurizers.neighbors import FixedTopologyNeighbors
from cvlearn.nn.featurizers.registry import (
    FEATURIZERS,
    GEOM2VEC_CONFIGS,
    WEIGHT_FREE,
    checkpoint_kind,
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
    "ViSNetFeaturizer", "WEIGHT_FREE", "checkpoint_kind", "featurizer_from_checkpoint", "kind_of",
    "load_featurizer_weights", "load_geom2vec", "make_featurizer", "save_featurizer_checkpoint",
]
