"""A pre-training corpus the project makes itself: the 20 capped amino acids and a few short peptides, simulated.

Why: the shipped featurizer checkpoint must be reproducible offline by one command, without PCQM4Mv2 or any
download. Every ACE-X-NME (X = each of the 20 standard residues, protonation as ``build_capped_peptide`` gives at
pH 7: Asp/Glu/Lys/Arg charged, His as the force field's default tautomer) plus a few short peptides is run through
short Langevin MD at several temperatures (amber99sb-ildn + native OBC, the alanine-dipeptide setup, Reference
platform). Hot runs (500, 800 K) widen the geometries beyond one basin, as the GNN meets them in biased MD.

Layout: ``<corpus>/<molecule>/T<K>_s<seed>.dcd`` + ``.pdb`` (``openmm_plugin.simulation.run_md`` output, skipped
when present; an unfinished run resumes from its checkpoint, so a killed build loses little) and
``<corpus>/corpus.json`` (settings, frame counts, CPU seconds).
``corpus_structures`` streams the frames back as ``Structure`` records in Å.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

from cvlearn.config import check_ranges

logger = logging.getLogger(__name__)

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# A few short peptides: backbone-backbone contacts, Pro/Gly turns and aromatic side chains next to each other.
SHORT_PEPTIDES = ("AAA", "GPGG", "YGGFL", "KTWE")
CORPUS_MANIFEST = "corpus.json"
CORPUS_FORMAT = "cvlearn-md-corpus-v1"


@dataclass(frozen=True)
class CorpusSpec:
    """What to simulate. Defaults: 24 molecules x 3 temperatures x 100 ps, a frame every 0.5 ps (14,400 frames)."""

    sequences: tuple[str, ...] = tuple(AMINO_ACIDS) + SHORT_PEPTIDES
    temperatures_k: tuple[float, ...] = (300.0, 500.0, 800.0)
    ps_per_run: float = 100.0
    frame_interval_ps: float = 0.5
    seed: int = 0

    def __post_init__(self):
        check_ranges(self, positive=("temperatures_k", "ps_per_run", "frame_interval_ps"), non_negative=("seed",))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["sequences"], d["temperatures_k"] = list(self.sequences), list(self.temperatures_k)
        return d


def molecule_name(sequence: str) -> str:
    return f"ACE-{sequence}-NME"


def build_corpus(out: str | Path, spec: CorpusSpec = CorpusSpec(), *, platform: str = "Reference",
                 progress: bool = True, checkpoint_interval_ps: float = 10.0) -> dict:
    """Simulate every (sequence, temperature) of ``spec`` into ``out`` and write the manifest; returns it.

    Runs whose DCD + PDB exist are skipped; an unfinished run resumes from its last checkpoint (one every
    ``checkpoint_interval_ps``, :func:`run_md`'s), appending to its trajectory, so a kill loses at most that much. Each run's cost (process CPU seconds, so a
    shared machine does not inflate it) is kept in ``<run>.cost.json``; the manifest sums them (``cpu_seconds``).
    """
    from cvlearn.progress import progress_bar

    from cvlearn.io import write_json_atomic
    from openmm_plugin.simulation import make_integrator, run_md
    from systems.alanine_dipeptide import FORCEFIELD_FILES, FRICTION_PER_PS, TIMESTEP_PS
    from systems.peptides import build_peptide_system

    if not spec.sequences or not spec.temperatures_k:
        raise ValueError(f"spec: expected at least one sequence and one temperature, found {spec}")
    if not spec.ps_per_run >= spec.frame_interval_ps > 0:
        raise ValueError(f"spec: expected ps_per_run >= frame_interval_ps > 0, found {spec.ps_per_run}, "
                         f"{spec.frame_interval_ps}")
    if not checkpoint_interval_ps > 0:
        raise ValueError(f"checkpoint_interval_ps: expected a positive number, found {checkpoint_interval_ps!r}")
    out = Path(out)
    n_steps = max(1, round(spec.ps_per_run / TIMESTEP_PS))
    interval = max(1, min(n_steps, round(spec.frame_interval_ps / TIMESTEP_PS)))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    runs = []
    jobs = [(s, t) for s in spec.sequences for t in spec.temperatures_k]
    bar = progress_bar(total=len(jobs), desc="corpus MD", unit="run", disable=not progress)
    try:
        for sequence in spec.sequences:
            name = molecule_name(sequence)
            molecule = None
            for k, temperature in enumerate(spec.temperatures_k):
                prefix = out / name / f"T{temperature:g}_s{spec.seed}"
                run_cpu0, run_wall0 = time.process_time(), time.perf_counter()
                if molecule is None and not (Path(f"{prefix}.dcd").exists() and Path(f"{prefix}.pdb").exists()):
                    molecule = build_peptide_system(sequence, name, FORCEFIELD_FILES, minimize=True)
                seed = spec.seed * 1000 + k
                result = run_md(
                    None if molecule is None else molecule.topology, None if molecule is None else molecule.system,
                    None if molecule is None else molecule.positions_nm,
                    make_integrator(temperature, FRICTION_PER_PS, TIMESTEP_PS, seed=seed) if molecule is not None else None,
                    out_prefix=prefix, n_steps=n_steps, report_interval_steps=interval, platform=platform,
                    seed=seed, temperature_k=temperature, progress=False, desc=f"MD {name} {temperature:g} K",
                    checkpoint_every_steps=max(1, round(checkpoint_interval_ps / TIMESTEP_PS)))
                cost_path = Path(f"{prefix}.cost.json")
                if not result.skipped:  # what this run cost, kept next to it so a resumed build still knows
                    write_json_atomic(cost_path, {"cpu_seconds": time.process_time() - run_cpu0,
                                                  "wall_seconds": time.perf_counter() - run_wall0,
                                                  "ms_per_step": result.ms_per_step})
                cost = json.loads(cost_path.read_text()) if cost_path.is_file() else {}
                runs.append({"molecule": name, "sequence": sequence, "temperature_k": temperature, "seed": seed,
                             "trajectory": str(result.trajectory_path.relative_to(out)),
                             "topology": str(result.topology_path.relative_to(out)),
                             "n_frames": result.n_frames, "skipped": result.skipped,
                             "cpu_seconds": cost.get("cpu_seconds"), "ms_per_step": cost.get("ms_per_step")})
                bar.update(1)
    finally:
        bar.close()
    manifest = {
        "format": CORPUS_FORMAT, "spec": spec.as_dict(), "forcefield": list(FORCEFIELD_FILES),
        "integrator": {"kind": "LangevinMiddle", "timestep_ps": TIMESTEP_PS, "friction_per_ps": FRICTION_PER_PS},
        "platform": platform, "runs": runs, "n_frames": sum(r["n_frames"] for r in runs),
        # CPU seconds of all runs (build, minimisation, MD, writing), also those done by an earlier, killed call;
        # None where a run's cost was not recorded.
        "cpu_seconds": (None if any(r["cpu_seconds"] is None for r in runs)
                        else sum(r["cpu_seconds"] for r in runs)),
        "cpu_seconds_this_call": time.process_time() - cpu0, "wall_seconds_this_call": time.perf_counter() - wall0,
        "resumed": any(r["skipped"] for r in runs),
    }
    write_json_atomic(out / CORPUS_MANIFEST, manifest)
    logger.info("corpus %s: %d runs, %d frames, %.0f CPU s in this call", out, len(runs), manifest["n_frames"],
                manifest["cpu_seconds_this_call"])
    return manifest


def read_manifest(corpus: str | Path) -> dict:
    path = Path(corpus) / CORPUS_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"corpus {corpus}: {CORPUS_MANIFEST} not found (build it with "
                                "`cvlearn pretrain --config ... --make-corpus`)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != CORPUS_FORMAT:
        raise ValueError(f"{path}: expected format {CORPUS_FORMAT!r}, found {manifest.get('format')!r}")
    return manifest


def corpus_structures(corpus: str | Path, *, heavy_atoms_only: bool = True, stride: int = 1,
                      split: str = "all", validation_every: int = 6) -> Iterator:
    """Stream the corpus' frames as ``Structure`` records (Å), trajectory by trajectory.

    ``split``: ``"all"``, ``"train"`` or ``"validation"``; validation holds every ``validation_every``-th
    trajectory of the manifest (whole trajectories, so correlated neighbouring frames never straddle the split).
    ``heavy_atoms_only``: the CV featurizers run on heavy atoms, so pre-training sees the same kind of graphs.
    """
    from cvlearn.data.splits import every_nth_split
    from cvlearn.structures.frames import trajectory_structures

    if split not in ("all", "train", "validation"):
        raise ValueError(f"split: expected 'all', 'train' or 'validation', found {split!r}")
    corpus = Path(corpus)
    runs = read_manifest(corpus)["runs"]
    train_ids, val_ids = every_nth_split(len(runs), validation_every)
    for i, run in enumerate(runs):
        if split == "all" or i in (val_ids if split == "validation" else train_ids):
            yield from trajectory_structures(corpus / run["trajectory"], corpus / run["topology"], stride=stride,
                                             selection="not element H" if heavy_atoms_only else None)


def describe(manifest: dict) -> str:
    """One line for checkpoint metadata."""
    spec = manifest["spec"]
    return (f"{len(spec['sequences'])} capped peptides ({', '.join(spec['sequences'])}) x "
            f"{', '.join(f'{t:g}' for t in spec['temperatures_k'])} K x {spec['ps_per_run']:g} ps, "
            f"frame every {spec['frame_interval_ps']:g} ps, {manifest['n_frames']} frames; "
            f"{'+'.join(manifest['forcefield'])}")


def tiny_spec(sequences: Sequence[str] = ("A", "G"), temperatures_k: Sequence[float] = (300.0, 800.0)) -> CorpusSpec:
    """A corpus for tests and --quick runs (seconds)."""
    return CorpusSpec(sequences=tuple(sequences), temperatures_k=tuple(temperatures_k), ps_per_run=5.0,
                      frame_interval_ps=0.25)
