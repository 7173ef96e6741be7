"""Alanine dipeptide (ACE-ALA-NME) in OBC implicit solvent: the demo system.

Native OBC (``amber99_obc.xml``, a GBSAOBCForce) on the Reference platform is the fastest choice for a
22-atom molecule on a CPU (measured 10-35x faster than ``implicit/*.xml`` or the CPU platform).
"""

from __future__ import annotations

import openmm.app as app

from systems.peptides import MolecularSystem, build_peptide_system

__all__ = [
    "TEMPERATURE_K",
    "TIMESTEP_PS",
    "FRICTION_PER_PS",
    "N_ATOMS",
    "FORCEFIELD_FILES",
    "MolecularSystem",
    "build",
    "phi_psi_indices",
    "heavy_atom_indices",
]

# MD settings of this system; the integrator is built by openmm_plugin.simulation.make_integrator
# (systems/ does not import openmm_plugin).
TEMPERATURE_K = 300.0
TIMESTEP_PS = 0.002
FRICTION_PER_PS = 1.0
N_ATOMS = 22
FORCEFIELD_FILES = ("amber99sbildn.xml", "amber99_obc.xml")


def build() -> MolecularSystem:
    """ACE-ALA-NME with amber99sb-ildn + OBC, no cutoff, HBond constraints, energy-minimised.

    Built fresh on every call (about 0.3 s, so nothing is cached); minimised once on the Reference
    platform (to 1 kJ/mol/nm) so MD starts from a relaxed structure, not PeptideBuilder's ideal geometry.

    Returns
    -------
    MolecularSystem
        ``N_ATOMS`` (22) particles; positions ``[n_particles, 3]`` nm.
    """
    return build_peptide_system("A", "alanine_dipeptide", FORCEFIELD_FILES, tolerance_kjmol_per_nm=1.0)


def _find_atom(topology: app.Topology, res_name: str, atom_name: str) -> int:
    hits = [a.index for a in topology.atoms() if a.residue.name == res_name and a.name == atom_name]
    if len(hits) != 1:
        raise ValueError(
            f"topology: expected exactly one atom {atom_name!r} in residue {res_name!r}, found {len(hits)}"
        )
    return hits[0]


def phi_psi_indices(topology: app.Topology) -> tuple[list[int], list[int]]:
    """Atom indices of the backbone torsions: phi = C(ACE)-N-CA-C, psi = N-CA-C-N(NME).

    Parameters
    ----------
    topology : openmm.app.Topology
        Alanine dipeptide (one ACE, ALA and NME residue each).

    Returns
    -------
    phi, psi : list of int
        Four System atom indices each.
    """
    c_ace = _find_atom(topology, "ACE", "C")
    n, ca, c = (_find_atom(topology, "ALA", name) for name in ("N", "CA", "C"))
    n_nme = _find_atom(topology, "NME", "N")
    return [c_ace, n, ca, c], [n, ca, c, n_nme]


def heavy_atom_indices(topology: app.Topology) -> list[int]:
    """Indices of the solute's atoms that are not hydrogen (10 for alanine dipeptide); water is left out.

    Parameters
    ----------
    topology : openmm.app.Topology
        Any peptide topology, solvated or not (the pentapeptide, λ6-85 and explicit-water modules reuse this
        function).

    Returns
    -------
    list of int
        Ascending System atom indices of the heavy atoms.
    """
    from cvlearn.data.selection import HEAVY_ATOMS, select_atoms

    return select_atoms(topology, f"({HEAVY_ATOMS}) and not water").tolist()
