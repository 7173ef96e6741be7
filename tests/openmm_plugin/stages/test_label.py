"""`cvlearn label` as a stage: the frozen config rejects bad splits before any DFT (the run is tested in
tests/structures/test_labelling.py, which needs pyscf)."""

import pytest

from openmm_plugin.cli import main
from openmm_plugin.stages.label import LabelConfig


def test_config_validates_splits():
    assert LabelConfig(input="a.xyz", out="o", molecule="m").splits == (0.8, 0.1, 0.1)
    with pytest.raises(ValueError, match="splits"):
        LabelConfig(input="a.xyz", out="o", molecule="m", splits=(0.5, 0.2, 0.2, 0.1))
    with pytest.raises(ValueError, match="split_kind"):
        LabelConfig(input="a.xyz", out="o", molecule="m", split_kind="blocks")


def test_cli_rejects_bad_fractions(capsys):
    assert main(["label", "--in", "a.xyz", "--out", "o", "--molecule", "m", "--splits", "a,b"]) == 2
    assert "--splits" in capsys.readouterr().err
