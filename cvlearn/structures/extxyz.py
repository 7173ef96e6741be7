"""Extended XYZ (extxyz) files, the common exchange format of DFT energy/force data sets such as xxMD.

Read through ASE, streamed frame by frame (``ase.io.iread``) so multi-gigabyte files never sit in memory.
Units are the file's own, Å for positions, eV for energies, eV/Å for forces, which is what ASE and xxMD write.
ASE writes positions and forces with 8 decimals (1e-8 Å, 1e-8 eV/Å), far below DFT noise.
Every error names the file and the frame index, because a bad frame in the middle of a large file is
otherwise impossible to find.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np

from cvlearn.structures.records import Structure
from cvlearn.io import atomic_path

__all__ = ["ExtxyzFormatError", "MissingLabelError", "read_extxyz", "iter_extxyz", "write_extxyz",
           "structure_to_atoms"]

ENERGY_KEYS = ("energy", "total_energy", "free_energy")


class ExtxyzFormatError(ValueError):
    """A frame that ASE cannot parse (bad atom count, bad number, truncated frame).

    Raised by :func:`iter_extxyz` / :func:`read_extxyz`, naming the file and frame index.
    """


class MissingLabelError(ValueError):
    """A frame without energy or forces where labels are required.

    Raised by :func:`iter_extxyz` / :func:`read_extxyz` when ``require_labels=True`` and a frame lacks either.
    """


def _energy(atoms) -> float | None:
    for key in ENERGY_KEYS:
        if key in atoms.info:
            return float(atoms.info[key])
    calc = atoms.calc
    if calc is not None:
        for key in ("energy", "free_energy"):
            if calc.results.get(key) is not None:
                return float(calc.results[key])
    return None


def _forces(atoms) -> np.ndarray | None:
    if "forces" in atoms.arrays:
        return np.asarray(atoms.arrays["forces"], dtype=np.float64)
    calc = atoms.calc
    if calc is not None and calc.results.get("forces") is not None:
        return np.asarray(calc.results["forces"], dtype=np.float64)
    return None


def iter_extxyz(source: str | os.PathLike | IO[str], name: str | None = None, require_labels: bool = True
                ) -> Iterator[Structure]:
    """Stream ``Structure`` records from an extxyz path or an open text stream.

    Parameters
    ----------
    source : str, path or text stream
        An extxyz file or an open text stream (e.g. a zip member).
    name : str or None
        Names the source in error messages (default: the path).
    require_labels : bool
        Raise :class:`MissingLabelError` on frames without energy and forces.

    Returns
    -------
    Iterator[Structure]
        Positions ``[n_atoms, 3]`` (Å), energy (eV), forces ``[n_atoms, 3]`` (eV/Å).
    """
    import ase.io

    label = name or str(source)
    frames = ase.io.iread(source, index=":", format="extxyz")
    index = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # ASE raises XYZError, ValueError, IndexError, ... for malformed frames
            where = _locate_bad_frame(source) if isinstance(source, (str, os.PathLike)) else None
            if where is not None:  # ASE indexes the whole file first, so its frame index can be wrong
                raise ExtxyzFormatError(f"{label}: {where}") from exc
            raise ExtxyzFormatError(f"{label}: frame {index} could not be parsed as extxyz "
                                    f"({type(exc).__name__}: {exc})") from exc
        source_id = f"{label}#{index}"
        energy, forces = _energy(atoms), _forces(atoms)
        if require_labels and (energy is None or forces is None):
            missing = " and ".join(k for k, v in (("energy", energy), ("forces", forces)) if v is None)
            raise MissingLabelError(f"{label}: frame {index} has no {missing} (looked for info keys "
                                    f"{list(ENERGY_KEYS)}, the 'forces' array and an attached calculator); "
                                    "pass require_labels=False to read unlabelled geometries")
        try:
            yield Structure(numbers=np.asarray(atoms.numbers, dtype=np.int64),
                            positions_angstrom=np.asarray(atoms.positions, dtype=np.float64),
                            energy_ev=energy, forces_ev_per_angstrom=forces, source=source_id)
        except ValueError as exc:
            raise ExtxyzFormatError(f"{label}: frame {index}: {exc}") from exc
        index += 1


def _locate_bad_frame(path: str | os.PathLike) -> str | None:
    """Frame and line of the first frame whose atom count does not fit the file (only called after a failure)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
    line, frame, previous = 0, 0, None
    while line < len(lines):
        header = lines[line].strip()
        if not header:
            line += 1
            continue
        try:
            n_atoms = int(header)
        except ValueError:
            after = (f" after frame {frame - 1} (line {previous[0] + 1}), which declares {previous[1]} atoms"
                     if previous else "")
            return (f"frame {frame} could not be parsed as extxyz (line {line + 1}: expected an atom count, found "
                    f"{header[:40]!r}{after})")
        atoms = lines[line + 2:line + 2 + n_atoms]
        counts = [len(a.split()) for a in atoms]
        if len(atoms) < n_atoms or (counts and min(counts) < 4):
            found = next((i for i, c in enumerate(counts) if c < 4), len(atoms))
            return (f"frame {frame} could not be parsed as extxyz (line {line + 1}: expected {n_atoms} atom lines, "
                    f"found {found} before line {line + 3 + found})")
        previous = (line, n_atoms)
        line += 2 + n_atoms
        frame += 1
    return None


def read_extxyz(path: str | os.PathLike, require_labels: bool = True) -> Iterator[Structure]:
    """Stream the frames of one extxyz file.

    Parameters
    ----------
    path : str or path
        The extxyz file.
    require_labels : bool
        Demand energy and forces on every frame.

    Returns
    -------
    Iterator[Structure]
        Positions ``[n_atoms, 3]`` (Å), energy (eV), forces ``[n_atoms, 3]`` (eV/Å).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"extxyz file not found: {path}")
    return iter_extxyz(path, name=str(path), require_labels=require_labels)


def structure_to_atoms(structure: Structure):
    """An ``ase.Atoms`` carrying the structure's labels in a SinglePointCalculator (what extxyz writes).

    Parameters
    ----------
    structure : Structure

    Returns
    -------
    ase.Atoms
        Positions in Å; energy (eV) and forces (eV/Å) when labelled.
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(numbers=structure.numbers, positions=structure.positions_angstrom)
    results = {}
    if structure.energy_ev is not None:
        results["energy"] = float(structure.energy_ev)
    if structure.forces_ev_per_angstrom is not None:
        results["forces"] = np.asarray(structure.forces_ev_per_angstrom, dtype=np.float64)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def write_extxyz(path: str | os.PathLike, structures: Iterable[Structure]) -> int:
    """Write structures to one extxyz file atomically.

    Parameters
    ----------
    path : str or path
        File to write.
    structures : iterable of Structure
        Positions in Å; labels (eV, eV/Å) written when present.

    Returns
    -------
    int
        Number of frames written.
    """
    import ase.io

    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            for structure in structures:
                ase.io.write(handle, structure_to_atoms(structure), format="extxyz")
                n += 1
    return n
