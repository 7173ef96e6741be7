"""ForceFieldFinetuner: train an :class:`~cvlearn.models.potential.EnergyModel` on DFT energies and forces, deeptime-style.

``ForceFieldFinetuner(pretrained="backbone.pt").fit(train, val).fetch_model()`` → an independent EnergyModel.
Loss per structure s with n_s atoms, then averaged over structures (so a big molecule does not outweigh a small one):

    L_s = energy_weight * ((E_pred - E) / n_s)^2  +  force_weight * mean_{i in s} |F_pred,i - F_i|^2 / 3

in eV and eV/Å. Adam (optionally a lower learning rate on the backbone), ReduceLROnPlateau on the validation loss,
early stopping that restores the best weights, batches bounded in atoms (``bounded_batches``), and a checkpoint
written atomically after every epoch from which a killed run resumes to the same state.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from cvlearn.structures.records import Structure, bounded_batches, collate
from cvlearn.nn.featurizers.molecules import MoleculeBackbone
from cvlearn.models.potential import EnergyModel, fit_atom_references
from cvlearn.estimators.trainer import load_run_state, save_run_state

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cvlearn.ForceFieldFinetuner.checkpoint/1"


def _checked_structures(structures: Sequence[Structure], name: str) -> list[Structure]:
    structures = list(structures)
    if not structures:
        raise ValueError(f"{name}: expected a non-empty list of labelled Structures, found none")
    for s in structures:
        if s.energy_ev is None or s.forces_ev_per_angstrom is None:
            raise ValueError(f"{name}: {s.source or 'a structure'} has no energy or forces; fine-tuning needs both")
    return structures


def structure_losses(model: EnergyModel, structures: list[Structure], energy_weight: float, force_weight: float,
                     dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, dict]:
    """Sum over the batch of the per-structure losses (see module doc) and the batch's error sums (float)."""
    g = collate(structures, dtype)
    z, pos, batch = g.z.to(device), g.pos.to(device), g.batch.to(device)
    energy, forces = model.energy_and_forces(z, pos, batch, g.n_graphs)
    n_atoms = torch.bincount(batch, minlength=g.n_graphs).to(torch.float64)
    de = energy - g.energy.to(device)  # float64
    df = forces - g.forces.to(device)
    force_se = torch.zeros(g.n_graphs, dtype=df.dtype, device=device).index_add(0, batch, (df ** 2).sum(1) / 3)
    per_structure = energy_weight * (de / n_atoms) ** 2 + force_weight * force_se.to(torch.float64) / n_atoms
    de = de.detach()
    sums = {"energy_abs": float(de.abs().sum()), "energy_abs_per_atom": float((de / n_atoms).abs().sum()),
            "force_abs": float(df.detach().abs().sum()), "n_force_components": int(df.numel())}
    return per_structure.sum(), sums


def evaluate_potential(model: EnergyModel, structures: Sequence[Structure], max_atoms: int = 2048) -> dict:
    """Energy MAE (meV, meV/atom) and force MAE (meV/Å, over components) of ``model`` on labelled ``structures``."""
    structures = _checked_structures(structures, "structures")
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    e_abs = e_abs_atom = f_abs = 0.0
    n_comp = 0
    try:
        for group in bounded_batches(structures, max_atoms):
            _, sums = structure_losses(model, group, 0.0, 0.0, dtype, device)
            e_abs += sums["energy_abs"]
            e_abs_atom += sums["energy_abs_per_atom"]
            f_abs += sums["force_abs"]
            n_comp += sums["n_force_components"]
    finally:
        model.train(was_training)
    n = len(structures)
    return {"energy_mae_mev": 1e3 * e_abs / n, "energy_mae_mev_per_atom": 1e3 * e_abs_atom / n,
            "force_mae_mev_per_angstrom": 1e3 * f_abs / n_comp, "n_structures": n}


class ForceFieldFinetuner:
    """Estimator: fine-tune a backbone plus an energy head on energies and forces.

    Backbone: ``backbone`` (a :class:`MoleculeBackbone`), or ``pretrained`` (a cvlearn backbone checkpoint, see
    ``MoleculeBackbone.save``), or a fresh ``kind``/``config``. ``backbone_lr_factor`` scales the backbone's
    learning rate (0 freezes it). ``history`` rows hold ``train_loss``, ``val_loss``, ``val_energy_mae_mev``,
    ``val_force_mae_mev_per_angstrom`` and ``lr``.
    """

    def __init__(self, *, backbone: MoleculeBackbone | None = None, pretrained: str | Path | None = None,
                 kind: str = "et", config=None, head_hidden: int = 64, energy_weight: float = 1.0,
                 force_weight: float = 100.0, learning_rate: float = 1e-3, backbone_lr_factor: float = 1.0,
                 max_epochs: int = 100, patience: int = 10, max_atoms: int = 512, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: str = "cpu", progress: bool = True,
                 checkpoint_path: str | Path | None = None):
        for name, value, low in (("max_epochs", max_epochs, 1), ("patience", patience, 1), ("max_atoms", max_atoms, 1),
                                 ("head_hidden", head_hidden, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, found {value!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, found {learning_rate!r}")
        if not backbone_lr_factor >= 0:
            raise ValueError(f"backbone_lr_factor: expected a number >= 0, found {backbone_lr_factor!r}")
        if not (energy_weight >= 0 and force_weight >= 0 and energy_weight + force_weight > 0):
            raise ValueError(f"energy_weight, force_weight: expected non-negative numbers, not both 0, found "
                             f"{energy_weight!r}, {force_weight!r}")
        if backbone is not None and pretrained is not None:
            raise ValueError("give backbone or pretrained, not both")
        if backbone is None:
            backbone = (MoleculeBackbone.from_checkpoint(pretrained) if pretrained is not None
                        else MoleculeBackbone(kind, config, seed=seed))
        self.pretrained = None if pretrained is None else str(pretrained)
        self.dtype = dtype
        self.device = torch.device(device)
        self.model = EnergyModel(backbone, head_hidden, seed=seed).to(dtype)
        self.energy_weight, self.force_weight = float(energy_weight), float(force_weight)
        self.learning_rate, self.backbone_lr_factor = float(learning_rate), float(backbone_lr_factor)
        self.max_epochs, self.patience, self.max_atoms, self.seed = max_epochs, patience, max_atoms, seed
        self.progress = progress
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.history: list[dict] = []
        self.best_epoch = -1
        self.best_val_loss = float("inf")
        self._fitted = False

    def _loss(self, structures: list[Structure], train: bool, optimizer=None, order=None) -> tuple[float, dict]:
        """Mean per-structure loss over ``structures`` (one optimiser step per bounded batch when ``train``)."""
        self.model.train(train)
        total = 0.0
        sums = {"energy_abs": 0.0, "energy_abs_per_atom": 0.0, "force_abs": 0.0, "n_force_components": 0}
        ordered = structures if order is None else [structures[i] for i in order]
        for group in bounded_batches(ordered, self.max_atoms):
            loss, s = structure_losses(self.model, group, self.energy_weight, self.force_weight, self.dtype,
                                       self.device)
            if train:
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"training loss became {float(loss)}; try a lower learning_rate "
                                             f"(now {self.learning_rate})")
                optimizer.zero_grad()
                (loss / len(group)).backward()
                optimizer.step()
            total += float(loss.detach())
            for k in sums:
                sums[k] += s[k]
        return total / len(structures), sums

    def _config(self, n_train: int, n_val: int) -> dict:
        return {"kind": self.model.backbone.kind, "config": self.model.backbone.config.as_dict(),
                "head_hidden": self.model.head_hidden, "energy_weight": self.energy_weight,
                "force_weight": self.force_weight, "learning_rate": self.learning_rate,
                "backbone_lr_factor": self.backbone_lr_factor, "max_atoms": self.max_atoms, "seed": self.seed,
                "dtype": str(self.dtype), "pretrained": self.pretrained, "n_train": n_train, "n_val": n_val}

    def fit(self, train: Sequence[Structure], val: Sequence[Structure]) -> "ForceFieldFinetuner":
        """Train with early stopping on the validation loss; the model keeps the best epoch's weights."""
        train = _checked_structures(train, "train")
        val = _checked_structures(val, "val")
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        model = self.model.to(self.device)
        reference, scale = fit_atom_references(train, model.atom_reference_ev.numel())
        model.set_references(reference, scale)
        logger.info("per-atom residual scale %.4g eV; references fitted for Z = %s", scale,
                    np.flatnonzero(reference).tolist())
        backbone_params = list(model.backbone.parameters())
        groups = [{"params": list(model.head.parameters()), "lr": self.learning_rate}]
        if self.backbone_lr_factor > 0:
            groups.append({"params": backbone_params, "lr": self.learning_rate * self.backbone_lr_factor})
        else:
            for p in backbone_params:
                p.requires_grad_(False)
        optimizer = torch.optim.Adam(groups)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                               patience=max(1, self.patience // 2))
        self.history, self.best_epoch, self.best_val_loss = [], -1, float("inf")
        best_state, stale, first_epoch, done = copy.deepcopy(model.state_dict()), 0, 0, False
        config = self._config(len(train), len(val))
        path = self.checkpoint_path
        if path is not None and path.is_file():
            ckpt = self._load_checkpoint(path, config)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            generator.set_state(ckpt["generator"])
            torch.set_rng_state(ckpt["torch_rng"])
            self.history, self.best_epoch, stale = list(ckpt["history"]), ckpt["best_epoch"], ckpt["stale"]
            self.best_val_loss, best_state, first_epoch = ckpt["best_val_loss"], ckpt["best_state"], ckpt["epoch"] + 1
            done = ckpt["stopped_early"] and stale >= self.patience
            logger.info("resuming from %s after epoch %d", path, ckpt["epoch"])
        logger.info("fine-tuning on %d structures (%d atoms), validating on %d, batches of <= %d atoms",
                    len(train), sum(s.n_atoms for s in train), len(val), self.max_atoms)
        epochs = tqdm(range(first_epoch, self.max_epochs), desc="fine-tune", disable=not self.progress or done)
        for epoch in ([] if done else epochs):
            order = torch.randperm(len(train), generator=generator).tolist()
            train_loss, _ = self._loss(train, True, optimizer, order)
            val_loss, sums = self._loss(val, False)
            lr = optimizer.param_groups[0]["lr"]
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                   "val_energy_mae_mev": 1e3 * sums["energy_abs"] / len(val),
                   "val_force_mae_mev_per_angstrom": 1e3 * sums["force_abs"] / sums["n_force_components"]}
            self.history.append(row)
            epochs.set_postfix({"train": f"{train_loss:.4g}", "val": f"{val_loss:.4g}",
                                "F MAE": f"{row['val_force_mae_mev_per_angstrom']:.1f}"})
            logger.info("epoch %d: train loss %.5g, validation loss %.5g, force MAE %.2f meV/A", epoch, train_loss,
                        val_loss, row["val_force_mae_mev_per_angstrom"])
            scheduler.step(val_loss)
            if val_loss < self.best_val_loss:
                self.best_val_loss, self.best_epoch, stale = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
            stop = stale >= self.patience
            if path is not None:
                self._save_checkpoint(path, config, epoch, optimizer, scheduler, generator, best_state, stale, stop)
            if stop:
                logger.info("early stop after epoch %d: no improvement for %d epochs", epoch, stale)
                break
        epochs.close()
        model.load_state_dict(best_state)
        logger.info("restored best epoch %d (validation loss %.5g)", self.best_epoch, self.best_val_loss)
        self._fitted = True
        return self

    def _save_checkpoint(self, path: Path, config: dict, epoch: int, optimizer, scheduler, generator, best_state,
                         stale: int, stopped: bool) -> None:
        state = {"format": CHECKPOINT_FORMAT, "config": config, "epoch": epoch, "model": self.model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "history": self.history,
                 "best_state": best_state, "best_epoch": self.best_epoch, "best_val_loss": self.best_val_loss,
                 "stale": stale, "stopped_early": stopped}
        save_run_state(path, state)

    def _load_checkpoint(self, path: Path, config: dict) -> dict:
        return load_run_state(path, fmt=CHECKPOINT_FORMAT, config=config, device=self.device, what="fine-tuning")

    def fetch_model(self) -> EnergyModel:
        """An independent copy of the trained model (best validation epoch), in eval mode."""
        if not self._fitted:
            raise RuntimeError("ForceFieldFinetuner.fetch_model(): call fit() first")
        model = copy.deepcopy(self.model).eval()
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    evaluate = staticmethod(evaluate_potential)
