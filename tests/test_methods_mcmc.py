"""Specification of the blackjax MCMC runners (mcmc_nuts, hmc, dynamic_hmc, ghmc,
ess) on known-answer targets (tests/methods_targets.py).

Monte Carlo checks are scaled by the effective sample size (ArviZ's rank-normalised
ESS), so they test the samplers, not the seeds: the mean must lie within 4 Monte
Carlo standard errors of the analytic posterior mean. Sample sizes are chosen so
that the sampling noise of a variance is a few per cent (sampling is
milliseconds; compilation dominates the run time of this file).
"""

from __future__ import annotations

import arviz as az
import jax
import numpy as np
import pytest
from methods_targets import (
    banana_problem,
    banana_reference_draws,
    count_xla_compilations,
    funnel_problem,
    funnel_reference_draws,
    gaussian_posterior,
    gaussian_problem,
)

from tengri.errors import ParameterError
from tengri.inference import registry
from tengri.inference.methods import mcmc
from tengri.inference.problem import Problem

KEY = jax.random.PRNGKey(11)

# method -> options for the 5-D Gaussian target. GHMC and ESS draws are strongly
# autocorrelated (one leapfrog step a draw; a posterior 10× narrower than the
# prior for ESS), hence the larger n_samples.
GAUSSIAN_RUNS = {
    "mcmc_nuts": {"n_samples": 2000, "n_chains": 2, "use_dense": True},
    "hmc": {"n_samples": 20000},
    "dynamic_hmc": {"n_samples": 8000},
    "ghmc": {"n_samples": 20000, "use_dense": True},
    "ess": {"n_samples": 400000},
}
RUNNERS = {
    "mcmc_nuts": mcmc.run_nuts,
    "hmc": mcmc.run_hmc,
    "dynamic_hmc": mcmc.run_dynamic_hmc,
    "ghmc": mcmc.run_ghmc,
    "ess": mcmc.run_ess,
}
QUANTILE_LEVELS = np.array([0.05, 0.25, 0.5, 0.75, 0.95])


@pytest.fixture(scope="module")
def gaussian():
    problem = gaussian_problem()
    mean, cov = gaussian_posterior(problem)
    return problem, mean, cov


@pytest.fixture(scope="module", params=list(GAUSSIAN_RUNS))
def gaussian_run(request, gaussian):
    method = request.param
    return method, RUNNERS[method](gaussian[0], KEY, **GAUSSIAN_RUNS[method])


def _ess_per_dimension(samples: np.ndarray) -> np.ndarray:
    return np.array([float(az.ess(samples[..., i])) for i in range(samples.shape[-1])])


def _cdf_at_reference_quantiles(draws: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The sampler's CDF at the reference quantiles: equals QUANTILE_LEVELS if exact."""
    reference_quantiles = np.quantile(reference, QUANTILE_LEVELS)
    return np.array([np.mean(draws <= q) for q in reference_quantiles])


# ------------------------------------------------------------------ Gaussian
@pytest.mark.slow
def test_sampler_mean_is_within_four_monte_carlo_errors_of_the_gaussian_mean(gaussian,
                                                                            gaussian_run):
    _, mean, cov = gaussian
    method, result = gaussian_run
    samples = np.asarray(result.samples)
    mcse = np.sqrt(np.diag(cov) / _ess_per_dimension(samples))
    error = samples.reshape(-1, 5).mean(axis=0) - mean
    assert np.all(np.abs(error) < 4 * mcse), (method, error / mcse)


@pytest.mark.slow
def test_sampler_covariance_is_within_ten_percent_of_the_gaussian_covariance(gaussian,
                                                                           gaussian_run):
    _, _, cov = gaussian
    method, result = gaussian_run
    estimate = np.cov(np.asarray(result.samples).reshape(-1, 5).T)
    variance_ratio = np.diag(estimate) / np.diag(cov)
    assert np.all(np.abs(variance_ratio - 1) < 0.1), (method, variance_ratio)
    assert np.linalg.norm(estimate - cov) < 0.1 * np.linalg.norm(cov), method


@pytest.mark.slow
def test_sampler_returns_chains_point_and_diagnostics(gaussian_run):
    method, result = gaussian_run
    options = GAUSSIAN_RUNS[method]
    samples = np.asarray(result.samples)
    assert result.method == method
    assert samples.shape == (options.get("n_chains", 1), options["n_samples"], 5)
    np.testing.assert_allclose(np.asarray(result.point), samples.mean(axis=(0, 1)))
    assert result.diagnostics["n_chains"] == options.get("n_chains", 1)
    if method == "ess":
        assert result.diagnostics["n_slice_evaluations_mean"] >= 1
    else:
        assert 0.5 < result.diagnostics["acceptance_rate"] <= 1
        assert result.diagnostics["divergences"] == 0
        assert result.diagnostics["step_size"] > 0
        assert result.diagnostics["n_integration_steps_mean"] >= 1


def test_hmc_takes_its_fixed_number_of_leapfrog_steps(gaussian):
    result = mcmc.run_hmc(gaussian[0], KEY, **GAUSSIAN_RUNS["hmc"])
    default = registry.method_options("hmc", {})["num_integration_steps"]
    assert result.diagnostics["n_integration_steps_mean"] == default


def test_ghmc_takes_one_leapfrog_step_per_draw(gaussian):
    result = mcmc.run_ghmc(gaussian[0], KEY, **GAUSSIAN_RUNS["ghmc"])
    assert result.diagnostics["n_integration_steps_mean"] == 1


def test_dense_adaptation_returns_a_full_inverse_mass_matrix(gaussian):
    _, _, cov = gaussian
    result = mcmc.run_nuts(gaussian[0], KEY, **GAUSSIAN_RUNS["mcmc_nuts"])
    imm = result.diagnostics["inverse_mass_matrix"]
    assert imm.shape == (2, 5, 5)
    # the adapted inverse mass matrix estimates the posterior covariance
    np.testing.assert_allclose(np.diag(imm[0]) / np.diag(cov), 1.0, atol=0.5)


# ------------------------------------------------------------------ banana and funnel
@pytest.mark.slow
def test_nuts_matches_the_banana_reference_quantiles():
    problem = banana_problem()
    reference = banana_reference_draws(problem, 400_000, seed=1)
    result = mcmc.run_nuts(problem, KEY, n_samples=20000)
    draws = np.asarray(result.samples).reshape(-1, 2)
    for i in range(2):
        cdf = _cdf_at_reference_quantiles(draws[:, i], reference[:, i])
        assert np.all(np.abs(cdf - QUANTILE_LEVELS) < 0.05), (i, cdf)


@pytest.mark.slow
def test_nuts_matches_the_funnel_reference_quantiles_of_v_and_x1():
    # σ_v = 1.5 rather than Neal's 3: with σ_v = 3 the centred funnel's neck
    # (v ≲ −4) is under-sampled by NUTS (Betancourt & Girolami 2013); measured
    # here, its v quantiles were off by 5–9 percentage points. Chains start at
    # problem.init: a funnel's mode lies in the neck (v = −40.5 for σ_v = 3, where
    # a MAP-started chain adapted a step size of 2.5e-7 and never left).
    problem = funnel_problem(n_dim=10, sigma_v=1.5)
    reference = funnel_reference_draws(problem, 400_000, seed=1)
    result = mcmc.run_nuts(problem, KEY, n_samples=20000, start="init")
    draws = np.asarray(result.samples).reshape(-1, 10)
    for i in (0, 1):  # v and x_1
        cdf = _cdf_at_reference_quantiles(draws[:, i], reference[:, i])
        assert np.all(np.abs(cdf - QUANTILE_LEVELS) < 0.05), (i, cdf)


# ------------------------------------------------------------------ contract
def test_second_galaxy_reuses_the_compiled_sampler(gaussian):
    other = gaussian_problem(mean=np.array([-0.3, 0.2, 0.9, -1.0, 0.5]))
    mcmc.run_ess(gaussian[0], KEY, n_samples=20000)
    with count_xla_compilations() as compiles:
        result = mcmc.run_ess(other, KEY, n_samples=20000)
    assert len(compiles) == 0
    other_mean, other_cov = gaussian_posterior(other)
    # the draws follow the second galaxy's data, not the first one's
    mcse = np.sqrt(np.diag(other_cov) / _ess_per_dimension(np.asarray(result.samples)))
    assert np.all(np.abs(np.asarray(result.point) - other_mean) < 4 * mcse)


def test_chains_run_through_one_compiled_engine(gaussian):
    mcmc.run_ess(gaussian[0], KEY, n_samples=20000)
    with count_xla_compilations() as compiles:
        result = mcmc.run_ess(gaussian[0], KEY, n_samples=20000, n_chains=3)
    assert len(compiles) == 0
    samples = np.asarray(result.samples)
    assert samples.shape == (3, 20000, 5)
    assert not np.array_equal(samples[0], samples[1])


def test_sampler_is_reproducible_with_the_same_key(gaussian):
    options = GAUSSIAN_RUNS["dynamic_hmc"]
    a = mcmc.run_dynamic_hmc(gaussian[0], KEY, **options)
    b = mcmc.run_dynamic_hmc(gaussian[0], KEY, **options)
    c = mcmc.run_dynamic_hmc(gaussian[0], jax.random.PRNGKey(12), **options)
    np.testing.assert_array_equal(np.asarray(a.samples), np.asarray(b.samples))
    assert not np.array_equal(np.asarray(a.samples), np.asarray(c.samples))


@pytest.mark.parametrize("method", list(RUNNERS))
def test_sampler_rejects_an_unknown_option(gaussian, method):
    with pytest.raises(ValueError, match="n_draws"):
        RUNNERS[method](gaussian[0], KEY, n_draws=10)


def test_sampler_rejects_an_unknown_start(gaussian):
    with pytest.raises(ParameterError, match="start"):
        mcmc.run_nuts(gaussian[0], KEY, start="prior")


def test_sampler_rejects_a_target_acceptance_outside_the_unit_interval(gaussian):
    with pytest.raises(ParameterError, match="target_accept"):
        mcmc.run_ghmc(gaussian[0], KEY, target_accept=1.5)


def test_samplers_are_registered_under_their_names():
    for method, runner in RUNNERS.items():
        assert registry.get_runner(method) is runner
    assert registry.get_runner("nuts") is mcmc.run_nuts


# ------------------------------------------------------------------ dispersed starts
def _dispersed_start(logdensity_fn, key, z0, init_jitter):
    return mcmc.evaluated_start(logdensity_fn, key, z0, init_jitter, False)[0]


def test_dispersed_start_moves_each_chain_by_init_jitter_around_the_start():
    z0 = jax.numpy.full(5, 0.3)
    finite = lambda z: -0.5 * z @ z  # noqa: E731
    starts = np.stack([np.asarray(_dispersed_start(finite, jax.random.PRNGKey(k), z0, 0.1))
                       for k in range(200)])
    assert not np.array_equal(starts[0], starts[1])
    np.testing.assert_allclose(starts.mean(axis=0), 0.3, atol=0.03)  # 4.5 standard errors
    np.testing.assert_allclose(starts.std(axis=0), 0.1, rtol=0.2)
    np.testing.assert_array_equal(np.asarray(_dispersed_start(finite, KEY, z0, 0.0)), np.asarray(z0))


def test_dispersed_start_falls_back_to_the_start_where_the_density_is_not_finite():
    z0 = jax.numpy.zeros(3)
    only_at_origin = lambda z: jax.numpy.where(jax.numpy.all(z == 0), 0.0, -jax.numpy.inf)  # noqa: E731
    np.testing.assert_array_equal(np.asarray(_dispersed_start(only_at_origin, KEY, z0, 0.5)),
                                  np.zeros(3))


def test_sampler_rejects_a_negative_init_jitter(gaussian):
    with pytest.raises(ParameterError, match="init_jitter"):
        mcmc.run_nuts(gaussian[0], KEY, init_jitter=-0.1)


# ------------------------------------------------------------------ pooled adaptation
def test_pooled_adaptation_takes_the_smallest_step_and_the_mean_metric_per_galaxy():
    step = np.array([[0.02, 0.037, 0.012], [0.5, 0.4, 0.6]])  # (galaxy, chain)
    metric = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2) + 1.0
    pooled_step, pooled_metric = mcmc.pooled_adaptation(step, metric, "pooled")
    np.testing.assert_array_equal(pooled_step, [[0.012] * 3, [0.4] * 3])
    for galaxy in range(2):
        for chain in range(3):
            np.testing.assert_allclose(pooled_metric[galaxy, chain], metric[galaxy].mean(axis=0))
    same_step, same_metric = mcmc.pooled_adaptation(step, metric, "per_chain")
    np.testing.assert_array_equal(same_step, step)
    np.testing.assert_array_equal(same_metric, metric)
    with pytest.raises(ParameterError, match="adaptation"):
        mcmc.pooled_adaptation(step, metric, "shared")


def test_chains_sample_with_the_pooled_step_size_and_metric(gaussian):
    options = {"n_chains": 3, "n_warmup": 200, "n_samples": 200}
    pooled = mcmc.run_nuts(gaussian[0], KEY, **options).diagnostics
    adapted = pooled["adapted_step_size_per_chain"]
    assert pooled["adaptation"] == "pooled" and len(set(adapted.tolist())) == 3
    np.testing.assert_array_equal(pooled["step_size_per_chain"], np.full(3, adapted.min()))
    metric = pooled["inverse_mass_matrix"]
    np.testing.assert_array_equal(metric[0], metric[2])

    own = mcmc.run_nuts(gaussian[0], KEY, adaptation="per_chain", **options).diagnostics
    # the warm-ups are the same; only what the chains sample with differs
    np.testing.assert_array_equal(own["adapted_step_size_per_chain"], adapted)
    np.testing.assert_array_equal(own["step_size_per_chain"], adapted)
    np.testing.assert_allclose(own["inverse_mass_matrix"].mean(axis=0), metric[0], rtol=1e-12)
    assert not np.array_equal(own["inverse_mass_matrix"][0], own["inverse_mass_matrix"][2])


def test_more_nuts_chains_compile_nothing_new(gaussian):
    options = {"n_warmup": 100, "n_samples": 100}
    mcmc.run_nuts(gaussian[0], KEY, n_chains=2, **options)
    with count_xla_compilations() as compiles:
        result = mcmc.run_nuts(gaussian[0], KEY, n_chains=3, **options)
    assert len(compiles) == 0
    assert np.asarray(result.samples).shape == (3, 100, 5)


def test_sampler_rejects_an_unknown_adaptation(gaussian):
    with pytest.raises(ParameterError, match="adaptation"):
        mcmc.run_hmc(gaussian[0], KEY, adaptation="shared")


# ------------------------------------------------------------------ metric seed and "auto"
def test_laplace_metric_is_the_gaussian_covariance_at_any_point(gaussian):
    problem, mean, cov = gaussian

    def logdensity(z):
        return problem.log_density(z)

    for point in (mean, mean + 0.3):  # a Gaussian's curvature is the same everywhere
        *_, precision = mcmc.evaluated_start(logdensity, KEY, jax.numpy.asarray(point), 0.1, True)
        np.testing.assert_allclose(np.asarray(precision), np.linalg.inv(cov), rtol=1e-7, atol=1e-7)
        dense = np.asarray(mcmc.laplace_inverse_metric(precision, True))
        np.testing.assert_allclose(dense, cov, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(np.asarray(mcmc.laplace_inverse_metric(precision, False)), np.diag(cov),
                                   rtol=1e-7)


def test_laplace_metric_is_never_wider_than_the_prior_away_from_a_mode():
    # curvature −2 (a minimum, not a mode) is clipped to the prior's precision 1; 101 kept
    metric = np.asarray(mcmc.laplace_inverse_metric(jax.numpy.diag(jax.numpy.array([-2.0, 101.0])), True))
    np.testing.assert_allclose(metric, np.diag([1.0, 1.0 / 101.0]), rtol=1e-12, atol=1e-15)


def test_evaluated_start_returns_the_starts_log_density_and_gradient():
    z0 = jax.numpy.full(4, 0.3)
    density = lambda z: -0.5 * z @ z - z[0] ** 3  # noqa: E731
    for with_curvature in (False, True):
        start, value, grad, _ = mcmc.evaluated_start(density, KEY, z0, 0.2, with_curvature)
        np.testing.assert_array_equal(np.asarray(start), np.asarray(_dispersed_start(density, KEY, z0, 0.2)))
        assert not np.array_equal(np.asarray(start), np.asarray(z0))
        expected_value, expected_grad = jax.value_and_grad(density)(start)
        np.testing.assert_allclose(float(value), float(expected_value), rtol=1e-14)
        np.testing.assert_allclose(np.asarray(grad), np.asarray(expected_grad), rtol=1e-14)


def test_evaluated_start_falls_back_to_the_starts_value_and_gradient():
    z0 = jax.numpy.zeros(3)
    only_at_origin = lambda z: jax.numpy.where(jax.numpy.all(z == 0), 1.5 - z.sum(), -jax.numpy.inf)  # noqa: E731
    start, value, grad, precision = mcmc.evaluated_start(only_at_origin, KEY, z0, 0.5, False)
    np.testing.assert_array_equal(np.asarray(start), np.zeros(3))
    assert float(value) == 1.5 and precision is None
    np.testing.assert_array_equal(np.asarray(grad), -np.ones(3))


def test_nuts_adapts_a_dense_metric_by_default_for_few_parameters_and_a_diagonal_for_many(gaussian):
    few = mcmc.run_nuts(gaussian[0], KEY, n_warmup=100, n_samples=50)
    assert few.diagnostics["inverse_mass_matrix"].shape == (1, 5, 5)
    d = mcmc.DENSE_AUTO_MAX_DIM + 1
    many = Problem(names=tuple(f"x{i}" for i in range(d)),
                   log_likelihood=lambda z, data_args: -0.5 * jax.numpy.sum((z / data_args) ** 2),
                   data_args=jax.numpy.full(d, 0.5), to_physical=lambda z, data_args: {},
                   init=jax.numpy.zeros(d))
    result = mcmc.run_nuts(many, KEY, n_warmup=100, n_samples=50)
    assert result.diagnostics["inverse_mass_matrix"].shape == (1, mcmc.DENSE_AUTO_MAX_DIM + 1)
    assert registry.method_options("mcmc_nuts", {})["use_dense"] == "auto"


def test_both_metric_seeds_sample_the_gaussian(gaussian):
    problem, mean, cov = gaussian
    for metric_init in mcmc.METRIC_INITS:
        result = mcmc.run_nuts(problem, KEY, n_samples=2000, metric_init=metric_init)
        samples = np.asarray(result.samples).reshape(-1, 5)
        np.testing.assert_allclose(np.cov(samples.T), cov, atol=0.15 * np.max(np.diag(cov)))
        assert result.diagnostics["divergences"] == 0


def test_sampler_rejects_an_unknown_metric_seed_or_dense_setting(gaussian):
    with pytest.raises(ParameterError, match="metric_init"):
        mcmc.run_nuts(gaussian[0], KEY, metric_init="fisher")
    with pytest.raises(ParameterError, match="use_dense"):
        mcmc.run_nuts(gaussian[0], KEY, use_dense="always")
