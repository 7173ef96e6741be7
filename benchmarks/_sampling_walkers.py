"""One walker of ``benchmarks/sampling.py``: build its bias on its route, run it resumably, analyse its COLVAR.

Arms: ``learned`` (the exported GNN CV), ``distances`` (the distance-VAMPNet baseline exported by ``cvlearn learn``
with ``export_baselines: true``) and ``phi_psi`` (the reference). The two learned arms are biased alike: OPES (or
WT-metad) on one component, walls one margin (10 % of the training range) outside the training range, σ from
:func:`openmm_plugin.bias.sigma.learned_cv_sigma`, through one of :data:`ROUTES`. φ/ψ goes through the native route
(CustomTorsionForces + tabulated bias in a CustomCVForce, ~10x cheaper than a PythonForce).

Resume: each walker is a run recorded with :func:`cvlearn.run_dir.open_run` (``<work>/<name>.run.json``: its settings
and the CV file's hash; changed settings are refused, ``--restart-fresh`` starts it over). It checkpoints bias +
OpenMM state every ``checkpoint_steps`` (:class:`BiasRunner`); a killed walker restarts from its last checkpoint, its
COLVAR cut back to that time; a finished one (also one that blew up) is reused from ``<name>.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch

from cvlearn.analysis.reweighting import delta_f_kjmol, metad_weights, opes_weights
from cvlearn.analysis.transitions import count_phi_transitions, phi_basins
from cvlearn.data.colvar import read_colvar
from cvlearn.io import write_json_atomic
from cvlearn.run_dir import open_run
from openmm_plugin.bias import BiasReporter, BiasRunner, OPESMetad, native_bias_force
from openmm_plugin.bias.base import BiasSum, OnComponents
from openmm_plugin.bias.metad import Metadynamics
from openmm_plugin.bias.restraints import Wall
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, make_simulation
from systems import alanine_dipeptide as ala2

ARMS = ("learned", "phi_psi", "distances")
ROUTES = ("torchscript", "compiled", "torchforce")  # PythonForce + TorchScript; + torch.compile; openmm-torch TorchForce
PHI_PSI_SIGMA_RAD = 0.35
NATIVE_BINS = 128  # per torsion: spacing 2π/128 = 0.049 rad
PHI_PSI_SIGMA_MIN_RAD = 2 * 2 * np.pi / NATIVE_BINS  # OPES kernels shrink; the native table needs σ >= 2 spacings


UNNAMED_MTS = 2  # walkers named without _mts<k> ran the bias every 2nd step (the first runs keep their names)


def walker_name(job: dict) -> str:
    """``<arm>[-<tag>]_<route>_<timestep>fs[_mts<k>]_s<seed>``: runs that differ in arm, CV tag, route, timestep, MTS
    or seed never share files (``_mts<k>`` only when a learned arm's k is not :data:`UNNAMED_MTS`, so older walkers
    keep their names; the φ/ψ reference never has a tag, so every tagged learned CV is compared with the same
    reference walkers)."""
    mts = f"_mts{job['mts']}" if job["cv"] != "phi_psi" and job["mts"] != UNNAMED_MTS else ""
    arm = f"{job['cv']}-{job['tag']}" if job.get("tag") else job["cv"]
    return f"{arm}_{job['route']}_{job['timestep_fs']:g}fs{mts}_s{job['seed']}"


def run_key(job: dict) -> dict:
    """The settings that decide a walker's trajectory (not where or how fast it runs)."""
    return {k: v for k, v in job.items() if k not in ("tmp", "threads")}


def _phi_function(phi_atoms):
    a = list(phi_atoms)

    def phi(positions: np.ndarray) -> float:
        p0, p1, p2, p3 = (positions[i] for i in a)
        b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
        n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
        return float(np.arctan2(np.linalg.norm(b2) * np.dot(b1, n2), np.dot(n1, n2)))

    return phi


def _adaptive(method: str, sigma, lower, upper, barrier_kjmol: float, pace: int, periods=None, sigma_min=None,
              kernel_cutoff=None):
    """OPES-metad with ``barrier_kjmol``, or WT-metad with bias factor 8 and 1.2 kJ/mol hills (the demo's).

    ``kernel_cutoff`` None is PLUMED's (the engine's default, for φ/ψ); the learned arms take ``cvlearn bias``'s
    default (``OPESParams().kernel_cutoff``, 15 σ, in the job: a truncated kernel's dV/ds jump blew walkers up, blowup.md)."""
    if method == "opes":
        return OPESMetad(sigma=sigma, barrier_kjmol=barrier_kjmol, pace_steps=pace, temperature_k=300.0, periods=periods,
                         sigma_min=sigma_min, kernel_cutoff=kernel_cutoff)
    return Metadynamics(sigma=sigma, height_kjmol=1.2, bias_factor=8.0, pace_steps=pace, temperature_k=300.0,
                        lower=lower, upper=upper, periods=periods, use_grid=True)


def learned_bias(job: dict):
    """Adaptive bias + walls on component ``job['component']`` of a learned CV (the learned and distance arms)."""
    lo, hi = job["range"]
    margin, c, d = 0.1 * (hi - lo), job["component"], job["n_cvs"]
    adaptive = _adaptive(job["method"], [job["sigma_cv"]], [lo - 2 * margin], [hi + 2 * margin], job["barrier_kjmol"],
                         job["pace"] // job["mts"], kernel_cutoff=job["kernel_cutoff"])
    # Walls one margin (10 % of the range) outside the training range: the learned CV at 300 K starts near an edge of
    # its 600 K training range, and a stiff wall right at the edge blew the MTS run up (measured).
    walls = ([Wall([lo - margin], [job["wall_kappa"]], side="lower"), Wall([hi + margin], [job["wall_kappa"]], side="upper")]
             if job["wall_kappa"] > 0 else [])
    return BiasSum([OnComponents(b, [c], d) for b in (adaptive, *walls)])


def _phi_psi_forces(topology) -> list[openmm.Force]:
    forces = []
    for quad in ala2.phi_psi_indices(topology):
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*[int(a) for a in quad], [])
        forces.append(force)
    return forces


def build(job: dict, molecule, save_path: Path, save_every: int):
    """(system, bias, runner) of a walker on its route; the runner checkpoints to ``save_path`` every ``save_every``."""
    from cvlearn.export import load_cv, load_eager_cv
    from openmm_plugin.forces import TorchBiasForce, python_bias_force

    system = molecule.system
    saving = {"save_path": save_path, "save_every_steps": save_every}
    if job["cv"] == "phi_psi":
        bias = _adaptive(job["method"], [PHI_PSI_SIGMA_RAD] * 2, [-np.pi] * 2, [np.pi] * 2, job["barrier_kjmol"],
                         job["pace"], periods=[2 * np.pi] * 2,
                         sigma_min=[PHI_PSI_SIGMA_MIN_RAD] * 2 if job["method"] == "opes" else None)
        native = native_bias_force(_phi_psi_forces(molecule.topology), bias, NATIVE_BINS, -np.pi, np.pi, True,
                                   force_group=BIAS_GROUP, system=system, cv_names=["phi", "psi"])
        return system, bias, BiasRunner(bias, native=native, **saving)
    bias = learned_bias(job)
    if job["route"] == "torchforce":
        cv = load_cv(job["cv_path"])[0]
        force = TorchBiasForce(system, cv, bias, force_group=BIAS_GROUP)
        return system, bias, BiasRunner(bias, cv=cv, on_update=force.refresh, **saving)
    compiled = job["route"] == "compiled"
    cv = load_eager_cv(job["cv_path"]) if compiled else load_cv(job["cv_path"])[0]
    force = python_bias_force(cv, bias, force_group=BIAS_GROUP, compile=compiled, system=system)
    system.addForce(force)
    return system, bias, BiasRunner(bias, callback=force.callback, on_update=forget_forces, **saving)


def forget_forces(simulation) -> None:
    """Make the integrator recompute forces after the bias changed (PythonForce route).

    An MTS integrator (a CustomIntegrator) keeps the slow-group forces of the step's end for the next step's first
    kick; OpenMM cannot know that the PythonForce's bias changed at a deposition, so that kick used the old bias, and a
    run resumed from a checkpoint (which recomputes them) left the uninterrupted one (measured: 5e-3 nm apart 300 outer
    steps after a deposition). Setting the same positions marks the forces stale; it costs one getState per deposition.
    """
    state = simulation.context.getState(getPositions=True)
    simulation.context.setPositions(state.getPositions(asNumpy=True))


def warm_up(evaluator, positions_nm: np.ndarray, calls: int = 3) -> None:
    """A few forward (+ backward) calls before the first step, so a session starts on the optimised graph.

    TorchScript's profiling executor runs its first calls on an unoptimised graph whose float32 rounding differs;
    a resumed walker would take those first steps where the uninterrupted one ran optimised, and part from it
    (measured: 1e-6 in the CV right after the checkpoint, chaotic growth to O(1) within 10 ps). torch.compile's first
    call compiles (~30 s): set-up, not per-step cost.
    """
    from openmm_plugin.bias.restraints import HarmonicRestraint

    at = positions_nm[evaluator.atom_indices]
    restraint = HarmonicRestraint(evaluator.values(at) + 1.0, 1.0)  # dV/ds != 0: the backward runs too
    for _ in range(calls):
        evaluator.values(at)
        evaluator.bias_energy_forces(at, restraint)


def open_walker(job: dict, restart_fresh: bool = False):
    """The walker's run record (created, resumed, or refused with the difference when its settings changed)."""
    tmp, name = Path(job["tmp"]), walker_name(job)
    inputs = {"cv": job["cv_path"]} if job["cv"] != "phi_psi" else {}
    outputs = [tmp / f"{name}{suffix}" for suffix in (".colvar", ".ckpt.npz", ".json")]
    return open_run(tmp / f"{name}.run.json", run_key(job), inputs, outputs=outputs, restart_fresh=restart_fresh)


def run_walker(job: dict) -> dict:
    """Run (or resume, or reuse) one walker; returns its result row (``cv`` = arm, ``route``, ms/step, ΔF, ...)."""
    tmp, name = Path(job["tmp"]), walker_name(job)
    run = open_walker(job)
    result_path = tmp / f"{name}.json"
    if run.finished and result_path.is_file():
        print(f"{name}: reusing the finished run in {result_path}", flush=True)
        return {"cv": job["cv"], **read_result(result_path)}
    torch.set_num_threads(job["threads"])
    molecule = ala2.build()
    mts = job["mts"] if job["cv"] != "phi_psi" else 1
    save_every = max(1, job["checkpoint_steps"] // mts)
    system, bias, runner = build(job, molecule, tmp / f"{name}.ckpt.npz", save_every)
    integrator = make_integrator(300.0, ala2.FRICTION_PER_PS, job["timestep_fs"] * 1e-3, seed=job["seed"],
                                 bias_group=BIAS_GROUP, bias_every_steps=mts)
    simulation = make_simulation(molecule.topology, system, integrator, "Reference")
    simulation.context.setPositions(molecule.positions_nm)
    simulation.context.setVelocitiesToTemperature(300.0 * unit.kelvin, job["seed"] + 1)
    if job["route"] in ("torchscript", "compiled"):
        warm_up(runner.evaluator, molecule.positions_nm)
    restored = runner.restore(simulation)
    start_step = simulation.currentStep
    reporter = BiasReporter(tmp / f"{name}.colvar", bias, runner.evaluator, job["report"] // mts, resume=True,
                            flush_every=10_000, cv_names=[f"cv{i}" for i in range(runner.evaluator.n_cvs)],
                            extra={"phi": _phi_function(ala2.phi_psi_indices(molecule.topology)[0])})
    reporter.keep_until(simulation.context.getState().getTime().value_in_unit(unit.picosecond))
    simulation.reporters.append(reporter)
    runner.on_save = reporter.flush  # the COLVAR on disk always reaches the checkpoint
    if restored:
        print(f"{name}: resumed from its checkpoint at step {start_step * mts}", flush=True)
    total = job["n_steps"] // mts
    failure = None
    started = time.perf_counter()
    try:
        runner.step(simulation, total - start_step)
    except FloatingPointError as error:  # a blown-up walker is a result to report, not a reason to lose the others
        failure = str(error)
    seconds = time.perf_counter() - started
    steps_now = (simulation.currentStep - start_step) * mts
    reporter.close()
    result = {**analyse(tmp / f"{name}.colvar", simulation.currentStep * mts, job["timestep_fs"]), "seed": job["seed"],
              "route": job["route"], "timestep_fs": job["timestep_fs"], "failure": failure,
              "ms_per_step": seconds * 1e3 / steps_now if steps_now else float("nan"), "steps_timed": steps_now,
              "resumed_at_step": start_step * mts if restored else None}
    write_json_atomic(result_path, {"job": run_key(job), "result": result})
    run.mark_finished(failure=failure)
    return {"cv": job["cv"], **result}


def read_result(path: Path) -> dict:
    import json

    return json.loads(Path(path).read_text())["result"]


def analyse(colvar: Path, n_steps: int, timestep_fs: float) -> dict:
    """Transitions, ΔF(C7ax − C7eq) and ΔF against time of one walker's COLVAR."""
    data = read_walker(colvar)
    phi, weights = reweighted_phi(data)
    in_ax, in_eq = phi_basins(phi)
    ns = n_steps * timestep_fs * 1e-6
    transitions = count_phi_transitions(data["phi"])
    t_ns, df_t = delta_f_over_time(data)
    return {"ns": ns, "transitions": transitions, "transitions_per_ns": transitions / ns if ns > 0 else float("nan"),
            "deltaF_C7ax_C7eq_kjmol": delta_f_kjmol(in_ax, in_eq, weights, 300.0),
            "deltaF_over_time": {"t_ns": t_ns.tolist(), "kjmol": df_t.tolist()}}


def read_walker(colvar: Path) -> dict:
    """A walker's COLVAR up to its first non-finite row: a walker that blew up is analysed until it did."""
    data = read_colvar(colvar)
    finite = np.all([np.isfinite(v) for v in data.values()], axis=0)
    end = int(np.argmin(finite)) if not finite.all() else finite.size
    return {k: v[:end] for k, v in data.items()}


def reweighted_phi(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """φ (rad) and unbiased frame weights from one walker's parsed COLVAR, the first 10 % dropped (bias still
    building)."""
    keep = slice(len(data["phi"]) // 10, None)
    rct = [k for k in data if k.endswith(".rct")]
    if rct:  # metadynamics: exp(β(V − c(t))); walls are static and add to V
        return data["phi"][keep], metad_weights(data["bias"][keep], data[rct[0]][keep], 300.0)
    return data["phi"][keep], opes_weights(data["bias"][keep], 300.0)  # OPES: quasi-static bias, exp(βV)


def delta_f_over_time(data: dict, points: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """ΔF(C7ax − C7eq) from the first t ns of one walker (each prefix reweighted as the whole run is), for a
    convergence plot: a biased run has converged when this curve has flattened."""
    n = len(data["phi"])
    t_ns, df = [], []
    for k in range(1, points + 1):
        if n * k // points == 0:
            continue
        phi, weights = reweighted_phi({key: v[: n * k // points] for key, v in data.items()})
        in_ax, in_eq = phi_basins(phi)
        t_ns.append(data["time"][n * k // points - 1] * 1e-3)
        df.append(delta_f_kjmol(in_ax, in_eq, weights, 300.0))
    return np.array(t_ns), np.array(df)


__all__ = ["ARMS", "UNNAMED_MTS", "ROUTES", "analyse", "build", "learned_bias", "open_walker", "read_walker", "reweighted_phi",
           "run_walker", "walker_name"]
