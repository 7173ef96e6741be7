"""ViSNet as a per-atom featurizer: a TorchScript-able re-implementation with PyG's ``ViSNetBlock`` weight layout.

Why not PyG's ``ViSNetBlock`` itself: (1) its ``Distance`` calls ``radius_graph``, which needs torch-cluster
(not installable for torch 2.9.1 here); (2) it does not script: ``VecLayerNorm.forward`` compares the
``Optional[str]`` attribute ``norm_type`` (inferred as ``NoneType`` when None) with a string, and the
``MessagePassing`` layers use ``propagate``/``edge_updater`` with a tuple-returning ``aggregate``.
This module keeps PyG's submodule names and shapes (so geom2vec's ``representation_model.*`` keys load
strictly) and writes the message passing with ``index_select``/``index_add`` over a plain-torch neighbour
list. The tests check it against PyG's eager ``ViSNetBlock`` on the same weights and edges.

Difference from geom2vec on purpose: PyG's ``radius_graph`` keeps at most ``max_num_neighbors`` (32) neighbours
per atom; we keep every pair within the cutoff. Both agree whenever no atom has more than 32 neighbours within
the cutoff (true for small peptides' heavy atoms; not for a folded protein at 7.5 Å).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.nn import Embedding, LayerNorm, Linear
from torch_geometric.nn.models.visnet import ExpNormalSmearing

from cvlearn.nn.featurizers.base import FeaturizerBase, seeded
from cvlearn.nn.featurizers.neighbors import FixedTopologyNeighbors


@dataclass(frozen=True)
class ViSNetConfig:
    """Architecture of ViSNet; stored with every checkpoint so loading is strict.

    Field names are PyG ``ViSNetBlock`` arguments (see :mod:`cvlearn.nn.featurizers`); the cutoff is Å.

    Attributes
    ----------
    hidden_channels, num_layers, num_rbf, num_heads : int
        Feature width (= n_features), message-passing layers, radial basis size, attention heads.
    cutoff_angstrom : float
        Neighbour cutoff, Å.
    lmax : int
        Spherical-harmonic order of the vectors, 1 (3 components) or 2 (8 components).
    vecnorm_type : str
        ``"none"`` or ``"max_min"``; ``trainable_vecnorm`` makes its per-channel weight a parameter.
    trainable_rbf : bool
        Whether the radial basis is trained.
    max_z : int
        Size of the element embedding table.
    vector_cutoff : bool
        Weight the vector messages with the cosine cutoff too (as torchmd-net's ET option of that name). PyG's
        ViSNet does not: ``s_proj``'s bias keeps a pair's vector message finite as its attention goes to zero at
        the cutoff, so the features jump where a pair crosses it, and a CV on them cannot be biased correctly.
        It changes no weight, so a checkpoint loads either way.
    """

    hidden_channels: int = 64
    num_layers: int = 2
    num_rbf: int = 32
    num_heads: int = 8
    cutoff_angstrom: float = 5.0
    lmax: int = 1
    vecnorm_type: str = "none"  # "none" or "max_min"
    trainable_vecnorm: bool = False
    trainable_rbf: bool = False
    max_z: int = 100
    vector_cutoff: bool = False

    def as_dict(self) -> dict:
        """The fields as a plain dict, as checkpoints store them."""
        return asdict(self)


# geom2vec's public ViSNet: 6 layers, 64 wide, 64 RBF, 7.5 Å, PyG ViSNet defaults (lmax 1, no vector norm, no vertex).
GEOM2VEC_VISNET = ViSNetConfig(hidden_channels=64, num_layers=6, num_rbf=64, cutoff_angstrom=7.5)


def _cosine_cutoff(d: Tensor, cutoff: float) -> Tensor:
    return 0.5 * (torch.cos(d * math.pi / cutoff) + 1.0) * (d < cutoff).to(d.dtype)


class VecLayerNorm(torch.nn.Module):
    """PyG's ``VecLayerNorm`` with a string (not Optional) norm type, so it scripts.

    Parameters
    ----------
    hidden_channels : int
        Channels F of the vectors ``[N, 3 or 8, F]``.
    trainable : bool
        Whether the per-channel weight is a parameter (else a buffer of ones).
    norm_type : {"none", "max_min"}
        ``"max_min"`` rescales per-atom vector norms; ``"none"`` only applies the weight.
    """

    def __init__(self, hidden_channels: int, trainable: bool, norm_type: str):
        super().__init__()
        if norm_type not in ("none", "max_min"):
            raise ValueError(f"vecnorm_type: expected 'none' or 'max_min', found {norm_type!r}")
        self.norm_type = norm_type
        self.eps = 1e-12
        weight = torch.ones(hidden_channels)
        if trainable:
            self.weight = torch.nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def max_min_norm(self, vec: Tensor) -> Tensor:
        """Rescale vector norms per atom to [0, 1] between their min and max over channels (PyG's ``max_min``)."""
        dist = torch.norm(vec, dim=1, keepdim=True)
        if bool((dist == 0).all()):
            return torch.zeros_like(vec)
        dist = dist.clamp(min=self.eps)
        direct = vec / dist
        max_val, _ = dist.max(dim=-1)
        min_val, _ = dist.min(dim=-1)
        delta = (max_val - min_val).view(-1)
        delta = torch.where(delta == 0, torch.ones_like(delta), delta)
        dist = (dist - min_val.view(-1, 1, 1)) / delta.view(-1, 1, 1)
        return dist.relu() * direct

    def forward(self, vec: Tensor) -> Tensor:
        """Normalised ``vec`` [N, 3 or 8, F], times the per-channel weight."""
        if self.norm_type == "max_min":
            if vec.shape[1] == 3:
                vec = self.max_min_norm(vec)
            else:
                vec1, vec2 = torch.split(vec, [3, 5], dim=1)
                vec = torch.cat([self.max_min_norm(vec1), self.max_min_norm(vec2)], dim=1)
        return vec * self.weight.unsqueeze(0).unsqueeze(0)


class NeighborEmbedding(torch.nn.Module):
    """PyG's ViSNet neighbour embedding: each atom's embedding plus a cutoff-weighted sum over its neighbours.

    Parameters
    ----------
    hidden_channels, num_rbf : int
        Atom feature width and radial basis size (``rbf`` is ``[E, num_rbf]``).
    cutoff : float
        Cosine cutoff radius, Å (same unit as the edge lengths ``r`` ``[E]``).
    max_z : int
        Size of the element embedding table.
    """

    def __init__(self, hidden_channels: int, num_rbf: int, cutoff: float, max_z: int):
        super().__init__()
        self.embedding = Embedding(max_z, hidden_channels)
        self.distance_proj = Linear(num_rbf, hidden_channels)
        self.combine = Linear(hidden_channels * 2, hidden_channels)
        self.cutoff = cutoff
        torch.nn.init.xavier_uniform_(self.distance_proj.weight)
        torch.nn.init.xavier_uniform_(self.combine.weight)
        torch.nn.init.zeros_(self.distance_proj.bias)
        torch.nn.init.zeros_(self.combine.bias)

    def forward(self, z: Tensor, x: Tensor, src: Tensor, dst: Tensor, r: Tensor, rbf: Tensor) -> Tensor:
        """Neighbour sum over edges without self loops (``src → dst``)."""
        w = self.distance_proj(rbf) * _cosine_cutoff(r, self.cutoff).unsqueeze(1)
        msg = self.embedding(z).index_select(0, src) * w
        agg = torch.zeros_like(x).index_add(0, dst, msg)
        return self.combine(torch.cat([x, agg], dim=1))


class EdgeEmbedding(torch.nn.Module):
    """PyG's ViSNet edge embedding: (x_i + x_j) times a projection of the radial basis.

    Parameters
    ----------
    num_rbf : int
        Radial basis size of ``rbf`` ``[E, num_rbf]``.
    hidden_channels : int
        Width of atom and edge features.
    """

    def __init__(self, num_rbf: int, hidden_channels: int):
        super().__init__()
        self.edge_proj = Linear(num_rbf, hidden_channels)
        torch.nn.init.xavier_uniform_(self.edge_proj.weight)
        torch.nn.init.zeros_(self.edge_proj.bias)

    def forward(self, src: Tensor, dst: Tensor, rbf: Tensor, x: Tensor) -> Tensor:
        """Edge features [E, hidden_channels] from atom features ``x`` [N, hidden_channels], ``rbf`` [E, num_rbf]."""
        return (x.index_select(0, dst) + x.index_select(0, src)) * self.edge_proj(rbf)


class ViSLayer(torch.nn.Module):
    """PyG's ``ViS_MP`` (no vertex features) with explicit gather/scatter: messages flow ``j = src → i = dst``.

    Parameters
    ----------
    num_heads, hidden_channels : int
        Attention heads and feature width; ``num_heads`` must divide ``hidden_channels``.
    cutoff : float
        Cosine cutoff radius on edge lengths, Å.
    vecnorm_type, trainable_vecnorm
        Passed to :class:`VecLayerNorm`.
    last_layer : bool
        The last layer has no edge-feature update (``f_proj``/``w_*_proj`` are None).
    vector_cutoff : bool
        Weight the vector messages with the cosine cutoff (continuous at the cutoff; :class:`ViSNetConfig`).
    """

    def __init__(self, num_heads: int, hidden_channels: int, cutoff: float, vecnorm_type: str,
                 trainable_vecnorm: bool, last_layer: bool, vector_cutoff: bool = False):
        super().__init__()
        if hidden_channels % num_heads != 0:
            raise ValueError(f"hidden_channels ({hidden_channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.hidden_channels = hidden_channels
        self.head_dim = hidden_channels // num_heads
        self.last_layer = last_layer
        self.cutoff = cutoff
        self.vector_cutoff = vector_cutoff
        self.layernorm = LayerNorm(hidden_channels)
        self.vec_layernorm = VecLayerNorm(hidden_channels, trainable_vecnorm, vecnorm_type)
        self.act = torch.nn.SiLU()
        self.vec_proj = Linear(hidden_channels, hidden_channels * 3, False)
        self.q_proj = Linear(hidden_channels, hidden_channels)
        self.k_proj = Linear(hidden_channels, hidden_channels)
        self.v_proj = Linear(hidden_channels, hidden_channels)
        self.dk_proj = Linear(hidden_channels, hidden_channels)
        self.dv_proj = Linear(hidden_channels, hidden_channels)
        self.s_proj = Linear(hidden_channels, hidden_channels * 2)
        # The last layer has no edge update; None attributes let TorchScript drop that branch.
        self.f_proj: Optional[Linear] = None if last_layer else Linear(hidden_channels, hidden_channels)
        self.w_src_proj: Optional[Linear] = None if last_layer else Linear(hidden_channels, hidden_channels, False)
        self.w_trg_proj: Optional[Linear] = None if last_layer else Linear(hidden_channels, hidden_channels, False)
        self.o_proj = Linear(hidden_channels, hidden_channels * 3)
        for module in self.modules():
            if isinstance(module, Linear):
                torch.nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, vec: Tensor, src: Tensor, dst: Tensor, r_ij: Tensor, f_ij: Tensor,
                d_ij: Tensor, first: bool = False, need_vectors: bool = True
                ) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """``first``: ``vec`` is zero (the first layer), so every vector term but the direction message vanishes and
        the edge update is zero; ``need_vectors=False`` skips the vector update (returned as None)."""
        n, h, hd = x.shape[0], self.num_heads, self.head_dim
        x = self.layernorm(x)
        q = self.q_proj(x).reshape(-1, h, hd)
        k = self.k_proj(x).reshape(-1, h, hd)
        v = self.v_proj(x).reshape(-1, h, hd)
        dk = self.act(self.dk_proj(f_ij)).reshape(-1, h, hd)
        dv = self.act(self.dv_proj(f_ij)).reshape(-1, h, hd)

        # message: i = dst (receiver), j = src
        attn = (q.index_select(0, dst) * k.index_select(0, src) * dk).sum(dim=-1)
        cut = _cosine_cutoff(r_ij, self.cutoff)
        attn = self.act(attn) * cut.unsqueeze(1)
        v_j = (v.index_select(0, src) * dv * attn.unsqueeze(2)).reshape(-1, self.hidden_channels)
        x_agg = torch.zeros(n, self.hidden_channels, dtype=x.dtype, device=x.device).index_add(0, dst, v_j)
        o1, o2, o3 = torch.split(self.o_proj(x_agg), self.hidden_channels, dim=1)
        if first:
            dx = o3
            vec3 = vec
        else:
            vec = self.vec_layernorm(vec)
            vec1, vec2, vec3 = torch.split(self.vec_proj(vec), self.hidden_channels, dim=-1)
            dx = (vec1 * vec2).sum(dim=1) * o2 + o3
        dvec: Optional[Tensor] = None
        if need_vectors:
            s1, s2 = torch.split(self.act(self.s_proj(v_j)), self.hidden_channels, dim=1)
            vec_j = s2.unsqueeze(1) * d_ij.unsqueeze(2)
            if not first:
                vec_j = vec_j + vec.index_select(0, src) * s1.unsqueeze(1)
            if self.vector_cutoff:
                vec_j = vec_j * cut.reshape(-1, 1, 1)
            vec_agg = torch.zeros_like(vec).index_add(0, dst, vec_j)
            dvec = vec_agg if first else vec3 * o1.unsqueeze(1) + vec_agg
        if (not first and self.f_proj is not None and self.w_src_proj is not None
                and self.w_trg_proj is not None):
            # PyG projects the gathered per-edge vectors; projecting per atom first is the same linear map on
            # E/N times fewer rows. The rejections' dot product is expanded so no rejected vector is built:
            # (a - (a·d)d)·(b - (b·d)d) = a·b - (a·d)(b·d)(2 - d·d)  (rejection along -d equals along d).
            a = self.w_trg_proj(vec).index_select(0, dst)
            b = self.w_src_proj(vec).index_select(0, src)
            d = d_ij.unsqueeze(2)
            ad = (a * d).sum(dim=1)
            bd = (b * d).sum(dim=1)
            dd = (d_ij * d_ij).sum(dim=1, keepdim=True)
            w_dot = (a * b).sum(dim=1) - ad * bd * (2.0 - dd)
            return dx, dvec, self.act(self.f_proj(f_ij)) * w_dot
        return dx, dvec, None  # first layer: w_dot = 0, so the edge update is zero


class ViSNetBackbone(torch.nn.Module):
    """ViSNet representation model; state-dict keys equal PyG's ``ViSNetBlock`` (``distance``/``sphere`` hold no weights).

    ``forward(z [N], pos [N, 3] Å, batch [N])`` (frames flattened) returns scalars ``[N, hidden_channels]`` and
    vectors ``[N, 3 or 8, hidden_channels]``.

    Parameters
    ----------
    config : ViSNetConfig
        Architecture (``lmax`` must be 1 or 2).
    n_atoms : int
        Atoms per graph, for the fixed-topology all-pairs neighbour list.
    """

    def __init__(self, config: ViSNetConfig, n_atoms: int):
        super().__init__()
        if config.lmax not in (1, 2):
            raise ValueError(f"lmax: expected 1 or 2, found {config.lmax}")
        c = config
        self.lmax = c.lmax
        self.n_vec_components = 3 if c.lmax == 1 else 8
        self.hidden_channels = c.hidden_channels
        self.embedding = Embedding(c.max_z, c.hidden_channels)
        self.distance = FixedTopologyNeighbors(n_atoms, 0.0, c.cutoff_angstrom)
        self.distance_expansion = ExpNormalSmearing(c.cutoff_angstrom, c.num_rbf, c.trainable_rbf)
        self.neighbor_embedding = NeighborEmbedding(c.hidden_channels, c.num_rbf, c.cutoff_angstrom, c.max_z)
        self.edge_embedding = EdgeEmbedding(c.num_rbf, c.hidden_channels)
        self.vis_mp_layers = torch.nn.ModuleList(
            [ViSLayer(c.num_heads, c.hidden_channels, c.cutoff_angstrom, c.vecnorm_type, c.trainable_vecnorm,
                      last_layer=i == c.num_layers - 1, vector_cutoff=c.vector_cutoff) for i in range(c.num_layers)]
        )
        self.out_norm = LayerNorm(c.hidden_channels)
        self.vec_out_norm = VecLayerNorm(c.hidden_channels, c.trainable_vecnorm, c.vecnorm_type)

    def _sphere(self, d: Tensor) -> Tensor:
        if self.lmax == 1:
            return d
        x, y, z = d[:, 0], d[:, 1], d[:, 2]
        s3 = math.sqrt(3.0)
        return torch.stack([x, y, z, s3 * x * z, s3 * x * y, y.pow(2) - 0.5 * (x.pow(2) + z.pow(2)), s3 * y * z,
                            s3 / 2.0 * (z.pow(2) - x.pow(2))], dim=-1)

    def forward(self, z: Tensor, pos: Tensor, batch: Tensor, need_vectors: bool = True) -> Tuple[Tensor, Tensor]:
        """Scalars and vectors per atom; ``need_vectors=False`` skips the last layer's vector update (the vectors
        returned are then those before it: read only the scalars)."""
        edge_index, r, edge_vec = self.distance(pos, batch)
        if edge_vec is None:
            raise RuntimeError("the neighbour list must return edge vectors")
        # FixedTopologyNeighbors: edge_vec = pos[e0] - pos[e1]; PyG: edge_vec = pos[src] - pos[dst]; so src = e0.
        src, dst = edge_index[0], edge_index[1]
        rbf = self.distance_expansion(r)
        not_loop = src != dst
        d = edge_vec / torch.where(not_loop, r, torch.ones_like(r)).unsqueeze(1)
        d = self._sphere(d)
        x = self.embedding(z)
        x = self.neighbor_embedding(z, x, src[not_loop], dst[not_loop], r[not_loop], rbf[not_loop])
        vec = torch.zeros(x.shape[0], self.n_vec_components, x.shape[1], dtype=x.dtype, device=x.device)
        f_ij = self.edge_embedding(src, dst, rbf, x)
        last = len(self.vis_mp_layers) - 1
        for i, layer in enumerate(self.vis_mp_layers):
            dx, dvec, df_ij = layer(x, vec, src, dst, r, f_ij, d, i == 0, need_vectors or i < last)
            x = x + dx
            if dvec is not None:
                vec = vec + dvec
            if df_ij is not None:
                f_ij = f_ij + df_ij
        return self.out_norm(x), self.vec_out_norm(vec)


class ViSNetFeaturizer(FeaturizerBase):
    """ViSNet per-atom embeddings: ``forward(pos_nm [n_frames, n_atoms, 3]) -> [n_frames, n_atoms, n_features]``;
    vectors ``[n_frames, n_atoms, 3, n_features]`` (the l = 1 part).

    Parameters
    ----------
    atomic_numbers : sequence of int
        Elements of the featurized atoms, n_atoms of them.
    config : ViSNetConfig
        Architecture.
    seed : int or None
        Seed of the initial weights (None: the global random stream).
    """

    def __init__(self, atomic_numbers: Sequence[int], config: ViSNetConfig = ViSNetConfig(), seed: int | None = 0):
        super().__init__()
        self._init_common(atomic_numbers, config, config.max_z, config.hidden_channels)
        self.gnn = seeded(seed, lambda: ViSNetBackbone(config, self.n_atoms))

    def _run(self, z: Tensor, pos_nm: Tensor, need_vectors: bool) -> Tuple[Tensor, Tensor]:
        n_frames = pos_nm.shape[0]
        pos = (pos_nm * self.angstrom_per_nm).reshape(n_frames * self.n_atoms, 3)
        batch = torch.arange(n_frames, device=pos.device).repeat_interleave(self.n_atoms)
        x, vec = self.gnn(z.reshape(-1), pos, batch, need_vectors)
        return x.reshape(n_frames, self.n_atoms, -1), vec[:, :3].reshape(n_frames, self.n_atoms, 3, -1)

    def forward_graphs(self, z: Tensor, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        """See :meth:`FeaturizerBase.forward_graphs`."""
        return self._run(z, pos_nm, True)

    def scalars_graphs(self, z: Tensor, pos_nm: Tensor) -> Tensor:
        """Scalars only: skips the last layer's vector update, which nobody reads."""
        return self._run(z, pos_nm, False)[0]
