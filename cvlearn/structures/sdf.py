"""SDF files (V2000 molfiles separated by ``$$$$``) such as PCQM4Mv2's ``pcqm4m-v2-train.sdf``: 3D geometries.

Streamed line by line (plain or ``.sdf.gz``), one record in memory at a time: the PCQM4Mv2 file holds
3.4 million molecules. Only what a denoising pre-trainer needs is parsed: element symbols and 3D coordinates
(Å); bonds, charges and data items are skipped. Written by hand, with no RDKit dependency.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from cvlearn.structures.records import Structure

__all__ = ["SDFFormatError", "read_sdf"]

HEADER_LINES = 3  # name, program/timestamp, comment


class SDFFormatError(ValueError):
    """A record that is not a well-formed V2000 molfile.

    Raised by :func:`read_sdf` on V3000 records, bad counts or atom lines, unknown elements or truncated records.
    """


def _atomic_number(symbol: str, where: str) -> int:
    from ase.data import atomic_numbers

    key = symbol.strip().capitalize()
    if key not in atomic_numbers or atomic_numbers[key] == 0:
        raise SDFFormatError(f"{where}: unknown element symbol '{symbol.strip()}'")
    return atomic_numbers[key]


def _counts(line: str, where: str) -> int:
    if "V3000" in line:
        raise SDFFormatError(f"{where}: V3000 molfiles are not supported (counts line {line.rstrip()!r})")
    try:
        n_atoms = int(line[0:3])
        int(line[3:6])
    except ValueError:
        raise SDFFormatError(f"{where}: bad counts line {line.rstrip()!r} (expected V2000 'aaabbb...' with "
                             "3-character atom and bond counts)") from None
    if n_atoms < 1:
        raise SDFFormatError(f"{where}: counts line {line.rstrip()!r} declares {n_atoms} atoms")
    return n_atoms


def _parse_record(lines: list[str], where: str) -> Structure:
    if len(lines) < HEADER_LINES + 1:
        raise SDFFormatError(f"{where}: truncated record, {len(lines)} lines, no counts line")
    n_atoms = _counts(lines[HEADER_LINES], where)
    atom_lines = lines[HEADER_LINES + 1:HEADER_LINES + 1 + n_atoms]
    if len(atom_lines) < n_atoms:
        raise SDFFormatError(f"{where}: truncated record, counts line declares {n_atoms} atoms, "
                             f"found {len(atom_lines)} atom lines")
    positions = np.empty((n_atoms, 3))
    numbers = np.empty(n_atoms, dtype=np.int64)
    for i, line in enumerate(atom_lines):
        try:
            positions[i] = float(line[0:10]), float(line[10:20]), float(line[20:30])
        except ValueError:
            raise SDFFormatError(f"{where}: atom line {i + 1} {line.rstrip()!r} has no x, y, z "
                                 "in columns 1-30") from None
        numbers[i] = _atomic_number(line[31:34], f"{where}, atom line {i + 1}")
    if not any(line.startswith("M  END") for line in lines[HEADER_LINES + 1 + n_atoms:]):
        raise SDFFormatError(f"{where}: truncated record, no 'M  END' after the atom block")
    return Structure(numbers=numbers, positions_angstrom=positions, source=where)


def read_sdf(path: str | os.PathLike) -> Iterator[Structure]:
    """Stream the molecules of an SDF file as unlabelled ``Structure`` records.

    Parameters
    ----------
    path : str or path
        ``.sdf`` or ``.sdf.gz`` of V2000 molfiles.

    Returns
    -------
    Iterator[Structure]
        Atomic numbers ``[n_atoms]`` and positions ``[n_atoms, 3]`` (Å), no labels.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SDF file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        record: list[str] = []
        index = 0
        for line in handle:
            if line.startswith("$$$$"):
                yield _parse_record(record, f"{path} record {index}")
                record, index = [], index + 1
            else:
                record.append(line.rstrip("\n"))
        if any(line.strip() for line in record):
            raise SDFFormatError(f"{path} record {index}: truncated at end of file (no closing '$$$$')")
