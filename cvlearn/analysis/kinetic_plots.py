"""PNG figures for kinetic validation: VAMP-2 curves, implied timescales, CK test, CVs over observables, FES."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cvlearn.analysis.plots import _save  # noqa: E402


def plot_vamp_curves(by_lag: dict, by_dim: dict, dt_ps: float, path: str | Path) -> None:
    """VAMP-2 against lag time (ps) and against the number of CVs used."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot(np.asarray(by_lag["lags"]) * dt_ps, by_lag["vamp2"], "o-")
    a.set(xlabel="lag time (ps)", ylabel="VAMP-2", xscale="log")
    b.plot(by_dim["dims"], by_dim["vamp2"], "o-")
    b.set(xlabel="number of CVs", ylabel="VAMP-2")
    _save(fig, path)


def plot_implied_timescales(its: dict, path: str | Path) -> None:
    """Implied timescales (ps) against lag (ps); the grey region is timescale < lag (not resolved)."""
    fig, ax = plt.subplots(figsize=(5, 3.8))
    lags = np.asarray(its["lags_ps"])
    ts = np.asarray(its["timescales_ps"], dtype=float)
    for k in range(ts.shape[1]):
        ax.plot(lags, ts[:, k], "o-", label=f"process {k + 1}")
    ax.fill_between(lags, lags.min() * 0.5, lags, color="0.8")
    ax.set(xlabel="lag time (ps)", ylabel="implied timescale (ps)", yscale="log")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_ck_test(test, path: str | Path) -> None:
    """deeptime's CK-test grid: predicted (model at lag × k) vs estimated set-to-set probabilities."""
    pred, est, lags = np.real(test.predictions), np.real(test.estimates), np.asarray(test.lagtimes)
    n = pred.shape[1]
    fig, axes = plt.subplots(n, n, figsize=(2.6 * n, 2.2 * n), squeeze=False, sharex=True, sharey=True)
    for i in range(n):
        for j in range(n):
            axes[i, j].plot(lags, pred[:, i, j], "b-", label="predicted")
            axes[i, j].plot(lags, est[:, i, j], "r--", label="estimated")
            axes[i, j].set_title(f"{i + 1} → {j + 1}", fontsize=8)
            axes[i, j].set_ylim(-0.05, 1.05)
    axes[0, 0].legend(fontsize=7)
    _save(fig, path)


def plot_cvs_over_observables(cvs: np.ndarray, observables: Mapping[str, np.ndarray], path: str | Path,
                              max_cvs: int = 3) -> None:
    """Scatter of each of the first CVs against each observable (RMSD, Rg, Q, ...)."""
    cvs = np.asarray(cvs).reshape(len(cvs), -1)[:, :max_cvs]
    names = list(observables)
    fig, axes = plt.subplots(cvs.shape[1], len(names), figsize=(3.2 * len(names), 2.8 * cvs.shape[1]), squeeze=False)
    for k in range(cvs.shape[1]):
        for j, name in enumerate(names):
            axes[k, j].scatter(observables[name], cvs[:, k], s=1, alpha=0.4, rasterized=True)
            axes[k, j].set(xlabel=name, ylabel=f"CV {k + 1}")
    _save(fig, path)


def plot_fes_cvs(cv1: np.ndarray, cv2: np.ndarray, weights, temperature_k: float, path: str | Path,
                 bins: int = 50, title: str = "") -> None:
    """Free-energy surface (kJ/mol) over the first two CVs, optionally reweighted."""
    from cvlearn.analysis.reweighting import free_energy_surface

    rng = ((float(np.min(cv1)), float(np.max(cv1))), (float(np.min(cv2)), float(np.max(cv2))))
    fes, xe, ye = free_energy_surface(cv1, cv2, weights, temperature_k, bins=bins, range_xy=rng)
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    mesh = ax.pcolormesh(xe, ye, fes.T, cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="F (kJ/mol)")
    ax.set(xlabel="CV 1", ylabel="CV 2", title=title)
    _save(fig, path)
