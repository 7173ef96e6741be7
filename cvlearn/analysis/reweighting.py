"""Frame weights from a bias log, and unbiased free energies from weighted frames.

The one owner of the reweighting physics: a frame sampled under bias V(s, t) carries the weight
exp(β(V − c(t))) (c = metadynamics' rct; 0 for a static or quasi-static OPES bias). ``cvlearn.data.lagged``
uses these functions to weight time-lagged pairs.
"""

from __future__ import annotations

import numpy as np

from cvlearn.units import kt_kjmol


def well_tempered_rct(bias_grid_kjmol: np.ndarray, bias_factor: float, temperature_k: float) -> float:
    """c(t) of Tiwary & Parrinello (2015) from the bias on a uniform grid of the CV space (kJ/mol).

    c(t) = kT ln[ ∫ exp(γ/(γ-1) V/kT) ds / ∫ exp(V/((γ-1) kT)) ds ]; frames are then weighted by exp((V - c)/kT).

    Parameters
    ----------
    bias_grid_kjmol : np.ndarray
        Bias V(s, t) at one time on a uniform grid of the CV space, any shape (flattened), kJ/mol.
    bias_factor : float
        Well-tempered bias factor γ > 1.
    temperature_k : float
        Temperature, K.

    Returns
    -------
    float
        c(t), kJ/mol.
    """
    kt = kt_kjmol(temperature_k)
    v = np.asarray(bias_grid_kjmol, dtype=np.float64).ravel() / kt
    g = float(bias_factor)
    a, b = g / (g - 1.0) * v, v / (g - 1.0)
    return kt * (np.log(np.sum(np.exp(a - a.max()))) + a.max() - np.log(np.sum(np.exp(b - b.max()))) - b.max())


def log_weights_from_bias(bias_kjmol: np.ndarray, temperature_k: float,
                          rct_kjmol: np.ndarray | None = None) -> np.ndarray:
    """β(V − c) per frame: the log of each frame's reweighting factor.

    Parameters
    ----------
    bias_kjmol : np.ndarray
        ``[n_frames]`` bias V(s_t, t) in kJ/mol.
    temperature_k : float
        Temperature of the run (K).
    rct_kjmol : np.ndarray or None
        ``[n_frames]`` c(t) in kJ/mol (well-tempered metadynamics); None for a static or OPES bias.

    Returns
    -------
    np.ndarray
        ``[n_frames]`` float64, dimensionless.
    """
    if not temperature_k > 0:
        raise ValueError(f"temperature_k: expected a positive temperature, found {temperature_k!r}")
    v = np.asarray(bias_kjmol, dtype=np.float64)
    if rct_kjmol is not None:
        v = v - np.asarray(rct_kjmol, dtype=np.float64)
    return v / kt_kjmol(temperature_k)


def weights_from_log(log_weights: np.ndarray, normalise: bool = True) -> np.ndarray:
    """exp(log w), shifted by max(log w) so that no exponential overflows.

    Parameters
    ----------
    log_weights : np.ndarray
        ``[n_frames]`` β(V − c).
    normalise : bool
        True: weights sum to 1. False: the largest weight is 1.

    Returns
    -------
    np.ndarray
        ``[n_frames]`` float64 weights.
    """
    log_w = np.asarray(log_weights, dtype=np.float64)
    w = np.exp(log_w - log_w.max())
    return w / w.sum() if normalise else w


def metad_weights(bias_kjmol: np.ndarray, rct_kjmol: np.ndarray, temperature_k: float) -> np.ndarray:
    """Normalised weights exp((V(s_t, t) - c(t)) / kT) for frames of a well-tempered metadynamics run.

    Parameters
    ----------
    bias_kjmol, rct_kjmol : np.ndarray
        ``[n_frames]`` bias and c(t) (kJ/mol).
    temperature_k : float

    Returns
    -------
    np.ndarray
        ``[n_frames]`` weights summing to 1.
    """
    return weights_from_log(log_weights_from_bias(bias_kjmol, temperature_k, rct_kjmol))


def delta_f_kjmol(in_a: np.ndarray, in_b: np.ndarray, weights: np.ndarray, temperature_k: float) -> float:
    """F(A) - F(B) = -kT ln(P_A / P_B) from boolean state masks and frame weights.

    Parameters
    ----------
    in_a, in_b : np.ndarray
        Boolean masks ``[n_frames]`` of the frames in states A and B.
    weights : np.ndarray
        ``[n_frames]`` frame weights (e.g. exp(β(V − c)); unnormalised is fine).
    temperature_k : float
        Temperature, K.

    Returns
    -------
    float
        ΔF in kJ/mol; NaN when either state has zero weight.
    """
    weights = np.asarray(weights, dtype=np.float64)
    p_a, p_b = weights[np.asarray(in_a)].sum(), weights[np.asarray(in_b)].sum()
    if p_a <= 0 or p_b <= 0:
        return float("nan")
    return float(-kt_kjmol(temperature_k) * np.log(p_a / p_b))


def free_energy_surface(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None, temperature_k: float,
                        bins: int = 36, range_xy=((-np.pi, np.pi), (-np.pi, np.pi))):
    """Weighted 2-D histogram → F(x, y) in kJ/mol (minimum 0, NaN where unvisited), with bin edges.

    Parameters
    ----------
    x, y : np.ndarray
        ``[n_frames]`` coordinates (default range ±π: torsions in radians).
    weights : np.ndarray or None
        ``[n_frames]`` frame weights; None for an unbiased run.
    temperature_k : float
        Temperature, K.
    bins, range_xy
        Bins per axis and ``((x_min, x_max), (y_min, y_max))``.

    Returns
    -------
    fes, x_edges, y_edges : np.ndarray
        F ``[bins, bins]`` (kJ/mol, indexed ``[x_bin, y_bin]``) and edges ``[bins + 1]`` each.
    """
    hist, xe, ye = np.histogram2d(x, y, bins=bins, range=range_xy, weights=weights, density=True)
    with np.errstate(divide="ignore"):
        fes = -kt_kjmol(temperature_k) * np.log(hist)
    fes[~np.isfinite(fes)] = np.nan
    return fes - np.nanmin(fes), xe, ye


def opes_weights(bias_kjmol: np.ndarray, temperature_k: float) -> np.ndarray:
    """Normalised weights exp(V(s_t) / kT) for frames of an OPES run (quasi-static bias: no c(t) needed).

    Parameters
    ----------
    bias_kjmol : np.ndarray
        ``[n_frames]`` bias (kJ/mol).
    temperature_k : float

    Returns
    -------
    np.ndarray
        ``[n_frames]`` weights summing to 1.
    """
    return weights_from_log(log_weights_from_bias(bias_kjmol, temperature_k))


def free_energy_profile(x: np.ndarray, weights: np.ndarray | None, temperature_k: float, bins: int = 50,
                        range_x: tuple[float, float] | None = None):
    """Weighted 1-D histogram → F(x) in kJ/mol (minimum 0, NaN where unvisited) and bin centres.

    Parameters
    ----------
    x : np.ndarray
        ``[n_frames]`` values of one CV.
    weights : np.ndarray or None
        ``[n_frames]`` frame weights; None for an unbiased run.
    temperature_k : float
        Temperature, K.
    bins, range_x
        Bin count and ``(x_min, x_max)`` (None: the data range).

    Returns
    -------
    fes, centres : np.ndarray
        F ``[bins]`` (kJ/mol) and bin centres ``[bins]``.
    """
    hist, edges = np.histogram(x, bins=bins, range=range_x, weights=weights, density=True)
    with np.errstate(divide="ignore"):
        fes = -kt_kjmol(temperature_k) * np.log(hist)
    fes[~np.isfinite(fes)] = np.nan
    return fes - np.nanmin(fes), 0.5 * (edges[1:] + edges[:-1])
