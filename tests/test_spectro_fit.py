"""Spectroscopic and joint fits through the Fitter, end to end (issue 5).

One small model serves the spectroscopic tests: z = 0.3, 490 pixels from Hβ to
[NII]6584, three free parameters, no nebular emission in the model; the four BPT
lines are injected into the mock with known fluxes and marginalised in the fit.
The mock continuum is multiplied by a known cubic calibration curve.
"""

import numpy as np
import pytest

from tengri import Fitter, Fixed, Parameters, Photometry, SEDModel, Uniform
from tengri.analysis.diagnostics import spectral
from tengri.errors import ParameterError
from tengri.inference.spectro_likelihood import chebyshev_design
from tengri.model import Spectroscopy
from tengri.posterior import Posterior

REDSHIFT = 0.3
WAVE = np.linspace(6200.0, 8650.0, 490)  # Hβ (6320 Å) … [NII]6584 (8558 Å) observed
LINES = ("Hbeta", "OIII_5007", "Halpha", "NII_6584")
TRUTH = {"stellar_mass": 10.5, "age_gyr": 1.5, "av": 0.5}
CALIBRATION = np.array([0.15, -0.10, 0.06])  # c_1..c_3 of 1 + Σ c_k T_k(x)
# line fluxes in units of (median continuum f_λ × 1 Å): Hα/Hβ = 4, [NII]/Hα = 0.3, [OIII]/Hβ = 2
LINE_EW_AA = np.array([20.0, 40.0, 80.0, 24.0])
SNR_PER_PIXEL = 40.0
LAPLACE = {"n_starts": 2, "n_samples": 400}


def _parameters():
    return Parameters({
        "redshift": Fixed(REDSHIFT), "stellar_mass": Uniform(9.0, 12.0), "age_gyr": Uniform(0.3, 5.0),
        "av": Uniform(0.0, 2.0), "tau_gyr": Fixed(1.0), "metallicity": Fixed(1.0), "veldisp_kms": Fixed(150.0),
    })


@pytest.fixture(scope="module")
def spec_model():
    spec = Spectroscopy(WAVE, resolution=800.0, eline_mode="marginalized", lines=LINES)
    return SEDModel(_parameters(), spec, sfh="delayed", nebular=False)


@pytest.fixture(scope="module")
def mock(spec_model):
    """Continuum × calibration curve + lines of known flux + noise (erg/s/cm²/Å)."""
    parts = spec_model.predict_spectrum(TRUTH, components=True)
    continuum = parts["flux"]
    line_flux = LINE_EW_AA * np.median(continuum)  # erg/s/cm²
    clean = continuum * (1.0 + chebyshev_design(WAVE, 3) @ CALIBRATION) + line_flux @ parts["line_templates"]
    noise = np.full(WAVE.size, np.median(continuum) / SNR_PER_PIXEL)
    data = clean + noise * np.random.default_rng(7).normal(size=WAVE.size)
    return {"data": data, "noise": noise, "line_flux": line_flux}


@pytest.fixture(scope="module")
def calibrated_fit(spec_model, mock):
    fitter = Fitter(spec_model, mock["data"], mock["noise"], calibration_marginalize=True, cal_n_poly=3)
    return fitter.run("laplace", **LAPLACE)


def _z_scores(posterior):
    return {k: (np.mean(posterior.samples[k]) - v) / np.std(posterior.samples[k]) for k, v in TRUTH.items()}


def test_fitter_takes_spectrum_layout_and_mask(spec_model, mock):
    mask = np.ones(WAVE.size, bool)
    mask[:10] = False
    fitter = Fitter(spec_model, mock["data"], mock["noise"], data_mask=mask)
    assert fitter.data_type == "spectroscopy"
    assert fitter.n_data == WAVE.size - 10
    assert fitter.mask.shape == (WAVE.size,) and not fitter.mask[:10].any()
    assert "Fitter data_type: spectroscopy" in fitter.summary()
    with pytest.raises(ParameterError, match="data_type"):
        Fitter(spec_model, mock["data"], mock["noise"], data_type="photometry")
    with pytest.raises(ParameterError, match="eline_marginalize"):
        Fitter(spec_model, mock["data"], mock["noise"], eline_marginalize=False)


@pytest.mark.slow
@pytest.mark.full
def test_calibration_marginalisation_removes_the_bias(spec_model, mock, calibrated_fit):
    """Without the polynomial the cubic calibration curve biases the continuum
    parameters far beyond their errors; marginalised, the truth is within 2σ."""
    biased = Fitter(spec_model, mock["data"], mock["noise"]).run("laplace", **LAPLACE)
    off = _z_scores(biased)
    assert max(abs(v) for v in off.values()) > 5.0, off
    recovered = _z_scores(calibrated_fit)
    assert all(abs(v) < 2.0 for v in recovered.values()), recovered


@pytest.mark.slow
@pytest.mark.full
def test_marginalised_line_fluxes_cover_the_truth(calibrated_fit, mock):
    post = calibrated_fit
    assert post.eline_names == list(LINES)
    assert post.eline_fluxes.shape == (LAPLACE["n_samples"], len(LINES))
    table = post.line_fluxes()
    for name, truth in zip(LINES, mock["line_flux"]):
        median, lo, hi = table[name]
        sigma = 0.5 * (hi - lo)
        assert 0 < sigma < 0.1 * truth, (name, table[name])  # S/N > 10: a real measurement
        assert abs(median - truth) < 3.0 * sigma, (name, table[name], truth)


@pytest.mark.slow
@pytest.mark.full
def test_line_diagnostics_match_the_inputs(calibrated_fit, mock):
    post = calibrated_fit
    hbeta, oiii, halpha, nii = mock["line_flux"]
    ratio, lo, hi = post.balmer_decrement()
    assert ratio == pytest.approx(halpha / hbeta, abs=3 * (hi - lo) / 2)
    av, av_lo, av_hi = post.av_from_balmer()
    expected_av = 4.05 * 2.5 / (3.61 - 2.53) * np.log10(halpha / hbeta / 2.86)
    assert av == pytest.approx(expected_av, abs=3 * (av_hi - av_lo) / 2)
    assert av == pytest.approx(float(spectral.av_from_balmer_decrement(ratio)), rel=1e-2)
    x, y = post.bpt_nii()
    assert x.shape == y.shape == (LAPLACE["n_samples"],)
    assert np.median(x) == pytest.approx(np.log10(nii / halpha), abs=max(3 * np.std(x), 0.01))
    assert np.median(y) == pytest.approx(np.log10(oiii / hbeta), abs=max(3 * np.std(y), 0.01))


@pytest.mark.slow
@pytest.mark.full
def test_equivalent_widths_and_missing_lines(calibrated_fit):
    """EWs come from the model's rest-frame SED: this model has no nebular
    emission, so Hβ and Hα show the stellar absorption (a 1.5 Gyr population:
    several Å) and [OIII] only weak metal features."""
    widths = calibrated_fit.equivalent_widths(window_aa=20, continuum_width_aa=50)
    assert set(widths) == set(LINES)
    assert widths["Hbeta"][0] < -3.0 and widths["Halpha"][0] < -2.0, widths
    assert abs(widths["OIII_5007"][0]) < 1.5, widths
    only_balmer = Posterior(samples=calibrated_fit.samples, params=calibrated_fit.params, method="laplace",
                            wall_time_s=0.0,
                            eline_fluxes=calibrated_fit.eline_fluxes[:, [0, 2]], eline_names=["Hbeta", "Halpha"],
                            eline_wavelengths_aa=calibrated_fit.eline_wavelengths_aa[[0, 2]])
    assert only_balmer.balmer_decrement()[0] > 0
    with pytest.raises(ValueError, match="nii_6584"):
        only_balmer.bpt_nii()


@pytest.mark.slow
@pytest.mark.full
def test_joint_photometry_and_spectrum_fit():
    """Photometry + spectrum (dict layout) with MAP; no named lines → line methods raise."""
    spec = Spectroscopy(WAVE, resolution=800.0, lines=LINES)
    phot = Photometry(["sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0", "twomass_J", "twomass_Ks"])
    model = SEDModel(_parameters(), (phot, spec), sfh="delayed", nebular=False)
    bands = model.predict_photometry(TRUTH)
    flux = model.predict_spectrum(TRUTH)
    rng = np.random.default_rng(11)
    band_noise, spec_noise = 0.03 * bands, np.full(WAVE.size, np.median(flux) / SNR_PER_PIXEL)
    data = {"phot": bands + band_noise * rng.normal(size=bands.size),
            "spec": flux + spec_noise * rng.normal(size=WAVE.size)}
    fitter = Fitter(model, data, {"phot": band_noise, "spec": spec_noise}, calibration_marginalize=True)
    assert fitter.data_type == "joint" and fitter.n_data == bands.size + WAVE.size
    post = fitter.run("map", n_starts=2)
    assert post.diagnostics["converged"]
    # Laplace errors of this mock (measured once): mass ±0.023 dex, age ±0.14 Gyr, Av ±0.06;
    # its noise draw puts the MAP 2.3σ low in age and 2σ high in Av (Δ log L to the truth 2.2)
    assert post.params["stellar_mass"] == pytest.approx(TRUTH["stellar_mass"], abs=0.1)
    assert post.params["age_gyr"] == pytest.approx(TRUTH["age_gyr"], abs=0.5)
    assert post.params["av"] == pytest.approx(TRUTH["av"], abs=0.25)
    with pytest.raises(ValueError, match="emission-line"):
        post.line_fluxes()
    with pytest.raises(ValueError, match="emission-line"):
        post.balmer_decrement()
