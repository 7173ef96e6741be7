"""Atom selections by mdtraj selection string, and elements read from the topology (never guessed from masses)."""

from __future__ import annotations

from typing import Sequence

import mdtraj
import numpy as np

HEAVY_ATOMS = "not element H"


def as_mdtraj_topology(topology) -> mdtraj.Topology:
    """An mdtraj topology from an mdtraj or OpenMM topology."""
    if isinstance(topology, mdtraj.Topology):
        return topology
    if hasattr(topology, "getNumAtoms"):
        return mdtraj.Topology.from_openmm(topology)
    raise TypeError(f"topology: expected an mdtraj or OpenMM Topology, found {type(topology).__name__}")


def select_atoms(topology, selection: str = HEAVY_ATOMS) -> np.ndarray:
    """Indices (sorted, int64) of the atoms matching an mdtraj selection string; heavy atoms by default."""
    top = as_mdtraj_topology(topology)
    try:
        indices = top.select(selection)
    except Exception as err:  # mdtraj raises several types for a bad expression; keep the cause
        raise ValueError(f"selection {selection!r}: not a valid mdtraj selection ({err})") from err
    if indices.size == 0:
        raise ValueError(f"selection {selection!r}: expected at least one atom, found none in {top}")
    return np.asarray(indices, dtype=np.int64)


def atomic_numbers(topology, atom_indices: Sequence[int]) -> list[int]:
    """Atomic numbers of ``atom_indices`` from the topology's elements; fails on atoms without an element."""
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
