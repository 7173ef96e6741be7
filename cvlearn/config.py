"""Frozen config dataclasses loaded from YAML/TOML that reject unknown keys and wrong types.

Library classes take keyword arguments and never read files; the CLI reads a config with
:func:`load_config` and hands its fields to one stage function. Every value is checked against its field's
annotation (``int``, ``float``, ``bool``, ``str``, ``Optional[...]``, ``tuple``/``list`` of them, nested config
dataclasses) before the dataclass is built, so ``n_steps: abc`` fails here, naming the file and the key, and not
later as "invalid literal for int()". Lists become tuples (configs are frozen and hashable); an int is
accepted for a ``float``; a single number is accepted for a bare ``tuple`` field (``sigma: 0.2``).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar, get_type_hints

import yaml

from cvlearn.errors import ConfigError

T = TypeVar("T")


class _YAMLLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e9`` and ``1.0e9`` as floats (YAML 1.1 wants ``1.0e+9``)."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))

_NUMBER = (int, float)


def _describe(value) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _is_number(value) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _expected_name(kind) -> str:
    origin = typing.get_origin(kind)
    if kind is type(None):
        return "null"
    if kind is bool:
        return "a boolean (true/false)"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if kind is tuple or kind is list:
        return "a list of numbers or strings"
    if kind is dict or origin is dict:
        return "a mapping"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_expected_name(a) for a in typing.get_args(kind))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(kind) if a is not Ellipsis]
        if not args:
            return "a list"
        inner = _expected_name(args[0])
        if " or " in inner or not inner.startswith(("a ", "an ")):
            return f"a list of values, each {inner}"
        return f"a list of {inner.split(' ', 1)[1]}s"
    if dataclasses.is_dataclass(kind):
        return f"a mapping of {kind.__name__} keys"
    return getattr(kind, "__name__", str(kind))


def check_value(value, kind, source: str, key: str):
    """``value`` converted to the annotation ``kind`` (lists to tuples, ints to floats), or :class:`ConfigError`.

    Parameters
    ----------
    value
        The value read from the file.
    kind
        The field's resolved annotation.
    source, key : str
        File and dotted key, for the message.

    Returns
    -------
    object
        The checked value (a nested dataclass is built with :func:`from_dict`).
    """
    def fail():
        raise ConfigError(f"expected {_expected_name(kind)}, found {_describe(value)}", source, key)

    origin = typing.get_origin(kind)
    if kind is Any or kind is object:
        return value
    if dataclasses.is_dataclass(kind):
        return from_dict(kind, value, source, key=key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        if value is None:
            if type(None) in args:
                return None
            fail()
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and (typing.get_origin(others[0]) in (tuple, list) or dataclasses.is_dataclass(others[0])):
            return check_value(value, others[0], source, key)  # Optional[container]: the item's precise message
        for arg in others:
            try:
                return check_value(value, arg, source, key)
            except ConfigError:
                continue
        fail()
    if kind is bool:
        return value if isinstance(value, bool) else fail()
    if kind is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else fail()
    if kind is float:
        return float(value) if _is_number(value) else fail()
    if kind is str:
        return value if isinstance(value, str) else fail()
    if kind is Path:
        return value if isinstance(value, str) else fail()
    if kind is dict or origin is dict:
        return value if isinstance(value, dict) else fail()
    if kind in (tuple, list):  # bare: a flat list of scalars
        if _is_number(value):
            value = [value]
        if not isinstance(value, (list, tuple)) or any(
                not (v is None or isinstance(v, (str, bool)) or _is_number(v)) for v in value):
            fail()
        return tuple(value) if kind is tuple else list(value)
    if origin in (tuple, list):
        args = typing.get_args(kind)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis and not isinstance(value, (list, tuple, dict)):
            try:  # a single value for a variable-length tuple: ``sigma: 0.2``
                return (check_value(value, args[0], source, key),)
            except ConfigError:
                fail()
        if not isinstance(value, (list, tuple)):
            fail()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"expected a list of {len(args)} values, found {_describe(value)}", source, key)
            items = [check_value(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else Any
            items = [check_value(v, item, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return value  # annotations without a check (e.g. torch.Tensor) are not config fields read from files


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "config", *, key: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclasses, so a typo or a wrong type fails loudly.

    Parameters
    ----------
    cls : type
        A dataclass (usually frozen).
    data : dict
        Field values; nested dataclass fields take nested mappings. Missing keys keep their defaults.
    source : str
        Where ``data`` came from (the file name), used in error messages.
    key : str
        Dotted key of ``data`` inside the file (nested configs), used in error messages.

    Returns
    -------
    cls
        The built instance.

    Raises
    ------
    ConfigError
        (a ``ValueError``) If ``data`` is not a mapping, holds keys that ``cls`` does not have (the message names
        the source, the unknown keys and the allowed ones), a value has the wrong type, a required key is
        missing, or the dataclass's own validation rejects a value (its message is prefixed with the source).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping of {cls.__name__} keys, found {_describe(data)}", source, key or None)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} for {cls.__name__}; allowed: {sorted(fields)}", source,
                          key or None)
    missing = [name for name, f in fields.items() if f.init and name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"required key(s) {missing} of {cls.__name__} not given", source, key or None)
    hints = get_type_hints(cls)
    kwargs = {name: check_value(value, hints[name], source, f"{key}.{name}" if key else name)
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:  # the dataclass's own validation: "<field>: expected ..., found ..."
        message = str(err)
        field_name, sep, rest = message.partition(": ")
        if key and sep and field_name in fields:  # nested: name the dotted key, ``metad.sigma``
            raise ConfigError(rest, source, f"{key}.{field_name}") from err
        raise ConfigError(message, source, key or None) from err


def load_config(cls: type[T], path: str | Path, overrides: Mapping[str, Any] | None = None) -> T:
    """Read a stage config from a YAML or TOML file into the frozen dataclass ``cls`` (see :func:`from_dict`).

    Parameters
    ----------
    cls : type
        The stage's config dataclass.
    path : str or Path
        A ``.yaml``, ``.yml`` or ``.toml`` file; an empty YAML file gives the defaults.
    overrides : mapping, optional
        Top-level keys that replace the file's (e.g. from command-line flags), checked like the file's.

    Returns
    -------
    cls
        The built config.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ConfigError
        (a ``ValueError``) If the suffix is not supported, the file is not valid YAML/TOML (the message gives the
        line), or a key is unknown, mistyped or invalid.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist" if not path.exists()
                                else f"config file {path}: expected a file, found a directory")
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ConfigError(f"expected a .yaml, .yml or .toml file, found {path.suffix or 'no suffix'!r}",
                          f"config file {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"expected a UTF-8 text file, found bytes that are not text ({err.reason} at byte "
                          f"{err.start})", str(path)) from err
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"invalid TOML: {err}", str(path)) from err
    else:
        try:
            data = yaml.load(text, Loader=_YAMLLoader)  # noqa: S506 (a SafeLoader)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            problem = " ".join(str(p) for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
            raise ConfigError(f"{where}invalid YAML: {problem or err}", str(path)) from err
        data = {} if data is None else data
    if overrides and isinstance(data, dict):
        data = {**data, **overrides}
    return from_dict(cls, data, str(path))


def check_input_file(path: str | Path | None, key: str, what: str = "file") -> Path:
    """``path`` as a Path if it is an existing file; else :class:`FileNotFoundError` naming ``key``.

    Parameters
    ----------
    path : str or Path
        The file a config names.
    key : str
        The config key (or ``--flag``) it came from.
    what : str
        What the file is, for the message (``"exported CV"``).

    Returns
    -------
    Path
    """
    if path is None or str(path) == "":
        raise ConfigError(f"required: expected the path of the {what}, found none", key=key)
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"expected the {what}, found the directory {str(path)!r}", key=key)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {what} {str(path)!r} does not exist")
    return path


def check_output_dir(path: str | Path, key: str) -> Path:
    """``path`` as a Path if it is, or can be created as, a directory; else :class:`ConfigError` naming ``key``.

    Checked before any compute, so an output path that is a file is not noticed only when the results are
    written.

    Parameters
    ----------
    path : str or Path
        The output directory a config names.
    key : str
        The config key (or ``--flag``) it came from.

    Returns
    -------
    Path
    """
    if path is None or str(path) == "":
        raise ConfigError("expected an output directory, found none", key=key)
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                where = "" if candidate == path else f" inside {str(candidate)!r}"
                raise ConfigError(f"expected a directory, found a file{where}: {str(path)!r}", key=key)
            break
    return path


def check_ranges(config, *, positive: tuple = (), at_least_one: tuple = (), non_negative: tuple = (),
                 fraction: tuple = ()) -> None:
    """Raise ``ValueError`` (``"<field>: expected ..., found ..."``) for the first named field out of its range.

    A config's ``__post_init__`` calls it, so a wrong value fails when the config is built, before compute.
    ``None`` (an optional field left unset) passes; a tuple is checked item by item.

    Parameters
    ----------
    config
        A config dataclass instance.
    positive : tuple of str
        Fields that must be finite and > 0 (temperatures, times, rates).
    at_least_one : tuple of str
        Integer fields >= 1 (step, epoch and other counts).
    non_negative : tuple of str
        Fields >= 0 (seeds, weights).
    fraction : tuple of str
        Fields in [0, 1).
    """
    rules = [(positive, lambda v: 0 < v < float("inf"), "a finite value > 0"),
             (at_least_one, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
             (non_negative, lambda v: 0 <= v < float("inf"), "a value >= 0"),
             (fraction, lambda v: 0 <= v < 1, "a fraction in [0, 1)")]
    for names, ok, expected in rules:
        for name in names:
            value = getattr(config, name)
            items = value if isinstance(value, (tuple, list)) else (value,)
            if value is not None and any(isinstance(v, bool) or not isinstance(v, (int, float)) or not ok(v)
                                         for v in items):
                raise ValueError(f"{name}: expected {expected}{' each' if items is value else ''}, found {value!r}")
