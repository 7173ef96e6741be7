"""Pentapeptide ACE-Trp-Leu-Ala-Leu-Leu-NME (WLALL) in OBC implicit solvent, built from its sequence.

The sequence of the mdshare "pentapeptide" data set (there simulated in explicit water); here Amber
ff99SB-ILDN + native OBC like alanine dipeptide, so it runs fast on the Reference platform.
"""

from __future__ import annotations

from systems.alanine_dipeptide import FORCEFIELD_FILES, FRICTION_PER_PS, TEMPERATURE_K, TIMESTEP_PS, heavy_atom_indices
from systems.peptides import MolecularSystem, build_peptide_system

__all__ = ["SEQUENCE", "N_ATOMS", "N_HEAVY_ATOMS", "N_RESIDUES", "TEMPERATURE_K", "TIMESTEP_PS", "FORCEFIELD_FILES",
           "FRICTION_PER_PS", "build", "heavy_atom_indices"]

SEQUENCE = "WLALL"
N_ATOMS = 103  # with ACE/NME caps and hydrogens
N_HEAVY_ATOMS = 48  # 43 in the five residues + 3 (ACE) + 2 (NME)
N_RESIDUES = 7  # ACE + 5 + NME


def build(minimize: bool = True) -> MolecularSystem:
    """ACE-WLALL-NME, extended start, amber99sb-ildn + OBC, no cutoff, HBond constraints, minimised.

    Parameters
    ----------
    minimize : bool
        Minimise on the Reference platform (to 10 kJ/mol/nm) before returning.

    Returns
    -------
    MolecularSystem
        ``N_ATOMS`` (103) particles; positions ``[n_particles, 3]`` nm.
    """
    return build_peptide_system(SEQUENCE, "pentapeptide_wlall", FORCEFIELD_FILES, minimize=minimize)
