"""How steep and how curved are the CVs the sampling benchmark biases? (issue 17, item 2)

For each exported CV in ``--cvs`` (default: the committed learned CV, the one trained with the smoothness penalty
λ = 1e-4 nm², and the distance-VAMPNet baseline), on frames of one 600 K training trajectory
(``runs/ala2_600k``, made by the commands in ``benchmarks/sampling.py``), per φ basin (C7eq, C7ax):

- |∇ₓs₁| per unit of the CV's training range (nm⁻¹): median, 99th percentile, max (as ``benchmarks/smoothness.py``);
- the largest |eigenvalue| of the mass-weighted Hessian M^(-1/2) ∇²s₁ M^(-1/2) per unit of range
  (amu⁻¹ nm⁻²). Times a bias slope dV/ds (kJ/mol per range) it is the squared angular frequency (ps⁻²) that the
  bias adds along the CV's stiffest direction: what an integrator's outer step has to resolve.

    python benchmarks/cv_gradients.py [--quick]      # results/cv_gradients[_quick].{json,md}

Any other system (``--basins thirds``: frames split by the first CV's own value into the lower, middle and upper
third of its training range, the middle third being where a transition runs; ``--tag`` names the result):

    python benchmarks/cv_gradients.py --basins thirds --tag wlall --trajectory W/train/<run>.dcd \
        --cvs W/learn/cv.pt W/learn/baseline_distances_cv.pt   # W = benchmarks/state/sampling_wlall

On a walker's own (biased) frames, where its bias acts (``--topology``: a walker directory holds ``final.pdb``):

    python benchmarks/cv_gradients.py --quick --basins thirds --tag wlall_hot \
        --trajectory W/bias/gnn_hot_2d_s1/trajectory.dcd --topology W/bias/gnn_hot_2d_s1/final.pdb \
        --temperature "300 K, gnn_hot_2d walker 1 (biased)" \
        --cvs W/learn/cv.pt W/learn_hot/cv.pt W/learn/baseline_distances_cv.pt W/learn_hot/baseline_distances_cv.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DATA, ROOT, machine, now_utc, save  # noqa: E402
from benchmarks.smoothness import _grad_stats  # noqa: E402

CVS = [DATA / "ala2_sampling" / "cv.pt", DATA / "ala2_sampling_smooth" / "cv.pt",
       DATA / "ala2_sampling" / "baseline_distances_cv.pt"]


def cv_stats(path: Path, frames, masses, basins: dict, hessian_frames: int, seed: int = 0) -> dict:
    """Gradient and mass-weighted Hessian statistics of component 0 of one exported CV (float64), per basin."""
    import torch

    from cvlearn.export import load_cv

    module, spec = load_cv(path)
    module = module.double()
    lo, hi = spec.cv_range_training[0]
    cv_range = float(hi - lo)
    x = torch.as_tensor(frames, dtype=torch.float64)
    inv_sqrt_m = (1.0 / torch.as_tensor(masses, dtype=torch.float64).sqrt()).repeat_interleave(3)
    rng = np.random.default_rng(seed)
    out = {"cv": str(path.resolve().relative_to(ROOT)), "range": cv_range}
    for basin, mask in basins.items():
        index = np.flatnonzero(mask)
        if index.size == 0:
            out[basin] = {"frames": 0}
            continue
        grads = []
        for i in index:
            xi = x[i].clone().requires_grad_(True)
            grads.append(float(torch.autograd.grad(module(xi)[0], xi)[0].norm()))
        curvature = []
        for i in rng.choice(index, min(hessian_frames, index.size), replace=False):
            hess = torch.autograd.functional.hessian(lambda y: module(y.reshape(-1, 3))[0], x[i].reshape(-1))
            weighted = inv_sqrt_m[:, None] * hess * inv_sqrt_m[None, :] / cv_range
            curvature.append(float(torch.linalg.eigvalsh(weighted).abs().max()))
        curvature = np.array(curvature)
        out[basin] = {"frames": int(index.size), "grad_per_range_nm-1": _grad_stats(cv_range, grads),
                      "hessian_frames": int(curvature.size),
                      "mass_weighted_curvature_per_range": {"median": float(np.median(curvature)),
                                                            "p90": float(np.percentile(curvature, 90)),
                                                            "max": float(curvature.max())}}
        print(path.parent.name, path.name, basin, out[basin], flush=True)
    return out


def run(args) -> dict:
    import mdtraj
    import torch

    from cvlearn.analysis.transitions import phi_basins

    torch.set_num_threads(1)
    dcd = Path(args.trajectory)
    if not dcd.is_file():
        raise SystemExit(f"--trajectory: expected {dcd} (make it with the commands in benchmarks/sampling.py), found none")
    top = Path(args.topology) if args.topology else dcd.with_suffix(".pdb")
    if not top.is_file():
        raise SystemExit(f"--topology: expected the PDB of {dcd} at {top}, found none")
    traj = mdtraj.load(str(dcd), top=str(top))
    stride = 10 if args.quick else 1
    traj = traj[::stride]
    masses = [atom.element.mass for atom in traj.topology.atoms]
    hessian_frames = 5 if args.quick else 60
    if args.basins == "phi":
        in_ax, in_eq = phi_basins(mdtraj.compute_phi(traj)[1][:, 0])
        rows = [cv_stats(Path(p), traj.xyz, masses, {"C7eq": in_eq, "C7ax": in_ax}, hessian_frames) for p in args.cvs]
    else:
        rows = [cv_stats(Path(p), traj.xyz, masses, thirds(Path(p), traj.xyz), hessian_frames) for p in args.cvs]
    return {"benchmark": "cv_gradients", "date": now_utc(), "machine": machine(),
            "settings": {"quick": args.quick, "trajectory": str(dcd.relative_to(ROOT) if dcd.is_absolute() else dcd),
                         "topology": str(top),
                         "stride": stride, "frames": traj.n_frames, "hessian_frames_per_basin": hessian_frames,
                         "component": 0, "dtype": "float64", "basins": args.basins, "temperature": args.temperature},
            "rows": rows, "targets": []}


def thirds(path: Path, frames) -> dict:
    """Frames by the value of the CV's component 0: lower, middle and upper third of its training range."""
    import torch

    from cvlearn.export import load_cv

    module, spec = load_cv(path)
    lo, hi = spec.cv_range_training[0]
    with torch.no_grad():
        s = np.array([float(module(torch.as_tensor(x, dtype=torch.float32))[0]) for x in frames])
    edges = lo + (hi - lo) * np.array([1 / 3, 2 / 3])
    return {"lower": s < edges[0], "middle": (s >= edges[0]) & (s < edges[1]), "upper": s >= edges[1]}


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [f"# Gradients and curvature of the sampling CVs ({result['date']}, quick={s['quick']})", "",
             f"{s['frames']} frames of `{s['trajectory']}` ({s.get('temperature', '600 K')}), component 0, float64, "
             f"{'per φ basin' if s.get('basins', 'phi') == 'phi' else 'per third of the training range of s'}; "
             "curvature = largest |eigenvalue| "
             f"of M^(-1/2) ∇²s M^(-1/2) per unit of training range on {s['hessian_frames_per_basin']} frames per basin.",
             "", "| CV | basin | median \\|∇s\\|/range (nm⁻¹) | p99 | max | curvature median (amu⁻¹ nm⁻²) | p90 | max |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for basin in [k for k in row if isinstance(row[k], dict)]:
            if row[basin]["frames"] == 0:
                lines.append(f"| `{row['cv']}` | {basin} | no frames | | | | | |")
                continue
            g, c = row[basin]["grad_per_range_nm-1"], row[basin]["mass_weighted_curvature_per_range"]
            lines.append(f"| `{row['cv']}` | {basin} | {g['median']:.2f} | {g['p99']:.2f} | {g['max']:.2f} | "
                         f"{c['median']:.0f} | {c['p90']:.0f} | {c['max']:.0f} |")
    return "\n".join(lines) + "\n\nNo targets: these numbers describe the CVs that the sampling benchmarks bias.\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cvs", nargs="+", default=[str(p) for p in CVS])
    parser.add_argument("--trajectory", default=str(ROOT / "runs" / "ala2_600k" / "alanine_dipeptide_T600_s3.dcd"),
                        help="one trajectory of the training data (its .pdb beside it; default ala2 at 600 K)")
    parser.add_argument("--topology", default=None, help="the trajectory's PDB (default: its .pdb beside it; a "
                        "walker directory's is final.pdb)")
    parser.add_argument("--temperature", default="600 K", help="of --trajectory, for the table's caption")
    parser.add_argument("--basins", choices=("phi", "thirds"), default="phi",
                        help="phi: ala2's C7eq/C7ax; thirds: the CV's own lower/middle/upper third of its range")
    parser.add_argument("--tag", default="", help="results/cv_gradients_<tag> (default: results/cv_gradients)")
    args = parser.parse_args(argv)
    result = run(args)
    save("cv_gradients" + (f"_{args.tag}" if args.tag else ""), args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
