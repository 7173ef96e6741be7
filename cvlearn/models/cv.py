"""The learnable CV chain: featurizer → residue tokens → token mixer → head.

It maps positions of the selected atoms ``[n_frames, n_atoms, 3]`` (nm) to ``[n_frames, n_outputs]`` and is
the lobe a VAMPNet trains. :mod:`cvlearn.export` wraps it for the MD engine.
"""

from __future__ import annotations

import torch
from torch import Tensor


class GraphCV(torch.nn.Module):
    """``featurizer_lr_scale`` sets the featurizer's learning rate relative to the rest (0 freezes it):
    a pre-trained featurizer is fine-tuned gently, while the mixer and head learn at full speed."""

    def __init__(self, featurizer: torch.nn.Module, tokens: torch.nn.Module, mixer: torch.nn.Module,
                 head: torch.nn.Module, featurizer_lr_scale: float = 1.0):
        super().__init__()
        if featurizer_lr_scale < 0:
            raise ValueError(f"featurizer_lr_scale must be >= 0, got {featurizer_lr_scale}")
        self.featurizer = featurizer
        self.tokens = tokens
        self.mixer = mixer
        self.head = head
        self.featurizer_lr_scale = float(featurizer_lr_scale)
        if featurizer_lr_scale == 0:
            featurizer.requires_grad_(False)

    def recalibrate(self, frames: Tensor) -> None:
        """Refit the head's input normalisation on ``frames`` (called by VAMPNet before each validation)."""
        fit_head_scaler(self, frames)

    def param_groups(self, learning_rate: float) -> list[dict]:
        """Optimizer parameter groups (used by :class:`cvlearn.estimators.VAMPNet`)."""
        own = [p for name, p in self.named_parameters() if not name.startswith("featurizer.") and p.requires_grad]
        groups = [{"params": own, "lr": learning_rate}]
        if self.featurizer_lr_scale > 0:
            groups.append({"params": list(self.featurizer.parameters()),
                           "lr": learning_rate * self.featurizer_lr_scale})
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
        """The full chain positions → CVs (featurizer frozen), sharing this mixer and head."""
        return GraphCV(featurizer, tokens, self.mixer, self.head, featurizer_lr_scale=0.0)


@torch.no_grad()
def embed_frames(featurizer: torch.nn.Module, tokens: torch.nn.Module, trajectories: list[Tensor],
                 chunk: int = 256) -> list[Tensor]:
    """Per trajectory, tokens ``[T, n_tokens, F]`` of positions ``[T, n_atoms, 3]`` (nm), in eval mode and chunks."""
    was_training = featurizer.training
    featurizer.eval()
    out = [torch.cat([tokens(featurizer(t[i:i + chunk])) for i in range(0, len(t), chunk)]) for t in trajectories]
    featurizer.train(was_training)
    return out


class PairwiseDistances(torch.nn.Module):
    """``[n_frames, n_atoms, 3] -> [n_frames, n_atoms*(n_atoms-1)/2]`` distances (nm): the classic VAMPNet input."""

    def __init__(self, n_atoms: int):
        super().__init__()
        i, j = torch.triu_indices(n_atoms, n_atoms, offset=1)
        self.register_buffer("i", i)
        self.register_buffer("j", j)

    def forward(self, pos_nm: Tensor) -> Tensor:
        return torch.linalg.vector_norm(pos_nm[:, self.i] - pos_nm[:, self.j], dim=-1)


class DistanceCV(torch.nn.Module):
    """Baseline lobe: heavy-atom pairwise distances → the same kind of MLP head."""

    def __init__(self, n_atoms: int, head: torch.nn.Module):
        super().__init__()
        self.distances = PairwiseDistances(n_atoms)
        self.head = head

    def embed(self, pos_nm: Tensor) -> Tensor:
        return self.distances(pos_nm)

    def forward(self, pos_nm: Tensor) -> Tensor:
        return self.head(self.embed(pos_nm))


@torch.no_grad()
def fit_head_scaler(lobe: torch.nn.Module, frames: Tensor, chunk: int = 1024) -> None:
    """Standardise the head's input on ``frames`` (a sample of training frames) before training."""
    embedding = torch.cat([lobe.embed(frames[i:i + chunk]) for i in range(0, len(frames), chunk)])
    lobe.head.scaler.fit_(embedding)


@torch.no_grad()
def vamp_warm_start(lobe: torch.nn.Module, train: list[Tensor], lag: int, epsilon: float = 1e-4,
                    max_frames_per_trajectory: int = 4000) -> list[float]:
    """Set the head's last linear layer to the linear VAMP optimum on the head's hidden features.

    From a random readout, end-to-end VAMP training can sit for many epochs at VAMP-2 ≈ 1 before it finds the
    slow direction (measured on ala2: sometimes escaping at epoch 5, sometimes not within 10, so early stopping
    fired on a useless CV). Starting from the best *linear* readout of the initial features removes that
    lottery. Returns the leading singular values; the lobe then starts near VAMP-2 = 1 + Σ s² (exactly so for
    reversible statistics: the readout uses the left singular functions, while one lobe serves both times).
    """
    from cvlearn.data import lagged_pairs
    from cvlearn.estimators.scores import covariances, koopman_svd

    head = lobe.head
    last = head.net[-1]
    if not isinstance(last, torch.nn.Linear):
        raise ValueError(f"vamp_warm_start needs a head ending in nn.Linear, found {type(last).__name__}")
    was_training = lobe.training
    lobe.eval()
    hidden = [head.net[:-1](head.scaler(lobe.embed(x[:max_frames_per_trajectory]))).double() for x in train]
    lobe.train(was_training)
    x0, xt = lagged_pairs(hidden, lag)
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
