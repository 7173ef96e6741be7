"""Featurizer backbones on batches of molecules of any size: the entry point for pre-training and fine-tuning.

A CV featurizer sees one fixed molecule (``FixedTopologyNeighbors``); pre-training and force-field data mix
molecules of different sizes in one batch. ``MoleculeBackbone`` runs the same GNN (same state-dict keys, so
checkpoints move freely between the two) with a plain-torch radius graph built per batch from a ``batch`` vector.
Positions are Å here: datasets speak Å, and no nm edge is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor

from cvlearn.nn.featurizers.registry import make_featurizer


class RadiusNeighbors(torch.nn.Module):
    """All pairs ``r < cutoff`` (Å) inside the same graph, plus self loops; ``FixedTopologyNeighbors``' convention.

    Candidate pairs come from a dense same-graph mask (fine for the few thousand atoms a batch holds); the edge
    vectors are recomputed on the kept pairs only, so autograd (forces) sees no ``N x N`` tensor.

    Parameters
    ----------
    cutoff_angstrom : float
        Pair cutoff, Å.
    """

    def __init__(self, cutoff_angstrom: float):
        super().__init__()
        self.cutoff_upper = float(cutoff_angstrom)

    def forward(
        self, pos: Tensor, batch: Optional[Tensor] = None, box: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Edges of ``pos`` [N, 3] (Å) within each graph of ``batch`` [N] (default: one graph):
        ``edge_index`` [2, E], ``edge_weight`` [E] (Å), ``edge_vec`` [E, 3] (Å). A ``box`` raises."""
        if box is not None:
            raise RuntimeError("RadiusNeighbors does not apply periodic boundaries")
        n = pos.shape[0]
        if batch is None:
            batch = torch.zeros(n, dtype=torch.long, device=pos.device)
        with torch.no_grad():
            close = torch.cdist(pos, pos) < self.cutoff_upper
            close &= batch.unsqueeze(0) == batch.unsqueeze(1)
            close.fill_diagonal_(False)
            src, dst = torch.nonzero(close, as_tuple=True)
        vec = pos.index_select(0, src) - pos.index_select(0, dst)
        dist = torch.linalg.vector_norm(vec, dim=1)
        loops = torch.arange(n, device=pos.device)
        edge_index = torch.cat([torch.stack([src, dst]), torch.stack([loops, loops])], dim=1)
        edge_weight = torch.cat([dist, torch.zeros(n, dtype=pos.dtype, device=pos.device)])
        edge_vec = torch.cat([vec, torch.zeros(n, 3, dtype=pos.dtype, device=pos.device)])
        return edge_index, edge_weight, edge_vec


class MoleculeBackbone(torch.nn.Module):
    """A featurizer's GNN for batches of variable-size molecules: ``(z [N], pos_A [N, 3], batch [N]) -> x, vec``.

    ``x`` is ``[N, F]`` (per-atom scalars), ``vec`` is ``[N, 3, F]`` (per-atom equivariant vectors). The
    weights live in ``self.featurizer.gnn``, so ``save`` writes a checkpoint every CV featurizer loads strictly.

    Parameters
    ----------
    kind : {"et", "visnet", "tensornet"}
        Architecture (see :func:`cvlearn.nn.featurizers.make_featurizer`).
    config : dataclass, dict or None
        Its config (None: defaults).
    seed : int or None
        Seed of the initial weights.
    """

    def __init__(self, kind: str, config=None, seed: int | None = 0):
        super().__init__()
        self.kind = kind
        self.featurizer = make_featurizer(kind, [1], config, seed=seed)
        self.config = self.featurizer.config
        self.hidden_channels = self.featurizer.hidden_channels
        self.featurizer.gnn.distance = RadiusNeighbors(self.config.cutoff_angstrom)

    @property
    def gnn(self) -> torch.nn.Module:
        """The representation model whose weights checkpoints hold."""
        return self.featurizer.gnn

    def forward(self, z: Tensor, pos_angstrom: Tensor, batch: Tensor) -> Tuple[Tensor, Tensor]:
        """Per-atom features of a batch of molecules.

        Parameters
        ----------
        z : Tensor
            Atomic numbers [N] (all molecules concatenated).
        pos_angstrom : Tensor
            Positions [N, 3], Å.
        batch : Tensor
            Molecule index of each atom [N].

        Returns
        -------
        x : Tensor
            Scalars [N, n_features].
        vec : Tensor
            Equivariant vectors [N, 3, n_features] (ViSNet: the l = 1 part).
        """
        out = self.featurizer.gnn(z, pos_angstrom, batch)
        x, vec = out[0], out[1]
        if self.kind == "visnet":
            vec = vec[:, :3]  # the l = 1 components
        return x, vec

    def save(self, path: str | Path, **metadata) -> None:
        """Write a self-describing backbone checkpoint (see ``save_featurizer_checkpoint``).

        Parameters
        ----------
        path : str or Path
            Output file (written atomically).
        **metadata
            Stored under ``metadata`` (e.g. the training recipe).
        """
        from cvlearn.nn.featurizers.checkpoints import save_featurizer_checkpoint

        save_featurizer_checkpoint(self.featurizer, path, **metadata)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "MoleculeBackbone":
        """Rebuild from a cvlearn backbone checkpoint (architecture read from the file, weights loaded strictly).

        Parameters
        ----------
        path : str or Path
            A checkpoint written by :meth:`save` or ``save_featurizer_checkpoint``.

        Returns
        -------
        MoleculeBackbone
        """
        from cvlearn.nn.featurizers.checkpoints import load_featurizer_weights
        from cvlearn.nn.featurizers.registry import featurizer_from_checkpoint, kind_of

        probe = featurizer_from_checkpoint(path, [1])
        backbone = cls(kind_of(probe), probe.config, seed=None)
        load_featurizer_weights(backbone.featurizer, path)
        return backbone
