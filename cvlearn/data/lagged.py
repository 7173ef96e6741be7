"""Time-lagged pairs, and learning slow CVs from biased runs: frame weights or a rescaled time axis.

:func:`lagged_pairs` pairs frames ``lagtime`` frames apart, never across trajectories. Two ways to turn a biased trajectory with bias V(x_t, t) into training pairs for a VAMPNet:

* **reweighted pairs** (``pair_weights="instantaneous"``): the pair (x_t, x_{t+lag}) gets the weight of its
  start frame, w_t = exp(β(V(x_t, t) − c(t))) (c(t) = metadynamics' rct; 0 for a static or OPES bias). That
  reweights the start of each pair to equilibrium and is exact when the bias does not act on the dynamics
  within one lag (e.g. a state-dependent start distribution); with a real bias force it is the usual
  approximation, good for lags short compared with the time the bias needs to move the system.
* **rescaled time** (Deep-TICA, Bonati et al. 2021; mlcolvar's ``find_timelagged_configurations``): frame k
  spans dt' = exp(β(V_k − c_k)) dt on the accelerated time axis t' = Σ exp(βV) dt, and pairs are frames that
  are ``lagtime_ps`` apart on t'. ``method="interval"`` (default) pairs frame i with every frame j whose t'-interval
  overlaps [t'_i + lag, t'_{i+1} + lag) and weights the pair by the overlap length (the joint measure of
  the pair on the t' axis; summed over j it is dt'_i, mlcolvar's w_t; the pair weight is mlcolvar's
  w_lag); ``"nearest"`` pairs i with the one frame nearest to t'_i + lag, weight dt'_i.

``lagtime_ps`` on the rescaled axis is in ps of *unbiased* time. When exp(βV) spans many orders of magnitude the
rescaled axis is dominated by a few frames; ``normalise=True`` divides t' by its mean acceleration, so lags
are in "ps of biased simulation time, averaged", the pragmatic choice when the lag is tuned by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, TypeVar

import numpy as np
import torch

from cvlearn.analysis.reweighting import log_weights_from_bias, weights_from_log
from cvlearn.data.colvar import read_colvar

PAIR_METHODS = ("interval", "nearest")
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def lagged_pairs(arrays: Sequence[ArrayT], lagtime: int) -> tuple[ArrayT, ArrayT]:
    """(x_t, x_{t+lagtime}) concatenated over trajectories, never pairing frames of different trajectories.

    Trajectories with ``lagtime`` or fewer frames contribute nothing; if that leaves no pair at all, raise.

    Parameters
    ----------
    arrays : sequence of np.ndarray or torch.Tensor
        Per-trajectory arrays ``[n_frames_i, ...]`` with the same per-frame shape, all numpy or all torch.
    lagtime : int
        Lag in frames (>= 1).

    Returns
    -------
    x0, xt : np.ndarray or torch.Tensor
        ``[n_pairs, ...]`` each, of the input type.
    """
    if isinstance(lagtime, bool) or not isinstance(lagtime, (int, np.integer)) or lagtime < 1:
        raise ValueError(f"lagtime: expected an integer >= 1 (frames), found {lagtime!r}")
    if len(arrays) == 0:
        raise ValueError("arrays: expected at least one trajectory, found none")
    is_torch = isinstance(arrays[0], torch.Tensor)
    if not all(isinstance(a, torch.Tensor) == is_torch for a in arrays):
        raise TypeError(f"arrays: expected all numpy arrays or all torch tensors, found {[type(a).__name__ for a in arrays]}")
    trailing = {tuple(a.shape[1:]) for a in arrays}
    if len(trailing) > 1:
        raise ValueError(f"arrays: expected the same per-frame shape in every trajectory, found {sorted(trailing)}")
    lengths = [len(a) for a in arrays]
    kept = [a for a in arrays if len(a) > lagtime]
    if not kept:
        raise ValueError(f"lagtime {lagtime} frames ≥ length of every trajectory (lengths {lengths})")
    cat = torch.cat if is_torch else np.concatenate
    return cat([a[:-lagtime] for a in kept]), cat([a[lagtime:] for a in kept])


def log_weights_from_colvar(colvar: Mapping[str, np.ndarray] | str | Path, temperature_k: float, *,
                            bias_column: str | None = None, rct_column: str | None = None) -> np.ndarray:
    """β(V − c) per COLVAR row, the log of each frame's reweighting factor (see ``analysis.reweighting``).

    Without ``bias_column`` the column is found: a unique PLUMED ``<label>.rbias`` (already V − c); else a
    unique ``<label>.bias`` (ours or PLUMED's) minus ``<label>.rct`` when present; else a column ``bias``.

    Parameters
    ----------
    colvar : mapping or str or path
        COLVAR columns by name, or a COLVAR file; bias columns in kJ/mol.
    temperature_k : float
        Temperature of the biased run (K).
    bias_column, rct_column : str or None
        Column names, to override the search.

    Returns
    -------
    np.ndarray
        ``[n_rows]`` float64 β(V − c).
    """
    source = str(colvar) if isinstance(colvar, (str, Path)) else "colvar"
    columns = read_colvar(colvar) if isinstance(colvar, (str, Path)) else dict(colvar)
    if not temperature_k > 0:
        raise ValueError(f"temperature_k: expected a positive temperature, found {temperature_k!r}")
    fields = list(columns)
    if bias_column is None:
        rbias = [f for f in fields if f.endswith(".rbias")]
        leaves = [f for f in fields if f.endswith(".bias")]
        if len(rbias) == 1:
            bias_column = rbias[0]
        elif len(leaves) == 1:
            bias_column = leaves[0]
            label = bias_column[: -len(".bias")]
            if rct_column is None and f"{label}.rct" in columns:
                rct_column = f"{label}.rct"
        elif "bias" in columns:
            bias_column = "bias"
        else:
            raise ValueError(f"{source}: expected one bias column ('<label>.rbias', '<label>.bias' or 'bias'), "
                             f"found fields {fields}; pass bias_column=")
    for name in (bias_column, rct_column):
        if name is not None and name not in columns:
            raise ValueError(f"{source}: expected a column {name!r}, found fields {fields}")
    rct = None if rct_column is None else columns[rct_column]
    log_w = log_weights_from_bias(columns[bias_column], temperature_k, rct)
    if not np.isfinite(log_w).all():
        raise ValueError(f"{source}: column {bias_column!r} has non-finite values")
    return log_w


def frame_weights(log_weights: Sequence[np.ndarray]) -> list[np.ndarray]:
    """exp(log w) per trajectory, with one common shift so weights stay comparable across trajectories.

    Parameters
    ----------
    log_weights : sequence of np.ndarray
        Per-trajectory ``[n_frames_i]`` β(V − c), e.g. from :func:`log_weights_from_colvar`.

    Returns
    -------
    list of np.ndarray
        Per-trajectory ``[n_frames_i]`` float64 weights; the largest over all trajectories is 1.
    """
    arrays = [np.asarray(lw, dtype=np.float64).reshape(-1) for lw in log_weights]
    if not arrays:
        raise ValueError("log_weights: expected at least one trajectory, found none")
    flat = weights_from_log(np.concatenate(arrays), normalise=False)
    return np.split(flat, np.cumsum([len(a) for a in arrays])[:-1])


def rescaled_time(log_weights: np.ndarray, dt_ps: float, normalise: bool = False) -> np.ndarray:
    """Frame boundaries t'_0 = 0, t'_{k+1} = t'_k + exp(log w_k) dt on the rescaled axis.

    Parameters
    ----------
    log_weights : np.ndarray
        ``[n_frames]`` β(V − c) of one trajectory.
    dt_ps : float
        Interval between frames (ps).
    normalise : bool
        Divide by the mean acceleration (total t' equals total simulated time).

    Returns
    -------
    np.ndarray
        ``[n_frames + 1]`` boundaries (ps).
    """
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if not dt_ps > 0:
        raise ValueError(f"dt_ps: expected a positive frame interval, found {dt_ps!r}")
    if lw.size == 0 or not np.isfinite(lw).all():
        raise ValueError(f"log_weights: expected a non-empty finite array, found {lw.size} values")
    if lw.max() > 700:
        raise ValueError(f"log_weights: max β(V−c) = {lw.max():.0f} overflows exp(); subtract a constant and use "
                         "normalise=True (a constant shift rescales the whole time axis)")
    dt = np.exp(lw) * dt_ps
    if normalise:
        dt = dt / dt.mean() * dt_ps
    return np.concatenate([[0.0], np.cumsum(dt)])


def rescaled_time_pairs(boundaries: np.ndarray, lagtime_ps: float, method: str = "interval"):
    """(i0, it, weight) of frame pairs ``lagtime_ps`` apart on the rescaled axis ``boundaries`` (see module doc).

    ``interval``: all overlaps of the shifted frame intervals with the frame intervals, found at once by
    merging both sets of breakpoints (O(N log N)); every elementary segment belongs to exactly one pair.

    Parameters
    ----------
    boundaries : np.ndarray
        ``[n_frames + 1]`` non-decreasing frame boundaries (ps), from :func:`rescaled_time`; a frame of zero
        length (below the axis's float resolution) is in no pair.
    lagtime_ps : float
        Lag on the rescaled axis (ps).
    method : {"interval", "nearest"}

    Returns
    -------
    i0, it : np.ndarray
        ``[n_pairs]`` int frame indices of the start and end of each pair.
    weight : np.ndarray
        ``[n_pairs]`` float64 pair weights (ps on the rescaled axis).
    """
    lag = lagtime_ps
    b = np.asarray(boundaries, dtype=np.float64).reshape(-1)
    # Non-decreasing, not strictly: a frame whose weight is ~1e-16 of the elapsed t' (a 2-ns OPES-explore run spans
    # e^31 in weight) adds nothing to the float64 sum. Such a frame has zero length on the axis and so no pair.
    if b.size < 2 or np.any(np.diff(b) < 0) or not b[-1] > b[0]:
        raise ValueError("boundaries: expected N + 1 non-decreasing frame boundaries spanning a positive time "
                         "(see rescaled_time)")
    if not lag > 0:
        raise ValueError(f"lagtime_ps: expected a positive lag on the rescaled axis, found {lag!r}")
    if method not in PAIR_METHODS:
        raise ValueError(f"method: expected one of {list(PAIR_METHODS)}, found {method!r}")
    n = b.size - 1
    if method == "nearest":
        starts = b[:-1]
        ok = starts + lag < b[-1]
        i0 = np.nonzero(ok)[0]
        centres = 0.5 * (b[:-1] + b[1:])
        target = starts[i0] + lag + 0.5 * np.diff(b)[i0]  # centre of the shifted interval
        j = np.clip(np.searchsorted(centres, target), 1, n - 1)
        it = np.where(np.abs(centres[j - 1] - target) <= np.abs(centres[j] - target), j - 1, j)
        weight = np.diff(b)[i0]
        keep = weight > 0
        return i0[keep], it[keep], weight[keep]
    points = np.unique(np.concatenate([b, b + lag]))
    points = points[(points >= b[0] + lag) & (points <= b[-1])]
    if points.size < 2:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    mid = 0.5 * (points[:-1] + points[1:])
    length = np.diff(points)
    it = np.searchsorted(b, mid, side="right") - 1
    i0 = np.searchsorted(b + lag, mid, side="right") - 1
    keep = (length > 0) & (i0 >= 0) & (i0 < n) & (it >= 0) & (it < n)
    return i0[keep], it[keep], length[keep]


def biased_pairs(log_weights: Sequence[np.ndarray], dt_ps: float, lagtime_ps: float, method: str = "interval",
                 normalise: bool = False) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per-trajectory (i0, it, weight) on each trajectory's rescaled axis, for ``VAMPNet.fit(train_pairs=...)``.

    Parameters
    ----------
    log_weights : sequence of np.ndarray
        Per-trajectory ``[n_frames_i]`` β(V − c).
    dt_ps : float
        Interval between frames (ps).
    lagtime_ps : float
        Lag on the rescaled axis (ps).
    method : {"interval", "nearest"}
    normalise : bool
        See :func:`rescaled_time`.

    Returns
    -------
    list of (i0, it, weight)
        One triple of ``[n_pairs_i]`` arrays per trajectory (see :func:`rescaled_time_pairs`).
    """
    return [rescaled_time_pairs(rescaled_time(lw, dt_ps, normalise), lagtime_ps, method) for lw in log_weights]


def self_pair_fraction(pairs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """Share of the pair weight that pairs a frame with itself: such pairs carry no kinetics (the lag is shorter
    than the frame on the rescaled axis).

    Parameters
    ----------
    pairs : sequence of (i0, it, weight)
        Per-trajectory ``[n_pairs_i]`` arrays, as :func:`biased_pairs` returns them.

    Returns
    -------
    float
        In [0, 1]; 0 when there is no pair weight at all.
    """
    total = sum(float(w.sum()) for _, _, w in pairs)
    same = sum(float(w[i0 == it].sum()) for i0, it, w in pairs)
    return same / total if total > 0 else 0.0


def effective_sample_size(log_weights: np.ndarray) -> float:
    """Kish's (Σw)² / Σw² of the frame weights exp(log w) (shifted by the maximum, so nothing overflows).

    Parameters
    ----------
    log_weights : np.ndarray
        ``[n_frames]`` β(V − c).

    Returns
    -------
    float
        Between 1 and n_frames.
    """
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    w = np.exp(lw - lw.max())
    return float(w.sum() ** 2 / (w ** 2).sum())


@dataclass
class BiasedRun:
    """A biased run ready for learning: selected-atom positions ``[n_frames, n_atoms, 3]`` (nm, float32),
    β(V − c) ``[n_frames]``, frame times ``[n_frames]`` (ps) and the frame interval ``dt_ps`` (ps).

    Attributes
    ----------
    positions : torch.Tensor
        ``[n_frames, n_atoms, 3]`` nm, float32, selected atoms only.
    log_weights : np.ndarray
        ``[n_frames]`` β(V − c) (dimensionless), the reweighting log-weights.
    time_ps : np.ndarray
        ``[n_frames]`` frame times, ps.
    dt_ps : float
        Frame interval, ps.
    trajectory : mdtraj.Trajectory
        The kept frames with all atoms, for analysis.
    """

    positions: torch.Tensor
    log_weights: np.ndarray
    time_ps: np.ndarray
    dt_ps: float
    trajectory: object  # the mdtraj.Trajectory (all atoms), for analysis


def uneven_step(time_ps: np.ndarray, rtol: float = 1e-3) -> int | None:
    """Index of the first step of ``time_ps`` that differs from the median step by more than ``rtol`` of it, or None.

    Row k of a biased run's COLVAR belongs to frame k only while the rows are evenly spaced: a missing row would pair
    every later row with the next frame.

    Parameters
    ----------
    time_ps : np.ndarray
        ``[n_rows]`` times, ps.
    rtol : float
        Tolerance relative to the median step.

    Returns
    -------
    int or None
        ``i`` such that ``time_ps[i + 1] - time_ps[i]`` is the first odd step.
    """
    steps = np.diff(np.asarray(time_ps, dtype=np.float64))
    if steps.size == 0:
        return None
    dt = float(np.median(steps))
    odd = np.flatnonzero(np.abs(steps - dt) > rtol * abs(dt))
    return int(odd[0]) if odd.size else None


def load_biased_run(traj_path: str | Path, top_path: str | Path, colvar_path: str | Path, temperature_k: float, *,
                    atom_indices: Sequence[int] | None = None, bias_column: str | None = None,
                    rct_column: str | None = None, skip_ps: float = 0.0) -> BiasedRun:
    """Trajectory + its bias log, row k of the COLVAR belonging to frame k (as our reporters and
    ``run_md(on_report=...)`` write them); frames before ``skip_ps`` (bias build-up) are dropped.

    Parameters
    ----------
    traj_path, top_path : str or path
        The biased trajectory and its topology.
    colvar_path : str or path
        Its COLVAR file (one row per frame; bias in kJ/mol, ``time`` in ps).
    temperature_k : float
        Temperature of the run (K).
    atom_indices : sequence of int or None
        Atoms kept in ``positions``; None keeps all.
    bias_column, rct_column : str or None
        See :func:`log_weights_from_colvar`.
    skip_ps : float
        Time (ps) dropped from the start.

    Returns
    -------
    BiasedRun
        Positions ``[n_frames, n_selected, 3]`` (nm), β(V − c) ``[n_frames]``, times (ps), frame interval (ps).
    """
    from cvlearn.data.trajectories import load_trajectories

    traj = load_trajectories([traj_path], top_path)[0]
    columns = read_colvar(colvar_path)
    lw = log_weights_from_colvar(columns, temperature_k, bias_column=bias_column, rct_column=rct_column)
    if len(lw) != traj.n_frames:
        raise ValueError(f"{colvar_path}: expected one row per frame of {traj_path} ({traj.n_frames}), found {len(lw)}")
    time_ps = np.asarray(columns["time"], dtype=np.float64) if "time" in columns else None
    if time_ps is None or len(time_ps) < 2:
        raise ValueError(f"{colvar_path}: expected a 'time' column with at least 2 rows, found fields {list(columns)}")
    steps = np.diff(time_ps)
    dt = float(np.median(steps))
    if dt <= 0 or uneven_step(time_ps) is not None:
        raise ValueError(f"{colvar_path}: expected evenly spaced 'time' (ps), found steps from {steps.min()} to {steps.max()}")
    keep = time_ps >= time_ps[0] + skip_ps - 1e-9
    xyz = traj.xyz[keep] if atom_indices is None else traj.xyz[keep][:, list(atom_indices)]
    return BiasedRun(torch.from_numpy(np.ascontiguousarray(xyz, dtype=np.float32)), lw[keep], time_ps[keep], dt,
                     traj[np.nonzero(keep)[0]])
