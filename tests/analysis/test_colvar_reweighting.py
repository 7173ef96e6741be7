import numpy as np
import pytest

from cvlearn.data.colvar import read_colvar, write_colvar
from cvlearn.analysis.reweighting import (delta_f_kjmol, free_energy_surface, log_weights_from_bias, metad_weights,
                                          opes_weights, weights_from_log, well_tempered_rct)
from cvlearn.units import kt_kjmol


def test_colvar_roundtrip_and_plumed_header(tmp_path):
    path = tmp_path / "COLVAR"
    rows = np.array([[0.0, 0.1, 1.5, 0.2], [1.0, -0.3, 2.5, 0.4]])
    write_colvar(path, ["time", "cv1", "metad.bias", "metad.rct"], rows)
    assert path.read_text().startswith("#! FIELDS time cv1 metad.bias metad.rct\n")
    back = read_colvar(path)
    assert np.allclose(back["metad.bias"], [1.5, 2.5]) and np.allclose(back["time"], [0, 1])


def test_colvar_reads_plumed_file_with_set_lines(tmp_path):
    path = tmp_path / "COLVAR"
    path.write_text("#! FIELDS time phi opes.bias\n#! SET min_phi -pi\n 0.0 1.0 2.0\n 2.0 1.5 3.0\n")
    assert np.allclose(read_colvar(path)["opes.bias"], [2.0, 3.0])


def test_colvar_errors(tmp_path):
    path = tmp_path / "COLVAR"
    path.write_text("#! FIELDS time phi\n0.0 1.0 2.0\n")
    with pytest.raises(ValueError, match="line 2: expected 2 values"):
        read_colvar(path)
    path.write_text("0.0 1.0\n")
    with pytest.raises(ValueError, match="before any"):
        read_colvar(path)


def test_rct_of_flat_bias_is_the_bias():
    # A flat bias V = v everywhere: c(t) = v (the bias only shifts the energy).
    assert well_tempered_rct(np.full(50, 3.0), 8.0, 300.0) == pytest.approx(3.0)


def test_reweighting_recovers_unbiased_populations():
    """Two states, the biased run spends equal time in both; weights restore the Boltzmann ratio."""
    temperature = 300.0
    df_true = 4.0  # F(A) - F(B), kJ/mol
    in_a = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    # Metadynamics adds +V to the energy; a flat biased histogram needs V_B - V_A = F_A - F_B.
    bias = np.where(in_a, 0.0, df_true)
    w = metad_weights(bias, np.zeros_like(bias), temperature)
    assert delta_f_kjmol(in_a, ~in_a, w, temperature) == pytest.approx(df_true, rel=1e-9)
    assert w.sum() == pytest.approx(1.0)


def test_fes_minimum_is_zero():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 0.5, 5000), rng.normal(1, 0.3, 5000)
    fes, xe, ye = free_energy_surface(x, y, None, 300.0, bins=30)
    assert np.nanmin(fes) == 0.0 and fes.shape == (30, 30) and len(xe) == 31


def test_weights_from_bias_share_one_rule():
    bias, rct = np.array([1.0, 3.0, 2.0]), np.array([0.5, 0.5, 1.0])
    kt = kt_kjmol(300.0)
    assert np.allclose(log_weights_from_bias(bias, 300.0, rct), (bias - rct) / kt)
    assert np.allclose(log_weights_from_bias(bias, 300.0), bias / kt)
    expected = np.exp((bias - rct) / kt) / np.exp((bias - rct) / kt).sum()
    assert np.allclose(metad_weights(bias, rct, 300.0), expected)
    assert np.allclose(opes_weights(bias, 300.0), np.exp(bias / kt) / np.exp(bias / kt).sum())
    unnormalised = weights_from_log(np.array([1000.0, 999.0]), normalise=False)  # no overflow
    assert unnormalised[0] == 1.0 and unnormalised[1] == pytest.approx(np.exp(-1.0))
    with pytest.raises(ValueError, match="temperature_k"):
        log_weights_from_bias(bias, 0.0)
