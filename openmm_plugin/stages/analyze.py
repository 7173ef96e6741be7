"""``cvlearn analyze``: COLVAR files of biased walkers → reweighted free energies with block error bars.

Each frame gets the weight exp(β(V − c)) (metadynamics, Tiwary–Parrinello c(t) from the ``<label>.rct`` column) or
exp(βV) (OPES), all from :mod:`cvlearn.analysis.reweighting`; walkers are pooled by concatenating their log-weights.
Error bars come from contiguous time blocks (block b of every walker together): the standard error of the n_blocks
block estimates. Optional trajectories (one per COLVAR, frame k = row k) add mdtraj torsions and distances as
fields, reweighted the same way. Everything is validated (files, fields, regions) before any free energy is computed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Optional

import numpy as np

from cvlearn.analysis.plots import plot_delta_f_against_time, plot_fes_2d, plot_profile_with_error
from cvlearn.analysis.reweighting import (delta_f_kjmol, free_energy_profile, free_energy_surface,
                                          log_weights_from_bias, weights_from_log)
from cvlearn.config import check_input_file, check_output_dir, check_ranges
from cvlearn.data.colvar import read_colvar
from cvlearn.io import write_json_atomic, write_text_atomic
from cvlearn.units import kt_kjmol

logger = logging.getLogger(__name__)

METHODS = ("opes", "metad")


@dataclass(frozen=True)
class AnalyzeConfig:
    """Settings of ``cvlearn analyze`` (energies kJ/mol, temperature K, times ps).

    ``regions`` maps a region name to ``{field: [min, max]}`` intervals (a frame is inside when every listed
    field lies in its closed interval); ΔF is reported for every pair of regions, in the order given.
    """

    colvars: tuple[str, ...] = ()  # one COLVAR per walker, written by ``cvlearn bias`` (or PLUMED)
    fields: tuple[str, ...] = ()  # 1 or 2 COLVAR fields to build F over
    out: str = "runs/analyze"
    temperature_k: float = 300.0
    method: str = "opes"  # "opes": w = exp(βV); "metad": w = exp(β(V − c(t)))
    bias_field: Optional[str] = None  # default: `bias`, else the only `<label>.bias`
    rct_field: Optional[str] = None  # metad only; default: the `.rct` column next to the bias label
    skip_fraction: float = 0.1  # of each walker's frames dropped as transient
    bins: int = 50
    n_blocks: int = 5
    n_time_points: int = 10  # prefixes of the run for ΔF(t)
    regions: Optional[dict] = None
    trajectories: tuple[str, ...] = ()  # optional, one per COLVAR: frame k is COLVAR row k
    topology: Optional[str] = None  # PDB (or any mdtraj topology) of the trajectories
    torsions: Optional[dict] = None  # name: [i, j, k, l] atom indices -> a field in radians
    distances: Optional[dict] = None  # name: [i, j] atom indices -> a field in nm

    def __post_init__(self):
        if not self.colvars:
            raise ValueError("colvars: expected one or more COLVAR files, found none")
        if not 1 <= len(self.fields) <= 2:
            raise ValueError(f"fields: expected 1 or 2 COLVAR field names, found {list(self.fields)}")
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, found {self.method!r}")
        check_ranges(self, positive=("temperature_k",), at_least_one=("bins", "n_time_points"),
                     fraction=("skip_fraction",))
        if isinstance(self.n_blocks, bool) or not isinstance(self.n_blocks, int) or self.n_blocks < 2:
            raise ValueError(f"n_blocks: expected an integer >= 2, found {self.n_blocks!r}")
        if self.trajectories and len(self.trajectories) != len(self.colvars):
            raise ValueError(f"trajectories: expected one per COLVAR ({len(self.colvars)}), "
                             f"found {len(self.trajectories)}")
        if self.trajectories and not self.topology:
            raise ValueError("topology: expected the topology of the trajectories, found none")
        if (self.torsions or self.distances) and not self.trajectories:
            raise ValueError("trajectories: expected trajectory files for torsions/distances, found none")
        for key, size in (("torsions", 4), ("distances", 2)):
            for name, atoms in (getattr(self, key) or {}).items():
                if (not isinstance(atoms, (list, tuple)) or len(atoms) != size
                        or not all(isinstance(a, int) and not isinstance(a, bool) and a >= 0 for a in atoms)):
                    raise ValueError(f"{key}.{name}: expected {size} atom indices, found {atoms!r}")
        for name, box in (self.regions or {}).items():
            if not isinstance(box, dict) or not box:
                raise ValueError(f"regions.{name}: expected a mapping field: [min, max], found {box!r}")
            for field_name, interval in box.items():
                if (not isinstance(interval, (list, tuple)) or len(interval) != 2
                        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in interval)
                        or not interval[0] < interval[1]):
                    raise ValueError(f"regions.{name}.{field_name}: expected [min, max] with min < max, "
                                     f"found {interval!r}")


@dataclass
class _Walker:
    path: Path
    columns: dict  # field -> [n_frames] after the skip
    log_w: np.ndarray  # [n_frames]


def _bias_field(config: AnalyzeConfig, path: Path, names: list[str]) -> str:
    if config.bias_field is not None:
        if config.bias_field not in names:
            raise ValueError(f"{path}: bias_field: expected one of the fields {names}, found {config.bias_field!r}")
        return config.bias_field
    if "bias" in names:
        return "bias"
    labelled = [n for n in names if n.endswith(".bias")]
    if len(labelled) != 1:
        raise ValueError(f"{path}: expected a bias column (`bias` or `<label>.bias`), found fields {names}")
    return labelled[0]


def _rct_field(config: AnalyzeConfig, path: Path, names: list[str], bias: str) -> str:
    leaves = [n[:-len(".bias")] for n in names if n.endswith(".bias")]
    if config.rct_field is not None:
        candidates = [config.rct_field]
    elif bias.endswith(".bias"):
        candidates = [bias[:-len(".bias")] + ".rct"]
    else:  # the total bias: c(t) of its one leaf; with several leaves, rct_field must say which
        candidates = [f"{leaf}.rct" for leaf in leaves if f"{leaf}.rct" in names]
    if len(candidates) != 1 or candidates[0] not in names:
        raise ValueError(f"{path}: method metad: expected a c(t) column (`<label>.rct`, or set rct_field), "
                         f"found fields {names}")
    return candidates[0]


def _load_walkers(config: AnalyzeConfig) -> list[_Walker]:
    """Read and check every COLVAR (fields, bias, c(t), regions) before any free energy is computed."""
    paths = [check_input_file(p, "colvars", "COLVAR file") for p in config.colvars]
    walkers = []
    for path in paths:
        columns = read_colvar(path)
        bias = _bias_field(config, path, list(columns))
        if config.trajectories:
            columns.update(_observables(config, config.trajectories[len(walkers)], path, columns))
        names = list(columns)
        needed = list(config.fields) + [f for box in (config.regions or {}).values() for f in box]
        for name in needed:
            if name not in names:
                raise ValueError(f"{path}: expected the field {name!r} (fields/regions), found fields {names}")
        rct = columns[_rct_field(config, path, names, bias)] if config.method == "metad" else None
        n = len(columns[bias])
        start = int(config.skip_fraction * n)
        if n - start < config.n_blocks:
            raise ValueError(f"{path}: expected at least n_blocks={config.n_blocks} frames after skipping "
                             f"{start}, found {n - start}")
        log_w = log_weights_from_bias(columns[bias][start:], config.temperature_k,
                                      None if rct is None else rct[start:])
        walkers.append(_Walker(path, {k: v[start:] for k, v in columns.items()}, log_w))
    return walkers


def unvisited_regions(walkers, config) -> list[str]:
    """Regions no kept frame lies in: their ΔF is undefined (null) and said so, not an error, because analysing a
    run that is still going (or a short one) is normal; a typo in a region (degrees for radians) shows here too."""
    names = [name for name, box in (config.regions or {}).items()
             if not any(_in_region(w.columns, box).any() for w in walkers)]
    for name in names:
        logger.warning("regions.%s: no frame inside %s among %d frames: its ΔF is undefined (null)", name,
                       config.regions[name], sum(len(w.log_w) for w in walkers))
    return names


def _observables(config: AnalyzeConfig, traj_path: str, colvar_path: Path, columns: dict) -> dict:
    """Torsions (rad) and distances (nm) per trajectory frame, as extra fields reweighted like the CVs."""
    import mdtraj

    from cvlearn.data.trajectories import load_trajectories

    check_input_file(traj_path, "trajectories", "trajectory")
    check_input_file(config.topology, "topology", "topology")
    traj = load_trajectories([traj_path], config.topology)[0]
    n_rows = len(next(iter(columns.values())))
    if traj.n_frames != n_rows:
        raise ValueError(f"{traj_path}: expected {n_rows} frames (one per row of {colvar_path}), "
                         f"found {traj.n_frames}")
    extra = {}
    for key, compute in (("torsions", mdtraj.compute_dihedrals), ("distances", mdtraj.compute_distances)):
        for name, atoms in (getattr(config, key) or {}).items():
            if name in columns:
                raise ValueError(f"{key}.{name}: expected a name not already a field of {colvar_path}, found it")
            if max(atoms) >= traj.n_atoms:
                raise ValueError(f"{key}.{name}: expected atom indices < {traj.n_atoms}, found {list(atoms)}")
            extra[name] = compute(traj, np.array([atoms]))[:, 0].astype(np.float64)
    return extra


def _in_region(columns: dict, box: dict) -> np.ndarray:
    inside = np.ones(len(next(iter(columns.values()))), dtype=bool)
    for name, (lo, hi) in box.items():
        inside &= (columns[name] >= lo) & (columns[name] <= hi)
    return inside


def _pool(walkers: list[_Walker], select) -> tuple[dict, np.ndarray]:
    """Concatenated columns and normalised weights of the frames ``select(n_frames)`` picks in each walker."""
    picks = [select(len(w.log_w)) for w in walkers]
    columns = {k: np.concatenate([w.columns[k][p] for w, p in zip(walkers, picks)]) for k in walkers[0].columns
               if all(k in w.columns for w in walkers)}
    return columns, weights_from_log(np.concatenate([w.log_w[p] for w, p in zip(walkers, picks)]))


def _block(b: int, n_blocks: int):
    return lambda n: slice(b * n // n_blocks, (b + 1) * n // n_blocks)


def _delta_fs(columns: dict, weights: np.ndarray, config: AnalyzeConfig) -> dict[str, float]:
    regions = config.regions or {}
    masks = {name: _in_region(columns, box) for name, box in regions.items()}
    return {f"{a}-{b}": delta_f_kjmol(masks[a], masks[b], weights, config.temperature_k)
            for a, b in combinations(regions, 2)}


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined ΔF (a region without weight) is null."""
    return float(value) if np.isfinite(value) else None


def _probabilities(fes: np.ndarray, kt: float) -> np.ndarray:
    p = np.nan_to_num(np.exp(-fes / kt), nan=0.0)
    return p / p.sum()


def run_analyze(config: AnalyzeConfig) -> dict:
    """Reweighted F over 1 or 2 fields, ΔF between regions (whole run and against time), block errors.

    Parameters
    ----------
    config : AnalyzeConfig

    Returns
    -------
    dict
        ``deltaF`` (per region pair ``"A-B"`` = F(A) − F(B): ``{"kjmol", "stderr_kjmol", "blocks_kjmol"}``),
        ``n_frames``, ``n_walkers`` and ``outputs`` (file names in ``config.out``).
    """
    out = check_output_dir(config.out, "out")
    walkers = _load_walkers(config)
    unvisited = unvisited_regions(walkers, config)
    kt = kt_kjmol(config.temperature_k)
    columns, weights = _pool(walkers, lambda n: slice(0, n))
    blocks = [_pool(walkers, _block(b, config.n_blocks)) for b in range(config.n_blocks)]
    ranges = {f: (float(columns[f].min()), float(columns[f].max())) for f in config.fields}
    outputs = []

    for f in config.fields:  # 1-D profiles with the block standard error of F from that of P
        fes, x = free_energy_profile(columns[f], weights, config.temperature_k, config.bins, ranges[f])
        p_blocks = np.array([_probabilities(free_energy_profile(c[f], w, config.temperature_k, config.bins,
                                                                ranges[f])[0], kt) for c, w in blocks])
        with np.errstate(divide="ignore", invalid="ignore"):
            err = kt * p_blocks.std(axis=0, ddof=1) / np.sqrt(config.n_blocks) / _probabilities(fes, kt)
        err[~np.isfinite(fes)] = np.nan
        name = f"fes_1d_{f}.dat"
        _write_table(out / name, f"{f} F_kjmol stderr_kjmol", np.column_stack([x, fes, err]))
        plot_profile_with_error(x, fes, err, out / f"fes_1d_{f}.png", xlabel=f)
        outputs += [name, f"fes_1d_{f}.png"]
    if len(config.fields) == 2:
        fx, fy = config.fields
        fes2, xe, ye = free_energy_surface(columns[fx], columns[fy], weights, config.temperature_k, config.bins,
                                           (ranges[fx], ranges[fy]))
        xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
        grid = np.column_stack([np.repeat(xc, len(yc)), np.tile(yc, len(xc)), fes2.ravel()])
        _write_table(out / "fes_2d.dat", f"{fx} {fy} F_kjmol", grid)
        plot_fes_2d(fes2, xe, ye, out / "fes_2d.png", xlabel=fx, ylabel=fy)
        outputs += ["fes_2d.dat", "fes_2d.png"]

    delta = {}
    if config.regions and len(config.regions) >= 2:
        whole = _delta_fs(columns, weights, config)
        per_block = [_delta_fs(c, w, config) for c, w in blocks]
        for pair, value in whole.items():
            values = np.array([d[pair] for d in per_block])
            finite = values[np.isfinite(values)]  # a block that missed a region has no ΔF of its own
            stderr = float(np.std(finite, ddof=1) / np.sqrt(finite.size)) if finite.size >= 2 else float("nan")
            delta[pair] = {"kjmol": _finite_or_none(value), "stderr_kjmol": _finite_or_none(stderr),
                           "n_blocks_used": int(finite.size), "blocks_kjmol": [_finite_or_none(v) for v in values]}
        times, series = _delta_f_against_time(walkers, config)
        _write_table(out / "deltaF_vs_time.dat", "time_ps " + " ".join(f"dF_{p}_kjmol" for p in series),
                     np.column_stack([times, *series.values()]))
        plot_delta_f_against_time(times, series, out / "deltaF_vs_time.png")
        outputs += ["deltaF_vs_time.dat", "deltaF_vs_time.png"]
    summary = {"deltaF": delta, "n_frames": int(len(weights)), "n_walkers": len(walkers),
               "temperature_k": config.temperature_k, "method": config.method,
               "effective_sample_size": float(1.0 / np.sum(weights ** 2)), "unvisited_regions": unvisited}
    write_json_atomic(out / "deltaF.json", summary)
    outputs += ["deltaF.json", "report.md"]
    summary["outputs"] = outputs
    write_text_atomic(out / "report.md", _report(config, summary))
    return summary


def _delta_f_against_time(walkers, config) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """ΔF from the first k/n_time_points of every walker's kept frames, reweighted like the whole run."""
    times, series = [], {}
    for k in range(1, config.n_time_points + 1):
        columns, weights = _pool(walkers, lambda n, k=k: slice(0, max(1, k * n // config.n_time_points)))
        stop = max(1, k * len(walkers[0].log_w) // config.n_time_points)
        times.append(float(walkers[0].columns["time"][stop - 1]) if "time" in walkers[0].columns else float(stop))
        for pair, value in _delta_fs(columns, weights, config).items():
            series.setdefault(pair, []).append(value)
    return np.array(times), {p: np.array(v) for p, v in series.items()}


def _write_table(path: Path, header: str, rows: np.ndarray) -> None:
    lines = [f"# {header}"] + [" ".join(f"{v:.8g}" for v in row) for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n")


def _report(config: AnalyzeConfig, summary: dict) -> str:
    lines = ["# cvlearn analyze", "",
             f"{summary['n_walkers']} walker(s), {summary['n_frames']} frames after skipping "
             f"{config.skip_fraction:.0%} of each; method `{config.method}`, T = {config.temperature_k} K; "
             f"effective sample size {summary['effective_sample_size']:.1f}; errors: standard error over "
             f"{config.n_blocks} time blocks.", ""]
    if summary["deltaF"]:
        lines += ["| ΔF = F(A) − F(B) | kJ/mol ± block standard error |", "|---|---|"]
        lines += [f"| {pair} | {_fmt(d['kjmol'])} ± {_fmt(d['stderr_kjmol'])} ({d['n_blocks_used']} blocks) |"
                  for pair, d in summary["deltaF"].items()]
        lines += ["", "![ΔF against time](deltaF_vs_time.png)", ""]
    if summary["unvisited_regions"]:
        lines += [f"No frame lies in region(s) {', '.join(summary['unvisited_regions'])}: their ΔF is undefined.", ""]
    lines += [f"![F({f})](fes_1d_{f}.png)" for f in config.fields]
    if len(config.fields) == 2:
        lines.append("![F 2-D](fes_2d.png)")
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
