"""``CVSpec``: the typed contract an exported CV file carries (the hand-off from learning to biasing).

Everything an MD engine or an analysis needs to know about the CV without running it: which particles it
reads and what they are, how many components it returns and how they wrap, the lag it was trained at, the
range it saw in training, and which featurizer weights and package versions made it. It travels as JSON inside
the TorchScript file (``cvlearn.json``) and round-trips exactly. A file without a ``format`` predates the
contract and is refused with a message saying how to re-export it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Optional

CV_SPEC_FORMAT = 1  # bump when a field changes meaning; load_cv refuses other formats


def _ints(name: str, values) -> tuple:
    out = tuple(int(v) for v in values)
    if not out:
        raise ValueError(f"CVSpec.{name}: expected at least one entry, found none")
    return out


def _plain(name: str, value: dict) -> dict:
    """A JSON-safe deep copy, so equality survives the JSON round trip (tuples become lists, keys strings)."""
    try:
        return json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"CVSpec.{name}: expected a JSON-serialisable dict of finite numbers, found {value!r} "
                         f"({err})") from err


@dataclass(frozen=True)
class CVSpec:
    """The contract of an exported CV, returned by :func:`cvlearn.export.load_cv`.

    Parameters
    ----------
    n_particles : int
        Particles the CV's ``forward`` takes (all of the System's).
    atom_indices : tuple of int
        ``[n_selected]`` System indices of the atoms the CV reads.
    atomic_numbers : tuple of int
        ``[n_selected]`` elements of those atoms.
    residue_of_atom : tuple of int
        ``[n_selected]`` 0-based residue (token) index of each selected atom.
    n_cvs : int
        Components the CV returns.
    dtype : str
        Dtype of the network inside the module (``"float32"`` or ``"float64"``); the output follows the input's.
    featurizer_architecture : str
        Class name of the featurizer (or of the model when it has none, e.g. ``"Torsions"``).
    featurizer_sha256 : str
        SHA-256 of the featurizer's weights as trained (or of its checkpoint file when given at export).
    lagtime_ps : float or None
        Lag time the CV was fitted at (ps); None for CVs that were not learned (torsions, coordinates).
    frame_interval_ps : float or None
        Time between the training frames (ps); ``lagtime_ps / frame_interval_ps`` is the lag in frames.
    cv_range_training : tuple of (float, float) or None
        Per component ``(min, max)`` of the CV over the training frames; None when not known.
    periodic : bool
        Whether ``forward`` takes box vectors (Systems with periodic boundaries) and makes the selection whole
        before the model; such a CV refuses to run without a box. False in files written before periodic CVs.
    bonds : tuple of (int, int) or None
        Periodic CVs: the bonded pairs, in selection order, whose spanning tree makes the selection whole; None
        for non-periodic CVs.
    component_periods : tuple of (float or None)
        ``[n_cvs]`` period of each component (e.g. 2π for a torsion, radians), None where it does not wrap.
    featurizer_config : dict
        The featurizer's architecture settings ({} without a featurizer).
    dense_et : tuple of str
        Submodules swapped for the dense ET at export.
    versions : dict
        Package versions at export (cvlearn, torch, and openmm where importable).
    units : dict
        Units of the inputs and outputs.
    extra : dict
        The caller's free-form notes (system name, singular values, CV names, ...).
    format : int
        Version of this contract.
    """

    n_particles: int
    atom_indices: tuple
    atomic_numbers: tuple
    residue_of_atom: tuple
    n_cvs: int
    dtype: str
    featurizer_architecture: str
    featurizer_sha256: str
    lagtime_ps: Optional[float] = None
    frame_interval_ps: Optional[float] = None
    cv_range_training: Optional[tuple] = None
    periodic: bool = False
    bonds: Optional[tuple] = None
    component_periods: Optional[tuple] = None
    featurizer_config: dict = field(default_factory=dict)
    dense_et: tuple = ()
    versions: dict = field(default_factory=dict)
    units: dict = field(default_factory=lambda: {"positions": "nm", "cvs": "dimensionless", "time": "ps"})
    extra: dict = field(default_factory=dict)
    format: int = CV_SPEC_FORMAT

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("n_particles", int(self.n_particles))
        set_("n_cvs", int(self.n_cvs))
        if self.n_cvs < 1:
            raise ValueError(f"CVSpec.n_cvs: expected >= 1, found {self.n_cvs}")
        for name in ("atom_indices", "atomic_numbers", "residue_of_atom"):
            set_(name, _ints(name, getattr(self, name)))
        n = len(self.atom_indices)
        if len(self.atomic_numbers) != n or len(self.residue_of_atom) != n:
            raise ValueError(f"CVSpec: expected {n} atomic_numbers and residue_of_atom entries (one per selected "
                             f"atom), found {len(self.atomic_numbers)} and {len(self.residue_of_atom)}")
        if min(self.atom_indices) < 0 or max(self.atom_indices) >= self.n_particles:
            raise ValueError(f"CVSpec.atom_indices: expected indices in [0, {self.n_particles}), "
                             f"found {list(self.atom_indices)}")
        for name in ("lagtime_ps", "frame_interval_ps"):
            value = getattr(self, name)
            if value is not None:
                if not float(value) > 0:
                    raise ValueError(f"CVSpec.{name}: expected a time > 0 (ps) or None, found {value!r}")
                set_(name, float(value))
        if self.cv_range_training is not None:
            ranges = tuple((float(lo), float(hi)) for lo, hi in self.cv_range_training)
            if len(ranges) != self.n_cvs or any(not lo <= hi for lo, hi in ranges):
                raise ValueError(f"CVSpec.cv_range_training: expected {self.n_cvs} (min, max) pairs with min <= max, "
                                 f"found {self.cv_range_training!r}")
            set_("cv_range_training", ranges)
        periods = (None,) * self.n_cvs if self.component_periods is None else tuple(
            None if p is None else float(p) for p in self.component_periods)
        if len(periods) != self.n_cvs or any(p is not None and not p > 0 for p in periods):
            raise ValueError(f"CVSpec.component_periods: expected {self.n_cvs} entries, each a period > 0 or None, "
                             f"found {self.component_periods!r}")
        set_("component_periods", periods)
        set_("periodic", bool(self.periodic))
        if self.bonds is not None:
            bonds = tuple((int(a), int(b)) for a, b in self.bonds)
            if not self.periodic or any(not (0 <= a < n and 0 <= b < n) or a == b for a, b in bonds):
                raise ValueError(f"CVSpec.bonds: expected pairs of distinct positions in [0, {n}) on a periodic CV, "
                                 f"found {self.bonds!r} (periodic={self.periodic})")
            set_("bonds", bonds)
        set_("dense_et", tuple(str(s) for s in self.dense_et))
        for name in ("featurizer_config", "versions", "units", "extra"):
            set_(name, _plain(name, getattr(self, name)))
        set_("format", int(self.format))

    @property
    def lagtime_frames(self) -> Optional[int]:
        """The lag in training frames (None when either time is unknown)."""
        if self.lagtime_ps is None or self.frame_interval_ps is None:
            return None
        return int(round(self.lagtime_ps / self.frame_interval_ps))

    def to_json(self) -> str:
        """The contract as JSON (the ``cvlearn.json`` inside the file)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "CVSpec") -> "CVSpec":
        """Parse :meth:`to_json` output; ``source`` (e.g. the file) names what failed in the error.

        Raises
        ------
        ValueError
            The JSON predates the contract (no ``format``), has another format, or misses/adds fields.
        """
        return cls.from_dict(json.loads(text), source)

    @classmethod
    def from_dict(cls, data: dict, source: str = "CVSpec") -> "CVSpec":
        """The contract from its parsed JSON (see :meth:`from_json`)."""
        if not isinstance(data, dict) or "format" not in data:
            raise ValueError(f"{source} predates the typed CV contract (CVSpec format {CV_SPEC_FORMAT}): re-export the "
                             "trained model with cvlearn.export.export_cv")
        if data["format"] != CV_SPEC_FORMAT:
            raise ValueError(f"{source}: expected CVSpec format {CV_SPEC_FORMAT}, found {data['format']!r}; export it "
                             "again with this cvlearn, or load it with the cvlearn that wrote it")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = sorted(set(data) - names), sorted(
            f.name for f in dataclasses.fields(cls) if f.name not in data
            and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        if unknown or missing:
            raise ValueError(f"{source}: CVSpec fields differ (unknown {unknown}, missing {missing})")
        return cls(**data)


def package_versions() -> dict[str, Any]:
    """cvlearn's and torch's versions, and OpenMM's where it is importable (cvlearn does not need it).

    Recorded in an export's spec so a CV file says what produced it.

    Returns
    -------
    dict of str to str
        ``{"cvlearn": ..., "torch": ...}``, plus ``"openmm"`` when OpenMM imports.
    """
    import torch

    import cvlearn

    versions = {"cvlearn": str(cvlearn.__version__), "torch": str(torch.__version__)}
    try:
        import openmm
    except ImportError:
        return versions
    versions["openmm"] = str(openmm.__version__)
    return versions


def _model_selection(model, n_selected: int) -> tuple[Optional[list], Optional[list]]:
    """Elements and residue map of the selected atoms as the model's featurizer and tokens record them."""
    from cvlearn.nn.featurizers.base import FeaturizerBase
    from cvlearn.nn.tokens import ResidueTokens
    from cvlearn.nn.windows import WindowTokens

    z = residues = None
    inside_window = set()  # a window embedder's featurizer holds one window's elements, not the selection's
    for module in model.modules():
        if id(module) in inside_window:
            continue
        if isinstance(module, WindowTokens):
            inside_window.update(id(m) for m in module.modules() if m is not module)
            z = module.atomic_numbers.tolist() if z is None else z
            residues = module.residue_of_atom.tolist() if residues is None else residues
        elif isinstance(module, FeaturizerBase) and module.n_atoms == n_selected and z is None:
            z = module.atomic_numbers.tolist()
        elif isinstance(module, ResidueTokens) and module.index.numel() == n_selected and residues is None:
            residues = module.index.tolist()
    return z, residues


def selection_of(model, atom_indices, topology, atomic_numbers, residue_of_atom) -> tuple[list, list]:
    """Elements and residue map of the selected atoms: given > topology > model; elements must agree.

    Parameters
    ----------
    model : torch.nn.Module
        The CV model; its featurizer / token modules may record elements and residues.
    atom_indices : sequence of int
        The ``n_selected`` atoms the CV reads.
    topology : mdtraj.Topology or openmm.app.Topology or None
        Source of elements and residues of ``atom_indices``.
    atomic_numbers, residue_of_atom : sequence of int or None
        Explicit values, ``[n_selected]`` each; take precedence.

    Returns
    -------
    atomic_numbers, residue_of_atom : list of int
        ``[n_selected]`` each, from the first source that knows them.

    Raises
    ------
    ValueError
        Sources disagree on the elements, or nothing knows them (pass ``topology=``).
    """
    n = len(atom_indices)
    model_z, model_residues = _model_selection(model, n)
    top_z = top_residues = None
    if topology is not None:
        from cvlearn.data.selection import atomic_numbers as elements_of, residue_index_of_atoms

        top_z, top_residues = elements_of(topology, atom_indices), residue_index_of_atoms(topology, atom_indices)
    out = []
    for name, sources in (("atomic_numbers", [("argument", atomic_numbers), ("topology", top_z), ("model", model_z)]),
                          ("residue_of_atom", [("argument", residue_of_atom), ("topology", top_residues),
                                               ("model", model_residues)])):
        known = [(source, [int(v) for v in values]) for source, values in sources if values is not None]
        if not known:
            raise ValueError(f"export_cv: {name} of the {n} selected atoms are unknown (the model has no featurizer "
                             f"or tokens that record them): pass topology= or {name}=")
        first_source, first = known[0]
        for source, values in known:
            if len(values) != n:
                raise ValueError(f"export_cv: {name} from the {source}: expected {n} entries (one per selected "
                                 f"atom), found {len(values)}")
            if name == "atomic_numbers" and values != first:
                raise ValueError(f"export_cv: atomic_numbers from the {first_source} {first} differ from the "
                                 f"{source}'s {values}")
        out.append(first)
    return out[0], out[1]


def featurizer_identity(model, checkpoint=None) -> tuple[str, dict, str]:
    """Architecture name, architecture settings and SHA-256 of the model's featurizer (the model without one).

    The weights' hash covers the representation network only (``gnn``), so a window embedder's resized copy and
    the featurizer it was made from hash alike; a ``checkpoint`` file, when given, is hashed instead.

    Parameters
    ----------
    model : torch.nn.Module
        The CV model; its first :class:`FeaturizerBase` submodule is described.
    checkpoint : str or Path, optional
        Weights file whose SHA-256 replaces the weights' hash.

    Returns
    -------
    architecture : str
        Class name of the featurizer (or of the lobe / model when there is none).
    config : dict
        Architecture settings (empty without a featurizer).
    digest : str
        Hex SHA-256.
    """
    from cvlearn.data.store import weights_sha256
    from cvlearn.io import file_sha256
    from cvlearn.models.cv import VAMPModel
    from cvlearn.nn.featurizers.base import FeaturizerBase

    featurizers = [m for m in model.modules() if isinstance(m, FeaturizerBase)]
    if featurizers:
        featurizer = featurizers[0]
        architecture = type(featurizer).__name__
        settings = featurizer.config
        config = settings.as_dict() if hasattr(settings, "as_dict") else (
            dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else {})
        digest = weights_sha256(getattr(featurizer, "gnn", featurizer))
    else:
        architecture = type(model.lobe if isinstance(model, VAMPModel) else model).__name__
        config, digest = {}, weights_sha256(model)
    if checkpoint is not None:
        digest = file_sha256(checkpoint)
    return architecture, config, digest


def lag_times(model, lagtime_ps, frame_interval_ps) -> tuple[Optional[float], Optional[float]]:
    """``(lagtime_ps, frame_interval_ps)`` with the model's lag in frames (``model.lagtime``) reconciled.

    Parameters
    ----------
    model : torch.nn.Module
        The CV model; an ``int`` ``lagtime`` attribute (frames) marks it as lagged.
    lagtime_ps, frame_interval_ps : float or None
        Lag time and time between training frames, ps; one is derived from the other when missing.

    Returns
    -------
    lagtime_ps, frame_interval_ps : float or None
        Both in ps (unchanged, possibly None, for a model without a lag in frames).

    Raises
    ------
    ValueError
        A lagged model without either time, a time <= 0, or times that disagree with the lag in frames.
    """
    for name, value in (("lagtime_ps", lagtime_ps), ("frame_interval_ps", frame_interval_ps)):
        if value is not None and not float(value) > 0:
            raise ValueError(f"export_cv: {name}: expected a time > 0 (ps), found {value!r}")
    frames = getattr(model, "lagtime", None)
    if not isinstance(frames, int) or isinstance(frames, bool):
        return lagtime_ps, frame_interval_ps
    if lagtime_ps is None and frame_interval_ps is None:
        raise ValueError(f"export_cv: the model was fitted at a lag of {frames} frames: pass frame_interval_ps= "
                         "(ps between training frames) or lagtime_ps=")
    if frame_interval_ps is None:
        return float(lagtime_ps), float(lagtime_ps) / frames
    if lagtime_ps is None:
        return frames * float(frame_interval_ps), float(frame_interval_ps)
    if abs(float(lagtime_ps) - frames * float(frame_interval_ps)) > 1e-9 * float(lagtime_ps):
        raise ValueError(f"export_cv: lagtime_ps={lagtime_ps} differs from the model's {frames} frames x "
                         f"frame_interval_ps={frame_interval_ps}")
    return float(lagtime_ps), float(frame_interval_ps)
