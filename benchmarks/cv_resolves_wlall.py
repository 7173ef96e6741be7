"""Which slow states does each learned pentapeptide CV resolve? (issue 17, ``sampling_wlall``'s CVs)

A bias can only drive a state its CV tells apart from the others. Every learned arm of ``sampling_wlall`` left
Leu2's αL (23 % of the reference) unvisited; this asks whether their CVs can see it at all, before any walker is
spent on them. Each CV file of ``runs.ARMS`` (the ``torsions_2d`` one, Trp ψ and Leu2 φ, is the positive control:
it must see Leu2's αL) is evaluated on frames of the ``torsions_2d`` walkers after their first ``retrain_ns`` (frames
no CV was trained on: ``gnn_torsions_2d`` learned from the first ``retrain_ns``), which visit the states of
interest; per state, the frames in it are told from the rest by the best linear combination of the CV's components
(Fisher's discriminant), scored by its ROC AUC: 0.5 blind, 1 separated. ``AUC_SEES`` (0.8) is this benchmark's own
line for "sees", not the issue's.
States: each residue's αL (φ > 0) and the reference's slowest process (TIC1's two cores, the states whose
transitions ``sampling_wlall`` counts). Unweighted: what the CV can see, not how often the state is visited.

For a GNN CV the same question is asked one step earlier, of what its head is given: a linear probe (a regularised
Fisher discriminant fitted on alternate blocks of frames, scored on the others) on the residue tokens of the frozen
pre-trained featurizer (all tokens side by side) and on the mixed embedding the VAMP head reads. A state the tokens
tell apart and the CV does not was there to learn; the training data did not make it one of the slowest.

    python benchmarks/cv_resolves_wlall.py [--quick] [--work benchmarks/state/sampling_wlall] [--stride 6]
                                           [--cv other_cv.pt ...]

``--quick`` takes every 30th frame; ``--cv`` scores other CV files of the pentapeptide beside the arms' (a candidate
before its walkers are run). Writes ``results/cv_resolves_wlall[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import _sampling_wlall_analysis as ana
from benchmarks import _sampling_wlall_runs as runs
from benchmarks.common import machine, now_utc, save, targets_table

SOURCE_ARM = "torsions_2d"  # the control: its walkers enter Leu2's αL and cross TIC1
AUC_SEES = 0.8  # a state "seen" by a CV: its frames told from the rest by the CV in 80 % of pairs
PROBE_BLOCK_FRAMES = 50  # the probe fits on every other block of this many frames and is scored on the rest
PROBE_RIDGE = 0.1  # of the mean within-class variance, added to its diagonal: 448 token features, ~1,000 frames


def _auc(inside: np.ndarray, outside: np.ndarray, fold: bool = True) -> float:
    """ROC AUC of scores ``inside`` against ``outside`` (ties count half); ``fold``: as max(AUC, 1 − AUC), where the
    direction was fitted on the same frames and its sign is arbitrary (a held-out score is not folded)."""
    auc = float(np.mean(inside[:, None] > outside[None, :]) + 0.5 * np.mean(inside[:, None] == outside[None, :]))
    return max(auc, 1.0 - auc) if fold else auc


def _fisher_direction(a: np.ndarray, b: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """Fisher's discriminant direction between frames ``a`` and ``b`` ``[n, d]``: the pooled within-class covariance
    (plus ``ridge`` × its mean variance on the diagonal) solved against the difference of the means."""
    within = np.atleast_2d(np.cov(a.T) * len(a) + np.cov(b.T) * len(b)) / (len(a) + len(b))
    if ridge:
        within += ridge * np.trace(within) / len(within) * np.eye(len(within))
    return np.linalg.lstsq(within, a.mean(0) - b.mean(0), rcond=None)[0]


def separation_auc(values: np.ndarray, inside: np.ndarray) -> float:
    """ROC AUC of Fisher's linear discriminant of ``values [n, d]`` between frames ``inside`` and the rest (nan when
    either side is empty). Why Fisher: a CV of several components may hold a state in a combination of them."""
    a, b = values[inside], values[~inside]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    direction = _fisher_direction(a, b)
    return _auc(a @ direction, b @ direction)


def probe_auc(features: np.ndarray, inside: np.ndarray) -> float:
    """Held-out ROC AUC of a ridge-regularised Fisher discriminant of ``features [n, d]`` between frames ``inside``
    and the rest: fitted on alternate blocks of :data:`PROBE_BLOCK_FRAMES` frames, scored on the others (nan when a
    side is too small). Why held out and in blocks: hundreds of features separate anything on the frames they were
    fitted on, and neighbouring frames are alike."""
    fit = (np.arange(len(features)) // PROBE_BLOCK_FRAMES) % 2 == 0
    a, b = features[fit & inside], features[fit & ~inside]
    if min(len(a), len(b), int(np.sum(~fit & inside)), int(np.sum(~fit & ~inside))) < 2:
        return float("nan")
    scores = features[~fit] @ _fisher_direction(a, b, PROBE_RIDGE)
    return _auc(scores[inside[~fit]], scores[~inside[~fit]], fold=False)


def head_inputs(path: str, traj) -> dict:
    """A GNN CV's residue tokens (all side by side) and the mixed embedding its head reads, on ``traj``'s frames;
    {} for a CV without tokens (distances, torsions)."""
    import torch

    from cvlearn.export import load_eager_cv

    cv = load_eager_cv(path)
    lobe = getattr(getattr(cv, "model", None), "lobe", None)
    if not hasattr(lobe, "tokens"):
        return {}
    pos = torch.tensor(traj.xyz[:, cv.atom_indices.numpy()], dtype=next(lobe.parameters()).dtype)
    tokens, mixed = [], []
    with torch.no_grad():
        for chunk in torch.split(pos, 200):
            t = lobe.tokens(lobe.featurizer(chunk))
            tokens.append(t.reshape(len(chunk), -1))
            mixed.append(lobe.mixer(t))
    return {"residue tokens": torch.cat(tokens).double().numpy(), "head input": torch.cat(mixed).double().numpy()}


def held_out_frames(work: Path, s: dict, stride: int):
    """The control walkers' frames after ``retrain_ns`` (every ``stride``-th): mdtraj trajectory, φ [n, 5] rad,
    backbone-torsion features (for the reference's TICs)."""
    import mdtraj

    first = int(round(s["retrain_ns"] * 1e3 / s["frame_ps"]))
    trajs, phis, feats = [], [], []
    for seed in range(s["seeds"]):
        d = runs.walker_dir(work, SOURCE_ARM, seed)
        if not (d / "trajectory.dcd").is_file():
            continue
        traj = mdtraj.load(str(d / "trajectory.dcd"), top=str(d / "final.pdb"))[first::stride]
        features, phi, _ = ana.torsions_of(traj)
        trajs.append(traj)
        phis.append(phi)
        feats.append(features)
    if not trajs:
        raise SystemExit(f"cv_resolves_wlall: no {SOURCE_ARM} walkers in {work / 'bias'} (run sampling_wlall first)")
    return mdtraj.join(trajs), np.concatenate(phis), np.concatenate(feats)


def run(args) -> dict:
    from benchmarks.sampling_wlall import FULL, load_reference
    from cvlearn.export import load_cv
    from cvlearn.run_dir import read_record
    from openmm_plugin.cv_evaluation import CVEvaluator

    work = Path(args.work)
    record = read_record(work / "benchmark.run.json")
    if record is None:
        raise SystemExit(f"cv_resolves_wlall: {work / 'benchmark.run.json'}: expected a sampling_wlall work "
                         "directory, found none")
    s = {**FULL, **record["config"]}  # keys added to sampling_wlall after the run started are at their defaults
    stride = 30 if args.quick else args.stride
    started = time.perf_counter()
    traj, phi, features = held_out_frames(work, s, stride)
    ref = load_reference(work, s)
    tic1 = ana.project(ref["model"], features)[:, 0]
    cores = ref["cores"]
    in_core = (tic1 <= cores["below"]) | (tic1 >= cores["above"])  # frames between the cores are left out
    states = {f"αL of residue {k + 1}": (phi[:, k] > 0, slice(None)) for k in range(phi.shape[1])}
    states["TIC1 core B (vs A)"] = (tic1 >= cores["above"], in_core)
    states = {name: (inside, where) for name, (inside, where) in states.items()  # a state no frame visits: no row
              if 2 <= inside[where].sum() <= len(inside[where]) - 2}
    files = {}  # CV file -> the arms that bias it (gnn_2d biases the gnn arm's file: one row per file)
    for arm, rel in runs.ARMS.items():
        if (work / rel).is_file():
            files.setdefault(str(work / rel), []).append(arm)
    for path in args.cv or []:
        files.setdefault(str(Path(path)), [])
    rows = []
    for path, arms in files.items():
        cv, _ = load_cv(path)
        evaluator = CVEvaluator(cv)
        values = np.array([evaluator.values(traj.xyz[i][evaluator.atom_indices].astype(np.float64))
                           for i in range(traj.n_frames)])
        rel = str(Path(path).relative_to(work)) if Path(path).is_relative_to(work) else path
        row = {"cv": rel, "arms": arms, "n_cvs": int(values.shape[1]),
               "auc": {name: separation_auc(values[where], inside[where]) for name, (inside, where) in states.items()},
               "probe_auc": {what: {name: probe_auc(x[where], inside[where]) for name, (inside, where) in states.items()}
                             for what, x in head_inputs(path, traj).items()}}
        rows.append(row)
        print(f"{rel}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["auc"].items()), flush=True)
    fractions = {name: float(np.mean(inside[where])) for name, (inside, where) in states.items()}
    leu2 = "αL of residue 2"
    targets = [{"name": f"{leu2} seen by {r['cv']} ({', '.join(r['arms']) or 'no arm'}): ROC AUC",
                "value": r["auc"].get(leu2), "target": AUC_SEES, "unit": "AUC",
                "met": bool(r["auc"][leu2] >= AUC_SEES) if leu2 in r["auc"] else None} for r in rows]
    return {"benchmark": "cv_resolves_wlall", "date": now_utc(), "machine": machine(),
            "settings": {"quick": args.quick, "work": str(work), "stride": stride, "source_arm": SOURCE_ARM,
                         "other_cvs": list(args.cv or []),
                         "frames_after_ns": s["retrain_ns"], "frames": int(traj.n_frames), "auc_sees": AUC_SEES},
            "state_fractions": fractions, "rows": rows, "targets": targets,
            "seconds": time.perf_counter() - started}


def markdown(r: dict) -> str:
    st = r["settings"]
    names = list(r["state_fractions"])
    lines = [f"# cv_resolves_wlall ({r['date']}, {r['machine'].get('cpu_count', '?')} CPUs, quick={st['quick']})", "",
             f"{st['frames']} frames of the {st['source_arm']} walkers after their first {st['frames_after_ns']:g} ns "
             f"(every {st['stride']}th; no CV was trained on them). Per state: ROC AUC of the CV's best linear "
             "separation of the frames in it from the rest (0.5: blind; 1: separated). Unweighted.", "",
             "| CV file (arms) | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|",
             "| fraction of the frames in the state | " + " | ".join(f"{100 * r['state_fractions'][n]:.1f} %"
                                                                   for n in names) + " |"]
    lines += [f"| {row['cv']} ({', '.join(row['arms']) or 'no arm'}; {row['n_cvs']} components) | "
              + " | ".join(f"{row['auc'][n]:.3f}" for n in names) + " |" for row in r["rows"]]
    probed = [row for row in r["rows"] if row.get("probe_auc")]
    if probed:
        lines += ["", "What the GNN CVs' heads are given: held-out linear-probe AUC (fitted on alternate blocks of "
                  f"{PROBE_BLOCK_FRAMES} frames, scored on the others) on the residue tokens and on the mixed embedding "
                  "the head reads; beside it, the CV's own AUC above.", "",
                  "| CV file | input | " + " | ".join(names) + " |", "|---" * (len(names) + 2) + "|"]
        lines += [f"| {row['cv']} | {what} | " + " | ".join(f"{auc[n]:.3f}" for n in names) + " |"
                  for row in probed for what, auc in row["probe_auc"].items()]
    return "\n".join(lines + ["", *targets_table(r["targets"])]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--work", default="benchmarks/state/sampling_wlall")
    parser.add_argument("--stride", type=int, default=6, help="every n-th frame of the held-out walkers")
    parser.add_argument("--cv", action="append", help="another CV file of the pentapeptide to score (repeatable)")
    args = parser.parse_args()
    for path in args.cv or []:
        if not Path(path).is_file():
            raise SystemExit(f"--cv: expected a CV file (cvlearn export), found no file {path}")
    if args.stride < 1:
        raise SystemExit(f"--stride: expected an integer >= 1, found {args.stride}")
    result = run(args)
    save("cv_resolves_wlall", args.quick, result, markdown(result))


if __name__ == "__main__":
    main()
