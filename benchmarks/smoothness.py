"""Does the Dirichlet-form penalty make a learned CV smoother, and what does it cost in VAMP-2? Alanine dipeptide.

Data: the learn_speed benchmark's cached MD (4 x 1.5 ns at 600 K, a frame every 1 ps, ``runs/learn_speed/data``;
simulated there by ``benchmarks/learn_speed.py`` if missing), 10 heavy atoms; trajectories 0-2 train, 3 validates.
Model: an end-to-end GraphCV (small untrained ET, 2 layers x 32 channels, residue tokens, sum pool, MLP head;
2 CVs), the same seed for every λ, trained on every 2nd frame with :class:`cvlearn.estimators.VAMPNet` at lag ~5 ps
for a few epochs with ``smoothness`` = λ ∈ {0, 0.001, 0.01, 0.1} nm² (``smoothness_frames`` = 32). Reported per λ:
best validation VAMP-2 (2 CVs), the whitened Dirichlet form tr(C⁻¹G) of the exported CVs on the validation frames
(nm⁻²), and |∇ₓ s_1| along the validation frames per unit of CV range (range: 1st to 99th percentile of s_1 there):
median, 99th percentile, max. Second table: λ ∈ {0, 1e-4, 1e-3, 0.01, 0.1} through ``cvlearn learn`` with its defaults (shipped pre-trained ET, frozen protocol: the
penalty reaches positions through the frozen embedder), gradients of the exported ``cv.pt`` on its validation split.

    python benchmarks/smoothness.py [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, now_utc, quick_main, targets_table  # noqa: E402

LAMBDAS = (0.0, 0.001, 0.01, 0.1)
FROZEN_LAMBDAS = (0.0, 1e-4, 1e-3, 1e-2, 0.1)  # the frozen head gives in at smaller λ


def _data(quick: bool):
    import torch

    from cvlearn.data.trajectories import load_trajectories
    from systems import alanine_dipeptide as ala2

    folder = ROOT / "runs" / "learn_speed" / "data" / "train"
    paths = sorted(folder.glob("traj*.dcd"))
    if len(paths) < 4:
        from benchmarks.learn_speed import training_data

        paths, _, _ = training_data(False)
    system = ala2.build()
    heavy = ala2.heavy_atom_indices(system.topology)
    stride = 4 if quick else 2  # 2 ps frames: the end-to-end ET trains on every other frame (CPU time)
    trajs = load_trajectories([str(p) for p in paths[:4]], str(paths[0].with_suffix(".pdb")), selection=heavy,
                              stride=stride)
    positions = [torch.tensor(t.xyz, dtype=torch.float32) for t in trajs]
    return system, heavy, positions, stride


def _lobe(system, heavy, seed: int):
    import torch

    from cvlearn.data.selection import atomic_numbers, residue_index_of_atoms
    from cvlearn.models.cv import GraphCV
    from cvlearn.nn.featurizers import ETConfig, ETFeaturizer
    from cvlearn.nn.heads import MLPHead
    from cvlearn.nn.mixers import SumPool
    from cvlearn.nn.tokens import ResidueTokens

    torch.manual_seed(seed)
    z = atomic_numbers(system.topology, heavy)
    config = ETConfig(hidden_channels=32, num_layers=2, num_rbf=16, num_heads=4, cutoff_angstrom=5.0)
    return GraphCV(ETFeaturizer(z, config, seed=seed), ResidueTokens(residue_index_of_atoms(system.topology, heavy)),
                   SumPool(), MLPHead(32, 2, hidden=32))


def _grad_stats(cv_range: float, grads) -> dict:
    g = np.asarray(grads, dtype=np.float64) / cv_range
    return {"median": float(np.median(g)), "p99": float(np.percentile(g, 99)), "max": float(g.max())}


def run_frozen(quick: bool) -> list[dict]:
    """λ through ``run_learn`` (defaults, shipped ET frozen); gradients of the exported CV on validation frames."""
    import json

    import torch

    from cvlearn.data.splits import split_by_trajectory, take_segments
    from cvlearn.data.trajectories import load_trajectories
    from cvlearn.export import load_cv
    from openmm_plugin.stages.learn import LearnConfig, run_learn

    folder = ROOT / "runs" / "learn_speed" / "data" / "train"
    paths = sorted(folder.glob("traj*.dcd"))[:4]
    top = str(paths[0].with_suffix(".pdb"))
    stride = 4 if quick else 1
    full = [torch.tensor(t.xyz, dtype=torch.float64) for t in load_trajectories([str(p) for p in paths], top,
                                                                                  stride=stride)]
    _, val_segments = split_by_trajectory([len(x) for x in full], 0.25, seed=0)  # the learn stage's split
    val = torch.cat(take_segments(full, val_segments))
    rows = []
    for lam in FROZEN_LAMBDAS:
        out = ROOT / "runs" / ("smoothness_quick" if quick else "smoothness") / f"frozen_lambda{lam:g}"
        config = LearnConfig(out=str(out), topology=top, trajectories=tuple(str(p) for p in paths), stride=stride,
                             baselines=(), smoothness=lam, max_epochs=3 if quick else 30,
                             lagtime_ps=4.0 if quick else 5.0)
        started = time.perf_counter()
        run_learn(config, restart_fresh=True, progress=False)
        seconds = time.perf_counter() - started
        metrics = json.loads((out / "metrics.json").read_text())
        module, _ = load_cv(out / "cv.pt")
        module = module.double()
        s1, grads = [], []
        for frame in val:
            x = frame.clone().requires_grad_(True)
            value = module(x)[0]
            grads.append(float(torch.autograd.grad(value, x)[0].norm()))
            s1.append(float(value.detach()))
        cv_range = float(np.percentile(s1, 99) - np.percentile(s1, 1))
        rows.append({"smoothness_nm2": lam, "wall_seconds": seconds, "vamp2_val": metrics["vamp2_val"],
                     "train_seconds": metrics["seconds"].get("train"), "cv1_range": cv_range,
                     "grad_cv1_per_range_nm-1": _grad_stats(cv_range, grads)})
        print(rows[-1], flush=True)
    return rows


def run(quick: bool) -> dict:
    import torch

    from cvlearn.estimators import VAMPNet
    from cvlearn.estimators.multiseed import heldout_vamp2
    from cvlearn.estimators.smoothness import dirichlet_penalty, gradient_norms
    from cvlearn.models.cv import fit_head_scaler

    torch.set_num_threads(1)
    system, heavy, positions, stride = _data(quick)
    train, val = positions[:3], positions[3:]
    lag = max(1, round(5 / stride))
    settings = {"quick": quick, "frame_interval_ps": 1.0 * stride, "lag_frames": lag, "lagtime_ps": lag * stride,
                "n_train_frames": sum(len(p) for p in train), "n_val_frames": len(val[0]), "seed": 0,
                "max_epochs": 2 if quick else 8, "batch_size": 256, "learning_rate": 5e-3, "smoothness_frames": 32,
                "lobe": "GraphCV: untrained ET (2 layers, 32 channels, 5 Å), residue tokens, sum pool, MLP head, 2 CVs",
                "protocol": "end_to_end", "lambdas_nm2": list(LAMBDAS)}
    rows = []
    for lam in LAMBDAS:
        lobe = _lobe(system, heavy, seed=0)
        frames = torch.cat(train)
        fit_head_scaler(lobe, frames[torch.randperm(len(frames), generator=torch.Generator().manual_seed(0))[:4096]])
        started = time.perf_counter()
        est = VAMPNet(lobe, lagtime=lag, batch_size=settings["batch_size"], learning_rate=settings["learning_rate"],
                      max_epochs=settings["max_epochs"], patience=settings["max_epochs"], seed=0, progress=False,
                      smoothness=lam, smoothness_frames=settings["smoothness_frames"]).fit(train, val)
        seconds = time.perf_counter() - started
        model = est.fetch_model()
        v = val[0]
        with torch.no_grad():
            s1 = model(v)[:, 0].double().numpy()
        cv_range = float(np.percentile(s1, 99) - np.percentile(s1, 1))
        g1 = gradient_norms(model, v)[:, 0].double().numpy()
        rows.append({"smoothness_nm2": lam, "train_seconds": seconds, "epochs": len(est.history),
                     "best_epoch": est.best_epoch, "vamp2_val": est.best_val_vamp2,
                     "vamp2_val_heldout_model": heldout_vamp2(model, val, lag),
                     "dirichlet_val_nm-2": float(dirichlet_penalty(model, v, create_graph=False).detach()),
                     "cv1_range": cv_range, "grad_cv1_per_range_nm-1": _grad_stats(cv_range, g1)})
        print(rows[-1], flush=True)
    base, best = rows[0], min(rows[1:], key=lambda r: r["grad_cv1_per_range_nm-1"]["p99"])
    ratio = best["grad_cv1_per_range_nm-1"]["p99"] / base["grad_cv1_per_range_nm-1"]["p99"]
    loss = base["vamp2_val"] - best["vamp2_val"]
    targets = [
        {"name": "informational: p99 of grad s_1 per range, best λ>0 over λ=0", "value": ratio, "target": "< 1",
         "unit": "", "met": bool(ratio < 1)},
        {"name": "informational: validation VAMP-2 lost at that λ", "value": loss, "target": "< 0.05",
         "unit": "", "met": bool(loss < 0.05)},
    ]
    frozen = run_frozen(quick)
    base_f, best_f = frozen[0], min(frozen[1:], key=lambda r: r["grad_cv1_per_range_nm-1"]["p99"])
    ratio_f = best_f["grad_cv1_per_range_nm-1"]["p99"] / base_f["grad_cv1_per_range_nm-1"]["p99"]
    loss_f = base_f["vamp2_val"] - best_f["vamp2_val"]
    targets += [
        {"name": "informational, cvlearn learn frozen: p99 of grad s_1 per range, best λ>0 over λ=0", "value": ratio_f,
         "target": "< 1", "unit": "", "met": bool(ratio_f < 1)},
        {"name": "informational, cvlearn learn frozen: validation VAMP-2 lost at that λ", "value": loss_f,
         "target": "< 0.05", "unit": "", "met": bool(loss_f < 0.05)},
    ]
    return {"benchmark": "smoothness", "date": now_utc(), "machine": machine(), "settings": settings, "rows": rows,
            "rows_learn_frozen": frozen, "targets": targets}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Smoothness penalty (Dirichlet form){' (quick)' if s['quick'] else ''}", "",
             f"{result['date']}, {result['machine']['processor']} ({result['machine']['cpu_count']} CPUs), torch "
             f"{result['machine']['torch']}, 1 thread. Ala2 heavy atoms, {s['n_train_frames']} train / "
             f"{s['n_val_frames']} validation frames every {s['frame_interval_ps']} ps, lag {s['lagtime_ps']} ps; "
             f"{s['lobe']}; {s['protocol']}, seed {s['seed']}, {s['max_epochs']} epochs, batch {s['batch_size']}, "
             f"lr {s['learning_rate']}, {s['smoothness_frames']} penalty frames per step. One seed: differences "
             "between rows are partly seed noise.", "",
             "| λ (nm²) | val VAMP-2 | tr(C⁻¹G) val (nm⁻²) | median \\|∇s₁\\|/range (nm⁻¹) | p99 | max | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        g = r["grad_cv1_per_range_nm-1"]
        lines.append(f"| {r['smoothness_nm2']} | {r['vamp2_val']:.4f} | {r['dirichlet_val_nm-2']:.1f} | "
                     f"{g['median']:.2f} | {g['p99']:.2f} | {g['max']:.2f} | {r['train_seconds']:.0f} |")
    lines += ["", "`cvlearn learn` defaults (shipped pre-trained ET, frozen protocol, 2 CVs, lag 5 ps, up to 30 epochs), "
              "λ via `smoothness`; gradients of the exported cv.pt (float64) on the validation split:", "",
              "| λ (nm²) | val VAMP-2 | median \\|∇s₁\\|/range (nm⁻¹) | p99 | max | learn wall s |", "|---|---|---|---|---|---|"]
    for r in result.get("rows_learn_frozen", []):
        g = r["grad_cv1_per_range_nm-1"]
        lines.append(f"| {r['smoothness_nm2']} | {r['vamp2_val']:.4f} | {g['median']:.2f} | {g['p99']:.2f} | "
                     f"{g['max']:.2f} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines + targets_table(result["targets"])) + "\n"


if __name__ == "__main__":
    quick_main("smoothness", __doc__, run, markdown)
