"""The pentapeptide benchmark's walkers grow across sessions: a larger ``--walker-ns`` reopens the ended walkers."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import _sampling_wlall_runs as runs
from benchmarks.sampling_wlall import FULL, extended_walker_ns, interim_walker, reference_target_ns
from cvlearn.run_dir import open_run
from openmm_plugin.stages.bias import BiasConfig


def _ended_walker(tmp_path, n_steps: int, failure=None) -> BiasConfig:
    config = BiasConfig(cv="cv.pt", system="pentapeptide_wlall", out=str(tmp_path / "w"), n_steps=n_steps)
    run = open_run(tmp_path / "w" / "run.json", config, extendable=("n_steps",))
    if failure is None:
        run.mark_finished(md_steps=n_steps)
    (tmp_path / "w" / "outcome.json").write_text(json.dumps({"failure": failure, "ms_per_step": 1.0}))
    return config


def test_a_longer_walker_is_not_done_but_still_analysed(tmp_path):
    config = _ended_walker(tmp_path, 1000)
    assert runs.walker_done(config)
    longer = BiasConfig(**{**config.__dict__, "n_steps": 2000})
    assert not runs.walker_done(longer) and runs.walker_outcome(longer)["ms_per_step"] == 1.0
    open_run(tmp_path / "w" / "run.json", longer, extendable=("n_steps",)).mark_finished(md_steps=2000)
    assert runs.walker_done(longer)


def test_a_blown_up_walker_stays_done_at_any_length(tmp_path):
    config = _ended_walker(tmp_path, 1000, failure="step 600: the simulation blew up")
    assert runs.walker_done(BiasConfig(**{**config.__dict__, "n_steps": 5000}))


def test_a_rerun_without_walker_ns_goes_on_at_the_extended_length(tmp_path):
    open_run(tmp_path / "benchmark.run.json", {"walker_ns": 4.0, "seeds": 3})
    args = argparse.Namespace(walker_ns=None)
    assert extended_walker_ns(args, tmp_path, {"walker_ns": 2.0})["walker_ns"] == 4.0
    assert extended_walker_ns(argparse.Namespace(walker_ns=3.0), tmp_path, {"walker_ns": 3.0})["walker_ns"] == 3.0
    assert extended_walker_ns(args, tmp_path / "new", {"walker_ns": 2.0})["walker_ns"] == 2.0


def _walker_files(out, n_frames: int, failure=None, ended=True) -> BiasConfig:
    """A walker directory as ``cvlearn bias`` leaves it: trajectory.dcd, final.pdb, COLVAR (row k = frame k)."""
    import mdtraj

    out.mkdir(parents=True)
    top = mdtraj.Topology()
    residue = top.add_residue("ALA", top.add_chain())
    for name, element in (("N", "nitrogen"), ("CA", "carbon"), ("C", "carbon")):
        top.add_atom(name, mdtraj.element.get_by_symbol(element[0].upper()), residue)
    xyz = np.random.default_rng(len(str(out))).normal(size=(n_frames, 3, 3)).astype(np.float32)
    traj = mdtraj.Trajectory(xyz, top)
    traj[-1].save_pdb(str(out / "final.pdb"))
    traj.save_dcd(str(out / "trajectory.dcd"))
    rows = [f"{k + 1} {0.1 * k:.3f} {k:.1f} 0.0" for k in range(n_frames)]
    (out / "COLVAR").write_text("\n".join(["#! FIELDS time cv1 bias opes.rct", *rows]) + "\n")
    if ended:
        (out / "outcome.json").write_text(json.dumps({"failure": failure, "ms_per_step": 1.0}))
    return BiasConfig(cv="cv.pt", system="pentapeptide_wlall", out=str(out), n_steps=1000)


def test_retrain_data_is_the_first_retrain_ns_of_each_walker_that_ran_through(tmp_path):
    import pytest

    from cvlearn.data import read_colvar
    from cvlearn.data.trajectories import load_trajectories

    s = {"retrain_ns": 0.005, "frame_ps": 1.0}  # 5 frames
    good = _walker_files(tmp_path / "bias" / "gnn_s0", 12)
    running = _walker_files(tmp_path / "bias" / "gnn_s1", 12, ended=False)
    assert runs.retrain_data(tmp_path, s, [good, running], "gnn_retrained") is None  # read only after every walker ended once
    (tmp_path / "bias" / "gnn_s1" / "outcome.json").write_text(json.dumps({"failure": "blew up", "ms_per_step": 1.0}))
    (dcd, colvar), = runs.retrain_data(tmp_path, s, [good, running], "gnn_retrained")  # the blown-up one is left out
    assert (dcd.name, colvar.name) == ("gnn_s0.dcd", "gnn_s0.colvar")
    assert dcd.parent == tmp_path / "retrain" / "data"  # where the CV file of the arm lives (state of older runs)
    columns = read_colvar(colvar)
    assert list(columns["bias"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    short, = load_trajectories([dcd], tmp_path / "bias" / "gnn_s0" / "final.pdb")
    whole, = load_trajectories([tmp_path / "bias" / "gnn_s0" / "trajectory.dcd"], tmp_path / "bias" / "gnn_s0" / "final.pdb")
    np.testing.assert_allclose(short.xyz, whole.xyz[:5], atol=1e-6)
    too_short = _walker_files(tmp_path / "bias" / "gnn_s2", 3)
    with pytest.raises(RuntimeError, match=r"gnn_s2: 3 frames, retraining needs the first 5"):
        runs.retrain_data(tmp_path, s, [too_short], "gnn_retrained")
    # an arm retrained from the native torsions' walkers learns in its own directory, from their COLVAR as written
    torsion_walker = _walker_files(tmp_path / "bias" / "torsions_2d_s0", 12)
    (dcd, _), = runs.retrain_data(tmp_path, s, [torsion_walker], "gnn_torsions_2d")
    assert dcd == tmp_path / "retrain_torsions_2d" / "data" / "torsions_2d_s0.dcd"
    assert runs.retrain_dir(tmp_path, "gnn_torsions_2d") / "cv.pt" == tmp_path / runs.ARMS["gnn_torsions_2d"]


def test_a_stopped_walker_is_analysed_as_it_stands_once_it_holds_half_its_length(tmp_path):
    s = {"frame_ps": 1.0, "walker_ns": 0.01}  # 10 frames planned
    stopped = _walker_files(tmp_path / "a", 4, ended=False)
    assert not interim_walker(stopped, s)  # under half: not yet
    halfway = _walker_files(tmp_path / "b", 5, ended=False)
    assert interim_walker(halfway, s)
    assert not interim_walker(_walker_files(tmp_path / "c", 5), s)  # an ended walker is analysed as ended
    assert not interim_walker(BiasConfig(cv="cv.pt", system="pentapeptide_wlall", out=str(tmp_path / "d")), s)


def test_the_2d_arm_biases_both_components_of_the_gnn_cv_and_the_others_the_settings_components(tmp_path):
    s = {**FULL, "components": [0]}
    two_d = runs.walker_config(tmp_path, s, "gnn_2d", 0, [0.3, 0.4])
    one_d = runs.walker_config(tmp_path, s, "gnn", 0, [0.3])
    assert two_d.components == (0, 1) and two_d.opes.sigma == (0.3, 0.4)
    assert one_d.components == (0,) and two_d.cv == one_d.cv  # one CV file, biased in 2-D and in 1-D
    assert runs.walker_dir(tmp_path, "gnn_2d", 0) != runs.walker_dir(tmp_path, "gnn", 0)


def test_the_torsion_arm_biases_trp_psi_and_leu2_phi_on_the_native_route(tmp_path):
    """Its CV file holds the torsions the analysis calls Trp ψ and Leu2 φ (same atoms, same angles as mdtraj on the
    start frame), and its walkers run natively: no PythonForce, so no compile and no force guard."""
    import mdtraj

    from cvlearn.export import load_cv
    from systems import pentapeptide_wlall as wl

    path = runs.torsion_cv(tmp_path, "torsions_2d")
    cv, spec = load_cv(path)
    assert spec.extra["cv_names"] == ["psi_W1", "phi_L2"] and list(spec.component_periods) == [2 * np.pi] * 2
    molecule = wl.build(minimize=False)
    frame = mdtraj.Trajectory(molecule.positions_nm[None], mdtraj.Topology.from_openmm(molecule.topology))
    (_, psi), (_, phi) = mdtraj.compute_psi(frame), mdtraj.compute_phi(frame)  # W L A L L: ψ_W is psi[0], φ_L2 phi[1]
    want = [psi[0, 0], phi[0, 1]]
    np.testing.assert_allclose(cv(torch.as_tensor(molecule.positions_nm)).detach().numpy(), want, atol=1e-5)
    config = runs.walker_config(tmp_path, {**FULL, "components": [0]}, "torsions_2d", 0, [0.3, 0.3])
    assert (config.route, config.compile, config.force_guard_kjmol_nm, config.components) == ("native", False, None,
                                                                                              (0, 1))
    assert runs.torsion_cv(tmp_path, "torsions_2d") == path  # exported once: the walkers' run records hash it


def test_the_planned_reference_holds_the_transitions_the_unbiased_rate_needs():
    """20 x ITS, or longer where the rate so far gives fewer than min_reference_transitions; capped; the user's."""
    auto = argparse.Namespace(reference_ns="auto")
    model = {"slowest_its_ps": 8000.0, "ns_analysed": 190.0, "transitions": 7}
    assert reference_target_ns(auto, FULL, model) == pytest.approx(10 * 190.0 / 7)  # 271 ns > 20 x 8 ns
    assert reference_target_ns(auto, FULL, {**model, "transitions": 30}) == pytest.approx(160.0)  # 20 x ITS
    assert reference_target_ns(auto, FULL, {**model, "transitions": 0}) == FULL["reference_max_ns"]
    assert reference_target_ns(auto, FULL, None) == FULL["first_chunk_ns"]
    assert reference_target_ns(argparse.Namespace(reference_ns="50"), FULL, model) == 50.0


def test_the_reference_is_not_passed_while_one_half_holds_a_state_the_other_never_visited():
    """The halves' RMS over shared bins can meet its bound while the second half sits in a state the first never
    entered; the outside-probability row says so."""
    from benchmarks._sampling_wlall_analysis import OUTSIDE_MAX
    from benchmarks.sampling_wlall import targets

    def rows(outside):
        ref = {"its_factor": 20.0, "slowest_its_ps": 1e4, "ns_analysed": 300.0, "transitions": 12,
               "basins": {"dF_BA_halves_kjmol": [-1.0, -1.5]},
               "halves": {"rms_tica_kjmol": 1.9, "outside_tica": outside}}
        return {r["name"].split(" (")[0]: r for r in targets({"arms": {}, "reference": ref})}

    name = "reference, the larger half's probability in F(TIC1,TIC2) bins the other half never visited"
    unsampled, fine = rows([0.24, 0.0005]), rows([0.004, 0.002])
    assert unsampled["reference RMS F(TIC1,TIC2), first half vs second half"]["met"] is True
    assert unsampled[name]["value"] == 0.24 and unsampled[name]["met"] is False
    assert fine[name]["met"] is True and fine[name]["target"] == OUTSIDE_MAX
    assert rows(None)[name]["met"] is None


def test_the_settled_rows_stand_beside_the_issues_rows_and_only_where_the_halves_flagged_a_residue():
    """The restricted RMS is a row of its own: the issue's row keeps its value and verdict; a baseline arm's row
    has no target; without a flagged residue there is no such row."""
    from benchmarks.sampling_wlall import targets

    arm = {"rms_tica_kjmol": 5.8, "rms_torsions_kjmol": 4.5, "rate_vs_reference_per_ns": 9.0,
           "rate_vs_reference_ci95": [2.0, 30.0], "walkers_ended": 3, "blown_up": 0,
           "settled": {"rms_tica_kjmol": 2.3, "rms_torsions_kjmol": 4.4, "arm_probability_left_out": 0.004}}
    ref = {"its_factor": 20.0, "slowest_its_ps": 1e4, "ns_analysed": 300.0, "transitions": 12,
           "basins": {"dF_BA_halves_kjmol": [-1.0, -1.5]}, "halves": {"rms_tica_kjmol": 1.9, "outside_tica": [0.24, 0.0]},
           "settled": {"residues": [1], "fraction_left_out": 0.125,
                       "halves": {"rms_tica_kjmol": 2.05, "outside_tica": [0.001, 0.0]}}}
    rows = targets({"arms": {"gnn_2d": arm, "distances": arm}, "reference": ref})
    by = {r["name"]: r for r in rows}
    issue = by["RMS F(TIC1,TIC2) vs reference, gnn_2d"]
    assert issue["value"] == 5.8 and issue["met"] is False
    settled = [r for r in rows if r["name"].startswith("RMS F(TIC1,TIC2) vs reference where")]
    assert [r["name"].endswith("gnn_2d") for r in settled] == [True, False]
    assert settled[0]["value"] == 2.3 and settled[0]["met"] is True and "residue 2" in settled[0]["name"]
    assert "12 %" in settled[0]["name"] and "0.4 %" in settled[0]["name"]
    assert settled[1]["target"] is None and settled[1]["met"] is None  # the baseline's
    own = [r for r in rows if r["name"].startswith("reference RMS F(TIC1,TIC2), first half vs second half, where")]
    assert len(own) == 1 and own[0]["met"] is True
    del ref["settled"]
    assert not any("halves agree" in r["name"] for r in targets({"arms": {"gnn_2d": arm}, "reference": ref}))


def test_the_rms_over_time_line_names_each_arms_first_middle_and_last_point():
    from benchmarks.sampling_wlall import _over_time_lines

    v = {"ns_per_walker": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "rms_tica_kjmol": [8.0, 7.0, 6.0, 5.0, 4.0, 3.0],
         "rms_tica_settled_kjmol": [np.nan] * 6, "walker_vs_rest_tica_kjmol": [9.0, 8.0, 7.5, 7.0, 6.5, 6.0]}
    line = " ".join(_over_time_lines({"arms": {"gnn": {"rms_over_time": v}, "old": {}}}))
    assert "gnn 1 ns 8.00 (n/a; 9.00) → 3 ns 6.00 (n/a; 7.50) → 6 ns 3.00 (n/a; 6.00)" in line
    assert "old" not in line
    assert _over_time_lines({"arms": {"old": {}}}) == []


def test_the_coverage_line_names_the_residue_the_training_data_left_out_most():
    from benchmarks.sampling_wlall import _coverage_lines

    c = {"ns": 6.0, "temperature_k": 400.0, "frames": 6000, "reference_outside_tica": 0.0012, "arms": ["gnn", "gnn_2d"],
         "reference_outside_torsions_per_residue": [0.001, 0.205, 0.0, 0.0, 0.002], "tic1_transitions_per_run": [3, 1, 0]}
    hot = {**c, "temperature_k": 600.0, "arms": ["gnn_hot_2d"], "reference_outside_torsions_per_residue": [0.0, 0.04,
                                                                                                        0.0, 0.0, 0.0]}
    lines = _coverage_lines({"training_coverage": {"train": c, "train_hot": hot}})
    first, second = lines[1], lines[3]
    assert "of gnn, gnn_2d could learn" in first and "`train` (6 ns at 400 K, 6000 frames)" in first
    assert "0.1 %, 20 %, 0 %, 0 %, 0.2 % (most: residue 2)" in first and "training run: 3, 1, 0." in first
    assert "of gnn_hot_2d could learn" in second and "at 600 K" in second and "4 %" in second
    assert "cannot know it" in second and "cannot know it" not in first  # the closing sentence once, at the end
    assert _coverage_lines({}) == [] and _coverage_lines({"training_coverage": {}}) == []


def test_each_arm_learns_from_its_training_set_and_a_set_is_done_when_all_its_runs_finished(tmp_path):
    from openmm_plugin.stages.simulate import output_prefix

    assert {arm: runs.training_set_of(arm) for arm in runs.ARMS} == {
        "gnn": "train", "distances": "train", "gnn_retrained": "train", "gnn_2d": "train",
        "gnn_hot_2d": "train_hot", "distances_hot_2d": "train_hot",  # retrained: its source arm's set
        "torsions_2d": None, "gnn_torsions_2d": None}  # native torsions: nothing learned; retrained from them: none
    assert runs.walker_config(tmp_path, FULL, "gnn_torsions_2d", 0, [0.3, 0.4]).route == "python"  # a learned CV
    s = {**FULL, "train_seeds": 2}
    hot = [runs.training_config(tmp_path, s, "train_hot", seed) for seed in range(2)]
    assert [c.temperature_k for c in hot] == [600.0, 600.0] and hot[0].out == str(tmp_path / "train_hot")
    assert runs.training_config(tmp_path, s, "train", 0).temperature_k == 400.0
    assert runs.walker_config(tmp_path, s, "gnn_hot_2d", 0, [0.3, 0.4]).components == (0, 1)
    assert runs.walker_config(tmp_path, s, "gnn_hot_2d", 0, [0.3, 0.4]).cv == str(tmp_path / "learn_hot" / "cv.pt")
    assert not runs.training_done(tmp_path, s, "train_hot")
    for i, config in enumerate(hot):  # the record cvlearn simulate writes, finished for the first run only
        run = open_run(output_prefix(config) + ".run.json", config)
        if i == 0:
            run.mark_finished(n_frames=1)
    assert not runs.training_done(tmp_path, s, "train_hot")
    open_run(output_prefix(hot[1]) + ".run.json", hot[1]).mark_finished(n_frames=1)
    assert runs.training_done(tmp_path, s, "train_hot") and not runs.training_done(tmp_path, s, "train")
    assert runs.learned(tmp_path, "train_hot") is None


def test_an_arm_with_no_walker_analysed_yet_meets_no_target():
    from benchmarks.sampling_wlall import targets

    arm = {"rate_vs_reference_per_ns": float("nan"), "blown_up": 0, "walkers_ended": 0, "walkers_running": 0}
    rows = {r["name"]: r for r in targets({"arms": {"gnn_hot_2d": arm, "gnn": {**arm, "walkers_ended": 3}}})}
    assert rows["gnn_hot_2d walkers that blew up (of 0 ended)"]["met"] is None
    assert rows["gnn walkers that blew up (of 3 ended)"]["met"] is True
    assert all(r["met"] is None for name, r in rows.items() if "gnn_hot_2d" in name)


def test_the_alpha_l_table_has_a_row_for_the_reference_and_each_analysed_arm():
    from benchmarks.sampling_wlall import _alpha_l_lines

    ref = {"population_per_run": [[0.01, 0.23]], "transitions_per_run": [[4, 1]], "population": [0.01, 0.23],
           "ends_in_alpha_l_per_run": [[False, True]]}  # arm: a result written before the flag, read without it
    arm = {"population_per_run": [[0.0, 0.72], [0.0, 0.0002]], "transitions_per_run": [[0, 2], [0, 0]],
           "population": [0.0, 0.3601]}
    lines = _alpha_l_lines({"reference": {"alpha_l": ref, "transition_dwell_ps": 200.0},
                            "arms": {"torsions_2d": {"alpha_l": arm}, "gnn": {}}})  # gnn: no walker analysed yet
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| run | residue 1 | residue 2 |"
    assert table[1] == "| reference (unbiased) | 1 %; 4 | 23 %; 1+ |"
    assert table[2] == "| torsions_2d | 0 % (0 %, 0 %); 0, 0 | 36 % (72 %, 0.02 %); 2, 0 |"
    assert len(table) == 3 and "200 ps" in lines[1]
    assert not any("at once" in line for line in lines)  # results written before the pairs: no pair lines
    ref["pairs"], ref["pair_population_per_run"] = [(0, 1)], [[0.002]]
    arm["pairs"], arm["pair_population_per_run"] = [(0, 1)], [[0.70], [0.0]]
    lines = _alpha_l_lines({"reference": {"alpha_l": ref, "transition_dwell_ps": 200.0},
                            "arms": {"torsions_2d": {"alpha_l": arm}}})
    assert lines[-1] == "- residues 1 and 2: reference (unbiased) 0.2 %; torsions_2d 35 % (70 %, 0 %)"
    arm["pair_population_per_run"] = [[0.005], [0.0]]  # no run reaches 1 %: the pair is not shown
    assert not any("at once" in line for line in _alpha_l_lines({"reference": {"alpha_l": ref, "transition_dwell_ps": 200.0},
                                                                "arms": {"torsions_2d": {"alpha_l": arm}}}))
    assert _alpha_l_lines({"reference": None, "arms": {}}) == []


def test_an_arm_biases_only_the_components_its_cv_has():
    # a VAMP projection may export fewer outputs than asked (a --quick retrain kept 1 of 2)
    assert runs.arm_components(FULL, "gnn_torsions_2d") == (0, 1)
    assert runs.arm_components(FULL, "gnn_torsions_2d", n_cvs=1) == (0,)
    assert runs.walker_config(Path("w"), FULL, "gnn_torsions_2d", 0, [0.3], n_cvs=1).components == (0,)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_each_child_runs_on_one_core_of_its_own(tmp_path):
    """OpenMM's CPU platform hands each force to a worker thread: a child pinned to one core keeps that hand-off on
    the core (2.4x cheaper per WLALL step on a 2-core VM), and two children do not share a core."""
    cores = sorted(os.sched_getaffinity(0))
    code = ("import os, pathlib, time; time.sleep(1.5); "
            "pathlib.Path({path!r}).write_text(','.join(map(str, sorted(os.sched_getaffinity(0)))))")
    paths = [tmp_path / f"child{k}.txt" for k in range(2)]
    tasks = [(f"child{k}", exec, (code.format(path=str(path)),), path.is_file) for k, path in enumerate(paths)]
    assert runs.run_children(tasks, runs.Budget(None), jobs=2, min_start_s=0.0) == []
    masks = [path.read_text().split(",") for path in paths]
    assert all(len(mask) == 1 for mask in masks)
    assert {int(mask[0]) for mask in masks} == set(cores[:2])


def _chain_settings(**more) -> dict:
    """A reference of 2-ps segments (1000 steps of WLALL on the Reference platform), 2 segments to the first chunk."""
    return {"segment_ns": 0.002, "frame_ps": 0.2, "checkpoint_ps": 1.0, "platform": "Reference",
            "reference_seed": 7, "first_chunk_ns": 0.004, "reference_chains": 2, **more}


def test_further_chains_start_from_chain_0s_first_chunk_and_the_chains_grow_the_reference_together(tmp_path):
    """Chain 1 starts where chain 0's first chunk ended, with its own seeds; each chain stops once all chains
    together hold the target."""
    import mdtraj as md

    s = _chain_settings()
    assert runs.extend_reference(tmp_path, s, s["first_chunk_ns"], runs.Budget(None), chain=0) == 2
    assert runs.reference_ns(tmp_path, s) == pytest.approx(0.004)
    assert runs.extend_reference(tmp_path, s, 0.008, runs.Budget(None), chain=1) == 2  # 2 of chain 0 + 2 of chain 1
    assert (runs.finished_segments(tmp_path, 0), runs.finished_segments(tmp_path, 1)) == (2, 2)
    assert runs.segment_prefix(tmp_path, 1, chain=1).parent == tmp_path / "reference" / "chain1"
    assert set(runs.segment_speeds(tmp_path, 1)) == {0, 1}
    assert runs.extend_reference(tmp_path, s, 0.008, runs.Budget(None), chain=0) == 2  # the target is held: no MD
    start = runs.reduce_segment(tmp_path, runs.chain_start_segment(s), 0)["last_frame_nm"]
    first, other = (md.load_frame(f"{runs.segment_prefix(tmp_path, 0, c)}.dcd", 0,
                                  top=f"{runs.segment_prefix(tmp_path, 0, c)}.pdb") for c in (1, 0))
    heavy = [a.index for a in first.topology.atoms if a.element.symbol != "H"]
    rmsd = lambda xyz: np.sqrt(np.mean(np.sum((xyz[0, heavy] - start[heavy]) ** 2, axis=1)))  # noqa: E731
    assert rmsd(first.xyz) < 0.5 * rmsd(other.xyz)  # 0.2 ps after chain 1 started from chain 0's frame: 0.05 vs 0.27 nm


def test_the_shortest_chain_grows_first_when_there_are_fewer_jobs_than_chains(tmp_path):
    s = _chain_settings(reference_chains=3)
    for chain, n in ((0, 3), (1, 1), (2, 2)):
        for k in range(n):
            prefix = runs.segment_prefix(tmp_path, k, chain)
            prefix.parent.mkdir(parents=True, exist_ok=True)
            Path(f"{prefix}.pdb").write_text("")
            Path(f"{prefix}.dcd").write_text("")
    assert runs.reference_ns(tmp_path, s) == pytest.approx(6 * 0.002)
    tasks = runs.reference_tasks(tmp_path, s, 0.02)
    assert [task[2][3] for task in tasks] == [1, 2, 0] and tasks[0][0] == "reference chain 1"
    assert not tasks[0][3]() and runs.reference_tasks(tmp_path, s, 0.012)[0][3]()  # done once all chains hold it


def test_the_reference_pools_its_chains_and_counts_their_transitions_chain_by_chain(tmp_path):
    """Two chains of reduced segments (no MD): one TICA model over both, transitions and halves per chain; a chain
    with less than a segment analysed is left out."""
    from benchmarks.sampling_wlall import QUICK, load_reference

    s = {**QUICK, "reference_chains": 3}
    per_segment = int(round(s["segment_ns"] * 1e3 / s["frame_ps"]))  # 50 frames
    rng = np.random.default_rng(0)

    def write_chain(chain: int, states: list[int]) -> None:
        for k, state in enumerate(states):
            prefix = runs.segment_prefix(tmp_path, k, chain)
            prefix.parent.mkdir(parents=True, exist_ok=True)
            Path(f"{prefix}.pdb").write_text("")
            phi = np.full((per_segment, 3), -1.2) + rng.normal(0, 0.05, (per_segment, 3))
            phi[:, 1] += 2.4 * state  # the slow state: residue 2's φ
            psi = rng.normal(2.0, 0.05, (per_segment, 3))
            features = np.column_stack([np.sin(phi), np.cos(phi), np.sin(psi), np.cos(psi)])
            np.savez(f"{prefix}.reduced.npz", features=features.astype(np.float32), phi=phi, psi=psi,
                     last_frame_nm=np.zeros((3, 3)))

    write_chain(0, [0, 1, 0, 1])  # 3 transitions
    write_chain(1, [0, 1])  # starts in the other state than chain 0 ends in: 1 transition, not 2
    assert load_reference(tmp_path, s)["lengths"] == [4 * per_segment, 2 * per_segment]
    ref = load_reference(tmp_path, s)
    assert ref["chain_segments"] == [4, 2] and ref["ns"] == pytest.approx(6 * s["segment_ns"])
    assert ref["transitions"] == 4
    assert ref["second_half"].sum() == 3 * per_segment and len(ref["phi"]) == 6 * per_segment
    assert not ref["second_half"][:2 * per_segment].any() and ref["second_half"][-per_segment:].all()


def test_the_reference_speed_is_the_median_over_every_chains_finished_segments(tmp_path):
    """One speed prices the reference in the analysis and in the plan: the median over all chains' segments."""
    from benchmarks.sampling_wlall import plan_costs

    s = _chain_settings(reference_chains=2)
    assert np.isnan(runs.reference_ms_per_step(tmp_path, 2))
    for chain, speeds in ((0, {0: 0.4, 1: 0.5, 2: 0.9}), (1, {0: 0.6})):
        path = runs.segment_prefix(tmp_path, 0, chain).parent / "segments.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({str(k): v for k, v in speeds.items()}))
    assert runs.reference_ms_per_step(tmp_path, 2) == pytest.approx(0.55)
    assert runs.reference_ms_per_step(tmp_path, 1) == pytest.approx(0.5)
    assert plan_costs({**FULL, **s}, {}, None, 10.0, tmp_path)["ms_per_step_unbiased"] == pytest.approx(0.55)
