"""The CV inside real OpenMM Contexts: TorchForce and PythonForce give the CV and −∇CV of Python."""

import numpy as np
import openmm
import pytest
import torch

from openmm_plugin.forces import python_force_for_cv, torch_force_for_cv


def _context(force, n_particles, positions):
    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(1.0)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def _energy_forces(context):
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


@pytest.mark.parametrize("route", ["torch", "python"])
@pytest.mark.parametrize("component", [0, 1])
def test_route_equals_python(route, component, exported_cv64, ala2):
    module, _ = exported_cv64
    make = torch_force_for_cv if route == "torch" else python_force_for_cv
    context = _context(make(module, component), 22, ala2.positions_nm)
    energy, forces = _energy_forces(context)
    pos = torch.tensor(ala2.positions_nm, requires_grad=True)
    value = module(pos)[component]
    (grad,) = torch.autograd.grad(value, pos)
    assert energy == pytest.approx(float(value), rel=1e-9, abs=1e-9)
    assert np.allclose(forces, -grad.numpy(), atol=1e-8)


def test_context_forces_match_finite_differences_of_context_energy(exported_cv64, ala2):
    module, _ = exported_cv64
    context = _context(torch_force_for_cv(module, 0), 22, ala2.positions_nm)
    _, forces = _energy_forces(context)
    h = 1e-5
    fd = np.zeros_like(forces)
    for atom in module.atom_indices.tolist():
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                pos = ala2.positions_nm.copy()
                pos[atom, axis] += sign * h
                context.setPositions(pos)
                energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
            fd[atom, axis] = -(energies[0] - energies[1]) / (2 * h)
    assert np.linalg.norm(forces - fd) / np.linalg.norm(fd) < 1e-3


def test_component_out_of_range(exported_cv64):
    module, _ = exported_cv64
    with pytest.raises(ValueError, match="component"):
        python_force_for_cv(module, 5)


def test_python_force_pickles(exported_cv64, ala2):
    """OpenMM serialises PythonForces with pickle (CustomCVForce copies do this)."""
    module, _ = exported_cv64
    force = python_force_for_cv(module, 1)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))
    energy, _ = _energy_forces(_context(copy, 22, ala2.positions_nm))
    assert energy == pytest.approx(float(module(torch.tensor(ala2.positions_nm))[1]), rel=1e-9)
