"""Pentapeptide WLALL: simulate, then embed every frame into per-residue tokens on disk, whole-molecule and windowed.

    python examples/02_featurize_pentapeptide.py [--quick] [--out runs/featurize_wlall] [--checkpoint PATH]

1. ``cvlearn simulate``'s stage: two short unbiased runs of ACE-WLALL-NME (OBC implicit solvent), DCD + PDB.
2. Featurizer: the shipped denoising-pre-trained ET (or any cvlearn checkpoint given with ``--checkpoint``) on the
   48 heavy atoms, elements read from the topology.
3. Tokens: one token per residue (ACE, W, L, A, L, L, NME = 7), from the whole molecule as one graph and from
   ±2-residue windows where only the centre residue's atoms are pooled.
4. Embedding store: trajectories streamed from disk, featurized in batches, written in chunks (resumable: run the
   script twice and the second run computes nothing), then read back lazily as time-lagged token pairs.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvlearn.checkpoints import default_checkpoint  # noqa: E402
from cvlearn.nn.featurizers import featurizer_from_checkpoint  # noqa: E402
from cvlearn.data.selection import HEAVY_ATOMS, atomic_numbers, select_atoms  # noqa: E402
from cvlearn.data.store import EmbeddingStore, LaggedTokenPairs, embed_trajectories  # noqa: E402
from cvlearn.io import file_sha256  # noqa: E402
from cvlearn.data.trajectories import read_topology  # noqa: E402
from cvlearn.nn.windows import make_token_embedder  # noqa: E402
from openmm_plugin.stages.simulate import SimulateConfig, run_simulate  # noqa: E402

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (well under a minute)")
    parser.add_argument("--out", default="runs/featurize_wlall")
    parser.add_argument("--checkpoint", default=None, help="cvlearn featurizer checkpoint (default: the shipped one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)  # small graphs: one thread is fastest
    out = Path(args.out)
    ns, frame_ps = (0.004, 0.2) if args.quick else (0.5, 1.0)

    runs = [run_simulate(SimulateConfig(system="pentapeptide_wlall", ns=ns, temperature_k=400.0, seed=seed,
                                        out=str(out / "md"), report_interval_ps=frame_ps)) for seed in (1, 2)]
    top = runs[0].topology_path
    topology = read_topology(top)[0]
    heavy = select_atoms(topology, HEAVY_ATOMS)
    checkpoint = Path(args.checkpoint) if args.checkpoint else default_checkpoint()
    featurizer = featurizer_from_checkpoint(checkpoint, atomic_numbers(topology, heavy)).eval()

    summary = {"heavy_atoms": len(heavy), "checkpoint": str(checkpoint), "frames": [r.n_frames for r in runs]}
    for context in ("molecule", "window"):
        tokens = make_token_embedder(featurizer, topology, heavy, context=context, half_width=2)
        t0 = time.perf_counter()
        manifest = embed_trajectories(tokens, [r.trajectory_path for r in runs], out / f"store_{context}", top=top,
                                      atom_indices=heavy, chunk_frames=8 if args.quick else 200, batch_frames=32,
                                      metadata={"checkpoint_sha256": file_sha256(checkpoint), "context": context,
                                                "selection": HEAVY_ATOMS}, progress=not args.quick)
        store = EmbeddingStore(manifest.parent)
        first = store.trajectory(0)
        pairs = LaggedTokenPairs(store, lagtime=2)
        x0, xt = pairs[0]
        summary[context] = {"tokens_shape": list(first.shape), "n_lagged_pairs": len(pairs),
                            "pair_shapes": [list(np.shape(x0)), list(np.shape(xt))],
                            "seconds": round(time.perf_counter() - t0, 2)}
    diff = np.abs(EmbeddingStore(out / "store_molecule").trajectory(0)
                  - EmbeddingStore(out / "store_window").trajectory(0)).max()
    summary["max_abs_molecule_minus_window"] = float(diff)  # > 0: windows cut off distant residues
    print(json.dumps({"tokens": summary}))
