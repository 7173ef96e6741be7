"""bias_speed's paired rows (issue 17), each pair measured in the same run, interleaved, at OPES steady state.

* (a) OPES on φ/ψ through the native route (CustomTorsionForces + tabulated bias in a CustomCVForce) against unbiased
  MD: target ≤ 2x.
* (b) OPES on the GNN CV (the demo's 2-layer ET, dense, exported by ``export_cv``) against OPES on the distance-VAMPNet
  CV (pairwise distances of the same heavy atoms → the same MLP head as ``cvlearn learn`` builds, exported the same
  way), the same OPES settings, bias every step, each pair through one PythonForce route: the compiled eager CV
  (``CVEvaluator(compile=True)``: its Jacobian compiled ahead of time by AOTInductor on the CPU; the route the README
  recommends for production runs: target GNN ≤ 2x distances) and TorchScript (reported). ``--pairs-cv`` /
  ``--pairs-distance-cv`` time trained files instead (the cost does not depend on the weights).

Steady state: an OPES bias without kernels is flat (dV/ds = 0), so the PythonForce skips the CV's backward pass and
the native table is never refreshed. Every row is therefore warmed up past ``WARMUP_PACES`` depositions, and each
timed window spans whole paces (``window_paces`` of them: it holds that many depositions, table refreshes and, for
the learned CVs, a backward pass every step). Rows are timed round-robin (``repeats`` rounds), and each row reports the
fastest round (the CPUs are shared: the minimum is the least disturbed one) with every round listed.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch

from openmm_plugin.bias import BiasRunner, OPESMetad, OPESParams, native_bias_force
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, make_simulation
from systems import alanine_dipeptide as ala2

PACE_STEPS = 500  # PLUMED's ala2 example; 1 ps at 2 fs
WARMUP_PACES = 2  # > 1 pace: kernels exist, the backward pass runs, the table has been refreshed
BARRIER_KJMOL = 30.0
SIGMA_RANGE_FRACTION = 0.05  # OPES σ on a learned CV: the sampling benchmark's floor, 5 % of its training range
WALL_KAPPA = 100.0  # sampling.py's --wall-kappa
SIGMA_PHI_PSI_RAD = 0.15
NATIVE_BINS = 128


def _simulation(molecule, system):
    integrator = make_integrator(300.0, ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, bias_group=BIAS_GROUP)
    simulation = make_simulation(molecule.topology, system, integrator, "Reference")
    simulation.context.setPositions(molecule.positions_nm)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return simulation


def _opes(n_cvs: int, sigma: float, periods=None):
    return OPESMetad(sigma=[sigma] * n_cvs, barrier_kjmol=BARRIER_KJMOL, pace_steps=PACE_STEPS, temperature_k=300.0,
                     periods=periods)


def _learned_bias(spec):
    """The sampling benchmark's bias on a learned CV (``_sampling_walkers.learned_bias``): OPES on component 0, σ
    = 5 % of its training range, untruncated kernels, walls 10 % outside the range. Cheaper stand-ins blew trained
    CVs up within 10 ps (2-D OPES, σ 0.1, no walls: truncated kernels at step 4,000, the distance CV at 5,000)."""
    from benchmarks._sampling_walkers import learned_bias

    if spec.cv_range_training is None:
        raise SystemExit("bias_speed --pairs: the CV file has no training range (export it from cvlearn learn)")
    lo, hi = (float(x) for x in spec.cv_range_training[0])
    return learned_bias({"range": [lo, hi], "component": 0, "n_cvs": int(spec.n_cvs), "method": "opes",
                         "sigma_cv": SIGMA_RANGE_FRACTION * (hi - lo), "barrier_kjmol": BARRIER_KJMOL,
                         "pace": PACE_STEPS, "mts": 1, "kernel_cutoff": OPESParams().kernel_cutoff,
                         "wall_kappa": WALL_KAPPA})


def pair_cvs(molecule, directory: Path, gnn_path: str | None = None, distance_path: str | None = None) -> dict:
    """{label: (path, description)} of the GNN CV and the distance CV: the given files, else untrained exports."""
    from cvlearn.data.selection import atomic_numbers, residue_index_of_atoms
    from cvlearn.models.cv import DistanceCV, GraphCV
    from cvlearn.nn.featurizers import ETConfig, ETFeaturizer
    from cvlearn.nn.heads import MLPHead
    from cvlearn.nn.mixers import SumPool
    from cvlearn.nn.tokens import ResidueTokens

    heavy = ala2.heavy_atom_indices(molecule.topology)
    n, top = len(heavy), molecule.topology
    out = {}
    if gnn_path is None:
        config = ETConfig(hidden_channels=64, num_layers=2, num_rbf=32, cutoff_angstrom=5.0)  # the shipped ET's
        lobe = GraphCV(ETFeaturizer(atomic_numbers(top, heavy), config), ResidueTokens(residue_index_of_atoms(top, heavy)),
                       SumPool(), MLPHead(64, 2, hidden=64))
        gnn_path = directory / "gnn.pt"
        _export_with_range(lobe, gnn_path, molecule, heavy)
        out["gnn"] = (gnn_path, f"untrained 2-layer ET (64 wide, dense) + sum + MLP head (64), {n} heavy atoms, 2 CVs")
    else:
        out["gnn"] = (Path(gnn_path), f"trained CV file {gnn_path}")
    if distance_path is None:
        lobe = DistanceCV(n, MLPHead(n * (n - 1) // 2, 2, hidden=64))  # what cvlearn learn's baseline builds
        distance_path = directory / "distances.pt"
        _export_with_range(lobe, distance_path, molecule, heavy)
        out["distances"] = (distance_path, f"untrained {n * (n - 1) // 2} pairwise distances + MLP head (64), 2 CVs")
    else:
        out["distances"] = (Path(distance_path), f"trained CV file {distance_path}")
    return out


def _depositions(bias) -> int | None:
    """Kernels deposited by the adaptive term of ``bias`` (through BiasSum / OnComponents wrappers); None unbiased."""
    if bias is None:
        return None
    if hasattr(bias, "records"):
        return len(bias.records)
    inner = getattr(bias, "biases", None) or [getattr(bias, "inner", None)]
    return next((n for n in (_depositions(b) for b in inner if b is not None) if n is not None), None)


def _export_with_range(lobe, path: Path, molecule, heavy) -> None:
    """Export an untrained lobe with a training range: its outputs on 64 jittered copies (0.01 nm) of the built
    structure, so that the learned rows get the same walls and σ rule as trained files."""
    from cvlearn.export import export_cv, load_cv

    top = molecule.topology
    export_cv(lobe, path, atom_indices=heavy, n_particles=top.getNumAtoms(), topology=top)
    cv = load_cv(path)[0]
    rng = np.random.default_rng(0)
    base = np.asarray(molecule.positions_nm)
    with torch.no_grad():
        out = np.array([cv(torch.from_numpy(base + rng.normal(scale=0.01, size=base.shape))).numpy()
                        for _ in range(64)])
    export_cv(lobe, path, atom_indices=heavy, n_particles=top.getNumAtoms(), topology=top,
              cv_range=[(float(lo), float(hi)) for lo, hi in zip(out.min(0), out.max(0))])


def _rows_to_time(molecule, cvs: dict, routes=("torchscript", "compiled")) -> dict:
    """{name: (simulation, advance, bias, route)} for every row, each built on its own copy of the System."""
    from cvlearn.export import load_cv, load_eager_cv
    from openmm_plugin.forces import python_bias_force

    rows = {"unbiased": (_simulation(molecule, copy.deepcopy(molecule.system)), lambda s, n: s.step(n), None, "-")}
    system = copy.deepcopy(molecule.system)
    bias = _opes(2, SIGMA_PHI_PSI_RAD, periods=[2 * np.pi] * 2)
    forces = []
    for quad in ala2.phi_psi_indices(molecule.topology):
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*[int(a) for a in quad], [])
        forces.append(force)
    native = native_bias_force(forces, bias, NATIVE_BINS, -np.pi, np.pi, True, force_group=BIAS_GROUP, system=system)
    runner = BiasRunner(bias, native=native)
    rows["OPES on phi/psi, native route"] = (_simulation(molecule, system), runner.step, bias,
                                             "native (CustomCVForce table)")
    for route in routes:
        for label, (path, _) in cvs.items():
            system = copy.deepcopy(molecule.system)
            cv, spec = load_cv(path)
            cv = load_eager_cv(path) if route == "compiled" else cv
            bias = _learned_bias(spec)
            force = python_bias_force(cv, bias, force_group=BIAS_GROUP, system=system, compile=route == "compiled")
            system.addForce(force)
            runner = BiasRunner(bias, callback=force.callback)
            rows[_row_name(label, route)] = (_simulation(molecule, system), runner.step, bias, ROUTE_NAMES[route])
    return rows


ROUTE_NAMES = {"torchscript": "PythonForce (TorchScript CV)", "compiled": "PythonForce (compiled eager CV: AOTInductor on the CPU)"}
RECOMMENDED_ROUTE = "compiled"  # the README's route for production runs (bias every step, compile once per run)


def _row_name(label: str, route: str) -> str:
    return f"OPES on the {label} CV, PythonForce + {'TorchScript' if route == 'torchscript' else 'compiled'}"


def run_pairs(quick: bool, gnn_cv: str | None = None, distance_cv: str | None = None) -> dict:
    """The paired rows and their two targets: {rows, targets, settings, models}."""
    from benchmarks.common import machine, now_utc

    window_paces, repeats = (1, 2) if quick else (4, 3)
    n_steps = window_paces * PACE_STEPS
    torch.set_num_threads(1)
    molecule = ala2.build()
    with tempfile.TemporaryDirectory() as tmp:
        cvs = pair_cvs(molecule, Path(tmp), gnn_cv, distance_cv)
        built = _rows_to_time(molecule, cvs)
        for name, (simulation, advance, _, _) in built.items():  # steady state before any timing
            advance(simulation, WARMUP_PACES * PACE_STEPS + 10)
        times = {name: [] for name in built}
        for _ in range(repeats):  # round-robin: every row sees the same stretch of machine load
            for name, (simulation, advance, _, _) in built.items():
                start = time.perf_counter()
                try:
                    advance(simulation, n_steps)
                except FloatingPointError as error:
                    raise FloatingPointError(f"{name}: {error}") from None
                times[name].append((time.perf_counter() - start) / n_steps * 1e3)
        rows = []
        for name, (simulation, _, bias, route) in built.items():
            ms = min(times[name])
            rows.append({"name": name, "route": route, "ms_per_step": ms, "ms_per_step_repeats": times[name],
                         "ns_per_day": ala2.TIMESTEP_PS * 1e-3 / (ms * 1e-3) * 86400, "steps_timed": n_steps,
                         "depositions_total": _depositions(bias),
                         "depositions_per_window": 0 if bias is None else window_paces})
            print(f"{name:60s} {ms:8.3f} ms/step (rounds: {', '.join(f'{t:.3f}' for t in times[name])})", flush=True)
    by = {r["name"]: r["ms_per_step"] for r in rows}
    native = by["OPES on phi/psi, native route"] / by["unbiased"]
    targets = [
        {"name": "OPES on phi/psi, native route / unbiased MD (same run, steady state)", "value": native, "target": 2.0,
         "unit": "x", "met": bool(native <= 2.0)}]
    for route in ROUTE_NAMES:  # the recommended route carries the target; the other is reported beside it
        gnn = by[_row_name("gnn", route)] / by[_row_name("distances", route)]
        recommended = route == RECOMMENDED_ROUTE
        targets.append({"name": f"OPES on the GNN CV / OPES on the distance-VAMPNet CV, {ROUTE_NAMES[route]}"
                                f"{' (the README route)' if recommended else ''}, same run, steady state",
                        "value": gnn, "target": 2.0 if recommended else None, "unit": "x",
                        "met": bool(gnn <= 2.0) if recommended else None})
    return {"benchmark": "bias_speed_pairs", "date": now_utc(), "machine": machine(),
            "settings": {"quick": quick, "openmm_platform": "Reference", "timestep_fs": 2.0, "torch_threads": 1,
                         "pace_steps": PACE_STEPS, "warmup_steps": WARMUP_PACES * PACE_STEPS + 10,
                         "window_steps": n_steps, "rounds": repeats, "opes_barrier_kjmol": BARRIER_KJMOL,
                         "learned_cv_bias": "OPES on component 0, sigma 5 % of the training range, kernel_cutoff "
                         f"{OPESParams().kernel_cutoff:g}, walls kappa {WALL_KAPPA:g} 10 % outside the range", "sigma_phi_psi_rad": SIGMA_PHI_PSI_RAD,
                         "native_grid_bins": NATIVE_BINS, "bias_every_steps": 1},
            "models": {label: str(desc) for label, (_, desc) in cvs.items()}, "rows": rows, "targets": targets}


def markdown_pairs(result: dict) -> str:
    from benchmarks.common import targets_table

    s = result["settings"]
    lines = [f"# bias_speed --pairs ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={s['quick']})", "",
             f"Steady-state OPES: warm-up {s['warmup_steps']} steps ({s['warmup_steps'] // s['pace_steps']} depositions), "
             f"then {s['rounds']} round-robin windows of {s['window_steps']} steps per row (each holds "
             f"{s['window_steps'] // s['pace_steps']} deposition(s)); ms/step is the fastest window. Reference platform, "
             "1 torch thread, 2 fs, bias every step.", "",
             *[f"- {label} CV: {desc}" for label, desc in result["models"].items()], "",
             "| run | route | ms/step | windows (ms/step) | ns/day |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['route']} | {r['ms_per_step']:.3f} | "
                     f"{', '.join(f'{t:.3f}' for t in r['ms_per_step_repeats'])} | {r['ns_per_day']:.1f} |")
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


__all__ = ["markdown_pairs", "run_pairs"]
