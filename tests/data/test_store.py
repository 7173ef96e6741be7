"""Embedding store: resumable after an interruption, identical arrays, lazy reading, settings guard."""

import json

import mdtraj
import numpy as np
import pytest
import torch

from cvlearn.nn.featurizers import make_featurizer
from cvlearn.data.selection import atomic_numbers, select_atoms
from cvlearn.data.store import EmbeddingStore, LaggedTokenPairs, embed_trajectories
from cvlearn.nn.windows import make_token_embedder


@pytest.fixture(scope="module")
def ala2_files(ala2, tmp_path_factory):
    """Two short ala2 DCD trajectories (perturbed structures, 1 ps apart) and their PDB."""
    d = tmp_path_factory.mktemp("traj")
    top = mdtraj.Topology.from_openmm(ala2.topology)
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate((23, 9)):
        xyz = ala2.positions_nm[None] + 0.01 * rng.normal(size=(n, top.n_atoms, 3))
        traj = mdtraj.Trajectory(xyz.astype(np.float32), top, time=np.arange(n) * 1.0)
        traj.save_dcd(str(d / f"t{i}.dcd"))
        paths.append(d / f"t{i}.dcd")
    traj[:1].save_pdb(str(d / "top.pdb"))
    return paths, d / "top.pdb"


@pytest.fixture(scope="module")
def embedder(ala2):
    heavy = select_atoms(ala2.topology)
    f = make_featurizer("et", atomic_numbers(ala2.topology, heavy), {"hidden_channels": 16, "num_layers": 1,
                                                                     "num_rbf": 8, "num_heads": 4})
    return make_token_embedder(f, ala2.topology, heavy), heavy


def _run(embedder, files, out, **kw):
    (paths, top), (module, heavy) = files, embedder
    return embed_trajectories(module, paths, out, top=top, atom_indices=heavy, chunk_frames=5, batch_frames=4,
                              vectors=True, progress=False, metadata={"selection": "not element H"}, **kw)


def test_store_resumes_without_recomputing(embedder, ala2_files, tmp_path):
    reference = EmbeddingStore(_run(embedder, ala2_files, tmp_path / "ref").parent)
    out = tmp_path / "store"
    _run(embedder, ala2_files, out, max_chunks=3)  # "killed" after 3 chunks
    with pytest.raises(ValueError, match="incomplete"):
        EmbeddingStore(out)
    done = sorted(out.glob("t*/c*.tokens.npy"))
    assert len(done) == 3
    stamps = {p: p.stat().st_mtime_ns for p in done}
    for p in done:  # make any recomputation visible
        np.save(p, np.load(p))
        stamps[p] = p.stat().st_mtime_ns
    _run(embedder, ala2_files, out)
    assert all(p.stat().st_mtime_ns == stamps[p] for p in done)
    store = EmbeddingStore(out)
    assert store.n_trajectories == 2 and [store.n_frames(i) for i in range(2)] == [23, 9]
    assert len(list(out.glob("t0000/c*.tokens.npy"))) == 5
    for i in range(2):
        for kind in ("tokens", "vectors", "time_ps"):
            assert np.array_equal(store.trajectory(i, kind), reference.trajectory(i, kind))
    assert store.trajectory(0).shape == (23, 3, 16) and store.trajectory(0, "vectors").shape == (23, 3, 3, 16)
    assert np.allclose(store.times_ps(0), np.arange(23))
    assert not list(out.rglob(".*"))  # no temporary files left behind


def test_store_matches_direct_featurization_and_reads_lazily(embedder, ala2_files, tmp_path):
    module, heavy = embedder
    store = EmbeddingStore(_run(embedder, ala2_files, tmp_path / "s").parent)
    xyz = mdtraj.load(str(ala2_files[0][1]), top=str(ala2_files[1])).xyz[:, heavy]
    with torch.no_grad():
        direct = module(torch.from_numpy(xyz)).numpy()
    assert np.allclose(store.trajectory(1), direct, atol=1e-5)
    pairs = LaggedTokenPairs(store, lagtime=3)
    assert len(pairs) == (23 - 3) + (9 - 3)
    x0, x3 = pairs[0]
    assert torch.equal(x3, torch.from_numpy(store.trajectory(0)[3]))
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["settings"]["metadata"]["selection"] == "not element H"
    assert len(manifest["settings"]["weights_sha256"]) == 64


def test_store_refuses_other_settings(embedder, ala2_files, tmp_path, ala2):
    _run(embedder, ala2_files, tmp_path / "s")
    module, heavy = embedder
    other = make_token_embedder(make_featurizer("et", atomic_numbers(ala2.topology, heavy), {
        "hidden_channels": 16, "num_layers": 1, "num_rbf": 8, "num_heads": 4}, seed=9), ala2.topology, heavy)
    with pytest.raises(ValueError, match="other settings"):
        _run((other, heavy), ala2_files, tmp_path / "s")


def test_store_refuses_the_same_weights_as_another_function(embedder, ala2_files, tmp_path, ala2):
    """vector_cutoff changes the function, not the weights: the store's identity records each featurizer's config."""
    _run(embedder, ala2_files, tmp_path / "s")
    module, heavy = embedder
    f = module.featurizer
    smooth = make_featurizer("et", atomic_numbers(ala2.topology, heavy), {**f.config.as_dict(), "vector_cutoff": True},
                             seed=None)
    smooth.load_state_dict(f.state_dict())
    other = make_token_embedder(smooth, ala2.topology, heavy)
    from cvlearn.data.store import featurizer_configs, weights_sha256

    assert weights_sha256(other) == weights_sha256(module)
    assert [c["vector_cutoff"] for c in featurizer_configs(other)] == [True]
    with pytest.raises(ValueError, match=r"other settings \(\['featurizers'\]\)"):
        _run((other, heavy), ala2_files, tmp_path / "s")


def test_compiled_featurization_matches_eager(embedder, ala2_files, tmp_path, caplog):
    eager = EmbeddingStore(_run(embedder, ala2_files, tmp_path / "eager").parent)
    compiled = EmbeddingStore(_run(embedder, ala2_files, tmp_path / "compiled", compile=True).parent)
    for i in range(2):
        for kind in ("tokens", "vectors"):
            assert np.allclose(compiled.trajectory(i, kind), eager.trajectory(i, kind), atol=1e-5)
    assert "torch.compile of the embedder failed" not in caplog.text  # it really ran compiled
