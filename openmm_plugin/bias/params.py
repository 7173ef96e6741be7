"""The parameters of each bias method, and the one function that turns them and a CV's contract into a bias.

:func:`make_bias` serves both the one-call API (:func:`openmm_plugin.bias.setup.bias_cv`) and ``cvlearn bias``,
so a config file and Python keyword arguments mean the same thing. What the caller leaves out comes from the CV's
contract (:class:`cvlearn.export.CVSpec`): the period of each biased component (a torsion CV gets periodic
kernels) and the metadynamics grid (the training range plus a margin), because a bias that disagrees with the
CV it acts on (kernels that do not wrap at ±π, a grid that misses the states) fails silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from cvlearn.errors import ConfigError
from openmm_plugin.bias.base import BiasSum, OnComponents
from openmm_plugin.bias.metad import Metadynamics
from openmm_plugin.bias.opes import OPES
from openmm_plugin.bias.restraints import HarmonicRestraint, Wall

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "MetadParams", "OPESParams", "RestraintParams", "WallParams", "make_bias", "params_class",
           "resolve_periods"]

METHODS = ("metad", "opes-metad", "opes-explore", "restraint", "walls")
DEFAULT_WALL_KAPPA_KJMOL = 100.0  # per CV unit², for walls placed at the training range


@dataclass(frozen=True)
class MetadParams:
    """Well-tempered metadynamics (:class:`openmm_plugin.bias.Metadynamics`): widths and bounds in CV units,
    ``pace_steps`` in MD steps, ``grid_bins`` per CV (PLUMED: PACE, GRID_BIN). ``lower``/``upper`` left None
    come from the CV's training range widened by ``range_margin_fraction`` (one period along periodic CVs)."""

    sigma: tuple[float, ...] = (0.1,)  # one value is broadcast to every biased component
    height_kjmol: float = 1.2
    bias_factor: Optional[float] = 8.0
    pace_steps: int = 500
    lower: Optional[tuple[float, ...]] = None
    upper: Optional[tuple[float, ...]] = None
    grid_bins: Optional[tuple[int, ...]] = None
    use_grid: bool = True

    def __post_init__(self):
        check_positive(self, "height_kjmol", "pace_steps", "sigma", "grid_bins")
        if self.bias_factor is not None and not self.bias_factor > 1:
            raise ValueError(f"bias_factor: expected > 1 (or null for plain metadynamics), found {self.bias_factor!r}")


@dataclass(frozen=True)
class OPESParams:
    """OPES (:class:`openmm_plugin.bias.OPES`): ``sigma`` in CV units, ``pace_steps`` in MD steps.

    ``sigma: adaptive`` estimates the kernel widths from the CV's fluctuations over the first
    ``adaptive_sigma_stride`` MD steps (default 10 paces; PLUMED's ``SIGMA=ADAPTIVE``/``ADAPTIVE_SIGMA_STRIDE``): the
    choice for a learned CV whose natural scale nobody knows beforehand. ``sigma_min`` floors the widths; without it,
    on a CV file with a training range, the floor is ``sigma_min_fraction`` of each biased component's range (null:
    no floor, as PLUMED). A VAMP CV is nearly flat inside a basin, so its in-basin spread alone makes kernels narrow
    and the bias force huge where the CV is steep: OPES-explore on an ala2 CV with adaptive σ and no floor shrank σ to
    0.08 (range 7) and had bias forces up to 2e4 kJ/mol/nm, capped by a 1000 kJ/mol/nm guard at 46 % of the steps.

    ``kernel_cutoff`` (in σ, PLUMED's ``KERNEL_CUTOFF``) defaults to 15, not PLUMED's sqrt(2ΔE/(kT(1 − 1/γ))) (5.1 at
    30 kJ/mol, 300 K): at a truncated kernel's edge dV/ds jumps (by 680-905 kJ/mol per CV unit in the ala2 walkers of
    ``benchmarks/results/blowup.md``), and through a learned CV's steep gradient (~180 /nm there) that is a force step
    of ~1e5 kJ/mol/nm which no time step integrates: it heated 8 of 10 reruns and blew 3 up, against 0 blow-ups with
    untruncated kernels. ``kernel_cutoff: plumed`` restores PLUMED's value."""

    sigma: Union[tuple[float, ...], str] = (0.1,)  # widths (one value is broadcast), or "adaptive"
    barrier_kjmol: float = 30.0
    bias_factor: Optional[float] = None
    pace_steps: int = 500
    compression_threshold: float = 1.0
    fixed_sigma: bool = False
    adaptive_sigma_stride: Optional[int] = None  # MD steps; adaptive sigma only (default 10 * pace_steps)
    sigma_min: Optional[tuple[float, ...]] = None
    sigma_min_fraction: Optional[float] = 0.05  # adaptive sigma without sigma_min: floor = fraction of the range
    kernel_cutoff: Union[float, str] = 15.0  # in sigma; "plumed": PLUMED's sqrt(2 barrier / (kT (1 - 1/gamma)))

    @property
    def adaptive(self) -> bool:
        return isinstance(self.sigma, str)

    def __post_init__(self):
        if self.adaptive and self.sigma != "adaptive":
            raise ValueError(f"sigma: expected kernel widths or 'adaptive', found {self.sigma!r}")
        if not self.adaptive and self.adaptive_sigma_stride is not None:
            raise ValueError(f"adaptive_sigma_stride: needs sigma: adaptive (as PLUMED), found sigma {self.sigma!r}")
        if self.adaptive_sigma_stride is not None and self.adaptive_sigma_stride < self.pace_steps:
            raise ValueError(f"adaptive_sigma_stride: expected >= pace_steps ({self.pace_steps}), found "
                             f"{self.adaptive_sigma_stride}")
        check_positive(self, "barrier_kjmol", "pace_steps", "adaptive_sigma_stride", "sigma_min", "sigma_min_fraction",
                       *(() if self.adaptive else ("sigma",)))
        if self.bias_factor is not None and not self.bias_factor > 1:
            raise ValueError(f"bias_factor: expected > 1 (or null for the default βΔE), found {self.bias_factor!r}")
        if isinstance(self.kernel_cutoff, str) and self.kernel_cutoff != "plumed":
            raise ValueError(f"kernel_cutoff: expected a number of sigmas or 'plumed', found {self.kernel_cutoff!r}")
        if not isinstance(self.kernel_cutoff, str) and not self.kernel_cutoff > 0:
            raise ValueError(f"kernel_cutoff: expected a positive number of sigmas or 'plumed', "
                             f"found {self.kernel_cutoff!r}")


@dataclass(frozen=True)
class RestraintParams:
    """Harmonic restraint (umbrella window): ``center`` in CV units, ``kappa_kjmol`` per CV unit²."""

    center: tuple[float, ...] = (0.0,)
    kappa_kjmol: tuple[float, ...] = (100.0,)

    def __post_init__(self):
        if any(not k >= 0 for k in self.kappa_kjmol):
            raise ValueError(f"kappa_kjmol: expected force constants >= 0, found {self.kappa_kjmol!r}")


@dataclass(frozen=True)
class WallParams:
    """PLUMED-style upper/lower walls at ``*_at`` (CV units), force constants kJ/mol per CV unit^exp.

    A kappa of 0 leaves that wall out; None means 0, or 100 when the walls are placed at the training range
    (``walls_at_training_range``)."""

    upper_at: Optional[tuple[float, ...]] = None
    upper_kappa_kjmol: Optional[float] = None
    lower_at: Optional[tuple[float, ...]] = None
    lower_kappa_kjmol: Optional[float] = None
    exp: float = 2.0

    def __post_init__(self):
        for name in ("upper_kappa_kjmol", "lower_kappa_kjmol"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ValueError(f"{name}: expected a force constant >= 0, found {value!r}")
        check_positive(self, "exp")


def params_class(method: str) -> type | None:
    """The parameter dataclass of ``method`` (None for ``walls``, which has only :class:`WallParams`)."""
    if method not in METHODS:
        raise ConfigError(f"expected one of {METHODS}, found {method!r}", key="method")
    return {"metad": MetadParams, "restraint": RestraintParams, "walls": None}.get(method, OPESParams)


def check_positive(config, *names: str) -> None:
    """Each named field (a number, or a tuple of numbers, or None) is > 0; NaN fails too."""
    for name in names:
        value = getattr(config, name)
        if value is not None and any(isinstance(v, bool) or not v > 0 for v in np.atleast_1d(value).tolist()):
            expected = "values > 0" if isinstance(value, tuple) else "an integer >= 1" if isinstance(value, int) \
                else "a value > 0"
            raise ValueError(f"{name}: expected {expected}, found {value!r}")


def per_cv(values, d: int, key: str) -> list:
    """One value per biased component: a single value is broadcast to all ``d``; another length names ``key``."""
    values = np.atleast_1d(values).tolist()
    if len(values) == 1:
        return values * d
    if len(values) != d:
        raise ConfigError(f"expected 1 or {d} values (one per biased CV component), found {len(values)}: {values}",
                          key=key)
    return values


def resolve_periods(periods, components: Sequence[int], spec=None, cv_label: str = "the CV") -> list[float]:
    """Per biased component, the period (0: not periodic): the caller's, else the CV contract's.

    A caller's period that differs from the contract's is kept, with a warning naming both.

    Parameters
    ----------
    periods : None, float or sequence of (float or None)
        The caller's periods of the biased components (None: take them from ``spec``).
    components : sequence of int
        The biased CV components.
    spec : cvlearn.export.CVSpec, optional
        The CV's contract (``component_periods``).
    cv_label : str
        The CV file, for the warning.

    Returns
    -------
    list of float
        ``[len(components)]`` periods in CV units, 0 where not periodic.
    """
    contract = [float((spec.component_periods[c] if spec is not None else None) or 0.0) for c in components]
    if periods is None:
        return contract
    given = [float(p or 0.0) for p in per_cv(periods, len(components), "periods")]
    if spec is not None and not np.allclose(given, contract, rtol=1e-9, atol=1e-12):
        logger.warning("periods: the config gives %s for components %s, the CV file %s says %s; using the config's",
                       given, list(components), cv_label, contract)
    return given


def _training_range(spec, components, key: str, cv_label: str) -> np.ndarray:
    """``[d, 2]`` training (min, max) of the biased components, or :class:`ConfigError` naming ``key``."""
    if spec is None or spec.cv_range_training is None:
        raise ConfigError(f"expected values, or a CV file whose contract has a training range "
                          f"(CVSpec.cv_range_training); {cv_label} has none", key=key)
    return np.asarray([spec.cv_range_training[c] for c in components], dtype=np.float64)


def _opes_sigma_min(p: OPESParams, components, spec, d: int):
    """``sigma_min`` as given; else, for adaptive σ on a CV file with a training range, ``sigma_min_fraction`` of
    each component's range; else None."""
    if p.sigma_min is not None:
        return per_cv(p.sigma_min, d, "opes.sigma_min")
    if not p.adaptive or p.sigma_min_fraction is None or spec is None or spec.cv_range_training is None:
        return None
    ranges = _training_range(spec, components, "opes.sigma_min", "the CV")
    return (p.sigma_min_fraction * (ranges[:, 1] - ranges[:, 0])).tolist()


def _grid_bounds(p: MetadParams, components, periods, spec, margin: float, cv_label: str) -> tuple[list, list]:
    """Metadynamics bounds: the caller's, else the training range ± margin (one period along periodic CVs)."""
    d = len(components)
    lower = None if p.lower is None else per_cv(p.lower, d, "metad.lower")
    upper = None if p.upper is None else per_cv(p.upper, d, "metad.upper")
    if lower is not None and upper is not None:
        return lower, upper
    needs_range = [i for i in range(d) if periods[i] == 0]
    ranges = _training_range(spec, components, "metad.lower" if lower is None else "metad.upper", cv_label) \
        if needs_range or (spec is not None and spec.cv_range_training is not None) else None
    lo_default, hi_default = [], []
    for i in range(d):
        if periods[i] > 0:  # the grid spans one period, from the range's start (or centred on 0)
            start = float(ranges[i, 0]) if ranges is not None else -periods[i] / 2
            lo_default.append(start)
            hi_default.append(start + periods[i])
        else:
            width = float(ranges[i, 1] - ranges[i, 0])
            lo_default.append(float(ranges[i, 0]) - margin * width)
            hi_default.append(float(ranges[i, 1]) + margin * width)
    return lower if lower is not None else lo_default, upper if upper is not None else hi_default


def _walls(w: WallParams, components, periods, spec, margin: float, at_training_range: bool | None,
           cv_label: str) -> list:
    d = len(components)
    upper_at = None if w.upper_at is None else per_cv(w.upper_at, d, "walls.upper_at")
    lower_at = None if w.lower_at is None else per_cv(w.lower_at, d, "walls.lower_at")
    upper_kappa = [float(w.upper_kappa_kjmol or 0.0)] * d
    lower_kappa = [float(w.lower_kappa_kjmol or 0.0)] * d
    if at_training_range is None:  # auto: a learned CV is trusted only where it was trained
        at_training_range = (spec is not None and spec.cv_range_training is not None and upper_at is None
                             and lower_at is None)
    if at_training_range:
        if upper_at is not None or lower_at is not None:
            raise ConfigError("expected either walls.upper_at/lower_at or walls_at_training_range, found both",
                              key="walls_at_training_range")
        open_axes = [i for i in range(d) if periods[i] == 0]  # a wall on a periodic CV means nothing
        ranges = _training_range(spec, components, "walls_at_training_range", cv_label)
        width = ranges[:, 1] - ranges[:, 0]
        upper_at, lower_at = (ranges[:, 1] + margin * width).tolist(), (ranges[:, 0] - margin * width).tolist()
        default = [DEFAULT_WALL_KAPPA_KJMOL if i in open_axes else 0.0 for i in range(d)]
        upper_kappa = default if w.upper_kappa_kjmol is None else [w.upper_kappa_kjmol if i in open_axes else 0.0
                                                                   for i in range(d)]
        lower_kappa = default if w.lower_kappa_kjmol is None else [w.lower_kappa_kjmol if i in open_axes else 0.0
                                                                   for i in range(d)]
    terms = []
    if upper_at is not None and max(upper_kappa) > 0:
        terms.append(Wall(upper_at, upper_kappa, side="upper", exp=w.exp))
    if lower_at is not None and max(lower_kappa) > 0:
        terms.append(Wall(lower_at, lower_kappa, side="lower", exp=w.exp))
    return terms


def make_bias(method: str, n_cvs: int, *, temperature_k: float, params=None, walls: WallParams | None = None,
              components: Sequence[int] | None = None, periods=None, spec=None, range_margin_fraction: float = 0.3,
              walls_at_training_range: bool | None = False, pace_divisor: int = 1, cv_label: str = "the CV"):
    """The bias of ``method`` on the ``components`` of an ``n_cvs``-dimensional CV, defaults from its contract.

    Parameters
    ----------
    method : {"metad", "opes-metad", "opes-explore", "restraint", "walls"}
    n_cvs : int
        Dimension of the CV.
    temperature_k : float
        Temperature, K.
    params : MetadParams, OPESParams or RestraintParams, optional
        The method's parameters (default: that class's defaults; none for ``walls``).
    walls : WallParams, optional
        Walls added to any method.
    components : sequence of int, optional
        CV components the bias and walls act on (default: all).
    periods : None, float or sequence of (float or None), optional
        Per biased component; None takes ``spec.component_periods`` (a mismatch with the spec is warned about).
    spec : cvlearn.export.CVSpec, optional
        The CV's contract: periods, and the training range for metadynamics bounds and walls.
    range_margin_fraction : float
        Margin added on each side of the training range, as a fraction of its width (per component).
    walls_at_training_range : bool or None
        Put upper/lower walls at the training range ± margin on the non-periodic biased components; None: do so
        when ``spec`` carries a training range and ``walls`` places no wall itself (``cvlearn bias``'s default).
    pace_divisor : int
        The MTS factor: paces are MD steps, the runner counts outer steps.
    cv_label : str
        The CV file, for messages.

    Returns
    -------
    Bias
        One bias, or a :class:`BiasSum` (method + walls), on the biased components.
    """
    expected = params_class(method)
    params = expected() if params is None and expected is not None else params
    if expected is not None and not isinstance(params, expected):
        raise ConfigError(f"expected {expected.__name__} for method {method!r}, found {type(params).__name__}",
                          key="params")
    if components is not None and any(c >= n_cvs for c in components):
        raise ConfigError(f"expected component indices in [0, {n_cvs}) of this {n_cvs}-dimensional CV "
                          f"({cv_label}), found {list(components)}", key="components")
    components = list(range(n_cvs)) if components is None else [int(c) for c in components]
    d = len(components)
    periods = resolve_periods(periods, components, spec, cv_label)
    margin = float(range_margin_fraction)
    terms = []
    if method == "metad":
        p = params
        if p.pace_steps % pace_divisor:
            raise ConfigError(f"expected a multiple of mts_substeps={pace_divisor}, found {p.pace_steps}",
                              key="metad.pace_steps")
        sigma = per_cv(p.sigma, d, "metad.sigma")
        lower, upper = _grid_bounds(p, components, periods, spec, margin, cv_label)
        terms.append(Metadynamics(sigma=sigma, height_kjmol=p.height_kjmol,
                                  pace_steps=p.pace_steps // pace_divisor, temperature_k=temperature_k,
                                  bias_factor=p.bias_factor, lower=lower, upper=upper, periods=periods,
                                  grid_bins=None if p.grid_bins is None else per_cv(p.grid_bins, d, "metad.grid_bins"),
                                  use_grid=p.use_grid))
    elif method in ("opes-metad", "opes-explore"):
        p = params
        if p.pace_steps % pace_divisor:
            raise ConfigError(f"expected a multiple of mts_substeps={pace_divisor}, found {p.pace_steps}",
                              key="opes.pace_steps")
        if p.adaptive_sigma_stride is not None and p.adaptive_sigma_stride % pace_divisor:
            raise ConfigError(f"expected a multiple of mts_substeps={pace_divisor}, found {p.adaptive_sigma_stride}",
                              key="opes.adaptive_sigma_stride")
        terms.append(OPES(sigma="adaptive" if p.adaptive else per_cv(p.sigma, d, "opes.sigma"),
                          barrier_kjmol=p.barrier_kjmol, pace_steps=p.pace_steps // pace_divisor,
                          temperature_k=temperature_k, bias_factor=p.bias_factor, explore=method == "opes-explore",
                          periods=periods, compression_threshold=p.compression_threshold, fixed_sigma=p.fixed_sigma,
                          adaptive_sigma_stride=None if p.adaptive_sigma_stride is None
                          else p.adaptive_sigma_stride // pace_divisor, n_cvs=d,
                          sigma_min=_opes_sigma_min(p, components, spec, d),
                          kernel_cutoff=None if p.kernel_cutoff == "plumed" else float(p.kernel_cutoff)))
    elif method == "restraint":
        terms.append(HarmonicRestraint(per_cv(params.center, d, "restraint.center"),
                                       per_cv(params.kappa_kjmol, d, "restraint.kappa_kjmol"), periods=periods))
    terms += _walls(walls or WallParams(), components, periods, spec, margin, walls_at_training_range, cv_label)
    if not terms:
        raise ConfigError(f"nothing to bias for method {method!r} (for 'walls' give walls.upper_at/lower_at and "
                          "kappas, or walls_at_training_range)", key="method")
    if components != list(range(n_cvs)):
        terms = [OnComponents(t, components, n_cvs) for t in terms]
    return terms[0] if len(terms) == 1 else BiasSum(terms)
