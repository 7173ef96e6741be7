"""bias_speed's user-system rows (issue 15): a CV learned the way a user would, biased with the one-call API.

Rows, each pair timed in the same run with the same thread settings (1 torch thread):

* ``water``: alanine dipeptide in TIP3P (721 atoms, PME, CPU platform with ``Threads=1``): unbiased MD against
  OPES-metad on a CV learned by ``cvlearn learn`` (:func:`openmm_plugin.stages.learn.run_learn`) from short
  trajectories of the water system (periodic: the DCDs carry the box), through the PythonForce route (the
  default of ``cvlearn bias``) and the TorchForce route.
* ``wlall``: pentapeptide WLALL (103 atoms, 48 heavy, OBC, Reference platform): unbiased MD against OPES on a CV
  learned with context ``window`` (±2 residues) and ``molecule``, shipped ET, PythonForce route.

Trajectories and learn runs are cached under ``runs/bias_speed_user_systems[_quick]`` and reused.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.unit as unit
import torch

from openmm_plugin import bias_cv
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, make_simulation, run_md
from openmm_plugin.stages.learn import LearnConfig, run_learn

ROOT = Path(__file__).resolve().parents[1]
ROW_SETS = ("water", "wlall")
PACE_STEPS = 500
BARRIER_KJMOL = 30.0


def _cache(quick: bool) -> Path:
    return ROOT / "runs" / ("bias_speed_user_systems_quick" if quick else "bias_speed_user_systems")


def cpu_platform_one_thread() -> None:
    """The CPU platform's default ``Threads`` = 1, so every Context on it (MD, learn, timing) uses one core."""
    openmm.Platform.getPlatformByName("CPU").setPropertyDefaultValue("Threads", "1")


def simulate(module, name: str, folder: Path, *, n_runs: int, ps: float, temperature_k: float,
             frame_interval_ps: float, platform: str) -> tuple[list[Path], Path, dict]:
    """``n_runs`` unbiased trajectories of ``module``'s system (seeds 0..n_runs-1), each skipped when cached."""
    molecule = module.build()
    n_steps = int(round(ps / module.TIMESTEP_PS))
    interval = int(round(frame_interval_ps / module.TIMESTEP_PS))
    paths, started = [], time.perf_counter()
    for seed in range(n_runs):
        integrator = make_integrator(temperature_k, module.FRICTION_PER_PS, module.TIMESTEP_PS, seed=seed)
        result = run_md(molecule.topology, molecule.system, molecule.positions_nm, integrator,
                        out_prefix=folder / f"{name}_{seed}", n_steps=n_steps, report_interval_steps=interval,
                        platform=platform, seed=seed, progress=False, desc=f"{name} {seed}")
        paths.append(result.trajectory_path)
    settings = {"n_trajectories": n_runs, "ps_per_trajectory": ps, "temperature_k": temperature_k,
                "frame_interval_ps": frame_interval_ps, "platform": platform,
                "md_seconds_this_call": time.perf_counter() - started}
    return paths, folder / f"{name}_0.pdb", settings


def learn(paths, topology: Path, out: Path, *, context: str, lagtime_ps: float, quick: bool) -> tuple[Path, dict]:
    """``cvlearn learn`` with its defaults (shipped ET, frozen, 2 CVs) but for lag and context; reused when finished."""
    config = LearnConfig(out=str(out), topology=str(topology), trajectories=tuple(str(p) for p in paths),
                         context=context, lagtime_ps=lagtime_ps, baselines=(), max_epochs=10 if quick else 30)
    started = time.perf_counter()
    metrics = run_learn(config, quick=quick, progress=False)
    from cvlearn.export import load_cv

    spec = load_cv(out / "cv.pt")[1]
    return out / "cv.pt", {"context": context, "lagtime_ps": lagtime_ps, "vamp2_val": metrics.get("vamp2_val"),
                           "periodic": bool(spec.periodic), "n_cvs": int(spec.n_cvs), "n_atoms_cv": len(spec.atom_indices),
                           "n_frames": metrics.get("n_frames"), "learn_seconds_this_call": time.perf_counter() - started,
                           "cv": str(out.relative_to(ROOT) / "cv.pt")}


def _simulation(molecule, system, module, platform: str):
    integrator = make_integrator(module.TEMPERATURE_K, module.FRICTION_PER_PS, module.TIMESTEP_PS, bias_group=BIAS_GROUP)
    simulation = make_simulation(molecule.topology, system, integrator, platform)
    simulation.context.setPositions(molecule.positions_nm)
    simulation.context.setVelocitiesToTemperature(module.TEMPERATURE_K * unit.kelvin, 1)
    if platform == "CPU":
        threads = simulation.context.getPlatform().getPropertyValue(simulation.context, "Threads")
        if threads != "1":
            raise RuntimeError(f"CPU platform: expected Threads=1 for the timing, found {threads}")
    return simulation


def _best_of(simulation, n_steps: int, advance, timestep_ps: float, repeats: int) -> dict:
    """Warm-up past the first deposition, then the fastest of ``repeats`` timings of ``n_steps`` (the CPUs are shared).

    Before the first deposition an OPES bias is flat (dV/ds = 0) and the PythonForce skips the CV's backward pass,
    so a timing started from a fresh bias would undercount the CV; the warm-up of one pace removes that. With
    ``n_steps`` = the pace, each timing holds exactly one deposition (and, TorchForce route, one refresh)."""
    advance(simulation, PACE_STEPS + max(10, n_steps // 10))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        advance(simulation, n_steps)
        times.append((time.perf_counter() - start) / n_steps * 1e3)
    ms = min(times)
    return {"ms_per_step": ms, "ns_per_day": timestep_ps * 1e-3 / (ms * 1e-3) * 86400, "steps_timed": n_steps,
            "ms_per_step_repeats": times}


def _sigma(cv_path: Path) -> list[float]:
    """OPES kernel widths: a tenth of each CV component's training range (what a user reads off the contract)."""
    from cvlearn.export import load_cv

    _, spec = load_cv(cv_path)
    if spec.cv_range_training is None:
        return [0.1] * int(spec.n_cvs)
    return [max(1e-3, (hi - lo) / 10) for lo, hi in spec.cv_range_training]


def cv_call_ms(cv_path: Path, molecule, n_calls: int, repeats: int = 3) -> float:
    """ms per CV forward + one backward (the PythonForce's work per step) outside OpenMM, best of ``repeats``: the
    CV's own cost, free of the MD engine's and less exposed to the shared CPUs than a whole MD step."""
    from cvlearn.export import load_cv
    from openmm_plugin.bias.restraints import HarmonicRestraint
    from openmm_plugin.cv_evaluation import CVEvaluator

    evaluator = CVEvaluator(load_cv(cv_path)[0])
    positions = molecule.positions_nm[evaluator.atom_indices]
    box = molecule.topology.getPeriodicBoxVectors()
    box = None if box is None else np.array(box.value_in_unit(unit.nanometer), dtype=np.float64)
    bias = HarmonicRestraint(evaluator.values(positions, box) + 1.0, 10.0)  # dV/ds != 0: the backward runs
    for _ in range(5):
        evaluator.bias_energy_forces(positions, bias, box)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n_calls):
            evaluator.bias_energy_forces(positions, bias, box)
        times.append((time.perf_counter() - start) / n_calls * 1e3)
    return min(times)


def time_pair(module, molecule, platform: str, cv_paths: dict, n_steps: int, repeats: int, label: str,
              routes=("python",)) -> list[dict]:
    """Unbiased MD, then OPES-metad (``bias_cv``) on each CV in ``cv_paths`` ({context: path}) per route."""
    rows = []

    def add(name, route, context, result, extra=None):
        rows.append({"name": name, "system": label, "route": route, "context": context, "platform": platform,
                     "torch_threads": torch.get_num_threads(), **result, **(extra or {})})
        print(f"{name:80s} {result['ms_per_step']:9.3f} ms/step {result['ns_per_day']:8.2f} ns/day", flush=True)

    unbiased = _simulation(molecule, copy.deepcopy(molecule.system), module, platform)
    add(f"{label}: unbiased", "-", "-", _best_of(unbiased, n_steps, lambda s, n: s.step(n), module.TIMESTEP_PS, repeats))
    del unbiased
    for context, path in cv_paths.items():
        for route in routes:
            system = copy.deepcopy(molecule.system)
            try:
                biased = bias_cv(system, path, "opes-metad", temperature_k=module.TEMPERATURE_K, sigma=_sigma(path),
                                 barrier_kjmol=BARRIER_KJMOL, pace_steps=PACE_STEPS, force_group=BIAS_GROUP,
                                 route=route)
                simulation = _simulation(molecule, system, module, platform)
                result = _best_of(simulation, n_steps, biased.run, module.TIMESTEP_PS, repeats)
            except Exception as error:  # noqa: BLE001 - the row says why the route did not run
                rows.append({"name": f"{label}: OPES-metad, learned CV ({context}), {route}", "system": label,
                             "route": route, "context": context, "platform": platform, "ms_per_step": None,
                             "ns_per_day": None, "error": f"{type(error).__name__}: {error}"})
                print(f"{label} {context} {route}: did not run: {type(error).__name__}: {error}", flush=True)
                continue
            route_name = "PythonForce" if route == "python" else "TorchForce (refresh at deposition)"
            add(f"{label}: OPES-metad, learned CV ({context}), {route_name}", route, context, result,
                {"depositions": len(biased.bias.records), "sigma": _sigma(path),
                 "cv_force_ms_per_call_outside_openmm": cv_call_ms(path, molecule, max(5, n_steps // 10))})
    return rows


def water_rows(quick: bool) -> tuple[list[dict], dict]:
    from systems import alanine_dipeptide_water as water

    folder = _cache(quick) / "water"
    paths, top, md = simulate(water, "md", folder / "data", n_runs=3, ps=10.0 if quick else 30.0, temperature_k=300.0,
                              frame_interval_ps=0.1, platform="CPU")
    cv, learned = learn(paths, top, folder / "learn", context="molecule", lagtime_ps=1.0, quick=quick)
    molecule = water.build()
    rows = time_pair(water, molecule, "CPU", {"molecule": cv}, 50 if quick else PACE_STEPS, 3, "ala2 water",
                     routes=("python", "torch"))
    return rows, {"data": md, "learn": [learned], "n_atoms": molecule.system.getNumParticles()}


def wlall_rows(quick: bool) -> tuple[list[dict], dict]:
    from systems import pentapeptide_wlall as wlall

    folder = _cache(quick) / "wlall"
    paths, top, md = simulate(wlall, "md", folder / "data", n_runs=3, ps=10.0 if quick else 20.0, temperature_k=400.0,
                              frame_interval_ps=0.1, platform="Reference")
    cvs, learned = {}, []
    for context in ("window", "molecule"):
        cvs[context], info = learn(paths, top, folder / f"learn_{context}", context=context, lagtime_ps=1.0, quick=quick)
        learned.append(info)
    molecule = wlall.build()
    rows = time_pair(wlall, molecule, "Reference", cvs, 20 if quick else PACE_STEPS, 3, "WLALL")
    return rows, {"data": md, "learn": learned, "n_atoms": molecule.system.getNumParticles()}


def ratio_targets(rows: list[dict]) -> list[dict]:
    """Informational: biased / unbiased per system and the window / molecule cost on WLALL (met where a bound is given)."""
    by = {r["name"]: r["ms_per_step"] for r in rows}
    targets = []
    for label, bound in (("ala2 water", 2.0), ("WLALL", None)):
        base = by.get(f"{label}: unbiased")
        for r in rows:
            if r["system"] != label or r["route"] == "-" or base is None:
                continue
            value = None if r["ms_per_step"] is None else r["ms_per_step"] / base
            targets.append({"name": f"{r['name']} / unbiased" + (" (explicit water: CV cost amortised over PME)"
                                                                  if bound else ""),
                            "value": value, "target": bound, "unit": "x",
                            "met": None if bound is None or value is None else value <= bound})
    window = next((r for r in rows if r["name"] == "WLALL: OPES-metad, learned CV (window), PythonForce"), None)
    whole = next((r for r in rows if r["name"] == "WLALL: OPES-metad, learned CV (molecule), PythonForce"), None)
    if window is not None and whole is not None and window["ms_per_step"] and whole["ms_per_step"]:
        targets.append({"name": "WLALL: window CV / molecule CV, per biased MD step", "unit": "x", "target": None,
                        "value": window["ms_per_step"] / whole["ms_per_step"], "met": None})
        key = "cv_force_ms_per_call_outside_openmm"
        targets.append({"name": "WLALL: window CV / molecule CV, CV forward + backward outside OpenMM", "unit": "x",
                        "value": window[key] / whole[key], "target": None, "met": None})
    return targets


def run_user_systems(row_sets, quick: bool) -> dict:
    """The ``--rows`` rows of bias_speed: {rows, systems, targets, settings}."""
    from benchmarks.common import machine, now_utc

    torch.set_num_threads(1)
    cpu_platform_one_thread()
    rows, systems = [], {}
    for name, fn in (("water", water_rows), ("wlall", wlall_rows)):
        if name in row_sets:
            new, systems[name] = fn(quick)
            rows += new
    return {"benchmark": "bias_speed_user_systems", "date": now_utc(), "machine": machine(),
            "settings": {"quick": quick, "rows": list(row_sets), "torch_threads": 1, "cpu_platform_threads": 1,
                         "timestep_fs": 2.0, "deposit_every_steps": PACE_STEPS, "opes_barrier_kjmol": BARRIER_KJMOL,
                         "note": "ms_per_step: best of 3 timings after a warm-up past the first deposition (full run: each "
                                 "timing is one deposition pace, 500 steps, so it holds one deposition and, TorchForce "
                                 "route, one refresh); "
                                 "OPES-metad via openmm_plugin.bias_cv (sigma = training range / 10 per component); "
                                 "CVs learned by run_learn (shipped ET, frozen, 2 CVs, lag 1 ps) on the cached "
                                 "trajectories; CV ms/call: forward + 1 backward outside OpenMM, best of 3"},
            "systems": systems, "rows": rows, "targets": ratio_targets(rows)}


def markdown_user_systems(result: dict) -> str:
    from benchmarks.common import targets_table

    s = result["settings"]
    lines = [f"# bias_speed --rows {','.join(s['rows'])} ({result['date']}, {result['machine']['cpu_count']} CPUs, "
             f"quick={s['quick']})", "", s["note"], ""]
    for name, info in result["systems"].items():
        d = info["data"]
        lines.append(f"- {name}: {info['n_atoms']} atoms; data {d['n_trajectories']} x {d['ps_per_trajectory']} ps at "
                     f"{d['temperature_k']} K ({d['platform']}); learned: " + "; ".join(
                         f"context {l['context']}, {l['n_atoms_cv']} CV atoms, {l['n_cvs']} CVs, periodic {l['periodic']}, "
                         f"VAMP-2 val {l['vamp2_val']:.3f}, {l['cv']}" for l in info["learn"]))
    lines += ["", "| run | route | platform | ms/step (best of 3) | repeats | ns/day | CV ms/call outside OpenMM |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["ms_per_step"] is None:
            lines.append(f"| {r['name']} | {r['route']} | {r['platform']} | did not run: {r['error']} | - | - | - |")
            continue
        reps = ", ".join(f"{v:.2f}" for v in r["ms_per_step_repeats"])
        call = r.get("cv_force_ms_per_call_outside_openmm")
        lines.append(f"| {r['name']} | {r['route']} | {r['platform']} | {r['ms_per_step']:.3f} | {reps} | "
                     f"{r['ns_per_day']:.2f} | {'-' if call is None else f'{call:.2f}'} |")
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


__all__ = ["ROW_SETS", "markdown_user_systems", "run_user_systems"]
