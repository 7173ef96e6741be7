"""What OpenMM's CPU platform costs per step with one thread, on all cores against pinned to one core.

With ``Threads=1`` the CPU platform still runs each force on one worker thread and waits for it: two threads that
hand off several times per step. Where the OS may put them on different cores, each hand-off is a cross-core wake-up
(costly on a VM); on one core it is a switch on that core. The benchmarks that run one-thread contexts side by side
(``sampling_wlall.py``'s reference and walkers) pin each child to a core of its own
(:func:`benchmarks._sampling_wlall_runs.run_children`); this measures why. Rows: unbiased Langevin MD (2 fs) of
alanine dipeptide (OBC, 22 atoms), WLALL (OBC, 103 atoms) and alanine dipeptide in TIP3P (PME, 721 atoms) on the CPU
platform with one thread (all cores allowed, then one core), with one thread per core, and on the Reference platform
(single-threaded, no worker). Run it on an otherwise idle machine: the load average is recorded beside the rows.

    python benchmarks/cpu_affinity.py [--quick]
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, now_utc, quick_main, targets_table  # noqa: E402

SYSTEMS = ("alanine_dipeptide", "pentapeptide_wlall", "alanine_dipeptide_water")


def time_md(molecule, platform: str, threads: int | None, cores: set[int], n_steps: int) -> dict:
    """ms per 2-fs step (best of three blocks of ``n_steps``) and voluntary context switches per step, with this
    thread's CPU mask ``cores`` while the Context (and so its worker threads) is created and run."""
    import openmm

    from openmm_plugin.simulation import make_integrator, platform_by_name

    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        integrator = make_integrator(300.0, 1.0, 0.002, seed=1)
        properties = {} if threads is None else {"Threads": str(threads)}
        context = openmm.Context(molecule.system, integrator, platform_by_name(platform), properties)
        context.setPositions(molecule.positions_nm)
        context.setVelocitiesToTemperature(300.0, 1)
        integrator.step(max(50, n_steps // 10))  # warm-up
        best, switches = float("inf"), 0.0
        for _ in range(3):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
            start = time.perf_counter()
            integrator.step(n_steps)
            seconds = time.perf_counter() - start
            if seconds < best:
                best = seconds
                switches = (resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before) / n_steps
        del context, integrator
    finally:
        os.sched_setaffinity(0, everything)
    return {"ms_per_step": best / n_steps * 1e3, "context_switches_per_step": switches}


def run(quick: bool) -> dict:
    import importlib

    if not hasattr(os, "sched_setaffinity"):
        raise SystemExit("cpu_affinity: needs Linux CPU affinity (os.sched_setaffinity), not found on this OS")
    cores = sorted(os.sched_getaffinity(0))
    steps = {"alanine_dipeptide": 10000, "pentapeptide_wlall": 2000, "alanine_dipeptide_water": 1000}
    load_before = os.getloadavg()
    rows = []
    for name in SYSTEMS:
        molecule = importlib.import_module(f"systems.{name}").build()  # once: every config times the same system
        n = max(100, steps[name] // (10 if quick else 1))
        configs = [("CPU, Threads=1, all cores allowed", "CPU", 1, set(cores)),
                   ("CPU, Threads=1, pinned to one core", "CPU", 1, {cores[-1]}),
                   (f"CPU, Threads={len(cores)}, all cores", "CPU", len(cores), set(cores))]
        if name != "alanine_dipeptide_water":  # the Reference platform's PME is too slow to matter
            configs.append(("Reference (one thread, no worker)", "Reference", None, set(cores)))
        for label, platform, threads, mask in configs:
            result = time_md(molecule, platform, threads, mask, n)
            rows.append({"system": name, "config": label, "platform": platform, "threads": threads,
                         "cores_allowed": len(mask), "steps_timed": n, **result})
            print(f"{name:26s} {label:38s} {result['ms_per_step']:8.4f} ms/step "
                  f"{result['context_switches_per_step']:6.1f} switches/step", flush=True)

    def ms(system, config_start):
        return next(r["ms_per_step"] for r in rows if r["system"] == system and r["config"].startswith(config_start))

    targets = []
    for name in SYSTEMS:
        ratio = ms(name, "CPU, Threads=1, all") / ms(name, "CPU, Threads=1, pinned")
        # The decision it backs: pinning a one-thread child never costs (>= 1) on this machine.
        targets.append({"name": f"{name}: CPU Threads=1, all cores allowed / pinned to one core, ms/step",
                        "value": ratio, "target": 1.0, "unit": "x", "met": bool(ratio >= 1.0)})
    return {"benchmark": "cpu_affinity", "date": now_utc(), "machine": machine(),
            "settings": {"quick": quick, "timestep_fs": 2.0, "integrator": "LangevinMiddle, 1/ps, 300 K",
                         "cores": cores, "load_average_before": list(load_before),
                         "load_average_after": list(os.getloadavg()),
                         "timing": "best of 3 blocks after a warm-up; context switches: voluntary, whole process"},
            "rows": rows, "targets": targets}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# cpu_affinity ({result['date']}, {len(s['cores'])} cores, quick={s['quick']}, load average "
             f"{s['load_average_before'][0]:.2f} before, {s['load_average_after'][0]:.2f} after)", "",
             "| system | platform and cores | ms/step | voluntary context switches / step |", "|---|---|---|---|"]
    lines += [f"| {r['system']} | {r['config']} | {r['ms_per_step']:.4f} | {r['context_switches_per_step']:.1f} |"
              for r in result["rows"]]
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    quick_main("cpu_affinity", __doc__, run, markdown)
