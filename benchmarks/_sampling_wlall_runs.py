"""The MD of ``benchmarks/sampling_wlall.py``: training data, the learned CVs, the unbiased reference, the walkers.

Every part resumes after a kill and refuses changed settings through the stage it runs on:

* training data: :func:`openmm_plugin.stages.simulate.run_simulate` (checkpoints, ``<prefix>.run.json``);
* CVs: :func:`openmm_plugin.stages.learn.run_learn` with ``export_baselines`` (``cv.pt`` and
  ``baseline_distances_cv.pt`` from the same data);
* reference: fixed-length segments of :func:`openmm_plugin.simulation.run_md` (each checkpoints and resumes; a
  finished one is skipped and reduced to ``seg_k.reduced.npz``, :func:`reduce_segment`, after which its DCD may go).
  Segment k starts from the last frame of segment k − 1 with velocities drawn afresh at 300 K (a Maxwell-Boltzmann
  draw keeps the canonical ensemble; velocity memory is ~1 ps at friction 1/ps), so the reference can grow to any
  length, one segment at a time, across sessions, in ``reference_chains`` independent chains side by side
  (:func:`extend_reference`);
* walkers: :func:`openmm_plugin.stages.bias.run_bias` (PythonForce + TorchScript CV, COLVAR + trajectory.dcd, bias
  checkpoints).

The walkers and the reference's extension run side by side (:func:`run_children`), each in a child process so a time
budget can stop it; a stopped child resumes from its checkpoint next time. A child dies with its parent (Linux).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from cvlearn.io import write_json_atomic
from cvlearn.run_dir import read_record

SYSTEM = "pentapeptide_wlall"
# arm -> its CV file in the work directory. ``gnn_retrained``: the GNN CV retrained on the ``gnn`` walkers' biased
# 300 K frames, reweighted (the practitioners' protocol for learned CVs, ``cvlearn iterate``; :func:`retrain`).
# ``gnn_2d``: the same GNN CV biased on both components: on the 400 K training frames component 0 follows TIC1 and
# TIC2 of the 300 K reference alike (|r| 0.4-0.9 with each), so a 1-D bias on it pushes as much along TIC2 as along
# the slowest process; component 1 carries the rest of that plane.
# ``gnn_hot_2d`` / ``distances_hot_2d``: as ``gnn_2d`` and a 2-D distance baseline, learned from the ``train_hot``
# runs instead: the 400 K runs never entered Leu2's αL (23 % of the reference; ``training_coverage``), 600 K runs do.
# ``torsions_2d``: no learned CV, a control: OPES on Trp ψ and Leu2 φ, the two torsions that carry the reference's
# slow motions (Trp's β ↔ helix, TIC1; Leu2's αL, entered once at 238 ns), on the native route (OpenMM's
# CustomTorsionForces and a tabulated bias, near unbiased speed). Chosen from the reference, so it shows what a CV that
# knows the slow torsions reaches against this reference, not what a user could pick blind.
# ``gnn_torsions_2d``: the GNN CV learned (as ``gnn_retrained``) from the ``torsions_2d`` walkers' biased 300 K frames,
# which enter Leu2's αL (6-55 % of each walker's first 2 ns has Leu2 φ > 0), biased on both components: the
# practitioners' protocol (explore with a first CV, learn from the reweighted frames, bias the learned CV) with the
# control's torsions as the first CV, so it asks whether a GNN CV learned from frames that hold Leu2's αL drives it.
ARMS = {"gnn": "learn/cv.pt", "distances": "learn/baseline_distances_cv.pt", "gnn_retrained": "retrain/cv.pt",
        "gnn_2d": "learn/cv.pt", "gnn_hot_2d": "learn_hot/cv.pt",
        "distances_hot_2d": "learn_hot/baseline_distances_cv.pt", "torsions_2d": "torsions/torsions_cv.pt",
        "gnn_torsions_2d": "retrain_torsions_2d/cv.pt"}
# arm -> the arm whose walkers' frames it is trained on (in the directory of its CV file)
RETRAINED_FROM = {"gnn_retrained": "gnn", "gnn_torsions_2d": "torsions_2d"}
# arm -> (residue index among the five, "phi" | "psi") of each torsion of its CV (exported by :func:`torsion_cv`)
NATIVE_ARMS = {"torsions_2d": ((0, "psi"), (1, "phi"))}
# arms that answer "does the GNN do better?": the targets are the others'
BASELINE_ARMS = ("distances", "distances_hot_2d", "torsions_2d")
# arm -> its biased CV components (else the settings' ``components``)
ARM_COMPONENTS = {"gnn_2d": (0, 1), "gnn_hot_2d": (0, 1), "distances_hot_2d": (0, 1), "torsions_2d": (0, 1),
                  "gnn_torsions_2d": (0, 1)}
# training set (its directory) -> (the settings key of its temperature, the directory of the CVs learned from it)
TRAINING_SETS = {"train": ("train_temperature_k", "learn"), "train_hot": ("hot_train_temperature_k", "learn_hot")}


def arm_components(s: dict, arm: str, n_cvs: int | None = None) -> tuple[int, ...]:
    """The CV components an arm biases: its own (:data:`ARM_COMPONENTS`) or the settings' ``components``, of those
    its CV has (``n_cvs``; a VAMP projection drops outputs it cannot tell from noise, as a --quick retrain does)."""
    return tuple(c for c in ARM_COMPONENTS.get(arm, s["components"]) if n_cvs is None or c < n_cvs)


class OutOfTime(Exception):
    """The invocation's time budget is spent: stop at a clean point (every part resumes next time)."""


class Budget:
    """Wall-clock budget of one invocation (``minutes`` None: unlimited)."""

    def __init__(self, minutes: float | None):
        self.end = None if minutes is None else time.monotonic() + 60.0 * minutes

    def left_s(self) -> float:
        return float("inf") if self.end is None else self.end - time.monotonic()

    def check(self, what: str, needs_s: float = 0.0) -> None:
        """:class:`OutOfTime` unless ``needs_s`` seconds are left for ``what``."""
        if self.left_s() <= needs_s:
            raise OutOfTime(f"budget spent before {what}")


def training_set_of(arm: str) -> str | None:
    """The training set (:data:`TRAINING_SETS`) an arm's CV was learned from; a retrained arm's is its source's; None
    for an arm of native torsions (:data:`NATIVE_ARMS`), which learns nothing, and for one retrained from it."""
    source = RETRAINED_FROM.get(arm, arm)
    if source in NATIVE_ARMS:
        return None
    learned_in = Path(ARMS[source]).parts[0]
    return next(name for name, (_, learn_dir) in TRAINING_SETS.items() if learn_dir == learned_in)


def torsion_cv(work: Path, arm: str) -> Path:
    """The CV file of native arm ``arm``: its torsions (:data:`NATIVE_ARMS`) of the five residues, numbered as the
    analysis numbers them (:func:`benchmarks._sampling_wlall_analysis.residue_torsion_columns`), exported once by
    :func:`openmm_plugin.bias.torsions.export_torsion_cv`, which runs on ``cvlearn bias``'s native route."""
    import mdtraj

    from benchmarks._sampling_wlall_analysis import residue_torsion_columns
    from openmm_plugin.bias.torsions import export_torsion_cv
    from systems import pentapeptide_wlall as wl

    path = work / ARMS[arm]
    if not path.is_file():
        molecule = wl.build(minimize=False)
        frame = mdtraj.Trajectory(molecule.positions_nm[None].astype(np.float32),
                                  mdtraj.Topology.from_openmm(molecule.topology))
        found = {"phi": mdtraj.compute_phi(frame)[0], "psi": mdtraj.compute_psi(frame)[0]}
        columns = dict(zip(("phi", "psi"), residue_torsion_columns(found["phi"], found["psi"])))
        quads = [[int(a) for a in found[kind][columns[kind][residue]]] for residue, kind in NATIVE_ARMS[arm]]
        names = [f"{kind}_{wl.SEQUENCE[residue]}{residue + 1}" for residue, kind in NATIVE_ARMS[arm]]
        path.parent.mkdir(parents=True, exist_ok=True)
        export_torsion_cv(path, quads, molecule.topology, names=names)
    return path


def training_config(work: Path, s: dict, name: str, seed: int):
    """The ``cvlearn simulate`` config of one run of training set ``name`` (:data:`TRAINING_SETS`)."""
    from openmm_plugin.stages.simulate import SimulateConfig

    return SimulateConfig(system=SYSTEM, ns=s["train_ns"], temperature_k=s[TRAINING_SETS[name][0]], seed=seed,
                          out=str(work / name), report_interval_ps=s["frame_ps"], platform=s["platform"],
                          checkpoint_interval_ps=s["checkpoint_ps"])


def _training_prefixes(work: Path, s: dict, name: str) -> list[str]:
    from openmm_plugin.stages.simulate import output_prefix

    return [output_prefix(training_config(work, s, name, seed)) for seed in range(s["train_seeds"])]


def training_done(work: Path, s: dict, name: str) -> bool:
    """Whether every run of training set ``name`` has finished (an analysis reads it without running anything)."""
    return finished_training_data(work, s, name) is not None


def finished_training_data(work: Path, s: dict, name: str) -> list[Path] | None:
    """The DCD paths of training set ``name`` when every run has finished, else None: for an analysis, which must
    not build and hash the System per run as :func:`training_data` does."""
    prefixes = _training_prefixes(work, s, name)
    if not all((read_record(Path(prefix + ".run.json")) or {}).get("finished") for prefix in prefixes):
        return None
    return [Path(prefix + ".dcd") for prefix in prefixes]


def training_data(work: Path, s: dict, name: str = "train") -> list[Path]:
    """Training set ``name``: unbiased high-temperature runs (``cvlearn simulate``), one per seed; the DCD paths."""
    from openmm_plugin.stages.simulate import run_simulate

    return [run_simulate(training_config(work, s, name, seed)).trajectory_path for seed in range(s["train_seeds"])]


def _learn_config(s: dict, out: Path, topology: Path, trajectories, lagtime_ps: float, **more):
    """The ``cvlearn learn`` settings every CV of the benchmark shares (``more``: what one CV adds)."""
    from openmm_plugin.stages.learn import LearnConfig

    return LearnConfig(out=str(out), topology=str(topology), trajectories=tuple(str(p) for p in trajectories),
                       selection="not element H", featurizer={"checkpoint": "default"}, context="molecule",
                       mixer=s["mixer"], lagtime_ps=lagtime_ps, n_cvs=2, seeds=tuple(range(s["learn_seeds"])),
                       n_clusters=s["n_clusters"], **more)


def learn(work: Path, s: dict, trajectories: list[Path], quick: bool, name: str = "train") -> dict:
    """``cvlearn learn`` on training set ``name``, the distance-VAMPNet baseline exported beside ``cv.pt``."""
    from openmm_plugin.stages.learn import run_learn

    config = _learn_config(s, work / TRAINING_SETS[name][1], trajectories[0].with_suffix(".pdb"), trajectories,
                           s["learn_lag_ps"], export_baselines=True)
    run_learn(config, quick=quick, progress=False)
    return learned(work, name)


def learned(work: Path, name: str) -> dict | None:
    """What the results show of the CVs learned from training set ``name`` (None before they exist)."""
    return _learn_summary(work / TRAINING_SETS[name][1])


def _learn_summary(out: Path) -> dict | None:
    """VAMP-2, seconds and frames of the ``cvlearn learn`` run in ``out`` (None before it finished)."""
    path = out / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return {"vamp2_val": metrics.get("vamp2_val"), "seconds": metrics.get("seconds"),
            "n_frames": metrics.get("n_frames")}


def retrain_dir(work: Path, arm: str) -> Path:
    """Where retrained arm ``arm``'s CV is learned (:data:`ARMS`: the directory of its CV file)."""
    return work / Path(ARMS[arm]).parent


def retrain_data(work: Path, s: dict, configs: list, arm: str) -> list[tuple[Path, Path]] | None:
    """The first ``retrain_ns`` of every walker in ``configs`` (the source arm's) that did not blow up, as
    (trajectory, COLVAR) pairs in ``<retrain_dir>/data`` (written once, atomically; COLVAR row k = frame k), or None
    while any of them has not ended once (a walker runs in a child: its files are read only after it stopped).

    A fixed prefix, not the whole walker: the retrained CV must not change when ``--walker-ns`` extends the
    walkers it learned from."""
    from cvlearn.data.trajectories import load_trajectories
    from cvlearn.io import atomic_path, write_text_atomic

    outcomes = [walker_outcome(c) for c in configs]
    if any(o is None for o in outcomes):
        return None
    n = int(round(s["retrain_ns"] * 1e3 / s["frame_ps"]))
    pairs = []
    for config, outcome in zip(configs, outcomes):
        if outcome["failure"]:
            continue
        name, source = Path(config.out).name, Path(config.out)
        dcd, colvar = (retrain_dir(work, arm) / "data" / f"{name}{suffix}" for suffix in (".dcd", ".colvar"))
        if not (dcd.is_file() and colvar.is_file()):
            lines = (source / "COLVAR").read_text().splitlines()
            header = [line for line in lines if line.startswith("#")]
            rows = [line for line in lines if line.strip() and not line.startswith("#")]
            traj, = load_trajectories([source / "trajectory.dcd"], source / "final.pdb")
            if min(len(rows), traj.n_frames) < n:
                raise RuntimeError(f"{source}: {min(len(rows), traj.n_frames)} frames, retraining needs the first {n} "
                                   f"(retrain_ns {s['retrain_ns']:g} > walker_ns?)")
            dcd.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dcd, suffix=".dcd") as tmp:
                traj[:n].save_dcd(str(tmp))
            write_text_atomic(colvar, "\n".join(header + rows[:n]) + "\n")
        pairs.append((dcd, colvar))
    return pairs or None


def retrain(work: Path, s: dict, data: list[tuple[Path, Path]], quick: bool, arm: str) -> None:
    """``cvlearn learn`` for retrained arm ``arm`` as for the ``gnn`` arm, on biased 300 K frames
    (:func:`retrain_data`), reweighted on rescaled time t' = Σ exp(β(V − c(t))) dt (``cvlearn iterate``'s default, as
    in Deep-TICA): V the COLVAR's total bias (walls included), c(t) OPES's ``opes.rct``."""
    from openmm_plugin.stages.learn import BiasedSpec, run_learn

    config = _learn_config(s, retrain_dir(work, arm), Path(f"{segment_prefix(work, 0)}.pdb"), [d for d, _ in data],
                           s["retrain_lag_ps"], frame_interval_ps=s["frame_ps"],
                           biased=BiasedSpec(colvars=tuple(str(c) for _, c in data), temperature_k=300.0,
                                             method="rescaled_time", bias_column="bias", rct_column="opes.rct"))
    run_learn(config, quick=quick, progress=False)


def retrained(work: Path, arm: str) -> dict | None:
    """What the results show of retrained arm ``arm``'s CV (None before it exists)."""
    summary = _learn_summary(retrain_dir(work, arm))
    return summary and {**summary, "from_arm": RETRAINED_FROM[arm],
                        "from_walkers": sorted(p.stem for p in (retrain_dir(work, arm) / "data").glob("*.dcd"))}


# --- the unbiased reference, in segments, in one or more chains -----------------------------------------------------
# A further chain's velocity seeds: reference_seed + CHAIN_SEED_STRIDE × chain + segment (chain 0: + segment).
CHAIN_SEED_STRIDE = 100_000


def chain_dir(work: Path, chain: int = 0) -> Path:
    """Where chain ``chain`` of the reference keeps its segments (chain 0: ``reference/``, as before chains)."""
    return work / "reference" if chain == 0 else work / "reference" / f"chain{chain}"


def segment_prefix(work: Path, k: int, chain: int = 0) -> Path:
    return chain_dir(work, chain) / f"seg_{k:04d}"


def finished_segments(work: Path, chain: int = 0) -> int:
    """How many segments of chain ``chain`` in a row are complete: ``.pdb`` written at the real end, and the
    trajectory or its reduced state (:func:`reduce_segment`; the ``.dcd`` may then be deleted, so a long reference
    can be committed)."""
    k = 0
    while Path(f"{segment_prefix(work, k, chain)}.pdb").is_file() and (
            Path(f"{segment_prefix(work, k, chain)}.dcd").is_file() or _reduced_path(work, k, chain).is_file()):
        k += 1
    return k


def reference_ns(work: Path, s: dict) -> float:
    """The reference's length: its ``reference_chains`` chains' finished segments together (ns)."""
    return sum(finished_segments(work, c) for c in range(s.get("reference_chains", 1))) * s["segment_ns"]


def _reduced_path(work: Path, k: int, chain: int = 0) -> Path:
    return Path(f"{segment_prefix(work, k, chain)}.reduced.npz")


def reduce_segment(work: Path, k: int, chain: int = 0) -> dict:
    """What the benchmark needs of finished segment ``k`` of chain ``chain``, written once beside it (atomically)
    and read from there.

    ``features`` (sin/cos of backbone φ/ψ, float32, the TICA input), ``phi``/``psi`` (rad) and ``last_frame_nm`` (the
    next segment's start): ~0.12 MB per ns against ~1.2 MB per ns of DCD, so the reference's state can be committed
    and grown across sessions without its trajectories.
    """
    from benchmarks._sampling_wlall_analysis import torsions
    from cvlearn.data.trajectories import load_trajectories
    from cvlearn.io import atomic_path

    path = _reduced_path(work, k, chain)
    if not path.is_file():
        prefix = segment_prefix(work, k, chain)
        (features, phi, psi), = torsions([Path(f"{prefix}.dcd")], Path(f"{prefix}.pdb"))
        last = load_trajectories([f"{prefix}.dcd"], f"{prefix}.pdb")[0].xyz[-1]
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, features=features.astype(np.float32), phi=phi.astype(np.float32),
                     psi=psi.astype(np.float32), last_frame_nm=last)
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _segment_log(work: Path, chain: int = 0) -> Path:
    return chain_dir(work, chain) / "segments.json"


def segment_speeds(work: Path, chain: int = 0) -> dict:
    """``{segment index: ms per MD step}`` of chain ``chain``, as recorded when each segment finished."""
    path = _segment_log(work, chain)
    return {int(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}


def reference_ms_per_step(work: Path, chains: int) -> float:
    """Median ms per MD step over every finished segment of the reference's first ``chains`` chains (nan before
    any segment finished): the one unbiased speed that costs and rates are priced at. The median, because a
    segment run beside a busy neighbour is an outlier of that hour, not of the engine."""
    speeds = [v for c in range(chains) for v in segment_speeds(work, c).values()]
    return float(np.median(speeds)) if speeds else float("nan")


def chain_start_segment(s: dict) -> int:
    """The segment of chain 0 whose last frame starts every further chain: the end of the first chunk.

    Why there: any frame of chain 0 after its equilibration is a sample of the 300 K ensemble, and this one exists
    before any walker runs, so a chain added later starts from the same frame as one added at once. With its own
    velocity seeds a chain forgets the shared start within the slowest implied timescale; until then the two are
    correlated, which the pooled statistics tolerate (the same frames' ensemble) but the chain-vs-chain spread
    overstates agreement, so the halves (:func:`benchmarks._sampling_wlall_analysis.reference_halves_rms`) split
    each chain in time, not the chains against each other.
    """
    return int(np.ceil(s["first_chunk_ns"] / s["segment_ns"] - 1e-9)) - 1


def extend_reference(work: Path, s: dict, target_ns: float, budget: Budget, molecule=None, chain: int = 0) -> int:
    """Run segments of chain ``chain`` until the whole reference (:func:`reference_ns`, every chain) holds
    ``target_ns`` (or the budget ends); returns the chain's segments done.

    Why chains: one chain grows on one core (~14 ns/h for WLALL, ``benchmarks/results/cpu_affinity.md``); the slowest
    process needs ~1.4 μs, so independent chains, one per core, side by side (:func:`reference_tasks`), are the only
    way to grow it faster. Chain 0 is the reference as it was before chains; chain c > 0 starts from chain 0's frame
    at :func:`chain_start_segment` with its own seeds. A segment is started only when its measured duration fits the
    budget left; a kill loses at most ``checkpoint_ps`` (the segment resumes from its checkpoint).
    """
    from openmm_plugin.simulation import make_integrator, run_md
    from systems import pentapeptide_wlall as wl

    dt = wl.TIMESTEP_PS
    steps = int(round(s["segment_ns"] * 1e3 / dt))
    interval = int(round(s["frame_ps"] / dt))
    done = finished_segments(work, chain)
    while reference_ns(work, s) < target_ns - 1e-9:
        speeds = segment_speeds(work, chain) or segment_speeds(work, 0)
        needs = steps * np.median(list(speeds.values())) * 1e-3 * 1.2 if speeds else 0.0
        budget.check(f"reference chain {chain} segment {done}" if chain else f"reference segment {done}", needs)
        molecule = molecule or wl.build()
        prefix = segment_prefix(work, done, chain)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        if done == 0 and chain == 0:
            start = molecule.positions_nm
        elif done == 0:
            start = reduce_segment(work, chain_start_segment(s), 0)["last_frame_nm"].astype(np.float64)
        else:  # the last frame of the previous segment (positions only: velocities are drawn afresh)
            start = reduce_segment(work, done - 1, chain)["last_frame_nm"].astype(np.float64)
        seed = s["reference_seed"] + CHAIN_SEED_STRIDE * chain + done
        result = run_md(molecule.topology, molecule.system, start,
                        make_integrator(300.0, wl.FRICTION_PER_PS, dt, seed=seed), out_prefix=prefix, n_steps=steps,
                        report_interval_steps=interval, platform=s["platform"], seed=seed, temperature_k=300.0,
                        progress=False, desc=f"reference chain {chain} segment {done}",
                        checkpoint_every_steps=int(round(s["checkpoint_ps"] / dt)))
        if not result.skipped:
            speeds = segment_speeds(work, chain)
            speeds[done] = result.ms_per_step
            write_json_atomic(_segment_log(work, chain), {str(k): v for k, v in sorted(speeds.items())})
        reduce_segment(work, done, chain)
        done += 1
        print(f"reference{f' chain {chain}' if chain else ''}: segment {done - 1} done ({reference_ns(work, s):g} of "
              f"{target_ns:g} ns in all chains, {result.ms_per_step:.3f} ms/step)", flush=True)
    return done


# --- the biased walkers ---------------------------------------------------------------------------------------------
def cv_sigma(work: Path, arm: str, cv_path: Path, components: tuple[int, ...]) -> list[float]:
    """σ per biased component by :func:`openmm_plugin.bias.sigma.learned_cv_sigma` (the ala2 benchmark's rule),
    cached in ``<work>/sigma.json`` by the CV file's hash: the walkers' run records hold σ, so it must not move."""
    from cvlearn.export import load_cv
    from cvlearn.run_dir import file_sha256
    from openmm_plugin.bias.sigma import learned_cv_sigma
    from openmm_plugin.simulation import make_integrator
    from systems import pentapeptide_wlall as wl

    cache_path = work / "sigma.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    key = f"{arm}:{file_sha256(cv_path)}:{','.join(map(str, components))}"
    if key not in cache:
        cv, spec = load_cv(cv_path)
        molecule = wl.build()
        sigma, _ = learned_cv_sigma(cv, spec.cv_range_training, molecule.topology, molecule.system,
                                    molecule.positions_nm,
                                    make_integrator(300.0, wl.FRICTION_PER_PS, wl.TIMESTEP_PS, seed=12345), 300.0,
                                    components=components)
        cache[key] = [float(v) for v in sigma]
        write_json_atomic(cache_path, cache)
    return [float(v) for v in cache[key]]


def walker_dir(work: Path, arm: str, seed: int) -> Path:
    return work / "bias" / f"{arm}_s{seed}"


def walker_config(work: Path, s: dict, arm: str, seed: int, sigma, n_cvs: int | None = None):
    """The ``cvlearn bias`` config of one walker: every arm alike but for the CV file and its σ (``n_cvs``: the
    CV's components, :func:`arm_components`)."""
    from openmm_plugin.bias.params import OPESParams
    from openmm_plugin.stages.bias import BiasConfig

    step = lambda ps: int(round(ps / 0.002)) // s["mts"] * s["mts"]  # noqa: E731  (WLALL steps are 2 fs)
    opes = OPESParams(sigma="adaptive" if sigma == "adaptive" else tuple(sigma), barrier_kjmol=s["barrier_kjmol"],
                      pace_steps=step(s["pace_ps"]))
    native = arm in NATIVE_ARMS  # the native route: no PythonForce, so no compile and no force guard
    return BiasConfig(cv=str(work / ARMS[arm]), system=SYSTEM, out=str(walker_dir(work, arm, seed)),
                      method="opes-metad", route="native" if native else "python",
                      compile=False if native else s["compile"],
                      components=arm_components(s, arm, n_cvs),
                      range_margin_fraction=s["wall_margin_fraction"], walls_at_training_range=True, temperature_k=300.0,
                      n_steps=step(s["walker_ns"] * 1e3), report_interval_steps=step(s["frame_ps"]),
                      save_every_steps=step(s["checkpoint_ps"]), seed=seed, mts_substeps=s["mts"], torch_threads=1,
                      platform=s["platform"], trajectory=True, opes=opes,
                      force_guard_kjmol_nm=None if native else s.get("force_guard_kjmol_nm"))


def _outcome_path(config) -> Path:
    return Path(config.out) / "outcome.json"


def walker_outcome(config) -> dict | None:
    """``{"failure": str | None, "ms_per_step": float}`` of a walker that ended (ran through, to this or an earlier
    length, or blew up), else None: what the analysis reads."""
    path = _outcome_path(config)
    return json.loads(path.read_text()) if path.is_file() else None


def walker_done(config) -> bool:
    """Whether a walker has nothing left to run: it blew up, or its run record reached ``config.n_steps`` (a larger
    ``--walker-ns`` extends finished walkers, as ``cvlearn bias`` does with a larger ``n_steps``)."""
    outcome = walker_outcome(config)
    if outcome is None or outcome["failure"]:
        return outcome is not None
    recorded = read_record(Path(config.out) / "run.json") or {}
    return bool(recorded.get("finished")) and recorded.get("config", {}).get("n_steps", 0) >= config.n_steps


def _die_with_parent() -> None:
    """Linux: SIGTERM this child when the parent dies (a parent killed by hand must not leave walkers running)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(target, core: int | None, args: tuple) -> None:
    """Child process of :func:`run_children`: dies with its parent, runs on ``core`` alone, then ``target(*args)``.

    Why one core: with ``Threads=1`` OpenMM's CPU platform still hands every force computation to one worker thread
    and waits for it, ~26 times a step. Where the two threads may run on different cores, each hand-off is a
    cross-core wake-up: on this 2-core VM a WLALL step cost 1.30 ms with both cores allowed and 0.54 ms on one
    (``benchmarks/results/cpu_affinity.md``). Child k of ``jobs`` takes core k, so children do not share one either.
    """
    _die_with_parent()
    if core is not None:  # run_children gives a core only where os.sched_getaffinity exists (Linux)
        os.sched_setaffinity(0, {core})  # before any Context exists: its worker thread inherits the mask
    target(*args)


def _walker_main(config) -> None:
    """Child process: run (or resume) one walker; a blow-up is an outcome, a changed setting exits 2."""
    import openmm

    from cvlearn.errors import RunError
    from cvlearn.run_dir import RunMismatchError
    from openmm_plugin.stages.bias import run_bias

    try:
        summary = run_bias(config)
        outcome = {"failure": None, "ms_per_step": summary["ms_per_step"], "md_steps_run": summary["md_steps_run"]}
    except RunMismatchError as error:
        print(f"{config.out}: {error}", flush=True)
        raise SystemExit(2) from None
    except (RunError, FloatingPointError, openmm.OpenMMException) as error:
        outcome = {"failure": str(error)[:300], "ms_per_step": float("nan"), "md_steps_run": None}
    write_json_atomic(_outcome_path(config), outcome)
    print(f"{Path(config.out).name}: " + (f"blew up: {outcome['failure']}" if outcome["failure"]
          else f"{outcome['ms_per_step']:.2f} ms/step"), flush=True)


def _reference_main(work: Path, s: dict, target_ns: float, chain: int = 0) -> None:
    """Child process: extend chain ``chain`` until the reference holds ``target_ns`` (the parent stops it at the end
    of the budget)."""
    extend_reference(work, s, target_ns, Budget(None), chain=chain)


def walker_task(config) -> tuple:
    """(name, child function, its arguments, whether it has ended) of one walker, for :func:`run_children`."""
    return Path(config.out).name, _walker_main, (config,), lambda: walker_done(config)


def reference_tasks(work: Path, s: dict, target_ns: float) -> list[tuple]:
    """The reference's extension to ``target_ns`` as tasks of :func:`run_children` (beside the walkers), one per
    chain, the shortest chain first: with fewer jobs than chains it is the one that grows."""
    done = lambda: reference_ns(work, s) >= target_ns - 1e-9  # noqa: E731
    chains = sorted(range(s.get("reference_chains", 1)), key=lambda c: (finished_segments(work, c), c))
    return [(f"reference chain {c}" if c else "reference", _reference_main, (work, s, target_ns, c), done)
            for c in chains]


def run_children(tasks: list, budget: Budget, jobs: int, min_start_s: float = 60.0) -> list[str]:
    """Run the tasks that have not ended, ``jobs`` at a time, each in a spawned child; at the end of the budget the
    running ones are stopped (SIGTERM; they resume from their last checkpoint); none starts with under ``min_start_s``
    left. A walker whose settings changed exits 2 (refused). Returns the names of the tasks left unfinished."""
    pending = [task for task in tasks if not task[3]()]
    context = multiprocessing.get_context("spawn")
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    running: list = []
    try:
        while pending or running:
            while pending and len(running) < jobs and budget.left_s() > min_start_s:
                name, target, args, ended = pending.pop(0)
                taken = {item[3] for item in running}
                core = next((c for c in cores if c not in taken), None)  # more jobs than cores: the OS places it
                process = context.Process(target=_child, args=(target, core, args), name=name)
                process.start()
                running.append((process, name, ended, core))
                print(f"{name}: started (pid {process.pid}{'' if core is None else f', core {core}'})", flush=True)
            if budget.left_s() <= 0 or (not running and pending):
                break
            time.sleep(1.0)
            for item in list(running):
                process, name, ended, _ = item
                if process.exitcode is None:
                    continue
                running.remove(item)
                if process.exitcode == 2:
                    raise SystemExit(f"{name}: its settings changed (see above); --restart-fresh starts the benchmark "
                                     "over")
                if process.exitcode != 0 or not ended():
                    raise RuntimeError(f"{name}: exited with code {process.exitcode} before its end")
                print(f"{name}: ended", flush=True)
    finally:
        for process, name, _, _ in running:  # out of time (or interrupted): stop; the checkpoint holds the progress
            process.terminate()
            process.join(30)
            print(f"{name}: stopped at the end of the budget; resumes next time", flush=True)
    return [task[0] for task in tasks if not task[3]()]


__all__ = ["ARMS", "ARM_COMPONENTS", "BASELINE_ARMS", "Budget", "OutOfTime", "RETRAINED_FROM", "arm_components", "cv_sigma",
           "chain_dir", "chain_start_segment", "extend_reference", "finished_segments", "learn", "reduce_segment",
           "reference_ns", "reference_tasks", "retrain",
           "retrain_data", "retrain_dir", "retrained", "run_children", "reference_ms_per_step", "segment_prefix", "segment_speeds", "TRAINING_SETS",
           "training_config", "training_data", "training_done", "training_set_of", "learned",
           "finished_training_data",
           "walker_config", "walker_dir", "walker_done", "walker_outcome", "walker_task"]
