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


def _peptide_like(rng, regular: int, entered: int) -> dict:
    """Frames of two residues: ``regular`` with both φ < 0, then ``entered`` with residue 2 in αL (φ > 0), whose
    F(TIC1, TIC2) overlaps the regular frames' (a state one torsion separates, which two TICs do not)."""
    x = np.concatenate([rng.normal(0.0, 0.3, regular), rng.normal(0.5, 0.15, entered)])
    y = np.concatenate([rng.normal(0.0, 0.3, regular), rng.normal(0.5, 0.15, entered)])
    phi = rng.vonmises(-1.2, 10.0, (regular + entered, 2))
    phi[regular:, 1] = rng.vonmises(1.0, 8.0, entered)
    psi = rng.vonmises(2.5, 4.0, (regular + entered, 2))
    return {"tics": np.stack([x, y], axis=1), "phi": phi, "psi": psi}


def test_the_settled_region_leaves_out_a_state_the_reference_entered_once_and_compares_the_rest():
    """A reference that enters residue 2's αL in its last eighth and stays: its halves flag residue 2 (and only it),
    the region is residue 2's (φ, ψ) bins both halves visited, and there an arm drawn from the same regular
    distribution matches the reference, where the RMS over all shared TIC bins does not (the αL frames share them)."""
    rng = np.random.default_rng(5)
    s = {"tica_bins": 20, "torsion_bins": 12, "fes_cutoff_kjmol": 20.0}
    ref = _peptide_like(rng, 35000, 5000)
    halves = ana.reference_halves_rms(ref, s)
    region = ana.settled_region(ref, s, halves)
    assert region["residues"] == [1]
    assert region["reference_fraction_left_out"] == pytest.approx(5000 / 40000, abs=0.01)
    inside = ana.in_region(ref["phi"], ref["psi"], region)
    assert inside[:35000].mean() > 0.99 and inside[35000:].mean() < 0.05  # αL's tail reaches shared bins
    # the bins in_region reads are the histogram's: the frames inside are the counts of the region's bins in
    # numpy's own 2-D histogram of the wrapped angles (shifted by 2π, so wrapping is exercised too)
    counts = np.histogram2d(ana.wrap_angle(ref["phi"][:, 1] + 2 * np.pi), ana.wrap_angle(ref["psi"][:, 1] - 2 * np.pi),
                            bins=12, range=((-np.pi, np.pi), (-np.pi, np.pi)))[0]
    shifted = ana.in_region(ref["phi"] + 2 * np.pi, ref["psi"] - 2 * np.pi, region)
    assert np.array_equal(shifted, inside) and inside.sum() == counts[region["bins"][1]].sum()
    assert "_torsion_surfaces" not in ana.public(halves) and set(ana.public(halves)) < set(halves)

    arm = _peptide_like(rng, 40000, 200)
    weights = rng.uniform(0.5, 1.5, len(arm["tics"]))
    weights /= weights.sum()
    run = {**arm, "keep": slice(None), "weights": weights}
    whole = ana.compare_fes(ref, [run], s)
    tic_only = ana.compare_fes(ref, [run], s, torsions=False)  # what rms_over_time reads at every prefix
    assert tic_only["rms_tica_kjmol"] == whole["rms_tica_kjmol"] and tic_only["outside_tica"] == whole["outside_tica"]
    assert "rms_torsions_per_residue_kjmol" not in tic_only
    settled = ana.compare_settled(ref, [run], s, region)
    own = ana.settled_halves(ref, s, region)
    outside = ~ana.in_region(arm["phi"], arm["psi"], region)
    assert settled["arm_probability_left_out"] == pytest.approx(weights[outside].sum())
    assert settled["arm_probability_left_out"] == pytest.approx(weights[40000:].sum(), abs=0.005)  # αL + sparse tails
    assert settled["rms_tica_kjmol"] < whole["rms_tica_kjmol"] - 0.4  # measured: 1.1-1.2 against 1.8-1.9
    assert settled["rms_tica_kjmol"] < own["rms_tica_kjmol"] + 0.3  # at the reference's own noise (1.2-1.3)
    assert max(own["outside_tica"]) < ana.OUTSIDE_MAX
    assert ana.settled_region(ref | {k: ref[k][:35000] for k in ("tics", "phi", "psi")}, s,
                              ana.reference_halves_rms({k: ref[k][:35000] for k in ("tics", "phi", "psi")}, s)) is None


def test_walkers_against_each_other_is_small_for_walkers_of_one_distribution_and_exposes_one_that_is_not():
    """Three reweighted walkers drawn from one distribution agree within sampling noise; a walker stuck in one
    basin differs from the other two by far more (the arm's own floor, beside the reference's halves)."""
    rng = np.random.default_rng(7)
    s = {"tica_bins": 16, "torsion_bins": 12, "fes_cutoff_kjmol": 20.0}

    def walker(n, stuck=False):
        x = rng.normal(-1.0 if stuck else 0.0, 0.3 if stuck else 1.0, n)
        y = rng.normal(0.0, 0.5, n)
        tor = rng.vonmises(-1.2, 4.0, (n, 2))
        w = rng.uniform(0.5, 1.5, n)
        return {"tics": np.stack([x, y], axis=1), "phi": tor, "psi": tor[:, ::-1].copy(), "keep": slice(n // 10, None),
                "weights": w[n // 10:] / w[n // 10:].sum()}

    rng_tics = ((-3.0, 3.0), (-1.5, 1.5))
    same = ana.walkers_against_each_other([walker(20000) for _ in range(3)], s, rng_tics)
    odd = ana.walkers_against_each_other([walker(20000), walker(20000), walker(20000, stuck=True)], s, rng_tics)
    assert len(same["rms_tica_walker_vs_rest_kjmol"]) == 3 and len(same["rms_torsions_walker_vs_rest_kjmol"]) == 3
    assert max(same["rms_tica_walker_vs_rest_kjmol"]) < 1.5
    assert odd["rms_tica_walker_vs_rest_kjmol"][2] > 3 * max(same["rms_tica_walker_vs_rest_kjmol"])
    assert max(same["rms_torsions_walker_vs_rest_kjmol"]) < 1.5  # the torsions are the same in every walker
    assert ana.walkers_against_each_other([walker(1000)], s, rng_tics) == {
        "rms_tica_walker_vs_rest_kjmol": [], "rms_torsions_walker_vs_rest_kjmol": []}


def _biased_walker(rng, n: int, stuck: bool = False) -> dict:
    """TIC1 drawn 1.5x broader than N(0, 1) with the bias V = kT ln(p/q) that reweights it back (or stuck near -1,
    the same bias); TIC2 and the torsions as the reference's."""
    x = rng.normal(-1.0, 0.3, n) if stuck else rng.normal(0.0, 1.5, n)
    tor = rng.vonmises(-1.2, 4.0, (n, 2))
    return {"tics": np.stack([x, rng.normal(0.0, 0.5, n)], axis=1), "phi": tor, "psi": tor[:, ::-1].copy(),
            "bias": kt_kjmol(300.0) * (x ** 2 / (2 * 1.5 ** 2) - x ** 2 / 2)}


def test_rms_over_time_falls_for_walkers_that_converge_and_stays_for_one_that_does_not():
    """From the first t ns of each walker, each prefix reweighted as a whole run (own burn-in): the RMS against the
    reference and each walker against the others fall for walkers of the right distribution (measured over 6 seeds:
    to 0.69-0.75 and 0.65-0.8 of the first point) and stay for an arm with a stuck walker (0.88-1.1); the last point
    is the whole walkers' comparison; the lengths run to the shortest walker."""
    rng = np.random.default_rng(0)
    s = {"tica_bins": 16, "torsion_bins": 12, "fes_cutoff_kjmol": 20.0, "frame_ps": 1.0}
    tor = rng.vonmises(-1.2, 4.0, (100000, 2))
    ref = {"tics": np.stack([rng.normal(0.0, 1.0, 100000), rng.normal(0.0, 0.5, 100000)], axis=1), "phi": tor,
           "psi": tor[:, ::-1].copy()}
    good = [_biased_walker(rng, 6000) for _ in range(3)]
    v = ana.rms_over_time(ref, good, s)
    assert v["ns_per_walker"] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert v["rms_tica_kjmol"][-1] < 0.85 * v["rms_tica_kjmol"][0]
    assert v["walker_vs_rest_tica_kjmol"][-1] < 0.85 * v["walker_vs_rest_tica_kjmol"][0]
    assert np.isnan(v["rms_tica_settled_kjmol"]).all()  # no region given
    whole = [{**w, **dict(zip(("keep", "weights"), ana.walker_weights(w["bias"])))} for w in good]
    assert v["rms_tica_kjmol"][-1] == pytest.approx(ana.compare_fes(ref, whole, s)["rms_tica_kjmol"])
    each = ana.walkers_against_each_other(whole, s, ana.tic_range(ref["tics"]))["rms_tica_walker_vs_rest_kjmol"]
    assert v["walker_vs_rest_tica_kjmol"][-1] == pytest.approx(np.mean(each))

    stuck = ana.rms_over_time(ref, good[:2] + [_biased_walker(rng, 6000, stuck=True)], s)
    assert stuck["walker_vs_rest_tica_kjmol"][-1] > 0.85 * stuck["walker_vs_rest_tica_kjmol"][0]
    assert stuck["walker_vs_rest_tica_kjmol"][-1] > 1.5 * v["walker_vs_rest_tica_kjmol"][-1]

    shorter = ana.rms_over_time(ref, good[:2] + [{k: x[:4800] for k, x in good[2].items()}], s)
    assert shorter["ns_per_walker"][-1] == pytest.approx(4.8) and len(shorter["ns_per_walker"]) == 6
    assert ana.rms_over_time(ref, [], s)["ns_per_walker"] == []


def test_rms_over_time_restricts_each_prefix_to_the_settled_region():
    """With the reference's settled region, the last point is :func:`compare_settled` of the whole walkers."""
    rng = np.random.default_rng(5)
    s = {"tica_bins": 20, "torsion_bins": 12, "fes_cutoff_kjmol": 20.0, "frame_ps": 1.0}
    ref = _peptide_like(rng, 35000, 5000)
    region = ana.settled_region(ref, s, ana.reference_halves_rms(ref, s))
    walkers = [{**_peptide_like(rng, 6000, 100), "bias": rng.normal(0.0, 1.0, 6100)} for _ in range(2)]
    v = ana.rms_over_time(ref, walkers, s, region, points=3)
    whole = [{**w, **dict(zip(("keep", "weights"), ana.walker_weights(w["bias"])))} for w in walkers]
    assert len(v["rms_tica_settled_kjmol"]) == 3
    assert v["rms_tica_settled_kjmol"][-1] == pytest.approx(ana.compare_settled(ref, whole, s, region)["rms_tica_kjmol"])
    assert v["rms_tica_settled_kjmol"][-1] != pytest.approx(v["rms_tica_kjmol"][-1])


def test_the_rms_over_time_plot_is_written_with_the_target_and_the_floors(tmp_path):
    over_time = {"ns_per_walker": [1.0, 2.0, 3.0], "rms_tica_kjmol": [5.0, 4.0, 3.0],
                 "rms_tica_settled_kjmol": [4.5, 3.5, 2.8], "walker_vs_rest_tica_kjmol": [6.0, 5.0, 4.5]}
    name = ana.plot_rms_over_time({"gnn": over_time, "distances": {**over_time, "rms_tica_settled_kjmol": [np.nan] * 3}},
                                  {"reference halves": 2.0, "reference halves, where they agree": None}, 2.5,
                                  tmp_path / "rms.png")
    assert name == "rms.png" and (tmp_path / "rms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_coverage_names_the_state_the_training_data_never_reached():
    """Training runs that never enter residue 2's αL leave the reference's αL share (1/8) unvisited on that residue
    and almost nothing on the other; runs that do enter it leave almost nothing anywhere. TIC1 core transitions are
    counted per run."""
    rng = np.random.default_rng(11)
    s = {"tica_bins": 20, "torsion_bins": 12, "fes_cutoff_kjmol": 20.0}
    ref = _peptide_like(rng, 35000, 5000)
    ref["cores"] = ana.two_state_cores(ref["tics"][:, 0])
    regular = [_peptide_like(rng, 8000, 0) for _ in range(2)]
    c = ana.training_coverage(ref, regular, s, dwell_frames=1)
    assert c["frames"] == 16000
    left_out = c["reference_outside_torsions_per_residue"]
    assert left_out[1] == pytest.approx(5000 / 40000, abs=0.02)
    assert left_out[0] < 0.01
    covering = ana.training_coverage(ref, [_peptide_like(rng, 6000, 2000)], s, dwell_frames=1)
    assert max(covering["reference_outside_torsions_per_residue"]) < 0.01
    assert covering["reference_outside_tica"] < 0.01
    # transitions: a run switching between the TIC1 cores k times counts k, a run inside one core none
    lo, hi = ref["cores"]["centres"]
    x = np.repeat(np.array([lo, hi, lo, hi]), 50)
    hop = {"tics": np.stack([x, np.zeros_like(x)], axis=1), "phi": np.full((200, 2), -1.2), "psi": np.full((200, 2), 2.5)}
    still = {**hop, "tics": np.stack([np.full(200, lo), np.zeros(200)], axis=1)}
    assert ana.training_coverage(ref, [hop, still], s, dwell_frames=10)["tic1_transitions_per_run"] == [3, 0]
    assert ana.training_coverage(ref, [], s, dwell_frames=1) == {}


def test_alpha_l_states_weighs_biased_frames_and_counts_only_visits_that_last():
    # residue 0: 100 frames at φ = -1.5, then 20 in αL (φ = 1.0); residue 1: flickers into αL for 1 frame every 10
    phi = np.full((120, 2), -1.5)
    phi[100:, 0] = 1.0
    phi[5::10, 1] = 1.0 + 2 * np.pi  # unwrapped angles are wrapped first
    unbiased = ana.alpha_l_states([{"phi": phi}], dwell_frames=5)
    assert unbiased["population"] == pytest.approx([20 / 120, 12 / 120])
    assert unbiased["transitions_per_run"] == [[1, 0]]  # the 1-frame flickers never last the dwell
    # residue 0 ends in its αL visit; residue 1's last frame is in φ < 0 though its flickers touched αL
    assert unbiased["ends_in_alpha_l_per_run"] == [[True, False]]
    # an entry into αL at the very end, shorter than the dwell, is neither a transition nor an open visit
    late = phi.copy()
    late[-3:, 1] = 1.0
    assert ana.alpha_l_states([{"phi": late}], dwell_frames=5)["ends_in_alpha_l_per_run"] == [[True, False]]
    assert ana.alpha_l_states([{"phi": late}], dwell_frames=3)["ends_in_alpha_l_per_run"] == [[True, True]]
    # both in αL at once: residue 1's flickers at frames 105 and 115, inside residue 0's visit
    assert unbiased["pairs"] == [(0, 1)] and unbiased["pair_population_per_run"] == [[pytest.approx(2 / 120)]]
    # a biased walker: αL frames carry a tenth of the weight of the others, the first 20 frames dropped as burn-in
    weights = np.where(phi[20:, 0] > 0, 0.1, 1.0)
    biased = ana.alpha_l_states([{"phi": phi, "keep": slice(20, None), "weights": weights}], dwell_frames=5)
    assert biased["population_per_run"][0][0] == pytest.approx(2.0 / (80 + 2.0))
    two = ana.alpha_l_states([{"phi": phi}, {"phi": np.full((50, 2), -1.5)}], dwell_frames=5)
    assert two["population"] == pytest.approx([10 / 120, 6 / 120])  # runs weigh alike
    assert ana.alpha_l_states([{"phi": np.zeros((0, 2))}], 5) == {"population_per_run": [], "transitions_per_run": [],
                                                                 "ends_in_alpha_l_per_run": [], "population": [],
                                                                 "pairs": [], "pair_population_per_run": []}


def _telegraph(states, dwell: int, rng) -> np.ndarray:
    """[n, 4] features of a two-state run: a slow ±1 coordinate (``states``, each held ``dwell`` frames) and noise."""
    x = np.repeat(np.asarray(states, dtype=float), dwell)
    noise = rng.normal(0.0, 0.1, (len(x), 4))
    return np.column_stack([x, np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)]) + noise


def test_transitions_are_counted_within_each_chain_never_across_the_join():
    """Chain 0 ends in B, chain 1 starts in A: pooled as one run the join would count as a transition."""
    x = np.concatenate([np.repeat([0.0, 2.0], 100), np.repeat([0.0, 2.0], 50)])
    cores = ana.two_state_cores(x)
    assert ana.tic1_transitions(x, cores, 10) == 3  # one run: A->B, the join B->A, A->B
    assert ana.tic1_transitions(x, cores, 10, lengths=[200, 100]) == 2
    assert [len(c) for c in ana.split_chains(x, [200, 100])] == [200, 100]
    late = ana.second_half_mask([200, 100])
    assert late.sum() == 150 and not late[:100].any() and late[100:200].all() and late[250:].all()
    basins = ana.reference_basins(x, cores, frame_ps=1.0, lengths=[200, 100])
    assert basins["dF_BA_halves_kjmol"] == [np.inf, -np.inf]  # every first half in A, every second in B
    assert basins["first_entry_ns_per_chain"] == [{"A": 0.0, "B": 0.1}, {"A": 0.0, "B": 0.05}]
    relaxation = ana.core_relaxation(x, cores, [1.0, 2.0], 1.0, lengths=[200, 100])
    assert relaxation["population_B"] == pytest.approx(0.5)


def test_one_chain_given_as_a_list_is_the_reference_as_before():
    rng = np.random.default_rng(1)
    features = _telegraph(rng.integers(0, 2, 40) * 2 - 1, 50, rng)
    alone = ana.reference_model(features, 1.0, 5.0, [2.0, 10.0], 10)
    listed = ana.reference_model([features], 1.0, 5.0, [2.0, 10.0], 10)
    assert np.allclose(alone["tics"], listed["tics"]) and alone["slowest_its_ps"] == listed["slowest_its_ps"]
    s = {"tica_bins": 10, "torsion_bins": 6, "fes_cutoff_kjmol": 20.0}
    ref = {"tics": alone["tics"], "phi": rng.uniform(-3, 3, (2000, 2)), "psi": rng.uniform(-3, 3, (2000, 2))}
    assert ana.public(ana.reference_halves_rms(ref, s)) == ana.public(
        ana.reference_halves_rms({**ref, "second_half": ana.second_half_mask([2000])}, s))


def test_two_chains_make_one_tica_model_and_their_phi_populations_weigh_by_frames():
    rng = np.random.default_rng(2)
    long, short = _telegraph(rng.integers(0, 2, 40) * 2 - 1, 50, rng), _telegraph([1, -1, 1, -1], 50, rng)
    model = ana.reference_model([long, short], 1.0, 5.0, [2.0, 10.0], 10)
    assert model["tics"].shape == (2200, 2)
    assert abs(np.corrcoef(model["tics"][:, 0], np.concatenate([long, short])[:, 0])[0, 1]) > 0.99
    phi = [np.full((2000, 1), 1.0), np.full((200, 1), -1.0)]  # chain 0 all αL, chain 1 none
    pooled = ana.alpha_l_states([{"phi": p} for p in phi], 10, weigh_frames=True)
    assert pooled["population"] == pytest.approx([2000 / 2200]) and np.allclose(pooled["population_per_run"], [[1], [0]])
    assert ana.alpha_l_states([{"phi": p} for p in phi], 10)["population"] == pytest.approx([0.5])
