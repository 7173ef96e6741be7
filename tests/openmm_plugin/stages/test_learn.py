"""``cvlearn learn`` on real alanine-dipeptide MD written by the test: outputs, export fidelity, resume, errors."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch
import yaml

from cvlearn.data import lagged_pairs
from cvlearn.data.colvar import write_colvar
from cvlearn.errors import ConfigError
from cvlearn.estimators.scores import vamp_score
from cvlearn.export import load_cv
from openmm_plugin.cli import main
from openmm_plugin.stages.learn import LearnConfig, run_learn
from tests.openmm_plugin.stages.ala2_runs import FRAME_PS, ala2_runs

N_FRAMES = 300
TINY_ET = {"hidden_channels": 16, "num_layers": 1, "num_rbf": 8, "num_heads": 4, "cutoff_angstrom": 5.0}


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    """Three 30-ps ala2 runs at 600 K (Reference platform), a frame every 0.1 ps: DCDs + PDB."""
    return ala2_runs(tmp_path_factory.mktemp("ala2_md"), 3, N_FRAMES)


def _config(md, out, **changes) -> dict:
    config = {"out": str(out), "topology": md["topology"], "trajectories": md["trajectories"], "lagtime_ps": 0.5,
              "max_epochs": 3, "patience": 2, "batch_size": 128, "head_hidden": 16, "n_clusters": 5,
              "observables": {"phi": "phi 0", "rg": "rg", "d": "distance 4 14", "rmsd": "rmsd"}}
    config.update(changes)
    return config


def _write(tmp_path, config: dict, name: str = "learn.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def learned(md, tmp_path_factory):
    """One default run (shipped ET, frozen) through the command line."""
    folder = tmp_path_factory.mktemp("learn")
    config_path = _write(folder, _config(md, folder / "out"))
    assert main(["learn", "--config", str(config_path)]) == 0
    return folder / "out", config_path


def _selected_frames(md, spec) -> list[np.ndarray]:
    return [mdtraj.load(p, top=md["topology"]).xyz[:, list(spec.atom_indices)] for p in md["trajectories"]]


def test_learn_writes_its_outputs_and_the_exported_cv_is_the_trained_model(md, learned):
    from cvlearn.checkpoints import default_checkpoint
    from cvlearn.io import file_sha256

    out, _ = learned
    metrics = json.loads((out / "metrics.json").read_text())
    for name in metrics["outputs"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert {"cv_on_tica.png", "cv_on_observables.png", "cv_its.png", "training_curves.png"} <= set(metrics["outputs"])
    assert metrics["lag_frames"] == 5 and abs(metrics["frame_interval_ps"] - FRAME_PS) < 1e-6  # from the DCD header
    assert metrics["n_frames"] == {"total": 3 * N_FRAMES, "train": 2 * N_FRAMES, "validation": N_FRAMES}
    assert abs(metrics["vamp2_val"] - metrics["vamp2_val_deeptime"]) < 1e-6
    assert 1.0 < metrics["vamp2_val"] <= 3.0
    assert set(metrics["baselines"]) == {"tica_torsions", "vampnet_distances"}
    assert all(1.0 < b["vamp2_val"] <= 3.0 for b in metrics["baselines"].values())
    assert "| tica_torsions |" in (out / "report.md").read_text()

    cv, spec = load_cv(out / "cv.pt")
    assert spec.n_cvs == 2 and spec.lagtime_ps == 0.5 and len(spec.atom_indices) == 10
    assert spec.featurizer_sha256 == file_sha256(default_checkpoint())  # the shipped pre-trained ET
    assert spec.extra["cv_names"] == ["cv1", "cv2"] and spec.extra["selection"] == "protein and not element H"
    # The exported file reproduces the trained model: the same validation VAMP-2 and the same range on all frames.
    frames = _selected_frames(md, spec)
    with torch.no_grad():
        outputs = [cv.model(torch.from_numpy(f)).double() for f in frames]
    all_out = torch.cat(outputs)
    expected = np.array(metrics["cv_range"])
    assert np.allclose(all_out.min(0).values.numpy(), expected[:, 0], atol=1e-4)
    assert np.allclose(all_out.max(0).values.numpy(), expected[:, 1], atol=1e-4)
    val_traj = [i for i in range(3) if i not in _train_ids(metrics)]
    assert abs(float(vamp_score(*lagged_pairs([outputs[i] for i in val_traj], 5), r=2)) - metrics["vamp2_val"]) < 1e-4


def _train_ids(metrics) -> list[int]:
    from cvlearn.data import split_by_trajectory

    return [s.traj for s in split_by_trajectory([N_FRAMES] * 3, metrics["config"]["validation_fraction"], 0)[0]]


def test_rerun_resumes_without_recomputing_and_a_changed_config_is_refused(md, learned):
    out, config_path = learned
    before = json.loads((out / "metrics.json").read_text())
    chunks = sorted((out / "store").rglob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in chunks]
    seed_ckpt = torch.load(out / "seeds" / "seed0.ckpt", weights_only=False)
    # An interruption after training: outputs gone, the record not finished.
    for name in ("metrics.json", "cv.pt", "report.md"):
        (out / name).unlink()
    record = json.loads((out / "run.json").read_text())
    record["finished"] = False
    (out / "run.json").write_text(json.dumps(record))
    again = run_learn(LearnConfig(**{k: v for k, v in yaml.safe_load(config_path.read_text()).items()}))
    assert [p.stat().st_mtime_ns for p in chunks] == stamps  # the store was not recomputed
    assert torch.load(out / "seeds" / "seed0.ckpt", weights_only=False)["epoch"] == seed_ckpt["epoch"]  # no new epoch
    assert abs(again["vamp2_val"] - before["vamp2_val"]) < 1e-9 and (out / "cv.pt").is_file()
    finished = run_learn(LearnConfig(**yaml.safe_load(config_path.read_text())))
    assert finished["seconds"] == again["seconds"]  # a finished run returns its metrics, nothing recomputed
    changed = _write(config_path.parent, {**yaml.safe_load(config_path.read_text()), "lagtime_ps": 1.0}, "changed.yaml")
    with pytest.raises(ConfigError, match=r"lagtime_ps: 0\.5 -> 1\.0.*--restart-fresh"):
        run_learn(LearnConfig(**yaml.safe_load(changed.read_text())))


def test_end_to_end_window_attention_from_a_random_featurizer(md, tmp_path):
    config = LearnConfig(**_config(md, tmp_path / "out", protocol="end_to_end", context="window", half_width=1,
                                   mixer="attention", featurizer={"kind": "et", "config": TINY_ET}, seeds=(3, 4),
                                   baselines=(), observables=None, max_epochs=2))
    metrics = run_learn(config, progress=False)
    assert [s["seed"] for s in metrics["seeds"]] == [3, 4] and metrics["best_seed"] in (3, 4)
    assert not (tmp_path / "out" / "store").exists()  # end to end: nothing is embedded ahead
    assert metrics["vamp2_val"] == max(s["vamp2_val"] for s in metrics["seeds"])
    cv, spec = load_cv(tmp_path / "out" / "cv.pt")
    frames = _selected_frames(md, spec)
    with torch.no_grad():
        all_out = torch.cat([cv.model(torch.from_numpy(f)).double() for f in frames])
    assert np.allclose(all_out.min(0).values.numpy(), np.array(metrics["cv_range"])[:, 0], atol=1e-4)


def test_learning_from_biased_runs_uses_the_colvar_weights(md, tmp_path):
    colvars = []
    for i, path in enumerate(md["trajectories"]):
        phi = mdtraj.compute_phi(mdtraj.load(path, top=md["topology"]))[1][:, 0]
        colvars.append(str(tmp_path / f"colvar{i}"))
        write_colvar(colvars[-1], ["time", "bias"], np.column_stack([np.arange(N_FRAMES) * FRAME_PS, 2.0 * np.cos(phi)]))
    for method in ("weights", "rescaled_time"):
        metrics = run_learn(LearnConfig(**_config(md, tmp_path / method, observables=None, baselines=("vampnet_distances",),
                                                  biased={"colvars": colvars, "temperature_k": 600.0,
                                                          "method": method})), progress=False)
        assert metrics["vamp2_val_deeptime"] is None and 1.0 < metrics["vamp2_val"] <= 3.0
        assert any("kinetics" in note for note in metrics["notes"])
    short = str(tmp_path / "short")
    write_colvar(short, ["time", "bias"], np.zeros((N_FRAMES - 1, 2)))
    with pytest.raises(ConfigError, match=rf"COLVAR '.*short' has {N_FRAMES - 1} rows, trajectory '.*traj0\.dcd' has "
                                          rf"{N_FRAMES} frames"):
        run_learn(LearnConfig(**_config(md, tmp_path / "x", biased={"colvars": [short, *colvars[1:]]})))
    gap = str(tmp_path / "gap")  # a row lost on a resume: later rows would pair with the next frame
    time = np.r_[np.arange(70), np.arange(71, N_FRAMES + 1)] * FRAME_PS
    write_colvar(gap, ["time", "bias"], np.column_stack([time, np.zeros(N_FRAMES)]))
    with pytest.raises(ConfigError, match=r"biased\.colvars: COLVAR '.*gap': expected a row every 0\.1 ps \(row k = "
                                          r"frame k\), found a step of 0\.2 ps after row 69 \(time 6\.9 ps\)"):
        run_learn(LearnConfig(**_config(md, tmp_path / "x", biased={"colvars": [gap, *colvars[1:]]})))
    no_bias = str(tmp_path / "nobias")
    write_colvar(no_bias, ["time", "cv1"], np.zeros((N_FRAMES, 2)))
    with pytest.raises(ConfigError, match=r"biased\.colvars: .*nobias: expected one bias column .* found fields "
                                          r"\['time', 'cv1'\]"):
        run_learn(LearnConfig(**_config(md, tmp_path / "x", biased={"colvars": [no_bias, *colvars[1:]]})))


def test_periodic_frames_are_made_whole_when_read(md, tmp_path):
    from openmm_plugin.stages.learn_data import check_inputs, read_inputs

    traj = mdtraj.load(md["trajectories"][0], top=md["topology"])
    box = 1.2
    broken = traj.xyz.copy()
    broken[:, 14, 0] += box  # one heavy atom one box length away: a bond stretched across the box
    periodic = mdtraj.Trajectory(broken, traj.topology, unitcell_lengths=np.full((traj.n_frames, 3), box),
                                 unitcell_angles=np.full((traj.n_frames, 3), 90.0))
    periodic.save_dcd(str(tmp_path / "box.dcd"))
    config = LearnConfig(**_config(md, tmp_path / "out", trajectories=[str(tmp_path / "box.dcd")],
                                   frame_interval_ps=FRAME_PS, observables=None))
    data = read_inputs(config, check_inputs(config), None)
    atoms = check_inputs(config).atoms
    assert data.periodic
    shift = data.positions[0].numpy() - traj.xyz[:, atoms]
    assert np.abs(shift - shift[:, :1]).max() < 1e-4  # whole again: at most a rigid shift of the molecule
    # The whole chain: a periodic export, which makes the broken frame whole itself and equals the whole frame.
    metrics = run_learn(dataclasses.replace(config, baselines=()), progress=False)
    assert metrics["periodic"] and any("one trajectory" in note for note in metrics["notes"])
    cv, spec = load_cv(tmp_path / "out" / "cv.pt")
    assert spec.periodic
    box_nm = torch.eye(3, dtype=torch.float32) * box
    with torch.no_grad():
        on_broken = cv(torch.from_numpy(broken[7]), box_nm)
        on_whole = cv(torch.from_numpy(traj.xyz[7]), box_nm)
    assert torch.allclose(on_broken, on_whole, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    ({"trajectories": ["missing.dcd"]}, r"trajectories: trajectory file 'missing\.dcd' does not exist"),
    ({"selection": "resname XYZ"}, r"selection: 'resname XYZ': expected at least one atom, found none"),
    ({"lagtime_ps": 100.0}, r"lagtime_ps: lag 1000 frames \(100 ps\) is not shorter than the longest trajectory "
                            r"'.*traj0\.dcd' \(300 frames"),
    ({"trajectories": "ONE", "lagtime_ps": 8.0}, r"validation_fraction: the validation part \(\[75\] frames\) has no pair"),
    ({"featurizer": {"kind": "schnet"}}, r"featurizer\.kind: expected one of \['et', 'tensornet', 'visnet'\], found 'schnet'"),
    ({"observables": {"x": "phi 3"}}, r"observables\.x: expected 'phi N' with N in \[0, 1\)"),
    ({"lagtime_ps": 0.25}, r"lagtime_ps: expected a positive multiple of the frame interval 0\.1 ps"),
    ({"featurizer": {"kind": "tensornet", "vector_cutoff": True}}, r"featurizer\.vector_cutoff: tensornet has no "
                                                                  r"such option \(it is continuous at its cutoff\)"),
    ({"featurizer": {"kind": "et", "config": {"vector_cutoff": False}, "vector_cutoff": True}},
     r"featurizer\.vector_cutoff: True contradicts config\.vector_cutoff: False"),
])
def test_bad_input_fails_before_compute_with_one_line(md, tmp_path, capsys, change, message):
    if change.get("trajectories") == "ONE":
        change = {**change, "trajectories": md["trajectories"][:1]}
    config_path = _write(tmp_path, _config(md, tmp_path / "out", **change))
    assert main(["learn", "--config", str(config_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cvlearn learn: error:")
    import re

    assert re.search(message, err[0]), err[0]
    assert not (tmp_path / "out" / "run.json").exists()  # refused before anything was started


def test_a_trajectory_of_another_system_names_both_atom_counts(md, tmp_path):
    traj = mdtraj.load(md["trajectories"][0], top=md["topology"])
    traj.atom_slice(range(10)).save_dcd(str(tmp_path / "ten.dcd"))
    with pytest.raises(ConfigError, match=r"trajectories: trajectory '.*ten\.dcd' has 10 atoms per frame but topology "
                                          r"'.*traj0\.pdb' has 22 atoms"):
        run_learn(LearnConfig(**_config(md, tmp_path / "out", trajectories=[str(tmp_path / "ten.dcd")])))


def test_an_existing_store_is_reused_and_a_foreign_one_refused(md, learned, tmp_path):
    out, config_path = learned
    config = LearnConfig(**{**yaml.safe_load(config_path.read_text()), "out": str(tmp_path / "reuse"),
                            "store": str(out / "store"), "baselines": [], "observables": None})
    metrics = run_learn(config, progress=False)
    first = json.loads((out / "metrics.json").read_text())
    assert not (tmp_path / "reuse" / "store").exists()
    assert abs(metrics["vamp2_val"] - first["vamp2_val"]) < 1e-9  # the same tokens, the same seed
    other = dataclasses.replace(config, out=str(tmp_path / "other"), selection="backbone")
    with pytest.raises(ConfigError, match=r"store: .*expected a store of this featurizer, selection and frames, found "
                                          r"other \[.*'atom_indices'\]"):
        run_learn(other, progress=False)


def test_quick_reduces_epochs_and_seeds():
    from openmm_plugin.stages.learn import quick_config

    quick = quick_config(LearnConfig(topology="t.pdb", trajectories=("a.dcd",), seeds=(1, 2, 3), max_epochs=50))
    assert (quick.max_epochs, quick.patience, quick.min_epochs, quick.seeds) == (3, 2, 0, (1,))
    assert copy.deepcopy(quick) == quick


@pytest.mark.slow
def test_torchrun_two_processes_learn_the_same_cv(md, learned, tmp_path):
    """``torchrun --nproc_per_node 2 ... cvlearn learn``: the store is sharded across the ranks and equals the
    one-process store bit for bit; DDP training (covariances all-reduced) gives the same validation VAMP-2 up to
    float32 rounding; rank 0 alone writes cv.pt and the report."""
    import os
    import socket
    import subprocess
    import sys

    from cvlearn.data.store import EmbeddingStore

    one_out, _ = learned
    config_path = _write(tmp_path, _config(md, tmp_path / "out"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "openmm_plugin.cli",
                           "learn", "--config", str(config_path)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-4000:]
    two, one = EmbeddingStore(tmp_path / "out" / "store"), EmbeddingStore(one_out / "store")
    assert two.n_trajectories == one.n_trajectories == 3
    for t in range(3):
        np.testing.assert_array_equal(two.trajectory(t), one.trajectory(t))
    m1 = json.loads((one_out / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # float32 all-reduce rounding, amplified by three epochs of Adam: measured 1.8e-3 apart on the default features
    assert m2["vamp2_val"] == pytest.approx(m1["vamp2_val"], abs=5e-3)
    _, spec = load_cv(tmp_path / "out" / "cv.pt")
    assert spec.n_cvs == 2 and (tmp_path / "out" / "report.md").is_file()


def _jump_at_the_cutoff(cv, spec, frame: np.ndarray) -> float:
    """|s(r = 5 Å + 1e-6) − s(r = 5 Å − 1e-6)| for the selected pair nearest the ET's 5 Å cutoff, the rest fixed."""
    atoms = list(spec.atom_indices)
    x = torch.from_numpy(frame.astype(np.float64))
    r = torch.cdist(x[atoms], x[atoms]) * 10
    i, j = divmod(int(torch.argmin((r - 5.0).abs() + 1e3 * torch.eye(len(atoms), dtype=r.dtype))), len(atoms))
    unit = (x[atoms[j]] - x[atoms[i]]) / (x[atoms[j]] - x[atoms[i]]).norm()
    values = []
    for distance in (5.0 - 1e-6, 5.0 + 1e-6):
        moved = x.clone()
        moved[atoms[j]] = x[atoms[i]] + unit * distance / 10.0
        with torch.no_grad():
            values.append(cv(moved))
    return float((values[1] - values[0]).abs().max())


def test_the_default_cv_is_continuous_at_the_cutoff(md, learned, tmp_path):
    """The published ET's CV jumps where a pair crosses 5 Å (its vector messages are masked there): MD under a bias
    on it does not conserve energy (issue 17). cvlearn learn weights them with the cutoff by default
    (``vector_cutoff``); ``vector_cutoff: false`` gives the published function, and a store of the one is refused
    for the other."""
    out, config_path = learned
    base = {**yaml.safe_load(config_path.read_text()), "baselines": [], "observables": None}
    masked = LearnConfig(**{**base, "out": str(tmp_path / "masked"),
                            "featurizer": {"checkpoint": "default", "vector_cutoff": False}})
    run_learn(masked, progress=False)
    frame = mdtraj.load(md["trajectories"][0], top=md["topology"]).xyz[5]
    jumps = {}
    for name, folder in (("default", out), ("masked", tmp_path / "masked")):
        cv, spec = load_cv(folder / "cv.pt")
        jumps[name] = _jump_at_the_cutoff(cv.double(), spec, frame)
    assert jumps["masked"] > 1e-2 and jumps["default"] < 1e-4, jumps  # float32 export: ~1e-6 of rounding
    assert "continuous at the cutoff" in (out / "report.md").read_text()
    with pytest.raises(ConfigError, match=r"store: .*found other \['featurizers'\]"):
        run_learn(dataclasses.replace(masked, out=str(tmp_path / "reuse"), store=str(out / "store")), progress=False)

def test_a_cv_without_components_is_refused_in_one_line():
    """Pairs that resolve no slow process (in a 4-ps OPES-explore run at 40 kJ/mol one frame carried the weight)
    leave a 0-wide VAMP projection; export would fail deep inside, so training says so first."""
    from cvlearn.errors import RunError
    from cvlearn.models.cv import VAMPModel
    from openmm_plugin.stages.learn_fit import check_has_components

    empty = VAMPModel(torch.nn.Linear(3, 2), torch.zeros(2), torch.zeros(2, 0), torch.zeros(0), 1)
    config = LearnConfig(topology="t.pdb", trajectories=("a.dcd",), lagtime_ps=0.1,
                         biased={"colvars": ("c",)})
    with pytest.raises(RunError, match=r"^the trained CV has no component: every VAMP singular value at lag 0\.1 ps "
                                       r"fell below epsilon \(validation VAMP-2 1\.248\).*a few frames"):
        check_has_components(empty, config, 1.248)
    kept = VAMPModel(torch.nn.Linear(3, 2), torch.zeros(2), torch.eye(2)[:, :1], torch.ones(1), 1)
    check_has_components(kept, config, 1.5)  # one component is a CV


def test_rescaled_time_is_normalised_so_the_lag_counts_simulated_time():
    """OPES-explore weights accelerate t' by ~1e5 on average (ala2, 2 ns): unnormalised, a 5-ps lag pairs nearly
    every frame with itself; normalised (the default), it pairs frames ~5 apart."""
    from cvlearn.data import biased_pairs, self_pair_fraction
    from openmm_plugin.stages.learn import BiasedSpec

    rng = np.random.default_rng(0)
    log_w = [rng.normal(11.5, 2.0, 2000)]  # mean acceleration ~1e5, as measured
    raw = biased_pairs(log_w, 1.0, 5.0)
    normalised = biased_pairs(log_w, 1.0, 5.0, normalise=True)
    assert self_pair_fraction(raw) > 0.9 and self_pair_fraction(normalised) < 0.5
    assert BiasedSpec(colvars=("c",)).normalise_time


def test_a_checkpoint_is_read_twice_at_start_up_not_five_times(tmp_path, monkeypatch):
    """The config check, the build and the report each needed the checkpoint's kind and each read the whole file;
    the spec now reads the kind once, and the build reads the file once more for its weights."""
    from cvlearn.nn.featurizers import checkpoints, make_featurizer
    from openmm_plugin.stages.learn import _check_featurizer, featurizer_note

    path = tmp_path / "et.pt"
    checkpoints.save_featurizer_checkpoint(make_featurizer("et", [1, 6, 8], TINY_ET, seed=0), path)
    reads = []
    real = checkpoints._read
    monkeypatch.setattr(checkpoints, "_read", lambda p: reads.append(p) or real(p))
    config = LearnConfig(topology="t.pdb", trajectories=("a.dcd",), lagtime_ps=0.1,
                         featurizer={"checkpoint": str(path)})
    _check_featurizer(config)
    featurizer = config.featurizer.build([1, 6, 8], seed=0)
    assert "continuous at the cutoff" in featurizer_note(config)
    assert featurizer.config.vector_cutoff is True  # the default, set on the checkpoint's architecture
    assert len(reads) == 2, reads


@pytest.mark.parametrize("method", ["rescaled_time", "weights"])
def test_the_bias_transient_is_left_out_of_biased_training(method):
    """Right after OPES's first deposition V jumps from -ΔE to ~0 while c(t) is still -ΔE: one frame carries
    e^(βΔE) (β(V - c) = 12 on WLALL walkers at 30 kJ/mol). Kept, it is the whole training set (rescaled time: the
    lag falls inside that frame; weights: an effective sample size of 1); skipped with the transient, it is not."""
    from types import SimpleNamespace

    from cvlearn.data import effective_sample_size, self_pair_fraction
    from openmm_plugin.stages.learn_data import split_segments
    from openmm_plugin.stages.learn_fit import fit_weights

    rng = np.random.default_rng(0)
    log_w = [rng.normal(0.0, 1.0, 400) for _ in range(4)]
    for lw in log_w:
        lw[1] = 12.0  # the frame after the first deposition
    outcome = {}
    for skip in (0.0, 0.1):
        config = LearnConfig(topology="t.pdb", trajectories=tuple(f"{i}.dcd" for i in range(4)), lagtime_ps=5.0,
                             biased={"colvars": tuple(f"{i}.colvar" for i in range(4)), "method": method,
                                     "skip_fraction": skip})
        train, val = split_segments(config, [400] * 4)
        assert all(s.start >= int(skip * 400) for s in [*train, *val]) and train and val
        kwargs = fit_weights(config, SimpleNamespace(log_weights=log_w),
                             SimpleNamespace(train=train, validation=val, frame_interval_ps=1.0))
        if method == "rescaled_time":
            outcome[skip] = self_pair_fraction(kwargs["train_pairs"])
        else:
            outcome[skip] = effective_sample_size(np.log(np.concatenate(kwargs["train_weights"])))
    if method == "rescaled_time":
        assert outcome[0.0] > 0.9 and outcome[0.1] < 0.05
    else:
        assert outcome[0.0] < 4 and outcome[0.1] > 100  # one spike per training trajectory: ESS ~3
    with pytest.raises(ValueError, match=r"skip_fraction: expected a fraction in \[0, 1\), found 1"):
        LearnConfig(topology="t.pdb", trajectories=("a.dcd",), biased={"colvars": ("c",), "skip_fraction": 1})
