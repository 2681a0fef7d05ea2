"""The continuity SFH (Leja et al. 2019) and its Student-t prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import tengri  # noqa: F401  (float64)
from tengri.errors import ParameterError
from tengri.params import StudentT, prior_from_dict
from tengri.params.priors import latent_to_physical_1d, log_prob_1d, physical_to_latent_1d
from tengri.physics import sfh_continuity as sc

from conftest import DEMO_FILTERS

AGE_U = 5.9e9
SSP_EDGES = np.concatenate([[0.0], np.logspace(5, 10.3, 150)])


def test_bins_are_30_and_100_myr_then_log_spaced_to_the_age_of_the_universe():
    edges = np.asarray(sc.bin_edges_yr(7, AGE_U))
    assert edges.shape == (8,)
    np.testing.assert_allclose(edges[:3], [0.0, 3e7, 1e8])
    assert edges[-1] == pytest.approx(AGE_U, rel=1e-12)
    np.testing.assert_allclose(np.diff(np.log(edges[2:])), np.log(AGE_U / 1e8) / 5, rtol=1e-12)
    assert sc.ratio_names(7) == tuple(f"log_sfr_ratio_{i}" for i in range(1, 7))
    with pytest.raises(ParameterError, match="n_bins"):
        sc.bin_edges_yr(2, AGE_U)


def test_sfr_ratios_reproduce_and_the_masses_sum_to_the_formed_mass():
    ratios = jnp.array([0.3, -0.5, 1.2, 0.0, -2.0, 0.7])
    edges = sc.bin_edges_yr(7, AGE_U)
    sfr = sc.sfr_per_bin(ratios, edges, 3e10)
    np.testing.assert_allclose(np.log10(sfr[:-1] / sfr[1:]), ratios, atol=1e-12)
    assert float(jnp.sum(sfr * jnp.diff(edges))) == pytest.approx(3e10, rel=1e-12)
    mass = np.asarray(sc.mass_per_age_bin(sfr, edges, SSP_EDGES))
    assert mass.sum() == pytest.approx(3e10, rel=1e-12) and mass.min() >= 0
    # exact: each SSP bin holds Σ SFR_i × overlap with bin i
    overlap = np.clip(np.minimum(SSP_EDGES[1:, None], edges[None, 1:]) - np.maximum(SSP_EDGES[:-1, None],
                                                                                    edges[None, :-1]), 0, None)
    np.testing.assert_allclose(mass, overlap @ np.asarray(sfr), rtol=1e-10, atol=1e-6)
    assert float(sc.average_sfr_msun_per_yr(1e7, sfr, edges)) == pytest.approx(float(sfr[0]), rel=1e-12)
    expected_100 = (float(sfr[0]) * 3e7 + float(sfr[1]) * 7e7) / 1e8
    assert float(sc.average_sfr_msun_per_yr(1e8, sfr, edges)) == pytest.approx(expected_100, rel=1e-12)


def test_mass_older_than_the_ssp_grid_goes_to_the_oldest_bin():
    edges = sc.bin_edges_yr(5, 13.0e9)
    sfr = sc.sfr_per_bin(jnp.zeros(4), edges, 1e10)
    mass = sc.mass_per_age_bin(sfr, edges, np.array([0.0, 1e9, 1e10]))
    assert float(mass.sum()) == pytest.approx(1e10, rel=1e-12)


def test_student_t_latent_map_round_trips_and_matches_scipy():
    prior = StudentT(0.1, 0.3, 2)
    h = jnp.asarray(prior.hyper())
    z = jnp.linspace(-7.5, 7.5, 61)
    x = latent_to_physical_1d("studentt", z, h)
    # scipy's quantile loses the upper tail to 1 − u: use the symmetric form there
    ref = 0.1 + 0.3 * np.sign(z) * -stats.t.ppf(stats.norm.cdf(-np.abs(np.asarray(z))), 2)
    np.testing.assert_allclose(x, ref, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(physical_to_latent_1d("studentt", x, h), z, atol=1e-12)
    np.testing.assert_allclose(log_prob_1d("studentt", x, h), stats.t.logpdf(np.asarray(x), 2, 0.1, 0.3),
                               rtol=1e-12)
    assert prior_from_dict("r", {"prior": "student_t", "mu": 0.0, "scale": 0.3}) == StudentT(0.0, 0.3, 2.0)
    with pytest.raises(ParameterError, match="nu=2"):
        StudentT(0.0, 0.3, 3.0)
    with pytest.raises(ParameterError, match="scale"):
        StudentT(0.0, -1.0)


# --- the model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def continuity_model():
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = Parameters(redshift=Fixed(1.0), metallicity=LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0),
                        log_u=Fixed(-2.5))
    return SEDModel(params, Photometry(DEMO_FILTERS), sfh="continuity", dust="calzetti", nebular=True)


def test_model_takes_ratios_with_the_leja_prior(continuity_model):
    priors = continuity_model.parameters.priors
    assert [n for n in continuity_model.parameters.free_names if n.startswith("log_sfr_ratio")] == list(
        sc.ratio_names(7))
    assert priors["log_sfr_ratio_1"] == StudentT(0.0, 0.3, 2.0)
    assert continuity_model.uses_band_tables


def test_gradient_is_finite_and_band_tables_match_the_chain_at_prior_draws(continuity_model):
    model = continuity_model
    draws = model.parameters.sample(jax.random.PRNGKey(5), 200, {"age_of_universe": 5.9})
    chain = model.predict_photometry({k: v[:20] for k, v in draws.items()})
    prob = model.build_problem(chain[0], 0.05 * chain[0])
    table = prob.data_args["table"]
    z = jax.vmap(lambda d: model.parameters.to_latent(d, table))(draws)
    grads = jax.jit(jax.vmap(jax.grad(prob.log_likelihood), in_axes=(0, None)))(z, prob.data_args)
    assert np.all(np.isfinite(np.asarray(grads)))
    assert np.all(np.any(np.asarray(grads) != 0, axis=0))
    fast = jax.jit(jax.vmap(model._likelihoods["predicted"], in_axes=(0, None)))(z[:20], prob.data_args)
    np.testing.assert_allclose(fast, chain, rtol=1e-6)


def test_predict_sfh_is_piecewise_constant_and_forms_the_mass(continuity_model):
    values = {"redshift": 1.0, "stellar_mass": 10.0, "metallicity": 1.0, "av": 0.2, "log_u": -2.5,
              **{n: 0.2 for n in sc.ratio_names(7)}}
    lookback, sfr = continuity_model.predict_sfh(values, lookback_gyr=np.linspace(0, 5.8, 5801))
    assert np.trapezoid(sfr, lookback * 1e9) == pytest.approx(1e10, rel=0.01)
    # 0–30 Myr against 30–100 Myr: the first ratio
    assert sfr[0] / sfr[np.searchsorted(lookback, 0.05)] == pytest.approx(10**0.2, rel=1e-6)
