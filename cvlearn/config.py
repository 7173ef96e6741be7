"""Frozen config dataclasses loaded from YAML/TOML that reject unknown keys.

Library classes take keyword arguments and never read files; the CLI reads a config with
:func:`load_config` and hands its fields to one stage function.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses; unknown keys are an error."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping for {cls.__name__}, found {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; allowed: {sorted(fields)}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            value = from_dict(kind, value, f"{source}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def load_config(cls: type[T], path: str | Path) -> T:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".toml":
        data = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"config file {path}: expected a .yaml, .yml or .toml file")
    return from_dict(cls, data, str(path))
