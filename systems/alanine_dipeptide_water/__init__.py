"""Alanine dipeptide (ACE-ALA-NME) in explicit TIP3P water: the periodic built-in system.

amber14 (ff14SB) + TIP3P, PME with a 0.9 nm cutoff, HBond constraints, rigid water, in the smallest cube that keeps
the peptide 1.0 nm from its nearest image (2.0 nm edge, 721 atoms). The system to test and use periodic CVs on
(``export_cv(..., periodic=True)``): the peptide diffuses and crosses the box edge. Same interface as
:mod:`systems.alanine_dipeptide`; its index helpers are reused (they see only the peptide).
"""

from __future__ import annotations

from systems.alanine_dipeptide import FRICTION_PER_PS, TEMPERATURE_K, TIMESTEP_PS, heavy_atom_indices, phi_psi_indices
from systems.peptides import MolecularSystem, build_solvated_peptide_system

__all__ = [
    "TEMPERATURE_K",
    "TIMESTEP_PS",
    "FRICTION_PER_PS",
    "N_ATOMS",
    "N_PEPTIDE_ATOMS",
    "FORCEFIELD_FILES",
    "PADDING_NM",
    "CUTOFF_NM",
    "MolecularSystem",
    "build",
    "phi_psi_indices",
    "heavy_atom_indices",
]

N_PEPTIDE_ATOMS = 22  # peptide atoms come first; the water follows
N_ATOMS = 721  # 22 peptide atoms + 233 TIP3P waters, as built
FORCEFIELD_FILES = ("amber14-all.xml", "amber14/tip3p.xml")
PADDING_NM = 1.0
CUTOFF_NM = 0.9
MINIMIZE_ITERATIONS = 100  # Reference-platform L-BFGS steps (about 9 s); removes the solvation clashes


def build() -> MolecularSystem:
    """ACE-ALA-NME in a 2.0 nm cube of TIP3P water (PME, 0.9 nm cutoff, HBonds, rigid water), minimised.

    Deterministic: hydrogens are placed with a fixed seed, the solvent box is tiled, and the minimisation runs on
    the Reference platform (``MINIMIZE_ITERATIONS`` steps, about 9 s).

    Returns
    -------
    MolecularSystem
        ``N_ATOMS`` particles, the peptide's ``N_PEPTIDE_ATOMS`` first; positions ``[n_particles, 3]`` nm; box
        vectors in ``topology.getPeriodicBoxVectors()`` and the System's default box.
    """
    return build_solvated_peptide_system("A", "alanine_dipeptide_water", FORCEFIELD_FILES, water_model="tip3p",
                                         padding_nm=PADDING_NM, cutoff_nm=CUTOFF_NM,
                                         max_iterations=MINIMIZE_ITERATIONS)
