"""OpenMM side of cvlearn: exported CVs as forces, biases on them, the MD stages and the ``cvlearn`` CLI.

``from openmm_plugin import bias_cv`` is the one-call API (:func:`openmm_plugin.bias.setup.bias_cv`). Names
resolve on first use (PEP 562), so ``cvlearn --help`` does not pay for importing torch and OpenMM.
"""

from __future__ import annotations

import importlib

_MODULE_OF = {"bias_cv": "openmm_plugin.bias.setup", "BiasedCV": "openmm_plugin.bias.setup",
              "load_system": "openmm_plugin.user_system"}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
