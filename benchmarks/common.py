"""What every benchmark writes: when and where it ran, its targets as a table, and its result files."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]  # the repository
DATA = ROOT / "benchmarks" / "data"  # committed inputs (trained CVs, systems) that benchmarks share


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (None elsewhere): cost ratios differ between CPUs, so a
    result says which one gave it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict:
    import openmm
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": str(torch.__version__), "openmm": openmm.__version__}


def targets_table(targets: list[dict]) -> list[str]:
    """Markdown rows for ``[{name, value, target, unit, met}]``, the unmet ones included."""
    def value(t):
        return "n/a" if t["value"] is None else f"{t['value']:.3g} {t['unit']}"

    return ["", "| target | value | target | met |", "|---|---|---|---|",
            *[f"| {t['name']} | {value(t)} | {t['target']} | {t['met']} |" for t in targets]]


def save(name: str, quick: bool, result: dict, markdown: str) -> None:
    """Write ``results/<name>[_quick].json`` and ``.md`` atomically and print the table."""
    from cvlearn.io import write_json_atomic, write_text_atomic

    stem = f"{name}_quick" if quick else name
    write_json_atomic(RESULTS / f"{stem}.json", result)
    write_text_atomic(RESULTS / f"{stem}.md", markdown)
    print(markdown)


def quick_main(name: str, doc: str, run, markdown) -> None:
    """The command line of a benchmark whose only option is ``--quick``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(args.quick)
    save(name, args.quick, result, markdown(result))


def run_resumable(name: str, run, args):
    """``run(args)`` of a benchmark whose runs live in ``--work``: a changed configuration is refused in one line."""
    from cvlearn.run_dir import RunMismatchError

    try:
        return run(args)
    except RunMismatchError as error:
        raise SystemExit(f"{name}: {str(error).replace('a new --out', 'another --work')}") from None
