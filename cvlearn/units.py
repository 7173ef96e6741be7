"""Every unit constant of the project, in one place.

OpenMM and mdtraj speak nm, ps, kJ/mol, K; the GNNs speak Å (and eV for energies read from
extxyz data). Conversion happens only at the edges, with these constants.
"""

ANGSTROM_PER_NM = 10.0
NM_PER_ANGSTROM = 0.1
KJMOL_PER_EV = 96.48533212331
EV_PER_KJMOL = 1.0 / KJMOL_PER_EV
BOLTZMANN_KJMOL_PER_K = 0.008314462618  # k_B in kJ/(mol K) = R / 1000
FS_PER_PS = 1000.0
HARTREE_EV = 27.211386245988  # CODATA 2018, as ASE and PySCF use
BOHR_ANGSTROM = 0.529177210903  # CODATA 2018


def kt_kjmol(temperature_k: float) -> float:
    """Thermal energy k_B T, the scale of every Boltzmann factor and reweighting.

    Parameters
    ----------
    temperature_k : float
        Temperature, K.

    Returns
    -------
    float
        k_B T, kJ/mol.
    """
    return BOLTZMANN_KJMOL_PER_K * temperature_k
