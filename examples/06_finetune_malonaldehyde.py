"""Fine-tune the shipped pre-trained ET on malonaldehyde energies and forces, export it, and run it in OpenMM.

    python examples/06_finetune_malonaldehyde.py [--quick] [--out runs/finetune_mal] [--pretrained PATH | --scratch]

Data: the shipped M06/6-31G* malonaldehyde set in xxMD layout (``systems.malonaldehyde.dataset_path()``,
splits train/val/test). Backbone: ``cvlearn/checkpoints/et_denoise_small.pt`` when present (else from scratch).
Prints validation and test energy/force MAEs, writes the exported potential, and runs a short NVE check (drift)
and a Langevin run at 300 K with the potential as the only force of an OpenMM System.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvlearn.structures.xxmd import load_xxmd  # noqa: E402
from cvlearn.units import NM_PER_ANGSTROM  # noqa: E402
from openmm_plugin.stages.finetune import FinetuneConfig, run_finetune  # noqa: E402
from openmm_plugin.potential import run_potential_md  # noqa: E402
from systems.malonaldehyde import MOLECULE, dataset_path  # noqa: E402


def default_pretrained():
    try:
        from cvlearn.checkpoints import default_checkpoint

        return str(default_checkpoint())
    except (ImportError, FileNotFoundError):
        return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 training geometries, a few epochs (< 1 minute)")
    parser.add_argument("--out", default="runs/finetune_mal")
    parser.add_argument("--pretrained", default=None, help="backbone checkpoint (default: the shipped one, if present)")
    parser.add_argument("--scratch", action="store_true", help="train the backbone from scratch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = dataset_path()  # raises with the command that regenerates the data if it is missing
    pretrained = None if args.scratch else (args.pretrained or default_pretrained())
    out = Path(args.out)
    config = FinetuneConfig(out=str(out / "finetune"), xxmd_root=str(root), molecule=MOLECULE,
                            pretrained=pretrained, n_train=50 if args.quick else None,
                            max_epochs=4 if args.quick else 300, patience=4 if args.quick else 30,
                            learning_rate=1e-3, nve_steps=100 if args.quick else 2000, nve_timestep_fs=0.5)
    metrics = run_finetune(config, progress=not args.quick)

    start = next(iter(load_xxmd(root, MOLECULE, "test")))
    langevin = run_potential_md(out / "finetune" / "potential.pt", start.positions_angstrom * NM_PER_ANGSTROM,
                                n_steps=100 if args.quick else 4000, integrator="langevin", timestep_fs=0.5,
                                temperature_k=300.0, progress=not args.quick)
    summary = {"backbone": pretrained or "from scratch", "n_train": metrics["n_train"],
               "test_force_mae_mev_per_angstrom": round(metrics["test"]["force_mae_mev_per_angstrom"], 2),
               "test_energy_mae_mev": round(metrics["test"]["energy_mae_mev"], 2),
               "test_energy_mae_mev_per_atom": round(metrics["test"]["energy_mae_mev_per_atom"], 3),
               "nve_drift_kjmol_per_ps_per_atom": metrics["nve"]["drift_kjmol_per_ps_per_atom"],
               "langevin_mean_temperature_k": round(langevin.summary()["mean_temperature_k"], 1), "out": str(out)}
    print(json.dumps(summary))
