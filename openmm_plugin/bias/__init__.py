"""Biasing learned CVs in OpenMM at one model call per step: metadynamics, OPES, restraints, walls.

Bias objects (numpy state) → a Force from :mod:`openmm_plugin.forces` (PythonForce: live, adaptive; or
TorchForce: TorchScript CV + frozen bias) → :class:`BiasRunner` (deposition, checkpoint/restart, multiple
walkers) → :class:`BiasReporter` (PLUMED COLVAR). :func:`bias_cv` does all of it in one call, the method's
parameters (:class:`MetadParams`, :class:`OPESParams`, ...) defaulting from the CV's contract. See issue 6 and
``benchmarks/bias_speed.py`` for the costs of each route.
"""

from openmm_plugin.bias.base import AdaptiveBias, Bias, BiasSum, OnComponents
from openmm_plugin.bias.guard import ForceGuard
from openmm_plugin.bias.metad import Metadynamics
from openmm_plugin.bias.native import NativeBiasForce, native_bias_force
from openmm_plugin.bias.opes import OPES, OPESExplore, OPESMetad
from openmm_plugin.bias.params import MetadParams, OPESParams, RestraintParams, WallParams, make_bias
from openmm_plugin.bias.reporter import BiasReporter
from openmm_plugin.bias.restraints import HarmonicRestraint, Wall
from openmm_plugin.bias.runner import BiasRunner
from openmm_plugin.bias.setup import BiasedCV, bias_cv

__all__ = [
    "ForceGuard", "NativeBiasForce", "native_bias_force",
    "AdaptiveBias", "Bias", "BiasReporter", "BiasRunner", "BiasSum", "BiasedCV", "HarmonicRestraint", "MetadParams",
    "Metadynamics", "OPES", "OPESExplore", "OPESMetad", "OPESParams", "OnComponents", "RestraintParams", "Wall",
    "WallParams", "bias_cv", "make_bias",
]
