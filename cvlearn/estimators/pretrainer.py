"""Denoising pre-training of a featurizer backbone: predict the Gaussian noise added to the atom positions.

Why denoising: a GNN that can point from a perturbed geometry back to a plausible one has learnt local
chemistry (bond lengths, angles, contacts) from unlabelled structures alone, the objective of geom2vec's and
torchmd-net's pre-trained checkpoints. Each structure gets ``ε·σ`` added to its Å coordinates with
``ε ~ N(0, 1)`` per atom and component; an equivariant head reads the backbone's per-atom vector features and
predicts ``ε``; the loss is the MSE (predicting zero scores 1.0).

``σ`` (``noise_sigma_angstrom``): 0.05 Å for equilibrium (energy-minimised) sets such as PCQM4Mv2; 0.2 Å for
non-equilibrium sets (MD frames, xxMD) whose own thermal spread is already of the order of 0.05 Å, following
Table 5 of the geom2vec paper (Pengmei, Lorpaiboon, Guo, Weare, Dinner, 2024). The project's MD corpus is such a
non-equilibrium set.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from cvlearn.structures.records import Structure, bounded_batches, collate
from cvlearn.nn.featurizers.molecules import MoleculeBackbone
from cvlearn.estimators.trainer import load_run_state, save_run_state

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cvlearn.DenoisingPretrainer.checkpoint/1"
SIGMA_EQUILIBRIUM_ANGSTROM = 0.05
SIGMA_NON_EQUILIBRIUM_ANGSTROM = 0.2


class EquivariantNoiseHead(torch.nn.Module):
    """``(x [N, F], vec [N, 3, F]) -> [N, 3]``: one 3-vector per atom, rotation-equivariant by construction.

    A gated equivariant read-out: the vector channels are mixed linearly (acting on the channel axis only, so
    rotations commute with it), each mixed channel is scaled by a gate computed from invariants (the scalar
    features and the mixed channels' norms), and the gated channels are summed with learnt weights.
    """

    def __init__(self, hidden_channels: int):
        super().__init__()
        f = int(hidden_channels)
        self.vec_mix = torch.nn.Linear(f, f, bias=False)
        self.gate = torch.nn.Sequential(torch.nn.Linear(2 * f, f), torch.nn.SiLU(), torch.nn.Linear(f, f))
        self.out = torch.nn.Linear(f, 1, bias=False)

    def forward(self, x: Tensor, vec: Tensor) -> Tensor:
        v = self.vec_mix(vec)  # [N, 3, F]
        norms = torch.sqrt((v * v).sum(dim=1) + 1e-8)  # [N, F], invariant
        g = self.gate(torch.cat([x, norms], dim=-1))  # [N, F], invariant
        return self.out(v * g.unsqueeze(1)).squeeze(-1)  # [N, 3]


def _check(name: str, value, low, integer: bool = False):
    ok = (not isinstance(value, bool)) and (isinstance(value, int) if integer else isinstance(value, (int, float)))
    if not ok or not value >= low:
        raise ValueError(f"{name}: expected {'an integer' if integer else 'a number'} >= {low}, found {value!r}")


class DenoisingPretrainer:
    """Estimator: denoising pre-training of a ``MoleculeBackbone`` (``et``, ``visnet`` or ``tensornet``).

    Start from a fresh ``kind`` + ``config`` or from ``initial_checkpoint`` (a cvlearn checkpoint describes its
    own architecture; a geom2vec / torchmd-net state dict needs ``kind`` and ``config``). Adam, cosine learning
    rate over ``epochs`` (to 5 %), batches of at most ``max_atoms`` atoms. ``fit`` keeps a per-epoch history
    (``train_loss``, ``val_loss``, ``lr``, ``seconds``, ``structures_per_s``); validation noise is drawn from a
    fixed seed, so validation losses of different epochs compare like with like.
    """

    def __init__(self, kind: str = "et", config=None, *, initial_checkpoint: str | Path | None = None,
                 noise_sigma_angstrom: float = SIGMA_EQUILIBRIUM_ANGSTROM, learning_rate: float = 5e-4,
                 epochs: int = 10, max_atoms: int = 2048, seed: int = 0, weight_decay: float = 0.0,
                 grad_clip: float = 10.0, device: str = "cpu", progress: bool = True):
        _check("epochs", epochs, 1, integer=True)
        _check("max_atoms", max_atoms, 1, integer=True)
        _check("seed", seed, 0, integer=True)
        _check("weight_decay", weight_decay, 0.0)
        if not (isinstance(noise_sigma_angstrom, (int, float)) and noise_sigma_angstrom > 0):
            raise ValueError(f"noise_sigma_angstrom: expected a positive number, found {noise_sigma_angstrom!r}")
        if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
            raise ValueError(f"learning_rate: expected a positive number, found {learning_rate!r}")
        if not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
            raise ValueError(f"grad_clip: expected a positive number, found {grad_clip!r}")
        self.initial_checkpoint = None if initial_checkpoint is None else str(initial_checkpoint)
        if initial_checkpoint is not None and config is None:
            self.backbone = MoleculeBackbone.from_checkpoint(initial_checkpoint)
        else:
            self.backbone = MoleculeBackbone(kind, config, seed=seed)
            if initial_checkpoint is not None:
                from cvlearn.nn.featurizers.checkpoints import load_featurizer_weights

                load_featurizer_weights(self.backbone.featurizer, initial_checkpoint)
        self.kind = self.backbone.kind
        self.head = _seeded_head(self.backbone.hidden_channels, seed)
        self.noise_sigma_angstrom = float(noise_sigma_angstrom)
        self.learning_rate = float(learning_rate)
        self.epochs = epochs
        self.max_atoms = max_atoms
        self.seed = seed
        self.weight_decay = float(weight_decay)
        self.grad_clip = float(grad_clip)
        self.device = torch.device(device)
        self.progress = progress
        self.history: list[dict] = []
        self.n_train = self.n_val = 0

    # -- loss -------------------------------------------------------------------------------------------------
    def _loss(self, structures: list[Structure], generator: torch.Generator) -> Tensor:
        batch = collate(structures)
        eps = torch.randn(batch.pos.shape, generator=generator)
        pos = (batch.pos + self.noise_sigma_angstrom * eps).to(self.device)
        x, vec = self.backbone(batch.z.to(self.device), pos, batch.batch.to(self.device))
        pred = self.head(x, vec)
        return torch.nn.functional.mse_loss(pred, eps.to(self.device))

    @torch.no_grad()
    def score(self, structures: Sequence[Structure]) -> float:
        """Mean denoising loss over ``structures`` (noise from a fixed seed; atom-weighted, 1.0 = predicting 0)."""
        structures = _checked(structures, "structures")
        generator = torch.Generator().manual_seed(self.seed + 1)
        self.backbone.eval(), self.head.eval()
        total = atoms = 0
        for group in bounded_batches(structures, self.max_atoms):
            n = sum(s.n_atoms for s in group)
            total += float(self._loss(group, generator)) * n
            atoms += n
        return total / atoms

    # -- training ---------------------------------------------------------------------------------------------
    def _run_config(self) -> dict:
        return {"kind": self.kind, "config": self.backbone.config.as_dict(), "sigma": self.noise_sigma_angstrom,
                "learning_rate": self.learning_rate, "max_atoms": self.max_atoms, "seed": self.seed,
                "weight_decay": self.weight_decay, "grad_clip": self.grad_clip, "epochs": self.epochs,
                "n_train": self.n_train, "n_val": self.n_val, "initial_checkpoint": self.initial_checkpoint}

    def fit(self, structures_train: Sequence[Structure], structures_val: Sequence[Structure], *,
            checkpoint_path: str | Path | None = None, until_epoch: int | None = None) -> "DenoisingPretrainer":
        """Train for ``epochs``; with ``checkpoint_path`` the full state (weights, optimizer, scheduler, random
        streams, history) is saved atomically after every epoch, and a run whose checkpoint exists resumes after
        its last completed epoch (same data and settings, else a ValueError says what differs).

        ``until_epoch``: stop this call after that many epochs in all (the schedule still spans ``epochs``), so a
        long run can be done in slices on a shared machine, each slice resuming from the checkpoint."""
        train = _checked(structures_train, "structures_train")
        val = _checked(structures_val, "structures_val")
        self.n_train, self.n_val = len(train), len(val)
        self.backbone.to(self.device).train()
        self.head.to(self.device).train()
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs,
                                                               eta_min=0.05 * self.learning_rate)
        shuffle = torch.Generator().manual_seed(self.seed)
        noise = torch.Generator().manual_seed(self.seed + 2)
        self.history, first_epoch = [], 0
        config = self._run_config()
        if checkpoint_path is not None and Path(checkpoint_path).is_file():
            ckpt = self._load_checkpoint(Path(checkpoint_path), config)
            self.backbone.load_state_dict(ckpt["backbone"])
            self.head.load_state_dict(ckpt["head"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            shuffle.set_state(ckpt["shuffle_rng"])
            noise.set_state(ckpt["noise_rng"])
            self.history, first_epoch = list(ckpt["history"]), ckpt["epoch"] + 1
            logger.info("resuming from %s after epoch %d", checkpoint_path, ckpt["epoch"])
        n_atoms = sum(s.n_atoms for s in train)
        logger.info("denoising %s: %d train / %d validation structures (%d train atoms), sigma %.3g A, "
                    "max %d atoms per batch, epochs %d..%d", self.kind, len(train), len(val), n_atoms,
                    self.noise_sigma_angstrom, self.max_atoms, first_epoch, self.epochs - 1)
        last = self.epochs if until_epoch is None else min(self.epochs, int(until_epoch))
        for epoch in range(first_epoch, last):
            t0 = time.perf_counter()
            self.backbone.train(), self.head.train()
            order = torch.randperm(len(train), generator=shuffle).tolist()
            total = 0.0
            bar = tqdm(total=len(train), desc=f"denoise epoch {epoch}", unit="struct", disable=not self.progress,
                       leave=False, mininterval=2.0)
            for group in bounded_batches((train[i] for i in order), self.max_atoms):
                loss = self._loss(group, noise)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"denoising loss became {float(loss)} in epoch {epoch}; try a lower "
                                             f"learning_rate (now {self.learning_rate})")
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                optimizer.step()
                value = loss.item()
                total += value * sum(s.n_atoms for s in group)
                bar.update(len(group))
                bar.set_postfix(loss=f"{value:.4f}")
            bar.close()
            train_seconds = time.perf_counter() - t0
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            val_loss = self.score(val)
            row = {"epoch": epoch, "train_loss": total / n_atoms, "val_loss": val_loss, "lr": lr,
                   "seconds": time.perf_counter() - t0, "structures_per_s": len(train) / train_seconds}
            self.history.append(row)
            logger.info("epoch %d: train loss %.5f, validation loss %.5f, %.1f s (%.1f structures/s)", epoch,
                        row["train_loss"], val_loss, row["seconds"], row["structures_per_s"])
            if checkpoint_path is not None:
                self._save_checkpoint(Path(checkpoint_path), config, epoch, optimizer, scheduler, shuffle, noise)
        self.backbone.eval(), self.head.eval()
        return self

    def _save_checkpoint(self, path: Path, config: dict, epoch: int, optimizer, scheduler, shuffle, noise) -> None:
        state = {"format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch,
                 "backbone": self.backbone.state_dict(), "head": self.head.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "shuffle_rng": shuffle.get_state(), "noise_rng": noise.get_state(), "history": self.history}
        save_run_state(path, state)

    def _load_checkpoint(self, path: Path, config: dict) -> dict:
        return load_run_state(path, fmt=CHECKPOINT_FORMAT, config=config, device=self.device, what="pre-training")

    # -- results ----------------------------------------------------------------------------------------------
    def fetch_model(self) -> MoleculeBackbone:
        """An independent copy of the pre-trained backbone (the denoising head is not part of it)."""
        return copy.deepcopy(self.backbone).eval()

    def save_backbone(self, path: str | Path, **metadata) -> None:
        """Write the backbone as a self-describing cvlearn featurizer checkpoint (head dropped) with the
        pre-training settings and loss history in its metadata; every CV featurizer of this kind loads it."""
        info = {"objective": "denoising", "noise_sigma_angstrom": self.noise_sigma_angstrom,
                "learning_rate": self.learning_rate, "epochs": len(self.history), "max_atoms": self.max_atoms,
                "seed": self.seed, "n_train": self.n_train, "n_val": self.n_val,
                "initial_checkpoint": self.initial_checkpoint,
                "train_loss": [float(r["train_loss"]) for r in self.history],
                "val_loss": [float(r["val_loss"]) for r in self.history]}
        self.backbone.save(path, pretraining=info, **metadata)


def _seeded_head(hidden_channels: int, seed: int) -> EquivariantNoiseHead:
    with torch.random.fork_rng():
        torch.manual_seed(seed + 1)
        return EquivariantNoiseHead(hidden_channels)


def _checked(structures: Sequence[Structure], name: str) -> list[Structure]:
    structures = list(structures)
    if not structures:
        raise ValueError(f"{name}: expected at least one Structure, found none")
    bad = next((i for i, s in enumerate(structures) if not isinstance(s, Structure)), None)
    if bad is not None:
        raise TypeError(f"{name}[{bad}]: expected a Structure, found {type(structures[bad]).__name__}")
    return structures


def split_structures(structures: Sequence[Structure], validation_fraction: float, seed: int = 0
                     ) -> tuple[list[Structure], list[Structure]]:
    """Random split for sets of independent structures (for MD frames, split by trajectory instead)."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction: expected a number in (0, 1), found {validation_fraction!r}")
    structures = list(structures)
    order = np.random.default_rng(seed).permutation(len(structures))
    n_val = max(1, int(math.floor(validation_fraction * len(structures))))
    return [structures[i] for i in order[n_val:]], [structures[i] for i in order[:n_val]]
