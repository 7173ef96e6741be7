"""Does the integrator bias the reweighted ΔF of a learned-CV walker? One frozen OPES bias, several integrators.

Issue 17: ΔF(C7ax − C7eq) of the learned GNN CV came out 1.5 kJ/mol below φ/ψ's with the bias force every 2nd step
(MTS 2: a 4 fs outer step), while the same walker with the bias every step gave a different value. An adaptive run
mixes that with the bias's own convergence, so this benchmark freezes it: the final OPES bias of one committed walker
(``benchmarks/state/sampling``, its kernels and its state) is loaded once, and the same system is run with that bias
static under each integrator. With a static bias V, exp(βV) reweighting is exact for any integrator that samples
exp(−β(U + V)); a ΔF that moves with the integrator is integration error, nothing else.

Variants (``--variants``): ``mts2`` (2 fs inner, bias every 2nd step: the sampling benchmark's learned arms),
``mts1`` (2 fs, bias every step: ``cvlearn bias``'s default), ``mts2_1fs`` (1 fs inner, bias every 2nd step: a
2 fs outer step at the cost of ``mts1``). Each variant records φ and the bias energy every ``--report-ps`` and checkpoints
every ``--checkpoint-ps``; a killed run resumes, a finished variant is reused, changed settings are refused.

    python benchmarks/frozen_bias.py --quick                      # 20 ps per variant: checks that it works
    nice python benchmarks/frozen_bias.py --ns 1 --seeds 2        # results/frozen_bias.{json,md}
    nice python benchmarks/frozen_bias.py --walker learned-vcut_compiled_2fs_s0 --tag vcut \
        --work benchmarks/state/frozen_bias_vcut                  # the continuous CV: results/frozen_bias_vcut.*

Reported per variant: ΔF(C7ax − C7eq) (kJ/mol, exp(βV) weights, mean ± standard error over seeds and 5 blocks
each), φ transitions per ns, ms per MD step. Target: |ΔF(mts2) − ΔF(mts1)| within 2 standard errors (the MTS
integrator does not bias ΔF), reported as met or not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._sampling_walkers import BIAS_GROUP, _phi_function, build, warm_up  # noqa: E402
from benchmarks.common import machine, now_utc, run_resumable, save, targets_table  # noqa: E402
from cvlearn.analysis.reweighting import delta_f_kjmol  # noqa: E402
from cvlearn.analysis.transitions import count_phi_transitions, phi_basins  # noqa: E402
from cvlearn.io import atomic_path  # noqa: E402
from cvlearn.run_dir import open_run  # noqa: E402
from cvlearn.units import kt_kjmol  # noqa: E402
from openmm_plugin.simulation import make_integrator, make_simulation  # noqa: E402
from systems import alanine_dipeptide as ala2  # noqa: E402

VARIANTS = {"mts2": (2.0, 2), "mts1": (2.0, 1), "mts2_1fs": (1.0, 2)}  # name: (inner timestep fs, bias every k)
STATE = Path(__file__).resolve().parent / "state" / "sampling"


def _walker(name: str) -> tuple[dict, Path]:
    record = STATE / f"{name}.json"
    if not record.is_file():
        raise SystemExit(f"--walker: expected a finished walker {record}, found none")
    return json.loads(record.read_text())["job"], STATE / f"{name}.ckpt.npz"


def _start_state(job: dict, checkpoint: Path, work: Path):
    """Positions and velocities (nm, nm/ps) at the walker's last checkpoint, read through its own integrator."""
    from openmm import unit

    copy = work / "walker.ckpt.npz"
    shutil.copy(checkpoint, copy)
    molecule = ala2.build()
    system, _, runner = build(job, molecule, copy, None)
    integrator = make_integrator(300.0, ala2.FRICTION_PER_PS, job["timestep_fs"] * 1e-3, seed=job["seed"],
                                 bias_group=BIAS_GROUP, bias_every_steps=job["mts"])
    simulation = make_simulation(molecule.topology, system, integrator, "Reference")
    simulation.context.setPositions(molecule.positions_nm)
    runner.restore(simulation)
    state = simulation.context.getState(getPositions=True, getVelocities=True)
    return (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            state.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)), copy


def run_variant(job: dict, bias_checkpoint: Path, start, variant: str, seed: int, ns: float, report_ps: float,
                checkpoint_ps: float, work: Path, restart_fresh: bool = False) -> dict:
    """One integrator under the frozen bias (resumable); returns its φ (rad), V (kJ/mol) and timing."""
    import torch
    from openmm import unit

    torch.set_num_threads(1)
    timestep_fs, k = VARIANTS[variant]
    name = f"{variant}_s{seed}"
    settings = {"walker_job": job, "variant": variant, "timestep_fs": timestep_fs, "mts": k, "seed": seed, "ns": ns,
                "report_ps": report_ps}
    run = open_run(work / f"{name}.run.json", settings, {"bias": bias_checkpoint}, outputs=[work / f"{name}.npz"],
                   restart_fresh=restart_fresh)
    out = work / f"{name}.npz"
    if run.finished and out.is_file():
        with np.load(out) as data:
            return {k_: data[k_] for k_ in ("phi", "bias", "seconds", "steps_timed")}
    molecule = ala2.build()
    frozen = {**job, "mts": k}  # the bias's kernels do not depend on the integrator; its pace is never reached
    system, _, runner = build(frozen, molecule, bias_checkpoint, None)
    runner.restore(None)  # kernels only: this variant's state comes from `start` or its own checkpoint
    integrator = make_integrator(300.0, ala2.FRICTION_PER_PS, timestep_fs * 1e-3, seed=1000 + seed,
                                 bias_group=BIAS_GROUP, bias_every_steps=k)
    simulation = make_simulation(molecule.topology, system, integrator, "Reference")
    simulation.context.setPositions(start[0])
    simulation.context.setVelocities(start[1])
    warm_up(runner.evaluator, start[0])
    phi_of = _phi_function(ala2.phi_psi_indices(molecule.topology)[0])
    per_report = max(1, int(round(report_ps * 1e3 / (timestep_fs * k))))  # outer steps per row
    rows = int(round(ns * 1e6 / (timestep_fs * k))) // per_report
    rows_per_checkpoint = max(1, int(round(checkpoint_ps / report_ps)))
    phi, bias, seconds, timed = [], [], 0.0, 0
    if out.is_file():
        with np.load(out) as data:
            phi, bias = list(data["phi"]), list(data["bias"])
            seconds, timed = float(data["seconds"]), int(data["steps_timed"])
            simulation.context.loadCheckpoint(data["openmm"].tobytes())
        print(f"{name}: resumed at row {len(phi)} of {rows}", flush=True)
    group = {BIAS_GROUP}
    while len(phi) < rows:
        started = time.perf_counter()
        for _ in range(min(rows_per_checkpoint, rows - len(phi))):
            simulation.step(per_report)
            state = simulation.context.getState(getPositions=True, getEnergy=True, groups=group)
            phi.append(phi_of(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)))
            bias.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            timed += per_report * k
        seconds += time.perf_counter() - started
        with atomic_path(out, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, phi=np.array(phi), bias=np.array(bias), seconds=seconds, steps_timed=timed,
                     openmm=np.frombuffer(simulation.context.createCheckpoint(), dtype=np.uint8))
        print(f"{name}: {len(phi)}/{rows} rows, {seconds * 1e3 / timed:.3f} ms/step", flush=True)
    run.mark_finished()
    return {"phi": np.array(phi), "bias": np.array(bias), "seconds": seconds, "steps_timed": timed}


def analyse(phi: np.ndarray, bias: np.ndarray, ns: float, blocks: int = 5) -> dict:
    """ΔF over the whole run and per block (exp(βV) weights of a static bias), and φ transitions per ns."""
    beta = 1.0 / kt_kjmol(300.0)
    weights = np.exp(beta * (bias - bias.max()))
    in_ax, in_eq = phi_basins(phi)
    per_block = [delta_f_kjmol(a, e, w, 300.0) for a, e, w in
                 zip(np.array_split(in_ax, blocks), np.array_split(in_eq, blocks), np.array_split(weights, blocks))]
    return {"deltaF_kjmol": delta_f_kjmol(in_ax, in_eq, weights, 300.0), "deltaF_blocks_kjmol": per_block,
            "transitions_per_ns": count_phi_transitions(phi) / ns, "fraction_in_ax": float(in_ax.mean())}


def run(args) -> dict:
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(VARIANTS):
        raise SystemExit(f"--variants: expected names from {list(VARIANTS)}, found {args.variants!r}")
    ns = 0.02 if args.quick and args.ns is None else (args.ns or 1.0)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    job, checkpoint = _walker(args.walker)
    start, bias_checkpoint = _start_state(job, checkpoint, work)
    rows = []
    for seed in range(args.seeds):
        for variant in variants:
            data = run_variant(job, bias_checkpoint, start, variant, seed, ns, args.report_ps, args.checkpoint_ps, work,
                               args.restart_fresh)
            row = {"variant": variant, "seed": seed, "timestep_fs": VARIANTS[variant][0], "bias_every_steps":
                   VARIANTS[variant][1], "ns": ns, "ms_per_step": float(data["seconds"]) * 1e3 / int(data["steps_timed"]),
                   **analyse(data["phi"], data["bias"], ns)}
            rows.append(row)
            print(f"{variant} seed {seed}: dF = {row['deltaF_kjmol']:.2f} kJ/mol, {row['transitions_per_ns']:.0f} "
                  f"transitions/ns, {row['ms_per_step']:.3f} ms/step", flush=True)
    summary = {}
    for variant in variants:
        blocks = np.concatenate([r["deltaF_blocks_kjmol"] for r in rows if r["variant"] == variant])
        blocks = blocks[np.isfinite(blocks)]
        whole = [r["deltaF_kjmol"] for r in rows if r["variant"] == variant]
        summary[variant] = {"deltaF_kjmol": float(np.mean(whole)),
                            "stderr_kjmol": float(blocks.std(ddof=1) / np.sqrt(blocks.size)) if blocks.size > 1 else float("nan"),
                            "transitions_per_ns": float(np.mean([r["transitions_per_ns"] for r in rows if r["variant"] == variant])),
                            "ms_per_step": float(np.mean([r["ms_per_step"] for r in rows if r["variant"] == variant]))}
    return {"benchmark": "frozen_bias", "date": now_utc(), "machine": machine(),
            "settings": {"quick": args.quick, "walker": args.walker, "walker_job": job, "ns_per_run": ns,
                         "seeds": args.seeds, "report_ps": args.report_ps, "temperature_k": 300.0,
                         "friction_per_ps": ala2.FRICTION_PER_PS, "platform": "Reference", "torch_threads": 1},
            "summary": summary, "rows": rows, "targets": targets(summary)}


def targets(summary: dict) -> list[dict]:
    out = []
    ref = summary.get("mts1")
    for variant in ("mts2", "mts2_1fs"):
        if ref is None or variant not in summary:
            continue
        s = summary[variant]
        gap, tol = abs(s["deltaF_kjmol"] - ref["deltaF_kjmol"]), 2 * np.hypot(s["stderr_kjmol"], ref["stderr_kjmol"])
        out.append({"name": f"|dF({variant}) - dF(mts1)| under one frozen bias (tolerance: 2 standard errors)",
                    "value": float(gap), "target": float(tol), "unit": "kJ/mol", "met": bool(gap <= tol)})
    return out


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Frozen-bias integrator test ({result['date']}, quick={s['quick']}, walker {s['walker']}, "
             f"{s['seeds']} seed(s) × {s['ns_per_run']:g} ns per variant)", "",
             "One OPES bias, frozen at the end of the walker, the same start; only the integrator changes. exp(βV) "
             "reweighting of a static bias is exact, so differences in ΔF are integration error.", "",
             "| variant | inner fs | bias every | ΔF(C7ax − C7eq) kJ/mol | ± s.e. | per seed | φ transitions/ns | ms/step |",
             "|---|---|---|---|---|---|---|---|"]
    for variant, v in result["summary"].items():
        seeds = ", ".join(f"{r['deltaF_kjmol']:.2f}" for r in result["rows"] if r["variant"] == variant)
        first = next(r for r in result["rows"] if r["variant"] == variant)
        lines.append(f"| {variant} | {first['timestep_fs']:g} | {first['bias_every_steps']} | {v['deltaF_kjmol']:.2f} | "
                     f"{v['stderr_kjmol']:.2f} | {seeds} | {v['transitions_per_ns']:.0f} | {v['ms_per_step']:.3f} |")
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--walker", default="learned_compiled_2fs_s0", help="finished walker in benchmarks/state/"
                        "sampling whose final bias and state are used (default learned_compiled_2fs_s0)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--ns", type=float, default=None, help="ns per variant and seed (default 1; --quick 0.02)")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--report-ps", type=float, default=0.5)
    parser.add_argument("--checkpoint-ps", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", default="runs/frozen_bias", help="variants' rows and checkpoints (resume here)")
    parser.add_argument("--tag", default="", help="results/frozen_bias_<tag>.{json,md} (another walker's test "
                        "beside the default one's)")
    parser.add_argument("--restart-fresh", action="store_true")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    result = run_resumable("frozen_bias", run, args)
    save("frozen_bias" + (f"_{args.tag}" if args.tag else ""), args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
