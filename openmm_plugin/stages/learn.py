"""``cvlearn learn``: a user's trajectories → a learned, exported CV, with baselines, kinetics and a report.

The method's default: the shipped denoising-pre-trained Equivariant Transformer, frozen. Every frame is embedded
once into the embedding store (``<out>/store``, resumable), then a mixer + MLP head (:class:`TokenCV`) is trained
per seed by VAMPNet on the stored tokens, split by whole trajectory; the seed with the best validation VAMP-2 is put
back behind its featurizer (:meth:`TokenCV.on_featurizer`) and exported with :func:`cvlearn.export.export_cv`.
``protocol: end_to_end`` trains the whole chain instead (as the demo does), starting from the same weights.

Validation split: whole trajectories (:func:`cvlearn.data.split_by_trajectory`); a single trajectory is split in
time (its last ``validation_fraction`` validates), and the run refuses when either part holds no lagged pair.

Resume: ``<out>/run.json`` records the config and input hashes (a changed config is refused; ``--restart-fresh``
starts over); the store resumes chunk by chunk; each seed's training resumes from its checkpoint, and a finished
seed costs no epoch; a finished run returns its metrics at once. All outputs are written atomically.

``--quick`` (:data:`QUICK`): at most 3 epochs, patience 2, no minimum, the first seed only (the run record keeps
the reduced config, so a quick and a full run never share a directory).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from cvlearn.config import check_output_dir, check_ranges
from cvlearn.distributed import check_device
from cvlearn.errors import ConfigError
from cvlearn.io import write_json_atomic
from cvlearn.run_dir import open_run
from openmm_plugin.stages.learn_data import Plan, check_inputs, read_inputs

logger = logging.getLogger(__name__)

PROTOCOLS = ("frozen", "end_to_end")
CONTEXTS = ("molecule", "window")
BASELINES = ("tica_torsions", "vampnet_distances")
BIAS_METHODS = ("weights", "rescaled_time")
QUICK = {"max_epochs": 3, "patience": 2, "min_epochs": 0, "n_seeds": 1}
DISTANCE_CV = "baseline_distances_cv.pt"  # export_baselines: the distance-VAMPNet baseline, exported beside cv.pt
OUTPUTS = ("store", "seeds", "baselines", "cv.pt", DISTANCE_CV, "metrics.json", "report.md", "training_curves.png",
           "cv_on_tica.png", "cv_on_observables.png", "cv_its.png", "cv_ck_test.png", "cv_vamp2_curves.png",
           "cv_kinetics.json")


@dataclass(frozen=True)
class FeaturizerSpec:
    """Where the featurizer's weights come from: ``checkpoint`` (``default``: the shipped pre-trained ET, or a cvlearn
    checkpoint file), ``geom2vec`` (a geom2vec/torchmd-net file of architecture ``kind``), or ``kind`` alone (random
    initial weights with the optional architecture ``config``, seeded per seed).

    ``vector_cutoff`` (ET and ViSNet; default true) weights their vector messages with the cosine cutoff, as
    torchmd-net's ET option of that name; the weights load unchanged. Without it the features, and a CV on them,
    jump where an atom pair crosses the cutoff, and a bias on such a CV is not integrable (MD under it does not
    conserve energy; issue 17). ``false`` reproduces the published functions. TensorNet is continuous without it."""

    checkpoint: Optional[str] = None
    kind: Optional[str] = None
    geom2vec: Optional[str] = None
    config: Optional[dict] = None
    vector_cutoff: Optional[bool] = None

    def __post_init__(self):
        from cvlearn.nn.featurizers import FEATURIZERS

        if self.kind is not None and self.kind not in FEATURIZERS:
            raise ValueError(f"kind: expected one of {sorted(FEATURIZERS)}, found {self.kind!r}")
        if self.checkpoint and self.geom2vec:
            raise ValueError("geom2vec: expected either checkpoint or geom2vec, found both")
        if self.checkpoint and (self.kind or self.config):
            raise ValueError("kind: a cvlearn checkpoint names its own architecture; give checkpoint alone")
        if self.geom2vec and not self.kind:
            raise ValueError("kind: expected the architecture of the geom2vec file (et, visnet or tensornet), found none")
        if self.geom2vec and self.config:
            raise ValueError("config: a geom2vec file has its published architecture; drop config")
        if not (self.checkpoint or self.geom2vec or self.kind):
            raise ValueError("checkpoint: expected checkpoint, geom2vec or kind (random weights), found none")
        if self.vector_cutoff is not None and not isinstance(self.vector_cutoff, bool):
            raise ValueError(f"vector_cutoff: expected true or false, found {self.vector_cutoff!r}")
        if self.kind is not None:
            self._check_vector_cutoff(self.kind)
        if self.config is not None:
            fields = FEATURIZERS[self.kind][1].__dataclass_fields__
            unknown = sorted(set(self.config) - set(fields))
            if unknown:
                raise ValueError(f"config: unknown keys {unknown} for {self.kind!r}; expected a subset of {sorted(fields)}")
            given = self.config.get("vector_cutoff")
            if given is not None and self.vector_cutoff is not None and given != self.vector_cutoff:
                raise ValueError(f"vector_cutoff: {self.vector_cutoff} contradicts config.vector_cutoff: {given}; "
                                 "give it once")

    def _check_vector_cutoff(self, kind: str) -> None:
        from cvlearn.nn.featurizers import WEIGHT_FREE

        if self.vector_cutoff and "vector_cutoff" not in WEIGHT_FREE.get(kind, ()):
            raise ValueError(f"vector_cutoff: {kind} has no such option (it is continuous at its cutoff); drop it")

    def overrides(self, kind: str) -> dict:
        """The weight-free fields this spec sets on a ``kind`` featurizer: ``vector_cutoff`` (default true) where
        the architecture has it."""
        from cvlearn.nn.featurizers import WEIGHT_FREE

        self._check_vector_cutoff(kind)
        if "vector_cutoff" not in WEIGHT_FREE.get(kind, ()):
            return {}
        if self.config is not None and self.config.get("vector_cutoff") is not None:
            return {"vector_cutoff": bool(self.config["vector_cutoff"])}
        return {"vector_cutoff": True if self.vector_cutoff is None else self.vector_cutoff}

    def weights_file(self) -> Path | None:
        """The file holding the weights (None for random weights); a missing file raises ConfigError."""
        from cvlearn.checkpoints import default_checkpoint

        if self.checkpoint == "default":
            return default_checkpoint()
        name, value = ("checkpoint", self.checkpoint) if self.checkpoint else ("geom2vec", self.geom2vec)
        if not value:
            return None
        if not Path(value).is_file():
            raise ConfigError(f"expected a checkpoint file, {value!r} does not exist", key=f"featurizer.{name}")
        return Path(value)

    @functools.cached_property
    def resolved_kind(self) -> str | None:
        """The architecture: a checkpoint's own kind (read once per spec: the file is MBs), else ``kind``."""
        from cvlearn.nn.featurizers import checkpoint_kind

        return checkpoint_kind(self.weights_file()) if self.checkpoint else self.kind

    def build(self, atomic_numbers, seed: int):
        """The featurizer over ``atomic_numbers``."""
        from cvlearn.nn.featurizers import featurizer_from_checkpoint, load_geom2vec, make_featurizer

        path = self.weights_file()
        if self.checkpoint:
            return featurizer_from_checkpoint(path, atomic_numbers, self.overrides(self.resolved_kind))
        if self.geom2vec:
            return load_geom2vec(self.kind, atomic_numbers, path, self.overrides(self.kind))
        return make_featurizer(self.kind, atomic_numbers, {**(self.config or {}), **self.overrides(self.kind)},
                               seed=seed)


@dataclass(frozen=True)
class BiasedSpec:
    """Learning from biased runs: one COLVAR per trajectory (row k = frame k), reweighted at ``temperature_k`` by
    frame ``weights`` (each pair weighted by its first frame) or on a ``rescaled_time`` axis.

    ``normalise_time`` (rescaled time; default true) divides t' by its mean acceleration, so ``lagtime_ps`` counts
    simulated time on average. Unnormalised, t' = Σ exp(β(V − c)) dt has the scale of the bias's offset: a 2-ns
    OPES-explore run of ala2 (barrier 40 kJ/mol) spanned 2.4e8 ps of t', so a 5-ps lag paired nearly every frame
    with itself and the retrained CV learned no slow process (|r| with φ 0.17).

    ``skip_fraction`` of each biased trajectory's first frames is left out of training and validation (the same
    default as ``cvlearn analyze``): the bias's transient, where β(V − c(t)) is no weight yet. Right after OPES's
    first deposition V jumps from −ΔE to ≈ 0 at the kernel while c(t) is still −ΔE, so that one frame carries
    e^(βΔE) of the weight (measured on three 2-ns OPES-metad walkers of WLALL, barrier 30 kJ/mol: a Kish effective
    sample size of 1 frame in 2,000 per walker, and 99 % of the rescaled-time pair weight pairing a frame with
    itself; without the first two frames, 520-880 and 0 %)."""

    colvars: tuple[str, ...] = ()
    temperature_k: float = 300.0
    method: str = "weights"
    bias_column: Optional[str] = None  # default: found (``<label>.rbias``, ``<label>.bias`` − ``.rct``, ``bias``)
    rct_column: Optional[str] = None
    normalise_time: bool = True
    skip_fraction: float = 0.1  # of each biased trajectory's first frames: the bias's transient, left out

    def __post_init__(self):
        if not self.colvars:
            raise ValueError("colvars: expected one COLVAR file per trajectory, found none")
        if self.method not in BIAS_METHODS:
            raise ValueError(f"method: expected one of {list(BIAS_METHODS)}, found {self.method!r}")
        check_ranges(self, positive=("temperature_k",), fraction=("skip_fraction",))


@dataclass(frozen=True)
class LearnConfig:
    """Settings of ``cvlearn learn`` (times ps, temperatures K; paths relative to the working directory)."""

    out: str = "runs/learn"
    topology: str = ""
    trajectories: tuple[str, ...] = ()
    stride: int = 1
    frame_interval_ps: Optional[float] = None  # between frames in the files; None: DCD header or stored times
    selection: str = "protein and not element H"
    featurizer: FeaturizerSpec = FeaturizerSpec(checkpoint="default")
    context: str = "molecule"  # one graph per frame, or ±half_width-residue windows ("window")
    half_width: int = 2
    mixer: str = "sum"  # sum | mlp_mixer | attention
    protocol: str = "frozen"  # frozen (embed once, train mixer + head) | end_to_end
    lagtime_ps: float = 5.0
    n_cvs: int = 2
    seeds: tuple[int, ...] = (0,)
    validation_fraction: float = 0.25
    baselines: tuple[str, ...] = BASELINES
    export_baselines: bool = False  # also export the best distance-VAMPNet seed (DISTANCE_CV), biasable like cv.pt
    observables: Optional[dict] = None  # name: spec (see openmm_plugin.stages.learn_data)
    biased: Optional[BiasedSpec] = None
    max_epochs: int = 30
    patience: int = 8
    min_epochs: int = 0
    batch_size: int = 512
    learning_rate: float = 2e-3
    head_hidden: int = 64
    store: Optional[str] = None  # an existing embedding store of the same featurizer and frames
    periodic: Union[bool, str] = "auto"  # auto: periodic when the trajectories carry unit cells
    n_clusters: int = 20  # k-means states of the MSM behind the ITS / CK test
    smoothness: float = 0.0  # λ of the Dirichlet-form penalty (cvlearn.estimators.smoothness); 0: none
    smoothness_frames: int = 32  # frames per training step it is estimated on
    device: str = "cpu"  # embedding and training: cpu | cuda (under torchrun: each rank's own GPU) | cuda:N

    def __post_init__(self):
        from cvlearn.nn.mixers import MIXERS

        check_ranges(self, positive=("frame_interval_ps", "lagtime_ps", "learning_rate"),
                     at_least_one=("stride", "n_cvs", "max_epochs", "patience", "batch_size", "head_hidden",
                                   "smoothness_frames"),
                     non_negative=("min_epochs", "half_width", "seeds", "smoothness"), fraction=("validation_fraction",))
        for key, value, allowed in (("context", self.context, CONTEXTS), ("mixer", self.mixer, MIXERS),
                                    ("protocol", self.protocol, PROTOCOLS)):
            if value not in allowed:
                raise ValueError(f"{key}: expected one of {list(allowed)}, found {value!r}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"baselines: expected names from {list(BASELINES)}, found {unknown}")
        if self.export_baselines and "vampnet_distances" not in self.baselines:
            raise ValueError(f"export_baselines: expected 'vampnet_distances' in baselines (it is what is exported), "
                             f"found baselines {list(self.baselines)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(isinstance(s, bool) for s in self.seeds):
            raise ValueError(f"seeds: expected distinct integer seeds, found {list(self.seeds)}")
        if not self.validation_fraction > 0:
            raise ValueError(f"validation_fraction: expected a fraction in (0, 1), found {self.validation_fraction!r}")
        try:
            check_device(self.device)  # "device: expected 'cpu', 'cuda' or 'cuda:N', found ..."
        except ConfigError as err:  # as ValueError "device: ...", so load_config prefixes the file
            raise ValueError(str(err)) from None
        if self.periodic not in ("auto", True, False):
            raise ValueError(f"periodic: expected auto, true or false, found {self.periodic!r}")
        if isinstance(self.n_clusters, bool) or not isinstance(self.n_clusters, int) or self.n_clusters < 2:
            raise ValueError(f"n_clusters: expected an integer >= 2, found {self.n_clusters!r}")
        if isinstance(self.featurizer, dict):  # Python callers may pass a mapping, as the YAML does
            object.__setattr__(self, "featurizer", FeaturizerSpec(**self.featurizer))
        if isinstance(self.biased, dict):
            object.__setattr__(self, "biased", BiasedSpec(**self.biased))
        object.__setattr__(self, "trajectories", tuple(str(p) for p in self.trajectories))


def quick_config(config: LearnConfig) -> LearnConfig:
    """``config`` reduced by :data:`QUICK` (a smoke test: a few epochs of one seed)."""
    return dataclasses.replace(config, max_epochs=min(config.max_epochs, QUICK["max_epochs"]),
                               patience=min(config.patience, QUICK["patience"]), min_epochs=QUICK["min_epochs"],
                               seeds=config.seeds[:QUICK["n_seeds"]])


def _input_files(config: LearnConfig, plan: Plan) -> dict:
    files = {"topology": plan.topology_path, **{f"trajectories[{i}]": p for i, p in enumerate(plan.trajectories)}}
    if config.biased is not None:
        files.update({f"biased.colvars[{i}]": p for i, p in enumerate(config.biased.colvars)})
    weights = config.featurizer.weights_file()
    if weights is not None:
        files["featurizer"] = weights
    if config.store:
        files["store"] = Path(config.store) / "manifest.json"
    return files


def _check_featurizer(config: LearnConfig) -> None:
    """A checkpoint file's architecture takes the spec's options (read before any compute)."""
    from cvlearn.nn.featurizers import CheckpointMismatchError

    spec = config.featurizer
    if not spec.checkpoint:
        return
    try:
        kind = spec.resolved_kind
    except CheckpointMismatchError as e:
        raise ConfigError(str(e), key="featurizer.checkpoint") from None
    try:
        spec.overrides(kind)
    except ValueError as e:
        key, _, message = str(e).partition(": ")
        raise ConfigError(message, key=f"featurizer.{key}") from None


def _check_store(config: LearnConfig) -> None:
    if config.store and not (Path(config.store) / "manifest.json").is_file():
        raise ConfigError(f"expected an embedding store directory with manifest.json, found {config.store!r}",
                          key="store")


def run_learn(config: LearnConfig, *, quick: bool = False, restart_fresh: bool = False,
              progress: bool = True) -> dict:
    """Learn a CV from ``config.trajectories``; write ``cv.pt``, ``metrics.json``, ``report.md`` and PNGs to ``out``.

    Parameters
    ----------
    config : LearnConfig
        All settings (see the class and the module doc).
    quick : bool
        Apply :data:`QUICK` first.
    restart_fresh : bool
        Delete this run's outputs in ``config.out`` and start over.
    progress : bool
        Progress bars for embedding and epochs.

    Returns
    -------
    dict
        The metrics also written to ``metrics.json``: validation VAMP-2 (cvlearn and deeptime) of the exported
        model and per seed, baselines, lag, frames, seconds per phase, notes and the config.
    """
    from openmm_plugin.stages.learn_report import finish

    from cvlearn import distributed

    started = time.perf_counter()
    if quick:
        config = quick_config(config)
    out = check_output_dir(config.out, "out")
    plan = check_inputs(config)
    _check_featurizer(config)
    _check_store(config)
    distributed.init_from_env()  # under torchrun: join the group (the store and the training are data-parallel)
    rank0 = distributed.is_rank0()
    if not rank0:
        distributed.barrier()  # rank 0 records (or cleans) the run first; the others then find its run.json
    run = open_run(out / "run.json", config, _input_files(config, plan), restart_fresh=restart_fresh and rank0,
                   outputs=[out / name for name in OUTPUTS if not (name == "store" and config.store)],
                   ignore=("out", "device"))  # a run may resume on another device
    if rank0:
        distributed.barrier()
    if run.finished and (out / "metrics.json").is_file() and (out / "cv.pt").is_file():
        logger.info("%s: finished earlier; metrics from %s", out, out / "metrics.json")
        distributed.destroy()
        return json.loads((out / "metrics.json").read_text())
    seconds = {}
    tick = time.perf_counter()
    data = read_inputs(config, plan, None if config.periodic == "auto" else bool(config.periodic))
    seconds["read"] = time.perf_counter() - tick
    logger.info("read %d trajectories (%d frames, %d selected atoms), frame interval %g ps, lag %d frames%s",
                len(data.positions), sum(data.n_frames), len(plan.atoms), data.frame_interval_ps, data.lag,
                ", periodic" if data.periodic else "")
    from openmm_plugin.stages.learn_fit import train_cv

    learned = train_cv(config, plan, data, out, seconds, progress and rank0)
    distributed.destroy()  # baselines, kinetics and the report run on rank 0 alone
    if not rank0:
        return {}
    metrics = finish(config, plan, data, learned, out, seconds, progress, quick=quick)
    metrics["seconds"]["total"] = time.perf_counter() - started
    write_json_atomic(out / "metrics.json", metrics)
    run.mark_finished(vamp2_val=metrics["vamp2_val"])
    return metrics


def featurizer_note(config: LearnConfig) -> str:
    spec = config.featurizer
    cut = spec.overrides(spec.resolved_kind).get("vector_cutoff")
    smooth = {True: ", vector messages weighted by the cutoff (`vector_cutoff`: continuous at the cutoff)",
              False: ", vector messages masked at the cutoff (`vector_cutoff: false`: the CV jumps where a pair "
                     "crosses it)", None: ""}[cut]
    if spec.checkpoint == "default":
        return ("the shipped denoising-pre-trained Equivariant Transformer (cvlearn.checkpoints.default_checkpoint())"
                + smooth)
    if spec.checkpoint:
        return f"the cvlearn checkpoint {spec.checkpoint}{smooth}"
    if spec.geom2vec:
        return f"the geom2vec {spec.kind} checkpoint {spec.geom2vec}{smooth}"
    return f"a randomly initialised {spec.kind} featurizer{smooth}"


__all__ = ["BiasedSpec", "FeaturizerSpec", "LearnConfig", "QUICK", "quick_config", "run_learn"]
