"""Is the bias force of each sampling CV the gradient of its bias energy? NVE energy conservation (issue 17).

A CV that jumps (the shipped ET masks its vector messages at its 5 Å cutoff, and ``dv_proj``'s bias is not zero)
gives a bias energy with steps that no force acts across. Langevin MD under it then samples a distribution that
is not exp(−β(U + V)), while exp(βV) reweighting assumes it is: a systematic ΔF error. NVE shows it directly.

Per CV file (default: the committed sampling CVs, with and without ``vector_cutoff``, and the distance baseline):
ala2 (Reference platform) under a harmonic bias on component 0, κ = ``--kappa`` kJ/mol per CV unit², centred at
the low end of the CV's training range (so dV/ds is ~κ × range across it), velocity Verlet at ``--dt-fs`` from a
300 K start, ``--ps`` ps; the total energy every 10 steps. Reported: its standard deviation, its range and its
drift (least-squares slope), and the same without the bias. Target: each GNN CV's run conserves energy like the
distance CV's (a smooth CV: total-energy std ≤ 1.5 × its), since any bias adds some stiffness.

    python benchmarks/energy_conservation.py [--quick]     # results/energy_conservation[_quick].{json,md}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, ROOT, machine, now_utc, save, targets_table  # noqa: E402

CVS = [DATA / "ala2_sampling" / "cv.pt", DATA / "ala2_sampling_vcut" / "cv.pt",
       DATA / "ala2_sampling" / "baseline_distances_cv.pt"]


def nve(cv_path: Path | None, kappa: float, dt_fs: float, n_steps: int, seed: int = 0) -> dict:
    """Total energy of one NVE run (kJ/mol every 10 steps) under a harmonic bias on ``cv_path`` (None: no bias)."""
    import openmm
    import torch
    from openmm import unit

    from cvlearn.export import load_cv
    from openmm_plugin.bias.base import OnComponents
    from openmm_plugin.bias.restraints import HarmonicRestraint
    from openmm_plugin.forces import python_bias_force
    from openmm_plugin.simulation import make_integrator, make_simulation
    from systems import alanine_dipeptide as ala2

    torch.set_num_threads(1)
    molecule = ala2.build()
    system = molecule.system
    # a thermalised start: 2 ps of Langevin MD without the bias
    warm = make_simulation(molecule.topology, ala2.build().system, make_integrator(300.0, 1.0, 0.002, seed=seed),
                           "Reference")
    warm.context.setPositions(molecule.positions_nm)
    warm.context.setVelocitiesToTemperature(300.0 * unit.kelvin, seed + 1)
    warm.step(1000)
    state = warm.context.getState(getPositions=True, getVelocities=True)
    if cv_path is not None:
        cv, spec = load_cv(cv_path)
        lo, _ = spec.cv_range_training[0]
        bias = OnComponents(HarmonicRestraint([lo], [kappa]), [0], spec.n_cvs)
        system.addForce(python_bias_force(cv, bias, system=system))
    simulation = make_simulation(molecule.topology, system, openmm.VerletIntegrator(dt_fs * 1e-3), "Reference")
    simulation.context.setPositions(state.getPositions())
    simulation.context.setVelocities(state.getVelocities())
    energies = []
    for _ in range(n_steps // 10):
        simulation.step(10)
        e = simulation.context.getState(getEnergy=True)
        energies.append((e.getPotentialEnergy() + e.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    e = np.array(energies)
    t_ps = np.arange(e.size) * 10 * dt_fs * 1e-3
    return {"cv": None if cv_path is None else str(Path(cv_path).relative_to(ROOT)), "std_kjmol": float(e.std()),
            "range_kjmol": float(e.max() - e.min()), "drift_kjmol_per_ps": float(np.polyfit(t_ps, e, 1)[0]),
            "steps": int(n_steps)}


def run(args) -> dict:
    ps = 2.0 if args.quick else args.ps
    n_steps = int(round(ps * 1e3 / args.dt_fs)) // 10 * 10
    rows = [nve(None, args.kappa, args.dt_fs, n_steps)]
    rows += [nve(Path(p), args.kappa, args.dt_fs, n_steps) for p in args.cvs]
    for row in rows:
        print(row, flush=True)
    # Any bias adds stiffness, so a smooth CV's own run is the yardstick: the distance baseline when it is there.
    ref = next((r for r in rows[1:] if r["cv"] and "distances" in r["cv"]), rows[0])
    name = "the distance CV" if ref is not rows[0] else "unbiased"
    targets = [{"name": f"NVE energy std, {r['cv']} / {name}", "value": r["std_kjmol"] / ref["std_kjmol"],
                "target": 1.5, "unit": "x", "met": bool(r["std_kjmol"] <= 1.5 * ref["std_kjmol"])}
               for r in rows[1:] if r is not ref]
    return {"benchmark": "energy_conservation", "date": now_utc(), "machine": machine(),
            "settings": {"quick": args.quick, "dt_fs": args.dt_fs, "ps": ps, "kappa_kjmol_per_cv2": args.kappa,
                         "integrator": "openmm.VerletIntegrator", "platform": "Reference", "start": "2 ps Langevin at 300 K"},
            "rows": rows, "targets": targets}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# NVE energy conservation under a bias on each CV ({result['date']}, quick={s['quick']})", "",
             f"ala2, velocity Verlet {s['dt_fs']:g} fs, {s['ps']:g} ps, harmonic bias κ = {s['kappa_kjmol_per_cv2']:g} "
             "kJ/mol per CV unit² on component 0 centred at the low end of its training range.", "",
             "| CV | total energy std (kJ/mol) | range | drift (kJ/mol/ps) |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['cv'] or 'unbiased'} | {r['std_kjmol']:.3f} | {r['range_kjmol']:.2f} | "
                     f"{r['drift_kjmol_per_ps']:.3f} |")
    lines += targets_table(result["targets"])
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cvs", nargs="+", default=[str(p) for p in CVS])
    parser.add_argument("--kappa", type=float, default=20.0, help="kJ/mol per CV unit squared (default 20)")
    parser.add_argument("--dt-fs", type=float, default=0.5)
    parser.add_argument("--ps", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = run(args)
    save("energy_conservation", args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
