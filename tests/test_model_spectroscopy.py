"""Spectroscopy observation and SEDModel.predict_spectrum (issue 3 item 9)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tengri import Fixed, Parameters, Photometry, SEDModel
from tengri.errors import ParameterError
from tengri.model import Joint, Spectroscopy
from tengri.physics import spectral_convolution as conv

VALUES = {"age_gyr": 1.5, "tau_gyr": 1.0, "stellar_mass": 10.0, "metallicity": 1.0, "log_u": -2.5,
          "veldisp_kms": 150.0}
WAVE = np.linspace(7000.0, 14000.0, 900)  # Hβ … Hα at z = 1


def _model(**spec_kwargs):
    spec = Spectroscopy(WAVE, **{"resolution": 800.0, **spec_kwargs})
    return SEDModel(Parameters({"redshift": Fixed(1.0), "av": Fixed(0.4)}), spec)


@pytest.fixture(scope="module")
def model():
    return _model()


def test_validation_names_the_argument():
    with pytest.raises(ParameterError, match="wavelength_aa"):
        Spectroscopy(WAVE[::-1])
    with pytest.raises(ParameterError, match="resolution"):
        Spectroscopy(WAVE, resolution=-5.0)
    with pytest.raises(ParameterError, match="sigma_aa"):
        Spectroscopy(WAVE, sigma_aa=np.ones(3))
    with pytest.raises(ParameterError, match="flux_unit"):
        Spectroscopy(WAVE, flux_unit="W/m2")
    with pytest.raises(ParameterError, match="eline_mode"):
        Spectroscopy(WAVE, eline_mode="free")
    with pytest.raises(ParameterError, match="lines"):
        Spectroscopy(WAVE, lines=["Hzeta_made_up"])


def test_joint_observation_kind():
    model = SEDModel(Parameters({"redshift": Fixed(1.0)}), (Photometry(["sdss_r0", "sdss_i0"]), Spectroscopy(WAVE)))
    assert isinstance(model.observation, Joint) and model.observation.kind == "joint"
    assert model.photometry.n_data == 2 and model.spectroscopy.n_data == WAVE.size
    assert "veldisp_kms" in model.parameters.free_names
    # the fine grid reaches the SSP's native sampling inside the spectrum's rest range
    rest = model.wavelength_aa[(model.wavelength_aa > 3600) & (model.wavelength_aa < 6900)]
    assert np.max(np.diff(rest)) < 1.5


def test_broadening_conserves_flux_exactly():
    rng = np.random.default_rng(1)
    wave = np.concatenate([np.linspace(3000, 5000, 300), np.geomspace(5010, 9000, 40)])  # fine then coarse bins
    edges = conv.log_bin_edges(wave)
    density = rng.uniform(0.1, 2.0, wave.size)
    pixels = conv.log_bin_edges(np.linspace(3300, 8000, 700) * 1.5)
    sigma = np.linspace(2e-4, 3e-3, wave.size)
    n_window = conv.window_size(edges, pixels, sigma.max(), (np.log(1.5), np.log(1.5)))
    flux = conv.broaden_to_pixels(jnp.asarray(density), jnp.asarray(edges), np.log(1.5), jnp.asarray(sigma),
                                  jnp.asarray(pixels), n_window)
    covered = (edges[:-1] + np.log(1.5) > pixels[0] + 0.02) & (edges[1:] + np.log(1.5) < pixels[-1] - 0.02)
    only = np.where(covered, density, 0.0)
    flux_only = conv.broaden_to_pixels(jnp.asarray(only), jnp.asarray(edges), np.log(1.5), jnp.asarray(sigma),
                                       jnp.asarray(pixels), n_window)
    assert np.sum(flux_only) == pytest.approx(np.sum(only * np.diff(edges)), rel=1e-9)
    assert np.all(np.asarray(flux) > 0)


def test_velocity_and_lsf_conserve_integrated_flux(model):
    sharp = _model(resolution=None)
    broad = model.predict_spectrum({**VALUES, "veldisp_kms": 400.0})
    narrow = sharp.predict_spectrum({**VALUES, "veldisp_kms": 1e-3})
    width = np.diff(np.exp(conv.log_bin_edges(WAVE)))
    assert np.sum(broad * width) == pytest.approx(np.sum(narrow * width), rel=1e-3)
    # the lines really are broader: Hα's peak drops
    i = np.argmin(np.abs(WAVE - 6562.8 * 2))
    assert narrow[i] > 1.5 * broad[i]


def test_line_fluxes_integrate_to_published_values(model):
    out = model.predict_spectrum(VALUES, components=True)
    width = np.diff(np.exp(conv.log_bin_edges(WAVE)))
    derived = model.derived_quantities(VALUES)
    for name, flux, template in zip(out["line_names"], out["line_flux"], out["line_templates"]):
        assert derived[f"eline_flux_{name}"] == pytest.approx(flux, rel=1e-12)
        rest = dict(zip(out["line_names"], out["line_wavelengths_aa"]))[name]
        if WAVE[0] + 50 < 2 * rest < WAVE[-1] - 50:
            assert np.sum(template * width) == pytest.approx(1.0, rel=1e-6), name
    lines = out["flux"] - out["continuum"]
    hb = {n: f for n, f in zip(out["line_names"], out["line_flux"])}
    assert hb["Halpha"] / hb["Hbeta"] > 2.86  # Case B reddened by A_V = 0.4
    assert np.sum(lines * width) == pytest.approx(
        sum(f for n, f, w in zip(out["line_names"], out["line_flux"], out["line_wavelengths_aa"])
            if WAVE[0] < 2 * w < WAVE[-1]), rel=0.05)  # plus weak unnamed Cloudy lines


@pytest.mark.slow
@pytest.mark.full
def test_fnu_units_match_flam(model):
    fnu_model = _model(flux_unit="uJy")
    flam = model.predict_spectrum(VALUES)
    fnu = fnu_model.predict_spectrum(VALUES)
    converted = flam * WAVE**2 / 2.99792458e18 / 1e-29
    np.testing.assert_allclose(fnu, converted, rtol=2e-3)  # pixel averages in λ vs ν


@pytest.mark.slow
@pytest.mark.full
def test_fitted_lines_add_scales_and_gradients_finite():
    model = _model(eline_mode="fitted", lines=["Hbeta", "Halpha"])
    assert {"eline_scale_Hbeta", "eline_scale_Halpha"} <= set(model.parameters.free_names)
    base = model.predict_spectrum({**VALUES, "eline_scale_Hbeta": 1.0, "eline_scale_Halpha": 1.0}, components=True)
    twice = model.predict_spectrum({**VALUES, "eline_scale_Hbeta": 1.0, "eline_scale_Halpha": 2.0}, components=True)
    assert twice["line_flux"][1] == pytest.approx(2 * base["line_flux"][1])
    ctx = model._spectrum_plan.context()
    theta0 = {n: jnp.asarray(v) for n, v in model.parameters.fixed_values.items()}
    theta0.update({k: jnp.asarray(v) for k, v in VALUES.items()})
    theta0.update(eline_scale_Hbeta=jnp.asarray(1.0), eline_scale_Halpha=jnp.asarray(1.0))
    grad = jax.jit(jax.grad(lambda t: jnp.sum(model._spectrum(t, model.grids, ctx)["flux"] * 1e17)))(theta0)
    assert all(np.isfinite(float(g)) for g in grad.values())
    assert float(grad["veldisp_kms"]) != 0.0
