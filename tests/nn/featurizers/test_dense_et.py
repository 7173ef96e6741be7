"""The dense ET equals torchmd-net's ET on the same weights: features, vectors, gradients, exported CVs."""

import copy
import io

import pytest
import torch

from cvlearn.nn.featurizers import ETConfig, ETFeaturizer
from cvlearn.nn.featurizers.dense_et import DenseETFeaturizer

Z = [6, 6, 7, 8, 6, 6, 7, 8, 6, 1, 1, 8]


def _positions(n_frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    # spread wide enough (nm) that some pairs fall beyond the 5 Å cutoff
    return torch.randn(n_frames, len(Z), 3, generator=g, dtype=torch.float64) * 0.25


@pytest.mark.parametrize("vector_cutoff, num_layers", [(False, 3), (True, 3), (False, 1)])
def test_dense_equals_sparse_features_vectors_and_forces(vector_cutoff, num_layers):
    # 1 layer: the first layer is also the last, the scalar path through its cut (pruned) projections
    et = ETFeaturizer(Z, ETConfig(num_layers=num_layers, vector_cutoff=vector_cutoff), seed=4).double()
    dense = DenseETFeaturizer(et)
    pos = _positions(3)
    r = torch.cdist(pos[0], pos[0]) * 10
    assert bool((r > 5.0).any()) and bool((r[r > 0] < 5.0).any())  # the cutoff mask matters here
    x_ref, v_ref = et.forward_with_vectors(pos)
    x, v = dense.forward_with_vectors(pos)
    torch.testing.assert_close(x, x_ref, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(v, v_ref, atol=1e-10, rtol=1e-8)
    p1 = pos.clone().requires_grad_(True)
    p2 = pos.clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(et(p1).pow(2).sum(), p1)
    (g,) = torch.autograd.grad(dense(p2).pow(2).sum(), p2)
    torch.testing.assert_close(g, g_ref, atol=1e-9, rtol=1e-7)


def test_a_dense_et_pickled_before_the_cut_projections_loads_with_them():
    """CV files keep an eager copy pickled with the layers of their day; one saved before ``_prune`` existed (full
    projections only) and before the per-pair filters (no pair buffers) must load, gain both and give the same
    numbers."""
    dense = DenseETFeaturizer(ETFeaturizer(Z, ETConfig(num_layers=2), seed=3).double())
    pos = _positions(2).requires_grad_(True)
    expected = dense(pos)
    (g_expected,) = torch.autograd.grad(expected.pow(2).sum(), pos)
    old = copy.deepcopy(dense)
    for layer in old.layers:  # the layout of a file written before the cut
        for name in ("filters_x", "filters_xv2", "qkv_x", "o_scalar", "vec_proj_x"):
            del layer._modules[name]
        for name in ("qkv0_x", "qkv0_xv2"):
            del layer._buffers[name]
    for name in ("pair_slot", "pair_incidence"):
        del old._buffers[name]
    buffer = io.BytesIO()
    torch.save(old, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert all("filters_x" in layer._modules for layer in loaded.layers) and "pair_incidence" in loaded._buffers
    out = loaded(pos)
    (g,) = torch.autograd.grad(out.pow(2).sum(), pos)
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(g, g_expected, atol=1e-12, rtol=0)


def test_dense_is_an_independent_snapshot_and_scripts():
    et = ETFeaturizer(Z, ETConfig(), seed=1)
    dense = DenseETFeaturizer(et)
    pos = _positions(2).float()
    before = et(pos).detach()
    scripted = torch.jit.script(dense)
    torch.testing.assert_close(scripted(pos), before, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        next(et.parameters()).add_(1.0)
    torch.testing.assert_close(dense(pos), before, atol=1e-5, rtol=1e-5)


def test_dense_refuses_other_molecules():
    dense = DenseETFeaturizer(ETFeaturizer(Z, ETConfig(), seed=1))
    with pytest.raises(RuntimeError, match="atomic numbers differ"):
        dense.forward_graphs(torch.tensor([[1] * len(Z)]), _positions(1).float())
    # every graph is checked, not only the first (a window embedder runs graphs of different elements)
    own = torch.tensor(Z)
    other = own.clone()
    other[0] = 1
    with pytest.raises(RuntimeError, match="atomic numbers differ"):
        dense.scalars_graphs(torch.stack([own, other]), _positions(2).float())
    assert dense.scalars_graphs(torch.stack([own, own]), _positions(2).float()).shape == (2, len(Z), 64)

