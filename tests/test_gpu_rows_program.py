"""The exported-program CV of ``benchmarks/gpu_rows.py``: how the GNN CV reaches a GPU machine without torchmd-net."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

from openmm_plugin.cv_evaluation import CVEvaluator


def _gpu_rows():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_rows.py"
    spec = importlib.util.spec_from_file_location("gpu_rows", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_program_cv_equals_the_exported_cv(exported_cv64, ala2, tmp_path):
    """Written from the CV file's eager twin, loaded with torch alone: same CV and Jacobian as the TorchScript CV,
    also from a copy moved with ``.to`` (the way the evaluator places a CV on a device)."""
    gpu_rows = _gpu_rows()
    cv, path = exported_cv64
    gpu_rows.export_program(str(path), tmp_path / "cv.pt2")
    program = gpu_rows.ProgramCV(tmp_path / "cv.pt2")
    assert program.atom_indices.tolist() == cv.atom_indices.tolist() and program.n_cvs == cv.n_cvs
    x = ala2.positions_nm[cv.atom_indices.numpy()] + np.random.default_rng(0).normal(scale=0.01, size=(10, 3))
    s_ref, j_ref = CVEvaluator(cv).jacobian(x)
    for module in (program, program.to("cpu")):
        s, j = CVEvaluator(module).jacobian(x)
        assert np.allclose(s, s_ref, rtol=1e-10) and np.allclose(j, j_ref, rtol=1e-8, atol=1e-10)
    assert isinstance(program.selected(torch.as_tensor(x)), torch.Tensor)
