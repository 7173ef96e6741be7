import numpy as np
import pytest
import torch
from torchmdnet.models.torchmd_et import TorchMD_ET
from torchmdnet.models.utils import OptimizedDistance

from cvlearn.nn.featurizers import GEOM2VEC_ET, ETConfig, ETFeaturizer, FixedTopologyNeighbors, load_featurizer_weights
from cvlearn.nn.featurizers.checkpoints import CheckpointMismatchError, save_featurizer_checkpoint
from tests.conftest import SHARED_CHECKPOINTS, random_rotation

ET_CKPT = SHARED_CHECKPOINTS / "et_l6_h64_rbf64_r75.pth"
needs_shared = pytest.mark.skipif(not ET_CKPT.exists(), reason="../shared geom2vec checkpoints not present")


@pytest.fixture(scope="module")
def frames(ala2, ala2_heavy):
    heavy, z = ala2_heavy
    rng = np.random.default_rng(0)
    base = ala2.positions_nm[heavy]
    pos = base[None] + 0.01 * rng.normal(size=(4, len(heavy), 3))
    return torch.tensor(pos, dtype=torch.float32), z


def test_neighbors_match_torchmdnet_kernel():
    pos = torch.randn(3 * 7, 3) * 3.0
    batch = torch.arange(3).repeat_interleave(7)
    ours = FixedTopologyNeighbors(7, 0.0, 4.0)(pos, batch)
    ref = OptimizedDistance(0.0, 4.0, max_num_pairs=-64, return_vecs=True, loop=True)(pos, batch)

    def as_set(edge_index, weight, vec):
        return {(int(i), int(j)): (float(w), tuple(np.round(v.tolist(), 5))) for (i, j), w, v in
                zip(edge_index.T, weight, vec)}

    a, b = as_set(*ours), as_set(*ref)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == pytest.approx(b[key][0], abs=1e-5)
        assert a[key][1] == pytest.approx(b[key][1], abs=1e-4)


def test_nm_in_equals_raw_gnn_on_angstrom(frames):
    pos_nm, z = frames
    featurizer = ETFeaturizer(z, ETConfig(num_layers=2), seed=1)
    raw = TorchMD_ET(hidden_channels=64, num_layers=2, num_rbf=32, cutoff_upper=5.0, neighbor_embedding=False)
    own = featurizer.gnn.state_dict()
    raw.load_state_dict(own, strict=False)  # raw keeps its own distance.box buffer
    n = pos_nm.shape[0]
    x_raw, *_ = raw(torch.tensor(z).repeat(n), (pos_nm * 10.0).reshape(-1, 3), torch.arange(n).repeat_interleave(len(z)))
    assert torch.allclose(featurizer(pos_nm).reshape(-1, 64), x_raw, atol=1e-5)


def test_scalars_invariant_vectors_rotate(frames):
    pos_nm, z = frames
    featurizer = ETFeaturizer(z, ETConfig(num_layers=2), seed=2).double()
    rot = torch.tensor(random_rotation(3))
    pos = pos_nm.double()
    x, vec = featurizer.forward_with_vectors(pos)
    x_r, vec_r = featurizer.forward_with_vectors(pos @ rot.T + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64))
    assert torch.allclose(x, x_r, atol=1e-9)
    assert torch.allclose(torch.einsum("ij,fajc->faic", rot, vec), vec_r, atol=1e-9)
    assert vec.abs().max() > 1e-3  # the vectors are not trivially zero


def test_scripted_equals_eager(frames):
    pos_nm, z = frames
    featurizer = ETFeaturizer(z, ETConfig(num_layers=2), seed=3)
    assert torch.equal(torch.jit.script(featurizer)(pos_nm), featurizer(pos_nm))


def test_bad_atomic_numbers():
    with pytest.raises(ValueError, match="atomic_numbers"):
        ETFeaturizer([6, 0, 8])


@needs_shared
def test_geom2vec_et_loads_strictly_and_differs_from_untrained(frames):
    pos_nm, z = frames
    pretrained = ETFeaturizer(z, GEOM2VEC_ET, seed=0)
    untrained = ETFeaturizer(z, GEOM2VEC_ET, seed=0)
    load_featurizer_weights(pretrained, ET_CKPT)
    for key, value in pretrained.gnn.state_dict().items():
        assert value.shape == untrained.gnn.state_dict()[key].shape
    diff = (pretrained(pos_nm) - untrained(pos_nm)).abs().mean()
    assert diff > 0.05


@needs_shared
def test_wrong_architecture_lists_keys(frames):
    _, z = frames
    with pytest.raises(CheckpointMismatchError) as err:
        load_featurizer_weights(ETFeaturizer(z, ETConfig(num_layers=2, hidden_channels=64, num_rbf=64)), ET_CKPT)
    message = str(err.value)
    assert "unexpected keys" in message and "attention_layers.5" in message
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        load_featurizer_weights(ETFeaturizer(z, ETConfig(num_layers=6, hidden_channels=64, num_rbf=32)), ET_CKPT)


def test_corrupt_and_missing_checkpoint(tmp_path, frames):
    _, z = frames
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="bad.pth"):
        load_featurizer_weights(ETFeaturizer(z), bad)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_featurizer_weights(ETFeaturizer(z), tmp_path / "nope.pth")


def test_own_checkpoint_roundtrip_and_architecture_check(tmp_path, frames):
    pos_nm, z = frames
    source = ETFeaturizer(z, ETConfig(num_layers=1, hidden_channels=32, num_rbf=16, num_heads=4), seed=5)
    path = tmp_path / "featurizer.pt"
    save_featurizer_checkpoint(source, path, note="test")
    target = ETFeaturizer(z, source.config, seed=6)
    load_featurizer_weights(target, path)
    assert torch.equal(target(pos_nm), source(pos_nm))
    with pytest.raises(CheckpointMismatchError, match="num_layers"):
        load_featurizer_weights(ETFeaturizer(z, ETConfig(num_layers=2, hidden_channels=32, num_rbf=16, num_heads=4)), path)
