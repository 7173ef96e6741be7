"""Backbone torsions (φ, ψ, ...) as an exported TorchScript CV, so reference biases use the same machinery.

Biasing φ/ψ through :mod:`openmm_plugin.bias` (rather than CustomTorsionForces) makes the reference
runs in ``benchmarks/sampling.py`` differ from the learned-CV runs only in the CV. Angles in radians,
in [-π, π), sign convention of mdtraj/OpenMM (atan2(|b2| b1·(b2×b3), (b1×b2)·(b2×b3))).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from cvlearn.export import export_cv


class Torsions(torch.nn.Module):
    """``[B, n_selected, 3] -> [B, n_torsions]`` dihedral angles of quadruples of *selected-atom* indices.

    Positions in nm (any length unit works: angles are scale-free); angles in radians on [-π, π].

    Parameters
    ----------
    quadruples : sequence of 4-sequences of int
        ``[n_torsions, 4]`` atom indices into the selection (not System indices).
    """

    def __init__(self, quadruples: Sequence[Sequence[int]]):
        super().__init__()
        self.register_buffer("quadruples", torch.as_tensor([list(q) for q in quadruples], dtype=torch.long))
        # export_cv reads the model dtype from its first parameter; this one is a frozen unit scale.
        self.unit = torch.nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        p = pos[:, self.quadruples]  # [B, T, 4, 3]
        b1, b2, b3 = p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 1], p[:, :, 3] - p[:, :, 2]
        n1, n2 = torch.cross(b1, b2, dim=-1), torch.cross(b2, b3, dim=-1)
        y = torch.linalg.vector_norm(b2, dim=-1) * torch.sum(b1 * n2, dim=-1)
        x = torch.sum(n1 * n2, dim=-1)
        return torch.atan2(y, x) * self.unit


def export_torsion_cv(path: str | Path, torsions: Sequence[Sequence[int]], topology,
                      dtype: torch.dtype = torch.float64, names: Sequence[str] | None = None) -> torch.jit.ScriptModule:
    """Export torsions as a CV file; component i = torsion i, in radians on [-π, π), periodic (2π).

    The file also records the torsions' System atoms (``spec.extra["native"]``), so ``cvlearn bias`` can run it on
    route ``native`` (OpenMM's ``CustomTorsionForce`` and a tabulated bias, near unbiased speed) as well as through
    the TorchScript module on the python route.

    Parameters
    ----------
    path : str or Path
        Output file.
    torsions : sequence of 4-sequences of int
        ``[n_torsions, 4]`` quadruples of *System* atom indices.
    topology : openmm.app.Topology or mdtraj.Topology
        The System's topology (particle count, elements and residues of the torsion atoms).
    dtype : torch.dtype
        Dtype of the module.
    names : sequence of str, optional
        COLVAR names of the components (default ``torsion0``, ``torsion1``, ...).

    Returns
    -------
    torch.jit.ScriptModule
        The exported CV, ``positions [n_particles, 3] nm -> [n_torsions]`` rad.
    """
    atoms = sorted({int(a) for q in torsions for a in q})
    local = {a: i for i, a in enumerate(atoms)}
    quadruples = [[local[int(a)] for a in q] for q in torsions]
    n_particles = topology.getNumAtoms() if hasattr(topology, "getNumAtoms") else topology.n_atoms
    return export_cv(Torsions(quadruples), path, atom_indices=atoms, n_particles=n_particles, topology=topology,
                     dtype=dtype, cv_range=[(-math.pi, math.pi)] * len(quadruples),
                     component_periods=[2 * math.pi] * len(quadruples),
                     extra={"cv_names": [f"torsion{i}" for i in range(len(quadruples))] if names is None
                            else [str(n) for n in names],
                            "native": {"torsions": [[int(a) for a in q] for q in torsions]}})
