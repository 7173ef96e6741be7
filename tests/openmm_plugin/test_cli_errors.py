"""The bad-input matrix of issue 14: every failure a user can cause gives one line naming the file or key.

CLI cases run in process (``main([...])`` with capsys) and assert the exit code (2 usage/config, 1 run failure)
and that stderr is exactly one line ``cvlearn <command>: error: <file or key>: ...``; a few run as real
subprocesses to check exit codes end to end and that no third-party banner is printed. API cases assert the
exception type and message. Everything is validated before compute, so most cases take well under a second.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import openmm
import pytest
import yaml

from cvlearn.errors import ConfigError, RunError
from openmm_plugin.cli import exit_code_of, main

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
MISSING_PLATFORM = "CUDA" if "CUDA" not in PLATFORMS else "NoSuchPlatform"


def _cli(capsys, *argv) -> tuple[int, list[str]]:
    code = main([str(a) for a in argv])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, lines


def _assert_one_line(lines: list[str], command: str, pattern: str) -> None:
    assert len(lines) == 1, f"expected one line on stderr, found {len(lines)}: {lines}"
    assert lines[0].startswith(f"cvlearn {command}: error: "), lines[0]
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    assert "Traceback" not in lines[0]


def _bias_yaml(tmp_path: Path, cv_path, name: str = "bias.yaml", **changes) -> Path:
    """A minimal, valid ``cvlearn bias`` config (metad on the 2-D CV, 20 steps) with ``changes`` applied."""
    config = {"cv": str(cv_path), "system": "alanine_dipeptide", "out": str(tmp_path / "run"), "method": "metad",
              "n_steps": 20, "report_interval_steps": 10, "save_every_steps": 20,
              "metad": {"pace_steps": 10, "lower": [-5.0], "upper": [5.0]}}
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cv_path(exported_cv64):
    """The shared tiny 2-component ala2 CV (22 particles)."""
    return exported_cv64[1]


@pytest.fixture(scope="module")
def wlall():
    from systems import pentapeptide_wlall

    return pentapeptide_wlall.build()


# --- "What a user meets today" and "Configs that are wrong in meaning": the CLI ---------------------------------
def _yaml_syntax(tmp_path, cv):
    path = tmp_path / "bad.yaml"
    path.write_text(f"cv: {cv}\nmetad:\n  sigma: [0.1, 0.2\nn_steps: 10\n")
    return ["bias", "--config", path]


def _write_yaml(text):
    def build(tmp_path, cv):
        path = tmp_path / "bias.yaml"
        path.write_text(text.format(cv=cv, out=tmp_path / "run", here=path))
        return ["bias", "--config", path]
    return build


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _bias(**changes):
    return lambda tmp_path, cv: ["bias", "--config", _bias_yaml(tmp_path, cv, **changes)]


def _simulate(*flags):
    return lambda tmp_path, cv: ["simulate", "--system", "alanine_dipeptide", "--ns", "0.0001",
                                 "--out", tmp_path / "md", *flags]


def _out_is_a_file(tmp_path, cv):
    (tmp_path / "taken").write_text("x")
    return ["simulate", "--system", "alanine_dipeptide", "--ns", "0.0001", "--out", tmp_path / "taken"]


MATRIX = [  # (id, argv builder, exit code, pattern of the one line)
    ("yaml-syntax", _yaml_syntax, 2, r"bad\.yaml: line 4, column \d+: invalid YAML: while parsing a flow sequence"),
    ("n_steps-abc", _bias(n_steps="abc"), 2, r"bias\.yaml: n_steps: expected an integer, found 'abc' \(str\)"),
    ("temperature-negative", _simulate("--temperature", "-50"), 2,
     r"--temperature: expected a temperature > 0 K, found -50\.0"),
    ("platform-missing", _simulate("--platform", MISSING_PLATFORM), 2,
     rf"--platform: expected one of the installed OpenMM platforms \[.*\], found '{MISSING_PLATFORM}'"),
    ("out-is-a-file", _out_is_a_file, 2, r"--out: expected a directory, found a file: '.*taken'"),
    ("temperature-zero", _simulate("--temperature", "0"), 2, r"--temperature: expected a temperature > 0 K, found 0\.0"),
    ("n_steps-negative", _bias(n_steps=-100), 2, r"bias\.yaml: n_steps: expected an integer >= 1, found -100"),
    ("no-cv", _bias(cv=None), 2, r"bias\.yaml: cv: required: expected the exported CV file"),
    ("sigma-wrong-length", _bias(metad={"pace_steps": 10, "sigma": [0.1, 0.2, 0.3]}), 2,
     r"bias\.yaml: metad\.sigma: expected 1 or 2 values \(one per biased CV component\), found 3: "
     r"\[0\.1, 0\.2, 0\.3\]$"),
    ("sigma-negative", _bias(metad={"pace_steps": 10, "sigma": [-0.1]}), 2,
     r"bias\.yaml: metad\.sigma: expected values > 0, found \(-0\.1,\)"),
    # --- cases of our own ---
    ("unknown-key", _bias(sigmaa=1), 2, r"bias\.yaml: unknown key\(s\) \['sigmaa'\] for BiasConfig; allowed: "),
    ("unknown-nested-key", _bias(opes={"hight": 1}), 2, r"bias\.yaml: opes: unknown key\(s\) \['hight'\] for OPESParams"),
    ("nested-not-a-mapping", _bias(metad=3), 2, r"bias\.yaml: metad: expected a mapping of MetadParams keys, found 3"),
    ("bool-as-string", _bias(minimize="yes"), 2,
     r"bias\.yaml: minimize: expected a boolean \(true/false\), found 'yes'"),
    ("compile-mode", _bias(compile="yes"), 2, r"bias\.yaml: compile: expected true, false, 'aot' or 'inductor', found 'yes'"),
    ("sigma-item-type", _bias(metad={"pace_steps": 10, "sigma": ["wide"]}), 2,
     r"bias\.yaml: metad\.sigma\[0\]: expected a number, found 'wide'"),
    ("component-the-cv-lacks", _bias(components=[5]), 2,
     r"bias\.yaml: components: expected component indices in \[0, 2\) of this 2-dimensional CV"),
    ("mts-zero", _bias(mts_substeps=0), 2, r"bias\.yaml: mts_substeps: expected >= 1, found 0"),
    ("platform-in-config", _bias(platform="NoSuchPlatform"), 2,
     r"bias\.yaml: platform: expected one of the installed OpenMM platforms"),
    ("bias-factor", _bias(metad={"pace_steps": 10, "bias_factor": 0.5}), 2,
     r"bias\.yaml: metad\.bias_factor: expected > 1 \(or null for plain metadynamics\), found 0\.5"),
    ("walls-wrong-length", _bias(walls={"upper_at": [1.0, 2.0, 3.0], "upper_kappa_kjmol": 10.0}), 2,
     r"bias\.yaml: walls\.upper_at: expected 1 or 2 values"),
    ("config-not-a-mapping", _write_yaml("- {cv}\n- 3\n"), 2, r"bias\.yaml: expected a mapping of BiasConfig keys"),
    ("config-missing", lambda tmp_path, cv: ["bias", "--config", tmp_path / "missing.yaml"], 2,
     r"config file .*missing\.yaml does not exist"),
    ("config-suffix", lambda tmp_path, cv: ["bias", "--config", cv], 2,
     r"config file .*\.pt: expected a \.yaml, \.yml or \.toml file, found '\.pt'"),
    ("cv-missing", _bias(cv="nothere.pt"), 2, r"cv: exported CV 'nothere\.pt' does not exist"),
    ("cv-not-a-cv", _write_yaml("cv: {here}\nout: {out}\nsystem: alanine_dipeptide\n"), 2,
     r"bias\.yaml is not a TorchScript file written by cvlearn"),
    ("cv-of-another-system", _bias(system="pentapeptide_wlall"), 2,
     r"cv64\.pt: CV expects 22 particles, system pentapeptide_wlall has 103"),
    ("float-exponent", _bias(method="restraint", restraint={"center": [0.0], "kappa_kjmol": ["abc"]}), 2,
     r"restraint\.kappa_kjmol\[0\]: expected a number, found 'abc'"),
    ("unknown-command", lambda tmp_path, cv: ["biass"], 2, r"argument command: invalid choice: 'biass'"),
    ("flag-type", lambda tmp_path, cv: ["simulate", "--system", "alanine_dipeptide", "--ns", "abc"], 2,
     r"argument --ns: invalid float value: 'abc'"),
    ("label-splits", lambda tmp_path, cv: ["label", "--in", "a.xyz", "--out", tmp_path, "--molecule", "m",
                                           "--splits", "0.5,x"], 2, r"argument --splits: expected comma-separated fractions such as 0\.8,0\.1,0\.1, found '0\.5,x'"),
    ("label-input-missing", lambda tmp_path, cv: ["label", "--in", tmp_path / "none.xyz", "--out", tmp_path,
                                                  "--molecule", "m"], 2, r"input: geometry file '.*none\.xyz' does not exist"),
    ("pretrain-epochs", lambda tmp_path, cv: ["pretrain", "--config", _text(tmp_path / "pretrain.yaml", "max_epochs: 0\n")],
     2, r"pretrain\.yaml: max_epochs: expected an integer >= 1, found 0"),
    ("demo-temperature", lambda tmp_path, cv: ["demo", "--config", _text(tmp_path / "demo.yaml", "temperature_k: -1\n"),
                                               "--out", tmp_path / "demo"], 2,
     r"demo\.yaml: temperature_k: expected a finite value > 0, found -1\.0"),
    ("demo-out-is-a-file", lambda tmp_path, cv: ["demo", "--quick", "--out", _text(tmp_path / "demo", "x")], 2,
     r"--out: expected a directory, found a file"),
    ("finetune-nested-type", lambda tmp_path, cv: ["finetune", "--config", _text(tmp_path / "ft.yaml",
                                                                                  "train_files: {a: 1}\n")], 2,
     r"ft\.yaml: train_files: expected a list of numbers or strings, found \{'a': 1\}"),
    ("finetune-file-in-two-splits", lambda tmp_path, cv: ["finetune", "--config", _text(
        tmp_path / "ft.yaml", "train_files: [a.xyz]\ntest_files: [./a.xyz]\n")], 2,
     r"ft\.yaml: train_files/val_files/test_files: expected distinct files, found '\./a\.xyz' twice"),
    ("pretrain-duplicate-files", lambda tmp_path, cv: ["pretrain", "--config", _text(
        tmp_path / "pretrain.yaml", "structure_files: [m.sdf, m.sdf]\n")], 2,
     r"pretrain\.yaml: structure_files: expected distinct files, found 'm\.sdf' twice"),
    ("finetune-config-missing", lambda tmp_path, cv: ["finetune", "--config", tmp_path / "ft.yaml"], 2,
     r"config file .*ft\.yaml does not exist"),
    ("simulation-blew-up", _bias(method="restraint", n_steps=60, report_interval_steps=20, save_every_steps=60,
                                 restraint={"center": [50.0], "kappa_kjmol": [1.0e9]}), 1,
     r"step 60: the simulation blew up \(max \|x\| = .* nm\)"),
]


@pytest.mark.parametrize("build, code, pattern", [m[1:] for m in MATRIX], ids=[m[0] for m in MATRIX])
def test_cli_bad_input_gives_one_line_and_exit_code(build, code, pattern, cv_path, tmp_path, capsys):
    argv = build(tmp_path, cv_path)
    command = next(a for a in map(str, argv) if not a.startswith("-"))
    command = command if command in ("bias", "simulate", "label", "finetune", "demo", "pretrain") else "cvlearn"
    got, lines = _cli(capsys, *argv)
    assert got == code, lines
    if command == "cvlearn":  # argparse: no command chosen yet
        assert len(lines) == 1 and lines[0].startswith("cvlearn: error: ") and re.search(pattern, lines[0]), lines
    else:
        _assert_one_line(lines, command, pattern)


def test_negative_n_steps_leaves_nothing_behind_and_the_corrected_rerun_runs(cv_path, tmp_path, capsys):
    code, lines = _cli(capsys, "bias", "--config", _bias_yaml(tmp_path, cv_path, n_steps=-100))
    assert code == 2 and "n_steps" in lines[0]
    assert not (tmp_path / "run").exists()  # no summary, no run record that would block the rerun
    code, _ = _cli(capsys, "bias", "--config", _bias_yaml(tmp_path, cv_path))
    assert code == 0 and (tmp_path / "run" / "summary.json").is_file()


def test_minimal_metad_config_on_a_2d_cv_runs(cv_path, tmp_path, capsys):
    """Only ``cv``, ``system`` and ``method: metad`` (+ short run lengths, and bounds: this CV file has no training
    range): σ, lower and upper broadcast to both components."""
    path = tmp_path / "minimal.yaml"
    path.write_text(f"cv: {cv_path}\nsystem: alanine_dipeptide\nout: {tmp_path / 'run'}\nmethod: metad\nn_steps: 20\n"
                    "report_interval_steps: 10\nsave_every_steps: 20\nmetad:\n  pace_steps: 10\n  lower: [-5.0]\n"
                    "  upper: [5.0]\n")
    code, lines = _cli(capsys, "bias", "--config", path)
    assert code == 0, lines
    from cvlearn.data.colvar import read_colvar

    colvar = read_colvar(tmp_path / "run" / "COLVAR")
    assert {"cv0", "cv1", "metad.bias"} <= set(colvar)


def test_verbose_shows_the_traceback_and_still_ends_with_the_line(cv_path, tmp_path, capsys):
    config = _bias_yaml(tmp_path, cv_path, cv=None)
    for argv in (["--verbose", "bias", "--config", config], ["bias", "--verbose", "--config", config]):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 2
        assert "Traceback (most recent call last)" in err and "ConfigError" in err
        assert err.strip().splitlines()[-1].startswith("cvlearn bias: error: ")


def test_exit_code_classes():
    from cvlearn.nn.featurizers import CheckpointMismatchError
    from cvlearn.structures.labelling import LabellingError

    assert exit_code_of(ConfigError("x", "f.yaml", "k")) == 2
    assert exit_code_of(ValueError("n_steps: expected >= 1")) == 2
    assert exit_code_of(FileNotFoundError("cv.pt")) == 2
    assert exit_code_of(CheckpointMismatchError("ckpt: differs")) == 2
    assert exit_code_of(RunError("blew up")) == 1
    assert exit_code_of(FloatingPointError("NaN CV")) == 1
    assert exit_code_of(LabellingError("SCF did not converge")) == 1
    assert exit_code_of(openmm.OpenMMException("Particle coordinate is NaN")) == 1
    for bug in (KeyError("x"), TypeError("x"), AttributeError("x"), RuntimeError("x")):  # bugs keep the traceback
        assert exit_code_of(bug) is None
    assert str(ConfigError("expected an integer, found 'abc'", "b.yaml", "n_steps")) == \
        "b.yaml: n_steps: expected an integer, found 'abc'"


# --- the same through the Python API --------------------------------------------------------------------------
def test_api_particle_mismatch_raises_before_any_context(cv_path, wlall):
    """A CV of 22 particles on the 103-particle WLALL System: ValueError, not NaNs or a crashed interpreter."""
    from cvlearn.export import load_cv
    from openmm_plugin.bias import Metadynamics
    from openmm_plugin.forces import TorchBiasForce, python_bias_force

    cv, _ = load_cv(cv_path)
    bias = Metadynamics(sigma=[0.1, 0.1], height_kjmol=1.0, pace_steps=10, temperature_k=300.0, lower=[-5, -5],
                        upper=[5, 5])
    n_forces = wlall.system.getNumForces()
    message = r"cv: expected a System of 22 particles \(the CV was exported for 22\), found a System of 103 particles"
    with pytest.raises(ValueError, match=message):
        python_bias_force(cv, bias, system=wlall.system)
    with pytest.raises(ValueError, match=message):
        TorchBiasForce(wlall.system, cv, bias)
    assert wlall.system.getNumForces() == n_forces  # nothing was added


def test_api_runner_refuses_a_cv_of_another_system_before_any_step(cv_path):
    """Built without ``system=``, the force cannot see the System; BiasRunner.step checks before the first MD step."""
    import openmm

    from cvlearn.export import load_cv
    from openmm_plugin.bias import BiasRunner, Metadynamics
    from openmm_plugin.forces import python_bias_force
    from openmm_plugin.simulation import make_integrator, make_simulation
    from systems import pentapeptide_wlall

    molecule = pentapeptide_wlall.build()
    cv, _ = load_cv(cv_path)
    bias = Metadynamics(sigma=[0.1, 0.1], height_kjmol=1.0, pace_steps=10, temperature_k=300.0, lower=[-5, -5],
                        upper=[5, 5])
    force = python_bias_force(cv, bias)
    molecule.system.addForce(force)
    simulation = make_simulation(molecule.topology, molecule.system, make_integrator(300.0, 1.0, 0.002), "Reference")
    simulation.context.setPositions(molecule.positions_nm)
    with pytest.raises(ValueError, match=r"cv: expected a System of 22 particles .* found a System of 103 particles"):
        BiasRunner(bias, callback=force.callback).step(simulation, 10)
    assert simulation.currentStep == 0 and force.callback.evaluations == 0
    assert isinstance(simulation.system, openmm.System)


def test_api_run_bias_validates_before_compute(cv_path, tmp_path):
    from openmm_plugin.stages.bias import BiasConfig, MetadParams, build_bias, run_bias

    with pytest.raises(ValueError, match=r"^n_steps: expected an integer >= 1, found -100$"):
        BiasConfig(cv=str(cv_path), n_steps=-100)
    with pytest.raises(ConfigError, match=r"^cv: required: expected the path of the exported CV"):
        run_bias(BiasConfig(out=str(tmp_path / "run"), n_steps=20, system="alanine_dipeptide"))
    with pytest.raises(ValueError, match=r"^temperature_k: expected a value > 0, found 0"):
        BiasConfig(cv=str(cv_path), temperature_k=0.0)
    with pytest.raises(ValueError, match=r"^platform: expected one of the installed OpenMM platforms"):
        BiasConfig(cv=str(cv_path), platform=MISSING_PLATFORM)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^out: expected a directory, found a file"):
        BiasConfig(cv=str(cv_path), out=str(tmp_path / "file"))
    with pytest.raises(FileNotFoundError, match=r"^cv: exported CV '.*nothere\.pt' does not exist"):
        run_bias(BiasConfig(cv=str(tmp_path / "nothere.pt"), out=str(tmp_path / "run"), system="alanine_dipeptide"))
    assert not (tmp_path / "run").exists()
    minimal = BiasConfig(cv=str(cv_path), method="metad", system="alanine_dipeptide",
                         metad=MetadParams(lower=(-5.0,), upper=(5.0,)))  # σ, lower, upper broadcast to a 2-D CV
    bias = build_bias(minimal, n_cvs=2)
    assert bias.n_cvs == 2 and list(bias.sigma) == [0.1, 0.1] and list(bias.lower) == [-5.0, -5.0]
    with pytest.raises(ConfigError, match=r"^metad\.sigma: expected 1 or 2 values"):
        build_bias(BiasConfig(cv=str(cv_path), method="metad", system="alanine_dipeptide",
                              metad=MetadParams(sigma=(0.1, 0.2, 0.3))), n_cvs=2)
    with pytest.raises(ConfigError, match=r"^components: expected component indices in \[0, 2\)"):
        build_bias(BiasConfig(cv=str(cv_path), components=(2,), system="alanine_dipeptide"), n_cvs=2)


def test_api_negative_sigma_is_rejected_by_every_builder():
    from openmm_plugin.bias import OPES, Metadynamics
    from openmm_plugin.stages.bias import MetadParams, OPESParams

    with pytest.raises(ValueError, match=r"sigma: expected positive kernel widths"):
        Metadynamics(sigma=[-0.1], height_kjmol=1.0, pace_steps=10, temperature_k=300.0, lower=[-1], upper=[1])
    with pytest.raises(ValueError, match=r"sigma: expected positive kernel widths"):
        OPES(sigma=[0.1, -0.1], barrier_kjmol=20.0, pace_steps=10, temperature_k=300.0)
    with pytest.raises(ValueError, match=r"^sigma: expected values > 0"):
        MetadParams(sigma=(-0.1,))
    with pytest.raises(ValueError, match=r"^sigma: expected values > 0"):
        OPESParams(sigma=(0.0,))
    with pytest.raises(ValueError, match=r"^pace_steps: expected an integer >= 1"):
        OPESParams(pace_steps=0)


def test_api_simulate_config_validates(tmp_path):
    from openmm_plugin.stages.simulate import SimulateConfig

    with pytest.raises(ValueError, match=r"^temperature_k: expected a temperature > 0 K, found -50"):
        SimulateConfig(temperature_k=-50.0)
    with pytest.raises(ValueError, match=r"^temperature_k: expected a temperature > 0 K, found 0"):
        SimulateConfig(temperature_k=0.0)
    with pytest.raises(ValueError, match=rf"^platform: expected one of .*found '{MISSING_PLATFORM}'"):
        SimulateConfig(platform=MISSING_PLATFORM)
    with pytest.raises(ValueError, match=r"^seed: expected an integer"):
        SimulateConfig(seed=-1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"^out: expected a directory, found a file"):
        SimulateConfig(out=str(tmp_path / "file"))


# --- data checks ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ala2_files(tmp_path_factory, ala2):
    """A 5-frame ala2 DCD + PDB written by mdtraj, and the same with a NaN in frame 3."""
    folder = tmp_path_factory.mktemp("ala2_files")
    top = mdtraj.Topology.from_openmm(ala2.topology)
    xyz = np.repeat(np.asarray(ala2.positions_nm, dtype=np.float32)[None], 5, axis=0)
    xyz += np.random.default_rng(0).normal(scale=0.01, size=xyz.shape).astype(np.float32)
    mdtraj.Trajectory(xyz[:1], top).save_pdb(str(folder / "ala2.pdb"))
    mdtraj.Trajectory(xyz, top).save_dcd(str(folder / "good.dcd"))
    bad = xyz.copy()
    bad[3, 4, 1] = np.nan
    mdtraj.Trajectory(bad, top).save_dcd(str(folder / "nan.dcd"))
    return folder


def test_nan_coordinates_are_rejected_with_file_and_frame(ala2_files):
    from cvlearn.data import iter_trajectory, load_trajectories

    with pytest.raises(ValueError, match=r"trajectory '.*nan\.dcd' has non-finite \(NaN/inf\) coordinates in frame 3"):
        load_trajectories([ala2_files / "nan.dcd"], ala2_files / "ala2.pdb")
    with pytest.raises(ValueError, match=r"nan\.dcd' has non-finite .* frame 3 of the file"):
        list(iter_trajectory(ala2_files / "nan.dcd", ala2_files / "ala2.pdb", chunk_frames=2))


def test_duplicate_trajectory_paths_are_rejected(ala2_files):
    from cvlearn.data import load_trajectories

    good = ala2_files / "good.dcd"
    with pytest.raises(ValueError, match=r"traj_paths: expected distinct files, found '.*good\.dcd' twice"):
        load_trajectories([good, good], ala2_files / "ala2.pdb")
    alias = ala2_files / ".." / ala2_files.name / "good.dcd"
    with pytest.raises(ValueError, match=r"expected distinct files, .* \(also as '.*good\.dcd'\)"):
        load_trajectories([good, alias], ala2_files / "ala2.pdb")


def test_a_trajectory_without_frames_is_rejected(ala2, ala2_files, tmp_path):
    import openmm.app as app
    import openmm.unit as unit

    from cvlearn.data import iter_trajectory, load_trajectories

    empty = tmp_path / "empty.dcd"
    with open(empty, "wb") as handle:
        app.DCDFile(handle, ala2.topology, 0.002 * unit.picosecond)  # header only: zero frames
    for read in (lambda: load_trajectories([empty], ala2_files / "ala2.pdb", stride=10),
                 lambda: list(iter_trajectory(empty, ala2_files / "ala2.pdb", stride=10))):
        with pytest.raises(ValueError, match=r"trajectory '.*empty\.dcd': expected a readable \.dcd file with at "
                                             r"least one frame"):
            read()


def test_lambda6_85_with_a_missing_residue_is_named(tmp_path):
    """A λ6-85 trajectory that lost a residue (Ala 10) read against the full topology: file and atom counts named."""
    from systems import lambda6_85

    from cvlearn.data import load_trajectories

    molecule = lambda6_85.build(minimize=False)
    top = mdtraj.Topology.from_openmm(molecule.topology)
    xyz = np.asarray(molecule.positions_nm, dtype=np.float32)[None]
    mdtraj.Trajectory(xyz, top).save_pdb(str(tmp_path / "lambda.pdb"))
    keep = [a.index for a in top.atoms if a.residue.index != 10]
    mdtraj.Trajectory(xyz[:, keep], top.subset(keep)).save_dcd(str(tmp_path / "missing_residue.dcd"))
    n = len(keep)
    with pytest.raises(ValueError, match=rf"trajectory '.*missing_residue\.dcd' has {n} atoms per frame but topology "
                                         rf"'.*lambda\.pdb' has {lambda6_85.N_ATOMS} atoms"):
        load_trajectories([tmp_path / "missing_residue.dcd"], tmp_path / "lambda.pdb")


def test_checkpoint_of_another_architecture_is_refused(tmp_path, ala2_heavy):
    from cvlearn.nn.featurizers import (CheckpointMismatchError, ETConfig, ETFeaturizer, ViSNetConfig,
                                        ViSNetFeaturizer, load_featurizer_weights, save_featurizer_checkpoint)

    _, z = ala2_heavy
    et = ETFeaturizer(z, ETConfig(hidden_channels=16, num_layers=1, num_rbf=8, num_heads=2))
    save_featurizer_checkpoint(et, tmp_path / "et.pt")
    visnet = ViSNetFeaturizer(z, ViSNetConfig(hidden_channels=16, num_layers=1, num_rbf=8, num_heads=2))
    with pytest.raises(CheckpointMismatchError, match=r"et\.pt"):
        load_featurizer_weights(visnet, tmp_path / "et.pt")


def test_colvar_without_a_bias_column_is_named(tmp_path):
    from cvlearn.data import log_weights_from_colvar, write_colvar

    write_colvar(tmp_path / "COLVAR", ["time", "cv0"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"COLVAR: expected one bias column .*found fields \['time', 'cv0'\]"):
        log_weights_from_colvar(tmp_path / "COLVAR", 300.0)


def test_extxyz_with_a_wrong_atom_count_in_the_middle(tmp_path, capsys):
    frame = "2\nProperties=species:S:1:pos:R:3\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"
    wrong = "3\nProperties=species:S:1:pos:R:3\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"  # says 3 atoms, has 2
    path = tmp_path / "bad.xyz"
    path.write_text(frame + wrong + frame)
    code, lines = _cli(capsys, "label", "--in", path, "--out", tmp_path / "out", "--molecule", "h2")
    assert code == 2
    _assert_one_line(lines, "label", r"bad\.xyz: frame 1 could not be parsed as extxyz \(line 5: expected 3 atom lines, "
                                     r"found 2 before line 9\)")
    one_short = "1\nProperties=species:S:1:pos:R:3\nH 0.0 0.0 0.0\nH 0.0 0.0 0.74\n"  # says 1 atom, has 2
    path.write_text(frame + one_short + frame)
    code, lines = _cli(capsys, "label", "--in", path, "--out", tmp_path / "out", "--molecule", "h2")
    assert code == 2
    _assert_one_line(lines, "label", r"bad\.xyz: frame 2 could not be parsed as extxyz \(line 8: expected an atom "
                                     r"count, found 'H 0\.0 0\.0 0\.74' after frame 1 \(line 5\), which declares 1 atoms")


# --- end to end: real subprocesses ----------------------------------------------------------------------------
SUBPROCESS_CASES = [
    ("yaml-syntax", _yaml_syntax, 2, r"bad\.yaml: line 4, column \d+: invalid YAML: while parsing a flow sequence"),
    ("n_steps-abc", _bias(n_steps="abc"), 2, r"bias\.yaml: n_steps: expected an integer, found 'abc'"),
    ("temperature-negative", _simulate("--temperature", "-50"), 2, r"--temperature: expected a temperature > 0 K"),
    ("cv-of-another-system", _bias(system="pentapeptide_wlall"), 2, r"CV expects 22 particles"),
]


@pytest.mark.parametrize("build, code, pattern", [c[1:] for c in SUBPROCESS_CASES], ids=[c[0] for c in SUBPROCESS_CASES])
def test_subprocess_exit_codes_and_no_banner(build, code, pattern, cv_path, tmp_path):
    argv = [str(a) for a in build(tmp_path, cv_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "openmm_plugin.cli", *argv], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == code, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    _assert_one_line(lines, argv[0], pattern)
    assert "Warp" not in done.stdout + done.stderr  # no third-party banner
