"""Posterior.posterior_predictive for spectroscopic and joint fits (issue 9).

Mocks come from the model at known parameters (z = 0.3, Hβ … [NII]6584, no
nebular emission in the model): a spectrum times a known cubic calibration curve
with four lines of known flux added, and a joint photometry + spectrum mock. The
predictive check is evaluated at the true parameters (a MAP-like Posterior) and
on draws all equal to the truth, where the expected χ² is known exactly: with
n used pixels and K marginalised linear coefficients, χ² at their conditional
mean follows about χ²_{n−K}, and a draw of the coefficients adds K on average.
"""

import jax
import numpy as np
import pytest

from tengri import Fitter, Fixed, Parameters, Photometry, SEDModel, Uniform
from tengri.errors import DataError
from tengri.inference.spectro_likelihood import chebyshev_design
from tengri.model import Spectroscopy
from tengri.posterior import Posterior

REDSHIFT = 0.3
WAVE = np.linspace(6200.0, 8650.0, 300)  # Hβ (6320 Å) … [NII]6584 (8558 Å) observed
LINES = ("Hbeta", "OIII_5007", "Halpha", "NII_6584")
TRUTH = {"stellar_mass": 10.5, "age_gyr": 1.5, "av": 0.5}
FIXED = {"redshift": REDSHIFT, "tau_gyr": 1.0, "metallicity": 1.0, "veldisp_kms": 150.0}
CALIBRATION = np.array([0.15, -0.10, 0.06])  # c_1..c_3 of 1 + Σ c_k T_k(x)
LINE_EW_AA = np.array([20.0, 40.0, 80.0, 24.0])  # line flux / (median continuum f_λ × 1 Å)
SNR_PER_PIXEL = 40.0
BANDS = ["sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0", "twomass_J", "twomass_Ks"]


def _parameters():
    return Parameters({
        "redshift": Fixed(REDSHIFT), "stellar_mass": Uniform(9.0, 12.0), "age_gyr": Uniform(0.3, 5.0),
        "av": Uniform(0.0, 2.0), "tau_gyr": Fixed(1.0), "metallicity": Fixed(1.0), "veldisp_kms": Fixed(150.0),
    })


def _at_truth(fitter, n_draws=None, eline_fluxes=None):
    """A Posterior at the true parameters: a point estimate, or n_draws identical draws."""
    if n_draws is None:
        return Posterior(None, {**TRUTH, **FIXED}, "map", 0.0, model=fitter.model, fitter=fitter)
    samples = {k: np.full(n_draws, v) for k, v in {**TRUTH, **FIXED}.items()}
    return Posterior(samples, {**TRUTH, **FIXED}, "laplace", 0.0, model=fitter.model, fitter=fitter,
                     eline_fluxes=eline_fluxes, eline_names=None if eline_fluxes is None else list(LINES))


def _chi2_tolerance(n):
    return 3.0 * np.sqrt(2.0 * n)


@pytest.fixture(scope="module")
def line_model():
    spec = Spectroscopy(WAVE, resolution=800.0, eline_mode="marginalized", lines=LINES)
    return SEDModel(_parameters(), spec, sfh="delayed", nebular=False)


@pytest.fixture(scope="module")
def line_mock(line_model):
    """Continuum × cubic calibration + four lines of known flux + Gaussian noise [erg/s/cm²/Å]."""
    parts = line_model.predict_spectrum({**TRUTH, **FIXED}, components=True)
    continuum = parts["flux"]
    curve = 1.0 + chebyshev_design(WAVE, 3) @ CALIBRATION
    line_flux = LINE_EW_AA * np.median(continuum)
    lines = line_flux @ parts["line_templates"]
    noise = np.full(WAVE.size, np.median(continuum) / SNR_PER_PIXEL)
    eps = noise * np.random.default_rng(7).normal(size=WAVE.size)
    return {"continuum": continuum, "curve": curve, "lines": lines, "line_flux": line_flux, "noise": noise,
            "eps": eps, "calibrated": continuum * curve + lines + eps}


@pytest.fixture(scope="module")
def joint_model():
    spec = Spectroscopy(WAVE, resolution=800.0)
    return SEDModel(_parameters(), (Photometry(BANDS), spec), sfh="delayed", nebular=False)


@pytest.fixture(scope="module")
def joint_mock(joint_model):
    bands = joint_model.predict_photometry({**TRUTH, **FIXED})
    flux = joint_model.predict_spectrum({**TRUTH, **FIXED})
    curve = 1.0 + chebyshev_design(WAVE, 3) @ CALIBRATION
    rng = np.random.default_rng(11)
    band_noise, spec_noise = 0.03 * bands, np.full(WAVE.size, np.median(flux) / SNR_PER_PIXEL)
    return {"phot": bands + band_noise * rng.normal(size=bands.size),
            "spec": flux * curve + spec_noise * rng.normal(size=WAVE.size),
            "phot_noise": band_noise, "spec_noise": spec_noise, "curve": curve, "model_flux": flux}


def test_calibration_and_lines_marginalised_give_chi2_of_n_data(line_model, line_mock):
    """Cubic calibration curve and four lines in the mock, both marginalised."""
    fitter = Fitter(line_model, line_mock["calibrated"], line_mock["noise"], calibration_marginalize=True,
                    cal_n_poly=3)
    ppc = _at_truth(fitter).posterior_predictive(line_mock["calibrated"])
    n, k = WAVE.size, 3 + len(LINES)
    assert ppc["predictions"].shape == ppc["residuals"].shape == (1, n)
    assert ppc["n_data"] == n and ppc["mask"].all()
    assert abs(ppc["chi2"][0] - (n - k)) < _chi2_tolerance(n), ppc["chi2"]
    # the prediction holds the calibration curve and the lines: recovered to ~1/S/N
    np.testing.assert_allclose(ppc["calibration"][0], line_mock["curve"], atol=0.02)
    np.testing.assert_allclose(ppc["line_amplitudes"][0], line_mock["line_flux"], rtol=0.1)
    # what the model alone predicts is far off: the check must include both
    bare = np.sum(((line_mock["calibrated"] - line_mock["continuum"]) / line_mock["noise"]) ** 2)
    assert bare > 20 * n, bare


def test_marginalised_lines_absorb_fluxes_unlike_the_model(line_model, line_mock):
    """No calibration: the mock's lines (the model has none) are the conditional amplitudes."""
    data = line_mock["continuum"] + line_mock["lines"] + line_mock["eps"]
    fitter = Fitter(line_model, data, line_mock["noise"])
    ppc = _at_truth(fitter).posterior_predictive(data)
    n = WAVE.size
    assert "calibration" not in ppc
    assert abs(ppc["chi2"][0] - (n - len(LINES))) < _chi2_tolerance(n), ppc["chi2"]
    without_lines = np.sum(((data - line_mock["continuum"]) / line_mock["noise"]) ** 2)
    assert without_lines > 20 * n, without_lines


def test_draws_of_the_coefficients_add_their_number_to_chi2(line_model, line_mock):
    """Per draw the coefficients are drawn from their conditional: on draws all at the truth
    the χ² exceeds the conditional-mean χ² by K on average (weak priors), whether they are
    drawn jointly (no line fluxes stored) or the calibration is drawn given the stored line
    fluxes (as Fitter stores them: the line part of a joint conditional draw)."""
    data = line_mock["calibrated"]
    fitter = Fitter(line_model, data, line_mock["noise"], calibration_marginalize=True, cal_n_poly=3)
    n_draws, k = 48, 3 + len(LINES)  # the mean of χ²_K over 48 draws scatters by ±0.54
    point = _at_truth(fitter).posterior_predictive(data)["chi2"][0]
    joint = _at_truth(fitter, n_draws).posterior_predictive(data)
    stored = joint["line_amplitudes"]
    assert stored.shape == (n_draws, len(LINES)) and np.ptp(stored[:, 2]) > 0  # one draw each
    given = _at_truth(fitter, n_draws, stored).posterior_predictive(data)
    np.testing.assert_array_equal(given["line_amplitudes"], stored)
    for ppc in (joint, given):
        assert ppc["chi2"].shape == (n_draws,)
        assert np.mean(ppc["chi2"]) - point == pytest.approx(k, abs=4 * np.sqrt(2 * k / n_draws))
    picked = _at_truth(fitter, n_draws, stored).posterior_predictive(data, n_samples=n_draws,
                                                                     key=jax.random.PRNGKey(1))
    assert picked["predictions"].shape == (n_draws, WAVE.size) and picked["chi2"].shape == (n_draws,)
    index = _at_truth(fitter, n_draws)._draw_index(jax.random.PRNGKey(1), n_draws)
    np.testing.assert_array_equal(picked["line_amplitudes"], stored[index])


def test_joint_parts_add_up_and_masked_data_do_not_count(joint_model, joint_mock):
    n_phot = len(BANDS)
    mask = {"phot": np.ones(n_phot, bool), "spec": np.ones(WAVE.size, bool)}
    mask["phot"][0] = False
    mask["spec"][:20] = False
    corrupt = {"phot": joint_mock["phot"].copy(), "spec": joint_mock["spec"].copy()}
    corrupt["phot"][0] *= 100.0
    corrupt["spec"][:20] = np.nan  # masked: never read by the fit nor by the χ²
    noise = {"phot": joint_mock["phot_noise"], "spec": joint_mock["spec_noise"]}
    fitter = Fitter(joint_model, corrupt, noise, data_mask=mask, calibration_marginalize=True)
    post = _at_truth(fitter)
    ppc = post.posterior_predictive(corrupt)
    n_used = n_phot - 1 + WAVE.size - 20
    assert ppc["n_data"] == n_used and ppc["n_data_photometry"] == n_phot - 1
    assert ppc["n_data_spectrum"] == WAVE.size - 20
    assert ppc["predictions"].shape == (1, n_phot + WAVE.size)
    np.testing.assert_allclose(ppc["chi2_photometry"] + ppc["chi2_spectrum"], ppc["chi2"], rtol=1e-12)
    assert abs(ppc["chi2"][0] - (n_used - 3)) < _chi2_tolerance(n_used), ppc["chi2"]
    assert ppc["chi2_photometry"][0] < 5 * n_phot
    # residuals for every datum: the corrupt band shows up there, not in χ²
    assert ppc["residuals"][0, 0] > 100 and np.isnan(ppc["residuals"][0, n_phot])
    # the photometry is predicted without the calibration, the spectrum with it
    np.testing.assert_allclose(ppc["predictions"][0, :n_phot], joint_model.predict_photometry({**TRUTH, **FIXED}))
    np.testing.assert_allclose(ppc["predictions"][0, n_phot:], joint_mock["model_flux"] * ppc["calibration"][0])
    spec_only = (joint_mock["spec"] - joint_mock["model_flux"]) / joint_mock["spec_noise"]
    assert np.sum(spec_only[20:] ** 2) > 5 * WAVE.size  # without the calibration: far off
    # the one-array layout [photometry, spectrum] gives the same answer
    flat = post.posterior_predictive(np.concatenate([corrupt["phot"], corrupt["spec"]]))
    np.testing.assert_allclose(flat["chi2"], ppc["chi2"], rtol=1e-12)


def test_data_of_the_wrong_shape_is_a_data_error(joint_model, joint_mock):
    noise = {"phot": joint_mock["phot_noise"], "spec": joint_mock["spec_noise"]}
    fitter = Fitter(joint_model, {"phot": joint_mock["phot"], "spec": joint_mock["spec"]}, noise)
    post = _at_truth(fitter)
    with pytest.raises(DataError, match="data must have shape"):
        post.posterior_predictive(joint_mock["spec"])  # the spectrum alone, photometry missing
    with pytest.raises(DataError, match="'phot' and 'spec'"):
        post.posterior_predictive({"spec": joint_mock["spec"]})
    bad = {"phot": joint_mock["phot"], "spec": joint_mock["spec"].copy()}
    bad["spec"][3] = np.inf
    with pytest.raises(DataError, match="NaN/inf"):
        post.posterior_predictive(bad)


@pytest.mark.full
def test_chi2_of_a_map_fit_matches_the_degrees_of_freedom(line_model, line_mock):
    """Acceptance (issue 9) on a spectroscopic MAP fit: χ² ≈ n_data − n_free (±30%), the
    free parameters counting the marginalised calibration and line coefficients."""
    data = line_mock["calibrated"]
    fitter = Fitter(line_model, data, line_mock["noise"], calibration_marginalize=True, cal_n_poly=3)
    ppc = fitter.run("map", n_starts=2).posterior_predictive(data)
    n_free = line_model.parameters.n_free + 3 + len(LINES)
    assert ppc["chi2_median"] == pytest.approx(ppc["n_data"] - n_free, rel=0.3), ppc["chi2_median"]
