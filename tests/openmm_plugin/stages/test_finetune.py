"""``cvlearn finetune`` end to end on a tiny EMT-labelled xxMD-layout set: outputs, metrics, resume, config errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from cvlearn.structures.xxmd import write_xxmd
from cvlearn.models.potential import EnergyModel
from cvlearn.export.potential import load_potential
from openmm_plugin.cli import main
from openmm_plugin.stages.finetune import FinetuneConfig, load_data
from tests.models.test_potential import TINY_ET, emt_structures


@pytest.fixture(scope="module")
def xxmd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("xxmd")
    write_xxmd(root, "eth", {"train": emt_structures(20, seed=0), "val": emt_structures(6, seed=1),
                             "test": emt_structures(6, seed=2)})
    return root


def test_finetune_command_writes_model_potential_metrics_and_curve(xxmd_root, tmp_path, capsys):
    config = {"xxmd_root": str(xxmd_root), "molecule": "eth", "kind": "et", "architecture": TINY_ET,
              "head_hidden": 16, "max_epochs": 3, "patience": 2, "max_atoms": 90, "learning_rate": 3e-3,
              "nve_steps": 40, "nve_timestep_fs": 0.25}
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    assert main(["finetune", "--config", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test" in printed and "force MAE" in printed and "NVE drift" in printed
    for name in ("model.pt", "potential.pt", "metrics.json", "learning_curve.png", "train_state.pt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (20, 6, 6)
    assert metrics["test"]["force_mae_mev_per_angstrom"] > 0 and len(metrics["history"]) == 3
    assert abs(metrics["nve"]["drift_kjmol_per_ps_per_atom"]) < 1.0
    model = EnergyModel.from_checkpoint(out / "model.pt")
    _, meta = load_potential(out / "potential.pt")
    assert meta["atomic_numbers"] == [6, 6, 8, 1, 1, 1, 1, 1, 1] and model.backbone.kind == "et"

    # A second run finds the finished training state and reproduces the same model without training again.
    assert main(["finetune", "--config", str(path), "--out", str(out)]) == 0
    again = EnergyModel.from_checkpoint(out / "model.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v)


def test_config_subsets_and_splits(xxmd_root):
    train, val, test = load_data(FinetuneConfig(xxmd_root=str(xxmd_root), molecule="eth", val_split=None,
                                                test_split=None, n_train=5, validation_fraction=0.25))
    assert (len(train), len(val), len(test)) == (5, 5, 0)
    with pytest.raises(ValueError, match="n_train"):
        load_data(FinetuneConfig(xxmd_root=str(xxmd_root), molecule="eth", n_train=1000))
    with pytest.raises(ValueError, match="xxmd_root"):
        load_data(FinetuneConfig())


def test_unknown_config_keys_are_rejected(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("xxmd_root: x\nforce_weigth: 10\n")
    assert main(["finetune", "--config", str(path)]) == 2  # one line, exit 2
    assert "force_weigth" in capsys.readouterr().err
