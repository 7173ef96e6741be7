"""Short 600 K alanine-dipeptide runs written as DCD + PDB: the user-shaped input of the stage tests."""

from __future__ import annotations

from pathlib import Path

FRAME_PS = 0.1


def ala2_runs(folder: Path, n_runs: int, n_frames: int) -> dict:
    """``n_runs`` runs of ``n_frames`` frames, a frame every 0.1 ps, seeds 1..n_runs (Reference platform).

    Returns ``{"trajectories": [dcd paths], "topology": pdb path, "folder": folder}``.
    """
    from openmm_plugin.simulation import make_integrator, run_md
    from systems import alanine_dipeptide as ala2

    molecule = ala2.build()
    interval = int(round(FRAME_PS / ala2.TIMESTEP_PS))
    paths = []
    for i in range(n_runs):
        integrator = make_integrator(600.0, ala2.FRICTION_PER_PS, ala2.TIMESTEP_PS, seed=i + 1)
        result = run_md(molecule.topology, molecule.system, molecule.positions_nm, integrator,
                        out_prefix=folder / f"traj{i}", n_steps=n_frames * interval, report_interval_steps=interval,
                        seed=i + 1, temperature_k=600.0, progress=False)
        paths.append(str(result.trajectory_path))
    return {"trajectories": paths, "topology": str(folder / "traj0.pdb"), "folder": folder}
