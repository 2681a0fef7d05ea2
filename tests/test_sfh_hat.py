"""The "hat" SFH quadrature: SSP light linear in formation age, the SFH integrated exactly against it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DEMO_FILTERS

import tengri  # noqa: F401  (float64)
from tengri.data.ssp import bagpipes_age_grid, load_ssp_grid
from tengri.errors import ConfigError, ParameterError
from tengri.physics import sfh, sfh_hat

AGE_OF_UNIVERSE_YR = 5.8e9


@pytest.fixture(scope="module")
def raw_ages_yr():
    return np.asarray(load_ssp_grid().age_yr, float)  # BC03: 221 ages, the first 0


@pytest.fixture(scope="module")
def bagpipes_ages_yr():
    return np.asarray(bagpipes_age_grid()[0], float)


def brute_force_weights(family, params, ages_yr, n_sub=8, n_gauss=50):
    """∫ ψ φ_j dt by composite Gauss–Legendre on each interval between SSP ages (~1e5 points of ψ)."""
    fam = sfh.SFH_FAMILIES[family]
    p = {k: jnp.asarray(v, float) for k, v in params.items()}
    nodes = np.asarray(ages_yr) / 1e9
    # the lognormal starts at the Big Bang
    start = float(params["age_gyr"]) if "age_gyr" in params else AGE_OF_UNIVERSE_YR / 1e9
    x, w = np.polynomial.legendre.leggauss(n_gauss)
    edges = np.concatenate([[0.0], nodes, [max(start, nodes[-1]) + 1.0]])
    out = np.zeros(nodes.size)
    for i in range(edges.size - 1):
        lo, hi = edges[i], min(edges[i + 1], start)
        if hi <= lo:
            continue
        sub = np.linspace(lo, hi, n_sub + 1)
        half = 0.5 * (sub[1:] - sub[:-1])[:, None]
        t = ((0.5 * (sub[1:] + sub[:-1]))[:, None] + half * x).ravel()
        mass = np.asarray(fam.rate_fn(jnp.asarray(t), p, AGE_OF_UNIVERSE_YR / 1e9)) * (half * w).ravel()
        if i == 0:
            out[0] += mass.sum()
        elif i == edges.size - 2:
            out[-1] += mass.sum()
        else:
            position = (t - edges[i]) / (edges[i + 1] - edges[i])
            out[i - 1] += np.sum(mass * (1.0 - position))
            out[i] += np.sum(mass * position)
    return out


CASES = [
    ("constant", {"age_gyr": 0.05}),
    ("constant", {"age_gyr": 3.0}),
    ("exponential", {"age_gyr": 2.0, "tau_gyr": 0.3}),
    ("exponential", {"age_gyr": 5.0, "tau_gyr": 0.01}),
    ("exponential", {"age_gyr": 1e-3, "tau_gyr": 5.0}),
    ("delayed", {"age_gyr": 2.0, "tau_gyr": 1.0}),
    ("delayed", {"age_gyr": 0.5, "tau_gyr": 0.05}),
    ("lognormal", {"tmax_gyr": 2.0, "fwhm_gyr": 1.0}),
    ("lognormal", {"tmax_gyr": 5.0, "fwhm_gyr": 0.1}),
    ("lognormal", {"tmax_gyr": 5.7, "fwhm_gyr": 0.1}),
    ("lognormal", {"tmax_gyr": 0.3, "fwhm_gyr": 15.0}),
    ("lognormal", {"tmax_gyr": 0.1, "fwhm_gyr": 0.1}),
]


@pytest.mark.parametrize("family,params", CASES)
def test_weights_match_brute_force_integral_of_the_interpolant(family, params, raw_ages_yr, bagpipes_ages_yr):
    n_sub = 64 if family == "lognormal" else 8  # ψ ~ 1/t near the Big Bang needs finer pieces
    for ages in (raw_ages_yr, bagpipes_ages_yr):
        weights = np.asarray(sfh_hat.mass_formed_per_ssp_age(family, params, ages, AGE_OF_UNIVERSE_YR))
        reference = brute_force_weights(family, params, ages, n_sub=n_sub)
        np.testing.assert_allclose(weights, reference, rtol=0.0, atol=1e-10)


@pytest.mark.parametrize("family,params", CASES + [("burst", {"age_gyr": 0.3})])
def test_weights_are_non_negative_and_sum_to_one(family, params, raw_ages_yr):
    weights = np.asarray(sfh_hat.mass_formed_per_ssp_age(family, params, raw_ages_yr, AGE_OF_UNIVERSE_YR))
    assert np.all(weights >= 0.0)
    assert weights.sum() == pytest.approx(1.0, abs=1e-13)


def test_burst_is_split_linearly_in_age(raw_ages_yr):
    a, b = raw_ages_yr[60], raw_ages_yr[61]
    at_third = (a + (b - a) / 3.0) / 1e9
    weights = np.asarray(sfh_hat.mass_formed_per_ssp_age("burst", {"age_gyr": at_third}, raw_ages_yr, 5e9))
    np.testing.assert_allclose(weights[60:62], [2.0 / 3.0, 1.0 / 3.0], rtol=1e-12)
    on_node = np.asarray(sfh_hat.mass_formed_per_ssp_age("burst", {"age_gyr": a / 1e9}, raw_ages_yr, 5e9))
    assert on_node[60] == pytest.approx(1.0, abs=1e-12)


def _projected_age(family, age_gyr, tau_gyr, ages_yr):
    """A smooth summary of the weights (their mean log age): a stand-in for the photometry."""
    params = {"age_gyr": age_gyr} | ({} if family == "constant" else {"tau_gyr": tau_gyr})
    weights = sfh_hat.mass_formed_per_ssp_age(family, params, ages_yr, AGE_OF_UNIVERSE_YR)
    return jnp.sum(weights * jnp.log10(jnp.asarray(ages_yr) + 1e5))


EDGE_CASES = [  # (age_gyr, tau_gyr) as multiples of raw SSP ages where given by index
    ("on an SSP age", 100, 0.1),
    ("below the second SSP age", 0.5, 0.3),
    ("short tau, oldest age", 13.0, 0.01),
    ("short tau on an SSP age", 150, 0.01),
]


@pytest.mark.parametrize("family", ["exponential", "delayed", "constant"])
@pytest.mark.parametrize("label,age,tau", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_gradients_are_finite_and_match_finite_differences(family, label, age, tau, raw_ages_yr):
    if isinstance(age, int):
        age_gyr = raw_ages_yr[age] / 1e9
    elif age < 1.0:
        age_gyr = age * raw_ages_yr[1] / 1e9
    else:
        age_gyr = age
    grad = jax.grad(_projected_age, argnums=(1, 2))(family, age_gyr, tau, raw_ages_yr)
    assert all(np.isfinite(float(g)) for g in grad)
    h = 1e-6 * age_gyr
    numeric = (_projected_age(family, age_gyr + h, tau, raw_ages_yr)
               - _projected_age(family, age_gyr - h, tau, raw_ages_yr)) / (2 * h)
    assert float(grad[0]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-9)


def test_exponential_weights_have_no_kink_at_an_ssp_age_where_the_bins_do(raw_ages_yr):
    """d(weights)/d(age) from just below and just above an SSP age: equal for hat, not for bins."""
    node_gyr = raw_ages_yr[120] / 1e9
    edges = sfh.age_bin_edges_yr(raw_ages_yr, midpoints="linear")
    edge_gyr = edges[121] / 1e9  # a bins edge, where the bins' kink is

    def slope(fn, at, side):
        return jax.jacfwd(fn)(at * (1.0 + side * 1e-9))

    def hat(age):
        return sfh_hat.mass_formed_per_ssp_age("exponential", {"age_gyr": age, "tau_gyr": 0.05}, raw_ages_yr, 5e9)

    def bins(age):
        return sfh.mass_formed_per_age_bin("exponential", {"age_gyr": age, "tau_gyr": 0.05}, edges, 5e9)

    hat_jump = np.abs(slope(hat, node_gyr, +1) - slope(hat, node_gyr, -1)).max()
    bins_jump = np.abs(slope(bins, edge_gyr, +1) - slope(bins, edge_gyr, -1)).max()
    scale = np.abs(slope(hat, node_gyr, +1)).max()
    assert hat_jump < 1e-4 * scale
    assert bins_jump > 0.1 * scale


def test_families_without_the_hat_quadrature_are_refused(raw_ages_yr):
    params = {n: 1.0 for n in sfh.SFH_FAMILIES["dpl"].param_names}
    with pytest.raises(ParameterError, match="sfh_quadrature"):
        sfh_hat.mass_formed_per_ssp_age("dpl", params, raw_ages_yr, 5e9)


LOGNORMAL_EDGE_CASES = [  # (tmax_gyr, fwhm_gyr)
    (5.79, 0.1),  # peak at the epoch of observation, narrow
    (0.05, 0.1),  # peak just after the Big Bang
    (2.0, 1.0),
    (0.3, 15.0),  # broad
]


@pytest.mark.parametrize("tmax,fwhm", LOGNORMAL_EDGE_CASES)
def test_lognormal_gradients_are_finite_and_match_finite_differences(tmax, fwhm, raw_ages_yr):
    log_age = jnp.log10(jnp.asarray(raw_ages_yr) + 1e5)

    def summary(tmax_gyr, fwhm_gyr):
        weights = sfh_hat.mass_formed_per_ssp_age("lognormal", {"tmax_gyr": tmax_gyr, "fwhm_gyr": fwhm_gyr},
                                                  raw_ages_yr, AGE_OF_UNIVERSE_YR)
        return jnp.sum(weights * log_age)

    grad = jax.grad(summary, argnums=(0, 1))(tmax, fwhm)
    assert all(np.isfinite(float(g)) for g in grad)
    for i, (value, h) in enumerate([(tmax, 1e-6 * tmax), (fwhm, 1e-6 * fwhm)]):
        step = [0.0, 0.0]
        step[i] = h
        numeric = (summary(tmax + step[0], fwhm + step[1]) - summary(tmax - step[0], fwhm - step[1])) / (2 * h)
        assert float(grad[i]) == pytest.approx(float(numeric), rel=1e-5, abs=1e-8)


def _model(**kwargs):
    from tengri import Fixed, Parameters, Photometry, SEDModel

    return SEDModel(Parameters(redshift=Fixed(1.0)), Photometry(DEMO_FILTERS), nebular=False, **kwargs)


@pytest.mark.parametrize("sfh_setting", ["dpl", "continuity", "stochastic"])
def test_model_refuses_hat_for_unsupported_histories(sfh_setting):
    with pytest.raises(ParameterError, match="sfh_quadrature"):
        _model(sfh=sfh_setting, sfh_quadrature="hat")


def test_model_refuses_unknown_quadrature():
    with pytest.raises(ParameterError, match="sfh_quadrature"):
        _model(sfh="delayed", sfh_quadrature="trapezoid")


def test_quadrature_is_part_of_the_compile_signature_and_changes_the_photometry():
    bins, hat = _model(sfh="exponential"), _model(sfh="exponential", sfh_quadrature="hat")
    assert bins.compile_signature() != hat.compile_signature()
    theta = {"redshift": 1.0, "stellar_mass": 10.0, "age_gyr": 1.0, "tau_gyr": 0.1, "metallicity": 1.0, "av": 0.3,
             "dust_eta": 1.0}
    ratio = np.asarray(hat.predict_photometry(theta)) / np.asarray(bins.predict_photometry(theta))
    assert np.all(np.abs(ratio - 1.0) < 0.1)
    assert np.any(np.abs(ratio - 1.0) > 1e-6)


def test_config_key_selects_the_quadrature_and_rejects_bad_values():
    from tengri.model.config import model_from_config

    config = {"model": {"sfh": "delayed", "nebular": False, "sfh_quadrature": "hat"},
              "data": {"filters": DEMO_FILTERS[:3]}, "params": {"redshift": {"fixed": 1.0}}}
    model, _ = model_from_config(config)
    assert model.sfh_quadrature == "hat"
    config["model"]["sfh_quadrature"] = "simpson"
    with pytest.raises((ParameterError, ConfigError), match="sfh_quadrature"):
        model_from_config(config)


def test_unit_decay_moments_match_scipy_on_both_sides_of_the_series_threshold():
    from scipy import special

    r = np.concatenate([[0.0, 1e-12, 1e-4], np.geomspace(1e-3, 2e3, 300), [0.25, np.nextafter(0.25, 0.0)]])
    moments = sfh_hat._unit_decay_moments(2, jnp.asarray(r))
    positive = r > 0
    for n, k_n in enumerate(moments):
        expected = np.full(r.shape, 1.0 / (n + 1))
        rp = r[positive]
        expected[positive] = special.gamma(n + 1) * special.gammainc(n + 1, rp) / rp ** (n + 1)
        np.testing.assert_allclose(np.asarray(k_n), expected, rtol=1e-12)
    mean = np.asarray(sfh_hat._truncated_exponential_mean(jnp.asarray(r)))
    np.testing.assert_allclose(mean, np.asarray(moments[1]) / np.asarray(moments[0]), rtol=1e-12)


@pytest.mark.slow
def test_fitting_path_band_tables_equal_the_chain_with_hat():
    """The likelihood's band tables take the SSP weights from the same SFH component."""
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = Parameters(redshift=Fixed(1.0), stellar_mass=Uniform(8.0, 12.0), age_gyr=Uniform(0.1, "age_of_universe"),
                        tau_gyr=LogUniform(0.01, 10.0), metallicity=LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0),
                        log_u=Fixed(-2.5))
    model = SEDModel(params, Photometry(DEMO_FILTERS), sfh="exponential", nebular=True, sfh_quadrature="hat")
    assert model.uses_band_tables
    truth = {"redshift": 1.0, "stellar_mass": 10.0, "age_gyr": 2.0, "tau_gyr": 0.05, "metallicity": 0.5,
             "dust_eta": 1.0, "log_u": -2.5, "av": 0.5}
    flux = np.asarray(model.predict_photometry(truth))
    problem = model.build_problem(flux * 1.05, flux * 0.05)
    z = jax.random.normal(jax.random.key(2), (8, problem.init.size))
    fast = jax.vmap(model._likelihoods["predicted"], (0, None))(z, problem.data_args)
    chain = jax.vmap(model._chain_likelihoods["predicted"], (0, None))(z, problem.data_args)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(chain), rtol=1e-4)
    grad = jax.vmap(jax.grad(model._likelihoods["log_likelihood"]), (0, None))(z, problem.data_args)
    assert bool(jnp.all(jnp.isfinite(grad)))
