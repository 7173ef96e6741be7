"""``cvlearn pretrain``: config in, corpus + backbone checkpoint + history + loss curve out, resumable."""

import json

import numpy as np
import pytest
import torch

from cvlearn.config import load_config
from openmm_plugin.cli import main
from openmm_plugin.stages.pretrain import PretrainConfig, run_pretrain

TINY_YAML = """
out: {out}
corpus: {corpus}
corpus_spec: {{sequences: [A], temperatures_k: [300.0, 800.0], ps_per_run: 2.0, frame_interval_ps: 0.2}}
validation_every: 2
architecture: {{hidden_channels: 16, num_layers: 1, num_rbf: 8, num_heads: 2}}
max_epochs: 2
"""


def test_pretrain_command_makes_corpus_and_checkpoint(tmp_path, capsys):
    cfg = tmp_path / "pretrain.yaml"
    cfg.write_text(TINY_YAML.format(out=tmp_path / "out", corpus=tmp_path / "corpus"))
    assert main(["pretrain", "--config", str(cfg), "--make-corpus"]) == 0
    assert "final val loss" in capsys.readouterr().out
    out = tmp_path / "out"
    for name in ("backbone.pt", "history.json", "loss_curve.png", "train_state.pt"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert len(history["history"]) == 2 and history["n_train"] == history["n_val"] == 10
    manifest = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert manifest["n_frames"] == 20 and manifest["cpu_seconds"] > 0
    meta = torch.load(out / "backbone.pt", weights_only=True)["metadata"]
    assert meta["corpus"].startswith("1 capped peptides (A)") and meta["pretraining"]["epochs"] == 2
    assert meta["pretrain_config"]["max_epochs"] == 2
    # a second call resumes: no epoch is trained again, the corpus is not simulated again
    before = torch.load(out / "backbone.pt", weights_only=True)["state_dict"]
    assert main(["pretrain", "--config", str(cfg), "--make-corpus"]) == 0
    again = json.loads((tmp_path / "corpus" / "corpus.json").read_text())
    assert again["resumed"] and again["cpu_seconds"] == pytest.approx(manifest["cpu_seconds"])
    assert json.loads((out / "history.json").read_text())["history"] == history["history"]
    after = torch.load(out / "backbone.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_config_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("sigma: 0.1\n")
    with pytest.raises(ValueError, match="unknown key.*sigma"):
        load_config(PretrainConfig, cfg)


def test_pretrain_on_extxyz_structures(tmp_path):
    import ase
    import ase.io

    rng = np.random.default_rng(0)
    base = np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.0, 1.4, 0.0], [0.0, 0.0, 1.0]])
    frames = [ase.Atoms(numbers=[6, 8, 7, 1], positions=base + rng.normal(scale=0.05, size=(4, 3))) for _ in range(20)]
    path = tmp_path / "mols.extxyz"
    ase.io.write(path, frames, format="extxyz")
    config = PretrainConfig(out=str(tmp_path / "out"), structure_files=(str(path),), validation_fraction=0.25,
                            architecture={"hidden_channels": 16, "num_layers": 1, "num_rbf": 8, "num_heads": 2},
                            max_epochs=1, noise_sigma_angstrom=0.05)
    summary = run_pretrain(config, progress=False)
    assert summary["n_train"] == 15 and summary["n_val"] == 5
    assert np.isfinite(summary["final_val_loss"])


def test_shipped_recipe_matches_the_shipped_checkpoint():
    """The recipe next to the checkpoint is the config the checkpoint was trained with."""
    from cvlearn.checkpoints import default_checkpoint, default_recipe

    recipe = load_config(PretrainConfig, default_recipe())
    meta = torch.load(default_checkpoint(), weights_only=True)["metadata"]
    stored = meta["pretrain_config"]
    renamed = {"epochs": "max_epochs"}  # the shipped checkpoint was written before the rename
    for key in ("kind", "architecture", "noise_sigma_angstrom", "epochs", "learning_rate", "max_atoms", "seed",
                "heavy_atoms_only", "validation_every"):
        assert stored[key] == getattr(recipe, renamed.get(key, key)), key
    assert stored["corpus_spec"]["sequences"] == list(recipe.corpus_spec.sequences)
    assert recipe.install_to == "cvlearn/checkpoints/et_denoise_small.pt"


def test_pretrain_on_sdf_structures(tmp_path):
    """SDF input (PCQM4Mv2's format), hydrogens dropped as for the corpus."""
    rng = np.random.default_rng(1)
    records = []
    for i in range(8):
        xyz = np.array([[0.0, 0.0, 0.0], [1.43, 0.0, 0.0], [-0.5, 0.9, 0.0], [2.0, 0.9, 0.0]])
        xyz += rng.normal(scale=0.03, size=xyz.shape)
        atoms = "".join(f"{x:10.4f}{y:10.4f}{z:10.4f} {el:<3} 0  0  0  0  0  0  0  0  0  0  0  0\n"
                        for (x, y, z), el in zip(xyz, ["C", "O", "H", "H"]))
        records.append(f"mol{i}\n  test\n\n  4  3  0  0  0  0  0  0  0  0999 V2000\n{atoms}"
                       "  1  2  1  0\n  1  3  1  0\n  2  4  1  0\nM  END\n$$$$\n")
    path = tmp_path / "mols.sdf"
    path.write_text("".join(records))
    config = PretrainConfig(out=str(tmp_path / "out"), structure_files=(str(path),), validation_fraction=0.25,
                            architecture={"hidden_channels": 16, "num_layers": 1, "num_rbf": 8, "num_heads": 2},
                            max_epochs=1, noise_sigma_angstrom=0.05)
    summary = run_pretrain(config, progress=False)
    assert summary["n_train"] == 6 and summary["n_val"] == 2
    assert np.isfinite(summary["final_val_loss"])


def test_device_is_checked_before_any_compute(tmp_path, monkeypatch):
    from openmm_plugin.stages.finetune import FinetuneConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "p.yaml"
    for config_type in (PretrainConfig, FinetuneConfig):
        path.write_text("device: gpu\n")
        with pytest.raises(ValueError, match=r"p.yaml: device: expected 'cpu', 'cuda' or 'cuda:N', found 'gpu'"):
            load_config(config_type, path)
        path.write_text("device: cuda\n")
        with pytest.raises(ValueError, match=r"device: .*torch.cuda.is_available\(\) is False"):
            load_config(config_type, path)
