"""Classic CVs at native speed: the bias as a tabulated function of OpenMM-native CVs in a ``CustomCVForce``.

A φ/ψ torsion, a distance or any ``CustomCVForce`` expression is computed by OpenMM itself; going through
the PythonForce route costs a Python call per step (~1 ms on ala2 vs ~0.04 ms unbiased). Here, as
``openmm.app.Metadynamics`` does, the bias lives in a ``Continuous{1,2,3}DFunction`` table inside a
``CustomCVForce`` whose collective variables are the CV forces; the table is recomputed from the *same* Bias
object (``bias.energy_on_grid``) at each deposition and pushed with ``updateParametersInContext``. Depositions,
restart, walkers and the COLVAR stay with :class:`BiasRunner` / :class:`BiasReporter`, which read the CV
values with ``getCollectiveVariableValues`` once per deposition or report, never per step.

Interpolation error: OpenMM interpolates the table with (periodic or natural) cubic splines, error
<= (5/384) Δ⁴ max|V⁗| for spacing Δ, i.e. <= 0.04 (Δ/σ)⁴ Σh for Gaussians of width σ and summed height Σh.
Measured (``tests/openmm_plugin/bias/test_native.py``, 60 metad hills of 1 kJ/mol, σ = 0.05): max error
0.04 kJ/mol at Δ = σ, 1.4e-3 kJ/mol at Δ = σ/2 (fourth order). OPES's kernels are truncated at KERNEL_CUTOFF
(as PLUMED), so dV/ds jumps at their edges and there the error is O(Δ |dV/ds|) (0.2 kJ/mol at Δ = σ/2.3 in
the test; median 2e-5 kJ/mol). Size the grid for the smallest σ: OPES kernels shrink as neff^(-1/(4+d)), so
set OPES's ``sigma_min`` (PLUMED's SIGMA_MIN) to about 2Δ. Along non-periodic CVs the argument is clamped to
[lower, upper]: beyond the grid the bias is constant (zero force); put walls inside the grid.
Cost (ala2, Reference, ``benchmarks/bias_speed.py --native-only``): OPES on φ/ψ, 128² table, deposition every
500 steps: 1.45x unbiased MD (best of 3 on 2 shared CPUs; the table refresh, 5-40 ms, dominates), 7.9x faster
than the PythonForce route.
The Bias's own (exact) energy is what deposits and the COLVAR use; the Context runs on the table.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import openmm
import openmm.unit as unit

_TABLE = "cvlearn_bias_table"
MIN_GRID_BINS = 4  # fewest points per table axis: the one bound, checked here and by a bias config
_CLASSES = {1: openmm.Continuous1DFunction, 2: openmm.Continuous2DFunction, 3: openmm.Continuous3DFunction}


class NativeBiasForce:
    """A ``CustomCVForce`` = tabulated ``bias`` of OpenMM-native CV forces, refreshed from the Bias object.

    It is also the CV "evaluator" of :class:`BiasRunner` and :class:`BiasReporter` (``n_cvs``,
    :meth:`values_from_context`).

    Parameters
    ----------
    cv_forces : sequence of openmm.Force
        ``n_cvs`` (1-3) forces whose energies are the CVs (e.g. ``CustomTorsionForce("theta")``,
        ``CustomBondForce("r")``, a ``CustomCVForce`` expression). They become owned by this force.
    bias
        The bias on the ``n_cvs`` CVs (Metadynamics, OPES, BiasSum, walls, ...), providing ``energy_on_grid``.
    grid_bins : int or sequence of int
        Bins per CV (periodic: that many points on one period; otherwise bins + 1 points on [lower, upper]).
    lower, upper : sequence of float
        ``[n_cvs]`` grid bounds, CV units (periodic CVs: one period, e.g. -π, π).
    periodic : bool
        All CVs periodic with period ``upper - lower`` (OpenMM's tables take one flag for all axes).
    force_group : int, optional
        OpenMM force group of the bias force.
    cv_names : sequence of str, optional
        Names of the CVs in the force's expression and the COLVAR (default ``cv0``, ``cv1``, ...).
    """

    def __init__(self, cv_forces: Sequence[openmm.Force], bias, grid_bins, lower, upper, periodic: bool,
                 *, force_group: int | None = None, cv_names: Sequence[str] | None = None):
        cv_forces = list(cv_forces)
        n = len(cv_forces)
        if n not in _CLASSES:
            raise ValueError(f"cv_forces: expected 1 to 3 CV forces (OpenMM tables have at most 3 axes), found {n}")
        if bias.n_cvs != n:
            raise ValueError(f"bias {bias.label!r} acts on {bias.n_cvs} CVs but {n} CV forces were given")
        if not isinstance(periodic, (bool, np.bool_)):
            raise ValueError(f"periodic: expected one bool for all CVs (OpenMM tables are all-periodic or not), "
                             f"found {periodic!r}")
        self.lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), (n,)).copy()
        self.upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), (n,)).copy()
        bins = np.broadcast_to(np.asarray(grid_bins), (n,))
        if np.any(self.upper <= self.lower) or not np.all(np.isfinite(np.r_[self.lower, self.upper])):
            raise ValueError(f"lower, upper: expected finite bounds with upper > lower, found {self.lower}, {self.upper}")
        if np.any(bins != np.round(bins)) or np.any(bins < MIN_GRID_BINS):
            raise ValueError(f"grid_bins: expected integers >= {MIN_GRID_BINS}, found {np.asarray(grid_bins).tolist()}")
        self.bins = bins.astype(int)
        self.periodic = bool(periodic)
        self._check_periods(bias)
        self.bias = bias
        self.n_cvs = n
        self.cv_names = list(cv_names) if cv_names is not None else [f"cv{i}" for i in range(n)]
        if len(self.cv_names) != n or len(set(self.cv_names)) != n:
            raise ValueError(f"cv_names: expected {n} distinct names, found {self.cv_names}")
        # Periodic: points on [lower, upper) (the table repeats the first at upper); else bins + 1 on [lower, upper].
        self.axes = [np.linspace(lo, hi, b, endpoint=False) if self.periodic else np.linspace(lo, hi, b + 1)
                     for lo, hi, b in zip(self.lower, self.upper, self.bins)]
        self.spacing = (self.upper - self.lower) / self.bins
        args = self.cv_names if self.periodic else [f"min(max({c}, {float(lo)!r}), {float(hi)!r})"
                                                    for c, lo, hi in zip(self.cv_names, self.lower, self.upper)]
        self.force = openmm.CustomCVForce(f"{_TABLE}({', '.join(args)})")
        for name, f in zip(self.cv_names, cv_forces):
            self.force.addCollectiveVariable(name, f)
        self._static = {}  # grids of static leaves, computed once
        values = self.table_values()
        self.table = _CLASSES[n](*self._table_args(values), self.periodic)
        self.force.addTabulatedFunction(_TABLE, self.table)
        self.force.setName(f"cvlearn native bias {bias.label}")
        if force_group is not None:
            self.force.setForceGroup(int(force_group))
        self.force_group = self.force.getForceGroup()
        self.refreshes = 0
        self.calls = 0  # CV reads from the Context
        self.index: int | None = None

    def _check_periods(self, bias) -> None:
        for leaf in bias.leaves():
            periods = getattr(leaf, "periods", None)
            if periods is None:
                continue
            periods = np.asarray(periods, dtype=np.float64)
            expected = (self.upper - self.lower) if self.periodic else np.zeros_like(self.lower)
            if periods.shape != expected.shape or not np.allclose(periods, expected, rtol=1e-9, atol=0):
                raise ValueError(f"bias {leaf.label!r} has periods {periods.tolist()} but the native grid is "
                                 f"{'periodic with periods ' + str(expected.tolist()) if self.periodic else 'not periodic'}")

    # --- the table -----------------------------------------------------------------------------------
    def table_values(self) -> np.ndarray:
        """V on the grid, ``[n_points_0, n_points_1, ...]`` kJ/mol (periodic axes: first point repeated at the end)."""
        total = np.zeros([len(a) for a in self.axes])
        for k, leaf in enumerate(self.bias.leaves()):
            if leaf.adaptive:
                total += leaf.energy_on_grid(self.axes)
            else:
                if k not in self._static:
                    self._static[k] = leaf.energy_on_grid(self.axes)
                total += self._static[k]
        if not np.all(np.isfinite(total)):
            raise FloatingPointError(f"bias {self.bias.label!r} is not finite on the native grid")
        if self.periodic:
            total = np.pad(total, [(0, 1)] * self.n_cvs, mode="wrap")
        return total

    def _table_args(self, values: np.ndarray) -> list:
        flat = values.ravel(order="F")  # OpenMM: x varies fastest
        limits = [x for lo, hi in zip(self.lower, self.upper) for x in (float(lo), float(hi))]
        sizes = [] if self.n_cvs == 1 else list(values.shape)
        return [*sizes, flat.tolist(), *limits]

    def refresh(self, simulation) -> None:
        """Recompute the table from the bias and push it into the running Context (``on_update`` of the runner)."""
        self.table.setFunctionParameters(*self._table_args(self.table_values()))
        self.force.updateParametersInContext(simulation.context)
        self.refreshes += 1

    # --- the System and the CV values ----------------------------------------------------------------
    def add_to(self, system: openmm.System) -> int:
        """Add the force to ``system`` (before the Simulation is created); returns its index."""
        self.index = system.addForce(self.force)
        return self.index

    def check_system(self, system: openmm.System) -> None:
        """Raise ``ValueError`` unless this force is in ``system`` (else the Context runs without the bias)."""
        name = self.force.getName()
        if self.index is None or self.index >= system.getNumForces() or system.getForce(self.index).getName() != name:
            raise ValueError(f"native bias force {name!r} is not in the simulation's System: call add_to(system) "
                             "before creating the Simulation")

    def values_from_context(self, context: openmm.Context) -> np.ndarray:
        """``[n_cvs]`` CV values at the Context's current positions (one OpenMM call)."""
        self.calls += 1
        return np.asarray(self.force.getCollectiveVariableValues(context), dtype=np.float64)

    def energy_kjmol(self, context: openmm.Context) -> float:
        """The tabulated bias energy in the Context (kJ/mol); needs a force group of its own."""
        state = context.getState(getEnergy=True, groups={self.force_group})
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def native_bias_force(cv_forces: Sequence[openmm.Force], bias, grid_bins, lower, upper, periodic: bool,
                      *, force_group: int | None = None, cv_names: Sequence[str] | None = None,
                      system: openmm.System | None = None) -> NativeBiasForce:
    """The bias on OpenMM-native CVs as a tabulated ``CustomCVForce`` (see :class:`NativeBiasForce`).

    Parameters
    ----------
    cv_forces : sequence of openmm.Force
        ``n_cvs`` (1-3) forces whose energies are the CVs.
    bias
        The bias (same objects as the PythonForce route: Metadynamics, OPES, BiasSum, ...).
    grid_bins : int or sequence of int
        Bins per CV; spacing (upper - lower) / bins of about σ_min / 2 or less (module docstring).
    lower, upper : float or sequence of float
        Grid bounds, CV units.
    periodic : bool
        All CVs periodic with period ``upper - lower``.
    force_group : int, optional
        Force group of the bias.
    cv_names : sequence of str, optional
        CV names.
    system : openmm.System, optional
        Add the force to this System now.

    Returns
    -------
    NativeBiasForce
        Give it to ``BiasRunner(bias, native=...)`` and ``BiasReporter(path, bias, native, ...)``.
    """
    native = NativeBiasForce(cv_forces, bias, grid_bins, lower, upper, periodic, force_group=force_group,
                             cv_names=cv_names)
    if system is not None:
        native.add_to(system)
    return native
