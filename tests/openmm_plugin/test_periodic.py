"""Periodic CVs in real periodic OpenMM Contexts (alanine dipeptide in TIP3P water): both engine routes pass the box,
their forces are −∇ of their energy, frames read back from a DCD give the engine's CV, and mismatches fail early."""

import copy
import logging
import pickle

import mdtraj
import numpy as np
import openmm
import pytest
import torch

from cvlearn.data.selection import atomic_numbers
from cvlearn.data.trajectories import load_trajectories
from cvlearn.export import export_cv, load_cv
from openmm_plugin.bias import HarmonicRestraint
from openmm_plugin.cv_evaluation import CVEvaluator
from openmm_plugin.forces import (TorchBiasForce, check_cv_fits_system, python_bias_force, python_force_for_cv,
                                  torch_bias_force, torch_force_for_cv)
from openmm_plugin.simulation import make_integrator, make_simulation
from tests.conftest import make_tiny_cv

_GROUP = 31


@pytest.fixture(scope="module")
def water():
    from systems import alanine_dipeptide_water

    return alanine_dipeptide_water.build()


@pytest.fixture(scope="module")
def water_cv(tmp_path_factory, water):
    from systems.alanine_dipeptide_water import heavy_atom_indices

    heavy = heavy_atom_indices(water.topology)
    path = tmp_path_factory.mktemp("cv") / "periodic.pt"
    export_cv(make_tiny_cv(water.topology, heavy, atomic_numbers(water.topology, heavy)), path, atom_indices=heavy,
              n_particles=water.topology.getNumAtoms(), topology=water.topology, dtype=torch.float64, periodic=True)
    return load_cv(path)[0]


def _box(water) -> np.ndarray:
    return np.asarray(water.topology.getPeriodicBoxVectors().value_in_unit(openmm.unit.nanometer))


def _wrap(positions, box):
    out = positions.copy()
    for k in (2, 1, 0):
        out -= np.floor(out[:, k:k + 1] / box[k, k]) * box[k]
    return out


def _split(water, cv) -> np.ndarray:
    """All atoms wrapped into the box after moving a peptide atom onto a box corner: the peptide is cut apart."""
    box = _box(water)
    atom = int(cv.atom_indices[4])
    out = _wrap(water.positions_nm - water.positions_nm[atom] + 0.02, box)
    sel = out[cv.atom_indices.numpy()]
    assert np.ptp(sel, axis=0).max() > box[0, 0] / 2  # really split
    return out


def _context(water, force):
    """The real water System (its own forces in group 0) plus ``force`` alone in group 31, Reference platform."""
    system = copy.deepcopy(water.system)  # before the force is added (a System holding a TorchForce cannot be copied)
    force.setForceGroup(_GROUP)
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


def _energy_forces(context, positions):
    context.setPositions(positions)
    state = context.getState(getEnergy=True, getForces=True, groups={_GROUP})
    return state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value


def _python_value_grad(cv, positions, box):
    pos = torch.tensor(positions, requires_grad=True)
    s = cv(pos, torch.tensor(box))
    (grad,) = torch.autograd.grad(s[0], pos)
    return s.detach().numpy(), grad.numpy()


@pytest.mark.parametrize("route", ["python", "torch"])
def test_context_matches_python_and_finite_differences(route, water, water_cv):
    force = (python_force_for_cv if route == "python" else torch_force_for_cv)(water_cv, 0, 10.0)
    assert force.usesPeriodicBoundaryConditions()
    if route == "python":  # OpenMM pickles PythonForces (checkpoints, XML): the CV stays periodic
        assert pickle.loads(pickle.dumps(force.callback)).evaluator.periodic
    context = _context(water, force)
    box = _box(water)
    split = _split(water, water_cv)
    energy, forces = _energy_forces(context, split)
    s, grad = _python_value_grad(water_cv, water.positions_nm, box)  # the whole molecule: the same CV
    assert energy == pytest.approx(10.0 * s[0], rel=1e-9, abs=1e-9)
    sel = water_cv.atom_indices.numpy()
    assert np.allclose(forces[sel], -10.0 * grad[sel], atol=1e-8)
    h, fd = 1e-5, np.zeros((len(sel), 3))
    for a, atom in enumerate(sel):
        for axis in range(3):
            e = []
            for sign in (1, -1):
                moved = split.copy()
                moved[atom, axis] += sign * h
                e.append(_energy_forces(context, moved)[0])
            fd[a, axis] = -(e[0] - e[1]) / (2 * h)
    assert np.linalg.norm(forces[sel] - fd) / np.linalg.norm(fd) < 1e-5


def test_bias_forces_agree_between_routes_in_a_periodic_context(water, water_cv):
    s0 = water_cv(torch.tensor(water.positions_nm), torch.tensor(_box(water))).detach().numpy()
    results = []
    for make in (python_bias_force, torch_bias_force):
        context = _context(water, make(water_cv, HarmonicRestraint(s0 + 0.3, 50.0)))
        results.append(_energy_forces(context, _split(water, water_cv)))
    (e_py, f_py), (e_t, f_t) = results
    assert e_py > 1.0 and e_t == pytest.approx(e_py, rel=1e-9)
    assert np.allclose(f_py, f_t, atol=1e-8)


def test_compiled_python_route_in_a_periodic_context(water, water_cv, tmp_path):
    """The eager twin through torch.compile (CVEvaluator) gets the box too: same energy and forces as TorchScript."""
    from cvlearn.export import load_eager_cv
    from systems.alanine_dipeptide_water import heavy_atom_indices

    heavy = heavy_atom_indices(water.topology)
    path = tmp_path / "cv.pt"
    export_cv(make_tiny_cv(water.topology, heavy, atomic_numbers(water.topology, heavy)), path, atom_indices=heavy,
              n_particles=water.topology.getNumAtoms(), topology=water.topology, dtype=torch.float64, periodic=True)
    results, split = [], _split(water, water_cv)
    for module, compile in ((load_cv(path)[0], False), (load_eager_cv(path), True)):
        force = python_bias_force(module, HarmonicRestraint([0.3, -0.2], 50.0), compile=compile)
        results.append(_energy_forces(_context(water, force), split))
    evaluator = force.callback.evaluator
    assert evaluator._selected.fn is not evaluator._selected.eager  # really compiled, no eager fallback
    (e_ts, f_ts), (e_c, f_c) = results
    assert abs(e_ts) > 1e-3 and e_c == pytest.approx(e_ts, rel=1e-9)
    assert np.allclose(f_c, f_ts, atol=1e-8)


def test_dcd_frames_give_the_engine_cv(tmp_path, water, water_cv):
    """Short MD; frames written per-atom wrapped (mdtraj) and molecule-wrapped (OpenMM DCDReporter), read back with
    cvlearn.data.trajectories: the python-route CV with the file's box equals the CV of the engine's state."""
    from openmm.app import DCDReporter

    from systems import alanine_dipeptide_water as w

    simulation = make_simulation(water.topology, copy.deepcopy(water.system),
                                 make_integrator(w.TEMPERATURE_K, w.FRICTION_PER_PS, w.TIMESTEP_PS, seed=1), "CPU")
    corner = water.positions_nm - water.positions_nm[int(water_cv.atom_indices[4])] + 0.02
    simulation.context.setPositions(corner)  # molecules whole (constraints need them so), the peptide on a corner
    simulation.reporters.append(DCDReporter(str(tmp_path / "openmm.dcd"), 5, enforcePeriodicBox=True))
    evaluator = CVEvaluator(water_cv)
    sel = evaluator.atom_indices
    engine, frames, boxes = [], [], []
    for _ in range(3):
        simulation.step(5)
        state = simulation.context.getState(getPositions=True)
        positions = state.getPositions(asNumpy=True)._value
        box = state.getPeriodicBoxVectors(asNumpy=True)._value
        engine.append(evaluator.values_from_context(simulation.context))
        assert np.array_equal(engine[-1], evaluator.values(positions[sel], box))
        frames.append(_wrap(positions, box))
        boxes.append(box)
    top = mdtraj.Topology.from_openmm(water.topology)
    boxes = np.array(boxes)
    cell = np.transpose(mdtraj.utils.box_vectors_to_lengths_and_angles(boxes[:, 0], boxes[:, 1], boxes[:, 2]))
    mdtraj.Trajectory(np.array(frames), top, unitcell_lengths=cell[:, :3],
                      unitcell_angles=cell[:, 3:]).save_dcd(str(tmp_path / "wrapped.dcd"))
    for name in ("wrapped.dcd", "openmm.dcd"):
        (traj,) = load_trajectories([tmp_path / name], top)
        assert traj.n_frames == 3 and traj.unitcell_vectors is not None
        read = [evaluator.values(traj.xyz[i][sel], traj.unitcell_vectors[i]) for i in range(3)]
        assert np.allclose(read, engine, atol=1e-4), name  # DCD stores float32 Å
    wrapped = load_trajectories([tmp_path / "wrapped.dcd"], top)[0].xyz[:, sel]
    assert np.ptp(wrapped, axis=1).max() > 1.0  # the files really hold split molecules


def test_periodic_cv_needs_a_box(water, water_cv):
    evaluator = CVEvaluator(water_cv)
    sel = water.positions_nm[evaluator.atom_indices]
    with pytest.raises(ValueError, match=r"box_nm: this CV is periodic .* pass the box vectors \[3, 3\] nm"):
        evaluator.values(sel)
    with pytest.raises(torch.jit.Error, match=r"pass box vectors, forward\(positions_nm, box_nm"):
        water_cv(torch.tensor(water.positions_nm))
    assert evaluator.values(sel, _box(water)).shape == (2,)


def test_periodicity_mismatches_fail_early_or_warn(tmp_path, water, water_cv, ala2, ala2_heavy, caplog):
    heavy, z = ala2_heavy
    path = tmp_path / "vacuum_periodic.pt"
    export_cv(make_tiny_cv(ala2.topology, heavy, z), path, atom_indices=heavy, n_particles=22, topology=ala2.topology,
              dtype=torch.float64, periodic=True)
    periodic22, _ = load_cv(path)
    message = r"^cv: the CV on 10 atoms is periodic \(forward takes box vectors\) but the System has no periodic box"
    for call in (lambda: check_cv_fits_system(periodic22, ala2.system),
                 lambda: python_bias_force(periodic22, HarmonicRestraint([0.0, 0.0], 1.0), system=ala2.system),
                 lambda: TorchBiasForce(copy.deepcopy(ala2.system), periodic22, HarmonicRestraint([0.0, 0.0], 1.0))):
        with pytest.raises(ValueError, match=message):
            call()
    check_cv_fits_system(water_cv, water.system)  # periodic in periodic: fine
    plain = export_cv(make_tiny_cv(water.topology, water_cv.atom_indices.tolist(),
                                   atomic_numbers(water.topology, water_cv.atom_indices.tolist())),
                      tmp_path / "plain.pt", atom_indices=water_cv.atom_indices.tolist(),
                      n_particles=water.topology.getNumAtoms(), topology=water.topology)
    with caplog.at_level(logging.WARNING, logger="openmm_plugin.forces"):
        check_cv_fits_system(plain, water.system)
    assert "not periodic but the System has periodic boundaries" in caplog.text
    assert "export it with periodic=True" in caplog.text
    with pytest.raises(ValueError, match="expected a System of 721 particles"):
        check_cv_fits_system(water_cv, ala2.system)
