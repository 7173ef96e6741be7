"""What a run means: reweighting of biased frames, free energies, kinetics (VAMP-2, ITS, CK test), φ transitions
and the figures of all of them.

Names resolve on first use (PEP 562): ``plots`` selects matplotlib's Agg backend when imported, which must not
happen to a user who only wants frame weights, and ``kinetics`` pulls in deeptime lazily anyway.
"""

from __future__ import annotations

import importlib

_SUBMODULE_OF = {
    **dict.fromkeys(["AX_BASIN_DEG", "AX_CORE_DEG", "EQ_BASIN_DEG", "EQ_CORE_DEG", "committed_cores",
                     "count_core_transitions", "count_phi_transitions", "last_core", "phi_basins", "rate_ratio_ci"],
                    "transitions"),
    **dict.fromkeys(["ck_test", "correlations", "discretize", "implied_timescales", "kinetic_report",
                     "protein_observables", "vamp2_vs_dim", "vamp2_vs_lag"], "kinetics"),
    **dict.fromkeys(["delta_f_kjmol", "free_energy_profile", "free_energy_surface", "log_weights_from_bias",
                     "metad_weights", "opes_weights", "weights_from_log", "well_tempered_rct"], "reweighting"),
    **dict.fromkeys(["plot_ck_test", "plot_cvs_on_phi_psi", "plot_cvs_on_plane", "plot_cvs_over_observables", "plot_fes_cvs",
                     "plot_delta_f_against_time", "plot_fes_2d", "plot_fes_panels", "plot_free_energy_profiles",
                     "plot_implied_timescales", "plot_profile_with_error", "plot_time_series", "plot_training_curves",
                     "plot_vamp_curves", "save_figure"], "plots"),
}

__all__ = sorted(_SUBMODULE_OF)


def __getattr__(name: str):
    if name not in _SUBMODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SUBMODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
