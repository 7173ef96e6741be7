"""Generate the shipped malonaldehyde energy/force data set (resumable; about an hour on one core).

    python -m systems.malonaldehyde.generate --n 320 --out systems/malonaldehyde/data

Steps, each cached in ``--work`` so that a killed run resumes:
1. enol malonaldehyde built by hand (planar, Cs), optimised with BFGS at HF/6-31G, then at M06/6-31G*;
2. analytic M06/6-31G* Hessian at that minimum (PySCF), harmonic normal modes (translations and rotations
   projected out);
3. non-equilibrium geometries: classical Boltzmann normal-mode sampling at 300, 600 and 1000 K (each mode
   coordinate q_k ~ N(0, k_B T / omega_k^2)) plus geometries along the intramolecular proton-transfer path
   (linear interpolation between the minimum and its mirror tautomer, with 300 K normal-mode noise);
   any geometry with an interatomic distance below 0.7 Å is rejected and redrawn; fixed seed;
4. M06/6-31G* energies and forces with ``cvlearn.structures.labelling`` (resumable, one sidecar file of finished labels);
5. random 80/10/10 split (seed 0) written as ``<out>/xxMD-DFT/mal/mal_{train,val,test}.xyz`` + ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from cvlearn.structures.extxyz import read_extxyz, write_extxyz
from cvlearn.structures.records import Structure
from cvlearn.data.splits import random_split
from cvlearn.structures.xxmd import write_xxmd
from cvlearn.io import write_json_atomic, write_text_atomic
from cvlearn.structures.labelling import PySCFLabeller, label_structures
from cvlearn.units import BOHR_ANGSTROM, BOLTZMANN_KJMOL_PER_K, EV_PER_KJMOL, HARTREE_EV
from systems.malonaldehyde import MOLECULE

log = logging.getLogger("systems.malonaldehyde.generate")

# Enol malonaldehyde O1=C1H-C2H=C3H-O2-H...O1, planar, drawn by hand (Å); the optimiser does the rest.
NUMBERS = np.array([8, 6, 6, 6, 8, 1, 1, 1, 1])
START_ANGSTROM = np.array([
    [-1.30, -0.72, 0.0],  # O1 (carbonyl)
    [-1.22, 0.62, 0.0],   # C1
    [0.00, 1.30, 0.0],    # C2
    [1.22, 0.62, 0.0],    # C3
    [1.30, -0.70, 0.0],   # O2 (hydroxyl)
    [0.40, -1.15, 0.0],   # H on O2, hydrogen-bonded to O1
    [0.00, 2.38, 0.0],    # H on C2
    [-2.15, 1.20, 0.0],   # H on C1
    [2.15, 1.20, 0.0],    # H on C3
])
# The mirror tautomer: O1<->O2, C1<->C3, H(C1)<->H(C3); the transferring proton stays atom 5.
MIRROR = np.array([4, 3, 2, 1, 0, 5, 6, 8, 7])
XC, BASIS = "M06", "6-31g*"
TEMPERATURES_K = (300.0, 600.0, 1000.0)
PATH_FRACTION = 0.1
MIN_DISTANCE_ANGSTROM = 0.7
KB_HARTREE_PER_K = BOLTZMANN_KJMOL_PER_K * EV_PER_KJMOL / HARTREE_EV


def _optimise(positions: np.ndarray, labeller, fmax_ev_per_angstrom: float, label: str) -> np.ndarray:
    from ase import Atoms
    from ase.calculators.calculator import Calculator, all_changes
    from ase.optimize import BFGS

    class _Calc(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            energy, forces = labeller(Structure(self.atoms.numbers, self.atoms.positions.copy()))
            self.results = {"energy": energy, "forces": forces}

    atoms = Atoms(numbers=NUMBERS, positions=positions)
    atoms.calc = _Calc()
    t0 = time.perf_counter()
    converged = BFGS(atoms, logfile="-", maxstep=0.1).run(fmax=fmax_ev_per_angstrom, steps=200)
    if not converged:
        raise RuntimeError(f"{label} optimisation did not reach fmax {fmax_ev_per_angstrom} eV/Å in 200 steps")
    log.info("%s optimised in %.0f s, E = %.6f eV", label, time.perf_counter() - t0, atoms.get_potential_energy())
    return atoms.positions.copy()


def _hessian_hartree_bohr2(positions: np.ndarray) -> np.ndarray:
    """Analytic M06/6-31G* Hessian [3n, 3n] in Hartree/Bohr^2 (PySCF supports meta-GGA Hessians)."""
    from pyscf import dft, gto

    mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(NUMBERS, positions)], basis=BASIS, unit="Angstrom",
                verbose=0)
    mf = dft.RKS(mol)
    mf.xc = XC
    mf.conv_tol = 1e-10
    mf.kernel()
    if not mf.converged:
        raise RuntimeError("SCF for the Hessian did not converge")
    h = mf.Hessian().kernel()  # [n, n, 3, 3]
    n = len(NUMBERS)
    return h.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)


def normal_modes(positions: np.ndarray, hessian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mass-weighted eigen-decomposition with translations/rotations projected out.

    Parameters
    ----------
    positions : np.ndarray
        ``[n_atoms, 3]`` geometry of the minimum, Å (masses from ``NUMBERS``).
    hessian : np.ndarray
        ``[3n, 3n]`` Cartesian Hessian at ``positions``, Hartree/Bohr².

    Returns
    -------
    omega2 : np.ndarray
        ``[3n-6]`` eigenvalues omega^2 in Hartree/(Bohr^2 amu), ascending.
    modes : np.ndarray
        ``[3n, 3n-6]`` mass-weighted mode vectors (columns).
    """
    from ase.data import atomic_masses

    masses = atomic_masses[NUMBERS]
    sqrt_m = np.sqrt(np.repeat(masses, 3))
    hw = hessian / np.outer(sqrt_m, sqrt_m)
    x = (positions - (masses[:, None] * positions).sum(0) / masses.sum()) / BOHR_ANGSTROM
    external = []
    for axis in range(3):
        t = np.zeros_like(x)
        t[:, axis] = 1.0
        external.append((t * np.sqrt(masses)[:, None]).ravel())
        r = np.cross(np.eye(3)[axis], x)
        external.append((r * np.sqrt(masses)[:, None]).ravel())
    q, _ = np.linalg.qr(np.array(external).T)
    projector = np.eye(len(hw)) - q @ q.T
    values, vectors = np.linalg.eigh(projector @ hw @ projector)
    keep = np.argsort(values)[-(len(hw) - 6):]
    return values[keep], vectors[:, keep]


def _min_distance(positions: np.ndarray) -> float:
    d = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    return float(d[np.triu_indices(len(positions), 1)].min())


def _kabsch(mobile: np.ndarray, target: np.ndarray) -> np.ndarray:
    mc, tc = mobile - mobile.mean(0), target - target.mean(0)
    u, _, vt = np.linalg.svd(mc.T @ tc)
    d = np.sign(np.linalg.det(u @ vt))
    return mc @ (u @ np.diag([1, 1, d]) @ vt) + target.mean(0)


def sample_geometries(minimum: np.ndarray, omega2: np.ndarray, modes: np.ndarray, n: int, seed: int
                      ) -> tuple[list[Structure], int]:
    """Normal-mode Boltzmann samples at TEMPERATURES_K plus proton-transfer-path geometries (module doc).

    Parameters
    ----------
    minimum : np.ndarray
        ``[n_atoms, 3]`` minimum geometry, Å.
    omega2, modes : np.ndarray
        ``[3n-6]`` and ``[3n, 3n-6]`` from :func:`normal_modes` (all omega2 > 0, else RuntimeError).
    n, seed : int
        Number of geometries and RNG seed (sampling is deterministic given both).

    Returns
    -------
    structures : list of Structure
        Unlabelled, positions Å; ``source`` names the kind (``path``, ``nm300K``, ...) and index.
    redrawn : int
        Number of draws rejected for an interatomic distance below ``MIN_DISTANCE_ANGSTROM``.
    """
    from ase.data import atomic_masses

    if np.any(omega2 <= 0):
        raise RuntimeError(f"Hessian has {int((omega2 <= 0).sum())} non-positive modes: not a minimum")
    rng = np.random.default_rng(seed)
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(atomic_masses[NUMBERS], 3))
    mirror = _kabsch(minimum[MIRROR], minimum)
    n_path = int(round(PATH_FRACTION * n))
    plan = [("path", 300.0)] * n_path
    per_t = (n - n_path) // len(TEMPERATURES_K)
    for i, t in enumerate(TEMPERATURES_K):
        plan += [(f"nm{int(t)}K", t)] * (per_t + (1 if i < (n - n_path) % len(TEMPERATURES_K) else 0))
    out, rejected = [], 0
    for kind, temperature in plan:
        while True:
            q = rng.normal(size=len(omega2)) * np.sqrt(KB_HARTREE_PER_K * temperature / omega2)
            displacement = (inv_sqrt_m * (modes @ q)).reshape(-1, 3) * BOHR_ANGSTROM
            base = minimum
            if kind == "path":
                lam = rng.uniform(0.0, 1.0)
                base = (1 - lam) * minimum + lam * mirror
            positions = base + displacement
            if _min_distance(positions) >= MIN_DISTANCE_ANGSTROM:
                break
            rejected += 1
        out.append(Structure(NUMBERS.copy(), positions, source=f"{kind}#{len(out)}"))
    log.info("sampled %d geometries (%d redrawn for a distance < %.1f Å)", len(out), rejected, MIN_DISTANCE_ANGSTROM)
    return out, rejected


README = """# Malonaldehyde energies and forces (M06/6-31G*), xxMD layout

Files: `xxMD-DFT/mal/mal_train.xyz`, `mal_val.xyz`, `mal_test.xyz` (extended XYZ, written by ASE).
Read them with `cvlearn.structures.load_xxmd(systems.malonaldehyde.dataset_path(), "mal", "train")`.

- **Molecule**: enol malonaldehyde C3H4O2 (9 atoms), the intramolecular proton-transfer system of xxMD's `mal`.
- **Level of theory**: {level}, PySCF {pyscf_version} default DFT grid, SCF tolerance 1e-9 Hartree.
  Same functional and basis as xxMD-DFT (M06/6-31G*), so the set can be mixed with, or compared against, xxMD.
- **Units**: positions Å, energy eV (total electronic energy, key `energy`), forces eV/Å (array `forces`),
  converted with Hartree = 27.211386245988 eV and Bohr = 0.529177210903 Å (`cvlearn.units`).
- **Count**: {n_total} labelled geometries ({n_failed} failed SCF and were dropped): train {n_train}, val {n_val},
  test {n_test} (random split 80/10/10, seed 0; the geometries are independent samples, not a trajectory,
  so a random split does not leak near-duplicates).
- **Sampling** (seed {seed}): a hand-built planar geometry was optimised (BFGS, ASE) at HF/6-31G and then at
  M06/6-31G* (max force < 0.01 eV/Å); the analytic M06/6-31G* Hessian at that minimum gave the harmonic normal
  modes (translations and rotations projected out; lowest frequency {min_freq:.0f} cm^-1). Geometries are classical
  Boltzmann samples of the normal-mode coordinates, q_k ~ N(0, k_B T / omega_k^2), in equal shares at
  {temperatures} K, plus {n_path} geometries along the proton-transfer path (linear interpolation between the
  minimum and its mirror tautomer at a uniform fraction, with 300 K normal-mode noise). Geometries with any
  interatomic distance below {min_d} Å were redrawn ({rejected} redraws).
  The harmonic samples stay near the minimum at 300 K and reach strongly distorted geometries at 1000 K:
  a non-equilibrium set for force-field fine-tuning, not a thermodynamic ensemble.
- **Cost**: {seconds_per_geometry:.1f} s wall time per geometry ({cpu}; energy + analytic gradient, one thread,
  `OMP_NUM_THREADS=1`, on {machine}, whose 2 cores were shared with other jobs, so wall time exceeds CPU time);
  {total_minutes:.0f} min wall time for the labels. The previous geometry's density seeds each SCF.
- **Regenerate**: `python -m systems.malonaldehyde.generate --n {n_requested} --out systems/malonaldehyde/data`
  (resumable; intermediate files in `--work`).
"""


def main(argv: list[str] | None = None) -> int:
    """Command line: optimise, Hessian, sample, label (M06/6-31G*) and write the xxMD data set, resumably.

    Intermediate files go to ``--work`` so an interrupted run picks up where it stopped.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (``--n``, ``--out``, ``--work``, ``--seed``); None reads ``sys.argv``.

    Returns
    -------
    int
        Exit status, 0 on success.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=320, help="number of geometries to sample and label")
    parser.add_argument("--out", default="systems/malonaldehyde/data", help="output root (xxMD layout)")
    parser.add_argument("--work", default="runs/malonaldehyde_work", help="resumable intermediate files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)

    minimum_file = work / "minimum.json"
    if minimum_file.exists():
        minimum = np.array(json.loads(minimum_file.read_text())["positions_angstrom"])
    else:
        hf = _optimise(START_ANGSTROM, PySCFLabeller(xc="HF", basis="6-31g"), 0.02, "HF/6-31G")
        minimum = _optimise(hf, PySCFLabeller(xc=XC, basis=BASIS), 0.01, f"{XC}/{BASIS}")
        write_json_atomic(minimum_file, {"level": f"{XC}/{BASIS}", "positions_angstrom": minimum.tolist()})

    hessian_file = work / "hessian.npy"
    if not hessian_file.exists():
        t0 = time.perf_counter()
        hessian = _hessian_hartree_bohr2(minimum)
        np.save(work / "hessian.tmp.npy", hessian)
        (work / "hessian.tmp.npy").replace(hessian_file)
        log.info("Hessian in %.0f s", time.perf_counter() - t0)
    omega2, modes = normal_modes(minimum, np.load(hessian_file))
    # omega in atomic units -> wavenumber: sqrt(Hartree/(Bohr^2 amu)) = 5140.487 cm^-1
    freqs = np.sqrt(omega2) * 5140.48686
    log.info("normal-mode wavenumbers (cm^-1): %s", np.array2string(freqs, precision=0))

    geoms_file = work / "geometries.xyz"
    if geoms_file.exists():
        geoms = list(read_extxyz(geoms_file, require_labels=False))
        if (work / "sampling.json").exists():
            rejected = json.loads((work / "sampling.json").read_text())["redrawn"]
        else:  # sampling is deterministic: redo it (milliseconds) to recover the count, and check the file
            again, rejected = sample_geometries(minimum, omega2, modes, len(geoms), args.seed)
            if any(np.abs(a.positions_angstrom - b.positions_angstrom).max() > 1e-6 for a, b in zip(again, geoms)):
                raise RuntimeError(f"{geoms_file} differs from a fresh sample with seed {args.seed}; delete {work}")
            write_json_atomic(work / "sampling.json", {"n": len(geoms), "redrawn": rejected, "seed": args.seed})
    else:
        geoms, rejected = sample_geometries(minimum, omega2, modes, args.n, args.seed)
        write_json_atomic(work / "sampling.json", {"n": len(geoms), "redrawn": rejected, "seed": args.seed})
        write_extxyz(geoms_file, geoms)

    labeller = PySCFLabeller(xc=XC, basis=BASIS)
    t0 = time.perf_counter()
    timing_file = work / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.exists() else {"seconds": 0.0, "n": 0}
    partial = work / "labels.partial.json"
    n_done_before = len(json.loads(partial.read_text())["entries"]) if partial.exists() else 0
    labelled = label_structures(geoms, labeller, work / "labelled.xyz", partial_path=partial)
    elapsed = time.perf_counter() - t0
    newly = len(geoms) - n_done_before
    if newly > 0:
        timing = {"seconds": timing["seconds"] + elapsed, "n": timing["n"] + newly}
        write_json_atomic(timing_file, timing)

    train, val, test = random_split(labelled, (0.8, 0.1, 0.1), seed=0)
    write_xxmd(args.out, MOLECULE, {"train": train, "val": val, "test": test})
    import platform

    import pyscf

    entries = list(json.loads(partial.read_text())["entries"].values())
    done = [e for e in entries if "seconds" in e]  # per-label times survive resumes
    if done:
        timing = {"seconds": float(sum(e["seconds"] for e in done)), "n": len(done),
                  "cpu_seconds": float(sum(e["cpu_seconds"] for e in done))}
    seconds = timing["seconds"] / max(timing["n"], 1)
    cpu = (f"{timing['cpu_seconds'] / max(timing['n'], 1):.1f} s of CPU time" if "cpu_seconds" in timing
           else "CPU time not recorded")
    write_text_atomic(Path(args.out) / "README.md", README.format(
        level=f"{XC}/{BASIS} (restricted Kohn-Sham)", pyscf_version=pyscf.__version__, n_total=len(labelled),
        n_failed=len(geoms) - len(labelled), n_train=len(train), n_val=len(val), n_test=len(test), seed=args.seed,
        min_freq=float(freqs.min()), temperatures="/".join(str(int(t)) for t in TEMPERATURES_K),
        n_path=int(round(PATH_FRACTION * len(geoms))), min_d=MIN_DISTANCE_ANGSTROM, rejected=rejected,
        seconds_per_geometry=seconds, cpu=cpu, total_minutes=seconds * len(labelled) / 60, n_requested=len(geoms),
        machine=f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"))
    log.info("wrote %d train / %d val / %d test to %s (%.1f s per geometry)", len(train), len(val), len(test),
             args.out, seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
