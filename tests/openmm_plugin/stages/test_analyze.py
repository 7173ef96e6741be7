"""``cvlearn analyze`` on COLVARs of real biased runs of the analytic double well (OPES and metad walkers)."""

import json

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch
import yaml

from cvlearn.analysis.reweighting import log_weights_from_bias, weights_from_log
from cvlearn.data.colvar import read_colvar, write_colvar
from cvlearn.units import kt_kjmol
from openmm_plugin.bias import BiasReporter, BiasRunner, Metadynamics, OPESMetad
from openmm_plugin.cli import main
from openmm_plugin.forces import python_bias_force
from openmm_plugin.stages.analyze import AnalyzeConfig, run_analyze
from tests.openmm_plugin.bias import double_well as dw

KT = kt_kjmol(dw.TEMPERATURE_K)
N_STEPS = 6000
REGIONS = {"left": {"x": [-0.9, 0.0]}, "right": {"x": [0.0, 0.9]}}


def _run(tmp_path, name, method, seed):
    cv = dw.coordinate_cv(tmp_path / f"{name}.pt", dims=(0, 1))
    if method == "metad":
        bias = Metadynamics(sigma=[0.05, 0.05], height_kjmol=1.0, pace_steps=100, temperature_k=dw.TEMPERATURE_K,
                            bias_factor=5.0, lower=[-1.2, -1.2], upper=[1.2, 1.2], use_grid=True)
    else:
        bias = OPESMetad(sigma=[0.05, 0.05], barrier_kjmol=15.0, pace_steps=100, temperature_k=dw.TEMPERATURE_K)
    system = dw.make_system()
    force = python_bias_force(cv, bias)
    system.addForce(force)
    top = app.Topology()
    top.addAtom("X", app.element.hydrogen, top.addResidue("X", top.addChain()))
    sim = app.Simulation(top, system, dw.make_integrator(seed), openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(dw.start_positions(1))
    sim.context.setVelocitiesToTemperature(dw.TEMPERATURE_K, seed + 1)
    reporter = BiasReporter(tmp_path / name, bias, cv, 10, cv_names=["x", "y"])
    sim.reporters.append(reporter)
    BiasRunner(bias, callback=force.callback).step(sim, N_STEPS)
    reporter.close()
    return tmp_path / name


@pytest.fixture(scope="module")
def colvars(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("walkers")
    paths = {"opes0": _run(root, "COLVAR.opes0", "opes", 0), "opes1": _run(root, "COLVAR.opes1", "opes", 1),
             "metad": _run(root, "COLVAR.metad", "metad", 2)}
    torch.set_num_threads(threads)
    return paths


def _config(tmp_path, paths, **kw):
    values = dict(colvars=tuple(str(p) for p in paths), fields=("x",), out=str(tmp_path / "out"),
                  temperature_k=dw.TEMPERATURE_K, regions=REGIONS, n_blocks=4, bins=30)
    values.update(kw)
    return AnalyzeConfig(**values)


def test_delta_f_is_minus_kt_log_of_reweighted_populations(colvars, tmp_path):
    summary = run_analyze(_config(tmp_path, [colvars["opes0"], colvars["opes1"]], fields=("x", "y")))
    log_w, xs = [], []
    for path in (colvars["opes0"], colvars["opes1"]):  # the same weights, computed here independently
        c = read_colvar(path)
        start = int(0.1 * len(c["x"]))
        log_w.append(log_weights_from_bias(c["bias"][start:], dw.TEMPERATURE_K))
        xs.append(c["x"][start:])
    w, x = weights_from_log(np.concatenate(log_w)), np.concatenate(xs)
    p_left, p_right = w[(x >= -0.9) & (x <= 0.0)].sum(), w[(x >= 0.0) & (x <= 0.9)].sum()
    d = summary["deltaF"]["left-right"]
    assert d["kjmol"] == pytest.approx(-KT * np.log(p_left / p_right), rel=1e-9, abs=1e-9)
    assert np.isfinite(d["stderr_kjmol"]) and d["stderr_kjmol"] > 0
    assert abs(d["kjmol"]) < 3 * KT  # symmetric wells: ΔF = 0 exactly, loosely here for a short run
    out = tmp_path / "out"
    for name in ("fes_1d_x.dat", "fes_1d_x.png", "fes_1d_y.dat", "fes_2d.dat", "fes_2d.png", "deltaF.json",
                 "deltaF_vs_time.dat", "deltaF_vs_time.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "deltaF.json").read_text())["deltaF"]["left-right"]["kjmol"] == d["kjmol"]
    profile = np.loadtxt(out / "fes_1d_x.dat")
    visited = np.isfinite(profile[:, 1])
    assert np.nanmin(profile[:, 1]) == 0 and np.all(np.isfinite(profile[visited, 2]))
    assert np.all(profile[visited, 2] >= 0)
    grid = np.loadtxt(out / "fes_2d.dat")
    assert grid.shape == (30 * 30, 3)
    against_time = np.loadtxt(out / "deltaF_vs_time.dat")
    assert against_time.shape == (10, 2) and against_time[-1, 1] == pytest.approx(d["kjmol"])
    assert np.all(np.diff(against_time[:, 0]) > 0)


def test_pooled_walkers_lie_near_each_alone(colvars, tmp_path):
    alone = [run_analyze(_config(tmp_path / str(k), [colvars[k]]))["deltaF"]["left-right"]
             for k in ("opes0", "opes1")]
    both = run_analyze(_config(tmp_path / "both", [colvars["opes0"], colvars["opes1"]]))["deltaF"]["left-right"]
    for summary in alone:  # a block that missed a region is left out of the error, never NaN in the JSON
        assert summary["stderr_kjmol"] is None or summary["stderr_kjmol"] > 0
        assert 2 <= summary["n_blocks_used"] <= 4 or summary["stderr_kjmol"] is None
    json.loads((tmp_path / "opes1" / "out" / "deltaF.json").read_text(), parse_constant=pytest.fail)
    lo, hi = sorted(a["kjmol"] for a in alone)
    slack = 2 * max(a["stderr_kjmol"] or 0.0 for a in alone) + 0.5 * KT
    assert lo - slack <= both["kjmol"] <= hi + slack


def test_metad_uses_c_of_t(colvars, tmp_path):
    summary = run_analyze(_config(tmp_path, [colvars["metad"]], method="metad"))
    c = read_colvar(colvars["metad"])
    start = int(0.1 * len(c["x"]))
    w = weights_from_log(log_weights_from_bias(c["bias"][start:], dw.TEMPERATURE_K, c["metad.rct"][start:]))
    x = c["x"][start:]
    expected = -KT * np.log(w[(x >= -0.9) & (x <= 0.0)].sum() / w[(x >= 0.0) & (x <= 0.9)].sum())
    assert summary["deltaF"]["left-right"]["kjmol"] == pytest.approx(expected, rel=1e-9, abs=1e-9)


def _trajectory(tmp_path, colvar, n_frames=None):
    """4 atoms whose distance 0-1 is x + 1 nm and torsion 0-1-2-3 is x rad, one frame per COLVAR row."""
    import mdtraj

    x = read_colvar(colvar)["x"][:n_frames]
    xyz = np.zeros((len(x), 4, 3))
    xyz[:, 1, 0] = x + 1.0
    xyz[:, 2] = xyz[:, 1] + [0.0, 0.0, 1.0]
    xyz[:, 3] = xyz[:, 2] - np.column_stack([np.cos(x), np.sin(x), np.zeros_like(x)])  # cis at x = 0
    top = mdtraj.Topology()
    residue = top.add_residue("X", top.add_chain())
    for _ in range(4):
        top.add_atom("C", mdtraj.element.carbon, residue)
    traj = mdtraj.Trajectory(xyz, top)
    traj[0].save_pdb(str(tmp_path / "top.pdb"))
    traj.save_dcd(str(tmp_path / "traj.dcd"))
    return str(tmp_path / "traj.dcd"), str(tmp_path / "top.pdb")


def test_trajectory_observables_are_reweighted_like_the_cvs(colvars, tmp_path):
    traj, top = _trajectory(tmp_path, colvars["opes0"])
    regions = {"left": {"d": [0.1, 1.0]}, "right": {"d": [1.0, 1.9]}}
    summary = run_analyze(_config(tmp_path, [colvars["opes0"]], fields=("d", "t"), regions=regions,
                                  trajectories=(traj,), topology=top, distances={"d": [0, 1]},
                                  torsions={"t": [0, 1, 2, 3]}))
    on_x = run_analyze(_config(tmp_path / "x", [colvars["opes0"]]))
    assert summary["deltaF"]["left-right"]["kjmol"] == pytest.approx(on_x["deltaF"]["left-right"]["kjmol"], abs=1e-6)
    x = np.loadtxt(tmp_path / "x" / "out" / "fes_1d_x.dat")
    d, t = np.loadtxt(tmp_path / "out" / "fes_1d_d.dat"), np.loadtxt(tmp_path / "out" / "fes_1d_t.dat")
    assert np.allclose(d[:, 0], x[:, 0] + 1.0, atol=1e-5)
    assert np.allclose(d[:, 1], x[:, 1], atol=1e-6, equal_nan=True)
    if t[0, 0] > t[-1, 0]:
        t = t[::-1]
    assert np.allclose(np.abs(t[:, 0]), np.abs(x[:, 0]), atol=1e-5)  # the torsion is ±x
    assert np.allclose(t[:, 1][::1 if t[0, 0] < 0 else -1], x[:, 1], atol=1e-6, equal_nan=True)
    assert (tmp_path / "out" / "fes_2d.png").exists()


def _cli(tmp_path, capsys, **config):
    path = tmp_path / "analyze.yaml"
    path.write_text(yaml.safe_dump(config))
    code = main(["analyze", "--config", str(path)])
    return code, capsys.readouterr()


def test_cli_runs_and_bad_inputs_fail_in_one_line(colvars, tmp_path, capsys):
    good = dict(colvars=[str(colvars["opes0"])], fields=["x"], out=str(tmp_path / "cli"), regions=REGIONS,
                n_blocks=3)
    code, captured = _cli(tmp_path, capsys, **good)
    assert code == 0 and "left-right" in captured.out and (tmp_path / "cli" / "report.md").exists()

    # a region no frame visited (yet): ΔF null and said so, the rest of the analysis runs
    code, captured = _cli(tmp_path, capsys, **dict(good, out=str(tmp_path / "far"),
                                                   regions={"left": {"x": [-0.9, 0.0]}, "far": {"x": [5.0, 6.0]}}))
    summary = json.loads((tmp_path / "far" / "deltaF.json").read_text())
    assert code == 0 and summary["unvisited_regions"] == ["far"] and all(d["kjmol"] is None for d in summary["deltaF"].values())
    assert "undefined" in (tmp_path / "far" / "report.md").read_text()

    no_bias = tmp_path / "COLVAR.nobias"
    write_colvar(no_bias, ["time", "x"], np.array([[0.0, 0.1], [1.0, 0.2]]))
    short, top = _trajectory(tmp_path, colvars["opes0"], n_frames=5)
    cases = [(dict(good, colvars=[str(tmp_path / "missing")]), "missing"),
             (dict(good, colvars=[str(no_bias)]), "expected a bias column (`bias` or `<label>.bias`), found fields "
                                                  "['time', 'x']"),
             (dict(good, fields=["q"]), "expected the field 'q'"),
             (dict(good, regions={"bad": {"x": [1.0, 0.0]}}), "min < max"),
             (dict(good, trajectories=[short], topology=top, distances={"d": [0, 1]}), "expected 600 frames (one per row of")]
    for config, expected in cases:
        out = tmp_path / "bad_out"
        code, captured = _cli(tmp_path, capsys, **dict(config, out=str(out)))
        assert code == 2, (config, captured)
        assert expected in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
        assert not out.exists()  # nothing half-written
