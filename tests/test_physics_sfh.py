"""Parametric SFHs: cumulative masses, bins, rates, ages, gradients, BAGPIPES parity."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import tengri  # noqa: F401  (enables float64)
from tengri.errors import ParameterError
from tengri.params import Prior
from tengri.physics import sfh
from tengri.physics.sfh import (
    SFH_FAMILIES,
    age_bin_edges_yr,
    average_sfr_msun_per_yr,
    cumulative_mass_fraction,
    mass_formed_per_age_bin,
    mass_weighted_age_gyr,
    sfr_msun_per_yr,
)

T_UNIV_YR = 5.0e9
SSP_AGES_YR = 10.0 ** np.arange(6.0, 10.15, 0.1)
EDGES_YR = age_bin_edges_yr(SSP_AGES_YR, oldest_edge_yr=13.5e9)

CASES = {
    "constant": {"age_gyr": 3.0},
    "exponential": {"age_gyr": 3.0, "tau_gyr": 0.7},
    "delayed": {"age_gyr": 4.0, "tau_gyr": 1.5},
    "lognormal": {"tmax_gyr": 2.0, "fwhm_gyr": 1.5},
    "dpl": {"tau_gyr": 3.0, "dpl_alpha": 5.0, "dpl_beta": 0.7},
}
# lookback times where the rate has a kink (start of the SFH), for the integrator
KINKS_YR = {"constant": [3e9], "exponential": [3e9], "delayed": [4e9], "lognormal": [], "dpl": [2e9]}


def _rate(family, params, lookback_yr):
    return float(sfr_msun_per_yr(family, params, lookback_yr, 1.0, T_UNIV_YR))


def _rate_function(family, params):
    """A compiled ``lookback_yr -> fraction of mass per yr`` for scipy's integrators."""
    compiled = jax.jit(lambda t: sfr_msun_per_yr(family, params, t, 1.0, T_UNIV_YR))
    return lambda t: float(compiled(t))


def test_every_family_lists_parameters_with_default_priors():
    assert set(SFH_FAMILIES) == {"constant", "exponential", "delayed", "lognormal", "dpl", "burst"}
    for fam in SFH_FAMILIES.values():
        assert set(fam.default_priors) == set(fam.param_names)
        assert all(isinstance(p, Prior) for p in fam.default_priors.values())


@pytest.mark.parametrize("family", list(CASES))
def test_cumulative_fraction_is_one_now_and_zero_before_the_start(family):
    f = cumulative_mass_fraction(family, CASES[family], jnp.array([0.0, T_UNIV_YR, 2 * T_UNIV_YR]), T_UNIV_YR)
    np.testing.assert_allclose(np.asarray(f), [1.0, 0.0, 0.0], atol=1e-15)


@pytest.mark.parametrize("family", list(CASES))
def test_cumulative_fraction_is_the_integral_of_the_rate(family):
    params = CASES[family]
    rate = _rate_function(family, params)
    lookbacks = [1e7, 3e8, 1.2e9, 2.5e9, 3.5e9]
    expected = [
        integrate.quad(
            rate,
            t0,
            T_UNIV_YR,
            points=[k for k in KINKS_YR[family] if t0 < k < T_UNIV_YR],
            epsabs=0,
            epsrel=1e-11,
            limit=200,
        )[0]
        for t0 in lookbacks
    ]
    got = cumulative_mass_fraction(family, params, jnp.array(lookbacks), T_UNIV_YR)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("family", list(CASES))
def test_mass_weighted_age_is_the_mean_lookback_time_of_formed_mass(family):
    params = CASES[family]
    rate = _rate_function(family, params)
    mean_yr = integrate.quad(
        lambda t: t * rate(t),
        0.0,
        T_UNIV_YR,
        points=KINKS_YR[family] or None,
        epsabs=0,
        epsrel=1e-11,
        limit=200,
    )[0]
    assert float(mass_weighted_age_gyr(family, params, T_UNIV_YR)) == pytest.approx(mean_yr / 1e9, rel=1e-8)


@pytest.mark.parametrize("family", list(CASES) + ["burst"])
def test_bin_fractions_sum_to_one_when_the_bins_cover_the_history(family):
    params = CASES.get(family, {"age_gyr": 0.5})
    fractions = mass_formed_per_age_bin(family, params, EDGES_YR, T_UNIV_YR)
    assert fractions.shape == (SSP_AGES_YR.size,)
    assert float(jnp.sum(fractions)) == pytest.approx(1.0, abs=1e-12)
    assert float(jnp.min(fractions)) >= 0.0


def test_delayed_cumulative_has_the_closed_form():
    # mass formed in the first s of a delayed SFH: τ²[1 − e^{−x}(1 + x)], x = s/τ
    age, tau, lookback = 4.0, 1.5, 1.0
    g = lambda x: 1.0 - math.exp(-x) * (1.0 + x)  # noqa: E731
    expected = g((age - lookback) / tau) / g(age / tau)
    got = cumulative_mass_fraction("delayed", {"age_gyr": age, "tau_gyr": tau}, lookback * 1e9, T_UNIV_YR)
    assert float(got) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_regularised_lower_gamma_and_its_derivative_match_scipy_on_both_branches(k):
    # the series (x < 1) and the finite sum (x >= 1) share one exp(-x); dP/dx = x^(k-1) e^-x / (k-1)!
    from scipy.special import gammainc

    x = np.concatenate([np.geomspace(1e-6, 0.999, 40), [1.0], np.geomspace(1.001, 700.0, 60)])
    got = np.asarray(jax.jit(lambda v: sfh._regularised_lower_gamma(k, v))(x))
    slope = np.asarray(jax.jit(jax.vmap(jax.grad(lambda v: sfh._regularised_lower_gamma(k, v))))(x))
    np.testing.assert_allclose(got, gammainc(k, x), rtol=3e-14, atol=0)
    np.testing.assert_allclose(slope, x ** (k - 1) * np.exp(-x) / math.factorial(k - 1), rtol=1e-13, atol=0)


def test_delayed_cumulative_stays_accurate_when_tau_is_much_longer_than_age():
    # τ ≫ age: SFR ∝ s (time since the start), so F(lookback) = ((age − lookback)/age)²
    params = {"age_gyr": 1.0, "tau_gyr": 1e6}
    got = cumulative_mass_fraction("delayed", params, 0.25e9, T_UNIV_YR)
    assert float(got) == pytest.approx(0.75**2, rel=1e-6)


def test_constant_sfh_average_sfr_is_mass_over_age():
    sfr = average_sfr_msun_per_yr("constant", {"age_gyr": 2.0}, 1e8, 1e10, T_UNIV_YR)
    assert float(sfr) == pytest.approx(1e10 / 2e9, rel=1e-12)


def test_average_sfr_over_a_short_window_tends_to_the_instantaneous_sfr():
    params = CASES["delayed"]
    instantaneous = sfr_msun_per_yr("delayed", params, 0.0, 1e10, T_UNIV_YR)
    averaged = average_sfr_msun_per_yr("delayed", params, 1e5, 1e10, T_UNIV_YR)
    assert float(averaged) == pytest.approx(float(instantaneous), rel=1e-4)


def test_lognormal_peaks_at_tmax_and_has_the_requested_fwhm():
    tmax, fwhm = 2.0, 1.5
    params = {"tmax_gyr": tmax, "fwhm_gyr": fwhm}
    peak = _rate("lognormal", params, T_UNIV_YR - tmax * 1e9)
    assert _rate("lognormal", params, T_UNIV_YR - (tmax - 0.01) * 1e9) < peak
    assert _rate("lognormal", params, T_UNIV_YR - (tmax + 0.01) * 1e9) < peak
    tau, _ = sfh.lognormal_shape(tmax, fwhm)
    t_lo, t_hi = tmax * math.exp(-float(tau) * math.sqrt(2 * math.log(2))), tmax * math.exp(
        float(tau) * math.sqrt(2 * math.log(2))
    )
    assert t_hi - t_lo == pytest.approx(fwhm, rel=1e-12)
    for t in (t_lo, t_hi):
        assert _rate("lognormal", params, T_UNIV_YR - t * 1e9) == pytest.approx(peak / 2, rel=1e-10)


@pytest.mark.parametrize(
    "alpha, beta, log_x",
    [(0.01, 0.01, 1.0), (0.5, 1000.0, 3.0), (1000.0, 0.1, 0.0), (1.0, 2.0, -2.0), (300.0, 50.0, 0.5), (-0.99, 1.01, 2.0)],
)
def test_dpl_quadrature_matches_adaptive_integration(alpha, beta, log_x):
    # ∫_0^X dx / (x^α + x^−β) in ln x, split around the turnover
    s = alpha + beta

    def log_integrand(u):
        return (1 + beta) * u - np.logaddexp(0.0, s * u)

    peak = max(log_integrand(min(log_x, 0.0)), log_integrand(log_x))
    lo = min(log_x, 0.0) - 60 / (1 + beta) - 60 / s
    cuts = sorted({lo, log_x, *[c for c in (-10 / s, -1 / s, 0.0, 1 / s, 10 / s) if lo < c < log_x]})
    total = sum(
        integrate.quad(lambda u: np.exp(log_integrand(u) - peak), a, b, epsabs=0, epsrel=1e-13, limit=500)[0]
        for a, b in zip(cuts[:-1], cuts[1:])
    )
    ours = sfh._dpl_log_integral(jnp.asarray(log_x), alpha, beta)
    assert float(ours) == pytest.approx(math.log(total) + peak, abs=1e-6)


def test_burst_on_an_ssp_age_puts_all_mass_in_that_bin():
    fractions = mass_formed_per_age_bin("burst", {"age_gyr": SSP_AGES_YR[20] / 1e9}, EDGES_YR, T_UNIV_YR)
    assert float(fractions[20]) == pytest.approx(1.0, abs=1e-12)


def test_burst_between_ssp_ages_is_split_linearly_in_log_age():
    log_age = 0.3 * np.log10(SSP_AGES_YR[20]) + 0.7 * np.log10(SSP_AGES_YR[21])
    fractions = mass_formed_per_age_bin("burst", {"age_gyr": 10**log_age / 1e9}, EDGES_YR, T_UNIV_YR)
    np.testing.assert_allclose(np.asarray(fractions[20:22]), [0.3, 0.7], atol=1e-12)
    grad = jax.grad(lambda a: mass_formed_per_age_bin("burst", {"age_gyr": a}, EDGES_YR, T_UNIV_YR)[21])(
        10**log_age / 1e9
    )
    assert float(grad) > 0


@pytest.mark.parametrize("family", list(CASES))
def test_bin_masses_have_gradients_that_match_finite_differences(family):
    params = CASES[family]
    weights = jnp.asarray(np.linspace(1.0, 2.0, SSP_AGES_YR.size))

    @jax.jit
    def weighted(p):
        return jnp.sum(weights * mass_formed_per_age_bin(family, p, EDGES_YR, T_UNIV_YR))

    grad = jax.jit(jax.grad(weighted))(params)
    for name, value in params.items():
        h = 1e-6 * max(abs(value), 1.0)
        up, down = dict(params, **{name: value + h}), dict(params, **{name: value - h})
        fd = (weighted(up) - weighted(down)) / (2 * h)
        assert np.isfinite(float(grad[name]))
        assert float(grad[name]) == pytest.approx(float(fd), rel=1e-5, abs=1e-9)


def test_bin_masses_jit_and_vmap_over_parameters():
    taus = jnp.array([0.3, 1.0, 3.0])
    fn = jax.jit(
        jax.vmap(lambda tau: mass_formed_per_age_bin("delayed", {"age_gyr": 4.0, "tau_gyr": tau}, EDGES_YR, T_UNIV_YR))
    )
    out = fn(taus)
    assert out.shape == (3, SSP_AGES_YR.size)
    np.testing.assert_allclose(
        out[1], mass_formed_per_age_bin("delayed", {"age_gyr": 4.0, "tau_gyr": 1.0}, EDGES_YR, T_UNIV_YR), rtol=1e-9
    )


def test_unknown_family_is_a_parameter_error_listing_valid_names():
    with pytest.raises(ParameterError, match="valid families: constant, exponential, delayed"):
        mass_formed_per_age_bin("sandage", {}, EDGES_YR, T_UNIV_YR)


def test_missing_or_unknown_parameters_are_named():
    with pytest.raises(ParameterError, match="missing tau_gyr"):
        mass_formed_per_age_bin("delayed", {"age_gyr": 1.0}, EDGES_YR, T_UNIV_YR)
    with pytest.raises(ParameterError, match="unknown tau"):
        mass_formed_per_age_bin("delayed", {"age_gyr": 1.0, "tau_gyr": 1.0, "tau": 1.0}, EDGES_YR, T_UNIV_YR)


def test_age_bin_edges_are_log_midpoints_from_zero():
    edges = age_bin_edges_yr([1e6, 1e7, 1e8])
    np.testing.assert_allclose(edges, [0.0, 10**6.5, 10**7.5, 10**8.5], rtol=1e-12)


def test_age_bin_edges_give_a_leading_zero_age_the_linear_midpoint():
    edges = age_bin_edges_yr([0.0, 1e5, 1e6], oldest_edge_yr=2e6)
    np.testing.assert_allclose(edges, [0.0, 5e4, 10**5.5, 2e6], rtol=1e-12)


def test_age_bin_edges_can_use_linear_midpoints():
    np.testing.assert_allclose(age_bin_edges_yr([1.0, 3.0, 7.0], midpoints="linear"), [0.0, 2.0, 5.0, 9.0])


@pytest.mark.parametrize(
    "ages, kwargs, message",
    [
        ([1e6], {}, "at least two ages"),
        ([1e7, 1e6], {}, "strictly increasing"),
        ([1e6, 1e7], {"oldest_edge_yr": 5e6}, "must exceed the oldest age"),
        ([1e6, 1e7], {"midpoints": "geometric"}, "'log' or 'linear'"),
    ],
)
def test_age_bin_edges_reject_bad_input(ages, kwargs, message):
    with pytest.raises(ParameterError, match=message):
        age_bin_edges_yr(ages, **kwargs)


# --- BAGPIPES parity ----------------------------------------------------------------

BAGPIPES_CASES = {
    "constant": ({"age_gyr": 3.0}, "constant", {"age_max": 3.0, "age_min": 0.0}),
    "exponential": ({"age_gyr": 3.0, "tau_gyr": 0.7}, "exponential", {"age": 3.0, "tau": 0.7}),
    "delayed": ({"age_gyr": 4.0, "tau_gyr": 1.5}, "delayed", {"age": 4.0, "tau": 1.5}),
    "lognormal": ({"tmax_gyr": 2.0, "fwhm_gyr": 1.5}, "lognormal", {"tmax": 2.0, "fwhm": 1.5}),
    "dpl": ({"tau_gyr": 3.0, "dpl_alpha": 5.0, "dpl_beta": 0.7}, "dblplaw", {"tau": 3.0, "alpha": 5.0, "beta": 0.7}),
}


@pytest.fixture(scope="module")
def bagpipes():
    import bagpipes  # a dependency of tengri; slow to import, so only here

    return bagpipes


@pytest.mark.bagpipes
def test_age_bin_edges_reproduce_bagpipes_ssp_bins(bagpipes):
    config = bagpipes.config
    ours = age_bin_edges_yr(config.age_sampling, oldest_edge_yr=config.age_bins[-1])
    np.testing.assert_allclose(ours, config.age_bins, rtol=1e-12)


@pytest.mark.bagpipes
@pytest.mark.parametrize("family", list(BAGPIPES_CASES))
def test_bin_masses_converge_to_bagpipes_finely_sampled_sfh(bagpipes, family):
    # BAGPIPES integrates the SFH on a 0.0025-dex grid of ages; at 0.0002 dex its bin
    # masses approach the exact ones computed here.
    ours_params, bp_name, bp_params = BAGPIPES_CASES[family]
    config = bagpipes.config
    history = bagpipes.models.star_formation_history(
        {"redshift": 1.0, bp_name: dict(bp_params, massformed=0.0, metallicity=1.0)}, log_sampling=0.0002
    )
    weights = history.component_weights[bp_name]
    fractions = np.asarray(
        mass_formed_per_age_bin(family, ours_params, config.age_bins, history.age_of_universe)
    )
    assert np.max(np.abs(fractions - weights / weights.sum())) < 1e-3
    assert float(mass_weighted_age_gyr(family, ours_params, history.age_of_universe)) == pytest.approx(
        history.mass_weighted_age, rel=1e-3
    )
    assert float(average_sfr_msun_per_yr(family, ours_params, 1e8, 1.0, history.age_of_universe)) == pytest.approx(
        history.sfr, rel=2e-3
    )


@pytest.mark.parametrize(
    "family, params, expected",
    [
        # 1 − F = e^{−x}(1 + x) − e^{−X}(1 + X) for the delayed SFH, x = (age − t)/τ, X = age/τ
        ("delayed", {"age_gyr": 5.0, "tau_gyr": 0.1}, math.exp(-49.0) * 50.0 - math.exp(-50.0) * 51.0),
        ("exponential", {"age_gyr": 5.0, "tau_gyr": 0.1}, math.exp(-49.0) * -math.expm1(-1.0)),
    ],
)
def test_recent_sfr_of_an_old_short_tau_history_is_tiny_but_not_zero(family, params, expected):
    # 1 − F(100 Myr) ~ 1e-21 cancelled to exactly 0 when computed as 1 − F in float64
    sfr = sfh.average_sfr_msun_per_yr(family, params, 1e8, 1e10, 6e9)
    assert float(sfr) == pytest.approx(1e10 * expected / 1e8, rel=1e-10)
    young = sfh.mass_formed_per_age_bin(family, params, np.array([0.0, 1e7, 1e8]), 6e9)
    assert np.all(np.asarray(young) > 0)
    assert float(young.sum()) == pytest.approx(expected, rel=1e-10)


def test_recent_fraction_of_an_old_lognormal_is_tiny_but_not_zero():
    recent = sfh.recent_mass_fraction("lognormal", {"tmax_gyr": 1.0, "fwhm_gyr": 0.3}, 1e8, 6e9)
    assert 0.0 < float(recent) < 1e-30
