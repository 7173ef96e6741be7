"""Capped peptides from a one-letter sequence, built offline.

PeptideBuilder lays out the backbone; we build one extra glycine on each side and trim them into the
ACE and NME caps, so no template structure has to be downloaded. OpenMM's Modeller adds hydrogens
from the force field's own templates. :func:`build_solvated_peptide_system` puts one in a box of explicit water.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

# PeptideBuilder silently turns unknown letters into glycine: check them ourselves.
_ONE_LETTER = set("ACDEFGHIKLMNPQRSTVWY")


@dataclass(frozen=True)
class MolecularSystem:
    """Everything an MD run needs: topology, OpenMM System and starting positions (nm).

    Attributes
    ----------
    topology : openmm.app.Topology
        All atoms, hydrogens included.
    system : openmm.System
        Forces in kJ/mol and nm, constraints included.
    positions_nm : np.ndarray
        Starting positions ``[n_particles, 3]``, float64, nm.
    name : str
        Short name of the system (e.g. for output folders).
    """

    topology: app.Topology
    system: openmm.System
    positions_nm: np.ndarray  # [n_atoms, 3] float64, nm
    name: str


def _pdb_line(serial: int, atom_name: str, res_name: str, res_seq: int, xyz_angstrom, element: str) -> str:
    # 4-character atom names start in column 13, shorter ones in column 14 (PDB convention).
    name = atom_name if len(atom_name) == 4 else f" {atom_name:<3}"
    x, y, z = xyz_angstrom
    return (
        f"ATOM  {serial:5d} {name:4s} {res_name:3s} A{res_seq:4d}    "
        f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {element:>2s}"
    )


# Backbone (phi, psi) in degrees for PeptideBuilder; "extended" uses its own make_extended_structure.
BACKBONES = {"extended": None, "helix": (-57.0, -47.0)}


def _capped_pdb_text(sequence: str, backbone: str = "extended") -> str:
    """Heavy-atom PDB text of ACE-<sequence>-NME (Å), made from G-<sequence>-G."""
    from PeptideBuilder import PeptideBuilder

    chain = "G" + sequence + "G"
    if BACKBONES[backbone] is None:
        structure = PeptideBuilder.make_extended_structure(chain)
    else:
        phi, psi = BACKBONES[backbone]
        structure = PeptideBuilder.make_structure(chain, [phi] * (len(chain) - 1), [psi] * (len(chain) - 1))
    residues = list(structure.get_residues())
    n_res = len(residues)
    lines, serial = [], 1
    for i, residue in enumerate(residues):
        if i == 0:  # ACE: methyl carbon (the former CA), C, O
            res_name, keep = "ACE", {"CA": "CH3", "C": "C", "O": "O"}
        elif i == n_res - 1:  # NME: N and the methyl carbon (the former CA; OpenMM calls it C)
            res_name, keep = "NME", {"N": "N", "CA": "C"}
        else:
            res_name, keep = residue.get_resname(), None
        for atom in residue:
            old = atom.get_id()
            if keep is not None and old not in keep:
                continue
            new = keep[old] if keep is not None else old
            lines.append(_pdb_line(serial, new, res_name, i + 1, atom.get_coord(), atom.element))
            serial += 1
    lines += ["TER", "END"]
    return "\n".join(lines) + "\n"


def build_capped_peptide(sequence: str, forcefield: app.ForceField,
                         backbone: str = "extended") -> tuple[app.Topology, np.ndarray]:
    """Build ACE-<sequence>-NME in an extended (or ideal α-helical) conformation, with hydrogens from ``forcefield``.

    Hydrogens are placed with Python's ``random`` seeded to 0 (state restored), so builds are reproducible.

    Parameters
    ----------
    sequence : str
        One-letter amino-acid codes (case-insensitive), without caps.
    forcefield : openmm.app.ForceField
        Supplies the hydrogen templates.
    backbone : {"extended", "helix"}
        Starting conformation (helix: φ = -57°, ψ = -47°).

    Returns
    -------
    topology : openmm.app.Topology
    positions_nm : np.ndarray
        ``[n_particles, 3]`` float64, nm.
    """
    if not isinstance(sequence, str) or not sequence:
        raise ValueError(f"sequence: expected a non-empty one-letter amino-acid string, found {sequence!r}")
    sequence = sequence.upper()
    bad = sorted(set(sequence) - _ONE_LETTER)
    if bad:
        raise ValueError(f"sequence {sequence!r}: expected letters from {''.join(sorted(_ONE_LETTER))}, found {bad}")
    if backbone not in BACKBONES:
        raise ValueError(f"backbone: expected one of {sorted(BACKBONES)}, found {backbone!r}")
    pdb = app.PDBFile(io.StringIO(_capped_pdb_text(sequence, backbone)))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    # addHydrogens starts hydrogens at positions drawn from Python's global `random` (unseeded): without a fixed
    # seed every process builds a slightly different molecule and no trajectory is reproducible (measured).
    state = random.getstate()
    random.seed(0)
    try:
        modeller.addHydrogens(forcefield, pH=7.0, platform=openmm.Platform.getPlatformByName("Reference"))
    finally:
        random.setstate(state)
    positions_nm = np.asarray(modeller.positions.value_in_unit(u.nanometer), dtype=np.float64).reshape(-1, 3)
    return modeller.topology, positions_nm


def omega_indices(topology: app.Topology) -> list[list[int]]:
    """Atom indices CA(i)-C(i)-N(i+1)-CA(i+1) of every peptide bond (CH3 of ACE, C of NME at the caps).

    Parameters
    ----------
    topology : openmm.app.Topology
        Capped peptide; each chain's consecutive residues are taken as bonded.

    Returns
    -------
    list of list of int
        ``[n_bonds, 4]`` System atom indices, one ω torsion per peptide bond.
    """
    out = []
    for chain in topology.chains():
        residues = list(chain.residues())
        for left, right in zip(residues[:-1], residues[1:]):
            names_l = {a.name: a.index for a in left.atoms()}
            names_r = {a.name: a.index for a in right.atoms()}
            ca_l = names_l.get("CH3" if left.name == "ACE" else "CA")
            ca_r = names_r.get("C" if right.name == "NME" else "CA")
            quad = [ca_l, names_l.get("C"), names_r.get("N"), ca_r]
            if None in quad:
                raise ValueError(
                    f"topology: expected backbone atoms for the peptide bond {left.name}{left.id}-{right.name}{right.id}, "
                    f"found {quad}"
                )
            out.append(quad)
    return out


def add_trans_omega_restraint(
    system: openmm.System,
    topology: app.Topology,
    *,
    min_abs_omega_deg: float = 120.0,
    force_constant_kjmol: float = 1000.0,
) -> int:
    """Keep every peptide bond trans: a flat-bottom torsion wall, zero while |ω| > ``min_abs_omega_deg``.

    High-temperature runs (700-800 K), used to sample φ transitions quickly, also flip peptide bonds
    to cis, a slower artefact a learned CV would otherwise latch onto. Energy
    ``k * max(0, cos ω - cos ω_min)^2``. Returns the index of the added force.

    Parameters
    ----------
    system : openmm.System
        Receives one ``CustomTorsionForce`` named ``TransOmegaRestraint``.
    topology : openmm.app.Topology
        Source of the ω torsions (:func:`omega_indices`).
    min_abs_omega_deg : float
        Wall position |ω_min|, degrees, in [90, 180).
    force_constant_kjmol : float
        k, kJ/mol.
    """
    if not 90.0 <= min_abs_omega_deg < 180.0:
        raise ValueError(f"min_abs_omega_deg: expected a value in [90, 180), found {min_abs_omega_deg!r}")
    force = openmm.CustomTorsionForce("k_omega * max(0, cos(theta) - cos_min)^2")
    force.addGlobalParameter("k_omega", force_constant_kjmol)
    force.addGlobalParameter("cos_min", float(np.cos(np.radians(min_abs_omega_deg))))
    for quad in omega_indices(topology):
        force.addTorsion(*quad, [])
    force.setName("TransOmegaRestraint")
    return system.addForce(force)


def build_peptide_system(
    sequence: str,
    name: str,
    forcefield_files: tuple[str, ...],
    *,
    backbone: str = "extended",
    minimize: bool = True,
    max_iterations: int = 0,
    cutoff_nm: float | None = None,
    hydrogen_mass_amu: float | None = None,
    tolerance_kjmol_per_nm: float = 10.0,
) -> MolecularSystem:
    """Capped peptide from sequence in implicit solvent (HBond constraints), optionally minimised.

    No cutoff by default (exact for small peptides); ``cutoff_nm`` switches to a non-periodic cutoff and
    ``hydrogen_mass_amu`` repartitions mass onto hydrogens (for 4 fs steps), which is what makes an 80-residue
    protein affordable on a CPU. Minimisation runs on the Reference platform so MD starts from a relaxed
    structure, not ideal geometry.

    Parameters
    ----------
    sequence, name : str
        One-letter sequence (without caps) and the system's name.
    forcefield_files : tuple of str
        OpenMM force-field XML files (e.g. an implicit-solvent set).
    backbone : {"extended", "helix"}
        Starting conformation.
    minimize, max_iterations, tolerance_kjmol_per_nm
        Whether to minimise, its iteration cap (0: until converged) and tolerance, kJ/mol/nm.
    cutoff_nm, hydrogen_mass_amu : float or None
        Non-periodic cutoff, nm, and hydrogen mass, amu (None: no cutoff / standard masses).

    Returns
    -------
    MolecularSystem
    """
    forcefield = app.ForceField(*forcefield_files)
    topology, positions_nm = build_capped_peptide(sequence, forcefield, backbone=backbone)
    options = {"hydrogenMass": hydrogen_mass_amu * u.amu} if hydrogen_mass_amu else {}
    if cutoff_nm is None:
        options["nonbondedMethod"] = app.NoCutoff
    else:
        options.update(nonbondedMethod=app.CutoffNonPeriodic, nonbondedCutoff=cutoff_nm * u.nanometer)
    system = forcefield.createSystem(topology, constraints=app.HBonds, **options)
    if minimize:
        positions_nm = minimized_positions(system, positions_nm, tolerance_kjmol_per_nm, max_iterations)
    return MolecularSystem(topology=topology, system=system, positions_nm=np.asarray(positions_nm, dtype=np.float64),
                           name=name)


def minimized_positions(system: openmm.System, positions_nm: np.ndarray, tolerance_kjmol_per_nm: float,
                        max_iterations: int = 0) -> np.ndarray:
    """L-BFGS minimised positions ``[n_particles, 3]`` nm, on the Reference platform (deterministic).

    The CPU platform is faster but not reproducible from run to run (measured: two minimisations of the same
    solvated box ended 100 kJ/mol apart), and a built-in system must be the same in every process.
    """
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(np.asarray(positions_nm) * u.nanometer)
    openmm.LocalEnergyMinimizer.minimize(context, tolerance_kjmol_per_nm, max_iterations)
    out = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    del context
    return np.asarray(out, dtype=np.float64)


def build_solvated_peptide_system(sequence: str, name: str, forcefield_files: tuple[str, ...], *,
                                  water_model: str = "tip3p", padding_nm: float = 1.0, cutoff_nm: float = 0.9,
                                  max_iterations: int = 100,
                                  tolerance_kjmol_per_nm: float = 10.0) -> MolecularSystem:
    """Capped peptide from sequence in a cubic box of explicit water: PME, HBond constraints, rigid water.

    The box edge is the solute's diameter plus ``padding_nm`` (OpenMM's rule: the solute is at least
    ``padding_nm`` from its nearest image), so a small peptide gets a small box. Minimised on the Reference
    platform for at most ``max_iterations`` steps (deterministic; enough to remove the solvation clashes).

    Parameters
    ----------
    sequence, name : str
        One-letter sequence (without caps) and the system's name.
    forcefield_files : tuple of str
        Protein and water force-field XML files (e.g. ``amber14-all.xml``, ``amber14/tip3p.xml``).
    water_model : str
        Modeller water model matching the files.
    padding_nm, cutoff_nm : float
        Solvent padding and the real-space cutoff, nm; the cutoff must be at most half the box edge.
    max_iterations, tolerance_kjmol_per_nm
        Minimiser iteration cap (0: until converged) and tolerance, kJ/mol/nm.

    Returns
    -------
    MolecularSystem
        With periodic box vectors in the topology and as the System's default box.
    """
    forcefield = app.ForceField(*forcefield_files)
    topology, positions_nm = build_capped_peptide(sequence, forcefield)
    modeller = app.Modeller(topology, positions_nm * u.nanometer)
    modeller.addSolvent(forcefield, model=water_model, padding=padding_nm * u.nanometer)
    edge_nm = min(modeller.topology.getUnitCellDimensions().value_in_unit(u.nanometer))
    if cutoff_nm > edge_nm / 2:
        raise ValueError(f"cutoff_nm: expected at most half the box edge ({edge_nm / 2:.3f} nm with padding_nm="
                         f"{padding_nm}), found {cutoff_nm}")
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.PME,
                                     nonbondedCutoff=cutoff_nm * u.nanometer, constraints=app.HBonds, rigidWater=True)
    positions_nm = np.asarray(modeller.positions.value_in_unit(u.nanometer), dtype=np.float64).reshape(-1, 3)
    positions_nm = minimized_positions(system, positions_nm, tolerance_kjmol_per_nm, max_iterations)
    return MolecularSystem(topology=modeller.topology, system=system, positions_nm=positions_nm, name=name)
