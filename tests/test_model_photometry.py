"""SEDModel: photometry, SED, derived quantities and their physical behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tengri import Fixed, Parameters, Photometry, SEDModel, Uniform
from tengri.errors import DataError, ParameterError


def test_photometry_shape_and_positive(phot_model, truth):
    flux = phot_model.predict_photometry(truth)
    assert flux.shape == (12,)
    assert np.all(flux > 0)


def test_photometry_scales_linearly_with_mass_formed(phot_model, truth):
    f1 = phot_model.predict_photometry(truth)
    f2 = phot_model.predict_photometry({**truth, "stellar_mass": truth["stellar_mass"] + 1})
    np.testing.assert_allclose(f2 / f1, 10.0, rtol=1e-10)


def test_dust_dims_ultraviolet_more_than_infrared(phot_model, truth):
    clear = phot_model.predict_photometry({**truth, "av": 0.0})
    dusty = phot_model.predict_photometry({**truth, "av": 1.0})
    ratio = dusty / clear
    assert ratio[0] < ratio[5] < ratio[-1] <= 1.0


def test_batched_prediction_matches_single(phot_model, truth):
    batch = {k: np.full(3, v) for k, v in truth.items()}
    batch["av"] = np.array([0.0, 0.5, 1.0])
    fluxes = phot_model.predict_photometry(batch)
    assert fluxes.shape == (3, 12)
    np.testing.assert_allclose(fluxes[1], phot_model.predict_photometry({**truth, "av": 0.5}), rtol=1e-12)


def test_derived_quantities_are_consistent(phot_model, truth):
    d = phot_model.derived_quantities(truth)
    assert 0.4 * d["mass_formed"] < d["stellar_mass"] < d["mass_formed"]
    np.testing.assert_allclose(d["mass_formed"], 10 ** truth["stellar_mass"], rtol=1e-12)
    np.testing.assert_allclose(d["ssfr"], d["sfr_100myr"] / d["stellar_mass"], rtol=1e-12)
    assert 0 < d["mass_weighted_age_gyr"] < truth["age_gyr"]


def test_sfh_integrates_to_mass_formed(phot_model, truth):
    t, sfr = phot_model.predict_sfh(truth, lookback_gyr=np.linspace(0, 5.8, 4000))
    mass = np.trapezoid(sfr, t * 1e9)
    np.testing.assert_allclose(mass, 10 ** truth["stellar_mass"], rtol=5e-3)


def test_sed_observed_frame_is_redshifted(phot_model, truth):
    sed = phot_model.predict_sed(truth)
    np.testing.assert_allclose(sed["wavelength_obs_aa"], sed["wavelength_rest_aa"] * 2.0)
    assert sed["lnu_rest"].shape == sed["wavelength_rest_aa"].shape


def test_log_likelihood_gradient_finite_over_prior_draws(phot_model, truth):
    flux = phot_model.predict_photometry(truth)
    problem = phot_model.build_problem(flux, flux / 20)
    grad = jax.jit(jax.vmap(jax.grad(problem.log_likelihood), in_axes=(0, None)))
    z = jax.random.normal(jax.random.PRNGKey(3), (50, problem.n_dim)) * 1.5
    g = grad(z, problem.data_args)
    assert np.all(np.isfinite(np.asarray(g)))


def test_free_redshift_matches_fixed_redshift(truth, phot_model):
    params = Parameters({**phot_model.parameters.priors, "redshift": Uniform(0.5, 2.0)})
    model = SEDModel(params, phot_model.observation)
    np.testing.assert_allclose(model.predict_photometry(truth), phot_model.predict_photometry(truth), rtol=1e-10)


def test_unknown_parameter_name_is_rejected(phot_model):
    with pytest.raises(ParameterError, match="not used by this model"):
        SEDModel(Parameters(redshift=Fixed(1.0), stellar_mas=Uniform(8, 12)), phot_model.observation)


def test_unknown_filter_is_rejected():
    with pytest.raises(ParameterError, match="not_a_filter"):
        Photometry(["sdss_r0", "not_a_filter"])


@pytest.mark.parametrize("kw", [{"sfh": "spline"}, {"dust": "mystery"}, {"igm": "madau"}])
def test_unknown_component_option_is_rejected(kw, phot_model):
    with pytest.raises(ParameterError):
        SEDModel(phot_model.parameters, phot_model.observation, **kw)


def test_build_problem_rejects_bad_data(phot_model, truth):
    flux = phot_model.predict_photometry(truth)
    noise = flux / 10
    with pytest.raises(DataError, match="data"):
        phot_model.build_problem(flux[:5], noise[:5])
    with pytest.raises(DataError, match="noise"):
        phot_model.build_problem(flux, -noise)
    with pytest.raises(DataError, match="NaN"):
        phot_model.build_problem(np.where(np.arange(12) == 3, np.nan, flux), noise)
    mask = np.arange(12) != 3
    phot_model.build_problem(np.where(~mask, np.nan, flux), noise, mask)  # masked NaN is fine
