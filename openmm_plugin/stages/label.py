"""``cvlearn label``: DFT energies and forces for a file of geometries, written in xxMD layout (resumable).

    cvlearn label --in geoms.xyz --out DIR --molecule mal --xc M06 --basis 6-31g* --splits 0.8,0.1,0.1

Finished labels are kept in ``DIR/.label_partial/<molecule>.json``; rerunning the same command after a kill
computes only the missing ones. Output: ``DIR/xxMD-DFT/<molecule>/<molecule>_{train,val,test}.xyz``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def _fractions(text: str) -> list[float]:
    try:
        fractions = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--splits: expected comma-separated fractions such as 0.8,0.1,0.1, "
                                         f"found {text!r}") from None
    if not 1 <= len(fractions) <= len(SPLIT_NAMES):
        raise argparse.ArgumentTypeError(f"--splits: expected 1 to 3 fractions (train,val,test), found {text!r}")
    return fractions


def run_label(args: argparse.Namespace) -> int:
    from cvlearn.structures.extxyz import read_extxyz
    from cvlearn.structures.xxmd import random_split, temporal_split, write_xxmd
    from cvlearn.structures.labelling import PySCFLabeller, label_structures

    geoms = list(read_extxyz(args.input, require_labels=False))
    if not geoms:
        raise ValueError(f"--in {args.input}: no geometries found")
    labeller = PySCFLabeller(xc=args.xc, basis=args.basis, charge=args.charge, spin=args.spin)
    out = Path(args.out)
    partial = out / ".label_partial" / f"{args.molecule}.json"
    labelled = label_structures(geoms, labeller, None, partial_path=partial)
    if args.split_kind == "random":
        parts = random_split(labelled, args.splits, seed=args.seed)
    else:
        parts = temporal_split(labelled, args.splits)
    paths = write_xxmd(out, args.molecule, dict(zip(SPLIT_NAMES, parts)))
    for split, path in paths.items():
        print(f"{split:6s} {len(parts[SPLIT_NAMES.index(split)]):6d}  {path}")
    if len(labelled) < len(geoms):
        log.warning("%d of %d geometries failed and were left out (see %s)", len(geoms) - len(labelled),
                    len(geoms), partial)
    return 0


def add_label_parser(commands) -> None:
    """Register ``label`` on the CLI's sub-parsers."""
    p = commands.add_parser("label", help="DFT energies/forces (PySCF) for geometries -> xxMD-layout extxyz")
    p.add_argument("--in", dest="input", required=True, help="extxyz/xyz file of geometries (Å)")
    p.add_argument("--out", required=True, help="output root: writes xxMD-DFT/<molecule>/<molecule>_<split>.xyz")
    p.add_argument("--molecule", required=True, help="molecule folder and file prefix, e.g. mal")
    p.add_argument("--xc", default="M06", help="exchange-correlation functional, or HF (default M06)")
    p.add_argument("--basis", default="6-31g*", help="basis set (default 6-31g*)")
    p.add_argument("--charge", type=int, default=0)
    p.add_argument("--spin", type=int, default=0, help="2S, number of unpaired electrons (default 0)")
    p.add_argument("--splits", type=_fractions, default=[0.8, 0.1, 0.1],
                   help="train,val,test fractions (default 0.8,0.1,0.1)")
    p.add_argument("--split-kind", choices=("random", "temporal"), default="random",
                   help="random for independent samples, temporal (contiguous blocks) for one MD trajectory")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split")
    p.set_defaults(func=run_label)
