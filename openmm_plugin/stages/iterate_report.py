"""What ``cvlearn iterate`` reports: the first and the retrained CV side by side (``summary.json``, ``summary.md``).

* **VAMP-2 on held-out data**: both exported CVs (``learn/cv.pt``, ``retrain/cv.pt``) evaluated on the learn
  section's validation trajectories (held out from the first CV's training; the retrained CV never saw them) at the
  learn lag, scored with deeptime's VAMP (unweighted) — the one comparison on the same frames; each CV's own
  validation VAMP-2 (the retrain's: weighted, on the explore run's held-out part) is listed beside it.
* **Biased runs**: the explore run biases the first CV, the final bias the retrained one: per run the CV range
  visited (COLVAR) against the CV's training range, and, with ``transitions``, core-to-core transitions of the
  observable per ns (the two runs use different methods, OPES-explore against OPES-metad by default: the numbers
  say how each run sampled, not a controlled comparison of the CVs).
* **Reweighting of the explore run**: frames, the pairs on the rescaled time axis per part (``rescaled_time``) or
  the effective sample size of the frame weights (``weights``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from cvlearn.analysis.transitions import count_core_transitions
from cvlearn.errors import ConfigError

__all__ = ["biased_run_stats", "check_rescaled_pairs", "heldout_vamp2", "render_summary",
           "reweighting_info", "summarize"]

MODEL_BATCH_FRAMES = 256


def reweighting_info(retrain) -> dict:
    """How the explore run's frames enter the retrain: log-weights from its COLVAR, split and pairs as ``learn``
    builds them (:func:`openmm_plugin.stages.learn_fit.fit_weights`)."""
    from cvlearn.data import (biased_pairs, effective_sample_size, peek_trajectory, rescaled_time, self_pair_fraction,
                              take_segments)
    from cvlearn.data.lagged import log_weights_from_colvar
    from openmm_plugin.stages.learn_data import split_segments

    spec = retrain.biased
    try:
        log_w = log_weights_from_colvar(spec.colvars[0], spec.temperature_k, bias_column=spec.bias_column,
                                        rct_column=spec.rct_column)[::retrain.stride]
    except ValueError as err:
        raise ConfigError(str(err), key="biased.colvars") from None
    interval = retrain.frame_interval_ps or peek_trajectory(retrain.trajectories[0])[2]
    interval *= retrain.stride
    train, val = split_segments(retrain, [len(log_w)])
    used = np.concatenate(take_segments([log_w], [*train, *val]))
    info = {"method": spec.method, "normalise_time": spec.normalise_time, "colvar": spec.colvars[0],
            "bias_column": spec.bias_column,
            "rct_column": spec.rct_column, "temperature_k": spec.temperature_k, "n_biased_frames": int(len(log_w)),
            "frame_interval_ps": float(interval), "lagtime_ps": retrain.lagtime_ps,
            "skip_fraction": spec.skip_fraction, "effective_sample_size": effective_sample_size(used)}
    if spec.method == "rescaled_time":
        for part, segments in (("train", train), ("validation", val)):
            parts = take_segments([log_w], segments)
            pairs = biased_pairs(parts, interval, retrain.lagtime_ps, normalise=spec.normalise_time)
            info[f"n_{part}_pairs"] = int(sum(len(p[0]) for p in pairs))
            info[f"self_pair_fraction_{part}"] = self_pair_fraction(pairs)
            info[f"rescaled_span_{part}_ps"] = float(sum(rescaled_time(lw, interval, spec.normalise_time)[-1]
                                                         for lw in parts))
    return info


def check_rescaled_pairs(retrain) -> dict:
    """Before the retrain: both parts of the explore run hold lagged pairs on the rescaled time axis."""
    info = reweighting_info(retrain)
    if info["method"] == "rescaled_time" and min(info["n_train_pairs"], info["n_validation_pairs"]) < 2:
        raise ConfigError(f"expected time-lagged pairs on the rescaled time axis of the explore run in the training "
                          f"and the validation part, found {info['n_train_pairs']} and {info['n_validation_pairs']} at "
                          f"{retrain.lagtime_ps:g} ps (rescaled spans {info['rescaled_span_train_ps']:.3g} and "
                          f"{info['rescaled_span_validation_ps']:.3g} ps); use a shorter lag, a longer explore run, or "
                          "biased: {method: weights}", key="lagtime_ps")
    return info


def _cv_outputs(module, positions: list[torch.Tensor], columns: torch.Tensor) -> list[np.ndarray]:
    outputs = []
    with torch.no_grad():
        for x in positions:
            chunks = [module.model(x[i:i + MODEL_BATCH_FRAMES][:, columns]).double()
                      for i in range(0, len(x), MODEL_BATCH_FRAMES)]
            outputs.append(torch.cat(chunks).numpy())
    return outputs


def heldout_vamp2(learn, cv_paths: dict) -> dict:
    """deeptime VAMP-2 of each exported CV on the learn section's validation part, at the learn lag.

    Parameters
    ----------
    learn : LearnConfig
        The (first) learn's config: its trajectories, split and lag.
    cv_paths : dict of str to path
        Exported CVs by name.

    Returns
    -------
    dict
        ``{"lagtime_ps", "lag_frames", "n_frames", "trajectories", "vamp2": {name: float}}``.
    """
    from cvlearn.data import take_segments
    from cvlearn.estimators.scores import deeptime_vamp_score
    from cvlearn.export import load_cv
    from openmm_plugin.stages.learn_data import check_inputs, read_inputs

    loaded = {name: load_cv(path) for name, path in cv_paths.items()}
    union = sorted(set().union(*[spec.atom_indices for _, spec in loaded.values()]))
    config = dataclasses.replace(learn, selection="index " + " ".join(map(str, union)), observables=None,
                                 biased=None)
    plan = check_inputs(config)
    data = read_inputs(config, plan, None if config.periodic == "auto" else bool(config.periodic))
    held_out = take_segments(data.positions, data.validation)
    column = {int(a): i for i, a in enumerate(plan.atoms.tolist())}
    scores = {}
    for name, (module, spec) in loaded.items():
        outputs = _cv_outputs(module, held_out, torch.tensor([column[a] for a in spec.atom_indices]))
        scores[name] = deeptime_vamp_score(outputs, data.lag, r=2)
    return {"lagtime_ps": learn.lagtime_ps, "lag_frames": int(data.lag), "n_frames": int(sum(map(len, held_out))),
            "trajectories": sorted({str(plan.trajectories[s.traj]) for s in data.validation}), "vamp2": scores}


def _observable_values(spec, trajectory: Path, learn) -> np.ndarray:
    from openmm_plugin.stages.learn_data import _observable, _parse_observable

    from cvlearn.data import iter_trajectory, load_trajectories, read_topology, select_atoms

    topology = read_topology(learn.topology)[0]
    kind, args = _parse_observable("transitions.observable", spec, topology)
    reference = load_trajectories([learn.topology], topology)[0] if kind == "rmsd" else None
    atoms = select_atoms(topology, learn.selection)
    return np.concatenate([_observable(kind, args, chunk, atoms, reference)
                           for chunk in iter_trajectory(trajectory, topology)])


def biased_run_stats(stage, cv_path: Path, transitions, learn) -> dict:
    """CV range visited (against the training range) and, with ``transitions``, transitions per ns of one run."""
    from cvlearn.data.colvar import read_colvar
    from cvlearn.export import load_cv
    from openmm_plugin.stages.iterate import frame_interval_ps

    spec = load_cv(cv_path)[1]
    columns = read_colvar(Path(stage.out) / "COLVAR")
    names = list(columns)[1:1 + spec.n_cvs]
    visited = [[float(columns[n].min()), float(columns[n].max())] for n in names]
    training = [list(map(float, r)) for r in spec.cv_range_training] if spec.cv_range_training else None
    n_frames = len(columns["time"])
    ns = n_frames * frame_interval_ps(stage) / 1000.0
    stats = {"method": stage.method, "cv": str(cv_path), "n_frames": n_frames, "ns": ns, "cv_names": names,
             "cv_range_visited": visited, "cv_range_training": training,
             "visited_over_training_span": None if training is None else
             [(v[1] - v[0]) / (t[1] - t[0]) if t[1] > t[0] else None for v, t in zip(visited, training)]}
    if transitions is not None:
        values = _observable_values(transitions.observable, Path(stage.out) / "trajectory.dcd", learn)
        n = count_core_transitions(values, transitions.a, transitions.b)
        stats.update(transitions=n, transitions_per_ns=n / ns if ns > 0 else None)
    return stats


def summarize(config, stages, results: dict, *, quick: bool) -> dict:
    """The summary of a finished chain (see the module doc)."""
    out = Path(config.out)
    paths = {"first": out / "learn" / "cv.pt", "retrained": out / "retrain" / "cv.pt"}
    first, retrained = results["learn"], results["retrain"]
    summary = {
        "quick": quick, "out": str(out),
        "vamp2_heldout": heldout_vamp2(stages.learn, paths),
        "vamp2_val_own": {"first": first["vamp2_val"], "retrained": retrained["vamp2_val"]},
        "reweighting": reweighting_info(stages.retrain),
        "retrain_n_frames": retrained["n_frames"],
        "biased_runs": {"explore": biased_run_stats(stages.explore, paths["first"], config.transitions, stages.learn),
                        "bias": biased_run_stats(stages.bias, paths["retrained"], config.transitions, stages.learn)},
        "transitions": None if config.transitions is None else dataclasses.asdict(config.transitions),
    }
    if results.get("analyze") is not None:
        summary["analyze"] = {"deltaF": results["analyze"]["deltaF"], "out": str(out / "analyze")}
    summary["verdict"] = verdict(summary)
    return summary


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


HELDOUT_MARGIN = 0.05  # held-out VAMP-2 below the first CV's by more than this: the retrain did not learn better
SELF_PAIR_WARN = 0.25  # more of the training pair weight than this on frame-to-itself pairs: little kinetics left


def verdict(s: dict) -> list[str]:
    """What a user should take from a finished chain, as sentences (empty when nothing stands out).

    The held-out trajectories are the first learn's, so the first CV is at home there; a retrained CV that learned
    the same slow process scores as well. Measured on ala2 (``benchmarks/data/ala2_iterate/iterate_summary.md``): 1.07
    against 1.74, and biased, the retrained CV never left C7eq in 15 ns (``sampling_retrained_compiled_mts1.md``)."""
    held, rw = s["vamp2_heldout"]["vamp2"], s["reweighting"]
    out = []
    if held["retrained"] < held["first"] - HELDOUT_MARGIN:
        out.append(f"The retrained CV scores {held['retrained']:.3f} against the first CV's {held['first']:.3f} on "
                   "the held-out trajectories: it has not learned the slow process better. Bias the first CV "
                   "(learn/cv.pt), or explore longer before retraining.")
    share = rw.get("self_pair_fraction_train")
    if share is not None and share > SELF_PAIR_WARN:
        out.append(f"{100 * share:.0f} % of the retrain's training pair weight pairs a frame with itself (no "
                   "kinetics in those pairs): the explore run is short for this lag; explore longer or raise the "
                   "retrain's lagtime_ps.")
    return out


def render_summary(s: dict) -> str:
    """``summary.md``: the two CVs' VAMP-2, the biased runs and the reweighting."""
    held, own, rw = s["vamp2_heldout"], s["vamp2_val_own"], s["reweighting"]
    lines = ["# cvlearn iterate" + (" (--quick)" if s["quick"] else ""), "",
             f"VAMP-2 on the learn section's held-out trajectories ({held['n_frames']} frames, lag "
             f"{held['lagtime_ps']:g} ps = {held['lag_frames']} frames; deeptime VAMP, unweighted), and each CV's own "
             "validation VAMP-2 (the retrained CV's: weighted, on the explore run's held-out part):", "",
             "| CV | held-out VAMP-2 | own validation VAMP-2 |", "|---|---|---|",
             f"| first (learn/cv.pt) | {_fmt(held['vamp2']['first'])} | {_fmt(own['first'])} |",
             f"| retrained (retrain/cv.pt) | {_fmt(held['vamp2']['retrained'])} | {_fmt(own['retrained'])} |", "",
             *[line for sentence in s.get("verdict", []) for line in (f"**{sentence}**", "")],
             "| run | method | CV | ns | CV range visited | training range | transitions / ns |",
             "|---|---|---|---|---|---|---|"]
    for name, r in s["biased_runs"].items():
        visited = ", ".join(f"[{lo:.3g}, {hi:.3g}]" for lo, hi in r["cv_range_visited"])
        training = "n/a" if r["cv_range_training"] is None else ", ".join(f"[{lo:.3g}, {hi:.3g}]"
                                                                        for lo, hi in r["cv_range_training"])
        rate = "n/a" if "transitions" not in r else f"{_fmt(r['transitions_per_ns'], '.3g')} ({r['transitions']})"
        lines.append(f"| {name} | {r['method']} | {r['cv']} | {r['ns']:.3g} | {visited} | {training} | {rate} |")
    lines += ["", f"Retrain data: {rw['n_biased_frames']} frames of the explore run reweighted by `{rw['method']}` "
                  f"(log-weight β({rw['bias_column']} − {rw['rct_column'] or '0'}) at {rw['temperature_k']:g} K), "
                  f"the first {rw.get('skip_fraction', 0):.0%} left out as the bias's transient, "
                  f"effective sample size {rw['effective_sample_size']:.1f}"
              + (f"; {rw['n_train_pairs']} training and {rw['n_validation_pairs']} validation pairs at "
                 f"{rw['lagtime_ps']:g} ps on the {'normalised ' if rw['normalise_time'] else ''}rescaled time axis "
                 f"(spans {rw['rescaled_span_train_ps']:.3g} and {rw['rescaled_span_validation_ps']:.3g} ps; "
                 f"{100 * rw['self_pair_fraction_train']:.0f} % of the training pair weight pairs a frame with itself)"
                 if rw["method"] == "rescaled_time" else "") + ".", ""]
    if s["transitions"]:
        t = s["transitions"]
        lines += [f"Transitions: `{t['observable']}` between cores {t['a']} and {t['b']}. The two runs use different "
                  "methods: the numbers say how each sampled, not a controlled comparison of the CVs.", ""]
    if "analyze" in s:
        deltas = [f"dF {pair} = {_fmt(d['kjmol'], '.2f')} ± {_fmt(d['stderr_kjmol'], '.2f')} kJ/mol"
                  for pair, d in s["analyze"]["deltaF"].items()]
        lines += ["Final bias, reweighted (analyze/): " + ", ".join(deltas), ""]
    if "seconds" in s:
        lines += ["Seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()), ""]
    return "\n".join(lines) + "\n"
