"""xxMD-layout data sets (extxyz per molecule and split), read from a directory or straight from a ``.zip``.

Layout, as in the xxMD archive: ``xxMD-DFT/<molecule>/<files>.xyz`` with molecule in {azo, dia, mal, sti}
(any folder name is accepted). The root may be the folder holding ``xxMD-DFT/``, the ``xxMD-DFT`` folder
itself, a zip file holding that tree at any depth, or a per-molecule zip named ``<molecule>.zip`` (as the
xxMD repository ships ``xxMD-DFT/mal/mal.zip``), given directly or found in ``xxMD-DFT/<molecule>/``.

Split matching rule: the split of a file is the **last underscore-separated token of its stem**, lowercased:
``mal_train.xyz`` -> ``train``, ``mal_val.xyz`` -> ``val``, ``mal_test.xyz`` -> ``test``. Several files with the
same split are read in sorted file-name order. A missing split raises an error listing the splits present.

Splitting (``cvlearn.data.splits``): ``random_split`` shuffles frames, ``temporal_split`` cuts one trajectory
into contiguous blocks in file order. For MD data the temporal split is the honest one: consecutive frames are nearly identical, so a
random split puts near-copies of every test frame into training and reports interpolation error, not the error
on configurations the model has not seen.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

from cvlearn.structures.extxyz import iter_extxyz, read_extxyz, write_extxyz
from cvlearn.structures.records import Structure

__all__ = ["XXMD_DIR", "split_of_file", "list_xxmd_splits", "load_xxmd", "write_xxmd", "xxmd_file_name"]

XXMD_DIR = "xxMD-DFT"


def split_of_file(name: str) -> str:
    """The split a file belongs to: the last ``_``-separated token of its stem, lowercased.

    Parameters
    ----------
    name : str
        A file name or path, e.g. ``"xxMD-DFT/mal/mal_train.xyz"``.

    Returns
    -------
    str
        The split, e.g. ``"train"``.
    """
    return PurePosixPath(name).stem.rsplit("_", 1)[-1].lower()


def xxmd_file_name(molecule: str, split: str) -> str:
    """``<molecule>_<split>.xyz``, the name :func:`split_of_file` reads back.

    Parameters
    ----------
    molecule : str
        Molecule name as xxMD spells it, e.g. ``"mal"``.
    split : str
        Split name, e.g. ``"train"``.

    Returns
    -------
    str
        The file name (no directory).
    """
    return f"{molecule}_{split}.xyz"


def _zip_members(archive: zipfile.ZipFile, molecule: str, per_molecule: bool) -> list[str]:
    """``.xyz`` members inside ``.../xxMD-DFT/<molecule>/`` (at any depth) or ``.../<molecule>/``; every
    ``.xyz`` member for a per-molecule zip (``<molecule>.zip``)."""
    members = [n for n in archive.namelist() if n.endswith(".xyz") and not n.endswith("/")]
    inside_dft = [n for n in members if PurePosixPath(n).parent.name == molecule
                  and XXMD_DIR in PurePosixPath(n).parent.parts]
    found = inside_dft or [n for n in members if PurePosixPath(n).parent.name == molecule]
    return sorted(found or (members if per_molecule else []))


def _resolve(root: str | os.PathLike, molecule: str) -> Path:
    """The directory or zip to read: a folder holding no .xyz but ``<molecule>.zip`` means that zip."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"xxMD root not found: {root} (expected a directory or a .zip)")
    if root.is_dir():
        for folder in (root / XXMD_DIR / molecule, root / molecule):
            if folder.is_dir() and not any(folder.glob("*.xyz")) and (folder / f"{molecule}.zip").is_file():
                return folder / f"{molecule}.zip"
    return root


def _dir_files(root: Path, molecule: str) -> list[Path]:
    for folder in (root / XXMD_DIR / molecule, root / molecule):
        if folder.is_dir():
            return sorted(folder.glob("*.xyz"))
    return []


def _files(root: Path, molecule: str) -> tuple[list, str]:
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise ValueError(f"xxMD root {root} is a file but not a zip archive")
        with zipfile.ZipFile(root) as archive:
            files = _zip_members(archive, molecule, per_molecule=root.stem == molecule)
        where = f"{root} (zip)"
    else:
        files = _dir_files(root, molecule)
        where = str(root)
    if not files:
        raise FileNotFoundError(f"{where}: no .xyz files for molecule '{molecule}' under "
                                f"{XXMD_DIR}/{molecule}/ or {molecule}/")
    return files, where


def list_xxmd_splits(root: str | os.PathLike, molecule: str) -> list[str]:
    """The split names present for ``molecule`` (see the module's matching rule).

    Parameters
    ----------
    root : str or path
        A directory or zip in one of the layouts of the module doc.
    molecule : str
        Folder name of the molecule, e.g. ``"mal"``.

    Returns
    -------
    list of str
        Sorted split names.
    """
    files, _ = _files(_resolve(root, molecule), molecule)
    return sorted({split_of_file(str(f)) for f in files})


def load_xxmd(root: str | os.PathLike, molecule: str, split: str, require_labels: bool = True
              ) -> Iterator[Structure]:
    """Stream the frames of one molecule and split (Å, eV, eV/Å) from a directory or a zip.

    Zip members are read one at a time through a text stream: nothing is extracted to disk.

    Parameters
    ----------
    root : str or path
        A directory or zip in one of the layouts of the module doc.
    molecule : str
        Folder name of the molecule, e.g. ``"mal"``.
    split : str
        Split name, e.g. ``"train"`` (case-insensitive).
    require_labels : bool
        Demand energy and forces on every frame.

    Returns
    -------
    Iterator[Structure]
        Positions ``[n_atoms, 3]`` (Å), energy (eV), forces ``[n_atoms, 3]`` (eV/Å).
    """
    root = _resolve(root, molecule)
    files, where = _files(root, molecule)
    chosen = [f for f in files if split_of_file(str(f)) == split.lower()]
    if not chosen:
        available = sorted({split_of_file(str(f)) for f in files})
        raise KeyError(f"{where}: no '{split}' split for molecule '{molecule}'; available splits: {available} "
                       f"(split = last '_' token of the file name, e.g. {molecule}_train.xyz)")
    if root.is_file():
        return _iter_zip(root, chosen, require_labels)
    return (s for f in chosen for s in read_extxyz(f, require_labels=require_labels))


def _iter_zip(path: Path, members: list[str], require_labels: bool) -> Iterator[Structure]:
    with zipfile.ZipFile(path) as archive:
        for member in members:
            with archive.open(member) as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
                yield from iter_extxyz(text, name=f"{path}:{member}", require_labels=require_labels)


def write_xxmd(out_dir: str | os.PathLike, molecule: str, splits: dict[str, Sequence[Structure]]) -> dict[str, Path]:
    """Write ``out_dir/xxMD-DFT/<molecule>/<molecule>_<split>.xyz`` for each split, each file atomically.

    Parameters
    ----------
    out_dir : str or path
        Root of the tree.
    molecule : str
        Folder name of the molecule.
    splits : dict of str to sequence of Structure
        Structures per split name (no ``_`` in names); Å, eV, eV/Å.

    Returns
    -------
    dict of str to Path
        The file written per split.
    """
    paths = {}
    for split, structures in splits.items():
        if "_" in split:
            raise ValueError(f"split name '{split}' must not contain '_' (the split is the file name's last '_' token)")
        path = Path(out_dir) / XXMD_DIR / molecule / xxmd_file_name(molecule, split)
        write_extxyz(path, structures)
        paths[split] = path
    return paths
