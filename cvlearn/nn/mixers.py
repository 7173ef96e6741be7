"""Token mixers: ``[n_frames, n_tokens, F] -> [n_frames, F]``.

* :class:`SumPool` — no parameters, any token count, order invariant;
* :class:`MLPMixer` — token-mixing + channel-mixing MLPs (Tolstikhin et al. 2021); the token-mixing
  weights have one row per token, so the token count is fixed at construction;
* :class:`AttentionMixer` — pre-norm transformer encoder layers over tokens; any token count.

Attention is written out by hand rather than through ``torch.nn.TransformerEncoderLayer``: in eval mode
that layer switches to a fused "fast path" kernel whose numbers differ from the scripted/training path and
which is not twice differentiable, while an exported CV needs forces (d CV / d positions) and identical
numbers in Python, TorchScript and OpenMM.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

READOUTS = ("sum", "mean")


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, found {value!r}")


def _check_readout(readout: str, allowed=READOUTS) -> None:
    if readout not in allowed:
        raise ValueError(f"readout: expected one of {list(allowed)}, found {readout!r}")


class SumPool(torch.nn.Module):
    """Sum over tokens: no parameters, invariant to the token order, works for any token count.

    The baseline every learned mixer must beat; with residue tokens it equals pooling all atoms.
    Takes no constructor parameters; ``forward`` maps tokens ``[n_frames, n_tokens, n_features]`` to
    ``[n_frames, n_features]``.
    """

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` [n_frames, n_tokens, n_features] → [n_frames, n_features]."""
        return tokens.sum(dim=1)


class _MLP(torch.nn.Module):
    def __init__(self, n_in: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = torch.nn.Linear(n_in, hidden)
        self.fc2 = torch.nn.Linear(hidden, n_in)
        self.act = torch.nn.GELU()
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class MixerBlock(torch.nn.Module):
    """x + TokenMLP(LN(x))ᵀ, then x + ChannelMLP(LN(x)): residual, pre-norm; shape-preserving.

    Parameters
    ----------
    n_tokens : int
        Token count (fixed: the token MLP has one input per token).
    n_features : int
        Features per token; input and output are ``[n_frames, n_tokens, n_features]``.
    token_hidden, channel_hidden : int
        Hidden widths of the token-mixing and channel-mixing MLPs.
    dropout : float
        Dropout probability inside both MLPs.
    """

    def __init__(self, n_tokens: int, n_features: int, token_hidden: int, channel_hidden: int, dropout: float):
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(n_features)
        self.token_mlp = _MLP(n_tokens, token_hidden, dropout)
        self.norm2 = torch.nn.LayerNorm(n_features)
        self.channel_mlp = _MLP(n_features, channel_hidden, dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [n_frames, n_tokens, n_features] → same shape."""
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class MLPMixer(torch.nn.Module):
    """MLP-Mixer over residue tokens; ``n_tokens`` is fixed at construction (token-mixing weights are per token).

    Residue tokens come in sequence order, so token mixing can learn position-specific couplings that a
    sum cannot. Readout after a final LayerNorm: sum (default, like :class:`SumPool`) or mean over tokens.

    Parameters
    ----------
    n_tokens : int
        Number of tokens every input has.
    n_features : int
        Features per token.
    n_layers : int
        Number of mixer blocks.
    token_hidden, channel_hidden : int, optional
        Hidden widths of the token-mixing and channel-mixing MLPs (default ``max(4, 2 n_tokens)`` and
        ``2 n_features``).
    dropout : float
        Dropout probability in [0, 1).
    readout : {"sum", "mean"}
        Pooling over tokens after the last block.
    """

    def __init__(self, n_tokens: int, n_features: int, n_layers: int = 2, token_hidden: int | None = None,
                 channel_hidden: int | None = None, dropout: float = 0.0, readout: str = "sum"):
        super().__init__()
        token_hidden = token_hidden if token_hidden is not None else max(4, 2 * n_tokens)
        channel_hidden = channel_hidden if channel_hidden is not None else 2 * n_features
        _check_sizes(n_tokens=n_tokens, n_features=n_features, n_layers=n_layers, token_hidden=token_hidden,
                     channel_hidden=channel_hidden)
        _check_readout(readout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), found {dropout!r}")
        self.n_tokens = n_tokens
        self.n_features = n_features
        self.readout = readout
        self.blocks = torch.nn.ModuleList(
            [MixerBlock(n_tokens, n_features, token_hidden, channel_hidden, dropout) for _ in range(n_layers)])
        self.norm = torch.nn.LayerNorm(n_features)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` [n_frames, n_tokens, n_features] → [n_frames, n_features]; other shapes raise ValueError."""
        if tokens.dim() != 3 or tokens.shape[1] != self.n_tokens or tokens.shape[2] != self.n_features:
            raise ValueError(f"MLPMixer: expected tokens [n_frames, {self.n_tokens}, {self.n_features}], "
                             f"found {list(tokens.shape)}")
        x = tokens
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x.mean(dim=1) if self.readout == "mean" else x.sum(dim=1)


class SelfAttentionLayer(torch.nn.Module):
    """Pre-norm transformer encoder layer: x + MHA(LN(x)), then x + FF(LN(x)); written out by hand so
    scripted, eager and OpenMM numbers agree and it stays twice differentiable.

    Parameters
    ----------
    n_features : int
        Features per token; input and output are ``[n_frames, n_tokens, n_features]``.
    n_heads : int
        Attention heads; must divide ``n_features`` (else ``ValueError``).
    ff_hidden : int
        Hidden width of the feed-forward MLP.
    dropout : float
        Dropout probability on attention weights, attention output and the feed-forward MLP.
    """

    def __init__(self, n_features: int, n_heads: int, ff_hidden: int, dropout: float):
        super().__init__()
        if n_features % n_heads != 0:
            raise ValueError(f"n_heads: expected a divisor of n_features={n_features}, found {n_heads}")
        self.n_heads = n_heads
        self.head_dim = n_features // n_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.norm1 = torch.nn.LayerNorm(n_features)
        self.qkv = torch.nn.Linear(n_features, 3 * n_features)
        self.out = torch.nn.Linear(n_features, n_features)
        self.norm2 = torch.nn.LayerNorm(n_features)
        self.ff = _MLP(n_features, ff_hidden, dropout)
        self.drop = torch.nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` [n_frames, n_tokens, n_features] → same shape."""
        b, n, f = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [b, heads, n, head_dim]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        y = (self.drop(attn) @ v).transpose(1, 2).reshape(b, n, f)
        x = x + self.drop(self.out(y))
        return x + self.ff(self.norm2(x))


class AttentionMixer(torch.nn.Module):
    """Self-attention over tokens; works for any token count (no positional encoding: a set model).

    ``readout="cls"`` prepends a learned CLS token and returns its final state; ``"mean"``/``"sum"`` pool the
    token states. A final LayerNorm keeps the head's input scale independent of depth.

    Parameters
    ----------
    n_features : int
        Features per token; a multiple of ``n_heads``.
    n_layers : int
        Number of pre-norm encoder layers.
    n_heads : int
        Attention heads per layer.
    ff_hidden : int, optional
        Hidden width of the feed-forward MLP (default ``2 n_features``).
    dropout : float
        Dropout probability in [0, 1).
    readout : {"mean", "sum", "cls"}
        How the token states become one vector.
    """

    def __init__(self, n_features: int, n_layers: int = 2, n_heads: int = 4, ff_hidden: int | None = None,
                 dropout: float = 0.0, readout: str = "mean"):
        super().__init__()
        ff_hidden = ff_hidden if ff_hidden is not None else 2 * n_features
        _check_sizes(n_features=n_features, n_layers=n_layers, n_heads=n_heads, ff_hidden=ff_hidden)
        _check_readout(readout, READOUTS + ("cls",))
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), found {dropout!r}")
        self.n_features = n_features
        self.readout = readout
        self.use_cls = readout == "cls"
        self.cls = torch.nn.Parameter(torch.randn(1, 1, n_features) * 0.02 if self.use_cls else torch.zeros(1, 1, 0),
                                      requires_grad=self.use_cls)
        self.layers = torch.nn.ModuleList(
            [SelfAttentionLayer(n_features, n_heads, ff_hidden, dropout) for _ in range(n_layers)])
        self.norm = torch.nn.LayerNorm(n_features)

    def forward(self, tokens: Tensor) -> Tensor:
        """``tokens`` [n_frames, n_tokens, n_features] → [n_frames, n_features]; other shapes raise ValueError."""
        if tokens.dim() != 3 or tokens.shape[2] != self.n_features:
            raise ValueError(f"AttentionMixer: expected tokens [n_frames, n_tokens, {self.n_features}], "
                             f"found {list(tokens.shape)}")
        x = tokens
        if self.use_cls:
            x = torch.cat([self.cls.to(x.dtype).expand(x.shape[0], 1, self.n_features), x], dim=1)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        if self.use_cls:
            return x[:, 0]
        return x.mean(dim=1) if self.readout == "mean" else x.sum(dim=1)


MIXERS = ("sum", "mlp_mixer", "attention")


def make_mixer(kind: str, n_features: int, n_tokens: int | None = None, **kwargs) -> torch.nn.Module:
    """One switch for the token mixer, so configs and baselines name it by a short kind.

    Parameters
    ----------
    kind : {"sum", "mlp_mixer", "attention"}
        :class:`SumPool`, :class:`MLPMixer` or :class:`AttentionMixer`.
    n_features : int
        Features per token.
    n_tokens : int, optional
        Token count; required by ``"mlp_mixer"``, ignored otherwise.
    **kwargs
        Further keyword arguments of the mixer class.

    Returns
    -------
    torch.nn.Module
        Maps tokens [n_frames, n_tokens, n_features] to [n_frames, n_features].
    """
    if kind == "sum":
        return SumPool()
    if kind == "mlp_mixer":
        if n_tokens is None:
            raise ValueError("n_tokens: the MLP-Mixer needs the token count, found None")
        return MLPMixer(n_tokens, n_features, **kwargs)
    if kind == "attention":
        return AttentionMixer(n_features, **kwargs)
    raise ValueError(f"kind: expected one of {list(MIXERS)}, found {kind!r}")
