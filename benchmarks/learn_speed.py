"""How long does ``cvlearn learn`` take, and how good is its CV? Alanine dipeptide, the demo's training data.

Data: 4 trajectories x 1.5 ns of unbiased MD at 600 K (peptide bonds held trans), a frame every 1 ps, 10 heavy
atoms: :func:`openmm_plugin.stages.demo.simulate_training_data` with the demo's defaults, cached (and resumable)
under ``runs/learn_speed/data``. Then ``cvlearn learn`` with default settings (shipped pre-trained ET, frozen,
embedding store, sum mixer, lag 5 ps, 2 CVs) as a fresh command-line run (``--restart-fresh``; Python start-up and
embedding included), once with the default single seed and once with 3 seeds. Reported: wall time, phases, and
validation VAMP-2 of the learned CV beside VAMPNet on the heavy-atom distances and TICA on φ/ψ (same held-out
trajectory, same lag).

    python benchmarks/learn_speed.py [--quick]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, now_utc, quick_main, targets_table  # noqa: E402

TARGET_WALL_S = 120.0


def training_data(quick: bool) -> tuple[list[Path], Path, dict]:
    """The demo's training MD (or a 4 x 100 ps version for --quick), simulated once and reused."""
    import torch

    from openmm_plugin.stages.demo import DemoConfig, simulate_training_data
    from systems import alanine_dipeptide as ala2

    cfg = DemoConfig(train_ns_per_trajectory=0.1, frame_interval_ps=0.5) if quick else DemoConfig()
    folder = ROOT / "runs" / ("learn_speed_quick" if quick else "learn_speed") / "data"
    torch.set_num_threads(1)
    started = time.perf_counter()
    paths, top, _ = simulate_training_data(cfg, folder, ala2.build())
    settings = {"n_trajectories": cfg.n_train_trajectories, "ns_per_trajectory": cfg.train_ns_per_trajectory,
                "temperature_k": cfg.train_temperature_k, "frame_interval_ps": cfg.frame_interval_ps,
                "md_seconds_this_call": time.perf_counter() - started}
    return paths, top, settings


def learn(paths, top, out: Path, quick: bool, seeds=(0,)) -> tuple[float, dict]:
    """``cvlearn learn --restart-fresh`` in a fresh process: (wall seconds, metrics)."""
    config = {"out": str(out), "topology": str(top), "trajectories": [str(p) for p in paths], "seeds": list(seeds),
              "observables": {"phi": "phi 0", "psi": "psi 0"}}
    if quick:
        config["lagtime_ps"] = 1.0
    out.mkdir(parents=True, exist_ok=True)
    config_path = out.parent / f"{out.name}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "openmm_plugin.cli", "learn", "--config", str(config_path), "--restart-fresh"]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", "1")}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started, json.loads((out / "metrics.json").read_text())


def _row(name: str, wall: float, m: dict) -> dict:
    dist, tica = m["baselines"]["vampnet_distances"], m["baselines"]["tica_torsions"]
    return {"name": name, "wall_seconds": wall, "phases_seconds": m["seconds"], "seeds": [s["seed"] for s in m["seeds"]],
            "vamp2_val": m["vamp2_val"], "vamp2_val_deeptime": m["vamp2_val_deeptime"],
            "vamp2_val_mean": m["vamp2_val_mean"], "vamp2_val_std": m["vamp2_val_std"],
            "vamp2_val_distances": dist["vamp2_val"], "vamp2_val_distances_mean": dist["vamp2_val_mean"],
            "vamp2_val_distances_std": dist["vamp2_val_std"], "vamp2_val_tica_torsions": tica["vamp2_val"],
            "n_frames": m["n_frames"], "lag_frames": m["lag_frames"]}


def run(quick: bool) -> dict:
    paths, top, data = training_data(quick)
    base = ROOT / "runs" / ("learn_speed_quick" if quick else "learn_speed")
    rows = []
    for name, seeds in (("default settings (seed 0)", (0,)), ("3 seeds (0, 1, 2)", (0, 1, 2))):
        wall, metrics = learn(paths, top, base / f"learn_{len(seeds)}seed", quick, seeds)
        rows.append(_row(name, wall, metrics))
    default = rows[0]
    several = rows[1]
    targets = [
        {"name": "wall time of `cvlearn learn`, default settings, fresh process, embedding included",
         "value": default["wall_seconds"], "target": TARGET_WALL_S, "unit": "s",
         "met": default["wall_seconds"] <= TARGET_WALL_S},
        {"name": "validation VAMP-2: learned CV minus VAMPNet on distances (default, one seed)",
         "value": default["vamp2_val"] - default["vamp2_val_distances"], "target": ">= 0", "unit": "",
         "met": default["vamp2_val"] >= default["vamp2_val_distances"]},
        {"name": "validation VAMP-2: learned CV minus VAMPNet on distances (mean over 3 seeds each)",
         "value": several["vamp2_val_mean"] - several["vamp2_val_distances_mean"], "target": ">= 0", "unit": "",
         "met": several["vamp2_val_mean"] >= several["vamp2_val_distances_mean"]},
        {"name": "validation VAMP-2: learned CV minus TICA on φ/ψ (default, one seed)",
         "value": default["vamp2_val"] - default["vamp2_val_tica_torsions"], "target": ">= 0", "unit": "",
         "met": default["vamp2_val"] >= default["vamp2_val_tica_torsions"]},
    ]
    return {"benchmark": "learn_speed", "date": now_utc(), "machine": machine(),
            "settings": {"quick": quick, "data": data,
                         "system": "alanine dipeptide, amber99sbildn + OBC, 10 heavy atoms",
                         "learn": "LearnConfig defaults (shipped ET frozen, molecule context, sum mixer, "
                                  f"lag {'1 ps (--quick)' if quick else '5 ps'}, 2 CVs, 30 epochs, patience 8)",
                         "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
            "rows": rows, "targets": targets}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# learn_speed ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={s['quick']})", "",
             f"Data: {s['data']['n_trajectories']} x {s['data']['ns_per_trajectory']} ns of ala2 at "
             f"{s['data']['temperature_k']:.0f} K, a frame every {s['data']['frame_interval_ps']} ps. {s['learn']}.", "",
             "| run | wall s | embed s | train s | baselines s | VAMP-2 learned (best / mean ± std) | "
             "VAMPNet distances (best / mean ± std) | TICA φ/ψ |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        p = r["phases_seconds"]
        lines.append(f"| {r['name']} | {r['wall_seconds']:.1f} | {p['embed']:.1f} | {p['train']:.1f} | "
                     f"{p['baselines']:.1f} | {r['vamp2_val']:.4f} / {r['vamp2_val_mean']:.4f} ± {r['vamp2_val_std']:.4f} | "
                     f"{r['vamp2_val_distances']:.4f} / {r['vamp2_val_distances_mean']:.4f} ± "
                     f"{r['vamp2_val_distances_std']:.4f} | {r['vamp2_val_tica_torsions']:.4f} |")
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    quick_main("learn_speed", __doc__, run, markdown)
