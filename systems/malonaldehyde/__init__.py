"""Malonaldehyde (enol form, C3H4O2): a small labelled energy/force data set shipped with cvlearn.

The data (M06/6-31G* energies and forces of normal-mode-sampled geometries, xxMD layout) are made by
``python -m systems.malonaldehyde.generate``; see ``data/README.md`` for the method and its cost.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MOLECULE", "dataset_path"]

MOLECULE = "mal"


def dataset_path() -> Path:
    """Root of the shipped data set in xxMD layout: pass it to ``cvlearn.structures.load_xxmd(root, "mal", split)``.

    Returns
    -------
    Path
        The ``data`` folder holding ``xxMD-DFT/mal/`` (positions Å, energies eV, forces eV/Å).

    Raises
    ------
    FileNotFoundError
        If the data set has not been generated.
    """
    path = Path(__file__).resolve().parent / "data"
    if not (path / "xxMD-DFT" / MOLECULE).is_dir():
        raise FileNotFoundError(f"malonaldehyde data set missing at {path}/xxMD-DFT/{MOLECULE}; regenerate it with "
                                "python -m systems.malonaldehyde.generate --out systems/malonaldehyde/data")
    return path
