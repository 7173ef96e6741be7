"""VAMP warm start of the head's readout and the min_epochs guard of early stopping."""

import numpy as np
import torch

from cvlearn.models.cv import DistanceCV, fit_head_scaler, vamp_warm_start
from cvlearn.data import lagged_pairs
from cvlearn.estimators import VAMPNet
from cvlearn.nn.heads import MLPHead
from cvlearn.estimators.scores import vamp_score


def _toy_positions(n_traj=3, n_frames=400, seed=0):
    """4 atoms; one distance follows a slow two-state jump process, the rest is fast noise."""
    rng = np.random.default_rng(seed)
    trajs = []
    for _ in range(n_traj):
        state = np.cumsum(rng.random(n_frames) < 0.02) % 2
        base = np.array([[0, 0, 0], [0.15, 0, 0], [0, 0.15, 0], [0, 0, 0.15]], dtype=np.float64)
        pos = base[None] + 0.01 * rng.normal(size=(n_frames, 4, 3))
        pos[:, 3, 2] += 0.1 * state
        trajs.append(torch.tensor(pos, dtype=torch.float32))
    return trajs


def test_warm_start_gives_the_linear_optimum_it_reports():
    torch.manual_seed(0)
    train = _toy_positions()
    lobe = DistanceCV(4, MLPHead(6, 2, hidden=16))
    fit_head_scaler(lobe, torch.cat(train))
    lobe.eval()
    x0, xt = lagged_pairs([lobe(t).detach() for t in train], 5)
    before = float(vamp_score(x0, xt))
    singular_values = vamp_warm_start(lobe, train, lagtime=5)
    x0, xt = lagged_pairs([lobe(t).detach().double() for t in train], 5)
    after = float(vamp_score(x0, xt))
    predicted = 1 + sum(s * s for s in singular_values)  # exact for reversible statistics; close otherwise
    assert abs(after - predicted) < 0.05 * predicted
    assert after > before and singular_values[0] > 0.6  # the slow jump process (autocorrelation ~0.8 at lag 5) is found at once


def test_min_epochs_keeps_training_through_a_plateau():
    torch.manual_seed(1)
    train, val = _toy_positions(2, seed=1), _toy_positions(1, seed=2)
    lobe = DistanceCV(4, MLPHead(6, 1, hidden=8))
    fit_head_scaler(lobe, torch.cat(train))
    estimator = VAMPNet(lobe, lagtime=5, max_epochs=6, patience=1, min_epochs=5, progress=False,
                        learning_rate=1e-6).fit(train, val)  # a tiny LR: no improvement, stale every epoch
    assert len(estimator.history) >= 5


def test_vampnet_recalibrates_a_lobe_before_each_validation():
    class CountingLobe(DistanceCV):
        calls = 0

        def recalibrate(self, frames):
            type(self).calls += 1
            fit_head_scaler(self, frames)

    torch.manual_seed(2)
    train, val = _toy_positions(2, seed=3), _toy_positions(1, seed=4)
    lobe = CountingLobe(4, MLPHead(6, 1, hidden=8))
    fit_head_scaler(lobe, torch.cat(train))
    estimator = VAMPNet(lobe, lagtime=5, max_epochs=3, patience=5, progress=False).fit(train, val)
    assert CountingLobe.calls == len(estimator.history) == 3
