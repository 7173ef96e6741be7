"""GPU rows of the PythonForce route (issues 16, 17): ms/step with the CV on cuda vs cpu, eager vs compiled.

Made for a GPU machine that has only torch, openmm (+ openmm-cuda-13) and numpy: no mdtraj, deeptime, openmm-torch,
torchmd-net, PeptideBuilder. So each System is read from ``benchmarks/data/<system>_system.xml`` + ``<system>.npz``
(written once by ``--prepare`` on a machine with the full stack): ``ala2`` (vacuum/OBC, 22 atoms), ``ala2_water``
(TIP3P, PME, 721 atoms), ``wlall`` (ACE-WLALL-NME, OBC, 103 atoms). The CVs are plain torch here: ``phi`` (one
torsion) and ``mlp`` (the heavy-atom pair distances → 64 → 64 → 2, seeded, untrained: cost does not depend on the
weights). ``--cv FILE`` adds a cvlearn-exported CV: its TorchScript module loads with torch alone, but only eagerly
(its torch.compile twin unpickles cvlearn classes whose imports need mdtraj and torchmd-net). The bias is a harmonic
restraint away from the start (dV/ds != 0: the backward always runs). Each row is the best of 3 timings after a
warm-up (which also compiles); ``overhead`` is the row minus unbiased MD on the same platform.
``benchmarks/gpu_rows.sh`` runs every row on the device machine in one call.

    python benchmarks/gpu_rows.py --prepare          # full stack, once: writes benchmarks/data/<system>*
    python benchmarks/gpu_rows.py [--quick] [--system ala2] [--platform CUDA] [--devices cuda,cpu] [--cvs phi,mlp]
                                  [--cv cv.pt] [--steps N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, now_utc, save, targets_table  # noqa: E402
from openmm_plugin.forces import python_bias_force  # noqa: E402  (torch, openmm, numpy and cvlearn's light modules)

DATA = Path(__file__).resolve().parent / "data"
TARGET_MS = 0.3
FORCE_TOLERANCE = 1e-4  # float32 inside the CVs: rounding differs between devices and between eager and compiled
BIAS_GROUP = 1
NOTES = ["No TorchForce (openmm-torch) row: openmmtorch 1.5 needs torch 2.9.1 with CUDA, which does not travel to "
         "the GPU machine (its image has torch 2.11, which openmmtorch 1.5 does not build against).",
         "The file CV runs eagerly (TorchScript): its torch.compile twin needs torchmd-net (and NVIDIA Warp), which "
         "do not travel either; the compiled rows are the plain-torch phi and mlp CVs."]


SYSTEMS = {"ala2": ("systems.alanine_dipeptide", "alanine dipeptide, amber99sbildn + OBC, 22 atoms"),
           "ala2_water": ("systems.alanine_dipeptide_water",
                          "alanine dipeptide in TIP3P, amber14, PME 0.9 nm, 2.0 nm cube, 721 atoms"),
           "wlall": ("systems.pentapeptide_wlall", "ACE-WLALL-NME, amber99sbildn + OBC, 103 atoms")}


def _files(system: str) -> tuple[Path, Path]:
    return DATA / f"{system}_system.xml", DATA / f"{system}.npz"


def _phi_and_heavy(topology) -> tuple[list[int], list[int]]:
    """The first backbone φ (mdtraj's) and the solute's heavy atoms (the systems' own helper; water left out)."""
    import mdtraj

    from systems.alanine_dipeptide import heavy_atom_indices

    return mdtraj.geometry.indices_phi(mdtraj.Topology.from_openmm(topology))[0].tolist(), heavy_atom_indices(topology)


def prepare() -> None:
    """Write each System (XML), its minimised positions, φ atoms and heavy atoms (needs the full stack)."""
    import importlib

    from cvlearn.io import write_text_atomic

    DATA.mkdir(exist_ok=True)
    for name, (module, _) in SYSTEMS.items():
        molecule = importlib.import_module(module).build()
        phi, heavy = _phi_and_heavy(molecule.topology)
        xml, npz = _files(name)
        write_text_atomic(xml, openmm.XmlSerializer.serialize(molecule.system))
        np.savez(npz, positions_nm=molecule.positions_nm, phi=phi, heavy=heavy)
        print(f"wrote {xml} and {npz}")


class PhiCV(torch.nn.Module):
    """φ (rad) of 4 atoms; the exported-CV interface (``selected``, ``atom_indices``, ``n_cvs``)."""

    n_cvs, periodic = 1, False

    def __init__(self, atoms):
        super().__init__()
        self.register_buffer("atom_indices", torch.as_tensor(np.asarray(atoms), dtype=torch.long))

    def selected(self, x: torch.Tensor) -> torch.Tensor:
        b0, b1, b2 = x[0] - x[1], x[2] - x[1], x[3] - x[2]
        b1 = b1 / b1.norm()
        v, w = b0 - (b0 @ b1) * b1, b2 - (b2 @ b1) * b1
        return torch.atan2(torch.cross(b1, v, dim=0) @ w, v @ w).reshape(1)


class DistanceMLP(torch.nn.Module):
    """Heavy-atom pair distances (nm) → MLP → 2 CVs, float32 inside like an exported CV, float64 out."""

    n_cvs, periodic = 2, False

    def __init__(self, atoms):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("atom_indices", torch.as_tensor(np.asarray(atoms), dtype=torch.long))
        self.register_buffer("pairs", torch.triu_indices(len(atoms), len(atoms), 1))
        n = self.pairs.shape[1]
        self.net = torch.nn.Sequential(torch.nn.Linear(n, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                                       torch.nn.SiLU(), torch.nn.Linear(64, 2))

    def selected(self, x: torch.Tensor) -> torch.Tensor:
        d = (x[self.pairs[0]] - x[self.pairs[1]]).norm(dim=-1)
        return self.net(d.float()).to(x.dtype)


class Restraint:
    """V = κ/2 |s - s0|² (kJ/mol), the numpy bias the PythonForce calls."""

    label = "restraint"

    def __init__(self, center, kappa: float = 10.0):
        self.center, self.kappa, self.n_cvs = np.asarray(center, dtype=np.float64), float(kappa), len(center)

    def energy_and_gradient(self, s):
        d = np.asarray(s) - self.center
        return 0.5 * self.kappa * float(d @ d), self.kappa * d


def _context(system, positions, platform: str, force=None) -> openmm.Context:
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))  # a fresh copy per row
    if force is not None:
        system.addForce(force)
    context = openmm.Context(system, openmm.LangevinMiddleIntegrator(300.0, 1.0, 0.002),
                             openmm.Platform.getPlatformByName(platform))
    context.setPositions(positions)
    context.setVelocitiesToTemperature(300.0, 1)
    return context


def _best_ms(context, n_steps: int) -> list[float]:
    context.getIntegrator().step(max(50, n_steps // 10))  # warm-up: compile, allocations, TorchScript profiling
    times = []
    for _ in range(3):
        start = time.perf_counter()
        context.getIntegrator().step(n_steps)
        context.getState(getEnergy=True)  # waits for the device
        times.append((time.perf_counter() - start) / n_steps * 1e3)
    return times


def run(quick: bool, platform: str, devices: list[str], cv_file: str | None, system_name: str = "ala2",
        builtin: tuple[str, ...] = ("phi", "mlp"), steps: int | None = None) -> dict:
    n_steps = steps or (200 if quick else 2000)
    torch.set_num_threads(1)
    xml, npz = _files(system_name)
    system = openmm.XmlSerializer.deserialize(xml.read_text())
    data = np.load(npz)
    positions = data["positions_nm"]
    cvs = {name: (cv, True) for name, cv in (("phi", PhiCV(data["phi"])), ("mlp", DistanceMLP(data["heavy"])))
           if name in builtin}
    if cv_file:
        cvs["file"] = (torch.jit.load(cv_file, map_location="cpu"), False)
    unbiased = _best_ms(_context(system, positions, platform), n_steps)
    rows = [{"name": "unbiased", "cv": "-", "device": "-", "compile": False, "ms_per_step": min(unbiased),
             "repeats": unbiased}]
    print(f"unbiased on {platform}: {min(unbiased):.4f} ms/step", flush=True)
    for label, (cv, compilable) in cvs.items():
        reference = None  # bias forces of this CV's first row
        atoms = cv.atom_indices.tolist()
        with torch.no_grad():
            start = cv.selected(torch.as_tensor(positions[atoms])).numpy()
        for device in devices:
            for compile in (False, True) if compilable else (False,):
                force = python_bias_force(cv, Restraint(start + 0.5), compile=compile, device=device)
                force.setForceGroup(BIAS_GROUP)
                context = _context(system, positions, platform, force)
                state = context.getState(getForces=True, groups={BIAS_GROUP})  # at the start, before any step
                forces = np.asarray(state.getForces(asNumpy=True)._value)
                reference = forces if reference is None else reference
                times = _best_ms(context, n_steps)
                evaluator = force.callback.evaluator
                rows.append({"name": f"PythonForce, {label} CV on {device}" + (", torch.compile" if compile else ""),
                             "cv": label, "device": device, "compile": compile, "ms_per_step": min(times),
                             "overhead_ms_per_step": min(times) - min(unbiased), "repeats": times,
                             "single_transfer": evaluator.single_transfer,
                             "compiled": bool(compile and evaluator._selected.fn is not evaluator._selected.eager),
                             "max_bias_force": float(np.abs(forces).max()),
                             "force_rel_diff": float(np.abs(forces - reference).max() / np.abs(reference).max())})
                print(f"{rows[-1]['name']:55s} {min(times):8.4f} ms/step, bias forces {rows[-1]['force_rel_diff']:.1e} "
                      f"(relative) from the CV's first row", flush=True)
    targets = []
    for label in cvs:
        diffs = [r["force_rel_diff"] for r in rows if r["cv"] == label]
        targets.append({"name": f"{label} CV: bias forces at the start, every row (device, compile) against the "
                                f"first ({devices[0]}, eager), max |dF| / max |F|", "value": max(diffs),
                        "target": FORCE_TOLERANCE, "unit": "relative", "met": max(diffs) <= FORCE_TOLERANCE})
        on_gpu = [r for r in rows if r["cv"] == label and r["device"].startswith("cuda")]
        best = min(on_gpu, key=lambda r: r["ms_per_step"]) if on_gpu else None
        targets.append({"name": f"PythonForce route, {label} CV on the GPU, {platform} platform, best row "
                                f"({best['name'] if best else 'no cuda row'}): <= {TARGET_MS} ms/step on {system_name}",
                        "value": best["ms_per_step"] if best else None, "target": TARGET_MS, "unit": "ms/step",
                        "met": None if best is None else best["ms_per_step"] <= TARGET_MS})
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    platforms = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    return {"benchmark": "gpu_rows", "date": now_utc(),
            "machine": {**machine(), "gpu": gpu, "openmm_platforms": platforms},
            "settings": {"quick": quick, "openmm_platform": platform, "devices": devices, "steps_timed": n_steps,
                         "system": f"{system_name}: {SYSTEMS[system_name][1]}, 2 fs, LangevinMiddle",
                         "bias": "harmonic restraint, kappa 10 kJ/mol per CV unit^2, 0.5 away from the start",
                         "torch_threads": 1, "cv_file": cv_file},
            "rows": rows, "targets": targets, "notes": NOTES}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# gpu_rows, {s['system']} ({result['date']}, GPU {result['machine']['gpu']}, platform {s['openmm_platform']}, "
             f"quick={s['quick']})", "", "| run | ms/step | overhead ms/step | bias forces vs the CV's first row |",
             "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['ms_per_step']:.4f} | {r.get('overhead_ms_per_step', 0.0):.4f} | "
              f"{r['force_rel_diff']:.1e} |" if "force_rel_diff" in r else
              f"| {r['name']} | {r['ms_per_step']:.4f} | {r.get('overhead_ms_per_step', 0.0):.4f} | - |"
              for r in result["rows"]]
    lines += ["", *[f"- {note}" for note in result.get("notes", [])]]
    return "\n".join(lines + targets_table(result["targets"])) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="write benchmarks/data/<system>* (needs the full stack)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--platform", default="CUDA", help="OpenMM platform of the MD (default CUDA)")
    parser.add_argument("--devices", default="cuda,cpu", help="CV devices, comma-separated (default cuda,cpu)")
    parser.add_argument("--cv", default=None, help="also a cvlearn-exported CV file (TorchScript, eager rows only)")
    parser.add_argument("--system", default="ala2", choices=sorted(SYSTEMS), help="the System (default ala2)")
    parser.add_argument("--cvs", default="phi,mlp", help="built-in CVs to time, comma-separated ('' for none)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timing (default 2000, --quick 200)")
    args = parser.parse_args()
    if args.prepare:
        prepare()
    else:
        def split(text):
            return [t.strip() for t in text.split(",") if t.strip()]

        result = run(args.quick, args.platform, split(args.devices), args.cv, args.system, tuple(split(args.cvs)),
                     args.steps)
        save("gpu_rows" if args.system == "ala2" else f"gpu_rows_{args.system}", args.quick, result,
             markdown(result))
