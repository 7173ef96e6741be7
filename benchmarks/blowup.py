"""Why did learned-CV OPES walkers blow up in the sampling benchmark? (issue 17, item 1)

Reproduces the blown-up walkers of ``benchmarks/results/sampling.json`` with its settings (ala2, OBC, 300 K,
2 fs, HBond constraints, OPES-metad on learned-CV component 0 + walls, PythonForce route, torch.compile, bias
every step), keeping a ring of restartable states (bias + OpenMM checkpoint) every ``RING_STEPS`` steps. Then,
from the state a few ps before the blow-up, it replays the same trajectory step by step and records what the
forces do (CV, OPES energy, |∇s|, bias vs force-field force per atom, heavy-atom bond lengths, kinetic
temperature, compiled vs TorchScript CV forces, the stiffness of the bias as ω·dt from its mass-weighted
Hessian), and reruns from that state with other noise at 2 fs and 1 fs, compiled and TorchScript, with and
without a ForceGuard cap, counting which blow up.

    python benchmarks/blowup.py [--seeds 3 4] [--work runs/blowup]

Resumable: each phase writes its result to ``<work>/seed<k>/*.json`` and is skipped when that exists; a killed
reproduction restarts from its newest ring state.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import openmm
import openmm.unit as unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, now_utc, save, targets_table  # noqa: E402
from cvlearn.errors import RunError  # noqa: E402
from cvlearn.io import write_json_atomic  # noqa: E402
from openmm_plugin.bias import BiasRunner, ForceGuard, OPESMetad  # noqa: E402
from openmm_plugin.bias.base import BiasSum, OnComponents  # noqa: E402
from openmm_plugin.bias.restraints import Wall  # noqa: E402
from openmm_plugin.cv_evaluation import CVEvaluator  # noqa: E402
from openmm_plugin.forces import python_bias_force  # noqa: E402
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, make_simulation  # noqa: E402
from systems import alanine_dipeptide as ala2  # noqa: E402

RING_STEPS = 250  # 0.5 ps between ring states
RING_SIZE = 24  # 12 ps of history
BACK_STEPS = 2500  # replay from the ring state this many steps (5 ps at 2 fs) before the detected blow-up
MAX_STEPS = 200_000
R_KJMOL_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)  # a reproduction that survives this long is reported as surviving


def sampling_settings() -> dict:
    """The learned-CV walker settings of the sampling benchmark run being explained."""
    s = json.loads((RESULTS / "sampling.json").read_text())["settings"]
    lo, hi = s["cv_metadata"]["cv_range_training"][s["cv_component"]]
    return {"cv": s["cv"], "component": s["cv_component"], "n_cvs": s["cv_metadata"]["n_cvs"], "range": [lo, hi],
            "sigma_cv": s["sigma_cv"], "barrier_kjmol": s["barrier_kjmol"], "pace_steps": s["pace_steps"],
            "walls_at": s["learned_cv_walls"]["at"], "wall_kappa_kjmol": s["learned_cv_walls"]["kappa_kjmol"],
            "compile": s["learned_cv_torch_compile"], "mts": s["learned_cv_mts_substeps"], "threads": s["torch_threads"],
            "temperature_k": s["temperature_k"], "timestep_ps": ala2.TIMESTEP_PS, "friction_per_ps": ala2.FRICTION_PER_PS}


def make_bias(st: dict, timestep_ps: float, sigma_min: float | None = None, kernel_cutoff: float | None = None):
    """OPES + walls on the learned component, as ``sampling._walker`` builds them (pace kept in ps)."""
    pace = int(round(st["pace_steps"] * st["timestep_ps"] / timestep_ps))
    opes = OPESMetad(sigma=[st["sigma_cv"]], barrier_kjmol=st["barrier_kjmol"], pace_steps=pace,
                     temperature_k=st["temperature_k"], sigma_min=sigma_min,
                     kernel_cutoff=kernel_cutoff)
    walls = [Wall([st["walls_at"][0]], [st["wall_kappa_kjmol"]], side="lower"),
             Wall([st["walls_at"][1]], [st["wall_kappa_kjmol"]], side="upper")]
    return BiasSum([OnComponents(b, [st["component"]], st["n_cvs"]) for b in (opes, *walls)])


class Walker:
    """One biased ala2 simulation (PythonForce route) with its runner."""

    def __init__(self, st: dict, cv, *, compile: bool, seed: int, timestep_ps: float, guard=None,
                 sigma_min: float | None = None, nve: bool = False, with_bias: bool = True,
                 kernel_cutoff: float | None = None, save_path: Path | None = None):
        self.molecule = ala2.build()
        self.bias = make_bias(st, timestep_ps, sigma_min, kernel_cutoff)
        self.force = python_bias_force(cv, self.bias, force_group=BIAS_GROUP, compile=compile)
        if with_bias:
            self.molecule.system.addForce(self.force)
        integrator = (openmm.VerletIntegrator(timestep_ps) if nve else
                      make_integrator(st["temperature_k"], st["friction_per_ps"], timestep_ps, seed=seed,
                                      bias_group=BIAS_GROUP, bias_every_steps=1))
        self.simulation = make_simulation(self.molecule.topology, self.molecule.system, integrator, "Reference")
        self.simulation.context.setPositions(self.molecule.positions_nm)
        self.simulation.context.setVelocitiesToTemperature(st["temperature_k"] * unit.kelvin, seed + 1)
        self.runner = BiasRunner(self.bias, callback=self.force.callback, guard=guard, save_path=save_path)
        self.timestep_ps = timestep_ps

    def load(self, ring_file: Path, keep_noise: bool, step_factor: int = 1) -> int:
        """The bias state of ``ring_file`` and its positions/velocities; ``keep_noise`` also restores the RNG (the
        exact trajectory), else this walker's own seed drives the noise. Returns the step the state was saved at."""
        with np.load(ring_file) as data:
            state = {k: data[k] for k in data.files}
        self.runner.load_state_dict(state, str(ring_file))
        context = self.simulation.context
        if keep_noise:
            context.loadCheckpoint(state["openmm/checkpoint"].tobytes())
        else:
            pos, vel = ring_positions_velocities(ring_file)
            # The Reference platform's random generator is one per process, and the checkpoint just loaded (in another
            # Context) reset it to the saved run's stream: reinitialising reseeds it from this integrator's seed.
            context.reinitialize(preserveState=False)
            context.setPositions(pos)
            context.setVelocities(vel)
            self.simulation.currentStep = int(state["runner/step"]) * step_factor
        return int(state["runner/step"])


def ring_positions_velocities(ring_file: Path) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities (nm, nm/ps) stored in a ring state's OpenMM checkpoint."""
    molecule = ala2.build()
    context = openmm.Context(molecule.system, openmm.LangevinMiddleIntegrator(300, 1, 0.002),
                             openmm.Platform.getPlatformByName("Reference"))
    with np.load(ring_file) as data:
        context.loadCheckpoint(data["openmm/checkpoint"].tobytes())
    state = context.getState(getPositions=True, getVelocities=True)
    return (np.asarray(state.getPositions(asNumpy=True)._value), np.asarray(state.getVelocities(asNumpy=True)._value))


def load_cv_pair(path: str | Path) -> dict:
    """The CV file's TorchScript module and its eager twin (for torch.compile).

    ``sampling_cv.pt`` was exported before the typed CV contract and before cvlearn's modules moved
    (``cvlearn.estimators.VAMPModel`` -> ``cvlearn.models.cv``, ...), so :func:`cvlearn.export.load_cv` refuses it
    and its pickled eager twin names classes that moved. This reads it the old way: TorchScript as is, and the
    twin with each moved class found by name in today's cvlearn; the two are checked to agree.
    """
    from cvlearn.export import load_cv, load_eager_cv

    try:
        return {"scripted": load_cv(path)[0], "eager": load_eager_cv(path), "legacy": False}
    except ValueError as error:
        if "predates the typed CV contract" not in str(error):
            raise
    import importlib
    import io
    import pickle
    import pkgutil
    import types
    import zipfile

    import cvlearn

    index: dict[str, type] = {}
    for info in pkgutil.walk_packages(cvlearn.__path__, "cvlearn."):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 (optional modules)
            continue
        index.update({k: v for k, v in vars(module).items() if isinstance(v, type) and v.__module__ == info.name})

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            try:
                return super().find_class(module, name)
            except (AttributeError, ModuleNotFoundError):
                if name not in index:
                    raise
                return index[name]

    with zipfile.ZipFile(path) as archive:
        payload = archive.read(next(n for n in archive.namelist() if n.endswith("/extra/cvlearn_eager.pt")))
    eager = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False,
                       pickle_module=types.SimpleNamespace(Unpickler=Unpickler, load=pickle.load, __name__="pickle"))
    scripted = torch.jit.load(str(path), map_location="cpu")
    x = torch.from_numpy(ala2.build().positions_nm)
    if not torch.allclose(scripted(x), eager.eval()(x), atol=1e-5):
        raise ValueError(f"{path}: the legacy eager twin does not reproduce the TorchScript CV")
    return {"scripted": scripted, "eager": eager.eval(), "legacy": True}


def heavy_bonds(molecule) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Bonds between heavy atoms (System indices) and their force-field equilibrium lengths, nm."""
    heavy = set(ala2.heavy_atom_indices(molecule.topology))
    bond_force = next(f for f in molecule.system.getForces() if isinstance(f, openmm.HarmonicBondForce))
    pairs, r0 = [], []
    for k in range(bond_force.getNumBonds()):
        i, j, length, _ = bond_force.getBondParameters(k)
        if i in heavy and j in heavy:
            pairs.append((i, j))
            r0.append(length.value_in_unit(unit.nanometer))
    return pairs, np.array(r0)


# --- phase 1: reproduce ------------------------------------------------------------------------------------
def reproduce(st: dict, cvs: dict, seed: int, work: Path) -> dict:
    """Run the walker as the sampling benchmark did until its CV turns NaN, saving a ring of states."""
    done = work / "reproduce.json"
    if done.is_file():
        return json.loads(done.read_text())
    work.mkdir(parents=True, exist_ok=True)
    walker = Walker(st, cvs["eager" if st["compile"] else "scripted"], compile=st["compile"], seed=seed,
                    timestep_ps=st["timestep_ps"])
    sim, runner = walker.simulation, walker.runner
    log_path = work / "reproduce_log.json"
    log = json.loads(log_path.read_text()) if log_path.is_file() else []
    rings = sorted(work.glob("ring_*.npz"), key=lambda p: int(np.load(p)["runner/step"]))
    if rings:  # resume: the newest ring state, with its noise, continues the same trajectory
        walker.load(rings[-1], keep_noise=True)
        log = [row for row in log if row["step"] <= sim.currentStep]
        print(f"seed {seed}: resumed at step {sim.currentStep}", flush=True)
    failure, start = None, time.perf_counter()
    n0 = sim.currentStep
    while sim.currentStep < MAX_STEPS:
        try:
            runner.step(sim, RING_STEPS)
        except FloatingPointError as error:
            failure = {"step": int(sim.currentStep), "message": str(error)}
            break
        cb = walker.force.callback
        log.append({"step": int(sim.currentStep), "cv": cb.last_cv.tolist(), "bias_kjmol": cb.last_energy_kjmol})
        slot = (sim.currentStep // RING_STEPS) % RING_SIZE
        runner.save(sim, work / f"ring_{slot:02d}.npz")
        write_json_atomic(log_path, log)
        if sim.currentStep % 10_000 == 0:
            print(f"seed {seed}: step {sim.currentStep}, cv {cb.last_cv.round(3).tolist()}", flush=True)
    seconds = time.perf_counter() - start
    result = {"seed": seed, "failure": failure, "steps_run": int(sim.currentStep),
              "ms_per_step": seconds * 1e3 / max(sim.currentStep - n0, 1)}
    write_json_atomic(done, result)
    return result


def ring_state_before(work: Path, step: int) -> Path:
    """The newest ring state at or before ``step``."""
    rings = {int(np.load(p)["runner/step"]): p for p in work.glob("ring_*.npz")}
    eligible = [s for s in rings if s <= step]
    if not eligible:
        raise FileNotFoundError(f"{work}: no ring state at or before step {step} (ring holds {sorted(rings)})")
    return rings[max(eligible)]


# --- phase 2: replay the last ps step by step ----------------------------------------------------------------
def _hessian_omega(fn, x: np.ndarray, masses_amu: np.ndarray, h_nm: float = 1e-4) -> float:
    """Largest angular frequency (1/ps) of the mass-weighted Hessian of the potential whose forces ``fn(x)``
    returns (``x`` and forces ``[n, 3]``), by central differences."""
    n = x.size
    hess = np.zeros((n, n))
    for k in range(n):
        dx = np.zeros(n)
        dx[k] = h_nm
        hess[:, k] = -(fn((x.ravel() + dx).reshape(x.shape)) - fn((x.ravel() - dx).reshape(x.shape))).ravel() / (2 * h_nm)
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(masses_amu), 3)
    weighted = 0.5 * (hess + hess.T) * inv_sqrt_m[:, None] * inv_sqrt_m[None, :]
    return float(np.sqrt(max(np.linalg.eigvalsh(weighted).max(), 0.0)))


class Probe:
    """Per-step diagnostics of a walker's bias force at its current positions (no effect on the trajectory)."""

    def __init__(self, walker: Walker, scripted):
        self.w = walker
        self.compiled = walker.force.callback.evaluator
        self.scripted = CVEvaluator(scripted)
        self.idx = np.array(self.compiled.atom_indices)
        system = walker.molecule.system
        self.masses = np.array([system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(system.getNumParticles())])
        self.names = [f"{a.residue.name}:{a.name}" for a in walker.molecule.topology.atoms()]
        self.bonds, self.r0 = heavy_bonds(walker.molecule)
        self.dof = self.dof_of(system)
        ff_system = ala2.build().system  # the force field alone, for its Hessian on the CV atoms
        self.ff = openmm.Context(ff_system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))

    @staticmethod
    def dof_of(system) -> int:
        """Degrees of freedom for the kinetic temperature: 3N minus constraints minus the removed centre of mass."""
        cm = any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
        return 3 * system.getNumParticles() - system.getNumConstraints() - (3 if cm else 0)

    def _ff_forces(self, x_all: np.ndarray):
        def forces(x_cv):
            pos = x_all.copy()
            pos[self.idx] = x_cv
            self.ff.setPositions(pos)
            return np.asarray(self.ff.getState(getForces=True).getForces(asNumpy=True)._value)[self.idx]
        return forces

    def row(self, hessian: bool = False) -> dict:
        context, bias = self.w.simulation.context, self.w.bias
        state = context.getState(getPositions=True, getVelocities=True, getEnergy=True, getForces=True, groups={0})
        pos = np.asarray(state.getPositions(asNumpy=True)._value)
        if not np.all(np.isfinite(pos)):
            return {"step": int(self.w.simulation.currentStep), "finite": False}
        ff = np.asarray(state.getForces(asNumpy=True)._value)
        x = pos[self.idx]
        s, v, f_comp = self.compiled.bias_energy_forces(x, bias)
        _, _, f_scr = self.scripted.bias_energy_forces(x, bias)
        _, jac = self.scripted.jacobian(x, batched=False)
        opes = bias.biases[0]
        v_opes, dv_opes = opes.energy_and_gradient(s)
        _, dv = bias.energy_and_gradient(s)
        inner = opes.inner
        norm_b, norm_ff = np.linalg.norm(f_comp, axis=1), np.linalg.norm(ff[self.idx], axis=1)
        top = int(np.argmax(norm_b))
        lengths = np.array([np.linalg.norm(pos[i] - pos[j]) for i, j in self.bonds])
        stretch = (lengths - self.r0) / self.r0
        kin = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        diff = np.abs(f_comp - f_scr)
        row = {"step": int(self.w.simulation.currentStep), "finite": True, "cv": s.tolist(), "bias_kjmol": v,
               "opes_kjmol": v_opes, "walls_kjmol": v - v_opes, "dV_ds": dv.tolist(),
               "grad_s0_norm_per_nm": float(np.linalg.norm(jac[0])),
               "grad_s0_max_atom_per_nm": float(np.linalg.norm(jac[0], axis=1).max()),
               "bias_force_max_kjmol_nm": float(norm_b.max()), "bias_force_max_atom": self.names[self.idx[top]],
               "ff_force_on_that_atom_kjmol_nm": float(norm_ff[top]), "ff_force_max_cv_atoms_kjmol_nm": float(norm_ff.max()),
               "compiled_vs_scripted_max_abs_kjmol_nm": float(diff.max()),
               "compiled_vs_scripted_rel": float(diff.max() / max(norm_b.max(), 1e-12)),
               "bond_stretch_max": float(np.abs(stretch).max()),
               "bond_stretch_max_bond": "-".join(self.names[k] for k in self.bonds[int(np.argmax(np.abs(stretch)))]),
               "t_kin_k": 2 * kin / (self.dof * R_KJMOL_K),
               "opes_sigma_last": float(inner.sigmas[-1, 0]) if len(inner.heights) else None,
               "opes_n_kernels": int(len(inner.heights))}
        if hessian:
            dt = self.w.timestep_ps
            m = self.masses[self.idx]
            w_bias = _hessian_omega(lambda y: self.compiled.bias_energy_forces(y, bias)[2], x, m)
            ff_forces = self._ff_forces(pos)
            w_ff = _hessian_omega(ff_forces, x, m)
            w_tot = _hessian_omega(lambda y: self.compiled.bias_energy_forces(y, bias)[2] + ff_forces(y), x, m)
            row.update({"omega_dt_bias": w_bias * dt, "omega_dt_ff": w_ff * dt, "omega_dt_total": w_tot * dt})
        return row


def _first_broken_step(walker: Walker, stop_step: int) -> int | None:
    """Steps one at a time until a heavy-atom bond is stretched by > 50 % or positions are non-finite."""
    bonds, r0 = heavy_bonds(walker.molecule)
    sim = walker.simulation
    while sim.currentStep < stop_step:
        pos = np.asarray(sim.context.getState(getPositions=True).getPositions(asNumpy=True)._value)
        if not np.all(np.isfinite(pos)) or np.abs(np.linalg.norm(pos[[i for i, _ in bonds]] - pos[[j for _, j in bonds]],
                                                                 axis=1) / r0 - 1).max() > 0.5:
            return int(sim.currentStep)
        try:
            walker.runner.step(sim, 1)
        except FloatingPointError:
            return int(sim.currentStep)
    return None


def replay(st: dict, cvs: dict, seed: int, work: Path, failure_step: int) -> dict:
    """Replays the exact trajectory (same noise) from ~5 ps before the detected blow-up: a fast pass finds the first
    broken step B, a second pass probes every 10th step (every step in the last 300 before B), with the Hessian
    stiffness every 100 steps (every 2nd in the last 30)."""
    done = work / "replay.json"
    if done.is_file():
        return json.loads(done.read_text())
    ring = ring_state_before(work, failure_step - BACK_STEPS)
    walker = Walker(st, cvs["eager"], compile=True, seed=seed, timestep_ps=st["timestep_ps"])
    start = walker.load(ring, keep_noise=True)
    broken = _first_broken_step(walker, failure_step + 1)
    if broken is None:
        raise RuntimeError(f"seed {seed}: the replay from {ring} did not blow up by step {failure_step}")
    walker.load(ring, keep_noise=True)
    probe = Probe(walker, cvs["scripted"])
    rows = []
    while walker.simulation.currentStep <= broken:
        to_go = broken - walker.simulation.currentStep
        since = walker.simulation.currentStep - start
        if to_go <= 300 or since % 10 == 0:
            rows.append(probe.row(hessian=(to_go <= 30 and to_go % 2 == 0) or since % 100 == 0))
            if not rows[-1]["finite"]:
                break
        try:
            walker.runner.step(walker.simulation, 1)
        except FloatingPointError:
            break
    result = {"seed": seed, "from_step": start, "ring_file": ring.name, "detected_step": failure_step,
              "first_broken_step": broken, "rows": rows}
    write_json_atomic(done, result)
    return result


# --- phase 3: reruns from the same state ---------------------------------------------------------------------
RERUN_PS = 12.0
RERUN_BACK_STEPS = 5500  # reruns start ~11 ps before the detected blow-up, before the walker heated up
NOISE_SEEDS = (101, 102, 103, 104)
GUARD_CAP_KJMOL_NM = 2000.0
HEAT_GUARD_NAME = "2 fs, as run, ForceGuard stop at 1.5 T over 2000 steps"
UNTRUNCATED_CUTOFF = 15.0  # kernel cutoff in sigmas: exp(-15^2/2) ~ 1e-49, far below epsilon (default cutoff 5.1)
T_WINDOW_PS = 0.5


def _variants(st: dict) -> list[dict]:
    dt, base = st["timestep_ps"], {"compile": True, "cap": None, "sigma_min": None, "kernel_cutoff": None}
    untruncated = {"kernel_cutoff": UNTRUNCATED_CUTOFF}
    kinds = [{**base, "name": "2 fs, as run", "timestep_ps": dt},
             {**base, "name": "1 fs, as run", "timestep_ps": dt / 2},
             {**base, **untruncated, "name": "2 fs, untruncated kernels", "timestep_ps": dt},
             {**base, **untruncated, "name": "1 fs, untruncated kernels", "timestep_ps": dt / 2},
             {**base, **untruncated, "name": f"2 fs, untruncated kernels, guard cap {GUARD_CAP_KJMOL_NM:g}",
              "timestep_ps": dt, "cap": GUARD_CAP_KJMOL_NM}]
    torchscript = {**base, "name": "2 fs, TorchScript", "timestep_ps": dt, "compile": False}
    same = [torchscript] + kinds[:3]
    unbiased = {**base, "name": "2 fs, no bias (reference)", "timestep_ps": dt, "with_bias": False}
    same.append({**base, "name": HEAT_GUARD_NAME, "timestep_ps": dt, "heat_guard": True})
    return ([{**v, "noise": None} for v in same] + [{**v, "noise": n} for n in NOISE_SEEDS for v in kinds]
            + [{**torchscript, "noise": n} for n in NOISE_SEEDS] + [{**unbiased, "noise": n} for n in NOISE_SEEDS])


def rerun(st: dict, cvs: dict, seed: int, ring: Path, v: dict) -> dict:
    """One run of ``RERUN_PS`` from ``ring`` with variant ``v``: kinetic temperature in ``T_WINDOW_PS`` windows, and
    whether it blew up (non-finite CV/positions or a heavy-atom bond stretched by more than 50 %)."""
    guard = ForceGuard(v["cap"]) if v["cap"] else None
    if v.get("heat_guard"):
        guard = ForceGuard(1e12, mode="stop", check_every_steps=10, max_kinetic_temperature_k=1.5 * st["temperature_k"],
                           temperature_window_steps=2000)
    walker = Walker(st, cvs["eager" if v["compile"] else "scripted"], compile=v["compile"],
                    seed=v["noise"] if v["noise"] is not None else seed, timestep_ps=v["timestep_ps"], guard=guard,
                    save_path=ring.with_name("heat_guard.npz") if v.get("heat_guard") else None,
                    sigma_min=v["sigma_min"], kernel_cutoff=v["kernel_cutoff"], with_bias=v.get("with_bias", True))
    factor = int(round(st["timestep_ps"] / v["timestep_ps"]))
    start = walker.load(ring, keep_noise=v["noise"] is None, step_factor=factor) * factor
    if v["noise"] is None:
        start = walker.simulation.currentStep
    bonds, r0 = heavy_bonds(walker.molecule)
    probe_dof = Probe.dof_of(walker.molecule.system)
    sim, n_steps = walker.simulation, int(round(RERUN_PS / v["timestep_ps"]))
    sample, window = 10 * factor, int(round(T_WINDOW_PS / v["timestep_ps"]))
    blew, stopped, t0, temps, min_cv = None, None, time.perf_counter(), [], np.inf
    while sim.currentStep < start + n_steps and blew is None:
        try:
            walker.runner.step(sim, sample)
        except FloatingPointError:
            blew = "CV non-finite"
        except RunError as error:  # the heat guard stopped it (restartable state saved)
            stopped = str(error)
            break
        state = sim.context.getState(getPositions=True, getEnergy=True)
        pos = np.asarray(state.getPositions(asNumpy=True)._value)
        temps.append(2 * state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole) / (probe_dof * R_KJMOL_K))
        if blew is None:
            stretch = np.abs(np.linalg.norm(pos[[i for i, _ in bonds]] - pos[[j for _, j in bonds]], axis=1) / r0 - 1)
            if not np.all(np.isfinite(pos)) or stretch.max() > 0.5:
                blew = f"heavy-atom bond stretched {stretch.max():.3g}" if np.all(np.isfinite(pos)) else "positions NaN"
        cv = walker.force.callback.last_cv
        if cv is not None and np.isfinite(cv[st["component"]]):
            min_cv = min(min_cv, float(cv[st["component"]]))
    per_window = window // sample
    t = np.array(temps[: len(temps) // per_window * per_window]).reshape(-1, per_window).mean(axis=1) if len(temps) >= per_window else np.array([np.nan])
    return {**v, "blew_up": blew is not None, "how": blew or stopped, "after_ps": (sim.currentStep - start) * v["timestep_ps"],
            "stopped_by_guard": stopped is not None,
            "t_kin_mean_k": float(np.mean(temps[:-1] if blew else temps)), "t_kin_window_max_k": float(np.nanmax(t)),
            "windows_over_450k": int(np.sum(t > 450)), "n_windows": int(t.size), "min_cv": min_cv,
            "guard_capped": None if guard is None else guard.n_capped,
            "guard_max_force_kjmol_nm": None if guard is None else guard.max_seen_kjmol_nm,
            "seconds": time.perf_counter() - t0}


def reruns(st: dict, cvs: dict, seed: int, work: Path, failure_step: int) -> list[dict]:
    """Every variant from the ring state ~11 ps before the blow-up; each finished one is kept (resumable)."""
    path = work / "reruns.json"
    rows = json.loads(path.read_text()) if path.is_file() else []
    ring = ring_state_before(work, failure_step - RERUN_BACK_STEPS)
    for v in _variants(st):
        if any(r["name"] == v["name"] and r["noise"] == v["noise"] for r in rows):
            continue
        rows.append({"from_step": int(np.load(ring)["runner/step"]), **rerun(st, cvs, seed, ring, v)})
        r = rows[-1]
        print(f"seed {seed}: {r['name']} noise {v['noise']}: blew up {r['blew_up']} ({r['how']}) after "
              f"{r['after_ps']:.2f} ps, <T> {r['t_kin_mean_k']:.0f} K, max {T_WINDOW_PS} ps T {r['t_kin_window_max_k']:.0f} K, "
              f"{r['seconds']:.0f} s", flush=True)
        write_json_atomic(path, rows)
    return rows

# --- phase 4: energy conservation without thermostat ---------------------------------------------------------
NVE_PS = 0.5
NVE_STATES = 6


def nve(st: dict, cvs: dict, seed: int, work: Path, failure_step: int) -> list[dict]:
    """Total-energy change of plain velocity Verlet (no thermostat, bias frozen) over ``NVE_PS`` from ring states
    before the blow-up, at 2 and 0.5 fs, for: the force field alone, + the OPES/walls bias as run, + that bias with
    its forces capped, + the bias with untruncated kernels. A force that the integrator resolves conserves energy."""
    path = work / "nve.json"
    if path.is_file():
        return json.loads(path.read_text())
    rings = sorted((int(np.load(p)["runner/step"]), p) for p in work.glob("ring_*.npz"))
    rings = [(k, p) for k, p in rings if failure_step - RERUN_BACK_STEPS <= k < failure_step - 500]
    picks = [rings[i] for i in np.linspace(0, len(rings) - 1, NVE_STATES).round().astype(int)]
    kinds = {"force field only": {"with_bias": False}, "bias as run": {},
             f"bias, guard cap {GUARD_CAP_KJMOL_NM:g}": {"guard": "cap"},
             f"bias, kernel_cutoff {UNTRUNCATED_CUTOFF:g}": {"kernel_cutoff": UNTRUNCATED_CUTOFF}}
    rows = []
    for dt_fs in (2.0, 0.5):
        for kind, options in kinds.items():
            options = dict(options)
            guard = ForceGuard(GUARD_CAP_KJMOL_NM) if options.pop("guard", None) else None
            walker = Walker(st, cvs["eager"], compile=True, seed=seed, timestep_ps=dt_fs * 1e-3, nve=True, guard=guard,
                            **options)
            for step, ring in picks:
                with np.load(ring) as data:
                    walker.runner.load_state_dict({k: data[k] for k in data.files}, str(ring))
                pos, vel = ring_positions_velocities(ring)
                context = walker.simulation.context
                context.setPositions(pos)
                context.setVelocities(vel)
                context.applyConstraints(1e-6)
                context.applyVelocityConstraints(1e-6)
                energies, n = [], int(round(NVE_PS / (dt_fs * 1e-3)))
                chunk = max(1, n // 100)
                for _ in range(0, n, chunk):
                    e = context.getState(getEnergy=True)
                    energies.append((e.getPotentialEnergy() + e.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
                    walker.simulation.step(chunk)
                energies = np.array(energies)
                finite = bool(np.all(np.isfinite(energies)))
                rows.append({"ring_step": step, "dt_fs": dt_fs, "kind": kind, "finite": finite,
                             "energy_drift_kjmol": float(energies[-1] - energies[0]) if finite else None,
                             "energy_range_kjmol": float(np.ptp(energies)) if finite else None,
                             "guard_capped": None if guard is None else guard.n_capped})
    write_json_atomic(path, rows)
    return rows


# --- phase 5: the cliff in the CV that the energy jumps cross -------------------------------------------------
JUMP_KJMOL = 10.0
LINE_POINTS = 2001


def _scan_line(evaluator: CVEvaluator, bias, x0: np.ndarray, x1: np.ndarray) -> dict:
    """s along the straight line from ``x0`` to ``x1`` (one MD step): how much of its change happens how fast."""
    lam = np.linspace(0.0, 1.0, LINE_POINTS)
    s = np.array([evaluator.values(x0 + t * (x1 - x0))[0] for t in lam])
    step_nm = float(np.linalg.norm(x1 - x0))
    slope = np.abs(np.diff(s)) / (step_nm / (LINE_POINTS - 1))  # |ds/dl| along the path, 1/nm
    k = int(np.argmax(slope))
    x_peak = x0 + lam[k] * (x1 - x0)
    _, jac = evaluator.jacobian(x_peak, batched=False)
    _, _, f = evaluator.bias_energy_forces(x_peak, bias)
    sorted_steps = np.sort(np.abs(np.diff(s)))[::-1]
    half = int(np.searchsorted(np.cumsum(sorted_steps), 0.5 * sorted_steps.sum())) + 1
    return {"s_start": float(s[0]), "s_end": float(s[-1]), "step_nm": step_nm,
            "max_slope_along_step_per_nm": float(slope.max()), "grad_s0_norm_at_peak_per_nm": float(np.linalg.norm(jac[0])),
            "bias_force_max_at_peak_kjmol_nm": float(np.linalg.norm(f, axis=1).max()),
            "width_holding_half_of_ds_nm": half * step_nm / (LINE_POINTS - 1)}


def cliff(st: dict, cvs: dict, seed: int, work: Path, dt_fs: float = 0.5, ps: float = 0.5,
          compile: bool = True) -> dict:
    """NVE at ``dt_fs`` (bias frozen) from the ring state whose NVE energy grew most: every step whose total energy
    jumps by more than ``JUMP_KJMOL``, with a scan of the CV along that step; ``compile=False``: the TorchScript CV
    drives the MD (the same kicks with the other route)."""
    path = work / ("cliff.json" if compile else "cliff_torchscript.json")
    if path.is_file():
        return json.loads(path.read_text())
    rows = [r for r in json.loads((work / "nve.json").read_text())
            if r["kind"] == "bias as run" and r["dt_fs"] == dt_fs and r["finite"]]
    worst = max(rows, key=lambda r: r["energy_drift_kjmol"])
    ring = next(p for p in work.glob("ring_*.npz") if int(np.load(p)["runner/step"]) == worst["ring_step"])
    walker = Walker(st, cvs["eager" if compile else "scripted"], compile=compile, seed=seed, timestep_ps=dt_fs * 1e-3,
                    nve=True)
    with np.load(ring) as data:
        walker.runner.load_state_dict({k: data[k] for k in data.files}, str(ring))
    pos, vel = ring_positions_velocities(ring)
    context, idx = walker.simulation.context, walker.force.callback.evaluator.atom_indices
    context.setPositions(pos)
    context.setVelocities(vel)
    context.applyConstraints(1e-6)
    context.applyVelocityConstraints(1e-6)
    scripted = CVEvaluator(cvs["scripted"])

    def snapshot():
        state = context.getState(getPositions=True, getEnergy=True)
        e = (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
        return np.asarray(state.getPositions(asNumpy=True)._value)[idx], e

    x, e = snapshot()
    e0, jumps, n = e, [], int(round(ps / (dt_fs * 1e-3)))
    for k in range(n):
        walker.simulation.step(1)
        x1, e1 = snapshot()
        if abs(e1 - e) > JUMP_KJMOL:
            jumps.append({"step": k + 1, "energy_jump_kjmol": e1 - e, **_scan_line(scripted, walker.bias, x, x1)})
        x, e = x1, e1
    result = {"ring_step": worst["ring_step"], "dt_fs": dt_fs, "ps": ps, "cv_route": "compiled" if compile else "TorchScript",
              "energy_gain_kjmol": e - e0,
              "energy_gain_in_jumps_kjmol": float(sum(j["energy_jump_kjmol"] for j in jumps)), "jumps": jumps}
    write_json_atomic(path, result)
    return result

# --- the report --------------------------------------------------------------------------------------------------
def bias_profile(st: dict, work: Path, step: int, replay_rows: list[dict]) -> dict:
    """dV/ds of the bias state at ``step`` on a 1e-4 grid: the jump at the edge of the heaviest (truncated) kernel,
    the same kernels untruncated, and |∇s0| where the walker met that edge."""
    ring = ring_state_before(work, step)
    out = {"ring_step": int(np.load(ring)["runner/step"])}
    for name, cutoff in (("as_run", None), ("untruncated", UNTRUNCATED_CUTOFF)):
        bias = make_bias(st, st["timestep_ps"], kernel_cutoff=cutoff)
        with np.load(ring) as data:
            bias.load_state_dict({k[5:]: data[k] for k in data.files if k.startswith("bias/")})
        opes = bias.biases[0].inner
        grid = np.arange(st["walls_at"][0], st["walls_at"][1], 1e-4)
        slope = np.array([opes.energy_and_gradient(np.array([x]))[1][0] for x in grid])
        jumps = np.abs(np.diff(slope))
        k = int(np.argmax(jumps))
        out[name] = {"max_abs_dV_ds": float(np.abs(slope).max()), "largest_step_in_dV_ds_per_1e-4": float(jumps[k]),
                     "at_s": float(grid[k])}
        if cutoff is None:
            heavy = int(np.argmax(opes.heights))
            h_nz = float(opes.heights[heavy] / opes.kde_norm / opes.zed)
            sigma, centre, r_c = float(opes.sigmas[heavy, 0]), float(opes.centers[heavy, 0]), float(np.sqrt(opes.cutoff2))
            out.update({"n_kernels": int(len(opes.heights)), "heavy_kernel_centre": centre, "heavy_kernel_sigma": sigma,
                        "heavy_kernel_h_over_NZ": h_nz, "edge_s": centre - r_c * sigma, "cutoff_sigmas": r_c,
                        "predicted_jump_dV_ds": float(opes.kbt * opes.prefactor * r_c / sigma * h_nz)})
    finite = [r for r in replay_rows if r.get("finite")]
    near = [r["grad_s0_norm_per_nm"] for r in finite if abs(r["cv"][0] - out["edge_s"]) < 0.3]
    out["grad_s0_near_edge_median_per_nm"] = float(np.median(near)) if near else None
    out["grad_s0_C7eq_median_per_nm"] = float(np.median([r["grad_s0_norm_per_nm"] for r in finite if r["cv"][0] > -0.3]))
    out["grad_s0_C7ax_median_per_nm"] = float(np.median([r["grad_s0_norm_per_nm"] for r in finite if r["cv"][0] < -3]))
    return out


def last_ps_table(rows: list[dict], broken: int, dt_ps: float) -> list[dict]:
    """The replay's probes in windows before the first broken step B: maxima of what each window saw."""
    out = []
    for lo, hi in ((5.0, 2.0), (2.0, 1.0), (1.0, 0.2), (0.2, 0.02), (0.02, 0.0)):
        w = [r for r in rows if r.get("finite") and lo >= (broken - r["step"]) * dt_ps > hi - 1e-12]
        if not w:
            continue
        top = max(w, key=lambda r: r["bias_force_max_kjmol_nm"])
        hess = [r for r in w if "omega_dt_total" in r]
        out.append({"window_ps_before_B": [lo, hi], "n_probes": len(w),
                    "s0_range": [min(r["cv"][0] for r in w), max(r["cv"][0] for r in w)],
                    "opes_kjmol_range": [min(r["opes_kjmol"] for r in w), max(r["opes_kjmol"] for r in w)],
                    "walls_kjmol_max": max(r["walls_kjmol"] for r in w),
                    "t_kin_mean_k": float(np.mean([r["t_kin_k"] for r in w])), "t_kin_max_k": max(r["t_kin_k"] for r in w),
                    "grad_s0_max_per_nm": max(r["grad_s0_norm_per_nm"] for r in w),
                    "bias_force_max_kjmol_nm": top["bias_force_max_kjmol_nm"], "bias_force_max_atom": top["bias_force_max_atom"],
                    "bias_force_max_at_s0": top["cv"][0], "ff_force_on_that_atom_kjmol_nm": top["ff_force_on_that_atom_kjmol_nm"],
                    "ff_force_max_cv_atoms_kjmol_nm": max(r["ff_force_max_cv_atoms_kjmol_nm"] for r in w),
                    "bond_stretch_max": max(r["bond_stretch_max"] for r in w),
                    "compiled_vs_scripted_rel_max": max(r["compiled_vs_scripted_max_abs_kjmol_nm"] for r in w)
                    / max(max(r["bias_force_max_kjmol_nm"] for r in w), 1e-12),  # of the window's largest bias force
                    "compiled_vs_scripted_abs_max_kjmol_nm": max(r["compiled_vs_scripted_max_abs_kjmol_nm"] for r in w),
                    "omega_dt_bias_max": max((r["omega_dt_bias"] for r in hess), default=None),
                    "omega_dt_ff_max": max((r["omega_dt_ff"] for r in hess), default=None)})
    return out


def report(st: dict, seeds: list[int], work_root: Path) -> dict:
    sampling = {r["seed"]: r for r in json.loads((RESULTS / "sampling.json").read_text())["rows"] if r["cv"] == "learned"}
    seeds_out, reruns_rows = [], []
    for seed in seeds:
        work = work_root / f"seed{seed}"
        rep = json.loads((work / "reproduce.json").read_text())
        entry = {"seed": seed, "reproduced_detection_step": rep["failure"] and rep["failure"]["step"],
                 "sampling_json_failure": sampling.get(seed, {}).get("failure"), "ms_per_step": rep["ms_per_step"]}
        if (work / "replay.json").is_file():
            replay_result = json.loads((work / "replay.json").read_text())
            broken = replay_result["first_broken_step"]
            entry.update({"first_broken_step": broken,
                          "last_ps": last_ps_table(replay_result["rows"], broken, st["timestep_ps"]),
                          "last_steps": [{k: r.get(k) for k in ("step", "cv", "opes_kjmol", "dV_ds", "grad_s0_norm_per_nm",
                                                                "bias_force_max_kjmol_nm", "bias_force_max_atom",
                                                                "ff_force_max_cv_atoms_kjmol_nm", "t_kin_k", "bond_stretch_max")}
                                         for r in replay_result["rows"][-6:]],
                          "bias_profile": bias_profile(st, work, broken, replay_result["rows"])})
        if (work / "nve.json").is_file():
            nve_rows = json.loads((work / "nve.json").read_text())
            entry["nve"] = [{"kind": kind, "dt_fs": dt, "max_energy_gain_kjmol": max(r["energy_drift_kjmol"] for r in group),
                             "mean_abs_energy_change_kjmol": float(np.mean([abs(r["energy_drift_kjmol"]) for r in group])),
                             "n_states": len(group), "guard_capped": sum(r["guard_capped"] or 0 for r in group)}
                            for kind in dict.fromkeys(r["kind"] for r in nve_rows) for dt in (2.0, 0.5)
                            for group in [[r for r in nve_rows if r["kind"] == kind and r["dt_fs"] == dt and r["finite"]]]
                            if group]
        if (work / "cliff.json").is_file():
            c = json.loads((work / "cliff.json").read_text())
            entry["cliff"] = {**{k: v for k, v in c.items() if k != "jumps"}, "n_jumps": len(c["jumps"]), "jumps": c["jumps"]}
        if (work / "cliff_torchscript.json").is_file():
            c = json.loads((work / "cliff_torchscript.json").read_text())
            entry["cliff_torchscript"] = {**{k: v for k, v in c.items() if k != "jumps"}, "n_jumps": len(c["jumps"]),
                                          "s0_of_jumps": [[j["s_start"], j["s_end"], j["energy_jump_kjmol"]] for j in c["jumps"]]}
        if (work / "reruns.json").is_file():
            reruns_rows += [{"seed": seed, **r} for r in json.loads((work / "reruns.json").read_text())]
        seeds_out.append(entry)
    compiled_rel = max((w["compiled_vs_scripted_rel_max"] for e in seeds_out for w in e.get("last_ps", [])), default=None)
    fixed = [r for r in reruns_rows if r["kernel_cutoff"] is not None]
    as_run = [r for r in reruns_rows if r["kernel_cutoff"] is None and r["compile"] and r["timestep_ps"] == st["timestep_ps"]]
    jump = [e["bias_profile"]["as_run"]["largest_step_in_dV_ds_per_1e-4"] for e in seeds_out if "bias_profile" in e]
    targets = [
        {"name": "blow-ups reproduced at sampling.json's detection step (seeds)", "unit": "seeds", "target": len(seeds),
         "value": sum(1 for e in seeds_out if e["sampling_json_failure"] and e["reproduced_detection_step"] is not None
                      and f"step {e['reproduced_detection_step']}:" in e["sampling_json_failure"]),
         "met": None},
        {"name": "compiled vs TorchScript bias force, max abs difference / largest bias force, per window of the last 5 ps",
         "unit": "",
         "value": compiled_rel, "target": 1e-3, "met": compiled_rel is not None and compiled_rel <= 1e-3},
        {"name": "largest jump of dV/ds at the blow-up (per 1e-4 CV units), as run", "unit": "kJ/mol per CV unit",
         "value": max(jump) if jump else None, "target": "none (continuous)", "met": bool(jump) and max(jump) < 5},
        {"name": "reruns as run (2 fs, compiled) that blew up within 12 ps", "unit": "runs",
         "value": sum(r["blew_up"] for r in as_run), "target": f"of {len(as_run)}", "met": None},
        {"name": "reruns with untruncated OPES kernels that blew up within 12 ps", "unit": "runs",
         "value": sum(r["blew_up"] for r in fixed), "target": 0, "met": not any(r["blew_up"] for r in fixed)},
    ]
    for t in targets:
        if t["met"] is None:
            t["met"] = t["value"] == t["target"] if isinstance(t["target"], int) else None
    return {"benchmark": "blowup", "date": now_utc(), "machine": machine(),
            "settings": {**st, "ring_steps": RING_STEPS, "replay_back_steps": BACK_STEPS, "rerun_back_steps": RERUN_BACK_STEPS,
                         "rerun_ps": RERUN_PS, "noise_seeds": list(NOISE_SEEDS), "guard_cap_kjmol_nm": GUARD_CAP_KJMOL_NM,
                         "untruncated_kernel_cutoff_sigmas": UNTRUNCATED_CUTOFF, "nve_ps": NVE_PS, "nve_states": NVE_STATES,
                         "platform": "Reference", "cv_file_legacy_format": True},
            "rows": {"seeds": seeds_out, "reruns": reruns_rows}, "targets": targets}


def _f(x, fmt=".3g") -> str:
    return "n/a" if x is None else format(x, fmt)


def markdown(result: dict) -> str:
    st, seeds = result["settings"], result["rows"]["seeds"]
    lines = [f"# blowup ({result['date']}): why learned-CV OPES walkers of `sampling.json` blew up (issue 17)", "",
             f"Settings as the sampling run: ala2/OBC, {st['temperature_k']:g} K, {st['timestep_ps'] * 1e3:g} fs, HBond "
             f"constraints, OPES-metad on learned-CV component {st['component']} (sigma {st['sigma_cv']:.4g}, barrier "
             f"{st['barrier_kjmol']:g} kJ/mol, pace {st['pace_steps']}), walls at [{st['walls_at'][0]:.3g}, "
             f"{st['walls_at'][1]:.3g}], PythonForce + torch.compile, bias every step, Reference platform. The CV file "
             "predates the typed contract: read as TorchScript + its eager twin with moved classes found by name "
             "(checked equal). B = first step with a heavy-atom bond stretched > 50 % or NaN.", "",
             "## Mechanism (measured below)", "",
             "Not torch.compile numerics (compiled and TorchScript bias forces agree to 1.3e-4 of the largest force; "
             "the NVE kicks and the heating happen with the TorchScript CV too), not the walls (0 kJ/mol throughout), "
             "not extrapolation (s0 stays in the training range where it breaks, at s0 = -0.92), not a too-stiff "
             "smooth force (omega*dt of the bias <= 0.8 away from the edge; 0.5 fs NVE gains as much as 2 fs). It is "
             "the OPES kernel truncation (PLUMED's KERNEL_CUTOFF, value at the cutoff subtracted): at the edge of the "
             "heavy C7eq kernel, c - 5.12 sigma = -0.92, dV/ds jumps from 0 to 680-900 kJ/mol per CV unit, and the "
             "learned CV's gradient there (the C7eq/C7ax transition region) is ~180/nm against ~14-67/nm in C7eq, so "
             "the bias force has a step of ~1e5 kJ/mol/nm. Verlet cannot integrate a force step: each crossing "
             "changes the total energy by up to dF*v*dt (+10 to +90 kJ/mol per step measured), mostly upwards. Seed 3 "
             "heated from ~300 K (step 85,000) to ~1,500 K (86,000) and to 10^4 K before its bonds broke (88,797); seed 4 took one "
             "9.7e4 kJ/mol/nm kick at s0 = -0.922 (712 K -> 21,000 K in one step). h/(N Z) = 16-17 because Z averages "
             "the KDE over 16-17 kernel centres of which all but the C7eq one sit in C7ax at the bias floor.", "",
             "Fix: untruncated kernels (OPES kernel_cutoff = 15 sigma: dV/ds continuous, max 50 instead of 680-905): "
             "0 blow-ups; at 1 fs as clean as the unbiased reference, at 2 fs a few warm episodes remain (the smooth "
             "bias through a 180/nm CV); a ForceGuard watching the kinetic temperature stops a heating run ps before "
             "the NaN with a restartable state. A 1 fs step with truncated kernels does not fix it.", "",
             "## Reproduction", "", "| seed | detected (this run) | sampling.json | first broken step B | ms/step |",
             "|---|---|---|---|---|"]
    for e in seeds:
        lines.append(f"| {e['seed']} | step {e['reproduced_detection_step']} | {(e['sampling_json_failure'] or 'ran to the end').split(':')[0]} | "
                     f"{e.get('first_broken_step', 'n/a')} | {e['ms_per_step']:.2f} |")
    for e in seeds:
        if "last_ps" not in e:
            continue
        bp = e["bias_profile"]
        lines += ["", f"## Seed {e['seed']}: the last 5 ps before B (replayed with the same noise, probed)", "",
                  "| ps before B | s0 range | OPES kJ/mol | walls | T_kin mean / max K | max abs(grad s0) 1/nm | max bias force "
                  "kJ/mol/nm (atom, at s0) | FF force on it / max on CV atoms | max bond stretch | compiled vs TorchScript "
                  "(rel / abs) | omega*dt bias / FF |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for w in e["last_ps"]:
            lines.append(
                f"| {w['window_ps_before_B'][0]:g}-{w['window_ps_before_B'][1]:g} | {w['s0_range'][0]:.2f} .. "
                f"{w['s0_range'][1]:.2f} | {w['opes_kjmol_range'][0]:.1f} .. {w['opes_kjmol_range'][1]:.1f} | "
                f"{w['walls_kjmol_max']:.2g} | {w['t_kin_mean_k']:.0f} / {w['t_kin_max_k']:.0f} | {w['grad_s0_max_per_nm']:.0f} | "
                f"{w['bias_force_max_kjmol_nm']:.3g} ({w['bias_force_max_atom']}, {w['bias_force_max_at_s0']:.2f}) | "
                f"{w['ff_force_on_that_atom_kjmol_nm']:.3g} / {w['ff_force_max_cv_atoms_kjmol_nm']:.3g} | "
                f"{w['bond_stretch_max']:.2f} | {w['compiled_vs_scripted_rel_max']:.1e} / "
                f"{w['compiled_vs_scripted_abs_max_kjmol_nm']:.1e} | {_f(w['omega_dt_bias_max'], '.2f')} / "
                f"{_f(w['omega_dt_ff_max'], '.2f')} |")
        lines += ["", f"Bias state at B (ring step {bp['ring_step']}): {bp['n_kernels']} kernels; the heaviest at s0 = "
                  f"{bp['heavy_kernel_centre']:.2f} (sigma {bp['heavy_kernel_sigma']:.3f}, h/(N Z) = "
                  f"{bp['heavy_kernel_h_over_NZ']:.1f}) is truncated at {bp['cutoff_sigmas']:.2f} sigma, i.e. at s0 = "
                  f"{bp['edge_s']:.2f}. There dV/ds jumps by {bp['as_run']['largest_step_in_dV_ds_per_1e-4']:.0f} kJ/mol per "
                  f"CV unit within 1e-4 (at most kT(1-1/gamma) r_c/sigma h/(N Z) = {bp['predicted_jump_dV_ds']:.0f}, less where light kernels add to P); "
                  f"largest abs(dV/ds) {bp['as_run']['max_abs_dV_ds']:.0f}. The same kernels untruncated (kernel_cutoff "
                  f"{st['untruncated_kernel_cutoff_sigmas']:g}): max abs(dV/ds) {bp['untruncated']['max_abs_dV_ds']:.0f}, "
                  f"largest step {bp['untruncated']['largest_step_in_dV_ds_per_1e-4']:.2g}. Median abs(grad s0): "
                  f"{_f(bp['grad_s0_near_edge_median_per_nm'], '.0f')}/nm within 0.3 of the edge, "
                  f"{bp['grad_s0_C7eq_median_per_nm']:.0f}/nm in C7eq (s0 > -0.3), {bp['grad_s0_C7ax_median_per_nm']:.0f}/nm "
                  "in C7ax (s0 < -3).", "", "Last steps:", "",
                  "| step | s0 | dV/ds | abs(grad s0) | bias force max (atom) | FF max on CV atoms | T_kin K | bond stretch |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in e["last_steps"]:
            if r.get("cv") is None:
                continue
            lines.append(f"| {r['step']} | {r['cv'][0]:.3f} | {r['dV_ds'][0]:.1f} | {r['grad_s0_norm_per_nm']:.0f} | "
                         f"{r['bias_force_max_kjmol_nm']:.3g} ({r['bias_force_max_atom']}) | "
                         f"{r['ff_force_max_cv_atoms_kjmol_nm']:.3g} | {r['t_kin_k']:.0f} | {r['bond_stretch_max']:.2f} |")
        if "nve" in e:
            lines += ["", f"NVE (velocity Verlet, no thermostat, bias frozen) for {st['nve_ps']:g} ps from "
                      f"{st['nve_states']} ring states in the 11 ps before B:", "",
                      "| forces | dt fs | max energy gain kJ/mol | mean abs change kJ/mol | capped atom-forces |", "|---|---|---|---|---|"]
            for r in e["nve"]:
                lines.append(f"| {r['kind']} | {r['dt_fs']:g} | {r['max_energy_gain_kjmol']:.1f} | "
                             f"{r['mean_abs_energy_change_kjmol']:.2f} | {r['guard_capped']} |")
        if "cliff" in e:
            c = e["cliff"]
            if not c["jumps"]:
                lines += ["", f"NVE at {c['dt_fs']:g} fs from ring step {c['ring_step']}: no single step changed the total "
                          f"energy by > {JUMP_KJMOL:g} kJ/mol (from these 300 K states the walker did not reach the kernel "
                          "edge within the NVE window; this seed's blow-up is the single kick in the last steps above)."]
                continue
            lines += ["", f"NVE at {c['dt_fs']:g} fs from ring step {c['ring_step']}: total energy +{c['energy_gain_kjmol']:.0f} "
                      f"kJ/mol in {c['ps']:g} ps, {c['energy_gain_in_jumps_kjmol']:.0f} of it in {c['n_jumps']} single steps "
                      f"of > {JUMP_KJMOL:g} kJ/mol. Along each such step s0 changes smoothly (max slope along the step "
                      f"{_f(max((j['max_slope_along_step_per_nm'] for j in c['jumps']), default=None), '.0f')}/nm), "
                      "and every one crosses the kernel edge: " + ", ".join(
                          f"s0 {j['s_start']:.2f} -> {j['s_end']:.2f} ({j['energy_jump_kjmol']:+.0f})" for j in c["jumps"]) + "."]
        if "cliff_torchscript" in e:
            c = e["cliff_torchscript"]
            lines += ["", f"The same NVE with the TorchScript CV driving the MD: +{c['energy_gain_kjmol']:.0f} kJ/mol, "
                      f"{c['energy_gain_in_jumps_kjmol']:.0f} of it in {c['n_jumps']} single-step jumps, at s0 " + ", ".join(
                          f"{a:.2f} -> {b:.2f} ({d:+.0f})" for a, b, d in c["s0_of_jumps"]) + "."]
    reruns = result["rows"]["reruns"]
    if reruns:
        lines += ["", "## Reruns, by variant (both seeds; per-run rows below)", "",
                  "| variant | runs | blew up | runs with a 0.5-ps window > 450 K | mean T_kin K | max 0.5-ps T_kin K |",
                  "|---|---|---|---|---|---|"]
        for name in dict.fromkeys(r["name"] for r in reruns):
            g = [r for r in reruns if r["name"] == name]
            lines.append(f"| {name} | {len(g)} | {sum(r['blew_up'] for r in g)} | "
                         f"{sum(r['windows_over_450k'] > 0 for r in g)} | {np.mean([r['t_kin_mean_k'] for r in g]):.0f} | "
                         f"{max(r['t_kin_window_max_k'] for r in g):.0f} |")
        lines += ["", f"## Reruns from the ring state ~{st['rerun_back_steps'] * st['timestep_ps']:g} ps before the "
                  f"detection, {st['rerun_ps']:g} ps each", "",
                  "noise: `same` = the saved run's random stream (the original trajectory up to numerics), else a new seed.",
                  "", "| seed | variant | noise | blew up (after ps) | T_kin mean K | max 0.5-ps T_kin K | 0.5-ps windows "
                  "> 450 K | capped |", "|---|---|---|---|---|---|---|---|"]
        for r in reruns:
            lines.append(f"| {r['seed']} | {r['name']} | {r['noise'] if r['noise'] is not None else 'same'} | "
                         f"{'yes (' + format(r['after_ps'], '.2f') + ')' if r['blew_up'] else 'stopped by the guard at ' + format(r['after_ps'], '.2f') if r.get('stopped_by_guard') else 'no'} | {r['t_kin_mean_k']:.0f} | "
                         f"{r['t_kin_window_max_k']:.0f} | {r['windows_over_450k']} of {r['n_windows']} | "
                         f"{r['guard_capped'] if r['guard_capped'] is not None else ''} |")
    lines += targets_table([{**t, "target": t["target"]} for t in result["targets"]])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--work", default="runs/blowup")
    parser.add_argument("--phases", nargs="+", default=["reproduce", "replay", "reruns", "nve", "cliff"])
    args = parser.parse_args()
    st = sampling_settings()
    if args.phases == ["report"]:
        result = report(st, args.seeds, Path(args.work))
        save("blowup", False, result, markdown(result))
        return
    torch.set_num_threads(st["threads"])
    cvs = load_cv_pair(st["cv"])
    for seed in args.seeds:
        work = Path(args.work) / f"seed{seed}"
        if "reproduce" in args.phases:
            print(json.dumps(reproduce(st, cvs, seed, work)), flush=True)
        fail = json.loads((work / "reproduce.json").read_text())["failure"]
        if fail is None:
            continue
        if "replay" in args.phases:
            rep = replay(st, cvs, seed, work, fail["step"])
            print(f"seed {seed}: replay from {rep['from_step']}: first broken step {rep['first_broken_step']}", flush=True)
        if "reruns" in args.phases:
            reruns(st, cvs, seed, work, fail["step"])
        if "nve" in args.phases:
            for r in nve(st, cvs, seed, work, fail["step"]):
                print(r, flush=True)
        if "cliff" in args.phases:
            for compiled in (True, False):
                c = cliff(st, cvs, seed, work, compile=compiled)
                print({k: v for k, v in c.items() if k != "jumps"}, flush=True)


if __name__ == "__main__":
    main()
