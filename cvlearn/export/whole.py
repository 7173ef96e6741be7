"""Make the selected molecule whole in a periodic box: the first step of a periodic exported CV.

An MD engine with periodic boundaries may hand over positions in any periodic image (OpenMM keeps them
unwrapped per particle, but DCD readers, reporters and other codes wrap them): a molecule can arrive split
across the box edge, and a featurizer reading distances in Cartesian space would see bonds a box long.

Why a spanning tree of bonds: each bond is shorter than half the box, so its minimum-image vector is the true
bond vector, and walking the tree from one root atom rebuilds every atom on the root's side of the box with
exact positions ``root + Σ bond vectors on the path``. The per-edge minimum image and the path sum are a few
vectorised tensor ops (one ``[n_selected, n_edges]`` matmul with a constant path matrix), with no per-atom Python
loop at run time. Each whole position is its input position plus a lattice vector, constant between image jumps,
so the gradient is the identity: the module returns ``positions + shift.detach()`` (exact forces, and a backward
that never enters the tree; ``torch.compile`` of the tree's own backward gave wrong gradients and corrupted
memory with torch 2.9.1, measured). Atoms with no bond to the rest (ions, separate
molecules) are chained in selection order: their minimum image relative to the previous selected atom.
A nearest-image or centre-of-mass wrap cannot do this for a molecule longer than half the box.
"""

from __future__ import annotations

from collections import deque
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor


def topology_bonds(topology, atom_indices: Sequence[int]) -> list[tuple[int, int]]:
    """Bonds among the selected atoms, re-indexed to selection order.

    Parameters
    ----------
    topology : mdtraj.Topology or openmm.app.Topology
        The System's topology (with its bonds).
    atom_indices : sequence of int
        ``[n_selected]`` System indices of the selected atoms.

    Returns
    -------
    list of (int, int)
        Bonded pairs of positions in ``atom_indices`` (sorted, each pair once).
    """
    local = {int(a): i for i, a in enumerate(atom_indices)}
    bonds = topology.bonds() if callable(getattr(topology, "bonds", None)) else topology.bonds
    pairs = set()
    for bond in bonds:
        a, b = int(bond[0].index), int(bond[1].index)
        if a in local and b in local and a != b:
            pairs.add(tuple(sorted((local[a], local[b]))))
    return sorted(pairs)


def spanning_tree(n_atoms: int, bonds: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Edges ``(parent, child)`` of a spanning tree rooted at atom 0, in breadth-first order.

    Components without a bond between them are chained in selection order: the first atom of each new component
    hangs off the atom just before it in selection order.

    Parameters
    ----------
    n_atoms : int
        Selected atoms.
    bonds : sequence of (int, int)
        Bonded pairs in selection order, each in ``[0, n_atoms)``.

    Returns
    -------
    parents, children : list of int
        ``n_atoms - 1`` edges each.
    """
    adjacency: list[list[int]] = [[] for _ in range(n_atoms)]
    for pair in bonds:
        a, b = (int(v) for v in pair)
        if not (0 <= a < n_atoms and 0 <= b < n_atoms) or a == b:
            raise ValueError(f"bonds: expected pairs of distinct selected-atom positions in [0, {n_atoms}), "
                             f"found {tuple(pair)}")
        adjacency[a].append(b)
        adjacency[b].append(a)
    seen = [False] * n_atoms
    parents: list[int] = []
    children: list[int] = []
    for start in range(n_atoms):
        if seen[start]:
            continue
        if start > 0:  # a new component: chain it to the previous selected atom
            parents.append(start - 1)
            children.append(start)
        seen[start] = True
        queue = deque([start])
        while queue:
            atom = queue.popleft()
            for other in sorted(adjacency[atom]):
                if not seen[other]:
                    seen[other] = True
                    parents.append(atom)
                    children.append(other)
                    queue.append(other)
    return parents, children


def path_matrix(n_atoms: int, parents: Sequence[int], children: Sequence[int]) -> np.ndarray:
    """``[n_atoms, n_edges]`` 0/1 matrix: entry (i, e) is 1 when edge e lies on the path from the root to atom i."""
    edge_of_child = {int(c): e for e, c in enumerate(children)}
    path = np.zeros((n_atoms, len(children)))
    for atom in range(n_atoms):
        node = atom
        while node in edge_of_child:
            e = edge_of_child[node]
            path[atom, e] = 1.0
            node = int(parents[e])
    return path


class MakeWhole(torch.nn.Module):
    """Selected positions in any periodic image ``[n, 3]`` nm + box ``[3, 3]`` nm → the molecule whole ``[n, 3]``.

    The box rows are the box vectors a, b, c in OpenMM's reduced triclinic form (a along x, b in the xy plane,
    ``a_x >= 2|b_x|``, ...), so the minimum image of a displacement is removed along c, then b, then a.
    Whole positions sit in the image of selected atom 0.

    Parameters
    ----------
    n_atoms : int
        Selected atoms.
    bonds : sequence of (int, int), optional
        Bonded pairs in selection order (None: no bonds, every atom chained to the previous one).
    """

    def __init__(self, n_atoms: int, bonds: Optional[Sequence[tuple[int, int]]] = None):
        super().__init__()
        parents, children = spanning_tree(int(n_atoms), list(bonds or []))
        self.register_buffer("edge_parents", torch.tensor(parents, dtype=torch.long))
        self.register_buffer("edge_children", torch.tensor(children, dtype=torch.long))
        self.register_buffer("path", torch.from_numpy(path_matrix(int(n_atoms), parents, children)))

    def forward(self, positions: Tensor, box: Tensor) -> Tensor:
        box = box.to(positions.dtype)
        d = positions.index_select(0, self.edge_children) - positions.index_select(0, self.edge_parents)  # [n_edges, 3]
        d = d - torch.round(d[:, 2:3] / box[2, 2]) * box[2]
        d = d - torch.round(d[:, 1:2] / box[1, 1]) * box[1]
        d = d - torch.round(d[:, 0:1] / box[0, 0]) * box[0]
        whole = positions[0:1] + self.path.to(positions.dtype) @ d
        # Each whole position is its input plus a lattice vector: the same value with the exact (identity)
        # gradient, and a backward that skips the tree (inductor's fused backward of the tree sum was wrong).
        return positions + (whole - positions).detach()
