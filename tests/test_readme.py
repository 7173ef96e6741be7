"""The README is true as written: its "Using the pieces" snippet runs, and every import in its snippets resolves."""

from __future__ import annotations

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def python_blocks() -> list[tuple[str, str]]:
    """(section heading, code) of every ```python block."""
    out, heading = [], ""
    for part in re.split(r"(^```python\n.*?^```)", README, flags=re.S | re.M):
        if part.startswith("```python"):
            out.append((heading, part[len("```python\n"):-3]))
        else:
            headings = re.findall(r"^#+ (.+)$", part, flags=re.M)
            heading = headings[-1] if headings else heading
    return out


def test_readme_has_the_pieces_snippet():
    assert any(h == "Using the pieces" for h, _ in python_blocks())


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_import_in_the_readme_resolves(index):
    heading, code = python_blocks()[index]
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in (
                "cvlearn", "openmm_plugin", "systems"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"README section {heading!r}: `from {node.module} import {alias.name}` does not resolve")


@pytest.mark.slow
def test_using_the_pieces_runs_as_written(tmp_path):
    code = next(c for h, c in python_blocks() if h == "Using the pieces")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^\d+ hills deposited", done.stdout, flags=re.M), done.stdout[-2000:]
    assert int(done.stdout.split(" hills")[0].split()[-1]) > 0
    from cvlearn.export import load_cv

    _, spec = load_cv(tmp_path / "cv.pt")
    assert spec.n_cvs == 2 and spec.n_particles == 22 and spec.cv_range_training is not None


def test_your_own_system_section_shows_the_shipped_configs():
    """The section's YAML blocks are the files its commands run (tests/test_examples.py runs those with --quick)."""
    section = README.split("## Your own system", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```yaml\n(.*?)^```", section, flags=re.S | re.M)
    bash = re.findall(r"^```bash\n(.*?)^```", section, flags=re.S | re.M)[0]
    commands = re.findall(r"cvlearn (learn|bias|analyze) +--config (\S+)", bash)
    assert [stage for stage, _ in commands] == ["learn", "bias", "analyze"]
    assert blocks == [(ROOT / path).read_text() for _, path in commands]
