"""``cvlearn pretrain``: denoising pre-training of a featurizer backbone on the project's MD corpus or structure files.

One command reproduces the shipped checkpoint (corpus generation included; both stages resume after a kill)::

    cvlearn pretrain --config cvlearn/checkpoints/et_denoise_small.yaml --make-corpus

Writes ``<out>/backbone.pt`` (self-describing featurizer checkpoint), ``<out>/history.json`` (per-epoch losses),
``<out>/loss_curve.png`` and ``<out>/train_state.pt`` (resume state); ``install_to`` copies the backbone elsewhere.

Data-parallel over processes or GPUs with ``torchrun`` (each rank takes its slice of every global batch; the result
is that of one process, see :mod:`cvlearn.estimators.pretrainer`)::

    torchrun --nproc_per_node 4 --no-python cvlearn pretrain --config pretrain.yaml

Rank 0 builds the corpus (``--make-corpus``; the other ranks wait for it, up to the process group's 30-minute
timeout, so build a large corpus in one plain process first) and writes every output; the other ranks return ``{}``.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from cvlearn.config import check_ranges
from cvlearn.distributed import check_device
from cvlearn.errors import ConfigError
from cvlearn.data.trajectories import check_distinct_paths
from openmm_plugin.stages.corpus import CorpusSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainConfig:
    """Everything ``cvlearn pretrain`` needs; unknown keys in the YAML/TOML file are rejected."""

    out: str = "runs/pretrain/et_denoise_small"
    corpus: str = "runs/pretrain/corpus"  # MD corpus directory (used when structure_files is empty)
    corpus_spec: CorpusSpec = field(default_factory=CorpusSpec)  # what --make-corpus simulates
    structure_files: tuple = ()  # extxyz (.xyz/.extxyz) or SDF (.sdf/.sdf.gz) files instead of the corpus
    validation_fraction: float = 0.1  # random split of structure_files (the corpus splits by trajectory)
    validation_every: int = 6  # corpus: every n-th trajectory is validation
    heavy_atoms_only: bool = True  # the CV featurizers see heavy atoms only
    stride: int = 1
    kind: str = "et"
    architecture: Optional[dict] = None  # fields of ETConfig / ViSNetConfig / TensorNetConfig; None = defaults
    initial_checkpoint: Optional[str] = None
    noise_sigma_angstrom: float = 0.2  # 0.2 A for MD frames (non-equilibrium), 0.05 A for minimised sets
    max_epochs: int = 10
    learning_rate: float = 1e-3
    max_atoms: int = 512
    seed: int = 0
    threads: int = 1  # small graphs run fastest on one torch thread
    device: str = "cpu"  # cpu | cuda (under torchrun: each rank's own GPU) | cuda:N
    install_to: Optional[str] = None  # copy the backbone checkpoint here as well

    def __post_init__(self):
        try:
            check_device(self.device)  # "device: expected 'cpu', 'cuda' or 'cuda:N', found ..."
        except ConfigError as err:  # as ValueError "device: ...", so load_config prefixes the file
            raise ValueError(str(err)) from None
        check_ranges(self, positive=("noise_sigma_angstrom", "learning_rate"), fraction=("validation_fraction",),
                     at_least_one=("validation_every", "stride", "max_epochs", "max_atoms", "threads"),
                     non_negative=("seed",))
        check_distinct_paths(self.structure_files, "structure_files")


def _read_structure_files(paths, heavy_atoms_only: bool):
    import numpy as np

    from cvlearn.structures.records import Structure

    out = []
    for path in paths:
        name = Path(path).name.lower()
        suffix = ".sdf" if name.endswith((".sdf", ".sdf.gz")) else Path(path).suffix.lower()
        if suffix in (".xyz", ".extxyz"):
            from cvlearn.structures.extxyz import read_extxyz

            records = read_extxyz(path, require_labels=False)
        elif suffix == ".sdf":
            from cvlearn.structures.sdf import read_sdf

            records = read_sdf(path)
        else:
            raise ValueError(f"structure_files: {path}: expected a .xyz, .extxyz, .sdf or .sdf.gz file, found {suffix!r}")
        for s in records:
            if heavy_atoms_only:
                keep = np.asarray(s.numbers) != 1
                s = Structure(np.asarray(s.numbers)[keep], np.asarray(s.positions_angstrom)[keep], source=s.source)
            out.append(Structure(s.numbers, s.positions_angstrom, source=s.source))
    return out


def _plot(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cvlearn.io import atomic_path

    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [r["epoch"] + 1 for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--", label="predict zero")
    ax.set_xlabel("epoch")
    ax.set_ylabel("denoising MSE (units of σ²)")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def run_pretrain(config: PretrainConfig, *, make_corpus: bool = False, progress: bool = True) -> dict:
    """Build the corpus if asked, pre-train, write backbone + history + loss curve; returns the summary dict."""
    import torch

    from cvlearn import distributed
    from cvlearn.io import atomic_path, write_json_atomic
    from cvlearn.data.splits import split_structures
    from cvlearn.estimators.pretrainer import DenoisingPretrainer
    from openmm_plugin.stages.corpus import build_corpus, corpus_structures, describe, read_manifest

    torch.set_num_threads(int(config.threads))
    distributed.init_from_env()  # under torchrun: join the group (training is data-parallel)
    rank0 = distributed.is_rank0()
    progress = progress and rank0
    out = Path(config.out)
    if config.structure_files:
        structures = _read_structure_files(config.structure_files, config.heavy_atoms_only)
        train, val = split_structures(structures, config.validation_fraction, seed=config.seed)
        source = f"{len(structures)} structures from {', '.join(map(str, config.structure_files))}"
        corpus_info = {"files": list(map(str, config.structure_files))}
    else:
        if make_corpus and rank0:
            spec = config.corpus_spec
            spec = CorpusSpec(**{**asdict(spec), "sequences": tuple(spec.sequences),
                                 "temperatures_k": tuple(float(t) for t in spec.temperatures_k)})
            build_corpus(config.corpus, spec, progress=progress)
        distributed.barrier()  # the corpus is complete before any rank reads it
        manifest = read_manifest(config.corpus)
        kw = dict(heavy_atoms_only=config.heavy_atoms_only, stride=config.stride,
                  validation_every=config.validation_every)
        train = list(corpus_structures(config.corpus, split="train", **kw))
        val = list(corpus_structures(config.corpus, split="validation", **kw))
        source = describe(manifest)
        corpus_info = {"description": source, "corpus_cpu_seconds": manifest["cpu_seconds"],
                       "corpus_n_frames": manifest["n_frames"]}
    logger.info("pre-training data: %s; %d train / %d validation structures", source, len(train), len(val))
    estimator = DenoisingPretrainer(
        config.kind, config.architecture, initial_checkpoint=config.initial_checkpoint,
        noise_sigma_angstrom=config.noise_sigma_angstrom, learning_rate=config.learning_rate,
        max_epochs=config.max_epochs,
        max_atoms=config.max_atoms, seed=config.seed, device=distributed.rank_device(config.device),
        progress=progress)
    t0 = time.perf_counter()
    estimator.fit(train, val, checkpoint_path=out / "train_state.pt")  # rank 0 writes the resume state
    fit_seconds = time.perf_counter() - t0
    n_ranks = distributed.world_size()
    distributed.destroy()  # every rank holds the same weights: rank 0 alone writes the outputs
    if not rank0:
        return {}
    train_seconds = sum(r["seconds"] for r in estimator.history)
    heavy = "heavy atoms only" if config.heavy_atoms_only else "all atoms"
    estimator.save_backbone(out / "backbone.pt", corpus=source, atoms=heavy, training_seconds=train_seconds,
                            torch_threads=int(config.threads), processes=n_ranks,
                            pretrain_config=_jsonable(asdict(config)))
    summary = {"config": _jsonable(asdict(config)), "data": corpus_info, "n_train": len(train), "n_val": len(val),
               "history": estimator.history, "training_seconds_all_epochs": train_seconds,
               "fit_seconds_this_call": fit_seconds, "processes": n_ranks,
               "final_train_loss": estimator.history[-1]["train_loss"],
               "final_val_loss": estimator.history[-1]["val_loss"]}
    write_json_atomic(out / "history.json", summary)
    _plot(estimator.history, out / "loss_curve.png",
          f"{config.kind} denoising, σ = {config.noise_sigma_angstrom:g} Å, {len(train)} structures")
    if config.install_to:
        with atomic_path(config.install_to) as tmp:
            shutil.copyfile(out / "backbone.pt", tmp)
        logger.info("installed %s", config.install_to)
    return summary


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
