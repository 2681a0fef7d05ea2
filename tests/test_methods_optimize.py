"""Specification of the point-estimate runners (map, laplace), pathfinder and the
shared engine cache, on known-answer targets (tests/methods_targets.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from methods_targets import (
    count_xla_compilations,
    gaussian_log_likelihood,
    gaussian_posterior,
    gaussian_problem,
)

from tengri.errors import ParameterError
from tengri.inference import registry
from tengri.inference.methods import _engine_cache
from tengri.inference.methods.optimize import run_laplace, run_map
from tengri.inference.methods.pathfinder import run_pathfinder
from tengri.inference.problem import Problem

KEY = jax.random.PRNGKey(7)


@pytest.fixture(scope="module")
def gaussian():
    problem = gaussian_problem()
    mean, cov = gaussian_posterior(problem)
    return problem, mean, cov


# ------------------------------------------------------------------ engine cache
def test_memoised_engine_builds_once_per_likelihood_dimension_and_options():
    built = []

    @_engine_cache.memoised_engine
    def build(log_likelihood, n_dim, scale):
        built.append((n_dim, scale))
        return object()

    def loglike(z, data_args):
        return 0.0

    first = build(loglike, 3, 2.0)
    assert build(loglike, 3, 2.0) is first
    assert build(loglike, 4, 2.0) is not first
    assert build(loglike, 3, 5.0) is not first
    assert built == [(3, 2.0), (4, 2.0), (3, 5.0)]


def test_memoised_engine_rejects_unhashable_static_options():
    @_engine_cache.memoised_engine
    def build(log_likelihood, n_dim, sizes):
        return object()

    with pytest.raises(TypeError, match="hashable"):
        build(lambda z, a: 0.0, 2, [1, 2])


def test_clear_engines_forgets_every_engine():
    @_engine_cache.memoised_engine
    def build(log_likelihood, n_dim):
        return object()

    def loglike(z, data_args):
        return 0.0

    first = build(loglike, 2)
    assert _engine_cache.clear_engines() >= 1
    assert _engine_cache.n_cached_engines() == 0
    assert build(loglike, 2) is not first


# ------------------------------------------------------------------ map
def test_map_finds_the_gaussian_posterior_mode(gaussian):
    problem, mean, _ = gaussian
    result = run_map(problem, KEY)
    assert result.method == "map"
    assert result.samples is None
    np.testing.assert_allclose(np.asarray(result.point), mean, atol=1e-6)
    diag = result.diagnostics
    assert diag["converged"] and diag["grad_norm"] <= 1e-8 * (1 + abs(diag["neg_log_density"]))
    assert diag["n_starts"] == 8 and 0 <= diag["best_start"] < 8
    assert 0 < diag["n_iterations"] <= 2000


def test_map_loss_history_is_the_decreasing_negative_log_density_of_the_best_start(gaussian):
    problem, _, _ = gaussian
    result = run_map(problem, KEY)
    history = result.loss_history
    assert history.shape == (result.diagnostics["n_iterations"] + 1,)
    assert np.all(np.diff(history) <= 1e-12)
    assert history[-1] == pytest.approx(-float(problem.log_density(result.point)), abs=1e-10)


def test_map_keeps_the_start_with_the_highest_posterior():
    # Two modes at z = -1.5 (lower) and z = +1.5 (higher); problem.init sits in the
    # lower one, so only a random start can find the better mode.
    def two_modes(z, data_args):
        centres, weights = data_args["centres"], data_args["weights"]
        log_terms = jnp.log(weights) - 0.5 * ((z[0] - centres) / 0.2) ** 2
        return jax.nn.logsumexp(log_terms) + 0.5 * z[0] ** 2

    problem = Problem(
        names=("a",), log_likelihood=two_modes,
        data_args={"centres": jnp.array([-1.5, 1.5]), "weights": jnp.array([0.3, 0.7])},
        to_physical=lambda z, a: {"a": z[0]}, init=jnp.array([-1.5]),
    )
    result = run_map(problem, KEY, n_starts=8)
    assert result.point[0] == pytest.approx(1.5, abs=1e-3)
    assert result.diagnostics["best_start"] != 0


def test_a_failed_line_search_empties_the_lbfgs_memory_and_nothing_else():
    from tengri.inference.methods.optimize import _forget_curvature_if_line_search_failed, _lbfgs

    solver = _lbfgs()

    def objective(z):
        return jnp.sum(z ** 4) + z[0] * z[1]

    z = jnp.array([1.0, -2.0])
    state = solver.init(z)
    for _ in range(3):  # fill the memory with a few (s, y) pairs
        value, grad = jax.value_and_grad(objective)(z)
        updates, state = solver.update(grad, state, z, value=value, grad=grad, value_fn=objective)
        z = z + updates
    assert int(state[0].count) == 3 and float(jnp.abs(state[0].diff_params_memory).sum()) > 0

    def with_decrease_error(error):
        info = optax.tree_utils.tree_get(state, "info")
        return optax.tree_utils.tree_set(state, info=info._replace(decrease_error=jnp.asarray(error)))

    kept = _forget_curvature_if_line_search_failed(solver, with_decrease_error(0.0), z)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), kept, with_decrease_error(0.0)))
    failed = with_decrease_error(1e-3)
    reset = _forget_curvature_if_line_search_failed(solver, failed, z)
    assert int(reset[0].count) == 0 and float(jnp.abs(reset[0].diff_params_memory).sum()) == 0
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), reset[1:], failed[1:]))


def test_a_start_returns_its_best_iterate_when_a_failed_search_went_uphill():
    from tengri.inference.methods.optimize import _minimise_one

    def objective(z):  # Rosenbrock with a ripple the gradient does not see (as the SSP age-bin kinks)
        ripple = jax.lax.stop_gradient(1e-3 * jnp.sum(jnp.sin(3e3 * z)))
        return (1 - z[0]) ** 2 + 100 * (z[1] - z[0] ** 2) ** 2 + ripple

    found = jax.jit(lambda z0: _minimise_one(objective, z0, 2000, 1e-8, 2048))(jnp.array([0.0, 0.0]))
    history = np.asarray(found["history"])[: int(found["n_iterations"]) + 1]
    assert history[-1] > history.min()  # the last step went uphill: the case under test
    assert float(found["value"]) == history.min()
    assert np.isclose(float(objective(found["z"])), history.min(), rtol=1e-12, atol=0)


def test_a_start_cycling_over_a_kink_of_real_photometry_stops_early():
    """GOODS-S galaxy 52 (FAST-like model): from its init, failed line searches cycled
    (down, up, up by ~3e-4 in −log p) until the 2000-iteration limit (374 with the
    cycle stop)."""
    from conftest import require_real_data

    from tengri import Fitter
    from tengri.catalog_io import galaxies_from_table
    from tengri.examples.goodss import FAST_LIKE_CONFIG, goodss_catalog
    from tengri.model.config import model_from_config

    # "bins" on all ages: the kinks this test is about
    binned = {**FAST_LIKE_CONFIG, "model": {**FAST_LIKE_CONFIG["model"], "sfh_quadrature": "bins", "ssp_ages": "raw"}}
    model, spec = model_from_config(binned)
    galaxy = galaxies_from_table(goodss_catalog(require_real_data())[52:53], spec)[0]
    fitter = Fitter(model, galaxy.flux_obs, galaxy.noise, data_mask=galaxy.mask, fixed=galaxy.fixed)
    post = fitter.run("map", key=KEY, n_starts=1)
    assert post.diagnostics["n_iterations"] < 1000
    assert np.isclose(post.diagnostics["neg_log_density"], post.loss_history.min(), rtol=0, atol=0)


def test_map_iteration_limit_is_traced_so_changing_it_does_not_recompile(gaussian):
    problem, _, _ = gaussian
    run_map(problem, KEY, n_steps=2000)
    with count_xla_compilations() as compiles:
        short = run_map(problem, KEY, n_steps=3)
    assert len(compiles) == 0
    assert short.diagnostics["n_iterations"] == 3
    assert not short.diagnostics["converged"]


def test_map_number_of_starts_is_traced_so_changing_it_does_not_recompile(gaussian):
    problem, mean, _ = gaussian
    run_map(problem, KEY, n_starts=8)
    with count_xla_compilations() as compiles:
        single = run_map(problem, KEY, n_starts=1)
    assert len(compiles) == 0
    assert single.diagnostics["best_start"] == 0
    assert single.diagnostics["n_iterations_total"] == single.diagnostics["n_iterations"]
    np.testing.assert_allclose(np.asarray(single.point), mean, atol=1e-6)


def test_map_second_galaxy_reuses_the_compiled_engine():
    traces = []

    def counting_log_likelihood(z, data_args):
        traces.append(1)  # runs only while jax traces (compiles) the engine
        return gaussian_log_likelihood(z, data_args)

    first = dataclasses.replace(gaussian_problem(), log_likelihood=counting_log_likelihood)
    second = dataclasses.replace(gaussian_problem(mean=np.array([-0.3, 0.2, 0.9, -1.0, 0.5])),
                                 log_likelihood=counting_log_likelihood)
    run_map(first, KEY)
    n_traces = len(traces)
    with count_xla_compilations() as compiles:
        result = run_map(second, KEY)
    assert n_traces > 0
    assert len(traces) == n_traces
    assert len(compiles) == 0
    np.testing.assert_allclose(np.asarray(result.point), gaussian_posterior(second)[0],
                               atol=1e-6)


def test_map_rejects_an_unknown_option(gaussian):
    with pytest.raises(ValueError, match="n_stpes"):
        run_map(gaussian[0], KEY, n_stpes=10)


def test_map_rejects_zero_starts(gaussian):
    with pytest.raises(ParameterError, match="n_starts"):
        run_map(gaussian[0], KEY, n_starts=0)


def test_map_runner_is_registered_under_its_name():
    assert registry.get_runner("map") is run_map
    assert registry.get_runner("laplace") is run_laplace
    assert registry.get_runner("pathfinder") is run_pathfinder


# ------------------------------------------------------------------ laplace
def test_laplace_is_exact_on_the_gaussian_target(gaussian):
    problem, mean, cov = gaussian
    result = run_laplace(problem, KEY, n_samples=500)
    np.testing.assert_allclose(np.asarray(result.point), mean, atol=1e-6)
    np.testing.assert_allclose(result.diagnostics["covariance"], cov, atol=1e-6, rtol=0)
    assert result.diagnostics["hessian_positive_definite"]
    assert result.diagnostics["n_clipped_eigenvalues"] == 0
    eig = np.linalg.eigvalsh(cov)
    assert result.diagnostics["condition_number"] == pytest.approx(eig[-1] / eig[0], rel=1e-6)


def test_laplace_draws_follow_the_laplace_gaussian(gaussian):
    problem, _, cov = gaussian
    result = run_laplace(problem, KEY, n_samples=20000)
    samples = np.asarray(result.samples)
    assert samples.shape == (1, 20000, 5)
    flat = samples[0]
    sd = np.sqrt(np.diag(cov))
    # independent draws: the standard error of the mean is sd / sqrt(n)
    assert np.all(np.abs(flat.mean(0) - np.asarray(result.point)) < 4 * sd / np.sqrt(20000))
    np.testing.assert_allclose(np.cov(flat.T), cov, atol=0.05 * sd.max() ** 2)


def test_laplace_clips_a_singular_hessian_and_says_so():
    # log L = +z₀²/2 cancels the prior in z₀: the posterior is flat there and the
    # Hessian has a zero eigenvalue.
    def flat_in_first(z, data_args):
        return 0.5 * z[0] ** 2 - 0.5 * ((z[1] - data_args) / 0.1) ** 2

    problem = Problem(names=("a", "b"), log_likelihood=flat_in_first, data_args=jnp.asarray(0.3),
                      to_physical=lambda z, a: {"a": z[0], "b": z[1]}, init=jnp.zeros(2))
    result = run_laplace(problem, KEY, n_samples=10)
    diag = result.diagnostics
    assert not diag["hessian_positive_definite"]
    assert diag["n_clipped_eigenvalues"] == 1
    assert diag["hessian_min_eigenvalue"] == pytest.approx(0.0, abs=1e-10)
    cov = diag["covariance"]
    np.testing.assert_allclose(cov, cov.T)
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    assert np.all(np.isfinite(np.asarray(result.samples)))


def test_laplace_is_reproducible_with_the_same_key(gaussian):
    a = run_laplace(gaussian[0], KEY, n_samples=100)
    b = run_laplace(gaussian[0], KEY, n_samples=100)
    c = run_laplace(gaussian[0], jax.random.PRNGKey(8), n_samples=100)
    np.testing.assert_array_equal(np.asarray(a.samples), np.asarray(b.samples))
    assert not np.array_equal(np.asarray(a.samples), np.asarray(c.samples))


def test_laplace_rejects_an_unknown_option(gaussian):
    with pytest.raises(ValueError, match="n_draws"):
        run_laplace(gaussian[0], KEY, n_draws=10)


# ------------------------------------------------------------------ pathfinder
@pytest.fixture(scope="module")
def pathfinder_result(gaussian):
    return run_pathfinder(gaussian[0], KEY, n_samples=4000)


def test_pathfinder_approximates_the_gaussian_posterior(gaussian, pathfinder_result):
    # Pathfinder is an approximation (an L-BFGS inverse-Hessian estimate chosen by
    # a 20-draw ELBO), not exact: measured here mean errors ≲ 0.06 sd and variance
    # errors ≲ 11%; the bounds leave room for that, not for a wrong covariance.
    _, mean, cov = gaussian
    flat = np.asarray(pathfinder_result.samples)[0]
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(flat.mean(0) - mean) < 0.15 * sd)
    np.testing.assert_allclose(np.diag(np.cov(flat.T)) / sd**2, 1.0, atol=0.25)
    corr = np.corrcoef(flat.T)
    np.testing.assert_allclose(corr, cov / np.outer(sd, sd), atol=0.1)


def test_pathfinder_returns_draws_point_and_path(gaussian, pathfinder_result):
    result = pathfinder_result
    assert result.method == "pathfinder"
    assert np.asarray(result.samples).shape == (1, 4000, 5)
    np.testing.assert_allclose(np.asarray(result.point),
                               np.asarray(result.samples).mean(axis=(0, 1)))
    assert result.diagnostics["path_length"] == len(result.loss_history) > 1
    assert np.isfinite(result.diagnostics["elbo"])
    assert result.loss_history[-1] < result.loss_history[0]


def test_pathfinder_rejects_an_unknown_option(gaussian):
    with pytest.raises(ValueError, match="max_iter"):
        run_pathfinder(gaussian[0], KEY, max_iter=10)
