"""Count slow transitions between two cores of an observable (alanine dipeptide's φ, a TIC, an RMSD), the event a
good CV must capture, and compare event rates.

A frame is assigned to a core only when it is well inside a basin; frames between the cores keep the
last core (hysteresis), so thermal jitter around a barrier top or around the ±180° wrap does not
count as a transition.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

EQ_CORE_DEG = (-180.0, -30.0)  # C7eq / β / PII basin, φ < 0
AX_CORE_DEG = (30.0, 100.0)  # C7ax / αL basin, 0 < φ < 120°
# The basins themselves (for ΔF(C7ax − C7eq)); the cores above sit inside them.
AX_BASIN_DEG = (0.0, 120.0)  # C7ax / αL
EQ_BASIN_DEG = (-180.0, 0.0)  # C7eq / β / αR


def phi_basins(phi_rad) -> tuple[np.ndarray, np.ndarray]:
    """Which frames lie in the C7ax and in the C7eq basin of the backbone angle φ (the one basin definition).

    Parameters
    ----------
    phi_rad : np.ndarray
        ``[n_frames]`` φ in radians (any branch; wrapped to [-180°, 180°) here).

    Returns
    -------
    tuple of np.ndarray
        ``(in_ax, in_eq)``, boolean ``[n_frames]``: 0° < φ < 120° and -180° <= φ < 0°.
    """
    deg = (np.degrees(np.asarray(phi_rad, dtype=np.float64)) + 180.0) % 360.0 - 180.0
    in_ax = (deg > AX_BASIN_DEG[0]) & (deg < AX_BASIN_DEG[1])
    return in_ax, (deg >= EQ_BASIN_DEG[0]) & (deg < EQ_BASIN_DEG[1])


def _check_core(name: str, core) -> tuple[float, float]:
    lo, hi = (float(v) for v in core)
    if not -180.0 <= lo < hi <= 180.0:
        raise ValueError(f"{name}: expected (lo, hi) in degrees with -180 <= lo < hi <= 180, found {core!r}")
    return lo, hi


def _core(name: str, core) -> tuple[float, float]:
    lo, hi = (float(v) for v in core)
    if not lo < hi:
        raise ValueError(f"{name}: expected (lo, hi) with lo < hi, found {core!r}")
    return lo, hi


def last_core(values, a, b) -> np.ndarray:
    """The core each frame was last in: 0 for ``a``, 1 for ``b``, -1 before the first core visit.

    Parameters
    ----------
    values : np.ndarray
        ``[n_frames]`` the observable (rad, nm, a TIC, ...).
    a, b : (float, float)
        The two cores, closed intervals ``(lo, hi)`` in the observable's units (``±inf`` for a one-sided core).

    Returns
    -------
    np.ndarray
        ``[n_frames]`` int8: a frame between the cores keeps the last core (hysteresis).
    """
    values = np.asarray(values, dtype=np.float64)
    a, b = _core("a", a), _core("b", b)
    state = np.full(values.shape, -1, dtype=np.int8)
    state[(values >= a[0]) & (values <= a[1])] = 0
    state[(values >= b[0]) & (values <= b[1])] = 1
    seen = np.flatnonzero(state >= 0)
    if seen.size == 0:
        return state
    filled = seen[np.searchsorted(seen, np.arange(len(state)), side="right") - 1]  # the last core frame so far
    return np.where(np.arange(len(state)) >= seen[0], state[filled], -1).astype(np.int8)


def committed_cores(values, a, b, *, min_dwell_frames: int = 1) -> list[int]:
    """The cores a run committed to, in order: 0 for ``a``, 1 for ``b``, consecutive entries alternate.

    A visit shorter than ``min_dwell_frames`` does not count as having left the previous core (the first core visit
    counts however short: it only sets where the run starts). Why the dwell: a projection such as a TIC can reach the
    other core for a moment and return without the molecule committing to the other state; counted, those
    excursions read as transitions (the pentapeptide reference: 25 transitions along TIC1 at a 20-ps dwell, 7 from
    200 ps to 2 ns, and a two-state model of its 8-ns relaxation predicts about 9).

    Parameters
    ----------
    values : np.ndarray
        ``[n_frames]`` the observable.
    a, b : (float, float)
        The two cores, closed intervals in the observable's units (``±inf`` allowed).
    min_dwell_frames : int
        Frames a visit must last in the new core (before the next core change) to count.

    Returns
    -------
    list[int]
        Empty if no core was visited; the last entry is the core the run ended in, as far as the dwell tells (a
        visit to the other core at the very end that is shorter than the dwell does not change it).
    """
    if int(min_dwell_frames) < 1:
        raise ValueError(f"min_dwell_frames: expected >= 1, found {min_dwell_frames!r}")
    state = last_core(values, a, b)
    visited = state[state >= 0]
    if visited.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, visited[1:] != visited[:-1]])
    lengths = np.diff(np.r_[starts, visited.size])
    kept = [int(visited[starts[0]])]
    for label, length in zip(visited[starts[1:]], lengths[1:]):
        if length >= min_dwell_frames and label != kept[-1]:
            kept.append(int(label))
    return kept


def count_core_transitions(values, a, b, *, min_dwell_frames: int = 1) -> int:
    """Entries into one core after last visiting the other, each kept only if it lasts ``min_dwell_frames``
    (:func:`committed_cores`, whose arguments it takes).

    Returns
    -------
    int
    """
    return max(0, len(committed_cores(values, a, b, min_dwell_frames=min_dwell_frames)) - 1)


def _count_one(phi_rad, eq: tuple[float, float], ax: tuple[float, float]) -> int:
    phi = np.asarray(phi_rad, dtype=np.float64)
    if phi.ndim == 2 and phi.shape[1] == 1:  # mdtraj.compute_phi gives [n_frames, n_dihedrals]
        phi = phi[:, 0]
    if phi.ndim != 1:
        raise ValueError(f"phi_rad: expected shape [n_frames] or [n_frames, 1], found {phi.shape}")
    if not np.all(np.isfinite(phi)):
        raise ValueError("phi_rad: expected finite angles in radians, found NaN or inf")
    return count_core_transitions((np.degrees(phi) + 180.0) % 360.0 - 180.0, eq, ax)  # wrapped to [-180, 180)


def count_phi_transitions(
    phi_rad: np.ndarray | Sequence[np.ndarray],
    *,
    eq_core_deg: tuple[float, float] = EQ_CORE_DEG,
    ax_core_deg: tuple[float, float] = AX_CORE_DEG,
) -> int:
    """Number of transitions between the C7eq/β core and the C7ax/αL core of the backbone angle φ.

    Cores (closed intervals, degrees, after wrapping φ to [-180, 180)):
    eq = (-180, -30) and ax = (30, 100). A transition is counted each time the trajectory, having last
    been in one core, enters the other; frames outside both cores (-30..30, 100..180) never count.

    Parameters
    ----------
    phi_rad : np.ndarray or sequence of np.ndarray
        φ in radians, shape [n_frames] or [n_frames, 1] (as ``mdtraj.compute_phi`` returns), or a list of such
        arrays (one per independent trajectory), whose counts are summed.
    eq_core_deg, ax_core_deg : (float, float)
        The two cores (lo, hi), degrees in [-180, 180], disjoint.

    Returns
    -------
    int
        Number of core-to-core transitions.
    """
    eq = _check_core("eq_core_deg", eq_core_deg)
    ax = _check_core("ax_core_deg", ax_core_deg)
    if max(eq[0], ax[0]) < min(eq[1], ax[1]):
        raise ValueError(f"eq_core_deg {eq_core_deg!r} and ax_core_deg {ax_core_deg!r}: expected disjoint cores")
    if isinstance(phi_rad, (list, tuple)):
        return sum(_count_one(p, eq, ax) for p in phi_rad)
    return _count_one(phi_rad, eq, ax)


def rate_ratio_ci(events: int, time: float, events_ref: int, time_ref: float,
                  level: float = 0.95) -> tuple[float, float, float]:
    """Ratio of two event rates, (events / time) / (events_ref / time_ref), with its exact confidence interval.

    Why: "k× more transitions than unbiased MD" rests on counts of rare events, often a few tens; the ratio's
    uncertainty is then large and must be shown beside it. The interval is the exact conditional one for two Poisson
    counts: given n = events + events_ref, events is binomial with p = r·time / (r·time + time_ref), and the
    Clopper-Pearson bounds on p map to bounds on r. It treats events as independent; transitions that come in
    bursts (a walker recrossing a few times in a row) make the true interval wider.

    Parameters
    ----------
    events, events_ref : int
        Counted events (≥ 0) in the run and in the reference.
    time, time_ref : float
        Observation times (> 0, any one unit, the same for both), e.g. ns of MD.
    level : float
        Confidence level, in (0, 1).

    Returns
    -------
    (ratio, low, high) : (float, float, float)
        The point estimate and the interval's bounds; ``inf`` where ``events_ref`` is 0, ``nan`` where both are.
    """
    from scipy.stats import beta

    if events < 0 or events_ref < 0 or int(events) != events or int(events_ref) != events_ref:
        raise ValueError(f"events, events_ref: expected counts >= 0, found {events!r}, {events_ref!r}")
    if not (time > 0 and time_ref > 0):
        raise ValueError(f"time, time_ref: expected > 0, found {time!r}, {time_ref!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected in (0, 1), found {level!r}")
    k, n = int(events), int(events) + int(events_ref)
    if n == 0:
        return float("nan"), 0.0, float("inf")
    tail = 0.5 * (1.0 - level)
    p_low = beta.ppf(tail, k, n - k + 1) if k > 0 else 0.0
    p_high = beta.ppf(1.0 - tail, k + 1, n - k) if k < n else 1.0
    scale = time_ref / time
    to_ratio = lambda p: scale * p / (1.0 - p) if p < 1.0 else float("inf")  # noqa: E731
    return to_ratio(k / n), float(to_ratio(p_low)), float(to_ratio(p_high))
