"""How slow are the learned CVs? Held-out VAMP-2 (mean ± std over seeds) of TICA(torsions), VAMPNet(distances),
GNN+sum, GNN+MLP-Mixer and GNN+attention, same lag and output dimension per system, one table.

ala2: unbiased MD at 600 K (peptide bonds held trans, as the demo), several independent trajectories split
by whole trajectory into train / validation / test. WLALL and λ6-85: simulated here too (``other_settings``;
reused when the files exist), or given with --wlall-traj / --lambda-traj (+ --*-top).

    python benchmarks/vamp_quality.py [--quick] [--wlall-traj a.xtc b.xtc --wlall-top top.pdb] [...]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, now_utc, save, targets_table  # noqa: E402

from cvlearn.estimators.baselines import CompareData, backbone_torsion_features, compare_models, markdown_table, public_rows  # noqa: E402
from cvlearn.data import load_trajectories  # noqa: E402
from cvlearn.nn.featurizers import ETConfig  # noqa: E402
from cvlearn.data.selection import atomic_numbers, residue_index_of_atoms  # noqa: E402
from systems import lambda6_85  # noqa: E402

QUICK_ET = ETConfig(hidden_channels=32, num_layers=1, num_rbf=16, num_heads=4, cutoff_angstrom=5.0)
FULL_ET = ETConfig(hidden_channels=64, num_layers=2, num_rbf=32, cutoff_angstrom=5.0)


def ala2_settings(quick: bool) -> dict:
    if quick:
        return {"n_traj": 4, "ps_per_traj": 100.0, "frame_ps": 0.5, "lag_frames": 4, "split": (2, 1, 1),
                "dim": 6, "max_epochs": 3, "patience": 2, "seeds": (0, 1, 2), "temperature_k": 600.0}
    return {"n_traj": 8, "ps_per_traj": 2000.0, "frame_ps": 1.0, "lag_frames": 5, "split": (5, 1, 2),
            "dim": 6, "max_epochs": 30, "patience": 8, "seeds": (0, 1, 2), "temperature_k": 600.0}


def simulate_ala2(out: Path, s: dict, seed: int = 0) -> tuple[list[Path], Path]:
    """Unbiased ala2 runs (skipped when their files exist), trans-ω restraint as in the demo."""
    from openmm_plugin.simulation import make_integrator, run_md
    from systems import alanine_dipeptide as ala2
    from systems.peptides import add_trans_omega_restraint

    molecule = ala2.build()
    system = copy.deepcopy(molecule.system)
    add_trans_omega_restraint(system, molecule.topology)
    paths = []
    for i in range(s["n_traj"]):
        k = seed * 1000 + i + 1
        integrator = make_integrator(s["temperature_k"], ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, seed=k)
        result = run_md(molecule.topology, system, molecule.positions_nm, integrator,
                        out_prefix=out / f"traj{i}", n_steps=int(round(s["ps_per_traj"] / ala2.TIMESTEP_PS)),
                        report_interval_steps=int(round(s["frame_ps"] / ala2.TIMESTEP_PS)), seed=k,
                        temperature_k=s["temperature_k"], progress=False, desc=f"ala2 {i}")
        paths.append(result.trajectory_path)
    return paths, out / "traj0.pdb"


def other_settings(name: str, quick: bool) -> dict:
    """Data the benchmark simulates for WLALL / λ6-85 when no trajectories are given (CPU-sized, stated in the JSON)."""
    if name == "wlall":  # Reference platform, as `cvlearn simulate` (deterministic per seed)
        return {"n_traj": 3 if quick else 5, "ps_per_traj": 50.0 if quick else 1000.0, "frame_ps": 1.0,
                "temperature_k": 400.0, "lag_frames": 2 if quick else 10, "dim": 10}
    # λ6-85: 1,267 atoms; OBC with a 1.5 nm cutoff, hydrogen mass 3 amu, 4 fs steps, CPU platform. Short runs
    # from the ideal helix at 400 K: they see helix bending/fraying, not folding (µs), which is what a CPU allows.
    return {"n_traj": 3 if quick else 4, "ps_per_traj": 4.0 if quick else 60.0, "frame_ps": 0.5,
            "temperature_k": 400.0, "lag_frames": 1 if quick else 4, "dim": 10, **lambda6_85.FAST_BUILD,
            "timestep_ps": lambda6_85.FAST_TIMESTEP_PS}


def simulate_other(name: str, out: Path, s: dict) -> tuple[list[Path], Path]:
    """WLALL / λ6-85 runs with ``other_settings`` (skipped when their files exist)."""
    from openmm_plugin.stages.simulate import SimulateConfig, run_simulate

    system, options = {"wlall": ("pentapeptide_wlall", {}), "lambda6_85": ("lambda6_85", {"fast": True, "platform": "CPU"})}[name]
    paths = [run_simulate(SimulateConfig(system=system, ns=s["ps_per_traj"] * 1e-3, temperature_k=s["temperature_k"],
                                         seed=seed, out=str(out), report_interval_ps=s["frame_ps"], **options)).trajectory_path
             for seed in range(1, s["n_traj"] + 1)]
    return paths, paths[0].with_suffix(".pdb")


def compare_data_from_trajectories(paths, top, split, lag: int, dim: int, dt_ps: float, distance_selection: str,
                                   seed: int = 0) -> tuple[CompareData, list]:
    """Heavy atoms for the GNN, ``distance_selection`` (mdtraj DSL) for the distance baseline, φ/ψ for TICA;
    trajectories assigned to train/validation/test in a seeded random order."""
    trajs = load_trajectories([str(p) for p in paths], str(top))
    topology = trajs[0].topology
    heavy = topology.select("not element H")
    dist_atoms = topology.select(distance_selection)
    order = np.random.default_rng(seed).permutation(len(trajs))
    n_train, n_val, n_test = split
    if n_train + n_val + n_test > len(trajs) or min(split) < 1:
        raise ValueError(f"split: expected at least one trajectory per part and {len(trajs)} in all, found {split}")
    parts = {"train": order[:n_train], "validation": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:n_train + n_val + n_test]}
    inputs = {}
    for name, ids in parts.items():
        inputs[name] = {
            "positions": [torch.from_numpy(trajs[i].xyz[:, heavy].copy()) for i in ids],
            "distance_positions": [torch.from_numpy(trajs[i].xyz[:, dist_atoms].copy()) for i in ids],
            "torsions": [backbone_torsion_features(trajs[i]) for i in ids]}
    data = CompareData(inputs["train"], inputs["validation"], inputs["test"],
                       atomic_numbers(topology, heavy),
                       residue_index_of_atoms(topology, heavy), lag, dim, dt_ps)
    return data, [trajs[i] for i in parts["test"]]


def kinetics_and_projections(system: str, table: list[dict], test_trajs: list, lag: int, dt_ps: float,
                             temperature_k: float, out: Path, quick: bool) -> dict:
    """For the best GNN and the distance VAMPNet (first seed, test trajectories): VAMP-2 vs lag/dim, implied
    timescales, CK test, the CVs against φ/ψ (ala2) or RMSD/Rg/Q (proteins), and their FES, as PNGs + numbers."""
    import mdtraj

    from cvlearn.analysis.plots import plot_cvs_over_observables, plot_fes_cvs
    from cvlearn.analysis.kinetics import correlations, kinetic_report, protein_observables
    from cvlearn.analysis.plots import plot_cvs_on_phi_psi

    test = mdtraj.join(test_trajs)
    if system == "ala2":
        phi, psi = mdtraj.compute_phi(test)[1][:, 0], mdtraj.compute_psi(test)[1][:, 0]
        observables = {"phi": np.stack([np.sin(phi), np.cos(phi)], 1), "psi": np.stack([np.sin(psi), np.cos(psi)], 1)}
    else:  # reference for RMSD and Q: the first test frame (the runs start from the same built structure)
        observables = {k: v for k, v in protein_observables(test).items() if np.ptp(v) > 0}  # constant Q: no contacts
    by = {r["name"]: r for r in table}
    best = max((r for r in table if r["name"].startswith("gnn")), key=lambda r: r["vamp2_mean"])
    report = {}
    for row in (best, by["vampnet_distances"]):
        name = f"{system}_{row['name']}"
        cvs = np.concatenate(row["_outputs"])
        clusters = max(2, min(10 if quick else 50, len(cvs) // 10))  # short test sets: a few frames per state
        kinetics = kinetic_report(row["_outputs"], lag, dt_ps, out, name=name, n_clusters=clusters)
        if system == "ala2":
            plot_cvs_on_phi_psi(phi, psi, cvs[:, :2], out / f"{name}_cvs_on_phi_psi.png")
        else:
            plot_cvs_over_observables(cvs, observables, out / f"{name}_cvs_vs_observables.png")
        plot_fes_cvs(cvs[:, 0], cvs[:, 1], None, temperature_k, out / f"{name}_fes_cv1_cv2.png",
                     title=f"{system}: {row['name']} (test trajectories)")
        report[row["name"]] = {"lag_ps": lag * dt_ps, "correlation_with_observables": correlations(cvs[:, :3], observables),
                               "implied_timescales": kinetics["implied_timescales"], "ck_test": kinetics["ck_test"]}
    return report


def frozen_featurizer_for(data, protocol: str, checkpoint: str | None, geom2vec_kind: str | None = None):
    """``None`` (end to end) or the pre-trained featurizer for the frozen rows: the shipped checkpoint by default,
    a cvlearn checkpoint, or (``geom2vec_kind``) one of geom2vec's public state dicts."""
    if protocol == "end-to-end":
        return None
    from cvlearn.checkpoints import default_checkpoint
    from cvlearn.nn.featurizers import featurizer_from_checkpoint
    from cvlearn.nn.featurizers.registry import load_geom2vec

    if geom2vec_kind:
        if not checkpoint:
            raise ValueError("--geom2vec-kind: needs --checkpoint, the geom2vec .pth file")
        return load_geom2vec(geom2vec_kind, data.atomic_numbers, checkpoint).eval()
    return featurizer_from_checkpoint(checkpoint or default_checkpoint(), data.atomic_numbers).eval()


def run(quick: bool, args) -> dict:
    torch.set_num_threads(args.threads or (1 if quick else max(1, os.cpu_count() or 1)))
    work = Path(args.work) if args.work else Path("runs") / ("vamp_quality_quick" if quick else "vamp_quality")  # gitignored
    if args.checkpoint and not Path(args.checkpoint).is_file():  # fail now, not after an hour of MD
        raise FileNotFoundError(f"--checkpoint: {args.checkpoint} does not exist")
    rows, systems, notes = [], {}, []
    s = ala2_settings(quick)
    cfg = QUICK_ET if quick else FULL_ET
    kinetics = {}
    plots = RESULTS / f"{result_name(args)}{'_quick' if quick else ''}_plots"
    if "ala2" in args.systems:
        paths, top = simulate_ala2(work / "ala2", s)
        data, test_trajs = compare_data_from_trajectories(paths, top, s["split"], s["lag_frames"], s["dim"], s["frame_ps"],
                                                          "not element H")
        table = compare_models(data, seeds=s["seeds"], featurizer_config=cfg, head_hidden=32 if quick else 64,
                               max_epochs=s["max_epochs"], patience=s["patience"],
                               frozen_featurizer=frozen_featurizer_for(data, args.protocol, args.checkpoint, args.geom2vec_kind))
        kinetics["ala2"] = kinetics_and_projections("ala2", table, test_trajs, s["lag_frames"], s["frame_ps"],
                                                    s["temperature_k"], plots, quick)
        rows += [{"system": "ala2", **r} for r in public_rows(table)]
        systems["ala2"] = {**{k: v for k, v in s.items()}, "featurizer": cfg.as_dict(),
                           "data": f"{s['n_traj']} x {s['ps_per_traj']:g} ps at {s['temperature_k']:g} K, frames every "
                                   f"{s['frame_ps']} ps; split train/val/test = {s['split']} trajectories"}
    for name, trajs, top_path, sel in (("wlall", args.wlall_traj, args.wlall_top, "not element H"),
                                       ("lambda6_85", args.lambda_traj, args.lambda_top, "name CA")):
        if name not in args.systems:
            continue
        o = other_settings(name, quick)
        if not trajs:
            trajs, top_path = simulate_other(name, work / name, o)
            data_note = (f"{o['n_traj']} x {o['ps_per_traj']:g} ps at {o['temperature_k']:g} K, frames every "
                         f"{o['frame_ps']} ps" + (f"; {lambda6_85.FAST_BUILD}, {lambda6_85.FAST_TIMESTEP_PS} ps steps" if name == "lambda6_85" else ""))
        else:
            if not top_path:
                raise ValueError(f"--{name.replace('lambda6_85', 'lambda')}-top: required with its -traj files")
            data_note = "given trajectories"
        n = len(trajs)
        if n < 3:
            notes.append(f"{name}: skipped (need >= 3 trajectories for train/validation/test, found {n})")
            continue
        split = (n - 2, 1, 1)
        lag = args.other_lag if args.other_lag else o["lag_frames"]
        data, test_trajs = compare_data_from_trajectories(trajs, top_path, split, lag, o["dim"], o["frame_ps"], sel)
        table = compare_models(data, seeds=s["seeds"], featurizer_config=cfg, head_hidden=32 if quick else 64,
                               max_epochs=s["max_epochs"], patience=s["patience"],
                               frozen_featurizer=frozen_featurizer_for(data, args.protocol, args.checkpoint, args.geom2vec_kind))
        kinetics[name] = kinetics_and_projections(name, table, test_trajs, lag, o["frame_ps"], o["temperature_k"], plots,
                                                  quick)
        rows += [{"system": name, **r} for r in public_rows(table)]
        systems[name] = {"trajectories": [str(t) for t in trajs], "lag_frames": lag, "dim": o["dim"],
                         "split": split, "distance_atoms": sel, "data": data_note}
    targets = []
    for system in dict.fromkeys(r["system"] for r in rows):
        by = {r["name"]: r for r in rows if r["system"] == system}
        best_gnn = max((r for k, r in by.items() if k.startswith("gnn")), key=lambda r: r["vamp2_mean"])
        for baseline, label in (("tica_torsions", "TICA on torsions"), ("vampnet_distances", "VAMPNet on distances")):
            margin = best_gnn["vamp2_mean"] - by[baseline]["vamp2_mean"]
            targets.append({"name": f"{system}: best GNN ({best_gnn['name']}) test VAMP-2 vs {label}", "value": margin,
                            "target": 0.0, "unit": "ΔVAMP-2", "met": bool(margin >= 0)})
    return {"benchmark": "vamp_quality",
            "date": now_utc(),
            "machine": machine(),
            "settings": {"quick": quick, "systems": systems, "gnn_protocol": args.protocol,
                         "frozen_checkpoint": checkpoint_label(args), "score": "VAMP-2 of the first dim outputs on held-out "
                         "test trajectories (re-estimated on them), mean ± sample std over seeds",
                         "notes": notes, "plots": str(plots.relative_to(RESULTS.parent.parent))},
            "rows": rows, "kinetics": kinetics, "targets": targets}


def markdown(result: dict) -> str:
    lines = [f"# vamp_quality ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={result['settings']['quick']})", ""]
    for system in dict.fromkeys(r["system"] for r in result["rows"]):
        cfg = result["settings"]["systems"][system]
        lines.append(markdown_table([r for r in result["rows"] if r["system"] == system],
                                    f"{system}: lag {cfg['lag_frames']} frames, dim {cfg['dim']}"))
        lines.append(f"data: {cfg.get('data', 'given trajectories')}\n")
    lines += [f"- {n}" for n in result["settings"]["notes"]]
    lines += ["", "Kinetics on the test trajectories (first seed; plots in "
              f"`{result['settings']['plots']}`):", "", "| system | model | slowest ITS (ps) at the model lag | "
              "CK test max abs error | max abs r with observables (CV 1) |", "|---|---|---|---|---|"]
    for system, models in result["kinetics"].items():
        for model, k in models.items():
            its = k["implied_timescales"]
            at = min(range(len(its["lags_ps"])), key=lambda i: abs(its["lags_ps"][i] - k["lag_ps"]))
            ck = k["ck_test"].get("max_abs_error", float("nan"))
            corr = ", ".join(f"{name} {v[0]:.2f}" for name, v in k["correlation_with_observables"].items())
            lines.append(f"| {system} | {model} | {its['timescales_ps'][at][0]:.1f} | {ck:.3f} | {corr} |")
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def checkpoint_label(args) -> str | None:
    if args.protocol != "frozen":
        return None
    return (args.checkpoint or "shipped") + (f" (geom2vec {args.geom2vec_kind})" if args.geom2vec_kind else "")


def result_name(args) -> str:
    return f"vamp_quality_{args.tag}" if args.tag else "vamp_quality"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", default=None, help="where simulated trajectories go (reused when present)")
    parser.add_argument("--wlall-traj", nargs="*", default=None)
    parser.add_argument("--wlall-top", default=None)
    parser.add_argument("--lambda-traj", nargs="*", default=None)
    parser.add_argument("--lambda-top", default=None)
    parser.add_argument("--protocol", choices=("end-to-end", "frozen"), default="end-to-end",
                        help="GNN rows: featurizer trained end to end, or frozen (pre-trained, tokens embedded once)")
    parser.add_argument("--checkpoint", default=None, help="frozen protocol: featurizer checkpoint (default: shipped)")
    parser.add_argument("--geom2vec-kind", choices=("et", "visnet", "tensornet"), default=None,
                        help="--checkpoint is a geom2vec state dict of this architecture")
    parser.add_argument("--tag", default="", help="results go to vamp_quality_<tag>.json (e.g. another checkpoint)")
    parser.add_argument("--other-lag", type=int, default=None,
                        help="lag (frames) for the WLALL / λ6-85 rows (default: their other_settings)")
    parser.add_argument("--systems", nargs="+", choices=("ala2", "wlall", "lambda6_85"),
                        default=["ala2", "wlall", "lambda6_85"], help="systems to run (default: all three)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: all cores; 1 when other jobs share the machine)")
    args = parser.parse_args()
    result = run(args.quick, args)
    save(result_name(args), args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
