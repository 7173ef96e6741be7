"""The one atom selection: indices from strings or lists, elements and the residue map from the topology."""

import mdtraj
import numpy as np
import pytest

from cvlearn.data.selection import (HEAVY_ATOMS, atomic_numbers, residue_index_of_atoms, resolve_selection,
                                    select_atoms)


@pytest.fixture()
def topology():
    top = mdtraj.Topology()
    chain = top.add_chain()
    for name in ("ALA", "GLY"):
        residue = top.add_residue(name, chain)
        top.add_atom("C", mdtraj.element.carbon, residue)
        top.add_atom("H", mdtraj.element.hydrogen, residue)
        top.add_atom("N", mdtraj.element.nitrogen, residue)
    return top


def test_select_and_resolve(topology):
    heavy = select_atoms(topology, HEAVY_ATOMS)
    assert heavy.tolist() == [0, 2, 3, 5] and heavy.dtype == np.int64
    assert resolve_selection(topology, None) is None
    assert resolve_selection(topology, "name N").tolist() == [2, 5]
    assert resolve_selection(topology, [5, 0]).tolist() == [5, 0]
    with pytest.raises(ValueError, match=r"selection: expected atom indices in \[0, 6\), found \[6\]"):
        resolve_selection(topology, [0, 6])
    with pytest.raises(ValueError, match="found none"):
        resolve_selection(topology, "name XX")
    with pytest.raises(ValueError, match="found none"):
        resolve_selection(topology, [])


def test_elements_and_residue_map(topology):
    heavy = select_atoms(topology)
    assert atomic_numbers(topology, heavy) == [6, 7, 6, 7]
    assert residue_index_of_atoms(topology, heavy) == [0, 0, 1, 1]
    assert residue_index_of_atoms(topology, [3, 0]) == [0, 1]  # tokens numbered by first appearance
    assert residue_index_of_atoms(topology.to_openmm(), heavy) == [0, 0, 1, 1]
    virtual = topology.copy()
    virtual.add_atom("EP", None, virtual.residue(0))
    with pytest.raises(ValueError, match="has no element"):
        atomic_numbers(virtual, [6])
