"""Does biasing the learned CV sample alanine dipeptide as well as biasing φ/ψ? (issues 6 and 17)

Per seed, OPES-metad (or WT-metad, ``--method metad``) at 300 K on three arms: ``learned`` (an exported GNN
``cv.pt``, component 0 by default), ``distances`` (the distance-VAMPNet baseline exported by the same ``cvlearn
learn`` run, same data, same selection) and ``phi_psi`` (the reference CVs). The two learned arms are biased alike:
walls one margin (10 % of the training range) outside the CV's training range, σ = max(std over 4 ps of unbiased
MD, 5 % of the range) (``--sigma`` overrides), the same OPES settings, through ``--route`` torchscript (PythonForce
running the TorchScript CV), compiled (PythonForce, torch.compile of the eager twin) or torchforce (openmm-torch
TorchForce, refreshed at deposition). φ/ψ goes through the native route (tabulated bias in a CustomCVForce, ~10x
cheaper than a PythonForce). Reported per arm and route: φ transitions per ns (C7eq core ↔ C7ax core, with
hysteresis), reweighted ΔF(C7ax − C7eq) (weights exp(βV)), mean ± std over seeds, ms/step.
Targets (issue 17): 0 learned-CV blow-ups; |ΔF_learned − ΔF_φψ| ≤ 1.25 kJ/mol; seed-to-seed std of ΔF_learned ≤ 1.0
kJ/mol; learned transition rate ≥ 0.8 x the φ/ψ rate.

Both learned CVs come from one ``cvlearn learn`` run (the demo's training data: 4 x 1.5 ns at 600 K, a frame per ps),
committed in ``benchmarks/data/ala2_sampling/`` (``learn.yaml``, ``report.md``: validation VAMP-2 1.7522, distance
baseline 1.7515) so that walkers can be built up across sessions on the same files. To make them again:

    for s in 0 1 2 3; do cvlearn simulate --system alanine_dipeptide --ns 1.5 --temperature 600 --seed $s \\
        --out runs/ala2_600k; done
    cvlearn learn --config benchmarks/data/ala2_sampling/learn.yaml     # writes runs/ala2_learn/

The runs (walker state in ``benchmarks/state/sampling``, committed: COLVARs, checkpoints and run records, ~0.4 MB a
walker, so that a later session resumes them):

    cv=benchmarks/data/ala2_sampling/cv.pt; work=benchmarks/state/sampling
    python benchmarks/sampling.py --cv $cv --quick                                     # every arm runs (minutes)
    nice python benchmarks/sampling.py --cv $cv --work $work --ns 3 --seeds 5 --route compiled --jobs 2   # README route
    nice python benchmarks/sampling.py --cv $cv --work $work --ns 3 --seeds 5 --route compiled --mts 2 --jobs 2
    nice python benchmarks/sampling.py --cv $cv --work $work --ns 3 --seeds 5 --jobs 2                    # TorchScript
    nice python benchmarks/sampling.py --cv $cv --work $work --route compiled --timestep-fs 1 --seeds 1 --ns 3
    nice python benchmarks/sampling.py --cv benchmarks/data/ala2_sampling_smooth_vcut/cv.pt --tag smooth-vcut \
        --work $work --arms learned,phi_psi --ns 3 --seeds 5 --route compiled --jobs 2   # smoothness 1e-4 (learn.yaml)

The README route is ``cvlearn bias``'s: compiled, bias force every step (``--mts 1``, the default here). ``--mts 2``
(the first runs: every 2nd step, a 4 fs outer step) gave the learned CV a ΔF 1.5 kJ/mol below φ/ψ's
(``results/sampling_compiled.md``); ``benchmarks/frozen_bias.py`` tests the integrator alone under one frozen bias.

``--distance-cv`` defaults to ``baseline_distances_cv.pt`` beside ``--cv``. Walkers live in ``--work`` (default
runs/sampling) and resume: a killed walker restarts from its last checkpoint (every ``--checkpoint-ps``), a finished
one is reused; one whose settings changed is refused (``--restart-fresh`` starts them over). Results go to
``results/sampling[_<tag>][_<route>][_<dt>fs][_mts<k>][_quick].{json,md}`` (no route suffix for TorchScript, no
timestep suffix at 2 fs, no ``_mts<k>`` for k = 2, the first runs' setting: the README route writes
``sampling_compiled_mts1``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._sampling_walkers import (ARMS, UNNAMED_MTS, NATIVE_BINS, PHI_PSI_SIGMA_MIN_RAD, PHI_PSI_SIGMA_RAD,  # noqa: E402
                                          ROUTES, open_walker, read_walker, reweighted_phi, run_walker)
from benchmarks.common import RESULTS, machine, now_utc, run_resumable, save, targets_table  # noqa: E402
from cvlearn.analysis.plots import plot_free_energy_profiles  # noqa: E402
from cvlearn.analysis.reweighting import free_energy_profile  # noqa: E402
from cvlearn.export import load_cv  # noqa: E402
from openmm_plugin.bias import OPESParams  # noqa: E402
from openmm_plugin.bias.sigma import learned_cv_sigma  # noqa: E402
from openmm_plugin.simulation import make_integrator  # noqa: E402
from systems import alanine_dipeptide as ala2  # noqa: E402

PACE_PS = 1.0  # OPES deposition every 1 ps (500 steps at 2 fs, PLUMED's ala2 example)


def plot_phi_profiles(colvars: list[Path], path: Path) -> None:
    """Reweighted F(φ) of each walker's COLVAR, coloured by the arm."""
    profiles: dict = {}
    for colvar in map(Path, colvars):
        phi, weights = reweighted_phi(read_walker(colvar))
        f, x = free_energy_profile(np.degrees(phi), weights, 300.0, bins=72, range_x=(-180.0, 180.0))
        profiles.setdefault(colvar.stem.rsplit("_s", 1)[0], []).append((x, f))
    plot_free_energy_profiles(profiles, path, "φ (degrees), reweighted")


def _summary(runs: list[dict], key: str) -> tuple[float, float]:
    """Mean and std over the walkers that ran to the end (blown-up walkers are counted apart)."""
    values = np.array([r[key] for r in runs if not r.get("failure")], dtype=float)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    return float(np.nanmean(values)), float(np.nanstd(values))


def _cv_settings(arm: str, path: Path, component: int, sigma: float | None, molecule) -> dict:
    """Range, σ and identity of one learned arm's CV (the same rules for both learned arms)."""
    if not path.is_file():
        hint = (" (cvlearn learn with export_baselines: true writes it beside cv.pt; or drop the arm: --arms "
                "learned,phi_psi)") if arm == "distances" else ""
        raise SystemExit(f"--{'cv' if arm == 'learned' else 'distance-cv'}: expected an exported CV, {path} does not "
                         f"exist{hint}")
    cv, spec = load_cv(path)
    if spec.cv_range_training is None:
        raise SystemExit(f"{path}: expected a CV with cv_range_training (export_cv(..., training_frames=...)), found none")
    if not 0 <= component < spec.n_cvs:
        raise SystemExit(f"--component: expected 0..{spec.n_cvs - 1} for {path}, found {component}")
    lo, hi = spec.cv_range_training[component]
    sigma_cv = sigma if sigma is not None else learned_cv_sigma(
        cv, spec.cv_range_training, molecule.topology, molecule.system, molecule.positions_nm,
        make_integrator(300.0, ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, seed=12345), 300.0,
        components=(component,))[0][0]
    meta = {k: v for k, v in json.loads(spec.to_json()).items() if k not in ("atom_indices", "atomic_numbers",
                                                                            "residue_of_atom", "bonds")}
    return {"job": {"cv_path": str(path), "n_cvs": int(spec.n_cvs), "component": component, "sigma_cv": float(sigma_cv),
                    "range": [float(lo), float(hi)], "kernel_cutoff": OPESParams().kernel_cutoff}, "metadata": meta}


def _steps(ps: float, timestep_ps: float, multiple: int) -> int:
    return max(multiple, int(round(ps / timestep_ps)) // multiple * multiple)


def plan(args) -> tuple[list[dict], dict]:
    """Every walker's settings (one dict each) and the per-arm CV settings, validated before any MD."""
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if not arms or set(arms) - set(ARMS) or len(set(arms)) != len(arms):
        raise SystemExit(f"--arms: expected distinct names from {list(ARMS)}, found {args.arms!r}")
    if args.timestep_fs <= 0 or args.mts < 1 or args.seeds < 1:
        raise SystemExit(f"expected --timestep-fs > 0, --mts >= 1, --seeds >= 1, found {args.timestep_fs}, {args.mts}, "
                         f"{args.seeds}")
    timestep_ps, mts = args.timestep_fs * 1e-3, args.mts
    ns = 0.04 if args.quick and args.ns is None else (args.ns if args.ns is not None else 5.0)
    common = {"method": args.method, "barrier_kjmol": args.barrier_kjmol, "timestep_fs": args.timestep_fs,
              "pace": _steps(PACE_PS, timestep_ps, mts), "report": _steps(0.2 if args.quick else 1.0, timestep_ps, mts),
              "n_steps": _steps(ns * 1e3, timestep_ps, 4 * mts), "checkpoint_steps": _steps(args.checkpoint_ps, timestep_ps, mts),
              "threads": args.threads, "tmp": str(Path(args.work))}
    molecule = ala2.build()
    cv_path = Path(args.cv) if args.cv else None
    paths = {"learned": cv_path, "distances": Path(args.distance_cv) if args.distance_cv else
             (cv_path.parent / "baseline_distances_cv.pt" if cv_path else None)}
    per_arm = {}
    for arm in arms:
        if arm == "phi_psi":
            per_arm[arm] = {"job": {"route": "native", "mts": 1}}
            continue
        if paths[arm] is None:
            raise SystemExit(f"--arms {arm}: expected --cv (and --distance-cv for distances), found none")
        per_arm[arm] = _cv_settings(arm, paths[arm], args.component, args.sigma, molecule)
        per_arm[arm]["job"].update({"route": args.route, "mts": mts, "wall_kappa": args.wall_kappa,
                                    **({"tag": args.tag} if args.tag else {})})
    jobs = [{**common, **per_arm[arm]["job"], "cv": arm, "seed": seed} for seed in range(args.seeds) for arm in arms]
    Path(args.work).mkdir(parents=True, exist_ok=True)
    for job in jobs:  # validate every walker's record first: a changed setting is refused before any MD runs
        open_walker(job, restart_fresh=args.restart_fresh)
    return jobs, per_arm


def run(args) -> dict:
    jobs, per_arm = plan(args)
    if args.finished_only or args.so_far:  # a report of what exists; nothing is started or resumed
        from benchmarks._sampling_walkers import walker_name

        def exists(j):
            stem = Path(j["tmp"]) / walker_name(j)
            return Path(f"{stem}.json").is_file() or (args.so_far and Path(f"{stem}.colvar").is_file())

        jobs = [j for j in jobs if exists(j)]
        per_arm = {arm: v for arm, v in per_arm.items() if any(j["cv"] == arm for j in jobs)}
        if not jobs:
            raise SystemExit(f"--finished-only/--so-far: expected walkers of this configuration in {args.work}, found none")
        results = [_as_it_stands(j) for j in jobs]
    elif args.jobs > 1 and len(jobs) > 1:  # independent walkers: one process each (spawned: torch and OpenMM start clean)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_walker, jobs))
    else:
        results = [run_walker(j) for j in jobs]
    rows: dict = {arm: [] for arm in per_arm}
    for r in results:
        arm = r.pop("cv")
        rows[arm].append(r)
        state = f"blew up: {r['failure'][:60]}" if r.get("failure") else ""
        print(f"seed {r['seed']} {arm:9s} {r['route']:11s}: {r['transitions']:4d} transitions "
              f"({r['transitions_per_ns']:.1f}/ns), dF = {r['deltaF_C7ax_C7eq_kjmol']:.2f} kJ/mol, "
              f"{r['ms_per_step']:.3f} ms/step {state}", flush=True)
    stem = "sampling" + suffix(args) + ("_quick" if args.quick else "")
    work = Path(args.work)
    from benchmarks._sampling_walkers import walker_name

    plot_phi_profiles([work / f"{walker_name(j)}.colvar" for j in jobs], RESULTS / f"{stem}_phi_profiles.png")
    plot_free_energy_profiles({arm: [(r["deltaF_over_time"]["t_ns"], r["deltaF_over_time"]["kjmol"]) for r in walkers]
                               for arm, walkers in rows.items()}, RESULTS / f"{stem}_convergence.png",
                              "simulated time (ns)", "ΔF(C7ax − C7eq) (kJ/mol), reweighted from the start")
    summary = {arm: {"transitions_per_ns": _summary(walkers, "transitions_per_ns"),
                     "deltaF_C7ax_C7eq_kjmol": _summary(walkers, "deltaF_C7ax_C7eq_kjmol"),
                     "ms_per_step": float(np.mean([r["ms_per_step"] for r in walkers])),
                     "route": walkers[0]["route"], "blown_up": sum(bool(r.get("failure")) for r in walkers)}
               for arm, walkers in rows.items()}
    j0 = jobs[0]
    return {
        "benchmark": "sampling", "date": now_utc(), "machine": machine(),
        "settings": {"quick": args.quick, "arms": list(per_arm), "route_learned_cvs": args.route,
                     "route_phi_psi": "native (CustomTorsionForces + tabulated CustomCVForce)",
                     "cv": args.cv, "distance_cv": per_arm.get("distances", {}).get("job", {}).get("cv_path"),
                     "cv_component": args.component, "method": args.method, "barrier_kjmol": args.barrier_kjmol,
                     "pace_steps": j0["pace"], "timestep_fs": args.timestep_fs, "ns_per_run": j0["n_steps"] * args.timestep_fs * 1e-6,
                     "seeds": max(len(w) for w in rows.values()), "seeds_requested": args.seeds,
                     "finished_only": args.finished_only, "so_far": args.so_far, "learned_cv_mts_substeps": args.mts, "wall_kappa_kjmol": args.wall_kappa,
                     "sigma_phi_psi_rad": PHI_PSI_SIGMA_RAD, "sigma_min_phi_psi_rad": PHI_PSI_SIGMA_MIN_RAD,
                     "native_grid_bins": NATIVE_BINS, "checkpoint_steps": j0["checkpoint_steps"],
                     "parallel_walker_processes": args.jobs, "temperature_k": 300.0, "torch_threads": args.threads,
                     "learned_cvs": {arm: {**v["job"], "walls_at": _walls(v["job"]), "cv_metadata": v["metadata"]}
                                     for arm, v in per_arm.items() if arm != "phi_psi"}},
        "summary": summary,
        "rows": [{"cv": arm, **r} for arm, walkers in rows.items() for r in walkers],
        "targets": targets(summary, rows),
    }


def _as_it_stands(job: dict) -> dict:
    """A finished walker's result, or an unfinished one analysed on its COLVAR so far (``finished: False``)."""
    from benchmarks._sampling_walkers import analyse, read_result, walker_name

    stem = Path(job["tmp"]) / walker_name(job)
    record, colvar = Path(f"{stem}.json"), Path(f"{stem}.colvar")
    if record.is_file():
        return {"cv": job["cv"], **read_result(record), "finished": True}
    rows = sum(1 for line in colvar.read_text().splitlines() if line and not line.startswith("#"))
    return {"cv": job["cv"], **analyse(colvar, rows * job["report"], job["timestep_fs"]),
            "seed": job["seed"], "route": job["route"], "timestep_fs": job["timestep_fs"], "failure": None,
            "ms_per_step": float("nan"), "steps_timed": 0, "finished": False}


def _walls(job: dict) -> list[float]:
    lo, hi = job["range"]
    return [lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)]


def targets(summary: dict, rows: dict) -> list[dict]:
    """Issue 17's targets on the learned arm against φ/ψ; the distance arm the same way, for comparison."""
    out = []
    ref = summary.get("phi_psi")
    for arm, bound in (("learned", True), ("distances", False)):
        if arm not in summary:
            continue
        s = summary[arm]
        out.append({"name": f"{arm}-CV walkers that blew up (of {len(rows[arm])}; left out of the means)",
                    "value": s["blown_up"], "target": 0 if bound else None, "unit": "walkers",
                    "met": s["blown_up"] == 0 if bound else None})
        sd = s["deltaF_C7ax_C7eq_kjmol"][1]
        out.append({"name": f"seed-to-seed std of dF(C7ax-C7eq), {arm}", "value": sd, "target": 1.0 if bound else None,
                    "unit": "kJ/mol", "met": bool(sd <= 1.0) if bound else None})
        if ref is None:
            continue
        rate_r = ref["transitions_per_ns"][0]
        ratio = s["transitions_per_ns"][0] / rate_r if rate_r > 0 else float("nan")
        gap = abs(s["deltaF_C7ax_C7eq_kjmol"][0] - ref["deltaF_C7ax_C7eq_kjmol"][0])
        out += [{"name": f"{arm}-CV phi transition rate / phi-psi rate", "value": ratio, "target": 0.8 if bound else None,
                 "unit": "x", "met": bool(ratio >= 0.8) if bound else None},
                {"name": f"|dF(C7ax-C7eq) {arm} - phi/psi|", "value": gap, "target": 1.25 if bound else None,
                 "unit": "kJ/mol", "met": bool(gap <= 1.25) if bound else None}]
    return out


def suffix(args) -> str:
    """Result-file suffix of a variant: the CV tag, the route when not torchscript, the timestep when not 2 fs, the
    MTS factor when not :data:`UNNAMED_MTS`; a φ/ψ-only run (more reference walkers) writes ``_phi_psi`` instead of
    the learned arms' route and MTS factor."""
    if [a.strip() for a in args.arms.split(",") if a.strip()] == ["phi_psi"]:
        return "_phi_psi" + (f"_{args.timestep_fs:g}fs" if args.timestep_fs != 2.0 else "")
    return (f"_{args.tag}" if args.tag else "") + (f"_{args.route}" if args.route != "torchscript" else "") + (
        f"_{args.timestep_fs:g}fs" if args.timestep_fs != 2.0 else "") + (f"_mts{args.mts}" if args.mts != UNNAMED_MTS else "")


def _mean_or_nan(values) -> float:
    """Mean over the finite values (a short run may see no transition at all: NaN, without a warning)."""
    finite = np.asarray(values, dtype=float)[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def markdown(result: dict) -> str:
    s, st = result["summary"], result["settings"]
    seeds = (f"the finished {st['seeds']} of {st['seeds_requested']} seeds" if st.get("finished_only")
             else f"{st['seeds']} of {st['seeds_requested']} seeds as they stand (unfinished ones too)"
             if st.get("so_far") else f"{st['seeds']} seeds")
    lines = [f"# sampling ({result['date']}, quick={st['quick']}, {seeds} × {st['ns_per_run']:.3g} ns, "
             f"{st['timestep_fs']:g} fs, learned-CV route {st['route_learned_cvs']}, cv={st['cv']})", "",
             "| CV | route | φ transitions / ns | ΔF(C7ax − C7eq) kJ/mol | per seed | ΔF at half the run | ms/step |",
             "|---|---|---|---|---|---|---|"]
    for name in s:
        runs = [r for r in result["rows"] if r["cv"] == name]
        per_seed = ", ".join(f"blew up at {r['ns']:.2f} ns" if r.get("failure") else f"{r['deltaF_C7ax_C7eq_kjmol']:.2f}"
                             + (f" (at {r['ns']:.2f} ns)" if r.get("finished") is False else "") for r in runs)
        half = [r["deltaF_over_time"]["kjmol"][len(r["deltaF_over_time"]["kjmol"]) // 2 - 1]
                for r in runs if not r.get("failure") and r["deltaF_over_time"]["kjmol"]]
        lines.append(f"| {name} | {s[name]['route']} | {s[name]['transitions_per_ns'][0]:.2f} ± "
                     f"{s[name]['transitions_per_ns'][1]:.2f} | {s[name]['deltaF_C7ax_C7eq_kjmol'][0]:.2f} ± "
                     f"{s[name]['deltaF_C7ax_C7eq_kjmol'][1]:.2f} | {per_seed} | {_mean_or_nan(half):.2f} | "
                     f"{s[name]['ms_per_step']:.3f} |")
    stem = "sampling" + result.get("suffix", "") + ("_quick" if st["quick"] else "")
    lines += ["", f"± is the std over the walkers that ran to the end; ms/step is per MD step of the walker's last "
              f"session (a resumed walker times only its remaining steps). ΔF against time per walker: "
              f"`{stem}_convergence.png`; reweighted F(φ): `{stem}_phi_profiles.png`."]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cv", default=None, help="exported learned CV (e.g. runs/ala2_learn/cv.pt)")
    parser.add_argument("--distance-cv", default=None, help="exported distance-VAMPNet CV (default: "
                        "baseline_distances_cv.pt beside --cv)")
    parser.add_argument("--tag", default="", help="label of a second pair of learned CVs (e.g. smooth): names their "
                        "walkers and the result files, so they sit beside the first pair's and share its φ/ψ walkers")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)} (default all)")
    parser.add_argument("--route", choices=ROUTES, default="torchscript", help="how the two learned CVs enter OpenMM: "
                        "PythonForce + TorchScript (default), PythonForce + torch.compile, or openmm-torch TorchForce")
    parser.add_argument("--timestep-fs", type=float, default=2.0, help="MD timestep in fs (default 2)")
    parser.add_argument("--quick", action="store_true", help="0.04 ns per run unless --ns: checks that it works")
    parser.add_argument("--ns", type=float, default=None, help="ns per run (default 5; --quick 0.04)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--component", type=int, default=0, help="component of the learned CVs to bias (default 0)")
    parser.add_argument("--sigma", type=float, default=None, help="OPES sigma on both learned CVs (default per CV: "
                        "max(std over 4 ps of unbiased MD, 5%% of its training range))")
    parser.add_argument("--barrier-kjmol", type=float, default=30.0, help="OPES barrier (default 30 kJ/mol)")
    parser.add_argument("--method", choices=("opes", "metad"), default="opes")
    parser.add_argument("--wall-kappa", type=float, default=100.0,
                        help="walls 10%% outside a learned CV's training range, kJ/mol per CV unit squared (0: none)")
    parser.add_argument("--mts", type=int, default=1, help="bias force every k-th step for the learned CVs (default 1, "
                        "cvlearn bias's default; 2 lowered the learned CV's ΔF, results/sampling_compiled.md)")
    parser.add_argument("--jobs", type=int, default=1, help="walkers run in this many processes at once")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: fastest here)")
    parser.add_argument("--checkpoint-ps", type=float, default=20.0, help="ps between walker checkpoints (default 20)")
    parser.add_argument("--work", default="runs/sampling", help="walkers' COLVAR, checkpoints and run records "
                        "(default runs/sampling); a killed walker resumes there, a finished one is reused")
    parser.add_argument("--finished-only", action="store_true", help="report the walkers that have finished, run "
                        "nothing (the summary then covers fewer seeds than --seeds; the rows say which)")
    parser.add_argument("--so-far", action="store_true", help="as --finished-only, and unfinished walkers analysed on "
                        "their COLVAR as it stands (rows say finished: false and their ns)")
    parser.add_argument("--restart-fresh", action="store_true", help="delete this configuration's walkers and start over")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    result = run_resumable("sampling", run, args)
    result["suffix"] = suffix(args)
    save("sampling" + suffix(args), args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
