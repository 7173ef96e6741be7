"""Dirichlet-form smoothness penalty: CVs made to be biased (a smooth CV gives bounded, well-behaved bias forces).

For reversible (overdamped) dynamics the slow eigenfunctions minimise the Dirichlet form E[|∇ₓ s|²] at fixed
variance, so penalising that ratio pulls a learned CV towards the slow functions' smoothness instead of letting it
jump steeply between states (a steep CV is as slow by VAMP but gives huge forces when biased). The penalty is the
*whitened* Dirichlet form of the lobe outputs s ``[B, k]``::

    P = tr(C⁻¹ G),   G_kl = E[∇ₓ s_k · ∇ₓ s_l],   C = Cov(s)          (nm⁻²)

which equals Σ_k E[|∇ₓ s̃_k|²] for the whitened outputs s̃ = C^{-1/2}(s - E[s]), and Σ_k E[|∇ₓ s_k|²] / Var(s_k)
when the outputs are uncorrelated. It is unchanged by any invertible affine map s → A s + b, so penalising the lobe's
outputs (before the VAMP projection) is the same as penalising the CVs the fetched model exports (a full-rank linear
map of them; when the projection drops outputs below epsilon, P bounds the kept CVs' sum from above).
G is averaged over a random sub-batch of frames, C over the batch's frames (``reference_outputs``); the gradients keep
their graph (``create_graph=True``) so P trains the lobe. The variational statement holds for diffusion that is
isotropic in the input coordinates (overdamped Langevin, equal masses and friction); for heavy atoms of a peptide it is
a guide, not an identity, so λ is a knob to be measured (benchmarks/smoothness.py), not a derived constant.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["SmoothnessTerm", "dirichlet_penalty", "gradient_norms"]


def _check_positions(positions_nm: Tensor) -> None:
    if positions_nm.ndim != 3 or positions_nm.shape[-1] != 3 or positions_nm.shape[0] < 2:
        raise ValueError(f"positions_nm: expected shape [n_frames >= 2, n_atoms, 3], found {tuple(positions_nm.shape)}")


def _jacobian(fn: Callable[[Tensor], Tensor], positions_nm: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
    """Outputs ``[B, k]`` and per-frame gradients ``[B, k, 3 n]``: frames are independent, so the gradient of the
    batch sum of output k is every frame's own gradient of it."""
    x = positions_nm.detach().requires_grad_(True)
    s = fn(x)
    if s.ndim != 2 or s.shape[0] != x.shape[0]:
        raise ValueError(f"lobe outputs: expected shape [{x.shape[0]}, n_out], found {tuple(s.shape)}")
    grads = [torch.autograd.grad(s[:, k].sum(), x, create_graph=create_graph, retain_graph=True)[0]
             for k in range(s.shape[1])]
    return s, torch.stack(grads, 1).reshape(x.shape[0], s.shape[1], -1)


def dirichlet_penalty(lobe_on_positions: Callable[[Tensor], Tensor], positions_nm: Tensor, *,
                      reference_outputs: Tensor | None = None, epsilon: float = 1e-6,
                      create_graph: bool = True) -> Tensor:
    """Whitened Dirichlet form tr(C⁻¹ G) of the outputs of ``lobe_on_positions`` on these frames (see module doc).

    Parameters
    ----------
    lobe_on_positions : callable
        Positions nm ``[B, n_atoms, 3]`` → outputs ``[B, k]``, each frame independent of the others (no batch
        statistics in the forward pass).
    positions_nm : Tensor [B, n_atoms, 3]
        The frames (B > k), nm.
    reference_outputs : Tensor [M, k], optional
        Outputs whose covariance C normalises the penalty (e.g. the whole training batch's, M > k); None: those of
        ``positions_nm``. A few frames of a metastable system often sit in one state, and their covariance then
        measures the fast within-state noise, so the ratio would reward a CV that follows that noise.
    epsilon : float
        Ridge on C relative to its mean diagonal, so a constant output does not divide by zero.
    create_graph : bool
        Keep the graph of the gradients, so the penalty can be back-propagated into the lobe's parameters.

    Returns
    -------
    Tensor
        Scalar (float64), nm⁻²: Σ_k E[|∇ₓ s̃_k|²] of the whitened outputs s̃.
    """
    _check_positions(positions_nm)
    s, jac = _jacobian(lobe_on_positions, positions_nm, create_graph)
    s, jac = s.double(), jac.double()
    ref = s if reference_outputs is None else reference_outputs.double()
    n, k = ref.shape
    if n <= k or ref.shape[1] != s.shape[1]:
        raise ValueError(f"reference_outputs: expected [M > {s.shape[1]}, {s.shape[1]}] outputs, "
                         f"found {tuple(ref.shape)}")
    gram = torch.einsum("bkd,bld->kl", jac, jac) / len(s)
    centred = ref - ref.mean(0)
    cov = centred.T @ centred / n
    cov = cov + epsilon * cov.diagonal().mean().clamp_min(1e-30) * torch.eye(k, dtype=cov.dtype, device=cov.device)
    return torch.linalg.solve(cov, gram).diagonal().sum()


def gradient_norms(cv: Callable[[Tensor], Tensor], positions_nm: Tensor, chunk_size: int = 256) -> Tensor:
    """|∇ₓ s_k| per frame and output (nm⁻¹ times the CV's unit), for measuring how steep a CV is.

    Parameters
    ----------
    cv : callable
        Positions nm ``[B, n_atoms, 3]`` → ``[B, k]``, frames independent (eval mode).
    positions_nm : Tensor [N, n_atoms, 3]
    chunk_size : int
        Frames per call.

    Returns
    -------
    Tensor [N, k]
    """
    out = []
    for chunk in torch.split(positions_nm, chunk_size):
        out.append(_jacobian(cv, chunk, create_graph=False)[1].detach().norm(dim=-1))
    return torch.cat(out)


class SmoothnessTerm:
    """``weight * dirichlet_penalty`` on a random sub-batch of a training batch's frames (used by VAMPNet).

    Parameters
    ----------
    weight : float
        λ, in units of the loss per nm⁻².
    n_frames : int
        Frames per step (at least 2).
    positions_nm : Tensor [N, n_atoms, 3]
        Positions of every training frame, in the order of the concatenated training inputs.
    featurize : callable, optional
        Positions → lobe inputs (e.g. a frozen featurizer's tokens); None: the lobe takes positions.
    seed : int
        The sub-batch generator's seed.
    device : str or torch.device
    """

    def __init__(self, weight: float, n_frames: int, positions_nm: Tensor, featurize: Callable | None = None,
                 seed: int = 0, device="cpu"):
        if not (weight >= 0 and float(weight) < float("inf")) or isinstance(weight, bool):
            raise ValueError(f"smoothness: expected a finite number >= 0, found {weight!r}")
        if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
            raise ValueError(f"smoothness_frames: expected an integer >= 2, found {n_frames!r}")
        _check_positions(positions_nm)
        self.weight, self.n_frames, self.positions, self.featurize = float(weight), n_frames, positions_nm, featurize
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, lobe: torch.nn.Module, frame_indices: Tensor, reference_inputs: Tensor | None = None) -> Tensor:
        """λ · P: G on ``n_frames`` frames drawn from ``frame_indices`` (CPU indices into ``positions_nm``), C of
        the lobe's outputs on ``reference_inputs`` (lobe inputs ``[M, ...]``, e.g. the batch's) when given.

        Both pass through the lobe in the same mode (batch norm on its running statistics): normalising eval-mode
        gradients by train-mode outputs lets the optimiser shrink the ratio by inflating the batch statistics only."""
        pick = frame_indices[torch.randperm(len(frame_indices), generator=self.generator)[:self.n_frames]]
        fn = lobe if self.featurize is None else (lambda x: lobe(self.featurize(x)))
        # Batch norm in training mode couples the frames (and would move its running statistics on this
        # sub-batch): run it on its running statistics, as the exported CV does, for this pass only.
        norms = [m for m in lobe.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training]
        for m in norms:
            m.eval()
        try:
            ref = None if reference_inputs is None else lobe(reference_inputs)
            return self.weight * dirichlet_penalty(fn, self.positions[pick].to(self.device), reference_outputs=ref)
        finally:
            for m in norms:
                m.train()
