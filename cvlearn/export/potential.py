"""Export a trained :class:`~cvlearn.models.potential.EnergyModel` for ONE molecule as a TorchScript potential for OpenMM.

``forward(positions [n_atoms, 3] in nm, float32 or float64) -> energy`` (scalar, kJ/mol, float64). OpenMM's
TorchForce takes -dE/dx itself, so forces come out in kJ/mol/nm. The units change here and nowhere else: the
fixed-topology featurizer converts nm → Å (``cvlearn.units.ANGSTROM_PER_NM``) and the energy is eV ×
``KJMOL_PER_EV``. Built on ``make_featurizer`` (plain-torch neighbours), so the file loads in a process that never
imported torchmd-net, exactly as an exported CV (:mod:`cvlearn.export`) does; metadata travels as ``cvlearn.json``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from cvlearn.export import DENSE_MAX_ATOMS, load_scripted, save_scripted
from cvlearn.nn.featurizers.dense_et import DenseETFeaturizer
from cvlearn.nn.featurizers.registry import make_featurizer
from cvlearn.models.potential import EnergyModel
from cvlearn.units import KJMOL_PER_EV


class ExportedPotential(torch.nn.Module):
    """Energy (kJ/mol) of one molecule from all its positions (nm); the reference energy is added in float64.

    Parameters
    ----------
    featurizer : torch.nn.Module
        Featurizer of the molecule's atoms (nm in, Å inside).
    head : torch.nn.Module
        Per-atom features ``[n_atoms, F]`` → per-atom energies (units of ``scale_ev``).
    reference_ev : float
        Sum of the atoms' reference energies (eV).
    scale_ev : float
        eV per network unit.
    """

    def __init__(self, featurizer: torch.nn.Module, head: torch.nn.Module, reference_ev: float, scale_ev: float):
        super().__init__()
        self.featurizer = featurizer
        self.head = head
        self.n_atoms = int(featurizer.n_atoms)
        self.kjmol_per_ev = KJMOL_PER_EV
        self.register_buffer("reference_ev", torch.tensor(float(reference_ev), dtype=torch.float64))
        self.register_buffer("scale_ev", torch.tensor(float(scale_ev), dtype=torch.float64))
        self.register_buffer("model_dtype", torch.zeros(0, dtype=next(head.parameters()).dtype))

    def forward(self, positions: Tensor) -> Tensor:
        if positions.dim() != 2 or positions.shape[0] != self.n_atoms or positions.shape[1] != 3:
            raise RuntimeError(f"expected positions of shape [{self.n_atoms}, 3] (nm), got {list(positions.shape)}")
        x = self.featurizer(positions.to(self.model_dtype.dtype).unsqueeze(0))[0]
        network_ev = self.head(x).sum().to(torch.float64) * self.scale_ev
        return (network_ev + self.reference_ev) * self.kjmol_per_ev


def export_potential(model: EnergyModel, atomic_numbers: Sequence[int], path: str | Path, *,
                     dtype: torch.dtype = torch.float32, metadata: dict | None = None,
                     dense_et: bool = True) -> torch.jit.ScriptModule:
    """Script ``model`` for the molecule with ``atomic_numbers`` (in the System's particle order) into ``path``.

    Parameters
    ----------
    model : EnergyModel
        The trained potential.
    atomic_numbers : sequence of int
        ``[n_atoms]`` elements, in the System's particle order.
    path : str or Path
        Output file, written atomically.
    dtype : torch.dtype
        Dtype of the network; the reference energy and the output are float64.
    metadata : dict, optional
        Further JSON notes stored in ``cvlearn.json``.
    dense_et : bool
        A small ET backbone runs as :class:`~cvlearn.nn.featurizers.dense_et.DenseETFeaturizer` (the same
        function with fewer ops per MD step), as exported CVs do.

    Returns
    -------
    torch.jit.ScriptModule
        ``forward(positions [n_atoms, 3] nm) -> energy`` (kJ/mol, float64 scalar).
    """
    z = [int(a) for a in atomic_numbers]
    if not z:
        raise ValueError("atomic_numbers: expected the atomic numbers of the molecule's atoms, found none")
    backbone = model.backbone
    featurizer = make_featurizer(backbone.kind, z, backbone.config, seed=None)
    featurizer.gnn.load_state_dict(backbone.gnn.state_dict(), strict=True)
    dense = dense_et and backbone.kind == "et" and len(z) <= DENSE_MAX_ATOMS
    if dense:  # built in the export dtype: its precomputed element-only terms must not carry float32 rounding
        featurizer = DenseETFeaturizer(featurizer.to(dtype))
    reference_ev = float(model.atom_reference_ev[torch.as_tensor(z)].sum())
    module = ExportedPotential(featurizer.to(dtype), copy.deepcopy(model.head).to(dtype), reference_ev,
                               float(model.energy_scale_ev)).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    scripted = torch.jit.script(module)
    meta = {"kind": "potential", "backbone": backbone.kind, "config": backbone.config.as_dict(),
            "atomic_numbers": z, "n_particles": len(z), "dtype": str(dtype).replace("torch.", ""), "dense_et": dense,
            "reference_energy_kjmol": reference_ev * KJMOL_PER_EV,
            "units": {"positions": "nm", "energy": "kJ/mol", "forces": "kJ/mol/nm"},
            "versions": {"torch": str(torch.__version__)}, **(metadata or {})}
    save_scripted(scripted, path, meta)
    return scripted


def load_potential(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """Load an exported potential and its metadata; works without importing torchmd-net.

    Parameters
    ----------
    path : str or Path
        A file written by :func:`export_potential`.

    Returns
    -------
    module : torch.jit.ScriptModule
    meta : dict
        ``atomic_numbers``, ``n_particles``, ``units``, ``reference_energy_kjmol``, ...
    """
    module, meta = load_scripted(path, "exported potential")
    if meta.get("kind") != "potential":
        raise ValueError(f"{path}: expected an exported potential (cvlearn.export.potential.export_potential), "
                         f"found {meta.get('kind', 'no cvlearn metadata')!r}")
    return module, meta
