"""Atomic file writes: nothing half-written is ever left behind.

A stage writes to a temporary file in the destination directory and renames it into place, so a
killed run leaves either the old file or the new one, and "output exists" means "output complete".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the destination folder, so the final rename is atomic on one filesystem.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination; its parent folders are created.
    suffix : str, optional
        Suffix of the temporary file. Defaults to the destination's own suffix, so writers that infer the
        format from the file name (mdtraj, matplotlib, torch.jit.save) see the right one.

    Yields
    ------
    Path
        The temporary path to write to; removed if the block raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix if suffix is not None else path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_path` left next to ``path`` when a run was killed mid-write.

    Call it only where no other process writes ``path`` (a stage opening its own run directory).

    Parameters
    ----------
    path : str or os.PathLike
        A destination that :func:`atomic_path` writes.

    Returns
    -------
    list of Path
        The files removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[a-z0-9_]{{8}}")
    removed = [p for p in path.parent.iterdir() if p.is_file() and pattern.match(p.name)]
    for p in removed:
        p.unlink()
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    text : str
        Full file content.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON with sorted keys, atomically, so reports diff cleanly between runs.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    obj : object
        Anything ``json.dumps`` accepts.
    """
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks), to record which input a run, store or model came from.

    Parameters
    ----------
    path : str or path

    Returns
    -------
    str
        Hex SHA-256 digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
