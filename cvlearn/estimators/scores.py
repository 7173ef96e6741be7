"""Every loss and score the estimators train on or report: VAMP scores (torch, agreeing with deeptime), the
denoising loss of pre-training and the energy + force loss of fine-tuning.

VAMP conventions matched to deeptime 0.4.5 (``deeptime.decomposition.VAMP`` + ``CovarianceKoopmanModel.score``):

* covariances as ``VAMP.covariance_estimator``: ``Covariance(remove_data_mean=True, bessels_correction=False)``,
  i.e. x_0 and x_t are each centred on their own (weighted) mean and sums are divided by N (sum of weights), not N - 1;
* ``numeric.spd_eig`` truncation: eigenvalues of C00 and Ctt with ``|lambda| < epsilon`` are dropped, and if
  the smallest eigenvalue is negative the cutoff is raised to ``max(epsilon, -lambda_min + 1e-16)``;
* the score is ``1 + sum_i s_i**r`` over the min(rank0, rankt) singular values of
  K = C00^{-1/2} C0t Ctt^{-1/2}; the +1 is the constant singular function that mean removal takes out.

One deliberate difference: where deeptime raises ``ZeroRankError`` (all eigenvalues truncated, e.g. a
collapsed network output) we return 1, the score of the constant function, so a training step never crashes.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import torch

from cvlearn.structures.records import collate


def _check_pairs(x0: torch.Tensor, xt: torch.Tensor, weights: torch.Tensor | None) -> None:
    if x0.ndim != 2 or x0.shape != xt.shape:
        raise ValueError(f"x0, xt: expected two [N, d] tensors of the same shape, found {tuple(x0.shape)} and {tuple(xt.shape)}")
    if weights is not None and tuple(weights.shape) != (x0.shape[0],):
        raise ValueError(f"weights: expected shape ({x0.shape[0]},) (one per pair), found {tuple(weights.shape)}")


def covariances(
    x0: torch.Tensor, xt: torch.Tensor, weights: torch.Tensor | None = None, *, reduce=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean-free C00, C0t, Ctt of time-lagged pairs, normalised by the total weight (no Bessel correction).

    ``weights`` (one per pair, e.g. reweighting factors of a biased run) weight both the means and the
    sums, as deeptime's ``Covariance.fit(..., weights=w)`` does. ``reduce`` (``cvlearn.distributed.all_reduce_sum``)
    sums over ranks that each hold a slice of the pairs, in two collectives: 1 + 2d weighted sums (global means),
    then 3d² products centred on them (as in one process). Every rank gets the union's covariances; averaging
    per-rank covariances (or scores) would not. ``reduce`` as ``Tensor -> its sum over ranks``, differentiable.

    Parameters
    ----------
    x0, xt : Tensor [n_pairs, d]
        Features at t and t + lagtime.
    weights : Tensor [n_pairs], optional
    reduce : callable, optional

    Returns
    -------
    c00, c0t, ctt : Tensor [d, d]
    """
    _check_pairs(x0, xt, weights)
    if reduce is not None:
        w, d = torch.ones_like(x0[:, :1]) if weights is None else weights.to(x0.dtype).unsqueeze(1), x0.shape[1]
        first = reduce(torch.cat([w.sum(0), (w * x0).sum(0), (w * xt).sum(0)]))
        x0c, xtc = x0 - first[1:d + 1] / first[0], xt - first[d + 1:] / first[0]
        c = reduce(torch.stack([x0c.T @ (w * x0c), x0c.T @ (w * xtc), xtc.T @ (w * xtc)])) / first[0]
        return c[0], c[1], c[2]
    if weights is None:
        x0c = x0 - x0.mean(dim=0, keepdim=True)
        xtc = xt - xt.mean(dim=0, keepdim=True)
        n = x0.shape[0]
        return x0c.T @ x0c / n, x0c.T @ xtc / n, xtc.T @ xtc / n
    w = weights.to(x0.dtype)
    w = (w / w.sum()).unsqueeze(1)
    x0c = x0 - (w * x0).sum(dim=0, keepdim=True)
    xtc = xt - (w * xt).sum(dim=0, keepdim=True)
    return x0c.T @ (w * x0c), x0c.T @ (w * xtc), xtc.T @ (w * xtc)


COVARIANCE_MODES = ("trunc", "regularize", "clamp")


def inv_sqrt_split(c: torch.Tensor, epsilon: float, mode: str = "trunc") -> torch.Tensor:
    """L = V diag(lambda^{-1/2}) over the kept eigenpairs, so L L^T is the truncated pseudo-inverse of c.

    L is [d, rank]; V L^T is the symmetric C^{-1/2}. ``mode`` as deeptime's VAMPNet ``sym_inverse``:
    ``"trunc"`` drops eigenvalues below epsilon (as ``deeptime.numeric.spd_eig``: the default, and what the
    covariance-based VAMP/TICA estimators do); ``"regularize"`` uses |eig(C + epsilon I)|; ``"clamp"`` uses
    max(eig, epsilon). The last two keep every direction (full rank, smoother gradients, slightly biased).
    ``c``: symmetric covariance [d, d] (float64 in the scores); ``epsilon``: eigenvalue cutoff, same units as c.
    """
    if mode not in COVARIANCE_MODES:
        raise ValueError(f"mode: expected one of {list(COVARIANCE_MODES)}, found {mode!r}")
    if mode == "regularize":
        c = c + epsilon * torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    evals, evecs = torch.linalg.eigh(0.5 * (c + c.T))
    if mode == "regularize":
        evals = evals.abs()
        return evecs * evals.rsqrt().unsqueeze(0)
    if mode == "clamp":
        return evecs * evals.clamp_min(epsilon).rsqrt().unsqueeze(0)
    with torch.no_grad():
        cutoff = float(epsilon)
        evmin = float(evals.min()) if evals.numel() else 0.0
        if evmin < 0:
            cutoff = max(cutoff, -evmin + 1e-16)
        keep = evals.abs() >= cutoff
    return evecs[:, keep] * evals[keep].rsqrt().unsqueeze(0)


def koopman_svd(
    c00: torch.Tensor, c0t: torch.Tensor, ctt: torch.Tensor, epsilon: float = 1e-6, mode: str = "trunc"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(singular values, U, V) of the half-weighted Koopman matrix, slowest first.

    U = C00^{-1/2} U' and V = Ctt^{-1/2} V' ([d, m], m = min(rank0, rankt)) map mean-free features to
    the left/right singular functions, like deeptime's ``instantaneous_coefficients`` (up to sign).

    Parameters
    ----------
    c00, c0t, ctt : Tensor [d, d]
        Covariances from :func:`covariances`.
    epsilon : float
        Eigenvalue cutoff; ``mode`` as in :func:`inv_sqrt_split`.

    Returns
    -------
    singular_values : Tensor [m]
    u, v : Tensor [d, m]
    """
    l0 = inv_sqrt_split(c00, epsilon, mode)
    lt = inv_sqrt_split(ctt, epsilon, mode)
    k = l0.T @ c0t @ lt
    u, s, vh = torch.linalg.svd(k, full_matrices=False)
    m = min(l0.shape[1], lt.shape[1])
    return s[:m], l0 @ u[:, :m], lt @ vh[:m].T


def vamp_score(
    x0: torch.Tensor,
    xt: torch.Tensor,
    r: float = 2,
    epsilon: float = 1e-6,
    dim: int | None = None,
    *,
    weights: torch.Tensor | None = None,
    mode: str = "trunc",
    reduce=None,
) -> torch.Tensor:
    """VAMP-r score of the features (x_t, x_{t+lag}): 1 + sum of the ``dim`` largest singular values ** r.

    Computed in float64 (covariances of float32 network outputs lose digits in the inverse square
    roots); differentiable, so ``-vamp_score`` is the training loss. The singular values are those of
    C00^{-1/2} C0t Ctt^{-1/2}, evaluated in the eigenbases of C00 and Ctt (same singular values, smaller
    matrix when truncation drops dimensions).

    Parameters
    ----------
    x0, xt : Tensor [n_pairs, d]
        Features at t and t + lagtime.
    r : float
        Exponent, >= 1.
    epsilon : float
        Eigenvalue cutoff of the covariance inverses.
    dim : int, optional
        Sum over the ``dim`` largest singular values only.
    weights : Tensor [n_pairs], optional
        Pair weights (e.g. reweighting factors of a biased run).
    mode : {"trunc", "regularize", "clamp"}
        Covariance inverse, see :func:`inv_sqrt_split`.
    reduce : callable, optional
        Sum over ranks (:func:`covariances`): score of the union of the ranks' pairs (not the mean of their scores).

    Returns
    -------
    Tensor []
        The score (float64, differentiable), in [1, 1 + d].
    """
    if isinstance(r, bool) or not isinstance(r, numbers.Real) or r < 1:
        raise ValueError(f"r: expected a number >= 1 (VAMP-r), found {r!r}")
    _check_dim(dim)
    x0, xt, weights = _as_f64(x0, xt, weights)
    c00, c0t, ctt = covariances(x0, xt, weights, reduce=reduce)
    k = inv_sqrt_split(c00, epsilon, mode).T @ c0t @ inv_sqrt_split(ctt, epsilon, mode)
    if r == 2 and dim is None:
        return 1.0 + (k * k).sum()  # = sum s_i**2; avoids the SVD and its gradient
    s = torch.linalg.svdvals(k)
    if dim is not None:
        s = s[:dim]
    return 1.0 + (s**r).sum()


def vamp2_loss(x0: torch.Tensor, xt: torch.Tensor, epsilon: float = 1e-6, **kwargs) -> torch.Tensor:
    """Training loss: minus the VAMP-2 score (float64 scalar, differentiable); arguments as :func:`vamp_score`."""
    return -vamp_score(x0, xt, r=2, epsilon=epsilon, **kwargs)


def deeptime_vamp_score(
    list_of_arrays: Sequence[np.ndarray | torch.Tensor], lagtime: int, r: float = 2, epsilon: float = 1e-6
) -> float:
    """Independent reference: deeptime's VAMP fitted on per-trajectory CV outputs, scored with VAMP-r.

    Parameters
    ----------
    list_of_arrays : sequence of array [T_i, n_features]
        Per-trajectory features.
    lagtime : int
        Lag time in frames.
    r, epsilon : float
        VAMP-r exponent; eigenvalue cutoff of the covariance inverses.

    Returns
    -------
    float
        The VAMP-r score (including the constant function's 1).
    """
    from deeptime.decomposition import VAMP

    arrays = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in list_of_arrays]
    arrays = [a.astype(np.float64).reshape(len(a), -1) for a in arrays if len(a) > lagtime]  # deeptime skips these too
    if not arrays:
        raise ValueError(f"lagtime {lagtime} frames ≥ length of every trajectory "
                         f"(lengths {[len(a) for a in list_of_arrays]})")
    model = VAMP(lagtime=lagtime, epsilon=epsilon).fit(arrays).fetch_model()
    return float(model.score(r, epsilon=epsilon))


def _as_f64(x0, xt, weights):
    x0, xt = torch.as_tensor(x0).to(torch.float64), torch.as_tensor(xt).to(torch.float64)
    return x0, xt, None if weights is None else torch.as_tensor(weights).to(device=x0.device, dtype=torch.float64)


def _check_dim(dim) -> None:
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ValueError(f"dim: expected None or an integer >= 1, found {dim!r}")


def vampe_score(
    x0: torch.Tensor,
    xt: torch.Tensor,
    epsilon: float = 1e-6,
    dim: int | None = None,
    *,
    weights: torch.Tensor | None = None,
    mode: str = "trunc",
    reduce=None,
) -> torch.Tensor:
    """VAMP-E score (Wu & Noé 2020, eq. 30), mean-free: 1 + tr(2 S Uᵀ C0t V − S Uᵀ C00 U S Vᵀ Ctt V).

    U, V, S are the Koopman model estimated from the same pairs (singular values <= epsilon dropped, as in
    deeptime's ``vampnet`` VAMPE loss), so on the fitting data the value equals VAMP-2 where no
    truncation happens; its gradient differs, and scored on other data it measures the Koopman model's
    approximation error (see :func:`vamp_score_cv`). deeptime's numpy ``CovarianceKoopmanModel.score('E')``
    is the reference; its torch ``vampnet`` VAMPE transposes the Koopman matrix before pairing U and V,
    which gives slightly different numbers for non-reversible data. Arguments and float64 result as :func:`vamp_score`.
    """
    _check_dim(dim)
    x0, xt, weights = _as_f64(x0, xt, weights)
    c00, c0t, ctt = covariances(x0, xt, weights, reduce=reduce)
    s, u, v = koopman_svd(c00, c0t, ctt, epsilon, mode)
    keep = s > epsilon
    s, u, v = s[keep], u[:, keep], v[:, keep]
    if dim is not None:
        s, u, v = s[:dim], u[:, :dim], v[:, :dim]
    sd = torch.diag(s)
    return 1.0 + torch.trace(2.0 * sd @ u.T @ c0t @ v - sd @ u.T @ c00 @ u @ sd @ v.T @ ctt @ v)


def vamp1_score(x0, xt, epsilon: float = 1e-6, dim: int | None = None, *, weights=None, mode="trunc", reduce=None):
    """VAMP-1: 1 + sum of singular values (nuclear norm of the half-weighted Koopman matrix); see :func:`vamp_score`."""
    return vamp_score(x0, xt, r=1, epsilon=epsilon, dim=dim, weights=weights, mode=mode, reduce=reduce)


def vamp2_score(x0, xt, epsilon: float = 1e-6, dim: int | None = None, *, weights=None, mode="trunc", reduce=None):
    """VAMP-2: 1 + sum of squared singular values (kinetic variance for reversible dynamics); see :func:`vamp_score`."""
    return vamp_score(x0, xt, r=2, epsilon=epsilon, dim=dim, weights=weights, mode=mode, reduce=reduce)


SCORES = {"vamp1": vamp1_score, "vamp2": vamp2_score, "vampe": vampe_score}


def score_function(name: str):
    """Score ``f(x0, xt, epsilon, dim=None, *, weights=None, mode="trunc", reduce=None)`` of "vamp1"|"vamp2"|"vampe"."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in SCORES:
        raise ValueError(f"score: expected one of {list(SCORES)}, found {name!r}")
    return SCORES[key]


@torch.no_grad()
def vamp_score_cv(
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    r: float | str = 2,
    epsilon: float = 1e-6,
    dim: int | None = None,
    *,
    train_weights: torch.Tensor | None = None,
    test_weights: torch.Tensor | None = None,
) -> float:
    """Cross-validated VAMP-r / VAMP-E: Koopman model (U, V, S) from ``train`` pairs, scored on ``test``
    covariances (Wu & Noé 2020 eqs. 30/33), as ``model.score(r, test_model=...)`` of deeptime.

    Unlike re-fitting on the test data, this cannot reward a model for test-set noise; VAMP-E in
    particular goes down when the model over-fits.

    Parameters
    ----------
    train, test : (Tensor [n, d], Tensor [n, d])
        Pairs (x_t, x_{t+lagtime}) to fit the Koopman model on, and to score it on.
    r : float or str
        VAMP-r exponent, or ``"vampe"``.
    epsilon, dim
        As in :func:`vamp_score`.
    train_weights, test_weights : Tensor [n], optional

    Returns
    -------
    float
    """
    _check_dim(dim)
    a0, at, train_weights = _as_f64(*train, train_weights)
    b0, bt, test_weights = _as_f64(*test, test_weights)
    s, u, v = koopman_svd(*covariances(a0, at, train_weights), epsilon=epsilon)
    if dim is not None:
        s, u, v = s[:dim], u[:, :dim], v[:, :dim]
    c00, c0t, ctt = covariances(b0, bt, test_weights)
    if isinstance(r, str):
        key = r.lower().replace("vamp", "").replace("-", "")
        if key == "e":
            sd = torch.diag(s)
            return float(1.0 + torch.trace(2.0 * sd @ u.T @ c0t @ v - sd @ u.T @ c00 @ u @ sd @ v.T @ ctt @ v))
        r = float(key)
    a = u @ _spd_inv_sqrt(u.T @ c00 @ u, epsilon)
    c = v @ _spd_inv_sqrt(v.T @ ctt @ v, epsilon)
    sv = torch.linalg.svdvals(a.T @ c0t @ c)
    return float(1.0 + (sv**r).sum())


def _spd_inv_sqrt(c: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Symmetric C^{-1/2} with deeptime's ``spd_inv_sqrt`` truncation (dropped directions map to 0)."""
    evals, evecs = torch.linalg.eigh(0.5 * (c + c.T))
    cutoff = float(epsilon)
    if evals.numel() and float(evals.min()) < 0:
        cutoff = max(cutoff, -float(evals.min()) + 1e-16)
    keep = evals.abs() >= cutoff
    return evecs[:, keep] @ torch.diag(evals[keep].rsqrt()) @ evecs[:, keep].T


# -- losses of the structure estimators -------------------------------------------------------------------------
def denoising_loss(predicted_noise: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted unit Gaussian noise (predicting zero scores 1.0).

    Parameters
    ----------
    predicted_noise, noise : Tensor [n_atoms, 3]
        Per-atom noise ``ε`` (dimensionless: the displacement in units of σ) and its prediction.

    Returns
    -------
    Tensor []
        The loss, averaged over atoms and components.
    """
    return torch.nn.functional.mse_loss(predicted_noise, noise)


def energy_force_loss(model, structures: list, energy_weight: float, force_weight: float, dtype: torch.dtype,
                      device: torch.device) -> tuple[torch.Tensor, dict]:
    """Sum over a batch of the per-structure fine-tuning losses, and the batch's error sums.

    Per structure s with n_s atoms: ``energy_weight * ((E_pred - E) / n_s)^2 + force_weight * mean_i |F_pred,i -
    F_i|^2 / 3`` in eV and eV/Å, so a big molecule does not outweigh a small one.

    Parameters
    ----------
    model : EnergyModel
        Computes energies (eV) and forces (eV/Å) of a batch.
    structures : list of Structure
        Labelled structures (energy and forces).
    energy_weight, force_weight : float
        Weights of the two terms.
    dtype, device
        Where and in which precision the batch is evaluated.

    Returns
    -------
    loss : Tensor []
        Sum of the per-structure losses (float64, differentiable).
    sums : dict
        ``energy_abs`` (eV), ``energy_abs_per_atom`` (eV), ``force_abs`` (eV/Å) summed over the batch, and
        ``n_force_components``.
    """
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
