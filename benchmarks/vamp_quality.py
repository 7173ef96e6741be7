"""How slow are the learned CVs? Held-out VAMP-2 (mean ± std over seeds) of TICA(torsions), VAMPNet(distances),
GNN+sum, GNN+MLP-Mixer and GNN+attention, same lag and output dimension per system, one table.

ala2: unbiased MD at 600 K (peptide bonds held trans, as the demo), several independent trajectories split
by whole trajectory into train / validation / test. WLALL and λ6-85: give trajectories with --wlall-traj /
--lambda-traj (+ --*-top), otherwise the row is skipped with a note.

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

from benchmarks.common import machine, now_utc, save, targets_table  # noqa: E402

from cvlearn.baselines import CompareData, backbone_torsion_features, compare_models, markdown_table, public_rows  # noqa: E402
from cvlearn.data import load_trajectories  # noqa: E402
from cvlearn.featurizers import ETConfig  # noqa: E402
from cvlearn.tokens import residue_index_of_atoms  # noqa: E402

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
    from openmm_plugin.simulate import run_md
    from systems import alanine_dipeptide as ala2
    from systems.peptides import add_trans_omega_restraint

    molecule = ala2.build()
    system = copy.deepcopy(molecule.system)
    add_trans_omega_restraint(system, molecule.topology)
    paths = []
    for i in range(s["n_traj"]):
        k = seed * 1000 + i + 1
        result = run_md(molecule.topology, system, molecule.positions_nm, ala2.make_integrator(s["temperature_k"], seed=k),
                        out_prefix=out / f"traj{i}", n_steps=int(round(s["ps_per_traj"] / ala2.TIMESTEP_PS)),
                        report_interval_steps=int(round(s["frame_ps"] / ala2.TIMESTEP_PS)), seed=k,
                        temperature_k=s["temperature_k"], progress=False, desc=f"ala2 {i}")
        paths.append(result.trajectory_path)
    return paths, out / "traj0.pdb"


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
                       [topology.atom(int(i)).element.atomic_number for i in heavy],
                       residue_index_of_atoms(topology, heavy), lag, dim, dt_ps)
    return data, [trajs[i] for i in parts["test"]]


def frozen_featurizer_for(data, protocol: str, checkpoint: str | None):
    """``None`` (end to end) or the pre-trained featurizer (default: the shipped checkpoint) for the frozen rows."""
    if protocol == "end-to-end":
        return None
    from cvlearn.checkpoints import default_checkpoint
    from cvlearn.featurizers import featurizer_from_checkpoint

    return featurizer_from_checkpoint(checkpoint or default_checkpoint(), data.atomic_numbers).eval()


def run(quick: bool, args) -> dict:
    torch.set_num_threads(1 if quick else max(1, os.cpu_count() or 1))
    work = Path(args.work) if args.work else Path("runs") / ("vamp_quality_quick" if quick else "vamp_quality")  # gitignored
    rows, systems, notes = [], {}, []
    s = ala2_settings(quick)
    paths, top = simulate_ala2(work / "ala2", s)
    data, _ = compare_data_from_trajectories(paths, top, s["split"], s["lag_frames"], s["dim"], s["frame_ps"],
                                             "not element H")
    cfg = QUICK_ET if quick else FULL_ET
    table = compare_models(data, seeds=s["seeds"], featurizer_config=cfg, head_hidden=32 if quick else 64,
                           max_epochs=s["max_epochs"], patience=s["patience"],
                           frozen_featurizer=frozen_featurizer_for(data, args.protocol, args.checkpoint))
    for r in public_rows(table):
        rows.append({"system": "ala2", **r})
    systems["ala2"] = {**{k: v for k, v in s.items()}, "featurizer": cfg.as_dict(),
                       "data": f"{s['n_traj']} x {s['ps_per_traj']:g} ps at {s['temperature_k']:g} K, frames every "
                               f"{s['frame_ps']} ps; split train/val/test = {s['split']} trajectories"}
    for name, trajs, top_path, sel in (("wlall", args.wlall_traj, args.wlall_top, "not element H"),
                                       ("lambda6_85", args.lambda_traj, args.lambda_top, "name CA")):
        if not trajs or not top_path:
            notes.append(f"{name}: skipped (no trajectories given: --{name.split('_')[0].replace('lambda6', 'lambda')}-traj/-top)")
            continue
        n = len(trajs)
        split = (max(1, n - 2), 1, 1) if n >= 3 else None
        if split is None:
            notes.append(f"{name}: skipped (need >= 3 trajectories for train/validation/test, found {n})")
            continue
        data, _ = compare_data_from_trajectories(trajs, top_path, split, args.other_lag, 10, args.other_dt_ps, sel)
        table = compare_models(data, seeds=s["seeds"], featurizer_config=cfg, max_epochs=s["max_epochs"],
                               patience=s["patience"],
                               frozen_featurizer=frozen_featurizer_for(data, args.protocol, args.checkpoint))
        rows += [{"system": name, **r} for r in public_rows(table)]
        systems[name] = {"trajectories": [str(t) for t in trajs], "lag_frames": args.other_lag, "dim": 10,
                         "distance_atoms": sel}
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
                         "frozen_checkpoint": (args.checkpoint or "shipped") if args.protocol == "frozen" else None, "score": "VAMP-2 of the first dim outputs on held-out "
                         "test trajectories (re-estimated on them), mean ± sample std over seeds",
                         "notes": notes}, "rows": rows, "targets": targets}


def markdown(result: dict) -> str:
    lines = [f"# vamp_quality ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={result['settings']['quick']})", ""]
    for system in dict.fromkeys(r["system"] for r in result["rows"]):
        cfg = result["settings"]["systems"][system]
        lines.append(markdown_table([r for r in result["rows"] if r["system"] == system],
                                    f"{system}: lag {cfg['lag_frames']} frames, dim {cfg['dim']}"))
    lines += [f"- {n}" for n in result["settings"]["notes"]]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--other-lag", type=int, default=10, help="lag (frames) for the WLALL / λ6-85 rows")
    parser.add_argument("--other-dt-ps", type=float, default=1.0)
    args = parser.parse_args()
    result = run(args.quick, args)
    save("vamp_quality", args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
