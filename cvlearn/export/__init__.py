"""One file per exported model: the TorchScript CV with its contract (CVSpec), and the exported potential."""

from cvlearn.export.cv import (DENSE_MAX_ATOMS, METADATA_FILE, ExportedCV, ProjectedCV, export_cv, load_cv, load_eager_cv,
                               load_scripted, save_scripted, swap_in_dense_et)
from cvlearn.export.potential import ExportedPotential, export_potential, load_potential
from cvlearn.export.spec import CV_SPEC_FORMAT, CVSpec

__all__ = ["CV_SPEC_FORMAT", "CVSpec", "DENSE_MAX_ATOMS", "METADATA_FILE", "ExportedCV", "ExportedPotential",
           "ProjectedCV", "export_cv", "export_potential", "load_cv", "load_eager_cv", "load_potential",
           "load_scripted", "save_scripted", "swap_in_dense_et"]
