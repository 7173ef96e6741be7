"""A cap on the bias force per atom: a learned CV can have huge gradients off its training data (issue 17).

A steep bias times a steep CV gives forces that blow a simulation up in a few steps, long before a NaN
shows in the CV. :class:`ForceGuard` sits in the PythonForce route's computation path (``BiasCallback`` calls
``guard.apply(forces)`` on every evaluation): atoms whose bias force exceeds ``max_force_kjmol_nm`` get it scaled
down to the cap (direction kept), and every capped atom-evaluation is counted. ``mode="cap"`` keeps running
(the count goes to the COLVAR column ``guard.capped`` and the log); ``mode="stop"`` also caps (a force call must
return finite forces), and :class:`openmm_plugin.bias.BiasRunner` then saves a restartable state and raises
:class:`cvlearn.errors.RunError` within ``check_every_steps`` steps. Capping changes the dynamics (forces are
no longer -∇V): a run with capped forces is not a faithful biased ensemble, which is why the count is reported.

With ``max_kinetic_temperature_k``, the guard also watches the heat: a thermostatted run whose kinetic temperature,
averaged over ``temperature_window_steps``, exceeds the limit is gaining energy the integrator does not conserve, and
the runner stops it in either mode (``mode`` is about the force cap; nothing can be capped about heat, and a run that
went on would end in a NaN with nothing saved since its last checkpoint). That
is how learned-CV OPES walkers of the sampling benchmark died (``benchmarks/blowup.py``): at the edge of a truncated
OPES kernel dV/ds jumps (by ~700-900 kJ/mol per CV unit there), the learned CV's gradient at that edge is ~180/nm, and
each crossing of the resulting force step kicked the atoms by up to ~90 kJ/mol; one walker heated from 300 K to
> 1000 K over a few ps before its bonds broke (the temperature watch stops such a run ps before the NaN), the other
died of a single ~1e5 kJ/mol/nm kick (which a force cap catches). Healthy runs fluctuate: unbiased ala2 (51 degrees of
freedom) at 300 K and 2 fs over 400 ps had a 2000-step mean with std 27 K and maximum 395 K (1000 steps: 32 K, 430 K),
so 1.5 T over 2000 steps leaves > 5 standard deviations; small molecules need long windows.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import openmm.unit as unit

R_KJMOL_PER_K = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)

MODES = ("cap", "stop")


class ForceGuard:
    """Caps per-atom bias forces at ``max_force_kjmol_nm`` and counts how often it did.

    Parameters
    ----------
    max_force_kjmol_nm : float or None
        Largest allowed norm of one atom's bias force, kJ/mol/nm (> 0); None: no cap (a temperature watch only).
    mode : {"cap", "stop"}
        ``"cap"``: cap and continue; ``"stop"``: cap, and the runner stops the run (restartable state + RunError).
    check_every_steps : int
        Steps between the runner's checks of a tripped ``"stop"`` guard (and between kinetic-temperature samples).
    max_kinetic_temperature_k : float, optional
        Limit on the kinetic temperature (K) averaged over ``temperature_window_steps`` (e.g. 1.5 x the bath's); None:
        not watched. Over the limit counts as ``n_hot`` and stops the run in either mode (restartable state +
        RunError).
    temperature_window_steps : int
        Steps averaged for the kinetic temperature (a multiple of ``check_every_steps``).
    """

    label = "guard"

    def __init__(self, max_force_kjmol_nm: float | None, mode: str = "cap", check_every_steps: int = 100,
                 max_kinetic_temperature_k: float | None = None, temperature_window_steps: int = 2000):
        if max_force_kjmol_nm is None and max_kinetic_temperature_k is None:
            raise ValueError("max_force_kjmol_nm: expected a force cap, a max_kinetic_temperature_k, or both; found "
                             "neither")
        if max_force_kjmol_nm is not None and (not np.isfinite(max_force_kjmol_nm) or max_force_kjmol_nm <= 0):
            raise ValueError(f"max_force_kjmol_nm: expected a positive finite force cap, found {max_force_kjmol_nm!r}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, found {mode!r}")
        if isinstance(check_every_steps, bool) or int(check_every_steps) != check_every_steps or check_every_steps < 1:
            raise ValueError(f"check_every_steps: expected a positive integer, found {check_every_steps!r}")
        if max_kinetic_temperature_k is not None and not (np.isfinite(max_kinetic_temperature_k)
                                                          and max_kinetic_temperature_k > 0):
            raise ValueError(f"max_kinetic_temperature_k: expected a positive temperature in K or None, found "
                             f"{max_kinetic_temperature_k!r}")
        if (isinstance(temperature_window_steps, bool) or int(temperature_window_steps) != temperature_window_steps
                or temperature_window_steps < check_every_steps or temperature_window_steps % check_every_steps):
            raise ValueError(f"temperature_window_steps: expected a multiple of check_every_steps={check_every_steps}, "
                             f"found {temperature_window_steps!r}")
        self.max_force_kjmol_nm = np.inf if max_force_kjmol_nm is None else float(max_force_kjmol_nm)  # None: no cap
        self.max_kinetic_temperature_k = None if max_kinetic_temperature_k is None else float(max_kinetic_temperature_k)
        self.temperature_window_steps = int(temperature_window_steps)
        self._temperatures: deque = deque(maxlen=self.temperature_window_steps // int(check_every_steps))
        self._dof: int | None = None
        self.n_hot = 0  # temperature checks over the limit since the start (or the last restore)
        self.t_kin_window_k = float("nan")  # the last window mean of the kinetic temperature, K
        self._hot_armed_at = 0
        self.mode = mode
        self.check_every_steps = int(check_every_steps)
        self.n_capped = 0  # atom-evaluations capped since the start (or the last restore of a runner)
        self.n_evaluations_capped = 0  # force evaluations with at least one capped atom
        self.max_seen_kjmol_nm = 0.0  # largest uncapped per-atom bias force seen
        self._armed_at = 0  # n_capped when the guard was (re)armed: a restored run stops only on new caps

    @property
    def watches_temperature(self) -> bool:
        return self.max_kinetic_temperature_k is not None

    @property
    def tripped(self) -> bool:
        """A ``"stop"`` guard that capped at least once, or any guard that found the run too hot: the runner stops
        the run."""
        return (self.mode == "stop" and self.n_capped > self._armed_at) or self.n_hot > self._hot_armed_at

    def rearm(self) -> None:
        """Count only caps and hot windows from now on towards ``tripped`` (after a restore)."""
        self._armed_at = self.n_capped
        self._hot_armed_at = self.n_hot
        self._temperatures.clear()

    def observe(self, simulation) -> None:
        """One kinetic-temperature sample of ``simulation`` (an ``app.Simulation``), at multiples of
        ``check_every_steps``; counts a hot window when the full window's mean exceeds the limit."""
        if not self.watches_temperature or simulation.currentStep % self.check_every_steps:
            return
        if self._dof is None:
            self._dof = degrees_of_freedom(simulation.system)
        state = simulation.context.getState(getEnergy=True)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        self._temperatures.append(2.0 * kinetic / (self._dof * R_KJMOL_PER_K))
        if len(self._temperatures) == self._temperatures.maxlen:
            self.t_kin_window_k = float(np.mean(self._temperatures))
            if not self.t_kin_window_k <= self.max_kinetic_temperature_k:  # NaN counts as hot
                self.n_hot += 1

    def apply(self, forces_kjmol_nm: np.ndarray) -> np.ndarray:
        """Forces with every atom's norm at most the cap (directions kept); counts the capped atoms.

        Parameters
        ----------
        forces_kjmol_nm : np.ndarray
            ``[n_atoms, 3]`` bias forces, kJ/mol/nm. Non-finite rows count as capped and become zero.

        Returns
        -------
        np.ndarray
            ``[n_atoms, 3]`` capped forces (the input array itself when nothing exceeds the cap).
        """
        forces = np.asarray(forces_kjmol_nm, dtype=np.float64)
        if forces.ndim != 2 or forces.shape[1] != 3:
            raise ValueError(f"forces_kjmol_nm: expected shape (n_atoms, 3), found {forces.shape}")
        norms = np.linalg.norm(forces, axis=1)
        finite = np.isfinite(norms)
        over = ~finite | (norms > self.max_force_kjmol_nm)
        if finite.any():
            self.max_seen_kjmol_nm = max(self.max_seen_kjmol_nm, float(norms[finite].max()))
        if not over.any():
            return forces
        n_over = int(over.sum())
        self.n_capped += n_over
        self.n_evaluations_capped += 1
        shrink = finite & over
        scale = np.where(shrink, self.max_force_kjmol_nm / np.where(shrink, norms, 1.0), 1.0)
        capped = forces * scale[:, None]
        capped[~finite] = 0.0
        return capped

    def colvar_values(self) -> dict[str, float]:
        """COLVAR components, unprefixed: ``capped`` (atom-evaluations capped so far)."""
        return {"capped": float(self.n_capped)}

    def summary(self) -> str:
        if np.isfinite(self.max_force_kjmol_nm):
            text = (f"bias force guard ({self.mode}, cap {self.max_force_kjmol_nm:g} kJ/mol/nm): {self.n_capped} atom "
                    f"forces capped in {self.n_evaluations_capped} evaluations; largest bias force "
                    f"{self.max_seen_kjmol_nm:.4g} kJ/mol/nm")
        else:
            text = f"bias force guard ({self.mode}, no cap): largest bias force {self.max_seen_kjmol_nm:.4g} kJ/mol/nm"
        if self.watches_temperature:
            text += (f"; kinetic temperature over {self.temperature_window_steps} steps {self.t_kin_window_k:.4g} K "
                     f"(limit {self.max_kinetic_temperature_k:g} K, exceeded {self.n_hot} times)")
        return text

    def advice(self) -> str:
        """What to change when the guard stopped a run, by what tripped it."""
        if self.n_hot > self._hot_armed_at:
            return ("the run heats up: the integrator does not follow the bias force (a kink in the bias, e.g. the edge "
                    "of truncated OPES kernels, or a CV too steep for the time step): use untruncated kernels "
                    "(kernel_cutoff), a smaller time step, wider sigma, or a smoother CV")
        return ("the bias or the CV is too steep here: lower the bias (height, barrier), widen sigma, add walls, or use "
                "mode='cap'")

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"counts": np.array([self.n_capped, self.n_evaluations_capped, self.max_seen_kjmol_nm, self.n_hot])}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        counts = np.asarray(state.get("counts", []), dtype=np.float64)
        if counts.size not in (3, 4):  # 3: saved before the temperature watch
            raise ValueError(f"guard: expected state 'counts' of 3 or 4 values, found {counts.tolist()}")
        self.n_capped, self.n_evaluations_capped = int(counts[0]), int(counts[1])
        self.max_seen_kjmol_nm = float(counts[2])
        self.n_hot = int(counts[3]) if counts.size == 4 else 0
        self.rearm()


def degrees_of_freedom(system) -> int:
    """3N minus the constraints minus 3 when a ``CMMotionRemover`` removes the centre-of-mass motion (as OpenMM's
    ``StateDataReporter``); massless (fixed) particles do not move."""
    import openmm

    moving = sum(1 for i in range(system.getNumParticles()) if system.getParticleMass(i).value_in_unit(unit.dalton) > 0)
    cm = any(isinstance(system.getForce(k), openmm.CMMotionRemover) for k in range(system.getNumForces()))
    return 3 * moving - system.getNumConstraints() - (3 if cm else 0)
