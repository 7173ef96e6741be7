"""`cvlearn simulate` as a stage: a frozen config checked before any MD, and one run function."""

import dataclasses

import pytest

from openmm_plugin.stages.simulate import SimulateConfig, fast_systems, run_simulate


def test_config_is_frozen_and_validated():
    config = SimulateConfig(system="alanine_dipeptide", ns=0.001)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.ns = 2.0
    with pytest.raises(ValueError, match="system: expected one of"):
        SimulateConfig(system="ubiquitin")
    with pytest.raises(ValueError, match="ns and report_interval_ps"):
        SimulateConfig(ns=0.0)
    assert fast_systems() == ["lambda6_85"]


def test_run_simulate_writes_and_then_skips(tmp_path):
    config = SimulateConfig(system="alanine_dipeptide", ns=0.0002, report_interval_ps=0.1, out=str(tmp_path))
    first = run_simulate(config)
    assert first.n_frames == 2 and not first.skipped and first.trajectory_path.name == "alanine_dipeptide_T300_s0.dcd"
    assert run_simulate(config).skipped
