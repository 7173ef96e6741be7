"""Embedding store under torchrun: 2 real gloo processes share the files and write the single-process store;
a killed run resumes with another number of ranks without recomputing finished chunks."""

import contextlib

import mdtraj
import numpy as np
import pytest
import torch

from cvlearn import distributed
from cvlearn.data.selection import atomic_numbers, select_atoms
from cvlearn.data.store import EmbeddingStore, _size_hint, embed_trajectories
from cvlearn.nn.featurizers import make_featurizer
from cvlearn.nn.windows import make_token_embedder

LENGTHS = (23, 9, 14)  # uneven files: 5, 2 and 3 chunks of 5 frames


@pytest.fixture(scope="module")
def files(ala2, tmp_path_factory):
    d = tmp_path_factory.mktemp("traj")
    top = mdtraj.Topology.from_openmm(ala2.topology)
    rng = np.random.default_rng(1)
    paths = []
    for i, n in enumerate(LENGTHS):
        xyz = ala2.positions_nm[None] + 0.01 * rng.normal(size=(n, top.n_atoms, 3))
        traj = mdtraj.Trajectory(xyz.astype(np.float32), top, time=np.arange(n) * 0.5)
        traj.save_dcd(str(d / f"t{i}.dcd"))
        paths.append(str(d / f"t{i}.dcd"))
    traj[:1].save_pdb(str(d / "top.pdb"))
    return paths, str(d / "top.pdb")


@pytest.fixture(scope="module")
def embedder(ala2):
    heavy = select_atoms(ala2.topology)
    f = make_featurizer("et", atomic_numbers(ala2.topology, heavy), {"hidden_channels": 16, "num_layers": 1,
                                                                     "num_rbf": 8, "num_heads": 4})
    return make_token_embedder(f, ala2.topology, heavy), [int(i) for i in heavy]


def _embed(embedder, files, out, **kw):
    (module, heavy), (paths, top) = embedder, files
    return embed_trajectories(module, paths, out, top=top, atom_indices=heavy, chunk_frames=5, batch_frames=4,
                              vectors=True, progress=False, metadata={"selection": "not element H"}, **kw)


def _worker(embedder, files, full_dir, killed_dir, resumed_dir):
    """Each rank: a full store, a store 'killed' after 1 new chunk per rank, and the finish of a 1-rank partial run."""
    _embed(embedder, files, full_dir)
    _embed(embedder, files, killed_dir, max_chunks=1)
    _embed(embedder, files, resumed_dir)
    n = distributed.world_size()
    return distributed.shard_indices(len(files[0]), distributed.rank(), n, [_size_hint(p) for p in files[0]])


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread, as in the spawned ranks: bitwise equality holds at equal thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _chunks(path):
    return {p.relative_to(path): p.stat().st_mtime_ns for p in sorted(path.glob("t*/c*.tokens.npy"))}


def _assert_same_store(path, reference):
    assert (path / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    a, b = EmbeddingStore(path), EmbeddingStore(reference)
    for i in range(len(LENGTHS)):
        for kind in ("tokens", "vectors", "time_ps"):
            assert np.array_equal(a.trajectory(i, kind), b.trajectory(i, kind))  # bitwise
    assert not list(path.rglob(".*"))  # no temporary files


@pytest.fixture(scope="module")
def runs(embedder, files, tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    reference = root / "single"
    with _one_thread():
        _embed(embedder, files, reference)
        _embed(embedder, files, root / "resumed", max_chunks=3)  # a 1-process run killed after 3 chunks
    before = _chunks(root / "resumed")
    shards = distributed.spawn(_worker, 2, embedder, files, str(root / "full"), str(root / "killed"),
                               str(root / "resumed"))
    return root, reference, shards, before


def test_two_ranks_write_the_single_process_store(runs):
    root, reference, shards, _ = runs
    assert shards == [[0], [1, 2]]  # by file size: the 23-frame file alone, the 9- and 14-frame ones together
    _assert_same_store(root / "full", reference)


def test_killed_two_rank_run_finishes_in_one_process(runs, embedder, files):
    root, reference, _, _ = runs
    killed = root / "killed"
    with pytest.raises(ValueError, match="incomplete"):
        EmbeddingStore(killed)
    done = _chunks(killed)
    assert sorted(str(p) for p in done) == ["t0000/c00000.tokens.npy", "t0001/c00000.tokens.npy"]  # one per rank
    with _one_thread():
        _embed(embedder, files, killed)  # resume with 1 rank
    assert all(_chunks(killed)[p] == t for p, t in done.items())  # finished chunks not recomputed
    _assert_same_store(killed, reference)


def test_killed_one_process_run_finishes_on_two_ranks(runs):
    root, reference, _, before = runs
    assert len(before) == 3
    after = _chunks(root / "resumed")
    assert all(after[p] == t for p, t in before.items()) and len(after) == sum(-(-n // 5) for n in LENGTHS)
    _assert_same_store(root / "resumed", reference)
