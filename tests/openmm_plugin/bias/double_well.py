"""An analytic test system: one light particle in a double well along x (harmonic in y, z), CV = coordinates.

F(x) = U(x) exactly (y and z are independent), so biased runs can be checked against the analytic profile.
"""

from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch

from cvlearn.export import export_cv
from cvlearn.units import kt_kjmol

TEMPERATURE_K = 300.0
BARRIER_KJMOL = 5.0 * kt_kjmol(TEMPERATURE_K)  # 5 kT
MINIMUM_NM = 0.5
KAPPA_YZ = 500.0
TIMESTEP_PS = 0.005
FRICTION_PER_PS = 10.0
MASS_AMU = 1.0


def potential_kjmol(x: np.ndarray) -> np.ndarray:
    return BARRIER_KJMOL * ((np.asarray(x) / MINIMUM_NM) ** 2 - 1.0) ** 2


def make_system(n_particles: int = 1, second_well_on_y: bool = False) -> openmm.System:
    """Particle 0 in the well; extra particles (if any) are free spectators held by a harmonic trap."""
    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(MASS_AMU)
    y_term = "B*((y/x_min)^2-1)^2" if second_well_on_y else "0.5*k*y^2"
    force = openmm.CustomExternalForce(f"B*((x/x_min)^2-1)^2 + {y_term} + 0.5*k*z^2")
    # x_min, not "a": the MTS integrator has a variable "a", which a Context parameter may not shadow
    for name, value in (("B", BARRIER_KJMOL), ("x_min", MINIMUM_NM), ("k", KAPPA_YZ)):
        force.addGlobalParameter(name, value)
    force.addParticle(0, [])
    system.addForce(force)
    if n_particles > 1:
        trap = openmm.CustomExternalForce("0.5*k*(x^2+y^2+z^2)")
        trap.addGlobalParameter("k", KAPPA_YZ)
        for i in range(1, n_particles):
            trap.addParticle(i, [])
        system.addForce(trap)
    return system


def start_positions(n_particles: int = 1) -> np.ndarray:
    pos = np.zeros((n_particles, 3))
    pos[0, 0] = -MINIMUM_NM
    return pos


class Coordinates(torch.nn.Module):
    """CV = chosen coordinates of the first selected atom; counts its own calls (a buffer)."""

    def __init__(self, dims):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))
        self.register_buffer("dims", torch.as_tensor(list(dims), dtype=torch.long))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        return pos[:, 0].index_select(1, self.dims) * self.scale


def coordinate_cv(path, dims=(0,), n_particles: int = 1, atom_indices=(0,)):
    module = export_cv(Coordinates(dims), path, atom_indices=list(atom_indices), n_particles=n_particles,
                       atomic_numbers=[6] * len(atom_indices), residue_of_atom=[0] * len(atom_indices),
                       dtype=torch.float64)
    module.model.calls.zero_()
    return module


def make_integrator(seed: int = 0, friction_per_ps: float = FRICTION_PER_PS) -> openmm.LangevinMiddleIntegrator:
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE_K, friction_per_ps, TIMESTEP_PS)
    integrator.setRandomNumberSeed(seed + 1)
    return integrator


@pytest.fixture(autouse=True)
def one_thread():
    """Autouse where imported: the MD tests time and compare small per-step graphs on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
