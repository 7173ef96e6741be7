"""Data efficiency of fine-tuning: test energy and force MAE vs number of training geometries, scratch vs pre-trained.

Data: the shipped malonaldehyde set (M06/6-31G*, xxMD layout, ``systems.malonaldehyde.dataset_path()``); training
subsets are random draws (per seed) from the train split, early stopping on the full val split, errors on the
test split. Backbone: the pre-trained checkpoint (``--pretrained``, default the shipped
``cvlearn/checkpoints/et_denoise_small.pt``) and the same architecture from random weights. Same head, loss
(energy weight 1, force weight 100), optimiser and stopping rule for both; mean ± std over seeds.

    python benchmarks/finetune.py [--quick] [--pretrained PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, now_utc, save, targets_table  # noqa: E402

from cvlearn.data.splits import random_split  # noqa: E402
from cvlearn.structures.xxmd import load_xxmd  # noqa: E402
from cvlearn.nn.featurizers.molecules import MoleculeBackbone  # noqa: E402
from cvlearn.estimators.finetuner import ForceFieldFinetuner, evaluate_potential  # noqa: E402

FULL = {"sizes": [25, 50, 100, None], "seeds": [0, 1, 2], "max_epochs": 300, "patience": 30}
QUICK = {"sizes": [10, 25], "seeds": [0, 1], "max_epochs": 4, "patience": 4}


def default_pretrained() -> str | None:
    try:
        from cvlearn.checkpoints import default_checkpoint

        return str(default_checkpoint())
    except (ImportError, FileNotFoundError):
        return None


def run(quick: bool, pretrained: str | None) -> dict:
    from systems.malonaldehyde import MOLECULE, dataset_path

    torch.set_num_threads(1)
    s = QUICK if quick else FULL
    root = dataset_path()
    train_all, val, test = (list(load_xxmd(root, MOLECULE, split)) for split in ("train", "val", "test"))
    if quick:
        val, test = val[:10], test[:10]
    if pretrained is None:
        raise FileNotFoundError("no pre-trained checkpoint: pass --pretrained PATH (the shipped "
                                "cvlearn/checkpoints/et_denoise_small.pt is missing)")
    architecture = MoleculeBackbone.from_checkpoint(pretrained).config
    rows = []
    for size in s["sizes"]:
        n = len(train_all) if size is None or size > len(train_all) else size
        for start in ("scratch", "pre-trained"):
            for seed in s["seeds"]:
                train = random_split(train_all, [1.0, 0.0], seed)[0][:n]
                backbone = ({"pretrained": pretrained} if start == "pre-trained"
                            else {"kind": "et", "config": architecture})
                t0 = time.perf_counter()
                est = ForceFieldFinetuner(**backbone, max_epochs=s["max_epochs"], patience=s["patience"], seed=seed,
                                          progress=False).fit(train, val)
                m = evaluate_potential(est.fetch_model(), test)
                row = {"n_train": n, "start": start, "seed": seed, "epochs": len(est.history),
                       "best_epoch": est.best_epoch, "seconds": time.perf_counter() - t0, **m}
                rows.append(row)
                print(f"n={n:4d} {start:11s} seed {seed}: force MAE {m['force_mae_mev_per_angstrom']:8.2f} meV/A, "
                      f"energy MAE {m['energy_mae_mev']:8.2f} meV ({row['epochs']} epochs, {row['seconds']:.0f} s)",
                      flush=True)
    summary = []
    for n in dict.fromkeys(r["n_train"] for r in rows):
        for start in ("scratch", "pre-trained"):
            sel = [r for r in rows if r["n_train"] == n and r["start"] == start]
            entry = {"n_train": n, "start": start, "n_seeds": len(sel)}
            for key in ("force_mae_mev_per_angstrom", "energy_mae_mev", "energy_mae_mev_per_atom"):
                values = np.array([r[key] for r in sel])
                entry[f"{key}_mean"] = float(values.mean())
                entry[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary.append(entry)

    def mean(n, start, key="force_mae_mev_per_angstrom_mean"):
        return next(e[key] for e in summary if e["n_train"] == n and e["start"] == start)

    sizes = sorted({e["n_train"] for e in summary})
    ratio = mean(sizes[0], "pre-trained") / mean(sizes[0], "scratch")
    targets = [
        {"name": f"force MAE pre-trained / scratch at n_train = {sizes[0]}", "value": ratio, "target": "< 1",
         "unit": "x", "met": bool(ratio < 1.0)},
        {"name": f"scratch force MAE at n_train = {sizes[-1]} / at {sizes[0]} (more data helps)",
         "value": mean(sizes[-1], "scratch") / mean(sizes[0], "scratch"), "target": "< 1", "unit": "x",
         "met": bool(mean(sizes[-1], "scratch") < mean(sizes[0], "scratch"))},
    ]
    return {"benchmark": "finetune", "date": now_utc(),
            "machine": {**machine(), "load_average_at_end": os.getloadavg()},
            "settings": {"quick": quick, "data": f"{root} ({MOLECULE}): {len(train_all)} train, {len(val)} val, "
                                                 f"{len(test)} test geometries",
                         "pretrained": pretrained, "architecture": architecture.as_dict(), "torch_threads": 1,
                         "loss": "energy weight 1 ((dE/n)^2, eV), force weight 100 (eV/A)^2, per-structure means",
                         **{k: v for k, v in s.items()}},
            "rows": rows, "summary": summary, "targets": targets}


def markdown(result: dict) -> str:
    st = result["settings"]
    lines = [f"# finetune ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={st['quick']})", "",
             f"Data: {st['data']}. Backbone: {st['pretrained']} vs the same architecture from scratch; "
             f"max {st['max_epochs']} epochs, patience {st['patience']}; mean ± std over seeds {st['seeds']}.", "",
             "| n_train | start | force MAE (meV/Å) | energy MAE (meV) | energy MAE (meV/atom) |",
             "|---|---|---|---|---|"]
    for e in result["summary"]:
        lines.append(f"| {e['n_train']} | {e['start']} | {e['force_mae_mev_per_angstrom_mean']:.1f} ± "
                     f"{e['force_mae_mev_per_angstrom_std']:.1f} | {e['energy_mae_mev_mean']:.1f} ± "
                     f"{e['energy_mae_mev_std']:.1f} | {e['energy_mae_mev_per_atom_mean']:.2f} ± "
                     f"{e['energy_mae_mev_per_atom_std']:.2f} |")
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pretrained", default=None, help="backbone checkpoint (default: the shipped one)")
    args = parser.parse_args()
    result = run(args.quick, args.pretrained or default_pretrained())
    save("finetune", args.quick, result, markdown(result))
