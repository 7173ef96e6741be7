"""Numbered examples run in their --quick mode, as a user would run them."""

import json
import subprocess
import sys
from pathlib import Path

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
