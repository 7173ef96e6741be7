"""Kinetic validation of learned CVs with deeptime: VAMP-2 vs lag and dimension, implied timescales and a
Chapman-Kolmogorov test of an MSM built on the CVs, and how the CVs project onto known coordinates.

A high VAMP-2 at one lag is not yet a good CV: the implied timescales of an MSM on the CV space must
converge in the lag time and the CK test must hold, otherwise the CV hides slow processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cvlearn.io import write_json_atomic


def _arrays(outputs: Sequence[np.ndarray], name: str = "outputs") -> list[np.ndarray]:
    if len(outputs) == 0:
        raise ValueError(f"{name}: expected a list of per-trajectory arrays [T_i, n_cvs], found none")
    arrays = [np.asarray(o.detach().cpu().numpy() if hasattr(o, "detach") else o, dtype=np.float64) for o in outputs]
    return [a.reshape(len(a), -1) for a in arrays]


def vamp2_vs_lag(outputs: Sequence[np.ndarray], lags: Sequence[int], dim: int | None = None,
                 epsilon: float = 1e-6) -> dict:
    """deeptime VAMP-2 of the CVs (first ``dim`` columns) re-estimated at each lag (frames)."""
    from deeptime.decomposition import VAMP

    arrays = [a[:, :dim] if dim else a for a in _arrays(outputs)]
    scores = []
    for lag in lags:
        usable = [a for a in arrays if len(a) > lag]
        scores.append(float(VAMP(lagtime=int(lag), epsilon=epsilon).fit(usable).fetch_model().score(2, epsilon=epsilon))
                      if usable else float("nan"))
    return {"lags": [int(x) for x in lags], "vamp2": scores}


def vamp2_vs_dim(outputs: Sequence[np.ndarray], lag: int, dims: Sequence[int] | None = None,
                 epsilon: float = 1e-6) -> dict:
    """deeptime VAMP-2 at one lag using the first k CVs, k in ``dims`` (default 1..n_cvs)."""
    from deeptime.decomposition import VAMP

    arrays = _arrays(outputs)
    dims = list(dims) if dims is not None else list(range(1, arrays[0].shape[1] + 1))
    scores = [float(VAMP(lagtime=int(lag), epsilon=epsilon).fit([a[:, :k] for a in arrays]).fetch_model()
                    .score(2, epsilon=epsilon)) for k in dims]
    return {"dims": dims, "vamp2": scores}


def discretize(outputs: Sequence[np.ndarray], n_clusters: int, seed: int = 0, max_iter: int = 100) -> list[np.ndarray]:
    """k-means (deeptime) on the CVs → discrete trajectories."""
    from deeptime.clustering import KMeans

    arrays = _arrays(outputs)
    data = np.concatenate(arrays)
    if n_clusters < 2 or n_clusters > len(data):
        raise ValueError(f"n_clusters: expected 2..{len(data)} (frames), found {n_clusters}")
    km = KMeans(n_clusters=n_clusters, max_iter=max_iter, fixed_seed=seed, init_strategy="kmeans++",
                n_jobs=1).fit(data).fetch_model()
    return [km.transform(a).astype(np.int32) for a in arrays]


def _msm(dtrajs, lag: int):
    from deeptime.markov import TransitionCountEstimator
    from deeptime.markov.msm import MaximumLikelihoodMSM

    counts = TransitionCountEstimator(lagtime=int(lag), count_mode="sliding").fit(dtrajs).fetch_model()
    return MaximumLikelihoodMSM(reversible=True).fit(counts.submodel_largest()).fetch_model()


def implied_timescales(dtrajs: Sequence[np.ndarray], lags: Sequence[int], n_its: int = 3,
                       dt_ps: float = 1.0) -> dict:
    """Implied timescales (ps) of reversible MSMs at each lag via ``deeptime.util.validation.implied_timescales``."""
    from deeptime.util.validation import implied_timescales as its

    models = [_msm(dtrajs, lag) for lag in lags]
    result = its(models, n_its=n_its)
    timescales = [[float(result.timescales_for_process(k)[i]) * dt_ps if k < result.max_n_processes else float("nan")
                   for k in range(n_its)] for i in range(result.n_lagtimes)]
    return {"lags_ps": [float(lag) * dt_ps for lag in lags], "timescales_ps": timescales, "n_its": n_its}


def ck_test(dtrajs: Sequence[np.ndarray], lag: int, n_sets: int = 2, multiples: int = 4):
    """Chapman-Kolmogorov test (deeptime) of the MSM at ``lag`` against MSMs at 1..``multiples`` × lag,
    on ``n_sets`` PCCA+ metastable sets. Returns deeptime's ``ChapmanKolmogorovTest`` and a summary dict
    with the largest |prediction − estimate|."""
    models = [_msm(dtrajs, lag * k) for k in range(1, multiples + 1)]
    n_states = models[0].n_states
    if n_states <= n_sets:
        raise ValueError(f"n_sets: expected fewer metastable sets than MSM states ({n_states}), found {n_sets}")
    test = models[0].ck_test(models, n_metastable_sets=n_sets)
    diff = float(np.max(np.abs(np.real(test.predictions) - np.real(test.estimates))))
    return test, {"lag_frames": int(lag), "n_sets": n_sets, "multiples": multiples, "max_abs_error": diff}


def correlations(cvs: np.ndarray, observables: Mapping[str, np.ndarray]) -> dict:
    """|Pearson r| of each CV with each observable (torsions: max over sin and cos), to name what a CV is."""
    cvs = np.asarray(cvs, dtype=np.float64).reshape(len(cvs), -1)
    out = {}
    for name, values in observables.items():
        v = np.asarray(values, dtype=np.float64).reshape(len(cvs), -1)
        out[name] = [float(max(abs(np.corrcoef(cvs[:, k], v[:, j])[0, 1]) for j in range(v.shape[1])))
                     for k in range(cvs.shape[1])]
    return out


def protein_observables(traj, reference=None, native_cutoff_nm: float = 0.45) -> dict[str, np.ndarray]:
    """Cα RMSD to ``reference`` (default: frame 0; nm), radius of gyration (nm) and the fraction of native
    heavy-atom contacts Q (Best, Hummer & Eaton 2013) with mdtraj."""
    import mdtraj

    reference = traj[0] if reference is None else reference
    ca = traj.topology.select("name CA")
    heavy = traj.topology.select("not element H")
    rmsd = mdtraj.rmsd(traj, reference, atom_indices=ca)
    rg = mdtraj.compute_rg(traj)
    pairs = np.array([(i, j) for i in heavy for j in heavy
                      if j > i and abs(traj.topology.atom(i).residue.index - traj.topology.atom(j).residue.index) > 3])
    if len(pairs) == 0:
        q = np.ones(traj.n_frames)
    else:
        r0 = mdtraj.compute_distances(reference[0], pairs)[0]
        native = pairs[r0 < native_cutoff_nm]
        if len(native) == 0:
            q = np.ones(traj.n_frames)
        else:
            r = mdtraj.compute_distances(traj, native)
            q = np.mean(1.0 / (1.0 + np.exp(50.0 * (r - 1.8 * r0[r0 < native_cutoff_nm]))), axis=1)
    return {"rmsd_ca_nm": rmsd, "rg_nm": rg, "q_native": q}


def kinetic_report(outputs: Sequence[np.ndarray], lag: int, dt_ps: float, out_dir: str | Path, name: str = "cv", *,
                   n_clusters: int = 20, its_lags: Sequence[int] | None = None, n_its: int = 3, n_sets: int = 2,
                   seed: int = 0) -> dict:
    """VAMP-2 vs lag and dim, ITS and CK test for one model's CVs; PNGs and ``<name>_kinetics.json`` in out_dir."""
    from cvlearn.analysis.kinetic_plots import plot_ck_test, plot_implied_timescales, plot_vamp_curves

    out_dir = Path(out_dir)
    arrays = _arrays(outputs)
    longest = max(len(a) for a in arrays)
    its_lags = list(its_lags) if its_lags is not None else sorted({max(1, int(lag * f)) for f in (0.25, 0.5, 1, 2, 4)
                                                                   if lag * f < longest // 2})
    report = {"lag_frames": int(lag), "dt_ps": float(dt_ps),
              "vamp2_vs_lag": vamp2_vs_lag(arrays, its_lags), "vamp2_vs_dim": vamp2_vs_dim(arrays, lag)}
    dtrajs = discretize(arrays, n_clusters, seed)
    report["implied_timescales"] = implied_timescales(dtrajs, its_lags, n_its, dt_ps)
    try:
        test, summary = ck_test(dtrajs, lag, n_sets, multiples=max(2, min(4, longest // (2 * lag))))
        report["ck_test"] = summary
        plot_ck_test(test, out_dir / f"{name}_ck_test.png")
    except (ValueError, RuntimeError) as err:  # too few connected states for PCCA+: say so in the report
        report["ck_test"] = {"skipped": str(err)}
    plot_implied_timescales(report["implied_timescales"], out_dir / f"{name}_its.png")
    plot_vamp_curves(report["vamp2_vs_lag"], report["vamp2_vs_dim"], dt_ps, out_dir / f"{name}_vamp2_curves.png")
    write_json_atomic(out_dir / f"{name}_kinetics.json", report)
    return report
