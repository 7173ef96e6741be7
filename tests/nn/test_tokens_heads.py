import pytest
import torch

from cvlearn.nn.heads import MLPHead
from cvlearn.nn.mixers import SumPool
from cvlearn.data.selection import residue_index_of_atoms
from cvlearn.nn.tokens import ResidueTokens


def test_residue_index_follows_topology(ala2, ala2_heavy):
    heavy, _ = ala2_heavy
    index = residue_index_of_atoms(ala2.topology, heavy)
    residues = [a.residue.name for a in ala2.topology.atoms()]
    assert sorted(set(index)) == [0, 1, 2]
    assert [residues[i] for i in heavy if index[heavy.index(i)] == 1] == ["ALA"] * 5


def test_tokens_sum_and_mean():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    summed = ResidueTokens([0, 0, 1, 1])(x)
    assert torch.equal(summed[:, 0], x[:, 0] + x[:, 1])
    mean = ResidueTokens([0, 1, 1, 1], reduce="mean")(x)
    assert torch.allclose(mean[:, 1], x[:, 1:].mean(dim=1))
    scripted = torch.jit.script(ResidueTokens([0, 0, 1, 1]))
    assert torch.equal(scripted(x), summed)


def test_tokens_reject_gaps_and_bad_reduce():
    with pytest.raises(ValueError, match="contiguous"):
        ResidueTokens([0, 2])
    with pytest.raises(ValueError, match="reduce"):
        ResidueTokens([0, 1], reduce="max")


def test_head_and_mixer_script():
    head = MLPHead(8, 3, hidden=16)
    x = torch.randn(5, 4, 8)
    pooled = SumPool()(x)
    assert torch.equal(torch.jit.script(SumPool())(x), pooled)
    assert torch.allclose(torch.jit.script(head)(pooled), head(pooled))
    with pytest.raises(ValueError, match="n_outputs"):
        MLPHead(8, 0)
