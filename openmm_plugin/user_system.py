"""A user's molecular System for the stages: a built-in system, a serialized OpenMM System + PDB, or force-field
files + PDB.

Each source gives the same :class:`systems.peptides.MolecularSystem` (topology, System, positions in nm) that a
built-in system's ``build()`` gives, plus the MD settings (time step, friction) and a one-line description of where
it came from for messages. Everything is checked before any Context exists: the files exist, the PDB has as many
atoms as the System has particles, a periodic nonbonded method has a box.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

from cvlearn.config import check_input_file
from cvlearn.errors import ConfigError
from systems import BUILTIN_SYSTEMS, builtin_system
from systems.peptides import MolecularSystem

logger = logging.getLogger(__name__)

__all__ = ["CONSTRAINTS", "DEFAULT_FRICTION_PER_PS", "DEFAULT_TIMESTEP_PS", "NONBONDED_METHODS", "LoadedSystem",
           "check_system_source", "forcefield_system", "load_system", "xml_system"]

DEFAULT_TIMESTEP_PS = 0.002
DEFAULT_FRICTION_PER_PS = 1.0
NONBONDED_METHODS = {"PME": app.PME, "NoCutoff": app.NoCutoff, "CutoffPeriodic": app.CutoffPeriodic,
                     "CutoffNonPeriodic": app.CutoffNonPeriodic, "Ewald": app.Ewald, "LJPME": app.LJPME}
CONSTRAINTS = {"none": None, "HBonds": app.HBonds, "AllBonds": app.AllBonds, "HAngles": app.HAngles}
_PERIODIC_METHODS = ("PME", "CutoffPeriodic", "Ewald", "LJPME")


@dataclass(frozen=True)
class LoadedSystem:
    """A System ready for MD, and where it came from.

    Attributes
    ----------
    molecule : MolecularSystem
        Topology, System and starting positions ``[n_particles, 3]`` nm.
    timestep_ps, friction_per_ps : float
        MD time step (ps) and Langevin friction (1/ps).
    source : str
        One line for messages, e.g. ``"system alanine_dipeptide"`` or ``"system_xml sys.xml + pdb start.pdb"``.
    input_files : dict of str to Path
        The files the System was read from, by config key (hashed into run records).
    """

    molecule: MolecularSystem
    timestep_ps: float
    friction_per_ps: float
    source: str
    input_files: dict = field(default_factory=dict)


def check_system_source(system: Optional[str], system_xml: Optional[str], pdb: Optional[str],
                        forcefield: Optional[Sequence[str]], nonbonded_method: Optional[str] = None,
                        constraints: str = "HBonds") -> None:
    """:class:`ConfigError` unless exactly one source is named: ``system``, ``system_xml`` + ``pdb``, or
    ``forcefield`` + ``pdb``; and the option names are known. No file is read here (configs check files at run
    time)."""
    given = [name for name, value in (("system", system), ("system_xml", system_xml), ("forcefield", forcefield))
             if value is not None]
    if len(given) != 1:
        raise ConfigError(f"expected exactly one of `system` (a built-in: {', '.join(BUILTIN_SYSTEMS)}), "
                          f"`system_xml` + `pdb`, or `forcefield` + `pdb`; found "
                          f"{' and '.join(f'`{g}`' for g in given) if given else 'none'}", key="system")
    if system is not None:
        if system not in BUILTIN_SYSTEMS:
            raise ConfigError(f"expected one of the built-in systems {BUILTIN_SYSTEMS}, found {system!r}",
                              key="system")
        if pdb is not None:
            raise ConfigError(f"a built-in system brings its own structure; `pdb` goes with `system_xml` or "
                              f"`forcefield`, found system {system!r} and pdb {pdb!r}", key="pdb")
    elif pdb is None:
        raise ConfigError(f"required with `{given[0]}`: expected the PDB file of the starting structure, found none",
                          key="pdb")
    if forcefield is not None and (not forcefield or any(not str(f) for f in forcefield)):
        raise ConfigError(f"expected a list of force-field XML files, found {list(forcefield)!r}", key="forcefield")
    if nonbonded_method is not None and nonbonded_method not in NONBONDED_METHODS:
        raise ConfigError(f"expected one of {sorted(NONBONDED_METHODS)}, found {nonbonded_method!r}",
                          key="nonbonded_method")
    if constraints not in CONSTRAINTS:
        raise ConfigError(f"expected one of {list(CONSTRAINTS)}, found {constraints!r}", key="constraints")


def _read_pdb(pdb: str | Path) -> app.PDBFile:
    path = check_input_file(pdb, "pdb", "PDB file")
    try:
        return app.PDBFile(str(path))
    except Exception as err:  # OpenMM raises plain Exceptions/ValueErrors for malformed files
        raise ConfigError(f"{path} is not a readable PDB file: {err}", key="pdb") from err


def _positions_nm(pdb: app.PDBFile) -> np.ndarray:
    return np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer), dtype=np.float64)


def xml_system(system_xml: str | Path, pdb: str | Path) -> MolecularSystem:
    """A serialized OpenMM System (``XmlSerializer``) with the topology and positions of a PDB file.

    The PDB's box (CRYST1) becomes the System's default box when the System is periodic.

    Parameters
    ----------
    system_xml : str or Path
        ``System`` XML written by ``openmm.XmlSerializer.serialize``.
    pdb : str or Path
        Starting structure with the same atoms in the same order.

    Returns
    -------
    MolecularSystem
    """
    xml_path = check_input_file(system_xml, "system_xml", "serialized OpenMM System")
    try:
        system = openmm.XmlSerializer.deserialize(xml_path.read_text())
    except Exception as err:
        raise ConfigError(f"{xml_path} is not a serialized OpenMM System: {err}", key="system_xml") from err
    if not isinstance(system, openmm.System):
        raise ConfigError(f"expected a serialized openmm.System, found a {type(system).__name__} in {xml_path}",
                          key="system_xml")
    structure = _read_pdb(pdb)
    n_atoms, n_particles = structure.topology.getNumAtoms(), system.getNumParticles()
    if n_atoms != n_particles:
        raise ConfigError(f"expected {n_particles} atoms (the System in {xml_path} has {n_particles} particles), "
                          f"found {n_atoms} in {pdb}", key="pdb")
    box = structure.topology.getPeriodicBoxVectors()
    if system.usesPeriodicBoundaryConditions():
        if box is not None:
            system.setDefaultPeriodicBoxVectors(*box)
        else:
            logger.info("%s has no box (CRYST1): using the System's default box", pdb)
    return MolecularSystem(topology=structure.topology, system=system, positions_nm=_positions_nm(structure),
                           name=Path(xml_path).stem)


def forcefield_system(forcefield: Sequence[str], pdb: str | Path, *, nonbonded_method: Optional[str] = None,
                      nonbonded_cutoff_nm: float = 1.0, constraints: str = "HBonds", rigid_water: bool = True,
                      hydrogen_mass_amu: Optional[float] = None) -> MolecularSystem:
    """An OpenMM System built by ``app.ForceField(*forcefield).createSystem`` on a PDB's topology.

    Parameters
    ----------
    forcefield : sequence of str
        Force-field XML files, OpenMM's own (``amber14-all.xml``) or paths.
    pdb : str or Path
        The structure (all atoms, hydrogens included; a CRYST1 box for periodic methods).
    nonbonded_method : str, optional
        A key of :data:`NONBONDED_METHODS`; default PME when the PDB has a box, else NoCutoff.
    nonbonded_cutoff_nm : float
        Cutoff, nm (ignored by NoCutoff).
    constraints : str
        A key of :data:`CONSTRAINTS`.
    rigid_water : bool
        Rigid water molecules.
    hydrogen_mass_amu : float, optional
        Hydrogen mass repartitioning, amu.

    Returns
    -------
    MolecularSystem
    """
    structure = _read_pdb(pdb)
    box = structure.topology.getPeriodicBoxVectors()
    method = nonbonded_method or ("PME" if box is not None else "NoCutoff")
    if method in _PERIODIC_METHODS and box is None:
        raise ConfigError(f"expected a PDB with a box (CRYST1) for the periodic method {method}, found none in {pdb}; "
                          "use NoCutoff or CutoffNonPeriodic for a molecule in vacuum or implicit solvent",
                          key="nonbonded_method")
    try:
        ff = app.ForceField(*[str(f) for f in forcefield])
    except Exception as err:
        raise ConfigError(f"cannot load force field {list(forcefield)}: {err}", key="forcefield") from err
    options = {"nonbondedMethod": NONBONDED_METHODS[method], "constraints": CONSTRAINTS[constraints],
               "rigidWater": bool(rigid_water)}
    if method != "NoCutoff":
        options["nonbondedCutoff"] = float(nonbonded_cutoff_nm) * unit.nanometer
    if hydrogen_mass_amu:
        options["hydrogenMass"] = float(hydrogen_mass_amu) * unit.amu
    try:
        system = ff.createSystem(structure.topology, **options)
    except Exception as err:  # e.g. "No template found for residue 1 (ACE)"
        raise ConfigError(f"force field {list(forcefield)} on {pdb}: {err}", key="forcefield") from err
    return MolecularSystem(topology=structure.topology, system=system, positions_nm=_positions_nm(structure),
                           name=Path(pdb).stem)


def load_system(*, system: Optional[str] = None, system_xml: Optional[str] = None, pdb: Optional[str] = None,
                forcefield: Optional[Sequence[str]] = None, nonbonded_method: Optional[str] = None,
                nonbonded_cutoff_nm: float = 1.0, constraints: str = "HBonds", rigid_water: bool = True,
                hydrogen_mass_amu: Optional[float] = None, timestep_ps: Optional[float] = None,
                friction_per_ps: Optional[float] = None) -> LoadedSystem:
    """The System of exactly one source, with its MD settings (the built-in's, else 0.002 ps and 1/ps).

    Parameters
    ----------
    system : str, optional
        A built-in system (:data:`systems.BUILTIN_SYSTEMS`).
    system_xml, pdb : str, optional
        A serialized System and its structure (see :func:`xml_system`); ``pdb`` also goes with ``forcefield``.
    forcefield : sequence of str, optional
        Force-field files (see :func:`forcefield_system` for the other options).
    nonbonded_method, nonbonded_cutoff_nm, constraints, rigid_water, hydrogen_mass_amu
        Options of :func:`forcefield_system`.
    timestep_ps, friction_per_ps : float, optional
        Override the MD settings, ps and 1/ps.

    Returns
    -------
    LoadedSystem
    """
    check_system_source(system, system_xml, pdb, forcefield, nonbonded_method, constraints)
    if system is not None:
        module = builtin_system(system)
        loaded = LoadedSystem(module.build(), module.TIMESTEP_PS, module.FRICTION_PER_PS, f"system {system}")
    elif system_xml is not None:
        loaded = LoadedSystem(xml_system(system_xml, pdb), DEFAULT_TIMESTEP_PS, DEFAULT_FRICTION_PER_PS,
                              f"system_xml {system_xml} + pdb {pdb}",
                              {"system_xml": Path(system_xml), "pdb": Path(pdb)})
    else:
        molecule = forcefield_system(forcefield, pdb, nonbonded_method=nonbonded_method,
                                     nonbonded_cutoff_nm=nonbonded_cutoff_nm, constraints=constraints,
                                     rigid_water=rigid_water, hydrogen_mass_amu=hydrogen_mass_amu)
        loaded = LoadedSystem(molecule, DEFAULT_TIMESTEP_PS, DEFAULT_FRICTION_PER_PS,
                              f"forcefield {list(forcefield)} + pdb {pdb}", {"pdb": Path(pdb)})
    return LoadedSystem(loaded.molecule, float(timestep_ps or loaded.timestep_ps),
                        float(friction_per_ps or loaded.friction_per_ps), loaded.source, loaded.input_files)
