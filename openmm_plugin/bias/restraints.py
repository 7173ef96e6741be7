"""Stateless biases: harmonic restraints (umbrella windows) and PLUMED-style upper/lower walls.

Walls follow PLUMED's UPPER_WALLS / LOWER_WALLS: V = Σ_i kappa_i u_i^exp_i for u_i > 0, with
u = (s - at + offset)/eps (upper) or u = (at - s + offset)/eps (lower); defaults offset 0, eps 1, exp 2.
(PLUMED raises the signed lower-wall variable to ``exp``; for odd exponents we use |u|, so a wall never pulls.)
"""

from __future__ import annotations

import numpy as np
import torch

from openmm_plugin.bias.base import Bias, as_cv_vector, periods_vector, torch_wrap_difference, wrap_difference


class HarmonicRestraint(Bias):
    """V = Σ_i ½ κ_i (s_i - s0_i)² (kJ/mol), minimum image along periodic CVs: an umbrella window.

    Parameters
    ----------
    center : sequence of float
        ``[n_cvs]`` s0, CV units.
    kappa_kjmol : float or sequence of float
        ``[n_cvs]`` force constants, kJ/mol per CV unit².
    periods : None, float or sequence
        Per-CV period (None or 0: not periodic).
    label : str
        COLVAR field prefix.
    """

    def __init__(self, center, kappa_kjmol, *, periods=None, label: str = "restraint"):
        center = as_cv_vector("center", center)
        super().__init__(center.size, label)
        self.center = center
        self.kappa_kjmol = as_cv_vector("kappa_kjmol", kappa_kjmol, self.n_cvs)
        if np.any(self.kappa_kjmol < 0):
            raise ValueError(f"kappa_kjmol: expected non-negative force constants, found {self.kappa_kjmol}")
        self.periods = periods_vector(periods, self.n_cvs)

    def energy_and_gradient(self, s):
        d = wrap_difference(self.check_cv(s) - self.center, self.periods)
        return float(0.5 * np.sum(self.kappa_kjmol * d * d)), self.kappa_kjmol * d

    def to_torch(self):
        return _TorchHarmonic(self.center, self.kappa_kjmol, self.periods)


class Wall(Bias):
    """PLUMED UPPER_WALLS (``side="upper"``) or LOWER_WALLS (``side="lower"``) on every CV; kappa 0 disables one.

    Parameters
    ----------
    at : sequence of float
        ``[n_cvs]`` wall positions, CV units.
    kappa_kjmol : float or sequence of float
        ``[n_cvs]`` strengths, kJ/mol.
    side : str
        ``"upper"`` or ``"lower"``.
    exp, eps, offset : float or sequence of float
        As PLUMED's EXP, EPS, OFFSET.
    label : str, optional
        COLVAR field prefix (default ``upper_walls`` / ``lower_walls``).
    """

    def __init__(self, at, kappa_kjmol, *, side: str, exp: float = 2.0, eps: float = 1.0, offset: float = 0.0,
                 label: str | None = None):
        if side not in ("upper", "lower"):
            raise ValueError(f"side: expected 'upper' or 'lower', found {side!r}")
        at = as_cv_vector("at", at)
        super().__init__(at.size, label or f"{side}_walls")
        self.side = side
        self.sign = 1.0 if side == "upper" else -1.0
        self.at = at
        self.kappa_kjmol = as_cv_vector("kappa_kjmol", kappa_kjmol, self.n_cvs)
        self.exp = as_cv_vector("exp", exp, self.n_cvs)
        self.eps = as_cv_vector("eps", eps, self.n_cvs)
        self.offset = as_cv_vector("offset", offset, self.n_cvs)
        if np.any(self.eps <= 0) or np.any(self.exp < 1):
            raise ValueError(f"{self.label}: expected eps > 0 and exp >= 1, found eps={self.eps}, exp={self.exp}")

    def energy_and_gradient(self, s):
        # Upper: u = (s - at + offset)/eps > 0 ; lower: u = (at - s + offset)/eps > 0.
        u = (self.sign * (self.check_cv(s) - self.at) + self.offset) / self.eps
        active = u > 0
        up = np.where(active, u, 0.0)
        energy = np.where(active, self.kappa_kjmol * up ** self.exp, 0.0)
        grad = np.where(active, self.kappa_kjmol * self.exp * up ** (self.exp - 1.0) * self.sign / self.eps, 0.0)
        return float(energy.sum()), grad

    def to_torch(self):
        return _TorchWall(self.at, self.kappa_kjmol, self.exp, self.eps, self.offset, self.sign)


def _t(array) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float64))


class _TorchHarmonic(torch.nn.Module):
    def __init__(self, center, kappa, periods):
        super().__init__()
        self.register_buffer("center", _t(center))
        self.register_buffer("kappa", _t(kappa))
        self.register_buffer("periods", _t(periods))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        d = torch_wrap_difference(s - self.center.to(s.dtype), self.periods.to(s.dtype))
        return 0.5 * torch.sum(self.kappa.to(s.dtype) * d * d)


class _TorchWall(torch.nn.Module):
    def __init__(self, at, kappa, exp, eps, offset, sign: float):
        super().__init__()
        for name, value in (("at", at), ("kappa", kappa), ("exponent", exp), ("eps", eps), ("offset", offset)):
            self.register_buffer(name, _t(value))
        self.sign = float(sign)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        u = (self.sign * (s - self.at.to(s.dtype)) + self.offset.to(s.dtype)) / self.eps.to(s.dtype)
        up = torch.clamp(u, min=0.0)
        return torch.sum(torch.where(u > 0, self.kappa.to(s.dtype) * up ** self.exponent.to(s.dtype),
                                     torch.zeros_like(u)))
