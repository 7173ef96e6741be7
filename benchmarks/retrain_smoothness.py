"""Is a CV retrained on an OPES-explore run safe to bias, with and without the smoothness penalty? (issue 17, item 4)

``cvlearn iterate`` on ala2 (``benchmarks/data/ala2_iterate/iterate.yaml``) learned a first CV from 600 K MD,
explored 2 ns at 300 K with OPES-explore on it, retrained on the explore run (rescaled time, the bias's transient left
out) and biased the retrained CV with OPES-metad: that last run blew up after 11 ps (NaN at step 5556). This benchmark
takes the committed explore run (``explore.dcd`` + ``explore.colvar``, frame k = row k, and ``first_cv.pt``, the CV
it explored on) through exactly the iterate's retrain and bias stages (``resolve_stages`` of that config), per
smoothness λ (``LearnConfig.smoothness``, the Dirichlet-form penalty) and seed (training seed = MD seed):

- the retrained CV: validation VAMP-2 (the explore run's last quarter, reweighted), |r| of CV 1 with φ, and
  |∇ₓs₁| per unit of its training range on the explore frames (median, 99th percentile, max) with the largest
  mass-weighted curvature (``benchmarks/cv_gradients.py``'s measures);
- its OPES-metad run (the iterate's bias section, ``--ps`` long): blew up or not (the step), φ transitions per ns,
  CV range visited, ms/step;
- the first CV biased the same way, per seed: the control that the bias settings themselves are sound;
- the first unpenalised retrain biased again at 1 and 0.5 fs: whether its blow-up is the time step's.

    python benchmarks/retrain_smoothness.py [--quick] [--work runs/retrain_smoothness]

Resumable: each case writes ``<work>/<case>/case.json`` when done and is skipped after that; the learn and bias
stages resume as ``cvlearn`` does. ``--quick``: one seed, 10 ps per bias run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, machine, now_utc, run_resumable, save, targets_table  # noqa: E402
from openmm_plugin.stages.iterate import RETRAIN_SMOOTHNESS, frame_interval_ps  # noqa: E402

RUN = DATA / "ala2_iterate"
LAMBDAS = (0.0, RETRAIN_SMOOTHNESS)  # nm²: off (cvlearn learn's default) and the iterate retrain's default
SEEDS = (0, 1, 2)
HESSIAN_FRAMES = 20
SHORTER = (2, 4)  # the time-step cases: 2 fs divided by these


def stages(work: Path):
    """The iterate config's stages, with the committed explore run in ``<work>/explore`` (where the iterate leaves
    it), and its φ cores (``transitions``)."""
    import yaml

    from cvlearn.config import from_dict
    from openmm_plugin.stages.iterate import IterateConfig, resolve_stages

    explore = work / "explore"
    explore.mkdir(parents=True, exist_ok=True)
    for source, name in (("explore.dcd", "trajectory.dcd"), ("explore.colvar", "COLVAR")):
        if not (explore / name).is_file():
            shutil.copyfile(RUN / source, explore / name)
    data = yaml.safe_load((RUN / "iterate.yaml").read_text())
    data["out"] = str(work)
    # The first learn is not rerun (its CV is first_cv.pt); its section only has to name inputs that exist.
    data["learn"].update(topology=str(RUN / "topology.pdb"), trajectories=[str(explore / "trajectory.dcd")])
    config = from_dict(IterateConfig, data, str(RUN / "iterate.yaml"))
    return resolve_stages(config), config.transitions


def _phi_r(report: Path) -> float | None:
    match = re.search(r"^\| phi \| ([0-9.]+) \|", report.read_text(), flags=re.M)
    return float(match.group(1)) if match else None


def _bias(st, transitions, cv: Path, out: Path, seed: int, n_steps: int, shorter: int = 1) -> dict:
    """One OPES-metad run of the iterate's bias section on ``cv``; a blow-up is a result, not an error. ``shorter``
    divides the 2-fs time step and multiplies every step count, so the run covers the same ps with the same pace."""
    from cvlearn.errors import RunError
    from openmm_plugin.stages.bias import run_bias
    from openmm_plugin.stages.iterate_report import biased_run_stats

    config = dataclasses.replace(st.bias, cv=str(cv), out=str(out), seed=seed, n_steps=n_steps)
    if shorter > 1:
        step = frame_interval_ps(config) / config.report_interval_steps
        config = dataclasses.replace(
            config, timestep_ps=step / shorter, n_steps=n_steps * shorter,
            report_interval_steps=config.report_interval_steps * shorter,
            save_every_steps=config.save_every_steps * shorter,
            opes=dataclasses.replace(config.opes, pace_steps=config.opes.pace_steps * shorter))
    try:
        summary = run_bias(config)
        failure, ms = None, summary["ms_per_step"]
    except (FloatingPointError, RunError) as error:
        failure, ms = str(error), None
    stats = biased_run_stats(config, cv, transitions, st.learn) if (out / "COLVAR").is_file() else {}
    failed = re.match(r"step (\d+)", failure) if failure else None
    return {"failed_at_step": int(failed.group(1)) if failed else None, "failure": failure, "ms_per_step": ms, **stats}


def _frames():
    """The explore frames (all atoms, nm, float64) and the atoms' masses (amu), for the gradient statistics."""
    import mdtraj as md

    traj = md.load(str(RUN / "explore.dcd"), top=str(RUN / "topology.pdb"))
    masses = np.array([a.element.mass for a in traj.topology.atoms])
    return traj.xyz.astype(np.float64), masses


def run_case(st, transitions, work: Path, frames, name: str, cv: Path | None, lam: float | None, seed: int,
             n_steps: int, shorter: int = 1) -> dict:
    """One CV (``cv`` None: retrained here with smoothness ``lam``): its numbers and its biased run, cached in
    ``<work>/<name>/case.json``; ``frames``: :func:`_frames`."""
    from benchmarks.cv_gradients import cv_stats
    from cvlearn.io import write_json_atomic
    from openmm_plugin.stages.learn import run_learn

    folder = work / name
    done = folder / "case.json"
    if done.is_file():
        return json.loads(done.read_text())
    case = {"case": name, "lambda": lam, "seed": seed, "timestep_fs": 2.0 / shorter}
    if cv is None:
        run_learn(dataclasses.replace(st.retrain, smoothness=lam, seeds=[seed], out=str(folder / "retrain")),
                  progress=False)
        cv = folder / "retrain" / "cv.pt"
    # the learn run that made the CV: the first CV's is committed beside it, a retrain's is its folder
    metrics, report = ((RUN / "learn_metrics.json", RUN / "learn_report.md") if cv == RUN / "first_cv.pt"
                       else (cv.parent / "metrics.json", cv.parent / "report.md"))
    case.update(vamp2_val=json.loads(metrics.read_text())["vamp2_val"], phi_abs_r_cv1=_phi_r(report))
    positions, masses = frames
    grads = cv_stats(cv, positions, masses, {"explore": np.ones(len(positions), bool)}, HESSIAN_FRAMES, seed=seed)
    case.update(cv_range=grads["range"], gradients=grads["explore"])
    case["bias"] = _bias(st, transitions, cv, folder / "bias", seed, n_steps, shorter)
    write_json_atomic(done, case)
    print(json.dumps({k: case[k] for k in ("case", "lambda", "seed")}), case["bias"].get("failure"), flush=True)
    return case


def run(args) -> dict:
    work = Path(args.work)
    st, transitions = stages(work)
    seeds = SEEDS[:1] if args.quick else SEEDS
    ps = 10.0 if args.quick else args.ps
    frame_ps = frame_interval_ps(st.bias)  # one COLVAR row, report_interval_steps MD steps
    n_steps = max(1, int(round(ps / frame_ps))) * st.bias.report_interval_steps
    frames = _frames()
    cases = [run_case(st, transitions, work, frames, f"first_s{seed}", RUN / "first_cv.pt", None, seed, n_steps)
             for seed in seeds]
    for lam in LAMBDAS:
        cases += [run_case(st, transitions, work, frames, f"retrain_l{lam:g}_s{seed}", None, lam, seed, n_steps)
                  for seed in seeds]
    # The mechanism: the first unpenalised retrain (seed 0) again, at 1 and 0.5 fs (same ps, same pace per ps).
    rough = work / f"retrain_l{LAMBDAS[0]:g}_s{seeds[0]}" / "retrain" / "cv.pt"
    cases += [run_case(st, transitions, work, frames, f"retrain_l{LAMBDAS[0]:g}_s{seeds[0]}_dt{2.0 / k:g}fs", rough,
                       LAMBDAS[0], seeds[0], n_steps, shorter=k) for k in SHORTER]

    def blown(group):
        return sum(c["bias"]["failed_at_step"] is not None for c in group)

    at_2fs = [c for c in cases if c["timestep_fs"] == 2.0]
    groups = {"first": [c for c in at_2fs if c["lambda"] is None],
              **{f"{lam:g}": [c for c in at_2fs if c["lambda"] == lam] for lam in LAMBDAS}}
    names = {**{f"{lam:g}": f"2-fs runs of retrained CVs that failed, smoothness {lam:g} (of "
                            f"{len(groups[f'{lam:g}'])})" for lam in LAMBDAS},
             "first": "2-fs runs of the first CV that failed, same bias (control)"}
    targets = [{"name": name, "unit": "runs", "value": blown(groups[key]), "target": 0,
                "met": blown(groups[key]) == 0} for key, name in names.items()]
    return {"benchmark": "retrain_smoothness", "date": now_utc(), "quick": args.quick, "machine": machine(),
            "settings": {"explore": str(RUN / "explore.dcd"), "iterate_config": str(RUN / "iterate.yaml"),
                         "bias_ps": ps, "bias_n_steps": n_steps, "lambdas_nm2": list(LAMBDAS), "seeds": list(seeds),
                         "bias": {"method": st.bias.method, "components": list(st.bias.components),
                                  "barrier_kjmol": st.bias.opes.barrier_kjmol, "sigma": st.bias.opes.sigma,
                                  "pace_steps": st.bias.opes.pace_steps, "compile": st.bias.compile,
                                  "walls_at_training_range": st.bias.walls_at_training_range},
                         "retrain_biased": dataclasses.asdict(st.retrain.biased), "smoothness_candidate": RETRAIN_SMOOTHNESS},
            "rows": cases, "targets": targets}


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _outcome(case: dict) -> str:
    """How a biased run ended: to the end, stopped by the heat guard (with its window's kinetic temperature: ~10^22 K
    means the state had already blown up), or a NaN."""
    bias = case["bias"]
    if bias["failed_at_step"] is None:
        return "ran to the end"
    when = f"at {bias['failed_at_step'] * case['timestep_fs'] / 1000:g} ps"
    hot = re.search(r"kinetic temperature over \d+ steps ([0-9.e+]+) K", bias["failure"] or "")
    if hot:
        return f"stopped hot {when} (T_kin {float(hot.group(1)):.3g} K)"
    return f"NaN {when}"


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [f"# retrain_smoothness ({r['date']}, quick={r['quick']}): CVs retrained on the ala2 OPES-explore run, "
             f"biased", "",
             f"Each CV biased with the iterate's bias section ({s['bias']['method']} on component "
             f"{s['bias']['components']}, barrier {s['bias']['barrier_kjmol']:g} kJ/mol, σ {s['bias']['sigma']}, "
             "walls at the training range, compiled, 2 fs unless the fs column says otherwise: the same ps and pace "
             f"per ps) for {s['bias_ps']:g} ps, MD seed = training seed. "
             "|∇s₁| and curvature: on the 2000 explore frames, per unit of the CV's training range "
             f"(curvature: largest |eigenvalue| of the mass-weighted Hessian on {HESSIAN_FRAMES} frames, amu⁻¹ nm⁻²).",
             "", "| CV | fs | λ (nm²) | seed | validation VAMP-2 | |r| CV 1, φ | |∇s₁| median / p99 / max (nm⁻¹) | "
             "curvature median / max | biased run | φ transitions / ns | ms/step |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in r["rows"]:
        g, b = c["gradients"]["grad_per_range_nm-1"], c["bias"]
        curv = c["gradients"]["mass_weighted_curvature_per_range"]
        outcome = _outcome(c)
        lines.append(f"| {'first (600 K)' if c['lambda'] is None else 'retrained'} | {c['timestep_fs']:g} | "
                     f"{'n/a' if c['lambda'] is None else format(c['lambda'], 'g')} | {c['seed']} | "
                     f"{_num(c.get('vamp2_val'), '.3f')} | {_num(c.get('phi_abs_r_cv1'), '.2f')} | "
                     f"{g['median']:.1f} / {g['p99']:.1f} / {g['max']:.1f} | {curv['median']:.0f} / {curv['max']:.0f} | "
                     f"{outcome} | {_num(b.get('transitions_per_ns'), '.1f')} | {_num(b.get('ms_per_step'), '.3f')} |")
    return "\n".join(lines + targets_table(r["targets"])) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 10 ps per biased run")
    parser.add_argument("--ps", type=float, default=200.0, help="ps per biased run (default 200)")
    parser.add_argument("--work", default="runs/retrain_smoothness", help="retrains and biased runs (resumable)")
    args = parser.parse_args(argv)
    result = run_resumable("retrain_smoothness", run, args)
    save("retrain_smoothness", args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
