"""The distance-VAMPNet baseline exported through ``export_cv``: the same contract and engine routes as the GNN CV.

A real :class:`DistanceCV` lobe (pairwise distances of the heavy atoms, nm → MLP head) is trained by VAMPNet on
frames with a slow coordinate, exported, loaded back (TorchScript and eager twin) and evaluated on the same frames, in
both OpenMM routes (forces = −gradient of the engine's own energy by finite differences), and with periodic images.
"""

from __future__ import annotations

import copy

import numpy as np
import openmm
import pytest
import torch

from cvlearn.estimators.multiseed import fit_seeds, model_outputs
from cvlearn.export import export_cv, load_cv, load_eager_cv
from cvlearn.models.cv import DistanceCV, PairwiseDistances, fit_head_scaler
from cvlearn.nn.heads import MLPHead


def _frames(ala2, heavy, n_frames=300, seed=0) -> list[torch.Tensor]:
    """Two trajectories of heavy-atom positions (nm): an AR(1) slow stretch of the last atom plus fast noise."""
    rng = np.random.default_rng(seed)
    base = ala2.positions_nm[heavy]
    direction = base[-1] - base[0]
    direction /= np.linalg.norm(direction)
    out = []
    for _ in range(2):
        x = np.zeros(n_frames)
        for t in range(1, n_frames):
            x[t] = 0.95 * x[t - 1] + 0.03 * rng.normal()
        pos = base[None] + 0.005 * rng.normal(size=(n_frames, *base.shape))
        pos[:, -1] += x[:, None] * direction
        out.append(torch.tensor(pos, dtype=torch.float32))
    return out


@pytest.fixture(scope="module")
def trained(ala2, ala2_heavy, tmp_path_factory):
    """A trained distance VAMPNet (VAMPModel around a DistanceCV), exported in float64 with its training range."""
    heavy, _ = ala2_heavy
    n = len(heavy)
    frames = _frames(ala2, heavy)
    result = fit_seeds(lambda s: DistanceCV(n, MLPHead(n * (n - 1) // 2, 2, hidden=16)), frames[:1], frames[1:], [0],
                       prepare=lambda lobe: fit_head_scaler(lobe, frames[0]), lagtime=5, max_epochs=3, patience=2,
                       batch_size=128, learning_rate=2e-3)
    model = result.models[0].eval()
    path = tmp_path_factory.mktemp("distance_cv") / "distances.pt"
    outputs = [o.numpy() for o in model_outputs(model, frames)]
    export_cv(model, path, atom_indices=heavy, n_particles=ala2.topology.getNumAtoms(), topology=ala2.topology,
              frame_interval_ps=0.1, training_outputs=outputs, dtype=torch.float64)
    return model, frames, path


def test_export_loads_and_reproduces_the_trained_model(trained, ala2, ala2_heavy):
    model, frames, path = trained
    heavy, z = ala2_heavy
    cv, spec = load_cv(path)
    assert spec.featurizer_architecture == "DistanceCV" and spec.n_cvs == 2 and list(spec.atomic_numbers) == list(z)
    assert spec.lagtime_ps == pytest.approx(0.5) and not spec.periodic and spec.units["positions"] == "nm"
    reference = copy.deepcopy(model).double()  # the trained model, in the export dtype
    with torch.no_grad():
        expected = torch.cat([reference(f.double()) for f in frames])
        trained32 = torch.cat([model(f) for f in frames]).double()
        # the file's own features are the lobe's PairwiseDistances (nm): one feature function for training and export
        assert isinstance(load_eager_cv(path).model.lobe.distances, PairwiseDistances)
        full = torch.tensor(np.repeat(ala2.positions_nm[None], len(frames[0]), axis=0))
        full[:, heavy] = frames[0].double()
        scripted = torch.stack([cv(p) for p in full])
        eager = torch.stack([load_eager_cv(path)(p) for p in full])
    assert torch.allclose(scripted, expected[:len(frames[0])], atol=1e-5)
    assert torch.allclose(eager, scripted, atol=1e-12)
    assert torch.allclose(expected, trained32, atol=1e-4)  # float64 export of the float32-trained weights
    low, high = np.array(spec.cv_range_training).T
    assert np.allclose(low, expected.min(0).values.numpy(), atol=1e-5)
    assert np.allclose(high, expected.max(0).values.numpy(), atol=1e-5)


def _context(ala2, force):
    system = openmm.System()
    for atom in ala2.topology.atoms():
        system.addParticle(atom.element.mass)
    system.addForce(force)
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))


@pytest.mark.parametrize("route", ["python", "torch"])
def test_engine_forces_are_minus_the_gradient_of_the_engine_energy(trained, ala2, route):
    from openmm_plugin.bias.restraints import HarmonicRestraint
    from openmm_plugin.forces import python_bias_force, torch_bias_force

    _, _, path = trained
    cv, _ = load_cv(path)
    pos = ala2.positions_nm.copy()
    s0 = cv(torch.tensor(pos)).detach().numpy()
    bias = HarmonicRestraint(s0 + 0.5, 20.0)  # away from the current value: dV/ds != 0
    force = python_bias_force(cv, bias) if route == "python" else torch_bias_force(cv, bias)
    context = _context(ala2, force)

    def energy(x):
        context.setPositions(x)
        return context.getState(getEnergy=True).getPotentialEnergy()._value

    context.setPositions(pos)
    forces = np.asarray(context.getState(getForces=True).getForces(asNumpy=True)._value)
    assert energy(pos) == pytest.approx(bias.energy_and_gradient(s0)[0], rel=1e-6)
    h, fd = 1e-5, np.zeros_like(pos)
    for atom in range(pos.shape[0]):
        for axis in range(3):
            plus, minus = pos.copy(), pos.copy()
            plus[atom, axis] += h
            minus[atom, axis] -= h
            fd[atom, axis] = -(energy(plus) - energy(minus)) / (2 * h)
    assert np.abs(forces).max() > 1.0
    assert np.linalg.norm(forces - fd) / np.linalg.norm(fd) < 1e-4


def test_periodic_export_gives_the_same_cv_for_every_image(trained, ala2, ala2_heavy, tmp_path):
    model, frames, _ = trained
    heavy, _ = ala2_heavy
    path = tmp_path / "periodic.pt"
    export_cv(model, path, atom_indices=heavy, n_particles=ala2.topology.getNumAtoms(), topology=ala2.topology,
              frame_interval_ps=0.1, training_frames=frames, dtype=torch.float64, periodic=True)
    cv, spec = load_cv(path)
    assert spec.periodic and spec.bonds
    box = torch.tensor([[2.0, 0.0, 0.0], [0.3, 2.2, 0.0], [-0.4, 0.5, 2.5]], dtype=torch.float64)  # triclinic
    pos = torch.tensor(ala2.positions_nm)
    rng = np.random.default_rng(1)
    shifted = pos.clone()
    for atom in heavy:  # every selected atom to another image: the molecule is cut apart
        shifted[atom] += torch.tensor(rng.integers(-2, 3, size=3), dtype=torch.float64) @ box
    with torch.no_grad():
        whole = cv(pos, box)
        assert torch.allclose(cv(shifted, box), whole, atol=1e-10)
        reference = copy.deepcopy(model).double()
        assert torch.allclose(whole, reference(pos[heavy][None]).squeeze(0), atol=1e-10)
    with pytest.raises(torch.jit.Error, match="periodic and needs the box"):
        cv(pos)
