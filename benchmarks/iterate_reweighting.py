"""What does a retrain on an OPES-explore run of ala2 at 300 K learn from? (issue 17, item 4: explore → retrain → bias)

Reads the committed explore COLVAR of ``benchmarks/data/ala2_iterate/iterate.yaml`` (2 ns OPES-explore at 300 K on
component 0 of the CV learned from 600 K MD; a row per ps) and reports, for the log-weights β(V − c) the iterate's
retrain uses (the total ``bias``, walls included, minus ``opes_explore.rct``):

- their spread and the effective sample size of the frame weights, over the whole run and without the first
  ``skip_fraction`` (10 %, ``BiasedSpec``'s default): the bias's transient, where one early frame carries almost all
  the weight;
- on the rescaled time axis t' = Σ exp(β(V − c)) Δt, raw and normalised to the simulated time (cvlearn's default),
  the share of the pair weight that pairs a frame with itself, per lag: such pairs carry no kinetics.

The retrains themselves, and how their CVs bias, are ``benchmarks/retrain_smoothness.py``'s.

    python benchmarks/iterate_reweighting.py [--quick]     # results/iterate_reweighting[_quick].{json,md}

``--quick`` reads only the first 500 rows. The explore run itself is made by ``cvlearn iterate`` (see the config).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, machine, now_utc, quick_main, targets_table  # noqa: E402

RUN = DATA / "ala2_iterate"
LAGS_PS = (5.0, 10.0, 20.0, 50.0)
TEMPERATURE_K = 300.0
FRAME_PS = 1.0


def run(quick: bool) -> dict:
    from cvlearn.data import biased_pairs, effective_sample_size, self_pair_fraction
    from cvlearn.data.lagged import log_weights_from_colvar
    from openmm_plugin.stages.iterate import RCT_LABEL
    from openmm_plugin.stages.learn import BiasedSpec

    columns = {"bias_column": "bias", "rct_column": f"{RCT_LABEL['opes-explore']}.rct"}  # as the iterate's retrain
    log_w = log_weights_from_colvar(RUN / "explore.colvar", TEMPERATURE_K, **columns)
    if quick:
        log_w = log_w[:500]
    skip_fraction = BiasedSpec.__dataclass_fields__["skip_fraction"].default
    kept = log_w[int(skip_fraction * len(log_w)):]
    ess, ess_kept = effective_sample_size(log_w), effective_sample_size(kept)
    rows = []
    for lag in LAGS_PS:
        raw = self_pair_fraction(biased_pairs([log_w], FRAME_PS, lag))
        normalised = self_pair_fraction(biased_pairs([log_w], FRAME_PS, lag, normalise=True))
        normalised_kept = self_pair_fraction(biased_pairs([kept], FRAME_PS, lag, normalise=True))
        rows.append({"lag_ps": lag, "self_pair_fraction_raw": raw, "self_pair_fraction_normalised": normalised,
                     "self_pair_fraction_normalised_skipped": normalised_kept})
    at_5 = rows[0]
    targets = [
        {"name": "rescaled-time pair weight on self-pairs at the config's 5-ps lag, normalised, transient skipped",
         "unit": "", "value": at_5["self_pair_fraction_normalised_skipped"], "target": 0.1,
         "met": bool(at_5["self_pair_fraction_normalised_skipped"] <= 0.1)},
        {"name": "effective sample size of the explore frames' weights / frames, transient skipped", "unit": "",
         "value": ess_kept / len(kept), "target": 0.1, "met": bool(ess_kept / len(kept) >= 0.1)},
    ]
    return {"benchmark": "iterate_reweighting", "date": now_utc(), "quick": quick, "machine": machine(),
            "settings": {"colvar": str(RUN / "explore.colvar"), "temperature_k": TEMPERATURE_K, "frame_ps": FRAME_PS,
                         "n_frames": int(len(log_w)), "lags_ps": list(LAGS_PS), "bias_column": columns["bias_column"],
                         "rct_column": columns["rct_column"], "skip_fraction": skip_fraction},
            "log_weight_span": [float(log_w.min()), float(log_w.max())], "argmax_frame": int(np.argmax(log_w)),
            "log_weight_span_skipped": [float(kept.min()), float(kept.max())],
            "mean_acceleration": float(np.mean(np.exp(log_w))), "effective_sample_size": ess,
            "effective_sample_size_skipped": ess_kept, "n_frames_skipped": int(len(log_w) - len(kept)),
            "rows": rows, "targets": targets}


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [f"# iterate_reweighting ({r['date']}, quick={r['quick']}, {s['n_frames']} frames of "
             f"`benchmarks/data/ala2_iterate/explore.colvar`)", "",
             f"log-weights β(V − c) as the iterate's retrain uses them (`{s['bias_column']}` − `{s['rct_column']}`) "
             "span "
             f"[{r['log_weight_span'][0]:.1f}, {r['log_weight_span'][1]:.1f}], largest at frame {r['argmax_frame']}; "
             f"mean acceleration ⟨exp β(V − c)⟩ = {r['mean_acceleration']:.3g}; effective sample size "
             f"{r['effective_sample_size']:.0f} of {s['n_frames']} frames. Without the first {s['skip_fraction']:.0%} "
             f"({r['n_frames_skipped']} frames, the bias's transient; `BiasedSpec.skip_fraction`, the default): span "
             f"[{r['log_weight_span_skipped'][0]:.1f}, "
             f"{r['log_weight_span_skipped'][1]:.1f}], effective sample size "
             f"{r['effective_sample_size_skipped']:.0f} of {s['n_frames'] - r['n_frames_skipped']}.", "",
             "| lag (ps on t') | self-pair weight, raw t' | self-pair weight, normalised t' | normalised, transient "
             "skipped |", "|---|---|---|---|",
             *[f"| {row['lag_ps']:g} | {row['self_pair_fraction_raw']:.4f} | "
               f"{row['self_pair_fraction_normalised']:.4f} | {row['self_pair_fraction_normalised_skipped']:.4f} |"
               for row in r["rows"]], "",
             "The retrains on these frames, and whether their CVs can be biased: `retrain_smoothness.md`."]
    return "\n".join(lines + targets_table(r["targets"])) + "\n"


if __name__ == "__main__":
    quick_main("iterate_reweighting", __doc__, run, markdown)
