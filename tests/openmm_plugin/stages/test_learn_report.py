"""``cvlearn learn`` with ``export_baselines``: the distance-VAMPNet baseline exported beside ``cv.pt``, biasable alike."""

from __future__ import annotations

import json

import mdtraj
import numpy as np
import pytest
import torch

from cvlearn.export import load_cv
from openmm_plugin.stages.learn import DISTANCE_CV, LearnConfig, run_learn
from tests.openmm_plugin.stages.ala2_runs import ala2_runs

TINY_ET = {"hidden_channels": 16, "num_layers": 1, "num_rbf": 8, "num_heads": 4, "cutoff_angstrom": 5.0}


@pytest.fixture(scope="module")
def md(tmp_path_factory):
    """Three 20-ps ala2 runs at 600 K (Reference platform), a frame every 0.1 ps."""
    return ala2_runs(tmp_path_factory.mktemp("ala2_md"), 3, 200)


def test_export_baselines_writes_a_distance_cv_with_the_learned_cvs_contract(md, tmp_path):
    out = tmp_path / "out"
    config = LearnConfig(out=str(out), topology=md["topology"], trajectories=tuple(md["trajectories"]),
                         lagtime_ps=0.5, featurizer={"kind": "et", "config": TINY_ET}, baselines=("vampnet_distances",),
                         export_baselines=True, max_epochs=2, patience=2, batch_size=128, head_hidden=16, n_clusters=5)
    metrics = run_learn(config, progress=False)
    assert metrics["baselines"]["vampnet_distances"]["exported"] == DISTANCE_CV and DISTANCE_CV in metrics["outputs"]
    assert "model" not in json.dumps(metrics["baselines"]["vampnet_distances"]["per_seed"])
    cv, spec = load_cv(out / "cv.pt")
    dist, dist_spec = load_cv(out / DISTANCE_CV)
    assert dist_spec.featurizer_architecture == "DistanceCV" and dist_spec.extra["baseline"] == "vampnet_distances"
    for key in ("n_particles", "atom_indices", "atomic_numbers", "periodic", "n_cvs", "lagtime_ps", "frame_interval_ps",
                "units"):
        assert getattr(dist_spec, key) == getattr(spec, key), key
    # its training range is the exported module's own range over every frame of the run
    frames = [mdtraj.load(p, top=md["topology"]).xyz[:, list(dist_spec.atom_indices)] for p in md["trajectories"]]
    with torch.no_grad():
        values = torch.cat([dist.model(torch.from_numpy(f)).double() for f in frames]).numpy()
    assert np.allclose(np.array(dist_spec.cv_range_training), np.c_[values.min(0), values.max(0)], atol=1e-4)
    assert np.std(values[:, 0]) > 0.1  # a trained VAMP CV: unit variance on the training frames, not a constant


def test_export_baselines_needs_the_distance_baseline(md, tmp_path):
    with pytest.raises(ValueError, match="export_baselines: expected 'vampnet_distances' in baselines"):
        LearnConfig(out=str(tmp_path), topology=md["topology"], trajectories=tuple(md["trajectories"]),
                    baselines=("tica_torsions",), export_baselines=True)
