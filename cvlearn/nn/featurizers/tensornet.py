"""TensorNet as a per-atom featurizer: plain-torch forward over torchmd-net's ``TensorNet`` weight layout.

Why a re-implementation: torchmd-net 3.1.0's ``TensorNet.forward`` routes through warp custom ops
(``graph_transform``, ``fn_tensor_norm3``, ...) whenever warp-lang is importable, and its module-level helpers are
rebound to those ops, so switching ``opt`` off is not enough; a model built on them only loads where torchmd-net
is imported. This module keeps torchmd-net's submodule names (``tensor_embedding.*``, ``layers.*``, ``linear``,
``out_norm``) and writes the math of its pure-torch path; the tests check it against torchmd-net's own module.

``channel_layout`` is the one difference between torchmd-net and geom2vec's TensorNet code (which trained the
public geom2vec checkpoint): the last scalar linear of the embedding and of each interaction produces 3F numbers
that torchmd-net reads as ``[3, F]`` ("blocked") and geom2vec as ``[F, 3]`` ("interleaved"). Same weights, other
features: this explains the mismatch seen when the geom2vec file was run through torchmd-net.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn
from torchmdnet.models.utils import CosineCutoff, ExpNormalSmearing

from cvlearn.nn.featurizers.base import FeaturizerBase, seeded
from cvlearn.nn.featurizers.neighbors import FixedTopologyNeighbors

LAYOUTS = ("blocked", "interleaved")


@dataclass(frozen=True)
class TensorNetConfig:
    """Architecture of TensorNet plus the channel layout of its 3F-wide scalar outputs; stored with every checkpoint.

    Field names are torchmd-net's ``TensorNet`` arguments (see :mod:`cvlearn.nn.featurizers`); the cutoff is Å.

    Attributes
    ----------
    hidden_channels, num_layers, num_rbf : int
        Feature width F (= n_features), interaction layers, radial basis size.
    cutoff_angstrom : float
        Neighbour cutoff, Å.
    max_z : int
        Size of the element embedding table.
    equivariance_group : str
        ``"O(3)"`` or ``"SO(3)"``.
    channel_layout : str
        ``"blocked"`` (torchmd-net) or ``"interleaved"`` (geom2vec-trained checkpoints) split of 3F-wide outputs.
    """

    hidden_channels: int = 64
    num_layers: int = 2
    num_rbf: int = 32
    cutoff_angstrom: float = 5.0
    max_z: int = 128
    equivariance_group: str = "O(3)"
    channel_layout: str = "blocked"  # torchmd-net; "interleaved" for checkpoints trained with geom2vec's code

    def as_dict(self) -> dict:
        """The fields as a plain dict, as checkpoints store them."""
        return asdict(self)


# geom2vec's public TensorNet: 3 layers, 64 wide, 32 RBF, 5 Å, trained with geom2vec's ([F, 3]) channel layout.
GEOM2VEC_TENSORNET = TensorNetConfig(hidden_channels=64, num_layers=3, num_rbf=32, cutoff_angstrom=5.0,
                                     channel_layout="interleaved")


def _eye_like(x: Tensor) -> Tensor:
    return torch.eye(3, dtype=x.dtype, device=x.device).view(1, 3, 3, 1)


def _skew(v: Tensor) -> Tensor:
    """``[N, 3, F]`` vectors → skew-symmetric ``[N, 3, 3, F]`` (torchmd-net's ``vector_to_skewtensor``)."""
    zero = torch.zeros_like(v[:, 0])
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    return torch.stack((zero, -z, y, z, zero, -x, -y, x, zero), dim=1).view(v.shape[0], 3, 3, v.shape[2])


def _axial(a: Tensor) -> Tensor:
    """Skew-symmetric ``[N, 3, 3, F]`` → its axial vector ``[N, 3, F]`` (torchmd-net's ``skewtensor_to_vector``)."""
    return 0.5 * torch.stack((a[:, 2, 1] - a[:, 1, 2], a[:, 0, 2] - a[:, 2, 0], a[:, 1, 0] - a[:, 0, 1]), dim=1)


def _decompose(t: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """``[N, 3, 3, F]`` → trace part ``I [N, F]``, antisymmetric ``A`` and symmetric traceless ``S``."""
    a = 0.5 * (t - t.transpose(1, 2))
    i = t.diagonal(dim1=1, dim2=2).mean(-1)
    s = t - a - i[:, None, None, :] * _eye_like(t)
    return i, a, s


def _compose(i: Tensor, a: Tensor, s: Tensor) -> Tensor:
    return i[:, None, None, :] * _eye_like(a) + a + s


def _norm2(t: Tensor) -> Tensor:
    return (t ** 2).sum((1, 2))


def _matmul(x: Tensor, y: Tensor) -> Tensor:
    return torch.einsum("nikf,nkjf->nijf", x, y)


def _split3(h: Tensor, hidden: int, interleaved: bool) -> Tensor:
    """A 3F-wide vector → ``[*, 3, F]`` in the checkpoint's channel layout."""
    if interleaved:
        return h.reshape(h.shape[0], hidden, 3).transpose(1, 2)
    return h.reshape(h.shape[0], 3, hidden)


class TensorEmbedding(nn.Module):
    """torchmd-net's TensorNet embedding: per-atom I + A + S tensors [N, 3, 3, F] from elements and edges.

    Parameters
    ----------
    hidden, num_rbf : int
        Feature width F and radial basis size.
    cutoff : float
        Cosine cutoff radius, Å.
    max_z : int
        Size of the element embedding table.
    interleaved : bool
        Channel layout of the 3F-wide scalar MLP output (see :class:`TensorNetConfig`).
    """

    def __init__(self, hidden: int, num_rbf: int, cutoff: float, max_z: int, interleaved: bool):
        super().__init__()
        self.hidden_channels = hidden
        self.interleaved = interleaved
        self.distance_proj1 = nn.Linear(num_rbf, hidden)
        self.distance_proj2 = nn.Linear(num_rbf, hidden)
        self.distance_proj3 = nn.Linear(num_rbf, hidden)
        self.cutoff = CosineCutoff(0.0, cutoff)
        self.emb = nn.Embedding(max_z, hidden)
        self.emb2 = nn.Linear(2 * hidden, hidden)
        self.act = nn.SiLU()
        self.linears_tensor = nn.ModuleList([nn.Linear(hidden, hidden, bias=False) for _ in range(3)])
        self.linears_scalar = nn.ModuleList([nn.Linear(hidden, 2 * hidden), nn.Linear(2 * hidden, 3 * hidden)])
        self.init_norm = nn.LayerNorm(hidden)

    def forward(self, z: Tensor, e0: Tensor, e1: Tensor, r: Tensor, unit: Tensor, rbf: Tensor) -> Tensor:
        """Tensors [N, 3, 3, F] from elements ``z`` [N] and edges ``e0 → e1`` (length ``r`` Å, ``unit`` vectors, ``rbf``)."""
        n, f = z.shape[0], self.hidden_channels
        emb = self.emb(z)
        zij = self.emb2(torch.cat([emb.index_select(0, e0), emb.index_select(0, e1)], dim=1))
        c = self.cutoff(r).unsqueeze(-1) * zij
        i = torch.zeros(n, f, dtype=c.dtype, device=c.device).index_add(0, e0, c * self.distance_proj1(rbf))
        a_vec = torch.zeros(n, 3, f, dtype=c.dtype, device=c.device).index_add(
            0, e0, (c * self.distance_proj2(rbf)).unsqueeze(1) * unit.unsqueeze(-1))
        outer = unit.unsqueeze(2) * unit.unsqueeze(1)  # [E, 3, 3]
        s = torch.zeros(n, 3, 3, f, dtype=c.dtype, device=c.device).index_add(
            0, e0, (c * self.distance_proj3(rbf))[:, None, None, :] * outer.unsqueeze(-1))
        s = 0.5 * (s + s.transpose(1, 2))
        s = s - s.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None, :] * _eye_like(s)
        a = _skew(a_vec)
        norm = self.init_norm(_norm2(_compose(i, a, s)))
        for linear in self.linears_scalar:
            norm = self.act(linear(norm))
        norm = _split3(norm, f, self.interleaved)
        i = self.linears_tensor[0](i) * norm[:, 0]
        a = self.linears_tensor[1](a) * norm[:, 1, None, None, :]
        s = self.linears_tensor[2](s) * norm[:, 2, None, None, :]
        return _compose(i, a, s)


class Interaction(nn.Module):
    """One TensorNet interaction layer (torchmd-net's pure-torch path): tensor messages along edges.

    Parameters
    ----------
    hidden, num_rbf : int
        Feature width F and radial basis size.
    cutoff : float
        Cosine cutoff radius, Å.
    group : str
        ``"O(3)"`` (symmetric product) or ``"SO(3)"``.
    interleaved : bool
        Channel layout of the 3F-wide edge factors (see :class:`TensorNetConfig`).
    """

    def __init__(self, hidden: int, num_rbf: int, cutoff: float, group: str, interleaved: bool):
        super().__init__()
        self.hidden_channels = hidden
        self.interleaved = interleaved
        self.o3 = group == "O(3)"
        self.cutoff = CosineCutoff(0.0, cutoff)
        self.linears_scalar = nn.ModuleList([nn.Linear(num_rbf, hidden), nn.Linear(hidden, 2 * hidden),
                                             nn.Linear(2 * hidden, 3 * hidden)])
        self.linears_tensor = nn.ModuleList([nn.Linear(hidden, hidden, bias=False) for _ in range(6)])
        self.act = nn.SiLU()

    def forward(self, x: Tensor, e0: Tensor, e1: Tensor, r: Tensor, rbf: Tensor) -> Tensor:
        """Updated tensors [N, 3, 3, F] from ``x`` [N, 3, 3, F] and edges ``e0 → e1`` (length ``r`` Å, ``rbf``)."""
        h = rbf
        for linear in self.linears_scalar:
            h = self.act(linear(h))
        factor = _split3(h * self.cutoff(r).unsqueeze(1), self.hidden_channels, self.interleaved)  # [E, 3, F]
        x = x / (_norm2(x) + 1)[:, None, None, :]
        i, a, s = _decompose(x)
        i = self.linears_tensor[0](i)
        a = self.linears_tensor[1](a)
        s = self.linears_tensor[2](s)
        y = _compose(i, a, s)
        im = torch.zeros_like(i).index_add(0, e0, factor[:, 0] * i.index_select(0, e1))
        am = torch.zeros_like(a).index_add(0, e0, factor[:, 1, None, None, :] * a.index_select(0, e1))
        sm = torch.zeros_like(s).index_add(0, e0, factor[:, 2, None, None, :] * s.index_select(0, e1))
        msg = _compose(im, am, sm)
        c = _matmul(msg, y) + _matmul(y, msg) if self.o3 else 2 * _matmul(y, msg)
        i, a, s = _decompose(c)
        normp1 = _norm2(c) + 1
        i = self.linears_tensor[3](i / normp1)
        a = self.linears_tensor[4](a / normp1[:, None, None, :])
        s = self.linears_tensor[5](s / normp1[:, None, None, :])
        dx = _compose(i, a, s)
        return x + dx + _matmul(dx, dx)


class TensorNetBackbone(nn.Module):
    """TensorNet representation model; state-dict keys equal torchmd-net's ``TensorNet`` minus ``distance.box``.

    ``forward(z [N], pos [N, 3] Å, batch [N])`` (frames flattened) returns scalars ``[N, F]`` and axial vectors
    ``[N, 3, F]``.

    Parameters
    ----------
    config : TensorNetConfig
        Architecture (``channel_layout`` and ``equivariance_group`` are checked).
    n_atoms : int
        Atoms per graph, for the fixed-topology all-pairs neighbour list.
    """

    def __init__(self, config: TensorNetConfig, n_atoms: int):
        super().__init__()
        c = config
        if c.channel_layout not in LAYOUTS:
            raise ValueError(f"channel_layout: expected one of {LAYOUTS}, found {c.channel_layout!r}")
        if c.equivariance_group not in ("O(3)", "SO(3)"):
            raise ValueError(f"equivariance_group: expected 'O(3)' or 'SO(3)', found {c.equivariance_group!r}")
        interleaved = c.channel_layout == "interleaved"
        self.hidden_channels = c.hidden_channels
        self.distance = FixedTopologyNeighbors(n_atoms, 0.0, c.cutoff_angstrom)
        self.distance_expansion = ExpNormalSmearing(0.0, c.cutoff_angstrom, c.num_rbf, False)
        self.tensor_embedding = TensorEmbedding(c.hidden_channels, c.num_rbf, c.cutoff_angstrom, c.max_z, interleaved)
        self.layers = nn.ModuleList([Interaction(c.hidden_channels, c.num_rbf, c.cutoff_angstrom,
                                                 c.equivariance_group, interleaved) for _ in range(c.num_layers)])
        self.linear = nn.Linear(3 * c.hidden_channels, c.hidden_channels)
        self.out_norm = nn.LayerNorm(3 * c.hidden_channels)
        self.act = nn.SiLU()

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor) -> Tuple[Tensor, Tensor]:
        """Scalars ``[N, F]`` and the axial vectors of the antisymmetric part ``[N, 3, F]``."""
        edge_index, r, vec = self.distance(pos, batch)
        if vec is None:
            raise RuntimeError("the neighbour list must return edge vectors")
        e0, e1 = edge_index[0], edge_index[1]
        rbf = self.distance_expansion(r)
        unit = vec / r.masked_fill(e0 == e1, 1.0).unsqueeze(1)
        x = self.tensor_embedding(z, e0, e1, r, unit, rbf)
        for layer in self.layers:
            x = layer(x, e0, e1, r, rbf)
        i, a, s = _decompose(x)
        scalars = torch.cat((3 * i ** 2, _norm2(a), _norm2(s)), dim=-1)
        return self.act(self.linear(self.out_norm(scalars))), _axial(a)


class TensorNetFeaturizer(FeaturizerBase):
    """TensorNet per-atom embeddings: ``forward(pos_nm [n_frames, n_atoms, 3]) -> [n_frames, n_atoms, n_features]``;
    vectors ``[n_frames, n_atoms, 3, n_features]`` (axial vectors of the antisymmetric part).

    Parameters
    ----------
    atomic_numbers : sequence of int
        Elements of the featurized atoms, n_atoms of them.
    config : TensorNetConfig
        Architecture.
    seed : int or None
        Seed of the initial weights (None: the global random stream).
    """

    def __init__(self, atomic_numbers: Sequence[int], config: TensorNetConfig = TensorNetConfig(),
                 seed: int | None = 0):
        super().__init__()
        self._init_common(atomic_numbers, config, config.max_z, config.hidden_channels)
        self.gnn = seeded(seed, lambda: TensorNetBackbone(config, self.n_atoms))

    def forward_graphs(self, z: Tensor, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        """See :meth:`FeaturizerBase.forward_graphs`."""
        n_frames = pos_nm.shape[0]
        pos = (pos_nm * self.angstrom_per_nm).reshape(n_frames * self.n_atoms, 3)
        batch = torch.arange(n_frames, device=pos.device).repeat_interleave(self.n_atoms)
        x, vec = self.gnn(z.reshape(-1), pos, batch)
        return x.reshape(n_frames, self.n_atoms, -1), vec.reshape(n_frames, self.n_atoms, 3, -1)
