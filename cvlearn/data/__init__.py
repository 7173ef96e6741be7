"""Trajectories in, validated arrays out: reading, atom selection, splits, lagged pairs, COLVAR files, the store.

Everything a learner needs before the network: one trajectory reader (mdtraj, checked against the topology,
whole files or streamed in chunks), selection by mdtraj strings with elements and the residue map from the
topology, train/validation splits (by whole trajectory for MD data), time-lagged pairs (optionally weighted or
on a rescaled time axis from a biased run's COLVAR), and the embedding store.
"""

from cvlearn.data.colvar import read_colvar, write_colvar
from cvlearn.data.lagged import (
    PAIR_METHODS,
    BiasedRun,
    biased_pairs,
    effective_sample_size,
    frame_weights,
    lagged_pairs,
    load_biased_run,
    log_weights_from_colvar,
    rescaled_time,
    rescaled_time_pairs,
    self_pair_fraction,
)
from cvlearn.data.readers import read_mdshare_ala2_npz, read_mdshare_pentapeptide
from cvlearn.data.selection import (
    HEAVY_ATOMS,
    as_mdtraj_topology,
    atomic_numbers,
    residue_index_of_atoms,
    resolve_selection,
    select_atoms,
)
from cvlearn.data.splits import (
    Segment,
    every_nth_split,
    random_split,
    split_by_trajectory,
    split_structures,
    take_segments,
    temporal_split,
)
from cvlearn.data.store import EmbeddingStore, LaggedTokenPairs, embed_trajectories
from cvlearn.data.trajectories import (iter_trajectory, load_trajectories, peek_trajectory, read_topology,
                                      trajectory_frame_count)

__all__ = [
    "BiasedRun", "EmbeddingStore", "HEAVY_ATOMS", "LaggedTokenPairs", "PAIR_METHODS", "Segment",
    "as_mdtraj_topology", "atomic_numbers", "biased_pairs", "effective_sample_size", "embed_trajectories",
    "every_nth_split", "frame_weights", "iter_trajectory", "lagged_pairs", "load_biased_run", "load_trajectories",
    "log_weights_from_colvar", "peek_trajectory", "random_split", "read_colvar", "read_mdshare_ala2_npz", "read_mdshare_pentapeptide",
    "read_topology", "rescaled_time", "rescaled_time_pairs", "residue_index_of_atoms", "resolve_selection",
    "select_atoms", "self_pair_fraction", "split_by_trajectory", "split_structures", "take_segments", "temporal_split",
    "trajectory_frame_count", "write_colvar",
]
