"""The one atom selection: indices by mdtraj selection string, elements from the topology, the residue map.

Elements are read from the topology, never guessed from masses (hydrogen mass repartitioning changes masses).
Every topology argument may be an mdtraj or an OpenMM topology.
"""

from __future__ import annotations

from typing import Sequence

import mdtraj
import numpy as np

HEAVY_ATOMS = "not element H"


def as_mdtraj_topology(topology) -> mdtraj.Topology:
    """An mdtraj topology from an mdtraj or OpenMM topology.

    Parameters
    ----------
    topology : mdtraj.Topology or openmm.app.Topology

    Returns
    -------
    mdtraj.Topology
        The same object when it already is one, else a converted copy.
    """
    if isinstance(topology, mdtraj.Topology):
        return topology
    if hasattr(topology, "getNumAtoms"):
        return mdtraj.Topology.from_openmm(topology)
    raise TypeError(f"topology: expected an mdtraj or OpenMM Topology, found {type(topology).__name__}")


def select_atoms(topology, selection: str = HEAVY_ATOMS) -> np.ndarray:
    """Indices of the atoms matching an mdtraj selection string; heavy atoms by default.

    Parameters
    ----------
    topology : mdtraj.Topology or openmm.app.Topology
    selection : str
        mdtraj selection language, e.g. ``"not element H"`` or ``"backbone"``.

    Returns
    -------
    np.ndarray
        ``[n_selected]`` int64 indices, sorted.
    """
    top = as_mdtraj_topology(topology)
    try:
        indices = top.select(selection)
    except Exception as err:  # mdtraj raises several types for a bad expression; keep the cause
        raise ValueError(f"selection {selection!r}: not a valid mdtraj selection ({err})") from err
    if indices.size == 0:
        raise ValueError(f"selection {selection!r}: expected at least one atom, found none (it matches no atom "
                         f"of {top})")
    return np.asarray(indices, dtype=np.int64)


def resolve_selection(topology, selection: str | Sequence[int] | np.ndarray | None) -> np.ndarray | None:
    """Atom indices from a selection string or an index list, checked against the topology.

    Parameters
    ----------
    topology : mdtraj.Topology or openmm.app.Topology
    selection : str, sequence of int or None
        mdtraj selection string, or atom indices; None means all atoms.

    Returns
    -------
    np.ndarray or None
        ``[n_selected]`` int64 indices, or None for all atoms.
    """
    if selection is None:
        return None
    if isinstance(selection, str):
        return select_atoms(topology, selection)
    top = as_mdtraj_topology(topology)
    indices = np.asarray(list(selection) if not isinstance(selection, np.ndarray) else selection).reshape(-1)
    if indices.size == 0:
        raise ValueError("selection: expected at least one atom index, found none")
    if not np.issubdtype(indices.dtype, np.integer):
        raise TypeError(f"selection: expected integer atom indices or a selection string, found dtype {indices.dtype}")
    bad = indices[(indices < 0) | (indices >= top.n_atoms)]
    if bad.size:
        raise ValueError(f"selection: expected atom indices in [0, {top.n_atoms}), found {bad[:10].tolist()}")
    return indices.astype(np.int64)


def atomic_numbers(topology, atom_indices: Sequence[int]) -> list[int]:
    """Atomic numbers of the selected atoms, from the topology's elements.

    Parameters
    ----------
    topology : mdtraj.Topology or openmm.app.Topology
    atom_indices : sequence of int
        ``[n_selected]`` atom indices.

    Returns
    -------
    list of int
        ``[n_selected]`` atomic numbers; raises on atoms without an element (virtual sites, dummies).
    """
    top = as_mdtraj_topology(topology)
    out = []
    for i in atom_indices:
        atom = top.atom(int(i))
        element = atom.element
        if element is None or element.atomic_number in (None, 0):
            raise ValueError(f"topology: atom {int(i)} ({atom}) has no element; expected a real element "
                             "(virtual sites and dummy atoms cannot be featurized)")
        out.append(int(element.atomic_number))
    return out


def residue_index_of_atoms(topology, atom_indices: Sequence[int]) -> list[int]:
    """The residue map: 0-based token index of each selected atom, residues renumbered by first appearance.

    Parameters
    ----------
    topology : mdtraj.Topology or openmm.app.Topology
    atom_indices : sequence of int
        ``[n_selected]`` atom indices.

    Returns
    -------
    list of int
        ``[n_selected]`` residue token indices; residues without selected atoms get no token.
    """
    atoms = list(topology.atoms() if callable(topology.atoms) else topology.atoms)  # OpenMM method, mdtraj property
    order: dict[int, int] = {}
    out = []
    for i in atom_indices:
        res = atoms[i].residue.index
        out.append(order.setdefault(res, len(order)))
    return out
