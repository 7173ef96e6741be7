"""Labelling: ASE calculators and PySCF, resumable runs, the ``cvlearn label`` command."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from cvlearn.structures import Structure, load_xxmd, read_extxyz, write_extxyz
from cvlearn.structures.labelling import (ASECalculatorLabeller, LabellingError, PySCFLabeller, label_structures,
                               partial_path_for)
from cvlearn.units import BOHR_ANGSTROM, HARTREE_EV

HAS_PYSCF = importlib.util.find_spec("pyscf") is not None


def _clusters(n: int) -> list[Structure]:
    rng = np.random.default_rng(0)
    base = np.array([[0, 0, 0], [1.1, 0, 0], [0, 1.1, 0], [0, 0, 1.1]], dtype=float)
    return [Structure(np.array([18] * 4), base + 0.05 * rng.normal(size=(4, 3)), source=f"c#{i}") for i in range(n)]


class Counting:
    """Wraps a labeller, counts calls, and can stop like a killed job after ``stop_after`` calls."""

    def __init__(self, inner, stop_after=None, fail_on=()):
        self.inner, self.calls, self.stop_after, self.fail_on = inner, 0, stop_after, set(fail_on)

    def describe(self):
        return self.inner.describe()

    def __call__(self, structure):
        if self.stop_after is not None and self.calls >= self.stop_after:
            raise KeyboardInterrupt("simulated kill")
        self.calls += 1
        if structure.source in self.fail_on:
            raise LabellingError(f"{structure.source}: no convergence (test)")
        return self.inner(structure)


def _lj():
    from ase.calculators.lj import LennardJones

    return ASECalculatorLabeller(LennardJones(sigma=1.0, epsilon=0.01, rc=5.0))


def test_ase_labeller_matches_calculator_and_writes_extxyz(tmp_path):
    from ase import Atoms
    from ase.calculators.lj import LennardJones

    structures = _clusters(5)
    out = tmp_path / "out.xyz"
    labelled = label_structures(structures, _lj(), out, progress=False)
    back = list(read_extxyz(out))
    assert len(labelled) == len(back) == 5
    atoms = Atoms(numbers=structures[3].numbers, positions=structures[3].positions_angstrom)
    atoms.calc = LennardJones(sigma=1.0, epsilon=0.01, rc=5.0)
    assert back[3].energy_ev == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(back[3].forces_ev_per_angstrom, atoms.get_forces(), atol=1e-8)  # extxyz keeps 8 decimals
    np.testing.assert_allclose(back[3].positions_angstrom, structures[3].positions_angstrom, atol=1e-8)


def test_resume_skips_finished_geometries(tmp_path):
    structures = _clusters(6)
    out = tmp_path / "out.xyz"
    killed = Counting(_lj(), stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        label_structures(structures, killed, out, progress=False)
    assert not out.exists()
    assert len(json.loads(partial_path_for(out).read_text())["entries"]) == 4

    resumed = Counting(_lj())
    labelled = label_structures(structures, resumed, out, progress=False)
    assert resumed.calls == 2 and len(labelled) == 6
    fresh = label_structures(structures, _lj(), tmp_path / "fresh.xyz", progress=False)
    np.testing.assert_allclose([s.energy_ev for s in labelled], [s.energy_ev for s in fresh])

    again = Counting(_lj())
    label_structures(structures, again, out, progress=False)
    assert again.calls == 0


def test_resume_refuses_changed_input_and_other_labeller(tmp_path):
    structures = _clusters(3)
    partial = tmp_path / "p.json"
    label_structures(structures, _lj(), None, partial_path=partial, progress=False)
    moved = [Structure(s.numbers, s.positions_angstrom + 0.1) for s in structures]
    with pytest.raises(ValueError, match="different geometry"):
        label_structures(moved, _lj(), None, partial_path=partial, progress=False)

    from ase.calculators.emt import EMT

    from ase.calculators.lj import LennardJones

    with pytest.raises(ValueError, match="made with 'ASE LennardJones .*this run uses 'ASE EMT"):
        label_structures(structures, ASECalculatorLabeller(EMT()), None, partial_path=partial, progress=False)
    with pytest.raises(ValueError, match="made with 'ASE LennardJones"):  # same calculator, other parameters
        other = ASECalculatorLabeller(LennardJones(sigma=1.1, epsilon=0.01, rc=5.0))
        label_structures(structures, other, None, partial_path=partial, progress=False)


def test_failed_geometries_are_recorded_and_not_retried(tmp_path):
    structures = _clusters(4)
    first = Counting(_lj(), fail_on={"c#1"})
    labelled = label_structures(structures, first, tmp_path / "o.xyz", progress=False)
    assert [s.source for s in labelled] == ["c#0", "c#2", "c#3"] and first.calls == 4
    second = Counting(_lj(), fail_on={"c#1"})
    assert len(label_structures(structures, second, tmp_path / "o.xyz", progress=False)) == 3
    assert second.calls == 0
    with pytest.raises(LabellingError, match="c#1"):
        label_structures(structures, Counting(_lj(), fail_on={"c#1"}), tmp_path / "x.xyz", skip_failed=False,
                         progress=False)


def test_pyscf_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyscf", None)  # makes `import pyscf` raise ImportError
    with pytest.raises(ImportError, match="pip install pyscf"):
        PySCFLabeller()


def _h2(d: float) -> Structure:
    return Structure(np.array([1, 1]), np.array([[0.0, 0.0, 0.0], [d, 0.02, -0.01]]))


@pytest.mark.skipif(not HAS_PYSCF, reason="pyscf is an optional dependency and is not installed")
def test_pyscf_labeller_h2_energy_and_forces():
    from pyscf import gto, scf

    labeller = PySCFLabeller(xc="HF", basis="sto-3g")
    s = _h2(0.80)
    energy, forces = labeller(s)
    mol = gto.M(atom=[(1, tuple(p)) for p in s.positions_angstrom], basis="sto-3g", unit="Angstrom", verbose=0)
    reference = scf.RHF(mol).run(conv_tol=1e-10)
    assert energy == pytest.approx(reference.e_tot * HARTREE_EV, abs=1e-6)
    np.testing.assert_allclose(forces, -reference.nuc_grad_method().kernel() * HARTREE_EV / BOHR_ANGSTROM, atol=1e-5)
    np.testing.assert_allclose(forces.sum(0), 0.0, atol=1e-6)  # no net force on an isolated molecule

    h = 1e-4  # Å, central differences of the energy along each coordinate of atom 1
    numeric = []
    for axis in range(3):
        plus, minus = s.positions_angstrom.copy(), s.positions_angstrom.copy()
        plus[1, axis] += h
        minus[1, axis] -= h
        e_plus, _ = labeller(Structure(s.numbers, plus))
        e_minus, _ = labeller(Structure(s.numbers, minus))
        numeric.append(-(e_plus - e_minus) / (2 * h))
    np.testing.assert_allclose(forces[1], numeric, atol=2e-4)
    assert len(labeller.scf_cycles) == 7


@pytest.mark.skipif(not HAS_PYSCF, reason="pyscf is an optional dependency and is not installed")
def test_label_command_writes_xxmd_layout(tmp_path):
    from openmm_plugin.cli import main

    geoms = [_h2(0.70 + 0.02 * i) for i in range(10)]
    write_extxyz(tmp_path / "geoms.xyz", geoms)
    argv = ["label", "--in", str(tmp_path / "geoms.xyz"), "--out", str(tmp_path / "data"), "--molecule", "h2",
            "--xc", "HF", "--basis", "sto-3g", "--splits", "0.6,0.2,0.2", "--split-kind", "temporal"]
    assert main(argv) == 0
    train = list(load_xxmd(tmp_path / "data", "h2", "train"))
    test = list(load_xxmd(tmp_path / "data", "h2", "test"))
    assert len(train) == 6 and len(test) == 2
    np.testing.assert_allclose(test[-1].positions_angstrom, geoms[-1].positions_angstrom, atol=1e-8)
    energies = [s.energy_ev for s in train]
    assert np.argmin(energies) == 0 or energies[0] < energies[-1]  # bond 0.70-0.80 Å: energy falls towards 0.74
    assert main(argv) == 0  # rerun: everything comes from the partial file
