"""What every bias on CV space is: V(s) in kJ/mol and dV/ds, plus (for adaptive ones) a state that grows.

Biases are plain objects holding float64 numpy state, independent of OpenMM and torch, so the same
object serves the PythonForce route (live state), the TorchScript route (a frozen snapshot through
``to_torch``), the reporter and the checkpoint. Several biases on the same CV add up in :class:`BiasSum`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def as_cv_vector(name: str, values, n_cvs: int | None = None) -> np.ndarray:
    """A float64 vector of per-CV parameters; a scalar is broadcast to ``n_cvs`` entries.

    Parameters
    ----------
    name : str
        Parameter name, for the error message.
    values : float or sequence of float
        Scalar or ``[n_cvs]`` values, in the CVs' units; must be finite.
    n_cvs : int, optional
        Expected length (None: any length).

    Returns
    -------
    np.ndarray
        ``[n_cvs]`` float64.
    """
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if n_cvs is not None and array.size == 1 and n_cvs > 1:
        array = np.full(n_cvs, float(array[0]))
    if array.ndim != 1 or (n_cvs is not None and array.size != n_cvs):
        raise ValueError(f"{name}: expected {n_cvs if n_cvs is not None else 'a vector of'} values, found {values!r}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: expected finite values, found {values!r}")
    return array


def periods_vector(periods, n_cvs: int) -> np.ndarray:
    """Per-CV period (0 = not periodic) from None, a scalar or a sequence with None entries.

    Parameters
    ----------
    periods : None, float or sequence of (float or None)
        Periods in CV units (e.g. 2π for a torsion in radians); None or 0 means not periodic.
    n_cvs : int
        Number of CV components.

    Returns
    -------
    np.ndarray
        ``[n_cvs]`` float64 periods, >= 0.
    """
    if periods is None:
        return np.zeros(n_cvs)
    if np.isscalar(periods):
        periods = [periods] * n_cvs
    periods = [0.0 if p is None else float(p) for p in periods]
    if len(periods) != n_cvs or any(p < 0 for p in periods):
        raise ValueError(f"periods: expected {n_cvs} non-negative periods (None or 0 = not periodic), found {periods}")
    return np.asarray(periods, dtype=np.float64)


def wrap_difference(d: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Minimum-image difference along periodic CVs (periods > 0), unchanged along the others.

    Parameters
    ----------
    d : np.ndarray
        Differences ``[..., n_cvs]`` in CV units.
    periods : np.ndarray
        ``[n_cvs]`` periods (0 = not periodic), broadcast against ``d``.

    Returns
    -------
    np.ndarray
        ``d`` wrapped into ``[-period/2, period/2]`` along periodic components; same shape.
    """
    if not np.any(periods > 0):
        return d
    safe = np.where(periods > 0, periods, 1.0)
    return np.where(periods > 0, d - safe * np.round(d / safe), d)


def grid_points(axes: Sequence[np.ndarray], n_cvs: int) -> np.ndarray:
    """``[n_points, n_cvs]`` points of the grid ``axes[0] x axes[1] x ...`` in C order (``ij`` indexing)."""
    if len(axes) != n_cvs:
        raise ValueError(f"axes: expected {n_cvs} grid axes (one per CV), found {len(axes)}")
    mesh = np.meshgrid(*[np.asarray(a, dtype=np.float64) for a in axes], indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


class Bias:
    """A bias potential on an ``n_cvs``-dimensional CV. Static biases only implement ``energy_and_gradient``.

    Parameters
    ----------
    n_cvs : int
        Dimension of the CV vector it acts on.
    label : str
        Name of the bias: prefix of its COLVAR fields and of its walker files.
    """

    adaptive = False

    def __init__(self, n_cvs: int, label: str):
        if int(n_cvs) < 1:
            raise ValueError(f"n_cvs: expected >= 1, found {n_cvs}")
        self.n_cvs = int(n_cvs)
        self.label = str(label)

    def check_cv(self, s) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if s.size != self.n_cvs:
            raise ValueError(f"{self.label}: expected a CV vector of {self.n_cvs} values, found {s.size}")
        return s

    def energy_and_gradient(self, s: np.ndarray) -> tuple[float, np.ndarray]:
        """V(s) in kJ/mol and dV/ds ``[n_cvs]``."""
        raise NotImplementedError

    def update(self, s: np.ndarray, step: int) -> bool:
        """Deposit at ``step`` if it is due; returns whether the bias changed. Static biases never change."""
        return False

    def state_dict(self) -> dict[str, np.ndarray]:
        return {}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        pass

    def colvar_values(self) -> dict[str, float]:
        """Extra COLVAR components (e.g. ``rct``, ``zed``, ``neff``), unprefixed."""
        return {}

    def to_torch(self) -> torch.nn.Module:
        """A scriptable module ``s [n_cvs] -> V`` equal to this bias *now* (a frozen snapshot)."""
        raise NotImplementedError(f"{type(self).__name__} has no TorchScript form")

    def energy_on_grid(self, axes: Sequence[np.ndarray]) -> np.ndarray:
        """V (kJ/mol) at every point of the grid ``axes[0] x axes[1] x ...``: the table of the native route.

        This generic version calls :meth:`energy_and_gradient` point by point (fine for static biases, which
        :class:`openmm_plugin.bias.native.NativeBiasForce` tabulates once); adaptive biases vectorise it.

        Parameters
        ----------
        axes : sequence of np.ndarray
            ``n_cvs`` 1-D arrays of grid coordinates, CV units.

        Returns
        -------
        np.ndarray
            ``[len(axes[0]), len(axes[1]), ...]`` float64 (``ij`` indexing).
        """
        points = grid_points(axes, self.n_cvs)
        return np.array([self.energy_and_gradient(p)[0] for p in points]).reshape([len(a) for a in axes])

    def leaves(self) -> list["Bias"]:
        return [self]

    def acts_on(self) -> tuple[int, ...]:
        """The CV components whose dV/ds can be non-zero (``components`` of an :class:`OnComponents`, else all):
        a compiled CV differentiates only these."""
        return tuple(sorted(getattr(self, "components", range(self.n_cvs))))


class AdaptiveBias(Bias):
    """A bias that deposits kernels every ``pace_steps`` and can share them with other walkers.

    Each deposition is one row of ``records`` (bias-specific columns); other walkers' rows are replayed
    with :meth:`apply_records`, which is how multiple walkers share one bias through files.

    Parameters
    ----------
    n_cvs : int
        Dimension of the CV vector.
    label : str
        COLVAR field and walker-file prefix.
    pace_steps : int
        Steps between depositions (``simulation.currentStep`` units: outer steps with MTS).
    """

    adaptive = True

    def __init__(self, n_cvs: int, label: str, pace_steps: int):
        super().__init__(n_cvs, label)
        if isinstance(pace_steps, bool) or int(pace_steps) != pace_steps or pace_steps < 1:
            raise ValueError(f"{label}: pace_steps: expected a positive integer, found {pace_steps!r}")
        self.pace_steps = int(pace_steps)
        self.records = np.zeros((0, self.record_width()), dtype=np.float64)

    def record_width(self) -> int:
        raise NotImplementedError

    def new_record(self, s: np.ndarray) -> np.ndarray:
        """The row this walker deposits at CV value ``s`` (computed from the current bias)."""
        raise NotImplementedError

    def apply_record(self, row: np.ndarray) -> None:
        raise NotImplementedError

    def update(self, s: np.ndarray, step: int) -> bool:
        if step <= 0 or step % self.pace_steps:
            return False
        row = self.new_record(self.check_cv(s))
        self.records = np.vstack([self.records, row[None, :]])
        self.apply_record(row)
        self.after_records()
        return True

    def apply_records(self, rows: np.ndarray) -> None:
        """Replay other walkers' depositions."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, self.record_width())
        for row in rows:
            self.apply_record(row)
        if len(rows):
            self.after_records()

    def after_records(self) -> None:
        """Hook after a batch of rows (e.g. OPES recomputes its normalisation Z)."""


class BiasSum(Bias):
    """Several biases on the same CV vector (e.g. OPES + walls); energies and gradients add.

    Parameters
    ----------
    biases : sequence of Bias
        Biases on the same ``n_cvs``, with unique labels.
    label : str
        Label of the sum.
    """

    def __init__(self, biases: Sequence[Bias], label: str = "bias"):
        biases = list(biases)
        if not biases:
            raise ValueError("BiasSum: expected at least one bias, found none")
        n_cvs = {b.n_cvs for b in biases}
        if len(n_cvs) != 1:
            raise ValueError(f"BiasSum: all biases must act on the same number of CVs, found {sorted(n_cvs)}")
        labels = [leaf.label for b in biases for leaf in b.leaves()]
        if len(set(labels)) != len(labels):
            raise ValueError(f"BiasSum: bias labels must be unique (they name COLVAR fields and files), found {labels}")
        super().__init__(n_cvs.pop(), label)
        self.biases = biases
        self.adaptive = any(b.adaptive for b in biases)

    def leaves(self) -> list[Bias]:
        return [leaf for b in self.biases for leaf in b.leaves()]

    def acts_on(self) -> tuple[int, ...]:
        return tuple(sorted({c for b in self.biases for c in b.acts_on()}))

    def energy_and_gradient(self, s):
        s = self.check_cv(s)
        total, grad = 0.0, np.zeros(self.n_cvs)
        for b in self.biases:
            v, g = b.energy_and_gradient(s)
            total += v
            grad += g
        return total, grad

    def update(self, s, step):
        changed = False
        for b in self.biases:
            changed |= b.update(s, step)
        return changed

    def state_dict(self):
        return {f"{b.label}/{k}": v for b in self.leaves() for k, v in b.state_dict().items()}

    def load_state_dict(self, state):
        for b in self.leaves():
            prefix = b.label + "/"
            b.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def to_torch(self):
        return TorchBiasSum([b.to_torch() for b in self.biases])

    def energy_on_grid(self, axes):
        return sum(b.energy_on_grid(axes) for b in self.biases)


class TorchBiasSum(torch.nn.Module):
    """Sum of frozen bias modules: the TorchScript form of :class:`BiasSum`, ``s [n_cvs] -> V`` (kJ/mol).

    Parameters
    ----------
    modules : sequence of torch.nn.Module
        Scriptable terms, each ``s [n_cvs] -> scalar`` energy in kJ/mol.
    """

    def __init__(self, modules: Sequence[torch.nn.Module]):
        super().__init__()
        self.terms = torch.nn.ModuleList(modules)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        total = torch.zeros((), dtype=s.dtype, device=s.device)
        for term in self.terms:
            total = total + term(s)
        return total


def torch_wrap_difference(d: torch.Tensor, periods: torch.Tensor) -> torch.Tensor:
    """Minimum image along CVs with ``periods > 0`` (TorchScript counterpart of :func:`wrap_difference`).

    Parameters
    ----------
    d : torch.Tensor
        Differences ``[..., n_cvs]`` in CV units.
    periods : torch.Tensor
        ``[n_cvs]`` periods (0 = not periodic).

    Returns
    -------
    torch.Tensor
        Wrapped differences, same shape as ``d``.
    """
    safe = torch.where(periods > 0, periods, torch.ones_like(periods))
    return torch.where(periods > 0, d - safe * torch.round(d / safe), d)


class OnComponents(Bias):
    """A bias on some components of a larger CV vector (e.g. OPES on component 0 of a 2-D learned CV).

    Parameters
    ----------
    bias : Bias
        The bias on ``len(components)`` CVs.
    components : sequence of int
        Indices into the full CV vector.
    n_cvs : int
        Dimension of the full CV vector.
    """

    def __init__(self, bias: Bias, components, n_cvs: int):
        components = [int(c) for c in components]
        if len(components) != bias.n_cvs or len(set(components)) != len(components) or \
                any(not 0 <= c < n_cvs for c in components):
            raise ValueError(f"components: expected {bias.n_cvs} distinct indices in [0, {n_cvs}) for {bias.label!r}, "
                             f"found {components}")
        super().__init__(n_cvs, bias.label)
        self.inner = bias
        self.components = components
        self.adaptive = bias.adaptive
        self.pace_steps = getattr(bias, "pace_steps", None)

    def energy_and_gradient(self, s):
        s = self.check_cv(s)
        v, g = self.inner.energy_and_gradient(s[self.components])
        full = np.zeros(self.n_cvs)
        full[self.components] = g
        return v, full

    def update(self, s, step):
        return self.inner.update(self.check_cv(s)[self.components], step)

    def leaves(self):
        return [self]

    def __getattr__(self, name):  # records, apply_records, colvar_values, ... of the inner bias
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def colvar_values(self):
        return self.inner.colvar_values()

    def to_torch(self):
        return _TorchOnComponents(self.inner.to_torch(), self.components)

    def energy_on_grid(self, axes):
        if len(axes) != self.n_cvs:
            raise ValueError(f"axes: expected {self.n_cvs} grid axes (one per CV), found {len(axes)}")
        sub = self.inner.energy_on_grid([axes[c] for c in self.components])
        sub = sub.transpose(np.argsort(self.components))  # its axes in increasing component order
        shape = [len(axes[i]) if i in self.components else 1 for i in range(self.n_cvs)]
        return np.broadcast_to(sub.reshape(shape), [len(a) for a in axes]).copy()


class _TorchOnComponents(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, components):
        super().__init__()
        self.inner = inner
        self.register_buffer("components", torch.as_tensor(list(components), dtype=torch.long))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.inner(s.index_select(0, self.components))
