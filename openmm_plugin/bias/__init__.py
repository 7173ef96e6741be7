"""Biasing learned CVs in OpenMM at one model call per step: metadynamics, OPES, restraints, walls.

Bias objects (numpy state) → a PythonForce (live, adaptive) or a TorchForce (TorchScript CV + frozen
bias) → :class:`BiasRunner` (deposition, checkpoint/restart, multiple walkers) → :class:`BiasReporter`
(PLUMED COLVAR). See issue 6 and ``benchmarks/bias_speed.py`` for the costs of each route.
"""

from openmm_plugin.bias.base import AdaptiveBias, Bias, BiasSum
from openmm_plugin.bias.cv_evaluation import CVEvaluator
from openmm_plugin.bias.metad import Metadynamics
from openmm_plugin.bias.opes import OPES, OPESExplore, OPESMetad
from openmm_plugin.bias.python_route import BiasCallback, python_bias_force
from openmm_plugin.bias.reporter import BiasReporter
from openmm_plugin.bias.restraints import HarmonicRestraint, Wall
from openmm_plugin.bias.runner import BiasRunner
from openmm_plugin.bias.torch_route import TorchBiasForce, scripted_cv_bias, torch_bias_force

__all__ = [
    "AdaptiveBias", "Bias", "BiasCallback", "BiasReporter", "BiasRunner", "BiasSum", "CVEvaluator",
    "HarmonicRestraint", "Metadynamics", "OPES", "OPESExplore", "OPESMetad", "TorchBiasForce", "Wall",
    "python_bias_force", "scripted_cv_bias", "torch_bias_force",
]
