"""The device path of the CV in OpenMM: ``device`` settings, the single-transfer evaluator, TorchForce CUDA graphs.

CPU tests run everywhere: ``device="cpu"`` through the new code (one tensor each way, forces from the Jacobian)
equals the old route, the ``device`` validation errors (both branches of ``torch.cuda.is_available``), and the
TorchForce property. Tests marked ``gpu`` need CUDA and are skipped with the reason without it.
"""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import openmm
import pytest
import torch

from cvlearn.distributed import check_device, rank_device
from cvlearn.errors import ConfigError
from openmm_plugin.bias import BiasSum, HarmonicRestraint, Metadynamics, OnComponents, Wall
from openmm_plugin.cv_evaluation import CVEvaluator
from openmm_plugin.forces import python_bias_force
from openmm_plugin.torch_force import TorchBiasForce, import_openmmtorch, torch_bias_force, torch_force_for_cv

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device: torch.cuda.is_available() is False here")


def _bias():
    """A 2-CV bias with a non-zero gradient almost everywhere: metad hills + a wall + a restraint."""
    metad = Metadynamics(sigma=[0.2, 0.2], height_kjmol=1.0, pace_steps=1, temperature_k=300.0, lower=[-5, -5],
                         upper=[5, 5])
    for k, p in enumerate(np.random.default_rng(0).normal(scale=0.8, size=(20, 2)), start=1):
        metad.update(p, k)
    return BiasSum([metad, Wall([0.3, 0.3], 100.0, side="upper"), HarmonicRestraint([0.0, 0.1], 30.0)])


def _selected(cv, ala2):
    return ala2.positions_nm[cv.atom_indices.numpy()]


def _old_route(cv, positions, bias):
    """What CVEvaluator computed before devices: one forward, dV/ds from the bias, one backward."""
    pos = torch.tensor(positions, dtype=torch.float64, requires_grad=True)
    s = cv.selected(pos)
    energy, dv_ds = bias.energy_and_gradient(s.detach().numpy())
    (grad,) = torch.autograd.grad(s, pos, grad_outputs=torch.tensor(dv_ds, dtype=s.dtype))
    return s.detach().numpy(), energy, -grad.numpy()


@pytest.fixture(scope="module")
def periodic_cv(tmp_path_factory, ala2, ala2_heavy):
    """A tiny periodic GNN CV on ala2's heavy atoms (takes a box, makes the molecule whole)."""
    from cvlearn.export import export_cv
    from tests.conftest import make_tiny_cv

    heavy, z = ala2_heavy
    path = tmp_path_factory.mktemp("cv") / "periodic.pt"
    return export_cv(make_tiny_cv(ala2.topology, heavy, z), path, atom_indices=heavy, topology=ala2.topology,
                     n_particles=ala2.topology.getNumAtoms(), dtype=torch.float64, periodic=True)


# --- device="cpu" through the new code ---------------------------------------------------------------------------
def test_cpu_default_route_is_the_old_route(exported_cv64, ala2):
    cv, _ = exported_cv64
    x, bias = _selected(cv, ala2), _bias()
    s, energy, forces = CVEvaluator(cv, device="cpu").bias_energy_forces(x, bias)
    s_old, energy_old, forces_old = _old_route(cv, x, bias)
    # to rounding: TorchScript's profiling executor optimises the graph after the first calls (2e-15 apart)
    assert np.allclose(s, s_old, rtol=1e-13, atol=1e-13) and energy == pytest.approx(energy_old, rel=1e-13)
    assert np.allclose(forces, forces_old, rtol=1e-12, atol=1e-12)
    assert np.abs(forces).max() > 1e-3  # a real force, not the zero shortcut


def test_single_transfer_route_equals_old_route_on_cpu(exported_cv64, ala2):
    """The GPU code path (positions over once, s and ds/dx back as one tensor) run on the CPU."""
    cv, _ = exported_cv64
    x, bias = _selected(cv, ala2), _bias()
    evaluator = CVEvaluator(cv, device="cpu", single_transfer=True)
    s, energy, forces = evaluator.bias_energy_forces(x, bias)
    s_old, energy_old, forces_old = _old_route(cv, x, bias)
    assert np.allclose(s, s_old, rtol=1e-12, atol=1e-12) and energy == pytest.approx(energy_old, rel=1e-12)
    assert np.allclose(forces, forces_old, rtol=1e-10, atol=1e-10)
    assert np.allclose(evaluator.values(x), s_old, rtol=1e-12, atol=1e-12)
    s_j, jac = evaluator.jacobian(x, batched=False)
    _, jac_batched = evaluator.jacobian(x, batched=True)
    assert jac.shape == (2, len(x), 3) and np.allclose(jac, jac_batched, atol=1e-12)
    assert np.allclose(-np.tensordot(bias.energy_and_gradient(s_j)[1], jac, axes=1), forces_old, atol=1e-10)
    assert evaluator.calls == 4
    one = OnComponents(HarmonicRestraint([0.1], 30.0), [1], 2)  # acts on component 1: one Jacobian row crosses
    _, energy, forces = evaluator.bias_energy_forces(x, one)
    _, energy_old, forces_old = _old_route(cv, x, one)
    assert energy == pytest.approx(energy_old, rel=1e-12) and np.allclose(forces, forces_old, rtol=1e-10, atol=1e-10)


def test_single_transfer_passes_the_box_of_a_periodic_cv(periodic_cv, ala2):
    """Positions and box cross as one tensor: the CV must still get both, split apart (a split molecule is whole)."""
    x = _selected(periodic_cv, ala2)
    box = np.diag([2.0, 2.1, 2.2])
    shifted = x.copy()
    shifted[0] += box[0]  # one atom a box vector away: the same molecule once made whole
    bias = HarmonicRestraint([0.0, 0.1], 30.0)
    reference = CVEvaluator(periodic_cv).bias_energy_forces(x, bias, box_nm=box)
    evaluator = CVEvaluator(periodic_cv, single_transfer=True)
    for positions in (x, shifted):
        s, energy, forces = evaluator.bias_energy_forces(positions, bias, box_nm=box)
        assert np.allclose(s, reference[0], atol=1e-10) and energy == pytest.approx(reference[1], rel=1e-9)
        assert np.allclose(forces, reference[2], atol=1e-8)
    with pytest.raises(ValueError, match="box_nm"):
        evaluator.values(x)


def test_compiled_single_transfer_equals_torchscript_on_cpu(exported_cv64, ala2):
    """The compiled Jacobian graph (the CUDA route with compile=True), on the CPU."""
    from cvlearn.export import load_eager_cv

    cv, path = exported_cv64
    x, bias = _selected(cv, ala2), _bias()
    compiled = CVEvaluator(load_eager_cv(path), compile=True, single_transfer=True)
    s, energy, forces = compiled.bias_energy_forces(x, bias)
    jacobian = compiled._jacobians[tuple(range(2))]
    assert jacobian.fn is not jacobian.eager  # really compiled, no fallback
    s_old, energy_old, forces_old = _old_route(cv, x, bias)
    assert np.allclose(s, s_old, atol=1e-10) and np.allclose(forces, forces_old, rtol=1e-7, atol=1e-8)


def test_python_force_keeps_its_device_through_pickle(exported_cv64):
    cv, _ = exported_cv64
    force = python_bias_force(cv, _bias(), device="cpu")
    assert force.callback.evaluator.device == torch.device("cpu")
    assert force.callback.evaluator.cv is cv  # already on the device: no copy
    clone = pickle.loads(pickle.dumps(force.callback))
    assert clone.evaluator.device == torch.device("cpu") and clone.__getstate__()["device"] == "cpu"


# --- device validation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["gpu", "CUDA", "cuda:", "cuda:x", "cpu:0 ", "", 0, None])
def test_malformed_device_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError) as err:
        check_device(value)
    message = str(err.value)
    assert message.startswith("device: expected 'cpu', 'cuda' or 'cuda:N', found ") and "\n" not in message


def test_cuda_without_cuda_is_refused(monkeypatch, exported_cv64):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for value in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match=rf"^device: expected .* found '{value}' but "
                                              r"torch.cuda.is_available\(\) is False on this machine$"):
            check_device(value)
    with pytest.raises(ConfigError, match="is_available"):  # before any compute
        CVEvaluator(exported_cv64[0], device="cuda")
    assert check_device("cpu") == torch.device("cpu")


def test_cuda_with_cuda_is_accepted_and_indexed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda") == torch.device("cuda") and check_device("cuda:1") == torch.device("cuda:1")
    assert check_device(torch.device("cuda:0")) == torch.device("cuda:0")
    with pytest.raises(ConfigError, match=r"^device: expected a CUDA index below 2 .* found 'cuda:2'$"):
        check_device("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "1")  # torchrun's rank on this node picks the GPU of a bare "cuda"
    assert rank_device("cuda") == torch.device("cuda:1") and rank_device("cuda:0") == torch.device("cuda:0")
    assert rank_device("cpu") == torch.device("cpu")


def test_stage_configs_validate_device(monkeypatch, tmp_path):
    from cvlearn.config import load_config
    from openmm_plugin.stages.bias import BiasConfig
    from openmm_plugin.stages.demo import DemoConfig
    from openmm_plugin.stages.learn import LearnConfig

    path = tmp_path / "bias.yaml"
    path.write_text("system: alanine_dipeptide\ncv: cv.pt\ndevice: gpu\n")
    with pytest.raises(ConfigError, match=r"bias.yaml: device: expected 'cpu', 'cuda' or 'cuda:N', found 'gpu'$"):
        load_config(BiasConfig, path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for make in (lambda: LearnConfig(device="cuda"), lambda: DemoConfig(device="cuda"),
                 lambda: BiasConfig(cv="cv.pt", system="alanine_dipeptide", device="cuda")):
        with pytest.raises(ValueError, match=r"^device: .* torch.cuda.is_available\(\) is False on this machine$"):
            make()
    assert LearnConfig().device == "cpu" and DemoConfig().device == "cpu"
    with pytest.raises(ValueError, match="cuda_graphs: true needs route 'torch' and platform 'CUDA'"):
        BiasConfig(cv="cv.pt", system="alanine_dipeptide", cuda_graphs=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="device: expected 'cpu' with route 'torch'"):
        BiasConfig(cv="cv.pt", system="alanine_dipeptide", route="torch", device="cuda")
    assert BiasConfig(cv="cv.pt", system="alanine_dipeptide", device="cuda", platform="CPU").device == "cuda"


def test_bias_cv_checks_device_and_cuda_graphs_before_building(monkeypatch, exported_cv64, ala2):
    from openmm_plugin.bias.setup import bias_cv

    _, path = exported_cv64
    n_forces = ala2.system.getNumForces()
    with pytest.raises(ConfigError, match="^device: expected 'cpu', 'cuda' or 'cuda:N', found 'tpu'$"):
        bias_cv(ala2.system, path, "walls", device="tpu")
    with pytest.raises(ConfigError, match="^cuda_graphs: expected false with route 'python'"):
        bias_cv(ala2.system, path, "walls", cuda_graphs=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="^device: expected 'cpu' with route 'torch'"):
        bias_cv(ala2.system, path, "walls", route="torch", device=torch.device("cuda"))
    assert ala2.system.getNumForces() == n_forces  # nothing was added


# --- TorchForce CUDA graphs ---------------------------------------------------------------------------------------
def test_torch_force_sets_cuda_graphs_property(exported_cv64, ala2):
    cv, _ = exported_cv64
    on, off = torch_force_for_cv(cv, 0, cuda_graphs=True), torch_force_for_cv(cv, 0)
    assert dict(on.getProperties())["useCUDAGraphs"] == "true"
    assert dict(off.getProperties())["useCUDAGraphs"] == "false"
    energies = []
    for force in (on, off):  # other platforms ignore the property: same energy
        system = openmm.System()
        for _ in range(22):
            system.addParticle(1.0)
        system.addForce(force)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(ala2.positions_nm)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
    assert energies[0] == energies[1] and abs(energies[0]) > 0


def test_refreshed_torch_bias_force_keeps_cuda_graphs(exported_cv64, ala2):
    cv, _ = exported_cv64
    system = openmm.System()
    for _ in range(22):
        system.addParticle(1.0)
    holder = TorchBiasForce(system, cv, HarmonicRestraint([0.0, 0.0], 1.0), cuda_graphs=True)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ala2.positions_nm)
    holder.refresh(SimpleNamespace(system=system, context=context))  # a deposition rebuilds the force
    cast = import_openmmtorch().TorchForce.cast
    assert holder.refreshes == 1
    assert dict(cast(system.getForce(holder.index)).getProperties())["useCUDAGraphs"] == "true"
    assert dict(torch_bias_force(cv, HarmonicRestraint([0.0, 0.0], 1.0)).getProperties())["useCUDAGraphs"] == "false"


# --- on a GPU -------------------------------------------------------------------------------------------------
def _platform_or_skip(name: str) -> openmm.Platform:
    try:
        return openmm.Platform.getPlatformByName(name)
    except Exception:  # noqa: BLE001
        pytest.skip(f"OpenMM has no {name} platform here (install openmm[cuda12])")


@gpu
@needs_cuda
def test_cuda_evaluator_equals_cpu(exported_cv64, ala2):
    cv, _ = exported_cv64
    x, bias = _selected(cv, ala2), _bias()
    on_gpu, on_cpu = CVEvaluator(cv, device="cuda"), CVEvaluator(cv, device="cpu")
    assert on_gpu.single_transfer and next(on_gpu.cv.buffers()).is_cuda and not cv.atom_indices.is_cuda
    for got, want in zip(on_gpu.bias_energy_forces(x, bias), on_cpu.bias_energy_forces(x, bias)):
        assert np.allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.allclose(on_gpu.values(x), on_cpu.values(x), atol=1e-5)
    assert np.allclose(on_gpu.jacobian(x)[1], on_cpu.jacobian(x)[1], atol=1e-5)


@gpu
@needs_cuda
@pytest.mark.parametrize("platform", ["CUDA", "CPU"])
def test_python_bias_on_cuda_runs_md(platform, exported_cv64, ala2):
    import copy

    cv, _ = exported_cv64
    system = copy.deepcopy(ala2.system)
    force = python_bias_force(cv, _bias(), device="cuda", system=system)
    system.addForce(force)
    context = openmm.Context(system, openmm.LangevinMiddleIntegrator(300, 1, 0.002), _platform_or_skip(platform))
    context.setPositions(ala2.positions_nm)
    context.getIntegrator().step(10)
    state = context.getState(getPositions=True, getEnergy=True)
    assert np.isfinite(state.getPotentialEnergy()._value)
    assert np.all(np.isfinite(state.getPositions(asNumpy=True)._value))
    assert force.callback.evaluations >= 10 and np.all(np.isfinite(force.callback.last_cv))


@gpu
@needs_cuda
def test_torch_force_cuda_graphs_on_and_off_agree(exported_cv64, ala2):
    cv, _ = exported_cv64
    results = []
    for graphs in (True, False):
        system = openmm.System()
        for _ in range(22):
            system.addParticle(1.0)
        system.addForce(torch_bias_force(cv, HarmonicRestraint([0.0, 0.1], 30.0), cuda_graphs=graphs))
        try:
            context = openmm.Context(system, openmm.VerletIntegrator(0.001), _platform_or_skip("CUDA"))
        except openmm.OpenMMException as err:  # openmm-torch without its CUDA kernels (pip: openmmtorch[cuda12])
            if "kernel" not in str(err):
                raise
            pytest.skip(f"this openmm-torch has no CUDA kernels for TorchForce: {err}")
        for shift in (0.0, 0.01, 0.02):  # replays of the captured graph on new positions
            context.setPositions(ala2.positions_nm + shift * np.arange(66).reshape(22, 3) / 66)
            state = context.getState(getEnergy=True, getForces=True)
        results.append((state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    assert np.allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)


@gpu
@needs_cuda
def test_compiled_on_cuda_equals_eager(exported_cv64, ala2):
    from cvlearn.export import load_eager_cv

    cv, path = exported_cv64
    x, bias = _selected(cv, ala2), _bias()
    compiled = CVEvaluator(load_eager_cv(path), compile=True, device="cuda")
    got = compiled.bias_energy_forces(x, bias)
    assert compiled._selected.fn is not compiled._selected.eager  # compiled, no eager fallback
    for a, b in zip(got, CVEvaluator(cv, device="cuda").bias_energy_forces(x, bias)):
        assert np.allclose(a, b, rtol=1e-5, atol=1e-5)


def _learn_pieces(tmp_path, ala2, ala2_heavy, device: str) -> None:
    """``cvlearn learn``'s device path: the store embeds with an embedder on ``device`` and the model outputs come
    back to the CPU, equal to an all-CPU run."""
    from cvlearn.data.store import EmbeddingStore, embed_trajectories
    from cvlearn.estimators.multiseed import model_outputs
    from cvlearn.nn.windows import make_token_embedder
    from tests.conftest import make_tiny_cv

    heavy, z = ala2_heavy
    rng = np.random.default_rng(0)
    frames = (ala2.positions_nm[heavy][None] + 0.01 * rng.normal(size=(6, len(heavy), 3))).astype(np.float32)
    model = make_tiny_cv(ala2.topology, heavy, z).eval()
    tokens, outputs = [], []
    for k, where in enumerate(("cpu", device)):
        embedder = make_token_embedder(model.featurizer, ala2.topology, heavy, "molecule").to(where)
        embed_trajectories(embedder, [frames], tmp_path / f"store{k}", progress=False)
        tokens.append(EmbeddingStore(tmp_path / f"store{k}").trajectory(0))
        (out,) = model_outputs(model.to(where), [torch.from_numpy(frames)])
        assert out.device == torch.device("cpu") and out.shape == (6, 2)
        outputs.append(out.numpy())
    assert tokens[0].shape[0] == 6 and np.allclose(tokens[1], tokens[0], atol=1e-4)
    assert np.allclose(outputs[1], outputs[0], atol=1e-4)


def test_learn_pieces_on_cpu(tmp_path, ala2, ala2_heavy):
    _learn_pieces(tmp_path, ala2, ala2_heavy, "cpu")


@gpu
@needs_cuda
def test_learn_pieces_on_cuda_equal_cpu(tmp_path, ala2, ala2_heavy):
    _learn_pieces(tmp_path, ala2, ala2_heavy, "cuda")
