"""ViSNet and TensorNet featurizers, the registry, and strict loading of all three geom2vec checkpoints."""

import numpy as np
import pytest
import torch
from torch_geometric.nn.models.visnet import ViSNetBlock
from torchmdnet.models.tensornet import TensorNet

from cvlearn.nn.featurizers import (
    GEOM2VEC_CONFIGS,
    CheckpointMismatchError,
    FixedTopologyNeighbors,
    featurizer_from_checkpoint,
    load_featurizer_weights,
    load_geom2vec,
    make_featurizer,
    save_featurizer_checkpoint,
)
from tests.conftest import SHARED_CHECKPOINTS, random_rotation

CHECKPOINTS = {"et": "et_l6_h64_rbf64_r75.pth", "visnet": "visnet_l6_h64_rbf64_r75.pth",
               "tensornet": "tensornet_l3_h64_rbf32_r5.pth"}
needs_shared = pytest.mark.skipif(not (SHARED_CHECKPOINTS / CHECKPOINTS["visnet"]).exists(),
                                  reason="../shared geom2vec checkpoints not present")
TINY = {
    "et": {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "num_heads": 4},
    "visnet": {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "num_heads": 4},
    "tensornet": {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8},
}


@pytest.fixture(scope="module")
def frames(ala2, ala2_heavy):
    heavy, z = ala2_heavy
    rng = np.random.default_rng(0)
    pos = ala2.positions_nm[heavy][None] + 0.01 * rng.normal(size=(3, len(heavy), 3))
    return torch.tensor(pos, dtype=torch.float64), z


class _PlainDistance(torch.nn.Module):
    """All pairs within the cutoff, PyG ``Distance`` conventions, without torch-cluster."""

    def __init__(self, n_atoms, cutoff):
        super().__init__()
        self.inner = FixedTopologyNeighbors(n_atoms, 0.0, cutoff)

    def forward(self, pos, batch):
        return self.inner(pos, batch)


def _flat(pos_nm, z):
    n = pos_nm.shape[0]
    return torch.tensor(z).repeat(n), (pos_nm * 10.0).reshape(-1, 3), torch.arange(n).repeat_interleave(len(z))


def test_visnet_nm_in_equals_pyg_visnetblock_on_angstrom(frames):
    pos, z = frames
    f = make_featurizer("visnet", z, TINY["visnet"], seed=1).double()
    ref = ViSNetBlock(hidden_channels=16, num_layers=2, num_rbf=8, num_heads=4, cutoff=5.0).double()
    ref.load_state_dict(f.gnn.state_dict(), strict=True)  # same keys as PyG: the weight layout is PyG's
    ref.distance = _PlainDistance(len(z), 5.0)
    x, vec = f.forward_with_vectors(pos)
    x_ref, vec_ref = ref(*_flat(pos, z))
    assert torch.allclose(x.reshape(-1, 16), x_ref, atol=1e-10)
    assert torch.allclose(vec.reshape(-1, 3, 16), vec_ref, atol=1e-10)


def test_tensornet_nm_in_equals_torchmdnet_on_angstrom(frames):
    pos, z = frames
    f = make_featurizer("tensornet", z, TINY["tensornet"], seed=1).double()
    ref = TensorNet(hidden_channels=16, num_layers=2, num_rbf=8, cutoff_upper=5.0, static_shapes=False,
                    dtype=torch.float64).double()
    result = ref.load_state_dict(f.gnn.state_dict(), strict=False)
    assert result.missing_keys == ["distance.box"] and not result.unexpected_keys
    x_ref, *_ = ref(*_flat(pos, z))
    assert torch.allclose(f(pos).reshape(-1, 16), x_ref, atol=1e-7)


def test_tensornet_interleaved_layout_is_a_row_permutation(frames):
    """geom2vec's [F, 3] reading of the 3F-wide scalars = torchmd-net's [3, F] reading with permuted rows."""
    pos, z = frames
    inter = make_featurizer("tensornet", z, {**TINY["tensornet"], "channel_layout": "interleaved"}, seed=2).double()
    blocked = make_featurizer("tensornet", z, TINY["tensornet"], seed=3).double()
    f = 16
    perm = torch.arange(3 * f).reshape(f, 3).T.reshape(-1)  # blocked row c*F+k <- interleaved row k*3+c
    state = inter.gnn.state_dict()
    for key in list(state):
        if key.endswith(("tensor_embedding.linears_scalar.1.weight", "tensor_embedding.linears_scalar.1.bias")) or \
                (key.startswith("layers.") and ".linears_scalar.2." in key):
            state[key] = state[key][perm]
    blocked.gnn.load_state_dict(state)
    assert torch.allclose(inter(pos), blocked(pos), atol=1e-10)
    assert not torch.allclose(inter(pos), make_featurizer("tensornet", z, TINY["tensornet"], seed=2).double()(pos))


@pytest.mark.parametrize("kind", ["et", "visnet", "tensornet"])
def test_scalars_invariant_vectors_rotate(kind, frames):
    pos, z = frames
    f = make_featurizer(kind, z, TINY[kind], seed=4).double()
    rot = torch.tensor(random_rotation(7))
    x, vec = f.forward_with_vectors(pos)
    x_r, vec_r = f.forward_with_vectors(pos @ rot.T + torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64))
    assert x.shape == (3, len(z), 16) and vec.shape == (3, len(z), 3, 16)
    assert torch.allclose(x, x_r, atol=1e-8)
    assert torch.allclose(torch.einsum("ij,fajc->faic", rot, vec), vec_r, atol=1e-8)
    assert vec.abs().max() > 1e-4


@pytest.mark.parametrize("kind", ["visnet", "tensornet"])
def test_scripted_and_saved_equal_eager(kind, frames, tmp_path):
    pos, z = frames
    f = make_featurizer(kind, z, TINY[kind], seed=5).eval()
    pos = pos.float()
    scripted = torch.jit.script(f)
    torch.jit.save(scripted, tmp_path / "f.pt")
    loaded = torch.jit.load(tmp_path / "f.pt")
    eager = f(pos)
    assert torch.equal(scripted(pos), eager)
    assert torch.equal(loaded(pos), eager)
    assert torch.equal(loaded.forward_with_vectors(pos)[1], f.forward_with_vectors(pos)[1])


def test_registry_rejects_unknown_kind_and_keys(frames):
    _, z = frames
    with pytest.raises(ValueError, match="kind"):
        make_featurizer("schnet", z)
    with pytest.raises(ValueError, match="unknown keys"):
        make_featurizer("visnet", z, {"cutoff": 5.0})
    with pytest.raises(ValueError, match="atomic_numbers"):
        make_featurizer("tensornet", [6, 0])


@pytest.mark.parametrize("kind", ["visnet", "tensornet"])
def test_own_checkpoint_roundtrip(kind, frames, tmp_path):
    pos, z = frames
    f = make_featurizer(kind, z, TINY[kind], seed=6)
    save_featurizer_checkpoint(f, tmp_path / "f.pt", note="test")
    g = featurizer_from_checkpoint(tmp_path / "f.pt", z)
    assert g.config == f.config and torch.equal(g(pos.float()), f(pos.float()))
    with pytest.raises(CheckpointMismatchError, match="num_layers"):
        load_featurizer_weights(make_featurizer(kind, z, {**TINY[kind], "num_layers": 1}), tmp_path / "f.pt")


@needs_shared
@pytest.mark.parametrize("kind", ["et", "visnet", "tensornet"])
def test_geom2vec_checkpoints_load_strictly(kind, frames):
    pos, z = frames
    f = load_geom2vec(kind, z, SHARED_CHECKPOINTS / CHECKPOINTS[kind])
    untrained = make_featurizer(kind, z, GEOM2VEC_CONFIGS[kind], seed=0)
    x = f(pos.float())
    assert x.shape == (3, len(z), 64) and torch.isfinite(x).all()
    assert (x - untrained(pos.float())).abs().mean() > 0.05


@needs_shared
def test_geom2vec_visnet_eager_scripted_exported(frames, tmp_path):
    pos, z = frames
    f = load_geom2vec("visnet", z, SHARED_CHECKPOINTS / CHECKPOINTS["visnet"])
    torch.jit.save(torch.jit.script(f), tmp_path / "visnet.pt")
    loaded = torch.jit.load(tmp_path / "visnet.pt")
    for shift in (0.0, 0.05):  # two geometries
        p = (pos + shift * torch.randn_like(pos)).float()
        assert torch.equal(loaded(p), f(p))


@needs_shared
@pytest.mark.parametrize("kind", ["visnet", "tensornet"])
def test_geom2vec_mismatch_lists_keys(kind, frames):
    _, z = frames
    wrong = {**GEOM2VEC_CONFIGS[kind].as_dict(), "num_layers": 2}
    with pytest.raises(CheckpointMismatchError) as err:
        load_featurizer_weights(make_featurizer(kind, z, wrong), SHARED_CHECKPOINTS / CHECKPOINTS[kind])
    assert "unexpected keys" in str(err.value) and "layers.2" in str(err.value)
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        load_featurizer_weights(make_featurizer(kind, z, {**GEOM2VEC_CONFIGS[kind].as_dict(), "num_rbf": 16}),
                                SHARED_CHECKPOINTS / CHECKPOINTS[kind])


@needs_shared
def test_truncated_checkpoint_fails_naming_file(frames, tmp_path):
    _, z = frames
    bad = tmp_path / "visnet_truncated.pth"
    bad.write_bytes((SHARED_CHECKPOINTS / CHECKPOINTS["visnet"]).read_bytes()[:5000])
    with pytest.raises(CheckpointMismatchError, match="visnet_truncated.pth"):
        load_geom2vec("visnet", z, bad)
