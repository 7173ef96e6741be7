import math

import mdtraj
import numpy as np
import openmm
import openmm.app as app
import pytest

import systems.alanine_dipeptide as ad
from systems.peptides import MolecularSystem, add_trans_omega_restraint, build_capped_peptide, omega_indices


def _integrator():
    return openmm.LangevinMiddleIntegrator(ad.TEMPERATURE_K, ad.FRICTION_PER_PS, ad.TIMESTEP_PS)


@pytest.fixture(scope="module")
def ala2() -> MolecularSystem:
    return ad.build()


def test_atom_counts(ala2):
    assert ala2.topology.getNumAtoms() == ad.N_ATOMS == 22
    assert ala2.system.getNumParticles() == 22
    assert ala2.positions_nm.shape == (22, 3) and ala2.positions_nm.dtype == np.float64
    assert len(ad.heavy_atom_indices(ala2.topology)) == 10
    assert [r.name for r in ala2.topology.residues()] == ["ACE", "ALA", "NME"]


def test_phi_psi_match_mdtraj(ala2):
    traj = mdtraj.Trajectory(ala2.positions_nm[None], mdtraj.Topology.from_openmm(ala2.topology))
    phi, psi = ad.phi_psi_indices(ala2.topology)
    assert [phi] == mdtraj.compute_phi(traj)[0].tolist()
    assert [psi] == mdtraj.compute_psi(traj)[0].tolist()
    assert mdtraj.compute_phi(traj)[1][0, 0] < 0  # minimised into the φ < 0 (C7eq/β) basin


def test_phi_psi_missing_residue_raises():
    top = app.Topology()
    res = top.addResidue("GLY", top.addChain())
    top.addAtom("N", app.element.nitrogen, res)
    with pytest.raises(ValueError, match="ACE"):
        ad.phi_psi_indices(top)


def test_forces_constraints_energy(ala2):
    forces = [type(f).__name__ for f in ala2.system.getForces()]
    assert "GBSAOBCForce" in forces
    assert ala2.system.getNumConstraints() > 0
    context = openmm.Context(ala2.system, _integrator(), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ala2.positions_nm)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
    assert math.isfinite(energy)


def test_md_settings_are_constants_only():
    """systems/ holds the MD settings; the integrator is built in openmm_plugin.simulation (no import of it here)."""
    assert ad.TIMESTEP_PS == pytest.approx(0.002) and ad.FRICTION_PER_PS == pytest.approx(1.0)
    assert not hasattr(ad, "make_integrator")


def test_build_returns_independent_copies():
    a, b = ad.build(), ad.build()
    a.positions_nm[0] += 1.0
    assert not np.allclose(a.positions_nm[0], b.positions_nm[0])


def test_other_sequence_builds():
    ff = app.ForceField(*ad.FORCEFIELD_FILES)
    topology, positions_nm = build_capped_peptide("WLALL", ff)
    assert [r.name for r in topology.residues()] == ["ACE", "TRP", "LEU", "ALA", "LEU", "LEU", "NME"]
    assert positions_nm.shape == (topology.getNumAtoms(), 3)
    system = ff.createSystem(topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    assert system.getNumParticles() == topology.getNumAtoms()
    assert len(omega_indices(topology)) == 6


def test_bad_sequence_raises():
    ff = app.ForceField(*ad.FORCEFIELD_FILES)
    with pytest.raises(ValueError, match="sequence"):
        build_capped_peptide("AXB", ff)
    with pytest.raises(ValueError, match="sequence"):
        build_capped_peptide("", ff)


def test_trans_omega_restraint():
    ala2 = ad.build()
    quads = omega_indices(ala2.topology)
    names = [[a.name for a in ala2.topology.atoms()][i] for i in quads[0]]
    assert len(quads) == 2 and names == ["CH3", "C", "N", "CA"]
    index = add_trans_omega_restraint(ala2.system, ala2.topology)
    ala2.system.getForce(index).setForceGroup(31)
    context = openmm.Context(ala2.system, _integrator(), openmm.Platform.getPlatformByName("Reference"))

    def wall_energy(positions_nm):
        context.setPositions(positions_nm)
        state = context.getState(getEnergy=True, groups={31})
        return state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)

    assert wall_energy(ala2.positions_nm) == 0.0  # trans peptide bonds: inside the flat bottom
    # rotate the NME methyl carbon about the C-N bond by 180 degrees: second peptide bond becomes cis
    x = ala2.positions_nm.copy()
    ca, c, n, cm = quads[1]
    axis = (x[n] - x[c]) / np.linalg.norm(x[n] - x[c])
    v = x[cm] - x[n]
    x[cm] = x[n] + 2 * np.dot(v, axis) * axis - v
    assert wall_energy(x) > 100.0
    with pytest.raises(ValueError, match="min_abs_omega_deg"):
        add_trans_omega_restraint(ala2.system, ala2.topology, min_abs_omega_deg=45.0)


def test_build_is_reproducible_across_processes():
    """Modeller.addHydrogens draws from Python's global random; build() must not depend on it."""
    import subprocess
    import sys

    code = ("import random; random.seed(%d)\n"
            "from systems import alanine_dipeptide as a\n"
            "print(repr(float(abs(a.build().positions_nm).sum())))")
    runs = {subprocess.run([sys.executable, "-c", code % seed], capture_output=True, text=True, check=True).stdout.split()[-1]
            for seed in (1, 2)}
    assert len(runs) == 1


def test_builtin_system_table():
    from systems import BUILTIN_SYSTEMS, builtin_system

    assert builtin_system("alanine_dipeptide") is ad and "alanine_dipeptide" in BUILTIN_SYSTEMS
    for name in BUILTIN_SYSTEMS:
        module = builtin_system(name)
        assert module.TIMESTEP_PS > 0 and module.FRICTION_PER_PS > 0 and callable(module.build)
    with pytest.raises(ValueError, match="system: expected one of the built-in systems"):
        builtin_system("ubiquitin")
