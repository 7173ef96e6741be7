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


def vamp2_vs_lag(outputs: Sequence[np.ndarray], lagtimes: Sequence[int], n_cvs: int | None = None,
                 epsilon: float = 1e-6) -> dict:
    """deeptime VAMP-2 of the CVs re-estimated at each lag time: a good CV decays slowly with the lag.

    Parameters
    ----------
    outputs : sequence of np.ndarray
        CVs per trajectory, each [n_frames_i, n_cvs] (tensors accepted).
    lagtimes : sequence of int
        Lag times, frames; trajectories not longer than a lag time are left out at that lag.
    n_cvs : int, optional
        Score only the first ``n_cvs`` columns (default: all).
    epsilon : float
        deeptime's cut-off for small singular values.

    Returns
    -------
    dict
        ``lags`` (frames) and ``vamp2`` (NaN where no trajectory is long enough), one entry per lag time.
    """
    from deeptime.decomposition import VAMP

    arrays = [a[:, :n_cvs] if n_cvs else a for a in _arrays(outputs)]
    scores = []
    for lagtime in lagtimes:
        usable = [a for a in arrays if len(a) > lagtime]
        scores.append(float(VAMP(lagtime=int(lagtime), epsilon=epsilon).fit(usable).fetch_model()
                            .score(2, epsilon=epsilon)) if usable else float("nan"))
    return {"lags": [int(x) for x in lagtimes], "vamp2": scores}


def vamp2_vs_dim(outputs: Sequence[np.ndarray], lagtime: int, dims: Sequence[int] | None = None,
                 epsilon: float = 1e-6) -> dict:
    """deeptime VAMP-2 at one lag time using the first k CVs, to see how many CVs carry the slow processes.

    Parameters
    ----------
    outputs : sequence of np.ndarray
        CVs per trajectory, each [n_frames_i, n_cvs].
    lagtime : int
        Lag time, frames.
    dims : sequence of int, optional
        Numbers of leading CVs k to score (default 1..n_cvs).
    epsilon : float
        deeptime's cut-off for small singular values.

    Returns
    -------
    dict
        ``dims`` and ``vamp2``, one entry per k.
    """
    from deeptime.decomposition import VAMP

    arrays = _arrays(outputs)
    dims = list(dims) if dims is not None else list(range(1, arrays[0].shape[1] + 1))
    scores = [float(VAMP(lagtime=int(lagtime), epsilon=epsilon).fit([a[:, :k] for a in arrays]).fetch_model()
                    .score(2, epsilon=epsilon)) for k in dims]
    return {"dims": dims, "vamp2": scores}


def discretize(outputs: Sequence[np.ndarray], n_clusters: int, seed: int = 0, max_iter: int = 100) -> list[np.ndarray]:
    """k-means (deeptime) on the CVs → discrete trajectories, the states of an MSM on the CV space.

    Parameters
    ----------
    outputs : sequence of np.ndarray
        CVs per trajectory, each [n_frames_i, n_cvs].
    n_clusters : int
        Number of k-means centres, 2..total frames.
    seed : int
        Seed of the k-means++ initialisation.
    max_iter : int
        Maximum k-means iterations (deeptime's name).

    Returns
    -------
    list of np.ndarray
        Cluster index per frame, int32 [n_frames_i] per trajectory.
    """
    from deeptime.clustering import KMeans

    arrays = _arrays(outputs)
    data = np.concatenate(arrays)
    if n_clusters < 2 or n_clusters > len(data):
        raise ValueError(f"n_clusters: expected 2..{len(data)} (frames), found {n_clusters}")
    km = KMeans(n_clusters=n_clusters, max_iter=max_iter, fixed_seed=seed, init_strategy="kmeans++",
                n_jobs=1).fit(data).fetch_model()
    return [km.transform(a).astype(np.int32) for a in arrays]


def _msm(dtrajs, lagtime: int):
    from deeptime.markov import TransitionCountEstimator
    from deeptime.markov.msm import MaximumLikelihoodMSM

    counts = TransitionCountEstimator(lagtime=int(lagtime), count_mode="sliding").fit(dtrajs).fetch_model()
    return MaximumLikelihoodMSM(reversible=True).fit(counts.submodel_largest()).fetch_model()


def implied_timescales(dtrajs: Sequence[np.ndarray], lagtimes: Sequence[int], n_its: int = 3,
                       dt_ps: float = 1.0) -> dict:
    """Implied timescales of reversible MSMs at each lag time; they must level off for the CV to be Markovian.

    Uses ``deeptime.util.validation.implied_timescales`` on maximum-likelihood MSMs of the largest connected set.

    Parameters
    ----------
    dtrajs : sequence of np.ndarray
        Discrete trajectories, int [n_frames_i] each (e.g. from :func:`discretize`).
    lagtimes : sequence of int
        Lag times, frames.
    n_its : int
        Number of slowest processes to report.
    dt_ps : float
        Time between frames, ps.

    Returns
    -------
    dict
        ``lags_ps`` [n_lagtimes], ``timescales_ps`` [n_lagtimes, n_its] (NaN where the MSM has fewer
        processes) and ``n_its``.
    """
    from deeptime.util.validation import implied_timescales as its

    models = [_msm(dtrajs, lagtime) for lagtime in lagtimes]
    result = its(models, n_its=n_its)
    timescales = [[float(result.timescales_for_process(k)[i]) * dt_ps if k < result.max_n_processes else float("nan")
                   for k in range(n_its)] for i in range(result.n_lagtimes)]
    return {"lags_ps": [float(lagtime) * dt_ps for lagtime in lagtimes], "timescales_ps": timescales, "n_its": n_its}


def ck_test(dtrajs: Sequence[np.ndarray], lagtime: int, n_sets: int = 2, n_multiples: int = 4):
    """Chapman-Kolmogorov test (deeptime): does the MSM at ``lagtime`` predict the MSMs at k × ``lagtime``?

    Parameters
    ----------
    dtrajs : sequence of np.ndarray
        Discrete trajectories, int [n_frames_i] each.
    lagtime : int
        Lag time of the tested MSM, frames.
    n_sets : int
        Number of PCCA+ metastable sets; fewer than the MSM's states.
    n_multiples : int
        Compare at k × ``lagtime`` for k = 1..``n_multiples``.

    Returns
    -------
    test : deeptime.util.validation.ChapmanKolmogorovTest
        Predictions and estimates [n_multiples, n_sets, n_sets].
    summary : dict
        ``lag_frames``, ``n_sets``, ``multiples`` and ``max_abs_error`` (largest |prediction − estimate|).
    """
    models = [_msm(dtrajs, lagtime * k) for k in range(1, n_multiples + 1)]
    n_states = models[0].n_states
    if n_states <= n_sets:
        raise ValueError(f"n_sets: expected fewer metastable sets than MSM states ({n_states}), found {n_sets}")
    test = models[0].ck_test(models, n_metastable_sets=n_sets)
    diff = float(np.max(np.abs(np.real(test.predictions) - np.real(test.estimates))))
    return test, {"lag_frames": int(lagtime), "n_sets": n_sets, "multiples": n_multiples, "max_abs_error": diff}


def correlations(cvs: np.ndarray, observables: Mapping[str, np.ndarray]) -> dict:
    """|Pearson r| of each CV with each observable, to name what a CV is.

    Parameters
    ----------
    cvs : np.ndarray
        CV values, [n_frames, n_cvs].
    observables : mapping of str to np.ndarray
        Per name, [n_frames] or [n_frames, n_columns]; the largest |r| over columns is kept (torsions: pass
        sin and cos as two columns).

    Returns
    -------
    dict
        Per observable name, a list of n_cvs correlations in [0, 1].
    """
    cvs = np.asarray(cvs, dtype=np.float64).reshape(len(cvs), -1)
    out = {}
    for name, values in observables.items():
        v = np.asarray(values, dtype=np.float64).reshape(len(cvs), -1)
        out[name] = [float(max(abs(np.corrcoef(cvs[:, k], v[:, j])[0, 1]) for j in range(v.shape[1])))
                     for k in range(cvs.shape[1])]
    return out


def protein_observables(traj, reference=None, native_cutoff_nm: float = 0.45) -> dict[str, np.ndarray]:
    """Known coordinates of a protein to compare learned CVs with (mdtraj).

    Cα RMSD, radius of gyration, and the fraction of native heavy-atom contacts Q (Best, Hummer & Eaton 2013;
    pairs more than 3 residues apart, native if closer than ``native_cutoff_nm`` in the reference).

    Parameters
    ----------
    traj : mdtraj.Trajectory
        Frames to describe (positions nm).
    reference : mdtraj.Trajectory, optional
        Native structure (default: the first frame of ``traj``).
    native_cutoff_nm : float
        Contact distance in the reference, nm.

    Returns
    -------
    dict of str to np.ndarray
        ``rmsd_ca_nm``, ``rg_nm`` and ``q_native`` (1 when no native contacts exist), each [n_frames].
    """
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


def kinetic_report(outputs: Sequence[np.ndarray], lagtime: int, dt_ps: float, out_dir: str | Path, name: str = "cv", *,
                   n_clusters: int = 20, its_lagtimes: Sequence[int] | None = None, n_its: int = 3, n_sets: int = 2,
                   seed: int = 0) -> dict:
    """All kinetic checks of one model's CVs in one call: VAMP-2 vs lag and dimension, ITS and CK test.

    Writes ``<name>_its.png``, ``<name>_ck_test.png`` (unless the CK test is skipped: too few connected states),
    ``<name>_vamp2_curves.png`` and ``<name>_kinetics.json`` into ``out_dir``.

    Parameters
    ----------
    outputs : sequence of np.ndarray
        CVs per trajectory, each [n_frames_i, n_cvs].
    lagtime : int
        Lag time of the model, frames.
    dt_ps : float
        Time between frames, ps.
    out_dir : str or Path
        Output folder.
    name : str
        File name prefix.
    n_clusters : int
        k-means states of the MSM.
    its_lagtimes : sequence of int, optional
        Lag times (frames) of the ITS and VAMP-2-vs-lag curves (default: 0.25..4 × ``lagtime``, below half the
        longest trajectory).
    n_its : int
        Number of implied timescales.
    n_sets : int
        Metastable sets of the CK test.
    seed : int
        k-means seed.

    Returns
    -------
    dict
        The report written to ``<name>_kinetics.json``.
    """
    from cvlearn.analysis.plots import plot_ck_test, plot_implied_timescales, plot_vamp_curves

    out_dir = Path(out_dir)
    arrays = _arrays(outputs)
    longest = max(len(a) for a in arrays)
    its_lagtimes = list(its_lagtimes) if its_lagtimes is not None else sorted(
        {max(1, int(lagtime * f)) for f in (0.25, 0.5, 1, 2, 4) if lagtime * f < longest // 2})
    report = {"lag_frames": int(lagtime), "dt_ps": float(dt_ps),
              "vamp2_vs_lag": vamp2_vs_lag(arrays, its_lagtimes), "vamp2_vs_dim": vamp2_vs_dim(arrays, lagtime)}
    dtrajs = discretize(arrays, n_clusters, seed)
    report["implied_timescales"] = implied_timescales(dtrajs, its_lagtimes, n_its, dt_ps)
    try:
        test, summary = ck_test(dtrajs, lagtime, n_sets, n_multiples=max(2, min(4, longest // (2 * lagtime))))
        report["ck_test"] = summary
        plot_ck_test(test, out_dir / f"{name}_ck_test.png")
    except (ValueError, RuntimeError) as err:  # too few connected states for PCCA+: say so in the report
        report["ck_test"] = {"skipped": str(err)}
    plot_implied_timescales(report["implied_timescales"], out_dir / f"{name}_its.png")
    plot_vamp_curves(report["vamp2_vs_lag"], report["vamp2_vs_dim"], dt_ps, out_dir / f"{name}_vamp2_curves.png")
    write_json_atomic(out_dir / f"{name}_kinetics.json", report)
    return report
