"""Featurizers continuous at their cutoff, or not: a CV that jumps where an atom pair crosses the cutoff cannot be
biased correctly (MD under the bias does not conserve energy; issue 17). ``vector_cutoff`` makes the ET and ViSNet
continuous with the same weights; TensorNet is continuous as published."""

import pytest
import torch

from cvlearn.nn.featurizers import make_featurizer
from cvlearn.nn.featurizers.dense_et import DenseETFeaturizer

Z = [6, 6, 7, 8, 6, 6, 7, 8, 6, 1, 1, 8]
CUTOFF_ANGSTROM = 5.0  # every kind's default


def _across_the_cutoff(featurizer, gap_angstrom: float) -> float:
    """Largest change of any feature when the last atom moves from 5 Å − gap to 5 Å + gap from the first."""
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(len(Z), 3, generator=g, dtype=torch.float64) * 0.25  # nm
    direction = (pos[-1] - pos[0]) / (pos[-1] - pos[0]).norm()
    out = []
    for r in (CUTOFF_ANGSTROM - gap_angstrom, CUTOFF_ANGSTROM + gap_angstrom):
        moved = pos.clone()
        moved[-1] = pos[0] + direction * r / 10.0
        out.append(featurizer(moved.unsqueeze(0)).detach())
    return float((out[1] - out[0]).abs().max())


def _with_trained_biases(kind: str, config: dict):
    """Initial weights have zero biases (torchmd-net's and PyG's init); trained ones (the shipped checkpoints') do
    not, and a bias is what keeps a masked message finite at the cutoff."""
    featurizer = make_featurizer(kind, Z, config, seed=2).double()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in featurizer.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5, generator=g)
    return featurizer


@pytest.mark.parametrize("kind, config, dense, continuous", [
    ("et", {"num_layers": 2}, False, False),
    ("et", {"num_layers": 2}, True, False),
    ("et", {"num_layers": 2, "vector_cutoff": True}, False, True),
    ("et", {"num_layers": 2, "vector_cutoff": True}, True, True),
    ("visnet", {}, False, False),
    ("visnet", {"vector_cutoff": True}, False, True),
    ("tensornet", {}, False, True),
])
def test_features_at_the_cutoff(kind, config, dense, continuous):
    featurizer = _with_trained_biases(kind, config)
    f = DenseETFeaturizer(featurizer) if dense else featurizer
    wide, narrow = _across_the_cutoff(f, 1e-3), _across_the_cutoff(f, 1e-6)
    if continuous:
        assert narrow < 1e-5 and narrow < wide / 100  # the jump vanishes with the gap
    else:
        assert narrow > 1e-3 and narrow > wide / 10  # a step: the same jump however close


def test_visnet_vector_cutoff_changes_no_weight_and_scripts():
    masked = _with_trained_biases("visnet", {})
    smooth = make_featurizer("visnet", Z, {"vector_cutoff": True}, seed=None).double()
    smooth.load_state_dict(masked.state_dict())  # strict: the same parameters
    pos = torch.randn(2, len(Z), 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.05
    assert torch.cdist(pos[0], pos[0]).max() * 10 < CUTOFF_ANGSTROM  # every pair inside: the cutoff weight < 1 only
    scripted = torch.jit.script(smooth)
    torch.testing.assert_close(scripted(pos), smooth(pos))
    assert not torch.allclose(smooth(pos), masked(pos))  # the cutoff weight acts on the vector messages inside too
