"""The learnable CV chain: featurizer → residue tokens → token mixer → head.

It maps positions of the selected atoms ``[n_frames, n_atoms, 3]`` (nm) to ``[n_frames, n_outputs]`` and is
the lobe a VAMPNet trains. :mod:`cvlearn.export` wraps it for the MD engine.
"""

from __future__ import annotations

import torch
from torch import Tensor


class GraphCV(torch.nn.Module):
    def __init__(self, featurizer: torch.nn.Module, tokens: torch.nn.Module, mixer: torch.nn.Module,
                 head: torch.nn.Module):
        super().__init__()
        self.featurizer = featurizer
        self.tokens = tokens
        self.mixer = mixer
        self.head = head

    def embed(self, pos_nm: Tensor) -> Tensor:
        """The head's input: the pooled embedding of each frame."""
        return self.mixer(self.tokens(self.featurizer(pos_nm)))

    def forward(self, pos_nm: Tensor) -> Tensor:
        return self.head(self.embed(pos_nm))


class PairwiseDistances(torch.nn.Module):
    """``[n_frames, n_atoms, 3] -> [n_frames, n_atoms*(n_atoms-1)/2]`` distances (nm): the classic VAMPNet input."""

    def __init__(self, n_atoms: int):
        super().__init__()
        i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
        self.register_buffer("i", i)
        self.register_buffer("j", j)

    def forward(self, pos_nm: Tensor) -> Tensor:
        return torch.linalg.vector_norm(pos_nm[:, self.i] - pos_nm[:, self.j], dim=-1)


class DistanceCV(torch.nn.Module):
    """Baseline lobe: heavy-atom pairwise distances → the same kind of MLP head."""

    def __init__(self, n_atoms: int, head: torch.nn.Module):
        super().__init__()
        self.distances = PairwiseDistances(n_atoms)
        self.head = head

    def embed(self, pos_nm: Tensor) -> Tensor:
        return self.distances(pos_nm)

    def forward(self, pos_nm: Tensor) -> Tensor:
        return self.head(self.embed(pos_nm))


@torch.no_grad()
def fit_head_scaler(lobe: torch.nn.Module, frames: Tensor, chunk: int = 1024) -> None:
    """Standardise the head's input on ``frames`` (a sample of training frames) before training."""
    embedding = torch.cat([lobe.embed(frames[i:i + chunk]) for i in range(0, len(frames), chunk)])
    lobe.head.scaler.fit_(embedding)
