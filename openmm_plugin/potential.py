"""MD with an exported machine-learned potential: a System whose only force is a TorchForce, NVE or Langevin.

Why NVE: total-energy drift is the cheapest check that forces are the gradient of the energy, the timestep fits the
potential's stiffness, and float32 rounding does not heat the molecule. ``run_potential_md`` reports the drift as the
slope of a straight-line fit of the total energy against time, in kJ/mol/ps and per atom.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch  # before openmmtorch: it needs torch's libraries loaded first

import openmm
import openmm.app as app
import openmm.unit as u

from cvlearn.export.potential import load_potential
from cvlearn.progress import progress_bar
from cvlearn.units import BOLTZMANN_KJMOL_PER_K, FS_PER_PS
from openmm_plugin.simulation import make_integrator, platform_by_name

logger = logging.getLogger(__name__)

INTEGRATORS = ("nve", "langevin")


def potential_system(atomic_numbers: Sequence[int], potential: str | Path | torch.jit.ScriptModule) -> openmm.System:
    """One particle per atom (masses of the elements) and a TorchForce carrying the exported potential, nothing else.

    Parameters
    ----------
    atomic_numbers : sequence of int
        ``[n_atoms]`` elements.
    potential : str, Path or torch.jit.ScriptModule
        The exported potential (``positions [n_atoms, 3] nm -> energy kJ/mol``) or its file.

    Returns
    -------
    openmm.System
    """
    from openmm_plugin.forces import import_openmmtorch

    openmmtorch = import_openmmtorch()
    module = load_potential(potential)[0] if isinstance(potential, (str, Path)) else potential
    n = getattr(module, "n_atoms", len(atomic_numbers))
    if n != len(atomic_numbers):
        raise ValueError(f"atomic_numbers: the potential is for {n} atoms, found {len(atomic_numbers)} atomic numbers")
    system = openmm.System()
    for z in atomic_numbers:
        system.addParticle(app.Element.getByAtomicNumber(int(z)).mass)
    system.addForce(openmmtorch.TorchForce(module))
    return system


@dataclass
class PotentialMDResult:
    """Energies every ``report_interval`` steps (kJ/mol) and the fitted total-energy drift."""

    time_ps: np.ndarray
    potential_kjmol: np.ndarray
    kinetic_kjmol: np.ndarray
    final_positions_nm: np.ndarray
    integrator: str
    n_atoms: int
    drift_kjmol_per_ps: float = field(init=False)
    drift_kjmol_per_ps_per_atom: float = field(init=False)

    def __post_init__(self):
        total = self.total_kjmol
        slope = float(np.polyfit(self.time_ps, total, 1)[0]) if len(total) > 1 else float("nan")
        self.drift_kjmol_per_ps = slope
        self.drift_kjmol_per_ps_per_atom = slope / self.n_atoms

    @property
    def total_kjmol(self) -> np.ndarray:
        return self.potential_kjmol + self.kinetic_kjmol

    @property
    def temperature_k(self) -> np.ndarray:
        """Instantaneous temperature from the kinetic energy (3N degrees of freedom, no constraints)."""
        return 2.0 * self.kinetic_kjmol / (3 * self.n_atoms * BOLTZMANN_KJMOL_PER_K)

    def summary(self) -> dict:
        total = self.total_kjmol
        return {"integrator": self.integrator, "n_atoms": self.n_atoms, "time_ps": float(self.time_ps[-1]),
                "drift_kjmol_per_ps": self.drift_kjmol_per_ps,
                "drift_kjmol_per_ps_per_atom": self.drift_kjmol_per_ps_per_atom,
                "total_energy_std_kjmol": float(np.std(total)),
                "mean_temperature_k": float(np.mean(self.temperature_k))}


def run_potential_md(potential: str | Path, positions_nm: np.ndarray, *, n_steps: int, integrator: str = "nve",
                     timestep_fs: float = 0.5, temperature_k: float = 300.0, friction_per_ps: float = 1.0,
                     report_interval: int = 10, seed: int = 0, platform: str = "Reference",
                     progress: bool = True) -> PotentialMDResult:
    """Run ``n_steps`` of MD on the exported ``potential`` from ``positions_nm``, velocities drawn at ``temperature_k``.

    Parameters
    ----------
    potential : str or Path
        Exported potential (``cvlearn.export.export_potential``).
    positions_nm : np.ndarray
        ``[n_atoms, 3]`` start positions, nm.
    n_steps : int
        MD steps.
    integrator : str
        ``"nve"`` (Verlet) or ``"langevin"`` (:func:`openmm_plugin.simulation.make_integrator`).
    timestep_fs, temperature_k, friction_per_ps : float
        Step (fs), temperature (K) and Langevin friction (1/ps).
    report_interval : int
        Steps between energy records.
    seed : int
        Seed of the velocities (and of the Langevin noise).
    platform : str
        OpenMM platform name.
    progress : bool
        Show a progress bar.

    Returns
    -------
    PotentialMDResult
        Time (ps), potential and kinetic energies (kJ/mol) at each record, final positions (nm).
    """
    if integrator not in INTEGRATORS:
        raise ValueError(f"integrator: expected one of {INTEGRATORS}, found {integrator!r}")
    if n_steps < 1 or report_interval < 1:
        raise ValueError(f"n_steps, report_interval: expected integers >= 1, found {n_steps}, {report_interval}")
    module, meta = load_potential(potential)
    z = meta["atomic_numbers"]
    positions_nm = np.asarray(positions_nm, dtype=np.float64)
    if positions_nm.shape != (len(z), 3):
        raise ValueError(f"positions_nm: expected shape ({len(z)}, 3) for {potential}, found {positions_nm.shape}")
    system = potential_system(z, module)
    dt = timestep_fs / FS_PER_PS * u.picosecond
    if integrator == "nve":
        integ = openmm.VerletIntegrator(dt)
    else:
        integ = make_integrator(temperature_k, friction_per_ps, timestep_fs / FS_PER_PS, seed=seed)
    context = openmm.Context(system, integ, platform_by_name(platform))
    context.setPositions(positions_nm * u.nanometer)
    context.setVelocitiesToTemperature(temperature_k * u.kelvin, seed)
    times, pot, kin = [], [], []

    def record():
        state = context.getState(getEnergy=True)
        times.append(state.getTime().value_in_unit(u.picosecond))
        pot.append(state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
        kin.append(state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole))

    record()
    done = 0
    with progress_bar(total=n_steps, desc=f"MD ({integrator})", disable=not progress) as bar:
        while done < n_steps:
            k = min(report_interval, n_steps - done)
            integ.step(k)
            done += k
            bar.update(k)
            record()
    final = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    result = PotentialMDResult(np.array(times), np.array(pot), np.array(kin), np.asarray(final), integrator, len(z))
    if not np.all(np.isfinite(result.total_kjmol)):
        raise FloatingPointError(f"MD on {potential} produced non-finite energies; try a smaller timestep_fs "
                                 f"(now {timestep_fs})")
    logger.info("%s MD, %d steps: drift %.4g kJ/mol/ps (%.4g per atom)", integrator, n_steps,
                result.drift_kjmol_per_ps, result.drift_kjmol_per_ps_per_atom)
    return result
