"""EnergyModel: forces are -dE/dx, per-element references, checkpoints (tiny real ET, EMT-labelled molecules)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvlearn.structures.records import Structure, collate
from cvlearn.nn.featurizers.molecules import MoleculeBackbone
from cvlearn.models.potential import EnergyModel, fit_atom_references

TINY_ET = dict(hidden_channels=16, num_layers=1, num_rbf=8, num_heads=2, cutoff_angstrom=4.0)


def tiny_backbone(seed: int = 0) -> MoleculeBackbone:
    return MoleculeBackbone("et", TINY_ET, seed=seed)


def emt_structures(n: int, seed: int = 0, name: str = "CH3CH2OH", noise_angstrom: float = 0.05) -> list[Structure]:
    """``n`` randomly displaced copies of a small molecule labelled by ASE's EMT (deterministic, milliseconds)."""
    from ase.build import molecule
    from ase.calculators.emt import EMT

    base = molecule(name)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=noise_angstrom, size=atoms.positions.shape)
        atoms.calc = EMT()
        out.append(Structure(atoms.numbers.copy(), atoms.positions.copy(), float(atoms.get_potential_energy()),
                             atoms.get_forces().copy(), source=f"EMT {name} #{k}"))
    return out


def test_forces_are_minus_energy_gradient_by_finite_differences():
    model = EnergyModel(tiny_backbone(), head_hidden=8).double().eval()
    structures = emt_structures(2, seed=1) + emt_structures(1, seed=2, name="H2O")
    model.set_references(*fit_atom_references(structures))
    g = collate(structures, torch.float64)
    energy, forces = model.energy_and_forces(g.z, g.pos, g.batch, g.n_graphs)
    assert energy.shape == (3,) and forces.shape == g.pos.shape
    h = 1e-5
    fd = torch.zeros_like(g.pos)
    for i in range(g.pos.shape[0]):
        for d in range(3):
            plus, minus = g.pos.clone(), g.pos.clone()
            plus[i, d] += h
            minus[i, d] -= h
            with torch.no_grad():
                fd[i, d] = -(model(g.z, plus, g.batch, 3).sum() - model(g.z, minus, g.batch, 3).sum()) / (2 * h)
    assert float(forces.abs().max()) > 1e-3  # a real, non-zero force field
    torch.testing.assert_close(forces, fd, atol=1e-7, rtol=1e-6)


def test_energy_is_sum_over_molecules_in_a_batch():
    model = EnergyModel(tiny_backbone(), head_hidden=8).double().eval()
    a, b = emt_structures(1, seed=3)[0], emt_structures(1, seed=4, name="H2O")[0]
    together = model(*collate([a, b], torch.float64)[:3])
    alone = torch.cat([model(*collate([s], torch.float64)[:3]) for s in (a, b)])
    torch.testing.assert_close(together, alone)


def test_per_element_references_recover_an_additive_energy_exactly():
    from ase.build import molecule

    e_ref = {1: -13.6, 6: -1029.5, 7: -1484.2, 8: -2041.3}
    rng = np.random.default_rng(0)
    structures = []
    for name in ("H2O", "CH4", "NH3", "CH3OH", "C2H6", "HCN", "CO2", "N2O", "CH3CH2OH"):
        atoms = molecule(name)
        for _ in range(2):
            pos = atoms.positions + rng.normal(scale=0.1, size=atoms.positions.shape)
            energy = sum(e_ref[int(z)] for z in atoms.numbers)
            structures.append(Structure(atoms.numbers, pos, energy, np.zeros_like(pos), source=name))
    reference, scale = fit_atom_references(structures)
    for z, e in e_ref.items():
        assert reference[z] == pytest.approx(e, abs=1e-8)
    assert np.count_nonzero(reference) == len(e_ref)
    assert scale == 1.0  # zero residual and zero forces: the documented fallback

    # With a zero network output the model's energy is the reference sum, exactly (float64 buffers).
    model = EnergyModel(tiny_backbone(), head_hidden=8).set_references(reference, scale)
    with torch.no_grad():
        model.head[-1].weight.zero_()
        model.head[-1].bias.zero_()
    g = collate(structures, torch.float32)
    energy = model(g.z, g.pos, g.batch, g.n_graphs)
    assert energy.dtype == torch.float64
    torch.testing.assert_close(energy, g.energy, atol=1e-9, rtol=0)


def test_one_molecule_gets_its_mean_energy_and_a_force_or_residual_scale():
    structures = emt_structures(20, seed=5)
    reference, scale = fit_atom_references(structures)
    energies = np.array([s.energy_ev for s in structures])
    predicted = reference[structures[0].numbers].sum()
    assert predicted == pytest.approx(energies.mean(), abs=1e-9)
    forces = np.concatenate([s.forces_ev_per_angstrom for s in structures])
    assert scale == pytest.approx(np.sqrt(np.mean(forces ** 2)))
    no_forces = [Structure(s.numbers, s.positions_angstrom, s.energy_ev, source=s.source) for s in structures]
    assert fit_atom_references(no_forces)[1] == pytest.approx(np.std((energies - predicted) / structures[0].n_atoms))


def test_references_reject_unlabelled_structures():
    s = emt_structures(1)[0]
    with pytest.raises(ValueError, match="energies"):
        fit_atom_references([Structure(s.numbers, s.positions_angstrom, source="x")])


def test_checkpoint_round_trip_is_exact(tmp_path):
    structures = emt_structures(4, seed=6)
    model = EnergyModel(tiny_backbone(seed=3), head_hidden=8, seed=3).set_references(*fit_atom_references(structures))
    model.save(tmp_path / "potential.pt", note="test")
    again = EnergyModel.from_checkpoint(tmp_path / "potential.pt")
    g = collate(structures)
    e1, f1 = model.eval().energy_and_forces(g.z, g.pos, g.batch)
    e2, f2 = again.eval().energy_and_forces(g.z, g.pos, g.batch)
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    torch.testing.assert_close(f1, f2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="energy-model checkpoint"):
        model.backbone.save(tmp_path / "backbone.pt")
        EnergyModel.from_checkpoint(tmp_path / "backbone.pt")
