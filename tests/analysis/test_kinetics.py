"""Kinetic validation on a 1-D double well: VAMP-2 curves, ITS, CK test, plots and JSON."""

import json

import numpy as np
import pytest

from cvlearn.analysis.kinetics import correlations, discretize, implied_timescales, kinetic_report, vamp2_vs_dim
from tests.data.test_lagged import langevin


@pytest.fixture(scope="module")
def cvs():
    rng = np.random.default_rng(0)
    traj = langevin(rng, 4, 20000, lambda x: 0.0 * x)  # unbiased, 2000 frames each
    noise = rng.normal(size=traj.shape)
    return [np.stack([x, n], axis=1) for x, n in zip(traj, noise)]  # slow CV + a useless one


def test_kinetic_report_writes_pngs_and_numbers(cvs, tmp_path):
    report = kinetic_report(cvs, lagtime=10, dt_ps=1.0, out_dir=tmp_path, name="toy", n_clusters=10, seed=0)
    for suffix in ("its", "ck_test", "vamp2_curves"):
        assert (tmp_path / f"toy_{suffix}.png").stat().st_size > 0
    saved = json.loads((tmp_path / "toy_kinetics.json").read_text())
    assert saved["vamp2_vs_dim"]["vamp2"] == pytest.approx(report["vamp2_vs_dim"]["vamp2"])
    assert report["ck_test"]["max_abs_error"] < 0.1
    lags, vamp = report["vamp2_vs_lag"]["lags"], report["vamp2_vs_lag"]["vamp2"]
    assert all(a > b for a, b in zip(vamp, vamp[1:])) and lags == sorted(lags)  # decays with lag


def test_slow_cv_carries_the_score_and_timescales_are_resolved(cvs):
    by_dim = vamp2_vs_dim(cvs, lagtime=10)
    assert by_dim["vamp2"][0] > 1.3 and by_dim["vamp2"][1] == pytest.approx(by_dim["vamp2"][0], abs=0.01)
    its = implied_timescales(discretize(cvs, 8), [5, 10, 20], n_its=1)
    slow = [row[0] for row in its["timescales_ps"]]
    assert min(slow) > 20 and max(slow) / min(slow) < 1.5  # converged in the lag
    corr = correlations(np.concatenate(cvs), {"x": np.concatenate([c[:, 0] for c in cvs])})
    assert corr["x"][0] == pytest.approx(1.0) and corr["x"][1] < 0.1
