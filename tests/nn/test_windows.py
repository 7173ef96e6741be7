"""Sliding-window tokens: windows hold the right residues, padding changes nothing, shapes match the molecule context."""

import numpy as np
import pytest
import torch

from cvlearn.nn.featurizers import make_featurizer
from cvlearn.data.selection import atomic_numbers, select_atoms
from cvlearn.data.selection import residue_index_of_atoms
from cvlearn.nn.windows import WindowTokens, make_token_embedder, window_atoms

TINY = {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "num_heads": 4}


@pytest.fixture(scope="module")
def wlall():
    from systems import pentapeptide_wlall

    return pentapeptide_wlall.build(minimize=False)


def test_selection_and_elements_from_topology(ala2):
    heavy = select_atoms(ala2.topology)
    assert heavy.tolist() == [a.index for a in ala2.topology.atoms() if a.element.symbol != "H"]
    assert atomic_numbers(ala2.topology, heavy) == [a.element.atomic_number for a in ala2.topology.atoms()
                                                    if a.element.symbol != "H"]
    assert len(select_atoms(ala2.topology, "backbone")) > 0
    with pytest.raises(ValueError, match="found none"):
        select_atoms(ala2.topology, "resname TRP")
    with pytest.raises(ValueError, match="not a valid"):
        select_atoms(ala2.topology, "resname ((")


def test_wlall_windows_count_and_atoms(wlall):
    heavy = select_atoms(wlall.topology)
    res = residue_index_of_atoms(wlall.topology, heavy)
    windows = window_atoms(res, half_width=1)
    names = [r.name for r in wlall.topology.residues()]
    assert names == ["ACE", "TRP", "LEU", "ALA", "LEU", "LEU", "NME"] and len(windows) == 7
    res = np.asarray(res)
    for t, (idx, centre) in enumerate(windows):
        assert sorted(set(res[idx])) == list(range(max(0, t - 1), min(6, t + 1) + 1))
        assert (res[idx][centre] == t).all() and centre.sum() == (res == t).sum()
    trp = windows[1]
    assert centre_count(trp) == 14 and len(trp[0]) == 3 + 14 + 8  # ACE + TRP + LEU heavy atoms


def centre_count(window):
    return int(window[1].sum())


@pytest.mark.parametrize("kind", ["et", "visnet", "tensornet"])
def test_window_tokens_equal_each_window_alone(kind, wlall):
    """Padding with far dummies is exact: each token equals the featurizer run on its unpadded window."""
    heavy = select_atoms(wlall.topology)
    z = atomic_numbers(wlall.topology, heavy)
    cfg = {k: v for k, v in TINY.items() if kind != "tensornet" or k != "num_heads"}
    featurizer = make_featurizer(kind, z, cfg, seed=0).double()
    tokens = make_token_embedder(featurizer, wlall.topology, heavy, context="window", half_width=1)
    assert isinstance(tokens, WindowTokens) and tokens.n_padded > 0
    # the selection as a whole is kept (what an export records), outside the state dict
    assert tokens.atomic_numbers.tolist() == z and "atomic_numbers" not in tokens.state_dict()
    assert tokens.residue_of_atom.tolist() == residue_index_of_atoms(wlall.topology, heavy)
    rng = np.random.default_rng(1)
    pos = torch.tensor(wlall.positions_nm[heavy][None] + 0.02 * rng.normal(size=(2, len(heavy), 3)))
    x, vec = tokens.forward_with_vectors(pos)
    assert x.shape == (2, 7, 16) and vec.shape == (2, 7, 3, 16)
    res = np.asarray(residue_index_of_atoms(wlall.topology, heavy))
    for t, (idx, centre) in enumerate(window_atoms(res, 1)):
        alone = featurizer.resized([z[i] for i in idx])
        xa, va = alone.forward_with_vectors(pos[:, idx])
        assert torch.allclose(x[:, t], xa[:, centre].sum(1), atol=1e-9)
        assert torch.allclose(vec[:, t], va[:, centre].sum(1), atol=1e-9)


def test_molecule_context_and_script(wlall):
    heavy = select_atoms(wlall.topology)
    z = atomic_numbers(wlall.topology, heavy)
    featurizer = make_featurizer("visnet", z, TINY, seed=0)
    pos = torch.tensor(wlall.positions_nm[heavy][None], dtype=torch.float32).repeat(2, 1, 1)
    molecule = make_token_embedder(featurizer, wlall.topology, heavy, context="molecule", reduce="mean")
    x, vec = molecule.forward_with_vectors(pos)
    assert x.shape == (2, 7, 16) and vec.shape == (2, 7, 3, 16)
    window = make_token_embedder(featurizer, wlall.topology, heavy, context="window", half_width=2)
    assert torch.equal(torch.jit.script(window)(pos), window(pos))
    with pytest.raises(ValueError, match="context"):
        make_token_embedder(featurizer, wlall.topology, heavy, context="chain")
    with pytest.raises(ValueError, match="half_width"):
        WindowTokens(featurizer, residue_index_of_atoms(wlall.topology, heavy), half_width=-1)


@pytest.mark.parametrize("kind", ["visnet", "et"])
def test_bounded_calls_equal_one_call(wlall, kind):
    """Slicing a batch of graphs into bounded GNN calls, and skipping unread vector work, change no number."""
    heavy = select_atoms(wlall.topology)
    featurizer = make_featurizer(kind, atomic_numbers(wlall.topology, heavy), TINY, seed=0).double().eval()
    pos = torch.tensor(wlall.positions_nm[heavy], dtype=torch.float64).unsqueeze(0).repeat(3, 1, 1)
    pos = pos + 0.01 * torch.randn(pos.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for context in ("window", "molecule"):
        tokens = make_token_embedder(featurizer, wlall.topology, heavy, context=context, half_width=1)
        inner = tokens.featurizer
        with torch.no_grad():
            inner.max_pairs_per_call = 10**9  # everything in one call
            x1, v1 = tokens.forward_with_vectors(pos)
            inner.max_pairs_per_call = 1  # one graph per call
            x2, v2 = tokens.forward_with_vectors(pos)
            scalars = tokens(pos)  # the scalars-only path (ViSNet skips its last vector update)
        assert torch.allclose(x1, x2, atol=1e-12) and torch.allclose(v1, v2, atol=1e-12)
        assert torch.allclose(scalars, x1, atol=1e-12)
