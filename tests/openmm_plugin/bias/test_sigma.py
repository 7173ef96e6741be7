"""Kernel widths of learned CVs: every component from one short unbiased run, ``max(std, floor)``."""

import numpy as np
import pytest

from openmm_plugin.bias.sigma import learned_cv_sigma, unbiased_cv_std
from openmm_plugin.simulation import make_integrator
from systems import alanine_dipeptide


def _integrator():
    return make_integrator(300.0, alanine_dipeptide.FRICTION_PER_PS, alanine_dipeptide.TIMESTEP_PS, seed=7)


def test_both_components_from_one_run_match_the_unbiased_std_and_the_range_floor(ala2, exported_cv64):
    cv, _ = exported_cv64
    args = (ala2.topology, ala2.system, ala2.positions_nm)
    std = unbiased_cv_std(cv, *args, _integrator(), 300.0)
    assert std.shape == (2,) and np.all(std > 0)
    ranges = [(0.0, 1e-9), (0.0, 1e3 * float(std[1]))]  # component 0: the std wins; component 1: 5 % of its range
    sigma, got_std = learned_cv_sigma(cv, ranges, *args, _integrator(), 300.0, components=(0, 1))
    np.testing.assert_allclose(got_std, std, rtol=1e-12)  # the same seeded Reference MD: the same samples
    np.testing.assert_allclose(sigma, [std[0], 0.05 * ranges[1][1]], rtol=1e-12)
    one, _ = learned_cv_sigma(cv, ranges, *args, _integrator(), 300.0, components=(1,))
    np.testing.assert_allclose(one, sigma[1:], rtol=1e-12)


def test_a_component_outside_the_cv_is_refused_before_any_md(ala2, exported_cv64):
    cv, _ = exported_cv64
    with pytest.raises(ValueError, match=r"components: expected indices in \[0, 2\), found \[2\]"):
        learned_cv_sigma(cv, [(0.0, 1.0), (0.0, 1.0)], ala2.topology, ala2.system, ala2.positions_nm,
                         _integrator(), 300.0, components=(2,))
