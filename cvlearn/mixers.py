"""Token mixers: ``[n_frames, n_tokens, F] -> [n_frames, F]``."""

from __future__ import annotations

import torch
from torch import Tensor


class SumPool(torch.nn.Module):
    """Sum over tokens: no parameters, invariant to the token order, works for any token count."""

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens.sum(dim=1)
