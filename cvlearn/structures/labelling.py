"""Label geometries with energies (eV) and forces (eV/Å): PySCF DFT or any ASE calculator, resumable.

Why resumable: a DFT gradient of a small molecule costs seconds to minutes, so a data set of a few hundred
geometries is an hour-long job. Each finished label is saved at once (atomically) in a sidecar file; a killed
run skips what is done and continues with the first unfinished geometry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Protocol, runtime_checkable

import numpy as np

from cvlearn.errors import RunError
from cvlearn.structures.records import Structure
from cvlearn.io import write_text_atomic
from cvlearn.units import BOHR_ANGSTROM, HARTREE_EV

__all__ = ["Labeller", "PySCFLabeller", "ASECalculatorLabeller", "LabellingError", "label_structures",
           "partial_path_for"]

log = logging.getLogger(__name__)


class LabellingError(RunError):
    """A geometry whose label could not be computed (e.g. SCF did not converge).

    Raised when a labeller fails on one structure; :func:`label_structures` can skip and record such geometries.
    """


@runtime_checkable
class Labeller(Protocol):
    """Anything that maps a ``Structure`` (Å) to ``(energy_ev, forces_ev_per_angstrom [n, 3])``.

    A protocol, so PySCF, ASE calculators or test doubles label alike.

    Methods
    -------
    __call__(structure)
        Energy (eV, float) and forces ``[n_atoms, 3]`` (eV/Å) of one structure; may raise
        :class:`LabellingError`.
    describe()
        Short text naming the method and settings; stored in the partial-label file, so a resume with
        another labeller is refused.
    """

    def __call__(self, structure: Structure) -> tuple[float, np.ndarray]: ...

    def describe(self) -> str: ...


class PySCFLabeller:
    """Kohn-Sham DFT (or Hartree-Fock with ``xc="HF"``) energy and analytic gradient with PySCF.

    The previous geometry's density matrix is the initial guess for the next one: neighbouring geometries
    differ little, so this cuts the SCF cycles (PySCF projects it only if the basis size matches).
    PySCF is imported lazily: it is an optional dependency, needed only to label new data.

    Parameters
    ----------
    xc : str
        Exchange-correlation functional, or ``"HF"``.
    basis : str
        Basis set name.
    charge, spin : int
        Total charge and 2S.
    conv_tol : float
        SCF energy convergence (Hartree).
    max_cycle : int
        Most SCF cycles before :class:`LabellingError`.
    reuse_density : bool
        Start each SCF from the previous geometry's density matrix.

    Returns
    -------
    callable
        ``labeller(structure)`` → ``(energy_ev, forces_ev_per_angstrom [n_atoms, 3])``.
    """

    def __init__(self, xc: str = "M06", basis: str = "6-31g*", charge: int = 0, spin: int = 0,
                 conv_tol: float = 1e-9, max_cycle: int = 100, reuse_density: bool = True):
        try:
            import pyscf  # noqa: F401
        except ImportError as exc:
            raise ImportError("PySCFLabeller needs PySCF, an optional dependency of cvlearn: "
                              "pip install pyscf") from exc
        self.xc, self.basis, self.charge, self.spin = xc, basis, int(charge), int(spin)
        self.conv_tol, self.max_cycle, self.reuse_density = conv_tol, max_cycle, reuse_density
        self._dm = None
        self._dm_key = None
        self.scf_cycles: list[int] = []  # cycles per labelled geometry, for reports

    def describe(self) -> str:
        return f"PySCF {'R' if self.spin == 0 else 'U'}{'HF' if self._is_hf else 'KS'} {self.xc}/{self.basis}, " \
               f"charge {self.charge}, 2S {self.spin}"

    @property
    def _is_hf(self) -> bool:
        return self.xc.upper() == "HF"

    def _method(self, mol):
        from pyscf import dft, scf

        if self._is_hf:
            mf = scf.RHF(mol) if self.spin == 0 else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if self.spin == 0 else dft.UKS(mol)
            mf.xc = self.xc
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        mf.verbose = 0
        return mf

    def __call__(self, structure: Structure) -> tuple[float, np.ndarray]:
        from pyscf import gto

        atom = [(int(z), tuple(float(c) for c in xyz))
                for z, xyz in zip(structure.numbers, structure.positions_angstrom)]
        mol = gto.M(atom=atom, basis=self.basis, charge=self.charge, spin=self.spin, unit="Angstrom", verbose=0)
        mf = self._method(mol)
        key = (tuple(int(z) for z in structure.numbers), self.basis, self.charge, self.spin)
        dm0 = self._dm if (self.reuse_density and self._dm_key == key) else None
        cycles = []
        mf.callback = lambda envs: cycles.append(envs.get("cycle"))
        energy_ha = mf.kernel(dm0=dm0)
        if not mf.converged:
            self._dm = self._dm_key = None  # never seed the next geometry with an unconverged density
            raise LabellingError(f"{structure.source or 'structure'}: SCF did not converge in {self.max_cycle} "
                                 f"cycles ({self.describe()})")
        gradient_ha_bohr = np.asarray(mf.nuc_grad_method().kernel(), dtype=np.float64)
        self._dm, self._dm_key = mf.make_rdm1(), key
        self.scf_cycles.append(len(cycles))
        forces = -gradient_ha_bohr * (HARTREE_EV / BOHR_ANGSTROM)
        return float(energy_ha) * HARTREE_EV, forces


class ASECalculatorLabeller:
    """Any ASE calculator as a labeller (ASE already speaks eV and eV/Å).

    Parameters
    ----------
    calculator : ase.calculators.calculator.Calculator

    Returns
    -------
    callable
        ``labeller(structure)`` → ``(energy_ev, forces_ev_per_angstrom [n_atoms, 3])``.
    """

    def __init__(self, calculator):
        self.calculator = calculator

    def describe(self) -> str:
        parameters = getattr(self.calculator, "parameters", None) or {}
        return f"ASE {type(self.calculator).__name__} {dict(sorted(parameters.items()))}"

    def __call__(self, structure: Structure) -> tuple[float, np.ndarray]:
        from ase import Atoms

        atoms = Atoms(numbers=structure.numbers, positions=structure.positions_angstrom)
        atoms.calc = self.calculator
        return float(atoms.get_potential_energy()), np.asarray(atoms.get_forces(), dtype=np.float64)


def _fingerprint(structure: Structure) -> str:
    """Hash of atomic numbers and positions rounded to 1e-6 Å: a resumed run must see the same geometries."""
    h = hashlib.sha256(np.asarray(structure.numbers, dtype=np.int64).tobytes())
    h.update(np.round(np.asarray(structure.positions_angstrom, dtype=np.float64), 6).tobytes())
    return h.hexdigest()[:16]


def partial_path_for(out_extxyz: str | os.PathLike) -> Path:
    """Default sidecar file of finished labels next to the final output.

    Parameters
    ----------
    out_extxyz : str or path
        The labelled extxyz file to be written.

    Returns
    -------
    Path
        ``.<name>.partial.json`` in the same folder.
    """
    out = Path(out_extxyz)
    return out.with_name(f".{out.name}.partial.json")


def _load_partial(path: Path, labeller_name: str) -> dict[int, dict]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: partial label file is not valid JSON ({exc}); delete it to start over") from exc
    if data.get("labeller") != labeller_name:
        raise ValueError(f"{path}: partial labels were made with '{data.get('labeller')}', this run uses "
                         f"'{labeller_name}'; delete the file or use the same labeller")
    return {int(k): v for k, v in data["entries"].items()}


def label_structures(structures: Iterable[Structure], labeller: Labeller, out_extxyz: str | os.PathLike | None,
                     partial_path: str | os.PathLike | None = None, skip_failed: bool = True,
                     progress: bool = True) -> list[Structure]:
    """Label every structure, saving each label at once in ``partial_path``; write ``out_extxyz`` at the end.

    A rerun after a kill reuses the finished labels (checked against a fingerprint of each geometry) and
    computes only the rest. Geometries whose labeller raises ``LabellingError`` are logged, recorded as failed
    (not retried on resume) and left out when ``skip_failed``; otherwise the error propagates.
    ``out_extxyz=None`` skips the extxyz file (then ``partial_path`` is required).

    Parameters
    ----------
    structures : iterable of Structure
        Geometries (Å).
    labeller : Labeller
        Maps a structure to ``(energy_ev, forces_ev_per_angstrom [n_atoms, 3])``.
    out_extxyz : str, path or None
        Labelled extxyz written at the end.
    partial_path : str, path or None
        Sidecar of finished labels (default: :func:`partial_path_for`).
    skip_failed : bool
        Leave out geometries whose labeller raises ``LabellingError``, instead of raising.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of Structure
        The labelled structures in input order (eV, eV/Å).
    """
    from cvlearn.progress import progress_bar

    from cvlearn.structures.extxyz import write_extxyz

    structures = list(structures)
    if partial_path is None:
        if out_extxyz is None:
            raise ValueError("label_structures: give out_extxyz or partial_path (where finished labels are kept)")
        partial_path = partial_path_for(out_extxyz)
    partial_path = Path(partial_path)
    name = labeller.describe()
    entries = _load_partial(partial_path, name)
    for index, entry in entries.items():
        if index >= len(structures) or entry["fingerprint"] != _fingerprint(structures[index]):
            raise ValueError(f"{partial_path}: entry {index} belongs to a different geometry than input {index}; "
                             "the input changed since the partial run: delete the partial file to start over")

    def save():
        write_text_atomic(partial_path, json.dumps({"labeller": name, "entries": {str(k): v for k, v in
                                                                                 sorted(entries.items())}}))

    todo = [i for i in range(len(structures)) if i not in entries]
    if entries:
        log.info("resuming: %d of %d geometries already labelled in %s", len(entries), len(structures), partial_path)
    for i in progress_bar(todo, desc="labelling", disable=not progress):
        s = structures[i]
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            energy, forces = labeller(s)
        except LabellingError as exc:
            if not skip_failed:
                raise
            log.warning("geometry %d skipped: %s", i, exc)
            entries[i] = {"fingerprint": _fingerprint(s), "failed": str(exc)}
        else:
            entries[i] = {"fingerprint": _fingerprint(s), "energy_ev": float(energy),
                          "forces_ev_per_angstrom": np.asarray(forces, dtype=np.float64).tolist(),
                          "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - start_cpu}
        save()

    labelled = []
    for i, s in enumerate(structures):
        entry = entries[i]
        if "failed" in entry:
            continue
        labelled.append(Structure(numbers=s.numbers, positions_angstrom=s.positions_angstrom,
                                  energy_ev=entry["energy_ev"],
                                  forces_ev_per_angstrom=np.asarray(entry["forces_ev_per_angstrom"]),
                                  source=s.source))
    if out_extxyz is not None:
        write_extxyz(out_extxyz, labelled)
    return labelled
