import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cvlearn.export import export_cv, load_cv
from tests.conftest import make_tiny_cv, random_rotation


def _grad(module, pos):
    pos = pos.clone().requires_grad_(True)
    value = module(pos)
    return value.detach(), torch.stack([torch.autograd.grad(value[k], pos, retain_graph=True)[0]
                                        for k in range(value.shape[0])])


def test_gradient_matches_finite_differences(exported_cv64, ala2):
    module, _ = exported_cv64
    pos = torch.tensor(ala2.positions_nm, dtype=torch.float64)
    value, grad = _grad(module, pos)
    h = 1e-5
    fd = torch.zeros_like(grad)
    for atom in module.atom_indices.tolist():
        for axis in range(3):
            plus, minus = pos.clone(), pos.clone()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            fd[:, atom, axis] = (module(plus) - module(minus)) / (2 * h)
    rel = (grad - fd).norm() / fd.norm()
    assert rel < 1e-3, f"relative error {rel:.2e}"
    untouched = [i for i in range(pos.shape[0]) if i not in module.atom_indices.tolist()]
    assert torch.all(grad[:, untouched] == 0)


def test_invariant_to_rigid_motion(exported_cv64, ala2):
    module, _ = exported_cv64
    pos = torch.tensor(ala2.positions_nm, dtype=torch.float64)
    moved = pos @ torch.tensor(random_rotation(7)).T + torch.tensor([1.5, -0.2, 3.0], dtype=torch.float64)
    assert torch.allclose(module(pos), module(moved), atol=1e-10)


def test_dtype_follows_input_and_shape_is_checked(tmp_path, ala2, ala2_heavy):
    heavy, z = ala2_heavy
    module = export_cv(make_tiny_cv(ala2.topology, heavy, z), tmp_path / "cv32.pt", atom_indices=heavy,
                       n_particles=ala2.topology.getNumAtoms())
    pos = torch.tensor(ala2.positions_nm)
    assert module(pos).dtype == torch.float64 and module(pos.float()).dtype == torch.float32
    with pytest.raises(torch.jit.Error, match=r"expected positions of shape \[22, 3\]"):
        module(pos[:10])
    with pytest.raises(ValueError, match="atom_indices"):
        export_cv(make_tiny_cv(ala2.topology, heavy, z), tmp_path / "bad.pt", atom_indices=[0, 99], n_particles=22)


def test_loads_in_fresh_process_without_torchmdnet(exported_cv64, ala2):
    module, path = exported_cv64
    pos = ala2.positions_nm.tolist()
    code = (
        "import sys, json, torch\n"
        f"m = torch.jit.load({str(path)!r})\n"
        f"print(json.dumps(m(torch.tensor({pos}, dtype=torch.float64)).tolist()))\n"
        "print('torchmdnet' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[1] == "False"
    expected = module(torch.tensor(ala2.positions_nm)).tolist()
    assert np.allclose(json.loads(out[0]), expected, atol=1e-12)


def test_metadata_travels(exported_cv64):
    _, path = exported_cv64
    _, meta = load_cv(path)
    assert meta["n_cvs"] == 2 and meta["n_particles"] == 22 and len(meta["atom_indices"]) == 10
    assert meta["units"]["positions"] == "nm"


def test_load_cv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_cv(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="bad.pt"):
        load_cv(bad)


def test_eager_twin_gives_the_same_numbers(exported_cv64, ala2, tmp_path):
    from cvlearn.export import METADATA_FILE, load_eager_cv

    cv, path = exported_cv64
    eager = load_eager_cv(path)
    assert not isinstance(eager, torch.jit.ScriptModule)
    pos = torch.tensor(ala2.positions_nm)
    assert torch.equal(eager(pos), cv(pos)) and int(eager.n_cvs) == int(cv.n_cvs)
    older = tmp_path / "old.pt"  # a CV file without the eager copy: a specific error, not a pickle traceback
    torch.jit.save(cv, str(older), _extra_files={METADATA_FILE: json.dumps({"n_cvs": 2})})
    with pytest.raises(ValueError, match="no eager copy"):
        load_eager_cv(older)
