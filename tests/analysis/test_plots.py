"""Every figure is written as a non-empty PNG from small synthetic inputs (kinetic figures are exercised by
``test_kinetics.test_kinetic_report_writes_pngs_and_numbers``)."""

import numpy as np

from cvlearn.analysis.plots import (
    plot_cvs_on_phi_psi,
    plot_cvs_over_observables,
    plot_fes_cvs,
    plot_fes_panels,
    plot_free_energy_profiles,
    plot_time_series,
    plot_training_curves,
)
from cvlearn.analysis.reweighting import free_energy_surface


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    phi, psi = rng.uniform(-np.pi, np.pi, (2, 500))
    cvs = np.stack([np.sin(phi), np.cos(psi)], axis=1)
    history = [{"epoch": e, "train_vamp2": 1.0 + 0.1 * e, "val_vamp2": 1.0 + 0.08 * e} for e in range(3)]
    fes, xe, ye = free_energy_surface(phi, psi, None, 300.0)
    t_ps = np.arange(500) * 2.0
    calls = {
        "curves.png": lambda p: plot_training_curves({"gnn": history}, p),
        "phi_psi.png": lambda p: plot_cvs_on_phi_psi(phi, psi, cvs, p),
        "panels.png": lambda p: plot_fes_panels([("a", fes, xe, ye), ("b", fes, xe, ye)], p),
        "series.png": lambda p: plot_time_series({"run 1": (t_ps, phi)}, p, ylabel="φ (rad)"),
        "profiles.png": lambda p: plot_free_energy_profiles({"cv": [(np.arange(5.0), np.arange(5.0))]}, p, "s"),
        "observables.png": lambda p: plot_cvs_over_observables(cvs, {"phi": phi, "psi": psi}, p),
        "fes_cvs.png": lambda p: plot_fes_cvs(cvs[:, 0], cvs[:, 1], None, 300.0, p, bins=10),
    }
    for name, plot in calls.items():
        plot(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 0, name
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
