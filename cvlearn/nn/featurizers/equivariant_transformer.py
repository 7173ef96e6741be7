"""torchmd-net's Equivariant Transformer as a per-atom featurizer: positions in nm, features of Å geometry."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence, Tuple

import torch
from torch import Tensor
from torchmdnet.models.torchmd_et import TorchMD_ET

from cvlearn.nn.featurizers.base import FeaturizerBase, seeded
from cvlearn.nn.featurizers.neighbors import FixedTopologyNeighbors


@dataclass(frozen=True)
class ETConfig:
    """Architecture of the Equivariant Transformer; stored with every checkpoint so loading is strict.

    Field names are torchmd-net's ``TorchMD_ET`` arguments (see :mod:`cvlearn.nn.featurizers`); the cutoff is Å.

    Attributes
    ----------
    hidden_channels, num_layers, num_rbf, num_heads : int
        Feature width (= n_features), attention layers, radial basis size, attention heads.
    cutoff_angstrom : float
        Neighbour cutoff, Å.
    neighbor_embedding : bool
        Whether to add torchmd-net's neighbour embedding after the element embedding.
    vector_cutoff : bool
        torchmd-net's ``vector_cutoff``: weight the vector messages with the cosine cutoff too. Without it the
        features jump when a pair crosses the cutoff (``dv_proj``'s bias is not zero), so a CV built on them is
        discontinuous there: molecular dynamics under its bias does not conserve energy and samples the wrong
        distribution. It adds no weights, so a checkpoint trained without it loads with it.
    max_z : int
        Size of the element embedding table.
    """

    hidden_channels: int = 64
    num_layers: int = 2
    num_rbf: int = 32
    num_heads: int = 8
    cutoff_angstrom: float = 5.0
    neighbor_embedding: bool = False
    max_z: int = 100
    vector_cutoff: bool = False

    def as_dict(self) -> dict:
        """The fields as a plain dict, as checkpoints store them."""
        return asdict(self)


# The public geom2vec ET checkpoint (6 layers, 64 wide, 64 RBF, 7.5 Å cutoff, denoising pre-trained).
GEOM2VEC_ET = ETConfig(hidden_channels=64, num_layers=6, num_rbf=64, cutoff_angstrom=7.5)


class ETFeaturizer(FeaturizerBase):
    """Per-atom scalar (and vector) embeddings of a fixed set of atoms.

    ``forward(pos_nm [n_frames, n_atoms, 3]) -> [n_frames, n_atoms, n_features]``. Positions are converted to Å
    here and nowhere else. Atomic numbers come from the topology and are stored as a buffer.

    Parameters
    ----------
    atomic_numbers : sequence of int
        Elements of the featurized atoms, n_atoms of them.
    config : ETConfig
        Architecture.
    seed : int or None
        Seed of the initial weights (None: the global random stream).
    """

    def __init__(self, atomic_numbers: Sequence[int], config: ETConfig = ETConfig(), seed: int | None = 0):
        super().__init__()
        self._init_common(atomic_numbers, config, config.max_z, config.hidden_channels)
        self.gnn = seeded(seed, lambda: TorchMD_ET(
            hidden_channels=config.hidden_channels,
            num_layers=config.num_layers,
            num_rbf=config.num_rbf,
            num_heads=config.num_heads,
            cutoff_upper=config.cutoff_angstrom,
            neighbor_embedding=config.neighbor_embedding,
            max_z=config.max_z,
            vector_cutoff=config.vector_cutoff,
        ))
        self.gnn.distance = FixedTopologyNeighbors(self.n_atoms, 0.0, config.cutoff_angstrom)

    def forward_graphs(self, z: Tensor, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        """``G`` graphs of ``n_atoms`` atoms (elements ``z [G, n]``, positions nm) → scalars, vectors
        (see :meth:`FeaturizerBase.forward_graphs`)."""
        n_frames = pos_nm.shape[0]
        pos = (pos_nm * self.angstrom_per_nm).reshape(n_frames * self.n_atoms, 3)
        batch = torch.arange(n_frames, device=pos.device).repeat_interleave(self.n_atoms)
        x, vec, _, _, _ = self.gnn(z.reshape(-1), pos, batch)
        return x.reshape(n_frames, self.n_atoms, -1), vec.reshape(n_frames, self.n_atoms, 3, -1)
