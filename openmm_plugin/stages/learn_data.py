"""Inputs of ``cvlearn learn``: every check before compute, then one streaming pass over the trajectories.

:func:`check_inputs` validates files, atom counts, the selection, observables, the frame interval, the lag time,
the split and the COLVARs from headers alone (no coordinates read). :func:`read_inputs` then streams each
trajectory once through :func:`cvlearn.data.iter_trajectory` (molecules made whole there when the frames carry
unit cells) and keeps only what learning needs: selected positions, backbone torsions, the named observables.

Observable syntax (``observables: {name: spec}``; indices 0-based, as mdtraj counts):

* ``phi N`` / ``psi N`` / ``omega N`` / ``chi1 N``: the N-th such backbone/side-chain torsion (rad);
* ``torsion i j k l``, ``angle i j k`` (rad), ``distance i j`` (nm) by atom indices;
* ``rg`` or ``rg <selection>``: radius of gyration (nm) of the CV selection or of an mdtraj selection;
* ``rmsd`` or ``rmsd <selection>``: RMSD (nm, after superposition) to the topology file's structure.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import mdtraj
import numpy as np
import torch

from cvlearn.config import check_input_file
from cvlearn.data import (iter_trajectory, load_trajectories, peek_trajectory, read_colvar, read_topology,
                          select_atoms)
from cvlearn.data.lagged import log_weights_from_colvar, uneven_step
from cvlearn.data.splits import split_by_trajectory
from cvlearn.errors import ConfigError
from cvlearn.estimators.baselines import backbone_torsion_features

logger = logging.getLogger(__name__)

_TORSIONS = {"phi": mdtraj.compute_phi, "psi": mdtraj.compute_psi, "omega": mdtraj.compute_omega,
             "chi1": mdtraj.compute_chi1}
_BY_INDEX = {"torsion": 4, "angle": 3, "distance": 2}
OBSERVABLE_KINDS = (*_TORSIONS, *_BY_INDEX, "rg", "rmsd")


@dataclass
class Plan:
    """What the checks found: resolved files, atoms, frame interval (after stride), lag, split, COLVAR weights."""

    trajectories: list[Path]
    topology_path: Path
    topology: mdtraj.Topology
    atoms: np.ndarray
    frame_interval_ps: float | None  # None: read from the frame times in read_inputs
    n_frames_file: list[int | None]
    observables: dict  # name -> (kind, args)
    log_weights: list[np.ndarray] | None = None  # per trajectory (after stride), β(V − c)
    notes: list[str] = field(default_factory=list)


@dataclass
class LearnInputs:
    """What one pass over the trajectories gives (all per trajectory, after stride)."""

    positions: list[torch.Tensor]  # [T_i, n_selected, 3] nm float32, molecules whole
    torsions: list[np.ndarray] | None  # [T_i, 4 n] sin/cos of φ/ψ, None without backbone torsions
    observables: dict[str, list[np.ndarray]]
    frame_interval_ps: float
    periodic: bool
    lag: int  # frames
    train: list  # Segments
    validation: list

    @property
    def n_frames(self) -> list[int]:
        return [len(p) for p in self.positions]


def _parse_observable(name: str, spec, topology: mdtraj.Topology) -> tuple[str, tuple]:
    key = f"observables.{name}"
    if not isinstance(spec, str) or not spec.split():
        raise ConfigError(f"expected a string such as 'phi 0', 'distance 4 14', 'rg' or 'rmsd backbone', found {spec!r}",
                          key=key)
    kind, _, rest = spec.strip().partition(" ")
    rest = rest.strip()
    if kind not in OBSERVABLE_KINDS:
        raise ConfigError(f"expected one of {list(OBSERVABLE_KINDS)} first, found {kind!r}", key=key)
    if kind in ("rg", "rmsd"):
        if not rest:
            return kind, (None,)
        try:
            return kind, (select_atoms(topology, rest),)
        except ValueError as err:
            raise ConfigError(str(err), key=key) from None
    try:
        numbers = [int(x) for x in rest.split()]
    except ValueError:
        numbers = []
    if kind in _TORSIONS:
        count = len(_TORSIONS[kind](mdtraj.Trajectory(np.zeros((1, topology.n_atoms, 3)), topology))[0])
        if len(numbers) != 1 or not 0 <= numbers[0] < count:
            raise ConfigError(f"expected '{kind} N' with N in [0, {count}) ({count} {kind} torsions in the "
                              f"topology), found {spec!r}", key=key)
        return kind, (numbers[0],)
    size = _BY_INDEX[kind]
    if len(numbers) != size or not all(0 <= i < topology.n_atoms for i in numbers):
        raise ConfigError(f"expected '{kind}' and {size} atom indices in [0, {topology.n_atoms}), found {spec!r}",
                          key=key)
    return kind, tuple(numbers)


def _observable(kind: str, args: tuple, chunk: mdtraj.Trajectory, atoms: np.ndarray, reference) -> np.ndarray:
    if kind in _TORSIONS:
        return _TORSIONS[kind](chunk)[1][:, args[0]]
    if kind == "torsion":
        return mdtraj.compute_dihedrals(chunk, np.array([args]))[:, 0]
    if kind == "angle":
        return mdtraj.compute_angles(chunk, np.array([args]))[:, 0]
    if kind == "distance":
        return mdtraj.compute_distances(chunk, np.array([args]), periodic=False)[:, 0]
    selected = atoms if args[0] is None else args[0]
    if kind == "rg":
        return mdtraj.compute_rg(chunk.atom_slice(selected))
    return mdtraj.rmsd(chunk, reference, atom_indices=selected)


def _file_check(path, key: str, what: str) -> Path:
    try:
        return check_input_file(path, key, what)
    except FileNotFoundError as err:
        raise ConfigError(f"{what} {str(path)!r} does not exist", key=key) from err


def check_inputs(config) -> Plan:
    """Every check that needs no coordinates, each failing with one line naming the key (see module doc)."""
    top_path = _file_check(config.topology, "topology", "topology file")
    if not config.trajectories:
        raise ConfigError("expected one or more trajectory files, found none", key="trajectories")
    paths = [_file_check(p, "trajectories", "trajectory file") for p in config.trajectories]
    if len({p.resolve() for p in paths}) != len(paths):
        raise ConfigError(f"expected distinct files, found a repeated one in {list(config.trajectories)}",
                          key="trajectories")
    topology = read_topology(top_path)[0]
    try:
        atoms = select_atoms(topology, config.selection)
    except ValueError as err:
        raise ConfigError(str(err).removeprefix("selection "), key="selection") from None
    peeks = [peek_trajectory(p) for p in paths]
    for path, (_, n_atoms, _) in zip(paths, peeks):
        if n_atoms is not None and n_atoms != topology.n_atoms:
            raise ConfigError(f"trajectory {str(path)!r} has {n_atoms} atoms per frame but topology "
                              f"{str(top_path)!r} has {topology.n_atoms} atoms", key="trajectories")
    observables = {name: _parse_observable(name, spec, topology) for name, spec in (config.observables or {}).items()}
    if any(kind == "rmsd" for kind, _ in observables.values()) and top_path.suffix.lower() not in (".pdb", ".gro", ".h5",
                                                                                                   ".pdbx", ".cif"):
        raise ConfigError(f"rmsd needs coordinates in the topology file, found {top_path.suffix} "
                          f"{str(top_path)!r}", key="observables")
    interval = None if config.frame_interval_ps is None else config.frame_interval_ps * config.stride
    if interval is None:
        intervals = {p: i for p, (_, _, i) in zip(paths, peeks)}
        known = [i for i in intervals.values() if i is not None]
        if known and len(known) == len(paths):
            if max(known) - min(known) > 1e-3 * max(known):
                raise ConfigError(f"expected one frame interval, found {sorted(set(known))} ps in the trajectories "
                                  "(set frame_interval_ps or use consistent files)", key="frame_interval_ps")
            interval = known[0] * config.stride
        elif any(p.suffix.lower() not in (".xtc", ".trr", ".h5", ".nc", ".ncdf", ".netcdf", ".lh5", ".dtr")
                 for p, i in intervals.items() if i is None):
            bad = next(p for p, i in intervals.items() if i is None)
            raise ConfigError(f"null: the frame interval cannot be read from {str(bad)!r} (no time step in its "
                              "header or times); set frame_interval_ps", key="frame_interval_ps")
    plan = Plan(paths, top_path, topology, atoms, interval, [n for n, _, _ in peeks], observables)
    if interval is not None:
        check_lag(config, plan, [None if n is None else -(-n // config.stride) for n in plan.n_frames_file], interval)
    if config.biased is not None:
        plan.log_weights = _check_colvars(config, plan)
    return plan


def lag_frames(config, interval_ps: float) -> int:
    """The lag in frames (after stride); it must be a whole number of frames."""
    lag = config.lagtime_ps / interval_ps
    if abs(lag - round(lag)) > 1e-6 * max(1.0, lag) or round(lag) < 1:
        raise ConfigError(f"expected a positive multiple of the frame interval {interval_ps:g} ps (stride "
                          f"{config.stride}), found {config.lagtime_ps:g} ps", key="lagtime_ps")
    return int(round(lag))


def split_segments(config, n_frames: list[int]) -> tuple[list, list]:
    """Training and validation segments of trajectories of ``n_frames`` frames (after stride); of biased ones, the
    first ``biased.skip_fraction`` of each is left out (the bias's transient, see :class:`BiasedSpec`)."""
    try:
        train, val = split_by_trajectory(n_frames, config.validation_fraction, seed=0)
    except ValueError as err:
        raise ConfigError(str(err), key="validation_fraction") from None
    if config.biased is not None and config.biased.skip_fraction > 0:
        skip = [int(config.biased.skip_fraction * n) for n in n_frames]
        train, val = ([s._replace(start=max(s.start, skip[s.traj])) for s in part if s.stop > skip[s.traj]]
                      for part in (train, val))
    return train, val


def check_lag(config, plan: Plan, n_frames: list, interval_ps: float) -> tuple[list, list]:
    """Lag shorter than the longest trajectory, and a split in which both sides hold lagged pairs."""
    lag = lag_frames(config, interval_ps)
    known = [n for n in n_frames if n is not None]
    if len(known) < len(n_frames):
        return [], []
    longest = int(np.argmax(known))
    if lag >= known[longest]:
        raise ConfigError(f"lag {lag} frames ({config.lagtime_ps:g} ps) is not shorter than the longest trajectory "
                          f"{str(plan.trajectories[longest])!r} ({known[longest]} frames after stride "
                          f"{config.stride})", key="lagtime_ps")
    train, val = split_segments(config, known)
    for name, segments in (("training", train), ("validation", val)):
        if not any(s.stop - s.start > lag for s in segments):
            sizes = [s.stop - s.start for s in segments]
            raise ConfigError(f"the {name} part ({sizes} frames) has no pair of frames {lag} frames apart; use more "
                              "or longer trajectories, a shorter lag, or another validation_fraction",
                              key="validation_fraction")
    return train, val


def _check_colvars(config, plan: Plan) -> list[np.ndarray]:
    biased = config.biased
    if len(biased.colvars) != len(plan.trajectories):
        raise ConfigError(f"expected one COLVAR per trajectory ({len(plan.trajectories)}), found "
                          f"{len(biased.colvars)}", key="biased.colvars")
    out = []
    for colvar, traj, n_frames in zip(biased.colvars, plan.trajectories, plan.n_frames_file):
        path = _file_check(colvar, "biased.colvars", "COLVAR file")
        columns = read_colvar(path)
        n_rows = len(next(iter(columns.values()))) if columns else 0
        if n_frames is not None and n_rows != n_frames:
            raise ConfigError(f"COLVAR {str(path)!r} has {n_rows} rows, trajectory {str(traj)!r} has {n_frames} "
                              "frames", key="biased.colvars")
        time = columns.get("time")
        odd = None if time is None or len(time) <= 2 else uneven_step(time)
        if odd is not None:
            raise ConfigError(f"COLVAR {str(path)!r}: expected a row every {np.median(np.diff(time)):g} ps (row k = "
                              f"frame k), found a step of {time[odd + 1] - time[odd]:g} ps after row {odd} (time "
                              f"{time[odd]:g} ps)", key="biased.colvars")
        try:
            log_w = log_weights_from_colvar(columns, biased.temperature_k, bias_column=biased.bias_column,
                                            rct_column=biased.rct_column)
        except ValueError as err:
            raise ConfigError(f"{path}: {str(err).removeprefix('colvar: ')}", key="biased.colvars") from None
        out.append(log_w[::config.stride])
    return out


def read_inputs(config, plan: Plan, periodic: bool | None) -> LearnInputs:
    """One pass per trajectory: selected positions, torsions and observables (molecules whole if periodic)."""
    reference = None
    if any(kind == "rmsd" for kind, _ in plan.observables.values()):
        reference = load_trajectories([plan.topology_path], plan.topology)[0]
    positions, torsions, observables, times, has_cell = [], [], {n: [] for n in plan.observables}, [], []
    has_torsions = len(mdtraj.compute_phi(mdtraj.Trajectory(np.zeros((1, plan.topology.n_atoms, 3)),
                                                            plan.topology))[0]) > 0
    for path in plan.trajectories:
        xyz, tors, obs, time, cell = [], [], {n: [] for n in plan.observables}, [], False
        for chunk in iter_trajectory(path, plan.topology, stride=config.stride, make_whole=periodic is not False):
            cell = cell or chunk.unitcell_vectors is not None
            xyz.append(chunk.xyz[:, plan.atoms])
            time.append(np.asarray(chunk.time, dtype=np.float64))
            if has_torsions:
                tors.append(backbone_torsion_features(chunk))
            for name, (kind, args) in plan.observables.items():
                obs[name].append(_observable(kind, args, chunk, plan.atoms, reference))
        positions.append(torch.from_numpy(np.ascontiguousarray(np.concatenate(xyz), dtype=np.float32)))
        torsions.append(np.concatenate(tors) if has_torsions else None)
        for name in obs:
            observables[name].append(np.concatenate(obs[name]).astype(np.float64))
        times.append(np.concatenate(time))
        has_cell.append(cell)
    if periodic is None and any(has_cell) and not all(has_cell):
        raise ConfigError("auto: some trajectories carry unit cells and some do not; set periodic: true or false",
                          key="periodic")
    interval = plan.frame_interval_ps
    if interval is None:
        interval = _interval_from_times(plan.trajectories, times)
    n_frames = [len(p) for p in positions]
    if plan.log_weights is not None:
        for colvar, traj, lw, n in zip(config.biased.colvars, plan.trajectories, plan.log_weights, n_frames):
            if len(lw) != n:
                raise ConfigError(f"COLVAR {colvar!r} has {len(lw)} rows after stride, trajectory {str(traj)!r} has "
                                  f"{n} frames", key="biased.colvars")
    train, val = check_lag(config, plan, n_frames, interval)
    return LearnInputs(positions, torsions if has_torsions else None, observables, interval,
                       bool(any(has_cell)) if periodic is None else bool(periodic), lag_frames(config, interval),
                       train, val)


def _interval_from_times(paths: list[Path], times: list[np.ndarray]) -> float:
    steps = []
    for path, t in zip(paths, times):
        if len(t) < 2:
            continue
        d = np.diff(t)
        if d.min() <= 0 or d.max() - d.min() > 1e-3 * d.max():
            raise ConfigError(f"expected evenly spaced frame times in {str(path)!r}, found steps from {d.min():g} to "
                              f"{d.max():g} ps; set frame_interval_ps", key="frame_interval_ps")
        steps.append(float(np.median(d)))
    if not steps:
        raise ConfigError("null: no trajectory has two frames to read the interval from; set frame_interval_ps",
                          key="frame_interval_ps")
    if max(steps) - min(steps) > 1e-3 * max(steps):
        raise ConfigError(f"expected one frame interval, found {sorted(set(steps))} ps in the trajectories' times",
                          key="frame_interval_ps")
    return steps[0]
