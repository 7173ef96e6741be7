"""CV models: the learnable chain featurizer → residue tokens → token mixer → head, and what a VAMPNet returns.

A lobe (:class:`GraphCV`, :class:`TokenCV`, :class:`DistanceCV`) maps positions of the selected atoms
``[n_frames, n_atoms, 3]`` (nm) to ``[n_frames, n_outputs]``; :class:`VAMPModel` puts the fitted VAMP projection
behind it. :mod:`cvlearn.export` wraps the result for the MD engine.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cvlearn.models.evaluation import evaluate_chunked


class VAMPModel(torch.nn.Module):
    """Lobe followed by the VAMP projection ``(lobe(x) - mean) @ projection``: output k is the k-th slowest CV.

    ``projection = C00^{-1/2} U`` with U the left singular vectors of the half-weighted Koopman matrix,
    fitted on the training pairs, slowest first, so the CVs are mean-free with unit variance on the training
    data. If epsilon truncation dropped (near-)linearly dependent lobe outputs, there are fewer CVs than lobe
    outputs. The affine map leaves every VAMP score unchanged; it runs in float64 and the result is cast back
    to the lobe's output dtype.

    Parameters
    ----------
    lobe : torch.nn.Module
        Frames ``[n_frames, ...]`` → lobe outputs ``[n_frames, n_outputs]``.
    mean : Tensor [n_outputs]
        (Weighted) mean of the lobe outputs over the instantaneous training frames.
    projection : Tensor [n_outputs, n_cvs]
        The VAMP projection.
    singular_values : Tensor [n_cvs]
        Estimated VAMP singular values, descending (dimensionless).
    lagtime : int
        Lag time in frames the projection was fitted at.
    """

    def __init__(self, lobe: torch.nn.Module, mean: Tensor, projection: Tensor, singular_values: Tensor,
                 lagtime: int):
        super().__init__()
        self.lobe = lobe
        self.lagtime: int = int(lagtime)
        self.register_buffer("mean", mean.detach().to(torch.float64).clone())
        self.register_buffer("projection", projection.detach().to(torch.float64).clone())
        self.register_buffer("singular_values", singular_values.detach().to(torch.float64).clone())

    def forward(self, x: Tensor) -> Tensor:
        """CVs ``[n_frames, n_cvs]`` of frames ``x`` (e.g. positions nm ``[n_frames, n_atoms, 3]``)."""
        y = self.lobe(x)
        return ((y.to(self.mean.dtype) - self.mean) @ self.projection).to(y.dtype)

    def with_lobe(self, lobe: torch.nn.Module) -> "VAMPModel":
        """The same projection behind another lobe computing the same outputs, e.g. a head trained on stored
        tokens put back behind its featurizer for export (``TokenCV.on_featurizer``)."""
        return VAMPModel(lobe, self.mean, self.projection, self.singular_values, self.lagtime)


class GraphCV(torch.nn.Module):
    """The full lobe: positions nm ``[n_frames, n_atoms, 3]`` → featurizer → tokens → mixer → head ``[n_frames,
    n_outputs]``.

    Parameters
    ----------
    featurizer : torch.nn.Module
        Positions (nm) → per-atom features (the backbone, e.g. an ET).
    tokens : torch.nn.Module
        Per-atom features → tokens ``[n_frames, n_tokens, F]``.
    mixer : torch.nn.Module
        Tokens → one embedding per frame.
    head : torch.nn.Module
        Embedding → outputs (with an input ``scaler``, see :func:`fit_head_scaler`).
    backbone_lr_scale : float
        The featurizer's learning rate relative to the rest (0 freezes it): a pre-trained featurizer is
        fine-tuned gently, while the mixer and head learn at full speed.
    """

    def __init__(self, featurizer: torch.nn.Module, tokens: torch.nn.Module, mixer: torch.nn.Module,
                 head: torch.nn.Module, backbone_lr_scale: float = 1.0):
        super().__init__()
        if not backbone_lr_scale >= 0:
            raise ValueError(f"backbone_lr_scale: expected a number >= 0, found {backbone_lr_scale!r}")
        self.featurizer = featurizer
        self.tokens = tokens
        self.mixer = mixer
        self.head = head
        self.backbone_lr_scale = float(backbone_lr_scale)
        if backbone_lr_scale == 0:
            featurizer.requires_grad_(False)

    def recalibrate(self, frames: Tensor) -> None:
        """Refit the head's input normalisation on ``frames`` (called by VAMPNet before each validation)."""
        fit_head_scaler(self, frames)

    def param_groups(self, learning_rate: float) -> list[dict]:
        """Optimizer parameter groups (used by :class:`cvlearn.estimators.VAMPNet`): the featurizer at
        ``learning_rate * backbone_lr_scale``, the rest at ``learning_rate``."""
        own = [p for name, p in self.named_parameters() if not name.startswith("featurizer.") and p.requires_grad]
        groups = [{"params": own, "lr": learning_rate}]
        if self.backbone_lr_scale > 0:
            groups.append({"params": list(self.featurizer.parameters()),
                           "lr": learning_rate * self.backbone_lr_scale})
        return groups

    def embed(self, pos_nm: Tensor) -> Tensor:
        """The head's input: the pooled embedding of each frame."""
        return self.mixer(self.tokens(self.featurizer(pos_nm)))

    def forward(self, pos_nm: Tensor) -> Tensor:
        return self.head(self.embed(pos_nm))


class TokenCV(torch.nn.Module):
    """Mixer → head on precomputed tokens ``[n_frames, n_tokens, F]``: the frozen-featurizer protocol.

    A frozen featurizer gives the same tokens every epoch, so embed the trajectories once (:func:`embed_frames`,
    or ``cvlearn.data.store`` on disk) and train heads on the tokens: no GNN forward per epoch. ``on_featurizer``
    puts the trained mixer and head back behind the featurizer as a :class:`GraphCV` for export.

    Parameters
    ----------
    mixer : torch.nn.Module
        Tokens ``[n_frames, n_tokens, F]`` → one embedding per frame.
    head : torch.nn.Module
        Embedding → outputs ``[n_frames, n_outputs]``.
    """

    def __init__(self, mixer: torch.nn.Module, head: torch.nn.Module):
        super().__init__()
        self.mixer = mixer
        self.head = head

    def recalibrate(self, tokens: Tensor) -> None:
        fit_head_scaler(self, tokens)

    def embed(self, tokens: Tensor) -> Tensor:
        return self.mixer(tokens)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.mixer(tokens))

    def on_featurizer(self, featurizer: torch.nn.Module, tokens: torch.nn.Module) -> "GraphCV":
        """The full chain positions → CVs (featurizer frozen), sharing this mixer and head.

        Parameters
        ----------
        featurizer, tokens : torch.nn.Module
            The ones the stored tokens were computed with.

        Returns
        -------
        GraphCV
            Positions nm ``[n_frames, n_atoms, 3]`` → ``[n_frames, n_outputs]``.
        """
        return GraphCV(featurizer, tokens, self.mixer, self.head, backbone_lr_scale=0.0)


def embed_frames(featurizer: torch.nn.Module, tokens: torch.nn.Module, trajectories: list[Tensor],
                 chunk_size: int = 256) -> list[Tensor]:
    """Tokens of every frame, computed once (featurizer in eval mode, in chunks, no autograd).

    Parameters
    ----------
    featurizer, tokens : torch.nn.Module
        As in :class:`GraphCV`.
    trajectories : list of Tensor [T_i, n_atoms, 3]
        Positions (nm).
    chunk_size : int
        Frames per featurizer call.

    Returns
    -------
    list of Tensor [T_i, n_tokens, F]
    """
    return [evaluate_chunked(lambda x: tokens(featurizer(x)), t, chunk_size=chunk_size, modules=(featurizer,))
            for t in trajectories]


class PairwiseDistances(torch.nn.Module):
    """``[n_frames, n_atoms, 3] -> [n_frames, n_atoms*(n_atoms-1)/2]`` distances (nm): the classic VAMPNet input.

    Parameters
    ----------
    n_atoms : int
        Atoms per frame; pairs i < j in row-major order.
    """

    def __init__(self, n_atoms: int):
        super().__init__()
        i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
        self.register_buffer("i", i)
        self.register_buffer("j", j)

    def forward(self, pos_nm: Tensor) -> Tensor:
        return torch.linalg.vector_norm(pos_nm[:, self.i] - pos_nm[:, self.j], dim=-1)


class DistanceCV(torch.nn.Module):
    """Baseline lobe: heavy-atom pairwise distances (nm) → the same kind of MLP head.

    Parameters
    ----------
    n_atoms : int
        Atoms per frame.
    head : torch.nn.Module
        Distances ``[n_frames, n_atoms*(n_atoms-1)/2]`` → outputs ``[n_frames, n_outputs]``.
    """

    def __init__(self, n_atoms: int, head: torch.nn.Module):
        super().__init__()
        self.distances = PairwiseDistances(n_atoms)
        self.head = head

    def embed(self, pos_nm: Tensor) -> Tensor:
        return self.distances(pos_nm)

    def forward(self, pos_nm: Tensor) -> Tensor:
        return self.head(self.embed(pos_nm))


def fit_head_scaler(lobe: torch.nn.Module, frames: Tensor, chunk_size: int = 1024) -> None:
    """Standardise the head's input on ``frames`` (a sample of training frames) before training.

    Parameters
    ----------
    lobe : torch.nn.Module
        Has ``embed(frames)`` and ``head.scaler.fit_(embedding)``; its training mode is left as it is.
    frames : Tensor [n_frames, ...]
        Inputs of the lobe (positions nm ``[n_frames, n_atoms, 3]``, or tokens for a :class:`TokenCV`).
    chunk_size : int
        Frames per call.
    """
    lobe.head.scaler.fit_(evaluate_chunked(lobe.embed, frames, chunk_size=chunk_size))


@torch.no_grad()
def vamp_warm_start(lobe: torch.nn.Module, train: list[Tensor], lagtime: int, epsilon: float = 1e-4,
                    max_frames_per_trajectory: int = 4000) -> list[float]:
    """Set the head's last linear layer to the linear VAMP optimum on the head's hidden features.

    From a random readout, end-to-end VAMP training can sit for many epochs at VAMP-2 ≈ 1 before it finds the
    slow direction (measured on ala2: sometimes escaping at epoch 5, sometimes not within 10, so early stopping
    fired on a useless CV). Starting from the best *linear* readout of the initial features removes that
    lottery. Returns the leading singular values; the lobe then starts near VAMP-2 = 1 + Σ s² (exactly so for
    reversible statistics: the readout uses the left singular functions, while one lobe serves both times).

    Parameters
    ----------
    lobe : torch.nn.Module
        Has ``embed`` and a ``head`` with ``scaler`` and ``net`` ending in ``nn.Linear`` (changed in place).
    train : list of Tensor [T_i, ...]
        Training trajectories (lobe inputs, e.g. positions nm).
    lagtime : int
        Lag time in frames.
    epsilon : float
        Eigenvalue cutoff of the covariance inverses.
    max_frames_per_trajectory : int
        Use at most this many leading frames of each trajectory.

    Returns
    -------
    list of float
        The leading ``n_outputs`` VAMP singular values of the head's hidden features (dimensionless).
    """
    from cvlearn.data import lagged_pairs
    from cvlearn.estimators.scores import covariances, koopman_svd

    head = lobe.head
    last = head.net[-1]
    if not isinstance(last, torch.nn.Linear):
        raise ValueError(f"vamp_warm_start needs a head ending in nn.Linear, found {type(last).__name__}")
    hidden = [evaluate_chunked(lambda x: head.net[:-1](head.scaler(lobe.embed(x))), t[:max_frames_per_trajectory],
                               chunk_size=max_frames_per_trajectory, modules=(lobe,)).double() for t in train]
    x0, xt = lagged_pairs(hidden, lagtime)
    # epsilon truncates near-degenerate hidden directions: their huge C00^{-1/2} weights would lose the
    # optimum to float32 rounding in the Linear layer.
    c00, c0t, ctt = covariances(x0, xt)
    singular_values, u, _ = koopman_svd(c00, c0t, ctt, epsilon)
    n_out = last.out_features
    if u.shape[1] < n_out:
        raise ValueError(f"head features span only {u.shape[1]} VAMP directions, fewer than n_outputs={n_out}")
    weight = u[:, :n_out].T
    last.weight.copy_(weight.to(last.weight.dtype))
    last.bias.copy_((-weight @ x0.mean(dim=0)).to(last.bias.dtype))
    return singular_values[:n_out].tolist()
