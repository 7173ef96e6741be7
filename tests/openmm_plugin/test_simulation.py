import mdtraj
import numpy as np
import openmm
import pytest

import systems.alanine_dipeptide as ad
from openmm_plugin.simulation import MDResult, make_integrator, make_simulation, platform_by_name, run_md

N_STEPS, INTERVAL = 200, 20


def _integrator(temperature_k=ad.TEMPERATURE_K, seed=0):
    return make_integrator(temperature_k, ad.FRICTION_PER_PS, ad.TIMESTEP_PS, seed=seed)


@pytest.fixture(scope="module")
def ala2():
    return ad.build()


def _run(ala2, prefix, seed=0, **kwargs):
    return run_md(
        ala2.topology, ala2.system, ala2.positions_nm, _integrator(seed=seed),
        out_prefix=prefix, n_steps=N_STEPS, report_interval_steps=INTERVAL, seed=seed, progress=False, **kwargs,
    )


def test_writes_loadable_dcd_and_pdb(ala2, tmp_path):
    reported = []
    result = _run(ala2, tmp_path / "run.T300", on_report=lambda sim, i: reported.append(i))
    assert isinstance(result, MDResult) and not result.skipped
    assert result.trajectory_path == tmp_path / "run.T300.dcd" and result.topology_path == tmp_path / "run.T300.pdb"
    assert result.n_frames == 10 and result.n_steps == N_STEPS
    assert result.ms_per_step > 0 and result.ns_per_day > 0
    traj = mdtraj.load(str(result.trajectory_path), top=str(result.topology_path))
    assert traj.n_frames == 10 and traj.n_atoms == 22
    assert np.all(np.isfinite(traj.xyz))
    assert reported == list(range(10))
    start = mdtraj.load(str(result.topology_path))
    np.testing.assert_allclose(start.xyz[0], ala2.positions_nm, atol=1e-3)  # PDB has 3 decimals in Å


def test_same_seed_same_trajectory_and_skip(ala2, tmp_path):
    a = _run(ala2, tmp_path / "a", seed=5)
    b = _run(ala2, tmp_path / "b", seed=5)
    c = _run(ala2, tmp_path / "c", seed=6)
    xa, xb, xc = (mdtraj.load(str(r.trajectory_path), top=str(r.topology_path)).xyz for r in (a, b, c))
    np.testing.assert_array_equal(xa, xb)
    assert not np.allclose(xa, xc)

    calls = []
    again = _run(ala2, tmp_path / "a", seed=5, advance=lambda sim, n: calls.append(n))
    assert again.skipped and again.n_frames == 10 and calls == []


def test_custom_advance_and_remainder(ala2, tmp_path):
    steps = []

    def advance(sim, n):
        steps.append(n)
        sim.step(n)

    result = run_md(
        ala2.topology, ala2.system, ala2.positions_nm, _integrator(),
        out_prefix=tmp_path / "r", n_steps=50, report_interval_steps=20, advance=advance, progress=False,
    )
    assert steps == [20, 20, 10] and result.n_frames == 2


def test_failure_leaves_nothing_behind(ala2, tmp_path):
    calls = []

    def advance(sim, n):
        calls.append(n)
        if len(calls) == 3:
            raise RuntimeError("boom")
        sim.step(n)

    with pytest.raises(RuntimeError, match="boom"):
        _run(ala2, tmp_path / "bad", advance=advance)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_steps": 0, "report_interval_steps": 10}, "n_steps"),
        ({"n_steps": 10.5, "report_interval_steps": 10}, "n_steps"),
        ({"n_steps": 100, "report_interval_steps": -1}, "report_interval_steps"),
        ({"n_steps": 10, "report_interval_steps": 20}, "report_interval_steps"),
    ],
)
def test_bad_arguments_raise(ala2, tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        run_md(ala2.topology, ala2.system, ala2.positions_nm, _integrator(),
               out_prefix=tmp_path / "x", progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_existing_simulation_is_used(ala2, tmp_path):
    import openmm
    import openmm.app as app

    sim = app.Simulation(ala2.topology, ala2.system, _integrator(temperature_k=400.0),
                         openmm.Platform.getPlatformByName("Reference"))
    result = run_md(None, None, ala2.positions_nm, None, simulation=sim, minimize=True,
                    out_prefix=tmp_path / "s", n_steps=40, report_interval_steps=20, progress=False)
    assert result.n_frames == 2 and sim.currentStep == 40
    with pytest.raises(ValueError, match="integrator"):
        run_md(None, None, None, _integrator(), simulation=sim,
               out_prefix=tmp_path / "t", n_steps=40, report_interval_steps=20, progress=False)


def test_make_integrator():
    integ = _integrator(temperature_k=600.0, seed=3)
    assert integ.getTemperature().value_in_unit(openmm.unit.kelvin) == pytest.approx(600.0)
    assert integ.getStepSize().value_in_unit(openmm.unit.picosecond) == pytest.approx(ad.TIMESTEP_PS)
    assert integ.getRandomNumberSeed() != 0  # 0 would mean "random per Context" in OpenMM
    with pytest.raises(ValueError, match="seed"):
        _integrator(seed=-1)


def test_make_integrator_mts():
    integ = make_integrator(300.0, 1.0, 0.002, seed=1, bias_group=1, bias_every_steps=2)
    assert isinstance(integ, openmm.MTSLangevinIntegrator)
    assert integ.getStepSize().value_in_unit(openmm.unit.picosecond) == pytest.approx(0.004)
    assert integ.getRandomNumberSeed() == 2
    with pytest.raises(ValueError, match="bias_group"):
        make_integrator(300.0, 1.0, 0.002, bias_every_steps=2)
    with pytest.raises(ValueError, match="bias_every_steps"):
        make_integrator(300.0, 1.0, 0.002, bias_group=1, bias_every_steps=0)


def test_make_simulation_names_missing_platform(ala2):
    with pytest.raises(ValueError, match="platform.*NoSuchPlatform"):
        make_simulation(ala2.topology, ala2.system, _integrator(), "NoSuchPlatform")
    assert make_simulation(ala2.topology, ala2.system, _integrator()).context.getPlatform().getName() == "Reference"
    assert platform_by_name("Reference").getName() == "Reference"


def test_interrupted_run_resumes_from_its_checkpoint_without_duplicate_frames(ala2, tmp_path):
    """A run stopped after its checkpoint at step 100 (frames past it already written) continues from there: the
    trajectory equals an uninterrupted run's, frame for frame; checkpoint and partial file are gone at the end."""
    reference = _run(ala2, tmp_path / "ref", checkpoint_every_steps=100)
    calls = []

    def crash_at_frame_7(sim, n):
        calls.append(n)
        if len(calls) == 7:
            raise KeyboardInterrupt
        sim.step(n)

    with pytest.raises(KeyboardInterrupt):
        _run(ala2, tmp_path / "cut", advance=crash_at_frame_7, checkpoint_every_steps=100)
    assert (tmp_path / "cut.part.dcd").is_file() and (tmp_path / "cut.chk.npz").is_file()
    resumed = _run(ala2, tmp_path / "cut", checkpoint_every_steps=100)
    a = mdtraj.load(str(reference.trajectory_path), top=str(reference.topology_path))
    b = mdtraj.load(str(resumed.trajectory_path), top=str(resumed.topology_path))
    assert a.n_frames == b.n_frames == 10
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.dcd", "cut.pdb", "ref.dcd", "ref.pdb"]
    with pytest.raises(ValueError, match="checkpoint_every_steps"):
        _run(ala2, tmp_path / "x", checkpoint_every_steps=0)
