"""Dust emission spectra: Draine & Li (2007) as BAGPIPES builds them, modified blackbody."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tengri  # noqa: F401  (enables float64)
from tengri.data.dust_emission_grid import load_dust_emission_grid
from tengri.physics.dust_emission import (
    DUST_EMISSION_MODELS,
    dl07_lnu_per_unit_luminosity,
    dl07_tables,
    modified_blackbody_lnu_per_unit_luminosity,
)

C_AA_PER_S = 2.99792458e18
# a BAGPIPES-like model grid: below, across and beyond the DL07 range (1 µm – 1 cm)
WAVE_AA = np.geomspace(3e3, 3e8, 2500)


def _lambda_trapezoid_frequency_widths_hz(wavelength_aa):
    """Δν_i such that Σ L_ν,i Δν_i = np.trapezoid(L_λ, λ) (BAGPIPES' normalisation)."""
    w = np.empty_like(wavelength_aa)
    d = np.diff(wavelength_aa)
    w[0], w[-1] = d[0] / 2, d[-1] / 2
    w[1:-1] = (d[1:] + d[:-1]) / 2
    return C_AA_PER_S / wavelength_aa**2 * w


def _model_frequency_widths_hz(wavelength_aa):
    from tengri.physics.bandpass import log_wavelength_widths

    return C_AA_PER_S / wavelength_aa * log_wavelength_widths(wavelength_aa)


@pytest.fixture(scope="module")
def grid():
    return load_dust_emission_grid("dl07")


@pytest.fixture(scope="module")
def tables(grid):
    return dl07_tables(grid, WAVE_AA)


@pytest.fixture(scope="module")
def bagpipes_dust_emission():
    bagpipes = pytest.importorskip("bagpipes")
    return bagpipes.models.dust_emission_model.dust_emission(WAVE_AA)


@pytest.mark.bagpipes
@pytest.mark.parametrize(
    "qpah, umin, gamma",
    [(2.0, 1.0, 0.01), (0.3, 0.12, 0.0), (4.2, 6.3, 0.5), (2.37, 2.0, 1.0), (1.0, 7.9, 0.2)],
)
def test_dl07_matches_bagpipes_spectrum(tables, bagpipes_dust_emission, qpah, umin, gamma):
    ours_lnu = dl07_lnu_per_unit_luminosity(
        qpah, umin, gamma, tables, _lambda_trapezoid_frequency_widths_hz(WAVE_AA)
    )
    ours_llambda = np.asarray(ours_lnu) * C_AA_PER_S / WAVE_AA**2
    theirs = bagpipes_dust_emission.spectrum(qpah, umin, gamma)  # L_λ per unit luminosity [1/Å]
    assert np.all((theirs == 0) == (ours_llambda == 0))
    np.testing.assert_allclose(ours_llambda, theirs, rtol=1e-12, atol=0)  # measured: ≤ 1.1e-15


@pytest.mark.bagpipes
def test_bagpipes_umin_10_is_the_grid_column_of_umin_12(tables, bagpipes_dust_emission):
    # BAGPIPES labels the 22 file columns with 23 U_min values (module docstring)
    dnu = _lambda_trapezoid_frequency_widths_hz(WAVE_AA)
    ours_12 = np.asarray(dl07_lnu_per_unit_luminosity(2.0, 12.0, 0.1, tables, dnu)) * C_AA_PER_S / WAVE_AA**2
    theirs_10 = bagpipes_dust_emission.spectrum(2.0, 10.0, 0.1)
    np.testing.assert_allclose(ours_12, theirs_10, rtol=1e-12, atol=0)


def test_dl07_at_grid_nodes_is_the_normalised_grid_spectrum(grid):
    native = np.asarray(grid.wavelength_aa)
    nu = C_AA_PER_S / native
    trapezoid_nu = np.zeros_like(nu)  # ∫ dν trapezoid weights on the native grid (ν decreasing)
    trapezoid_nu[:-1] += (nu[:-1] - nu[1:]) / 2
    trapezoid_nu[1:] += (nu[:-1] - nu[1:]) / 2
    reference = grid.lnu_per_unit_luminosity(0.3)[6, 8]  # q_PAH = 2.37 %, U_min = 1.0
    ours = dl07_lnu_per_unit_luminosity(2.37, 1.0, 0.3, dl07_tables(grid, native), trapezoid_nu)
    np.testing.assert_allclose(ours, reference, rtol=1e-12)


def test_dl07_is_zero_outside_one_micron_to_one_centimetre(tables):
    s = np.asarray(dl07_lnu_per_unit_luminosity(2.0, 1.0, 0.01, tables, _model_frequency_widths_hz(WAVE_AA)))
    outside = (WAVE_AA < 1e4) | (WAVE_AA > 1e8)
    assert np.all(s[outside] == 0) and np.all(s[~outside] > 0)


@pytest.mark.parametrize("model", ["dl07", "mbb"])
def test_spectrum_has_unit_luminosity_with_the_given_weights(tables, model):
    dnu = _model_frequency_widths_hz(WAVE_AA)
    if model == "dl07":
        s = dl07_lnu_per_unit_luminosity(3.3, 0.6, 0.2, tables, dnu)
    else:
        s = modified_blackbody_lnu_per_unit_luminosity(35.0, 1.8, WAVE_AA, dnu)
    assert float(jnp.sum(s * dnu)) == pytest.approx(1.0, rel=1e-13)


def test_dl07_parameters_outside_the_grid_are_clamped_to_its_edges(tables):
    dnu = _model_frequency_widths_hz(WAVE_AA)
    np.testing.assert_array_equal(
        dl07_lnu_per_unit_luminosity(9.0, 60.0, 1.5, tables, dnu),
        dl07_lnu_per_unit_luminosity(4.58, 25.0, 1.0, tables, dnu),
    )


def test_higher_umin_moves_the_far_infrared_peak_blueward(tables):
    dnu = _model_frequency_widths_hz(WAVE_AA)
    peak_aa = [
        WAVE_AA[np.argmax(np.asarray(dl07_lnu_per_unit_luminosity(2.0, u, 0.0, tables, dnu)) / WAVE_AA)]
        for u in (0.2, 1.0, 8.0)
    ]  # peak of ν L_ν
    assert peak_aa[0] > peak_aa[1] > peak_aa[2]
    # U_min = 1 dust (T ≈ 18 K) peaks in ν L_ν near 150 µm (Draine & Li 2007, fig. 13)
    assert 1.0e6 < peak_aa[1] < 2.0e6


def test_dl07_gradients_match_finite_differences_between_nodes(tables):
    dnu = _model_frequency_widths_hz(WAVE_AA)
    band = (WAVE_AA > 2e5) & (WAVE_AA < 3e5)  # 20-30 µm: sensitive to all three

    @jax.jit
    def band_luminosity(p, tables):
        return jnp.sum(dl07_lnu_per_unit_luminosity(p[0], p[1], p[2], tables, dnu)[band] * dnu[band])

    p = jnp.array([2.1, 3.4, 0.3])
    grad = np.asarray(jax.jit(jax.grad(band_luminosity))(p, tables))
    h = 1e-6
    numeric = [
        (band_luminosity(p.at[i].add(h), tables) - band_luminosity(p.at[i].add(-h), tables)) / (2 * h)
        for i in range(3)
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-6)


def test_blackbody_peak_follows_wien_displacement_law():
    # β = 0: L_ν ∝ B_ν peaks at h ν / k T = 2.8214 (ν_peak = 5.879e10 Hz/K · T)
    wave = np.geomspace(1e5, 1e7, 20001)
    s = np.asarray(modified_blackbody_lnu_per_unit_luminosity(30.0, 0.0, wave, _model_frequency_widths_hz(wave)))
    nu_peak = C_AA_PER_S / wave[np.argmax(s)]
    assert nu_peak == pytest.approx(5.8789e10 * 30.0, rel=5e-4)


def test_modified_blackbody_rayleigh_jeans_slope_is_two_plus_beta():
    wave = np.array([1e8, 2e8])  # 1-2 cm: h ν / k T < 0.005 at 300 K
    s = np.asarray(modified_blackbody_lnu_per_unit_luminosity(300.0, 1.7, wave, np.ones(2)))
    slope = np.log(s[1] / s[0]) / np.log(wave[0] / wave[1])  # d ln L_ν / d ln ν
    assert slope == pytest.approx(3.7, rel=1e-3)


def test_modified_blackbody_and_its_gradient_are_finite_in_the_far_ultraviolet():
    wave = np.geomspace(91.0, 3.6e8, 3000)  # h ν / k T up to ~1e5 at 15 K
    dnu = _model_frequency_widths_hz(wave)

    def submm_share(t_beta):
        s = modified_blackbody_lnu_per_unit_luminosity(t_beta[0], t_beta[1], wave, dnu)
        return jnp.sum(jnp.where(wave > 3e6, s * dnu, 0.0)), s

    value_and_grad = jax.jit(jax.value_and_grad(submm_share, has_aux=True))
    for t in (15.0, 80.0):
        (value, s), grad = value_and_grad(jnp.array([t, 1.5]))
        assert np.all(np.isfinite(s)) and np.all(np.asarray(s) >= 0)
        assert np.all(np.isfinite(grad)) and float(grad[0]) < 0  # hotter dust: less sub-mm


def test_registry_lists_models_parameters_and_bagpipes_defaults():
    dl07 = DUST_EMISSION_MODELS["dl07"]
    assert dl07.param_names == ("dust_qpah", "dust_umin", "dust_gamma")
    assert [dl07.default_priors[n].value for n in dl07.param_names] == [2.0, 1.0, 0.01]
    assert DUST_EMISSION_MODELS["mbb"].param_names == ("dust_temperature_k", "dust_beta")
    assert set(DUST_EMISSION_MODELS["mbb"].default_priors) == {"dust_temperature_k", "dust_beta"}
