"""Alanine dipeptide: GNN+sum / MLP-Mixer / attention VAMPNets against TICA(φ/ψ) and VAMPNet(distances),
then kinetic validation (VAMP-2 vs lag and dim, implied timescales, CK test) and projections onto φ/ψ.

    python examples/03_vamp_alanine.py [--quick] [--out runs/vamp_alanine]

Data: unbiased MD at 600 K (several trajectories, split train/validation/test by whole trajectory), as
``benchmarks/vamp_quality.py`` generates it; trajectories are reused when present in ``out``.
"""

import argparse
import logging
import sys
from pathlib import Path

import mdtraj
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.vamp_quality import FULL_ET, QUICK_ET, ala2_settings, compare_data_from_trajectories, simulate_ala2  # noqa: E402
from cvlearn.analysis.plots import plot_fes_cvs  # noqa: E402
from cvlearn.analysis.kinetics import correlations, kinetic_report  # noqa: E402
from cvlearn.analysis.plots import plot_cvs_on_phi_psi  # noqa: E402
from cvlearn.estimators.baselines import compare_models, markdown_table, public_rows  # noqa: E402
from cvlearn.io import write_json_atomic  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 1 minute)")
    parser.add_argument("--out", default="runs/vamp_alanine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    s = ala2_settings(args.quick)
    paths, top = simulate_ala2(out / "md", s)
    data, test_trajs = compare_data_from_trajectories(paths, top, s["split"], s["lag_frames"], s["dim"], s["frame_ps"],
                                                      "not element H")
    seeds = (0,) if args.quick else s["seeds"]
    rows = compare_models(data, seeds=seeds, featurizer_config=QUICK_ET if args.quick else FULL_ET,
                          head_hidden=32 if args.quick else 64, max_epochs=s["max_epochs"], patience=s["patience"])
    print(markdown_table(rows, f"alanine dipeptide: test VAMP-2, lag {s['lag_frames']} frames, dim {s['dim']}"))

    test = mdtraj.join(test_trajs)
    phi, psi = mdtraj.compute_phi(test)[1][:, 0], mdtraj.compute_psi(test)[1][:, 0]
    metrics = {"table": public_rows(rows)}
    for row in rows:
        cvs = np.concatenate(row["_outputs"])
        plot_cvs_on_phi_psi(phi, psi, cvs[:, :2], out / f"{row['name']}_cvs_on_phi_psi.png")
        metrics[row["name"]] = {"corr_with_phi_psi": correlations(cvs[:, :2], {
            "phi": np.stack([np.sin(phi), np.cos(phi)], 1), "psi": np.stack([np.sin(psi), np.cos(psi)], 1)})}
    best = max((r for r in rows if r["name"].startswith("gnn")), key=lambda r: r["vamp2_mean"])
    report = kinetic_report(best["_outputs"], s["lag_frames"], s["frame_ps"], out, name=best["name"],
                            n_clusters=10 if args.quick else 50)
    cvs = np.concatenate(best["_outputs"])
    plot_fes_cvs(cvs[:, 0], cvs[:, 1], None, s["temperature_k"], out / f"{best['name']}_fes_cv1_cv2.png",
                 title=f"{best['name']} (test trajectories, {s['temperature_k']:.0f} K)")
    metrics["kinetics_best_gnn"] = {"model": best["name"], **report}
    write_json_atomic(out / "metrics.json", metrics)
    print({"vamp2_val": {r["name"]: round(r["vamp2_mean"], 4) for r in rows}, "best_gnn": best["name"],
           "ck_test": report["ck_test"], "out": str(out)})
