"""The one trajectory reader: files in, validated ``mdtraj.Trajectory`` objects (nm, ps) out.

Every trajectory file the package reads goes through :func:`iter_trajectory` (streaming, chunk by chunk) or
:func:`load_trajectories` (whole files, built on it). Bad frames and mismatched topologies are caught here,
at load time, with the file and frame named, so that they never surface later as a NaN loss or a shape error
deep inside training. The atom selection is applied after validation, so a file with the wrong atom count
is never mistaken for a valid selection.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

import mdtraj
import numpy as np

from cvlearn.data.selection import resolve_selection

logger = logging.getLogger(__name__)

Selection = str | Sequence[int] | np.ndarray | None


def _check_stride(stride) -> int:
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride: expected an integer >= 1, found {stride!r}")
    return int(stride)


def read_topology(top: str | os.PathLike | mdtraj.Topology) -> tuple[mdtraj.Topology, str]:
    """The topology (from a file or as given) and a name for it in messages.

    Parameters
    ----------
    top : str, path or mdtraj.Topology
        A topology file mdtraj reads (PDB, GRO, PRMTOP, ...) or a topology already loaded.

    Returns
    -------
    topology : mdtraj.Topology
    name : str
        The file name in quotes, or a short description of an in-memory topology.
    """
    if isinstance(top, mdtraj.Topology):
        return top, f"topology ({top.n_atoms} atoms)"
    path = Path(top)
    if not path.is_file():
        raise FileNotFoundError(f"topology file {str(path)!r} does not exist")
    return mdtraj.load_topology(str(path)), repr(str(path))


def _file_atom_count(path: Path) -> int | None:
    """Atoms per frame as stored in a trajectory file (None where the format cannot tell us cheaply)."""
    try:
        with mdtraj.open(str(path)) as handle:
            first = handle.read(n_frames=1)
        xyz = first[0] if isinstance(first, tuple) else first
        return int(np.asarray(xyz).shape[1])
    except Exception:  # only used to improve an error message that is raised anyway
        return None


def iter_trajectory(path: str | os.PathLike, top: str | os.PathLike | mdtraj.Topology, *,
                    selection: Selection = None, stride: int = 1, chunk_frames: int = 1000,
                    make_whole: bool = False) -> Iterator[mdtraj.Trajectory]:
    """Stream one trajectory file in validated chunks (``mdtraj.iterload``), optionally on selected atoms.

    Each chunk is checked before it is yielded: the file's atom count must equal the topology's, and every
    coordinate must be finite (a bad frame is named by its index in the file and after ``stride``).

    Parameters
    ----------
    path : str or path
        Any trajectory format mdtraj reads (DCD, XTC, TRR, HDF5, NetCDF, ...).
    top : str, path or mdtraj.Topology
        Topology of *all* atoms in the file.
    selection : str, sequence of int or None
        mdtraj selection string or atom indices into ``top``; None keeps every atom.
    stride : int
        Keep every ``stride``-th frame.
    chunk_frames : int
        Frames per chunk (after stride); 0 reads the whole file at once.
    make_whole : bool
        Make molecules broken across the periodic box whole (``mdtraj.Trajectory.make_molecules_whole``, bonds
        of the topology) in chunks that carry unit cells, before the selection: a featurizer must never see a
        bond stretched across the box.

    Returns
    -------
    Iterator[mdtraj.Trajectory]
        Chunks with positions ``[n_frames_in_chunk, n_selected, 3]`` (nm), times (ps) and unit cells (nm).
    """
    stride = _check_stride(stride)
    if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)) or chunk_frames < 0:
        raise ValueError(f"chunk_frames: expected an integer >= 0, found {chunk_frames!r}")
    topology, top_name = read_topology(top)
    return _iter_checked(Path(path), topology, top_name, resolve_selection(topology, selection), stride,
                         int(chunk_frames), make_whole)


def _iter_checked(path: Path, topology: mdtraj.Topology, top_name: str, atoms: np.ndarray | None, stride: int,
                  chunk_frames: int, make_whole: bool = False) -> Iterator[mdtraj.Trajectory]:
    sub_top = topology if atoms is None else topology.subset(atoms)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file {str(path)!r} does not exist")
    if chunk_frames == 0:  # mdtraj.iterload(chunk=0) drops ``stride``, so read the file in one load
        chunks = (mdtraj.load(str(path), top=topology, stride=stride) for _ in range(1))
    else:
        chunks = mdtraj.iterload(str(path), top=topology, chunk=chunk_frames, stride=stride)
    start = 0
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            if start == 0:
                raise ValueError(f"trajectory {str(path)!r}: expected at least one frame (stride {stride}), "
                                 "found none") from None
            return
        except OSError as err:  # mdtraj/dcdplugin: "Could not open file" for an empty or truncated file
            raise ValueError(f"trajectory {str(path)!r}: expected a readable {path.suffix or 'trajectory'} file with "
                             f"at least one frame, found an empty or unreadable file ({err})") from err
        except ValueError as err:  # mdtraj's atom-count message names neither file
            n_file = _file_atom_count(path)
            if n_file is not None and n_file != topology.n_atoms:
                raise ValueError(f"trajectory {str(path)!r} has {n_file} atoms per frame but topology {top_name} "
                                 f"has {topology.n_atoms} atoms") from err
            raise ValueError(f"could not load trajectory {str(path)!r} with topology {top_name}: {err}") from err
        if chunk.n_atoms != topology.n_atoms:  # formats where mdtraj does not check
            raise ValueError(f"trajectory {str(path)!r} has {chunk.n_atoms} atoms per frame but topology "
                             f"{top_name} has {topology.n_atoms} atoms")
        finite = np.isfinite(chunk.xyz).all(axis=(1, 2))
        if not finite.all():
            bad = start + int(np.argmin(finite))
            raise ValueError(f"trajectory {str(path)!r} has non-finite (NaN/inf) coordinates in frame {bad * stride} "
                             f"of the file (frame {bad} after stride {stride})")
        start += chunk.n_frames
        if make_whole and chunk.unitcell_vectors is not None:
            chunk.make_molecules_whole(inplace=True)
        if atoms is not None:
            chunk = mdtraj.Trajectory(chunk.xyz[:, atoms], sub_top, time=chunk.time,
                                      unitcell_lengths=chunk.unitcell_lengths, unitcell_angles=chunk.unitcell_angles)
        yield chunk


def load_trajectories(traj_paths: Sequence[str | os.PathLike], top: str | os.PathLike | mdtraj.Topology, *,
                      selection: Selection = None, stride: int = 1,
                      make_whole: bool = False) -> list[mdtraj.Trajectory]:
    """Load whole trajectory files, each validated against the topology (see :func:`iter_trajectory`).

    Parameters
    ----------
    traj_paths : sequence of str or path
        Trajectory files, all of the system described by ``top``.
    top : str, path or mdtraj.Topology
        Topology of all atoms in the files.
    selection : str, sequence of int or None
        mdtraj selection string or atom indices; None keeps every atom.
    stride : int
        Keep every ``stride``-th frame.
    make_whole : bool
        Make molecules whole in frames with unit cells (see :func:`iter_trajectory`).

    Returns
    -------
    list of mdtraj.Trajectory
        One per file, positions ``[n_frames, n_selected, 3]`` (nm), times in ps.
    """
    if isinstance(traj_paths, (str, os.PathLike)):
        raise TypeError(f"traj_paths: expected a sequence of paths, found a single path {str(traj_paths)!r}")
    if len(traj_paths) == 0:
        raise ValueError("traj_paths: expected at least one trajectory file, found an empty sequence")
    stride = _check_stride(stride)
    check_distinct_paths(traj_paths)
    topology, top_name = read_topology(top)
    atoms = resolve_selection(topology, selection)  # validate once, before any file is read
    trajectories = []
    for path in traj_paths:
        chunks = list(_iter_checked(Path(path), topology, top_name, atoms, stride, 0, make_whole))
        if not chunks:
            raise ValueError(f"trajectory {str(path)!r}: expected at least one frame (stride {stride}), found none")
        traj = chunks[0] if len(chunks) == 1 else mdtraj.join(chunks, check_topology=False)
        logger.info("loaded %s: %d frames, %d atoms", path, traj.n_frames, traj.n_atoms)
        trajectories.append(traj)
    return trajectories


def check_distinct_paths(paths: Sequence[str | os.PathLike], key: str = "traj_paths") -> None:
    """Raise ``ValueError`` if two entries name the same file (after resolving), which would count its frames twice.

    Parameters
    ----------
    paths : sequence of str or path
        Trajectory (or structure) files.
    key : str
        The argument or config key, for the message.
    """
    seen: dict[Path, str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise ValueError(f"{key}: expected distinct files, found {str(path)!r} twice"
                             + (f" (also as {seen[resolved]!r})" if seen[resolved] != str(path) else ""))
        seen[resolved] = str(path)


def trajectory_frame_count(path: str | os.PathLike, top: str | os.PathLike | mdtraj.Topology) -> int:
    """Number of frames in a trajectory file, read and validated by :func:`iter_trajectory`.

    Parameters
    ----------
    path : str or path
        The trajectory file.
    top : str, path or mdtraj.Topology
        Its topology.

    Returns
    -------
    int
        Frames in the file.
    """
    return sum(chunk.n_frames for chunk in iter_trajectory(path, top))


_AKMA_TIME_PS = 0.04888821  # CHARMM's AKMA time unit in ps (OpenMM's DCDFile writes the step in it)
_FORMATS_WITH_TIMES = (".xtc", ".trr", ".h5", ".nc", ".ncdf", ".netcdf", ".lh5", ".dtr")


def peek_trajectory(path: str | os.PathLike) -> tuple[int | None, int | None, float | None]:
    """(frames, atoms per frame, ps between frames) of a trajectory file, read cheaply from its header.

    Why: a stage validates lag times, atom counts and COLVAR lengths before it reads any coordinates. mdtraj gives
    DCD frames the times 0, 1, 2, ... whatever the file says, so the DCD interval is read from the CHARMM header
    (frames saved every NSAVC steps of DELTA AKMA time units); formats that store times give them per frame.

    Parameters
    ----------
    path : str or path
        A trajectory file.

    Returns
    -------
    n_frames, n_atoms : int or None
        None where the format cannot tell without reading everything.
    frame_interval_ps : float or None
        From a DCD header, or from the first two stored times of formats that store them; None otherwise
        (formats without times, a single frame, a header without a time step).
    """
    path = Path(path)
    n_frames = n_atoms = interval = None
    try:
        with mdtraj.open(str(path)) as handle:
            n_frames = int(len(handle))
    except Exception:  # formats without a cheap length
        n_frames = None
    n_atoms = _file_atom_count(path)
    suffix = path.suffix.lower()
    if suffix == ".dcd":
        with open(path, "rb") as handle:
            header = handle.read(92)
        if len(header) == 92 and header[4:8] == b"CORD":
            nsavc = int(np.frombuffer(header[16:20], dtype="<i4")[0])
            delta = float(np.frombuffer(header[44:48], dtype="<f4")[0])
            if nsavc > 0 and delta > 0:
                interval = float(f"{nsavc * delta * _AKMA_TIME_PS:.6g}")  # float32 header: 0.1000000003
    elif suffix in _FORMATS_WITH_TIMES:
        try:
            with mdtraj.open(str(path)) as handle:
                first = handle.read(n_frames=2)
            times = [x for x in first if isinstance(x, np.ndarray) and x.ndim == 1] if isinstance(first, tuple) else []
            if times and len(times[0]) == 2 and times[0][1] > times[0][0]:
                interval = float(times[0][1] - times[0][0])
        except Exception:  # only a convenience: callers then ask for frame_interval_ps
            interval = None
    return n_frames, n_atoms, interval
