"""Count slow φ transitions of alanine dipeptide, the event a good CV must capture, and compare event rates.

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


def _count_one(phi_rad, eq: tuple[float, float], ax: tuple[float, float]) -> int:
    phi = np.asarray(phi_rad, dtype=np.float64)
    if phi.ndim == 2 and phi.shape[1] == 1:  # mdtraj.compute_phi gives [n_frames, n_dihedrals]
        phi = phi[:, 0]
    if phi.ndim != 1:
        raise ValueError(f"phi_rad: expected shape [n_frames] or [n_frames, 1], found {phi.shape}")
    if not np.all(np.isfinite(phi)):
        raise ValueError("phi_rad: expected finite angles in radians, found NaN or inf")
    deg = (np.degrees(phi) + 180.0) % 360.0 - 180.0  # wrap to [-180, 180)
    state = np.full(deg.shape, -1, dtype=np.int8)
    state[(deg > eq[0]) & (deg < eq[1])] = 0
    state[(deg > ax[0]) & (deg < ax[1])] = 1
    visited = state[state >= 0]  # the sequence of cores, frames between cores dropped
    return int(np.count_nonzero(visited[1:] != visited[:-1]))


def count_phi_transitions(
    phi_rad: np.ndarray | Sequence[np.ndarray],
    *,
    eq_core_deg: tuple[float, float] = EQ_CORE_DEG,
    ax_core_deg: tuple[float, float] = AX_CORE_DEG,
) -> int:
    """Number of transitions between the C7eq/β core and the C7ax/αL core of the backbone angle φ.

    Cores (open intervals, degrees, after wrapping φ to [-180, 180)):
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
