"""The shipped malonaldehyde data set and the normal-mode sampler that made it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvlearn.structures import list_xxmd_splits, load_xxmd
from systems import malonaldehyde
from systems.malonaldehyde import generate


def _spring_hessian(positions: np.ndarray, k: float = 0.3, tether: float = 0.05) -> np.ndarray:
    """A positive Hessian (Hartree/Bohr^2) on the internal modes: springs on every pair closer than 2.6 Å plus a weak
    isotropic tether, because a planar spring network has no out-of-plane stiffness (those modes came out at ±1e-33,
    and their sign decided the test)."""
    n = len(positions)
    h = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for j in range(i + 1, n):
            d = positions[j] - positions[i]
            if np.linalg.norm(d) < 2.6:
                u = d / np.linalg.norm(d)
                block = k * np.outer(u, u)
                for a, b, sign in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                    h[3 * a:3 * a + 3, 3 * b:3 * b + 3] += sign * block
    return h + tether * np.eye(3 * n)


def test_normal_mode_sampling_is_seeded_and_rejects_clashes():
    x = generate.START_ANGSTROM
    omega2, modes = generate.normal_modes(x, _spring_hessian(x))
    assert omega2.shape == (3 * len(x) - 6,) and np.all(omega2 > 0)
    np.testing.assert_allclose(modes.T @ modes, np.eye(len(omega2)), atol=1e-10)
    samples, _ = generate.sample_geometries(x, omega2, modes, n=40, seed=1)
    again, _ = generate.sample_geometries(x, omega2, modes, n=40, seed=1)
    assert len(samples) == 40
    assert sum(s.source.startswith("path") for s in samples) == 4
    assert {s.source.split("#")[0] for s in samples} == {"path", "nm300K", "nm600K", "nm1000K"}
    for a, b in zip(samples, again):
        np.testing.assert_array_equal(a.positions_angstrom, b.positions_angstrom)
        assert generate._min_distance(a.positions_angstrom) >= generate.MIN_DISTANCE_ANGSTROM
    spread = {k: np.mean([np.abs(s.positions_angstrom - x).mean() for s in samples if s.source.startswith(k)])
              for k in ("nm300K", "nm1000K")}
    assert spread["nm1000K"] > spread["nm300K"]


def test_mirror_tautomer_moves_the_proton_to_the_other_oxygen():
    x = generate.START_ANGSTROM
    mirror = generate._kabsch(x[generate.MIRROR], x)
    d = lambda p, i, j: np.linalg.norm(p[i] - p[j])  # noqa: E731
    assert d(x, 5, 4) < d(x, 5, 0)  # proton on O2 in the start geometry
    assert d(mirror, 5, 0) < d(mirror, 5, 4)  # and on O1 in its mirror tautomer


_DATA = Path(malonaldehyde.__file__).parent / "data" / "xxMD-DFT" / "mal"


@pytest.mark.skipif(not _DATA.is_dir(), reason="the M06/6-31G* labelling run (python -m systems.malonaldehyde.generate) "
                    "has not finished: data not shipped yet")
def test_shipped_dataset_loads():
    root = malonaldehyde.dataset_path()
    assert list_xxmd_splits(root, "mal") == ["test", "train", "val"]
    sizes = {}
    for split in ("train", "val", "test"):
        structures = list(load_xxmd(root, "mal", split))
        sizes[split] = len(structures)
        for s in structures:
            np.testing.assert_array_equal(s.numbers, generate.NUMBERS)
            assert np.isfinite(s.energy_ev) and np.all(np.isfinite(s.forces_ev_per_angstrom))
            # Isolated molecule: no net force, up to the DFT integration grid, which breaks translational invariance
            # (PySCF's default grid with M06; measured on this set: median 0.03, max 0.08 eV/Å, against a median
            # largest force component of 2.9 eV/Å).
            assert np.abs(s.forces_ev_per_angstrom.sum(0)).max() < 0.1
    assert sum(sizes.values()) >= 300 and sizes["train"] > 7 * sizes["test"]
    assert (root / "README.md").is_file()
