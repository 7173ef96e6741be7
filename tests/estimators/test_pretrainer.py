"""Denoising pre-training: it learns, its head is equivariant, its backbone reloads into every featurizer,
it resumes exactly, and the shipped checkpoint fits the demo's featurizer."""

import json

import numpy as np
import pytest
import torch

from cvlearn.checkpoints import default_checkpoint
from cvlearn.structures import Structure
from cvlearn.nn.featurizers import ETConfig, featurizer_from_checkpoint, load_featurizer_weights, make_featurizer
from cvlearn.estimators.pretrainer import DenoisingPretrainer, EquivariantNoiseHead
from openmm_plugin.stages.corpus import CorpusSpec, build_corpus, corpus_structures

TINY = {
    "et": {"hidden_channels": 16, "num_layers": 1, "num_rbf": 8, "num_heads": 2},
    "visnet": {"hidden_channels": 16, "num_layers": 1, "num_rbf": 8},
    "tensornet": {"hidden_channels": 16, "num_layers": 1, "num_rbf": 8},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A real (tiny) MD corpus: ACE-A-NME and ACE-G-NME at 300 and 800 K, 5 ps each, 80 frames."""
    out = tmp_path_factory.mktemp("corpus")
    build_corpus(out, CorpusSpec(sequences=("A", "G"), temperatures_k=(300.0, 800.0), ps_per_run=5.0,
                                 frame_interval_ps=0.25), progress=False)
    return out


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return torch.as_tensor(q * np.sign(np.linalg.det(q)))  # proper rotation


def test_corpus_frames_are_angstrom_structures(corpus):
    manifest = json.loads((corpus / "corpus.json").read_text())
    assert manifest["n_frames"] == 80 and manifest["cpu_seconds"] > 0
    frames = list(corpus_structures(corpus))
    assert len(frames) == 80
    assert sorted(set(frames[0].numbers.tolist())) == [6, 7, 8]  # heavy atoms of ACE-A-NME
    assert frames[0].n_atoms == 10
    bonds = np.linalg.norm(np.diff(frames[0].positions_angstrom, axis=0), axis=1)
    assert 1.0 < bonds.min() < 1.6  # Å, not nm
    assert len(list(corpus_structures(corpus, heavy_atoms_only=False))) == 80
    train = list(corpus_structures(corpus, split="train", validation_every=2))
    val = list(corpus_structures(corpus, split="validation", validation_every=2))
    assert len(train) == len(val) == 40 and {s.source.split("#")[0] for s in train}.isdisjoint(
        {s.source.split("#")[0] for s in val})


def test_denoising_loss_decreases(corpus):
    train = list(corpus_structures(corpus, split="train", validation_every=2))
    val = list(corpus_structures(corpus, split="validation", validation_every=2))
    est = DenoisingPretrainer("et", TINY["et"], noise_sigma_angstrom=0.2, learning_rate=3e-3, max_epochs=12,
                              max_atoms=100, progress=False)
    before = est.score(train)
    est.fit(train, val)
    assert len(est.history) == 12
    assert est.score(train) < before - 0.02
    assert est.history[-1]["val_loss"] < est.history[0]["val_loss"]


def test_head_is_rotation_equivariant():
    torch.manual_seed(0)
    head = EquivariantNoiseHead(8).double()
    x, vec = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 3, 8, dtype=torch.float64)
    rot = _rotation(1)
    torch.testing.assert_close(head(x, torch.einsum("ij,njf->nif", rot, vec)), head(x, vec) @ rot.T)


@pytest.mark.parametrize("kind", ["et", "visnet", "tensornet"])
def test_backbone_plus_head_is_rotation_equivariant(kind, corpus):
    """The whole noise predictor turns with the molecule (ViSNet's l = 1 components included)."""
    s = next(iter(corpus_structures(corpus)))
    est = DenoisingPretrainer(kind, TINY[kind], progress=False)
    backbone, head = est.backbone.double(), est.head.double()
    pos = torch.as_tensor(s.positions_angstrom)
    z, batch = torch.as_tensor(s.numbers), torch.zeros(s.n_atoms, dtype=torch.long)
    rot = _rotation(2)
    out = head(*backbone(z, pos, batch))
    out_rot = head(*backbone(z, pos @ rot.T + 3.0, batch))
    torch.testing.assert_close(out_rot, out @ rot.T, atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("kind", ["et", "visnet", "tensornet"])
def test_saved_backbone_loads_strictly_into_every_featurizer(kind, corpus, tmp_path):
    frames = list(corpus_structures(corpus))
    est = DenoisingPretrainer(kind, TINY[kind], max_epochs=1, max_atoms=20, progress=False).fit(frames[:2], frames[2:3])
    path = tmp_path / f"{kind}.pt"
    est.save_backbone(path, corpus="test")
    meta = torch.load(path, weights_only=True)["metadata"]
    assert meta["pretraining"]["noise_sigma_angstrom"] == 0.05 and meta["corpus"] == "test"
    s = frames[0]
    model = est.fetch_model()
    x_ref, _ = model(torch.as_tensor(s.numbers), torch.as_tensor(s.positions_angstrom, dtype=torch.float32),
                     torch.zeros(s.n_atoms, dtype=torch.long))
    pos_nm = torch.as_tensor(s.positions_angstrom / 10.0, dtype=torch.float32).unsqueeze(0)
    f1 = make_featurizer(kind, s.numbers.tolist(), TINY[kind], seed=123)
    load_featurizer_weights(f1, path)
    f2 = featurizer_from_checkpoint(path, s.numbers.tolist())
    for f in (f1, f2):
        torch.testing.assert_close(f.eval()(pos_nm)[0], x_ref, atol=1e-5, rtol=1e-5)


def test_resume_after_a_stop_gives_the_same_state(corpus, tmp_path):
    frames = list(corpus_structures(corpus))
    train, val = frames[:24], frames[40:48]
    kw = dict(noise_sigma_angstrom=0.2, learning_rate=2e-3, max_epochs=3, max_atoms=60, progress=False)
    straight = DenoisingPretrainer("et", TINY["et"], **kw).fit(train, val)
    ckpt = tmp_path / "state.pt"
    DenoisingPretrainer("et", TINY["et"], **kw).fit(train, val, checkpoint_path=ckpt, until_epoch=1)
    resumed = DenoisingPretrainer("et", TINY["et"], **kw).fit(train, val, checkpoint_path=ckpt)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    for a, b in ((straight.backbone, resumed.backbone), (straight.head, resumed.head)):
        for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(v, w), k
    with pytest.raises(ValueError, match="different run.*sigma"):
        DenoisingPretrainer("et", TINY["et"], **{**kw, "noise_sigma_angstrom": 0.1}).fit(
            train, val, checkpoint_path=ckpt)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="noise_sigma_angstrom"):
        DenoisingPretrainer("et", TINY["et"], noise_sigma_angstrom=0.0)
    with pytest.raises(ValueError, match="validation"):
        DenoisingPretrainer("et", TINY["et"]).fit([Structure(np.array([6, 8]), np.eye(2, 3))], [])


def test_shipped_checkpoint_loads_into_the_alanine_dipeptide_featurizer():
    from systems import alanine_dipeptide

    molecule = alanine_dipeptide.build()
    heavy = alanine_dipeptide.heavy_atom_indices(molecule.topology)
    z = [a.element.atomic_number for i, a in enumerate(molecule.topology.atoms()) if i in set(heavy)]
    featurizer = make_featurizer("et", z, ETConfig())  # the demo's featurizer architecture
    load_featurizer_weights(featurizer, default_checkpoint())
    same = featurizer_from_checkpoint(default_checkpoint(), z)
    pos = torch.as_tensor(molecule.positions_nm[heavy], dtype=torch.float32).unsqueeze(0)
    x = featurizer.eval()(pos)
    assert x.shape == (1, 10, 64) and torch.isfinite(x).all()
    torch.testing.assert_close(same.eval()(pos), x)
    meta = torch.load(default_checkpoint(), weights_only=True)["metadata"]
    assert meta["pretraining"]["objective"] == "denoising" and meta["pretraining"]["val_loss"][-1] < 1.0
