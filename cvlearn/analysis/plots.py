"""PNG figures a person would rather see than numbers: training curves, CVs over φ/ψ, free-energy surfaces."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cvlearn.io import atomic_path  # noqa: E402


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_training_curves(histories: Mapping[str, Sequence[dict]], path: str | Path) -> None:
    """Train/validation VAMP-2 per epoch, one colour per model."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (name, history) in enumerate(histories.items()):
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_vamp2"] for h in history], "--", color=f"C{k}", label=f"{name} train")
        ax.plot(epochs, [h["val_vamp2"] for h in history], "-", color=f"C{k}", label=f"{name} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("VAMP-2")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_cvs_on_phi_psi(phi: np.ndarray, psi: np.ndarray, cvs: np.ndarray, path: str | Path) -> None:
    """Each CV component as colour over the Ramachandran plane (degrees)."""
    n = cvs.shape[1]
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False, constrained_layout=True)
    for k, ax in enumerate(axes[0]):
        sc = ax.scatter(np.degrees(phi), np.degrees(psi), c=cvs[:, k], s=2, cmap="coolwarm", rasterized=True)
        fig.colorbar(sc, ax=ax, label=f"CV {k + 1}")
        ax.set(xlabel="φ (deg)", ylabel="ψ (deg)", xlim=(-180, 180), ylim=(-180, 180), title=f"learned CV {k + 1}")
    _save(fig, path)


def plot_fes_panels(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: str | Path,
                    vmax_kjmol: float = 40.0) -> None:
    """Free-energy surfaces over φ/ψ: ``panels`` holds (title, fes [kJ/mol], x edges, y edges) in radians."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False, constrained_layout=True)
    for ax, (title, fes, xe, ye) in zip(axes[0], panels):
        mesh = ax.pcolormesh(np.degrees(xe), np.degrees(ye), fes.T, vmin=0, vmax=vmax_kjmol, cmap="viridis")
        fig.colorbar(mesh, ax=ax, label="F (kJ/mol)")
        ax.set(xlabel="φ (deg)", ylabel="ψ (deg)", title=title)
    _save(fig, path)


def plot_time_series(series: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, ylabel: str) -> None:
    """Several (time_ps, value) series stacked, e.g. φ(t) of biased runs."""
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 1.8 * len(series)), sharex=True, squeeze=False)
    for ax, (name, (t, y)) in zip(axes[:, 0], series.items()):
        ax.plot(np.asarray(t) / 1000.0, y, lw=0.5)
        ax.set(ylabel=ylabel, title=name)
    axes[-1, 0].set_xlabel("time (ns)")
    _save(fig, path)


def plot_free_energy_profiles(profiles: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], path: str | Path,
                              xlabel: str, ylabel: str = "F (kJ/mol)") -> None:
    """1-D free-energy profiles (kJ/mol), one colour per group (e.g. biased CV), one line per run (e.g. seed);
    also ΔF against simulated time (``ylabel``) for convergence checks."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, (name, runs) in enumerate(profiles.items()):
        for i, (x, f) in enumerate(runs):
            ax.plot(x, f, color=f"C{k}", alpha=0.8, lw=1.2, label=name if i == 0 else None)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    _save(fig, path)
