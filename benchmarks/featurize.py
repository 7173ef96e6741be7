"""Embedding throughput: cvlearn's batched featurization vs the per-frame loop (geom2vec's inference pattern), in one run.

Model: the geom2vec ViSNet architecture (6 layers, 64 wide, 64 RBF, 7.5 Å), untrained: cost does not depend on
the weights. Structures: the built (ala2: minimised; WLALL, λ6-85: unminimised) structures perturbed by 0.01 nm
Gaussian noise per frame, not MD. Heavy atoms only; 1 torch thread for every arm.

Arms, same weights and same edges (every heavy-atom pair within the cutoff):
- reference per-frame loop: PyG's ``ViSNetBlock`` (the implementation geom2vec's ViSNet checkpoints come from)
  called one frame at a time (for windows: one GNN call per frame holding all of that frame's windows);
- cvlearn per-frame loop: cvlearn's token embedder called one frame at a time;
- cvlearn batched, eager and ``torch.compile``d (``embed_trajectories(compile=True)``), batch sizes 1…256.
Rows: frames/s and peak extra heap in use (malloc, sampled every 2 ms). Windowed λ6-85 is also timed on N-terminal fragments
of 20/40/80 residues to check that time per frame grows linearly with residues.

    python benchmarks/featurize.py [--quick]
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, now_utc, quick_main, targets_table  # noqa: E402

from torch_geometric.nn.models.visnet import ViSNetBlock  # noqa: E402

from cvlearn.nn.featurizers import GEOM2VEC_VISNET, make_featurizer  # noqa: E402
from cvlearn.nn.featurizers.base import FeaturizerBase  # noqa: E402
from cvlearn.nn.featurizers.neighbors import FixedTopologyNeighbors  # noqa: E402
from cvlearn.data.store import inference_forward  # noqa: E402
from cvlearn.data.selection import atomic_numbers, select_atoms  # noqa: E402
from cvlearn.nn.windows import make_token_embedder  # noqa: E402

HALF_WIDTH = 2


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    """Bytes handed out by malloc now (arenas + mmapped blocks): torch's CPU tensors live there. Unlike RSS it
    falls when tensors are freed, so each row's peak is its own, not the process's high-water mark."""
    info = _libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


class PeakHeap:
    """Peak heap in use above the level at entry, sampled every 2 ms in a thread."""

    def __enter__(self):
        self.base = self.peak = heap_in_use()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, heap_in_use())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.mib = (max(self.peak, heap_in_use()) - self.base) / 2**20


class _AllPairsWithinCutoff(torch.nn.Module):
    """PyG ``Distance`` replacement without torch-cluster: the same edges cvlearn's featurizer uses."""

    def __init__(self, n_atoms: int, cutoff: float):
        super().__init__()
        self.inner = FixedTopologyNeighbors(n_atoms, 0.0, cutoff)

    def forward(self, pos, batch):
        return self.inner(pos, batch)


class PyGViSNet(FeaturizerBase):
    """The reference: PyG's eager ``ViSNetBlock`` behind cvlearn's featurizer interface (so the same token
    embedders can drive it); loads cvlearn ViSNet weights strictly (same keys)."""

    def __init__(self, atomic_numbers, config=GEOM2VEC_VISNET, seed=None):
        super().__init__()
        c = config
        self._init_common(atomic_numbers, c, c.max_z, c.hidden_channels)
        self.gnn = ViSNetBlock(hidden_channels=c.hidden_channels, num_layers=c.num_layers, num_rbf=c.num_rbf,
                               num_heads=c.num_heads, cutoff=c.cutoff_angstrom, lmax=c.lmax, max_z=c.max_z)
        self.gnn.distance = _AllPairsWithinCutoff(self.n_atoms, c.cutoff_angstrom)
        self.max_pairs_per_call = 2**62  # one GNN call per frame, all its graphs at once (geom2vec's pattern)

    def forward_graphs(self, z, pos_nm):
        g, n = pos_nm.shape[:2]
        batch = torch.arange(g).repeat_interleave(n)
        x, vec = self.gnn(z.reshape(-1), (pos_nm * 10.0).reshape(-1, 3), batch)
        return x.reshape(g, n, -1), vec[:, :3].reshape(g, n, 3, -1)


def reference_of(featurizer) -> PyGViSNet:
    ref = PyGViSNet(featurizer.atomic_numbers.tolist(), featurizer.config).eval()
    ref.gnn.load_state_dict(featurizer.gnn.state_dict(), strict=True)
    return ref


def frames_of(positions_nm: np.ndarray, n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.tensor(positions_nm[None] + 0.01 * rng.normal(size=(n, *positions_nm.shape)), dtype=torch.float32)


@torch.no_grad()
def timed(module, pos: torch.Tensor, batch: int | None) -> dict:
    """frames/s over ``pos``; ``batch=None`` is the per-frame loop (one ``[1, n, 3]`` call per frame)."""
    module(pos[:1])  # warm-up (for a compiled call: the compile)
    if batch is not None and batch > 1:
        module(pos[:batch])
    with PeakHeap() as mem:
        start = time.perf_counter()
        if batch is None:
            for i in range(pos.shape[0]):
                module(pos[i:i + 1])
        else:
            for s in range(0, pos.shape[0], batch):
                module(pos[s:s + batch])
        seconds = time.perf_counter() - start
    return {"frames": int(pos.shape[0]), "seconds": seconds, "frames_per_s": pos.shape[0] / seconds,
            "ms_per_frame": seconds / pos.shape[0] * 1e3, "peak_extra_heap_mib": mem.mib}


def embedders(quick: bool):
    from systems import alanine_dipeptide, lambda6_85, pentapeptide_wlall

    out = []
    for label, molecule in (("ala2", alanine_dipeptide.build()), ("WLALL", pentapeptide_wlall.build(minimize=False)),
                            ("lambda6-85", lambda6_85.build(minimize=False))):
        heavy = select_atoms(molecule.topology)
        featurizer = make_featurizer("visnet", atomic_numbers(molecule.topology, heavy), GEOM2VEC_VISNET, seed=0).eval()
        contexts = ["molecule", "window"] if label == "lambda6-85" else ["molecule"]
        reference = reference_of(featurizer)
        for context in contexts:
            module, ref = (make_token_embedder(f, molecule.topology, heavy, context=context, half_width=HALF_WIDTH)
                           for f in (featurizer, reference))
            out.append((f"{label} ({context})", len(heavy), module.n_tokens, module, ref, molecule.positions_nm[heavy]))
    return out, molecule


def run(quick: bool) -> dict:
    torch.set_num_threads(1)
    rows = []
    systems, lam = embedders(quick)
    for name, n_atoms, n_tokens, module, reference, positions in systems:
        big = n_atoms > 200
        if big:
            batch_sizes = [1, 4] if quick else ([1, 4, 8] if "window" in name else [1, 4, 16])
            n_frames = 2 * max(batch_sizes)
        else:
            batch_sizes = [1, 4, 16, 64] if quick else [1, 4, 16, 64, 256]
            n_frames = 128 if quick else 512
        pos = frames_of(positions, n_frames)
        loop_pos = pos[: max(4 if quick else 8, n_frames // 4)] if big else pos[: n_frames // 2]
        base = {"system": name, "atoms": n_atoms, "tokens": n_tokens}
        with torch.no_grad():  # same function, same weights: the arms must agree
            diff = float((module(pos[:2]) - reference(pos[:2])).abs().max())
        arms = [("reference per-frame loop", "PyG ViSNetBlock", reference, None),
                ("cvlearn per-frame loop", "eager", module.forward, None)]
        arms += [("cvlearn batched", "eager", module.forward, b) for b in batch_sizes]
        compiled = inference_forward(module, compile=True)
        arms += [("cvlearn batched", "compiled", compiled, b) for b in batch_sizes]
        for mode, impl, call, b in arms:
            r = timed(call, loop_pos if b is None else pos, b)
            rows.append({**base, "mode": mode, "implementation": impl, "batch": b or 1, **r,
                         "max_abs_diff_vs_reference": diff})
            print(f"{name:22s} {mode:25s} {impl:16s} batch {b or 1:4d} {r['frames_per_s']:9.2f} frames/s "
                  f"{r['peak_extra_heap_mib']:7.1f} MiB", flush=True)

    # Windowed λ6-85 on N-terminal fragments: time per frame vs number of residues.
    scaling = []
    for n_res in (20, 40, 80):
        heavy = select_atoms(lam.topology, f"not element H and resid 0 to {n_res}")  # ACE + n_res residues
        featurizer = make_featurizer("visnet", atomic_numbers(lam.topology, heavy), GEOM2VEC_VISNET, seed=0).eval()
        module = make_token_embedder(featurizer, lam.topology, heavy, context="window", half_width=HALF_WIDTH)
        pos = frames_of(lam.positions_nm[heavy], 8 if quick else 32)
        r = timed(module, pos, 8 if quick else 16)
        scaling.append({"residues": n_res, "tokens": module.n_tokens, "atoms": len(heavy), **r})
        print(f"window scaling {n_res:3d} residues  {r['ms_per_frame']:8.1f} ms/frame", flush=True)

    targets, batching_alone = [], []
    for name in dict.fromkeys(r["system"] for r in rows):
        of = [r for r in rows if r["system"] == name]
        ref = next(r for r in of if r["mode"] == "reference per-frame loop")
        loop = next(r for r in of if r["mode"] == "cvlearn per-frame loop")
        best = max((r for r in of if r["mode"] == "cvlearn batched"), key=lambda r: r["frames_per_s"])
        eager = max((r for r in of if r["mode"] == "cvlearn batched" and r["implementation"] == "eager"),
                    key=lambda r: r["frames_per_s"])
        speedup = best["frames_per_s"] / ref["frames_per_s"]
        targets.append({"name": f"{name}: best cvlearn batched ({best['implementation']}, batch {best['batch']}) "
                                "over the reference per-frame loop", "value": speedup, "target": 2.0, "unit": "x",
                        "met": speedup >= 2.0})
        batching_alone.append({"system": name, "cvlearn_per_frame_over_reference": loop["frames_per_s"] / ref["frames_per_s"],
                               "best_eager_batch": eager["batch"],
                               "eager_batched_over_cvlearn_per_frame": eager["frames_per_s"] / loop["frames_per_s"],
                               "best_batched_over_cvlearn_per_frame": best["frames_per_s"] / loop["frames_per_s"]})
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
                     "note": "lambda6-85 batch sizes capped (memory: ~40k edges/frame at 7.5 A for the whole graph); "
                             "compiled = torch.compile(dynamic=True), compile time excluded (one warm-up call)"},
        "rows": rows,
        "speedup_sources": batching_alone,
        "window_scaling": scaling,
        "targets": targets,
    }


def markdown(result: dict) -> str:
    lines = [f"# featurize ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={result['settings']['quick']})",
             "", f"Model: {result['settings']['model']}; {result['settings']['structures']}; 1 torch thread.", "",
             "| system | atoms | tokens | mode | implementation | batch | frames/s | ms/frame | peak extra heap (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['atoms']} | {r['tokens']} | {r['mode']} | {r['implementation']} | {r['batch']} | "
              f"{r['frames_per_s']:.2f} | {r['ms_per_frame']:.2f} | {r['peak_extra_heap_mib']:.0f} |" for r in result["rows"]]
    lines += ["", "Where the speed-up comes from (ratios of frames/s):", "",
              "| system | cvlearn per-frame / reference per-frame | best eager batch | eager batched / cvlearn per-frame "
              "| best batched / cvlearn per-frame |", "|---|---|---|---|---|"]
    lines += [f"| {b['system']} | {b['cvlearn_per_frame_over_reference']:.2f} | {b['best_eager_batch']} | "
              f"{b['eager_batched_over_cvlearn_per_frame']:.2f} | {b['best_batched_over_cvlearn_per_frame']:.2f} |"
              for b in result["speedup_sources"]]
    lines += ["", "| windowed lambda6-85 fragment (residues) | tokens | atoms | ms/frame | ms/frame/residue |",
              "|---|---|---|---|---|"]
    lines += [f"| {s['residues']} | {s['tokens']} | {s['atoms']} | {s['ms_per_frame']:.1f} | "
              f"{s['ms_per_frame'] / s['residues']:.2f} |" for s in result["window_scaling"]]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    quick_main("featurize", __doc__, run, markdown)
