"""Biasing learned CVs in OpenMM at one model call per step: metadynamics, OPES, restraints, walls.

Bias objects (numpy state) → a Force from :mod:`openmm_plugin.forces` (PythonForce: live, adaptive; or
TorchForce: TorchScript CV + frozen bias) → :class:`BiasRunner` (deposition, checkpoint/restart, multiple
walkers) → :class:`BiasReporter` (PLUMED COLVAR). See issue 6 and ``benchmarks/bias_speed.py`` for the costs
of each route.
"""

from openmm_plugin.bias.base import AdaptiveBias, Bias, BiasSum, OnComponents
from openmm_plugin.bias.metad import Metadynamics
from openmm_plugin.bias.opes import OPES, OPESExplore, OPESMetad
from openmm_plugin.bias.reporter import BiasReporter
from openmm_plugin.bias.restraints import HarmonicRestraint, Wall
from openmm_plugin.bias.runner import BiasRunner

__all__ = [
    "AdaptiveBias", "Bias", "BiasReporter", "BiasRunner", "BiasSum", "HarmonicRestraint", "Metadynamics", "OPES",
    "OPESExplore", "OPESMetad", "OnComponents", "Wall",
]
