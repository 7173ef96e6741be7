import re
from dataclasses import dataclass, field
from typing import Optional

import pytest

from cvlearn.config import check_input_file, check_output_dir, check_ranges, from_dict, load_config
from cvlearn.errors import ConfigError
from cvlearn.nn.featurizers import ETConfig


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    featurizer: ETConfig = field(default_factory=ETConfig)


def test_nested_and_unknown_keys(tmp_path):
    cfg = from_dict(Outer, {"name": "y", "featurizer": {"num_layers": 3}})
    assert cfg.featurizer.num_layers == 3 and cfg.name == "y"
    with pytest.raises(ValueError, match=r"config: featurizer: unknown key\(s\) \['layers'\]"):
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


@dataclass(frozen=True)
class Typed:
    n_steps: int = 10
    temperature_k: float = 300.0
    fast: bool = False
    name: str = "x"
    sigma: tuple[float, ...] = (0.1,)
    files: tuple = ()
    grid_bins: Optional[tuple[int, ...]] = None
    bias_factor: Optional[float] = 8.0
    pair: tuple[int, str] = (1, "a")
    inner: ETConfig = field(default_factory=ETConfig)

    def __post_init__(self):
        if self.n_steps < 1:
            raise ValueError(f"n_steps: expected >= 1, found {self.n_steps}")


@pytest.mark.parametrize("data, key, expected", [
    ({"n_steps": "abc"}, "n_steps", "an integer, found 'abc' (str)"),
    ({"n_steps": 1.5}, "n_steps", "an integer, found 1.5"),
    ({"n_steps": True}, "n_steps", "an integer, found True"),
    ({"temperature_k": "hot"}, "temperature_k", "a number, found 'hot'"),
    ({"fast": "yes"}, "fast", "a boolean"),
    ({"name": 3}, "name", "a string, found 3"),
    ({"sigma": "wide"}, "sigma", "a list of numbers, found 'wide'"),
    ({"sigma": [0.1, "x"]}, r"sigma\[1\]", "a number, found 'x'"),
    ({"files": {"a": 1}}, "files", "a list of numbers or strings"),
    ({"grid_bins": [10, 2.5]}, r"grid_bins\[1\]", "an integer, found 2.5"),
    ({"bias_factor": "none"}, "bias_factor", "a number or null, found 'none'"),
    ({"pair": [1]}, "pair", "a list of 2 values"),
    ({"inner": 3}, "inner", "a mapping of ETConfig keys, found 3"),
    ({"inner": {"num_layers": "two"}}, r"inner\.num_layers", "an integer, found 'two'"),
])
def test_every_field_is_type_checked_naming_file_and_key(data, key, expected):
    with pytest.raises(ConfigError, match=rf"^run\.yaml: {key}: expected {re.escape(expected)}"):
        from_dict(Typed, data, "run.yaml")


def test_values_are_converted_to_the_annotation():
    cfg = from_dict(Typed, {"temperature_k": 300, "sigma": 0.2, "files": ["a", "b"], "grid_bins": [10, 20],
                            "bias_factor": None, "pair": [2, "b"]})
    assert cfg.temperature_k == 300.0 and isinstance(cfg.temperature_k, float)
    assert cfg.sigma == (0.2,) and cfg.files == ("a", "b") and cfg.grid_bins == (10, 20)
    assert cfg.bias_factor is None and cfg.pair == (2, "b")


def test_the_dataclass_own_validation_names_the_file():
    with pytest.raises(ConfigError, match=r"^run\.yaml: n_steps: expected >= 1, found -100$"):
        from_dict(Typed, {"n_steps": -100}, "run.yaml")


def test_yaml_and_toml_syntax_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: z\nsigma: [0.1, 0.2\nfast: true\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+, column \d+: invalid YAML"):
        load_config(Outer, bad)
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text('name = "w\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: invalid TOML: .*line 1"):
        load_config(Outer, bad_toml)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"list\.yaml: expected a mapping of Outer keys, found \['a', 'b'\]"):
        load_config(Outer, listing)
    with pytest.raises(FileNotFoundError, match="expected a file, found a directory"):
        load_config(Outer, tmp_path)


def test_overrides_replace_and_are_checked(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("name: z\n")
    assert load_config(Outer, path, {"name": "w"}).name == "w"
    with pytest.raises(ConfigError, match=r"a\.yaml: name: expected a string, found 1"):
        load_config(Outer, path, {"name": 1})


def test_required_fields_are_named():
    @dataclass(frozen=True)
    class Needs:
        input: str
        out: str = "o"

    with pytest.raises(ConfigError, match=r"^f\.yaml: required key\(s\) \['input'\]"):
        from_dict(Needs, {}, "f.yaml")


def test_path_checks(tmp_path):
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    assert check_input_file(a_file, "cv") == a_file
    with pytest.raises(FileNotFoundError, match=r"^cv: exported CV '.*missing\.pt' does not exist"):
        check_input_file(tmp_path / "missing.pt", "cv", "exported CV")
    with pytest.raises(ConfigError, match=r"^cv: required"):
        check_input_file("", "cv")
    with pytest.raises(ConfigError, match=r"^cv: expected the file, found the directory"):
        check_input_file(tmp_path, "cv")
    assert check_output_dir(tmp_path / "new" / "dir", "out") == tmp_path / "new" / "dir"
    with pytest.raises(ConfigError, match=r"^out: expected a directory, found a file: '.*a\.txt'$"):
        check_output_dir(a_file, "out")
    with pytest.raises(ConfigError, match=r"^--out: expected a directory, found a file inside '.*a\.txt'"):
        check_output_dir(a_file / "sub", "--out")


def test_check_ranges_names_the_field():
    @dataclass(frozen=True)
    class Ranges:
        temperature_k: float = 300.0
        n_steps: int = 10
        seed: int = 0
        fraction: float = 0.1
        temperatures_k: tuple = (300.0, 400.0)
        sigma: Optional[float] = None

    def check(**values):
        check_ranges(Ranges(**values), positive=("temperature_k", "temperatures_k", "sigma"),
                     at_least_one=("n_steps",), non_negative=("seed",), fraction=("fraction",))

    check()
    for values, message in [({"temperature_k": 0.0}, "temperature_k: expected a finite value > 0, found 0.0"),
                            ({"temperature_k": float("nan")}, "temperature_k: expected a finite value > 0, found nan"),
                            ({"n_steps": 0}, "n_steps: expected an integer >= 1, found 0"),
                            ({"n_steps": 2.0}, "n_steps: expected an integer >= 1, found 2.0"),
                            ({"seed": -1}, "seed: expected a value >= 0, found -1"),
                            ({"fraction": 1.0}, "fraction: expected a fraction in [0, 1), found 1.0"),
                            ({"temperatures_k": (300.0, -5.0)}, "temperatures_k: expected a finite value > 0 each"),
                            ({"sigma": -0.1}, "sigma: expected a finite value > 0, found -0.1")]:
        with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
            check(**values)


def test_yaml_reads_exponents_without_a_sign_as_floats(tmp_path):
    @dataclass(frozen=True)
    class Kappa:
        kappa: float = 1.0
        rate: float = 1.0

    path = tmp_path / "k.yaml"
    path.write_text("kappa: 1.0e9\nrate: 1e-3\n")
    assert load_config(Kappa, path) == Kappa(kappa=1e9, rate=1e-3)
