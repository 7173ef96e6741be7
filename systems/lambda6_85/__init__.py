"""λ-repressor N-terminal domain, residues 6-85 with D14A/Y22W/Q33Y/G46A/G48A (the fast-folding λ6-85 variant).

Built from its sequence as an ideal α-helix (φ = -57°, ψ = -47°) with ACE/NME caps: this is **not** the native
fold (five helices packed into a bundle); it is a well-defined starting structure for implicit-solvent runs and for
featurizer benchmarks. Amber ff99SB-ILDN + OBC, as for the peptides.

Atom count: the literature 1258 atoms is the uncapped chain with charged termini (N-terminal Pro NH2+ and a
C-terminal OXT). Capping removes those 3 atoms and adds ACE (6) and NME (6): 1258 - 3 + 12 = 1267.
"""

from __future__ import annotations

from systems.alanine_dipeptide import FORCEFIELD_FILES, FRICTION_PER_PS, TEMPERATURE_K, TIMESTEP_PS, heavy_atom_indices
from systems.peptides import MolecularSystem, build_peptide_system

__all__ = ["SEQUENCE", "N_ATOMS", "N_ATOMS_UNCAPPED", "N_HEAVY_ATOMS", "N_RESIDUES", "TEMPERATURE_K", "TIMESTEP_PS",
           "FORCEFIELD_FILES", "FAST_BUILD", "FAST_TIMESTEP_PS", "FRICTION_PER_PS", "build", "heavy_atom_indices"]

SEQUENCE = "PLTQEQLEAARRLKAIWEKKKNELGLSYESVADKMGMGQSAVAALFNGINALNAYNAALLAKILKVSVEEFSPSIAREIY"
N_ATOMS = 1267  # capped (ACE/NME), with hydrogens
N_ATOMS_UNCAPPED = 1258  # zwitterionic termini, the usual reference count
N_HEAVY_ATOMS = 622
N_RESIDUES = 82  # ACE + 80 + NME


# CPU-affordable MD settings (measured on 2 cores: the OBC term dominates; with no cutoff a 2 fs step costs ~4x more)
FAST_BUILD = {"cutoff_nm": 1.5, "hydrogen_mass_amu": 3.0}  # build(**FAST_BUILD)
FAST_TIMESTEP_PS = 0.004  # affordable with FAST_BUILD's heavier hydrogens


def build(minimize: bool = True, max_iterations: int = 100, cutoff_nm: float | None = None,
          hydrogen_mass_amu: float | None = None) -> MolecularSystem:
    """Capped λ6-85 as an ideal helix, amber99sb-ildn + OBC, HBond constraints, briefly minimised.

    No cutoff unless ``cutoff_nm``; ``hydrogen_mass_amu`` for 4 fs steps (see ``FAST_BUILD``).

    Parameters
    ----------
    minimize, max_iterations
        Minimise on the Reference platform, for at most ``max_iterations`` steps (0: until converged).
    cutoff_nm, hydrogen_mass_amu : float or None
        Non-periodic cutoff, nm, and hydrogen mass, amu.

    Returns
    -------
    MolecularSystem
        ``N_ATOMS`` (1267) particles; positions ``[n_particles, 3]`` nm.
    """
    return build_peptide_system(SEQUENCE, "lambda6_85", FORCEFIELD_FILES, backbone="helix", minimize=minimize,
                                max_iterations=max_iterations, cutoff_nm=cutoff_nm, hydrogen_mass_amu=hydrogen_mass_amu)
