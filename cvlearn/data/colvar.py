"""PLUMED-compatible COLVAR files: ``#! FIELDS time name1 name2 ...`` followed by whitespace-separated rows.

The bias reporters write them and learning from biased data reads them, ours or PLUMED's alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cvlearn.io import write_text_atomic


def write_colvar(path: str | Path, fields: Sequence[str], rows: np.ndarray) -> None:
    """Write a COLVAR file atomically.

    Parameters
    ----------
    path : str or path
        File to write (replaced atomically).
    fields : sequence of str
        ``[n_fields]`` column names, e.g. ``["time", "cv0", "metad.bias"]`` (time in ps, energies in kJ/mol).
    rows : np.ndarray
        ``[n_rows, n_fields]`` values.
    """
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    if rows.size and rows.shape[1] != len(fields):
        raise ValueError(f"COLVAR {path}: {len(fields)} fields {list(fields)} but rows have {rows.shape[1]} columns")
    lines = ["#! FIELDS " + " ".join(fields)]
    lines += [" ".join(f"{v:.10g}" for v in row) for row in rows if rows.size]
    write_text_atomic(path, "\n".join(lines) + "\n")


def read_colvar(path: str | Path) -> dict[str, np.ndarray]:
    """Columns by field name. Other ``#!`` lines (``SET``) are skipped; the field list is taken from the first header.

    Parameters
    ----------
    path : str or path
        A COLVAR file, ours or PLUMED's.

    Returns
    -------
    dict of str to np.ndarray
        ``[n_rows]`` float64 column per field, in the file's units (ours: ps, kJ/mol).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COLVAR file {path} does not exist")
    fields: list[str] | None = None
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("#! FIELDS"):
            if fields is None:
                fields = line.split()[2:]
            continue
        if not line.strip() or line.startswith("#"):
            continue
        if fields is None:
            raise ValueError(f"COLVAR {path}: data on line {number} before any '#! FIELDS' header")
        values = line.split()
        if len(values) != len(fields):
            raise ValueError(f"COLVAR {path} line {number}: expected {len(fields)} values ({fields}), found {len(values)}")
        rows.append([float(v) for v in values])
    if fields is None:
        raise ValueError(f"COLVAR {path}: no '#! FIELDS' header")
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(fields))
    return {name: table[:, k] for k, name in enumerate(fields)}
