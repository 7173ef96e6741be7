"""Trajectories in, validated arrays out: reading, atom selection, splits, lagged pairs, COLVAR files, the store.

Everything a learner needs before the network: one trajectory reader (mdtraj, checked against the topology),
selection by mdtraj strings with elements from the topology, validation split by whole trajectory, time-lagged
pairs (optionally weighted or on a rescaled time axis from a biased run's COLVAR), and the embedding store.
"""

from cvlearn.data.colvar import read_colvar, write_colvar
from cvlearn.data.lagged import (
    PAIR_METHODS,
    BiasedRun,
    biased_pairs,
    frame_weights,
    load_biased_run,
    log_weights_from_colvar,
    rescaled_time,
    rescaled_time_pairs,
)
from cvlearn.data.readers import read_mdshare_ala2_npz, read_mdshare_pentapeptide, read_trajectories
from cvlearn.data.selection import HEAVY_ATOMS, as_mdtraj_topology, atomic_numbers, select_atoms
from cvlearn.data.store import EmbeddingStore, LaggedTokenPairs, embed_trajectories
from cvlearn.data.trajectories import Segment, lagged_pairs, load_trajectories, split_by_trajectory, take_segments

__all__ = [
    "BiasedRun", "EmbeddingStore", "HEAVY_ATOMS", "LaggedTokenPairs", "PAIR_METHODS", "Segment",
    "as_mdtraj_topology", "atomic_numbers", "biased_pairs", "embed_trajectories", "frame_weights", "lagged_pairs",
    "load_biased_run", "load_trajectories", "log_weights_from_colvar", "read_colvar", "read_mdshare_ala2_npz",
    "read_mdshare_pentapeptide", "read_trajectories", "rescaled_time", "rescaled_time_pairs", "select_atoms",
    "split_by_trajectory", "take_segments", "write_colvar",
]
