"""Well-tempered metadynamics on learned CVs (through ``app.Metadynamics``) and a COLVAR log for reweighting.

The learned CV enters as a ``BiasVariable`` whose force is a PythonForce running the exported TorchScript
CV (see :mod:`openmm_plugin.forces` for why not a TorchForce). The reference bias on φ/ψ uses
CustomTorsionForces. :class:`MetadLog` records, at every saved frame, time, CVs, V(s,t) and c(t), so frames
can be reweighted with :func:`cvlearn.analysis.reweighting.metad_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

import openmm
import openmm.app as app
import openmm.unit as unit

from cvlearn.data.colvar import write_colvar
from cvlearn.analysis.reweighting import well_tempered_rct
from openmm_plugin.forces import python_force_for_cv


@dataclass(frozen=True)
class MetadSettings:
    temperature_k: float = 300.0
    bias_factor: float = 8.0
    height_kjmol: float = 1.2
    frequency_steps: int = 250
    grid_width: int = 200


def cv_metadynamics(system: openmm.System, cv: torch.jit.ScriptModule, bounds: Sequence[tuple[float, float]],
                    sigmas: Sequence[float], settings: MetadSettings, components: Sequence[int] | None = None,
                    ) -> app.Metadynamics:
    """Bias components of a learned CV (default: the first ``len(bounds)``) inside ``bounds``."""
    components = list(range(len(bounds))) if components is None else list(components)
    if not (len(components) == len(bounds) == len(sigmas)) or not 1 <= len(bounds) <= 3:
        raise ValueError(f"need 1-3 components with one bound pair and one sigma each; got components={components}, "
                         f"bounds={list(bounds)}, sigmas={list(sigmas)}")
    variables = [
        app.BiasVariable(python_force_for_cv(cv, c), lo, hi, sigma, False, settings.grid_width)
        for c, (lo, hi), sigma in zip(components, bounds, sigmas)
    ]
    return _metadynamics(system, variables, settings)


def torsion_metadynamics(system: openmm.System, torsions: Sequence[Sequence[int]], sigma_rad: float,
                         settings: MetadSettings) -> app.Metadynamics:
    """Reference bias on backbone torsions (e.g. φ and ψ), periodic on [-π, π)."""
    variables = []
    for atoms in torsions:
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*[int(a) for a in atoms], [])
        variables.append(app.BiasVariable(force, -np.pi, np.pi, sigma_rad, True, settings.grid_width))
    return _metadynamics(system, variables, settings)


def _metadynamics(system, variables, settings: MetadSettings) -> app.Metadynamics:
    return app.Metadynamics(system, variables, settings.temperature_k * unit.kelvin, settings.bias_factor,
                            settings.height_kjmol * unit.kilojoule_per_mole, settings.frequency_steps)


def bias_grid_kjmol(meta: app.Metadynamics) -> np.ndarray:
    """V(s, t) on the grid, from the public free-energy estimate F = -γ/(γ-1) V; periodic duplicates dropped."""
    gamma = meta.biasFactor
    bias = -np.asarray(meta.getFreeEnergy().value_in_unit(unit.kilojoule_per_mole)) * (gamma - 1.0) / gamma
    for axis, var in enumerate(reversed(meta.variables)):
        if var.periodic:
            bias = np.take(bias, range(bias.shape[axis] - 1), axis=axis)
    return bias


def bias_force_group(meta: app.Metadynamics) -> int:
    """Force group of the bias force that ``app.Metadynamics`` added to the System (for MTS and energy reports).

    OpenMM exposes no public accessor; it keeps the CustomCVForce in ``_force``, so this is the one place that
    reads it.
    """
    return meta._force.getForceGroup()


class MetadLog:
    """Collects time, CVs, bias V(s,t) and c(t) at each reported frame; writes a PLUMED-style COLVAR file."""

    def __init__(self, meta: app.Metadynamics, timestep_ps: float, cv_names: Sequence[str]):
        self.meta = meta
        self.timestep_ps = timestep_ps
        self.fields = ["time", *cv_names, "metad.bias", "metad.rct"]
        self.rows: list[list[float]] = []

    def __call__(self, simulation: app.Simulation, frame: int) -> None:
        group = bias_force_group(self.meta)
        bias = simulation.context.getState(getEnergy=True, groups={group}).getPotentialEnergy()
        cvs = list(self.meta.getCollectiveVariables(simulation))
        rct = well_tempered_rct(bias_grid_kjmol(self.meta), self.meta.biasFactor,
                                self.meta.temperature.value_in_unit(unit.kelvin))
        self.rows.append([simulation.currentStep * self.timestep_ps, *cvs,
                          bias.value_in_unit(unit.kilojoule_per_mole), rct])

    def write(self, path) -> None:
        write_colvar(path, self.fields, np.asarray(self.rows))
