"""Denoising pre-training: throughput (structures/s), the loss curve, and what the pre-trained weights buy downstream.

1. Pre-training throughput and loss curve: the ``cvlearn pretrain`` stage (quick: a corpus of 2 capped amino acids
   x 2 temperatures x 5 ps built here, a tiny ET; full: the shipped recipe's corpus in ``runs/pretrain/corpus``,
   built when absent, and its ET for 3 epochs). A pre-training run found in ``--work`` is resumed, not redone.
2. Downstream: alanine-dipeptide VAMPNet, test VAMP-2 mean ± std over seeds, with the featurizer's weights from
   three starts. Default ``--protocol frozen``: the featurizer embeds every frame once and a sum-pool + MLP head
   learns on the tokens, so the score is what the representation itself carries (the way geom2vec uses its
   checkpoints); ``end-to-end`` trains GNN + sum through the featurizer as ``benchmarks/vamp_quality.py`` (the
   6-layer geom2vec arm alone then costs ~3 CPU-hours at full data). The three starts: random, the shipped checkpoint
   (``cvlearn.checkpoints.default_checkpoint()``, ``ETConfig()`` architecture) and geom2vec's public ET
   (6 layers, 7.5 Å; read from ``--geom2vec-dir``, a benchmark-only input, skipped with a note when absent).

    python benchmarks/pretrain.py [--quick] [--geom2vec-dir ../shared/data/geom2vec-checkpoints]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, now_utc, save, targets_table  # noqa: E402
from benchmarks.vamp_quality import ala2_settings, compare_data_from_trajectories, simulate_ala2  # noqa: E402

from cvlearn.nn.featurizers import GEOM2VEC_ET, ETConfig, load_featurizer_weights  # noqa: E402

QUICK_ARCH = {"hidden_channels": 32, "num_layers": 1, "num_rbf": 16, "num_heads": 4}


def pretraining_rows(quick: bool, work: Path) -> tuple[dict, dict]:
    from openmm_plugin.stages.pretrain import PretrainConfig, run_pretrain
    from openmm_plugin.stages.corpus import CorpusSpec, tiny_spec

    if quick:
        config = PretrainConfig(out=str(work / "pretrain"), corpus=str(work / "corpus"), corpus_spec=tiny_spec(),
                                validation_every=2, architecture=QUICK_ARCH, max_epochs=12, learning_rate=3e-3,
                                max_atoms=100)
    else:
        # the shipped recipe's corpus (reused when `cvlearn pretrain --make-corpus` built it already), 3 epochs
        config = PretrainConfig(out=str(work / "pretrain"), corpus=PretrainConfig().corpus, corpus_spec=CorpusSpec(),
                                max_epochs=3)
    t0 = time.perf_counter()
    summary = run_pretrain(config, make_corpus=True, progress=False)
    hist = summary["history"]
    row = {"kind": config.kind, "architecture": config.architecture or ETConfig().as_dict(),
           "n_train": summary["n_train"], "n_val": summary["n_val"],
           "structures_per_s": float(np.mean([r["structures_per_s"] for r in hist])),
           "seconds_per_epoch": float(np.mean([r["seconds"] for r in hist])),
           "train_loss": [r["train_loss"] for r in hist], "val_loss": [r["val_loss"] for r in hist],
           "corpus_cpu_seconds": summary["data"].get("corpus_cpu_seconds"), "wall_seconds": time.perf_counter() - t0,
           "loss_curve_png": str(Path(config.out) / "loss_curve.png")}
    return row, {"noise_sigma_angstrom": config.noise_sigma_angstrom, "max_atoms": config.max_atoms,
                 "epochs": config.max_epochs, "learning_rate": config.learning_rate}


def downstream_rows(quick: bool, work: Path, geom2vec_dir: Path | None,
                    protocol: str = "frozen") -> tuple[list[dict], list[str], dict]:
    """Ala2 test VAMP-2 per featurizer start. ``frozen``: the featurizer embeds every frame once and a sum-pool +
    MLP head is trained on the tokens (what the representation alone carries, as geom2vec uses its checkpoints);
    ``end-to-end``: GNN + sum trained through the featurizer (about 5 CPU-hours at full data here)."""
    from cvlearn.estimators.baselines import build_lobe
    from cvlearn.checkpoints import default_checkpoint
    from cvlearn.models.cv import TokenCV, embed_frames, fit_head_scaler
    from cvlearn.nn.featurizers import ETFeaturizer
    from cvlearn.nn.heads import MLPHead
    from cvlearn.nn.mixers import SumPool
    from cvlearn.estimators.multiseed import fit_seeds
    from cvlearn.nn.tokens import ResidueTokens

    s = ala2_settings(quick)
    paths, top = simulate_ala2(work / "ala2", s)
    data, _ = compare_data_from_trajectories(paths, top, s["split"], s["lag_frames"], s["dim"], s["frame_ps"],
                                             "not element H")
    train, val, test = (data.get(p, "positions") for p in ("train", "validation", "test"))
    generator = torch.Generator().manual_seed(0)
    pick = torch.randperm(sum(len(t) for t in train), generator=generator)[:4096]
    arms = [("random_init", ETConfig(), None), ("shipped_denoise_et", ETConfig(), default_checkpoint())]
    notes = []
    g2v = None if geom2vec_dir is None else geom2vec_dir / "et_l6_h64_rbf64_r75.pth"
    if g2v is not None and g2v.is_file():
        arms.append(("geom2vec_et", GEOM2VEC_ET, g2v))
    else:
        notes.append(f"geom2vec_et: skipped ({g2v} not found)")
    rows = []
    for name, cfg, ckpt in arms:
        started = time.perf_counter()
        if protocol == "frozen":
            featurizer = ETFeaturizer(data.atomic_numbers, cfg, seed=0)  # random init: one fixed draw
            if ckpt is not None:
                load_featurizer_weights(featurizer, ckpt)
            tokens = ResidueTokens(data.residue_of_atom)
            inputs = [embed_frames(featurizer, tokens, part) for part in (train, val, test)]
            embed_seconds = time.perf_counter() - started

            def make_lobe(seed, width=cfg.hidden_channels):
                return TokenCV(SumPool(), MLPHead(width, data.dim, hidden=64))
        else:
            inputs, embed_seconds = [train, val, test], 0.0

            def make_lobe(seed, cfg=cfg, ckpt=ckpt):
                lobe = build_lobe("gnn_sum", data, featurizer_config=cfg, head_hidden=64, seed=seed)
                if ckpt is not None:
                    load_featurizer_weights(lobe.featurizer, ckpt)
                return lobe
        sample = torch.cat(inputs[0])[pick]
        result = fit_seeds(make_lobe, inputs[0], inputs[1], s["seeds"], test=inputs[2], dim=data.dim,
                           prepare=lambda lobe: fit_head_scaler(lobe, sample), lagtime=data.lagtime, learning_rate=2e-3,
                           batch_size=512, max_epochs=s["max_epochs"], patience=s["patience"], progress=False)
        rows.append({"name": name, "featurizer": cfg.as_dict(), "checkpoint": None if ckpt is None else str(ckpt),
                     "protocol": protocol, "vamp2_mean": result.mean, "vamp2_std": result.std,
                     "values": result.values, "val_vamp2": result.validation, "embed_seconds": embed_seconds,
                     "seconds_per_seed": float(np.mean(result.seconds))})
        print(f"{name:20s} test VAMP-2 {result.mean:.4f} ± {result.std:.4f} ({protocol})", flush=True)
    return rows, notes, s


def shipped_curve() -> dict:
    """The shipped checkpoint's own pre-training record (its metadata), plotted next to the results."""
    from cvlearn.checkpoints import default_checkpoint
    from openmm_plugin.stages.pretrain import _plot

    meta = torch.load(default_checkpoint(), map_location="cpu", weights_only=True)["metadata"]
    pre = meta["pretraining"]
    history = [{"epoch": i, "train_loss": a, "val_loss": b} for i, (a, b) in enumerate(zip(pre["train_loss"],
                                                                                            pre["val_loss"]))]
    png = RESULTS / "pretrain_shipped_loss_curve.png"
    _plot(history, png, f"shipped checkpoint: ET denoising, σ = {pre['noise_sigma_angstrom']:g} Å, "
                        f"{pre['n_train']} structures")
    return {"corpus": meta["corpus"], "epochs": pre["epochs"], "noise_sigma_angstrom": pre["noise_sigma_angstrom"],
            "n_train": pre["n_train"], "n_val": pre["n_val"], "training_seconds": meta["training_seconds"],
            "train_loss": pre["train_loss"], "val_loss": pre["val_loss"], "png": png.name}


def run(quick: bool, args) -> dict:
    torch.set_num_threads(1)
    work = Path(args.work) if args.work else Path("runs") / ("pretrain_bench_quick" if quick else "pretrain_bench")
    pre, pre_settings = pretraining_rows(quick, work)
    rows, notes, s = downstream_rows(quick, work, Path(args.geom2vec_dir) if args.geom2vec_dir else None,
                                     args.protocol)
    by = {r["name"]: r for r in rows}
    targets = [{"name": "pre-training validation loss falls below predicting zero (1.0)",
                "value": pre["val_loss"][-1], "target": "< 1.0", "unit": "σ²", "met": bool(pre["val_loss"][-1] < 1.0)},
               {"name": "ala2 test VAMP-2: shipped checkpoint minus random init",
                "value": by["shipped_denoise_et"]["vamp2_mean"] - by["random_init"]["vamp2_mean"], "target": ">= 0",
                "unit": "ΔVAMP-2",
                "met": bool(by["shipped_denoise_et"]["vamp2_mean"] >= by["random_init"]["vamp2_mean"])}]
    return {"benchmark": "pretrain", "date": now_utc(), "machine": machine(),
            "settings": {"quick": quick, "pretraining": pre_settings, "torch_threads": 1,
                         "downstream": {**s, "protocol": args.protocol,
                                        "model": ("sum pool + MLP head on tokens of the frozen featurizer"
                                                  if args.protocol == "frozen"
                                                  else "gnn_sum VAMPNet, featurizer trained end to end"),
                                        "score": "test VAMP-2 (held-out trajectories), mean ± sample std over seeds"},
                         "notes": notes},
            "pretraining": pre, "shipped_checkpoint": shipped_curve(), "rows": rows, "targets": targets}


def markdown(result: dict) -> str:
    p = result["pretraining"]
    lines = [f"# pretrain ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={result['settings']['quick']})",
             "", f"Pre-training ({p['kind']}, {p['n_train']} train / {p['n_val']} validation structures): "
             f"{p['structures_per_s']:.1f} structures/s, {p['seconds_per_epoch']:.2f} s/epoch on 1 thread.", "",
             "| epoch | train loss | validation loss |", "|---|---|---|",
             *[f"| {i + 1} | {a:.4f} | {b:.4f} |" for i, (a, b) in enumerate(zip(p["train_loss"], p["val_loss"]))],
             "", f"Shipped checkpoint ({result['shipped_checkpoint']['n_train']} structures, "
             f"{result['shipped_checkpoint']['epochs']} epochs, {result['shipped_checkpoint']['training_seconds']:.0f} s; "
             f"curve: {result['shipped_checkpoint']['png']}): validation loss "
             + " → ".join(f"{v:.3f}" for v in result["shipped_checkpoint"]["val_loss"][::5]
                          + result["shipped_checkpoint"]["val_loss"][-1:]) + " (every 5th epoch, then the last).",
             "", f"Downstream ({result['settings']['downstream']['protocol']}): "
             f"{result['settings']['downstream']['model']}.", "",
             "| ala2 featurizer init | test VAMP-2 (mean ± std) | seeds | s/seed |", "|---|---|---|---|",
             *[f"| {r['name']} | {r['vamp2_mean']:.4f} ± {r['vamp2_std']:.4f} | {len(r['values'])} | "
               f"{r['seconds_per_seed']:.1f} |" for r in result["rows"]]]
    lines += [f"- {n}" for n in result["settings"]["notes"]]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", default=None, help="where corpus, trajectories and runs go (reused when present)")
    parser.add_argument("--geom2vec-dir", default="../shared/data/geom2vec-checkpoints",
                        help="folder with geom2vec's et_l6_h64_rbf64_r75.pth (benchmark-only input)")
    parser.add_argument("--protocol", choices=("frozen", "end-to-end"), default="frozen",
                        help="downstream: heads on the frozen featurizer's tokens (default) or end-to-end training")
    args = parser.parse_args()
    result = run(args.quick, args)
    save("pretrain", args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
