"""The exported potential in OpenMM: units at the edge (real Context, Reference platform), NVE drift, Langevin."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import openmm
import openmm.unit as u

from cvlearn.structures.records import collate
from cvlearn.estimators.finetuner import ForceFieldFinetuner
from cvlearn.export.potential import export_potential, load_potential
from cvlearn.units import ANGSTROM_PER_NM, KJMOL_PER_EV, NM_PER_ANGSTROM
from openmm_plugin.potential import potential_system, run_potential_md
from tests.models.test_potential import TINY_ET, emt_structures


@pytest.fixture(scope="module")
def trained():
    """A briefly fine-tuned tiny potential (forces of EMT size, not a flat untrained surface) and a test geometry."""
    train, val = emt_structures(24, seed=0), emt_structures(8, seed=1)
    est = ForceFieldFinetuner(kind="et", config=TINY_ET, head_hidden=16, max_epochs=6, patience=3, max_atoms=90,
                              learning_rate=1e-2, progress=False).fit(train, val)
    return est.fetch_model(), val[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_openmm_energy_and_forces_match_the_python_model_in_openmm_units(trained, tmp_path, dtype):
    model, s = trained
    path = tmp_path / "potential.pt"
    export_potential(model, s.numbers, path, dtype=dtype)
    g = collate([s], torch.float64)
    reference = model.double()
    energy_ev, forces_ev_per_a = reference.energy_and_forces(g.z, g.pos, g.batch)
    model.float()

    system = potential_system(s.numbers, path)
    assert system.getNumParticles() == s.n_atoms and system.getNumForces() == 1
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(s.positions_angstrom * NM_PER_ANGSTROM * u.nanometer)
    state = context.getState(getEnergy=True, getForces=True)
    energy_kjmol = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    forces_kjmol_nm = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)

    tol = 1e-9 if dtype == torch.float64 else 1e-4
    assert energy_kjmol == pytest.approx(float(energy_ev.detach()) * KJMOL_PER_EV, rel=tol, abs=tol)
    expected = forces_ev_per_a.detach().numpy() * KJMOL_PER_EV * ANGSTROM_PER_NM
    assert np.abs(expected).max() > 10.0  # kJ/mol/nm: a real force field, not a flat one
    np.testing.assert_allclose(forces_kjmol_nm, expected, rtol=tol, atol=tol * np.abs(expected).max())


def test_exported_potential_loads_without_torchmdnet(trained, tmp_path):
    model, s = trained
    path = tmp_path / "potential.pt"
    export_potential(model, s.numbers, path)
    _, meta = load_potential(path)
    assert meta["atomic_numbers"] == [int(z) for z in s.numbers] and meta["units"]["energy"] == "kJ/mol"
    code = ("import sys, torch; m = torch.jit.load(sys.argv[1]); "
            "e = m(torch.tensor([float(a) for a in sys.argv[2:]], dtype=torch.float64).reshape(-1, 3)); "
            "assert 'torchmdnet' not in sys.modules; print(float(e))")
    pos = [str(x) for x in (s.positions_angstrom * NM_PER_ANGSTROM).ravel()]
    out = subprocess.run([sys.executable, "-c", code, str(path), *pos], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with torch.no_grad():
        g = collate([s])
        expected = float(model(g.z, g.pos, g.batch)) * KJMOL_PER_EV
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="4 atomic numbers"):
        potential_system([6, 1, 1, 1], path)


def test_nve_run_reports_a_small_finite_drift_and_langevin_thermalises(trained, tmp_path):
    model, s = trained
    path = tmp_path / "potential.pt"
    export_potential(model, s.numbers, path, dtype=torch.float64)
    nve = run_potential_md(path, s.positions_angstrom * NM_PER_ANGSTROM, n_steps=400, timestep_fs=0.25,
                           temperature_k=300.0, report_interval=10, progress=False)
    summary = nve.summary()
    assert np.isfinite(summary["drift_kjmol_per_ps"]) and len(nve.time_ps) == 41
    assert nve.potential_kjmol.std() > 0.5, "the molecule must move on a non-flat surface"
    # Energy exchanged between kinetic and potential is conserved in total to far better than kT per atom.
    assert summary["total_energy_std_kjmol"] < 0.02 * nve.potential_kjmol.std() + 1e-3
    assert abs(summary["drift_kjmol_per_ps_per_atom"]) * summary["time_ps"] < 0.01
    assert summary["drift_kjmol_per_ps_per_atom"] == pytest.approx(summary["drift_kjmol_per_ps"] / s.n_atoms)

    langevin = run_potential_md(path, s.positions_angstrom * NM_PER_ANGSTROM, n_steps=200, integrator="langevin",
                                timestep_fs=0.5, report_interval=20, seed=1, progress=False)
    assert np.all(np.isfinite(langevin.total_kjmol)) and np.all(langevin.temperature_k > 0)
    with pytest.raises(ValueError, match="integrator"):
        run_potential_md(path, s.positions_angstrom * NM_PER_ANGSTROM, n_steps=1, integrator="nvt")
