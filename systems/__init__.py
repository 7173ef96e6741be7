"""Built-in systems, each a module with ``build()`` and its MD constants (``TEMPERATURE_K``, ``TIMESTEP_PS``,
``FRICTION_PER_PS``); integrators are built by ``openmm_plugin.simulation.make_integrator`` (systems/ does not
import openmm_plugin). Stages name a system by its key in :data:`BUILTIN_SYSTEMS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BUILTIN_SYSTEMS = ("alanine_dipeptide", "alanine_dipeptide_water", "pentapeptide_wlall", "lambda6_85")

__all__ = ["BUILTIN_SYSTEMS", "builtin_system"]


def builtin_system(name: str) -> ModuleType:
    """The module of a built-in system.

    Parameters
    ----------
    name : str
        One of :data:`BUILTIN_SYSTEMS`.

    Returns
    -------
    module
        With ``build(**options) -> MolecularSystem`` and the constants ``TEMPERATURE_K`` (K), ``TIMESTEP_PS`` (ps),
        ``FRICTION_PER_PS`` (1/ps).
    """
    if name not in BUILTIN_SYSTEMS:
        raise ValueError(f"system: expected one of the built-in systems {BUILTIN_SYSTEMS}, found {name!r}")
    return importlib.import_module(f"systems.{name}")
