"""GPU rows of the PythonForce route (issues 16, 17): ms/step with the CV on cuda vs cpu, eager vs compiled.

Made for a GPU machine that has only torch, openmm (+ openmm-cuda-13) and numpy: no mdtraj, deeptime, openmm-torch,
torchmd-net, PeptideBuilder. So each System is read from ``benchmarks/data/<system>_system.xml`` + ``<system>.npz``
(written once by ``--prepare`` on a machine with the full stack): ``ala2`` (vacuum/OBC, 22 atoms), ``ala2_water``
(TIP3P, PME, 721 atoms), ``wlall`` (ACE-WLALL-NME, OBC, 103 atoms). The CVs are plain torch here: ``phi`` (one
torsion) and ``mlp`` (the heavy-atom pair distances → 64 → 64 → 2, seeded, untrained: cost does not depend on the
weights). ``--cv FILE`` adds a cvlearn-exported CV: its TorchScript module loads with torch alone, but only eagerly
(its eager twin unpickles cvlearn classes whose imports need mdtraj and torchmd-net). ``--program FILE.pt2`` adds the
same CV as a ``torch.export`` program (``--export-program`` writes it here): it loads with torch alone and compiles
(``--modes eager,inductor,aot``); its bias forces are checked against the file CV's. The bias is a harmonic
restraint away from the start (dV/ds != 0: the backward always runs). Each row is the best of 3 timings after a
warm-up (which also compiles); ``overhead`` is the row minus unbiased MD on the same platform.
``benchmarks/gpu_rows.sh`` runs every row on the device machine in one call.

    python benchmarks/gpu_rows.py --prepare          # full stack, once: writes benchmarks/data/<system>*
    python benchmarks/gpu_rows.py --export-program CV.pt OUT.pt2   # full stack: a CV for the compiled GPU rows
    python benchmarks/gpu_rows.py [--quick] [--system ala2] [--platform CUDA] [--devices cuda,cpu] [--cvs phi,mlp]
                                  [--cv cv.pt] [--program cv.pt2] [--modes eager,inductor,aot] [--steps N] [--tag T]
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

from benchmarks.common import machine, now_utc, targets_table  # noqa: E402
from cvlearn.compiling import CompiledOrEager  # noqa: E402
from openmm_plugin.forces import python_bias_force  # noqa: E402  (torch, openmm, numpy and cvlearn's light modules)

DATA = Path(__file__).resolve().parent / "data"
TARGET_MS = 0.3
FORCE_TOLERANCE = 1e-4  # float32 inside the CVs: rounding differs between devices and between eager and compiled
BIAS_GROUP = 1
NOTES = ["No TorchForce (openmm-torch) row: openmmtorch 1.5 needs torch 2.9.1 with CUDA, which does not travel to "
         "the GPU machine (its image has torch 2.11, which openmmtorch 1.5 does not build against).",
         "The file CV runs eagerly (TorchScript): its eager twin needs torchmd-net (and NVIDIA Warp, ~150 MB), which "
         "do not travel either. The 'program' CV is the same CV (its eager twin's `selected`) saved as a "
         "torch.export program here (`--export-program`): plain aten ops that load with torch alone, compiled "
         "there."]


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


class _Selected(torch.nn.Module):
    """``cv.selected`` as a module's forward, for ``torch.export``."""

    def __init__(self, cv):
        super().__init__()
        self.cv = cv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv.selected(x)


def export_program(cv_file: str, out: Path) -> None:
    """The eager twin of ``cv_file`` (its ``selected``) as a ``torch.export`` program with the exported-CV attributes.

    Why: the twin unpickles cvlearn and torchmd-net classes (and torchmd-net imports NVIDIA Warp, ~150 MB), which
    do not travel to the GPU machine; the program is plain aten ops with its weights and loads with torch alone, so
    the GNN CV can be compiled there (``ProgramCV``). Needs the full stack (here)."""
    import json

    from cvlearn.export import load_eager_cv
    from cvlearn.io import atomic_path

    cv = load_eager_cv(cv_file).requires_grad_(False)
    x = torch.zeros(len(cv.atom_indices), 3, dtype=torch.float64)
    program = torch.export.export(_Selected(cv), (x,), strict=False)
    meta = {"atom_indices": cv.atom_indices.tolist(), "n_cvs": int(cv.n_cvs), "n_particles": int(cv.n_particles),
            "periodic": bool(getattr(cv, "periodic", False)), "source": str(cv_file)}
    with atomic_path(out) as tmp:
        torch.export.save(program, tmp, extra_files={"meta.json": json.dumps(meta)})
    print(f"wrote {out} from {cv_file}")


class ProgramCV(torch.nn.Module):
    """A CV saved by :func:`export_program`: the exported-CV interface (``selected``, ``atom_indices``, ``n_cvs``)."""

    def __init__(self, path: str | Path):
        import json

        super().__init__()
        extra = {"meta.json": ""}
        program = torch.export.load(str(path), extra_files=extra)
        meta = json.loads(extra["meta.json"])
        self.program = program
        self.register_buffer("atom_indices", torch.as_tensor(meta["atom_indices"], dtype=torch.long))
        self.n_cvs, self.n_particles, self.periodic = meta["n_cvs"], meta["n_particles"], meta["periodic"]
        self.graph = program.module()

    def to(self, device, *args, **kwargs):  # constants and device arguments in the graph move too
        from torch.export.passes import move_to_device_pass

        device = torch.device(device)
        if device.type == "cuda" and device.index is None:  # the graph's device checks compare 'cuda' != 'cuda:0'
            device = torch.device("cuda", torch.cuda.current_device())
        moved = move_to_device_pass(self.program, device)
        self.graph = moved.module()
        return super().to(device, *args, **kwargs)

    def selected(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


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


def _compiled(jacobian) -> bool:
    """Whether a compiled Jacobian (``AheadOfTime``, ``CompiledOrEager``) runs compiled code, not its eager fallback."""
    if getattr(jacobian, "ahead_of_time", False):
        return True
    inner = jacobian.fn if isinstance(jacobian.fn, CompiledOrEager) else jacobian
    return inner.fn is not inner.eager


MODES = {"eager": False, "inductor": "inductor", "aot": "aot"}  # row label -> CVEvaluator's compile


def targets_of(rows: list[dict], labels: list[str], platform: str, system_name: str) -> list[dict]:
    """Force agreement per CV (against its first row; the program CV against the file CV's) and its best GPU row."""
    targets = []
    for label in labels:
        diffs = [r["force_rel_diff"] for r in rows if r["cv"] == label and "force_rel_diff" in r]
        if diffs:
            against = "the file CV's first row" if label == "program" and "file" in labels else "its first row"
            targets.append({"name": f"{label} CV: bias forces at the start, every row (device, compile) against "
                                    f"{against}, max |dF| / max |F|", "value": max(diffs),
                            "target": FORCE_TOLERANCE, "unit": "relative", "met": max(diffs) <= FORCE_TOLERANCE})
        on_gpu = [r for r in rows if r["cv"] == label and r["device"].startswith("cuda") and "ms_per_step" in r]
        best = min(on_gpu, key=lambda r: r["ms_per_step"]) if on_gpu else None
        targets.append({"name": f"PythonForce route, {label} CV on the GPU, {platform} platform, best row "
                                f"({best['name'] if best else 'no cuda row'}): <= {TARGET_MS} ms/step on {system_name}",
                        "value": best["ms_per_step"] if best else None, "target": TARGET_MS, "unit": "ms/step",
                        "met": None if best is None else best["ms_per_step"] <= TARGET_MS})
    return targets


def run(quick: bool, platform: str, devices: list[str], cv_file: str | None, system_name: str = "ala2",
        builtin: tuple[str, ...] = ("phi", "mlp"), steps: int | None = None, program: str | None = None,
        modes: tuple[str, ...] = ("eager", "inductor"), partial=None) -> dict:
    """Every row; ``partial(result)`` after each one, so a run cut short by a time limit keeps what it measured."""
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
    if program:  # the same CV as an exported program: its forces are checked against the file CV's first row
        cvs["program"] = (ProgramCV(program), True)
    unbiased = _best_ms(_context(system, positions, platform), n_steps)
    rows = [{"name": "unbiased", "cv": "-", "device": "-", "compile": False, "ms_per_step": min(unbiased),
             "repeats": unbiased}]
    print(f"unbiased on {platform}: {min(unbiased):.4f} ms/step", flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    platforms = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    result = {"benchmark": "gpu_rows", "date": now_utc(), "complete": False,
              "machine": {**machine(), "gpu": gpu, "openmm_platforms": platforms},
              "settings": {"quick": quick, "openmm_platform": platform, "devices": devices, "steps_timed": n_steps,
                           "system": f"{system_name}: {SYSTEMS[system_name][1]}, 2 fs, LangevinMiddle",
                           "bias": "harmonic restraint, kappa 10 kJ/mol per CV unit^2, 0.5 away from the start",
                           "torch_threads": 1, "cv_file": cv_file, "program": program, "modes": list(modes),
                           "torch": torch.__version__, "openmm": openmm.__version__},
              "rows": rows, "targets": [], "notes": NOTES}
    references = {}  # bias forces of each CV's first row
    for label, (cv, compilable) in cvs.items():
        atoms = cv.atom_indices.tolist()
        with torch.no_grad():
            start = cv.selected(torch.as_tensor(positions[atoms])).numpy()
        for device in devices:
            for mode in modes if compilable else ("eager",):
                name = f"PythonForce, {label} CV on {device}" + ("" if mode == "eager" else f", {mode}")
                try:
                    force = python_bias_force(cv, Restraint(start + 0.5), compile=MODES[mode], device=device)
                    force.setForceGroup(BIAS_GROUP)
                    context = _context(system, positions, platform, force)
                    state = context.getState(getForces=True, groups={BIAS_GROUP})  # at the start, before any step
                    times = _best_ms(context, n_steps)
                except Exception as err:  # noqa: BLE001 - one row failing must not take the others with it
                    print(f"{name}: failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})", flush=True)
                    rows.append({"name": name, "cv": label, "device": device, "mode": mode,
                                 "error": f"{type(err).__name__}: {str(err)[:500]}"})
                    continue
                forces = np.asarray(state.getForces(asNumpy=True)._value)
                reference = references.setdefault("file" if label == "program" and "file" in references else label,
                                                  forces)
                evaluator = force.callback.evaluator
                jacobians = list(evaluator._jacobians.values())
                rows.append({"name": name, "cv": label, "device": device, "mode": mode, "compile": mode != "eager",
                             "ms_per_step": min(times), "overhead_ms_per_step": min(times) - min(unbiased),
                             "repeats": times, "single_transfer": evaluator.single_transfer,
                             "ahead_of_time": any(getattr(j, "ahead_of_time", False) for j in jacobians),
                             "compiled": any(_compiled(j) for j in jacobians),
                             "max_bias_force": float(np.abs(forces).max()),
                             "force_rel_diff": float(np.abs(forces - reference).max() / np.abs(reference).max())})
                print(f"{name:55s} {min(times):8.4f} ms/step, bias forces {rows[-1]['force_rel_diff']:.1e} "
                      f"(relative) from the CV's first row", flush=True)
                if partial:
                    result["targets"] = targets_of(rows, list(cvs), platform, system_name)
                    partial(result)
    result["targets"] = targets_of(rows, list(cvs), platform, system_name)
    result["complete"] = True
    return result


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# gpu_rows, {s['system']} ({result['date']}, GPU {result['machine']['gpu']}, "
             f"platform {s['openmm_platform']}, torch {s.get('torch', '?')}, quick={s['quick']}"
             f"{'' if result.get('complete', True) else ', INCOMPLETE'})",
             "", "| run | ms/step | overhead ms/step | bias forces vs the CV's reference row |", "|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['name']} | failed: {r['error'].splitlines()[0][:120]} | | |")
        else:
            diff = f"{r['force_rel_diff']:.1e}" if "force_rel_diff" in r else "-"
            fell_back = r.get("compile") and not r.get("compiled")
            name = r["name"] + (" (compile failed: ran eagerly)" if fell_back else "")
            lines.append(f"| {name} | {r['ms_per_step']:.4f} | {r.get('overhead_ms_per_step', 0.0):.4f} | {diff} |")
    lines += ["", *[f"- {note}" for note in result.get("notes", [])]]
    return "\n".join(lines + targets_table(result["targets"])) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="write benchmarks/data/<system>* (needs the full stack)")
    parser.add_argument("--export-program", nargs=2, metavar=("CV", "OUT"),
                        help="write CV's eager twin as a torch.export program OUT (needs the full stack)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--platform", default="CUDA", help="OpenMM platform of the MD (default CUDA)")
    parser.add_argument("--devices", default="cuda,cpu", help="CV devices, comma-separated (default cuda,cpu)")
    parser.add_argument("--cv", default=None, help="also a cvlearn-exported CV file (TorchScript, eager rows only)")
    parser.add_argument("--program", default=None, help="also a CV written by --export-program (compiled rows)")
    parser.add_argument("--modes", default="eager,inductor",
                        help="routes of the compilable CVs: eager, inductor (torch.compile), aot (AOTInductor)")
    parser.add_argument("--system", default="ala2", choices=sorted(SYSTEMS), help="the System (default ala2)")
    parser.add_argument("--cvs", default="phi,mlp", help="built-in CVs to time, comma-separated ('' for none)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timing (default 2000, --quick 200)")
    parser.add_argument("--tag", default="", help="suffix of the result files (gpu_rows[_system][_tag].json)")
    args = parser.parse_args()
    if args.prepare:
        prepare()
    elif args.export_program:
        export_program(args.export_program[0], Path(args.export_program[1]))
    else:
        from benchmarks.common import RESULTS
        from cvlearn.io import write_json_atomic, write_text_atomic

        def split(text):
            return [t.strip() for t in text.split(",") if t.strip()]

        modes = tuple(split(args.modes))
        if set(modes) - set(MODES):
            parser.error(f"--modes: expected some of {', '.join(MODES)}, found {args.modes!r}")
        name = "gpu_rows" if args.system == "ala2" else f"gpu_rows_{args.system}"
        name += f"_{args.tag}" if args.tag else ""
        name += "_quick" if args.quick else ""

        def partial(result):
            write_json_atomic(RESULTS / f"{name}.json", result)
            write_text_atomic(RESULTS / f"{name}.md", markdown(result))

        result = run(args.quick, args.platform, split(args.devices), args.cv, args.system, tuple(split(args.cvs)),
                     args.steps, args.program, modes, partial)
        partial(result)
        print(markdown(result))
