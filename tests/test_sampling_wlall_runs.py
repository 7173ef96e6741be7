"""The pentapeptide benchmark's walkers grow across sessions: a larger ``--walker-ns`` reopens the ended walkers."""

import argparse
import json

from benchmarks import _sampling_wlall_runs as runs
from benchmarks.sampling_wlall import extended_walker_ns
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
