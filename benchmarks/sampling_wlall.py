"""Does biasing a learned CV sample the pentapeptide ACE-WLALL-NME at 300 K like long unbiased MD? (issue 17)

Both CVs come from one ``cvlearn learn`` run (``export_baselines: true``) on unbiased 400 K runs: the GNN CV
(``cv.pt``, the shipped pre-trained ET, frozen, attention mixer, 2 components) and the distance-VAMPNet baseline
(``baseline_distances_cv.pt``), same data, same selection (heavy atoms). A third CV, arm ``gnn_retrained``, follows
the practitioners' protocol for learned CVs (``cvlearn iterate``; Deep-TICA): the GNN CV retrained with the same
settings on the first ``retrain_ns`` of the ``gnn`` walkers (biased, 300 K), reweighted on rescaled time; it asks
whether a CV learned from biased 300 K frames drives the slowest process better than one learned at 400 K. Each is
biased the same way (arm ``gnn``, arm ``distances``, arm ``gnn_retrained``): OPES-metad on component 0 (``--components``;
arm ``gnn_2d`` biases the ``gnn`` arm's CV on both its components, a 2-D OPES: ``runs.ARM_COMPONENTS``), σ by
:func:`openmm_plugin.bias.sigma.learned_cv_sigma` (``--sigma-rule adaptive``: OPES adaptive σ), walls 10 % of the
training range outside it (kappa 100), the same barrier and pace, MTS 2 (the GNN CV costs ~10 ms/step: MTS 1 would
double it; on ala2's continuous CV MTS 2 and 1 gave the same ΔF within errors), the README recipe's bias-force guard
(``force_guard_kjmol_nm`` 1000, capped atom-forces counted and reported), ≥ 3 walkers with independent seeds, each a
``cvlearn bias`` run (:func:`openmm_plugin.stages.bias.run_bias`: PythonForce + ``torch.compile`` of the CV, the
route the README recommends; --quick measured 12.7 ms/step for the GNN CV against 30.7 through TorchScript; COLVAR +
trajectory.dcd, checkpoints). The unbiased 300 K reference grows in segments, in ``reference_chains`` (2)
independent chains side by side (one per core with ``--jobs 2``; chain 1 starts from chain 0's frame at 10 ns with
its own seeds), until the chains together are ``its_factor`` (20) × its slowest implied timescale long and hold
``min_reference_transitions`` (10) at its rate so far (``--reference-ns auto``; measured by TICA on backbone
torsions, MSM ITS at lags up to 2 ns, on all the reference so far once it holds the first chunk), or
``--reference-ns`` ns.

Compared (``results/sampling_wlall[_quick].{json,md}`` and PNGs): reweighted F(TIC1, TIC2) of the reference's TICA
model and per-residue F(φ, ψ), RMS difference to the reference (target ≤ 2.5 kJ/mol for the GNN CV; also from
the first t ns of every walker, ``*_rms_convergence.png``); transitions
between the two most populated states along TIC1 (hysteresis cores, a visit counted when it lasts
``transition_dwell_ps``; the counts at other dwells and the reference's two-state prediction are reported beside)
per ns and per wall hour, biased vs unbiased (target ≥ 5x per ns for the GNN CV); blow-ups (target 0); the
reference's length against its slowest ITS; ΔF(B − A) between those two states, reweighted per arm and walker, and
the reference's per half (RMS F over bins populated in both runs is blind to a state one run never reached: the
halves' ΔF says whether the reference knows it); and what of the reference the CVs' training data ever visited
(``training_coverage``: a CV cannot resolve a state its training frames never reached).

The 400 K runs never entered Leu2's αL, 23 % of the reference, so arms ``gnn_hot_2d`` and ``distances_hot_2d``
learn both CVs again, same settings, from a second training set, ``train_hot``: the same runs at
``hot_train_temperature_k`` (600 K, chosen from one 0.5-ns trial run per temperature: at 500 K it never entered αL,
at 600 K 7 times; ``training_coverage`` reports what the set holds), each biased on its two components as ``gnn_2d``.
Against ``gnn_2d`` only the training data differ.

Arm ``torsions_2d`` is a control with no learned CV: OPES on Trp ψ and Leu2 φ (``runs.NATIVE_ARMS``), the torsions
that carry the reference's slow motions, biased the same way (σ rule, barrier, pace, MTS) on ``cvlearn bias``'s native
route (CustomTorsionForces and a tabulated bias, so no PythonForce, no force guard; periodic, so no walls). It is
chosen from the reference, so it shows what a CV that knows the slow torsions reaches against this reference.

Arm ``gnn_torsions_2d`` follows the protocol of ``gnn_retrained`` with ``torsions_2d`` as the first CV: the GNN CV
learned, same settings, from the first ``retrain_ns`` of the ``torsions_2d`` walkers (which enter Leu2's αL),
reweighted on rescaled time, then biased on both its components as ``gnn_2d``. It asks whether a GNN CV whose
training frames hold the slow state drives it; its exploration leaned on the control's choice of torsions.

    python benchmarks/sampling_wlall.py --quick                        # every code path (minutes), resumable too
    nice python benchmarks/sampling_wlall.py --work benchmarks/state/sampling_wlall --budget-min 50 --jobs 2
                                                                       # the result, grown over several sessions

Every part resumes after a kill and a finished part is reused (see ``benchmarks/_sampling_wlall_runs.py``);
``--budget-min`` stops an invocation cleanly (walkers are stopped and resume from their checkpoint, a reference
segment starts only when it fits). The settings are recorded in ``<work>/benchmark.run.json``: a changed one is
refused (``--restart-fresh`` starts over), but for the analysis' own (``ANALYSIS_ONLY``) and ``--walker-ns``: a
larger one extends every walker that ran through from its last checkpoint (a rerun without it keeps the extended
length). Results are written at the end of every invocation from what exists (``complete: false`` until every part
has finished; a walker the budget stopped is analysed as it stands once it holds half of ``walker_ns``, counted as
running). A finished reference segment keeps what the analysis needs in
``reference/seg_k.reduced.npz`` (backbone torsions and its last frame, ~0.12 MB per ns): its ``.dcd`` can be deleted,
so the reference's state can be committed and grown across sessions.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENMM_CPU_THREADS", "1")  # before openmm is imported: one core per CPU-platform Context

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _sampling_wlall_analysis as ana  # noqa: E402
from benchmarks import _sampling_wlall_runs as runs  # noqa: E402
from benchmarks._sampling_walkers import read_walker  # noqa: E402
from benchmarks.common import RESULTS, machine, now_utc, run_resumable, save, targets_table  # noqa: E402
from benchmarks.sampling import _summary  # noqa: E402
from cvlearn.analysis import rate_ratio_ci  # noqa: E402
from cvlearn.run_dir import read_record  # noqa: E402

STEPS_PER_NS = 500_000  # WLALL runs 2 fs steps
RMS_TARGET_KJMOL = 2.5  # the issue's bound on RMS F against the reference (1 kT at 300 K)
FULL = {"train_seeds": 3, "train_ns": 2.0, "train_temperature_k": 400.0, "frame_ps": 1.0, "checkpoint_ps": 10.0,
        "mixer": "attention", "learn_lag_ps": 10.0, "learn_seeds": 3, "n_clusters": 20, "platform": "CPU",
        "segment_ns": 1.0, "reference_seed": 1000, "reference_chains": 2, "first_chunk_ns": 10.0, "its_factor": 20.0,
        "reference_max_ns": 500.0, "equilibration_ns": 1.0, "tica_lag_ps": 20.0,
        "its_lags_ps": [2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0], "its_clusters": 50,
        "transition_dwell_ps": 200.0, "min_reference_transitions": 10, "seeds": 3, "walker_ns": 2.0,
        "mts": 2, "compile": True, "pace_ps": 1.0, "barrier_kjmol": 30.0, "components": [0], "wall_margin_fraction": 0.1,
        "force_guard_kjmol_nm": 1000.0,
        "sigma_rule": "learned", "tica_bins": 30, "torsion_bins": 24, "fes_cutoff_kjmol": 20.0,
        "retrain_ns": 2.0, "retrain_lag_ps": 10.0, "hot_train_temperature_k": 600.0}
QUICK = {**FULL, "train_ns": 0.02, "frame_ps": 0.2, "checkpoint_ps": 0.4, "learn_lag_ps": 2.0, "n_clusters": 10,
         "segment_ns": 0.01, "first_chunk_ns": 0.02, "reference_max_ns": 0.04, "equilibration_ns": 0.0,
         "tica_lag_ps": 1.0, "its_lags_ps": [0.4, 1.0, 2.0], "its_clusters": 10, "transition_dwell_ps": 2.0,
         "walker_ns": 0.002, "pace_ps": 0.2,
         "tica_bins": 10, "torsion_bins": 12, "retrain_ns": 0.002, "retrain_lag_ps": 0.2}
# settings added after runs were recorded; nothing recorded before used them
ADDED = ("retrain_ns", "retrain_lag_ps", "hot_train_temperature_k", "reference_chains")
# reference_chains 2: one chain per core of a 2-core machine (``runs.extend_reference``); more may be added later
# (extendable: a new chain starts from chain 0's first chunk, the chains there are kept).
# Settings of the analysis alone: no stored run depends on them (each invocation analyses everything anew), so a
# rerun may change them. The reference's planned length follows some of them, and grows when they ask for more.
ANALYSIS_ONLY = ("tica_lag_ps", "its_lags_ps", "its_clusters", "transition_dwell_ps", "min_reference_transitions",
                 "tica_bins", "torsion_bins", "fes_cutoff_kjmol")
# its_lags_ps up to 2 ns: at 188 ns the MSM's ITS_1 rose from 5.2 ns at a 200-ps lag to 7.6-8.3 ns at 0.5-3 ns,
# so lags up to 200 ps understated the slowest process (and the plan built on it) by 1.6x.
# transition_dwell_ps 200 (was one TICA lag, 20 ps): see cvlearn.analysis.count_core_transitions; on the reference
# the count is 25 / 17 / 11 / 7 / 7 / 7 at 20 / 50 / 100 / 200 / 500 / 2000 ps, and its two-state relaxation
# (benchmarks._sampling_wlall_analysis.core_relaxation) predicts ~9.


# walker_ns 2: the reference's slowest resolved ITS is 78 ps (TICA at 20 ps on 10 ns), so a walker is >= 20 of them
# before any bias speeds it up (the first plan, 5 ns, was made before the ITS was measured).


def settings(args) -> dict:
    s = dict(QUICK if args.quick else FULL)
    for key in ("walker_ns", "seeds", "sigma_rule"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    if args.components is not None:
        s["components"] = [int(c) for c in args.components.split(",")]
    if s["seeds"] < 3 and not args.quick:
        raise SystemExit(f"--seeds: expected >= 3 walkers per arm (issue 17), found {s['seeds']}")
    if args.reference_ns != "auto":
        try:
            if not float(args.reference_ns) > 0:
                raise ValueError
        except ValueError:
            raise SystemExit(f"--reference-ns: expected 'auto' or a length in ns > 0, found {args.reference_ns!r}")
    return s


def reference_target_ns(args, s: dict, model: dict | None) -> float:
    """The reference's planned length: the user's, or its_factor × the slowest ITS and long enough to hold
    ``min_reference_transitions`` at its rate so far (the unbiased rate every arm is divided by), at least the first
    chunk and at most ``reference_max_ns``."""
    if args.reference_ns != "auto":
        return float(args.reference_ns)
    if model is None:
        return float(s["first_chunk_ns"])
    its_ns = model["slowest_its_ps"] * 1e-3
    want = s["its_factor"] * its_ns if np.isfinite(its_ns) else s["first_chunk_ns"]
    needed = s.get("min_reference_transitions", 0)
    if needed:
        want = max(want, needed * model["ns_analysed"] / model["transitions"] if model["transitions"] else np.inf)
    return float(min(s["reference_max_ns"], max(s["first_chunk_ns"], want)))


def load_reference(work: Path, s: dict) -> dict | None:
    """The reference so far: each chain's segments in order, its first ``equilibration_ns`` dropped, the chains
    pooled chain after chain (``lengths``: frames per chain; ``second_half``: the frames in their chain's second
    half): torsions, TICA model, ITS; None until chain 0 holds the first chunk. A chain with less than one segment
    left after its equilibration is left out until it has more."""
    n0 = runs.finished_segments(work, 0)
    if n0 * s["segment_ns"] < s["first_chunk_ns"] - 1e-9:
        return None
    skip = int(round(s["equilibration_ns"] * 1e3 / s["frame_ps"]))
    chains, segments = [], []
    for chain in range(s.get("reference_chains", 1)):
        n = runs.finished_segments(work, chain)
        parts = [runs.reduce_segment(work, k, chain) for k in range(n)]
        arrays = [np.concatenate([p[key] for p in parts]).astype(np.float64)[skip:] if parts else np.zeros((0, 1))
                  for key in ("features", "phi", "psi")]
        if len(arrays[0]) * s["frame_ps"] * 1e-3 >= s["segment_ns"] - 1e-9:
            chains.append(arrays)
            segments.append(n)
    features, phi, psi = ([c[i] for c in chains] for i in range(3))
    lengths = [len(f) for f in features]
    model = ana.reference_model(features, s["frame_ps"], s["tica_lag_ps"], s["its_lags_ps"], s["its_clusters"])
    cores = ana.two_state_cores(model["tics"][:, 0])
    return {**model, "phi": np.concatenate(phi), "psi": np.concatenate(psi), "lengths": lengths,
            "second_half": ana.second_half_mask(lengths), "n_segments": sum(segments),
            "chain_segments": segments, "ns": sum(segments) * s["segment_ns"], "cores": cores,
            "transitions": ana.tic1_transitions(model["tics"][:, 0], cores, min_dwell_frames(s), lengths),
            "ns_analysed": sum(lengths) * s["frame_ps"] * 1e-3,
            "ms_per_step": runs.reference_ms_per_step(work, s.get("reference_chains", 1))}


def capped_atom_evaluations(colvar: Path) -> int:
    """Atom-forces the bias-force guard capped over a walker (COLVAR ``guard.capped``: cumulative within a session,
    so its positive increments are summed across restarts); 0 without a guard. Read whole, not cut at a blow-up's
    first non-finite row as :func:`read_walker` does: the caps just before a blow-up count too."""
    from cvlearn.data.colvar import read_colvar

    if not colvar.is_file():
        return 0
    column = read_colvar(colvar).get("guard.capped")
    if column is None or not len(column):
        return 0
    c = np.nan_to_num(np.asarray(column, dtype=float))
    return int(np.clip(np.diff(c, prepend=0.0), 0.0, None).sum())


def min_dwell_frames(s: dict, dwell_ps: float | None = None) -> int:
    """Frames a core visit must last to count as a transition (``transition_dwell_ps``, or ``dwell_ps``)."""
    return max(1, int(round((s["transition_dwell_ps"] if dwell_ps is None else dwell_ps) / s["frame_ps"])))


def sensitivity_dwells_ps(s: dict) -> list[float]:
    """Dwells the transition counts are also reported at: from one TICA lag to 100 of them, and the targets' own
    (``transition_dwell_ps``), so a walker's count is read from its row (:func:`analyse_walker`), not counted again."""
    return sorted({s["tica_lag_ps"] * k for k in (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0)} | {s["transition_dwell_ps"]})


def transitions_by_dwell(tic1: np.ndarray, cores: dict, s: dict, lengths=None) -> list[int]:
    """TIC1 transitions at each of :func:`sensitivity_dwells_ps`: how much a count rests on the dwell rule
    (``lengths``: frames per independent chain, :func:`benchmarks._sampling_wlall_analysis.tic1_transitions`)."""
    return [ana.tic1_transitions(tic1, cores, min_dwell_frames(s, d), lengths) for d in sensitivity_dwells_ps(s)]


def interim_walker(config, s: dict) -> bool:
    """Whether a walker that has not ended yet (stopped by the budget, resumes next time) is analysed as it stands:
    once it holds half of ``walker_ns``, so a new arm shows before its walkers end; its row says ``running``."""
    colvar = Path(config.out) / "COLVAR"
    if runs.walker_outcome(config) is not None or not colvar.is_file():
        return False
    rows = sum(1 for line in colvar.read_text().splitlines() if line.strip() and not line.startswith("#"))
    return rows * s["frame_ps"] * 1e-3 >= 0.5 * s["walker_ns"]


def analyse_walker(work: Path, config, ended: dict | None, ref: dict, cores: dict, s: dict, cv_field: str) -> dict:
    """One walker's transitions along TIC1 and its frames on the reference's TICA model, with OPES weights;
    ``ended``: its :func:`runs.walker_outcome`, None for a walker still running (:func:`interim_walker`), which has
    no speed yet (nan ms/step); ``cv_field``: the COLVAR field of the biased CV component."""
    out = ended or {"failure": None, "ms_per_step": float("nan")}
    row = {"seed": config.seed, "failure": out["failure"], "ms_per_step": out["ms_per_step"],
           "running": ended is None, "capped": capped_atom_evaluations(Path(config.out) / "COLVAR")}
    if out["failure"]:  # its last frames may be NaN: counted as a blow-up, left out of rates and free energies
        nan = float("nan")
        row.update({"ns": nan, "transitions": None, "transitions_per_ns": nan, "transitions_per_wall_hour": nan})
        return {"row": row}
    colvar = read_walker(Path(config.out) / "COLVAR")
    (features, phi, psi), = ana.torsions([Path(config.out) / "trajectory.dcd"], Path(f"{runs.segment_prefix(work, 0)}.pdb"))
    # Rows pair with frames by time (frame k was written with the row at (k + 1) frame_ps): walkers resumed before
    # the reporter kept the row at a checkpoint lost it, and by position every later row took the next frame.
    frame = np.rint(colvar["time"] / s["frame_ps"]).astype(int) - 1
    paired = (frame >= 0) & (frame < len(features))
    colvar, frame = {k: v[paired] for k, v in colvar.items()}, frame[paired]
    features, phi, psi = features[frame], phi[frame], psi[frame]
    n = len(frame)
    tics = ana.project(ref["model"], features)
    keep, weights = ana.walker_weights(colvar["bias"])
    ns = n * s["frame_ps"] * 1e-3
    row["transitions_by_dwell"] = transitions_by_dwell(tics[:, 0], cores, s)
    transitions = row["transitions_by_dwell"][sensitivity_dwells_ps(s).index(s["transition_dwell_ps"])]
    # Does the biased component still follow the slowest process under bias? (A CV that tracks TIC1 on unbiased
    # frames can be moved by faster motions once biased: then transitions stay rare however flat the bias.)
    row["r_cv_tic1"] = float(np.corrcoef(colvar[cv_field], tics[:, 0])[0, 1]) if n > 2 else float("nan")
    hours = n * s["frame_ps"] * 1e-3 * STEPS_PER_NS * out["ms_per_step"] / 3.6e6
    row.update({"ns": ns, "transitions": transitions, "transitions_per_ns": transitions / ns if ns else float("nan"),
                "transitions_per_wall_hour": transitions / hours if hours > 0 else float("nan")})
    return {"row": row, "tics": tics, "phi": phi, "psi": psi, "keep": keep, "weights": weights,
            "bias": colvar["bias"]}


def analyse(args, work: Path, s: dict, configs: dict, ref: dict | None, learned: dict | None,
            training: dict | None = None) -> dict:
    """Everything that exists, compared; the PNGs written. ``training``: per training set
    (:data:`runs.TRAINING_SETS`) the CVs' training trajectories."""
    result = {"reference": None, "arms": {}, "rows": [], "figures": []}
    if ref is None:
        return result
    from cvlearn.export import load_cv
    from openmm_plugin.bias.setup import colvar_cv_names

    cores, ref_trans = ref["cores"], ref["transitions"]
    n_ref = len(ref["tics"])
    dwells = sensitivity_dwells_ps(s)
    ref_hours = n_ref * s["frame_ps"] * 1e-3 * STEPS_PER_NS * ref["ms_per_step"] / 3.6e6
    halves = ana.reference_halves_rms(ref, s)
    result["reference"] = {
        "ns": ref["ns"], "ns_analysed": ref["ns_analysed"], "target_ns": reference_target_ns(args, s, ref),
        "segments": ref["n_segments"], "chains_ns": [n * s["segment_ns"] for n in ref["chain_segments"]],
        "slowest_its_ps": ref["slowest_its_ps"],
        "slowest_its_from": ref["slowest_its_from"], "its_resolved": ref["its_resolved"], "tica_lag_ps": ref["lag_ps"],
        "tica_its_ps": ref["tica_its_ps"], "its": ref["its"], "cores_tic1": cores, "transitions": ref_trans,
        "transition_dwell_ps": s["transition_dwell_ps"], "sensitivity_dwells_ps": dwells,
        "transitions_by_dwell": transitions_by_dwell(ref["tics"][:, 0], cores, s, ref["lengths"]),
        "core_relaxation": ana.core_relaxation(ref["tics"][:, 0], cores, [
            lag for lag in s["its_lags_ps"] if lag >= s["transition_dwell_ps"]], s["frame_ps"], ref["lengths"]),
        "transitions_per_ns": ref_trans / ref["ns_analysed"] if ref["ns_analysed"] else float("nan"),
        "transitions_per_wall_hour": ref_trans / ref_hours if ref_hours > 0 else float("nan"),
        "ms_per_step": ref["ms_per_step"], "its_factor": s["its_factor"],
        "basins": ana.reference_basins(ref["tics"][:, 0], cores, s["frame_ps"], ref["lengths"]),
        "halves": ana.public(halves),
        "alpha_l": ana.alpha_l_states([{"phi": phi} for phi in ana.split_chains(ref["phi"], ref["lengths"])],
                                      min_dwell_frames(s), weigh_frames=True)}
    result["training_coverage"] = {
        name: {"ns": len(paths) * s["train_ns"], "temperature_k": s[runs.TRAINING_SETS[name][0]],
               "arms": [arm for arm in runs.ARMS  # a retrained arm's CV learned from its walkers, not this set
                        if arm not in runs.RETRAINED_FROM and runs.training_set_of(arm) == name],
               **ana.training_coverage(ref, [{"tics": ana.project(ref["model"], f), "phi": phi, "psi": psi}
                                             for f, phi, psi in ana.torsions(paths, paths[0].with_suffix(".pdb"))],
                                       s, min_dwell_frames(s))}
        for name, paths in (training or {}).items() if paths}
    region = ana.settled_region(ref, s, halves)
    if region is not None:
        result["reference"]["settled"] = {"residues": region["residues"],
                                          "fraction_left_out": region["reference_fraction_left_out"],
                                          "halves": ana.settled_halves(ref, s, region)}
    compared, curves = {}, {"reference": [ana.basin_dF_over_time(x, None, cores, s["frame_ps"])  # one per chain
                                          for x in ana.split_chains(ref["tics"][:, 0], ref["lengths"])]}
    for arm, arm_configs in configs.items():
        outcomes = [(c, runs.walker_outcome(c)) for c in arm_configs]
        analysed = [(c, o) for c, o in outcomes if o is not None or interim_walker(c, s)]
        # one CV file per arm: its COLVAR field names are read once, not per walker
        cv_field = colvar_cv_names(load_cv(analysed[0][0].cv)[1])[runs.arm_components(s, arm)[0]] if analysed else None
        walkers = [analyse_walker(work, c, o, ref, cores, s, cv_field) for c, o in analysed]
        rows = [w["row"] for w in walkers]
        fine = [w for w in walkers if not w["row"]["failure"]]
        compared[arm] = ana.compare_fes(ref, fine, s) if fine else {}
        if fine:  # once per arm here, not inside compare_fes, which the halves and the settled region call too
            compared[arm].update(ana.walkers_against_each_other([w for w in fine if len(w["tics"])], s,
                                                                ana.tic_range(ref["tics"])))
            if region is not None:
                compared[arm]["settled"] = ana.compare_settled(ref, fine, s, region)
            compared[arm]["rms_over_time"] = ana.rms_over_time(ref, fine, s, region)
            compared[arm]["alpha_l"] = ana.alpha_l_states(fine, min_dwell_frames(s))
        for w, rms in zip(fine, compared[arm].get("rms_tica_per_walker_kjmol", [])):
            w["row"]["rms_tica_kjmol"] = rms
        tic1 = [w["tics"][w["keep"], 0] for w in fine]  # reweighted frames (burn-in dropped)
        for w, x in zip(fine, tic1):
            w["row"]["dF_BA_kjmol"] = ana.basin_dF(x, w["weights"], cores)
        curves[arm] = [ana.basin_dF_over_time(x, w["weights"], cores, s["frame_ps"]) for w, x in zip(fine, tic1)]
        pooled_dF = ana.basin_dF(np.concatenate(tic1), np.concatenate([w["weights"] for w in fine]),
                                 cores) if fine else float("nan")
        rate = _summary(rows, "transitions_per_ns")
        counted = [r for r in rows if r["transitions"] is not None]  # blown-up walkers hold no rate
        ns_counted = sum(r["ns"] for r in counted)  # 0 for a walker that ended before its first frame
        ratio_ci = rate_ratio_ci(sum(r["transitions"] for r in counted), ns_counted, ref_trans, ref["ns_analysed"])[1:] \
            if ns_counted > 0 and ref["ns_analysed"] > 0 else (float("nan"),) * 2
        result["arms"][arm] = {
            "walkers_ended": len(analysed) - sum(r["running"] for r in rows), "walkers_planned": len(arm_configs),
            "walkers_running": sum(r["running"] for r in rows),
            # ended at an earlier --walker-ns and being extended: analysed as they stand, counted as ended
            "walkers_extending": sum(o is not None and not runs.walker_done(c) for c, o in analysed),
            "ns_per_walker": [r["ns"] for r in rows],  # lengths differ while --walker-ns extends them
            "r_cv_tic1_per_walker": [w["row"]["r_cv_tic1"] for w in fine],
            "blown_up": sum(bool(r["failure"]) for r in rows), "capped": sum(r["capped"] for r in rows),
            "transitions_per_ns": rate,
            "transitions_per_wall_hour": _summary(rows, "transitions_per_wall_hour"),
            "rate_vs_reference_per_ns": rate[0] / result["reference"]["transitions_per_ns"]
            if result["reference"]["transitions_per_ns"] > 0 else float("nan"),
            "rate_vs_reference_ci95": list(ratio_ci),  # exact Poisson interval on the pooled counts
            "transitions_by_dwell": [sum(r["transitions_by_dwell"][k] for r in counted) for k in range(len(dwells))],
            "ns_counted": ns_counted,
            "ms_per_step": float(np.nanmean([r["ms_per_step"] for r in rows])) if rows else float("nan"),
            "dF_BA_kjmol": pooled_dF, "dF_BA_per_walker_kjmol": [w["row"]["dF_BA_kjmol"] for w in fine],
            **ana.public(compared[arm])}
        result["rows"] += [{"arm": arm, **r} for r in rows]
    stem = RESULTS / ("sampling_wlall_quick" if args.quick else "sampling_wlall")
    ref_fes = ana.pooled_fes([tuple(ref["tics"].T)], [None], s["tica_bins"], ana.tic_range(ref["tics"]))
    result["figures"] = ana.plot(ref_fes, {a: v for a, v in compared.items() if v}, stem)
    result["figures"].append(ana.plot_dF_convergence(curves, stem.with_name(f"{stem.name}_dF_convergence.png")))
    over_time = {a: v["rms_over_time"] for a, v in compared.items() if v.get("rms_over_time", {}).get("ns_per_walker")}
    if over_time:
        settled = (result["reference"].get("settled") or {}).get("halves") or {}
        floors = {"reference halves": result["reference"]["halves"]["rms_tica_kjmol"],
                  "reference halves, where they agree": settled.get("rms_tica_kjmol")}
        result["figures"].append(ana.plot_rms_over_time(over_time, floors, RMS_TARGET_KJMOL,
                                                         stem.with_name(f"{stem.name}_rms_convergence.png")))
    return result


def plan_costs(s_full: dict, result: dict, learned: dict | None, reference_ns: float,
               work: Path | None = None) -> dict:
    """CPU hours of the full plan from the measured ms/step (one core per run; wall on 2 cores = half); before the
    reference can be analysed, its finished segments' recorded speed (nan where nothing was measured)."""
    recorded = (runs.reference_ms_per_step(work, s_full.get("reference_chains", 1)) if work is not None
                else float("nan"))
    ms_ref = (result.get("reference") or {}).get("ms_per_step", recorded)
    hours = lambda ns, ms: ns * STEPS_PER_NS * ms / 3.6e6  # noqa: E731
    parts = {f"training data (unbiased {s_full[key]:g} K)": hours(s_full["train_seeds"] * s_full["train_ns"], ms_ref)
             for key, _ in runs.TRAINING_SETS.values()}
    parts["reference (unbiased 300 K)"] = hours(reference_ns, ms_ref)
    for arm, v in result.get("arms", {}).items():
        parts[f"walkers {arm}"] = hours(s_full["seeds"] * s_full["walker_ns"], v["ms_per_step"])
    if learned and learned.get("seconds"):  # rough: per-frame costs; training also x epochs (30 vs 3) x seeds (3 vs 1)
        sec, frames = learned["seconds"], (learned.get("n_frames") or {}).get("total") or 1
        scale = s_full["train_seeds"] * s_full["train_ns"] * 1e3 / s_full["frame_ps"] / frames
        per_frame = sum(sec.get(k, 0.0) for k in ("read", "embed", "export", "report"))
        per_epoch = sum(sec.get(k, 0.0) for k in ("train", "baselines"))
        parts["cvlearn learn (rough, scaled from --quick)"] = scale * (per_frame + per_epoch * 10 * s_full["learn_seeds"]) / 3600
    total = float(np.nansum(list(parts.values())))
    return {"core_hours": parts, "total_core_hours": total, "wall_hours_on_2_cores": total / 2,
            "reference_ns_planned": reference_ns, "ms_per_step_unbiased": ms_ref,
            "ms_per_step": {arm: v["ms_per_step"] for arm, v in result.get("arms", {}).items()}}


def targets(result: dict) -> list[dict]:
    out = []
    ref = result.get("reference")
    for arm in sorted(result["arms"], key=lambda name: name in runs.BASELINE_ARMS):  # the GNN CVs' first, baselines last
        a, bound = result["arms"][arm], arm not in runs.BASELINE_ARMS  # the targets are the GNN CVs'
        t = lambda target: target if bound else None  # noqa: E731
        # walkers stopped by the budget are analysed as they stand: their numbers can still move either way
        moving = a.get("walkers_running", 0) + a.get("walkers_extending", 0)
        interim = f" (interim: {moving} walkers running or being extended)" if moving else ""
        for key, name in (("rms_tica_kjmol", "RMS F(TIC1,TIC2) vs reference"),
                          ("rms_torsions_kjmol", "RMS F(phi,psi) vs reference, mean over residues")):
            value = a.get(key, float("nan"))
            out.append({"name": f"{name}, {arm}{interim}", "value": value, "target": t(RMS_TARGET_KJMOL), "unit": "kJ/mol",
                        "met": bool(value <= RMS_TARGET_KJMOL) if bound and np.isfinite(value) else None})
        settled = a.get("settled")
        if settled and ref and ref.get("settled"):  # beside the issue's row above, not instead of it
            value = settled["rms_tica_kjmol"]
            out.append({"name": f"RMS F(TIC1,TIC2) vs reference where the reference's halves agree "
                        f"({_region_words(ref['settled'])}; the arm's reweighted probability left out: "
                        f"{_pct(settled['arm_probability_left_out'])}), {arm}{interim}", "value": value,
                        "target": t(RMS_TARGET_KJMOL), "unit": "kJ/mol",
                        "met": bool(value <= RMS_TARGET_KJMOL) if bound and np.isfinite(value) else None})
        r = a["rate_vs_reference_per_ns"]  # walkers still running count with the ns they hold
        ci = f" (95 % CI {_ci(a.get('rate_vs_reference_ci95'))})"
        out.append({"name": f"TIC1 transitions per ns, {arm} / unbiased{ci}{interim}", "value": r, "target": t(5.0), "unit": "x",
                    "met": bool(r >= 5.0) if bound and np.isfinite(r) else None})
        seen = a["walkers_ended"] + a.get("walkers_running", 0)  # none analysed yet: no blow-up is not a result
        out.append({"name": f"{arm} walkers that blew up (of {a['walkers_ended']} ended)", "value": a["blown_up"],
                    "target": t(0), "unit": "walkers", "met": a["blown_up"] == 0 if bound and seen else None})
    if ref is not None:
        need = ref["its_factor"] * ref["slowest_its_ps"] * 1e-3
        out.append({"name": f"reference length / ({ref['its_factor']:g} x slowest ITS)", "value": ref["ns_analysed"] / need if need else None,
                    "target": 1.0, "unit": "x", "met": bool(ref["ns_analysed"] >= need) if np.isfinite(need) else None})
        # The ITS of a rarely visited state is its fast escape time: length/ITS can be large while the rare state's
        # population rests on a handful of visits. The unbiased rate the 5x target divides by needs events too.
        out.append({"name": "reference TIC1 transitions (the unbiased rate needs >= 10 events)",
                    "value": ref["transitions"], "target": 10, "unit": "transitions",
                    "met": bool(ref["transitions"] >= 10)})
        halves = (ref.get("basins") or {}).get("dF_BA_halves_kjmol", [float("nan")] * 2)
        gap = abs(halves[0] - halves[1]) if all(np.isfinite(halves)) else float("inf")
        out.append({"name": "reference dF(B-A) along TIC1, first half vs second half (inf: a half never saw B)",
                    "value": gap, "target": RMS_TARGET_KJMOL, "unit": "kJ/mol", "met": bool(gap <= RMS_TARGET_KJMOL)})
        # What the RMS targets can resolve: the reference against itself, half against half.
        own = (ref.get("halves") or {}).get("rms_tica_kjmol", float("nan"))
        out.append({"name": "reference RMS F(TIC1,TIC2), first half vs second half (the arms' RMS cannot be resolved below it)",
                    "value": own, "target": RMS_TARGET_KJMOL, "unit": "kJ/mol", "met": bool(own <= RMS_TARGET_KJMOL) if np.isfinite(own) else None})
        # That RMS sees only bins both halves visited: a state one half never entered is this, not it.
        outside = max((ref.get("halves") or {}).get("outside_tica") or [float("nan")])
        out.append({"name": "reference, the larger half's probability in F(TIC1,TIC2) bins the other half never "
                    "visited (the halves' RMS ignores it)", "value": outside, "target": ana.OUTSIDE_MAX, "unit": "fraction",
                    "met": bool(outside <= ana.OUTSIDE_MAX) if np.isfinite(outside) else None})
        if ref.get("settled"):  # the floor of the restricted rows above: the halves restricted the same way
            own = ref["settled"]["halves"]
            out.append({"name": "reference RMS F(TIC1,TIC2), first half vs second half, where the halves agree "
                        f"({_region_words(ref['settled'])})", "value": own["rms_tica_kjmol"], "target": RMS_TARGET_KJMOL,
                        "unit": "kJ/mol", "met": bool(own["rms_tica_kjmol"] <= RMS_TARGET_KJMOL)
                        if np.isfinite(own["rms_tica_kjmol"]) else None})
    return out


def _outside_sentence(c: dict, one: str, other: str) -> str:
    """``c``'s ``outside_tica`` / ``outside_torsions_per_residue`` (:func:`ana.mass_outside`) in words."""
    tica = c.get("outside_tica")
    if not tica:
        return ""
    torsions = np.asarray(c.get("outside_torsions_per_residue") or [[np.nan, np.nan]], dtype=float)
    worst = [int(np.nanargmax(torsions[:, k])) if np.isfinite(torsions[:, k]).any() else 0 for k in range(2)]
    return (f"{one} holds {_pct(tica[0])} of its probability in F(TIC1,TIC2) bins {other} never visited, and "
            f"{other} {_pct(tica[1])} in bins {one} never visited; in F(φ,ψ) at most {_pct(torsions[worst[0], 0])} "
            f"(residue {worst[0] + 1}) and {_pct(torsions[worst[1], 1])} (residue {worst[1] + 1})")


def _region_words(settled: dict) -> str:
    """The reference's settled region (:func:`ana.settled_region`) in words."""
    residues = ", ".join(str(i + 1) for i in settled["residues"])
    return (f"residue{'s' if len(settled['residues']) > 1 else ''} {residues} in F(φ,ψ) bins both halves visited: "
            f"{_pct(settled['fraction_left_out'])} of the reference left out")


def _coverage_lines(r: dict) -> list[str]:
    """The training data's reach (:func:`ana.training_coverage`), one paragraph per training set; nothing without
    it."""
    out = []
    for name, c in (r.get("training_coverage") or {}).items():
        torsions = c["reference_outside_torsions_per_residue"]
        worst = int(np.nanargmax(torsions)) if np.isfinite(torsions).any() else None
        where = (f"; per residue in F(φ,ψ) {', '.join(_pct(v) for v in torsions)} (most: residue {worst + 1})"
                 if worst is not None else "")
        out += ["", f"What the CVs of {', '.join(c.get('arms', [])) or 'no arm'} could learn: their training data "
                f"`{name}` ({c['ns']:g} ns at {c['temperature_k']:g} K, {c['frames']} frames) never visited bins "
                f"holding {_pct(c['reference_outside_tica'])} of the reference's probability in F(TIC1,TIC2){where}; "
                f"TIC1 core transitions per training run: {', '.join(str(n) for n in c['tic1_transitions_per_run'])}."]
    if out:
        out[-1] += (" A CV learned from frames that never reached a state cannot know it, so a bias on it is not "
                    "expected to drive the walkers there.")
    return out


def _alpha_l_lines(r: dict) -> list[str]:
    """Each residue's αL population and its visits, reference and arms (:func:`ana.alpha_l_states`), as a table."""
    ref = (r.get("reference") or {}).get("alpha_l")
    if not ref or not ref["population"]:
        return []
    n = len(ref["population"])

    def cells(a: dict) -> list[str]:
        pops, trans = np.asarray(a["population_per_run"]), np.asarray(a["transitions_per_run"])
        ends = np.asarray(a.get("ends_in_alpha_l_per_run") or np.zeros(trans.shape, dtype=bool))
        each = [f" ({', '.join(_pct(v) for v in pops[:, k])})" if len(pops) > 1 else "" for k in range(n)]
        visits = [", ".join(f"{int(v)}{'+' if end else ''}" for v, end in zip(trans[:, k], ends[:, k])) for k in range(n)]
        return [f"{_pct(a['population'][k])}{each[k]}; {visits[k]}" for k in range(n)]

    rows = [("reference (unbiased)", ref), *[(arm, a["alpha_l"]) for arm, a in r["arms"].items()
                                              if (a.get("alpha_l") or {}).get("population")]]
    dwell = r["reference"]["transition_dwell_ps"]
    return ["", f"αL (φ > 0) of each residue: population (arms reweighted: pooled, then per walker; the reference: its "
            "chains pooled, then per chain); transitions between "
            f"the αL core (φ in {ana.ALPHA_L_CORE_RAD[0]:g} to {ana.ALPHA_L_CORE_RAD[1]:g} rad) and φ < "
            f"{ana.PHI_NEGATIVE_CORE_RAD[1]:g} rad, a visit counted when it lasts {dwell:g} ps (arms: per walker, in "
            "biased time; + where the run ends in αL, its last visit still open). A population resting on one or two visits is not known to better than a factor of a few, in "
            "the reference as in a walker: where the walkers of an arm disagree by as much, neither side measures it, "
            "and F over the bins of that state cannot judge an arm.", "",
            "| run | " + " | ".join(f"residue {k + 1}" for k in range(n)) + " |", "|---" * (n + 1) + "|",
            *[f"| {name} | " + " | ".join(cells(a)) + " |" for name, a in rows], *_alpha_l_pair_lines(rows)]


def _alpha_l_pair_lines(rows: list[tuple[str, dict]], shown: float = 0.01) -> list[str]:
    """Residue pairs in αL at once that some run holds ≥ ``shown`` of its probability in, one sentence each:
    which state a residue's αL population is (:func:`ana.alpha_l_states`); nothing for results without pairs."""
    with_pairs = [(name, a) for name, a in rows if a.get("pair_population_per_run")]
    if not with_pairs:
        return []
    pairs = [tuple(p) for p in with_pairs[0][1]["pairs"]]
    lines = []
    for i, (j, k) in enumerate(pairs):
        per_run = {name: [float(run[i]) for run in a["pair_population_per_run"]] for name, a in with_pairs}
        if max(max(v) for v in per_run.values()) < shown:
            continue
        words = [f"{name} {_pct(float(np.mean(v)))}" + (f" ({', '.join(_pct(x) for x in v)})" if len(v) > 1 else "")
                 for name, v in per_run.items()]
        lines.append(f"- residues {j + 1} and {k + 1}: " + "; ".join(words))
    if not lines:
        return []
    return ["", f"Two residues in αL at once, where a run holds at least {_pct(shown)} of its probability (pooled, then "
            "per walker): a residue's αL population above may be mostly one of these states.", "", *lines]


def _settled_lines(r: dict) -> list[str]:
    """The RMS on the region the reference's halves agree on, reference and arms, in one paragraph."""
    ref = r["reference"]
    if not ref.get("settled"):
        return []
    own = ref["settled"]["halves"]
    arms = [f"{arm} {_f(a['settled']['rms_tica_kjmol'])} (F(φ,ψ) {_f(a['settled']['rms_torsions_kjmol'])}; its "
            f"reweighted probability left out {_pct(a['settled']['arm_probability_left_out'])})"
            for arm, a in r["arms"].items() if a.get("settled")]
    return ["", f"Where the reference's halves agree ({_region_words(ref['settled'])}, the residues whose halves hold "
            f"more than {_pct(ana.OUTSIDE_MAX)} of a half's probability in F(φ,ψ) bins the other never visited; chosen "
            "from the reference alone), both sides restricted to it, on the same TIC bins: the halves differ by RMS "
            f"F(TIC1,TIC2) {_f(own['rms_tica_kjmol'])} kJ/mol (F(φ,ψ) {_f(own['rms_torsions_kjmol'])}; "
            f"{_outside_sentence(own, 'the second half', 'the first')}), the arms by "
            + "; ".join(arms) + " kJ/mol. The issue's RMS is the one in the table; the gap between the two is what the "
            "frames outside this region add to it."]


def _over_time_lines(r: dict) -> list[str]:
    """Each arm's RMS from the first t ns of its walkers (:func:`ana.rms_over_time`): first, middle and last point."""
    parts = []
    for arm, a in r["arms"].items():
        v = a.get("rms_over_time") or {}
        if len(v.get("ns_per_walker", [])) < 2:
            continue
        point = lambda k: (f"{_f(v['ns_per_walker'][k], '.2g')} ns {_f(v['rms_tica_kjmol'][k])} "  # noqa: E731
                           f"({_f(v['rms_tica_settled_kjmol'][k])}; {_f(v['walker_vs_rest_tica_kjmol'][k])})")
        parts.append(f"{arm} {point(0)} → {point(len(v['ns_per_walker']) // 2 - 1)} → {point(-1)}")
    if not parts:
        return []
    return ["", "RMS F(TIC1,TIC2) from the first t ns of every walker, kJ/mol (in brackets: where the reference's "
            "halves agree; each walker against the others, mean), at a sixth, half and all of the shortest walker: "
            + "; ".join(parts) + ". Falling with t: more sampling closes the gap; flat or rising: more of the same "
            "does not (every point: the `_rms_convergence.png` figure)."]


def _capital(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:] + "." if sentence else ""


def _pct(v) -> str:
    return f"{100 * v:.2g} %" if v is not None and np.isfinite(v) else "n/a"


def arms_to_run(args) -> list[str]:
    """The arms whose walkers this invocation runs, in order (``--arms``); every arm's walkers are analysed."""
    arms = [a.strip() for a in (args.arms or ",".join(runs.ARMS)).split(",") if a.strip()]
    if not arms or set(arms) - set(runs.ARMS) or len(set(arms)) != len(arms):
        raise SystemExit(f"--arms: expected distinct names from {list(runs.ARMS)}, found {args.arms!r}")
    return arms


def arm_configs(args, work: Path, s: dict, arms: list[str], configs: dict, budget) -> None:
    """Fill ``configs`` (arm -> walker configs) for every arm whose CV exists, retraining a CV first when it is run
    now (``arms``) and its source arm's walkers have ended once."""
    from cvlearn.export import load_cv

    for arm, cv_file in runs.ARMS.items():
        if arm in configs:
            continue
        cv_path = runs.torsion_cv(work, arm) if arm in runs.NATIVE_ARMS and arm in arms else work / cv_file
        source = runs.RETRAINED_FROM.get(arm)
        if source and arm in arms and not cv_path.is_file():
            data = runs.retrain_data(work, s, configs.get(source, []), arm)
            if data is None:
                continue
            budget.check(f"retraining on the {source} walkers for {arm}", 300.0)
            runs.retrain(work, s, data, args.quick, arm)
        if not cv_path.is_file():
            continue
        n_cvs = int(load_cv(cv_path)[1].n_cvs)
        components = runs.arm_components(s, arm, n_cvs)
        if components != runs.arm_components(s, arm):
            print(f"{arm}: its CV has {n_cvs} component(s): biasing {list(components)}", flush=True)
        sigma = "adaptive" if s["sigma_rule"] == "adaptive" else runs.cv_sigma(work, arm, cv_path, components)
        configs[arm] = [runs.walker_config(work, s, arm, seed, sigma, n_cvs) for seed in range(s["seeds"])]


def extended_walker_ns(args, work: Path, s: dict) -> dict:
    """``s`` with ``walker_ns`` at the length the walkers in ``work`` were extended to, when ``--walker-ns`` is not
    given: a rerun without it goes on with them instead of being refused as a shortening."""
    record = read_record(work / "benchmark.run.json")
    if args.walker_ns is not None or record is None:
        return s
    recorded = record.get("config", {}).get("walker_ns")
    return {**s, "walker_ns": recorded} if isinstance(recorded, (int, float)) and recorded > s["walker_ns"] else s


def run(args) -> dict:
    s = settings(args)
    arms = arms_to_run(args)  # a bad --arms is refused before any compute
    work = Path(args.work or ("runs/sampling_wlall_quick" if args.quick else "runs/sampling_wlall"))
    s = extended_walker_ns(args, work, s)
    work.mkdir(parents=True, exist_ok=True)
    from cvlearn.run_dir import open_run

    open_run(work / "benchmark.run.json", s, outputs=[work / d for d in ("train", "learn", "reference", "bias",
                                                                          "sigma.json", "train_hot", "learn_hot",
                                                                          "torsions",
                                                                          *(runs.retrain_dir(work, a).name
                                                                            for a in runs.RETRAINED_FROM))],
             restart_fresh=args.restart_fresh, extendable=("walker_ns", "reference_chains"),  # a longer --walker-ns extends the walkers
             added={k: s[k] for k in ADDED}, ignore=("out", *ANALYSIS_ONLY))
    budget = runs.Budget(args.budget_min)
    started, stopped, learned, configs, ref, trajectories = time.perf_counter(), None, {}, {}, None, {}
    try:
        # the 400 K set always (the reference's first arms); another set when an arm run now is learned from it
        for name in dict.fromkeys(["train", *filter(None, map(runs.training_set_of, arms))]):
            budget.check(f"the training data {name}")
            trajectories[name] = runs.training_data(work, s, name)
            budget.check(f"cvlearn learn on {name}")
            learned[name] = runs.learn(work, s, trajectories[name], args.quick, name)
        runs.extend_reference(work, s, s["first_chunk_ns"], budget)
        ref = load_reference(work, s)
        arm_configs(args, work, s, arms, configs, budget)
        while True:  # a retrained arm's CV needs its source arm's walkers: a second round runs its walkers
            tasks = [*runs.reference_tasks(work, s, reference_target_ns(args, s, ref)),  # beside the walkers (--jobs)
                     *[runs.walker_task(c) for arm in arms if arm in configs for c in configs[arm]]]
            left = runs.run_children(tasks, budget, args.jobs, min_start_s=5.0 if args.quick else 60.0)
            if left:
                raise runs.OutOfTime(f"{left} unfinished")
            waiting = [arm for arm in arms if arm not in configs]
            if not waiting:
                break
            arm_configs(args, work, s, arms, configs, budget)  # the walkers above have ended: retrain now
            if any(arm not in configs for arm in waiting):
                sources = [runs.RETRAINED_FROM[arm] for arm in waiting]
                raise runs.OutOfTime(f"{', '.join(waiting)} wait(s) for the walkers of {', '.join(set(sources))}"
                                     " (--arms " + ",".join(dict.fromkeys([*sources, *waiting])) + ")")
        ref = load_reference(work, s)
        target = reference_target_ns(args, s, ref)
        while runs.reference_ns(work, s) < target - 1e-9:  # the target follows the ITS as it grows
            left = runs.run_children(runs.reference_tasks(work, s, target), budget, args.jobs,
                                     min_start_s=5.0 if args.quick else 60.0)
            if left:
                raise runs.OutOfTime(f"{left} unfinished")
            ref = load_reference(work, s)
            target = reference_target_ns(args, s, ref)
    except runs.OutOfTime as why:
        stopped = str(why)
        print(f"stopping cleanly: {why}; rerun to go on", flush=True)
    ref = load_reference(work, s)
    for name in runs.TRAINING_SETS:  # a set made by an earlier invocation is analysed too
        paths = None if name in trajectories else runs.finished_training_data(work, s, name)
        if paths:
            trajectories[name] = paths
            learned[name] = runs.learned(work, name)
    result = analyse(args, work, s, configs, ref, learned.get("train"), trajectories)
    complete = stopped is None and all(runs.walker_done(c) for cs in configs.values() for c in cs)
    reference_ns = result["reference"]["target_ns"] if result["reference"] and not args.quick else args.plan_reference_ns
    return {"benchmark": "sampling_wlall", "date": now_utc(), "machine": machine(), "complete": complete,
            "stopped": stopped, "seconds_this_invocation": time.perf_counter() - started,
            "settings": {"quick": args.quick, "work": str(work), **s, "system": runs.SYSTEM, "temperature_k": 300.0,
                         "route": ("python (PythonForce + torch.compile of the CV)" if s["compile"] else
                                   "python (PythonForce + TorchScript CV)") + ", cvlearn bias", "method": "opes-metad",
                         "reference_ns_option": args.reference_ns,
                         "arm_components": {arm: list(cs[0].components) for arm, cs in configs.items()
                                            if cs and arm in runs.ARM_COMPONENTS},
                         "sigma": {arm: list(cs[0].opes.sigma) if cs and cs[0].opes.sigma != "adaptive" else "adaptive"
                                   for arm, cs in configs.items()}},
            "learn": learned.get("train"), "learn_other": {k: v for k, v in learned.items() if k != "train"},
            "retrain": {arm: v for arm in runs.RETRAINED_FROM if (v := runs.retrained(work, arm))},
            **result, "targets": targets(result),
            "plan": plan_costs(FULL, result, learned.get("train") if args.quick else None, reference_ns, work)}


def _f(v, fmt=".2f") -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def _ci(bounds) -> str:
    """A confidence interval for a table; results written before it was computed show n/a."""
    return f"{_f(bounds[0], '.1f')}–{_f(bounds[1], '.1f')}" if bounds else "n/a"


def _dF(v) -> str:
    """ΔF(B − A) for a table: ±inf says which state a run never visited."""
    if v is not None and isinstance(v, float) and np.isinf(v):
        return "no B" if v > 0 else "no A"
    return _f(v, ".1f")


def _own_components(st: dict) -> str:
    """The arms that bias other components than the settings' (``runs.ARM_COMPONENTS``), for the header."""
    own = st.get("arm_components") or {}
    return "".join(f" (arm {arm}: {', '.join(map(str, c))})" for arm, c in own.items())


def _native_sentence(r: dict) -> str:
    """The arms of native torsions (``runs.NATIVE_ARMS``) in the results, for the header: their route differs."""
    native = [arm for arm in runs.NATIVE_ARMS if arm in r["arms"]]
    return "".join(f" Arm {arm}: OPES on the torsions {', '.join(f'{kind} of residue {i + 1}' for i, kind in runs.NATIVE_ARMS[arm])} "
                   "(no learned CV; chosen from the reference: a control), on the native route (CustomTorsionForces, "
                   "tabulated bias), so no bias-force guard and no walls." for arm in native)


def _dwell_lines(r: dict) -> list[str]:
    """How the transition counts, and each arm's ratio to the reference, depend on the dwell a visit must last; and
    the count the reference's two-state relaxation predicts."""
    ref = r["reference"]
    if "transitions_by_dwell" not in ref:
        return []
    relax = ref.get("core_relaxation") or {}
    taus = ", ".join(f"{lag:g} ps: {_f(tau, '.0f')}"
                     for lag, tau in zip(relax.get("lags_ps", []), relax.get("tau_ps", [])))
    lines = ["", f"Transitions vs the dwell a core visit must last (counts; × reference per ns in brackets). The "
             f"core-assigned reference relaxes in τ = {_f(relax.get('tau_ps_resolved'), '.0f')} ps (two-state MSM, "
             f"lag {taus}; p_B {_f(relax.get('population_B'))}), from which a two-state model predicts "
             f"2 p_A p_B T / τ = {_f(relax.get('predicted_transitions'), '.1f')} transitions: a dwell that counts "
             f"more than that counts excursions that return. The targets use {ref['transition_dwell_ps']:g} ps.", "",
             "| run | ns | " + " | ".join(f"{d:g} ps" for d in ref["sensitivity_dwells_ps"]) + " |",
             "|---|---|" + "---|" * len(ref["sensitivity_dwells_ps"]),
             f"| reference | {ref['ns_analysed']:.3g} | " + " | ".join(map(str, ref["transitions_by_dwell"])) + " |"]
    for arm, a in r["arms"].items():
        ns, counts = a.get("ns_counted", 0.0), a.get("transitions_by_dwell", [])
        cells = [f"{n} ({_f(n / ns / (m / ref['ns_analysed']), '.1f')})" if ns and m else str(n)
                 for n, m in zip(counts, ref["transitions_by_dwell"])]
        lines.append(f"| {arm} | {ns:.3g} | " + " | ".join(cells) + " |")
    return lines


def markdown(r: dict) -> str:
    st, ref = r["settings"], r["reference"]
    lines = [f"# sampling_wlall ({r['date']}, quick={st['quick']}, complete={r['complete']})", "",
             f"ACE-WLALL-NME at 300 K, OPES-metad (barrier {st['barrier_kjmol']} kJ/mol, pace {st['pace_ps']} ps, "
             f"σ rule {st['sigma_rule']}: {st['sigma']}, walls {st['wall_margin_fraction']:.0%} outside the training "
             f"range, MTS {st['mts']}, bias-force guard {st.get('force_guard_kjmol_nm')} kJ/mol/nm) on CV components "
             f"{st['components']}{_own_components(st)}, {st['seeds']} walkers × {st['walker_ns']} ns "
             f"per arm, {st['platform']} platform, 1 thread." + _native_sentence(r)]
    if r["stopped"]:
        lines += ["", f"Stopped: {r['stopped']} (rerun to go on)."]
    if ref:
        basins = ref.get("basins") or {}
        halves, first = basins.get("dF_BA_halves_kjmol", [None, None]), basins.get("first_entry_ns", {})
        own = ref.get("halves") or {}
        its = ", ".join(f"{lag:g} ps: {_f(row[0], '.0f')}" for lag, row in zip(ref["its"]["lags_ps"],
                                                                              ref["its"]["timescales_ps"]))
        chains = ref.get("chains_ns") or [ref["ns"]]
        whose = "chain 0's" if len(chains) > 1 else "its"
        in_chains = (f" in {len(chains)} independent chains ({' + '.join(f'{c:g}' for c in chains)} ns; each chain's "
                     "first half against the second halves below)") if len(chains) > 1 else ""
        lines += ["", f"Reference: {ref['ns']:g} ns in {ref['segments']} segments{in_chains} "
                  f"({ref['ns_analysed']:.3g} ns analysed), "
                  f"target {ref['target_ns']:.3g} ns; slowest ITS {_f(ref['slowest_its_ps'], '.0f')} ps "
                  f"({ref.get('slowest_its_from', '')}: the largest estimate at least its lag; MSM on TIC1-2 at lag "
                  f"{its}; TICA's own at {ref['tica_lag_ps']:g} ps: {_f(ref['tica_its_ps'][0], '.0f')} ps); "
                  f"{ref['transitions']} TIC1 transitions (a core visit counts when it lasts "
                  f"{ref.get('transition_dwell_ps', ref['tica_lag_ps']):g} ps; "
                  f"{_f(ref['transitions_per_ns'])}/ns, "
                  f"{_f(ref['transitions_per_wall_hour'], '.1f')}/wall h), {_f(ref['ms_per_step'], '.3f')} ms/step.",
                  "", f"Slowest process, TIC1 states A (TIC1 < {_f(ref['cores_tic1']['split'])}) and B: the reference first entered A at "
                  f"{_f(first.get('A'), '.1f')} ns and B at {_f(first.get('B'), '.1f')} ns of "
                  f"{whose} analysed run; "
                  f"ΔF(B − A) = {_dF(basins.get('dF_BA_kjmol'))} kJ/mol (first half {_dF(halves[0])}, second half "
                  f"{_dF(halves[1])}; no A / no B: a state never visited). While the halves disagree, the reference does not know "
                  "this ΔF, and RMS F over bins populated in both runs cannot show it. "
                  f"The reference against itself, first half vs second half: RMS F(TIC1,TIC2) "
                  f"{_f(own.get('rms_tica_kjmol'))} kJ/mol, RMS F(φ,ψ) "
                  f"{_f(own.get('rms_torsions_kjmol'))} kJ/mol (mean over residues): no arm can be "
                  "shown closer to the reference than that. " + _capital(_outside_sentence(own, "the second half", "the first")),
                  *_dwell_lines(r),
                  "", "| arm | walkers ended | ns per walker | blew up | capped atom-forces | TIC1 transitions / ns | "
                  "× reference (95 % CI) | / wall h | RMS F(TIC1,TIC2) kJ/mol | RMS F(φ,ψ) kJ/mol | ΔF(B − A) kJ/mol, pooled "
                  "(per walker) | ms/step |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for arm, a in r["arms"].items():
            running = f" (+{a['walkers_running']} running)" if a.get("walkers_running") else ""
            running += f" ({a['walkers_extending']} extending)" if a.get("walkers_extending") else ""
            lines.append(f"| {arm} | {a['walkers_ended']}/{a['walkers_planned']}{running} | "
                         f"{', '.join(_f(v, '.2f') for v in a.get('ns_per_walker', []))} | {a['blown_up']} | "
                         f"{a.get('capped', 0)} | "
                         f"{_f(a['transitions_per_ns'][0])} ± {_f(a['transitions_per_ns'][1])} | "
                         f"{_f(a['rate_vs_reference_per_ns'])} ({_ci(a.get('rate_vs_reference_ci95'))}) | "
                         f"{_f(a['transitions_per_wall_hour'][0], '.1f')} | "
                         f"{_f(a.get('rms_tica_kjmol'))} | {_f(a.get('rms_torsions_kjmol'))} | "
                         f"{_dF(a.get('dF_BA_kjmol'))} ({', '.join(_dF(v) for v in a.get('dF_BA_per_walker_kjmol', []))}) | "
                         f"{_f(a['ms_per_step'], '.2f')} |")
        for arm, rt in (r.get("retrain") or {}).items():
            lines += ["", f"Arm {arm}: the GNN CV learned again (same settings, lag {st['retrain_lag_ps']:g} ps) from the "
                      f"first {st['retrain_ns']:g} ns of the {rt.get('from_arm', 'gnn')} walkers "
                      f"{', '.join(rt['from_walkers'])} (biased, 300 K), reweighted on rescaled time "
                      "t' = Σ exp(β(V − c(t))) dt (`cvlearn iterate`'s default); VAMP-2 "
                      f"{_f(rt['vamp2_val'])} on its validation frames (rescaled time: not comparable to the gnn CV's "
                      "on 400 K data)."]
        for name, lo in (r.get("learn_other") or {}).items():
            c = (r.get("training_coverage") or {}).get(name, {})
            if lo:
                lines += ["", f"Arms {', '.join(c.get('arms', [])) or name}: learned as the gnn and distances arms' CVs "
                          f"(same settings) from training set `{name}` ({_f(c.get('ns'), 'g')} ns at "
                          f"{_f(c.get('temperature_k'), 'g')} K); GNN CV VAMP-2 {_f(lo.get('vamp2_val'))} on its "
                          "validation frames."]
        lines += ["", "What the RMS over shared bins cannot see: " + "; ".join(
            f"{arm}: {_outside_sentence(a, 'the arm (reweighted)', 'the reference')}" for arm, a in r["arms"].items()
            if a.get("outside_tica")) + "."]
        lines += _coverage_lines(r)
        lines += _alpha_l_lines(r)
        lines += _settled_lines(r)
        lines += ["", "Each walker against its arm's other walkers pooled (both reweighted; RMS F(TIC1,TIC2), in brackets "
                  "F(φ,ψ), kJ/mol): " + "; ".join(
                      f"{arm} {', '.join(_f(v) for v in a['rms_tica_walker_vs_rest_kjmol'])} "
                      f"({', '.join(_f(v) for v in a['rms_torsions_walker_vs_rest_kjmol'])})"
                      for arm, a in r["arms"].items() if a.get("rms_tica_walker_vs_rest_kjmol"))
                  + ". The arm's own floor, as the halves are the reference's: where a walker differs from the others "
                  "as much as the arm from the reference, the arm's F is not converged either."]
        lines += _over_time_lines(r)
        lines += ["", "Pearson r between the biased CV component and TIC1 on each walker's frames: " + "; ".join(
            f"{arm} {', '.join(_f(v) for v in a['r_cv_tic1_per_walker'])}" for arm, a in r["arms"].items()
            if a.get("r_cv_tic1_per_walker"))
            + " (low: the bias moves the CV by motions other than the slowest process)."]
    else:
        lines += ["", "The reference is shorter than its first chunk: nothing compared yet."]
    p = r["plan"]
    lines += ["", f"Plan of the full run (ms/step measured here; reference {round(p['reference_ns_planned'], 1):g} ns): "
              f"{p['total_core_hours']:.1f} core-hours, {p['wall_hours_on_2_cores']:.1f} h on 2 cores.", "",
              "| part | core-hours |", "|---|---|",
              *[f"| {k} | {v:.2f} |" if np.isfinite(v) else f"| {k} | not measured yet |"
                for k, v in p["core_hours"].items()]]
    lines += ["", "RMS over bins populated in both with F_ref ≤ "
              f"{st['fes_cutoff_kjmol']:g} kJ/mol, after the best constant shift; walkers pooled per arm, the first "
              "10 % of each dropped. Figures: " + ", ".join(f"`{f}`" for f in r["figures"])]
    lines += targets_table(r["targets"])
    return "\n".join(lines) + "\n"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny everything: checks every code path")
    parser.add_argument("--work", default=None, help="where every run lives (default runs/sampling_wlall[_quick])")
    parser.add_argument("--budget-min", type=float, default=None, help="stop cleanly after about this many minutes")
    parser.add_argument("--reference-ns", default="auto", help="reference length, ns, or auto (default): "
                        "its-factor x the slowest ITS measured on the reference so far, at least the first chunk")
    parser.add_argument("--walker-ns", type=float, default=None, help="ns per walker (default 2, or the length "
                        "the walkers were extended to; quick 0.002); more than before extends the walkers")
    parser.add_argument("--seeds", type=int, default=None, help="walkers per arm (default 3)")
    parser.add_argument("--components", default=None, help="biased CV components, comma-separated (default 0)")
    parser.add_argument("--sigma-rule", choices=("learned", "adaptive"), default=None,
                        help="learned: learned_cv_sigma (default); adaptive: OPES adaptive sigma")
    parser.add_argument("--jobs", type=int, default=1, help="processes at once: the reference's extension (first, while it is "
                        "short of its target; --reference-ns at its length skips it) and the walkers, one each")
    parser.add_argument("--arms", default=None, help="arms whose walkers run now, in this order (default "
                        f"{','.join(runs.ARMS)}; e.g. distances,gnn: the cheap arm first; gnn_retrained waits for "
                        "the gnn walkers; a *_hot_* arm makes its training set and CVs first); every arm's walkers "
                        "are analysed")
    parser.add_argument("--plan-reference-ns", type=float, default=100.0,
                        help="--quick: the reference length the cost plan assumes (default 100 ns)")
    parser.add_argument("--restart-fresh", action="store_true", help="delete every part and start over")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    result = run_resumable("sampling_wlall", run, args)
    save("sampling_wlall", args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
