"""Numbered examples run in their --quick mode, as a user would run them."""

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
