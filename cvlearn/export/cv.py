"""Export a trained CV chain as one self-contained TorchScript module (the contract with the MD engine).

``forward(positions [n_particles, 3] in nm, float32 or float64, box [3, 3] nm or None) -> CVs [n_cvs]`` in the
positions' dtype. A periodic CV (``periodic=True`` at export, for explicit-solvent Systems) needs the box and makes
its molecule whole first (:mod:`cvlearn.export.whole`); a non-periodic one ignores a box, so engines can always
pass it.
The module carries its atom indices, so the engine passes all particles and nobody slices by hand; its
neighbour search is plain torch, so it loads in a process that never imported torchmd-net. The typed contract
(:class:`~cvlearn.export.spec.CVSpec`: selection, elements, residue map, lag, training range, featurizer
identity, versions) travels inside the file as ``cvlearn.json``.

Only the network runs in the export dtype: a VAMP projection stays in float64 (where the estimator computed it)
and its output is cast straight to the positions' dtype, so a float64 caller gets no float32 rounding of the
projection or of the CVs.

The file also carries the same module in eager form (``cvlearn_eager.pt``, a pickled ``nn.Module``): a Python
host (the PythonForce route) can ``torch.compile`` it, which TorchScript cannot be. Its forward + backward on
ala2 (2-layer dense ET) took 0.70 ms against 2.01 ms for the TorchScript module (1 thread, bias_speed): the
TorchScript autograd dispatches ~1,100 tiny ops per call, inductor fuses them into a few C++ kernels.
Unpickling runs code from the file, so :func:`load_eager_cv` is for files you trust (your own exports).
"""

from __future__ import annotations

import copy
import io
import json
import zipfile
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from cvlearn.export.spec import CVSpec, featurizer_identity, lag_times, package_versions, selection_of
from cvlearn.export.whole import MakeWhole, topology_bonds
from cvlearn.io import atomic_path
from cvlearn.models.cv import VAMPModel

METADATA_FILE = "cvlearn.json"
EAGER_FILE = "cvlearn_eager.pt"  # the same ExportedCV as a pickled nn.Module, for torch.compile in Python hosts
DENSE_MAX_ATOMS = 64  # dense pair tensors cost n^2 memory; above this the edge-list ET is the better trade


def swap_in_dense_et(model: torch.nn.Module, max_atoms: int = DENSE_MAX_ATOMS) -> list[str]:
    """Replace every small ``ETFeaturizer`` inside ``model`` by its ``DenseETFeaturizer`` (same function, fewer ops).

    Why at export: training batches many frames, where the edge-list ET is efficient; MD evaluates one frame per
    step, where op count is the cost. The featurizer of a sliding-window embedder is left alone: it runs graphs
    of different elements (one per window), while the dense ET precomputes the terms of one element list.

    Parameters
    ----------
    model : torch.nn.Module
        Modified in place.
    max_atoms : int
        Largest featurizer (atoms) to swap; dense pair tensors cost ``n_atoms**2`` memory.

    Returns
    -------
    list of str
        Names of the replaced submodules.
    """
    from cvlearn.nn.featurizers.dense_et import DenseETFeaturizer
    from cvlearn.nn.featurizers.equivariant_transformer import ETFeaturizer
    from cvlearn.nn.windows import WindowTokens

    swapped = []
    for name, parent in list(model.named_modules()):
        if isinstance(parent, WindowTokens):
            continue
        for child_name, child in list(parent.named_children()):
            if isinstance(child, ETFeaturizer) and child.n_atoms <= max_atoms and child.gnn.neighbor_embedding is None:
                setattr(parent, child_name, DenseETFeaturizer(child))
                swapped.append(f"{name}.{child_name}" if name else child_name)
    return swapped


def _checked_indices(atom_indices: Sequence[int], n_particles: int) -> torch.Tensor:
    indices = torch.as_tensor(list(atom_indices), dtype=torch.long)
    if indices.numel() == 0 or int(indices.min()) < 0 or int(indices.max()) >= n_particles:
        raise ValueError(f"atom_indices must lie in [0, {n_particles}), got {indices.tolist()}")
    return indices


class ProjectedCV(VAMPModel):
    """A VAMP model for export: the lobe in the export dtype, ``(y - mean) @ projection`` in float64.

    Returns float64; :class:`ExportedCV` casts once, to the caller's dtype. (``VAMPModel`` casts back to the
    lobe's dtype, which for a float32 export would round the projected CVs to float32.) Constructed like
    ``VAMPModel``; only ``forward`` differs: positions nm ``[n_frames, n_atoms, 3]`` → CVs ``[n_frames, n_cvs]``.

    Parameters
    ----------
    lobe : torch.nn.Module
        Frames → lobe outputs ``[n_frames, n_outputs]``, in the export dtype.
    mean, projection : Tensor
        ``[n_outputs]`` and ``[n_outputs, n_cvs]``, stored as float64.
    singular_values : Tensor
        ``[n_cvs]`` VAMP singular values (dimensionless).
    lagtime : int
        Lag time in frames the projection was fitted at.
    """

    def forward(self, x: Tensor) -> Tensor:
        return (self.lobe(x).to(torch.float64) - self.mean) @ self.projection


class ExportedCV(torch.nn.Module):
    """All particles' positions ``[n_particles, 3]`` (nm) → CVs ``[n_cvs]`` in the positions' dtype.

    Parameters
    ----------
    model : torch.nn.Module
        Selected positions ``[B, n_selected, 3]`` (nm) → ``[B, n_cvs]``; runs in the dtype of its parameters.
    atom_indices : sequence of int
        ``[n_selected]`` particle indices the model reads.
    n_particles : int
        Particles ``forward`` takes.
    n_cvs : int
        Components returned.
    periodic : bool
        Take box vectors and make the selection whole before the model (see :mod:`cvlearn.export.whole`).
    bonds : sequence of (int, int), optional
        Bonded pairs in selection order, the spanning tree's edges (periodic CVs only).
    """

    periodic = False  # class default (a bool): eager twins pickled before periodic CVs load as non-periodic

    def __init__(self, model: torch.nn.Module, atom_indices: Sequence[int], n_particles: int, n_cvs: int,
                 periodic: bool = False, bonds: Optional[Sequence[tuple[int, int]]] = None):
        super().__init__()
        indices = _checked_indices(atom_indices, n_particles)
        self.model = model
        self.n_particles = int(n_particles)
        self.n_cvs = int(n_cvs)
        self.periodic = bool(periodic)
        self.register_buffer("atom_indices", indices)
        # Zero-size tensor whose dtype is the model's: inputs are cast to it, outputs back to the input's.
        self.register_buffer("model_dtype", torch.zeros(0, dtype=next(model.parameters()).dtype))
        # A non-periodic CV carries an empty tree (TorchScript needs the submodule, not its n^2 path matrix).
        self.whole = MakeWhole(len(indices), bonds) if self.periodic else MakeWhole(0)

    def forward(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        if positions.dim() != 2 or positions.shape[0] != self.n_particles or positions.shape[1] != 3:
            raise RuntimeError(
                f"expected positions of shape [{self.n_particles}, 3] (all particles, nm), got {list(positions.shape)}"
            )
        return self.selected(positions.index_select(0, self.atom_indices), box)

    @torch.jit.export
    def selected(self, positions: Tensor, box: Optional[Tensor] = None) -> Tensor:
        """CVs from the positions of the selected atoms only ``[n_selected, 3]`` (nm); box ``[3, 3]`` nm or None."""
        if self.periodic:
            if box is None:
                raise RuntimeError("this CV is periodic and needs the box: pass box vectors, forward(positions_nm, "
                                   "box_nm [3, 3]), and on a TorchForce call setUsesPeriodicBoundaryConditions(True)")
            positions = self.whole(positions, box)
        cvs = self.model(positions.to(self.model_dtype.dtype).unsqueeze(0)).squeeze(0)
        return cvs.to(positions.dtype)


def _for_export(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A frozen copy with the network in ``dtype`` and a VAMP projection kept in float64."""
    if isinstance(model, VAMPModel):
        lobe = copy.deepcopy(model.lobe).to(dtype)
        model = ProjectedCV(lobe, model.mean, model.projection, model.singular_values, model.lagtime)
    else:
        model = copy.deepcopy(model).to(dtype)
    return model.eval()


def _cv_range(eager: ExportedCV, n_cvs: int, training_frames, training_outputs, cv_range) -> Optional[list]:
    given = [name for name, value in (("training_frames", training_frames), ("training_outputs", training_outputs),
                                      ("cv_range", cv_range)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"export_cv: pass one of training_frames, training_outputs, cv_range; found {given}")
    if cv_range is not None:
        return [list(pair) for pair in cv_range]
    if training_frames is not None:
        frames = [torch.as_tensor(np.asarray(t)) for t in
                  (training_frames if isinstance(training_frames, (list, tuple)) else [training_frames])]
        with torch.no_grad():
            training_outputs = torch.cat([eager.model(f[i:i + 256].to(eager.model_dtype.dtype)).to(torch.float64)
                                          for f in frames for i in range(0, f.shape[0], 256)]).numpy()
    if training_outputs is None:
        return None
    out = np.concatenate([np.asarray(t, dtype=np.float64).reshape(-1, n_cvs) for t in
                          (training_outputs if isinstance(training_outputs, (list, tuple)) else [training_outputs])])
    if out.shape[0] == 0 or not np.isfinite(out).all():
        raise ValueError(f"export_cv: expected finite training outputs [n_frames, {n_cvs}], found shape "
                         f"{list(out.shape)} with {int((~np.isfinite(out)).sum())} non-finite values")
    return [[float(out[:, k].min()), float(out[:, k].max())] for k in range(n_cvs)]


def _periodic_bonds(periodic: bool, bonds, topology, atom_indices) -> Optional[list]:
    """The selection-order bonds a periodic CV's spanning tree uses (None for a non-periodic CV)."""
    if not periodic:
        if bonds is not None:
            raise ValueError("export_cv: bonds= is used only by periodic CVs; pass periodic=True or drop bonds=")
        return None
    if bonds is None:
        if topology is None:
            raise ValueError("export_cv: periodic=True needs the bonds among the selected atoms: pass topology= "
                             "(mdtraj or OpenMM) or bonds=")
        return topology_bonds(topology, atom_indices)
    return [(int(a), int(b)) for a, b in bonds]


def export_cv(model: torch.nn.Module, path: str | Path, *, atom_indices: Sequence[int], n_particles: int,
              topology=None, atomic_numbers: Sequence[int] | None = None,
              residue_of_atom: Sequence[int] | None = None, lagtime_ps: float | None = None,
              frame_interval_ps: float | None = None, training_frames=None, training_outputs=None,
              cv_range=None, component_periods: Sequence[float | None] | None = None,
              featurizer_checkpoint: str | Path | None = None, dtype: torch.dtype = torch.float32,
              extra: dict | None = None, dense_et: bool = True, periodic: bool = False,
              bonds: Sequence[tuple[int, int]] | None = None) -> torch.jit.ScriptModule:
    """Script ``model`` into an :class:`ExportedCV` file that carries its :class:`CVSpec`.

    Parameters
    ----------
    model : torch.nn.Module
        Selected positions ``[B, n_selected, 3]`` (nm) → ``[B, n_cvs]`` (a lobe, or a ``VAMPModel``).
    path : str or Path
        Output file, written atomically.
    atom_indices : sequence of int
        ``[n_selected]`` particle indices the model reads.
    n_particles : int
        Particles of the System the CV is evaluated in.
    topology : mdtraj.Topology or openmm.app.Topology, optional
        Source of the elements and the residue map; without it they are read from the model's featurizer and
        tokens, and export fails if neither knows them.
    atomic_numbers, residue_of_atom : sequence of int, optional
        ``[n_selected]`` elements and 0-based residue indices, for models without a featurizer.
    lagtime_ps, frame_interval_ps : float, optional
        Lag time (ps) and time between training frames (ps). A model with a lag in frames (``VAMPModel``) needs one
        of them; the other follows.
    training_frames : array or list of arrays ``[n_frames, n_selected, 3]`` (nm), optional
        Training positions; the CV range is the per-component min/max of the exported CV on them.
    training_outputs : array or list of arrays ``[n_frames, n_cvs]``, optional
        The CVs on the training frames, if already computed.
    cv_range : sequence of (float, float), optional
        The per-component training range, given directly.
    component_periods : sequence of float or None, optional
        ``[n_cvs]`` period of each component (e.g. 2π rad for torsions), None where it does not wrap.
    featurizer_checkpoint : str or Path, optional
        Checkpoint the featurizer came from; its file hash identifies the featurizer (else its weights' hash).
    dtype : torch.dtype
        Dtype of the network inside the module; a VAMP projection stays float64.
    extra : dict, optional
        Free-form JSON notes stored as ``CVSpec.extra`` (system name, singular values, CV names, ...).
    dense_et : bool
        Swap small Equivariant Transformer featurizers for the dense form (identical numbers, cheaper per MD
        step; see :mod:`cvlearn.nn.featurizers.dense_et`).
    periodic : bool
        For Systems with periodic boundaries (explicit solvent): ``forward(positions, box)`` makes the selected
        molecule whole along a spanning tree of its bonds before the model (:mod:`cvlearn.export.whole`).
        ``training_frames`` are taken as whole already (as the model was trained on them).
    bonds : sequence of (int, int), optional
        Periodic CVs: bonded pairs in selection order (positions in ``atom_indices``); default: the topology's
        bonds among the selected atoms.

    Returns
    -------
    torch.jit.ScriptModule
        The scripted :class:`ExportedCV`; ``load_cv(path)`` returns it with its :class:`CVSpec`.
    """
    _checked_indices(atom_indices, n_particles)
    bonds = _periodic_bonds(periodic, bonds, topology, atom_indices)
    z, residues = selection_of(model, atom_indices, topology, atomic_numbers, residue_of_atom)
    architecture, config, digest = featurizer_identity(model, featurizer_checkpoint)
    lagtime_ps, frame_interval_ps = lag_times(model, lagtime_ps, frame_interval_ps)
    model = _for_export(model, dtype)
    # Swapped after the cast: the dense ET precomputes element-only terms, which must be made in the export dtype.
    swapped = swap_in_dense_et(model) if dense_et else []
    model.requires_grad_(False)
    with torch.no_grad():
        probe = model(torch.randn(1, len(atom_indices), 3, dtype=dtype))
    n_cvs = int(probe.shape[-1])
    eager = ExportedCV(model, atom_indices, n_particles, n_cvs, periodic=periodic, bonds=bonds)
    spec = CVSpec(n_particles=n_particles, atom_indices=atom_indices, atomic_numbers=z, residue_of_atom=residues,
                  n_cvs=n_cvs, dtype=str(dtype).replace("torch.", ""), featurizer_architecture=architecture,
                  featurizer_sha256=digest, lagtime_ps=lagtime_ps, frame_interval_ps=frame_interval_ps,
                  cv_range_training=_cv_range(eager, n_cvs, training_frames, training_outputs, cv_range),
                  periodic=periodic, bonds=bonds, component_periods=component_periods, featurizer_config=config,
                  dense_et=swapped, versions=package_versions(), extra=extra or {})
    scripted = torch.jit.script(eager)
    buffer = io.BytesIO()
    torch.save(eager, buffer)
    save_scripted(scripted, path, json.loads(spec.to_json()), {EAGER_FILE: buffer.getvalue()})
    return scripted


def save_scripted(module: torch.jit.ScriptModule, path: str | Path, meta: dict, extra: dict | None = None) -> None:
    """Write a TorchScript module with its cvlearn metadata (``cvlearn.json`` inside the file), atomically.

    Parameters
    ----------
    module : torch.jit.ScriptModule
    path : str or Path
    meta : dict
        JSON-serialisable metadata.
    extra : dict of str to bytes, optional
        Further files stored inside the archive.
    """
    with atomic_path(path) as tmp:
        torch.jit.save(module, str(tmp), _extra_files={METADATA_FILE: json.dumps(meta), **(extra or {})})


def load_scripted(path: str | Path, what: str) -> tuple[torch.jit.ScriptModule, dict]:
    """A TorchScript file written by cvlearn and its metadata ({} if it has none); loads without torchmd-net.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file should be, for error messages (``"exported CV"``).

    Returns
    -------
    module : torch.jit.ScriptModule
    meta : dict
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a TorchScript file written by cvlearn: {err}") from err
    return module, json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}


def load_eager_cv(path: str | Path) -> ExportedCV:
    """The eager twin of an exported CV (same weights and numbers), e.g. for ``torch.compile``; trusted files only.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`export_cv`.

    Returns
    -------
    ExportedCV
        In eval mode, on the CPU.
    """
    load_cv(path)  # the same checks and errors as the TorchScript module
    with zipfile.ZipFile(path) as archive:  # a TorchScript file is a zip; extra files sit in <name>/extra/
        names = [n for n in archive.namelist() if n.endswith(f"/extra/{EAGER_FILE}")]
        if not names:
            raise ValueError(f"{path} holds no eager copy ({EAGER_FILE}); it was exported by an older cvlearn: "
                             "export it again with cvlearn.export.export_cv")
        payload = archive.read(names[0])
    try:
        module = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except (AttributeError, ImportError, ModuleNotFoundError) as err:
        raise ValueError(f"{path}: its eager copy does not unpickle with this cvlearn ({err}); use the TorchScript "
                         "module (load_cv) or export the CV again") from err
    return module.eval()


def load_cv(path: str | Path) -> tuple[torch.jit.ScriptModule, CVSpec]:
    """Load an exported CV and its contract; works without importing torchmd-net.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`export_cv`.

    Returns
    -------
    module : torch.jit.ScriptModule
        ``forward(positions [n_particles, 3] nm) -> [n_cvs]``.
    spec : CVSpec

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a cvlearn TorchScript file, or one that predates the contract (export it again).
    """
    module, meta = load_scripted(path, "exported CV")
    if not meta:
        raise ValueError(f"{path} has no {METADATA_FILE} metadata; was it written by cvlearn.export.export_cv?")
    spec = CVSpec.from_dict(meta, source=str(path))
    if int(module.n_particles) != spec.n_particles or int(module.n_cvs) != spec.n_cvs:
        raise ValueError(f"{path}: module takes {int(module.n_particles)} particles -> {int(module.n_cvs)} CVs, its "
                         f"CVSpec says {spec.n_particles} -> {spec.n_cvs}")
    return module, spec
