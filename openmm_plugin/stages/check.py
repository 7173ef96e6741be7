"""``cvlearn check``: the physics checks of an exported CV, run on the user's own file and structure.

The test suite proves these properties for the CVs it exports; this stage proves them for any ``cv.pt`` on the
user's own PDB, so a CV is checked before hours of biased MD depend on it:

1. autograd forces equal central finite differences (float64);
2. the CV is invariant to a rigid rotation + translation (float64);
3. the float32 evaluation agrees with float64, relative to the CV's training range;
4. the CV from Python equals the CV from the engine (energy and forces), through both routes (PythonForce,
   TorchForce) in a Reference-platform Context;
5. periodic-image invariance, for periodic CVs: moving selected atoms by integer combinations of the box
   vectors leaves the CV unchanged (non-periodic CVs: "not applicable").

Each runs on the PDB positions and a few seeded small perturbations of them. A periodic CV is evaluated with the
box of the PDB (CRYST1) or else the System XML's default box, everywhere: in Python and in periodic Contexts.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import openmm
import openmm.app as app
import torch

from cvlearn.config import check_input_file, check_ranges
from cvlearn.errors import ConfigError, RunError
from cvlearn.export import load_cv, load_eager_cv
from cvlearn.io import write_json_atomic
from openmm_plugin.forces import check_cv_fits_system, python_force_for_cv, torch_force_for_cv

PASS, FAIL = "pass", "FAIL"
_CV_GROUP = 31  # the CV force's group: the engine energy is read from it alone, whatever the System holds


@dataclass(frozen=True)
class CheckConfig:
    """Settings of ``cvlearn check``.

    Tolerances are relative: finite differences and engine forces to the gradient's norm, the engine energy to
    ``max(|s|, 1)``, float32 to the CV's training range (``|s64| + 1`` when the file has none); invariance is an
    absolute change of the CV.
    """

    cv: str = ""  # exported CV file (cvlearn.export.export_cv)
    pdb: str = ""  # structure with all the System's particles (positions, nm after reading)
    system: Optional[str] = None  # serialized OpenMM System XML; default: a force-free System from the PDB
    json_out: Optional[str] = None  # also write the result rows here (atomic)
    n_perturbed: int = 2  # configurations besides the PDB's: PDB positions + Gaussian noise
    perturbation_nm: float = 0.005
    seed: int = 0
    fd_step_nm: float = 1e-5
    fd_rtol: float = 1e-4
    invariance_atol: float = 1e-5
    float32_rtol: float = 1e-3
    engine_rtol: float = 1e-4

    def __post_init__(self):
        check_ranges(self, positive=("perturbation_nm", "fd_step_nm", "fd_rtol", "invariance_atol", "float32_rtol",
                                     "engine_rtol"), non_negative=("n_perturbed", "seed"))
        if isinstance(self.n_perturbed, bool) or not isinstance(self.n_perturbed, int):
            raise ValueError(f"n_perturbed: expected an integer >= 0, found {self.n_perturbed!r}")


@dataclass(frozen=True)
class CheckRow:
    """One line of the check table: the worst ``value`` over configurations against ``tolerance``."""

    check: str
    value: Optional[float]
    tolerance: Optional[float]
    status: str  # "pass", "FAIL", "skipped (why)" or "not applicable (why)"

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def to_dict(self) -> dict:
        return asdict(self)


def _row(check: str, value: float, tolerance: float) -> CheckRow:
    ok = math.isfinite(value) and value < tolerance
    return CheckRow(check, float(value), float(tolerance), PASS if ok else FAIL)


def read_inputs(config: CheckConfig):
    """The CV (module, spec), the PDB positions ``[n_particles, 3]`` nm and the System; bad inputs raise ValueError.

    Parameters
    ----------
    config : CheckConfig
        ``cv``, ``pdb`` and optionally ``system`` (without it: a force-free System with the PDB's masses, amu).

    Returns
    -------
    tuple
        ``(module, spec, positions_nm, system, box_nm)``; ``box_nm`` ``[3, 3]`` nm for a periodic CV (from the
        PDB's CRYST1, else the System's default box), None for a non-periodic one.
    """
    module, spec = load_cv(check_input_file(config.cv, "cv", "exported CV"))
    pdb_path = check_input_file(config.pdb, "--pdb", "PDB file")
    try:
        pdb = app.PDBFile(str(pdb_path))
    except Exception as err:  # OpenMM raises plain Exceptions for unreadable PDBs
        raise ValueError(f"--pdb: {pdb_path} is not a readable PDB file ({err})") from err
    positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer), dtype=np.float64)
    if positions.shape[0] != spec.n_particles:
        raise ValueError(f"--pdb: {pdb_path}: expected {spec.n_particles} atoms (the CV {config.cv} was exported for "
                         f"{spec.n_particles} particles), found {positions.shape[0]}")
    if config.system:
        xml = check_input_file(config.system, "--system", "OpenMM System XML")
        try:
            system = openmm.XmlSerializer.deserialize(xml.read_text())
        except Exception as err:
            raise ValueError(f"--system: {xml} is not a serialized OpenMM System ({err})") from err
        if not isinstance(system, openmm.System):
            raise ValueError(f"--system: expected a serialized OpenMM System in {xml}, found {type(system).__name__}")
        try:
            check_cv_fits_system(module, system)
        except ValueError as err:
            raise ValueError(f"--system: {xml}: {err}") from err
    else:
        system = openmm.System()
        for atom in pdb.topology.atoms():
            system.addParticle(atom.element.mass if atom.element is not None else 0.0)
    box = _periodic_box(spec, pdb, system if config.system else None, config)
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*box)
    return module, spec, positions, system, box


def _periodic_box(spec, pdb: app.PDBFile, system: Optional[openmm.System], config: CheckConfig):
    """The box ``[3, 3]`` nm a periodic CV is checked in: the PDB's CRYST1, else the System XML's default box."""
    if not spec.periodic:
        return None
    vectors = pdb.topology.getPeriodicBoxVectors()
    if vectors is None and system is not None and system.usesPeriodicBoundaryConditions():
        vectors = system.getDefaultPeriodicBoxVectors()
    if vectors is None:
        raise ConfigError(f"{config.pdb} has no box (CRYST1 record) and no periodic --system was given, but the CV "
                          f"{config.cv} is periodic and needs box vectors", key="--pdb")
    return np.array([[v.value_in_unit(openmm.unit.nanometer)[i] for i in range(3)] for v in vectors])


def configurations(positions_nm: np.ndarray, config: CheckConfig) -> list[np.ndarray]:
    """The PDB positions and ``n_perturbed`` seeded perturbations of them, each ``[n_particles, 3]`` nm."""
    rng = np.random.default_rng(config.seed)
    return [positions_nm] + [positions_nm + rng.normal(scale=config.perturbation_nm, size=positions_nm.shape)
                             for _ in range(config.n_perturbed)]


def float64_cv(path: str, module: torch.jit.ScriptModule, spec) -> tuple[torch.nn.Module, str]:
    """The CV with its network in float64, and how it was obtained (for float32 files: the eager twin, cast)."""
    if spec.dtype == "float64":
        return module, "as exported"
    try:
        eager = copy.deepcopy(load_eager_cv(path)).to(torch.float64)
    except ValueError as err:
        return module, f"{spec.dtype} network, no eager copy ({err})"
    return eager, f"{spec.dtype} network cast to float64"


def _call(cv, positions, box: Optional[np.ndarray]) -> torch.Tensor:
    """``cv(positions)``, with the box (in the positions' dtype) for a periodic CV."""
    positions = torch.as_tensor(positions)
    return cv(positions) if box is None else cv(positions, torch.tensor(box, dtype=positions.dtype))


def _value_and_jacobian(cv, positions_nm: np.ndarray, box=None) -> tuple[np.ndarray, np.ndarray]:
    """``(s [n_cvs], ds/dx [n_cvs, n_particles, 3])`` in float64 by autograd."""
    pos = torch.tensor(positions_nm, dtype=torch.float64, requires_grad=True)
    s = _call(cv, pos, box)
    jac = [torch.autograd.grad(s[k], pos, retain_graph=k < s.shape[0] - 1)[0] for k in range(s.shape[0])]
    return s.detach().numpy(), torch.stack(jac).numpy()


def _fd_error(cv, positions_nm: np.ndarray, atoms: list[int], h: float, box=None) -> float:
    """Max over components of ``||grad - fd|| / ||grad||`` on the selected atoms (central differences)."""
    _, jac = _value_and_jacobian(cv, positions_nm, box)
    fd = np.zeros((jac.shape[0], len(atoms), 3))
    with torch.no_grad():
        for a, atom in enumerate(atoms):
            for axis in range(3):
                plus, minus = positions_nm.copy(), positions_nm.copy()
                plus[atom, axis] += h
                minus[atom, axis] -= h
                fd[:, a, axis] = (_call(cv, plus, box) - _call(cv, minus, box)).numpy() / (2 * h)
    auto = jac[:, atoms]
    norms = np.maximum(np.linalg.norm(auto.reshape(len(auto), -1), axis=1), 1e-12)
    return float(np.max(np.linalg.norm((auto - fd).reshape(len(auto), -1), axis=1) / norms))


def _made_whole(cv, positions_nm: np.ndarray, atoms: list[int], box: Optional[np.ndarray]) -> np.ndarray:
    """The positions with the CV's selection made whole by the CV's own tree (periodic CVs; else unchanged).

    A rotation of a molecule split by the box edge is no rigid motion of it, so the rotation check needs it whole.
    """
    if box is None:
        return positions_nm
    out = positions_nm.copy()
    with torch.no_grad():
        out[atoms] = cv.whole(torch.tensor(positions_nm[atoms]), torch.tensor(box)).numpy()
    return out


def _rigid_motion(positions_nm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random proper rotation about the centroid plus a translation of up to 2 nm."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    centre = positions_nm.mean(axis=0)
    return (positions_nm - centre) @ q.T + centre + rng.uniform(-2.0, 2.0, size=3)


def _image_change(cv, configs, atoms: list[int], box: np.ndarray, rng: np.random.Generator) -> float:
    """Max ``|ds|`` when about half the selected atoms move by random integer combinations of the box vectors."""
    worst = 0.0
    with torch.no_grad():
        for x in configs:
            moved = x.copy()
            chosen = rng.choice(atoms, size=max(1, len(atoms) // 2), replace=False)
            moved[chosen] += rng.integers(-2, 3, size=(len(chosen), 3)) @ box
            worst = max(worst, float(np.max(np.abs((_call(cv, x, box) - _call(cv, moved, box)).numpy()))))
    return worst


def _engine_error(make_force, module, system: openmm.System, configs, n_cvs: int, box=None) -> float:
    """Max relative mismatch of a Context's energy/forces with the Python CV and −gradient, over components.

    With a ``box`` (periodic CV) the Context is periodic (the CV force declares it) and gets that box.
    """
    worst = 0.0
    for k in range(n_cvs):
        test_system = copy.deepcopy(system)
        force = make_force(module, k)
        force.setForceGroup(_CV_GROUP)
        test_system.addForce(force)
        context = openmm.Context(test_system, openmm.VerletIntegrator(0.001),
                                 openmm.Platform.getPlatformByName("Reference"))
        if box is not None:
            context.setPeriodicBoxVectors(*box)
        for positions in configs:
            context.setPositions(positions)
            state = context.getState(getEnergy=True, getForces=True, groups={_CV_GROUP})
            energy = state.getPotentialEnergy().value_in_unit(openmm.unit.kilojoule_per_mole)
            forces = np.asarray(state.getForces(asNumpy=True).value_in_unit(
                openmm.unit.kilojoule_per_mole / openmm.unit.nanometer))
            s, jac = _value_and_jacobian(module, positions, box)
            worst = max(worst, abs(energy - s[k]) / max(abs(s[k]), 1.0),
                        float(np.linalg.norm(forces + jac[k]) / max(np.linalg.norm(jac[k]), 1e-12)))
        del context
    return worst


def run_check(config: CheckConfig) -> list[CheckRow]:
    """Run the checks of an exported CV on a PDB; returns the rows (writes ``config.json_out`` when set).

    Parameters
    ----------
    config : CheckConfig

    Returns
    -------
    list of CheckRow
        One row per check (finite differences, rigid motion, float32, PythonForce, TorchForce, periodic images).

    Raises
    ------
    ValueError, FileNotFoundError
        Bad inputs: a missing file, not a CV file, a PDB or System with another particle count than the CV's.
    """
    module, spec, positions, system, box = read_inputs(config)
    configs = configurations(positions, config)
    atoms = list(spec.atom_indices)
    cv64, how = float64_cv(config.cv, module, spec)
    rows = [_row(f"finite-difference forces, float64 ({how}; max |grad-fd|/|grad|)",
                 max(_fd_error(cv64, x, atoms, config.fd_step_nm, box) for x in configs), config.fd_rtol)]

    rng = np.random.default_rng(config.seed + 1)
    with torch.no_grad():
        whole = [_made_whole(cv64, x, atoms, box) for x in configs]
        change = max(float(np.max(np.abs(_call(cv64, x, box).numpy()
                                         - _call(cv64, _rigid_motion(x, rng), box).numpy()))) for x in whole)
        s64 = [_call(cv64, x, box).numpy() for x in configs]
        s32 = [_call(module, torch.tensor(x, dtype=torch.float32), box).to(torch.float64).numpy() for x in configs]
    rows.append(_row("rigid-motion invariance, float64 (max |ds|)", change, config.invariance_atol))
    if spec.cv_range_training is not None:
        width = np.array([max(hi - lo, 1e-12) for lo, hi in spec.cv_range_training])
        scales, against = [width] * len(configs), "training range"
    else:
        scales, against = [np.abs(s) + 1.0 for s in s64], "|s64|+1"
    rows.append(_row(f"float32 vs float64 (max |s32-s64| / {against})",
                     max(float(np.max(np.abs(a - b) / c)) for a, b, c in zip(s32, s64, scales)), config.float32_rtol))

    rows.append(_row("Python vs engine, PythonForce (energy and forces, rel.)",
                     _engine_error(python_force_for_cv, module, system, configs, spec.n_cvs, box), config.engine_rtol))
    label = "Python vs engine, TorchForce (energy and forces, rel.)"
    try:
        from openmm_plugin.forces import import_openmmtorch

        import_openmmtorch()
    except Exception as err:  # any import failure (missing, ABI mismatch) is a skip, not a failed check
        rows.append(CheckRow(label, None, config.engine_rtol, f"skipped (openmmtorch does not import: {err})"))
    else:
        rows.append(_row(label, _engine_error(torch_force_for_cv, module, system, configs, spec.n_cvs, box),
                         config.engine_rtol))

    if box is not None:
        rows.append(_row("periodic-image invariance, float64 (max |ds|)",
                         _image_change(cv64, configs, atoms, box, np.random.default_rng(config.seed + 2)),
                         config.invariance_atol))
    else:
        rows.append(CheckRow("periodic images", None, None, "not applicable (CV is not periodic)"))
    if config.json_out:
        write_json_atomic(config.json_out, {"cv": str(config.cv), "pdb": str(config.pdb), "system": config.system,
                                            "n_configurations": len(configs),
                                            "rows": [row.to_dict() for row in rows]})
    return rows


def format_table(rows: list[CheckRow]) -> str:
    """The rows as a fixed-width text table (check, value, tolerance, status)."""
    width = max(len(row.check) for row in rows)
    number = lambda v: "" if v is None else f"{v:.3g}"  # noqa: E731
    lines = [f"{'check':{width}s}  {'value':>10s}  {'tolerance':>10s}  status"]
    lines += [f"{row.check:{width}s}  {number(row.value):>10s}  {number(row.tolerance):>10s}  {row.status}"
              for row in rows]
    return "\n".join(lines)


def raise_on_failure(rows: list[CheckRow], cv: str) -> None:
    """Raise :class:`RunError` naming the failed checks, if any."""
    failed = [row.check for row in rows if row.failed]
    if failed:
        raise RunError(f"{cv}: {len(failed)} of {len(rows)} checks failed: {'; '.join(failed)}")
