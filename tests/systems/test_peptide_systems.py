"""WLALL and λ6-85 build from sequence with the documented atom counts; `cvlearn simulate` writes a trajectory."""

import mdtraj
import numpy as np
import pytest

from openmm_plugin.cli import main


def test_wlall_builds():
    from systems import pentapeptide_wlall as wlall

    s = wlall.build(minimize=False)
    assert s.topology.getNumAtoms() == wlall.N_ATOMS == 103 == s.system.getNumParticles()
    assert len(wlall.heavy_atom_indices(s.topology)) == wlall.N_HEAVY_ATOMS
    assert [r.name for r in s.topology.residues()] == ["ACE", "TRP", "LEU", "ALA", "LEU", "LEU", "NME"]


def test_lambda6_85_builds_with_documented_count():
    from systems import lambda6_85

    s = lambda6_85.build(minimize=False)
    residues = list(s.topology.residues())
    assert len(lambda6_85.SEQUENCE) == 80 and len(residues) == lambda6_85.N_RESIDUES
    assert s.topology.getNumAtoms() == lambda6_85.N_ATOMS == lambda6_85.N_ATOMS_UNCAPPED - 3 + 12
    assert len(lambda6_85.heavy_atom_indices(s.topology)) == lambda6_85.N_HEAVY_ATOMS
    mutated = {6 + i: r.name for i, r in enumerate(residues[1:-1])}
    assert (mutated[14], mutated[22], mutated[33], mutated[46], mutated[48]) == ("ALA", "TRP", "TYR", "ALA", "ALA")


def test_simulate_cli(tmp_path, capsys):
    assert main(["simulate", "--system", "pentapeptide_wlall", "--ns", "0.0004", "--report-interval-ps", "0.1",
                 "--out", str(tmp_path)]) == 0
    traj = mdtraj.load(str(tmp_path / "pentapeptide_wlall_T300_s0.dcd"), top=str(tmp_path / "pentapeptide_wlall_T300_s0.pdb"))
    assert traj.n_frames == 4 and traj.n_atoms == 103  # 0.4 ps, a frame every 0.1 ps
    capsys.readouterr()
    assert main(["simulate", "--system", "pentapeptide_wlall", "--ns", "0.0004", "--report-interval-ps", "0.1",
                 "--out", str(tmp_path)]) == 0
    assert "[existed, skipped]" in capsys.readouterr().out  # a second call keeps the outputs
    assert main(["simulate", "--system", "ubiquitin", "--ns", "1"]) == 2  # one-line usage error, exit 2
    assert main(["simulate", "--system", "pentapeptide_wlall", "--fast", "--ns", "0.001", "--out",
                 str(tmp_path / "f")]) == 2
    assert "--fast: pentapeptide_wlall has no CPU-affordable settings" in capsys.readouterr().err


def test_lambda6_85_fast_md_options_reach_the_system():
    """The CPU-affordable settings really are a non-periodic cutoff on both the Coulomb/LJ and OBC terms and
    3-amu hydrogens (with the total mass conserved), and a 4 fs step with them stays finite."""
    import openmm
    import openmm.unit as u
    from systems import lambda6_85

    plain = lambda6_85.build(minimize=False).system
    fast_md = lambda6_85.FAST_BUILD
    fast = lambda6_85.build(minimize=False, **fast_md)
    forces = {type(f).__name__: f for f in fast.system.getForces()}
    assert forces["NonbondedForce"].getNonbondedMethod() == openmm.NonbondedForce.CutoffNonPeriodic
    assert forces["GBSAOBCForce"].getNonbondedMethod() == openmm.GBSAOBCForce.CutoffNonPeriodic
    assert forces["NonbondedForce"].getCutoffDistance().value_in_unit(u.nanometer) == pytest.approx(fast_md["cutoff_nm"])
    masses = [fast.system.getParticleMass(i).value_in_unit(u.amu) for i in range(fast.system.getNumParticles())]
    hydrogens = [a.index for a in fast.topology.atoms() if a.element.symbol == "H"]
    assert all(masses[i] == pytest.approx(fast_md["hydrogen_mass_amu"]) for i in hydrogens)
    total = sum(plain.getParticleMass(i).value_in_unit(u.amu) for i in range(plain.getNumParticles()))
    assert sum(masses) == pytest.approx(total)
    integrator = openmm.LangevinMiddleIntegrator(400.0, lambda6_85.FRICTION_PER_PS, lambda6_85.FAST_TIMESTEP_PS)
    context = openmm.Context(fast.system, integrator, openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(fast.positions_nm * u.nanometer)
    openmm.LocalEnergyMinimizer.minimize(context, 10.0, 50)
    integrator.step(20)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    assert np.isfinite(energy)
