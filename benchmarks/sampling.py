"""Does biasing the learned CV sample alanine dipeptide as well as biasing φ/ψ? (issue 6)

Per seed (≥ 3 independent walkers), OPES-metad (or well-tempered metadynamics, ``--method metad``) at 300 K
on (a) the learned CV (an exported ``cv.pt``, component 0 by default) and (b) the reference CVs φ/ψ, both
through cvlearn's PythonForce route (the torsions are a TorchScript CV too, so the runs differ only in the
CV). The learned CV gets PLUMED-style walls at the edges of its training range (a learned CV is only
trusted where it saw data; beyond it, its gradient is an extrapolation that can push the peptide apart). Reported: φ transitions per ns
(C7eq core φ ∈ (-180°, -30°) ↔ C7ax core φ ∈ (30°, 100°), with hysteresis) and the reweighted
ΔF(C7ax − C7eq) (C7ax: 0 < φ < 120°, C7eq: φ < 0; weights exp(βV)), as mean ± std over seeds.
Targets: learned-CV transition rate ≥ 80 % of the φ/ψ rate; |ΔF_learned − ΔF_φψ| ≤ 1.25 kJ/mol.

    python benchmarks/sampling.py --cv runs/demo/cv.pt [--quick] [--ns 5] [--seeds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import openmm.unit as unit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, machine, now_utc, save, targets_table  # noqa: E402

from cvlearn.data.colvar import read_colvar  # noqa: E402
from cvlearn.analysis.plots import plot_free_energy_profiles  # noqa: E402
from cvlearn.analysis.reweighting import delta_f_kjmol, free_energy_profile, opes_weights  # noqa: E402
from cvlearn.analysis.transitions import count_phi_transitions, phi_basins  # noqa: E402
from openmm_plugin.bias.sigma import learned_cv_sigma  # noqa: E402
from cvlearn.export import load_cv, load_eager_cv  # noqa: E402
from cvlearn.io import write_json_atomic  # noqa: E402
from cvlearn.analysis.reweighting import metad_weights  # noqa: E402
from openmm_plugin.bias import BiasReporter, BiasRunner, OPESMetad  # noqa: E402
from openmm_plugin.forces import python_bias_force  # noqa: E402
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, make_simulation  # noqa: E402
from openmm_plugin.bias.base import BiasSum, OnComponents  # noqa: E402
from openmm_plugin.bias.metad import Metadynamics  # noqa: E402
from openmm_plugin.bias.restraints import Wall  # noqa: E402
from openmm_plugin.bias.torsions import export_torsion_cv  # noqa: E402
from systems import alanine_dipeptide as ala2  # noqa: E402


def _phi_function(phi_atoms):
    a = list(phi_atoms)

    def phi(positions: np.ndarray) -> float:
        p0, p1, p2, p3 = (positions[i] for i in a)
        b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
        n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
        return float(np.arctan2(np.linalg.norm(b2) * np.dot(b1, n2), np.dot(n1, n2)))

    return phi


def biased_run(cv, bias, *, seed: int, n_steps: int, mts: int, report_steps: int, colvar: Path, threads: int,
               compile: bool = False) -> dict:
    torch.set_num_threads(threads)
    molecule = ala2.build()
    system = molecule.system
    force = python_bias_force(cv, bias, force_group=BIAS_GROUP, compile=compile)
    system.addForce(force)
    integrator = make_integrator(300.0, ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, seed=seed, bias_group=BIAS_GROUP,
                                 bias_every_steps=mts)
    simulation = make_simulation(molecule.topology, system, integrator, "Reference")
    simulation.context.setPositions(molecule.positions_nm)
    simulation.context.setVelocitiesToTemperature(300.0 * unit.kelvin, seed + 1)
    runner = BiasRunner(bias, callback=force.callback)
    phi_atoms = ala2.phi_psi_indices(molecule.topology)[0]
    reporter = BiasReporter(colvar, bias, force.callback.evaluator, report_steps // mts, resume=False, flush_every=10_000,
                            extra={"phi": _phi_function(phi_atoms)})
    simulation.reporters.append(reporter)
    start = time.perf_counter()
    failure = None
    try:
        runner.step(simulation, n_steps // mts)
    except FloatingPointError as error:  # a blown-up walker is a result to report, not a reason to lose the others
        failure = str(error)
        n_steps = simulation.currentStep * mts
    seconds = time.perf_counter() - start
    reporter.close()
    data = read_walker(colvar)
    phi, weights = reweighted_phi(data)
    in_ax, in_eq = phi_basins(phi)
    ns = n_steps * ala2.TIMESTEP_PS * 1e-3
    transitions = count_phi_transitions(data["phi"])
    t_ns, df_t = delta_f_over_time(data)
    return {"seed": seed, "ns": ns, "transitions": transitions, "transitions_per_ns": transitions / ns,
            "deltaF_C7ax_C7eq_kjmol": delta_f_kjmol(in_ax, in_eq, weights, 300.0),
            "ms_per_step": seconds * 1e3 / max(n_steps, 1), "failure": failure,
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
        phi, weights = reweighted_phi({key: v[: n * k // points] for key, v in data.items()})
        in_ax, in_eq = phi_basins(phi)
        t_ns.append(data["time"][n * k // points - 1] * 1e-3)
        df.append(delta_f_kjmol(in_ax, in_eq, weights, 300.0))
    return np.array(t_ns), np.array(df)


def plot_phi_profiles(colvars: list[Path], path: Path) -> None:
    """Reweighted F(φ) of each walker's ``<cv>_<seed>.colvar``, coloured by the biased CV."""
    profiles: dict = {}
    for colvar in map(Path, colvars):
        phi, weights = reweighted_phi(read_walker(colvar))
        f, x = free_energy_profile(np.degrees(phi), weights, 300.0, bins=72, range_x=(-180.0, 180.0))
        profiles.setdefault(colvar.stem.rsplit("_", 1)[0], []).append((x, f))
    plot_free_energy_profiles(profiles, path, "φ (degrees), reweighted")


def _summary(runs: list[dict], key: str) -> tuple[float, float]:
    """Mean and std over the walkers that ran to the end (blown-up walkers are counted apart)."""
    values = np.array([r[key] for r in runs if not r.get("failure")], dtype=float)
    return float(np.nanmean(values)), float(np.nanstd(values))


def _adaptive(method: str, sigma, lower, upper, barrier_kjmol: float, pace: int, periods=None):
    """OPES-metad with ``barrier_kjmol``, or WT-metad with bias factor 8 and 1.2 kJ/mol hills (the demo's)."""
    if method == "opes":
        return OPESMetad(sigma=sigma, barrier_kjmol=barrier_kjmol, pace_steps=pace, temperature_k=300.0, periods=periods)
    return Metadynamics(sigma=sigma, height_kjmol=1.2, bias_factor=8.0, pace_steps=pace, temperature_k=300.0,
                        lower=lower, upper=upper, periods=periods, use_grid=True)


def _walker(job: dict) -> dict:
    """One biased run (a learned-CV or a φ/ψ walker) from plain settings, so it can run in a worker process."""
    tmp, seed = Path(job["tmp"]), job["seed"]
    if job["cv"] == "learned":
        lo, hi = job["range"]
        margin, c, d = 0.1 * (hi - lo), job["component"], job["n_cvs"]
        adaptive = _adaptive(job["method"], [job["sigma_cv"]], [lo - 2 * margin], [hi + 2 * margin],
                             job["barrier_kjmol"], job["pace"] // job["mts"])
        # Walls one margin (10 % of the range) outside the training range: the learned CV at 300 K starts near an
        # edge of its 600 K training range, and a stiff wall right at the edge blew the MTS run up (measured).
        walls = ([Wall([lo - margin], [job["wall_kappa"]], side="lower"),
                  Wall([hi + margin], [job["wall_kappa"]], side="upper")] if job["wall_kappa"] > 0 else [])
        bias = BiasSum([OnComponents(b, [c], d) for b in (adaptive, *walls)])
        cv = load_eager_cv(job["cv_path"]) if job["compile"] else load_cv(job["cv_path"])[0]
        mts, compile = job["mts"], job["compile"]
    else:
        bias = _adaptive(job["method"], [0.35, 0.35], [-np.pi, -np.pi], [np.pi, np.pi], job["barrier_kjmol"],
                         job["pace"], periods=[2 * np.pi, 2 * np.pi])
        cv, mts, compile = load_cv(tmp / "phi_psi.pt")[0], 1, False
    result = biased_run(cv, bias, seed=seed, n_steps=job["n_steps"], mts=mts, report_steps=job["report"],
                        colvar=tmp / f"{job['cv']}_{seed}.colvar", threads=job["threads"], compile=compile)
    write_json_atomic(tmp / f"{job['cv']}_{seed}.json", {"job": _run_key(job), "result": result})
    return {"cv": job["cv"], **result}


def _run_key(job: dict) -> dict:
    """The settings that decide a walker's trajectory (not where or how fast it runs)."""
    return {k: v for k, v in job.items() if k not in ("tmp", "threads")}


def _finished(job: dict) -> dict | None:
    """The result of a walker that already ran to the end with these settings (its COLVAR kept beside it), so a
    killed benchmark resumes where it stopped."""
    path = Path(job["tmp"]) / f"{job['cv']}_{job['seed']}.json"
    if not path.is_file() or not path.with_suffix(".colvar").is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("job") != json.loads(json.dumps(_run_key(job))):
        return None
    print(f"seed {job['seed']} {job['cv']}: reusing the finished run in {path}", flush=True)
    return {"cv": job["cv"], **saved["result"]}


def run(cv_path: Path, *, quick: bool, ns: float, seeds: int, component: int, sigma: float | None,
        barrier_kjmol: float, mts: int, threads: int, method: str = "opes", wall_kappa: float = 100.0,
        compile: bool = False, jobs: int = 1, work: str | None = None) -> dict:
    n_steps = int(round(ns * 1e3 / ala2.TIMESTEP_PS)) // (4 * mts) * (4 * mts)
    pace = 500
    report = 500 if not quick else 100
    cv, spec = load_cv(cv_path)
    if spec.cv_range_training is None:
        raise ValueError(f"{cv_path}: expected a CV with cv_range_training (export_cv(..., training_frames=...)), "
                         "found none")
    molecule = ala2.build()
    sigma_cv = sigma if sigma is not None else learned_cv_sigma(
        cv, spec.cv_range_training[component], molecule.topology, molecule.system, molecule.positions_nm,
        make_integrator(300.0, ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, seed=12345), 300.0, component=component)[0]
    lo, hi = spec.cv_range_training[component]
    margin = 0.1 * (hi - lo)
    common = {"cv_path": str(cv_path), "cv_sha1": hashlib.sha1(Path(cv_path).read_bytes()).hexdigest(),
              "n_cvs": int(cv.n_cvs), "component": component, "sigma_cv": sigma_cv,
              "range": (lo, hi), "method": method, "barrier_kjmol": barrier_kjmol, "pace": pace,
              "mts": mts, "report": report, "threads": threads, "wall_kappa": wall_kappa, "compile": compile,
              "n_steps": n_steps}
    rows = {"learned": [], "phi_psi": []}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(work) if work else Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        export_torsion_cv(tmp / "phi_psi.pt", ala2.phi_psi_indices(molecule.topology), molecule.topology)
        runs = [{**common, "cv": name, "seed": seed, "tmp": str(tmp)} for seed in range(seeds)
                for name in ("learned", "phi_psi")]
        finished = [_finished(r) for r in runs]
        todo = [r for r, done in zip(runs, finished) if done is None]
        if jobs > 1 and len(todo) > 1:  # independent walkers: one process each (spawned: torch and OpenMM start clean)
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                fresh = iter(list(pool.map(_walker, todo)))
        else:
            fresh = iter([_walker(r) for r in todo])
        results = [done if done is not None else next(fresh) for done in finished]
        for r in results:
            name = r.pop("cv")
            rows[name].append(r)
            print(f"seed {r['seed']} {name:8s}: {r['transitions']:4d} "
                  f"transitions ({r['transitions_per_ns']:.1f}/ns), dF = {r['deltaF_C7ax_C7eq_kjmol']:.2f} kJ/mol, "
                  f"{r['ms_per_step']:.3f} ms/step", flush=True)
        stem = f"sampling{'_quick' if quick else ''}"
        plot_phi_profiles([tmp / f"{r['cv']}_{r['seed']}.colvar" for r in runs], RESULTS / f"{stem}_phi_profiles.png")
    plot_free_energy_profiles({name: [(r["deltaF_over_time"]["t_ns"], r["deltaF_over_time"]["kjmol"]) for r in walkers]
                               for name, walkers in rows.items()}, RESULTS / f"{stem}_convergence.png",
                              "simulated time (ns)", "ΔF(C7ax − C7eq) (kJ/mol), reweighted from the start")
    rate_l, rate_l_sd = _summary(rows["learned"], "transitions_per_ns")
    rate_r, rate_r_sd = _summary(rows["phi_psi"], "transitions_per_ns")
    df_l, df_l_sd = _summary(rows["learned"], "deltaF_C7ax_C7eq_kjmol")
    df_r, df_r_sd = _summary(rows["phi_psi"], "deltaF_C7ax_C7eq_kjmol")
    rate_ratio = rate_l / rate_r if rate_r > 0 else float("nan")
    blown_up = [r for r in rows["learned"] if r.get("failure")]
    targets = [
        {"name": f"learned-CV walkers that blew up (of {len(rows['learned'])}; left out of the means)",
         "value": len(blown_up), "target": 0, "unit": "walkers", "met": not blown_up},
        {"name": "learned-CV phi transition rate / phi-psi rate", "value": rate_ratio, "target": 0.8, "unit": "x",
         "met": bool(rate_ratio >= 0.8)},
        {"name": "|dF(C7ax-C7eq) learned - phi/psi|", "value": abs(df_l - df_r), "target": 1.25, "unit": "kJ/mol",
         "met": bool(abs(df_l - df_r) <= 1.25)},
    ]
    return {
        "benchmark": "sampling",
        "date": now_utc(),
        "machine": machine(),
        "settings": {"quick": quick, "cv": str(cv_path), "cv_component": component, "sigma_cv": sigma_cv,
                     "sigma_phi_psi_rad": 0.35, "method": f"{method} (cvlearn PythonForce route)", "learned_cv_torch_compile": compile,
                     "learned_cv_walls": {"at": [lo - margin, hi + margin], "kappa_kjmol": wall_kappa, "exp": 2},
                     "barrier_kjmol": barrier_kjmol, "pace_steps": pace, "ns_per_run": n_steps * ala2.TIMESTEP_PS * 1e-3,
                     "seeds": seeds, "learned_cv_mts_substeps": mts, "parallel_walker_processes": jobs, "temperature_k": 300.0, "torch_threads": threads,
                     "cv_metadata": {k: v for k, v in json.loads(spec.to_json()).items() if k not in ("atom_indices", "atomic_numbers", "residue_of_atom")}},
        "summary": {"learned": {"transitions_per_ns": [rate_l, rate_l_sd], "deltaF_C7ax_C7eq_kjmol": [df_l, df_l_sd]},
                    "phi_psi": {"transitions_per_ns": [rate_r, rate_r_sd], "deltaF_C7ax_C7eq_kjmol": [df_r, df_r_sd]}},
        "rows": [{"cv": name, **r} for name, runs in rows.items() for r in runs],
        "targets": targets,
    }


def _mean_or_nan(values) -> float:
    """Mean over the finite values (a short run may see no transition at all: NaN, without a warning)."""
    finite = np.asarray(values, dtype=float)[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"# sampling ({result['date']}, quick={result['settings']['quick']}, {result['settings']['seeds']} seeds × "
             f"{result['settings']['ns_per_run']:.3g} ns, cv={result['settings']['cv']})", "",
             "| CV | φ transitions / ns | ΔF(C7ax − C7eq) kJ/mol | per seed | ΔF at half the run | ms/step |",
             "|---|---|---|---|---|---|"]
    for name in ("learned", "phi_psi"):
        runs = [r for r in result["rows"] if r["cv"] == name]
        ms = np.mean([r["ms_per_step"] for r in runs])
        per_seed = ", ".join(f"blew up at {r['ns']:.2f} ns" if r.get("failure") else f"{r['deltaF_C7ax_C7eq_kjmol']:.2f}"
                             for r in runs)
        half = [r["deltaF_over_time"]["kjmol"][len(r["deltaF_over_time"]["kjmol"]) // 2 - 1]
                for r in runs if not r.get("failure")]
        lines.append(f"| {name} | {s[name]['transitions_per_ns'][0]:.2f} ± {s[name]['transitions_per_ns'][1]:.2f} | "
                     f"{s[name]['deltaF_C7ax_C7eq_kjmol'][0]:.2f} ± {s[name]['deltaF_C7ax_C7eq_kjmol'][1]:.2f} | "
                     f"{per_seed} | {_mean_or_nan(half):.2f} | {ms:.3f} |")
    stem = "sampling_quick" if result["settings"]["quick"] else "sampling"
    lines += ["", f"± is the std over the walkers that ran to the end. ΔF against time per walker: `{stem}_convergence.png`; reweighted F(φ): "
              f"`{stem}_phi_profiles.png`."]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", required=True, help="exported learned CV (e.g. runs/demo/cv.pt)")
    parser.add_argument("--quick", action="store_true", help="0.04 ns per run: checks that it works, not a result")
    parser.add_argument("--ns", type=float, default=5.0, help="ns per run (default 5)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--component", type=int, default=0, help="learned-CV component to bias (default 0)")
    parser.add_argument("--sigma", type=float, default=None,
                        help="OPES sigma on the learned CV (default: max(std over 4 ps of unbiased MD, 5%% of its range))")
    parser.add_argument("--barrier-kjmol", type=float, default=30.0, help="OPES barrier (default 30 kJ/mol)")
    parser.add_argument("--method", choices=("opes", "metad"), default="opes")
    parser.add_argument("--wall-kappa", type=float, default=100.0,
                        help="walls 10%% outside the learned CV's training range, kJ/mol per CV unit squared (0: none)")
    parser.add_argument("--mts", type=int, default=2, help="bias force every k-th step for the learned CV (default 2: an 8 fs outer step "
                        "resonates with heavy-atom bond stretches and blew a 1 ns ala2 run up, measured)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the learned CV (its eager twin in the CV file; ala2: 0.73 vs 1.60 ms/step)")
    parser.add_argument("--jobs", type=int, default=1, help="walkers run in this many processes at once")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: fastest here)")
    parser.add_argument("--work", default="runs/sampling", help="where the walkers' COLVAR files are kept (default runs/sampling); a walker "
                        "that finished there with the same settings is reused, so a killed run resumes")
    args = parser.parse_args()
    result = run(Path(args.cv), quick=args.quick, ns=0.04 if args.quick else args.ns, seeds=args.seeds,
                 component=args.component, sigma=args.sigma, barrier_kjmol=args.barrier_kjmol,
                 mts=args.mts, threads=args.threads, method=args.method, wall_kappa=args.wall_kappa,
                 compile=args.compile, jobs=args.jobs, work=args.work)
    save("sampling", args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
