"""``cvlearn label``: DFT energies and forces for a file of geometries, written in xxMD layout (resumable).

    cvlearn label --in geoms.xyz --out DIR --molecule mal --xc M06 --basis 6-31g* --splits 0.8,0.1,0.1

Finished labels are kept in ``DIR/.label_partial/<molecule>.json``; rerunning the same command after a kill
computes only the missing ones. Output: ``DIR/xxMD-DFT/<molecule>/<molecule>_{train,val,test}.xyz``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class LabelConfig:
    """Settings of ``cvlearn label``: geometries in ``input`` (extxyz, Å), labels to ``out`` in xxMD layout.

    ``splits``: train,val,test fractions; ``split_kind``: ``random`` for independent samples, ``temporal``
    (contiguous blocks) for one MD trajectory; ``spin``: 2S, the number of unpaired electrons.
    """

    input: str
    out: str
    molecule: str
    xc: str = "M06"
    basis: str = "6-31g*"
    charge: int = 0
    spin: int = 0
    splits: tuple = (0.8, 0.1, 0.1)
    split_kind: str = "random"
    seed: int = 0

    def __post_init__(self):
        if not 1 <= len(self.splits) <= len(SPLIT_NAMES):
            raise ValueError(f"splits: expected 1 to 3 fractions (train,val,test), found {self.splits!r}")
        if self.split_kind not in ("random", "temporal"):
            raise ValueError(f"split_kind: expected 'random' or 'temporal', found {self.split_kind!r}")
        if any(not 0 <= f <= 1 for f in self.splits) or sum(self.splits) > 1 + 1e-9:
            raise ValueError(f"splits: expected fractions in [0, 1] summing to at most 1, found {self.splits!r}")


def run_label(config: LabelConfig) -> dict:
    """Label every geometry (resumable through ``<out>/.label_partial/<molecule>.json``) and write the splits.

    Parameters
    ----------
    config : LabelConfig

    Returns
    -------
    dict
        ``{split: (n_structures, path)}`` of the written ``<out>/xxMD-DFT/<molecule>/<molecule>_<split>.xyz``.
    """
    from cvlearn.config import check_input_file, check_output_dir
    from cvlearn.structures.extxyz import read_extxyz
    from cvlearn.data.splits import random_split, temporal_split
    from cvlearn.structures.xxmd import write_xxmd
    from cvlearn.structures.labelling import PySCFLabeller, label_structures

    check_input_file(config.input, "input", "geometry file")
    check_output_dir(config.out, "out")
    geoms = list(read_extxyz(config.input, require_labels=False))
    if not geoms:
        raise ValueError(f"input {config.input}: no geometries found")
    labeller = PySCFLabeller(xc=config.xc, basis=config.basis, charge=config.charge, spin=config.spin)
    out = Path(config.out)
    partial = out / ".label_partial" / f"{config.molecule}.json"
    labelled = label_structures(geoms, labeller, None, partial_path=partial)
    if config.split_kind == "random":
        parts = random_split(labelled, list(config.splits), seed=config.seed)
    else:
        parts = temporal_split(labelled, list(config.splits))
    paths = write_xxmd(out, config.molecule, dict(zip(SPLIT_NAMES, parts)))
    if len(labelled) < len(geoms):
        log.warning("%d of %d geometries failed and were left out (see %s)", len(geoms) - len(labelled),
                    len(geoms), partial)
    return {split: (len(parts[SPLIT_NAMES.index(split)]), path) for split, path in paths.items()}
