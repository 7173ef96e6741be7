"""Run records: a rerun resumes only under the same config and inputs (like PLUMED's RESTART, OpenMM checkpoints).

A stage opens its output with :func:`open_run`: the record (``<name>.run.json``) holds the resolved config and the
sha256 of every input file. A rerun whose config or inputs differ is refused with the difference (``key: old ->
new``) unless ``restart_fresh`` is set, which deletes the stage's outputs and starts over. The record says
``finished`` only after :meth:`Run.mark_finished`, which a stage calls at its real end; a run killed or stopped
early stays resumable. A stage may name ``extendable`` keys (a run's length): a rerun that only raises them
extends the run from its last checkpoint, as ``gmx convert-tpr -extend`` does; lowering them is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Mapping

from cvlearn.errors import ConfigError
from cvlearn.io import file_sha256 as io_file_sha256
from cvlearn.io import remove_stale_temporaries, write_json_atomic

__all__ = ["Run", "RunMismatchError", "describe_difference", "file_sha256", "open_run", "read_record"]

_FORMAT = 1


def read_record(record_path: str | os.PathLike) -> dict | None:
    """The run record at ``record_path`` as written (``config``, ``finished``, ``extensions``, ...), or None when
    there is none: for readers that decide from a run's state without opening (and so touching) it."""
    record_path = Path(record_path)
    return json.loads(record_path.read_text()) if record_path.is_file() else None


class RunMismatchError(ConfigError):
    """A run directory holds a run of another config or other inputs (``cvlearn`` exits with 2)."""


def file_sha256(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a file's bytes (the form run records store)."""
    return "sha256:" + io_file_sha256(path)


def _jsonable(value):
    """Tuples as lists, dataclasses as dicts, so a config compares equal to its JSON round trip."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        flat = {}
        for key in sorted(value):
            flat.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def describe_difference(old: Mapping, new: Mapping) -> list[str]:
    """``["key: old -> new", ...]`` over the dotted keys of two nested mappings (absent keys show as ``<none>``)."""
    a, b = _flatten(_jsonable(dict(old))), _flatten(_jsonable(dict(new)))
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<none>") != b.get(key, "<none>"):
            lines.append(f"{key}: {a.get(key, '<none>')} -> {b.get(key, '<none>')}")
    return lines


@dataclasses.dataclass
class Run:
    """An opened run record.

    Attributes
    ----------
    record_path : Path
        The ``.run.json`` file.
    resumed : bool
        A record of the same config and inputs existed (the stage should resume from its checkpoint).
    finished : bool
        That record said the run had finished.
    extended : dict
        ``{key: [old, new]}`` of the extendable keys this rerun raised (the record now holds the new values).
    """

    record_path: Path
    record: dict
    resumed: bool
    finished: bool
    extended: dict = dataclasses.field(default_factory=dict)

    def mark_finished(self, **info) -> None:
        """Record that the run reached its real end (call only there); ``info`` is stored alongside."""
        self.record["finished"] = True
        self.record["finished_info"] = _jsonable(info)
        write_json_atomic(self.record_path, self.record)
        self.finished = True


def _is_default(config, key: str, value) -> bool:
    """Whether ``value`` is the default of the dataclass field ``key`` of ``config`` (False for mappings)."""
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        return False
    for f in dataclasses.fields(config):
        if f.name == key:
            if f.default is not dataclasses.MISSING:
                return _jsonable({"v": f.default})["v"] == value
            if f.default_factory is not dataclasses.MISSING:
                return _jsonable({"v": f.default_factory()})["v"] == value
    return False


def _grows(old, new) -> bool:
    """Whether ``new`` is a larger number than ``old`` (both real numbers, not bools)."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    return numbers and new > old


def open_run(record_path: str | os.PathLike, config, inputs: Mapping[str, str | os.PathLike] | None = None, *,
             outputs: Iterable[str | os.PathLike] = (), restart_fresh: bool = False,
             ignore: Iterable[str] = ("out",), extendable: Iterable[str] = (),
             added: Mapping | None = None, extra: Mapping | None = None) -> Run:
    """Open (create, resume or refuse) the run recorded at ``record_path``.

    Parameters
    ----------
    record_path : str or os.PathLike
        The record file, e.g. ``<out>/run.json`` or ``<out>/<prefix>.run.json``.
    config : dataclass or mapping
        The resolved config of the stage.
    inputs : mapping of str to path, optional
        Input files by name; their sha256 is recorded and compared.
    outputs : iterable of path
        The stage's outputs (files or folders): with ``restart_fresh`` they are deleted; without a record, any
        existing one is refused (it belongs to a run whose config is unknown).
    restart_fresh : bool
        Delete the outputs and the record and start over.
    ignore : iterable of str
        Config keys that may change between reruns (default ``out``: the directory may be moved), neither recorded
        nor compared, also where an older record holds them. A key the record lacks (added to the config type
        since) matches when it holds its default.
    extendable : iterable of str
        Numeric config keys that a rerun may raise (a run's length, e.g. ``n_steps``): the run, finished or not,
        resumes from its checkpoint to the new length and the record takes the new value. Lowering one is refused.
    added : mapping, optional
        Keys added to a mapping ``config`` since records were written, each with the value that does what the runs
        before it did (the dataclass-default rule above, for configs that are plain mappings): a record without the
        key matches when the config holds that value.
    extra : mapping, optional
        More identity to compare, e.g. hashes of built (not file) inputs: ``{"system_xml": "sha256:..."}``.

    Returns
    -------
    Run

    Raises
    ------
    RunMismatchError
        The record differs (the message lists ``key: old -> new`` and how to proceed), or outputs exist without
        a record.
    """
    record_path = Path(record_path)
    outputs = [Path(p) for p in outputs]
    ignored = set(ignore)
    config_dict = {k: v for k, v in _jsonable(config).items() if k not in ignored}
    identity = {"config": config_dict,
                "inputs": {name: file_sha256(path) for name, path in sorted((inputs or {}).items())},
                "extra": _jsonable(dict(extra or {}))}
    hint = "pass --restart-fresh to start over, or give a new --out"
    for path in [*outputs, record_path]:  # a run directory has one writer: its run, now
        remove_stale_temporaries(path)
    if restart_fresh:
        for path in [*outputs, record_path]:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    if record_path.is_file():
        try:
            old = json.loads(record_path.read_text())
        except json.JSONDecodeError as error:
            raise RunMismatchError(f"{record_path}: unreadable run record ({error}); {hint}") from None
        if old.get("format") != _FORMAT:
            raise RunMismatchError(f"{record_path}: run record of format {old.get('format')!r}, expected {_FORMAT}; {hint}")
        # an ignored key may change: a record written before it was ignored holds it, and it is not compared
        recorded = {k: v for k, v in old.get("config", {}).items() if k not in ignored}
        as_before = {k: _jsonable({"v": v})["v"] for k, v in (added or {}).items()}
        current = {k: v for k, v in identity["config"].items()  # a key added later, at its default, changes nothing
                   if k in recorded or not (_is_default(config, k, v) or (k in as_before and as_before[k] == v))}
        grown = {key: [recorded[key], current[key]] for key in extendable if _grows(recorded.get(key), current.get(key))}
        difference = describe_difference({**recorded, **{k: v[1] for k, v in grown.items()}}, current)
        difference += describe_difference({"inputs": old.get("inputs", {}), "extra": old.get("extra", {})},
                                          {"inputs": identity["inputs"], "extra": identity["extra"]})
        if difference:
            shrunk = [key for key in extendable if _grows(current.get(key), recorded.get(key))]
            note = f" ({', '.join(shrunk)} can be raised, to extend the run, not lowered)" if shrunk else ""
            raise RunMismatchError(f"{record_path}: this run differs from the recorded one ({'; '.join(difference)})"
                                   f"{note}; {hint}")
        if grown:  # recorded before any step runs: a kill during the extension resumes the extension
            old["config"].update({key: new for key, (_, new) in grown.items()})
            old["finished"] = False
            old.setdefault("extensions", []).append(grown)
            write_json_atomic(record_path, old)
        return Run(record_path, old, resumed=True, finished=bool(old.get("finished")), extended=grown)
    existing = [str(p) for p in outputs if p.exists()]
    if existing:
        raise RunMismatchError(f"{record_path.parent}: outputs of an unrecorded run exist ({', '.join(existing)}); {hint}")
    record = {"format": _FORMAT, **identity, "finished": False}
    write_json_atomic(record_path, record)
    return Run(record_path, record, resumed=False, finished=False)
