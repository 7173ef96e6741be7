"""Periodic exported CVs: the selection is made whole along a bond tree, so any periodic image gives the same CV."""

import copy

import numpy as np
import pytest
import torch

from cvlearn.export import CVSpec, export_cv, load_cv, load_eager_cv
from cvlearn.export.whole import MakeWhole, path_matrix, spanning_tree, topology_bonds
from tests.conftest import make_tiny_cv

# OpenMM reduced triclinic form: a along x, b in the xy plane, |b_x| <= a_x/2, |c_x| <= a_x/2, |c_y| <= b_y/2.
TRICLINIC = np.array([[2.2, 0.0, 0.0], [0.7, 2.0, 0.0], [-0.6, 0.9, 2.1]])
CUBE = np.eye(3) * 2.0


def wrap(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Every atom into the primary cell, one by one (c, then b, then a), as a reader that wraps atoms would."""
    out = positions.copy()
    for k in (2, 1, 0):
        out -= np.floor(out[:, k:k + 1] / box[k, k]) * box[k]
    return out


def lattice_shifts(rng, n: int, box: np.ndarray) -> np.ndarray:
    """``[n, 3]`` random integer combinations of the box vectors (nm), some of them zero."""
    return rng.integers(-2, 3, size=(n, 3)) @ box


@pytest.fixture(scope="module")
def periodic_cv64(tmp_path_factory, ala2, ala2_heavy):
    heavy, z = ala2_heavy
    path = tmp_path_factory.mktemp("cv") / "periodic64.pt"
    module = export_cv(make_tiny_cv(ala2.topology, heavy, z), path, atom_indices=heavy, n_particles=22,
                       topology=ala2.topology, dtype=torch.float64, periodic=True)
    return module, path


def test_spanning_tree_follows_bonds_and_chains_components():
    parents, children = spanning_tree(6, [(0, 1), (1, 2), (4, 5)])
    assert sorted(zip(parents, children)) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]  # 3 and 4-5 chained in order
    path = path_matrix(6, parents, children)
    assert path.shape == (6, 5) and path[0].sum() == 0 and path[5].sum() == 5
    with pytest.raises(ValueError, match=r"bonds: expected pairs of distinct .* found \(2, 2\)"):
        spanning_tree(3, [(2, 2)])


def test_topology_bonds_are_reindexed_to_the_selection(ala2, ala2_heavy):
    import mdtraj

    heavy, _ = ala2_heavy
    bonds = topology_bonds(ala2.topology, heavy)
    assert len(bonds) == len(heavy) - 1  # the heavy atoms of ala2 are one tree
    assert bonds == topology_bonds(mdtraj.Topology.from_openmm(ala2.topology), heavy)
    assert all(0 <= a < b < len(heavy) for a, b in bonds)


@pytest.mark.parametrize("box", [CUBE, TRICLINIC])
def test_make_whole_undoes_any_lattice_shift(ala2, ala2_heavy, box):
    heavy, _ = ala2_heavy
    whole = MakeWhole(len(heavy), topology_bonds(ala2.topology, heavy))
    pos = ala2.positions_nm[heavy]
    shifted = pos + lattice_shifts(np.random.default_rng(0), len(heavy), box)
    out = whole(torch.tensor(shifted), torch.tensor(box)).numpy()
    # Whole again, in the image of atom 0: the original up to atom 0's lattice shift.
    assert np.allclose(out - out[0], pos - pos[0], atol=1e-12)
    pos_t = torch.tensor(shifted, requires_grad=True)
    (grad,) = torch.autograd.grad(whole(pos_t, torch.tensor(box)).sum(), pos_t)
    assert torch.allclose(grad, torch.ones_like(grad))  # each output = its input + a constant shift


def test_spec_records_periodic_and_bonds(periodic_cv64, ala2, ala2_heavy):
    module, path = periodic_cv64
    _, spec = load_cv(path)
    assert spec.periodic and bool(module.periodic) and spec.dense_et  # the dense ET swap still applies
    assert list(spec.bonds) == topology_bonds(ala2.topology, ala2_heavy[0])
    assert CVSpec.from_json(spec.to_json()) == spec
    old = {k: v for k, v in spec.__dict__.items() if k not in ("bonds", "periodic")}  # a file from before
    assert CVSpec.from_dict(old).periodic is False and CVSpec.from_dict(old).bonds is None
    with pytest.raises(ValueError, match=r"CVSpec.bonds: expected pairs of distinct positions in \[0, 10\)"):
        CVSpec(**{**spec.__dict__, "bonds": ((0, 10),)})
    with pytest.raises(ValueError, match="on a periodic CV"):
        CVSpec(**{**spec.__dict__, "periodic": False})


@pytest.mark.parametrize("box", [CUBE, TRICLINIC])
def test_cv_unchanged_by_box_vector_shifts(periodic_cv64, ala2, ala2_heavy, box):
    module, _ = periodic_cv64
    heavy, _ = ala2_heavy
    pos = torch.tensor(ala2.positions_nm)
    box_t = torch.tensor(box)
    reference = module(pos, box_t)
    rng = np.random.default_rng(1)
    for atom in heavy:  # each selected atom alone, by each box vector
        for k in range(3):
            moved = pos.clone()
            moved[atom] += box_t[k] * (1 if k % 2 else -1)
            assert torch.allclose(module(moved, box_t), reference, atol=1e-10)
    for _ in range(3):  # all atoms by random combinations
        moved = pos + torch.tensor(lattice_shifts(rng, 22, box))
        assert torch.allclose(module(moved, box_t), reference, atol=1e-10)


def test_wrapped_and_unwrapped_give_the_same_cv(periodic_cv64, ala2):
    module, _ = periodic_cv64
    pos = ala2.positions_nm - ala2.positions_nm[5] + 0.01  # centred on a box corner: wrapping splits the molecule
    wrapped = wrap(pos, TRICLINIC)
    assert np.ptp(wrapped[:, 0]) > 1.0 and not np.allclose(wrapped, pos)
    box = torch.tensor(TRICLINIC)
    assert torch.allclose(module(torch.tensor(wrapped), box), module(torch.tensor(pos), box), atol=1e-10)
    assert torch.allclose(module(torch.tensor(pos), box), module(torch.tensor(ala2.positions_nm), box), atol=1e-10)


def test_periodic_cv_needs_the_box_and_non_periodic_ignores_it(periodic_cv64, exported_cv64, ala2, tmp_path):
    module, path = periodic_cv64
    pos = torch.tensor(ala2.positions_nm)
    with pytest.raises(torch.jit.Error, match=r"periodic and needs the box: pass box vectors, forward\(positions_nm, "
                                              r"box_nm \[3, 3\]\).*setUsesPeriodicBoundaryConditions\(True\)"):
        module(pos)
    with pytest.raises(RuntimeError, match="setUsesPeriodicBoundaryConditions"):
        load_eager_cv(path)(pos)
    plain, _ = exported_cv64
    assert not plain.periodic
    assert torch.equal(plain(pos, torch.tensor(CUBE)), plain(pos))


def test_periodic_export_needs_bonds(ala2, ala2_heavy, tmp_path):
    heavy, z = ala2_heavy
    kwargs = dict(atom_indices=heavy, n_particles=22, atomic_numbers=z, residue_of_atom=[0] * len(heavy))
    with pytest.raises(ValueError, match="periodic=True needs the bonds among the selected atoms: pass topology="):
        export_cv(make_tiny_cv(ala2.topology, heavy, z), tmp_path / "a.pt", periodic=True, **kwargs)
    with pytest.raises(ValueError, match="bonds= is used only by periodic CVs"):
        export_cv(make_tiny_cv(ala2.topology, heavy, z), tmp_path / "b.pt", bonds=[(0, 1)], **kwargs)
    # Explicit bonds instead of a topology; no bonds at all chains the atoms in selection order (still invariant
    # while consecutive selected atoms are closer than half the box).
    module = export_cv(make_tiny_cv(ala2.topology, heavy, z), tmp_path / "c.pt", periodic=True, bonds=[], **kwargs)
    pos, box = torch.tensor(ala2.positions_nm), torch.tensor(CUBE)
    moved = pos.clone()
    moved[heavy[4]] += box[1]
    assert torch.allclose(module(moved, box), module(pos, box), atol=1e-10)


def test_eager_twin_takes_the_box(periodic_cv64, ala2):
    """(Its torch.compile route is tested in a periodic Context: tests/openmm_plugin/test_periodic.py.)"""
    module, path = periodic_cv64
    eager = load_eager_cv(path)
    pos, box = torch.tensor(ala2.positions_nm), torch.tensor(TRICLINIC)
    moved = pos.clone()
    moved[eager.atom_indices[3]] += box[2]
    assert eager.periodic and torch.allclose(eager(moved, box), module(pos, box), atol=1e-12)
    sel = moved.index_select(0, eager.atom_indices)
    assert torch.allclose(eager.selected(sel, box), module.selected(sel, box), atol=1e-12)


def test_windowed_cv_exports_periodic(tmp_path, ala2, ala2_heavy):
    from tests.export.test_cv import _windowed_cv

    heavy, z = ala2_heavy
    model = _windowed_cv(ala2, heavy, z)
    module = export_cv(model, tmp_path / "win.pt", atom_indices=heavy, n_particles=22, topology=ala2.topology,
                       dtype=torch.float64, periodic=True)
    pos, box = torch.tensor(ala2.positions_nm), torch.tensor(TRICLINIC)
    moved = pos + torch.tensor(lattice_shifts(np.random.default_rng(3), 22, TRICLINIC))
    assert torch.allclose(module(moved, box), module(pos, box), atol=1e-10)
    with torch.no_grad():
        direct = copy.deepcopy(model).double().eval()(pos[heavy].unsqueeze(0)).squeeze(0)
    assert torch.allclose(module(pos, box), direct, atol=1e-10)
