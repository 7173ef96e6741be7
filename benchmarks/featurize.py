"""Embedding throughput: batched featurization vs the per-frame loop (geom2vec's inference pattern), in one run.

Model: the geom2vec ViSNet architecture (6 layers, 64 wide, 64 RBF, 7.5 Å), untrained: cost does not depend on
the weights. Structures: the built (ala2: minimised; WLALL, λ6-85: unminimised) structures perturbed by 0.01 nm
Gaussian noise per frame, not MD. Heavy atoms only. Rows: frames/s and peak extra RSS (sampled every 2 ms) per
system and batch size; the per-frame loop calls the same module one frame at a time. Windowed λ6-85 is also
timed on N-terminal fragments of 20/40/80 residues to check that time per frame grows linearly with residues.

    python benchmarks/featurize.py [--quick]
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, now_utc, quick_main, targets_table  # noqa: E402

from cvlearn.featurizers import GEOM2VEC_VISNET, make_featurizer  # noqa: E402
from cvlearn.selection import atomic_numbers, select_atoms  # noqa: E402
from cvlearn.windows import make_token_embedder  # noqa: E402

HALF_WIDTH = 2


class PeakRSS:
    """Peak resident memory above the level at entry, sampled in a thread (torch CPU allocations are not traced)."""

    def __enter__(self):
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.mib = (self.peak - self.base) / 2**20


def frames_of(positions_nm: np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(positions_nm[None] + 0.01 * rng.normal(size=(n, *positions_nm.shape)), dtype=torch.float32)


@torch.no_grad()
def timed(module, pos: torch.Tensor, batch: int | None) -> dict:
    """frames/s over ``pos``; ``batch=None`` is the per-frame loop (one ``[1, n, 3]`` call per frame)."""
    module(pos[:1])  # warm-up
    with PeakRSS() as mem:
        start = time.perf_counter()
        if batch is None:
            for i in range(pos.shape[0]):
                module(pos[i:i + 1])
        else:
            for s in range(0, pos.shape[0], batch):
                module(pos[s:s + batch])
        seconds = time.perf_counter() - start
    return {"frames": int(pos.shape[0]), "seconds": seconds, "frames_per_s": pos.shape[0] / seconds,
            "ms_per_frame": seconds / pos.shape[0] * 1e3, "peak_extra_rss_mib": mem.mib}


def embedders(quick: bool):
    from systems import alanine_dipeptide, lambda6_85, pentapeptide_wlall

    out = []
    for label, molecule in (("ala2", alanine_dipeptide.build()), ("WLALL", pentapeptide_wlall.build(minimize=False)),
                            ("lambda6-85", lambda6_85.build(minimize=False))):
        heavy = select_atoms(molecule.topology)
        featurizer = make_featurizer("visnet", atomic_numbers(molecule.topology, heavy), GEOM2VEC_VISNET, seed=0).eval()
        contexts = ["molecule", "window"] if label == "lambda6-85" else ["molecule"]
        for context in contexts:
            module = make_token_embedder(featurizer, molecule.topology, heavy, context=context, half_width=HALF_WIDTH)
            out.append((f"{label} ({context})", len(heavy), module.n_tokens, module, molecule.positions_nm[heavy]))
    return out, molecule


def run(quick: bool) -> dict:
    torch.set_num_threads(1)
    batch_sizes = [1, 4, 16, 64] if quick else [1, 4, 16, 64, 256]
    rows = []
    systems, lam = embedders(quick)
    for name, n_atoms, n_tokens, module, positions in systems:
        big = n_atoms > 200
        per_size = {"molecule": 4 if quick else 16, "window": 8 if quick else 32}
        max_batch = per_size["window" if "window" in name else "molecule"] if big else max(batch_sizes)
        n_frames = (max_batch * 2 if big else (128 if quick else 512))
        pos = frames_of(positions, n_frames)
        loop = timed(module, pos[: max(8, n_frames // 4)] if big else pos, None)
        rows.append({"system": name, "atoms": n_atoms, "tokens": n_tokens, "mode": "per-frame loop", "batch": 1, **loop})
        print(f"{name:24s} loop        {loop['frames_per_s']:9.1f} frames/s  {loop['peak_extra_rss_mib']:7.1f} MiB", flush=True)
        for b in batch_sizes:
            if b > max_batch:
                continue
            r = timed(module, pos, b)
            rows.append({"system": name, "atoms": n_atoms, "tokens": n_tokens, "mode": "batched", "batch": b, **r})
            print(f"{name:24s} batch {b:4d}  {r['frames_per_s']:9.1f} frames/s  {r['peak_extra_rss_mib']:7.1f} MiB", flush=True)

    # Windowed λ6-85 on N-terminal fragments: time per frame vs number of residues.
    from cvlearn.tokens import residue_index_of_atoms  # noqa: F401  (documents where tokens come from)

    scaling = []
    heavy_all = select_atoms(lam.topology)
    for n_res in (20, 40, 80):
        heavy = select_atoms(lam.topology, f"not element H and resid 0 to {n_res}")  # ACE + n_res residues
        featurizer = make_featurizer("visnet", atomic_numbers(lam.topology, heavy), GEOM2VEC_VISNET, seed=0).eval()
        module = make_token_embedder(featurizer, lam.topology, heavy, context="window", half_width=HALF_WIDTH)
        pos = frames_of(lam.positions_nm[heavy], 8 if quick else 32)
        r = timed(module, pos, 8 if quick else 16)
        scaling.append({"residues": n_res, "tokens": module.n_tokens, "atoms": len(heavy), **r})
        print(f"window scaling {n_res:3d} residues  {r['ms_per_frame']:8.1f} ms/frame", flush=True)
    del heavy_all

    targets = []
    for name in dict.fromkeys(r["system"] for r in rows):
        loop = next(r for r in rows if r["system"] == name and r["mode"] == "per-frame loop")
        best = max((r for r in rows if r["system"] == name and r["mode"] == "batched"), key=lambda r: r["frames_per_s"])
        speedup = best["frames_per_s"] / loop["frames_per_s"]
        targets.append({"name": f"{name}: best batched (batch {best['batch']}) over per-frame loop", "value": speedup,
                        "target": 2.0, "unit": "x", "met": speedup >= 2.0})
    res = np.array([s["residues"] for s in scaling], dtype=float)
    ms = np.array([s["ms_per_frame"] for s in scaling])
    per_res = ms / res
    ratio = per_res[-1] / per_res[0]
    targets.append({"name": "windowed lambda6-85: (ms/frame/residue at 80) / (at 20); linear = 1", "value": ratio,
                    "target": "0.75-1.33", "unit": "x", "met": bool(0.75 <= ratio <= 1.33)})
    return {
        "benchmark": "featurize",
        "date": now_utc(),
        "machine": {**machine(), "load_average_at_end": os.getloadavg()},
        "settings": {"quick": quick, "model": f"ViSNet {GEOM2VEC_VISNET.as_dict()} (untrained)", "torch_threads": 1,
                     "atoms": "heavy atoms", "window_half_width_residues": HALF_WIDTH,
                     "structures": "built structures + 0.01 nm Gaussian noise per frame (not MD)",
                     "note": "lambda6-85 batch sizes capped (memory: ~40k edges/frame at 7.5 A for the whole graph)"},
        "rows": rows,
        "window_scaling": scaling,
        "targets": targets,
    }


def markdown(result: dict) -> str:
    lines = [f"# featurize ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={result['settings']['quick']})",
             "", f"Model: {result['settings']['model']}; {result['settings']['structures']}; 1 torch thread.", "",
             "| system | atoms | tokens | mode | batch | frames/s | ms/frame | peak extra RSS (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['atoms']} | {r['tokens']} | {r['mode']} | {r['batch']} | {r['frames_per_s']:.1f} | "
              f"{r['ms_per_frame']:.2f} | {r['peak_extra_rss_mib']:.0f} |" for r in result["rows"]]
    lines += ["", "| windowed lambda6-85 fragment (residues) | tokens | atoms | ms/frame | ms/frame/residue |",
              "|---|---|---|---|---|"]
    lines += [f"| {s['residues']} | {s['tokens']} | {s['atoms']} | {s['ms_per_frame']:.1f} | "
              f"{s['ms_per_frame'] / s['residues']:.2f} |" for s in result["window_scaling"]]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    quick_main("featurize", __doc__, run, markdown)
