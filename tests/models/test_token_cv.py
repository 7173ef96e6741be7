"""Frozen-featurizer protocol: heads trained on tokens embedded once equal the full chain they export as."""

import numpy as np
import torch

from cvlearn.models.cv import TokenCV, embed_frames, fit_head_scaler
from cvlearn.estimators import VAMPNet
from cvlearn.export import export_cv
from cvlearn.nn.featurizers import ETFeaturizer
from cvlearn.nn.heads import MLPHead
from cvlearn.nn.mixers import make_mixer
from cvlearn.data.selection import residue_index_of_atoms
from cvlearn.nn.tokens import ResidueTokens

TINY = {"hidden_channels": 16, "num_layers": 1, "num_rbf": 8, "num_heads": 4}


def _trajectories(ala2, heavy, n=3, frames=150):
    """Random walks around the built structure (a slow coordinate for VAMP to find)."""
    rng = np.random.default_rng(0)
    base = ala2.positions_nm[heavy]
    out = []
    for _ in range(n):
        drift = np.cumsum(rng.normal(scale=0.003, size=(frames, len(heavy), 3)), axis=0)
        out.append(torch.tensor(base + drift + rng.normal(scale=0.002, size=drift.shape), dtype=torch.float32))
    return out


def test_token_head_trains_and_exports_as_the_full_chain(ala2, ala2_heavy, tmp_path):
    from cvlearn.nn.featurizers.equivariant_transformer import ETConfig

    heavy, z = ala2_heavy
    featurizer = ETFeaturizer(z, ETConfig(**TINY), seed=0)
    tokens = ResidueTokens(residue_index_of_atoms(ala2.topology, heavy))
    trajs = _trajectories(ala2, heavy)
    embedded = embed_frames(featurizer, tokens, trajs, chunk_size=64)
    assert [tuple(e.shape) for e in embedded] == [(150, tokens.n_tokens, 16)] * 3
    torch.manual_seed(0)
    lobe = TokenCV(make_mixer("attention", 16, n_tokens=tokens.n_tokens, n_heads=4), MLPHead(16, 2, hidden=16))
    fit_head_scaler(lobe, torch.cat(embedded))
    model = VAMPNet(lobe, lagtime=2, max_epochs=3, patience=3, batch_size=64, progress=False).fit(
        embedded[:2], embedded[2:]).fetch_model()
    chain = model.with_lobe(model.lobe.on_featurizer(featurizer, tokens))
    assert not any(p.requires_grad for p in chain.lobe.featurizer.parameters())  # frozen
    with torch.no_grad():
        assert torch.allclose(chain(trajs[2]), model(embedded[2]), atol=1e-5)
    cv = export_cv(chain, tmp_path / "cv.pt", atom_indices=heavy, n_particles=ala2.topology.getNumAtoms(),
                   frame_interval_ps=1.0)
    pos = torch.tensor(ala2.positions_nm, dtype=torch.float32)
    pos[heavy] = trajs[2][7]
    with torch.no_grad():
        assert torch.allclose(cv(pos), model(embedded[2][7:8])[0], atol=1e-4)


def test_compare_models_frozen_protocol(ala2, ala2_heavy):
    """GNN rows on a frozen featurizer: embedded once for all kinds, scored on the held-out trajectory."""
    from cvlearn.estimators.baselines import CompareData, compare_models, markdown_table
    from cvlearn.nn.featurizers.equivariant_transformer import ETConfig

    heavy, z = ala2_heavy
    trajs = _trajectories(ala2, heavy, n=4, frames=100)
    data = CompareData({"positions": trajs[:2]}, {"positions": trajs[2:3]}, {"positions": trajs[3:]}, z,
                       residue_index_of_atoms(ala2.topology, heavy), lagtime=2, dim=2)
    featurizer = ETFeaturizer(z, ETConfig(**TINY), seed=0)
    rows = compare_models(data, kinds=("vampnet_distances", "gnn_sum", "gnn_attention"), seeds=(0, 1), head_hidden=16,
                          batch_size=64, max_epochs=2, patience=2, frozen_featurizer=featurizer)
    protocols = [r["protocol"] for r in rows]
    assert protocols == ["end to end", "frozen featurizer", "frozen featurizer"]
    assert rows[1]["embed_seconds"] == rows[2]["embed_seconds"]  # one embedding serves every mixer
    for r in rows:  # VAMP-2 of 2 outputs plus the constant lies in [1, 3]
        assert len(r["values"]) == 2 and all(1.0 - 1e-6 <= v <= 3.0 + 1e-6 for v in r["values"])
    assert "frozen featurizer" in markdown_table(rows)
