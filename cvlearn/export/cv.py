"""Export a trained CV chain as one self-contained TorchScript module (the contract with the MD engine).

``forward(positions [n_particles, 3] in nm, float32 or float64) -> CVs [n_cvs]`` in the positions' dtype.
The module carries its atom indices, so the engine passes all particles and nobody slices by hand; its
neighbour search is plain torch, so it loads in a process that never imported torchmd-net. Metadata
(atom selection, atomic numbers, residue map, units, versions) travels inside the file as ``cvlearn.json``.

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
from typing import Sequence

import torch
from torch import Tensor

from cvlearn.io import atomic_path

METADATA_FILE = "cvlearn.json"
EAGER_FILE = "cvlearn_eager.pt"  # the same ExportedCV as a pickled nn.Module, for torch.compile in Python hosts
DENSE_MAX_ATOMS = 64  # dense pair tensors cost n^2 memory; above this the edge-list ET is the better trade


def swap_in_dense_et(model: torch.nn.Module, max_atoms: int = DENSE_MAX_ATOMS) -> list[str]:
    """Replace every small ``ETFeaturizer`` inside ``model`` by its ``DenseETFeaturizer`` (same function, fewer ops).

    Returns the names of the replaced submodules. Why at export: training batches many frames, where the
    edge-list ET is efficient; MD evaluates one frame per step, where op count is the cost.
    """
    from cvlearn.nn.featurizers.dense_et import DenseETFeaturizer
    from cvlearn.nn.featurizers.equivariant_transformer import ETFeaturizer

    swapped = []
    for name, parent in list(model.named_modules()):
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


class ExportedCV(torch.nn.Module):
    def __init__(self, model: torch.nn.Module, atom_indices: Sequence[int], n_particles: int, n_cvs: int):
        super().__init__()
        indices = _checked_indices(atom_indices, n_particles)
        self.model = model
        self.n_particles = int(n_particles)
        self.n_cvs = int(n_cvs)
        self.register_buffer("atom_indices", indices)
        # Zero-size tensor whose dtype is the model's: inputs are cast to it, outputs back to the input's.
        self.register_buffer("model_dtype", torch.zeros(0, dtype=next(model.parameters()).dtype))

    def forward(self, positions: Tensor) -> Tensor:
        if positions.dim() != 2 or positions.shape[0] != self.n_particles or positions.shape[1] != 3:
            raise RuntimeError(
                f"expected positions of shape [{self.n_particles}, 3] (all particles, nm), got {list(positions.shape)}"
            )
        return self.selected(positions.index_select(0, self.atom_indices))

    @torch.jit.export
    def selected(self, positions: Tensor) -> Tensor:
        """CVs from the positions of the selected atoms only ``[n_selected, 3]`` (nm)."""
        cvs = self.model(positions.to(self.model_dtype.dtype).unsqueeze(0)).squeeze(0)
        return cvs.to(positions.dtype)


def export_cv(model: torch.nn.Module, path: str | Path, *, atom_indices: Sequence[int], n_particles: int,
              dtype: torch.dtype = torch.float32, metadata: dict | None = None,
              dense_et: bool = True) -> torch.jit.ScriptModule:
    """Script ``model`` (selected positions ``[B, n, 3]`` nm → ``[B, n_cvs]``) into an :class:`ExportedCV` file.

    ``dense_et`` swaps small Equivariant Transformer featurizers for the dense form (identical numbers,
    cheaper per MD step; see :mod:`cvlearn.nn.featurizers.dense_et`).
    """
    _checked_indices(atom_indices, n_particles)
    model = copy.deepcopy(model).to(dtype).eval()
    # Swapped after the cast: the dense ET precomputes element-only terms, which must be made in the export dtype.
    swapped = swap_in_dense_et(model) if dense_et else []
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        probe = model(torch.randn(1, len(atom_indices), 3, dtype=dtype))
    n_cvs = int(probe.shape[-1])
    eager = ExportedCV(model, atom_indices, n_particles, n_cvs)
    scripted = torch.jit.script(eager)
    meta = {
        "n_cvs": n_cvs,
        "n_particles": int(n_particles),
        "atom_indices": [int(i) for i in atom_indices],
        "dtype": str(dtype).replace("torch.", ""),
        "units": {"positions": "nm", "cvs": "dimensionless"},
        "versions": {"torch": str(torch.__version__)},
        "dense_et": swapped,
        **(metadata or {}),
    }
    buffer = io.BytesIO()
    torch.save(eager, buffer)
    save_scripted(scripted, path, meta, {EAGER_FILE: buffer.getvalue()})
    return scripted


def save_scripted(module: torch.jit.ScriptModule, path: str | Path, meta: dict, extra: dict | None = None) -> None:
    """Write a TorchScript module with its cvlearn metadata (``cvlearn.json`` inside the file), atomically."""
    with atomic_path(path) as tmp:
        torch.jit.save(module, str(tmp), _extra_files={METADATA_FILE: json.dumps(meta), **(extra or {})})


def load_scripted(path: str | Path, what: str) -> tuple[torch.jit.ScriptModule, dict]:
    """A TorchScript file written by cvlearn and its metadata ({} if it has none); loads without torchmd-net."""
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
    """The eager twin of an exported CV (same weights and numbers), e.g. for ``torch.compile``; trusted files only."""
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


def load_cv(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """Load an exported CV and its metadata; works without importing torchmd-net."""
    module, meta = load_scripted(path, "exported CV")
    if not meta:
        raise ValueError(f"{path} has no {METADATA_FILE} metadata; was it written by cvlearn.export.export_cv?")
    return module, meta
