"""The pentapeptide benchmark's judgement of its reference: ΔF between the slowest process's two states, per half."""

import numpy as np
import pytest

from benchmarks import _sampling_wlall_analysis as ana
from cvlearn.units import kt_kjmol


def test_basin_free_energy_counts_weighted_populations():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.0, 0.1, 3000), rng.normal(2.0, 0.1, 1000)])
    cores = ana.two_state_cores(x)
    assert cores["centres"][0] == pytest.approx(0.0, abs=0.02) and cores["centres"][1] == pytest.approx(2.0, abs=0.02)
    assert ana.basin_dF(x, None, cores) == pytest.approx(kt_kjmol(300.0) * np.log(3.0), rel=1e-12)
    # weights that undo the 3:1 imbalance make the states equal
    w = np.where(x < 1.0, 1.0, 3.0)
    assert ana.basin_dF(x, w, cores) == pytest.approx(0.0, abs=1e-12)
    assert ana.basin_dF(x[:3000], None, cores) == np.inf and ana.basin_dF(x[3000:], None, cores) == -np.inf


def test_reference_halves_expose_a_state_one_half_never_saw():
    """A run that stays in A for 3/4 of its length: RMS F over bins populated in both halves is blind to B (its
    bins are left out), ΔF per half is not."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.0, 0.1, 3000), rng.normal(2.0, 0.1, 1000)])
    y = rng.normal(0.0, 1.0, len(x))
    half = len(x) // 2
    f_a, f_b = (ana.pooled_fes([(x[p], y[p])], [None], 20, ((-0.5, 2.5), (-3.0, 3.0)))[0]
                for p in (slice(None, half), slice(half, None)))
    rms, n_bins = ana.fes_rms(f_a, f_b, 20.0)
    assert np.isfinite(rms) and n_bins > 0  # the halves "agree" on A's bins only
    basins = ana.reference_basins(x, ana.two_state_cores(x), frame_ps=2.0)
    assert basins["dF_BA_halves_kjmol"][0] == np.inf  # the first half never entered B
    assert np.isfinite(basins["dF_BA_halves_kjmol"][1])
    assert basins["first_entry_ns"] == {"A": 0.0, "B": pytest.approx(3000 * 2.0e-3)}


def test_basin_dF_over_time_shows_the_first_visit(tmp_path):
    x = np.concatenate([np.zeros(300), np.full(100, 2.0)])
    cores = ana.two_state_cores(x)
    t_ns, df = ana.basin_dF_over_time(x, None, cores, frame_ps=1.0, points=4)
    assert t_ns.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert np.isnan(df[:3]).all()  # B not yet visited: no finite ΔF
    assert df[3] == pytest.approx(kt_kjmol(300.0) * np.log(3.0))
    name = ana.plot_dF_convergence({"reference": [(t_ns, df)]}, tmp_path / "dF.png")
    assert (tmp_path / name).stat().st_size > 0


def _two_state_chain(n: int, p_ab: float, p_ba: float, seed: int) -> np.ndarray:
    """A two-state Markov chain (0 = A, 1 = B) of ``n`` frames, switching with these probabilities per frame."""
    rng = np.random.default_rng(seed)
    u, state, out = rng.random(n), 0, np.empty(n, dtype=np.int8)
    for i in range(n):
        state = 1 - state if u[i] < (p_ab if state == 0 else p_ba) else state
        out[i] = state
    return out


def test_core_relaxation_predicts_the_transitions_of_a_two_state_chain_and_exposes_flicker():
    """A Markov chain's counted transitions match 2 p_A p_B T / τ; brief excursions added on top inflate the count
    at a short dwell but not at a dwell longer than them, and not the prediction."""
    chain = _two_state_chain(200_000, 1.0 / 4000, 1.0 / 2000, seed=3)  # τ = 1 / (p_AB + p_BA) = 1333 frames
    x = np.where(chain == 1, 2.0, 0.0)
    cores = ana.two_state_cores(x)
    relax = ana.core_relaxation(x, cores, [100.0, 300.0], frame_ps=1.0)
    assert relax["tau_ps_resolved"] == pytest.approx(1333.0, rel=0.2)
    counted = ana.tic1_transitions(x, cores, 1)
    assert relax["predicted_transitions"] == pytest.approx(counted, rel=0.25)
    flicker = x.copy()
    for start in np.flatnonzero(chain[:-10] == 0)[::400]:  # excursions of 5 frames into B from A
        flicker[start:start + 5] = 2.0
    assert ana.tic1_transitions(flicker, cores, 1) > 1.5 * relax["predicted_transitions"]
    assert ana.tic1_transitions(flicker, cores, 20) == pytest.approx(counted, rel=0.1)
    none = ana.core_relaxation(np.zeros(1000), cores, [10.0], frame_ps=1.0)  # B never visited
    assert np.isnan(none["predicted_transitions"]) and none["population_B"] == 0.0


def test_reference_halves_rms_is_the_floor_an_arm_is_judged_against():
    """Halves drawn from one distribution agree to sampling noise; a second half whose TIC2 well moved does not,
    and the RMS grows with the shift: the number says how finely this reference can judge an arm."""
    rng = np.random.default_rng(2)
    n, s = 40000, {"tica_bins": 20, "torsion_bins": 12, "fes_cutoff_kjmol": 20.0}

    def reference(shift):
        tics = rng.normal(0.0, 1.0, (n, 2))
        tics[n // 2:, 1] += shift
        phi, psi = rng.vonmises(-1.2, 4.0, (n, 2)), rng.vonmises(2.5, 4.0, (n, 2))
        return {"tics": tics, "phi": phi, "psi": psi}

    same, moved, far = (ana.reference_halves_rms(reference(d), s) for d in (0.0, 0.75, 1.5))
    assert same["n_bins_tica"] > 50 and same["rms_tica_kjmol"] < 1.5
    assert moved["rms_tica_kjmol"] > 2.0 * same["rms_tica_kjmol"]
    assert far["rms_tica_kjmol"] > moved["rms_tica_kjmol"]
    # the torsions did not move: their halves agree in every case
    assert max(r["rms_torsions_kjmol"] for r in (same, moved, far)) < 1.5
    assert len(same["rms_torsions_per_residue_kjmol"]) == 2


def test_mass_outside_weighs_a_state_only_one_run_visited():
    """The halves of a run that finds B in its last eighth: RMS F over shared bins is blind to B, the second half's
    probability in bins the first never visited is B's share of it (1/4), and the first half has none outside."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.0, 0.1, 3500), rng.normal(2.0, 0.1, 500)])
    y = rng.normal(0.0, 0.3, len(x))
    n = len(x) // 2
    s = {"tica_bins": 20, "torsion_bins": 12, "fes_cutoff_kjmol": 20.0}
    tor = rng.vonmises(-1.2, 4.0, (len(x), 2))
    run = {"tics": np.stack([x, y], axis=1), "phi": tor, "psi": tor[:, ::-1].copy()}
    halves = ana.reference_halves_rms(run, s)
    second_outside_first, first_outside_second = halves["outside_tica"]  # [the "arm" (second), the "reference"]
    assert second_outside_first == pytest.approx(500 / (len(x) - n), abs=0.02)
    assert first_outside_second < 0.01  # only A's sparse tail bins the second half happened to miss
    assert np.isfinite(halves["rms_tica_kjmol"])
    # weights: a state holding a known share of a reweighted run's probability holds that share outside
    f_ref = ana.pooled_fes([(x[:3500], y[:3500])], [None], 20, ((-0.5, 2.5), (-2.0, 2.0)))[0]
    w = np.where(x > 1.0, 3.0, 1.0)
    f_w = ana.pooled_fes([(x, y)], [w], 20, ((-0.5, 2.5), (-2.0, 2.0)))[0]
    assert ana.mass_outside(f_w, f_ref) == pytest.approx(1500 / 5000, abs=0.01)
    assert ana.mass_outside(f_ref, f_w) == 0.0
    assert np.isnan(ana.mass_outside(np.full((2, 2), np.nan), f_ref[:2, :2]))
