"""``cvlearn finetune``: fine-tune a (pre-trained) backbone on energies and forces and export it as an OpenMM potential.

    cvlearn finetune --config finetune.yaml

Data: an xxMD-layout root (directory or zip) + molecule + split names, or extxyz files. Writes into ``out``:
``model.pt`` (EnergyModel checkpoint, Å/eV), ``potential.pt`` (TorchScript for OpenMM, nm → kJ/mol, first
molecule of the test set), ``metrics.json`` (validation/test MAEs, NVE drift), ``learning_curve.png`` and
``train_state.pt`` (resume state: a killed run picks up where it stopped).

Data-parallel over processes or GPUs with ``torchrun`` (each rank takes its slice of every global batch; the result
is that of one process, see :mod:`cvlearn.estimators.finetuner`)::

    torchrun --nproc_per_node 4 --no-python cvlearn finetune --config finetune.yaml

Every rank reads the data and trains; rank 0 alone evaluates, exports, runs the NVE check and writes every output;
the other ranks return ``{}``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from cvlearn.config import check_ranges
from cvlearn.distributed import check_device
from cvlearn.errors import ConfigError
from cvlearn.data.trajectories import check_distinct_paths

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything ``cvlearn finetune`` needs; unknown keys in the YAML/TOML file are rejected."""

    out: str = "runs/finetune"
    xxmd_root: Optional[str] = None  # directory or .zip in xxMD layout (xxMD-DFT/<molecule>/<molecule>_<split>.xyz)
    molecule: str = "mal"
    train_split: str = "train"
    val_split: Optional[str] = "val"  # None: random validation_fraction of the training split
    test_split: Optional[str] = "test"
    train_files: tuple = ()  # extxyz files instead of xxmd_root
    val_files: tuple = ()
    test_files: tuple = ()
    validation_fraction: float = 0.1
    n_train: Optional[int] = None  # use this many training structures (random subset, seed), None = all
    kind: str = "et"
    architecture: Optional[dict] = None  # fields of ETConfig / ViSNetConfig / TensorNetConfig; None = defaults
    pretrained: Optional[str] = None  # cvlearn backbone checkpoint (e.g. cvlearn/checkpoints/et_denoise_small.pt)
    head_hidden: int = 64
    energy_weight: float = 1.0
    force_weight: float = 100.0
    learning_rate: float = 1e-3
    backbone_lr_scale: float = 1.0  # backbone learning rate relative to learning_rate (0 freezes it)
    max_epochs: int = 100
    patience: int = 10
    max_atoms: int = 512
    seed: int = 0
    threads: int = 1  # small graphs run fastest on one torch thread
    device: str = "cpu"  # cpu | cuda (under torchrun: each rank's own GPU) | cuda:N
    export_dtype: str = "float32"
    nve_steps: int = 400  # short NVE check of the exported potential (0 = skip)
    nve_timestep_fs: float = 0.5

    def __post_init__(self):
        try:
            check_device(self.device)  # "device: expected 'cpu', 'cuda' or 'cuda:N', found ..."
        except ConfigError as err:  # as ValueError "device: ...", so load_config prefixes the file
            raise ValueError(str(err)) from None
        check_ranges(self, positive=("learning_rate", "nve_timestep_fs"), fraction=("validation_fraction",),
                     at_least_one=("n_train", "head_hidden", "max_epochs", "patience", "max_atoms", "threads"),
                     non_negative=("energy_weight", "force_weight", "backbone_lr_scale", "nve_steps", "seed"))
        check_distinct_paths([*self.train_files, *self.val_files, *self.test_files],
                             "train_files/val_files/test_files")  # a file in two splits leaks test data


def _read(files, name: str) -> list:
    from cvlearn.structures.extxyz import read_extxyz

    return [s for path in files for s in read_extxyz(path)]


def load_data(config: FinetuneConfig) -> tuple[list, list, list]:
    """Training, validation and test structures as the config names them (test may be empty)."""
    from cvlearn.data.splits import random_split

    if config.xxmd_root and config.train_files:
        raise ValueError("finetune config: give xxmd_root or train_files, not both")
    if config.xxmd_root:
        from cvlearn.structures.xxmd import load_xxmd

        def split(name):
            return list(load_xxmd(config.xxmd_root, config.molecule, name)) if name else []

        train, val, test = split(config.train_split), split(config.val_split), split(config.test_split)
    elif config.train_files:
        train, val, test = (_read(config.train_files, "train_files"), _read(config.val_files, "val_files"),
                            _read(config.test_files, "test_files"))
    else:
        raise ValueError("finetune config: expected xxmd_root (+ molecule, splits) or train_files, found neither")
    if not val:
        train, val = random_split(train, [1.0 - config.validation_fraction, config.validation_fraction], config.seed)
    if config.n_train is not None:
        if not 1 <= config.n_train <= len(train):
            raise ValueError(f"finetune config: n_train must lie in [1, {len(train)}], found {config.n_train}")
        train = random_split(train, [1.0, 0.0], config.seed)[0][:config.n_train]
    return train, val, test


def plot_learning_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cvlearn.io import atomic_path

    epochs = [r["epoch"] + 1 for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.semilogy(epochs, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    a.semilogy(epochs, [r["val_loss"] for r in history], "s-", ms=3, label="validation")
    a.set_xlabel("epoch")
    a.set_ylabel("loss (eV², eV²/Å² weighted)")
    a.legend()
    b.plot(epochs, [r["val_force_mae_mev_per_angstrom"] for r in history], "o-", ms=3)
    b.set_xlabel("epoch")
    b.set_ylabel("validation force MAE (meV/Å)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def run_finetune(config: FinetuneConfig, *, progress: bool = True) -> dict:
    """Fine-tune, evaluate, export, check NVE drift; writes the files listed in the module doc, returns the metrics."""
    import torch

    from cvlearn import distributed
    from cvlearn.estimators.finetuner import ForceFieldFinetuner, evaluate_potential
    from cvlearn.io import write_json_atomic
    from cvlearn.export.potential import export_potential

    if config.export_dtype not in ("float32", "float64"):
        raise ValueError(f"finetune config: export_dtype must be 'float32' or 'float64', found {config.export_dtype!r}")
    torch.set_num_threads(int(config.threads))
    distributed.init_from_env()  # under torchrun: join the group (training is data-parallel)
    rank0 = distributed.is_rank0()
    progress = progress and rank0
    out = Path(config.out)
    train, val, test = load_data(config)
    logger.info("fine-tuning data: %d train, %d validation, %d test structures", len(train), len(val), len(test))
    backbone_args = ({"pretrained": config.pretrained} if config.pretrained
                     else {"kind": config.kind, "config": config.architecture})
    est = ForceFieldFinetuner(**backbone_args, head_hidden=config.head_hidden, energy_weight=config.energy_weight,
                              force_weight=config.force_weight, learning_rate=config.learning_rate,
                              backbone_lr_scale=config.backbone_lr_scale, max_epochs=config.max_epochs,
                              patience=config.patience, max_atoms=config.max_atoms, seed=config.seed,
                              device=distributed.rank_device(config.device), progress=progress)
    model = est.fit(train, val, checkpoint_path=out / "train_state.pt").fetch_model().cpu()  # rank 0 writes the state;
    # the outputs are CPU tensors whatever the training device: the exported potential runs anywhere
    n_ranks = distributed.world_size()
    distributed.destroy()  # every rank holds the same model: rank 0 alone evaluates, exports and writes
    if not rank0:
        return {}
    model.save(out / "model.pt", config=asdict(config))
    metrics = {"n_train": len(train), "n_val": len(val), "n_test": len(test), "processes": n_ranks,
               "best_epoch": est.best_epoch,
               "epochs_run": len(est.history), "validation": evaluate_potential(model, val, config.max_atoms)}
    if test:
        metrics["test"] = evaluate_potential(model, test, config.max_atoms)
    molecule = (test or val)[0]
    dtype = getattr(torch, config.export_dtype)
    export_potential(model, molecule.numbers, out / "potential.pt", dtype=dtype,
                     metadata={"source": str(out / "model.pt"), "molecule": molecule.source})
    if config.nve_steps > 0:
        from cvlearn.units import NM_PER_ANGSTROM
        from openmm_plugin.potential import run_potential_md

        nve = run_potential_md(out / "potential.pt", molecule.positions_angstrom * NM_PER_ANGSTROM,
                               n_steps=config.nve_steps, timestep_fs=config.nve_timestep_fs, seed=config.seed,
                               progress=progress)
        metrics["nve"] = nve.summary()
    plot_learning_curve(est.history, out / "learning_curve.png",
                        f"{config.molecule if config.xxmd_root else 'fine-tune'}: {len(train)} training structures, "
                        f"{'pre-trained' if config.pretrained else 'from scratch'}")
    write_json_atomic(out / "metrics.json", {**metrics, "history": est.history, "config": asdict(config)})
    return metrics
