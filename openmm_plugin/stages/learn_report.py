"""Baselines, kinetics, figures and the report of ``cvlearn learn``.

Baselines on the same held-out trajectories and lag: TICA on sin/cos of the backbone φ/ψ (skipped with a note when
the topology has none) and VAMPNet on the pairwise distances of the selected atoms (skipped with a note above
:data:`MAX_DISTANCE_ATOMS` atoms: the pair count grows as n², 150 atoms are 11,175 distances already; select fewer
atoms, e.g. ``name CA``, to get it). The learned CVs are shown over the two slowest TICA coordinates of all frames
(torsions, else the distances) and against the named observables; ITS and CK test come from
:func:`cvlearn.analysis.kinetics.kinetic_report` (unbiased data only: an MSM of biased frames has no kinetics).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import torch

from cvlearn.data import take_segments
from cvlearn.estimators.baselines import CompareData, tica_scores
from cvlearn.estimators.multiseed import fit_seeds
from cvlearn.io import write_text_atomic
from cvlearn.models.cv import DistanceCV, PairwiseDistances, fit_head_scaler
from cvlearn.nn.heads import MLPHead

logger = logging.getLogger(__name__)

MAX_DISTANCE_ATOMS = 150


def _tica_baseline(config, data, notes: list) -> dict:
    if data.torsions is None:
        notes.append("tica_torsions skipped: the topology has no backbone φ/ψ torsions")
        return {"skipped": "no backbone φ/ψ torsions"}
    n_features = data.torsions[0].shape[1]
    parts = {"torsions": take_segments(data.torsions, data.train)}
    held_out = {"torsions": take_segments(data.torsions, data.validation)}
    compare = CompareData(parts, held_out, held_out, [], [], data.lag, min(config.n_cvs, n_features),
                          data.frame_interval_ps)
    value, seconds, _ = tica_scores(compare)
    if config.biased is not None:
        notes.append("tica_torsions is fitted and scored without the bias weights")
    return {"vamp2_val": value, "n_features": n_features, "dim": compare.dim, "seconds": seconds}


def _distance_baseline(config, plan, data, out: Path, progress: bool, notes: list) -> dict:
    from openmm_plugin.stages.learn_fit import fit_weights

    n_atoms = len(plan.atoms)
    if n_atoms > MAX_DISTANCE_ATOMS:
        notes.append(f"vampnet_distances skipped: {n_atoms} selected atoms (> {MAX_DISTANCE_ATOMS}) would give "
                     f"{n_atoms * (n_atoms - 1) // 2} distances; select fewer atoms for this baseline")
        return {"skipped": f"{n_atoms} selected atoms > {MAX_DISTANCE_ATOMS}"}
    train, val = take_segments(data.positions, data.train), take_segments(data.positions, data.validation)
    frames = torch.cat(train)

    def prepare(lobe):
        fit_head_scaler(lobe, frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:4096]])

    started = time.perf_counter()
    rows = []
    for seed in config.seeds:
        result = fit_seeds(lambda s: DistanceCV(n_atoms, MLPHead(n_atoms * (n_atoms - 1) // 2, config.n_cvs,
                                                                 hidden=config.head_hidden)),
                           train, val, [seed], prepare=prepare,
                           fit_kwargs={**fit_weights(config, plan, data),
                                       "checkpoint_path": out / "baselines" / f"distances_seed{seed}.ckpt"},
                           lagtime=data.lag, learning_rate=config.learning_rate, batch_size=config.batch_size,
                           max_epochs=config.max_epochs, patience=config.patience,
                           min_epochs=min(config.min_epochs, config.max_epochs), progress=progress)
        value = result.validation[0] if config.biased is not None else result.values[0]
        rows.append({"seed": int(seed), "vamp2_val": float(value), "history": result.histories[0],
                     "model": result.models[0]})
    values = [r["vamp2_val"] for r in rows]
    exported = {}
    if config.export_baselines:
        exported = {"exported": _export_distance_cv(config, plan, data, max(rows, key=lambda r: r["vamp2_val"]), out)}
    return {"vamp2_val": float(max(values)), "vamp2_val_mean": float(np.mean(values)),
            "vamp2_val_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "per_seed": [{k: v for k, v in r.items() if k not in ("history", "model")} for r in rows], **exported,
            "seconds": time.perf_counter() - started, "_histories": {r["seed"]: r["history"] for r in rows}}


def _export_distance_cv(config, plan, data, best: dict, out: Path) -> str:
    """The best distance-VAMPNet seed as an exported CV beside ``cv.pt``: the same ``export_cv`` contract (selection,
    periodic MakeWhole, training range, lag), so it is biased and benchmarked exactly as the learned CV is.
    Its features are the lobe's own :class:`PairwiseDistances` (nm), so training and export compute the same ones."""
    from cvlearn.export import export_cv
    from cvlearn.estimators.multiseed import model_outputs
    from openmm_plugin.stages.learn import DISTANCE_CV

    model = best["model"].cpu().eval()  # exported CVs load on the CPU, whatever device trained them
    outputs = [o.numpy() for o in model_outputs(model, data.positions)]
    export_cv(model, out / DISTANCE_CV, atom_indices=plan.atoms.tolist(), n_particles=plan.topology.n_atoms,
              topology=plan.topology, lagtime_ps=config.lagtime_ps, frame_interval_ps=data.frame_interval_ps,
              training_outputs=outputs, dtype=torch.float32, periodic=data.periodic,
              extra={"cv_names": [f"cv{k + 1}" for k in range(outputs[0].shape[1])], "baseline": "vampnet_distances",
                     "singular_values": [float(s) for s in model.singular_values], "selection": config.selection,
                     "seed": best["seed"], "vamp2_val": best["vamp2_val"],
                     "trajectories": [str(p) for p in plan.trajectories], "stride": config.stride})
    return DISTANCE_CV


def _tica_plane(config, plan, data) -> tuple | None:
    """The two slowest TICA coordinates of all frames: on torsions, else on the distances of the selection."""
    from deeptime.decomposition import TICA

    if data.torsions is not None:
        features, what = data.torsions, "backbone torsions"
    elif len(plan.atoms) <= MAX_DISTANCE_ATOMS:
        distances = PairwiseDistances(len(plan.atoms))
        with torch.no_grad():
            features, what = [distances(p).double().numpy() for p in data.positions], "pairwise distances"
    else:
        return None
    usable = [f for f in features if len(f) > data.lag]
    dim = min(2, features[0].shape[1])
    if dim < 2:
        return None
    model = TICA(lagtime=data.lag, dim=dim).fit(usable).fetch_model()
    ics = np.concatenate([model.transform(f)[:, :2] for f in features])
    return ics[:, 0], ics[:, 1], what


def finish(config, plan, data, learned: dict, out: Path, seconds: dict, progress: bool, *, quick: bool) -> dict:
    """Baselines, kinetics, figures, ``report.md``; returns the metrics (written by the caller)."""
    from cvlearn.analysis.kinetics import correlations, kinetic_report
    from cvlearn.analysis.plots import plot_cvs_on_plane, plot_cvs_over_observables, plot_training_curves
    from openmm_plugin.stages.learn import featurizer_note

    notes: list[str] = []
    if len(data.positions) == 1:
        notes.append(f"one trajectory: its last {config.validation_fraction:.0%} (in time) is the validation part")
    tick = time.perf_counter()
    baselines = {}
    if "tica_torsions" in config.baselines:
        baselines["tica_torsions"] = _tica_baseline(config, data, notes)
    if "vampnet_distances" in config.baselines:
        baselines["vampnet_distances"] = _distance_baseline(config, plan, data, out, progress, notes)
    seconds["baselines"] = time.perf_counter() - tick
    tick = time.perf_counter()
    outputs, best = learned["outputs"], learned["best"]
    cvs = np.concatenate(outputs)
    figures = []
    histories = {f"seed {s['seed']}": s["history"] for s in learned["seeds"]}
    for seed, history in baselines.get("vampnet_distances", {}).pop("_histories", {}).items():
        histories[f"distances, seed {seed}"] = history
    plot_training_curves(histories, out / "training_curves.png")
    figures.append(("training curves (train dashed, validation solid)", "training_curves.png"))
    plane = _tica_plane(config, plan, data)
    if plane is None:
        notes.append("no TICA plane: no backbone torsions and too many atoms for distances")
    else:
        plot_cvs_on_plane(plane[0], plane[1], cvs, out / "cv_on_tica.png", "TIC 1", "TIC 2",
                          title=f"TICA on {plane[2]}")
        figures.append((f"learned CVs over the two slowest TICA coordinates ({plane[2]})", "cv_on_tica.png"))
    observed = {name: np.concatenate(v) for name, v in data.observables.items()}
    correlation = {}
    if observed:
        plot_cvs_over_observables(cvs, observed, out / "cv_on_observables.png")
        figures.append(("learned CVs against the observables", "cv_on_observables.png"))
        correlation = correlations(cvs, observed)
    kinetics = None
    if config.biased is not None:
        notes.append("kinetics (ITS, CK test) skipped: the frames are biased")
    else:
        try:
            kinetics = kinetic_report(outputs, data.lag, data.frame_interval_ps, out, "cv",
                                      n_clusters=min(config.n_clusters, max(2, len(cvs) // 10)), seed=best["seed"])
            figures += [("implied timescales of an MSM on the CVs", "cv_its.png"),
                        ("VAMP-2 against lag time and number of CVs", "cv_vamp2_curves.png")]
            if "skipped" not in kinetics["ck_test"]:
                figures.append(("Chapman-Kolmogorov test", "cv_ck_test.png"))
            else:
                notes.append(f"CK test skipped: {kinetics['ck_test']['skipped']}")
        except (ValueError, RuntimeError) as err:  # too few frames or states for an MSM: say so, keep the CV
            notes.append(f"kinetics skipped: {err}")
    seconds["report"] = time.perf_counter() - tick
    values = [s["vamp2_val"] for s in learned["seeds"]]
    train_frames = sum(s.stop - s.start for s in data.train)
    metrics = {
        "vamp2_val": best["vamp2_val"], "vamp2_val_deeptime": best["vamp2_val_deeptime"], "best_seed": best["seed"],
        "vamp2_val_mean": float(np.mean(values)), "vamp2_val_std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "seeds": [{k: v for k, v in s.items() if k not in ("model", "history")} for s in learned["seeds"]],
        "baselines": baselines, "lagtime_ps": config.lagtime_ps, "lag_frames": data.lag,
        "frame_interval_ps": data.frame_interval_ps, "n_trajectories": len(data.positions),
        "n_frames": {"total": int(sum(data.n_frames)), "train": int(train_frames),
                     "validation": int(sum(data.n_frames) - train_frames)},
        "n_atoms_selected": int(len(plan.atoms)), "n_tokens": learned["n_tokens"], "periodic": data.periodic,
        "featurizer": featurizer_note(config), "cv_range": [[float(cvs[:, k].min()), float(cvs[:, k].max())]
                                                            for k in range(cvs.shape[1])],
        "observable_correlations": correlation,
        "kinetics": None if kinetics is None else {k: kinetics[k] for k in ("implied_timescales", "ck_test")},
        "seconds": dict(seconds), "notes": notes, "quick": quick, "config": dataclasses.asdict(config),
        "outputs": ["cv.pt", *([baselines["vampnet_distances"]["exported"]]
                               if "exported" in baselines.get("vampnet_distances", {}) else []),
                    "metrics.json", "report.md", *[name for _, name in figures]],
    }
    write_text_atomic(out / "report.md", render_report(config, metrics, figures))
    return metrics


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def render_report(config, m: dict, figures: list) -> str:
    """``report.md``: the VAMP-2 table beside the baselines, the settings, notes and figures."""
    rows = [f"| learned CV (best of {len(m['seeds'])} seed(s): {m['best_seed']}) | {_fmt(m['vamp2_val'])} | "
            f"{_fmt(m['vamp2_val_deeptime'])} |"]
    if len(m["seeds"]) > 1:
        rows.append(f"| learned CV, mean ± std over seeds | {m['vamp2_val_mean']:.4f} ± {m['vamp2_val_std']:.4f} | |")
    for name, b in m["baselines"].items():
        rows.append(f"| {name} | {b.get('skipped', _fmt(b.get('vamp2_val')))} | |")
    corr = [f"| {name} | " + " | ".join(f"{r:.2f}" for r in values) + " |"
            for name, values in m["observable_correlations"].items()]
    n_cvs = len(m["cv_range"])
    lines = [
        "# cvlearn learn", "",
        f"{m['n_trajectories']} trajectories, {m['n_frames']['total']} frames ({m['n_frames']['train']} training, "
        f"{m['n_frames']['validation']} validation, split by whole trajectory), a frame every "
        f"{m['frame_interval_ps']:g} ps; lag {m['lagtime_ps']:g} ps = {m['lag_frames']} frames; "
        f"{m['n_atoms_selected']} atoms (`{config.selection}`) in {m['n_tokens']} residue tokens"
        f"{', periodic (molecules made whole)' if m['periodic'] else ''}.", "",
        f"Featurizer: {m['featurizer']}; protocol `{config.protocol}`, context `{config.context}`, mixer "
        f"`{config.mixer}`, {n_cvs} CVs. The exported CV (`cv.pt`) is the seed with the best validation VAMP-2 "
        "(so its value is optimistic; the mean over seeds is not).", "",
        "| model | validation VAMP-2 (cvlearn) | deeptime VAMP |", "|---|---|---|", *rows, "",
        "Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in m["seconds"].items()), "",
    ]
    if corr:
        lines += ["| observable | " + " | ".join(f"|r| CV {k + 1}" for k in range(n_cvs)) + " |",
                  "|---|" + "---|" * n_cvs, *corr, ""]
    if m["notes"]:
        lines += ["Notes:", *[f"- {n}" for n in m["notes"]], ""]
    lines += [f"![{title}]({name})\n" for title, name in figures]
    return "\n".join(lines) + "\n"
