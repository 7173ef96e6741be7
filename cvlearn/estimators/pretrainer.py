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

Under ``torchrun`` (:mod:`cvlearn.distributed`) training is data-parallel as described in
:mod:`cvlearn.estimators.data_parallel`: every rank draws the same global batches and the noise of the whole batch
(the same random stream as one process), runs backbone + head inside DDP on its slice of the batch's atoms, and
all-reduces the slice's squared errors divided by the global batch's ``3 x atoms``; validation errors are summed over
ranks. Loss, gradient, history and checkpoints are those of one process (up to float rounding); rank 0 writes the
checkpoint, and a checkpoint resumes with any number of ranks.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from cvlearn import distributed
from cvlearn.progress import progress_bar
from cvlearn.structures.records import Structure, bounded_batches, collate
from cvlearn.nn.featurizers.molecules import MoleculeBackbone
from cvlearn.estimators.data_parallel import ForwardAs, rank_share, sum_over_ranks, use_data_parallel
from cvlearn.estimators.scores import denoising_loss
from cvlearn.estimators.trainer import Trainer, make_scheduler

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cvlearn.DenoisingPretrainer.checkpoint/2"
SIGMA_EQUILIBRIUM_ANGSTROM = 0.05
SIGMA_NON_EQUILIBRIUM_ANGSTROM = 0.2


class EquivariantNoiseHead(torch.nn.Module):
    """``(x [N, F], vec [N, 3, F]) -> [N, 3]``: one 3-vector per atom, rotation-equivariant by construction.

    A gated equivariant read-out: the vector channels are mixed linearly (acting on the channel axis only, so
    rotations commute with it), each mixed channel is scaled by a gate computed from invariants (the scalar
    features and the mixed channels' norms), and the gated channels are summed with learnt weights.

    Parameters
    ----------
    hidden_channels : int
        Feature width F of the backbone's scalars ``x`` and vectors ``vec``.
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

    AdamW, cosine learning rate over ``max_epochs`` (to 5 %), batches of at most ``max_atoms`` atoms, trained
    through the shared :class:`~cvlearn.estimators.trainer.Trainer` (no early stopping: the last epoch's weights
    are kept). ``fit`` keeps a per-epoch history (``train_loss``, ``val_loss``, ``structures_per_s``, ``lr``,
    ``seconds``); validation noise is drawn from a fixed seed, so validation losses of different epochs compare
    like with like.

    Parameters
    ----------
    kind : {"et", "visnet", "tensornet"}
        Backbone architecture.
    config : dict or architecture config, optional
        Architecture settings; None with ``initial_checkpoint`` reads them from a cvlearn checkpoint.
    initial_checkpoint : str or Path, optional
        Start from these weights (a cvlearn checkpoint describes its own architecture; a geom2vec /
        torchmd-net state dict needs ``kind`` and ``config``).
    noise_sigma_angstrom : float
        Standard deviation of the Gaussian noise added to the positions, Å.
    learning_rate : float
    max_epochs : int
        Epochs in all (also the cosine period).
    max_atoms : int
        Atoms per batch at most.
    seed : int
        Head initialisation, shuffling and noise.
    weight_decay, grad_clip : float
        AdamW weight decay; gradient-norm clip.
    device : str
    progress : bool
    distributed : bool or None
        Train data-parallel over the ranks of the process group (module docstring); None: whenever a group of
        more than one rank is initialised. False trains independently on every rank.
    """

    def __init__(self, kind: str = "et", config=None, *, initial_checkpoint: str | Path | None = None,
                 noise_sigma_angstrom: float = SIGMA_EQUILIBRIUM_ANGSTROM, learning_rate: float = 5e-4,
                 max_epochs: int = 10, max_atoms: int = 2048, seed: int = 0, weight_decay: float = 0.0,
                 grad_clip: float = 10.0, device: str = "cpu", progress: bool = True,
                 distributed: bool | None = None):
        _check("max_epochs", max_epochs, 1, integer=True)
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
        self.max_epochs = max_epochs
        self.max_atoms = max_atoms
        self.seed = seed
        self.weight_decay = float(weight_decay)
        self.grad_clip = float(grad_clip)
        self.device = torch.device(device)
        self.progress = progress
        self.distributed = distributed
        self.history: list[dict] = []
        self.n_train = self.n_val = 0

    # -- loss -------------------------------------------------------------------------------------------------
    def _share_loss(self, group: list[Structure], generator: torch.Generator, net=None, shard: bool = False,
                    forward_idle: bool = True) -> tuple[Tensor | None, int]:
        """This rank's part of the global batch ``group``'s denoising loss, and the batch's atom count.

        The noise of the whole batch is drawn on every rank (one process's random stream), then sliced. The part is
        the slice's mean squared error times its share of the batch's atoms (times 0 on an idle rank), so the parts
        sum over ranks to the batch's loss; in one process it is that loss. None for an idle rank when
        ``forward_idle`` is False.
        """
        share = rank_share(group, distributed.rank(), distributed.world_size()) if shard else rank_share(group, 0, 1)
        eps = torch.randn((share.n_atoms, 3), generator=generator)[share.atom_start:share.atom_stop]
        if not (share.weight or forward_idle):
            return None, share.n_atoms
        batch = collate(share.structures, next(self.head.parameters()).dtype)
        eps = eps.to(batch.pos.dtype)
        pos = (batch.pos + self.noise_sigma_angstrom * eps).to(self.device)
        net = ForwardAs(self.backbone, head=self.head) if net is None else net
        predicted = net(batch.z.to(self.device), pos, batch.batch.to(self.device))
        fraction = share.weight * (share.atom_stop - share.atom_start) / share.n_atoms
        return denoising_loss(predicted, eps.to(self.device)) * fraction, share.n_atoms

    def batch_loss(self, group: list[Structure], generator: torch.Generator, net=None) -> Tensor:
        """The denoising loss of one global batch: the same number on every rank, and differentiable.

        Under a process group (and ``distributed`` not False) each rank evaluates only its slice; ``net`` is then
        the DDP-wrapped ``ForwardAs(backbone, head=head)`` so that backward averages the gradients.

        Parameters
        ----------
        group : list of Structure
            The global batch (identical on every rank).
        generator : torch.Generator
            Noise stream (in the same state on every rank).
        net : torch.nn.Module, optional
            ``(z, positions Å, batch) -> predicted noise [N, 3]``; default backbone + head.

        Returns
        -------
        Tensor []
            Mean squared error over the batch's atoms and components.
        """
        shard = use_data_parallel(self.distributed)
        part, _ = self._share_loss(group, generator, net, shard)
        return distributed.all_reduce_sum(part) if shard else part

    @torch.no_grad()
    def score(self, structures: Sequence[Structure]) -> float:
        """Mean denoising loss over ``structures`` (noise from a fixed seed).

        Under a process group (``distributed`` not False) every rank must call it: each evaluates its slice of
        every batch and the sums are all-reduced, so all ranks return the one-process number.

        Parameters
        ----------
        structures : sequence of Structure

        Returns
        -------
        float
            Atom-weighted mean loss (dimensionless; 1.0 = predicting zero noise).
        """
        structures = _checked(structures, "structures")
        generator = torch.Generator().manual_seed(self.seed + 1)
        shard = use_data_parallel(self.distributed)
        self.backbone.eval(), self.head.eval()
        total = atoms = 0.0
        for group in bounded_batches(structures, self.max_atoms):
            part, n = self._share_loss(group, generator, shard=shard, forward_idle=False)
            total += 0.0 if part is None else float(part) * n
            atoms += n
        return sum_over_ranks([total], self.device)[0] / atoms  # every rank saw every batch's atom count

    # -- training ---------------------------------------------------------------------------------------------
    def _run_config(self) -> dict:
        return {"kind": self.kind, "config": self.backbone.config.as_dict(), "sigma": self.noise_sigma_angstrom,
                "learning_rate": self.learning_rate, "max_atoms": self.max_atoms, "seed": self.seed,
                "weight_decay": self.weight_decay, "grad_clip": self.grad_clip, "max_epochs": self.max_epochs,
                "n_train": self.n_train, "n_val": self.n_val, "initial_checkpoint": self.initial_checkpoint}

    def fit(self, train: Sequence[Structure], validation: Sequence[Structure], *,
            checkpoint_path: str | Path | None = None, until_epoch: int | None = None) -> "DenoisingPretrainer":
        """Train for ``max_epochs``.

        Parameters
        ----------
        train, validation : sequence of Structure
            Unlabelled structures (positions Å inside records).
        checkpoint_path : str or Path, optional
            The full state (weights, optimizer, scheduler, random streams, history) is saved atomically after
            every epoch; a run whose checkpoint exists resumes after its last completed epoch (same data and
            settings, else a ValueError says what differs).
        until_epoch : int, optional
            Stop this call after that many epochs in all (the schedule still spans ``max_epochs``), so a long
            run can be done in slices on a shared machine, each slice resuming from the checkpoint.

        Returns
        -------
        DenoisingPretrainer
            self.
        """
        train = _checked(train, "train")
        val = _checked(validation, "validation")
        self.n_train, self.n_val = len(train), len(val)
        self.backbone.to(self.device).train()
        self.head.to(self.device).train()
        params = list(self.backbone.parameters()) + list(self.head.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        scheduler = make_scheduler("cosine", optimizer, learning_rate=self.learning_rate, max_epochs=self.max_epochs,
                                   cosine_floor=0.05)
        shuffle = torch.Generator().manual_seed(self.seed)
        noise = torch.Generator().manual_seed(self.seed + 2)
        net = ForwardAs(self.backbone, head=self.head)
        net = distributed.wrap_ddp(net, self.device) if use_data_parallel(self.distributed) else net
        trainer = Trainer({"backbone": self.backbone, "head": self.head}, optimizer, scheduler, fmt=CHECKPOINT_FORMAT,
                          config=self._run_config(), what="pre-training", max_epochs=self.max_epochs,
                          generators={"shuffle": shuffle, "noise": noise}, grad_clip=self.grad_clip,
                          device=self.device, progress=self.progress, postfix=("train_loss", "val_loss"))
        n_atoms = sum(s.n_atoms for s in train)
        logger.info("denoising %s: %d train / %d validation structures (%d train atoms), sigma %.3g A, "
                    "max %d atoms per batch, %d epochs", self.kind, len(train), len(val), n_atoms,
                    self.noise_sigma_angstrom, self.max_atoms, self.max_epochs)

        def run_epoch(epoch: int) -> dict:
            t0 = time.perf_counter()
            self.backbone.train(), self.head.train()
            order = torch.randperm(len(train), generator=shuffle).tolist()
            total = 0.0
            bar = progress_bar(total=len(train), desc=f"denoise epoch {epoch}", unit="struct", leave=False,
                               disable=not self.progress or not distributed.is_rank0(), mininterval=2.0)
            for group in bounded_batches((train[i] for i in order), self.max_atoms):
                loss = self.batch_loss(group, noise, net)  # the global batch's loss on every rank
                trainer.step(loss, epoch)
                value = loss.item()
                total += value * sum(s.n_atoms for s in group)
                bar.update(len(group))
                bar.set_postfix(loss=f"{value:.4f}")
            bar.close()
            structures_per_s = len(train) / (time.perf_counter() - t0)
            return {"train_loss": total / n_atoms, "val_loss": self.score(val), "structures_per_s": structures_per_s}

        trainer.fit(run_epoch, checkpoint_path=checkpoint_path, until_epoch=until_epoch)
        self.history = trainer.history
        self.backbone.eval(), self.head.eval()
        return self

    # -- results ----------------------------------------------------------------------------------------------
    def fetch_model(self) -> MoleculeBackbone:
        """An independent copy of the pre-trained backbone (the denoising head is not part of it), in eval mode.

        Returns
        -------
        MoleculeBackbone
            ``(z, positions Å, batch) -> (x [N, F], vec [N, 3, F])``.
        """
        return copy.deepcopy(self.backbone).eval()

    def save_backbone(self, path: str | Path, **metadata) -> None:
        """Write the backbone as a self-describing cvlearn featurizer checkpoint (head dropped) with the
        pre-training settings and loss history in its metadata; every CV featurizer of this kind loads it.

        Parameters
        ----------
        path : str or Path
        **metadata
            Extra JSON-able metadata (e.g. ``corpus``).
        """
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
