import numpy as np
import pytest

from cvlearn.analysis.transitions import (AX_BASIN_DEG, AX_CORE_DEG, committed_cores, count_core_transitions,
                                          count_phi_transitions, last_core, phi_basins)


def rad(*deg):
    return np.radians(np.array(deg, dtype=np.float64))


def test_simple_round_trip():
    assert count_phi_transitions(rad(-150, -70, 0, 60, 70, 0, -60)) == 2


def test_jitter_between_cores_not_counted():
    # around the φ = 0 barrier and around the ±180° wrap, never reaching the other core
    assert count_phi_transitions(rad(-60, -20, 20, -20, 25, -50, 179, -179, 170, -170, 110, -100)) == 0


def test_path_through_wrap_counts():
    # C7eq -> across ±180° -> down to the αL core
    assert count_phi_transitions(rad(-150, -175, 175, 140, 110, 80)) == 1


def test_hysteresis_needs_core_entry():
    assert count_phi_transitions(rad(60, 25, -25, 28, 65)) == 0
    assert count_phi_transitions(rad(60, 25, -25, -31, 28, 65)) == 2


def test_mdtraj_shape_and_list_sum():
    one = rad(-100, 60, -100)[:, None]  # [n_frames, 1] as mdtraj.compute_phi returns
    assert count_phi_transitions(one) == 2
    assert count_phi_transitions([one, one[:, 0], rad(60, 60)]) == 4


def test_angles_outside_pi_are_wrapped():
    assert count_phi_transitions(rad(-100 + 360, 60 - 720)) == 1


def test_bad_input_raises():
    with pytest.raises(ValueError, match="phi_rad"):
        count_phi_transitions(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="phi_rad"):
        count_phi_transitions(rad(0, np.nan))
    with pytest.raises(ValueError, match="disjoint"):
        count_phi_transitions(rad(0), eq_core_deg=(-180, 40))
    with pytest.raises(ValueError, match="ax_core_deg"):
        count_phi_transitions(rad(0), ax_core_deg=(100, 30))


def test_phi_basins_is_the_one_basin_definition():
    phi = np.radians([-170.0, -60.0, -1.0, 1.0, 60.0, 119.0, 121.0, 179.0, 240.0])
    in_ax, in_eq = phi_basins(phi)
    assert in_ax.tolist() == [False, False, False, True, True, True, False, False, False]
    assert in_eq.tolist() == [True, True, True, False, False, False, False, False, True]  # 240° wraps to -120°
    assert AX_BASIN_DEG[0] <= AX_CORE_DEG[0] < AX_CORE_DEG[1] <= AX_BASIN_DEG[1]  # the core lies in the basin


def test_rate_ratio_ci_covers_the_true_ratio_at_its_level():
    """Exact (Clopper-Pearson) intervals are conservative: over many Poisson draws they hold the true ratio at
    least `level` of the time, and they narrow as the counts grow."""
    from cvlearn.analysis import rate_ratio_ci

    rng = np.random.default_rng(0)
    true_ratio, rate_ref, t, t_ref = 5.0, 0.15, 12.0, 150.0  # the WLALL benchmark's scale: per ns, ns
    k = rng.poisson(true_ratio * rate_ref * t, 2000)
    k_ref = rng.poisson(rate_ref * t_ref, 2000)
    intervals = np.array([rate_ratio_ci(a, t, b, t_ref)[1:] for a, b in zip(k, k_ref)])
    covered = np.mean((intervals[:, 0] <= true_ratio) & (true_ratio <= intervals[:, 1]))
    assert 0.95 <= covered < 0.995
    ratio, low, high = rate_ratio_ci(10, 12.0, 21, 144.0)
    assert ratio == pytest.approx((10 / 12.0) / (21 / 144.0)) and low < ratio < high
    _, low4, high4 = rate_ratio_ci(40, 48.0, 84, 576.0)  # same rates, 4x the time
    assert high4 - low4 < 0.6 * (high - low)


def test_rate_ratio_ci_edges_and_refusals():
    from cvlearn.analysis import rate_ratio_ci

    assert rate_ratio_ci(0, 12.0, 21, 144.0)[:2] == (0.0, 0.0)
    assert rate_ratio_ci(5, 10.0, 0, 100.0)[0] == float("inf")
    with pytest.raises(ValueError, match="time, time_ref: expected > 0"):
        rate_ratio_ci(1, 0.0, 1, 1.0)
    with pytest.raises(ValueError, match="events, events_ref: expected counts"):
        rate_ratio_ci(-1, 1.0, 1, 1.0)


def test_core_transitions_ignore_visits_shorter_than_the_dwell():
    """One long stay in B with flickers back into A: one transition there and one back, not every flicker."""
    a, b = np.zeros, lambda n: np.full(n, 2.0)
    core_a, core_b = (-np.inf, 0.5), (1.5, np.inf)
    x = np.concatenate([a(100), b(30), a(3), b(40), a(2), b(50), a(100)])
    assert count_core_transitions(x, core_a, core_b) == 6
    assert count_core_transitions(x, core_a, core_b, min_dwell_frames=20) == 2
    # frames between the cores keep the last core; a short first visit still sets the starting core
    x = np.concatenate([b(2), np.full(10, 1.0), a(100), b(25)])
    assert count_core_transitions(x, core_a, core_b, min_dwell_frames=20) == 2  # B -> A -> B
    assert count_core_transitions(np.ones(5), core_a, core_b) == 0  # never in a core
    # the committed sequence: its last entry is where the run ended, a short final visit left out
    assert committed_cores(x, core_a, core_b, min_dwell_frames=20) == [1, 0, 1]
    assert committed_cores(x, core_a, core_b, min_dwell_frames=30) == [1, 0]
    assert committed_cores(np.ones(5), core_a, core_b) == []
    with pytest.raises(ValueError, match="min_dwell_frames"):
        count_core_transitions(x, core_a, core_b, min_dwell_frames=0)
    with pytest.raises(ValueError, match="b: expected"):
        count_core_transitions(x, core_a, (2.0, 1.0))


def test_last_core_fills_the_frames_between_cores_and_leaves_the_start_unassigned():
    x = np.array([1.0, 0.0, 1.0, 1.0, 2.0, 1.0, 0.5, 1.5])
    assert last_core(x, (0.0, 0.5), (1.5, 2.0)).tolist() == [-1, 0, 0, 0, 1, 1, 0, 1]  # closed intervals
