"""``cvlearn iterate``: learn a CV → explore on it (OPES-explore) → retrain on the reweighted explore run → bias.

The protocol practitioners use for learned CVs (Deep-TICA; Bonati, Piccini & Parrinello, PNAS 118, e2113533118
(2021); OPES-explore, Invernizzi, Piccini & Parrinello, JCTC 18, 3988 (2022)), driven by one config:

1. ``learn``: ``cvlearn learn`` on the user's (e.g. high-temperature) trajectories → ``learn/cv.pt``;
2. ``explore``: ``cvlearn bias`` with OPES-explore (the default ``method``) on that CV → ``explore/COLVAR`` and
   ``explore/trajectory.dcd`` (frame k = COLVAR row k);
3. ``retrain``: ``cvlearn learn`` again, the same settings unless overridden, on the explore run's frames,
   reweighted through its COLVAR (``biased``) → ``retrain/cv.pt``; with the smoothness penalty
   (:data:`RETRAIN_SMOOTHNESS`) unless a section sets ``smoothness``;
4. ``bias``: ``cvlearn bias`` (OPES-metad by default) on the retrained CV, on the explore's System unless the section
   names another → ``bias/``;
5. optional ``analyze``: ``cvlearn analyze`` of the final bias's COLVAR (and trajectory) → ``analyze/``;

then ``summary.json`` / ``summary.md`` compare the two CVs (:mod:`openmm_plugin.stages.iterate_report`).

Reweighting default: ``biased.method: rescaled_time``, as in Deep-TICA and mlcolvar's tutorials on OPES data
(after McCarty & Parrinello 2017, Yang & Parrinello 2018): pairs are ``lagtime_ps`` apart on the accelerated time
t' = Σ exp(β(V − c)) dt, which accounts for the bias acting *during* the lag, whereas frame ``weights`` reweight
only the start of each pair (exact only when the bias barely moves the system within a lag, which an
exploratory bias does not guarantee). V is the COLVAR's total ``bias`` (walls included) and c(t) the adaptive
bias's ``<label>.rct`` (OPES: kT ln of the mean exp(βV) over the deposited kernels; metad: Tiwary-Parrinello c(t)):
subtracting it keeps the growth of an OPES-explore bias during its transient from compressing every early frame to
nothing on t', so the mean acceleration stays near 1 and ``lagtime_ps`` stays in ps of (averaged) simulated time.
``retrain: {biased: {method: weights}}`` switches to frame weights.

Sections are mappings of the stages' own configs (:class:`LearnConfig`, :class:`BiasConfig`, :class:`AnalyzeConfig`)
without the keys the run fills in (:data:`FILLED`); all are built and checked before any compute, and an error names
``<section>.<key>``. ``retrain`` holds overrides of the learn section (its ``biased`` mapping merges into the
default above). Resume: ``<out>/run.json`` records the sections as written; a rerun under a changed config is refused
(``--restart-fresh`` deletes every step's outputs), and each step resumes or skips through its own stage record.

``--quick``: each learn with ``learn``'s QUICK, each bias with ``bias``'s quick settings (at most QUICK_STEPS MD
steps, fewer when the section asks for fewer); both biased runs write :data:`QUICK_EXPLORE_FRAMES` frames, the
explore's OPES barrier is at most :data:`QUICK_EXPLORE_BARRIER_KJMOL` and the retrain's lag is one explore frame (a
smoke test of the whole chain).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from cvlearn.config import check_input_file, check_output_dir, from_dict
from cvlearn.errors import ConfigError
from cvlearn.io import write_json_atomic, write_text_atomic
from cvlearn.run_dir import open_run

logger = logging.getLogger(__name__)

__all__ = ["FILLED", "IterateConfig", "QUICK_EXPLORE_FRAMES", "RETRAIN_SMOOTHNESS", "Stages", "TransitionSpec",
           "frame_interval_ps", "resolve_stages", "run_iterate"]

STEPS = ("learn", "explore", "retrain", "bias", "analyze")
FILLED = {"learn": ("out",), "explore": ("cv", "out"), "retrain": ("out", "trajectories", "store"),
          "bias": ("cv", "out"), "analyze": ("colvars", "out", "trajectories", "topology")}
SYSTEM_SOURCE = ("system", "system_xml", "forcefield", "pdb")  # the bias inherits all of them or none
SYSTEM_SHARED = ("nonbonded_method", "nonbonded_cutoff_nm", "constraints", "rigid_water", "hydrogen_mass_amu",
                 "timestep_ps", "friction_per_ps", "temperature_k", "platform")
RCT_LABEL = {"opes-explore": "opes_explore", "opes-metad": "opes", "metad": "metad"}  # c(t) column of each method
QUICK_EXPLORE_FRAMES = 40
# --quick: the explore's OPES barrier at most this. A 4-ps run at 40 kJ/mol has frame weights spanning e^15: one frame
# carries the reweighted data and the retrain finds no slow process (a smoke test must not fail on that).
QUICK_EXPLORE_BARRIER_KJMOL = 5.0
OUTPUTS = ("learn", "explore", "retrain", "bias", "analyze", "summary.json", "summary.md")
# The retrain's smoothness penalty λ (nm²) unless the learn or retrain section sets one. Retrained on ala2's 2-ns
# OPES-explore run without it, 2 of 3 CVs were rough enough (|∇s| up to 80 per unit of their range on the explore
# frames, 3x the first CV's) that their OPES-metad run heated and blew up within 11 ps at 2 fs; with it, 0 of 3, and
# validation VAMP-2 went up (benchmarks/results/retrain_smoothness.md). The first learn keeps cvlearn learn's default.
RETRAIN_SMOOTHNESS = 1e-4


@dataclass(frozen=True)
class TransitionSpec:
    """Transitions between two cores ``a`` and ``b`` (closed intervals, the observable's units: rad, nm) of one
    observable in ``cvlearn learn``'s syntax (``phi 0``, ``distance 4 14``, ...), counted in both biased runs."""

    observable: str
    a: tuple[float, float]
    b: tuple[float, float]

    def __post_init__(self):
        for name in ("a", "b"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name}: expected [lo, hi] with lo < hi, found {list(getattr(self, name))}")
        if max(self.a[0], self.b[0]) <= min(self.a[1], self.b[1]):
            raise ValueError(f"b: expected a core disjoint from a {list(self.a)}, found {list(self.b)}")


@dataclass(frozen=True)
class IterateConfig:
    """Settings of ``cvlearn iterate``: one mapping per step (see the module doc), outputs under ``out``."""

    out: str = "runs/iterate"
    learn: Optional[dict] = None  # LearnConfig keys (no out)
    explore: Optional[dict] = None  # BiasConfig keys (no cv, out); method default opes-explore
    retrain: Optional[dict] = None  # overrides of the learn section (no out, trajectories, store)
    bias: Optional[dict] = None  # BiasConfig keys (no cv, out); System keys default to the explore's
    analyze: Optional[dict] = None  # AnalyzeConfig keys (no colvars, out, trajectories, topology); optional
    transitions: Optional[TransitionSpec] = None

    def __post_init__(self):
        for name in ("learn", "explore", "bias"):
            if getattr(self, name) is None:
                raise ValueError(f"{name}: required: expected a mapping of its stage's keys, found none")
        for name in STEPS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"{name}: expected a mapping of its stage's keys, found {value!r}")
        if isinstance(self.transitions, dict):
            object.__setattr__(self, "transitions", TransitionSpec(**self.transitions))
        check_output_dir(self.out, "out")


@dataclass(frozen=True)
class Stages:
    """The five resolved stage configs of one iterate run (``analyze`` None when not asked for)."""

    learn: object
    explore: object
    retrain: object
    bias: object
    analyze: object


@contextlib.contextmanager
def _section(name: str):
    """Re-raise a stage's ConfigError with ``<name>.`` before its key (or ``<name>`` as the key)."""
    try:
        yield
    except ConfigError as err:
        if err.source is None and type(err) is ConfigError:
            raise ConfigError(err.detail, None, f"{name}.{err.key}" if err.key else name) from err
        raise


def _own(config: IterateConfig, name: str) -> dict:
    data = dict(getattr(config, name) or {})
    given = [k for k in FILLED[name] if k in data]
    if given:
        raise ConfigError(f"filled in by the iterate run (outputs under {config.out}); remove it",
                          key=f"{name}.{given[0]}")
    return data


def frame_interval_ps(stage) -> float:
    """ps between the frames (and COLVAR rows) of a ``cvlearn bias`` run of config ``stage``."""
    from openmm_plugin.user_system import DEFAULT_TIMESTEP_PS
    from systems import builtin_system

    step = stage.timestep_ps or (builtin_system(stage.system).TIMESTEP_PS if stage.system else DEFAULT_TIMESTEP_PS)
    return stage.report_interval_steps * step


def resolve_stages(config: IterateConfig, *, quick: bool = False) -> Stages:
    """Every section built into its stage config and checked before any compute (errors name ``<section>.<key>``).

    Parameters
    ----------
    config : IterateConfig
    quick : bool
        Apply the stages' quick settings (see the module doc).

    Returns
    -------
    Stages
    """
    from openmm_plugin.stages import bias as bias_stage
    from openmm_plugin.stages.analyze import AnalyzeConfig
    from openmm_plugin.stages.learn import LearnConfig, quick_config as quick_learn
    from openmm_plugin.stages.learn_data import check_inputs, check_lag, lag_frames

    out = Path(config.out)
    learn_map = {**_own(config, "learn"), "out": str(out / "learn")}
    learn = from_dict(LearnConfig, learn_map, None, key="learn")
    if quick:
        learn = quick_learn(learn)
    with _section("learn"):
        check_inputs(learn)

    explore_map = {"method": "opes-explore", **_own(config, "explore"), "cv": str(out / "learn" / "cv.pt"),
                   "out": str(out / "explore")}
    explore = from_dict(bias_stage.BiasConfig, explore_map, None, key="explore")
    if not explore.trajectory:
        raise ConfigError("expected true (the retrain learns from the explore run's frames), found false",
                          key="explore.trajectory")
    if quick:
        explore = _quick_bias(explore)
        explore = dataclasses.replace(explore, opes=dataclasses.replace(
            explore.opes, barrier_kjmol=min(explore.opes.barrier_kjmol, QUICK_EXPLORE_BARRIER_KJMOL)))

    bias_own = _own(config, "bias")
    inherited = [k for k in SYSTEM_SHARED if k in explore_map]
    if not any(k in bias_own for k in SYSTEM_SOURCE):
        inherited += [k for k in SYSTEM_SOURCE if k in explore_map]
    bias_map = {**{k: explore_map[k] for k in inherited if k not in bias_own}, **bias_own,
                "cv": str(out / "retrain" / "cv.pt"), "out": str(out / "bias")}
    bias = from_dict(bias_stage.BiasConfig, bias_map, None, key="bias")
    if quick:
        bias = _quick_bias(bias)
    for name, stage in (("explore", explore), ("bias", bias)):
        for key in ("system_xml", "pdb"):
            if getattr(stage, key) is not None:
                with _section(name):
                    _check_file(getattr(stage, key), key)

    retrain = _retrain_config(config, learn_map, explore, quick)
    interval = frame_interval_ps(explore)
    if quick:
        retrain = dataclasses.replace(retrain, lagtime_ps=interval * retrain.stride)
    with _section("retrain"):
        _check_retrain_inputs(retrain, learn)
        n_frames = -(-(explore.n_steps // explore.report_interval_steps) // retrain.stride)  # after stride
        lag_frames(retrain, interval * retrain.stride)
        check_lag(retrain, SimpleNamespace(trajectories=[Path(explore.out) / "trajectory.dcd"]), [n_frames],
                  interval * retrain.stride)
    if config.transitions is not None:
        with _section("transitions"):
            _check_observable(config.transitions.observable, learn.topology)

    analyze = None
    if config.analyze is not None:
        analyze_map = dict(_own(config, "analyze"))
        analyze_map.setdefault("temperature_k", bias.temperature_k)
        analyze_map.setdefault("method", "metad" if bias.method == "metad" else "opes")
        analyze_map.update(colvars=[str(Path(bias.out) / "COLVAR")], out=str(out / "analyze"))
        if analyze_map.get("torsions") or analyze_map.get("distances"):
            analyze_map.update(trajectories=[str(Path(bias.out) / "trajectory.dcd")],
                               topology=str(Path(bias.out) / "final.pdb"))
            if not bias.trajectory:
                raise ConfigError("expected true (analyze reads torsions/distances from the final bias's frames), "
                                  "found false", key="bias.trajectory")
        analyze = from_dict(AnalyzeConfig, analyze_map, None, key="analyze")
    return Stages(learn, explore, retrain, bias, analyze)


def _quick_bias(config):
    """``bias``'s quick config, no longer than the section's own ``n_steps``, with :data:`QUICK_EXPLORE_FRAMES` rows."""
    from openmm_plugin.stages.bias import quick_config

    quick = quick_config(config)
    k = int(quick.mts_substeps)
    n_steps = min(quick.n_steps, max(k, config.n_steps // k * k))
    return dataclasses.replace(quick, n_steps=n_steps,
                               report_interval_steps=max(k, n_steps // QUICK_EXPLORE_FRAMES // k * k))


def _check_file(path, key: str) -> None:
    try:
        check_input_file(path, key, "file")
    except FileNotFoundError as err:
        raise ConfigError(str(err).partition(": ")[2], key=key) from None


def _retrain_config(config: IterateConfig, learn_map: dict, explore, quick: bool):
    """The learn section with the explore run as its data, then the ``retrain`` overrides."""
    from openmm_plugin.stages.learn import LearnConfig, quick_config as quick_learn

    overrides = _own(config, "retrain")
    biased = {"method": "rescaled_time", "temperature_k": explore.temperature_k, "bias_column": "bias",
              "rct_column": f"{RCT_LABEL[explore.method]}.rct" if explore.method in RCT_LABEL else None}
    user_biased = overrides.pop("biased", None) or {}
    if not isinstance(user_biased, dict):
        raise ConfigError(f"expected a mapping of BiasedSpec keys, found {user_biased!r}", key="retrain.biased")
    if "colvars" in user_biased:
        raise ConfigError("filled in by the iterate run (the explore run's COLVAR); remove it",
                          key="retrain.biased.colvars")
    data = {**learn_map, "stride": 1, "frame_interval_ps": None, "store": None,
            "smoothness": learn_map.get("smoothness", RETRAIN_SMOOTHNESS), **overrides,
            "out": str(Path(config.out) / "retrain"), "trajectories": [str(Path(explore.out) / "trajectory.dcd")],
            "biased": {**biased, **user_biased, "colvars": [str(Path(explore.out) / "COLVAR")]}}
    retrain = from_dict(LearnConfig, data, None, key="retrain")
    return quick_learn(retrain) if quick else retrain


def _check_retrain_inputs(retrain, learn) -> None:
    """What of the retrain can be checked before the explore run exists: topology, selection, observables."""
    from cvlearn.data import read_topology, select_atoms

    if (retrain.topology, retrain.selection, retrain.observables) == (learn.topology, learn.selection,
                                                                      learn.observables):
        return  # checked with the learn section
    _check_file(retrain.topology, "topology")
    topology = read_topology(retrain.topology)[0]
    try:
        select_atoms(topology, retrain.selection)
    except ValueError as err:
        raise ConfigError(str(err).removeprefix("selection "), key="selection") from None
    for name, spec in (retrain.observables or {}).items():
        _check_observable(spec, retrain.topology, f"observables.{name}")


def _check_observable(spec: str, topology_path, key: str = "observable") -> None:
    from openmm_plugin.stages.learn_data import _parse_observable

    from cvlearn.data import read_topology

    try:
        _parse_observable("x", spec, read_topology(topology_path)[0])
    except ConfigError as err:
        raise ConfigError(err.detail, key=key) from None


def run_iterate(config: IterateConfig, *, quick: bool = False, restart_fresh: bool = False,
                progress: bool = True) -> dict:
    """Run (or resume, or return) the learn → explore → retrain → bias (→ analyze) chain of ``config``.

    Parameters
    ----------
    config : IterateConfig
    quick : bool
        The stages' quick settings (module doc); recorded, so a quick and a full run never share ``out``.
    restart_fresh : bool
        Delete every step's outputs under ``out`` and start over.
    progress : bool
        Progress bars of the learn steps.

    Returns
    -------
    dict
        The summary also written to ``summary.json`` (see :func:`openmm_plugin.stages.iterate_report.summarize`).
    """
    from openmm_plugin.stages.analyze import run_analyze
    from openmm_plugin.stages.bias import run_bias
    from openmm_plugin.stages.iterate_report import check_rescaled_pairs, summarize, render_summary
    from openmm_plugin.stages.learn import run_learn

    stages = resolve_stages(config, quick=quick)  # every section, before any compute
    out = Path(config.out)
    run = open_run(out / "run.json", config, restart_fresh=restart_fresh, outputs=[out / n for n in OUTPUTS],
                   extra={"quick": quick})
    if run.finished and (out / "summary.json").is_file():
        logger.info("%s: finished earlier; summary from %s", out, out / "summary.json")
        return json.loads((out / "summary.json").read_text())
    seconds, results = {}, {}
    for name, step in (("learn", lambda: run_learn(stages.learn, progress=progress)),
                       ("explore", lambda: run_bias(stages.explore)),
                       ("retrain", lambda: (check_rescaled_pairs(stages.retrain),
                                            run_learn(stages.retrain, progress=progress))[1]),
                       ("bias", lambda: run_bias(stages.bias)),
                       ("analyze", lambda: run_analyze(stages.analyze) if stages.analyze is not None else None)):
        tick = time.perf_counter()
        logger.info("iterate: %s", name)
        with _section(name):
            results[name] = step()
        seconds[name] = time.perf_counter() - tick
    tick = time.perf_counter()
    summary = summarize(config, stages, results, quick=quick)
    seconds["summary"] = time.perf_counter() - tick
    summary["seconds"] = seconds
    write_json_atomic(out / "summary.json", summary)
    write_text_atomic(out / "summary.md", render_summary(summary))
    run.mark_finished()
    return summary
