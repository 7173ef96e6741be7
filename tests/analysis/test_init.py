"""``cvlearn.analysis`` lists every public name of its modules, each resolving to the module's own object."""

import ast
import importlib
from pathlib import Path

import pytest

import cvlearn.analysis as analysis

MODULES = ("kinetics", "plots", "reweighting", "transitions")


def _public_names(module: str) -> set[str]:
    """Functions, classes and UPPER_CASE constants defined (not imported) at module level."""
    tree = ast.parse((Path(analysis.__file__).parent / f"{module}.py").read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name) and t.id.isupper())
    return {n for n in names if not n.startswith("_")}


@pytest.mark.parametrize("module", MODULES)
def test_all_lists_every_public_name(module):
    missing = sorted(_public_names(module) - set(analysis.__all__))
    assert not missing, f"cvlearn/analysis/{module}.py: public names missing from cvlearn.analysis.__all__: {missing}"


def test_every_listed_name_resolves_to_its_module():
    for name in analysis.__all__:
        owner = next(m for m in MODULES if name in _public_names(m))
        assert getattr(analysis, name) is getattr(importlib.import_module(f"cvlearn.analysis.{owner}"), name), name
    with pytest.raises(AttributeError, match="no_such_name"):
        analysis.no_such_name  # noqa: B018
