"""One file per exported model: the TorchScript CV with its contract, and the exported potential."""

from cvlearn.export.cv import DENSE_MAX_ATOMS, METADATA_FILE, ExportedCV, export_cv, load_cv, load_eager_cv, load_scripted, save_scripted
from cvlearn.export.potential import ExportedPotential, export_potential, load_potential

__all__ = ["DENSE_MAX_ATOMS", "METADATA_FILE", "ExportedCV", "ExportedPotential", "export_cv", "export_potential",
           "load_cv", "load_eager_cv", "load_potential", "load_scripted", "save_scripted"]
