"""House rules of the layout, checked on the source text (AST, no import), so they hold from now on.

* dependencies point one way: ``cvlearn`` imports neither ``openmm_plugin`` nor ``systems``; ``systems`` does
  not import ``openmm_plugin``;
* no library module over 400 lines;
* one trajectory reader: ``mdtraj.load`` / ``mdtraj.iterload`` in at most two library modules;
* ``openmm_plugin/metadynamics.py`` (the one-force-per-CV-component stack) is gone;
* ``tests/`` mirrors the package, and every package subfolder lists its public names in ``__all__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
PACKAGES = ("cvlearn", "openmm_plugin", "systems")
MAX_LINES = 400
MAX_TRAJECTORY_LOADERS = 2


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imported_roots(tree: ast.Module) -> set[str]:
    """Top-level package of every absolute import, wherever it sits (module level, functions, ``importlib``)."""
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__"):
                roots.add(node.args[0].value.split(".")[0])
    return roots


@pytest.mark.parametrize("package, forbidden", [("cvlearn", {"openmm_plugin", "systems"}),
                                                ("systems", {"openmm_plugin"})])
def test_dependencies_point_one_way(package, forbidden):
    offenders = {_rel(p): sorted(_imported_roots(_tree(p)) & forbidden) for p in _modules(package)}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"{package}/ must not import {sorted(forbidden)}; found imports in {offenders}"


def test_no_library_module_over_400_lines():
    too_long = {_rel(p): n for package in PACKAGES for p in _modules(package)
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not too_long, f"library modules over {MAX_LINES} lines (file: lines): {too_long}"


def _loads_trajectories(tree: ast.Module) -> bool:
    """True if the module calls ``load``/``iterload`` of mdtraj under any alias (or imported by name)."""
    aliases = {"mdtraj"}
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update(a.asname or a.name for a in node.names if a.name == "mdtraj")
        elif isinstance(node, ast.ImportFrom) and node.module == "mdtraj":
            names.update(a.asname or a.name for a in node.names if a.name in ("load", "iterload"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("load", "iterload") \
                and isinstance(func.value, ast.Name) and func.value.id in aliases:
            return True
        if isinstance(func, ast.Name) and func.id in names:
            return True
    return False


def test_one_trajectory_reader():
    loaders = [_rel(p) for package in PACKAGES for p in _modules(package) if _loads_trajectories(_tree(p))]
    assert len(loaders) <= MAX_TRAJECTORY_LOADERS, (
        f"mdtraj.load/iterload: expected in at most {MAX_TRAJECTORY_LOADERS} library modules, found {len(loaders)}: "
        f"{loaders}")


def test_old_metadynamics_stack_is_gone():
    path = ROOT / "openmm_plugin" / "metadynamics.py"
    assert not path.exists(), f"{_rel(path)}: expected deleted (biasing goes through openmm_plugin/bias), found it"


def _package_dir_of(test_dir: Path) -> Path | None:
    """The package folder a ``tests/<path>`` folder mirrors: ``cvlearn/<path>``, or ``<path>`` for the other packages."""
    rel = test_dir.relative_to(TESTS)
    if rel.parts and rel.parts[0] in PACKAGES[1:]:
        candidate = ROOT / rel
    else:
        candidate = ROOT / "cvlearn" / rel
    return candidate if candidate.is_dir() else None


def test_tests_mirror_the_package():
    test_dirs = sorted({p.parent for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts} - {TESTS})
    orphans = [f"{_rel(d)} (no {_rel(ROOT / 'cvlearn' / d.relative_to(TESTS))} nor {_rel(ROOT / d.relative_to(TESTS))})"
               for d in test_dirs if _package_dir_of(d) is None]
    assert test_dirs, "expected test folders under tests/, found none"
    assert not orphans, f"test folders that mirror no package folder: {orphans}"


def _package_subfolders() -> list[Path]:
    out = []
    for package in PACKAGES:
        for d in sorted(p for p in (ROOT / package).rglob("*") if p.is_dir() and "__pycache__" not in p.parts):
            if any(d.glob("*.py")):
                out.append(d)
    return out


def _defines_all(path: Path) -> bool:
    for node in _tree(path).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return True
    return False


def test_package_subfolders_list_their_public_names():
    folders = _package_subfolders()
    assert folders, "expected package subfolders, found none"
    missing_init = [_rel(d) for d in folders if not (d / "__init__.py").is_file()]
    assert not missing_init, f"package subfolders without __init__.py: {missing_init}"
    missing_all = [_rel(d / "__init__.py") for d in folders if not _defines_all(d / "__init__.py")]
    assert not missing_all, f"package __init__.py files without an __all__ list: {missing_all}"


@pytest.mark.parametrize("source, roots", [
    ("import openmm_plugin.forces", {"openmm_plugin"}),
    ("def f():\n    from systems.peptides import build\n", {"systems"}),
    ("import importlib\nimportlib.import_module('openmm_plugin.bias')", {"importlib", "openmm_plugin"}),
    ("from . import sibling\nfrom .systems import x", set()),
])
def test_import_check_sees_every_form(source, roots):
    assert _imported_roots(ast.parse(source)) == roots


@pytest.mark.parametrize("source, loads", [
    ("import mdtraj\nmdtraj.load('a.dcd', top='a.pdb')", True),
    ("def f():\n    import mdtraj as md\n    return md.iterload('a.xtc', top='a.pdb')", True),
    ("from mdtraj import load as read\nread('a.pdb')", True),
    ("import mdtraj\nmdtraj.load_topology('a.pdb')", False),
    ("import numpy as np\nnp.load('a.npy')", False),
])
def test_trajectory_loader_check(source, loads):
    assert _loads_trajectories(ast.parse(source)) is loads
