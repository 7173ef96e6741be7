"""``cvlearn`` command line: parse, load a config, call one stage function.

It lives in ``openmm_plugin`` because its commands drive MD; ``cvlearn`` itself never imports the engine.
"""

from __future__ import annotations

import argparse
import logging
import sys

from openmm_plugin.stages.bias import add_bias_parser
from openmm_plugin.stages.simulate import add_simulate_parser
from openmm_plugin.stages.label import add_label_parser
from openmm_plugin.stages.pretrain import add_pretrain_parser
from openmm_plugin.stages.finetune import add_finetune_parser


def _demo(args: argparse.Namespace) -> int:
    from cvlearn.config import load_config
    from openmm_plugin.stages.demo import QUICK, DemoConfig, run_demo

    config = load_config(DemoConfig, args.config) if args.config else (QUICK if args.quick else DemoConfig())
    metrics = run_demo(args.out, quick=args.quick, config=config)
    keys = ("vamp2_val", "vamp2_val_deeptime", "vamp2_val_baseline_distances", "training_phi_transitions",
            "biased_phi_transitions", "deltaF_C7ax_C7eq_kjmol", "deltaF_reference_kjmol",
            "ms_per_step_unbiased", "ms_per_step_biased")
    for key in keys:
        print(f"{key:32s} {metrics[key]}")
    print(f"report: {args.out}/report.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cvlearn", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="alanine dipeptide: simulate, learn a CV, bias it, reweight (default job)")
    demo.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    demo.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (< 3 minutes)")
    demo.add_argument("--config", help="YAML/TOML file with DemoConfig fields (unknown keys are rejected)")
    demo.set_defaults(func=_demo)
    add_simulate_parser(commands)
    add_bias_parser(commands)
    add_label_parser(commands)
    add_pretrain_parser(commands)
    add_finetune_parser(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
