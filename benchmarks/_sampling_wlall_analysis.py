"""The analysis of ``benchmarks/sampling_wlall.py``: the reference's TICA model and implied timescales, projections
of biased walkers onto it, reweighted free energies against the reference, and slow transitions along TICA 1.

* TICA (deeptime) on sin/cos of backbone φ/ψ (:func:`cvlearn.estimators.baselines.backbone_torsion_features`) of the
  unbiased reference: one or more independent chains, each one continuous trajectory (its segments continue one
  another), each chain's first ``equilibration_ns`` dropped (chain 0 starts from an extended peptide). Lagged pairs,
  transitions and halves are taken within each chain (:func:`split_chains`, :func:`second_half_mask`); histograms
  pool the chains frame by frame.
* Slowest implied timescale: MSM ITS (:func:`cvlearn.analysis.kinetics.implied_timescales`) on k-means states of the
  first two TICs at a few lags; the plan uses the largest ITS_1 over those lags (ITS converge from below).
* Free energies: F(TIC1, TIC2) and per-residue F(φ, ψ), biased frames weighted exp(βV) (OPES,
  :func:`cvlearn.analysis.reweighting.opes_weights`, the first 10 % of each walker dropped while the bias builds),
  the walkers of an arm pooled with equal weight each; RMS difference to the reference over bins populated in both
  with F_ref ≤ ``cutoff_kjmol``, after the best constant shift (F is defined up to a constant); beside it, what that
  RMS cannot see: each side's probability in bins the other never visited (:func:`mass_outside`); and the same
  RMS on the region the reference's halves agree on (:func:`settled_region`), where a state the reference has
  entered once (and not left) is left out of both sides; and these RMS from the first t ns of every walker
  (:func:`rms_over_time`), to tell an arm still converging from one settled off the reference.
* Transitions: the two most populated states along TIC1 (1-D 2-means on the reference), cores the outer three
  quarters of each side (a frame between the cores keeps its last core: hysteresis), a visit counted when it lasts
  the benchmark's dwell; checked against the two-state relaxation time of the core-assigned reference
  (:func:`core_relaxation`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvlearn.analysis.reweighting import free_energy_surface, opes_weights
from cvlearn.analysis.transitions import committed_cores, count_core_transitions, last_core
from cvlearn.units import kt_kjmol

BURN_IN_FRACTION = 0.1  # of each walker, dropped from reweighting (the OPES bias is still building)
# The share of a reference half's probability its halves' comparison may leave out (bins the other half never
# visited): a chosen bound, stated beside the value; a state the reference entered once and has not left (WLALL's
# Leu2 αL, from 238 ns on) is far above it, sampling noise in sparse tail bins (well under 1 %) below it.
OUTSIDE_MAX = 0.05


def torsions(paths: list[Path], topology: Path):
    """Per file: (features [T, 4 n] sin/cos of φ/ψ, φ [T, n] rad, ψ [T, n] rad), φ_i and ψ_i of the same residue."""
    from cvlearn.data.trajectories import load_trajectories

    return [torsions_of(traj) for traj in load_trajectories([str(p) for p in paths], str(topology),
                                                             selection="backbone")]


def torsions_of(traj):
    """:func:`torsions` of one loaded mdtraj trajectory (any atom selection that holds the backbone)."""
    import mdtraj

    from cvlearn.estimators.baselines import backbone_torsion_features

    phi_idx, phi = mdtraj.compute_phi(traj)
    psi_idx, psi = mdtraj.compute_psi(traj)
    phi_cols, psi_cols = residue_torsion_columns(phi_idx, psi_idx)
    return backbone_torsion_features(traj), phi[:, phi_cols], psi[:, psi_cols]


def residue_torsion_columns(phi_idx: np.ndarray, psi_idx: np.ndarray) -> tuple[list[int], list[int]]:
    """Columns of mdtraj's φ and ψ (atom quadruples ``[n, 4]`` each) of the residues that have both, in residue
    order, keyed by their CA (φ's third atom, ψ's second): column k of each is residue k of :func:`torsions`."""
    phi_ca, psi_ca = list(phi_idx[:, 2]), list(psi_idx[:, 1])
    common = sorted(set(phi_ca) & set(psi_ca))
    return [phi_ca.index(a) for a in common], [psi_ca.index(a) for a in common]


def reference_model(features: np.ndarray | list[np.ndarray], frame_ps: float, lag_ps: float, its_lags_ps,
                    n_clusters: int, dim: int = 2) -> dict:
    """TICA of the reference and the implied timescales of its slowest processes.

    ``features``: ``[T, n]``, or one such array per independent chain (TICA and the MSM count lagged pairs within
    each chain, never across two); ``tics`` is returned pooled, chain after chain.

    ``slowest_its_ps`` is the largest *resolved* estimate: TICA's own (at ``lag_ps``) and the MSM's on TIC1-2 (at
    each of ``its_lags_ps``), each kept only where it is at least its lag. Both are variational lower bounds of the
    true timescale, so the largest resolved one is the best; an estimate below its lag is the noise floor (an
    eigenvalue under 1/e, ITS ~ lag/2 at every lag: measured on WLALL at 300 K with lags 50-1000 ps, which then read
    as a 451 ps process). nan when nothing is resolved (every process faster than every lag)."""
    from deeptime.decomposition import TICA

    from cvlearn.analysis.kinetics import discretize, implied_timescales

    chains = [features] if isinstance(features, np.ndarray) else list(features)
    lag = max(1, int(round(lag_ps / frame_ps)))
    model = TICA(lagtime=lag, dim=dim).fit([c for c in chains if len(c) > lag]).fetch_model()
    per_chain = [model.transform(c)[:, :dim] for c in chains]
    tics = np.concatenate(per_chain)
    eig = np.asarray(model.singular_values[:dim], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        tica_its_ps = (-lag * frame_ps / np.log(np.abs(eig))).tolist()
    longest = max(len(c) for c in chains)
    lags = sorted({max(1, int(round(t / frame_ps))) for t in its_lags_ps if t / frame_ps < longest / 4})
    dtrajs = discretize(per_chain, min(n_clusters, len(tics) // 4), seed=0)
    its = implied_timescales(dtrajs, lags, n_its=2, dt_ps=frame_ps)
    candidates = [("TICA", lag * frame_ps, tica_its_ps[0])] + [
        ("MSM", lag_k, row[0]) for lag_k, row in zip(its["lags_ps"], its["timescales_ps"])]
    resolved = [(what, lag_k, t) for what, lag_k, t in candidates if np.isfinite(t) and t >= lag_k]
    slowest = max(resolved, key=lambda c: c[2]) if resolved else None
    return {"model": model, "tics": tics, "lag_ps": lag * frame_ps, "tica_its_ps": tica_its_ps, "its": its,
            "slowest_its_ps": float(slowest[2]) if slowest else float("nan"),
            "slowest_its_from": f"{slowest[0]} at lag {slowest[1]:g} ps" if slowest else "none resolved",
            "its_resolved": [{"from": what, "lag_ps": lag_k, "its_ps": t} for what, lag_k, t in resolved]}


def project(model, features: np.ndarray, dim: int = 2) -> np.ndarray:
    return model.transform(features)[:, :dim]


def two_state_cores(tic1: np.ndarray) -> dict:
    """The two most populated states along TIC1 (1-D 2-means), and hysteresis cores: ``A: x < below``,
    ``B: x > above`` (a quarter of the distance between the centres in from each centre's far side)."""
    x = np.asarray(tic1, dtype=float)
    centres = np.percentile(x, [25.0, 75.0])
    for _ in range(100):
        label = np.abs(x[:, None] - centres[None, :]).argmin(axis=1)
        new = np.array([x[label == k].mean() if np.any(label == k) else centres[k] for k in range(2)])
        if np.allclose(new, centres):
            break
        centres = new
    a, b = sorted(centres.tolist())
    d, split = b - a, 0.5 * (a + b)
    return {"centres": [a, b], "below": a + 0.25 * d, "above": b - 0.25 * d, "split": split,
            "population_A": float(np.mean(x < split)), "population_B": float(np.mean(x >= split))}


def core_intervals(cores: dict) -> tuple[tuple[float, float], tuple[float, float]]:
    """The cores of :func:`two_state_cores` as intervals of TIC1 for :func:`cvlearn.analysis.count_core_transitions`:
    A = (-inf, below], B = [above, inf)."""
    return (-np.inf, cores["below"]), (cores["above"], np.inf)


def tic1_transitions(tic1: np.ndarray, cores: dict, dwell_frames: int, lengths=None) -> int:
    """Transitions between the TIC1 cores, a visit counted when it lasts ``dwell_frames``; ``lengths``: frames per
    independent chain of ``tic1`` (pooled, chain after chain), counted chain by chain (None: one run)."""
    return sum(count_core_transitions(x, *core_intervals(cores), min_dwell_frames=dwell_frames)
               for x in split_chains(tic1, lengths))


def split_chains(values: np.ndarray, lengths=None) -> list[np.ndarray]:
    """``values`` pooled chain after chain, as one array per chain (``lengths``: frames per chain; None: one)."""
    return [values] if lengths is None else np.split(values, np.cumsum(lengths)[:-1])


def second_half_mask(lengths) -> np.ndarray:
    """``[sum(lengths)]`` bool: the frames in the second half of their own chain (the first ``n // 2`` of a chain
    of ``n`` frames are its first half).

    Why per chain: the halves compare the reference with itself later in time. Pooling each chain's first half
    against the chains' second halves keeps that meaning with several chains, where chain 0 against chain 1 would
    compare a long chain with a young one that shares its start frame (``runs.chain_start_segment``)."""
    return np.concatenate([np.arange(n) >= n // 2 for n in lengths]) if len(lengths) else np.zeros(0, dtype=bool)


# φ cores (rad) of a residue's αL (φ ≈ +1) and of the φ < 0 states (β, PPII, αR): a visit counts when it lasts the
# dwell, as along TIC1; the population is of φ > 0 (no gap), so the two add up to one with what lies between.
ALPHA_L_CORE_RAD = (0.5, 1.8)
PHI_NEGATIVE_CORE_RAD = (-np.pi, -0.5)


def alpha_l_states(runs: list[dict], dwell_frames: int, weigh_frames: bool = False) -> dict:
    """Each residue's αL: its population (φ > 0) and the αL ↔ φ < 0 transitions, per run.

    ``runs``: ``{"phi" [n_frames, n_residues] rad}`` with ``keep`` and ``weights`` for biased walkers (reweighted
    population over the kept frames, :func:`walker_weights`), without them for unbiased runs (every frame alike).
    Transitions are counted on every frame, in the run's own (biased) time.

    Why: RMS F(TIC1, TIC2) over shared bins weighs a state by its population in each run, and a rare state's
    population rests on the visits a run made: the pentapeptide reference put 24 % in Leu2's αL from one 81-ns visit
    (332 ns), and the walkers biased on Leu2 φ itself gave 72 %, 0.02 % and 0.45 % (2, 0 and 2 visits of 200 ps);
    side by side, they say whether anyone has measured it.

    A run that ends in αL (the last core it committed to, by the same dwell as its transitions:
    :func:`cvlearn.analysis.committed_cores`) has a last visit still open: its population counts that visit's length
    so far, which says nothing of when it would have left (the reference entered Leu2's αL at 237 ns and was still
    there when it ended at 309 ns; extended, it left at 318 ns). A visit at the very end shorter than the dwell does
    not count, so the flag never marks a run whose counted visits are all closed.

    Two residues in αL at once are a state of their own: the walker that gave Leu2 72 % held it almost all with
    Ala3 in αL too (a state the reference never entered), so ``pair_population_per_run`` says which state a
    population is.

    Returns
    -------
    dict
        ``population_per_run``, ``transitions_per_run`` and ``ends_in_alpha_l_per_run`` (bool):
        ``[n_runs][n_residues]``; ``population``: the mean over runs (each run weighs alike, as the pooled F;
        ``weigh_frames``: each frame alike, for the chains of one unbiased reference);
        ``pairs``: ``[(j, k)]`` residue pairs j < k, ``pair_population_per_run``: ``[n_runs][n_pairs]`` the
        population with both in αL.
    """
    pops, trans, ends, both, frames = [], [], [], [], []
    pairs = []
    for r in runs:
        phi = np.asarray(r["phi"], dtype=float)
        if not len(phi):
            continue
        keep, weights = r.get("keep", slice(None)), r.get("weights")
        kept = wrap_angle(phi[keep]) > 0
        frames.append(len(kept))
        w = np.full(len(kept), 1.0 / len(kept)) if weights is None else np.asarray(weights, dtype=float) / np.sum(weights)
        pops.append([float(w @ kept[:, k]) for k in range(phi.shape[1])])
        pairs = [(j, k) for j in range(phi.shape[1]) for k in range(j + 1, phi.shape[1])]
        both.append([float(w @ (kept[:, j] & kept[:, k])) for j, k in pairs])
        cores = [committed_cores(wrap_angle(phi[:, k]), PHI_NEGATIVE_CORE_RAD, ALPHA_L_CORE_RAD,
                                 min_dwell_frames=dwell_frames) for k in range(phi.shape[1])]
        trans.append([max(0, len(c) - 1) for c in cores])
        ends.append([bool(c) and c[-1] == 1 for c in cores])
    return {"population_per_run": pops, "transitions_per_run": trans, "ends_in_alpha_l_per_run": ends,
            "population": np.average(pops, axis=0, weights=frames if weigh_frames else None).tolist() if pops else [],
            "pairs": pairs,
            "pair_population_per_run": both}


def core_relaxation(tic1: np.ndarray, cores: dict, lags_ps, frame_ps: float, lengths=None) -> dict:
    """The relaxation time of the core-assigned (two-state) reference at each lag, and the transitions a two-state
    Markov model with the largest resolved one predicts over the run: 2 p_A p_B T / τ.

    Why: an independent check of the counted transitions and their dwell rule. A dwell shorter than the time TIC1
    needs to commit counts excursions that return, and the count then exceeds what the relaxation allows (the
    pentapeptide reference at 188 ns: 25 counted at a 20-ps dwell, τ 8.1 ns at lags 1-2 ns, 9 predicted, 7 counted
    at 200 ps to 2 ns). nan where no lag resolves τ (τ below its lag) or a state was never visited. ``lengths``:
    frames per independent chain (:func:`tic1_transitions`).
    """
    from cvlearn.analysis.kinetics import implied_timescales

    states = [s[s >= 0] for s in (last_core(x, *core_intervals(cores)) for x in split_chains(tic1, lengths))]
    states = [s for s in states if len(s)]
    n_frames = sum(len(s) for s in states)
    longest = max((len(s) for s in states), default=0)
    lags = sorted({max(1, int(round(l / frame_ps))) for l in lags_ps if 0 < l / frame_ps < longest / 4})
    p_b = float(np.mean(np.concatenate(states) == 1)) if n_frames else float("nan")
    out = {"lags_ps": [], "tau_ps": [], "population_B": p_b, "tau_ps_resolved": float("nan"),
           "predicted_transitions": float("nan")}
    if not lags or not 0 < p_b < 1:
        return out
    its = implied_timescales([s.astype(np.int32) for s in states], lags, n_its=1, dt_ps=frame_ps)
    taus = [float(row[0]) for row in its["timescales_ps"]]
    resolved = [tau for lag, tau in zip(its["lags_ps"], taus) if np.isfinite(tau) and tau >= lag]
    tau = max(resolved) if resolved else float("nan")
    return {**out, "lags_ps": [float(v) for v in its["lags_ps"]], "tau_ps": taus, "tau_ps_resolved": tau,
            "predicted_transitions": 2.0 * p_b * (1.0 - p_b) * n_frames * frame_ps / tau if resolved else float("nan")}


def fes_rms(f_ref: np.ndarray, f: np.ndarray, cutoff_kjmol: float) -> tuple[float, int]:
    """RMS of F − F_ref (kJ/mol) over bins populated in both with F_ref ≤ cutoff, after the best constant shift;
    and the number of those bins."""
    mask = np.isfinite(f_ref) & np.isfinite(f) & (f_ref <= cutoff_kjmol)
    if mask.sum() < 2:
        return float("nan"), int(mask.sum())
    diff = f[mask] - f_ref[mask]
    return float(np.sqrt(np.mean((diff - diff.mean()) ** 2))), int(mask.sum())


def mass_outside(f: np.ndarray, other: np.ndarray, temperature_k: float = 300.0) -> float:
    """Probability of the run behind ``f`` (F per bin, NaN where unvisited; equal bins) in the bins ``other`` never
    visited.

    Why: :func:`fes_rms` compares only bins populated in both runs, so a state one run found and the other never
    visited cannot show in it; this is that state's weight (measured on WLALL: the reference first entered Leu2's
    αL region at 238 ns, where each 2-D GNN walker had been within 4 ns)."""
    f, other = np.asarray(f, dtype=float), np.asarray(other, dtype=float)
    p = np.where(np.isfinite(f), np.exp(-np.nan_to_num(f, nan=0.0) / kt_kjmol(temperature_k)), 0.0)
    total = p.sum()
    return float(p[~np.isfinite(other)].sum() / total) if total > 0 else float("nan")


def walker_weights(bias_kjmol: np.ndarray) -> tuple[slice, np.ndarray]:
    """Frames kept (burn-in dropped) and their OPES weights, normalised to sum 1 per walker."""
    keep = slice(int(len(bias_kjmol) * BURN_IN_FRACTION), None)
    return keep, opes_weights(np.asarray(bias_kjmol)[keep], 300.0)


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Angles (rad) on [-π, π): the one wrapping :func:`pooled_fes` and :func:`in_region` bin torsions by."""
    return np.mod(np.asarray(angle, dtype=float) + np.pi, 2 * np.pi) - np.pi


def pooled_fes(pairs, weights, bins: int, range_xy, periodic: bool = False):
    """F over (x, y) of frames pooled from several runs: ``pairs`` [(x, y)] and ``weights`` [w or None] per run."""
    x = np.concatenate([p[0] for p in pairs])
    y = np.concatenate([p[1] for p in pairs])
    w = None if all(v is None for v in weights) else np.concatenate(
        [v if v is not None else np.full(len(p[0]), 1.0 / len(p[0])) for p, v in zip(pairs, weights)])
    if periodic:
        x, y = wrap_angle(x), wrap_angle(y)
    return free_energy_surface(x, y, w, 300.0, bins=bins, range_xy=range_xy)


def tic_range(tics: np.ndarray) -> tuple:
    """The (min, max) of each TIC column: the bins every F(TIC1, TIC2) here shares."""
    return tuple((float(v.min()), float(v.max())) for v in np.asarray(tics).T)


def compare_fes(ref: dict, arm_runs: list[dict], s: dict, range_tics: tuple | None = None,
                torsions: bool = True) -> dict:
    """RMS of the reweighted F(TIC1, TIC2) and per-residue F(φ, ψ) of one arm (pooled walkers) and per walker;
    TIC bins over ``range_tics`` (default: the range of ``ref``). ``outside_tica`` and each residue's
    ``outside_torsions_per_residue`` entry: [the arm's probability in bins the reference never visited, the
    reference's in bins the arm never visited] (:func:`mass_outside`), what the RMS over shared bins cannot see.
    ``torsions=False`` skips the F(φ, ψ) part (its keys are then absent): :func:`rms_over_time` reads only TIC1-2
    and would otherwise histogram every residue at every prefix."""
    rng = range_tics if range_tics is not None else tic_range(ref["tics"])
    f_ref, xe, ye = pooled_fes([tuple(ref["tics"].T)], [None], s["tica_bins"], rng)
    runs = [r for r in arm_runs if len(r["tics"])]
    if not runs:
        return {"rms_tica_kjmol": float("nan"), "rms_torsions_kjmol": float("nan"), "n_bins_tica": 0}
    pairs = [tuple(r["tics"][r["keep"]].T) for r in runs]
    f_arm = pooled_fes(pairs, [r["weights"] for r in runs], s["tica_bins"], rng)[0]
    rms_tica, n_bins = fes_rms(f_ref, f_arm, s["fes_cutoff_kjmol"])
    per_walker = [fes_rms(f_ref, pooled_fes([p], [r["weights"]], s["tica_bins"], rng)[0],
                          s["fes_cutoff_kjmol"])[0] for p, r in zip(pairs, runs)]
    out = {"rms_tica_kjmol": rms_tica, "n_bins_tica": n_bins, "rms_tica_per_walker_kjmol": per_walker,
           "outside_tica": [mass_outside(f_arm, f_ref), mass_outside(f_ref, f_arm)],
           "_fes_tica": (f_arm, xe, ye), "_fes_ref": (f_ref, xe, ye)}
    if not torsions:
        return out
    per_residue, outside_torsions, surfaces = [], [], []
    torsion_range = ((-np.pi, np.pi), (-np.pi, np.pi))
    for i in range(ref["phi"].shape[1]):
        f_r = pooled_fes([(ref["phi"][:, i], ref["psi"][:, i])], [None], s["torsion_bins"], torsion_range, True)
        f_b = pooled_fes([(r["phi"][r["keep"], i], r["psi"][r["keep"], i]) for r in runs], [r["weights"] for r in runs],
                         s["torsion_bins"], torsion_range, True)
        per_residue.append(fes_rms(f_r[0], f_b[0], s["fes_cutoff_kjmol"])[0])
        outside_torsions.append([mass_outside(f_b[0], f_r[0]), mass_outside(f_r[0], f_b[0])])
        surfaces.append((f_r, f_b))
    finite = np.asarray(per_residue, dtype=float)
    return {**out, "outside_torsions_per_residue": outside_torsions, "rms_torsions_per_residue_kjmol": per_residue,
            "rms_torsions_kjmol": float(np.nanmean(finite)) if np.isfinite(finite).any() else float("nan"),
            "_torsion_surfaces": surfaces}


def walkers_against_each_other(runs: list[dict], s: dict, range_tics: tuple, torsions: bool = True) -> dict:
    """Each walker's reweighted F against its arm's other walkers pooled (that pool as the reference in
    :func:`fes_rms`): RMS F(TIC1, TIC2) and the mean over residues of RMS F(φ, ψ), per walker; empty lists for one
    walker. ``torsions=False`` leaves the F(φ, ψ) list empty (:func:`rms_over_time` reads TIC1-2 only).

    Why: the reference's halves bound what the reference can resolve; this bounds what the arm can. Where a walker
    differs from the others as much as the arm from the reference, the arm's own F is not converged (measured on
    WLALL at 6 ns per walker: 4.1-8.8 kJ/mol on TIC1-2 for the 2-D GNN arm, against its 4.0 from the reference).
    """
    out = {"rms_tica_walker_vs_rest_kjmol": [], "rms_torsions_walker_vs_rest_kjmol": []}
    if len(runs) < 2:
        return out
    whole, cutoff = ((-np.pi, np.pi), (-np.pi, np.pi)), s["fes_cutoff_kjmol"]
    for k, one in enumerate(runs):
        rest = runs[:k] + runs[k + 1:]
        weights = [r["weights"] for r in rest]
        f_one = pooled_fes([tuple(one["tics"][one["keep"]].T)], [one["weights"]], s["tica_bins"], range_tics)[0]
        f_rest = pooled_fes([tuple(r["tics"][r["keep"]].T) for r in rest], weights, s["tica_bins"], range_tics)[0]
        out["rms_tica_walker_vs_rest_kjmol"].append(fes_rms(f_rest, f_one, cutoff)[0])
        if not torsions:
            continue
        per_residue = [fes_rms(pooled_fes([(r["phi"][r["keep"], i], r["psi"][r["keep"], i]) for r in rest], weights,
                                       s["torsion_bins"], whole, True)[0],
                            pooled_fes([(one["phi"][one["keep"], i], one["psi"][one["keep"], i])], [one["weights"]],
                                       s["torsion_bins"], whole, True)[0], cutoff)[0]
                    for i in range(one["phi"].shape[1])]
        out["rms_torsions_walker_vs_rest_kjmol"].append(
            float(np.nanmean(per_residue)) if np.isfinite(per_residue).any() else float("nan"))
    return out


def reference_halves_rms(ref: dict, s: dict, range_tics: tuple | None = None) -> dict:
    """RMS F(TIC1, TIC2) and mean per-residue RMS F(φ, ψ) between the reference's first and second half, binned as
    the arms are (the whole run's TIC range, or ``range_tics``).

    Why: an arm cannot be shown to match the reference better than two halves of the reference match each other;
    where the halves differ by more than a target, this reference cannot test that target. ``_torsion_surfaces``
    (per residue: each half's :func:`pooled_fes`) is for :func:`settled_region`; like every ``_`` key it stays out
    of the JSON (:func:`public`). With several chains (``ref["second_half"]``, :func:`second_half_mask`), each
    chain's first half pooled against their second halves.
    """
    late = ref["second_half"] if "second_half" in ref else second_half_mask([len(ref["tics"])])
    first = {k: ref[k][~late] for k in ("tics", "phi", "psi")}
    second = {**{k: ref[k][late] for k in ("tics", "phi", "psi")}, "keep": slice(None), "weights": None}
    c = compare_fes(first, [second], s, range_tics or tic_range(ref["tics"]))
    return {k: c[k] for k in ("rms_tica_kjmol", "n_bins_tica", "rms_torsions_kjmol", "rms_torsions_per_residue_kjmol",
                              "outside_tica", "outside_torsions_per_residue", "_torsion_surfaces")}


def training_coverage(ref: dict, runs: list[dict], s: dict, dwell_frames: int) -> dict:
    """What of the reference the CVs' training data saw: its frames on the reference's TICs and torsions, unweighted.

    ``runs``: per training trajectory ``{"tics", "phi", "psi"}`` (the TICs projected by the reference's model).
    Returns the reference's probability in F(TIC1, TIC2) bins (``reference_outside_tica``) and per residue in
    F(φ, ψ) bins (``reference_outside_torsions_per_residue``) that no training frame visited, and the TIC1 core
    transitions (:func:`tic1_transitions`) per training run.

    Why: a CV learned by VAMP can only resolve processes its training data contains; where the reference holds
    probability the training data never reached, a bias on that CV is not expected to drive the system there, and
    the arms' RMS against the reference measures the data as much as the method (measured on WLALL: the 400 K
    runs left the φ/ψ bins of Leu2's αL, 23 % of the reference at 310 ns, unvisited). Unweighted: the runs are at another
    temperature, so only where they went is compared, not how often.
    """
    fed = [{**r, "keep": slice(None), "weights": None} for r in runs if len(r["tics"])]
    if not fed:
        return {}
    c = compare_fes(ref, fed, s)
    return {"frames": int(sum(len(r["tics"]) for r in fed)), "reference_outside_tica": c["outside_tica"][1],
            "reference_outside_torsions_per_residue": [o[1] for o in c["outside_torsions_per_residue"]],
            "tic1_transitions_per_run": [tic1_transitions(r["tics"][:, 0], ref["cores"], dwell_frames) for r in fed]}


def public(d: dict) -> dict:
    """``d`` without its ``_`` keys (surfaces and edges kept for plots and later steps, not for the JSON)."""
    return {k: v for k, v in d.items() if not k.startswith("_")}


def settled_region(ref: dict, s: dict, halves: dict) -> dict | None:
    """Where the reference's halves agree on what exists: for every residue whose halves hold more than
    :data:`OUTSIDE_MAX` of a half's probability in F(φ, ψ) bins the other half never visited
    (``halves["outside_torsions_per_residue"]``, :func:`reference_halves_rms`), the (φ, ψ) bins both halves
    visited; other residues unrestricted. None when no residue is flagged.

    Why: a state the reference entered once and has not left (WLALL's Leu2 αL from 238 ns on: 19 % of the
    reference at 294 ns) has a population the reference does not know, and its frames share F(TIC1, TIC2) bins with the rest, so
    the RMS over shared bins compares it too. Restricted to this region, reference and arm compare what the
    reference has sampled back and forth; the region is chosen from the reference alone, never from an arm.

    The halves' surfaces are ``halves["_torsion_surfaces"]``, so the region's bins are the very ones the halves
    were compared on.

    Returns
    -------
    dict
        ``residues`` (0-based columns of ``phi``/``psi``), ``bins`` (``{residue: [bins, bins] bool}``, φ by ψ),
        ``edges`` (the φ and the ψ bin edges, rad) and ``reference_fraction_left_out`` (of the reference's frames).
    """
    flagged = [i for i, pair in enumerate(halves.get("outside_torsions_per_residue") or [])
               if np.nanmax(np.asarray(pair, dtype=float)) > OUTSIDE_MAX]
    if not flagged:
        return None
    surfaces = halves["_torsion_surfaces"]
    region = {"residues": flagged, "edges": surfaces[flagged[0]][0][1:],
              "bins": {i: np.isfinite(surfaces[i][0][0]) & np.isfinite(surfaces[i][1][0]) for i in flagged}}
    region["reference_fraction_left_out"] = float(1.0 - in_region(ref["phi"], ref["psi"], region).mean())
    return region


def in_region(phi: np.ndarray, psi: np.ndarray, region: dict) -> np.ndarray:
    """``[T]`` bool: frames (``phi``, ``psi`` ``[T, residues]`` rad) inside :func:`settled_region`'s region, each
    angle wrapped and binned on the region's edges as :func:`pooled_fes` bins it (``np.histogram2d``: half-open
    bins, the last closed)."""
    phi_edges, psi_edges = region["edges"]
    inside = np.ones(len(phi), dtype=bool)
    for i in region["residues"]:
        inside &= region["bins"][i][np.digitize(wrap_angle(phi[:, i]), phi_edges[1:-1]),
                                    np.digitize(wrap_angle(psi[:, i]), psi_edges[1:-1])]
    return inside


def compare_settled(ref: dict, arm_runs: list[dict], s: dict, region: dict, torsions: bool = True) -> dict:
    """:func:`compare_fes` of the reference and an arm, both restricted to ``region`` (:func:`settled_region`),
    on the whole reference's TIC bins (its floor: :func:`settled_halves`).

    Each walker keeps the OPES weights of its frames inside (not renormalised: walkers stay equally weighted, so the
    pooled surface is the conditional one). ``arm_probability_left_out``: the arm's reweighted probability outside,
    the counterpart of ``reference_fraction_left_out``. ``torsions=False``: TIC1-2 only (``rms_torsions_kjmol``
    NaN), as in :func:`compare_fes`.
    """
    rng, keys = tic_range(ref["tics"]), ("tics", "phi", "psi")
    inside = in_region(ref["phi"], ref["psi"], region)
    restricted = {k: ref[k][inside] for k in keys}
    kept, left_out = [], []
    for r in (r for r in arm_runs if len(r["tics"])):
        frames = np.arange(len(r["tics"]))[r["keep"]]
        mask = in_region(r["phi"][frames], r["psi"][frames], region)
        kept.append({**{k: r[k][frames][mask] for k in keys}, "keep": slice(None), "weights": r["weights"][mask]})
        left_out.append(1.0 - float(r["weights"][mask].sum() / r["weights"].sum()))
    c = compare_fes(restricted, kept, s, rng, torsions)
    return {"rms_tica_kjmol": c["rms_tica_kjmol"], "n_bins_tica": c["n_bins_tica"],
            "rms_torsions_kjmol": c.get("rms_torsions_kjmol", float("nan")),
            "arm_probability_left_out": float(np.mean(left_out)) if left_out else float("nan")}


def settled_halves(ref: dict, s: dict, region: dict) -> dict:
    """:func:`reference_halves_rms` of the reference restricted to ``region``, on the whole reference's TIC bins:
    the floor the restricted arms' RMS is judged against."""
    inside = in_region(ref["phi"], ref["psi"], region)
    return public(reference_halves_rms({k: ref[k][inside] for k in ("tics", "phi", "psi", "second_half") if k in ref},
                                       s, tic_range(ref["tics"])))


def rms_over_time(ref: dict, walkers: list[dict], s: dict, region: dict | None = None, points: int = 6) -> dict:
    """An arm's RMS against the reference from the first t ns of every walker, at ``points`` lengths up to the
    shortest walker's: RMS F(TIC1, TIC2) over shared bins (:func:`compare_fes`), the same where the reference's
    halves agree (:func:`compare_settled`, when ``region``), and the mean of each walker against the others
    (:func:`walkers_against_each_other`). Each prefix is reweighted as a whole run would be (its own burn-in).

    Why: one RMS at the end cannot tell an arm that is still converging from one that has settled off the
    reference; falling with t says more sampling closes the gap, flat says the CV (or the reference) does not.
    ``walkers``: :func:`compare_fes`'s runs with their per-frame ``bias`` (kJ/mol) as well.

    Returns
    -------
    dict
        ``ns_per_walker``, ``rms_tica_kjmol``, ``rms_tica_settled_kjmol`` (NaN without ``region``),
        ``walker_vs_rest_tica_kjmol``: lists of ``points`` floats (fewer for walkers shorter than ``points`` frames).
    """
    out = {"ns_per_walker": [], "rms_tica_kjmol": [], "rms_tica_settled_kjmol": [], "walker_vs_rest_tica_kjmol": []}
    walkers = [w for w in walkers if len(w["tics"])]
    if not walkers:
        return out
    shortest, rng = min(len(w["tics"]) for w in walkers), tic_range(ref["tics"])
    for end in sorted({shortest * k // points for k in range(1, points + 1)} - {0}):
        cut = []
        for w in walkers:
            keep, weights = walker_weights(w["bias"][:end])
            cut.append({**{k: w[k][:end] for k in ("tics", "phi", "psi")}, "keep": keep, "weights": weights})
        out["ns_per_walker"].append(end * s["frame_ps"] * 1e-3)
        out["rms_tica_kjmol"].append(compare_fes(ref, cut, s, rng, torsions=False)["rms_tica_kjmol"])
        out["rms_tica_settled_kjmol"].append(compare_settled(ref, cut, s, region, torsions=False)["rms_tica_kjmol"] if region
                                             else float("nan"))
        each = walkers_against_each_other(cut, s, rng, torsions=False)["rms_tica_walker_vs_rest_kjmol"]
        out["walker_vs_rest_tica_kjmol"].append(float(np.nanmean(each)) if np.isfinite(each).any() else float("nan"))
    return out


def plot_rms_over_time(arms: dict, floors: dict, target_kjmol: float, path: Path) -> str:
    """:func:`rms_over_time` of each arm (``arms``: name → its dict): against the reference (solid: shared bins,
    dashed: where the reference's halves agree) and each walker against the others (mean); ``floors``: label →
    the reference halves' RMS, drawn as grey lines, and the target as a black one."""
    from cvlearn.analysis.plots import plt, save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    for k, (arm, v) in enumerate(arms.items()):
        left.plot(v["ns_per_walker"], v["rms_tica_kjmol"], "o-", color=f"C{k}", label=arm)
        if np.isfinite(v["rms_tica_settled_kjmol"]).any():
            left.plot(v["ns_per_walker"], v["rms_tica_settled_kjmol"], "s--", color=f"C{k}", alpha=0.7,
                      label=f"{arm}, where the halves agree")
        right.plot(v["ns_per_walker"], v["walker_vs_rest_tica_kjmol"], "o-", color=f"C{k}", label=arm)
    for ax in (left, right):
        ax.axhline(target_kjmol, color="k", lw=1, ls=":", label=f"target {target_kjmol:g}")
        for j, (label, value) in enumerate(floors.items()):
            if value is not None and np.isfinite(value):
                ax.axhline(value, color="0.5", lw=1, ls=("--", "-.")[j % 2], label=label)
        ax.set_xlabel("ns per walker (the first t ns of each)")
    left.set(ylabel="RMS F(TIC1, TIC2) (kJ/mol)", title="arm vs the reference")
    right.set(title="each walker vs its arm's others (mean)")
    fig.subplots_adjust(right=0.78, bottom=0.13)
    fig.legend(*left.get_legend_handles_labels(), loc="center right", fontsize=8)
    save_figure(fig, path)
    return path.name


def basin_dF(tic1: np.ndarray, weights: np.ndarray | None, cores: dict) -> float:
    """F(B) − F(A) in kJ/mol at 300 K between the two TIC1 states of :func:`two_state_cores`, split at ``split``
    (the midpoint of their centres); ±inf where a state was never visited. ``weights`` (reweighting, any scale) or None (unbiased)."""
    x = np.asarray(tic1, dtype=float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    p_a, p_b = float(w[x < cores["split"]].sum()), float(w[x >= cores["split"]].sum())
    with np.errstate(divide="ignore"):
        return float(-kt_kjmol(300.0) * np.log(p_b / p_a)) if p_a > 0 else float("-inf")


def basin_dF_over_time(tic1: np.ndarray, weights: np.ndarray | None, cores: dict, frame_ps: float,
                       points: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """ΔF(B − A) from the first t ns of one run (``weights`` for its frames, a prefix of them per point), for a
    convergence plot: flat means converged, a jump at a state's first visit means not yet. ±inf become NaN."""
    n = len(tic1)
    ends = sorted({n * k // points for k in range(1, points + 1)} - {0})
    df = np.array([basin_dF(tic1[:e], None if weights is None else weights[:e], cores) for e in ends])
    return np.array(ends) * frame_ps * 1e-3, np.where(np.isfinite(df), df, np.nan)


def reference_basins(tic1: np.ndarray, cores: dict, frame_ps: float, lengths=None) -> dict:
    """How well the reference knows its slowest process: ΔF(B − A) over the whole run and over each half
    (:func:`second_half_mask`), and when each state was first entered (ns from the analysed start of chain 0;
    ``first_entry_ns_per_chain``: of each chain). ``lengths``: frames per chain (None: one).

    Why: the RMS of F over bins populated in both runs cannot see a state one run never visited, so two halves of a
    run that stayed in A for most of its length agree on F while knowing nothing of B; ΔF per half shows it.
    """
    x = np.asarray(tic1, dtype=float)
    lengths = [len(x)] if lengths is None else list(lengths)
    late = second_half_mask(lengths)
    firsts = [{k: (float(np.argmax(hit)) * frame_ps * 1e-3 if hit.any() else None)
               for k, hit in (("A", c < cores["split"]), ("B", c >= cores["split"]))} for c in split_chains(x, lengths)]
    return {"dF_BA_kjmol": basin_dF(x, None, cores), "dF_BA_halves_kjmol": [basin_dF(x[~late], None, cores),
                                                                        basin_dF(x[late], None, cores)],
            "first_entry_ns": firsts[0], "first_entry_ns_per_chain": firsts}


def plot_dF_convergence(curves: dict, path: Path) -> str:
    """ΔF(B − A) against simulated time: the reference and each arm's walkers (``curves``: name → [(t_ns, ΔF)])."""
    from cvlearn.analysis.plots import plot_free_energy_profiles

    plot_free_energy_profiles(curves, path, "simulated time (ns; walkers: after the burn-in)",
                              "ΔF(B − A) along TIC1 (kJ/mol), from the start")
    return path.name


def plot(ref_fes, arms: dict, path_stem: Path) -> list[str]:
    """F(TIC1, TIC2) of the reference and of each arm reweighted (one PNG each, the same bins), and the
    Ramachandran plane of the slowest-moving residue side by side (one PNG). Returns the file names."""
    from cvlearn.analysis.plots import plot_fes_2d, plot_fes_panels

    names = []
    for label, (fes, xe, ye) in [("reference", ref_fes), *[(a, v["_fes_tica"]) for a, v in arms.items()
                                                          if "_fes_tica" in v]]:
        path = path_stem.with_name(f"{path_stem.name}_fes_tica_{label}.png")
        plot_fes_2d(fes, xe, ye, path, "TIC 1 (reference)", "TIC 2 (reference)")
        names.append(path.name)
    with_surfaces = {a: v for a, v in arms.items() if v.get("_torsion_surfaces")}
    if with_surfaces:
        rms = np.nanmean([v["rms_torsions_per_residue_kjmol"] for v in with_surfaces.values()], axis=0)
        i = int(np.nanargmax(rms)) if np.isfinite(rms).any() else 0
        first = next(iter(with_surfaces.values()))["_torsion_surfaces"][i][0]
        panels = [(f"reference, residue {i + 1}", *first)]
        panels += [(f"{a} reweighted, residue {i + 1}", *v["_torsion_surfaces"][i][1]) for a, v in with_surfaces.items()]
        path = path_stem.with_name(f"{path_stem.name}_fes_phi_psi.png")
        plot_fes_panels(panels, path)
        names.append(path.name)
    return names


__all__ = ["ALPHA_L_CORE_RAD", "OUTSIDE_MAX", "PHI_NEGATIVE_CORE_RAD", "alpha_l_states", "compare_fes", "compare_settled", "core_intervals", "core_relaxation", "fes_rms",
           "in_region", "mass_outside", "second_half_mask", "split_chains", "plot", "project", "reference_model", "basin_dF", "basin_dF_over_time",
           "plot_dF_convergence", "plot_rms_over_time", "public", "reference_basins", "reference_halves_rms", "rms_over_time",
           "settled_halves", "settled_region", "tic_range", "torsions", "tic1_transitions", "two_state_cores",
           "walker_weights", "walkers_against_each_other", "wrap_angle"]
