"""Shared fixtures: a real alanine-dipeptide structure and small real models (no network, no GPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_CHECKPOINTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "geom2vec-checkpoints"


@pytest.fixture(scope="session")
def ala2():
    from systems import alanine_dipeptide

    return alanine_dipeptide.build()


@pytest.fixture(scope="session")
def ala2_heavy(ala2):
    from systems import alanine_dipeptide

    from cvlearn.data.selection import atomic_numbers

    heavy = alanine_dipeptide.heavy_atom_indices(ala2.topology)
    return heavy, atomic_numbers(ala2.topology, heavy)


def make_tiny_cv(topology, heavy, z, n_cvs=2, seed=0):
    """A small but real GNN CV chain (untrained, seeded)."""
    from cvlearn.models.cv import GraphCV
    from cvlearn.nn.featurizers import ETConfig, ETFeaturizer
    from cvlearn.nn.heads import MLPHead
    from cvlearn.nn.mixers import SumPool
    from cvlearn.data.selection import residue_index_of_atoms
    from cvlearn.nn.tokens import ResidueTokens

    torch.manual_seed(seed)
    config = ETConfig(hidden_channels=32, num_layers=2, num_rbf=16, num_heads=4, cutoff_angstrom=5.0)
    return GraphCV(ETFeaturizer(z, config, seed=seed), ResidueTokens(residue_index_of_atoms(topology, heavy)),
                   SumPool(), MLPHead(32, n_cvs, hidden=32))


@pytest.fixture(scope="session")
def exported_cv64(tmp_path_factory, ala2, ala2_heavy):
    """An exported 2-component CV in float64 (for finite differences) and its path."""
    from cvlearn.export import export_cv

    heavy, z = ala2_heavy
    path = tmp_path_factory.mktemp("cv") / "cv64.pt"
    module = export_cv(make_tiny_cv(ala2.topology, heavy, z), path, atom_indices=heavy,
                       n_particles=ala2.topology.getNumAtoms(), dtype=torch.float64)
    return module, path


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
