"""Heads that turn a pooled embedding into CV outputs."""

from __future__ import annotations

import torch
from torch import Tensor


class Whitening(torch.nn.Module):
    """PCA whitening fitted once on training data: ``(x - mean) @ transform`` (fixed buffers, exportable).

    Pooled GNN embeddings of one molecule vary by ~0.1 % around a large mean, and their channels are
    strongly collinear. VAMP scores are scale invariant, so in those coordinates the slow direction gets
    vanishing gradients (measured: a linear head reached VAMP-2 1.05 where the linear optimum is 1.20).
    Whitened inputs make the problem well conditioned. Directions with variance below ``rel_eps`` times the
    largest are dropped (their columns are zero), since float32 rounding would dominate them.

    Parameters
    ----------
    n_features : int
        Input width; identity until :meth:`fit_` is called.
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("transform", torch.eye(n_features))

    @torch.no_grad()
    def fit_(self, features: Tensor, rel_eps: float = 1e-5) -> "Whitening":
        """Fit mean and whitening transform in float64, in place.

        Parameters
        ----------
        features : Tensor
            Training inputs [n_samples, n_features].
        rel_eps : float
            Directions with eigenvalue below ``rel_eps`` × the largest are dropped.

        Returns
        -------
        Whitening
            ``self``.
        """
        x = features.double()
        mean = x.mean(dim=0)
        cov = torch.cov((x - mean).T).reshape(x.shape[1], x.shape[1])
        eigval, eigvec = torch.linalg.eigh(cov)
        keep = eigval > rel_eps * eigval.max().clamp_min(1e-300)
        transform = torch.zeros_like(cov)
        transform[:, keep] = eigvec[:, keep] / eigval[keep].sqrt()
        self.mean.copy_(mean)
        self.transform.copy_(transform)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [n, n_features] → whitened [n, n_features]."""
        return (x - self.mean.to(x.dtype)) @ self.transform.to(x.dtype)


class AdaptiveScaler(torch.nn.BatchNorm1d):
    """Per-channel standardisation that follows a featurizer while it trains (BatchNorm without affine).

    Keeps the relative variance of channels, so high-variance (often slow, large-amplitude) directions stay
    dominant at initialisation; running statistics start from data (:meth:`fit_`), so evaluation is right
    from the first epoch.

    Parameters
    ----------
    n_features : int
        Input width.
    """

    def __init__(self, n_features: int):
        super().__init__(n_features, affine=False)

    @torch.no_grad()
    def fit_(self, features: Tensor, min_var: float = 1e-12) -> "AdaptiveScaler":
        """Set the running mean and variance from data, in place.

        Parameters
        ----------
        features : Tensor
            Training inputs [n_samples, n_features].
        min_var : float
            Floor of the variance, so constant channels do not divide by zero.

        Returns
        -------
        AdaptiveScaler
            ``self``.
        """
        self.running_mean.copy_(features.mean(dim=0))
        self.running_var.copy_(features.var(dim=0).clamp_min(min_var))
        return self


INPUT_NORMS = {"whiten": Whitening, "batchnorm": AdaptiveScaler}


class MLPHead(torch.nn.Module):
    """``[n, in_features] -> [n, n_outputs]``: input normalisation (fit it with
    :func:`cvlearn.models.cv.fit_head_scaler`), then an MLP with SiLU activations.

    ``input_norm="batchnorm"`` suits end-to-end training (the featurizer moves); ``"whiten"`` suits frozen
    embeddings of linear-ish quality.

    Parameters
    ----------
    in_features : int
        Input width (the pooled embedding's n_features; torch's ``Linear`` name).
    n_outputs : int
        Number of CVs.
    hidden : int
        Width of each hidden layer.
    n_hidden_layers : int
        Number of hidden layers (0: a linear head).
    input_norm : {"batchnorm", "whiten"}
        Input normalisation.
    """

    def __init__(self, in_features: int, n_outputs: int, hidden: int = 64, n_hidden_layers: int = 2,
                 input_norm: str = "batchnorm"):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {sorted(INPUT_NORMS)}, got {input_norm!r}")
        if n_outputs < 1 or in_features < 1 or hidden < 1 or n_hidden_layers < 0:
            raise ValueError(
                f"MLPHead sizes must be positive, got in_features={in_features}, n_outputs={n_outputs}, "
                f"hidden={hidden}, n_hidden_layers={n_hidden_layers}"
            )
        self.scaler = INPUT_NORMS[input_norm](in_features)
        layers: list[torch.nn.Module] = []
        width = in_features
        for _ in range(n_hidden_layers):
            layers += [torch.nn.Linear(width, hidden), torch.nn.SiLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, n_outputs))
        self.net = torch.nn.Sequential(*layers)
        self.n_outputs = n_outputs

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [n, in_features] → CVs [n, n_outputs]."""
        return self.net(self.scaler(x))


class SoftmaxHead(MLPHead):
    """``[n, in_features] -> [n, n_states]`` soft state assignments (rows sum to 1): the original VAMPNet
    output (Mardt et al. 2018), for a fuzzy MSM read straight off the CV. The outputs are linearly dependent
    (they sum to 1), so after mean removal one covariance eigenvalue is zero: the VAMP scores' epsilon
    truncation drops it, and ``n_states`` states give at most ``n_states - 1`` non-trivial singular functions.

    Parameters
    ----------
    in_features : int
        Input width.
    n_states : int
        Number of states, at least 2.
    hidden, n_hidden_layers, input_norm
        As in :class:`MLPHead`.
    """

    def __init__(self, in_features: int, n_states: int, hidden: int = 64, n_hidden_layers: int = 2,
                 input_norm: str = "batchnorm"):
        if n_states < 2:
            raise ValueError(f"n_states: expected at least 2 states, found {n_states}")
        super().__init__(in_features, n_states, hidden=hidden, n_hidden_layers=n_hidden_layers, input_norm=input_norm)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [n, in_features] → state probabilities [n, n_states]."""
        return torch.softmax(self.net(self.scaler(x)), dim=-1)


HEADS = ("mlp", "softmax")


def make_head(kind: str, in_features: int, n_outputs: int, **kwargs) -> torch.nn.Module:
    """One switch for the VAMP head, so configs name it by a short kind.

    Parameters
    ----------
    kind : {"mlp", "softmax"}
        :class:`MLPHead` (linear outputs) or :class:`SoftmaxHead` (state assignments).
    in_features : int
        Input width.
    n_outputs : int
        Number of CVs (or states, for ``"softmax"``).
    **kwargs
        Further keyword arguments of the head class.

    Returns
    -------
    torch.nn.Module
        Maps [n, in_features] to [n, n_outputs].
    """
    if kind == "mlp":
        return MLPHead(in_features, n_outputs, **kwargs)
    if kind == "softmax":
        return SoftmaxHead(in_features, n_outputs, **kwargs)
    raise ValueError(f"kind: expected one of {list(HEADS)}, found {kind!r}")
