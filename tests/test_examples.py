"""Numbered examples run in their --quick mode, as a user would run them."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("script", ["01_alanine_dipeptide_demo.py", "03_vamp_alanine.py", "04_learn_from_biased_run.py"])
def test_example_quick(script, tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "vamp2_val" in result.stdout


def test_featurize_example_quick(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "02_featurize_pentapeptide.py"), "--quick", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])["tokens"]
    assert summary["heavy_atoms"] == 48 and summary["frames"] == [20, 20]
    for context in ("molecule", "window"):  # 7 tokens: ACE, W, L, A, L, L, NME
        assert summary[context]["tokens_shape"] == [20, 7, 64]
        assert summary[context]["n_lagged_pairs"] == 2 * (20 - 2)
    assert summary["max_abs_molecule_minus_window"] > 0  # windows really cut the graph


def test_pretrain_example_quick(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "05_pretrain_small.py"), "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final_val_loss" in result.stdout and "[1, 10, 32]" in result.stdout
    assert (tmp_path / "pretrain" / "loss_curve.png").is_file()


def test_finetune_example_quick(tmp_path):
    from systems.malonaldehyde import dataset_path

    try:
        dataset_path()
    except FileNotFoundError as err:
        pytest.skip(f"shipped malonaldehyde data not generated: {err}")
    result = subprocess.run([sys.executable, str(EXAMPLES / "06_finetune_malonaldehyde.py"), "--quick", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test_force_mae_mev_per_angstrom" in result.stdout
    assert (tmp_path / "finetune" / "potential.pt").is_file()


# --- examples/configs: the learn / bias / analyze triples, run as the README's "your own system" section says ----
CONFIGS = EXAMPLES / "configs"
TRIPLES = {  # name: (built-in system standing in for the user's data, simulate flags, check flags)
    "wlall": ("pentapeptide_wlall", ["--temperature", "400"], []),
    "ala2_water": ("alanine_dipeptide_water", ["--platform", "CPU"], []),
}


def _cvlearn(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    root = EXAMPLES.parent
    result = subprocess.run([sys.executable, "-m", "openmm_plugin.cli", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=timeout, env={**__import__("os").environ, "PYTHONPATH": str(root),
                                                             "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"cvlearn {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TRIPLES))
def test_config_triple_quick(name, tmp_path):
    """Stand-in trajectories (short), then the three commands on the shipped configs with --quick: the CV exported
    by learn passes `cvlearn check`, bias writes COLVAR + trajectory, analyze writes the free energies."""
    import yaml

    system, simulate_flags, check_flags = TRIPLES[name]
    configs = {stage: yaml.safe_load((CONFIGS / name / f"{stage}.yaml").read_text())
               for stage in ("learn", "bias", "analyze")}
    md_dir = Path(configs["learn"]["trajectories"][0]).parent
    for seed in range(len(configs["learn"]["trajectories"])):
        _cvlearn(["simulate", "--system", system, "--ns", "0.03", "--seed", str(seed), "--report-interval-ps", "0.5",
                  "--out", str(md_dir), *simulate_flags], tmp_path)
    assert all((tmp_path / p).is_file() for p in configs["learn"]["trajectories"])
    config_dir = tmp_path / "examples" / "configs" / name
    config_dir.mkdir(parents=True)
    for stage in configs:
        (config_dir / f"{stage}.yaml").write_text((CONFIGS / name / f"{stage}.yaml").read_text())

    _cvlearn(["learn", "--config", str(config_dir / "learn.yaml"), "--quick"], tmp_path)
    learned = json.loads((tmp_path / configs["learn"]["out"] / "metrics.json").read_text())
    assert learned["vamp2_val"] > 1.0 and (tmp_path / configs["learn"]["out"] / "report.md").is_file()
    cv = configs["bias"]["cv"]
    check = _cvlearn(["check", cv, "--pdb", configs["bias"]["pdb"], *check_flags], tmp_path)
    assert "FAIL" not in check.stdout

    _cvlearn(["bias", "--config", str(config_dir / "bias.yaml"), "--quick"], tmp_path)
    bias_out = tmp_path / configs["bias"]["out"]
    summary = json.loads((bias_out / "summary.json").read_text())
    assert summary["md_steps_run"] == 2000 and summary["model_calls"] >= 2000
    from cvlearn.data.colvar import read_colvar

    colvar = read_colvar(bias_out / "COLVAR")
    assert len(colvar["time"]) == 10 and np.all(np.isfinite(colvar["opes.bias"]))
    assert colvar["opes.bias"][-1] != 0.0  # the adaptive-σ OPES deposited kernels

    result = _cvlearn(["analyze", "--config", str(config_dir / "analyze.yaml")], tmp_path)
    analyze_out = tmp_path / configs["analyze"]["out"]
    assert (analyze_out / "fes_2d.png").is_file() and (analyze_out / "report.md").is_file()
    delta = json.loads((analyze_out / "deltaF.json").read_text())
    assert delta and "dF" in result.stdout


@pytest.mark.slow
def test_iterate_config_quick(tmp_path):
    """examples/configs/ala2/iterate.yaml with --quick on short stand-in trajectories made as its header says:
    every step runs, the retrain learns from the explore run's frames, and summary.md compares the two CVs."""
    import yaml

    config = yaml.safe_load((CONFIGS / "ala2" / "iterate.yaml").read_text())
    for seed, path in enumerate(config["learn"]["trajectories"]):
        _cvlearn(["simulate", "--system", "alanine_dipeptide", "--ns", "0.03", "--temperature", "600", "--seed",
                  str(seed), "--report-interval-ps", "0.5", "--out", str(Path(path).parent)], tmp_path)
    result = _cvlearn(["iterate", "--config", str(CONFIGS / "ala2" / "iterate.yaml"), "--quick"], tmp_path)
    summary = json.loads((tmp_path / config["out"] / "summary.json").read_text())
    assert summary["reweighting"]["n_biased_frames"] == 40 and summary["reweighting"]["n_train_pairs"] > 0
    assert (tmp_path / config["out"] / "analyze" / "deltaF.json").is_file() and "held-out VAMP-2" in result.stdout
