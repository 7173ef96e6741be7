"""``cvlearn`` command line: parse, load a config, call one stage function.

Argparse only: every command builds the frozen config of its stage (from ``--config`` through
:func:`cvlearn.config.load_config`, or from flags) and calls the stage's ``run_*`` function, then prints a
short summary. It lives in ``openmm_plugin`` because its commands drive MD; ``cvlearn`` itself never imports
the engine. Stage modules are imported inside the commands, so ``cvlearn --help`` stays fast.

Errors: :func:`main` is the one error boundary. An expected error prints one line on stderr,
``cvlearn <command>: error: <file or key>: expected X, found Y``, and exits with 2 for usage and config errors
(bad arguments, :class:`cvlearn.errors.ConfigError` and any ``ValueError`` from validation, missing or
unusable files) or 1 for run failures (:class:`cvlearn.errors.RunError`, a simulation that blew up).
``--verbose`` adds the traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback

EXIT_RUN_FAILED = 1
EXIT_USAGE = 2
_USAGE_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                 PermissionError)


def _load(config_type, path, **overrides):
    from cvlearn.config import load_config

    return load_config(config_type, path, {k: v for k, v in overrides.items() if v is not None})


def _from_flags(config_type, flags: dict[str, str], **values):
    """``config_type(**values)``; a validation error names the command-line flag instead of the field."""
    from cvlearn.errors import ConfigError

    try:
        return config_type(**values)
    except ValueError as err:
        field, sep, rest = str(err).partition(": ")
        if sep and field in flags:
            raise ConfigError(rest, key=flags[field]) from err
        raise


# --- demo ----------------------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.demo import QUICK, DemoConfig, run_demo

    config = _load(DemoConfig, args.config) if args.config else (QUICK if args.quick else DemoConfig())
    _check_out(args.out, "--out")
    metrics = run_demo(args.out, quick=args.quick, config=config, restart_fresh=args.restart_fresh)
    keys = ("vamp2_val", "vamp2_val_deeptime", "vamp2_val_baseline_distances", "training_phi_transitions",
            "biased_phi_transitions", "deltaF_C7ax_C7eq_kjmol", "deltaF_reference_kjmol",
            "ms_per_step_unbiased", "ms_per_step_biased")
    for key in keys:
        print(f"{key:32s} {metrics[key]}")
    print(f"report: {args.out}/report.md")
    return 0


def _add_demo(commands) -> None:
    p = commands.add_parser("demo", help="alanine dipeptide: simulate, learn a CV, bias it, reweight (default job)")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (< 3 minutes)")
    p.add_argument("--config", help="YAML/TOML file with DemoConfig fields (unknown keys are rejected)")
    _add_restart_fresh(p)
    p.set_defaults(func=_demo)


def _add_restart_fresh(p) -> None:
    p.add_argument("--restart-fresh", action="store_true",
                   help="delete this run's outputs and start over (a rerun otherwise resumes, and only under the "
                        "same config and inputs)")


# --- simulate ------------------------------------------------------------------------------------------------
def _simulate(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.simulate import SimulateConfig, run_simulate

    flags = {"system": "--system", "ns": "--ns", "temperature_k": "--temperature", "seed": "--seed", "out": "--out",
             "report_interval_ps": "--report-interval-ps", "platform": "--platform", "fast": "--fast",
             "checkpoint_interval_ps": "--checkpoint-interval-ps"}
    config = _from_flags(SimulateConfig, flags, system=args.system, ns=args.ns, temperature_k=args.temperature,
                         seed=args.seed, out=args.out, report_interval_ps=args.report_interval_ps,
                         platform=args.platform, fast=args.fast, checkpoint_interval_ps=args.checkpoint_interval_ps)
    result = run_simulate(config, restart_fresh=args.restart_fresh)
    print(f"trajectory: {result.trajectory_path} ({result.n_frames} frames)"
          + (" [existed, skipped]" if result.skipped else f", {result.ns_per_day:.1f} ns/day"))
    print(f"topology:   {result.topology_path}")
    return 0


def _add_simulate(commands) -> None:
    from systems import BUILTIN_SYSTEMS

    p = commands.add_parser("simulate", help="unbiased MD of a built-in system (trajectory DCD + PDB)")
    p.add_argument("--system", required=True, choices=BUILTIN_SYSTEMS)
    p.add_argument("--ns", type=float, required=True, help="simulated time in ns")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/md", help="output directory (default: runs/md)")
    p.add_argument("--report-interval-ps", type=float, default=1.0, help="ps between frames (default 1)")
    p.add_argument("--platform", default="Reference", help="OpenMM platform (default Reference; λ6-85 runs faster on CPU)")
    p.add_argument("--fast", action="store_true",
                   help="the system's CPU-affordable settings (λ6-85: 1.5 nm OBC cutoff, 3-amu hydrogens, 4 fs steps)")
    p.add_argument("--checkpoint-interval-ps", type=float, default=10.0,
                   help="ps between OpenMM checkpoints; a rerun resumes from the last one (default 10)")
    _add_restart_fresh(p)
    p.set_defaults(func=_simulate)


# --- bias ----------------------------------------------------------------------------------------------------
def bias_config(args: argparse.Namespace):
    """The ``BiasConfig`` of ``cvlearn bias`` arguments: the file, then the flags over it, then ``--quick``."""
    from openmm_plugin.stages.bias import BiasConfig, quick_config

    from cvlearn.errors import ConfigError

    config = _load(BiasConfig, args.config, cv=args.cv, out=args.out, walker_id=args.walker_id, seed=args.seed,
                   n_steps=args.n_steps)
    if args.quick:
        config = quick_config(config)
    if not config.cv:
        raise ConfigError("required: expected the exported CV file (`cv:` in the config or --cv), found none",
                          args.config, "cv")
    return config


def _bias(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.bias import run_bias

    from cvlearn.errors import ConfigError

    config = bias_config(args)
    try:
        summary = run_bias(config, restart_fresh=args.restart_fresh)
    except ConfigError as err:  # a value checked against the CV (σ length, components): name the file too
        if err.source is None and err.key:
            raise ConfigError(err.detail, args.config, err.key) from err
        raise
    print(f"{summary['md_steps_run']} steps, {summary['ms_per_step']:.3f} ms/step, {summary['ns_per_day']:.1f} ns/day; "
          f"outputs in {config.out}")
    return 0


def _add_bias(commands) -> None:
    p = commands.add_parser("bias", help="bias a learned CV on a built-in system, a System XML + PDB or force-field "
                                         "files + PDB: metad, OPES, restraints, walls")
    p.add_argument("--config", required=True, help="YAML/TOML file with BiasConfig fields (unknown keys are rejected)")
    p.add_argument("--cv", help="exported CV file (overrides the config's `cv`)")
    p.add_argument("--out", help="output directory (overrides the config's `out`)")
    p.add_argument("--quick", action="store_true", help="a smoke test: 2,000 MD steps, frequent rows and depositions")
    p.add_argument("--walker-id", type=int, help="this walker's id in `walkers_dir` (overrides the config; e.g. "
                                                 "$SLURM_ARRAY_TASK_ID, one `cvlearn bias` per walker)")
    p.add_argument("--seed", type=int, help="MD seed (overrides the config; give each walker its own)")
    p.add_argument("--n-steps", type=int, help="MD steps (overrides the config); more than a run's recorded steps "
                                               "extends it from its last checkpoint, finished or not")
    _add_restart_fresh(p)
    p.set_defaults(func=_bias)


# --- analyze -------------------------------------------------------------------------------------------------
def _analyze(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.analyze import AnalyzeConfig, run_analyze

    config = _load(AnalyzeConfig, args.config, out=args.out)
    summary = run_analyze(config)
    for pair, d in summary["deltaF"].items():
        print(f"dF {pair:24s} {d['kjmol']} +- {d['stderr_kjmol']} kJ/mol ({d['n_blocks_used']} blocks)")
    print(f"{summary['n_frames']} frames from {summary['n_walkers']} walker(s); report: {config.out}/report.md")
    return 0


def _add_analyze(commands) -> None:
    p = commands.add_parser("analyze", help="COLVARs of biased walkers -> reweighted FES, dF between regions, errors")
    p.add_argument("--config", required=True, help="YAML/TOML file with AnalyzeConfig fields (unknown keys rejected)")
    p.add_argument("--out", help="output directory (overrides the config's out)")
    p.set_defaults(func=_analyze)


# --- learn ---------------------------------------------------------------------------------------------------
def _learn(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.learn import LearnConfig, run_learn

    config = _load(LearnConfig, args.config, out=args.out)
    metrics = run_learn(config, quick=args.quick, restart_fresh=args.restart_fresh)
    if not metrics:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print(f"validation VAMP-2 {metrics['vamp2_val']:.4f} (deeptime {metrics['vamp2_val_deeptime']}), "
          f"best seed {metrics['best_seed']}, lag {metrics['lag_frames']} frames")
    for name, row in metrics["baselines"].items():
        print(f"baseline {name:20s} {row.get('skipped') or format(row['vamp2_val'], '.4f')}")
    print(f"cv: {config.out}/cv.pt; report: {config.out}/report.md")
    return 0


def _add_learn(commands) -> None:
    p = commands.add_parser("learn", help="learn a CV from your trajectories (pre-trained GNN, VAMPNet), export it, "
                                          "compare with baselines")
    p.add_argument("--config", required=True, help="YAML/TOML file with LearnConfig fields (unknown keys rejected)")
    p.add_argument("--out", help="output directory (overrides the config's out)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: at most 3 epochs, patience 2, the first seed only")
    _add_restart_fresh(p)
    p.set_defaults(func=_learn)


# --- iterate -------------------------------------------------------------------------------------------------
def _iterate(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.iterate import IterateConfig, run_iterate

    from cvlearn.errors import ConfigError

    config = _load(IterateConfig, args.config, out=args.out)
    try:
        summary = run_iterate(config, quick=args.quick, restart_fresh=args.restart_fresh)
    except ConfigError as err:  # "<section>.<key>: ..." from a section: name the file too
        if err.source is None and err.key and type(err) is ConfigError:
            raise ConfigError(err.detail, args.config, err.key) from err
        raise
    held = summary["vamp2_heldout"]["vamp2"]
    print(f"held-out VAMP-2: first CV {held['first']:.4f}, retrained CV {held['retrained']:.4f}")
    for name, run in summary["biased_runs"].items():
        rate = run.get("transitions_per_ns")
        rate = "" if rate is None else f", {rate:.3g} transitions/ns"
        print(f"{name:8s} {run['method']:13s} {run['ns']:.3g} ns{rate}")
    for sentence in summary.get("verdict", []):
        print(sentence)
    print(f"summary: {config.out}/summary.md")
    return 0


def _add_iterate(commands) -> None:
    p = commands.add_parser("iterate", help="learn a CV, explore it (OPES-explore), retrain on the reweighted "
                                            "explore run, bias the retrained CV: one config")
    p.add_argument("--config", required=True, help="YAML/TOML file with the sections learn, explore, retrain, bias, "
                                                    "analyze, transitions (unknown keys rejected)")
    p.add_argument("--out", help="output directory (overrides the config's out)")
    p.add_argument("--quick", action="store_true", help="smoke test: every step with its --quick settings")
    _add_restart_fresh(p)
    p.set_defaults(func=_iterate)


# --- check ---------------------------------------------------------------------------------------------------
def _check(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.check import CheckConfig, format_table, raise_on_failure, run_check

    flags = {"cv": "cv", "pdb": "--pdb", "system": "--system", "json_out": "--json", "seed": "--seed"}
    config = _from_flags(CheckConfig, flags, cv=args.cv, pdb=args.pdb, system=args.system, json_out=args.json,
                         seed=args.seed)
    rows = run_check(config)
    print(format_table(rows))
    raise_on_failure(rows, args.cv)
    return 0


def _add_check(commands) -> None:
    p = commands.add_parser("check", help="physics checks of an exported CV on a PDB: finite-difference forces, "
                                          "invariance, float32, Python vs engine")
    p.add_argument("cv", help="exported CV file (cv.pt)")
    p.add_argument("--pdb", required=True, help="PDB with all the System's particles")
    p.add_argument("--system", help="serialized OpenMM System XML (default: a force-free System from the PDB)")
    p.add_argument("--json", help="also write the result table as JSON to this file")
    p.add_argument("--seed", type=int, default=0, help="seed of the perturbed configurations (default 0)")
    p.set_defaults(func=_check)


def _check_out(path: str, flag: str) -> None:
    from cvlearn.config import check_output_dir

    check_output_dir(path, flag)


class _Parser(argparse.ArgumentParser):
    """Argparse with one-line errors (``cvlearn <command>: error: ...``, exit 2) instead of usage + error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``cvlearn`` argument parser with every sub-command."""
    parser = _Parser(prog="cvlearn", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the traceback of an expected error")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    from openmm_plugin.cli_training import _add_finetune, _add_label, _add_pretrain

    for add in (_add_demo, _add_simulate, _add_learn, _add_bias, _add_analyze, _add_iterate, _add_label, _add_pretrain,
                _add_finetune, _add_check):
        add(commands)
    for sub in commands.choices.values():  # ``cvlearn bias --verbose`` as well as ``cvlearn --verbose bias``
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def exit_code_of(err: BaseException) -> int | None:
    """2 for usage/config errors, 1 for run failures, None for an unexpected error (a bug: keep the traceback).

    Parameters
    ----------
    err : BaseException

    Returns
    -------
    int or None
    """
    from cvlearn.errors import RunError

    if isinstance(err, (RunError, FloatingPointError)):  # FloatingPointError: the bias runner saw a NaN CV
        return EXIT_RUN_FAILED
    if isinstance(err, _USAGE_ERRORS):
        return EXIT_USAGE
    if type(err).__name__ == "OpenMMException":  # e.g. "Particle coordinate is NaN": the run blew up
        return EXIT_RUN_FAILED
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one ``cvlearn`` command; returns its exit code (0, 1 run failed, 2 usage or config error).

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, already printed)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"cvlearn {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        code = exit_code_of(err)
        if code is None:
            raise
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        print(f"cvlearn {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
