"""SEDModel with AGN, radio, X-ray and shock components: the published parts of the SED,
energy bookkeeping, options, the band-table fast path and gradients."""

import jax
import numpy as np
import pytest

from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform
from tengri.data.filters import Filter
from tengri.errors import ConfigError, ParameterError
from tengri.model.config import model_from_config
from tengri.model.sed_model import SED_COMPONENT_SUM_KEYS

from conftest import bolometric_erg_s, prior_draws

REDSHIFT = 0.5
# observed frame: 2-7 keV (Chandra hard band) and 1.4 GHz (VLA L band), as top hats
XRAY_BAND = Filter.from_arrays("xray_2_7kev", np.geomspace(12.3984 / 7, 12.3984 / 2, 50), np.ones(50))
RADIO_BAND = Filter.from_arrays("radio_1p4ghz", np.geomspace(1.9e9, 2.4e9, 50), np.ones(50))
FILTERS = ["galex_NUV", "sdss_r0", "twomass_Ks", "spitzer_irac_ch2", "spitzer_mips_24", "herschel_pacs_100",
           "herschel_spire_250"]
COMMON_PRIORS = dict(redshift=Fixed(REDSHIFT), stellar_mass=Uniform(9.0, 11.0),
                     age_gyr=Uniform(0.05, "age_of_universe"), tau_gyr=LogUniform(0.05, 10.0),
                     metallicity=LogUniform(0.05, 2.0), av=Uniform(0.0, 3.0), dust_eta=Uniform(1.0, 3.0),
                     log_u=Uniform(-3.5, -1.5))
FREE = dict(agn_torus_covering=Uniform(0.1, 0.9), agn_torus_temperature_k=Uniform(50.0, 500.0),
            radio_qir=Uniform(2.2, 3.0), radio_alpha=Uniform(0.5, 1.1), dust_qpah=Uniform(0.3, 4.5),
            dust_umin=Uniform(0.2, 20.0), dust_gamma=Uniform(0.0, 0.5), dust_n=Uniform(0.3, 2.5))

# the test matrix: name -> SEDModel options
MATRIX = {
    "all_on": dict(dust="calzetti", dust_emission="dl07", agn=True, radio=True, xray=True, shock=True),
    "agn_only": dict(dust="calzetti", agn=True),
    "radio_xray": dict(dust="smc", dust_emission="mbb", radio=True, xray=True),
    "shock_nebular": dict(dust="cf00", shock=True),
}


def _bands_for(options) -> list:
    """The UV–IR filters, plus the X-ray and radio bands when the model emits there.

    Without the X-ray or radio component the model grid stops short of those bands,
    and building a problem on them is refused (DataError), as it should be.
    """
    return (FILTERS + ([XRAY_BAND] if options.get("xray") else [])
            + ([RADIO_BAND] if options.get("radio") else []))


def _model(options, filters=None):
    filters = _bands_for(options) if filters is None else filters
    probe = SEDModel(Parameters(redshift=Fixed(REDSHIFT)), **options)
    extra = {k: v for k, v in FREE.items() if k in probe.parameters.names}
    return SEDModel(Parameters({**COMMON_PRIORS, **extra}), Photometry(filters), **options)


@pytest.fixture(scope="module")
def models():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = _model(MATRIX[name])
        return cache[name]

    return get


N_DRAWS = 8  # one batch size for every call on a model: one compilation per prediction function


def _check_parts_add_up(model, name):
    parts = model.sed_components(prior_draws(model, REDSHIFT, N_DRAWS, seed=1))
    assert parts["sed_total"].shape == (N_DRAWS, model.wavelength_aa.size)
    np.testing.assert_array_equal(parts["wavelength"], model.wavelength_aa)
    summed = sum(parts[k] for k in SED_COMPONENT_SUM_KEYS if k in parts)
    total = parts["sed_total"]
    # every wavelength of the total (where it is not vanishingly faint) within 0.1 %
    bright = total > 1e-12 * total.max(axis=1, keepdims=True)
    assert np.max(np.abs(summed - total)[bright] / total[bright]) < 1e-3
    expected = {"agn": "sed_agn", "radio": "sed_radio", "xray": "sed_xray", "shock": "sed_shock"}
    for option, key in expected.items():
        assert (key in parts) == bool(MATRIX[name].get(option))


@pytest.mark.parametrize("name", ["all_on", "shock_nebular"])
def test_published_parts_add_up_to_the_total(models, name):
    _check_parts_add_up(models(name), name)


@pytest.mark.slow
@pytest.mark.full
@pytest.mark.parametrize("name", ["agn_only", "radio_xray"])
def test_published_parts_add_up_to_the_total_rest_of_matrix(models, name):
    _check_parts_add_up(models(name), name)


def test_all_on_point_estimate_shapes_and_positive_parts(models):
    model = models("all_on")
    parts = model.sed_components(prior_draws(model, REDSHIFT, N_DRAWS, seed=2))
    for key in SED_COMPONENT_SUM_KEYS + ("sed_total", "sed_intrinsic", "sed_stellar_intrinsic"):
        assert parts[key].shape == (N_DRAWS, model.wavelength_aa.size)
        assert np.all(parts[key] >= 0) and np.all(parts[key].max(axis=1) > 0)
    wave = model.wavelength_aa
    assert wave[0] <= 1.0 and wave[-1] >= 1e11  # X-ray and radio grid extensions
    assert np.all(parts["sed_stellar_intrinsic"][:, wave > 3.6e8] == 0)  # SSPs stop at 3.6 cm: zeros beyond


def test_energy_balance_holds_with_shocks_and_agn(models):
    """Absorbed stellar + nebular + shock light = dust IR luminosity; the AGN torus is not host dust."""
    model = models("all_on")
    draws = prior_draws(model, REDSHIFT, N_DRAWS, seed=3)
    assert np.ptp(draws["av"]) > 1.0
    d = model.derived_quantities(draws)
    assert np.all(d["luminosity_absorbed"] > 0)
    np.testing.assert_allclose(d["luminosity_dust_ir"], d["luminosity_absorbed"], rtol=1e-10)
    # what the host's dust takes from stars, nebulae and shocks it gives back (< 1 %): their sum does not
    # change with A_V
    host = ("sed_attenuated", "sed_nebular", "sed_shock", "sed_dust_ir")
    dusty = model.sed_components(draws)
    clear = model.sed_components({**draws, "av": np.zeros(N_DRAWS)})
    np.testing.assert_allclose(bolometric_erg_s(model, sum(dusty[k] for k in host)),
                               bolometric_erg_s(model, sum(clear[k] for k in host)), rtol=1e-2)
    # the AGN adds agn_fraction × the host's intrinsic luminosity (disk normalised analytically, torus on the grid)
    expected = draws["agn_fraction"] * bolometric_erg_s(model, dusty["sed_intrinsic"])
    np.testing.assert_allclose(d["luminosity_agn"], expected, rtol=1e-10)
    np.testing.assert_allclose(bolometric_erg_s(model, dusty["sed_agn"]), expected, rtol=0.02)


def test_radio_and_xray_follow_their_relations(models):
    model = models("all_on")
    draws = prior_draws(model, REDSHIFT, N_DRAWS, seed=4)
    d = model.derived_quantities(draws)
    np.testing.assert_allclose(d["luminosity_xrb_2_10kev"], 9.05e28 * d["stellar_mass"] + 1.62e39 * d["sfr_100myr"])
    q = np.log10(d["luminosity_ir_8_1000um"] / 3.75e12) - np.log10(d["lnu_synchrotron_1p4ghz"])
    np.testing.assert_allclose(q, draws["radio_qir"])
    assert np.all((0.8 * d["luminosity_dust_ir"] < d["luminosity_ir_8_1000um"])
                  & (d["luminosity_ir_8_1000um"] <= d["luminosity_dust_ir"]))
    # Q(H) per unit SFR of a young population: ~1e53 photons/s per M☉/yr (Kennicutt 1998, within a factor 3)
    young = model.derived_quantities({**draws, "age_gyr": np.full(N_DRAWS, 0.05), "tau_gyr": np.full(N_DRAWS, 10.0)})
    ratio = young["ionising_photon_rate"] / young["sfr_10myr"]
    assert np.all((4e52 < ratio) & (ratio < 4e53))
    # free-free: Cloudy's shortward of 3.6 cm and Murphy et al. (2011) longward join within 50 % (Cloudy's
    # electron temperature follows Z and log U; Murphy's formula here takes T_e = 10^4 K)
    parts = model.sed_components({**draws, "av": np.zeros(N_DRAWS)})
    wave = model.wavelength_aa
    free_free = young["ionising_photon_rate"][:, None] * np.asarray(model.grids["radio_free_free_per_q"])
    parts_young = model.sed_components({**draws, "av": np.zeros(N_DRAWS), "age_gyr": np.full(N_DRAWS, 0.05),
                                        "tau_gyr": np.full(N_DRAWS, 10.0)})
    i = np.searchsorted(wave, 3.6e8)
    joined = (parts_young["sed_nebular"] + free_free)[:, i - 3: i + 3]
    assert np.all(joined.max(axis=1) / joined.min(axis=1) < 1.5)
    assert np.all(parts["sed_radio"][:, wave > 1e9] > 0)


def test_band_tables_off_with_new_components_and_photometry_agrees():
    priors = {**COMMON_PRIORS, "shock_fraction": Fixed(0.0)}
    default = SEDModel(Parameters({k: v for k, v in priors.items() if k != "shock_fraction"}), Photometry(FILTERS))
    shocked = SEDModel(Parameters(priors), Photometry(FILTERS), shock=True)
    assert default.uses_band_tables and not shocked.uses_band_tables
    draws = prior_draws(default, REDSHIFT, 10, seed=5)
    flux = default.predict_photometry({k: v[0] for k, v in draws.items()})
    fast = default.build_problem(flux, 0.1 * flux)
    chain = shocked.build_problem(flux, 0.1 * flux)
    z = jax.random.normal(jax.random.key(6), (10, fast.init.shape[0]))
    predicted_fast = jax.jit(jax.vmap(default._likelihoods["predicted"], in_axes=(0, None)))(z, fast.data_args)
    predicted_chain = jax.jit(jax.vmap(shocked._likelihoods["predicted"], in_axes=(0, None)))(z, chain.data_args)
    np.testing.assert_allclose(np.asarray(predicted_chain), np.asarray(predicted_fast), rtol=1e-4)


def test_options_settings_and_errors():
    base = Parameters(redshift=Fixed(1.0))
    model = SEDModel(base, agn={"torus_beta": 2.0}, xray={"binaries": False})
    assert model.agn == {"torus_beta": 2.0}
    assert [c.name for c in model.components][-2:] == ["agn", "xray"]
    with pytest.raises(ParameterError, match="unknown agn settings"):
        SEDModel(base, agn={"torus_colour": 1})
    with pytest.raises(ParameterError, match="radio=True needs dust"):
        SEDModel(base, dust="none", radio=True)
    with pytest.raises(ParameterError, match="shock=True needs nebular"):
        SEDModel(base, nebular=False, shock=True)
    with pytest.raises(ParameterError, match="nothing to emit"):
        SEDModel(base, xray={"binaries": False})
    with pytest.raises(ParameterError, match="agn must be True, False or a table"):
        SEDModel(base, agn="yes")
    defaults = SEDModel(base, agn=True, radio=True, shock=True).default_priors()
    assert defaults["agn_fraction"] == LogUniform(1e-4, 3.0)
    assert defaults["radio_qir"] == Fixed(2.64) and defaults["radio_alpha"] == Fixed(0.8)
    assert defaults["shock_fraction"] == Uniform(0.0, 1.0)


def test_config_dust_aliases_and_component_tables():
    cfg = {"model": {"dust": "kc13", "agn": {"torus_n_temperatures": 4}, "xray": True},
           "data": {"filters": ["sdss_r0"]}, "params": {"redshift": {"fixed": 1.0}}}
    model, _ = model_from_config(cfg)
    assert model.dust == "kriek_conroy" and model.agn == {"torus_n_temperatures": 4} and model.xray == {}
    for alias, name in [("cardelli89", "cardelli"), ("salim18", "salim"), ("cf00", "cf00"), ("smc", "smc")]:
        assert SEDModel(Parameters(redshift=Fixed(1.0)), dust=alias).dust == name
    with pytest.raises(ParameterError, match="aliases: kc13=kriek_conroy"):
        SEDModel(Parameters(redshift=Fixed(1.0)), dust="kc14")
    with pytest.raises(ConfigError, match="unknown \\[model\\] keys"):
        model_from_config({**cfg, "model": {"agnn": True}})


def test_compile_signature_includes_cosmology():
    params = Parameters(redshift=Fixed(1.0))
    a = SEDModel(params, cosmology={"h0": 70.0, "om0": 0.3})
    b = SEDModel(params, cosmology={"h0": 70.0, "om0": 0.3})
    c = SEDModel(params, cosmology={"h0": 67.0, "om0": 0.3})
    assert a.compile_signature() == b.compile_signature() != c.compile_signature()
    assert SEDModel(params, agn=True).compile_signature() != a.compile_signature()
    hash(SEDModel(params, radio=True).compile_signature())


@pytest.mark.slow
@pytest.mark.parametrize("name", [n if n == "all_on" else pytest.param(n, marks=pytest.mark.full) for n in MATRIX])
def test_log_likelihood_gradient_finite_over_200_prior_draws(models, name):
    model = models(name)
    truth = {k: v[0] for k, v in prior_draws(model, REDSHIFT, 1, seed=7).items()}
    flux = model.predict_photometry(truth)
    problem = model.build_problem(flux, 0.1 * flux + 1e-40)
    z = jax.random.normal(jax.random.key(8), (200, problem.init.shape[0]))
    grads = jax.jit(jax.vmap(jax.grad(problem.log_likelihood), in_axes=(0, None)))(z, problem.data_args)
    assert grads.shape == (200, len(problem.names))
    assert np.all(np.isfinite(np.asarray(grads)))
    assert np.all(np.any(np.asarray(grads) != 0, axis=0))  # every free parameter moves the likelihood
