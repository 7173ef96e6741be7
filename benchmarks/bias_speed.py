"""What biasing a learned CV costs on alanine dipeptide, every route side by side in one run (issue 6).

Rows: unbiased MD; WT-metad on φ (CustomTorsionForce, app.Metadynamics); the naive route for learned
CVs (app.Metadynamics with one PythonForce BiasVariable per CV dimension, so a 2-D CV costs two model
calls); cvlearn's PythonForce route (one model call per step for any dimension; metad and OPES; the TorchScript CV
or its torch.compile'd eager twin; bias every step, every 2nd and every 4th step with MTS; MTS 4 is shown but not counted for the target, since an
8 fs outer step resonated with bond stretches and blew a 1-ns ala2 run up) and TorchForce route (CV + OPES in TorchScript, refreshed at
each deposition). Also: the cost of one TorchForce refresh and of the CV-gradient strategies outside
OpenMM. Models are untrained with the stated architectures (cost does not depend on the weights):
the demo's 2-layer ET as cvlearn exports it (dense ET) and on torchmd-net's edge list, a 1-layer ET (the
fewer-layers trade-off; its CV quality is measured by the demo run in docs/demo_1layer), and the naive
geom2vec-sized 6-layer ET (edge list). Classic CVs (issue 17): OPES on φ/ψ through the native route
(CustomTorsionForces + tabulated bias in a CustomCVForce, refreshed at deposition) against unbiased MD and
against the same φ/ψ through the PythonForce route, in one run (``--native-only`` runs just these rows).

User systems (issue 15, ``--rows water,wlall``; :mod:`benchmarks._bias_speed_systems`): OPES on a CV learned by
``cvlearn learn`` through ``openmm_plugin.bias_cv`` against unbiased MD, in explicit water (alanine dipeptide, 721
atoms, PME, CPU platform, 1 thread) and on WLALL with the windowed and the whole-molecule context; written to
``results/bias_speed_user_systems[_quick].{json,md}`` (the other result files are left as they are).

    python benchmarks/bias_speed.py [--quick] [--native-only | --rows water,wlall]
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import openmm
import openmm.app as app
import openmm.unit as unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, now_utc, save, targets_table  # noqa: E402

from cvlearn.models.cv import GraphCV  # noqa: E402
from cvlearn.export import export_cv, load_eager_cv  # noqa: E402
from cvlearn.nn.featurizers import GEOM2VEC_ET, ETConfig, ETFeaturizer  # noqa: E402
from cvlearn.nn.heads import MLPHead  # noqa: E402
from cvlearn.nn.mixers import SumPool  # noqa: E402
from cvlearn.data.selection import atomic_numbers, residue_index_of_atoms  # noqa: E402
from cvlearn.nn.tokens import ResidueTokens  # noqa: E402
from openmm_plugin.bias import BiasRunner, Metadynamics, OPESMetad, native_bias_force  # noqa: E402
from openmm_plugin.bias.torsions import export_torsion_cv  # noqa: E402
from openmm_plugin.bias.restraints import HarmonicRestraint  # noqa: E402
from openmm_plugin.cv_evaluation import CVEvaluator  # noqa: E402
from openmm_plugin.forces import TorchBiasForce, python_bias_force, python_force_for_cv  # noqa: E402
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, make_simulation  # noqa: E402
from systems import alanine_dipeptide as ala2  # noqa: E402

DEMO_ET = ETConfig(hidden_channels=64, num_layers=2, num_rbf=32, cutoff_angstrom=5.0)
ONE_LAYER_ET = ETConfig(hidden_channels=64, num_layers=1, num_rbf=32, cutoff_angstrom=5.0)  # the fewer-layers trade-off


def exported_cv(molecule, config: ETConfig, n_cvs: int, directory: Path, dense_et: bool):
    heavy = ala2.heavy_atom_indices(molecule.topology)
    lobe = GraphCV(ETFeaturizer(atomic_numbers(molecule.topology, heavy), config), ResidueTokens(residue_index_of_atoms(molecule.topology, heavy)),
                   SumPool(), MLPHead(config.hidden_channels, n_cvs))
    n_params = sum(p.numel() for p in lobe.parameters())
    path = directory / f"cv_{config.num_layers}l_{n_cvs}d_{int(dense_et)}.pt"
    cv = export_cv(lobe, path, atom_indices=heavy, dense_et=dense_et, n_particles=molecule.topology.getNumAtoms())
    return cv, n_params, path


def _simulation(molecule, system, integrator):
    simulation = make_simulation(molecule.topology, system, integrator, "Reference")
    simulation.context.setPositions(molecule.positions_nm)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    return simulation


def time_steps(simulation, n_steps: int, advance=None, inner_per_step: int = 1) -> dict:
    """ms per 2-fs step of simulated time (MTS: outer step / inner_per_step), after a warm-up."""
    step = advance or (lambda sim, n: sim.step(n))
    step(simulation, max(10, n_steps // 10))  # warm-up: TorchScript profiling runs, first allocations
    start = time.perf_counter()
    step(simulation, n_steps)
    seconds = time.perf_counter() - start
    ms = seconds / (n_steps * inner_per_step) * 1e3
    return {"ms_per_step": ms, "ns_per_day": ala2.TIMESTEP_PS * 1e-3 / (ms * 1e-3) * 86400,
            "steps_timed": n_steps * inner_per_step}


def _integrator(k: int = 1):
    return make_integrator(300.0, ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, bias_group=BIAS_GROUP, bias_every_steps=k)


def _app_metadynamics(system, variables, pace: int) -> app.Metadynamics:
    """The comparison route, OpenMM's own ``app.Metadynamics`` (kept here only to time it against cvlearn's)."""
    return app.Metadynamics(system, variables, 300.0 * unit.kelvin, 8.0, 1.2 * unit.kilojoule_per_mole, pace)


def _naive_cv_metadynamics(system, cv, d: int, pace: int) -> app.Metadynamics:
    """The naive route for a d-D learned CV: one PythonForce BiasVariable per component, d model calls per step."""
    variables = [app.BiasVariable(python_force_for_cv(cv, c), -5.0, 5.0, 0.1, False, 200) for c in range(d)]
    return _app_metadynamics(system, variables, pace)


def _phi_metadynamics(system, phi_atoms, pace: int) -> app.Metadynamics:
    force = openmm.CustomTorsionForce("theta")
    force.addTorsion(*[int(a) for a in phi_atoms], [])
    return _app_metadynamics(system, [app.BiasVariable(force, -np.pi, np.pi, 0.35, True, 200)], pace)


def _make_bias(method: str, n_cvs: int, pace: int):
    if method == "opes":
        return OPESMetad(sigma=[0.1] * n_cvs, barrier_kjmol=30.0, pace_steps=pace, temperature_k=300.0)
    return Metadynamics(sigma=[0.1] * n_cvs, height_kjmol=1.2, bias_factor=8.0, pace_steps=pace, temperature_k=300.0,
                        lower=[-5.0] * n_cvs, upper=[5.0] * n_cvs, use_grid=True)


def gradient_strategies(molecule, cv, n_calls: int, eager=None) -> list[dict]:
    """ms per call outside OpenMM: forward; bias force (one backward of dV/ds·s); full Jacobian (batched / loop);
    with ``eager`` (the CV's eager twin) also the torch.compile'd forward and bias force."""
    evaluator = CVEvaluator(cv)
    pos = molecule.positions_nm[evaluator.atom_indices]
    # A restraint away from the current value: dV/ds != 0, so the backward pass really runs (a fresh OPES
    # or metad bias has no kernels yet, dV/ds = 0, and the evaluator rightly skips the backward).
    bias = HarmonicRestraint(evaluator.values(pos) + 1.0, 10.0)
    cases = {
        "forward only": lambda: evaluator.values(pos),
        "bias force: forward + 1 backward (dV/ds . s)": lambda: evaluator.bias_energy_forces(pos, bias),
        "Jacobian: forward + batched VJP (is_grads_batched)": lambda: evaluator.jacobian(pos, batched=True),
        "Jacobian: forward + n_cvs backward (retain_graph)": lambda: evaluator.jacobian(pos, batched=False),
    }
    if eager is not None:
        compiled = CVEvaluator(eager, compile=True)
        cases["forward only, torch.compile"] = lambda: compiled.values(pos)
        cases["bias force: forward + 1 backward, torch.compile"] = lambda: compiled.bias_energy_forces(pos, bias)
    rows = []
    for name, fn in cases.items():
        for _ in range(5):
            fn()
        start = time.perf_counter()
        for _ in range(n_calls):
            fn()
        rows.append({"case": name, "ms_per_call": (time.perf_counter() - start) / n_calls * 1e3})
    return rows


NATIVE_SIGMA_RAD = 0.15  # OPES kernels on φ/ψ (PLUMED's ala2 example)
NATIVE_BINS = 128  # per torsion: spacing 2π/128 = 0.049 rad ≈ σ/3


def _phi_psi_forces(molecule):
    forces = []
    for quad in ala2.phi_psi_indices(molecule.topology):
        force = openmm.CustomTorsionForce("theta")
        force.addTorsion(*[int(a) for a in quad], [])
        forces.append(force)
    return forces


def _phi_psi_opes(pace: int):
    return OPESMetad(sigma=[NATIVE_SIGMA_RAD] * 2, barrier_kjmol=30.0, pace_steps=pace, temperature_k=300.0,
                     periods=[2 * np.pi] * 2)


def _best_of(simulation, n_steps: int, advance=None, repeats: int = 3) -> dict:
    """The fastest of ``repeats`` timings (the CPUs are shared: the minimum is the least disturbed one)."""
    results = [time_steps(simulation, n_steps, advance) for _ in range(repeats)]
    best = min(results, key=lambda r: r["ms_per_step"])
    return {**best, "ms_per_step_repeats": [r["ms_per_step"] for r in results]}


def native_rows(molecule, n_md: int, n_model: int, pace: int, directory: Path) -> tuple[list[dict], dict]:
    """φ/ψ OPES: unbiased; native route (tabulated CustomCVForce, refresh at deposition); PythonForce route.
    Unbiased and native are timed best of 3 (the ratio is the target)."""
    rows = []

    def add(name, route, result, extra=None):
        rows.append({"name": name, "route": route, "model": "-", "n_cvs": 2 if "phi/psi" in name else 0,
                     "torch_threads": torch.get_num_threads(), "model_calls_per_step": None, **result, **(extra or {})})
        print(f"{name:72s} {result['ms_per_step']:8.3f} ms/step {result['ns_per_day']:9.1f} ns/day", flush=True)

    add("unbiased (native-route reference)", "-",
        _best_of(_simulation(molecule, copy.deepcopy(molecule.system), _integrator()), n_md))
    system = copy.deepcopy(molecule.system)
    bias = _phi_psi_opes(pace)
    native = native_bias_force(_phi_psi_forces(molecule), bias, NATIVE_BINS, -np.pi, np.pi, True,
                               force_group=BIAS_GROUP, system=system, cv_names=["phi", "psi"])
    simulation = _simulation(molecule, system, _integrator())
    runner = BiasRunner(bias, native=native)
    result = _best_of(simulation, n_md, runner.step)
    start = time.perf_counter()
    for _ in range(5):
        native.refresh(simulation)
    refresh_ms = (time.perf_counter() - start) / 5 * 1e3
    add("cvlearn native: opes on phi/psi (CustomTorsionForce + tabulated CustomCVForce)",
        "native (CustomCVForce table, cvlearn.bias)", result,
        {"depositions": len(bias.records), "kernels": len(bias.heights), "grid_bins": NATIVE_BINS})
    system = copy.deepcopy(molecule.system)
    bias = _phi_psi_opes(pace)
    cv = export_torsion_cv(directory / "phi_psi.pt", ala2.phi_psi_indices(molecule.topology), molecule.topology)
    force = python_bias_force(cv, bias, force_group=BIAS_GROUP)
    system.addForce(force)
    simulation = _simulation(molecule, system, _integrator())
    runner = BiasRunner(bias, callback=force.callback)
    add("cvlearn PythonForce: opes on phi/psi (TorchScript torsion CV)", "PythonForce (cvlearn.bias)",
        time_steps(simulation, n_model, runner.step))
    print(f"native table refresh (OPES on a {NATIVE_BINS}x{NATIVE_BINS} periodic grid + updateParametersInContext): "
          f"{refresh_ms:.2f} ms", flush=True)
    return rows, {"native_refresh_ms": refresh_ms}


def native_targets(rows: list[dict]) -> list[dict]:
    by = {r["name"]: r["ms_per_step"] for r in rows}
    native = by["cvlearn native: opes on phi/psi (CustomTorsionForce + tabulated CustomCVForce)"]
    ratio = native / by["unbiased (native-route reference)"]
    python = by["cvlearn PythonForce: opes on phi/psi (TorchScript torsion CV)"]
    return [
        {"name": "classic CV at native speed: OPES on phi/psi, native route / unbiased", "value": ratio,
         "target": 2.0, "unit": "x", "met": ratio <= 2.0},
        {"name": "OPES on phi/psi: PythonForce route / native route, for comparison", "value": python / native,
         "target": None, "unit": "x", "met": None},
    ]


def run_native(quick: bool) -> dict:
    """Only the classic-CV rows (``--native-only``)."""
    n_md, n_model, pace = (5000, 500, 500) if quick else (50000, 2000, 500)  # PACE 500, as PLUMED's ala2 example
    torch.set_num_threads(1)
    molecule = ala2.build()
    with tempfile.TemporaryDirectory() as tmp:
        rows, extra = native_rows(molecule, n_md, n_model, pace, Path(tmp))
    return {"benchmark": "bias_speed_native", "date": now_utc(), "machine": machine(),
            "settings": {"quick": quick, "openmm_platform": "Reference", "system": "alanine dipeptide, amber99sbildn + OBC",
                         "timestep_fs": 2.0, "deposit_every_steps": pace, "steps_timed_md": n_md,
                         "steps_timed_with_model": n_model, "torch_threads": 1,
                         "note": f"OPES barrier 30 kJ/mol, sigma {NATIVE_SIGMA_RAD} rad, grid {NATIVE_BINS}^2 periodic"},
            "rows": rows, **extra, "targets": native_targets(rows)}


def markdown_native(result: dict) -> str:
    lines = [f"# bias_speed --native-only ({result['date']}, {result['machine']['cpu_count']} CPUs, "
             f"quick={result['settings']['quick']})", "", result["settings"]["note"], "",
             "| run | route | ms/step | ns/day |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['route']} | {r['ms_per_step']:.4f} | {r['ns_per_day']:.1f} |" for r in result["rows"]]
    lines += ["", f"Native table refresh: {result['native_refresh_ms']:.2f} ms per deposition"]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def run(quick: bool) -> dict:
    n_md = 2000 if quick else 20000
    n_model = 200 if quick else 2000
    pace = 100 if quick else 500
    torch.set_num_threads(1)
    molecule = ala2.build()
    rows, models = [], {}

    def add(name, route, model, n_cvs, result, calls_per_step=None):
        rows.append({"name": name, "route": route, "model": model, "n_cvs": n_cvs, "torch_threads": torch.get_num_threads(),
                     "model_calls_per_step": calls_per_step, **result})
        print(f"{name:72s} {result['ms_per_step']:8.3f} ms/step {result['ns_per_day']:9.1f} ns/day", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cvs, paths = {}, {}
        # "demo": the demo's 2-layer ET as cvlearn exports it (dense ET); "demo-edge": the same weights on
        # torchmd-net's edge-list ET; "naive": the geom2vec-sized 6-layer ET, edge list, as torchmd-net gives it.
        for label, config, dense in (("demo", DEMO_ET, True), ("demo-edge", DEMO_ET, False), ("1-layer", ONE_LAYER_ET, True),
                                     ("naive", GEOM2VEC_ET, False)):
            for d in (1, 2):
                cvs[label, d], n_params, paths[label, d] = exported_cv(molecule, config, d, tmp, dense)
            models[label] = {"architecture": config.as_dict(), "parameters": n_params, "dtype": "float32",
                             "implementation": "dense ET (cvlearn.nn.featurizers.dense_et)" if dense else "torchmd-net ET, edge list",
                             "atoms": len(ala2.heavy_atom_indices(molecule.topology))}
        add("unbiased", "-", "-", 0, time_steps(_simulation(molecule, copy.deepcopy(molecule.system), _integrator()), n_md))
        system = copy.deepcopy(molecule.system)
        meta = _phi_metadynamics(system, ala2.phi_psi_indices(molecule.topology)[0], pace)
        add("WT-metad on phi (CustomTorsionForce)", "app.Metadynamics", "-", 1,
            time_steps(_simulation(molecule, system, _integrator()), n_md, meta.step))

        for label in ("naive", "demo"):
            for d in (1, 2):
                system = copy.deepcopy(molecule.system)
                meta = _naive_cv_metadynamics(system, cvs[label, d], d, pace)
                add(f"naive route: WT-metad, {label} ET, {d}-D (one BiasVariable per dim)",
                    "PythonForce BiasVariables in app.Metadynamics", label, d,
                    time_steps(_simulation(molecule, system, _integrator()), n_model, meta.step), d)

        def cvlearn_python(label, d, method, k=1, compile=False):
            system = copy.deepcopy(molecule.system)
            bias = _make_bias(method, d, pace // k)
            cv = load_eager_cv(paths[label, d]) if compile else cvs[label, d]
            force = python_bias_force(cv, bias, force_group=BIAS_GROUP, compile=compile)
            if compile:  # compile outside the timed steps (the warm-up would hide it anyway)
                force.callback.evaluator.bias_energy_forces(molecule.positions_nm[force.callback.evaluator.atom_indices],
                                                            HarmonicRestraint([0.0] * d, 1.0))
            system.addForce(force)
            simulation = _simulation(molecule, system, _integrator(k))
            runner = BiasRunner(bias, callback=force.callback)
            calls0 = force.callback.evaluator.calls
            result = time_steps(simulation, max(1, n_model // k), runner.step, inner_per_step=k)
            steps = simulation.currentStep * k
            mts = (f", MTS {k}" if k > 1 else "") + (", torch.compile" if compile else "")
            add(f"cvlearn PythonForce: {method}, {label} ET, {d}-D{mts}", "PythonForce (cvlearn.bias)", label, d, result,
                (force.callback.evaluator.calls - calls0) / steps)

        for method in ("metad", "opes"):
            for d in (1, 2):
                cvlearn_python("demo", d, method)
        for d in (1, 2):
            for k in (2, 4):
                cvlearn_python("demo", d, "opes", k=k)
        for d in (1, 2):
            for k in (1, 2):
                cvlearn_python("demo", d, "opes", k=k, compile=True)
        cvlearn_python("demo", 1, "metad", compile=True)
        for k in (1, 2):
            cvlearn_python("demo-edge", 1, "opes", k=k)
        for d in (1, 2):
            for k in (1, 2):
                cvlearn_python("1-layer", d, "opes", k=k)
        cvlearn_python("naive", 2, "opes")
        classic, classic_extra = native_rows(molecule, n_md, n_model, pace, tmp)
        rows += classic

        refresh_ms = {}
        for d in (1, 2):
            for k in (1, 4):
                system = copy.deepcopy(molecule.system)
                bias = _make_bias("opes", d, pace // k)
                torch_force = TorchBiasForce(system, cvs["demo", d], bias, force_group=BIAS_GROUP)
                simulation = _simulation(molecule, system, _integrator(k))
                runner = BiasRunner(bias, cv=cvs["demo", d], on_update=torch_force.refresh)
                mts = f", MTS {k}" if k > 1 else ""
                add(f"cvlearn TorchForce: opes, demo ET, {d}-D{mts} (refresh at deposition)",
                    "TorchForce (CV + bias in TorchScript)", "demo", d,
                    time_steps(simulation, max(1, n_model // k), runner.step, inner_per_step=k), 1)
            start = time.perf_counter()
            for _ in range(5):
                torch_force.refresh(simulation)
            refresh_ms[f"{d}-D"] = (time.perf_counter() - start) / 5 * 1e3
        print(f"TorchForce refresh (rebuild + reinitialize): {refresh_ms} ms", flush=True)

        strategies = []
        for label in ("demo", "demo-edge", "naive"):
            eager = load_eager_cv(paths[label, 2]) if label == "demo" else None
            for row in gradient_strategies(molecule, cvs[label, 2], 20 if quick else 200, eager):
                strategies.append({"model": label, "n_cvs": 2, **row})
                print(f"  {label} 2-D {row['case']:55s} {row['ms_per_call']:.3f} ms", flush=True)

    by = {r["name"]: r for r in rows}
    ms = lambda name: by[name]["ms_per_step"]  # noqa: E731
    # MTS 4 (8 fs outer step) is timed but not eligible: with the demo's learned CV it resonates with
    # heavy-atom bond stretches and a 1-ns ala2 run blew up within 35-70 ps (measured, openmm_plugin/demo.py).
    def best_of(model):
        return min((r for r in rows if r["route"].startswith("PythonForce (cvlearn") and r["model"] == model
                    and "MTS 4" not in r["name"]), key=lambda r: r["ms_per_step"])

    best, best_1l = best_of("demo"), best_of("1-layer")
    naive = ms("naive route: WT-metad, naive ET, 1-D (one BiasVariable per dim)")
    ratio_2d = ms("cvlearn PythonForce: opes, demo ET, 2-D") / ms("cvlearn PythonForce: opes, demo ET, 1-D")
    ratio_2d_compiled = (ms("cvlearn PythonForce: opes, demo ET, 2-D, torch.compile")
                         / ms("cvlearn PythonForce: opes, demo ET, 1-D, torch.compile"))
    every_step = ms("cvlearn PythonForce: opes, demo ET, 1-D, torch.compile")
    ratio_2d_naive = (ms("naive route: WT-metad, demo ET, 2-D (one BiasVariable per dim)")
                      / ms("naive route: WT-metad, demo ET, 1-D (one BiasVariable per dim)"))
    targets = [
        {"name": f"learned CV + bias, best cvlearn route ({best['name']})", "value": best["ms_per_step"],
         "target": 1.0, "unit": "ms/step", "met": best["ms_per_step"] <= 1.0},
        {"name": f"learned CV + bias, 1-layer ET ({best_1l['name']}; CV quality trade-off: docs/demo_1layer)",
         "value": best_1l["ms_per_step"], "target": 1.0, "unit": "ms/step", "met": best_1l["ms_per_step"] <= 1.0},
        {"name": "speed-up of the 2-layer route over the naive 6-layer ET CV (app.Metadynamics, 1-D)",
         "value": naive / best["ms_per_step"], "target": 6.0, "unit": "x", "met": naive / best["ms_per_step"] >= 6.0},
        {"name": "learned CV + bias without MTS (bias force every step): cvlearn PythonForce OPES, demo ET, 1-D, "
                 "torch.compile", "value": every_step, "target": 1.0, "unit": "ms/step", "met": every_step <= 1.0},
        {"name": "2-D / 1-D cost, cvlearn PythonForce OPES (demo ET, every step)", "value": ratio_2d,
         "target": 1.2, "unit": "x", "met": ratio_2d <= 1.2},
        {"name": "2-D / 1-D cost, cvlearn PythonForce OPES (demo ET, every step, torch.compile)",
         "value": ratio_2d_compiled, "target": 1.2, "unit": "x", "met": ratio_2d_compiled <= 1.2},
        {"name": "2-D / 1-D cost, naive app.Metadynamics route (demo ET), for comparison", "value": ratio_2d_naive,
         "target": None, "unit": "x", "met": None},
        *native_targets(classic),
    ]
    return {
        "benchmark": "bias_speed",
        "date": now_utc(),
        "machine": machine(),
        "settings": {"quick": quick, "openmm_platform": "Reference", "system": "alanine dipeptide, amber99sbildn + OBC, 22 atoms",
                     "timestep_fs": 2.0, "deposit_every_steps": pace, "steps_timed_md": n_md,
                     "steps_timed_with_model": n_model, "torch_threads": 1,
                     "note": "ms_per_step is per 2-fs step of simulated time (MTS rows: outer step / 4); "
                             "CV models float32, untrained; OPES barrier 30 kJ/mol, sigma 0.1; metad grid-accumulated"},
        "models": models,
        "rows": rows,
        "torch_refresh_ms": refresh_ms,
        **classic_extra,
        "gradient_strategies": strategies,
        "targets": targets,
    }


def _calls(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    lines = [f"# bias_speed ({result['date']}, {result['machine']['cpu_count']} CPUs, quick={result['settings']['quick']})", "",
             "Models: " + "; ".join(f"{k}: {v['architecture']['num_layers']}-layer ET, {v['architecture']['hidden_channels']} wide, "
                                    f"{v['parameters']} parameters, {v.get('implementation', '')}" for k, v in result["models"].items()), "",
             "| run | route | model calls/step | ms/step | ns/day |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['route']} | {_calls(r['model_calls_per_step'])} | "
              f"{r['ms_per_step']:.3f} | {r['ns_per_day']:.1f} |" for r in result["rows"]]
    lines += ["", "TorchForce refresh (new TorchForce + Context.reinitialize(preserveState=True)): "
              + ", ".join(f"{k} {v:.1f} ms" for k, v in result["torch_refresh_ms"].items()), "",
              "| CV gradient strategy (2-D CV, outside OpenMM) | model | ms/call |", "|---|---|---|"]
    lines += [f"| {s['case']} | {s['model']} | {s['ms_per_call']:.3f} |" for s in result["gradient_strategies"]]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--native-only", action="store_true", help="only the classic-CV (phi/psi) rows")
    parser.add_argument("--rows", default=None, help="only the user-system rows, comma-separated: water, wlall "
                        "(written to results/bias_speed_user_systems)")
    parser.add_argument("--pairs", action="store_true", help="only the issue-17 pairs at OPES steady state: native phi/psi "
                        "vs unbiased, GNN CV vs distance CV (results/bias_speed_pairs; benchmarks._bias_speed_pairs)")
    parser.add_argument("--pairs-cv", default=None, help="--pairs: a trained GNN CV file (default: untrained export)")
    parser.add_argument("--pairs-distance-cv", default=None, help="--pairs: a trained distance CV file (default: "
                        "untrained export)")
    args = parser.parse_args()
    if args.pairs:
        from benchmarks._bias_speed_pairs import markdown_pairs, run_pairs

        result = run_pairs(args.quick, args.pairs_cv, args.pairs_distance_cv)
        save("bias_speed_pairs", args.quick, result, markdown_pairs(result))
    elif args.rows is not None:
        from benchmarks._bias_speed_systems import ROW_SETS, markdown_user_systems, run_user_systems

        row_sets = [r.strip() for r in args.rows.split(",") if r.strip()]
        unknown = sorted(set(row_sets) - set(ROW_SETS))
        if not row_sets or unknown or args.native_only:
            parser.error(f"--rows: expected a comma-separated subset of {list(ROW_SETS)} (without --native-only), "
                         f"found {args.rows!r}")
        result = run_user_systems(row_sets, args.quick)
        save("bias_speed_user_systems", args.quick, result, markdown_user_systems(result))
    elif args.native_only:
        result = run_native(args.quick)
        save("bias_speed_native", args.quick, result, markdown_native(result))
    else:
        result = run(args.quick)
        save("bias_speed", args.quick, result, markdown(result))
