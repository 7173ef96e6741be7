import copy
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cvlearn.data.selection import residue_index_of_atoms
from cvlearn.export import METADATA_FILE, CVSpec, export_cv, load_cv, load_eager_cv
from tests.conftest import make_tiny_cv, random_rotation


def _grad(module, pos):
    pos = pos.clone().requires_grad_(True)
    value = module(pos)
    return value.detach(), torch.stack([torch.autograd.grad(value[k], pos, retain_graph=True)[0]
                                        for k in range(value.shape[0])])


def _central_differences(module, pos, atoms, h=1e-5):
    """d CV_k / d x of ``atoms`` by central differences ``[n_cvs, n_particles, 3]`` (zero elsewhere)."""
    fd = torch.zeros((module(pos).shape[0], *pos.shape), dtype=pos.dtype)
    for atom in atoms:
        for axis in range(3):
            plus, minus = pos.clone(), pos.clone()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            fd[:, atom, axis] = (module(plus) - module(minus)) / (2 * h)
    return fd


def test_gradient_matches_finite_differences(exported_cv64, ala2):
    module, _ = exported_cv64
    pos = torch.tensor(ala2.positions_nm, dtype=torch.float64)
    value, grad = _grad(module, pos)
    fd = _central_differences(module, pos, module.atom_indices.tolist())
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


def test_metadata_travels(exported_cv64, ala2, ala2_heavy):
    _, path = exported_cv64
    _, spec = load_cv(path)
    assert isinstance(spec, CVSpec)
    assert spec.n_cvs == 2 and spec.n_particles == 22 and len(spec.atom_indices) == 10
    assert spec.units["positions"] == "nm"
    # always recorded, here read from the model's featurizer and tokens (no topology passed)
    heavy, z = ala2_heavy
    assert spec.atom_indices == tuple(heavy) and spec.atomic_numbers == tuple(z)
    assert spec.residue_of_atom == tuple(residue_index_of_atoms(ala2.topology, heavy))
    assert spec.featurizer_architecture == "ETFeaturizer" and len(spec.featurizer_sha256) == 64
    assert spec.featurizer_config["hidden_channels"] == 32 and spec.dtype == "float64"
    assert spec.versions["torch"] == torch.__version__ and "cvlearn" in spec.versions
    assert spec.periodic is False and spec.component_periods == (None, None)
    assert spec.lagtime_ps is None and spec.cv_range_training is None and spec.dense_et  # swapped in


def test_spec_fields_from_topology_and_training(tmp_path, ala2, ala2_heavy):
    heavy, z = ala2_heavy
    model = make_tiny_cv(ala2.topology, heavy, z)
    frames = torch.tensor(ala2.positions_nm[heavy])[None] + 0.01 * torch.randn(5, len(heavy), 3, dtype=torch.float64)
    path = tmp_path / "cv.pt"
    cv = export_cv(model, path, atom_indices=heavy, n_particles=22, topology=ala2.topology, training_frames=frames,
                   lagtime_ps=2.0, extra={"system": "ala2"}, dtype=torch.float64)
    _, spec = load_cv(path)
    assert spec.atomic_numbers == tuple(z) and spec.lagtime_ps == 2.0 and spec.extra == {"system": "ala2"}
    full = torch.tensor(ala2.positions_nm).repeat(5, 1, 1)
    full[:, heavy] = frames
    values = torch.stack([cv(f) for f in full])
    expected = tuple((float(values[:, k].min()), float(values[:, k].max())) for k in range(2))
    assert np.allclose(spec.cv_range_training, expected, atol=1e-12)
    # the sha256 names the weights: the same featurizer hashes alike, another one differs
    other = tmp_path / "other.pt"
    export_cv(make_tiny_cv(ala2.topology, heavy, z, seed=1), other, atom_indices=heavy, n_particles=22)
    export_cv(make_tiny_cv(ala2.topology, heavy, z), tmp_path / "same.pt", atom_indices=heavy, n_particles=22)
    assert load_cv(tmp_path / "same.pt")[1].featurizer_sha256 == spec.featurizer_sha256
    assert load_cv(other)[1].featurizer_sha256 != spec.featurizer_sha256
    checkpoint = tmp_path / "et.pth"  # a checkpoint file, when named, is what identifies the featurizer
    checkpoint.write_bytes(b"weights")
    export_cv(model, tmp_path / "ckpt.pt", atom_indices=heavy, n_particles=22, featurizer_checkpoint=checkpoint)
    assert load_cv(tmp_path / "ckpt.pt")[1].featurizer_sha256 == hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(ValueError, match="atomic_numbers from the argument"):
        export_cv(model, tmp_path / "bad.pt", atom_indices=heavy, n_particles=22, atomic_numbers=[1] * len(heavy))
    with pytest.raises(ValueError, match="pass one of training_frames, training_outputs, cv_range"):
        export_cv(model, tmp_path / "bad.pt", atom_indices=heavy, n_particles=22, training_frames=frames,
                  cv_range=[(0, 1), (0, 1)])


class Plain(torch.nn.Module):
    """A CV without featurizer or tokens: x of each selected atom."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, pos):
        return pos[:, :, 0] * self.w


def test_selection_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="atomic_numbers of the 2 selected atoms are unknown.*topology="):
        export_cv(Plain(), tmp_path / "p.pt", atom_indices=[0, 1], n_particles=3)
    export_cv(Plain(), tmp_path / "p.pt", atom_indices=[0, 1], n_particles=3, atomic_numbers=[6, 8],
              residue_of_atom=[0, 0], cv_range=[(0.0, 1.0), (-1.0, 1.0)], component_periods=[None, 2.0])
    _, spec = load_cv(tmp_path / "p.pt")
    assert spec.featurizer_architecture == "Plain" and spec.component_periods == (None, 2.0)
    assert spec.cv_range_training == ((0.0, 1.0), (-1.0, 1.0))


def test_old_file_predates_the_contract(exported_cv64, tmp_path):
    cv, _ = exported_cv64
    old = tmp_path / "old.pt"
    torch.jit.save(cv, str(old), _extra_files={METADATA_FILE: json.dumps(
        {"n_cvs": 2, "n_particles": 22, "atom_indices": list(range(10)), "dtype": "float64"})})
    with pytest.raises(ValueError, match=r"old.pt predates the typed CV contract.*re-export.*export_cv"):
        load_cv(old)
    with pytest.raises(ValueError, match="predates the typed CV contract"):
        load_eager_cv(old)


def test_load_cv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_cv(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="bad.pt"):
        load_cv(bad)


def test_eager_twin_gives_the_same_numbers(exported_cv64, ala2, tmp_path):
    cv, path = exported_cv64
    eager = load_eager_cv(path)
    assert not isinstance(eager, torch.jit.ScriptModule)
    pos = torch.tensor(ala2.positions_nm)
    assert torch.equal(eager(pos), cv(pos)) and int(eager.n_cvs) == int(cv.n_cvs)
    older = tmp_path / "old.pt"  # a CV file without the eager copy: a specific error, not a pickle traceback
    torch.jit.save(cv, str(older), _extra_files={METADATA_FILE: load_cv(path)[1].to_json()})
    with pytest.raises(ValueError, match="no eager copy"):
        load_eager_cv(older)


def _vamp_model(ala2, heavy, z, lagtime=3):
    from cvlearn.models.cv import VAMPModel

    g = torch.Generator().manual_seed(3)
    mean = torch.randn(2, generator=g, dtype=torch.float64)
    projection = torch.randn(2, 2, generator=g, dtype=torch.float64) * 1e3  # large: float32 rounding would show
    return VAMPModel(make_tiny_cv(ala2.topology, heavy, z), mean, projection, torch.tensor([0.9, 0.5]), lagtime)


def test_vamp_projection_stays_float64(tmp_path, ala2, ala2_heavy):
    heavy, z = ala2_heavy
    model = _vamp_model(ala2, heavy, z)
    with pytest.raises(ValueError, match="lag of 3 frames"):
        export_cv(model, tmp_path / "cv.pt", atom_indices=heavy, n_particles=22)
    pos = torch.tensor(ala2.positions_nm)
    # float64 export: equal to the eager float64 model
    cv64 = export_cv(model, tmp_path / "cv64.pt", atom_indices=heavy, n_particles=22, frame_interval_ps=0.5,
                     dtype=torch.float64)
    eager64 = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        reference = eager64(pos[heavy].unsqueeze(0))[0]
    assert torch.allclose(cv64(pos), reference, rtol=1e-12, atol=1e-12)
    _, spec = load_cv(tmp_path / "cv64.pt")
    assert spec.lagtime_ps == 1.5 and spec.frame_interval_ps == 0.5 and spec.lagtime_frames == 3
    # float32 export: the network runs in float32, the projection and the output stay float64
    cv32 = export_cv(model, tmp_path / "cv32.pt", atom_indices=heavy, n_particles=22, lagtime_ps=1.5,
                     dense_et=False)  # the edge-list ET, so the float32 network rounds as the reference does
    assert cv32.model.projection.dtype == torch.float64 and cv32.model.mean.dtype == torch.float64
    assert torch.equal(cv32.model.projection, model.projection)
    lobe32 = copy.deepcopy(model.lobe).float().eval()
    with torch.no_grad():
        y = lobe32(pos[heavy].float().unsqueeze(0))[0].double()
    assert torch.allclose(cv32(pos), (y - model.mean) @ model.projection, rtol=1e-13, atol=1e-10)
    assert load_eager_cv(tmp_path / "cv32.pt").model.projection.dtype == torch.float64


def _windowed_cv(ala2, heavy, z):
    from cvlearn.models.cv import GraphCV
    from cvlearn.nn.featurizers import ETConfig, ETFeaturizer
    from cvlearn.nn.heads import MLPHead
    from cvlearn.nn.mixers import SumPool
    from cvlearn.nn.windows import WindowTokens, make_token_embedder

    torch.manual_seed(0)
    featurizer = ETFeaturizer(z, ETConfig(hidden_channels=16, num_layers=2, num_rbf=8, num_heads=4,
                                          cutoff_angstrom=5.0), seed=0)
    tokens = make_token_embedder(featurizer, ala2.topology, heavy, context="window", half_width=1)
    assert isinstance(tokens, WindowTokens) and tokens.n_padded > 0  # windows of different sizes
    return GraphCV(torch.nn.Identity(), tokens, SumPool(), MLPHead(16, 2, hidden=16))


def test_windowed_cv_exports_round_trips_and_matches_eager(tmp_path, ala2, ala2_heavy):
    """A sliding-window CV: no dense swap of the window featurizer, same numbers scripted, loaded and eager."""
    heavy, z = ala2_heavy
    model = _windowed_cv(ala2, heavy, z)
    path = tmp_path / "window.pt"
    cv = export_cv(model, path, atom_indices=heavy, n_particles=22, dtype=torch.float64)
    loaded, spec = load_cv(path)
    eager = load_eager_cv(path)
    assert spec.dense_et == () and spec.atomic_numbers == tuple(z)
    assert spec.residue_of_atom == tuple(residue_index_of_atoms(ala2.topology, heavy))
    assert spec.featurizer_architecture == "ETFeaturizer"
    reference_model = copy.deepcopy(model).double().eval()
    rng = np.random.default_rng(2)
    for _ in range(3):
        pos = torch.tensor(ala2.positions_nm + 0.01 * rng.normal(size=ala2.positions_nm.shape))
        with torch.no_grad():
            reference = reference_model(pos[heavy].unsqueeze(0))[0]
        for module in (cv, loaded, eager):
            assert torch.allclose(module(pos), reference, rtol=1e-12, atol=1e-12)


def test_windowed_cv_forces_match_finite_differences(tmp_path, ala2, ala2_heavy):
    heavy, z = ala2_heavy
    export_cv(_windowed_cv(ala2, heavy, z), tmp_path / "window.pt", atom_indices=heavy, n_particles=22,
              dtype=torch.float64)
    module, _ = load_cv(tmp_path / "window.pt")
    pos = torch.tensor(ala2.positions_nm, dtype=torch.float64)
    _, grad = _grad(module, pos)
    fd = _central_differences(module, pos, heavy)
    rel = (grad - fd).norm() / fd.norm()
    assert rel < 1e-6, f"relative error {rel:.2e}"


def test_dense_swap_skips_window_featurizers(ala2, ala2_heavy):
    from cvlearn.export import swap_in_dense_et

    heavy, z = ala2_heavy
    windowed = _windowed_cv(ala2, heavy, z)
    assert swap_in_dense_et(windowed) == []
    assert swap_in_dense_et(make_tiny_cv(ala2.topology, heavy, z)) == ["featurizer"]
