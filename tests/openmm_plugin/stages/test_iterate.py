"""``cvlearn iterate --quick`` on real alanine-dipeptide MD written by the test: learn → OPES-explore → retrain on
the reweighted explore frames → OPES-metad → analyze; outputs, retrain data, resume, changed and bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import yaml

from cvlearn.analysis.transitions import count_phi_transitions
from cvlearn.data.colvar import read_colvar
from openmm_plugin.cli import main
from openmm_plugin.stages.iterate import RETRAIN_SMOOTHNESS, IterateConfig, resolve_stages
from tests.openmm_plugin.stages.ala2_runs import ala2_runs

N_FRAMES = 150
BIAS = {"n_steps": 1000, "report_interval_steps": 50, "force_guard_kjmol_nm": 1000.0,
        "opes": {"sigma": "adaptive", "barrier_kjmol": 30.0, "pace_steps": 500}}


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    """Two 15-ps ala2 runs at 600 K, a frame every 0.1 ps: DCDs + PDB (as test_learn's, shorter)."""
    return ala2_runs(tmp_path_factory.mktemp("ala2_md"), 2, N_FRAMES)


def _config(md, out) -> dict:
    return {"out": str(out),
            "transitions": {"observable": "phi 0", "a": [-3.1416, -0.5236], "b": [0.5236, 1.7453]},
            "learn": {"topology": md["topology"], "trajectories": md["trajectories"], "lagtime_ps": 0.5,
                      "validation_fraction": 0.5, "baselines": [], "batch_size": 128, "head_hidden": 16,
                      "n_clusters": 5, "observables": {"phi": "phi 0"}},
            "explore": {"system": "alanine_dipeptide", "temperature_k": 300.0, **BIAS},
            "bias": dict(BIAS),
            "analyze": {"fields": ["phi"], "torsions": {"phi": [4, 6, 8, 10]}, "n_blocks": 2,
                        "regions": {"C7ax": {"phi": [0.0, 2.0944]}, "C7eq": {"phi": [-3.1416, 0.0]}}}}


def _write(folder: Path, config: dict, name: str = "iterate.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def iterated(md, tmp_path_factory):
    folder = tmp_path_factory.mktemp("iterate")
    config_path = _write(folder, _config(md, folder / "out"))
    assert main(["iterate", "--config", str(config_path), "--quick"]) == 0
    return folder / "out", config_path


def test_every_step_writes_its_outputs_and_the_retrain_learns_from_the_explore_run(md, iterated):
    out, _ = iterated
    for step, names in {"learn": ("cv.pt", "metrics.json"), "explore": ("COLVAR", "trajectory.dcd", "final.pdb"),
                        "retrain": ("cv.pt", "metrics.json", "report.md"), "bias": ("COLVAR", "trajectory.dcd"),
                        "analyze": ("deltaF.json", "report.md")}.items():
        for name in names:
            assert (out / step / name).is_file(), f"{step}/{name}"
    summary = json.loads((out / "summary.json").read_text())
    assert "| first (learn/cv.pt) |" in (out / "summary.md").read_text()

    # The retrain read the explore run's 40 frames, reweighted by its COLVAR on the rescaled time axis.
    colvar = read_colvar(out / "explore" / "COLVAR")
    assert len(colvar["time"]) == 40 and colvar["opes_explore.bias"][-1] != colvar["opes_explore.bias"][0]
    retrained = json.loads((out / "retrain" / "metrics.json").read_text())
    assert retrained["config"]["trajectories"] == [str(out / "explore" / "trajectory.dcd")]
    assert retrained["config"]["biased"]["colvars"] == [str(out / "explore" / "COLVAR")]
    assert retrained["config"]["biased"]["method"] == "rescaled_time"
    assert retrained["config"]["smoothness"] == RETRAIN_SMOOTHNESS  # a CV meant to be biased next: smooth by default
    assert json.loads((out / "learn" / "metrics.json").read_text())["config"]["smoothness"] == 0.0
    assert retrained["n_frames"]["total"] == 40 and retrained["vamp2_val_deeptime"] is None  # weighted: no deeptime
    reweighting = summary["reweighting"]
    assert reweighting["n_biased_frames"] == 40 and reweighting["rct_column"] == "opes_explore.rct"
    assert reweighting["n_train_pairs"] >= 2 and reweighting["n_validation_pairs"] >= 2
    assert 1.0 <= reweighting["effective_sample_size"] <= 40.0

    # Held-out VAMP-2 of the first CV on the learn's validation trajectory is what learn itself measured there.
    learned = json.loads((out / "learn" / "metrics.json").read_text())
    held = summary["vamp2_heldout"]
    assert held["lag_frames"] == 5 and held["n_frames"] == N_FRAMES
    assert abs(held["vamp2"]["first"] - learned["vamp2_val_deeptime"]) < 1e-3
    assert 1.0 <= held["vamp2"]["retrained"] <= 3.0

    # Transitions and CV ranges of both biased runs, the count checked against the φ-core counter.
    for step, cv in (("explore", "learn"), ("bias", "retrain")):
        run = summary["biased_runs"][step]
        assert run["cv"] == str(out / cv / "cv.pt") and run["n_frames"] == 40
        assert abs(run["ns"] - 1000 * 0.002 / 1000) < 1e-9
        phi = mdtraj.compute_phi(mdtraj.load(out / step / "trajectory.dcd", top=md["topology"]))[1][:, 0]
        assert run["transitions"] == count_phi_transitions(phi)
        cv_columns = read_colvar(out / step / "COLVAR")
        assert np.allclose(run["cv_range_visited"], [[cv_columns[n].min(), cv_columns[n].max()]
                                                     for n in ("cv1", "cv2")])
    assert summary["biased_runs"]["bias"]["method"] == "opes-metad"
    assert "C7ax-C7eq" in summary["analyze"]["deltaF"]


def test_the_retrain_smoothness_default_gives_way_to_a_section_that_sets_one(md, tmp_path):
    from cvlearn.config import from_dict

    def retrain(edit):
        config = _config(md, tmp_path / "out")
        edit(config)
        return resolve_stages(from_dict(IterateConfig, config, "iterate.yaml")).retrain

    assert retrain(lambda c: None).smoothness == RETRAIN_SMOOTHNESS
    assert retrain(lambda c: c.update(retrain={"smoothness": 0.0})).smoothness == 0.0
    assert retrain(lambda c: c["learn"].update(smoothness=1e-3)).smoothness == 1e-3  # the learn section's, inherited


def test_the_summary_says_when_the_retrain_did_not_learn_better():
    from openmm_plugin.stages.iterate_report import verdict

    def summary(first, retrained, share):
        return {"vamp2_heldout": {"vamp2": {"first": first, "retrained": retrained}},
                "reweighting": {"self_pair_fraction_train": share}}

    assert verdict(summary(1.74, 1.72, 0.05)) == []  # as good, within the margin: nothing to say
    worse, = verdict(summary(1.74, 1.07, 0.05))
    assert worse.startswith("The retrained CV scores 1.070 against the first CV's 1.740") and "learn/cv.pt" in worse
    short, = verdict(summary(1.74, 1.80, 0.46))
    assert short.startswith("46 % of the retrain's training pair weight pairs a frame with itself")
    assert len(verdict({"vamp2_heldout": {"vamp2": {"first": 1.7, "retrained": 1.0}}, "reweighting": {}})) == 1


def _stamps(out: Path) -> dict:
    files = ["learn/cv.pt", "learn/seeds/seed0.ckpt", "explore/COLVAR", "explore/trajectory.dcd", "retrain/cv.pt",
             "bias/COLVAR", "bias/trajectory.dcd"]
    return {name: (out / name).stat().st_mtime_ns for name in files}


def test_a_rerun_resumes_without_recomputing_and_a_changed_config_is_refused(iterated, capsys):
    out, config_path = iterated
    stamps, before = _stamps(out), json.loads((out / "summary.json").read_text())
    assert main(["iterate", "--config", str(config_path), "--quick"]) == 0  # finished: the summary at once
    assert _stamps(out) == stamps and json.loads((out / "summary.json").read_text()) == before
    # Interrupted after the last step: every step is skipped through its own record, the summary is rebuilt.
    (out / "summary.json").unlink()
    record = json.loads((out / "run.json").read_text())
    record["finished"] = False
    (out / "run.json").write_text(json.dumps(record))
    assert main(["iterate", "--config", str(config_path), "--quick"]) == 0
    assert _stamps(out) == stamps
    again = json.loads((out / "summary.json").read_text())
    assert again["vamp2_heldout"] == before["vamp2_heldout"] and again["reweighting"] == before["reweighting"]
    assert again["seconds"]["bias"] < before["seconds"]["bias"]
    capsys.readouterr()

    changed = yaml.safe_load(config_path.read_text())
    changed["bias"]["opes"]["barrier_kjmol"] = 20.0
    assert main(["iterate", "--config", str(_write(config_path.parent, changed, "changed.yaml")), "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "bias.opes.barrier_kjmol: 30.0 -> 20.0" in err and "--restart-fresh" in err
    assert main(["iterate", "--config", str(config_path)]) == 2  # a full run never reuses a quick run's outputs
    assert "quick: True -> False" in capsys.readouterr().err
    assert _stamps(out) == stamps


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["explore"].update(method="bogus"), r"explore\.method: expected one of"),
    (lambda c: c["learn"].update(out="x"), r"learn\.out: filled in by the iterate run"),
    (lambda c: c["bias"].update(cv="x.pt"), r"bias\.cv: filled in by the iterate run"),
    (lambda c: c.update(retrain={"lagtime_ps": 0.25}),
     r"retrain\.lagtime_ps: expected a positive multiple of the frame interval 0\.1 ps"),
    (lambda c: c.update(retrain={"biased": {"colvars": ["c"]}}), r"retrain\.biased\.colvars: filled in"),
    (lambda c: c["learn"].update(trajectories=["missing.dcd"]), r"learn\.trajectories: trajectory file 'missing"),
    (lambda c: c["bias"].update(system_xml="sys.xml", pdb="p.pdb"), r"bias\.system_xml: file 'sys\.xml' does not"),
    (lambda c: c["transitions"].update(observable="phi 9"), r"transitions\.observable: expected 'phi N'"),
    (lambda c: c["analyze"].update(fields=[]), r"analyze\.fields: expected 1 or 2"),
    (lambda c: c.update(lern={}), r"unknown key\(s\) \['lern'\] for IterateConfig"),
])
def test_a_bad_config_fails_in_one_line_before_any_compute(md, tmp_path, capsys, edit, message):
    import re

    config = _config(md, tmp_path / "out")
    edit(config)
    path = _write(tmp_path, config)
    assert main(["iterate", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"cvlearn iterate: error: {path}: "), err
    assert re.search(message, err), err
    assert not (tmp_path / "out").exists()  # nothing was computed, not even the run record
