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
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses, so a typo in a key fails loudly.

    Parameters
    ----------
    cls : type
        A dataclass (usually frozen).
    data : dict
        Field values; nested dataclass fields take nested mappings. Missing keys keep their defaults.
    source : str
        Where ``data`` came from (file name and key path), used in error messages.

    Returns
    -------
    cls
        The built instance.

    Raises
    ------
    ValueError
        If ``data`` is not a mapping or holds keys that ``cls`` does not have (the message names the source,
        the unknown keys and the allowed ones).
    """
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
    """Read a stage config from a YAML or TOML file into the frozen dataclass ``cls`` (see :func:`from_dict`).

    Parameters
    ----------
    cls : type
        The stage's config dataclass.
    path : str or Path
        A ``.yaml``, ``.yml`` or ``.toml`` file; an empty YAML file gives the defaults.

    Returns
    -------
    cls
        The built config.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the suffix is not supported or a key is unknown.
    """
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
