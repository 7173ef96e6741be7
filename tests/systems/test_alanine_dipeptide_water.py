"""The explicit-water alanine dipeptide: periodic PME System in a small box, deterministic, stable under MD."""

import math
import subprocess
import sys

import mdtraj
import numpy as np
import openmm
import pytest

import systems.alanine_dipeptide as ad
import systems.alanine_dipeptide_water as w


@pytest.fixture(scope="module")
def water():
    return w.build()


def test_atoms_box_and_peptide(water):
    assert water.topology.getNumAtoms() == water.system.getNumParticles() == w.N_ATOMS == 721
    assert water.positions_nm.shape == (721, 3) and water.positions_nm.dtype == np.float64
    residues = [r.name for r in water.topology.residues()]
    assert residues[:3] == ["ACE", "ALA", "NME"] and set(residues[3:]) == {"HOH"} and len(residues) == 3 + 233
    assert len(w.heavy_atom_indices(water.topology)) == 10  # the peptide's, not the water oxygens
    assert w.heavy_atom_indices(water.topology) == ad.heavy_atom_indices(ad.build().topology)
    box = np.asarray(water.topology.getPeriodicBoxVectors().value_in_unit(openmm.unit.nanometer))
    default = np.asarray([v.value_in_unit(openmm.unit.nanometer) for v in water.system.getDefaultPeriodicBoxVectors()])
    assert np.allclose(box, np.eye(3) * 2.0) and np.allclose(default, box)
    traj = mdtraj.Trajectory(water.positions_nm[None], mdtraj.Topology.from_openmm(water.topology))
    assert [w.phi_psi_indices(water.topology)[0]] == mdtraj.compute_phi(traj)[0].tolist()


def test_pme_constraints_rigid_water(water):
    assert water.system.usesPeriodicBoundaryConditions()
    nonbonded = next(f for f in water.system.getForces() if isinstance(f, openmm.NonbondedForce))
    assert nonbonded.getNonbondedMethod() == openmm.NonbondedForce.PME
    assert nonbonded.getCutoffDistance().value_in_unit(openmm.unit.nanometer) == pytest.approx(w.CUTOFF_NM)
    # HBonds on the peptide (12 X-H bonds) + 3 rigid constraints per water.
    assert water.system.getNumConstraints() == 12 + 3 * 233


def test_minimised_and_stable_under_md(water):
    integrator = openmm.LangevinMiddleIntegrator(w.TEMPERATURE_K, w.FRICTION_PER_PS, w.TIMESTEP_PS)
    integrator.setRandomNumberSeed(1)
    context = openmm.Context(water.system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(water.positions_nm)
    state = context.getState(getEnergy=True, getForces=True)
    assert state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole) < -8000
    context.setVelocitiesToTemperature(w.TEMPERATURE_K, 1)
    integrator.step(50)
    state = context.getState(getEnergy=True, getPositions=True)
    assert math.isfinite(state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole))
    assert np.isfinite(state.getPositions(asNumpy=True)._value).all()


def test_build_is_reproducible_across_processes(water):
    code = ("import random; random.seed(7)\n"
            "from systems import alanine_dipeptide_water as w\n"
            "print(repr(float(abs(w.build().positions_nm).sum())))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()[-1]
    assert float(out) == float(abs(water.positions_nm).sum())


def test_is_a_builtin_system():
    from systems import BUILTIN_SYSTEMS, builtin_system

    assert "alanine_dipeptide_water" in BUILTIN_SYSTEMS and builtin_system("alanine_dipeptide_water") is w
