from dataclasses import dataclass, field

import pytest

from cvlearn.config import from_dict, load_config
from cvlearn.nn.featurizers import ETConfig


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    featurizer: ETConfig = field(default_factory=ETConfig)


def test_nested_and_unknown_keys(tmp_path):
    cfg = from_dict(Outer, {"name": "y", "featurizer": {"num_layers": 3}})
    assert cfg.featurizer.num_layers == 3 and cfg.name == "y"
    with pytest.raises(ValueError, match=r"config\.featurizer: unknown key\(s\) \['layers'\]"):
        from_dict(Outer, {"featurizer": {"layers": 3}})


def test_load_yaml_and_toml(tmp_path):
    (tmp_path / "a.yaml").write_text("name: z\n")
    (tmp_path / "a.toml").write_text('name = "w"\n[featurizer]\nhidden_channels = 16\n')
    assert load_config(Outer, tmp_path / "a.yaml").name == "z"
    assert load_config(Outer, tmp_path / "a.toml").featurizer.hidden_channels == 16
    with pytest.raises(ValueError, match="expected a .yaml"):
        (tmp_path / "a.json").write_text("{}")
        load_config(Outer, tmp_path / "a.json")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(Outer, tmp_path / "missing.yaml")
