"""A user's System from a serialized System + PDB or from force-field files + PDB: real files, real OpenMM."""

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from cvlearn.errors import ConfigError
from openmm_plugin.user_system import check_system_source, forcefield_system, load_system, xml_system


def write_pdb(path, topology, positions_nm, box_nm=None):
    """A PDB of ``topology`` at ``positions_nm`` (with a CRYST1 box when ``box_nm`` is given)."""
    if box_nm is not None:
        topology.setPeriodicBoxVectors(np.diag([box_nm] * 3) * unit.nanometer)
    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, np.asarray(positions_nm) * unit.nanometer, handle)
    return path


def write_xml(path, system):
    path.write_text(openmm.XmlSerializer.serialize(system))
    return path


def _energy(molecule):
    context = openmm.Context(molecule.system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(molecule.positions_nm)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_xml_and_pdb_reproduce_the_builtin_system(ala2, tmp_path):
    """The serialized System + PDB give the same energy as the built-in ala2 (PDB precision: 1e-4 nm)."""
    xml = write_xml(tmp_path / "ala2.xml", ala2.system)
    pdb = write_pdb(tmp_path / "ala2.pdb", ala2.topology, ala2.positions_nm)
    loaded = load_system(system_xml=str(xml), pdb=str(pdb))
    assert loaded.molecule.system.getNumParticles() == 22 and loaded.timestep_ps == 0.002
    assert loaded.source == f"system_xml {xml} + pdb {pdb}" and set(loaded.input_files) == {"system_xml", "pdb"}
    np.testing.assert_allclose(loaded.molecule.positions_nm, ala2.positions_nm, atol=6e-5)
    reference = _energy(type(ala2)(ala2.topology, ala2.system, loaded.molecule.positions_nm, "ala2"))
    assert _energy(loaded.molecule) == pytest.approx(reference, rel=1e-9, abs=1e-6)
    builtin = load_system(system="alanine_dipeptide", timestep_ps=0.001)
    assert builtin.timestep_ps == 0.001 and builtin.friction_per_ps == 1.0 and builtin.input_files == {}


def test_periodic_system_takes_the_pdb_box(tmp_path):
    """A periodic System read from XML gets the PDB's CRYST1 box; PME without a box is refused."""
    ff = app.ForceField("amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, boxSize=openmm.Vec3(2.0, 2.0, 2.0) * unit.nanometer)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.8 * unit.nanometer)
    positions = modeller.positions.value_in_unit(unit.nanometer)
    xml = write_xml(tmp_path / "water.xml", system)
    pdb = write_pdb(tmp_path / "water.pdb", modeller.topology, positions, box_nm=2.2)
    molecule = xml_system(xml, pdb)
    box = molecule.system.getDefaultPeriodicBoxVectors()
    assert box[0][0].value_in_unit(unit.nanometer) == pytest.approx(2.2)
    built = forcefield_system(["amber14/tip3p.xml"], pdb, nonbonded_cutoff_nm=0.8)  # a box: PME by default
    assert built.system.usesPeriodicBoundaryConditions()
    topology = app.PDBFile(str(pdb)).topology
    topology.setPeriodicBoxVectors(None)
    no_box = write_pdb(tmp_path / "nobox.pdb", topology, positions)
    assert app.PDBFile(str(no_box)).topology.getPeriodicBoxVectors() is None
    with pytest.raises(ConfigError, match=r"^nonbonded_method: expected a PDB with a box \(CRYST1\) for the periodic "
                                          r"method PME"):
        forcefield_system(["amber14/tip3p.xml"], no_box, nonbonded_method="PME")


def test_errors_name_the_key(ala2, tmp_path):
    xml = write_xml(tmp_path / "ala2.xml", ala2.system)
    modeller = app.Modeller(ala2.topology, ala2.positions_nm * unit.nanometer)
    modeller.delete([next(a for a in modeller.topology.atoms() if a.element.symbol == "H")])
    short = write_pdb(tmp_path / "short.pdb", modeller.topology, modeller.positions.value_in_unit(unit.nanometer))
    with pytest.raises(ConfigError, match=r"^pdb: expected 22 atoms \(the System in .*ala2\.xml has 22 particles\), "
                                          r"found 21 in .*short\.pdb$"):
        xml_system(xml, short)
    with pytest.raises(FileNotFoundError, match=r"^system_xml: serialized OpenMM System '.*missing\.xml' does not"):
        xml_system(tmp_path / "missing.xml", short)
    (tmp_path / "bad.xml").write_text("<System")
    with pytest.raises(ConfigError, match=r"^system_xml: .*bad\.xml is not a serialized OpenMM System"):
        xml_system(tmp_path / "bad.xml", short)
    with pytest.raises(ConfigError, match=r"^forcefield: force field \['amber14-all.xml'\] on .*short\.pdb: No "
                                          r"template"):
        forcefield_system(["amber14-all.xml"], short, nonbonded_method="NoCutoff")
    with pytest.raises(ConfigError, match=r"^system: expected exactly one of `system`.*found none$"):
        check_system_source(None, None, None, None)
    with pytest.raises(ConfigError, match=r"^system: expected exactly one of .*found `system` and `system_xml`$"):
        check_system_source("alanine_dipeptide", "a.xml", "a.pdb", None)
    with pytest.raises(ConfigError, match=r"^pdb: required with `forcefield`"):
        check_system_source(None, None, None, ["amber14-all.xml"])
    with pytest.raises(ConfigError, match=r"^nonbonded_method: expected one of"):
        check_system_source(None, None, "a.pdb", ["amber14-all.xml"], nonbonded_method="PMEE")
