"""``bias_cv``: the one-call API on real ala2 Systems with torsion CVs; defaults from the CV's contract."""

import logging
import math

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch

from cvlearn.data.colvar import read_colvar
from cvlearn.errors import ConfigError
from cvlearn.export import export_cv, load_cv
from openmm_plugin import bias_cv
from openmm_plugin.bias import MetadParams, OPESParams, WallParams, make_bias
from openmm_plugin.bias.torsions import Torsions, export_torsion_cv
from openmm_plugin.simulation import make_integrator
from systems import alanine_dipeptide

TWO_PI = 2 * math.pi


@pytest.fixture(scope="module")
def phi_psi_cv(tmp_path_factory, ala2):
    """φ, ψ of ala2 as an exported CV marked periodic (2π) with the range [-π, π]."""
    path = tmp_path_factory.mktemp("cv") / "phi_psi.pt"
    export_torsion_cv(path, alanine_dipeptide.phi_psi_indices(ala2.topology), ala2.topology)
    return path


@pytest.fixture(scope="module")
def open_cv(tmp_path_factory, ala2):
    """φ, ψ exported as a non-periodic CV with a training range of [-2, 1] and [0, 3]."""
    phi, psi = alanine_dipeptide.phi_psi_indices(ala2.topology)
    atoms = sorted(set(phi + psi))
    local = [[atoms.index(a) for a in q] for q in (phi, psi)]
    path = tmp_path_factory.mktemp("cv") / "open.pt"
    export_cv(Torsions(local), path, atom_indices=atoms, n_particles=22, topology=ala2.topology,
              dtype=torch.float64, cv_range=[(-2.0, 1.0), (0.0, 3.0)], extra={"cv_names": ["a", "b"]})
    return path


def _fresh_system(ala2):
    return openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(ala2.system))


def test_bias_cv_builds_attaches_runs_and_resumes(phi_psi_cv, ala2, tmp_path):
    system = _fresh_system(ala2)
    biased = bias_cv(system, phi_psi_cv, method="opes-metad", temperature_k=300, sigma=0.3, barrier_kjmol=30,
                     pace_steps=20, colvar=tmp_path / "COLVAR", report_interval_steps=20, route="python",
                     force_group=1, save_path=tmp_path / "state.npz", save_every_steps=50)
    assert biased.bias.periods.tolist() == [TWO_PI, TWO_PI]  # from the contract, no `periods` given
    assert biased.spec.n_cvs == 2 and system.getForce(system.getNumForces() - 1).getName() == "cvlearn bias opes"
    simulation = app.Simulation(ala2.topology, system, make_integrator(300.0, 1.0, 0.002, seed=1, bias_group=1),
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(ala2.positions_nm)
    assert biased.attach(simulation) is False  # nothing to restore yet
    biased.run(simulation, 100)
    biased.close(simulation)
    assert simulation.currentStep == 100 and len(biased.bias.records) == 5  # one deposition per 20 steps
    colvar = read_colvar(tmp_path / "COLVAR")
    assert list(colvar)[:3] == ["time", "torsion0", "torsion1"] and len(colvar["time"]) == 5
    assert np.all(np.abs(colvar["torsion0"]) <= math.pi)
    # a second BiasedCV on a new System resumes from the checkpoint: same step, same kernels
    again = bias_cv(_fresh_system(ala2), phi_psi_cv, sigma=0.3, barrier_kjmol=30, pace_steps=20,
                    colvar=tmp_path / "COLVAR", report_interval_steps=20, save_path=tmp_path / "state.npz")
    sim2 = app.Simulation(ala2.topology, again.system, make_integrator(300.0, 1.0, 0.002, seed=1, bias_group=1),
                          openmm.Platform.getPlatformByName("Reference"))
    assert again.attach(sim2) is True and sim2.currentStep == 100
    np.testing.assert_array_equal(again.bias.records, biased.bias.records)
    with pytest.raises(ValueError, match="attach: expected a Simulation built from the System given to bias_cv"):
        again.attach(simulation)



def test_a_run_that_blows_up_keeps_its_colvar_and_frames_up_to_there(phi_psi_cv, ala2, tmp_path):
    """The rows before a blow-up are the record of what went wrong: written, not left waiting for a checkpoint that
    never comes; a resume still cuts them back to its checkpoint."""
    system = _fresh_system(ala2)
    biased = bias_cv(system, phi_psi_cv, method="opes-metad", temperature_k=300, sigma=0.3, barrier_kjmol=30,
                     pace_steps=20, colvar=tmp_path / "COLVAR", report_interval_steps=20, route="python",
                     force_group=1, save_path=tmp_path / "state.npz", save_every_steps=40,
                     trajectory=tmp_path / "trajectory.dcd", timestep_ps=0.002)
    simulation = app.Simulation(ala2.topology, system, make_integrator(300.0, 1.0, 0.002, seed=1, bias_group=1),
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(ala2.positions_nm)
    biased.attach(simulation)
    biased.run(simulation, 100)  # checkpoints at 40 and 80; rows at 20, 40, ..., 100
    simulation.context.setPositions(np.full((22, 3), np.nan))
    with pytest.raises(FloatingPointError, match="blown up"):
        biased.run(simulation, 20)
    assert len(read_colvar(tmp_path / "COLVAR")["time"]) == 6  # every row, the one of the NaN step included
    import mdtraj

    frames = mdtraj.load(str(tmp_path / "trajectory.dcd"), top=mdtraj.Topology.from_openmm(ala2.topology))
    assert frames.n_frames == 5 and np.isfinite(frames.xyz).all()  # the NaN frame is refused, in the same words
    again = bias_cv(_fresh_system(ala2), phi_psi_cv, sigma=0.3, barrier_kjmol=30, pace_steps=20,
                    colvar=tmp_path / "COLVAR", report_interval_steps=20, save_path=tmp_path / "state.npz",
                    trajectory=tmp_path / "trajectory.dcd", timestep_ps=0.002)
    sim2 = app.Simulation(ala2.topology, again.system, make_integrator(300.0, 1.0, 0.002, seed=1, bias_group=1),
                          openmm.Platform.getPlatformByName("Reference"))
    assert again.attach(sim2) is True and sim2.currentStep == 80
    again.run(sim2, 20)
    again.close(sim2)
    assert np.allclose(read_colvar(tmp_path / "COLVAR")["time"], np.arange(1, 6) * 20 * 0.002)

def test_bias_force_is_minus_the_gradient_of_the_bias_energy(phi_psi_cv, ala2):
    """Restraint on φ, ψ: the force of group 1 equals −dV/dx by central differences of the group's energy."""
    system = _fresh_system(ala2)
    biased = bias_cv(system, phi_psi_cv, method="restraint", center=(-1.0, 2.0), kappa_kjmol=50.0)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(ala2.positions_nm)
    state = context.getState(getEnergy=True, getForces=True, groups={1})
    energy, forces = state.getPotentialEnergy()._value, state.getForces(asNumpy=True)._value
    assert energy > 1.0  # the restraint pulls: a meaningful force
    h, fd = 1e-5, np.zeros_like(forces)
    for atom in biased.runner.evaluator.atom_indices:
        for axis in range(3):
            e = []
            for sign in (1, -1):
                pos = ala2.positions_nm.copy()
                pos[atom, axis] += sign * h
                context.setPositions(pos)
                e.append(context.getState(getEnergy=True, groups={1}).getPotentialEnergy()._value)
            fd[atom, axis] = -(e[0] - e[1]) / (2 * h)
    assert np.linalg.norm(forces - fd) / np.linalg.norm(fd) < 1e-5


def test_periods_come_from_the_contract_and_a_mismatch_is_warned(phi_psi_cv, open_cv, caplog):
    _, spec = load_cv(phi_psi_cv)
    bias = make_bias("opes-metad", 2, temperature_k=300.0, spec=spec)
    assert bias.periods.tolist() == [TWO_PI, TWO_PI]
    with caplog.at_level(logging.WARNING, logger="openmm_plugin.bias.params"):
        bias = make_bias("opes-metad", 2, temperature_k=300.0, spec=spec, periods=(None,), cv_label="phi_psi.pt")
    assert bias.periods.tolist() == [0.0, 0.0]
    assert "periods: the config gives [0.0, 0.0]" in caplog.text and "phi_psi.pt says [6.28" in caplog.text
    one = make_bias("opes-metad", 2, temperature_k=300.0, spec=spec, components=[1])  # only ψ: its period
    assert one.periods.tolist() == [TWO_PI]
    _, open_spec = load_cv(open_cv)
    assert make_bias("opes-metad", 2, temperature_k=300.0, spec=open_spec).periods.tolist() == [0.0, 0.0]


def test_metad_bounds_and_walls_default_from_the_training_range(phi_psi_cv, open_cv):
    _, spec = load_cv(open_cv)
    metad = make_bias("metad", 2, temperature_k=300.0, spec=spec, params=MetadParams(pace_steps=10))
    np.testing.assert_allclose(metad.lower, [-2.0 - 0.9, 0.0 - 0.9])  # range ± 0.3 of its width
    np.testing.assert_allclose(metad.upper, [1.0 + 0.9, 3.0 + 0.9])
    given = make_bias("metad", 2, temperature_k=300.0, spec=spec, range_margin_fraction=0.0,
                      params=MetadParams(lower=(-4.0,)))
    assert given.lower.tolist() == [-4.0, -4.0] and given.upper.tolist() == [1.0, 3.0]
    _, periodic = load_cv(phi_psi_cv)  # along a periodic CV the grid spans one period
    torsions = make_bias("metad", 2, temperature_k=300.0, spec=periodic)
    np.testing.assert_allclose(torsions.lower, [-math.pi] * 2)
    np.testing.assert_allclose(torsions.upper, [math.pi] * 2)
    walled = make_bias("opes-metad", 2, temperature_k=300.0, spec=spec, walls_at_training_range=True)
    upper, lower = walled.leaves()[1:]
    np.testing.assert_allclose(upper.at, [1.9, 3.9])
    np.testing.assert_allclose(lower.at, [-2.9, -0.9])
    assert upper.kappa_kjmol.tolist() == [100.0, 100.0]
    soft = make_bias("walls", 2, temperature_k=300.0, spec=spec, walls_at_training_range=True,
                     walls=WallParams(upper_kappa_kjmol=10.0, lower_kappa_kjmol=0.0))
    assert soft.label == "upper_walls" and soft.kappa_kjmol.tolist() == [10.0, 10.0]


def test_cvlearn_bias_walls_a_learned_cv_at_its_training_range_by_default(phi_psi_cv, open_cv):
    """``walls_at_training_range: None`` (``BiasConfig``'s default): walls where the CV file carries a training
    range and no wall is placed by hand; none on a CV without a range, none on periodic components, none when
    switched off."""
    from cvlearn.export import CVSpec
    from openmm_plugin.stages.bias import BiasConfig, build_bias

    config = BiasConfig(cv=str(open_cv), system="alanine_dipeptide")  # the defaults, as `cvlearn bias` reads them
    assert config.walls_at_training_range is None
    _, spec = load_cv(open_cv)
    auto = build_bias(config, n_cvs=2, spec=spec)
    upper, lower = auto.leaves()[1:]
    np.testing.assert_allclose(upper.at, [1.9, 3.9])
    np.testing.assert_allclose(lower.at, [-2.9, -0.9])
    off = make_bias("opes-metad", 2, temperature_k=300.0, spec=spec, walls_at_training_range=False)
    assert len(off.leaves()) == 1
    by_hand = make_bias("opes-metad", 2, temperature_k=300.0, spec=spec, walls_at_training_range=None,
                        walls=WallParams(upper_at=(5.0,), upper_kappa_kjmol=50.0))
    assert [leaf.at.tolist() for leaf in by_hand.leaves()[1:]] == [[5.0, 5.0]]
    no_range = CVSpec(**{**spec.__dict__, "cv_range_training": None})
    assert len(make_bias("opes-metad", 2, temperature_k=300.0, spec=no_range, walls_at_training_range=None,
                         params=OPESParams(sigma=(0.1,))).leaves()) == 1
    _, periodic = load_cv(phi_psi_cv)  # walls on a periodic CV mean nothing: none are added
    assert len(make_bias("opes-metad", 2, temperature_k=300.0, spec=periodic, walls_at_training_range=None).leaves()) == 1


def test_contract_errors(phi_psi_cv, ala2, tmp_path):
    from cvlearn.export import CVSpec

    spec = load_cv(phi_psi_cv)[1]
    no_range = CVSpec(**{**spec.__dict__, "cv_range_training": None, "component_periods": None})
    with pytest.raises(ConfigError, match=r"^metad\.lower: expected values, or a CV file whose contract has a "
                                          r"training range .*x\.pt has none"):
        make_bias("metad", 2, temperature_k=300.0, spec=no_range, cv_label="x.pt")
    with pytest.raises(ConfigError, match=r"^components: expected component indices in \[0, 2\) of this "
                                          r"2-dimensional CV \(x\.pt\), found \[2\]"):
        make_bias("opes-metad", 2, temperature_k=300.0, spec=spec, components=[2], cv_label="x.pt")
    peptide = app.ForceField("amber14-all.xml")
    from systems.peptides import build_capped_peptide

    topology, _ = build_capped_peptide("AA", peptide)
    other = peptide.createSystem(topology, nonbondedMethod=app.NoCutoff)
    with pytest.raises(ConfigError, match=r"^cv: .*phi_psi\.pt: CV expects 22 particles, ACE-AA-NME has 32$"):
        bias_cv(other, phi_psi_cv, system_label="ACE-AA-NME")
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['height_kjmol'\] for method 'opes-metad'"):
        bias_cv(_fresh_system(ala2), phi_psi_cv, height_kjmol=1.0)


def test_opes_kernels_of_a_learned_cv_are_untruncated_by_default(phi_psi_cv):
    """Config default kernel_cutoff 15 sigma (no dV/ds jump at a kernel edge, benchmarks/results/blowup.md);
    `plumed` gives PLUMED's sqrt(2 barrier / (kT (1 - 1/gamma)))."""
    from openmm_plugin.bias import OPESParams
    from openmm_plugin.bias.opes import OPES

    _, spec = load_cv(phi_psi_cv)
    ours = make_bias("opes-metad", 2, temperature_k=300.0, params=OPESParams(sigma=(0.3,)), spec=spec)
    plumed = make_bias("opes-metad", 2, temperature_k=300.0, params=OPESParams(sigma=(0.3,), kernel_cutoff="plumed"),
                       spec=spec)
    assert isinstance(ours, OPES) and isinstance(plumed, OPES)
    assert math.sqrt(ours.cutoff2) == pytest.approx(15.0)
    kt = 0.0083144626 * 300.0
    gamma = 30.0 / kt
    assert math.sqrt(plumed.cutoff2) == pytest.approx(math.sqrt(2 * 30.0 / (kt * (1 - 1 / gamma))), rel=1e-6)
    for bad in ("wide", 0.0):
        with pytest.raises(ValueError, match="kernel_cutoff: expected"):
            OPESParams(kernel_cutoff=bad)


def test_adaptive_opes_sigma_is_floored_at_a_fraction_of_the_training_range(open_cv):
    """A learned CV is nearly flat inside a basin: adaptive σ alone makes narrow kernels and huge bias forces where it
    is steep. Without sigma_min, a CV file's training range sets the floor (5 % by default; null: PLUMED's none)."""
    from openmm_plugin.bias import OPESParams

    _, spec = load_cv(open_cv)  # training range [[-2, 1], [0, 3]]
    floored = make_bias("opes-explore", 2, temperature_k=300.0, params=OPESParams(sigma="adaptive"), spec=spec)
    np.testing.assert_allclose(floored.sigma_min, [0.15, 0.15])
    one = make_bias("opes-explore", 2, temperature_k=300.0, spec=spec, components=[0],
                    params=OPESParams(sigma="adaptive", sigma_min_fraction=0.1))
    np.testing.assert_allclose(one.leaves()[0].sigma_min, [0.3])
    given = make_bias("opes-metad", 2, temperature_k=300.0, params=OPESParams(sigma="adaptive", sigma_min=(0.01,)),
                      spec=spec)
    np.testing.assert_allclose(given.sigma_min, [0.01, 0.01])
    for params in (OPESParams(sigma="adaptive", sigma_min_fraction=None), OPESParams(sigma=(0.3,))):
        assert make_bias("opes-metad", 2, temperature_k=300.0, params=params, spec=spec).sigma_min is None
    assert make_bias("opes-metad", 2, temperature_k=300.0, params=OPESParams(sigma="adaptive")).sigma_min is None
    with pytest.raises(ValueError, match="sigma_min_fraction: expected a value > 0"):
        OPESParams(sigma="adaptive", sigma_min_fraction=0.0)


def test_native_route_matches_the_python_route_on_the_same_torsion_cv(phi_psi_cv, ala2, tmp_path):
    """``route="native"`` on a torsion CV file: OpenMM's torsions equal the TorchScript CV's, the tabulated bias
    energy equals the Bias object's, and its force equals −Σ dV/ds_i ∂s_i/∂x through the TorchScript module (the
    python route's force), to the table's cubic-spline error (module doc of ``openmm_plugin.bias.native``)."""
    system = _fresh_system(ala2)
    biased = bias_cv(system, phi_psi_cv, method="opes-metad", temperature_k=300, sigma=0.3, barrier_kjmol=30,
                     pace_steps=10, route="native", force_group=1, colvar=tmp_path / "COLVAR",
                     report_interval_steps=10, save_path=tmp_path / "state.npz", save_every_steps=50)
    assert type(biased.force).__name__ == "NativeBiasForce" and biased.runner.native is biased.force
    simulation = app.Simulation(ala2.topology, system, make_integrator(300.0, 1.0, 0.002, seed=3, bias_group=1),
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(ala2.positions_nm)
    assert biased.attach(simulation) is False
    biased.run(simulation, 200)
    biased.close(simulation)
    assert len(biased.bias.records) == 20 and biased.force.refreshes >= 20  # the table follows every deposition
    colvar = read_colvar(tmp_path / "COLVAR")
    assert list(colvar)[:3] == ["time", "torsion0", "torsion1"] and len(colvar["time"]) == 20

    state = simulation.context.getState(getPositions=True, getEnergy=True, getForces=True, groups={1})
    x = torch.tensor(np.asarray(state.getPositions(asNumpy=True)._value), dtype=torch.float64, requires_grad=True)
    module, _ = load_cv(phi_psi_cv)
    s = module(x)
    s_native = biased.force.values_from_context(simulation.context)
    np.testing.assert_allclose(s_native, s.detach().numpy(), atol=1e-6)
    v, dv_ds = biased.bias.energy_and_gradient(s.detach().numpy())
    assert np.linalg.norm(dv_ds) > 1.0  # 20 kernels: a bias that pushes (kJ/mol per rad)
    assert abs(state.getPotentialEnergy()._value - v) < 1e-3  # measured 2e-6: σ 0.3 is 6 table spacings
    want = -torch.autograd.grad(s, x, grad_outputs=torch.as_tensor(dv_ds, dtype=torch.float64))[0].numpy()
    got = state.getForces(asNumpy=True)._value
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-3  # measured 1e-6


def test_native_route_refuses_a_learned_cv_a_force_guard_and_cuda_graphs(exported_cv64, phi_psi_cv, ala2):
    from openmm_plugin.bias.guard import ForceGuard

    _, learned = exported_cv64
    with pytest.raises(ConfigError, match=r"^route: .*: route 'native' expected a CV file of OpenMM-native torsions "
                                          r"\(openmm_plugin\.bias\.torsions\.export_torsion_cv\), found a CV without "
                                          r"them"):
        bias_cv(_fresh_system(ala2), learned, route="native", sigma=0.1)
    with pytest.raises(ConfigError, match=r"^force_guard_kjmol_nm: .*needs route 'python' \(route 'native'"):
        bias_cv(_fresh_system(ala2), phi_psi_cv, route="native", sigma=0.3, guard=ForceGuard(1000.0))
    with pytest.raises(ConfigError, match=r"^cuda_graphs: expected false with route 'native' "):
        bias_cv(_fresh_system(ala2), phi_psi_cv, route="native", sigma=0.3, cuda_graphs=True)
