"""Readers for special formats users hold: mdshare's alanine-dipeptide heavy-atom ``.npz`` and pentapeptide XTCs.

Ordinary trajectory files are read by :func:`cvlearn.data.trajectories.load_trajectories`, which these call
where they can. All return ``mdtraj.Trajectory`` objects (nm), so the rest of the code sees one type. Units
are checked where the format does not state them: the mdshare ``.npz`` holds bare floats, so bonded heavy-atom
distances are used to tell nm (≈ 0.12-0.16) from Å (≈ 1.2-1.6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import mdtraj
import numpy as np

from cvlearn.data.selection import HEAVY_ATOMS, select_atoms
from cvlearn.data.trajectories import load_trajectories, read_topology

_BOND_NM = (0.09, 0.20)  # heavy-atom covalent bonds lie in this range (nm)


def _check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    return path


def read_mdshare_ala2_npz(npz_path: str | Path, pdb_path: str | Path,
                          timestep_ps: float = 1.0) -> list[mdtraj.Trajectory]:
    """mdshare ``alanine-dipeptide-3x250ns-heavy-atom-positions.npz`` (keys ``arr_0..``, each ``[T, 30]`` nm).

    Parameters
    ----------
    npz_path : str or path
        The ``.npz``; the 30 columns are x, y, z of the 10 heavy atoms of ``pdb_path`` in file order (nm).
    pdb_path : str or path
        mdshare's ``alanine-dipeptide-nowater.pdb`` (22 atoms).
    timestep_ps : float
        Interval between frames (mdshare: 1 ps).

    Returns
    -------
    list of mdtraj.Trajectory
        One heavy-atom trajectory per key, positions ``[n_frames, 10, 3]`` (nm), times in ps.
    """
    npz_path = _check_file(npz_path, "npz file")
    topology, _ = read_topology(pdb_path)
    pdb_path = Path(pdb_path)
    heavy = select_atoms(topology, HEAVY_ATOMS)
    heavy_top = topology.subset(heavy)
    with np.load(npz_path) as data:
        keys = sorted((k for k in data.files if k.startswith("arr_")), key=lambda k: int(k.split("_")[1]))
        if not keys:
            raise ValueError(f"{npz_path}: expected arrays arr_0, arr_1, ..., found keys {data.files}")
        trajectories = []
        for key in keys:
            array = np.asarray(data[key])
            if array.ndim != 2 or array.shape[1] != 3 * len(heavy):
                raise ValueError(f"{npz_path}[{key}]: expected shape [n_frames, {3 * len(heavy)}] "
                                 f"(x, y, z of the {len(heavy)} heavy atoms of {pdb_path.name}), found {array.shape}")
            xyz = array.reshape(array.shape[0], len(heavy), 3).astype(np.float32)
            _check_nm(xyz, heavy_top, f"{npz_path}[{key}]")
            time = np.arange(xyz.shape[0], dtype=np.float64) * timestep_ps
            trajectories.append(mdtraj.Trajectory(xyz, heavy_top, time=time))
    return trajectories


def _check_nm(xyz: np.ndarray, topology: mdtraj.Topology, where: str) -> None:
    bonds = np.array([[a.index, b.index] for a, b in topology.bonds], dtype=int)
    if bonds.size == 0 or xyz.shape[0] == 0:
        return
    lengths = np.linalg.norm(xyz[0, bonds[:, 0]] - xyz[0, bonds[:, 1]], axis=1)
    median = float(np.median(lengths))
    if not _BOND_NM[0] <= median <= _BOND_NM[1]:
        hint = " (looks like Å: divide by 10)" if 10 * _BOND_NM[0] <= median <= 10 * _BOND_NM[1] else ""
        raise ValueError(f"{where}: expected positions in nm (median bond {_BOND_NM[0]}-{_BOND_NM[1]} nm), "
                         f"found median bond {median:.3f}{hint}")


def read_mdshare_pentapeptide(xtc_paths: Sequence[str | Path], pdb_path: str | Path,
                              selection: str | None = HEAVY_ATOMS, stride: int = 1) -> list[mdtraj.Trajectory]:
    """mdshare ``pentapeptide-*-500ns-impl-solv.xtc`` + ``pentapeptide-impl-solv.pdb`` (heavy atoms by default).

    Parameters
    ----------
    xtc_paths : sequence of str or path
        The XTC files.
    pdb_path : str or path
        ``pentapeptide-impl-solv.pdb``.
    selection : str, sequence of int or None
        Atoms kept; heavy atoms by default, None for all.
    stride : int
        Keep every ``stride``-th frame.

    Returns
    -------
    list of mdtraj.Trajectory
        One per file, positions ``[n_frames, n_selected, 3]`` (nm).
    """
    return load_trajectories(xtc_paths, pdb_path, selection=selection, stride=stride)
