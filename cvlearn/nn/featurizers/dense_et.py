"""The Equivariant Transformer for one small fixed molecule, written for the MD loop: same weights, fewer ops.

A CV featurizer sees one small fixed molecule (ala2: 10 heavy atoms, 100 pairs), where torchmd-net's ET
spends its time on per-op overhead (edge bookkeeping, ``index_select``/``scatter``, masks, autograd nodes)
rather than arithmetic: a 2-layer, 64-wide ET is about 10 MFLOP but ~400 dispatched ops forward + backward.
``DenseETFeaturizer`` computes the identical function with fewer ops:

- every pair is a slot of ``[B, n, n, ...]`` einsums (no neighbour list); pairs beyond the cutoff are zeroed by
  a mask and the self loop is the diagonal with r = 0, exactly as ``FixedTopologyNeighbors`` + ``TorchMD_ET``;
- what depends only on the elements is computed once: the embedding and the first layer's layer norm and
  q/k/v projections (the atoms never change), and the first layer's vector terms, which vanish (vec = 0);
- the distance filters of keys and values share one matrix multiply, evaluated once per unordered pair (r_ts =
  r_st) and once for the self loop, then placed in the n² slots (``DenseETFeaturizer._pairs``);
- the last layer skips its vector update when only scalars are asked for (a CV never uses them), and every layer
  multiplies only by the weight rows its path reads (``DenseETLayer._prune``).

It is a snapshot for export (``cvlearn.export``) and MD: build it from the trained ``ETFeaturizer``; later
changes to that featurizer's weights do not reach it. Tested equal to the ET on features, vectors and gradients.
"""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from torch import Tensor

from cvlearn.nn.featurizers.base import FeaturizerBase
from cvlearn.nn.featurizers.equivariant_transformer import ETFeaturizer


class DenseETLayer(torch.nn.Module):
    """One ``EquivariantMultiHeadAttention`` (distance influence on keys and values) over all pairs.

    Shares/copies the weights of ``layer``; ``forward`` maps ``x`` ``[B, n, F]`` and ``vec`` ``[B, n, 3, F]`` to
    the updates ``(dx, dvec)`` of the same shapes, from dense pair tensors (distances in Å).

    Parameters
    ----------
    layer : torch.nn.Module
        A torchmd-net attention layer with ``distance_influence='both'`` and no ``vector_cutoff``.
    first : bool
        Whether this is the first layer (``vec`` is zero on entry; q, k, v are precomputed from ``x0``).
    x0 : Tensor or None
        Element embeddings ``[1, n, F]`` of the molecule, used when ``first``.
    """

    def __init__(self, layer: torch.nn.Module, first: bool, x0: Optional[Tensor]):
        super().__init__()
        if layer.dk_proj is None or layer.dv_proj is None:
            raise ValueError("DenseETLayer supports distance_influence='both' (cvlearn's ET)")
        self.first = first
        self.vector_cutoff = bool(layer.vector_cutoff)
        self.heads = int(layer.num_heads)
        self.head_dim = int(layer.head_dim)
        self.hidden = int(layer.hidden_channels)
        self.layernorm = layer.layernorm
        dtype = layer.q_proj.weight.dtype
        self.qkv = torch.nn.Linear(self.hidden, 5 * self.hidden, dtype=dtype)
        self.filters = torch.nn.Linear(layer.dk_proj.in_features, 4 * self.hidden, dtype=dtype)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]))
            self.qkv.bias.copy_(torch.cat([layer.q_proj.bias, layer.k_proj.bias, layer.v_proj.bias]))
            self.filters.weight.copy_(torch.cat([layer.dk_proj.weight, layer.dv_proj.weight]))
            self.filters.bias.copy_(torch.cat([layer.dk_proj.bias, layer.dv_proj.bias]))
        self.o_proj, self.vec_proj = layer.o_proj, layer.vec_proj
        self.act, self.attn_activation = layer.act, layer.attn_activation
        # First layer: its input x0 = embedding(z) is a constant, so q, k, v are too.
        qkv0 = self.qkv(self.layernorm(x0)) if first and x0 is not None else torch.zeros(0)
        self.register_buffer("qkv0", qkv0.detach())
        self._prune()

    def _prune(self) -> None:
        """Linear layers cut to the output columns each path reads (a matmul computes every column it has).

        Per head, v and the value filter hold three blocks [x | v1 | v2] of ``head_dim``; o_proj gives [o1 | o2 | o3]
        and vec_proj [vec1 | vec2 | vec3]. The scalar path (a CV's last layer) reads q, k, the x blocks, o2, o3 (the
        first layer o3 only), vec1 and vec2; the first layer never reads v1 (vec = 0 on entry). Cutting them
        halves the last layer's pair filters (the largest matmul, over n² pairs) and drops a quarter of the first's:
        the ala2 sampling GNN CV's value + Jacobian row through torch.compile went from 0.65 to 0.50 ms per call
        (idle 2-core machine). Built from the full layers, so a CV file pickled before the cut gets it when loaded
        (``__setstate__``)."""
        f, h, d = self.hidden, self.heads, self.head_dim

        def blocks(offset: int, part: int) -> list[int]:  # one of the per-head [x | v1 | v2] blocks, all heads
            return [offset + head * 3 * d + part * d + j for head in range(h) for j in range(d)]

        q_k = list(range(2 * f))
        dk = list(range(f))
        with torch.no_grad():
            self.filters_x = _rows(self.filters, dk + blocks(f, 0))
            self.filters_xv2 = _rows(self.filters, dk + blocks(f, 0) + blocks(f, 2))
            self.qkv_x = _rows(self.qkv, q_k + blocks(2 * f, 0))
            self.o_scalar = _rows(self.o_proj, list(range(2 * f, 3 * f)) if self.first else list(range(f, 3 * f)))
            self.vec_proj_x = _rows(self.vec_proj, list(range(2 * f)))
            first = self.first and self.qkv0.numel() > 0
            self.register_buffer("qkv0_x", self.qkv0[..., q_k + blocks(2 * f, 0)] if first else torch.zeros(0))
            self.register_buffer("qkv0_xv2", self.qkv0[..., q_k + blocks(2 * f, 0) + blocks(2 * f, 2)] if first
                                 else torch.zeros(0))

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "filters_x" not in self._modules:  # pickled before _prune existed
            self._prune()

    def _vector_weight(self, cut: Tensor, mask: Tensor) -> Tensor:
        """Pair weight of the vector messages: torchmd-net's ``vector_cutoff`` weights them with the cosine cutoff
        (continuous at the cutoff); without it they are masked, and jump there (``dv_proj``'s bias is not zero)."""
        return cut if self.vector_cutoff else mask

    def _attention(self, q: Tensor, k: Tensor, dk: Tensor, cut: Tensor) -> Tensor:
        """Attention weights ``[B, t, s, heads]``.

        Products and sums rather than ``einsum`` here and in the messages: inductor fuses them into a few loops,
        where each einsum became a batched-matmul library call (value + Jacobian row ahead of time, idle: ala2
        GNN CV 0.35 → 0.32 ms, WLALL 5.9 → 5.2 ms per call; TorchScript forward + backward, ala2: 2.2 → 1.5 ms).
        The attention's pair tensors are no larger than einsum's own intermediates (it forms q_t k_s over all pairs
        too); the first layer's vector message forms one ``[B, n, n, 3, F]`` product (n ≤ 64 atoms, export)."""
        b, n, h, d = cut.shape[0], cut.shape[1], self.heads, self.head_dim
        attn = (q.reshape(b, n, 1, h, d) * k.reshape(b, 1, n, h, d) * dk.reshape(b, n, n, h, d)).sum(-1)
        return self.attn_activation(attn) * cut.unsqueeze(-1)

    def _attend(self, q: Tensor, k: Tensor, v_x: Tensor, dk: Tensor, dv_x: Tensor, cut: Tensor) -> Tensor:
        """The attention-weighted scalar messages summed over senders: ``[B, n, F]``."""
        b, n, h, d = cut.shape[0], cut.shape[1], self.heads, self.head_dim
        x_msg = v_x.reshape(b, 1, n, h, d) * dv_x.reshape(b, n, n, h, d)
        return (x_msg * self._attention(q, k, dk, cut).unsqueeze(-1)).sum(2).reshape(b, n, self.hidden)

    def _to_slots(self, per_pair: Tensor, pair_slot: Tensor, diagonal: Tensor) -> Tensor:
        """The filters of each distinct pair and of the self loop, ``per_pair`` ``[B, P + 1, out]`` (before the
        activation), placed in the pair slots: ``[B, n, n, out]``.

        Placed by a copy into the upper triangle plus its transpose, not by a gather with repeated indices: the
        gather's backward is a scatter-add, whose batched form (a Jacobian of 2+ rows, ``jacrev``) torch 2.9.1's
        inductor compiled wrongly (relative error 2.4 on the 4-head test CV of
        ``tests/openmm_plugin/test_forces.py::test_compiled_python_route_equals_torchscript``, which then fell back
        to eager); this backward gathers only."""
        act = self.act(per_pair)
        b, n, p, out = act.shape[0], diagonal.shape[0], pair_slot.shape[0], act.shape[-1]
        upper = act.new_zeros(b, n * n, out).index_copy(1, pair_slot, act[:, :p]).reshape(b, n, n, out)
        return upper + upper.transpose(1, 2) + diagonal.reshape(1, n, n, 1) * act[:, p:].reshape(b, 1, 1, out)

    def forward(self, x: Tensor, vec: Tensor, rbf: Tensor, pair_slot: Tensor, diagonal: Tensor, cut: Tensor,
                mask: Tensor, unit: Tensor, need_vectors: bool) -> Tuple[Tensor, Tensor]:
        # x [B, n, F]; vec [B, n, 3, F]; rbf [B, P + 1, R] of the P pairs t < s (flat slots pair_slot [P]) and the
        # self loop; diagonal [n, n] the identity; cut, mask [B, t, s]; unit [B, t, s, 3] = (pos_s - pos_t) / r
        b, n = cut.shape[0], cut.shape[1]
        f, h, d = self.hidden, self.heads, self.head_dim
        if self.first:  # vec = 0 on entry: no vector terms in dx, and only the direction term (v2) in dvec
            if not need_vectors:
                q, k, v_x = torch.split(self.qkv0_x.expand(b, n, 3 * f), f, dim=-1)
                dk, dv_x = torch.split(self._to_slots(self.filters_x(rbf), pair_slot, diagonal), f, dim=-1)
                return self.o_scalar(self._attend(q, k, v_x, dk, dv_x, cut)), vec
            q, k, v_x, v2 = torch.split(self.qkv0_xv2.expand(b, n, 4 * f), f, dim=-1)
            dk, dv_x, dv2 = torch.split(self._to_slots(self.filters_xv2(rbf), pair_slot, diagonal), f, dim=-1)
            dx = self.o_scalar(self._attend(q, k, v_x, dk, dv_x, cut))
            v2_ts = v2.reshape(b, 1, n, h, d) * dv2.reshape(b, n, n, h, d)
            v2_ts = v2_ts * self._vector_weight(cut, mask).reshape(b, n, n, 1, 1)
            vec_msg = (v2_ts.unsqueeze(3) * unit.reshape(b, n, n, 3, 1, 1)).sum(2)
            return dx, vec_msg.reshape(b, n, 3, f)
        if not need_vectors:  # a CV's last layer: the x blocks, o2, o3, vec1 and vec2 only
            q, k, v_x = torch.split(self.qkv_x(self.layernorm(x)), f, dim=-1)
            dk, dv_x = torch.split(self._to_slots(self.filters_x(rbf), pair_slot, diagonal), f, dim=-1)
            o2, o3 = torch.split(self.o_scalar(self._attend(q, k, v_x, dk, dv_x, cut)), f, dim=-1)
            vec1, vec2 = torch.split(self.vec_proj_x(vec), f, dim=-1)
            return (vec1 * vec2).sum(dim=2) * o2 + o3, vec
        q, k, v = torch.split(self.qkv(self.layernorm(x)), [f, f, 3 * f], dim=-1)
        dk, dv = torch.split(self._to_slots(self.filters(rbf), pair_slot, diagonal), [f, 3 * f], dim=-1)
        v_ts = v.reshape(b, 1, n, h, 3 * d) * dv.reshape(b, n, n, h, 3 * d)
        x_msg, v1, v2 = torch.split(v_ts, d, dim=-1)
        x_out = (x_msg * self._attention(q, k, dk, cut).unsqueeze(-1)).sum(2).reshape(b, n, f)
        o1, o2, o3 = torch.split(self.o_proj(x_out), f, dim=-1)
        vec1, vec2, vec3 = torch.split(self.vec_proj(vec), f, dim=-1)
        dx = (vec1 * vec2).sum(dim=2) * o2 + o3
        m = self._vector_weight(cut, mask).reshape(b, n, n, 1, 1)
        vec_msg = (torch.einsum("bschd,btshd->btchd", vec.reshape(b, n, 3, h, d), v1 * m)
                   + torch.einsum("btshd,btsc->btchd", v2 * m, unit)).reshape(b, n, 3, f)
        return dx, vec3 * o1.unsqueeze(2) + vec_msg


def _rows(linear: torch.nn.Linear, rows: list[int]) -> torch.nn.Linear:
    """A copy of ``linear`` that computes only the output features ``rows`` (in that order)."""
    index = torch.tensor(rows, dtype=torch.long, device=linear.weight.device)
    out = torch.nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None, dtype=linear.weight.dtype,
                          device=linear.weight.device)
    with torch.no_grad():
        out.weight.copy_(linear.weight[index])
        if linear.bias is not None:
            out.bias.copy_(linear.bias[index])
    return out.requires_grad_(linear.weight.requires_grad)


class DenseETFeaturizer(FeaturizerBase):
    """``ETFeaturizer`` for its own molecule on dense pair tensors: same numbers, same interface, fewer ops.

    ``forward(pos_nm [n_frames, n_atoms, 3])`` (nm; Å inside) returns ``[n_frames, n_atoms, n_features]``; graphs
    with other elements than the source featurizer's are refused.

    Parameters
    ----------
    et : ETFeaturizer
        Source featurizer (weights deep-copied); ``neighbor_embedding=True`` is not supported.
    """

    def __init__(self, et: ETFeaturizer):
        super().__init__()
        if not isinstance(et, ETFeaturizer):
            raise TypeError(f"et: expected an ETFeaturizer, found {type(et).__name__}")
        gnn = copy.deepcopy(et.gnn)
        if gnn.neighbor_embedding is not None:
            raise ValueError("DenseETFeaturizer: neighbor_embedding=True is not supported")
        self._init_common(et.atomic_numbers.tolist(), et.config, et.config.max_z, et.hidden_channels)
        self.distance_expansion = gnn.distance_expansion
        self.cutoff_angstrom = float(et.config.cutoff_angstrom)
        with torch.no_grad():
            x0 = gnn.embedding(self.atomic_numbers).unsqueeze(0)
        self.register_buffer("x0", x0)
        self.layers = torch.nn.ModuleList([DenseETLayer(layer, i == 0, x0 if i == 0 else None)
                                           for i, layer in enumerate(gnn.attention_layers)])
        self.out_norm = gnn.out_norm
        self.register_buffer("off_diagonal", 1.0 - torch.eye(self.n_atoms, dtype=x0.dtype), persistent=False)
        self._pairs()

    def _pairs(self) -> None:
        """The distinct pairs t < s: ``pair_slot`` ``[P]``, each one's flat ``[n * n]`` slot, and ``pair_incidence``
        ``[n, P]`` (+1 at s, -1 at t), so that ``pos^T @ pair_incidence`` is each pair's pos_s - pos_t.

        Why: the pair filters' matmul and its backward are the largest products of a CV's call (ala2 sampling GNN
        CV: [100, 32] x [32, 192] and x [32, 128], ~45 of ~170 us per value + Jacobian row ahead of time); each pair
        once and the self loop once is 46 rows instead of 100 for 10 atoms (:meth:`DenseETLayer._to_slots`); the
        placement adds a few ops, which the TorchScript route pays (ala2 GNN CV 1.59 -> 1.66 ms per MD step, where
        the compiled one went from 0.36 to 0.29, ``bias_speed --pairs`` side by side on a loaded machine). The
        pair distances come from a product, not a gather of the n² distances: the gather's backward is a
        scatter-add, which inductor compiled wrongly when batched (:meth:`DenseETLayer._to_slots`)."""
        n, device = self.n_atoms, self.x0.device  # a file loaded onto a GPU rebuilds them there (__setstate__)
        t, s = torch.triu_indices(n, n, 1, device=device)
        pair = torch.arange(t.numel(), device=device)
        incidence = torch.zeros(n, t.numel(), dtype=self.x0.dtype, device=device)
        incidence[s, pair] = 1.0
        incidence[t, pair] = -1.0
        self.register_buffer("pair_slot", (t * n + s).to(torch.long), persistent=False)
        self.register_buffer("pair_incidence", incidence, persistent=False)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "pair_slot" not in self._buffers:  # pickled before per-pair filters
            self._pairs()

    def _run(self, pos_nm: Tensor, need_vectors: bool) -> Tuple[Tensor, Tensor]:
        pos = pos_nm * self.angstrom_per_nm  # [B, n, 3] Å
        b, n = pos.shape[0], pos.shape[1]
        diff = pos.unsqueeze(1) - pos.unsqueeze(2)  # [B, t, s, 3] = pos_s - pos_t, torchmd-net's edge vector
        off = self.off_diagonal.to(pos.dtype)
        diagonal = 1.0 - off
        # sqrt(1) on the diagonal, then zeroed: self loops get r = 0 and a finite (zero) gradient.
        r = torch.sqrt((diff * diff).sum(-1) + diagonal) * off
        mask = (r < self.cutoff_angstrom).to(pos.dtype)
        unit = diff / (r + diagonal).unsqueeze(-1)
        diff_pairs = pos.transpose(1, 2) @ self.pair_incidence.to(pos.dtype)  # [B, 3, P]: pos_s - pos_t
        r_pairs = torch.sqrt((diff_pairs * diff_pairs).sum(1))
        rbf = self.distance_expansion(torch.cat([r_pairs, r_pairs.new_zeros(b, 1)], dim=1))  # [B, P + 1, R]
        cut = 0.5 * (torch.cos(r * (torch.pi / self.cutoff_angstrom)) + 1.0) * mask
        x = self.x0.to(pos.dtype).expand(b, n, self.hidden_channels)
        vec = torch.zeros(b, n, 3, self.hidden_channels, dtype=pos.dtype, device=pos.device)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            dx, dvec = layer(x, vec, rbf, self.pair_slot, diagonal, cut, mask, unit, need_vectors or i < last)
            x = x + dx
            vec = vec + dvec if (need_vectors or i < last) else vec
        return self.out_norm(x), vec

    def _check_own_elements(self, z: Tensor) -> None:
        # Every graph, not only the first: the element-only terms are precomputed for this one element list.
        if z.dim() != 2 or z.shape[1] != self.n_atoms or not bool(torch.all(z == self.atomic_numbers.unsqueeze(0))):
            raise RuntimeError("DenseETFeaturizer computes its own molecule only (atomic numbers differ in some graph)")

    def forward_graphs(self, z: Tensor, pos_nm: Tensor) -> Tuple[Tensor, Tensor]:
        self._check_own_elements(z)
        return self._run(pos_nm, True)

    def scalars_graphs(self, z: Tensor, pos_nm: Tensor) -> Tensor:
        self._check_own_elements(z)
        return self._run(pos_nm, False)[0]

    def forward(self, pos_nm: Tensor) -> Tensor:
        """Scalars only: the MD path, with no element check (the molecule is its own by construction)."""
        return self._run(pos_nm, False)[0]
