"""The main job: alanine dipeptide from simulation to a learned, biased CV in OpenMM.

Stages (each skips work whose outputs exist, so a killed demo resumes):
1. training data: unbiased MD at an elevated temperature, where the slow φ flip happens often enough;
2. learning: ``cvlearn learn`` with its defaults (the shipped denoising-pre-trained Equivariant Transformer,
   frozen, over heavy atoms → residue tokens → sum → MLP head → VAMP), beside the classic baselines (VAMPNet on
   heavy-atom distances, TICA on φ/ψ), split by whole trajectory;
3. export: one TorchScript CV file;
4. biasing at 300 K with cvlearn's own engine (:mod:`openmm_plugin.bias`, one model call per step whatever the
   CV dimension): well-tempered metadynamics on the learned CV (PythonForce route, bias evaluated every
   ``bias_every_steps`` inner steps with an MTS Langevin integrator) and a reference run biased on φ/ψ (a
   TorchScript torsion CV through the same route); COLVAR files with V(s,t) and c(t);
5. analysis: reweighted φ/ψ free-energy surfaces, ΔF(C7ax − C7eq), transitions, plots, report and metrics.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np
import torch

from cvlearn.config import check_ranges
from cvlearn.distributed import check_device
from cvlearn.errors import ConfigError
from cvlearn.data.colvar import read_colvar
from cvlearn.analysis.plots import plot_cvs_on_phi_psi, plot_fes_panels, plot_time_series
from cvlearn.analysis.reweighting import delta_f_kjmol, free_energy_surface, metad_weights
from cvlearn.analysis.transitions import count_phi_transitions, phi_basins
from cvlearn.data import load_trajectories
from cvlearn.export import load_cv, load_eager_cv
from cvlearn.io import atomic_path, write_json_atomic, write_text_atomic
from cvlearn.run_dir import open_run
from openmm_plugin.bias import BiasReporter, BiasRunner, Metadynamics, OnComponents
from openmm_plugin.bias.sigma import learned_cv_sigma
from openmm_plugin.bias.torsions import export_torsion_cv
from openmm_plugin.forces import python_bias_force
from openmm_plugin.simulation import BIAS_GROUP, make_integrator, platform_by_name, run_md
from systems import alanine_dipeptide as ala2
from systems.peptides import add_trans_omega_restraint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Every setting of the demo (times in ns/ps, temperatures in K, energies in kJ/mol, angles in rad)."""

    seed: int = 0
    platform: str = "Reference"
    device: str = "cpu"  # where the CV is learned and evaluated in the biased runs (cpu | cuda | cuda:N)
    # training data: several independent unbiased runs at high temperature, peptide bonds held trans
    train_temperature_k: float = 600.0
    n_train_trajectories: int = 4
    train_ns_per_trajectory: float = 1.5
    frame_interval_ps: float = 1.0
    # learning
    lagtime_ps: float = 5.0
    n_cvs: int = 2  # learning: `cvlearn learn` defaults (shipped pre-trained ET, frozen; sum mixer; MLP head)
    head_hidden: int = 64
    max_epochs: int = 30
    patience: int = 8
    min_epochs: int = 15
    batch_size: int = 512
    learning_rate: float = 2e-3
    validation_fraction: float = 0.25
    # biasing at the target temperature
    temperature_k: float = 300.0
    biased_ns: float = 0.75
    reference_ns: float = 1.0
    bias_every_steps: int = 2  # 4 (8 fs outer step) resonated with bond stretches: NaN after 35-70 ps (measured)
    bias_factor: float = 8.0
    height_kjmol: float = 1.2
    deposit_interval_ps: float = 1.0  # metadynamics pace, as simulated time
    grid_bins: int = 200  # metadynamics grid bins per biased CV
    sigma_cv: float | None = None  # None: max(CV std in short unbiased 300 K MD, sigma_min_fraction * range)
    sigma_min_fraction: float = 0.05
    sigma_torsion_rad: float = 0.35
    cv_margin_fraction: float = 0.3
    reweight_skip_fraction: float = 0.1
    timing_steps: int = 20000
    checkpoint_interval_ps: float = 50.0  # every MD sub-run checkpoints this often: a killed demo resumes from there

    def __post_init__(self):
        check_ranges(self, positive=("train_temperature_k", "train_ns_per_trajectory", "frame_interval_ps", "lagtime_ps",
                                     "learning_rate", "temperature_k", "biased_ns", "reference_ns", "height_kjmol",
                                     "deposit_interval_ps", "sigma_cv", "sigma_torsion_rad",
                                     "checkpoint_interval_ps"),
                     at_least_one=("n_train_trajectories", "n_cvs", "head_hidden", "max_epochs", "patience",
                                   "batch_size", "bias_every_steps", "grid_bins", "timing_steps"),
                     non_negative=("min_epochs", "seed", "sigma_min_fraction", "cv_margin_fraction"),
                     fraction=("validation_fraction", "reweight_skip_fraction"))
        platform_by_name(self.platform)  # "platform: expected one of the installed OpenMM platforms [...]"
        try:
            check_device(self.device)  # "device: expected 'cpu', 'cuda' or 'cuda:N', found ..."
        except ConfigError as err:  # as ValueError "device: ...", so load_config prefixes the file
            raise ValueError(str(err)) from None


QUICK = DemoConfig(
    n_train_trajectories=2, train_ns_per_trajectory=0.1, frame_interval_ps=0.5, lagtime_ps=1.0, head_hidden=32, max_epochs=3, patience=2, biased_ns=0.01, reference_ns=0.01, deposit_interval_ps=0.1,
    timing_steps=1000, checkpoint_interval_ps=2.0,
)


def _integrator(temperature_k: float, seed: int, bias_every_steps: int = 1):
    return make_integrator(temperature_k, ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, seed=seed, bias_group=BIAS_GROUP,
                           bias_every_steps=bias_every_steps)


def _steps(ns_or_ps: float, step_ps: float) -> int:
    return max(1, int(round(ns_or_ps / step_ps)))


def simulate_training_data(cfg: DemoConfig, out: Path, molecule) -> tuple[list[Path], Path, list[float]]:
    """Unbiased runs at ``train_temperature_k``. At 700-800 K peptide bonds flip to cis (measured), a process
    slower than the φ flip that a VAMPNet would learn instead; a flat-bottom restraint keeps |ω| > 120° (it is
    zero at 600 K in practice, a safeguard for hotter settings). 600 K gives ~5 φ flips per ns and, at lag
    5 ps, a clearer slow signal than 800 K (torsion VAMP-2 1.62 vs 1.35, measured)."""
    system = copy.deepcopy(molecule.system)
    add_trans_omega_restraint(system, molecule.topology)
    paths, ms_per_step = [], []
    n_steps = _steps(cfg.train_ns_per_trajectory * 1000.0, ala2.TIMESTEP_PS)
    interval = _steps(cfg.frame_interval_ps, ala2.TIMESTEP_PS)
    for i in range(cfg.n_train_trajectories):
        seed = cfg.seed * 1000 + i + 1
        result = run_md(molecule.topology, system, molecule.positions_nm,
                        _integrator(cfg.train_temperature_k, seed),
                        out_prefix=out / "train" / f"traj{i}", n_steps=n_steps, report_interval_steps=interval,
                        platform=cfg.platform, seed=seed, temperature_k=cfg.train_temperature_k,
                        desc=f"training MD {i + 1}/{cfg.n_train_trajectories} at {cfg.train_temperature_k:.0f} K",
                        checkpoint_every_steps=_steps(cfg.checkpoint_interval_ps, ala2.TIMESTEP_PS))
        paths.append(result.trajectory_path)
        if not result.skipped:
            ms_per_step.append(result.ms_per_step)
    return paths, out / "train" / "traj0.pdb", ms_per_step


def learn_cv(cfg: DemoConfig, out: Path, traj_paths: list[Path], top_path: Path, restart_fresh: bool = False) -> dict:
    """``cvlearn learn`` on the training runs (its defaults: the shipped pre-trained ET, frozen; one seed), the CV
    copied to ``out/cv.pt``; returns the scores and the φ transitions in the training data.

    The learning step is the user's command (:func:`openmm_plugin.stages.learn.run_learn`), in ``out/learn``
    (report, metrics, figures and the embedding store there), not a demo-only recipe."""
    from openmm_plugin.stages.learn import LearnConfig, run_learn

    config = LearnConfig(out=str(out / "learn"), topology=str(top_path), trajectories=tuple(map(str, traj_paths)),
                         frame_interval_ps=cfg.frame_interval_ps, selection="not element H",
                         lagtime_ps=cfg.lagtime_ps, n_cvs=cfg.n_cvs, seeds=(cfg.seed,),
                         validation_fraction=cfg.validation_fraction,
                         observables={"phi": "phi 0", "psi": "psi 0"}, max_epochs=cfg.max_epochs,
                         patience=cfg.patience, min_epochs=min(cfg.min_epochs, cfg.max_epochs),
                         batch_size=cfg.batch_size, learning_rate=cfg.learning_rate, head_hidden=cfg.head_hidden,
                         device=cfg.device)
    learned = run_learn(config, restart_fresh=restart_fresh)
    with atomic_path(out / "cv.pt") as tmp:
        shutil.copyfile(out / "learn" / "cv.pt", tmp)
    trajs = load_trajectories(traj_paths, top_path)
    _, spec = load_cv(out / "cv.pt")
    eager = load_eager_cv(out / "cv.pt")
    frames = torch.from_numpy(np.concatenate([t.xyz[:, list(spec.atom_indices)] for t in trajs]).astype(np.float32))
    with torch.no_grad():
        cvs = torch.cat([eager.model(frames[i:i + 1024]) for i in range(0, len(frames), 1024)]).double().numpy()
    all_frames = mdtraj.join(trajs)
    plot_cvs_on_phi_psi(mdtraj.compute_phi(all_frames)[1][:, 0], mdtraj.compute_psi(all_frames)[1][:, 0], cvs,
                        out / "cv_on_phi_psi.png")
    distances = learned["baselines"].get("vampnet_distances", {})
    return {"vamp2_val": learned["vamp2_val"], "vamp2_val_deeptime": learned["vamp2_val_deeptime"],
            "vamp2_val_baseline_distances": distances.get("vamp2_val"),
            "vamp2_val_baseline_tica_torsions": learned["baselines"].get("tica_torsions", {}).get("vamp2_val"),
            "training_phi_transitions": int(sum(count_phi_transitions(mdtraj.compute_phi(t)[1][:, 0])
                                                for t in trajs)), "lag_frames": learned["lag_frames"]}


def _cv_bounds(spec, margin: float) -> tuple[float, float]:
    lo, hi = spec.cv_range_training[0]
    pad = margin * (hi - lo)
    return lo - pad, hi + pad


def _learned_cv_sigma(cfg: DemoConfig, cv, spec, molecule) -> float:
    (sigma,), (fluctuation,) = learned_cv_sigma(cv, spec.cv_range_training, molecule.topology, molecule.system,
                                                molecule.positions_nm, _integrator(cfg.temperature_k, cfg.seed),
                                                cfg.temperature_k, min_fraction=cfg.sigma_min_fraction)
    log.info("learned-CV sigma %.3f (unbiased std %.3f, floor %.0f%% of the training range)", sigma, fluctuation,
             100 * cfg.sigma_min_fraction)
    return float(sigma)


def _metadynamics(cfg: DemoConfig, pace_steps: int, sigma, lower, upper, periods=None) -> Metadynamics:
    """Well-tempered metadynamics with the demo's height, bias factor and grid (the bias is read off the grid)."""
    return Metadynamics(sigma=sigma, height_kjmol=cfg.height_kjmol, pace_steps=pace_steps, temperature_k=cfg.temperature_k,
                        lower=lower, upper=upper, bias_factor=cfg.bias_factor, periods=periods,
                        grid_bins=cfg.grid_bins, use_grid=True)


def biased_run(cfg: DemoConfig, out: Path, name: str, cv_path: Path | None, molecule) -> dict:
    """Well-tempered metadynamics at ``cfg.temperature_k`` on CV 1 of the learned CV (``cv_path``) or on φ/ψ (None).

    Both go through cvlearn's engine: one PythonForce evaluates the CV once per (outer) step, :class:`BiasRunner`
    deposits, :class:`BiasReporter` writes the COLVAR (``metad.bias`` = V(s,t), ``metad.rct`` = c(t)) at every
    trajectory frame. Every ``checkpoint_interval_ps`` one checkpoint (:func:`run_md`'s, holding the runner's hills)
    is written after the COLVAR is flushed, so a killed run resumes there; the reporter then keeps the COLVAR rows
    up to it and rewrites the later ones. ``<name>.json`` is written last and marks the stage complete.
    """
    prefix, colvar, marker = out / name, out / f"{name}.colvar", out / f"{name}.json"
    if marker.exists():
        return json.loads(marker.read_text())
    for suffix in (".dcd", ".pdb"):
        prefix.with_suffix(suffix).unlink(missing_ok=True)
    if cv_path is not None:
        cv, spec = load_cv(cv_path)
        sigma = cfg.sigma_cv if cfg.sigma_cv is not None else _learned_cv_sigma(cfg, cv, spec, molecule)
        k = cfg.bias_every_steps
        pace = _steps(cfg.deposit_interval_ps, ala2.TIMESTEP_PS * k)
        lo, hi = _cv_bounds(spec, cfg.cv_margin_fraction)
        bias = OnComponents(_metadynamics(cfg, pace, [sigma], [lo], [hi]), [0], int(cv.n_cvs))
        cv_names = [f"cv{i + 1}" for i in range(int(cv.n_cvs))]
    else:
        sigma, k = cfg.sigma_torsion_rad, 1
        cv = export_torsion_cv(out / f"{name}_cv.pt", ala2.phi_psi_indices(molecule.topology), molecule.topology)
        pace = _steps(cfg.deposit_interval_ps, ala2.TIMESTEP_PS)
        bias = _metadynamics(cfg, pace, [sigma] * 2, [-np.pi] * 2, [np.pi] * 2, periods=[2 * np.pi] * 2)
        cv_names = ["phi", "psi"]
    outer_ps = ala2.TIMESTEP_PS * k
    system = copy.deepcopy(molecule.system)  # the bias force is added to the System
    force = python_bias_force(cv, bias, force_group=BIAS_GROUP, device=cfg.device)
    system.addForce(force)
    seed = cfg.seed * 1000 + 101
    report_steps = _steps(cfg.frame_interval_ps, outer_ps)
    # resume=True: the rows older than the first new report are kept (those up to the checkpoint, none on a start)
    reporter = BiasReporter(colvar, bias, force.callback.evaluator, report_steps, cv_names=cv_names, resume=True)
    runner = BiasRunner(bias, callback=force.callback, on_save=reporter.flush)
    ns = cfg.biased_ns if cv_path is not None else cfg.reference_ns
    result = run_md(molecule.topology, system, molecule.positions_nm, _integrator(cfg.temperature_k, seed, k),
                    out_prefix=prefix, n_steps=_steps(ns * 1000.0, outer_ps), report_interval_steps=report_steps,
                    platform=cfg.platform, seed=seed, temperature_k=cfg.temperature_k, advance=runner.step,
                    on_report=reporter, timestep_ps=outer_ps, desc=f"metadynamics: {name}",
                    checkpoint_every_steps=_steps(cfg.checkpoint_interval_ps, outer_ps), checkpoint_state=runner)
    reporter.close()
    summary = {"ns": ns, "ms_per_step": result.ms_per_step * ala2.TIMESTEP_PS / outer_ps, "sigma": sigma,
               "trajectory": str(result.trajectory_path), "topology": str(result.topology_path), "colvar": str(colvar),
               "bias_force_calls_per_step": force.callback.evaluations / max(1, result.n_steps),
               "bias_changes_per_step": runner.n_bias_changes / max(1, result.n_steps),
               "bias_recomputes_per_step": runner.n_stale_marks / max(1, result.n_steps)}
    write_json_atomic(marker, summary)
    return summary


def analyse_biased(cfg: DemoConfig, run: dict) -> dict:
    traj = load_trajectories([run["trajectory"]], run["topology"])[0]
    colvar = read_colvar(run["colvar"])
    if len(colvar["time"]) != traj.n_frames:
        raise ValueError(f"{run['colvar']} has {len(colvar['time'])} rows but {run['trajectory']} has {traj.n_frames} frames")
    phi = mdtraj.compute_phi(traj)[1][:, 0]
    psi = mdtraj.compute_psi(traj)[1][:, 0]
    weights = metad_weights(colvar["metad.bias"], colvar["metad.rct"], cfg.temperature_k)
    keep = np.arange(traj.n_frames) >= int(cfg.reweight_skip_fraction * traj.n_frames)
    w = weights * keep
    in_ax, in_eq = phi_basins(phi)
    fes = free_energy_surface(phi[keep], psi[keep], weights[keep], cfg.temperature_k)
    return {"phi": phi, "time": colvar["time"], "fes": fes, "transitions": count_phi_transitions(phi),
            "delta_f": delta_f_kjmol(in_ax, in_eq, w / w.sum(), cfg.temperature_k)}


def measure_unbiased_speed(cfg: DemoConfig, out: Path, molecule) -> float:
    """Always measured afresh: a timing is only meaningful for the run that reports it."""
    shutil.rmtree(out / "timing", ignore_errors=True)
    result = run_md(molecule.topology, molecule.system, molecule.positions_nm,
                    _integrator(cfg.temperature_k, cfg.seed), out_prefix=out / "timing" / "unbiased",
                    n_steps=cfg.timing_steps, report_interval_steps=cfg.timing_steps, platform=cfg.platform,
                    seed=cfg.seed, desc="unbiased timing run")
    return result.ms_per_step


BIASED_RUNS = ("biased_reference_phi_psi", "biased_learned_cv")
_OUTPUTS = ("train", "timing", "learn", "cv.pt", "learning.json", "metrics.json", "report.md", "cv_on_phi_psi.png", "fes_phi_psi.png", "phi_time_series.png", f"{BIASED_RUNS[0]}_cv.pt",
            *(run + suffix for run in BIASED_RUNS
              for suffix in (".dcd", ".pdb", ".colvar", ".json", ".part.dcd", ".chk.npz")))


def run_demo(out: str | Path = "runs/demo", quick: bool = False, config: DemoConfig | None = None, *,
             restart_fresh: bool = False) -> dict:
    """Run every stage and write ``report.md``, ``metrics.json``, PNGs and ``cv.pt`` to ``out``.

    Parameters
    ----------
    out : str or Path
        Output directory, recorded in ``<out>/run.json``: a rerun under the same config resumes (finished stages
        reused, others from their last checkpoint); under another it is refused with the difference.
    quick : bool
        Use :data:`QUICK` when ``config`` is None (a smoke test of a few minutes).
    config : DemoConfig, optional
        All settings.
    restart_fresh : bool
        Delete the demo's outputs in ``out`` and start over.

    Returns
    -------
    dict
        The metrics also written to ``metrics.json`` (VAMP-2 scores, φ transitions, ΔF(C7ax − C7eq) in kJ/mol,
        ms per 2-fs MD step, the config).
    """
    cfg = config or (QUICK if quick else DemoConfig())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    open_run(out / "run.json", cfg, outputs=[out / name for name in _OUTPUTS], restart_fresh=restart_fresh,
             ignore=("checkpoint_interval_ps", "device"))  # neither changes a result beyond float rounding
    torch.set_num_threads(1)  # tiny per-step graphs: thread sync costs more than it saves (measured 15x)
    started = time.perf_counter()
    metrics_path = out / "learning.json"
    molecule = ala2.build()  # built once: every stage starts from the same minimised structure
    traj_paths, top_path, _ = simulate_training_data(cfg, out, molecule)
    if (out / "cv.pt").exists() and metrics_path.exists():
        learned = json.loads(metrics_path.read_text())
    else:
        learned = learn_cv(cfg, out, traj_paths, top_path, restart_fresh=restart_fresh)
        write_json_atomic(metrics_path, learned)
    reference = biased_run(cfg, out, BIASED_RUNS[0], None, molecule)
    learned_run = biased_run(cfg, out, BIASED_RUNS[1], out / "cv.pt", molecule)
    ref_an, cv_an = analyse_biased(cfg, reference), analyse_biased(cfg, learned_run)
    plot_fes_panels([("metadynamics on learned CV (reweighted)", *cv_an["fes"]),
                     ("reference: metadynamics on φ/ψ (reweighted)", *ref_an["fes"])], out / "fes_phi_psi.png")
    plot_time_series({"learned CV bias": (cv_an["time"], np.degrees(cv_an["phi"])),
                      "φ/ψ bias (reference)": (ref_an["time"], np.degrees(ref_an["phi"]))},
                     out / "phi_time_series.png", "φ (deg)")
    metrics = {
        **{key: learned[key] for key in ("vamp2_val", "vamp2_val_deeptime", "vamp2_val_baseline_distances",
                                         "vamp2_val_baseline_tica_torsions")},
        "n_cvs": cfg.n_cvs, "lagtime_ps": cfg.lagtime_ps,
        "training_phi_transitions": learned["training_phi_transitions"], "training_temperature_k": cfg.train_temperature_k,
        "training_ns": cfg.n_train_trajectories * cfg.train_ns_per_trajectory,
        "biased_ns": cfg.biased_ns, "biased_phi_transitions": int(cv_an["transitions"]),
        "reference_ns": cfg.reference_ns, "reference_phi_transitions": int(ref_an["transitions"]),
        "deltaF_C7ax_C7eq_kjmol": cv_an["delta_f"], "deltaF_reference_kjmol": ref_an["delta_f"],
        "ms_per_step_unbiased": measure_unbiased_speed(cfg, out, molecule),
        "ms_per_step_biased": learned_run["ms_per_step"], "ms_per_step_reference": reference["ms_per_step"],
        "bias_every_steps": cfg.bias_every_steps, "quick": quick, "config": dataclasses.asdict(cfg),
        "wall_seconds": time.perf_counter() - started,
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.md", render_report(metrics))
    log.info("demo finished in %.0f s; report at %s", metrics["wall_seconds"], out / "report.md")
    return metrics


def render_report(m: dict) -> str:
    table = "\n".join(f"| `{k}` | {f'{v:.4g}' if isinstance(v, float) else v} |" for k, v in m.items() if k != "config")
    return f"""# cvlearn demo: alanine dipeptide

Training data: {m['training_ns']:.3g} ns of unbiased MD at {m['training_temperature_k']:.0f} K (peptide bonds held
trans by a flat-bottom restraint) with
{m['training_phi_transitions']} φ transitions. CV (`cvlearn learn` defaults): the shipped pre-trained Equivariant Transformer, frozen, over heavy atoms → residue
tokens → sum → MLP → VAMP projection ({m['n_cvs']} CVs, lag {m['lagtime_ps']} ps). Biased: well-tempered
metadynamics at 300 K on CV 1 (bias force every {m['bias_every_steps']} steps, MTS Langevin) and the
reference on φ/ψ, both reweighted with c(t). ΔF is F(C7ax: 0 < φ < 120°) − F(C7eq: φ < 0).

| metric | value |
|---|---|
{table}

![learned CVs over φ/ψ](cv_on_phi_psi.png)

![reweighted free-energy surfaces](fes_phi_psi.png)

![φ during the biased runs](phi_time_series.png)

![training curves](learn/training_curves.png)

The learning step's own report (baselines, implied timescales, CK test): [learn/report.md](learn/report.md).
"""
