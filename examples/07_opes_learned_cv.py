"""OPES-metad on a learned CV of alanine dipeptide, with walls, restartable, one model call per step.

    python examples/07_opes_learned_cv.py [--cv runs/demo/cv.pt] [--out runs/opes] [--quick]

Without ``--cv`` (or with ``--quick`` and no file) it exports a small untrained GNN CV so the example runs
anywhere; use the demo's trained ``runs/demo/cv.pt`` for a meaningful run. The same run from the CLI:
``cvlearn bias --config <out>/bias.yaml`` (the example writes that file). Rerunning resumes from
``<out>/bias_state.npz`` or skips a finished run.
"""

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np
import yaml

from cvlearn.data.colvar import read_colvar
from cvlearn.analysis.reweighting import opes_weights
from cvlearn.io import write_text_atomic
from openmm_plugin.stages.bias import BiasConfig, OPESParams, WallParams, run_bias


def untrained_cv(path: Path) -> Path:
    """A 1-layer, 32-wide ET CV with 2 outputs (untrained): stands in for a trained cv.pt."""
    import torch

    from cvlearn.models.cv import GraphCV
    from cvlearn.export import export_cv
    from cvlearn.nn.featurizers import ETConfig, ETFeaturizer
    from cvlearn.nn.heads import MLPHead
    from cvlearn.nn.mixers import SumPool
    from cvlearn.data.selection import atomic_numbers, residue_index_of_atoms
    from cvlearn.nn.tokens import ResidueTokens
    from systems import alanine_dipeptide as ala2

    molecule = ala2.build()
    heavy = ala2.heavy_atom_indices(molecule.topology)
    torch.manual_seed(0)
    config = ETConfig(hidden_channels=32, num_layers=1, num_rbf=16, num_heads=4, cutoff_angstrom=5.0)
    lobe = GraphCV(ETFeaturizer(atomic_numbers(molecule.topology, heavy), config), ResidueTokens(residue_index_of_atoms(molecule.topology, heavy)),
                   SumPool(), MLPHead(32, 2, hidden=32))
    export_cv(lobe, path, atom_indices=heavy, n_particles=molecule.topology.getNumAtoms())
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", help="exported CV (default: an untrained stand-in)")
    parser.add_argument("--out", default="runs/opes_learned_cv")
    parser.add_argument("--quick", action="store_true", help="20 ps, finishes in well under a minute")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    cv_path = Path(args.cv) if args.cv else (out / "cv.pt" if (out / "cv.pt").is_file() else untrained_cv(out / "cv.pt"))
    config = BiasConfig(
        cv=str(cv_path), system="alanine_dipeptide", out=str(out), method="opes-metad", route="python",
        components=(0,),
        n_steps=10_000 if args.quick else 2_500_000, report_interval_steps=100 if args.quick else 500,
        save_every_steps=2_000 if args.quick else 50_000, mts_substeps=4,
        opes=OPESParams(sigma=(0.05,), barrier_kjmol=30.0, pace_steps=200 if args.quick else 500),
        walls=WallParams(upper_at=(4.0,), upper_kappa_kjmol=200.0, lower_at=(-4.0,), lower_kappa_kjmol=200.0),
    )
    write_text_atomic(out / "bias.yaml", yaml.safe_dump(_plain(dataclasses.asdict(config)), sort_keys=False))
    summary = run_bias(config)
    colvar = read_colvar(out / "COLVAR")
    weights = opes_weights(colvar["bias"], config.temperature_k)
    print(f"{summary['md_steps_run']} MD steps at {summary['ms_per_step']:.3f} ms/step "
          f"({summary['ns_per_day']:.0f} ns/day), {summary['model_calls']} model calls")
    print(f"COLVAR fields: {list(colvar)}")
    print(f"OPES: {summary['bias']['opes']}; effective sample size of weights {1.0 / np.sum(weights ** 2):.1f}")


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


if __name__ == "__main__":
    main()
