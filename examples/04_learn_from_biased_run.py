"""Learn a slow CV from a *biased* alanine-dipeptide run: well-tempered metadynamics on φ at 300 K, its
COLVAR (metad.bias, metad.rct) → frame weights exp(β(V − c)) and a rescaled time axis → VAMPNets trained
with reweighted pairs and with rescaled-time pairs, compared with ignoring the bias.

    python examples/04_learn_from_biased_run.py [--quick] [--out runs/biased_learning]
"""

import argparse
import copy
import logging
import sys
from pathlib import Path

import mdtraj
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvlearn.data.lagged import biased_pairs, frame_weights, load_biased_run  # noqa: E402
from cvlearn.models.cv import DistanceCV, fit_head_scaler  # noqa: E402
from cvlearn.estimators import VAMPNet  # noqa: E402
from cvlearn.nn.heads import MLPHead  # noqa: E402
from cvlearn.io import write_json_atomic  # noqa: E402
from openmm_plugin.bias import BiasReporter, BiasRunner, Metadynamics  # noqa: E402
from openmm_plugin.bias.torsions import export_torsion_cv  # noqa: E402
from openmm_plugin.forces import python_bias_force  # noqa: E402
from openmm_plugin.simulation import make_integrator, run_md  # noqa: E402
from systems import alanine_dipeptide as ala2  # noqa: E402


def biased_md(out: Path, ps: float, frame_ps: float, temperature_k: float, seed: int = 0) -> tuple[Path, Path, Path]:
    """WT-metadynamics on φ; COLVAR rows are written at the trajectory frames (row k = frame k)."""
    colvar = out / "biased.colvar"
    if colvar.exists():
        return out / "biased.dcd", out / "biased.pdb", colvar
    molecule = ala2.build()
    system = copy.deepcopy(molecule.system)
    phi_cv = export_torsion_cv(out / "phi_cv.pt", ala2.phi_psi_indices(molecule.topology)[:1], molecule.topology)
    bias = Metadynamics(sigma=[0.35], height_kjmol=1.5, pace_steps=100, temperature_k=temperature_k, lower=[-np.pi],
                        upper=[np.pi], bias_factor=6.0, periods=[2 * np.pi], grid_bins=200, use_grid=True)
    force = python_bias_force(phi_cv, bias)
    system.addForce(force)
    report_steps = int(round(frame_ps / ala2.TIMESTEP_PS))
    log = BiasReporter(colvar, bias, force.callback.evaluator, report_steps, cv_names=["phi"], resume=False)
    result = run_md(molecule.topology, system, molecule.positions_nm,
                    make_integrator(temperature_k, ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, seed=seed),
                    out_prefix=out / "biased", n_steps=int(round(ps / ala2.TIMESTEP_PS)),
                    report_interval_steps=report_steps, seed=seed, temperature_k=temperature_k,
                    advance=BiasRunner(bias, callback=force.callback).step, on_report=log, progress=False,
                    desc="metadynamics on phi")
    log.close()
    return result.trajectory_path, result.topology_path, colvar


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 1 minute)")
    parser.add_argument("--out", default="runs/biased_learning")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    out = Path(args.out)
    ps, frame_ps, lag, epochs = (200.0, 0.5, 4, 5) if args.quick else (5000.0, 1.0, 5, 40)
    temperature_k = 300.0
    traj_path, top_path, colvar_path = biased_md(out, ps, frame_ps, temperature_k)
    heavy = ala2.heavy_atom_indices(ala2.build().topology)
    run = load_biased_run(traj_path, top_path, colvar_path, temperature_k, atom_indices=heavy, skip_ps=0.1 * ps)
    n = len(run.positions)
    cut = int(0.75 * n)  # one trajectory: split in time (validation = the last quarter)
    train, val = [run.positions[:cut]], [run.positions[cut:]]
    lw_train, lw_val = [run.log_weights[:cut]], [run.log_weights[cut:]]
    variants = {
        "ignore_bias": {},
        "reweighted_pairs": {"train_weights": frame_weights(lw_train), "validation_weights": frame_weights(lw_val)},
        "rescaled_time": {"train_pairs": biased_pairs(lw_train, run.dt_ps, lag * run.dt_ps, normalise=True),
                          "validation_pairs": biased_pairs(lw_val, run.dt_ps, lag * run.dt_ps, normalise=True)},
    }
    n_atoms = len(heavy)
    results = {}
    phi = mdtraj.compute_phi(run.trajectory)[1][:, 0]
    for name, kwargs in variants.items():
        torch.manual_seed(0)
        lobe = DistanceCV(n_atoms, MLPHead(n_atoms * (n_atoms - 1) // 2, 2, hidden=32))
        fit_head_scaler(lobe, run.positions[:cut])
        est = VAMPNet(lobe, lagtime=lag, learning_rate=2e-3, batch_size=256, max_epochs=epochs, patience=3,
                      progress=False).fit(train, val, **kwargs)
        model = est.fetch_model()
        with torch.no_grad():
            cv = model(run.positions).double().numpy()
        # a slow CV of ala2 must resolve φ (the C7eq ↔ C7ax flip): |corr(CV1, sin/cos φ)|
        corr = max(abs(np.corrcoef(cv[:, 0], f(phi))[0, 1]) for f in (np.sin, np.cos))
        w_val = variants["reweighted_pairs"]["validation_weights"]
        results[name] = {"val_vamp2_own_pairs": est.best_val_vamp2,
                         "val_vamp2_reweighted": est.score(val, weights=w_val), "corr_cv1_phi": float(corr),
                         "epochs": len(est.history)}
    write_json_atomic(out / "metrics.json", {"frames": n, "biased_ps": ps, "lag_frames": lag, "results": results,
                                            "max_log_weight_span": float(np.ptp(run.log_weights))})
    for name, r in results.items():
        print(f"{name:18s} validation VAMP-2 (reweighted) {r['val_vamp2_reweighted']:.4f}   |corr(CV1, φ)| {r['corr_cv1_phi']:.3f}")
    print({"vamp2_val": {k: round(v["val_vamp2_reweighted"], 4) for k, v in results.items()}, "out": str(out)})
