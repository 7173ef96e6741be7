"""Well-tempered metadynamics for any number of CVs (Barducci, Bussi & Parrinello, PRL 100, 020603 (2008)).

V(s,t) = Σ_k h_k exp(-½ Σ_i (s_i - c_ki)² / σ_i²), with minimum-image differences along periodic CVs.
Each deposition adds a Gaussian of height h = h0 exp(-V(s)/(k_B ΔT)), ΔT = (γ - 1) T (γ = bias factor;
``bias_factor=None`` gives plain metadynamics). The bias is evaluated exactly from the kernels (default)
or, with ``use_grid=True``, by multilinear interpolation of a grid on which kernels are accumulated
(cost independent of the number of kernels; exact kernels are used outside a non-periodic grid).
The grid also gives c(t) (Tiwary & Parrinello, JPCB 119, 736 (2015)) for reweighting with exp(β(V - c)).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from cvlearn.analysis.reweighting import well_tempered_rct
from cvlearn.units import kt_kjmol
from openmm_plugin.bias.base import AdaptiveBias, as_cv_vector, periods_vector, torch_wrap_difference, wrap_difference


class Metadynamics(AdaptiveBias):
    """Well-tempered metadynamics; state = kernel centres/heights (+ the accumulated grid), float64.

    Parameters
    ----------
    sigma : float or sequence of float
        ``[n_cvs]`` Gaussian widths, CV units.
    height_kjmol : float
        Initial hill height, kJ/mol.
    pace_steps : int
        Steps between depositions (``simulation.currentStep`` units: outer steps with MTS).
    temperature_k : float
        Temperature, K.
    lower, upper : sequence of float
        ``[n_cvs]`` grid bounds, CV units (along periodic CVs, one period).
    bias_factor : float or None
        γ > 1 (well-tempered); None for plain metadynamics.
    periods : None, float or sequence of float or None
        Per-CV period (None or 0: not periodic).
    grid_bins : int or sequence of int, optional
        Bins per CV (default 400, 100, 30 for 1, 2, 3+ CVs).
    use_grid : bool
        Evaluate V by interpolating the grid (exact kernels outside a non-periodic grid).
    label : str
        Prefix of the COLVAR fields (``<label>.bias``, ``<label>.rct``, ``<label>.nker``).
    """

    def __init__(self, *, sigma, height_kjmol: float, pace_steps: int, temperature_k: float,
                 lower, upper, bias_factor: float | None = 10.0, periods=None, grid_bins=None,
                 use_grid: bool = False, label: str = "metad"):
        self.sigma = as_cv_vector("sigma", sigma)
        if np.any(self.sigma <= 0):
            raise ValueError(f"sigma: expected positive kernel widths, found {self.sigma}")
        super().__init__(self.sigma.size, label, pace_steps)
        if height_kjmol <= 0 or temperature_k <= 0:
            raise ValueError(f"{label}: expected height_kjmol > 0 and temperature_k > 0, found {height_kjmol}, {temperature_k}")
        if bias_factor is not None and bias_factor <= 1:
            raise ValueError(f"{label}: bias_factor: expected > 1 (or None for plain metadynamics), found {bias_factor}")
        self.height_kjmol = float(height_kjmol)
        self.temperature_k = float(temperature_k)
        self.bias_factor = None if bias_factor is None else float(bias_factor)
        self.periods = periods_vector(periods, self.n_cvs)
        self.lower = as_cv_vector("lower", lower, self.n_cvs)
        self.upper = as_cv_vector("upper", upper, self.n_cvs)
        if np.any(self.upper <= self.lower):
            raise ValueError(f"{label}: expected upper > lower for every CV, found lower={self.lower}, upper={self.upper}")
        periodic = self.periods > 0
        if np.any(np.abs((self.upper - self.lower)[periodic] - self.periods[periodic]) > 1e-9 * self.periods[periodic]):
            raise ValueError(f"{label}: along periodic CVs upper - lower must equal the period; "
                             f"found lower={self.lower}, upper={self.upper}, periods={self.periods}")
        default_bins = {1: 400, 2: 100}.get(self.n_cvs, 30)
        bins = as_cv_vector("grid_bins", default_bins if grid_bins is None else grid_bins, self.n_cvs).astype(int)
        self.use_grid = bool(use_grid)
        # Periodic axes: bins points on [lower, upper) ; others: bins + 1 points on [lower, upper].
        self.axes = [np.linspace(lo, hi, n, endpoint=not p) if p else np.linspace(lo, hi, n + 1)
                     for lo, hi, n, p in zip(self.lower, self.upper, bins, periodic)]
        self.spacing = np.array([ax[1] - ax[0] for ax in self.axes])
        self.centers = np.zeros((0, self.n_cvs))
        self.heights = np.zeros(0)
        self.grid = np.zeros([len(ax) for ax in self.axes])

    # --- kernels -------------------------------------------------------------------------------------
    def _kernel_sum(self, s: np.ndarray) -> tuple[float, np.ndarray]:
        if not len(self.heights):
            return 0.0, np.zeros(self.n_cvs)
        d = wrap_difference(s[None, :] - self.centers, self.periods) / self.sigma
        g = self.heights * np.exp(-0.5 * np.sum(d * d, axis=1))
        return float(g.sum()), -(g[:, None] * d / self.sigma).sum(axis=0)

    def _inside_grid(self, s: np.ndarray) -> bool:
        open_axes = self.periods == 0
        return bool(np.all((s[open_axes] >= self.lower[open_axes]) & (s[open_axes] <= self.upper[open_axes])))

    def _grid_interpolate(self, s: np.ndarray) -> tuple[float, np.ndarray]:
        """Multilinear interpolation of the grid and its exact gradient inside the cell."""
        index, frac = [], []
        for i, ax in enumerate(self.axes):
            x = (s[i] - self.lower[i]) / self.spacing[i]
            if self.periods[i] > 0:
                x = x % len(ax)
                lo = int(np.floor(x))
                index.append((lo % len(ax), (lo + 1) % len(ax)))
            else:
                lo = min(max(int(np.floor(x)), 0), len(ax) - 2)
                index.append((lo, lo + 1))
            frac.append(x - lo)
        value, grad = 0.0, np.zeros(self.n_cvs)
        for corner in itertools.product((0, 1), repeat=self.n_cvs):
            v = self.grid[tuple(index[i][c] for i, c in enumerate(corner))]
            w = [frac[i] if c else 1.0 - frac[i] for i, c in enumerate(corner)]
            value += v * np.prod(w)
            for i, c in enumerate(corner):
                others = np.prod([w[j] for j in range(self.n_cvs) if j != i])
                grad[i] += v * others * (1.0 if c else -1.0) / self.spacing[i]
        return float(value), grad

    def energy_and_gradient(self, s):
        s = self.check_cv(s)
        if self.use_grid and self._inside_grid(s):
            return self._grid_interpolate(s)
        return self._kernel_sum(s)

    def energy_on_grid(self, axes):
        """V on a grid: the accumulated grid itself when ``axes`` are this bias's axes (no cost), else the exact
        kernel sum, separable per axis (``Σ_k h_k Π_i g_ki``, one BLAS contraction)."""
        axes = [np.asarray(a, dtype=np.float64) for a in axes]
        if len(axes) != self.n_cvs:
            raise ValueError(f"axes: expected {self.n_cvs} grid axes (one per CV), found {len(axes)}")
        if all(a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(axes, self.axes)):
            return self.grid.copy()
        factors = [np.exp(-0.5 * (wrap_difference(a[None, :] - self.centers[:, i, None], self.periods[i])
                                  / self.sigma[i]) ** 2) for i, a in enumerate(axes)]
        letters = "abc"[:self.n_cvs] if self.n_cvs <= 3 else None
        if letters is None:
            return super().energy_on_grid(axes)
        spec = "k," + ",".join(f"k{c}" for c in letters) + "->" + letters
        return np.einsum(spec, self.heights, *factors, optimize=True).reshape([len(a) for a in axes])

    # --- deposition ----------------------------------------------------------------------------------
    def record_width(self) -> int:
        return 1 + self.n_cvs  # height, centre

    def new_record(self, s):
        height = self.height_kjmol
        if self.bias_factor is not None:
            v, _ = self.energy_and_gradient(s)
            height *= np.exp(-v / (kt_kjmol(self.temperature_k) * (self.bias_factor - 1.0)))
        return np.concatenate([[height], s])

    def apply_record(self, row):
        height, center = float(row[0]), np.asarray(row[1:], dtype=np.float64)
        self.centers = np.vstack([self.centers, center[None, :]])
        self.heights = np.append(self.heights, height)
        mesh = np.meshgrid(*self.axes, indexing="ij")
        d2 = np.zeros(self.grid.shape)
        for i, m in enumerate(mesh):
            di = wrap_difference(np.asarray(m - center[i]), np.full(m.shape, self.periods[i])) / self.sigma[i]
            d2 += di * di
        self.grid += height * np.exp(-0.5 * d2)

    # --- outputs -------------------------------------------------------------------------------------
    def rct_kjmol(self) -> float:
        """c(t) from the bias on the grid (kJ/mol); NaN for plain metadynamics."""
        if self.bias_factor is None:
            return float("nan")
        return well_tempered_rct(self.grid, self.bias_factor, self.temperature_k)

    def colvar_values(self):
        return {"rct": self.rct_kjmol(), "nker": float(len(self.heights))}

    def state_dict(self):
        return {"centers": self.centers.copy(), "heights": self.heights.copy(), "grid": self.grid.copy(),
                "records": self.records.copy()}

    def load_state_dict(self, state):
        for key in ("centers", "heights", "grid", "records"):
            if key not in state:
                raise ValueError(f"{self.label}: state has no {key!r}; keys found: {sorted(state)}")
        if state["grid"].shape != self.grid.shape or state["centers"].shape[1:] != (self.n_cvs,):
            raise ValueError(f"{self.label}: state shapes grid {state['grid'].shape}, centers {state['centers'].shape} "
                             f"do not match this bias (grid {self.grid.shape}, {self.n_cvs} CVs)")
        self.centers = np.array(state["centers"], dtype=np.float64)
        self.heights = np.array(state["heights"], dtype=np.float64)
        self.grid = np.array(state["grid"], dtype=np.float64)
        self.records = np.array(state["records"], dtype=np.float64).reshape(-1, self.record_width())

    def to_torch(self):
        return TorchGaussianSum(self.centers, self.sigma, self.heights, self.periods)


class TorchGaussianSum(torch.nn.Module):
    """Frozen metadynamics bias: exact sum of its Gaussians (TorchScript route).

    ``forward(s [n_cvs])`` returns V(s) = Σ_k h_k exp(-|Δ_k/σ|²/2) in kJ/mol (float64), Δ minimum-imaged.

    Parameters
    ----------
    centers : array_like
        ``[n_gaussians, n_cvs]`` Gaussian centres, CV units.
    sigma : array_like
        ``[n_cvs]`` widths, CV units.
    heights : array_like
        ``[n_gaussians]`` heights, kJ/mol.
    periods : array_like
        ``[n_cvs]`` periods (0 = not periodic).
    """

    def __init__(self, centers, sigma, heights, periods):
        super().__init__()
        self.register_buffer("centers", torch.as_tensor(np.asarray(centers, dtype=np.float64)))
        self.register_buffer("inv_sigma", torch.as_tensor(1.0 / np.asarray(sigma, dtype=np.float64)))
        self.register_buffer("heights", torch.as_tensor(np.asarray(heights, dtype=np.float64)))
        self.register_buffer("periods", torch.as_tensor(np.asarray(periods, dtype=np.float64)))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = s.to(torch.float64)
        d = torch_wrap_difference(s.unsqueeze(0) - self.centers, self.periods) * self.inv_sigma
        return torch.sum(self.heights * torch.exp(-0.5 * torch.sum(d * d, dim=1)))
