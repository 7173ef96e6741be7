"""OPES: on-the-fly probability enhanced sampling, as PLUMED's OPES_METAD and OPES_METAD_EXPLORE.

OPES-metad (Invernizzi & Parrinello, JPCL 11, 2731 (2020)) estimates the *unbiased* distribution P(s)
with a weighted kernel density estimate (weights w = exp(βV) at deposition) and applies
    V(s) = (1 - 1/γ) kT ln( P(s)/Z + ε ),   ε = exp(-β ΔE / (1 - 1/γ)),   γ = β ΔE by default,
so the sampled distribution tends to the well-tempered target ∝ P^(1/γ). OPES-explore (Invernizzi,
Piccini & Parrinello, JCTC 18, 3988 (2022)) estimates the *biased* distribution p(s) from unweighted
kernels (widths σ√γ) and applies V = (γ - 1) kT ln(p(s)/Z + ε), ε = exp(-β ΔE/(γ - 1)): faster
exploration, noisier reweighting. Both follow PLUMED's implementation: kernels truncated at
``kernel_cutoff`` (value at cutoff subtracted), merged into the nearest kernel when closer than
``compression_threshold`` (in units of that kernel's σ, recursively), Z = mean over compressed kernel
centres of the normalised KDE, sums initialised at ε^(prefactor) with counter 1, no deposition at step 0.
σ starts at ``sigma`` and shrinks as neff^(-1/(4+d)) (explore: counter) unless ``fixed_sigma``.
``sigma="adaptive"`` is PLUMED's SIGMA=ADAPTIVE with ADAPTIVE_SIGMA_STRIDE (OPESmetad.cpp, PLUMED 2.8/2.9,
``update()``): every sampled step, Welford's update with an exponentially decaying mean (τ = min(samples,
stride)), ``av += Δ/τ; M2 += Δ·(s - av)``; no deposition before ``stride`` steps; then σ = sqrt(M2/n) (explore)
or sqrt(M2/n / γ) with M2 multiplied by γ once at the first deposition (metad: the first estimate is unbiased),
before the neff rescaling; SIGMA_MIN floors each σ and the height is divided by each σ's rescaling factor.
PLUMED samples every MD step; ``adaptive_sigma_sample_steps`` > 1 samples less often (τ counted in samples).
Components for COLVAR: rct = kT ln(Σw/N), zed, neff = (1+Σw)²/(1+Σw²), nker.
"""

from __future__ import annotations

import numpy as np
import torch

from cvlearn.units import kt_kjmol
from openmm_plugin.bias.base import AdaptiveBias, as_cv_vector, periods_vector, torch_wrap_difference, wrap_difference


class OPES(AdaptiveBias):
    """OPES-metad (``explore=False``) or OPES-explore (``explore=True``), PLUMED's defaults.

    Parameters
    ----------
    sigma : float or sequence of float or "adaptive"
        ``[n_cvs]`` initial kernel widths, CV units; ``"adaptive"``: PLUMED's SIGMA=ADAPTIVE (module docstring).
    barrier_kjmol : float
        ΔE, the barrier to overcome, kJ/mol.
    pace_steps : int
        Steps between depositions (outer steps with MTS).
    temperature_k : float
        Temperature, K.
    bias_factor : float, optional
        γ (default ΔE/k_BT).
    explore : bool
        OPES-explore instead of OPES-metad.
    periods : None, float or sequence
        Per-CV period (None or 0: not periodic).
    compression_threshold, kernel_cutoff, epsilon : float
        As PLUMED's COMPRESSION_THRESHOLD, KERNEL_CUTOFF, EPSILON.
    fixed_sigma : bool
        Keep ``sigma`` (no adaptive shrinking).
    label : str, optional
        Prefix of the COLVAR fields (default ``opes`` / ``opes_explore``).
    adaptive_sigma_stride : int, optional
        PLUMED's ADAPTIVE_SIGMA_STRIDE in steps (>= ``pace_steps``; default 10 x pace); needs ``sigma="adaptive"``
        (or None), as PLUMED.
    adaptive_sigma_sample_steps : int
        Steps between CV samples of the adaptive σ (1 = every step, as PLUMED).
    n_cvs : int, optional
        Number of CVs with ``sigma="adaptive"`` (default 1).
    sigma_min : float or sequence of float, optional
        PLUMED's SIGMA_MIN: no kernel narrower than this, CV units.
    """

    def __init__(self, *, sigma, barrier_kjmol: float, pace_steps: int, temperature_k: float,
                 bias_factor: float | None = None, explore: bool = False, periods=None,
                 compression_threshold: float = 1.0, kernel_cutoff: float | None = None,
                 epsilon: float | None = None, fixed_sigma: bool = False, label: str | None = None,
                 adaptive_sigma_stride: int | None = None, adaptive_sigma_sample_steps: int = 1,
                 n_cvs: int | None = None, sigma_min=None):
        adaptive = isinstance(sigma, str) or sigma is None
        if adaptive and str(sigma).lower() not in ("adaptive", "none"):
            raise ValueError(f"sigma: expected kernel widths or 'adaptive', found {sigma!r}")
        if not adaptive and adaptive_sigma_stride is not None:
            raise ValueError(f"adaptive_sigma_stride: needs sigma='adaptive' (as PLUMED), found sigma={sigma!r}")
        sigma = np.ones(int(n_cvs or 1)) if adaptive else as_cv_vector("sigma", sigma)
        if n_cvs is not None and int(n_cvs) != sigma.size:
            raise ValueError(f"n_cvs: {n_cvs} does not match the {sigma.size} sigma values {sigma.tolist()}")
        if np.any(sigma <= 0):
            raise ValueError(f"sigma: expected positive kernel widths, found {sigma}")
        super().__init__(sigma.size, label or ("opes_explore" if explore else "opes"), pace_steps)
        self.sigma_min = None if sigma_min is None else as_cv_vector("sigma_min", sigma_min, self.n_cvs)
        self._init_adaptive(adaptive, adaptive_sigma_stride, adaptive_sigma_sample_steps)
        if barrier_kjmol <= 0 or temperature_k <= 0:
            raise ValueError(f"{self.label}: expected barrier_kjmol > 0 and temperature_k > 0, "
                             f"found {barrier_kjmol}, {temperature_k}")
        self.explore = bool(explore)
        self.kbt = kt_kjmol(temperature_k)
        self.temperature_k = float(temperature_k)
        self.barrier_kjmol = float(barrier_kjmol)
        gamma = self.barrier_kjmol / self.kbt if bias_factor is None else float(bias_factor)
        if gamma <= 1:
            raise ValueError(f"{self.label}: bias factor γ must exceed 1 (default βΔE = {self.barrier_kjmol / self.kbt:.3g}); "
                             f"found {gamma}")
        if self.explore and np.isinf(gamma):
            raise ValueError(f"{self.label}: bias_factor=inf is not compatible with OPES-explore")
        self.bias_factor = gamma
        self.prefactor = (gamma - 1.0) if self.explore else (1.0 if np.isinf(gamma) else 1.0 - 1.0 / gamma)
        if self.adaptive_sigma and np.isinf(gamma):
            raise ValueError(f"{self.label}: bias_factor=inf is not compatible with sigma='adaptive' (as PLUMED)")
        self.sigma0 = None if self.adaptive_sigma else sigma * (np.sqrt(gamma) if self.explore else 1.0)
        self.periods = periods_vector(periods, self.n_cvs)
        self.epsilon = float(np.exp(-self.barrier_kjmol / self.prefactor / self.kbt) if epsilon is None else epsilon)
        default_cutoff = np.sqrt(2.0 * self.barrier_kjmol / self.kbt / (1.0 if self.explore else self.prefactor))
        self.cutoff2 = float(default_cutoff if kernel_cutoff is None else kernel_cutoff) ** 2
        self.val_at_cutoff = float(np.exp(-0.5 * self.cutoff2))
        self.threshold2 = float(compression_threshold) ** 2
        if not 0 <= self.threshold2 < self.cutoff2:
            raise ValueError(f"{self.label}: compression_threshold must lie in [0, kernel_cutoff), "
                             f"found {compression_threshold} (cutoff {np.sqrt(self.cutoff2):.3g})")
        self.fixed_sigma = bool(fixed_sigma)
        self.heights = np.zeros(0)
        self.centers = np.zeros((0, self.n_cvs))
        self.sigmas = np.zeros((0, self.n_cvs))
        self.counter = 1.0
        self.sum_weights = self.epsilon ** self.prefactor
        self.sum_weights2 = self.sum_weights ** 2
        self.zed = 1.0

    @property
    def kde_norm(self) -> float:
        return self.counter if self.explore else self.sum_weights

    # --- the bias ------------------------------------------------------------------------------------
    def _kernels_at(self, s: np.ndarray, heights, centers, sigmas):
        """Truncated kernel values and their derivatives d/ds at one point."""
        d = wrap_difference(s[None, :] - centers, self.periods) / sigmas
        norm2 = np.sum(d * d, axis=1)
        inside = norm2 < self.cutoff2
        g = np.where(inside, heights * np.exp(-0.5 * norm2), 0.0)
        values = np.where(inside, g - heights * self.val_at_cutoff, 0.0)
        return values, -(g[:, None] * d / sigmas)

    def probability(self, s: np.ndarray) -> tuple[float, np.ndarray]:
        if not len(self.heights):
            return 0.0, np.zeros(self.n_cvs)
        values, derivs = self._kernels_at(s, self.heights, self.centers, self.sigmas)
        return float(values.sum()) / self.kde_norm, derivs.sum(axis=0) / self.kde_norm

    def energy_and_gradient(self, s):
        prob, dprob = self.probability(self.check_cv(s))
        arg = prob / self.zed + self.epsilon
        return float(self.kbt * self.prefactor * np.log(arg)), self.kbt * self.prefactor / arg * dprob / self.zed

    def energy_on_grid(self, axes):
        """V at every grid point (kJ/mol, ``[len(axes[0]), ...]``): each truncated kernel is added on the
        sub-grid inside its cutoff only (per-axis distances, outer sums), so the cost is ~n_kernels x (cutoff box)."""
        axes = [np.asarray(a, dtype=np.float64) for a in axes]
        if len(axes) != self.n_cvs:
            raise ValueError(f"axes: expected {self.n_cvs} grid axes (one per CV), found {len(axes)}")
        prob = np.zeros([len(a) for a in axes])
        for h, c, sig in zip(self.heights, self.centers, self.sigmas):
            d2 = [(wrap_difference(a - c[i], self.periods[i]) / sig[i]) ** 2 for i, a in enumerate(axes)]
            near = [np.flatnonzero(x < self.cutoff2) for x in d2]
            if any(len(n) == 0 for n in near):
                continue
            norm2 = sum(x[n].reshape([-1 if j == i else 1 for j in range(self.n_cvs)])
                        for i, (x, n) in enumerate(zip(d2, near)))
            prob[np.ix_(*near)] += np.where(norm2 < self.cutoff2, h * (np.exp(-0.5 * norm2) - self.val_at_cutoff), 0.0)
        return self.kbt * self.prefactor * np.log(prob / self.kde_norm / self.zed + self.epsilon)

    # --- deposition ----------------------------------------------------------------------------------
    def record_width(self) -> int:
        return 2 + 2 * self.n_cvs  # log-weight βV, kernel height, centre, sigma

    def new_record(self, s):
        v, _ = self.energy_and_gradient(s)
        log_weight = v / self.kbt
        height = 1.0 if self.explore else np.exp(log_weight)
        sigma = self._adaptive_sigma() if self.adaptive_sigma else self.sigma0.copy()
        if not self.fixed_sigma:
            # neff after this deposition (explore: number of kernels), as PLUMED.
            w = np.exp(log_weight)
            size = self.counter + 1 if self.explore else (1 + self.sum_weights + w) ** 2 / (1 + self.sum_weights2 + w * w)
            rescale = np.full(self.n_cvs, (size * (self.n_cvs + 2.0) / 4.0) ** (-1.0 / (4 + self.n_cvs)))
            if self.sigma_min is not None:
                rescale = np.maximum(rescale, self.sigma_min / sigma)
            sigma = sigma * rescale
            height /= np.prod(rescale)
        return np.concatenate([[log_weight, height], s, sigma])

    # --- adaptive sigma (PLUMED SIGMA=ADAPTIVE) ------------------------------------------------------
    def _init_adaptive(self, adaptive: bool, stride, sample_steps) -> None:
        self.adaptive_sigma = bool(adaptive or stride is not None)
        self.sample_steps = None
        if not self.adaptive_sigma:
            return
        stride = 10 * self.pace_steps if stride is None else stride
        for name, value in (("adaptive_sigma_stride", stride), ("adaptive_sigma_sample_steps", sample_steps)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"{self.label}: {name}: expected a positive integer, found {value!r}")
        if stride < self.pace_steps:
            raise ValueError(f"{self.label}: adaptive_sigma_stride: expected >= pace_steps={self.pace_steps} (as PLUMED), "
                             f"found {stride}")
        self.adaptive_sigma_stride, self.sample_steps = int(stride), int(sample_steps)
        self.tau_samples = max(1, self.adaptive_sigma_stride // self.sample_steps)
        self.av_cv, self.av_m2 = np.zeros(self.n_cvs), np.zeros(self.n_cvs)
        self.n_samples, self.m2_adjusted = 0, False

    def observe(self, s: np.ndarray) -> None:
        """One CV sample for the adaptive σ: PLUMED's Welford update with an exponentially decaying mean."""
        self.n_samples += 1
        tau = min(self.n_samples, self.tau_samples)
        diff = wrap_difference(s - self.av_cv, self.periods)
        self.av_cv = self.av_cv + diff / tau
        self.av_m2 = self.av_m2 + diff * wrap_difference(s - self.av_cv, self.periods)

    def _adaptive_sigma(self) -> np.ndarray:
        if self.n_samples == 0:
            raise ValueError(f"{self.label}: adaptive sigma has no CV samples yet (call update every sample step)")
        if self.explore:
            sigma = np.sqrt(self.av_m2 / self.n_samples)
        else:
            if not self.m2_adjusted:  # the very first estimate is from unbiased sampling: av_M2 /= (1 - prefactor)
                self.av_m2 = self.av_m2 * self.bias_factor
                self.m2_adjusted = True
            sigma = np.sqrt(self.av_m2 / self.n_samples / self.bias_factor)
        floor = self.sigma_min if self.sigma_min is not None else 1e-6  # PLUMED: 1e-6 when no SIGMA_MIN
        return np.maximum(sigma, floor)

    def update(self, s, step):
        if self.adaptive_sigma and step > 0 and step % self.sample_steps == 0:
            self.observe(self.check_cv(s))
            if self.n_samples < self.tau_samples and self.counter == 1:
                return False  # no bias before σ is measured (PLUMED: counter_ > 1 when restarting)
        return super().update(s, step)

    def apply_record(self, row):
        d = self.n_cvs
        weight = float(np.exp(row[0]))
        self.counter += 1
        self.sum_weights += weight
        self.sum_weights2 += weight * weight
        self._add_kernel(float(row[1]), np.array(row[2:2 + d]), np.array(row[2 + d:2 + 2 * d]))

    def _mergeable(self, center: np.ndarray, exclude: int) -> int:
        """Index of the nearest kernel within the compression threshold (in its own σ), or -1."""
        if self.threshold2 == 0 or not len(self.heights):
            return -1
        d = wrap_difference(center[None, :] - self.centers, self.periods) / self.sigmas
        norm2 = np.sum(d * d, axis=1)
        if exclude >= 0:
            norm2[exclude] = np.inf
        k = int(np.argmin(norm2))
        return k if norm2[k] < self.threshold2 else -1

    def _merge_into(self, k: int, height: float, center: np.ndarray, sigma: np.ndarray) -> None:
        h0, c0, s0 = self.heights[k], self.centers[k], self.sigmas[k]
        h = h0 + height
        # Merge the other kernel at its minimum image next to kernel k.
        c1 = c0 + wrap_difference(center - c0, self.periods)
        c = (h0 * c0 + height * c1) / h
        s2 = (h0 * (s0 ** 2 + c0 ** 2) + height * (sigma ** 2 + c1 ** 2)) / h - c ** 2
        c = wrap_difference(c, self.periods)  # periodic centres stay in [-period/2, period/2)
        self.heights[k], self.centers[k], self.sigmas[k] = h, c, np.sqrt(s2)

    def _add_kernel(self, height: float, center: np.ndarray, sigma: np.ndarray) -> None:
        k = self._mergeable(center, -1)
        if k < 0:
            self.heights = np.append(self.heights, height)
            self.centers = np.vstack([self.centers, center[None, :]])
            self.sigmas = np.vstack([self.sigmas, sigma[None, :]])
            return
        self._merge_into(k, height, center, sigma)
        giver = k
        taker = self._mergeable(self.centers[giver], giver)
        while taker >= 0:  # recursive merge, as PLUMED's default
            if taker > giver:
                taker, giver = giver, taker
            self._merge_into(taker, self.heights[giver], self.centers[giver].copy(), self.sigmas[giver].copy())
            self.heights = np.delete(self.heights, giver)
            self.centers = np.delete(self.centers, giver, axis=0)
            self.sigmas = np.delete(self.sigmas, giver, axis=0)
            giver = taker
            taker = self._mergeable(self.centers[giver], giver)

    def after_records(self) -> None:
        """Z = (1/N_k) Σ_k P(c_k): the KDE averaged over the compressed kernel centres."""
        if not len(self.heights):
            return
        d = wrap_difference(self.centers[:, None, :] - self.centers[None, :, :], self.periods) / self.sigmas[None, :, :]
        norm2 = np.sum(d * d, axis=2)
        values = np.where(norm2 < self.cutoff2, self.heights[None, :] * (np.exp(-0.5 * norm2) - self.val_at_cutoff), 0.0)
        self.zed = float(values.sum() / self.kde_norm / len(self.heights))

    # --- outputs -------------------------------------------------------------------------------------
    def neff(self) -> float:
        return (1.0 + self.sum_weights) ** 2 / (1.0 + self.sum_weights2)

    def colvar_values(self):
        return {"rct": float(self.kbt * np.log(self.sum_weights / self.counter)), "zed": self.zed,
                "neff": self.neff(), "nker": float(len(self.heights))}

    def state_dict(self):
        scalars = np.array([self.counter, self.sum_weights, self.sum_weights2, self.zed])
        state = {"heights": self.heights.copy(), "centers": self.centers.copy(), "sigmas": self.sigmas.copy(),
                 "scalars": scalars, "records": self.records.copy()}
        if self.adaptive_sigma:
            state["adaptive"] = np.concatenate([[self.n_samples, float(self.m2_adjusted)], self.av_cv, self.av_m2])
        return state

    def load_state_dict(self, state):
        for key in ("heights", "centers", "sigmas", "scalars", "records"):
            if key not in state:
                raise ValueError(f"{self.label}: state has no {key!r}; keys found: {sorted(state)}")
        if np.asarray(state["centers"]).reshape(-1, self.n_cvs).shape[0] != np.asarray(state["heights"]).size:
            raise ValueError(f"{self.label}: state has {np.asarray(state['heights']).size} heights but centres "
                             f"of shape {np.asarray(state['centers']).shape} for {self.n_cvs} CVs")
        self.heights = np.array(state["heights"], dtype=np.float64)
        self.centers = np.array(state["centers"], dtype=np.float64).reshape(-1, self.n_cvs)
        self.sigmas = np.array(state["sigmas"], dtype=np.float64).reshape(-1, self.n_cvs)
        self.counter, self.sum_weights, self.sum_weights2, self.zed = (float(x) for x in state["scalars"])
        self.records = np.array(state["records"], dtype=np.float64).reshape(-1, self.record_width())
        if self.adaptive_sigma:
            if "adaptive" not in state or np.asarray(state["adaptive"]).size != 2 + 2 * self.n_cvs:
                raise ValueError(f"{self.label}: state has no adaptive-sigma estimate for {self.n_cvs} CVs "
                                 f"(saved without sigma='adaptive'?); keys found: {sorted(state)}")
            a = np.asarray(state["adaptive"], dtype=np.float64)
            self.n_samples, self.m2_adjusted = int(a[0]), bool(a[1])
            self.av_cv, self.av_m2 = a[2:2 + self.n_cvs].copy(), a[2 + self.n_cvs:].copy()

    def to_torch(self):
        return TorchOPES(self)


def OPESMetad(**kwargs) -> OPES:
    """OPES_METAD: well-tempered target from the reweighted (unbiased) KDE.

    Parameters
    ----------
    **kwargs
        Keyword arguments of :class:`OPES` except ``explore`` (``sigma`` in CV units, ``barrier_kjmol`` kJ/mol,
        ``pace_steps``, ``temperature_k`` K, ...).

    Returns
    -------
    OPES
        With ``explore=False``.
    """
    return OPES(explore=False, **kwargs)


def OPESExplore(**kwargs) -> OPES:
    """OPES_METAD_EXPLORE: well-tempered target from the KDE of the sampled (biased) distribution.

    Parameters
    ----------
    **kwargs
        Keyword arguments of :class:`OPES` except ``explore`` (``sigma`` in CV units, ``barrier_kjmol`` kJ/mol,
        ``pace_steps``, ``temperature_k`` K, ...).

    Returns
    -------
    OPES
        With ``explore=True``.
    """
    return OPES(explore=True, **kwargs)


class TorchOPES(torch.nn.Module):
    """Frozen OPES bias (TorchScript route): compressed kernels, Z, normalisation and ε as buffers.

    ``forward(s [n_cvs])`` returns V(s) in kJ/mol (float64), equal to the OPES bias at the time of the snapshot.

    Parameters
    ----------
    opes : OPES
        The adaptive bias to freeze (later depositions do not reach this module).
    """

    def __init__(self, opes: OPES):
        super().__init__()
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
        self.register_buffer("heights", as_t(opes.heights))
        self.register_buffer("centers", as_t(opes.centers.reshape(-1, opes.n_cvs)))
        self.register_buffer("inv_sigmas", as_t(1.0 / opes.sigmas.reshape(-1, opes.n_cvs)) if len(opes.heights)
                             else as_t(np.zeros((0, opes.n_cvs))))
        self.register_buffer("periods", as_t(opes.periods))
        self.scale = float(opes.kbt * opes.prefactor)
        self.norm = float(opes.kde_norm * opes.zed)
        self.epsilon = float(opes.epsilon)
        self.cutoff2 = float(opes.cutoff2)
        self.val_at_cutoff = float(opes.val_at_cutoff)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        s = s.to(torch.float64)
        d = torch_wrap_difference(s.unsqueeze(0) - self.centers, self.periods) * self.inv_sigmas
        norm2 = torch.sum(d * d, dim=1)
        values = self.heights * (torch.exp(-0.5 * norm2) - self.val_at_cutoff)
        prob = torch.sum(torch.where(norm2 < self.cutoff2, values, torch.zeros_like(values)))
        return self.scale * torch.log(prob / self.norm + self.epsilon)
