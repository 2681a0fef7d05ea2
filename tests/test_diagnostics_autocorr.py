"""Autocorrelation function, integrated autocorrelation time and ESS."""

import numpy as np
import pytest
from scipy.signal import lfilter

from tengri.analysis.diagnostics import autocorrelation, autocorrelation_time, effective_sample_size
from tengri.errors import DataError


def ar1_chains(rho, n_chains=4, n=100_000, seed=0):
    """AR(1) x_t = ρ x_{t−1} + ε_t; its integrated autocorrelation time is (1+ρ)/(1−ρ)."""
    noise = np.random.default_rng(seed).standard_normal((n_chains, n))
    return lfilter([1.0], [1.0, -rho], noise, axis=1)


def test_acf_starts_at_one():
    acf = autocorrelation(np.random.default_rng(0).normal(size=500))
    assert acf[0] == pytest.approx(1.0)
    assert acf.shape == (500,)
    assert np.all(np.abs(acf) <= 1.0 + 1e-12)


def test_acf_matches_direct_sum():
    x = ar1_chains(0.7, n_chains=1, n=300)[0]
    centred = x - x.mean()
    direct = np.array([np.sum(centred[: 300 - k] * centred[k:]) for k in range(300)])
    np.testing.assert_allclose(autocorrelation(x), direct / direct[0], atol=1e-12)


def test_acf_of_ar1_decays_as_rho_to_the_lag():
    acf = autocorrelation(ar1_chains(0.5))
    np.testing.assert_allclose(acf[:5], 0.5 ** np.arange(5), atol=0.01)


def test_constant_chain_has_all_zero_acf():
    np.testing.assert_array_equal(autocorrelation(np.full(50, 0.1)), np.zeros(50))


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_tau_of_ar1_within_ten_percent(rho):
    tau = autocorrelation_time(ar1_chains(rho))
    assert tau["tau_max"] == pytest.approx((1 + rho) / (1 - rho), rel=0.10)
    assert tau["tau_max"] == max(tau["tau_standard"], tau["tau_absolute"])


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ess_of_ar1_is_n_over_tau(rho):
    chains = ar1_chains(rho)
    assert effective_sample_size(chains) == pytest.approx(chains.size * (1 - rho) / (1 + rho), rel=0.10)


def test_ess_of_independent_draws_is_close_to_n():
    x = np.random.default_rng(3).normal(size=20_000)
    assert effective_sample_size(x) == pytest.approx(20_000, rel=0.1)


def test_tau_absolute_sees_drifting_variance():
    # Uncorrelated signs, slowly changing spread: the standard ACF sees white noise.
    rng = np.random.default_rng(1)
    log_scale = ar1_chains(0.99, n_chains=1, n=50_000, seed=2)[0] * 0.2
    x = np.exp(log_scale) * rng.standard_normal(50_000)
    tau = autocorrelation_time(x)
    assert tau["tau_standard"] < 1.5
    assert tau["tau_absolute"] > 10
    assert tau["tau_max"] == tau["tau_absolute"]


def test_constant_chain_has_undefined_tau_and_ess():
    tau = autocorrelation_time(np.full(100, 2.0))
    assert np.isnan(tau["tau_standard"]) and np.isnan(tau["tau_max"])
    assert np.isnan(effective_sample_size(np.full(100, 2.0)))


def test_several_chains_count_all_draws():
    chains = np.random.default_rng(4).normal(size=(4, 5000))
    assert effective_sample_size(chains) == pytest.approx(20_000, rel=0.1)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 5)), np.zeros(1)])
def test_bad_shapes_are_rejected(bad):
    with pytest.raises(ValueError, match="x"):
        autocorrelation(bad)


def test_non_finite_draws_are_rejected():
    with pytest.raises(DataError, match="NaN"):
        autocorrelation_time(np.array([1.0, np.nan, 2.0]))


def test_unsplit_single_chain_always_looks_long_enough():
    # The biased ACF of a centred series sums to zero, so Sokal's window always exists.
    too_short = ar1_chains(0.99, 1, 300, seed=5)  # true τ = 199
    assert 300 > 5 * autocorrelation_time(too_short)["tau_max"]


def test_split_tau_exposes_a_chain_shorter_than_five_tau():
    too_short = ar1_chains(0.99, 1, 300, seed=5)  # true τ = 199
    assert 300 <= 5 * autocorrelation_time(too_short, split=True)["tau_max"]


def test_split_tau_agrees_with_unsplit_on_long_chains():
    chains = ar1_chains(0.5, n_chains=2, n=50_000, seed=6)
    split = autocorrelation_time(chains, split=True)["tau_max"]
    assert split == pytest.approx(autocorrelation_time(chains)["tau_max"], rel=0.05)
    assert effective_sample_size(chains, split=True) == pytest.approx(chains.size / 3, rel=0.1)


def test_chains_at_different_constants_look_fully_correlated():
    acf = autocorrelation(np.stack([np.zeros(20), np.ones(20)]))
    np.testing.assert_array_equal(acf, np.ones(20))


def test_multichain_acf_sees_disagreeing_chains():
    rng = np.random.default_rng(7)
    agreeing = rng.normal(size=(2, 2000))
    disagreeing = agreeing + np.array([[-2.0], [2.0]])
    assert abs(autocorrelation(agreeing)[100]) < 0.1
    assert autocorrelation(disagreeing)[100] > 0.7
