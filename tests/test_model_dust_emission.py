"""SEDModel with dust emission: energy balance, options, defaults and gradients."""

import jax
import numpy as np
import pytest

from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform
from tengri.errors import ParameterError
from tengri.model.components import DustEmission

from conftest import bolometric_erg_s, prior_draws

REDSHIFT = 0.5
IR_FILTERS = ["sdss_r0", "twomass_Ks", "spitzer_irac_ch2", "spitzer_mips_24", "herschel_pacs_100",
              "herschel_spire_250"]
COMMON_PRIORS = dict(redshift=Fixed(REDSHIFT), stellar_mass=Uniform(9.0, 11.0),
                     age_gyr=Uniform(0.05, "age_of_universe"), tau_gyr=LogUniform(0.05, 10.0),
                     metallicity=LogUniform(0.05, 2.0), av=Uniform(0.0, 3.0), dust_eta=Uniform(1.0, 3.0),
                     log_u=Uniform(-3.5, -1.5))
FREE_DUST_EMISSION = {
    "dl07": dict(dust_qpah=Uniform(0.3, 4.5), dust_umin=Uniform(0.2, 20.0), dust_gamma=Uniform(0.0, 0.5)),
    "mbb": dict(dust_temperature_k=Uniform(15.0, 80.0), dust_beta=Uniform(1.0, 2.5)),
}


@pytest.fixture(scope="module")
def models():
    """Models built on first use, one per dust-emission model (each compile costs seconds)."""
    cache = {}

    def get(name):
        if name not in cache:
            params = Parameters({**COMMON_PRIORS, **FREE_DUST_EMISSION[name]})
            cache[name] = SEDModel(params, Photometry(IR_FILTERS), sfh="delayed", dust="calzetti",
                                   nebular=True, dust_emission=name)
        return cache[name]

    return get


@pytest.fixture(params=["dl07", "mbb"])
def model(request, models):
    return models(request.param)


@pytest.fixture
def dl07_model(models):
    return models("dl07")


@pytest.mark.slow
def test_dust_conserves_bolometric_luminosity_over_prior_draws(model):
    draws = prior_draws(model, REDSHIFT, 24)
    assert np.ptp(draws["av"]) > 1.0
    dusty = bolometric_erg_s(model, model.predict_sed(draws)["lnu_rest"])
    clear = bolometric_erg_s(model, model.predict_sed({**draws, "av": np.zeros(24)})["lnu_rest"])
    np.testing.assert_allclose(dusty, clear, rtol=1e-10)


def test_dust_infrared_luminosity_equals_absorbed_luminosity(dl07_model):
    d = dl07_model.derived_quantities(prior_draws(dl07_model, REDSHIFT, 24, seed=1))
    assert np.all(d["luminosity_absorbed"] > 0)
    np.testing.assert_allclose(d["luminosity_dust_ir"], d["luminosity_absorbed"], rtol=1e-10)


def test_dust_dims_optical_and_brightens_far_infrared_bands(dl07_model):
    truth = {k: v[0] for k, v in prior_draws(dl07_model, REDSHIFT, 1, seed=2).items()}
    clear = dl07_model.predict_photometry({**truth, "av": 0.0})
    dusty = dl07_model.predict_photometry({**truth, "av": 1.0})
    assert dusty[0] < clear[0]  # sdss r: attenuated
    assert dusty[-1] > 10 * clear[-1]  # SPIRE 250 µm: dust dominates


@pytest.mark.slow
def test_log_likelihood_gradient_finite_over_50_prior_draws(model):
    truth = {k: v[0] for k, v in prior_draws(model, REDSHIFT, 1, seed=3).items()}
    flux = model.predict_photometry(truth)
    problem = model.build_problem(flux, 0.1 * flux)
    z = jax.random.normal(jax.random.key(4), (50, problem.init.shape[0]))
    grads = jax.jit(jax.vmap(jax.grad(problem.log_likelihood), in_axes=(0, None)))(z, problem.data_args)
    assert grads.shape == (50, len(problem.names))
    assert np.all(np.isfinite(np.asarray(grads)))
    assert set(FREE_DUST_EMISSION[model.dust_emission]) <= set(problem.names)


def test_dl07_parameters_default_to_bagpipes_values():
    model = SEDModel(Parameters(redshift=Fixed(1.0)), dust_emission=True)
    assert model.dust_emission == "dl07"
    assert {n: model.parameters[n] for n in ("dust_qpah", "dust_umin", "dust_gamma")} == {
        "dust_qpah": Fixed(2.0), "dust_umin": Fixed(1.0), "dust_gamma": Fixed(0.01)}


@pytest.mark.parametrize("option, chained", [(False, None), ("none", None), (True, "dl07"), ("dl07", "dl07"),
                                             ("mbb", "mbb")])
def test_dust_emission_option_selects_the_component(option, chained):
    model = SEDModel(Parameters(redshift=Fixed(1.0)), dust_emission=option)
    found = [c.model for c in model.components if isinstance(c, DustEmission)]
    assert found == ([] if chained is None else [chained])
    assert isinstance(model.components[-1], DustEmission) == (chained is not None)


def test_unknown_dust_emission_option_lists_the_valid_ones():
    with pytest.raises(ParameterError, match=r"dust_emission 'dale14'.*'dl07', 'mbb'"):
        SEDModel(Parameters(redshift=Fixed(1.0)), dust_emission="dale14")


def test_dust_emission_without_attenuation_is_refused():
    with pytest.raises(ParameterError, match="dust='none'"):
        SEDModel(Parameters(redshift=Fixed(1.0)), dust="none", dust_emission=True)


def test_dust_emission_parameters_of_the_other_model_are_refused():
    with pytest.raises(ParameterError, match="dust_qpah"):
        SEDModel(Parameters(redshift=Fixed(1.0), dust_qpah=Fixed(3.0)), dust_emission="mbb")


def test_config_passes_dust_emission_to_the_model():
    config = {"model": {"dust_emission": "mbb"}, "data": {"filters": ["sdss_r0"]},
              "params": {"redshift": {"fixed": 1.0}, "dust_beta": {"fixed": 2.0}}}
    model = SEDModel.from_config(config)
    assert model.dust_emission == "mbb"
    assert model.parameters["dust_beta"] == Fixed(2.0)
