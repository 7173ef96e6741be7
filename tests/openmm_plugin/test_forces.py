"""The CV inside real OpenMM Contexts: TorchForce and PythonForce give the CV and −∇CV of Python."""

import numpy as np
import openmm
import pytest
import torch

from openmm_plugin.bias import BiasSum, HarmonicRestraint, Metadynamics, OnComponents, OPESMetad, Wall
from openmm_plugin.forces import CVComponent, python_bias_force, python_force_for_cv, torch_bias_force, torch_force_for_cv


def _context(force, n_particles, positions):
    system = openmm.System()
    for _ in range(n_particles):
        system.addParticle(1.0)
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def _energy_forces(context):
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


@pytest.mark.parametrize("route", ["torch", "python"])
@pytest.mark.parametrize("component", [0, 1])
def test_route_equals_python(route, component, exported_cv64, ala2):
    module, _ = exported_cv64
    make = torch_force_for_cv if route == "torch" else python_force_for_cv
    context = _context(make(module, component), 22, ala2.positions_nm)
    energy, forces = _energy_forces(context)
    pos = torch.tensor(ala2.positions_nm, requires_grad=True)
    value = module(pos)[component]
    (grad,) = torch.autograd.grad(value, pos)
    assert energy == pytest.approx(float(value), rel=1e-9, abs=1e-9)
    assert np.allclose(forces, -grad.numpy(), atol=1e-8)


def test_context_forces_match_finite_differences_of_context_energy(exported_cv64, ala2):
    module, _ = exported_cv64
    context = _context(torch_force_for_cv(module, 0), 22, ala2.positions_nm)
    _, forces = _energy_forces(context)
    h = 1e-5
    fd = np.zeros_like(forces)
    for atom in module.atom_indices.tolist():
        for axis in range(3):
            energies = []
            for sign in (1, -1):
                pos = ala2.positions_nm.copy()
                pos[atom, axis] += sign * h
                context.setPositions(pos)
                energies.append(context.getState(getEnergy=True).getPotentialEnergy()._value)
            fd[atom, axis] = -(energies[0] - energies[1]) / (2 * h)
    assert np.linalg.norm(forces - fd) / np.linalg.norm(fd) < 1e-3


def test_component_out_of_range(exported_cv64):
    module, _ = exported_cv64
    with pytest.raises(ValueError, match="component"):
        python_force_for_cv(module, 5)


def test_python_force_pickles(exported_cv64, ala2):
    """OpenMM serialises PythonForces with pickle (CustomCVForce copies do this)."""
    module, _ = exported_cv64
    force = python_force_for_cv(module, 1)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(force))
    energy, _ = _energy_forces(_context(copy, 22, ala2.positions_nm))
    assert energy == pytest.approx(float(module(torch.tensor(ala2.positions_nm))[1]), rel=1e-9)


def test_cv_component_is_the_linear_bias():
    """The plain CV force is the bias V(s) = scale * s_k, in numpy and in its TorchScript snapshot."""
    bias = CVComponent(3, 1, scale=2.5)
    energy, grad = bias.energy_and_gradient(np.array([0.3, -0.7, 1.1]))
    assert energy == pytest.approx(-1.75) and np.allclose(grad, [0.0, 2.5, 0.0])
    assert not bias.update(np.zeros(3), 100) and bias.leaves() == [bias]
    scripted = torch.jit.script(bias.to_torch())
    assert float(scripted(torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64))) == pytest.approx(-1.75)
    with pytest.raises(ValueError, match="component"):
        CVComponent(2, 2)


@pytest.mark.parametrize("route", ["torch", "python"])
def test_scale_multiplies_energy_and_forces(route, exported_cv64, ala2):
    module, _ = exported_cv64
    make = torch_force_for_cv if route == "torch" else python_force_for_cv
    e1, f1 = _energy_forces(_context(make(module, 0), 22, ala2.positions_nm))
    e3, f3 = _energy_forces(_context(make(module, 0, scale=3.0), 22, ala2.positions_nm))
    assert e3 == pytest.approx(3.0 * e1, rel=1e-9) and np.allclose(f3, 3.0 * f1, atol=1e-8)


def _deposited_bias_sum():
    rng = np.random.default_rng(0)
    opes = OPESMetad(sigma=[0.3, 0.3], barrier_kjmol=20.0, pace_steps=1, temperature_k=300.0)
    metad = Metadynamics(sigma=[0.2, 0.2], height_kjmol=1.0, pace_steps=1, temperature_k=300.0, lower=[-5, -5],
                         upper=[5, 5])
    for k, p in enumerate(rng.normal(scale=0.8, size=(30, 2)), start=1):
        opes.update(p, k)
        metad.update(p, k)
    return BiasSum([opes, metad, Wall([0.3, 0.3], 100.0, side="upper"), HarmonicRestraint([0.0, 0.1], 30.0)])


def test_python_and_torch_routes_agree_on_ala2_gnn_cv(exported_cv64, ala2):
    """A real (tiny) 2-D GNN CV with OPES + metad + walls + restraint: same energies and forces both routes."""
    cv, _ = exported_cv64
    bias = _deposited_bias_sum()
    results = []
    for make in (python_bias_force, torch_bias_force):
        system = openmm.System()
        for _ in range(22):
            system.addParticle(1.0)
        system.addForce(make(cv, bias))
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(ala2.positions_nm)
        state = context.getState(getEnergy=True, getForces=True)
        results.append((state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value))
    (e_py, f_py), (e_torch, f_torch) = results
    assert abs(e_py) > 1e-3
    assert e_py == pytest.approx(e_torch, rel=1e-9, abs=1e-9)
    assert np.allclose(f_py, f_torch, rtol=1e-7, atol=1e-8)
    # and forces are -dV/dx by finite differences of the numpy bias on the CV
    pos = torch.tensor(ala2.positions_nm, requires_grad=True)
    s = cv(pos)
    v, dv = bias.energy_and_gradient(s.detach().numpy())
    (grad,) = torch.autograd.grad(s, pos, grad_outputs=torch.tensor(dv))
    assert e_py == pytest.approx(v) and np.allclose(f_py, -grad.numpy(), atol=1e-8)


def test_compiled_python_route_equals_torchscript(exported_cv64, ala2):
    """The compiled route on the eager twin stored in the CV file (its Jacobian ahead of time on the CPU): same
    energy and forces in a Context as the TorchScript module, no fallback."""
    import pickle

    from cvlearn.export import load_eager_cv
    from openmm_plugin.forces import BiasCallback

    cv, path = exported_cv64
    eager = load_eager_cv(path)
    with pytest.raises(ValueError, match="load_eager_cv"):
        python_bias_force(cv, _deposited_bias_sum(), compile=True)
    results = []
    for module, compile in ((cv, False), (eager, True)):
        system = openmm.System()
        for _ in range(22):
            system.addParticle(1.0)
        force = python_bias_force(module, _deposited_bias_sum(), compile=compile)
        system.addForce(force)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(ala2.positions_nm)
        state = context.getState(getEnergy=True, getForces=True)
        results.append((state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value))
    (e_ts, f_ts), (e_c, f_c) = results
    assert force.callback.evaluator._selected.fn is not force.callback.evaluator._selected.eager  # really compiled
    assert [j.ahead_of_time for j in force.callback.evaluator._jacobians.values()] == [True]  # C++, on the CPU
    assert abs(e_ts) > 1e-3 and e_c == pytest.approx(e_ts, rel=1e-9, abs=1e-9)
    assert np.allclose(f_c, f_ts, rtol=1e-7, atol=1e-8)
    clone = pickle.loads(pickle.dumps(force.callback))  # OpenMM pickles PythonForces (checkpoints, XML)
    assert isinstance(clone, BiasCallback) and clone.evaluator.compiled


def test_compiled_route_differentiates_only_the_components_the_bias_acts_on(exported_cv64, ala2):
    """OPES + wall on component 1 of a 2-D CV: the compiled graph returns one Jacobian row and the Context's energy
    and forces equal the TorchScript route's; a bias whose dV/ds contradicts its acts_on() is refused."""
    from cvlearn.export import load_eager_cv

    cv, path = exported_cv64
    opes = OPESMetad(sigma=[0.3], barrier_kjmol=20.0, pace_steps=1, temperature_k=300.0)
    for k, p in enumerate(np.random.default_rng(1).normal(scale=0.8, size=(30, 1)), start=1):
        opes.update(p, k)
    bias = BiasSum([OnComponents(opes, [1], 2), OnComponents(Wall([0.3], 100.0, side="upper"), [1], 2)])
    assert bias.acts_on() == (1,)
    results = []
    for module, compile in ((cv, False), (load_eager_cv(path), True)):
        force = python_bias_force(module, bias, compile=compile)
        results.append(_energy_forces(_context(force, 22, ala2.positions_nm)))
    (e_ts, f_ts), (e_c, f_c) = results
    evaluator = force.callback.evaluator
    assert list(evaluator._jacobians) == [(1,)] and evaluator._jacobians[(1,)].fn is not evaluator._jacobians[(1,)].eager
    assert abs(e_ts) > 1e-3 and e_c == pytest.approx(e_ts, rel=1e-9, abs=1e-9)
    assert np.abs(f_ts).max() > 1e-3 and np.allclose(f_c, f_ts, rtol=1e-7, atol=1e-8)

    class Liar(HarmonicRestraint):  # says it acts on component 1 only, pulls on component 0
        def acts_on(self):
            return (1,)

    with pytest.raises(ValueError, match="acts_on"):
        evaluator.bias_energy_forces(np.asarray(ala2.positions_nm)[evaluator.atom_indices], Liar([0.0, 0.0], 10.0))


def test_compiled_route_takes_a_cv_whose_parameters_require_grad(ala2):
    """A user's own nn.Module CV (trainable parameters, requires_grad=True) through the compiled route: the same
    energy and forces in a Context as the eager route, and the finite-difference gradient of that energy. (torch
    2.9.1 compiles jacrev of two or more rows through a SiLU with trainable parameters to an all-zero Jacobian:
    the evaluator must compile a frozen copy, and leave the user's module as it was.)"""

    class Distances(torch.nn.Module):  # heavy-ish pair distances (nm) -> MLP -> 2 CVs, parameters left trainable
        n_cvs = 2

        def __init__(self):
            super().__init__()
            self.register_buffer("atom_indices", torch.tensor([1, 4, 6, 8, 14, 16]))
            self.register_buffer("pairs", torch.triu_indices(6, 6, 1))
            self.net = torch.nn.Sequential(torch.nn.Linear(15, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2))

        def selected(self, x):
            return self.net((x[self.pairs[0]] - x[self.pairs[1]]).norm(dim=-1).float()).to(x.dtype)

    torch.manual_seed(0)
    cv = Distances()
    assert all(p.requires_grad for p in cv.parameters())
    s0 = cv.selected(torch.as_tensor(ala2.positions_nm[cv.atom_indices.numpy()])).detach().numpy()
    center = s0 + np.array([0.3, -0.2])  # the restraint pulls on both components: both Jacobian rows
    results = []
    for compile in (False, True):
        force = python_bias_force(cv, HarmonicRestraint(center, 50.0), compile=compile)
        results.append(_energy_forces(_context(force, 22, ala2.positions_nm)))
    (e_eager, f_eager), (e_compiled, f_compiled) = results
    assert force.callback.evaluator.compiled and abs(e_eager) > 1e-3 and np.abs(f_eager).max() > 1e-2
    assert all(p.requires_grad for p in cv.parameters())  # the user's module is untouched
    assert e_compiled == pytest.approx(e_eager, rel=1e-5) and np.allclose(f_compiled, f_eager, rtol=1e-5, atol=1e-6)
    x, h = np.array(ala2.positions_nm, dtype=np.float64), 1e-3  # central difference, x of atom 4 (float32 MLP)
    context = _context(python_bias_force(cv, HarmonicRestraint(center, 50.0)), 22, x)
    energies = []
    for sign in (1, -1):
        x_shift = x.copy()
        x_shift[4, 0] += sign * h
        context.setPositions(x_shift)
        energies.append(_energy_forces(context)[0])
    assert -(energies[0] - energies[1]) / (2 * h) == pytest.approx(f_compiled[4, 0], rel=1e-3)


class _Distances(torch.nn.Module):
    """Two pair distances (nm) of three atoms: a CV with the exported-CV interface, cheap to compile."""

    n_cvs, periodic = 2, False

    def __init__(self):
        super().__init__()
        self.register_buffer("atom_indices", torch.tensor([0, 1, 2]))

    def selected(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([(x[0] - x[1]).norm(), (x[1] - x[2]).norm()])


def test_compile_modes_pick_the_route_and_survive_pickling():
    """``compile=True`` is ahead of time on the CPU, ``"inductor"`` is torch.compile; both give the eager Jacobian,
    the mode survives OpenMM's pickling of the callback, and an unknown mode is refused before any compile."""
    import pickle

    from cvlearn.compiling import AheadOfTime, CompiledOrEager
    from openmm_plugin.cv_evaluation import CVEvaluator

    cv = _Distances()
    with pytest.raises(ValueError, match="compile: expected False, True, 'aot' or 'inductor', found 'fast'"):
        CVEvaluator(cv, compile="fast")
    x = np.array([[0.0, 0.0, 0.0], [0.1, 0.02, 0.0], [0.15, 0.12, 0.03]])
    s_eager, j_eager = CVEvaluator(cv).jacobian(x)
    for compile, mode, kind in ((True, "aot", AheadOfTime), ("inductor", "inductor", CompiledOrEager)):
        evaluator = CVEvaluator(cv, compile=compile)
        s, j = evaluator.jacobian(x)
        assert evaluator.compile_mode == mode
        assert [type(f) for f in evaluator._jacobians.values()] == [kind]
        assert np.allclose(s, s_eager, rtol=1e-12) and np.allclose(j, j_eager, rtol=1e-10, atol=1e-12)
        force = python_bias_force(cv, HarmonicRestraint([0.1, 0.1], [100.0, 100.0]), compile=compile)
        assert pickle.loads(pickle.dumps(force.callback)).evaluator.compile_mode == mode
