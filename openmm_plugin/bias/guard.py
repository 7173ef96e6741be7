"""A cap on the bias force per atom: a learned CV can have huge gradients off its training data (issue 17).

A steep bias times a steep CV gives forces that blow a simulation up in a few steps, long before a NaN
shows in the CV. :class:`ForceGuard` sits in the PythonForce route's computation path (``BiasCallback`` calls
``guard.apply(forces)`` on every evaluation): atoms whose bias force exceeds ``max_force_kjmol_nm`` get it scaled
down to the cap (direction kept), and every capped atom-evaluation is counted. ``mode="cap"`` keeps running
(the count goes to the COLVAR column ``guard.capped`` and the log); ``mode="stop"`` also caps (a force call must
return finite forces), and :class:`openmm_plugin.bias.BiasRunner` then saves a restartable state and raises
:class:`cvlearn.errors.RunError` within ``check_every_steps`` steps. Capping changes the dynamics (forces are
no longer -∇V): a run with capped forces is not a faithful biased ensemble, which is why the count is reported.
"""

from __future__ import annotations

import numpy as np

MODES = ("cap", "stop")


class ForceGuard:
    """Caps per-atom bias forces at ``max_force_kjmol_nm`` and counts how often it did.

    Parameters
    ----------
    max_force_kjmol_nm : float
        Largest allowed norm of one atom's bias force, kJ/mol/nm (> 0).
    mode : {"cap", "stop"}
        ``"cap"``: cap and continue; ``"stop"``: cap, and the runner stops the run (restartable state + RunError).
    check_every_steps : int
        Steps between the runner's checks of a tripped ``"stop"`` guard.
    """

    label = "guard"

    def __init__(self, max_force_kjmol_nm: float, mode: str = "cap", check_every_steps: int = 100):
        if not np.isfinite(max_force_kjmol_nm) or max_force_kjmol_nm <= 0:
            raise ValueError(f"max_force_kjmol_nm: expected a positive finite force cap, found {max_force_kjmol_nm!r}")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, found {mode!r}")
        if isinstance(check_every_steps, bool) or int(check_every_steps) != check_every_steps or check_every_steps < 1:
            raise ValueError(f"check_every_steps: expected a positive integer, found {check_every_steps!r}")
        self.max_force_kjmol_nm = float(max_force_kjmol_nm)
        self.mode = mode
        self.check_every_steps = int(check_every_steps)
        self.n_capped = 0  # atom-evaluations capped since the start (or the last restore of a runner)
        self.n_evaluations_capped = 0  # force evaluations with at least one capped atom
        self.max_seen_kjmol_nm = 0.0  # largest uncapped per-atom bias force seen
        self._armed_at = 0  # n_capped when the guard was (re)armed: a restored run stops only on new caps

    @property
    def tripped(self) -> bool:
        """A ``"stop"`` guard that capped at least once: the runner stops the run."""
        return self.mode == "stop" and self.n_capped > self._armed_at

    def rearm(self) -> None:
        """Count only caps from now on towards ``tripped`` (after a restore)."""
        self._armed_at = self.n_capped

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
        return (f"bias force guard ({self.mode}, cap {self.max_force_kjmol_nm:g} kJ/mol/nm): {self.n_capped} atom "
                f"forces capped in {self.n_evaluations_capped} evaluations; largest bias force "
                f"{self.max_seen_kjmol_nm:.4g} kJ/mol/nm")

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"counts": np.array([self.n_capped, self.n_evaluations_capped, self.max_seen_kjmol_nm])}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        counts = np.asarray(state.get("counts", []), dtype=np.float64)
        if counts.size != 3:
            raise ValueError(f"guard: expected state 'counts' of 3 values, found {counts.tolist()}")
        self.n_capped, self.n_evaluations_capped = int(counts[0]), int(counts[1])
        self.max_seen_kjmol_nm = float(counts[2])
        self.rearm()
