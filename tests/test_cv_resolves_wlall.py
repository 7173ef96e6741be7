"""cv_resolves_wlall's score: how well a CV's components tell a state's frames from the rest."""

import numpy as np

from benchmarks.cv_resolves_wlall import separation_auc


def test_separation_auc_finds_a_state_held_in_a_combination_of_components_and_is_blind_to_noise():
    rng = np.random.default_rng(0)
    common = rng.normal(size=2000)
    inside = rng.random(2000) < 0.2
    # each component alone mixes the state with a large shared fluctuation; their difference separates it
    values = np.stack([common + np.where(inside, 1.0, 0.0), common - np.where(inside, 1.0, 0.0)], axis=1)
    values += 0.1 * rng.normal(size=values.shape)
    assert separation_auc(values, inside) > 0.99
    assert max(separation_auc(values[:, [k]], inside) for k in range(2)) < 0.8
    assert abs(separation_auc(rng.normal(size=(2000, 2)), inside) - 0.5) < 0.05
    flipped = separation_auc(-values, inside)  # the sign of the direction does not matter
    assert abs(flipped - separation_auc(values, inside)) < 1e-12
    assert np.isnan(separation_auc(values, np.zeros(2000, dtype=bool)))  # a state no frame visits


def test_probe_auc_is_held_out_so_many_noise_features_do_not_separate_anything():
    from benchmarks.cv_resolves_wlall import probe_auc

    rng = np.random.default_rng(1)
    inside = np.repeat(rng.random(40) < 0.3, 25)  # states in blocks of frames, as along a trajectory
    noise = rng.normal(size=(1000, 300))  # 300 features for ~500 fitted frames: separable on those alone
    assert abs(probe_auc(noise, inside) - 0.5) < 0.1
    signal = noise.copy()
    signal[:, 7] += 3.0 * inside  # one feature carries the state (alone: AUC 0.98)
    assert probe_auc(signal, inside) > 0.85
    assert np.isnan(probe_auc(signal, np.zeros(1000, dtype=bool)))
