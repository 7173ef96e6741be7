"""PNG figures a person would rather see than numbers: training curves, CVs over φ/ψ and over observables,
free-energy surfaces and profiles, and the kinetic checks (VAMP-2 curves, implied timescales, CK test).

Every figure is written atomically (:func:`cvlearn.io.atomic_path`) with the Agg backend, so plotting works in
batch jobs without a display and an interrupted run never leaves a half-written PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cvlearn.io import atomic_path  # noqa: E402


def save_figure(fig, path: str | Path) -> None:
    """Write ``fig`` to ``path`` (PNG, 120 dpi) atomically and close it: the one way every figure here is saved."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_training_curves(histories: Mapping[str, Sequence[dict]], path: str | Path) -> None:
    """Train/validation VAMP-2 per epoch, one colour per model, to see over- or under-fitting at a glance.

    Parameters
    ----------
    histories : mapping of str to sequence of dict
        Per model name, one dict per epoch with keys ``epoch``, ``train_vamp2`` and ``val_vamp2``.
    path : str or Path
        Output PNG.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, (name, history) in enumerate(histories.items()):
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_vamp2"] for h in history], "--", color=f"C{k}", label=f"{name} train")
        ax.plot(epochs, [h["val_vamp2"] for h in history], "-", color=f"C{k}", label=f"{name} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("VAMP-2")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_cvs_on_phi_psi(phi: np.ndarray, psi: np.ndarray, cvs: np.ndarray, path: str | Path) -> None:
    """Each CV component as colour over the Ramachandran plane, to see which basins a CV separates.

    Parameters
    ----------
    phi, psi : np.ndarray
        Backbone torsions, shape [n_frames], radians (shown in degrees).
    cvs : np.ndarray
        CV values, shape [n_frames, n_cvs]; one panel per column.
    path : str or Path
        Output PNG.
    """
    n = cvs.shape[1]
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False, constrained_layout=True)
    for k, ax in enumerate(axes[0]):
        sc = ax.scatter(np.degrees(phi), np.degrees(psi), c=cvs[:, k], s=2, cmap="coolwarm", rasterized=True)
        fig.colorbar(sc, ax=ax, label=f"CV {k + 1}")
        ax.set(xlabel="φ (deg)", ylabel="ψ (deg)", xlim=(-180, 180), ylim=(-180, 180), title=f"learned CV {k + 1}")
    save_figure(fig, path)


def plot_cvs_on_plane(x: np.ndarray, y: np.ndarray, cvs: np.ndarray, path: str | Path, xlabel: str, ylabel: str,
                      title: str = "") -> None:
    """Each CV component as colour over any plane (e.g. the two slowest TICA coordinates), hexbin-averaged.

    Parameters
    ----------
    x, y : np.ndarray
        Coordinates of the plane, shape [n_frames] (any units, named by the labels).
    cvs : np.ndarray
        CV values, shape [n_frames, n_cvs]; one panel per column (mean CV per hexagon).
    path : str or Path
        Output PNG.
    xlabel, ylabel, title : str
        Axis labels and a figure title.
    """
    cvs = np.asarray(cvs).reshape(len(cvs), -1)
    n = cvs.shape[1]
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False, constrained_layout=True)
    for k, ax in enumerate(axes[0]):
        hb = ax.hexbin(x, y, C=cvs[:, k], reduce_C_function=np.mean, gridsize=40, cmap="coolwarm", mincnt=1)
        fig.colorbar(hb, ax=ax, label=f"CV {k + 1}")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{title}: CV {k + 1}" if title else f"CV {k + 1}")
    save_figure(fig, path)


def plot_fes_panels(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: str | Path,
                    vmax_kjmol: float = 40.0) -> None:
    """Free-energy surfaces over φ/ψ side by side on one colour scale, to compare runs.

    Parameters
    ----------
    panels : sequence of (str, np.ndarray, np.ndarray, np.ndarray)
        (title, F [n_bins_x, n_bins_y] in kJ/mol, x edges [n_bins_x + 1] rad, y edges [n_bins_y + 1] rad),
        as :func:`cvlearn.analysis.reweighting.free_energy_surface` returns.
    path : str or Path
        Output PNG.
    vmax_kjmol : float
        Top of the colour scale, kJ/mol.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False, constrained_layout=True)
    for ax, (title, fes, xe, ye) in zip(axes[0], panels):
        mesh = ax.pcolormesh(np.degrees(xe), np.degrees(ye), fes.T, vmin=0, vmax=vmax_kjmol, cmap="viridis")
        fig.colorbar(mesh, ax=ax, label="F (kJ/mol)")
        ax.set(xlabel="φ (deg)", ylabel="ψ (deg)", title=title)
    save_figure(fig, path)


def plot_time_series(series: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, ylabel: str) -> None:
    """Several time series stacked on a shared time axis (e.g. φ(t) of biased runs), to see transitions.

    Parameters
    ----------
    series : mapping of str to (np.ndarray, np.ndarray)
        Per panel title, (time [n_frames] in ps, value [n_frames]); shown in ns.
    path : str or Path
        Output PNG.
    ylabel : str
        Label of the value axis.
    """
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 1.8 * len(series)), sharex=True, squeeze=False)
    for ax, (name, (t, y)) in zip(axes[:, 0], series.items()):
        ax.plot(np.asarray(t) / 1000.0, y, lw=0.5)
        ax.set(ylabel=ylabel, title=name)
    axes[-1, 0].set_xlabel("time (ns)")
    save_figure(fig, path)


def plot_free_energy_profiles(profiles: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], path: str | Path,
                              xlabel: str, ylabel: str = "F (kJ/mol)") -> None:
    """1-D curves, one colour per group and one line per run, to see the spread between seeds.

    Used for free-energy profiles (kJ/mol) and for ΔF against simulated time (convergence checks).

    Parameters
    ----------
    profiles : mapping of str to sequence of (np.ndarray, np.ndarray)
        Per group (e.g. the biased CV), one (x [n_points], y [n_points]) pair per run (e.g. seed).
    path : str or Path
        Output PNG.
    xlabel, ylabel : str
        Axis labels.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, (name, runs) in enumerate(profiles.items()):
        for i, (x, f) in enumerate(runs):
            ax.plot(x, f, color=f"C{k}", alpha=0.8, lw=1.2, label=name if i == 0 else None)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_vamp_curves(by_lag: dict, by_dim: dict, dt_ps: float, path: str | Path) -> None:
    """VAMP-2 against lag time and against the number of CVs used, to choose both.

    Parameters
    ----------
    by_lag : dict
        :func:`cvlearn.analysis.kinetics.vamp2_vs_lag` output (``lags`` in frames, ``vamp2``).
    by_dim : dict
        :func:`cvlearn.analysis.kinetics.vamp2_vs_dim` output (``dims``, ``vamp2``).
    dt_ps : float
        Time between frames, ps (lags are shown in ps).
    path : str or Path
        Output PNG.
    """
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.plot(np.asarray(by_lag["lags"]) * dt_ps, by_lag["vamp2"], "o-")
    a.set(xlabel="lag time (ps)", ylabel="VAMP-2", xscale="log")
    b.plot(by_dim["dims"], by_dim["vamp2"], "o-")
    b.set(xlabel="number of CVs", ylabel="VAMP-2")
    save_figure(fig, path)


def plot_implied_timescales(its: dict, path: str | Path) -> None:
    """Implied timescales against lag time; the grey region is timescale < lag (not resolved).

    Parameters
    ----------
    its : dict
        :func:`cvlearn.analysis.kinetics.implied_timescales` output (``lags_ps`` [n_lagtimes],
        ``timescales_ps`` [n_lagtimes, n_its]).
    path : str or Path
        Output PNG.
    """
    fig, ax = plt.subplots(figsize=(5, 3.8))
    lags = np.asarray(its["lags_ps"])
    ts = np.asarray(its["timescales_ps"], dtype=float)
    for k in range(ts.shape[1]):
        ax.plot(lags, ts[:, k], "o-", label=f"process {k + 1}")
    ax.fill_between(lags, lags.min() * 0.5, lags, color="0.8")
    ax.set(xlabel="lag time (ps)", ylabel="implied timescale (ps)", yscale="log")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_ck_test(test, path: str | Path) -> None:
    """deeptime's CK-test grid: predicted (model at lag × k) against estimated set-to-set probabilities.

    Parameters
    ----------
    test : deeptime.util.validation.ChapmanKolmogorovTest
        As :func:`cvlearn.analysis.kinetics.ck_test` returns.
    path : str or Path
        Output PNG.
    """
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
    save_figure(fig, path)


def plot_cvs_over_observables(cvs: np.ndarray, observables: Mapping[str, np.ndarray], path: str | Path,
                              max_cvs: int = 3) -> None:
    """Scatter of each of the first CVs against each observable (RMSD, Rg, Q, ...), to name what a CV is.

    Parameters
    ----------
    cvs : np.ndarray
        CV values, shape [n_frames, n_cvs].
    observables : mapping of str to np.ndarray
        Per name, values of shape [n_frames] (e.g. :func:`cvlearn.analysis.kinetics.protein_observables`).
    path : str or Path
        Output PNG.
    max_cvs : int
        Only the first ``max_cvs`` CVs are shown.
    """
    cvs = np.asarray(cvs).reshape(len(cvs), -1)[:, :max_cvs]
    names = list(observables)
    fig, axes = plt.subplots(cvs.shape[1], len(names), figsize=(3.2 * len(names), 2.8 * cvs.shape[1]), squeeze=False)
    for k in range(cvs.shape[1]):
        for j, name in enumerate(names):
            axes[k, j].scatter(observables[name], cvs[:, k], s=1, alpha=0.4, rasterized=True)
            axes[k, j].set(xlabel=name, ylabel=f"CV {k + 1}")
    save_figure(fig, path)


def plot_fes_cvs(cv1: np.ndarray, cv2: np.ndarray, weights, temperature_k: float, path: str | Path,
                 bins: int = 50, title: str = "") -> None:
    """Free-energy surface over the first two CVs (optionally reweighted), to see the basins they resolve.

    Parameters
    ----------
    cv1, cv2 : np.ndarray
        CV values, shape [n_frames].
    weights : np.ndarray or None
        Frame weights [n_frames] (e.g. from a biased run), or None for an unbiased run.
    temperature_k : float
        Temperature, K.
    path : str or Path
        Output PNG (F in kJ/mol).
    bins : int
        Histogram bins per axis, over the range of the data.
    title : str
        Figure title.
    """
    from cvlearn.analysis.reweighting import free_energy_surface

    rng = ((float(np.min(cv1)), float(np.max(cv1))), (float(np.min(cv2)), float(np.max(cv2))))
    fes, xe, ye = free_energy_surface(cv1, cv2, weights, temperature_k, bins=bins, range_xy=rng)
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    mesh = ax.pcolormesh(xe, ye, fes.T, cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="F (kJ/mol)")
    ax.set(xlabel="CV 1", ylabel="CV 2", title=title)
    save_figure(fig, path)


def plot_profile_with_error(x: np.ndarray, fes: np.ndarray, err: np.ndarray, path: str | Path, xlabel: str) -> None:
    """One free-energy profile with its error band (e.g. block standard error), to judge which features are real.

    Parameters
    ----------
    x, fes, err : np.ndarray
        ``[n_bins]`` bin centres (CV units), F and its error (kJ/mol).
    path : str or Path
        Output PNG.
    xlabel : str
        Name of the CV.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(x, fes, color="C0")
    ax.fill_between(x, fes - err, fes + err, color="C0", alpha=0.3, label="± block standard error")
    ax.set(xlabel=xlabel, ylabel="F (kJ/mol)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_fes_2d(fes: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray, path: str | Path, xlabel: str,
                ylabel: str) -> None:
    """A 2-D free-energy surface on its bin edges.

    Parameters
    ----------
    fes : np.ndarray
        ``[n_x, n_y]`` F (kJ/mol; NaN where empty).
    x_edges, y_edges : np.ndarray
        ``[n_x + 1]``, ``[n_y + 1]`` bin edges (CV units).
    path : str or Path
        Output PNG.
    xlabel, ylabel : str
        Names of the two CVs.
    """
    fig, ax = plt.subplots(figsize=(5.0, 3.8), constrained_layout=True)
    mesh = ax.pcolormesh(x_edges, y_edges, fes.T, cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="F (kJ/mol)")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    save_figure(fig, path)


def plot_delta_f_against_time(times_ps: np.ndarray, series: Mapping[str, np.ndarray], path: str | Path) -> None:
    """ΔF between regions against simulated time, one line per region pair: flat means converged.

    Parameters
    ----------
    times_ps : np.ndarray
        ``[n_points]`` times (ps).
    series : mapping of str to np.ndarray
        Per region pair, ``[n_points]`` ΔF (kJ/mol).
    path : str or Path
        Output PNG.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for pair, values in series.items():
        ax.plot(times_ps, values, "o-", label=pair)
    ax.set(xlabel="time (ps)", ylabel="ΔF (kJ/mol)")
    ax.legend(fontsize=8)
    save_figure(fig, path)
