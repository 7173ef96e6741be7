"""``cvlearn label``, ``cvlearn pretrain`` and ``cvlearn finetune``: the commands that make and train potentials.

Split from :mod:`openmm_plugin.cli` (which keeps the error boundary and the parser) because the CV workflow's
commands filled it; the helpers ``_load`` and ``_from_flags`` are the CLI's own.
"""

from __future__ import annotations

import argparse

from openmm_plugin.cli import _from_flags, _load


# --- label ---------------------------------------------------------------------------------------------------
def _fractions(text: str) -> tuple:
    try:
        fractions = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions such as 0.8,0.1,0.1, "
                                         f"found {text!r}") from None
    if not 1 <= len(fractions) <= 3:
        raise argparse.ArgumentTypeError(f"expected 1 to 3 fractions (train,val,test), found {text!r}")
    return fractions


def _label(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.label import LabelConfig, run_label

    flags = {"input": "--in", "out": "--out", "molecule": "--molecule", "splits": "--splits", "spin": "--spin",
             "charge": "--charge", "seed": "--seed"}
    written = run_label(_from_flags(LabelConfig, flags, input=args.input, out=args.out, molecule=args.molecule,
                                    xc=args.xc, basis=args.basis, charge=args.charge, spin=args.spin,
                                    splits=tuple(args.splits), split_kind=args.split_kind, seed=args.seed))
    for split, (n, path) in written.items():
        print(f"{split:6s} {n:6d}  {path}")
    return 0


def _add_label(commands) -> None:
    p = commands.add_parser("label", help="DFT energies/forces (PySCF) for geometries -> xxMD-layout extxyz")
    p.add_argument("--in", dest="input", required=True, help="extxyz/xyz file of geometries (Å)")
    p.add_argument("--out", required=True, help="output root: writes xxMD-DFT/<molecule>/<molecule>_<split>.xyz")
    p.add_argument("--molecule", required=True, help="molecule folder and file prefix, e.g. mal")
    p.add_argument("--xc", default="M06", help="exchange-correlation functional, or HF (default M06)")
    p.add_argument("--basis", default="6-31g*", help="basis set (default 6-31g*)")
    p.add_argument("--charge", type=int, default=0)
    p.add_argument("--spin", type=int, default=0, help="2S, number of unpaired electrons (default 0)")
    p.add_argument("--splits", type=_fractions, default=(0.8, 0.1, 0.1),
                   help="train,val,test fractions (default 0.8,0.1,0.1)")
    p.add_argument("--split-kind", choices=("random", "temporal"), default="random",
                   help="random for independent samples, temporal (contiguous blocks) for one MD trajectory")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.set_defaults(func=_label)


# --- pretrain / finetune -------------------------------------------------------------------------------------
def _pretrain(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.pretrain import PretrainConfig, run_pretrain

    config = _load(PretrainConfig, args.config) if args.config else PretrainConfig()
    summary = run_pretrain(config, make_corpus=args.make_corpus)
    if not summary:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print(f"final train loss  {summary['final_train_loss']:.5f}")
    print(f"final val loss    {summary['final_val_loss']:.5f}")
    print(f"training seconds  {summary['training_seconds_all_epochs']:.0f}")
    print(f"backbone: {config.out}/backbone.pt" + (f" (installed to {config.install_to})" if config.install_to else ""))
    return 0


def _add_pretrain(commands) -> None:
    p = commands.add_parser("pretrain", help="denoising pre-training of a featurizer backbone (checkpoint + losses)")
    p.add_argument("--config", help="YAML/TOML file with PretrainConfig fields (unknown keys are rejected)")
    p.add_argument("--make-corpus", action="store_true",
                   help="simulate the MD corpus first (corpus_spec; existing runs are skipped)")
    p.set_defaults(func=_pretrain)


def _finetune(args: argparse.Namespace) -> int:
    from openmm_plugin.stages.finetune import FinetuneConfig, run_finetune

    config = _load(FinetuneConfig, args.config, out=args.out)
    metrics = run_finetune(config)
    if not metrics:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    for split in ("validation", "test"):
        if split in metrics:
            m = metrics[split]
            print(f"{split:10s} energy MAE {m['energy_mae_mev']:.2f} meV "
                  f"({m['energy_mae_mev_per_atom']:.3f} meV/atom), "
                  f"force MAE {m['force_mae_mev_per_angstrom']:.2f} meV/A")
    if "nve" in metrics:
        print(f"NVE drift  {metrics['nve']['drift_kjmol_per_ps_per_atom']:.3g} kJ/mol/ps/atom")
    print(f"outputs:   {config.out}/model.pt, potential.pt, metrics.json, learning_curve.png")
    return 0


def _add_finetune(commands) -> None:
    p = commands.add_parser("finetune", help="fine-tune a backbone on energies + forces, export an OpenMM potential")
    p.add_argument("--config", required=True, help="YAML/TOML file with FinetuneConfig fields (unknown keys rejected)")
    p.add_argument("--out", help="output directory (overrides the config's out)")
    p.set_defaults(func=_finetune)
