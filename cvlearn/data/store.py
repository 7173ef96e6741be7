"""Embedding store: featurize trajectories once with a frozen featurizer, train many heads on the stored tokens.

Layout of a store directory::

    manifest.json                      settings (featurizer, weights hash, selection, context) + per-trajectory chunks
    t0000/c00000.tokens.npy            [n_frames_in_chunk, n_tokens, F] float32   (written last: marks the chunk done)
    t0000/c00000.vectors.npy           [n, n_tokens, 3, F]  (only with vectors=True)
    t0000/c00000.time_ps.npy           [n] frame times in ps

Every file is written atomically, so after a kill a chunk is either complete or absent; a rerun with the same
settings skips finished chunks (it still reads their frames, which is cheap next to the GNN). A rerun with other
settings into the same directory raises instead of mixing embeddings. Readers memory-map chunks, so training
holds at most a chunk or two in memory.

Under ``torchrun`` (:mod:`cvlearn.distributed`) whole trajectories are shared out over the ranks (by size, the
same assignment on every rank); each rank writes its own chunks, and rank 0 writes the manifest, identical to a
single process's, once all are done. Finished chunks are recognised by their files, so a killed run resumes
with any number of ranks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import mdtraj
import numpy as np
import torch

from cvlearn import distributed
from cvlearn.compiling import CompiledOrEager
from cvlearn.data.trajectories import check_distinct_paths, iter_trajectory
from cvlearn.io import atomic_path, write_json_atomic
from cvlearn.progress import progress_bar

logger = logging.getLogger(__name__)

STORE_FORMAT = "cvlearn-embedding-store-v1"
MANIFEST = "manifest.json"


def weights_sha256(module: torch.nn.Module) -> str:
    """Hash of a module's state (names, shapes, values): identifies the featurizer weights, whatever file they came from.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    str
        Hex SHA-256 digest.
    """
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def featurizer_configs(module: torch.nn.Module) -> list[dict]:
    """The architecture of every featurizer inside ``module`` (class name and config fields).

    Weights alone do not identify the function: a weight-free option such as ``vector_cutoff`` changes the features
    of the same weights, so a store's identity is its weights *and* these.

    Parameters
    ----------
    module : torch.nn.Module
        An embedder (or a featurizer itself).

    Returns
    -------
    list of dict
        One ``{"class": ..., **config}`` per featurizer submodule, in module order; JSON-ready.
    """
    found = []
    for sub in module.modules():
        config = getattr(sub, "config", None)
        if hasattr(config, "as_dict"):
            found.append(json.loads(json.dumps({"class": type(sub).__name__, **config.as_dict()})))
    return found


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def inference_forward(embedder: torch.nn.Module, vectors: bool = False, compile: bool = False):
    """The embedder's batched call: tokens, or (tokens, vectors) with ``vectors=True``.

    ``compile=True`` wraps it in ``torch.compile`` (dynamic shapes: edge counts change every frame). On CPU that
    fuses the GNN's chains of element-wise edge operations, which dominate its time; it costs a one-off compile
    of ~1 min, so it pays for long trajectories only. If compiling fails (e.g. no C++ compiler), the eager call
    is used and a warning says why.

    Parameters
    ----------
    embedder : torch.nn.Module
        Positions nm ``[B, n_sel, 3]`` → tokens ``[B, T, F]`` (and vectors ``[B, T, 3, F]`` with ``vectors``).
    vectors : bool
        Use ``embedder.forward_with_vectors``.
    compile : bool
        Wrap in ``torch.compile``.

    Returns
    -------
    callable
        The batched call.
    """
    eager = embedder.forward_with_vectors if vectors else embedder.forward
    return CompiledOrEager(eager, "the embedder", dynamic=True) if compile else eager


def _chunks_of(source, top, atom_indices, chunk_frames: int, stride: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions nm [n, n_sel, 3] float32, times ps [n]) per chunk of a file, Trajectory or array."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"trajectory file {str(path)!r} does not exist")
        if top is None:
            raise ValueError(f"top: a topology file is required to read {str(path)!r}")
        for chunk in iter_trajectory(path, top, selection=atom_indices, chunk_frames=chunk_frames, stride=stride):
            yield chunk.xyz, np.asarray(chunk.time, dtype=np.float64)
        return
    if isinstance(source, mdtraj.Trajectory):
        xyz, time = source.xyz, np.asarray(source.time, dtype=np.float64)
        if atom_indices is not None:
            xyz = xyz[:, atom_indices]
    else:
        xyz = np.asarray(source, dtype=np.float32)
        if xyz.ndim != 3 or xyz.shape[2] != 3:
            raise ValueError(f"source array: expected positions [n_frames, n_atoms, 3] in nm, found {xyz.shape}")
        time = np.arange(xyz.shape[0], dtype=np.float64)  # frame index when the source carries no times
    xyz, time = xyz[::stride], time[::stride]
    for start in range(0, xyz.shape[0], chunk_frames):
        yield xyz[start:start + chunk_frames], time[start:start + chunk_frames]


def _describe(source) -> str:
    if isinstance(source, (str, Path)):
        return str(Path(source).resolve())
    if isinstance(source, mdtraj.Trajectory):
        return f"mdtraj.Trajectory({source.n_frames} frames, {source.n_atoms} atoms)"
    return f"array{tuple(np.shape(source))}"


@torch.no_grad()
def embed_trajectories(embedder: torch.nn.Module, sources: Sequence, out_dir: str | Path, *, top=None,
                       atom_indices: Sequence[int] | None = None, chunk_frames: int = 1000, batch_frames: int = 64,
                       stride: int = 1, vectors: bool = False, metadata: dict | None = None,
                       progress: bool = True, max_chunks: int | None = None, compile: bool = False,
                       shard: bool | None = None) -> Path:
    """Featurize every source into ``out_dir``; resumable. Returns the manifest path.

    ``embedder``: selected-atom positions nm ``[B, n_sel, 3]`` → tokens ``[B, T, F]`` (``MoleculeTokens`` /
    ``WindowTokens``; with ``vectors=True`` its ``forward_with_vectors`` is used). ``sources``: trajectory files
    (streamed and validated by ``iter_trajectory``; need ``top``), ``mdtraj.Trajectory`` objects, or position arrays
    ``[T, n_sel, 3]`` (nm). ``atom_indices`` selects atoms of files/Trajectories. ``metadata`` (featurizer kind,
    config, checkpoint hash, selection string, ...) is stored and must match on resume. ``max_chunks`` stops after
    that many newly computed chunks (for tests of resumption). ``compile``: see :func:`inference_forward`.
    Under a process group every rank calls this with the same arguments (see the module docstring).

    Parameters
    ----------
    embedder : torch.nn.Module
        Selected-atom positions nm ``[B, n_sel, 3]`` → tokens ``[B, n_tokens, F]``.
    sources : sequence
        Trajectory files, ``mdtraj.Trajectory`` objects or arrays ``[n_frames, n_sel, 3]`` (nm).
    out_dir : str or path
        Store directory (created; resumed when it holds a store with the same settings).
    top : str, path, mdtraj.Topology or None
        Topology of the trajectory files.
    atom_indices : sequence of int or None
        ``[n_sel]`` atoms of files/Trajectories to featurize; None for all.
    chunk_frames, batch_frames, stride : int
        Frames per stored chunk, frames per embedder call, keep every ``stride``-th frame.
    vectors : bool
        Also store vector features ``[n, n_tokens, 3, F]``.
    metadata : dict or None
        Stored with the settings; must match on resume.
    progress : bool
        Show progress bars.
    max_chunks : int or None
        Stop after this many newly computed chunks (per rank).
    compile : bool
        See :func:`inference_forward`.
    shard : bool or None
        Share the sources out over the ranks of the process group; None: whenever one of more than one rank is
        initialised.

    Returns
    -------
    Path
        The manifest (``out_dir / "manifest.json"``).
    """
    if isinstance(sources, (str, Path, np.ndarray, mdtraj.Trajectory)):
        raise TypeError("sources: expected a sequence of trajectories, found a single one (wrap it in a list)")
    for name, value in (("chunk_frames", chunk_frames), ("batch_frames", batch_frames), ("stride", stride)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, found {value!r}")
    check_distinct_paths([s for s in sources if isinstance(s, (str, Path))], "sources")
    out_dir = Path(out_dir)
    indices = None if atom_indices is None else np.asarray(atom_indices, dtype=np.int64)
    settings = {
        "format": STORE_FORMAT,
        "embedder": type(embedder).__name__,
        "weights_sha256": weights_sha256(embedder),
        "featurizers": featurizer_configs(embedder),
        "n_tokens": int(embedder.n_tokens),
        "hidden_channels": int(embedder.hidden_channels),
        "atom_indices": None if indices is None else indices.tolist(),
        "chunk_frames": int(chunk_frames),
        "stride": int(stride),
        "vectors": bool(vectors),
        "units": {"positions_in": "nm", "time": "ps"},
        "metadata": metadata or {},
    }
    manifest_path = out_dir / MANIFEST
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        differ = sorted(k for k in settings if old.get("settings", {}).get(k) != json.loads(json.dumps(settings[k])))
        if differ:
            raise ValueError(f"store {out_dir}: exists with other settings ({differ}); use a new directory or "
                             "delete it (embeddings of different featurizers must not be mixed)")
    shard = distributed.is_distributed() if shard is None else bool(shard) and distributed.is_distributed()
    mine = range(len(sources))
    if shard:
        mine = distributed.shard_indices(len(sources), distributed.rank(), distributed.world_size(),
                                         [_size_hint(s) for s in sources])
        if distributed.is_rank0() and not manifest_path.exists():  # claims the directory for these settings
            write_json_atomic(manifest_path, {"settings": settings, "trajectories": []})
        distributed.barrier()
    manifest = {"settings": settings, "trajectories": []}
    module = embedder.eval()
    forward = inference_forward(module, vectors, compile)
    device = next(module.parameters(), torch.empty(0)).device  # frames go where the embedder is, tokens come back
    computed, stopped = 0, False
    for ti in mine:
        source = sources[ti]
        traj_dir = out_dir / f"t{ti:04d}"
        entry = {"id": traj_dir.name, "source": _describe(source), "chunks": [], "n_frames": 0}
        manifest["trajectories"].append(entry)
        chunks = _chunks_of(source, top, indices, chunk_frames, stride)
        bar = progress_bar(desc=f"embed {traj_dir.name}", unit="frame", leave=False,
                           disable=not progress or not distributed.is_rank0())
        for ci, (xyz, time) in enumerate(chunks):
            tokens_path = traj_dir / f"c{ci:05d}.tokens.npy"
            if not tokens_path.exists():
                if max_chunks is not None and computed >= max_chunks:
                    stopped = True
                    break
                outs, vecs = [], []
                pos = torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32)).to(device)
                for start in range(0, pos.shape[0], batch_frames):
                    batch = pos[start:start + batch_frames]
                    if vectors:
                        x, v = forward(batch)
                        vecs.append(v.float().cpu().numpy())
                    else:
                        x = forward(batch)
                    outs.append(x.float().cpu().numpy())
                if vectors:
                    _save_npy(traj_dir / f"c{ci:05d}.vectors.npy", np.concatenate(vecs))
                _save_npy(traj_dir / f"c{ci:05d}.time_ps.npy", time)
                _save_npy(tokens_path, np.concatenate(outs))  # last: its presence marks the chunk complete
                computed += 1
            entry["chunks"].append({"file": f"{traj_dir.name}/{tokens_path.name}", "n_frames": int(len(time)),
                                    "time_ps": [float(time[0]), float(time[-1])]})
            entry["n_frames"] += int(len(time))
            bar.update(len(time))
            if not shard:
                write_json_atomic(manifest_path, manifest)
        bar.close()
        if stopped:
            break
    if shard:  # every rank's entries, back in source order; rank 0 writes
        gathered = distributed.all_gather_object((manifest["trajectories"], stopped))
        manifest["trajectories"] = sorted((e for part, _ in gathered for e in part), key=lambda e: int(e["id"][1:]))
        stopped = any(flag for _, flag in gathered)
    if not stopped:
        manifest["complete"] = True
    if distributed.is_rank0() or not shard:
        write_json_atomic(manifest_path, manifest)
    if shard:
        distributed.barrier()  # the manifest exists before any rank reads the store
    return manifest_path


def _size_hint(source) -> float:
    """Cost of featurizing a source, for balancing ranks: bytes of a file, frames of an array or Trajectory."""
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise FileNotFoundError(f"trajectory file {str(source)!r} does not exist")
        return float(Path(source).stat().st_size)
    return float(len(source))


class EmbeddingStore:
    """Read a store lazily: per-trajectory arrays (memory-mapped chunks) and frame-level access.

    Parameters
    ----------
    path : str or path
        A complete store directory written by :func:`embed_trajectories`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"embedding store {self.path}: no {MANIFEST}")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("settings", {}).get("format") != STORE_FORMAT:
            raise ValueError(f"embedding store {self.path}: expected format {STORE_FORMAT!r}, "
                             f"found {self.manifest.get('settings', {}).get('format')!r}")
        if not self.manifest.get("complete"):
            raise ValueError(f"embedding store {self.path}: incomplete (a run was interrupted); rerun "
                             "embed_trajectories with the same settings to finish it")
        self.settings = self.manifest["settings"]
        self._cache: OrderedDict = OrderedDict()

    @property
    def n_trajectories(self) -> int:
        return len(self.manifest["trajectories"])

    def n_frames(self, traj: int) -> int:
        return int(self.manifest["trajectories"][traj]["n_frames"])

    def chunks(self, traj: int, kind: str = "tokens") -> list[np.ndarray]:
        """Memory-mapped chunk arrays of trajectory ``traj`` (``kind``: tokens, vectors or time_ps)."""
        out = []
        for chunk in self.manifest["trajectories"][traj]["chunks"]:
            out.append(np.load(self.path / chunk["file"].replace(".tokens.npy", f".{kind}.npy"), mmap_mode="r"))
        return out

    def trajectory(self, traj: int, kind: str = "tokens") -> np.ndarray:
        """The whole trajectory's array (loads it into memory)."""
        return np.concatenate([np.asarray(c) for c in self.chunks(traj, kind)])

    def times_ps(self, traj: int) -> np.ndarray:
        return self.trajectory(traj, "time_ps")

    def frame(self, traj: int, index: int, kind: str = "tokens") -> np.ndarray:
        """One frame, touching only its chunk (kept in a 4-chunk LRU cache of memory maps)."""
        size = self.settings["chunk_frames"]
        ci, offset = divmod(int(index), size)
        key = (traj, ci, kind)
        if key not in self._cache:
            name = self.manifest["trajectories"][traj]["chunks"][ci]["file"].replace(".tokens.npy", f".{kind}.npy")
            self._cache[key] = np.load(self.path / name, mmap_mode="r")
            if len(self._cache) > 4:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return np.array(self._cache[key][offset])  # a copy: writable, and the memory map can close


class LaggedTokenPairs(torch.utils.data.Dataset):
    """Time-lagged pairs ``(x_t, x_{t+lagtime})`` of stored tokens, never crossing a trajectory; read lazily.

    Parameters
    ----------
    store : EmbeddingStore
    lagtime : int
        Lag in frames (of the stored, strided trajectory).
    trajectories : sequence of int or None
        Trajectory ids to use (e.g. the training ids of a split); None for all.

    Returns
    -------
    Dataset
        Items ``(tokens_t, tokens_t+lagtime)``, each ``[n_tokens, F]`` float32.
    """

    def __init__(self, store: EmbeddingStore, lagtime: int, trajectories: Sequence[int] | None = None):
        if isinstance(lagtime, bool) or int(lagtime) != lagtime or lagtime < 1:
            raise ValueError(f"lagtime: expected an integer >= 1 (frames), found {lagtime!r}")
        self.store = store
        self.lagtime = int(lagtime)
        trajs = range(store.n_trajectories) if trajectories is None else trajectories
        self.index = [(t, i) for t in trajs for i in range(max(0, store.n_frames(t) - self.lagtime))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int):
        t, i = self.index[k]
        return (torch.from_numpy(self.store.frame(t, i)), torch.from_numpy(self.store.frame(t, i + self.lagtime)))
