"""Heads that turn a pooled embedding into CV outputs."""

from __future__ import annotations

import torch
from torch import Tensor


class FeatureScaler(torch.nn.Module):
    """Per-channel standardisation with statistics fitted once on training data (fixed buffers, exportable).

    Pooled GNN embeddings of one molecule vary little between conformations compared with their mean
    (atom-type terms dominate); unscaled, the VAMP covariances fall below epsilon and the gradient dies.
    """

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    @torch.no_grad()
    def fit_(self, features: Tensor, min_std: float = 1e-8) -> "FeatureScaler":
        self.shift.copy_(features.mean(dim=0))
        self.scale.copy_(1.0 / features.std(dim=0).clamp_min(min_std))
        return self

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.shift) * self.scale


class MLPHead(torch.nn.Module):
    """``[n, in_features] -> [n, n_outputs]``: fixed input standardisation, then an MLP with SiLU activations."""

    def __init__(self, in_features: int, n_outputs: int, hidden: int = 64, n_hidden_layers: int = 2):
        super().__init__()
        if n_outputs < 1 or in_features < 1 or hidden < 1 or n_hidden_layers < 0:
            raise ValueError(
                f"MLPHead sizes must be positive, got in_features={in_features}, n_outputs={n_outputs}, "
                f"hidden={hidden}, n_hidden_layers={n_hidden_layers}"
            )
        self.scaler = FeatureScaler(in_features)
        layers: list[torch.nn.Module] = []
        width = in_features
        for _ in range(n_hidden_layers):
            layers += [torch.nn.Linear(width, hidden), torch.nn.SiLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, n_outputs))
        self.net = torch.nn.Sequential(*layers)
        self.n_outputs = n_outputs

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.scaler(x))
