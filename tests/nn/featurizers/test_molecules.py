"""MoleculeBackbone: the CV featurizer's GNN on mixed-size batches, same numbers, same checkpoints."""

import numpy as np
import pytest
import torch

from cvlearn.structures import Structure, bounded_batches, collate
from cvlearn.nn.featurizers import make_featurizer
from cvlearn.nn.featurizers.molecules import MoleculeBackbone

KINDS = ["et", "visnet", "tensornet"]


def _molecule(n, seed):
    rng = np.random.default_rng(seed)
    numbers = rng.choice([1, 6, 7, 8], size=n)
    return Structure(numbers, rng.normal(scale=1.5, size=(n, 3)))


@pytest.mark.parametrize("kind", KINDS)
def test_mixed_batch_equals_fixed_topology_featurizer(kind, tmp_path):
    backbone = MoleculeBackbone(kind, seed=3).double()
    a, b = _molecule(7, 0), _molecule(11, 1)
    batch = collate([a, b], dtype=torch.float64)
    x, vec = backbone(batch.z, batch.pos, batch.batch)
    assert x.shape == (18, backbone.hidden_channels) and vec.shape == (18, 3, backbone.hidden_channels)
    path = tmp_path / "backbone.pt"
    backbone.save(path, note="test")
    for mol, rows in ((a, slice(0, 7)), (b, slice(7, 18))):
        featurizer = make_featurizer(kind, mol.numbers.tolist(), backbone.config, seed=None).double()
        from cvlearn.nn.featurizers import load_featurizer_weights
        load_featurizer_weights(featurizer, path)
        fx, fvec = featurizer.forward_with_vectors(torch.as_tensor(mol.positions_angstrom / 10.0).unsqueeze(0))
        torch.testing.assert_close(fx[0], x[rows], atol=1e-8, rtol=1e-6)
        torch.testing.assert_close(fvec[0], vec[rows], atol=1e-8, rtol=1e-6)
    reloaded = MoleculeBackbone.from_checkpoint(path).double()
    torch.testing.assert_close(reloaded(batch.z, batch.pos, batch.batch)[0], x)


def test_bounded_batches_respect_atom_limit():
    mols = [_molecule(n, i) for i, n in enumerate([5, 6, 7, 8, 3])]
    groups = list(bounded_batches(mols, max_atoms=12))
    assert [sum(m.n_atoms for m in g) for g in groups] == [11, 7, 11]
    with pytest.raises(ValueError, match="max_atoms=4"):
        list(bounded_batches(mols, max_atoms=4))


def test_structure_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"positions must be \[3, 3\]"):
        Structure(np.array([1, 1, 8]), np.zeros((2, 3)), source="water.xyz:0")
