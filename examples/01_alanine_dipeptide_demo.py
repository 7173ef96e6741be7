"""Alanine dipeptide end to end: high-temperature MD → GNN VAMPNet CV → metadynamics at 300 K → reweighting.

    python examples/01_alanine_dipeptide_demo.py [--quick] [--out runs/demo]

The same job as ``cvlearn demo``; see ``openmm_plugin/demo.py`` for the stages and ``DemoConfig`` for knobs.
"""

import argparse
import logging

from openmm_plugin.stages.demo import run_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 1 minute)")
    parser.add_argument("--out", default="runs/demo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = run_demo(args.out, quick=args.quick)
    print({k: metrics[k] for k in ("vamp2_val", "vamp2_val_baseline_distances", "deltaF_C7ax_C7eq_kjmol",
                                   "deltaF_reference_kjmol")})
