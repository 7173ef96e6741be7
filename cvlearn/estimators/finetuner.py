"""ForceFieldFinetuner: train an :class:`~cvlearn.models.potential.EnergyModel` on DFT energies and forces, deeptime-style.

``ForceFieldFinetuner(pretrained="backbone.pt").fit(train, val).fetch_model()`` → an independent EnergyModel.
Loss per structure s with n_s atoms, then averaged over structures (so a big molecule does not outweigh a small one):

    L_s = energy_weight * ((E_pred - E) / n_s)^2  +  force_weight * mean_{i in s} |F_pred,i - F_i|^2 / 3

in eV and eV/Å. Adam (optionally a lower learning rate on the backbone), ReduceLROnPlateau on the validation loss,
early stopping that restores the best weights, batches bounded in atoms (``bounded_batches``), and a checkpoint
written atomically after every epoch from which a killed run resumes to the same state.

Under ``torchrun`` (:mod:`cvlearn.distributed`) training is data-parallel as described in
:mod:`cvlearn.estimators.data_parallel`: every rank draws the same global batches and computes energies and forces
of its slice inside DDP (``energy_and_forces`` is the wrapped forward); its loss is the slice's sum of per-structure
losses over the GLOBAL batch's structure count, all-reduced, so DDP's gradient average is the one-process gradient.
Validation sums (loss, energy and force errors) are summed over ranks; early stopping, the learning-rate schedule and
the restored best epoch are therefore those of one process. Rank 0 writes the checkpoint; it resumes with any
number of ranks.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cvlearn import distributed
from cvlearn.structures.records import Structure, bounded_batches
from cvlearn.nn.featurizers.molecules import MoleculeBackbone
from cvlearn.models.potential import EnergyModel, fit_atom_references
from cvlearn.estimators.data_parallel import ForwardAs, rank_share, sum_over_ranks, use_data_parallel
from cvlearn.estimators.scores import energy_force_loss
from cvlearn.estimators.trainer import Trainer, check_count, make_scheduler
from cvlearn.models.evaluation import eval_mode

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cvlearn.ForceFieldFinetuner.checkpoint/2"
SUMS = ("energy_abs", "energy_abs_per_atom", "force_abs", "n_force_components")


class _Calls:
    """What :func:`energy_force_loss` calls: ``energy_and_forces`` through ``net`` (e.g. DDP around
    ``ForwardAs(model, "energy_and_forces")``), or the model's own method."""

    def __init__(self, net):
        self.energy_and_forces = getattr(net, "energy_and_forces", net)


def _checked_structures(structures: Sequence[Structure], name: str) -> list[Structure]:
    structures = list(structures)
    if not structures:
        raise ValueError(f"{name}: expected a non-empty list of labelled Structures, found none")
    for s in structures:
        if s.energy_ev is None or s.forces_ev_per_angstrom is None:
            raise ValueError(f"{name}: {s.source or 'a structure'} has no energy or forces; fine-tuning needs both")
    return structures


def evaluate_potential(model: EnergyModel, structures: Sequence[Structure], max_atoms: int = 2048) -> dict:
    """Energy and force errors of ``model`` on labelled ``structures`` (eval mode, batches bounded in atoms).

    Forces need autograd, so this is not a no-grad evaluation (:func:`cvlearn.models.evaluate_chunked`).

    Parameters
    ----------
    model : EnergyModel
    structures : sequence of Structure
        With energies (eV) and forces (eV/Å).
    max_atoms : int
        Atoms per batch at most.

    Returns
    -------
    dict
        ``energy_mae_mev`` (meV per structure), ``energy_mae_mev_per_atom``, ``force_mae_mev_per_angstrom``
        (over force components) and ``n_structures``.
    """
    structures = _checked_structures(structures, "structures")
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    e_abs = e_abs_atom = f_abs = 0.0
    n_comp = 0
    with eval_mode(model):
        for group in bounded_batches(structures, max_atoms):
            _, sums = energy_force_loss(model, group, 0.0, 0.0, dtype, device)
            e_abs += sums["energy_abs"]
            e_abs_atom += sums["energy_abs_per_atom"]
            f_abs += sums["force_abs"]
            n_comp += sums["n_force_components"]
    n = len(structures)
    return {"energy_mae_mev": 1e3 * e_abs / n, "energy_mae_mev_per_atom": 1e3 * e_abs_atom / n,
            "force_mae_mev_per_angstrom": 1e3 * f_abs / n_comp, "n_structures": n}


class ForceFieldFinetuner:
    """Estimator: fine-tune a backbone plus an energy head on energies and forces.

    Adam (optionally a lower learning rate on the backbone), ReduceLROnPlateau and early stopping on the
    validation loss with the best weights restored, through the shared
    :class:`~cvlearn.estimators.trainer.Trainer`. ``history`` rows hold ``train_loss``, ``val_loss``,
    ``val_energy_mae_mev``, ``val_force_mae_mev_per_angstrom``, ``lr`` and ``seconds``.

    Parameters
    ----------
    backbone : MoleculeBackbone, optional
        The backbone to fine-tune; or ``pretrained`` (a cvlearn backbone checkpoint, see
        ``MoleculeBackbone.save``); or a fresh ``kind``/``config``.
    pretrained : str or Path, optional
    kind, config
        Architecture of a fresh backbone.
    head_hidden : int
        Width of the energy head.
    energy_weight, force_weight : float
        Weights of the energy and force terms (see :func:`~cvlearn.estimators.scores.energy_force_loss`).
    learning_rate : float
    backbone_lr_scale : float
        The backbone's learning rate relative to ``learning_rate`` (0 freezes it).
    max_epochs, patience : int
        At most ``max_epochs``; stop after ``patience`` epochs without a lower validation loss.
    max_atoms : int
        Atoms per batch at most.
    seed : int
    dtype : torch.dtype
    device : str
    progress : bool
    distributed : bool or None
        Train data-parallel over the ranks of the process group (module docstring); None: whenever a group of
        more than one rank is initialised. False trains independently on every rank.
    """

    def __init__(self, *, backbone: MoleculeBackbone | None = None, pretrained: str | Path | None = None,
                 kind: str = "et", config=None, head_hidden: int = 64, energy_weight: float = 1.0,
                 force_weight: float = 100.0, learning_rate: float = 1e-3, backbone_lr_scale: float = 1.0,
                 max_epochs: int = 100, patience: int = 10, max_atoms: int = 512, seed: int = 0,
                 dtype: torch.dtype = torch.float32, device: str = "cpu", progress: bool = True,
                 distributed: bool | None = None):
        for name, value, low in (("max_epochs", max_epochs, 1), ("patience", patience, 1), ("max_atoms", max_atoms, 1),
                                 ("head_hidden", head_hidden, 1)):
            check_count(name, value, low)
        if not learning_rate > 0:
            raise ValueError(f"learning_rate: expected a positive number, found {learning_rate!r}")
        if not backbone_lr_scale >= 0:
            raise ValueError(f"backbone_lr_scale: expected a number >= 0, found {backbone_lr_scale!r}")
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
        self.learning_rate, self.backbone_lr_scale = float(learning_rate), float(backbone_lr_scale)
        self.max_epochs, self.patience, self.max_atoms, self.seed = max_epochs, patience, max_atoms, seed
        self.progress = progress
        self.distributed = distributed
        self.history: list[dict] = []
        self.best_epoch = -1
        self.best_val_loss = float("inf")
        self._fitted = False

    def batch_loss(self, group: list[Structure], net=None) -> tuple[torch.Tensor, dict]:
        """Sum of the per-structure losses of one global batch (the same number on every rank, differentiable),
        and this rank's error sums.

        Under a process group (and ``distributed`` not False) each rank evaluates only its slice; ``net`` is then
        the DDP-wrapped ``ForwardAs(model, "energy_and_forces")``, so that backward averages the gradients.

        Parameters
        ----------
        group : list of Structure
            The global batch (identical on every rank).
        net : torch.nn.Module, optional
            ``(z, positions Å, batch, n_graphs) -> (energies eV, forces eV/Å)``; default the model itself.

        Returns
        -------
        loss : Tensor []
            float64; divide by ``len(group)`` for the batch's mean.
        sums : dict
            This rank's ``energy_abs``, ``energy_abs_per_atom``, ``force_abs``, ``n_force_components`` (zeros on a
            rank whose slice is empty); sum them over ranks for the batch's.
        """
        shard = use_data_parallel(self.distributed)
        part, sums = self._share_loss(group, net, shard)
        return (distributed.all_reduce_sum(part) if shard else part), sums

    def _share_loss(self, group: list[Structure], net, shard: bool, forward_idle: bool = True):
        """This rank's part of ``group``'s loss sum (x 0 on an idle rank; None there if not ``forward_idle``) and
        its error sums; the parts sum over ranks to the batch's loss sum."""
        share = rank_share(group, distributed.rank(), distributed.world_size()) if shard else rank_share(group, 0, 1)
        sums = dict.fromkeys(SUMS, 0.0)
        if not (share.weight or forward_idle):
            return None, sums
        loss, s = energy_force_loss(_Calls(self.model if net is None else net), share.structures,
                                    self.energy_weight, self.force_weight, self.dtype, self.device)
        return loss * share.weight, (s if share.weight else sums)

    def _epoch(self, structures: list[Structure], trainer: Trainer | None = None, epoch: int = 0,
               order=None, net=None) -> tuple[float, dict]:
        """Mean per-structure loss over ``structures`` (one optimiser step per bounded global batch with a
        ``trainer``) and the error sums, both summed over ranks under a group."""
        self.model.train(trainer is not None)
        shard = use_data_parallel(self.distributed)
        total = 0.0
        sums = dict.fromkeys(SUMS, 0.0)
        ordered = structures if order is None else [structures[i] for i in order]
        for group in bounded_batches(ordered, self.max_atoms):
            part, s = self._share_loss(group, net, shard, forward_idle=trainer is not None)
            if trainer is not None:  # the global batch's mean: every rank holds the same number
                trainer.step((distributed.all_reduce_sum(part) if shard else part) / len(group), epoch)
            total += 0.0 if part is None else float(part.detach())
            for k in sums:
                sums[k] += s[k]
        total, *values = sum_over_ranks([total, *sums.values()], self.device) if shard else [total, *sums.values()]
        return total / len(structures), dict(zip(SUMS, values))

    def _config(self, n_train: int, n_val: int) -> dict:
        return {"kind": self.model.backbone.kind, "config": self.model.backbone.config.as_dict(),
                "head_hidden": self.model.head_hidden, "energy_weight": self.energy_weight,
                "force_weight": self.force_weight, "learning_rate": self.learning_rate,
                "backbone_lr_scale": self.backbone_lr_scale, "max_atoms": self.max_atoms, "seed": self.seed,
                "dtype": str(self.dtype), "pretrained": self.pretrained, "n_train": n_train, "n_val": n_val}

    def fit(self, train: Sequence[Structure], validation: Sequence[Structure], *,
            checkpoint_path: str | Path | None = None) -> "ForceFieldFinetuner":
        """Train with early stopping on the validation loss; the model keeps the best epoch's weights.

        Parameters
        ----------
        train, validation : sequence of Structure
            Labelled structures (energies eV, forces eV/Å).
        checkpoint_path : str or Path, optional
            The full state is saved here atomically after every epoch; a run whose checkpoint exists resumes
            from it (same data and settings, else a ValueError says what differs).

        Returns
        -------
        ForceFieldFinetuner
            self.
        """
        train = _checked_structures(train, "train")
        val = _checked_structures(validation, "validation")
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        model = self.model.to(self.device)
        reference, scale = fit_atom_references(train, model.atom_reference_ev.numel())
        model.set_references(reference, scale)
        logger.info("per-atom residual scale %.4g eV; references fitted for Z = %s", scale,
                    np.flatnonzero(reference).tolist())
        backbone_params = list(model.backbone.parameters())
        groups = [{"params": list(model.head.parameters()), "lr": self.learning_rate}]
        if self.backbone_lr_scale > 0:
            groups.append({"params": backbone_params, "lr": self.learning_rate * self.backbone_lr_scale})
        else:
            for p in backbone_params:
                p.requires_grad_(False)
        net = ForwardAs(model, "energy_and_forces")  # DDP hooks forward: energies and forces both run inside it
        net = distributed.wrap_ddp(net, self.device) if use_data_parallel(self.distributed) else model
        optimizer = torch.optim.Adam(groups)
        scheduler = make_scheduler("plateau", optimizer, learning_rate=self.learning_rate,
                                   max_epochs=self.max_epochs, patience=self.patience, mode="min")
        trainer = Trainer({"model": model}, optimizer, scheduler, fmt=CHECKPOINT_FORMAT,
                          config=self._config(len(train), len(val)), what="fine-tuning", max_epochs=self.max_epochs,
                          monitor="val_loss", mode="min", patience=self.patience, generators={"shuffle": generator},
                          device=self.device, progress=self.progress,
                          postfix=("train_loss", "val_loss", "val_force_mae_mev_per_angstrom"))
        logger.info("fine-tuning on %d structures (%d atoms), validating on %d, batches of <= %d atoms",
                    len(train), sum(s.n_atoms for s in train), len(val), self.max_atoms)

        def run_epoch(epoch: int) -> dict:
            order = torch.randperm(len(train), generator=generator).tolist()
            train_loss, _ = self._epoch(train, trainer, epoch, order, net)
            val_loss, sums = self._epoch(val)
            return {"train_loss": train_loss, "val_loss": val_loss,
                    "val_energy_mae_mev": 1e3 * sums["energy_abs"] / len(val),
                    "val_force_mae_mev_per_angstrom": 1e3 * sums["force_abs"] / sums["n_force_components"]}

        trainer.fit(run_epoch, checkpoint_path=checkpoint_path)
        self.history, self.best_epoch, self.best_val_loss = trainer.history, trainer.best_epoch, trainer.best_value
        self._fitted = True
        return self

    def fetch_model(self) -> EnergyModel:
        """An independent copy of the trained model (best validation epoch), in eval mode.

        Returns
        -------
        EnergyModel
            Energies (eV) and forces (eV/Å) of structures.
        """
        if not self._fitted:
            raise RuntimeError("ForceFieldFinetuner.fetch_model(): call fit() first")
        model = copy.deepcopy(self.model).eval()
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    evaluate = staticmethod(evaluate_potential)
