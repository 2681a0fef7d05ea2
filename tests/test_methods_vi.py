"""Specification of geometric VI: ``vi`` / ``mgvi`` (NIFTy) and ``vi_native`` (pure JAX).

On the linear-Gaussian 5-D target of ``tests/methods_targets.py`` the posterior is
Gaussian with precision equal to the Fisher metric ``AᵀA + I``, so MGVI and geoVI
are exact: the mean to solver precision, and the covariance of the returned
draws to within their sampling noise (4000 draws: ≈ 3 % on a variance; the
tests allow 15 %). A funnel shows what VI gets wrong (see
``tengri.inference.methods.vi_native``).
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from methods_targets import (
    count_xla_compilations,
    funnel_problem,
    gaussian_posterior,
    gaussian_problem,
    gaussian_residuals,
)

from tengri.errors import ParameterError
from tengri.inference import registry
from tengri.inference.methods import vi_native, vi_nifty
from tengri.inference.problem import Problem

KEY = jax.random.PRNGKey(3)
# 4000 draws (2000 antithetic pairs): the sampling error of a variance is ≈ 3 %.
GAUSSIAN_RUN = {"start": "init", "n_posterior_samples": 4000}
RUNNERS = {"vi": vi_nifty.run_vi, "mgvi": vi_nifty.run_mgvi, "vi_native": vi_native.run_vi_native}


@pytest.fixture(scope="module")
def gaussian():
    problem = gaussian_problem()
    mean, cov = gaussian_posterior(problem)
    return problem, mean, cov


@pytest.fixture(scope="module", params=list(RUNNERS))
def gaussian_run(request, gaussian):
    method = request.param
    return method, RUNNERS[method](gaussian[0], KEY, **GAUSSIAN_RUN)


# ------------------------------------------------------------------ Gaussian
@pytest.mark.slow
def test_vi_mean_is_the_gaussian_posterior_mean(gaussian, gaussian_run):
    _, mean, cov = gaussian
    method, result = gaussian_run
    error = (np.asarray(result.point) - mean) / np.sqrt(np.diag(cov))
    assert np.all(np.abs(error) < 1e-3), (method, error)


@pytest.mark.slow
def test_vi_covariance_is_within_fifteen_percent_of_the_gaussian_covariance(gaussian,
                                                                           gaussian_run):
    _, _, cov = gaussian
    method, result = gaussian_run
    estimate = np.cov(np.asarray(result.samples)[0].T)
    variance_ratio = np.diag(estimate) / np.diag(cov)
    assert np.all(np.abs(variance_ratio - 1) < 0.15), (method, variance_ratio)
    assert np.linalg.norm(estimate - cov) < 0.15 * np.linalg.norm(cov), method


@pytest.mark.slow
def test_vi_returns_the_requested_draws_led_by_mirrored_vi_samples(gaussian_run):
    method, result = gaussian_run
    draws = np.asarray(result.samples)
    assert draws.shape == (1, 4000, 5)
    assert result.diagnostics["n_vi_samples"] == 8          # n_samples = 4, mirrored
    pairs = draws[0, :8].reshape(4, 2, 5)
    np.testing.assert_allclose(pairs.sum(axis=1) / 2, np.broadcast_to(result.point, (4, 5)),
                               atol=1e-10)


@pytest.mark.slow
def test_loss_history_is_the_kl_energy_of_each_iteration(gaussian_run):
    method, result = gaussian_run
    history = result.loss_history
    assert history.shape == (result.diagnostics["n_iter"],)
    assert np.all(np.isfinite(history))
    assert result.diagnostics["final_kl"] == history[-1]
    # For a 5-D Gaussian the sampled KL energy is ≈ d/2 + |r(mean)|²/2 + ... > 0.
    assert np.all(history > 0), method


# ------------------------------------------------------------------ vi_native
@pytest.mark.slow
def test_native_vi_stops_when_the_kl_energy_changes_less_than_tol_kl(gaussian):
    result = vi_native.run_vi_native(gaussian[0], KEY, tol_kl=1e6, **GAUSSIAN_RUN)
    assert result.diagnostics["n_iter"] == 2
    assert result.diagnostics["converged"]


@pytest.mark.slow
@pytest.mark.parametrize("method", list(RUNNERS))
def test_vi_keeps_the_seed_with_the_lowest_final_kl(gaussian, method):
    result = RUNNERS[method](gaussian[0], KEY, n_seeds=3, **GAUSSIAN_RUN)
    seeds = result.diagnostics["seed_final_kl"]
    assert seeds.shape == (3,)
    assert len(set(seeds.tolist())) == 3
    assert result.diagnostics["final_kl"] == seeds.min()


@pytest.mark.slow
def test_native_second_galaxy_seed_count_and_iterations_compile_nothing(gaussian):
    vi_native.run_vi_native(gaussian[0], KEY, **GAUSSIAN_RUN)
    other = gaussian_problem(mean=np.array([-0.3, 0.2, 0.9, -1.0, 0.5]))
    with count_xla_compilations() as compiles:
        result = vi_native.run_vi_native(other, KEY, n_seeds=2, n_kl_iter=5, **GAUSSIAN_RUN)
    assert len(compiles) == 0
    other_mean, other_cov = gaussian_posterior(other)
    error = (np.asarray(result.point) - other_mean) / np.sqrt(np.diag(other_cov))
    assert np.all(np.abs(error) < 1e-3)
    assert result.diagnostics["n_iter"] == 5


@jax.jit
def _offsets(key, mean, data_args):
    return vi_native.draw_offsets(gaussian_residuals, mean, data_args, key, 3, False, False)


def test_unmirrored_offsets_are_independent_draws(gaussian):
    offsets = np.asarray(_offsets(KEY, jnp.zeros(5), gaussian[0].data_args))
    assert offsets.shape == (3, 5)
    assert not np.allclose(offsets[0], -offsets[1])


def test_geovi_map_of_a_linear_model_is_the_linear_sample(gaussian):
    problem, mean, _ = gaussian

    @jax.jit
    def both(key, data_args):
        delta, t = vi_native.metric_sample(problem.residuals, jnp.asarray(mean), data_args, key)
        sample, mismatch = vi_native.geovi_transform_sample(
            problem.residuals, jnp.asarray(mean), data_args, jnp.asarray(mean), t)
        return delta, sample - jnp.asarray(mean), mismatch

    delta, nonlinear, mismatch = both(KEY, problem.data_args)
    np.testing.assert_allclose(nonlinear, delta, atol=1e-8)
    assert float(mismatch) < 1e-8


# ------------------------------------------------------------------ NIFTy
@pytest.mark.slow
def test_nifty_second_galaxy_compiles_nothing(gaussian):
    vi_nifty.run_mgvi(gaussian[0], KEY, **GAUSSIAN_RUN)
    other = gaussian_problem(mean=np.array([-0.3, 0.2, 0.9, -1.0, 0.5]))
    with count_xla_compilations() as compiles:
        result = vi_nifty.run_mgvi(other, KEY, **GAUSSIAN_RUN)
    assert len(compiles) == 0
    other_mean, _ = gaussian_posterior(other)
    np.testing.assert_allclose(result.point, other_mean, atol=1e-4)


def test_nifty_logger_is_silenced_unless_verbose():
    from nifty.re.logger import logger

    before = logger.level
    with vi_nifty._nifty_log_level(verbose=False):
        assert not logger.isEnabledFor(logging.WARNING)
        assert logger.isEnabledFor(logging.ERROR)
    with vi_nifty._nifty_log_level(verbose=True):
        assert logger.isEnabledFor(logging.INFO)
    assert logger.level == before


def test_nifty_rejects_unmirrored_samples(gaussian):
    with pytest.raises(ParameterError, match="vi_native"):
        vi_nifty.run_vi(gaussian[0], KEY, mirror_samples=False)


# ------------------------------------------------------------------ contract
@pytest.mark.parametrize("method", list(RUNNERS))
def test_vi_needs_gaussian_residuals(method):
    with pytest.raises(ValueError, match="Gaussian likelihood"):
        RUNNERS[method](funnel_problem(), KEY)


@pytest.mark.parametrize("method", list(RUNNERS))
def test_vi_rejects_an_unknown_sample_mode(gaussian, method):
    with pytest.raises(ParameterError, match="linear_resample"):
        RUNNERS[method](gaussian[0], KEY, sample_mode="metropolis")


@pytest.mark.parametrize("method", list(RUNNERS))
def test_vi_rejects_an_unknown_option(gaussian, method):
    with pytest.raises(ValueError, match="n_iterations"):
        RUNNERS[method](gaussian[0], KEY, n_iterations=3)


def test_vi_methods_are_registered_under_their_names_and_aliases():
    assert registry.get_runner("vi") is vi_nifty.run_vi
    assert registry.get_runner("geovi") is vi_nifty.run_vi
    assert registry.get_runner("mgvi") is vi_nifty.run_mgvi
    assert registry.get_runner("vi_native") is vi_native.run_vi_native


# ------------------------------------------------------------------ funnel
FUNNEL_SCALE = 10.0
FUNNEL_WIDTHS = 9


def funnel_residuals(z, data_args):
    """``r_i = c x_i e^{−v/2}``: in latent space, a funnel in ``(v, x)``."""
    return data_args["c"] * z[1:] * jnp.exp(-0.5 * z[0])


def funnel_log_likelihood(z, data_args):
    r = funnel_residuals(z, data_args)
    return -0.5 * jnp.sum(r * r)


def exact_funnel_scale_moments() -> tuple[float, float]:
    """Mean and sd of ``v``: ``p(v) ∝ N(v) (1 + c² e^{−v})^{−n/2}`` by quadrature."""
    v = np.linspace(-10.0, 14.0, 48001)
    log_p = -0.5 * v**2 - 0.5 * FUNNEL_WIDTHS * np.log1p(FUNNEL_SCALE**2 * np.exp(-v))
    weight = np.exp(log_p - log_p.max())
    weight /= weight.sum()
    mean = float(np.sum(weight * v))
    return mean, float(np.sqrt(np.sum(weight * (v - mean) ** 2)))


@pytest.mark.slow
def test_geovi_overdisperses_the_scale_of_a_funnel():
    names = ("v",) + tuple(f"x{i}" for i in range(1, FUNNEL_WIDTHS + 1))
    problem = Problem(names=names, log_likelihood=funnel_log_likelihood,
                      data_args={"c": jnp.asarray(FUNNEL_SCALE)},
                      to_physical=lambda z, d: dict(zip(names, z)),
                      init=jnp.zeros(len(names)), residuals=funnel_residuals,
                      n_data=FUNNEL_WIDTHS)
    result = vi_native.run_vi_native(problem, KEY, start="init", n_kl_iter=20)
    v = np.asarray(result.samples)[0, :, 0]
    _, exact_sd = exact_funnel_scale_moments()
    # The metric at x̄ = 0 carries no information on v: v is drawn from its prior.
    assert np.std(v) > 1.2 * exact_sd, (np.std(v), exact_sd)
    assert abs(np.std(v) - 1.0) < 0.1


# ------------------------------------------------------------------ dense = CG
def curved_residuals(z, data_args):
    """Mildly nonlinear whitened residuals, 3 latents → 6 data."""
    linear = data_args["a"] @ z - data_args["y"]
    return linear + 0.5 * jnp.concatenate([z**2, jnp.sin(z)])


CURVED_ARGS = {"a": jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)) * 3.0),
               "y": jnp.asarray(np.random.default_rng(1).normal(size=6))}
CURVED_MEAN = jnp.asarray([0.2, -0.4, 0.1])


def test_residuals_and_jacobian_is_the_reverse_mode_jacobian():
    r, jac = vi_native.residuals_and_jacobian(curved_residuals, CURVED_MEAN, CURVED_ARGS)
    np.testing.assert_allclose(r, curved_residuals(CURVED_MEAN, CURVED_ARGS), rtol=1e-14)
    np.testing.assert_allclose(jac, jax.jacrev(curved_residuals)(CURVED_MEAN, CURVED_ARGS),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nonlinear", [False, True])
def test_dense_samples_equal_the_cg_samples(nonlinear):
    @functools.partial(jax.jit, static_argnames="solver")
    def offsets(key, mean, data_args, solver):
        return vi_native.draw_offsets(curved_residuals, mean, data_args, key, 20, nonlinear,
                                      True, solver=solver)

    dense = np.asarray(offsets(KEY, CURVED_MEAN, CURVED_ARGS, "dense"))
    matrix_free = np.asarray(offsets(KEY, CURVED_MEAN, CURVED_ARGS, "cg"))
    assert dense.shape == (40, 3)
    np.testing.assert_allclose(dense, matrix_free, atol=1e-8, rtol=0)
    if nonlinear:  # the geoVI map does move the samples off the linear ones
        linear = np.asarray(jax.jit(lambda k: vi_native.draw_offsets(
            curved_residuals, CURVED_MEAN, CURVED_ARGS, k, 20, False, True))(KEY))
        assert np.max(np.abs(dense - linear)) > 1e-3


def test_dense_kl_newton_steps_equal_the_cg_steps():
    offsets = jax.random.normal(KEY, (8, 3)) * 0.3

    @functools.partial(jax.jit, static_argnames="solver")
    def minimise(mean, data_args, solver):
        return vi_native.minimize_kl(curved_residuals, mean, offsets, data_args, 1e-12, solver)

    dense_mean, dense_energy = minimise(jnp.zeros(3), CURVED_ARGS, "dense")
    cg_mean, cg_energy = minimise(jnp.zeros(3), CURVED_ARGS, "cg")
    np.testing.assert_allclose(dense_mean, cg_mean, atol=1e-8, rtol=0)
    np.testing.assert_allclose(dense_energy, cg_energy, rtol=1e-12)
    # a minimum (to the Gauss–Newton stopping rule): the energy gradient is ~0 there
    grad = jax.grad(lambda m: vi_native.kl_energy(curved_residuals, m, offsets, CURVED_ARGS))
    assert np.max(np.abs(grad(dense_mean))) < 1e-6


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="solver"):
        vi_native.build_vi_draws_engine(curved_residuals, 3, 4, True, True, solver="lu")


# ------------------------------------------------------------------ importance weights
def bent_residuals(z, data_args):
    """2 latents → 2 data, the second latent bent by the square of the first."""
    return jnp.stack([data_args["s"] * (z[1] - data_args["b"] * z[0] ** 2) - 0.3,
                      1.5 * z[0] + 0.2])


BENT_ARGS = {"s": jnp.asarray(2.0), "b": jnp.asarray(0.8)}
BENT_MEAN = jnp.asarray([0.1, 0.2])


def _log_posterior(residuals, z, data_args):
    r = residuals(z, data_args)
    return -0.5 * (jnp.sum(r * r) + jnp.sum(z * z))


@pytest.mark.parametrize("nonlinear", [False, True])
def test_importance_weights_are_equal_where_the_approximation_is_exact(gaussian, nonlinear):
    # linear residuals: at the posterior mean MGVI's and geoVI's q are the posterior
    problem, mean, _ = gaussian
    mean = jnp.asarray(mean)
    offsets = vi_native.draw_offsets(problem.residuals, mean, problem.data_args, KEY, 50,
                                     nonlinear, True)
    log_w = vi_native.approximation_log_weights(problem.residuals, mean, mean + offsets,
                                                problem.data_args, nonlinear)
    assert np.ptp(np.asarray(log_w)) < 1e-8


@pytest.mark.parametrize("nonlinear", [False, True])
def test_approximation_density_is_normalised_and_is_what_the_draws_follow(nonlinear):
    # log q = log p − log w on a grid: it must integrate to one (with the normalisation
    # left out, in 2-D −log 2π ± ½ log det M̄: + for N(ξ̄, M̄⁻¹), − for t ~ N(0, M̄))
    # and have the draws' moments
    grid = np.linspace(-6.0, 6.0, 401)
    cell = (grid[1] - grid[0]) ** 2
    points = jnp.asarray(np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2))
    log_w = vi_native.approximation_log_weights(bent_residuals, BENT_MEAN, points, BENT_ARGS,
                                                nonlinear)
    log_p = jax.vmap(lambda z: _log_posterior(bent_residuals, z, BENT_ARGS))(points)
    _, jac = vi_native.residuals_and_jacobian(bent_residuals, BENT_MEAN, BENT_ARGS)
    metric = np.asarray(jac.T @ jac) + np.eye(2)
    sign = -1.0 if nonlinear else 1.0
    log_q = (np.asarray(log_p - log_w) - np.log(2 * np.pi)
             + sign * 0.5 * np.linalg.slogdet(metric)[1])
    q = np.exp(log_q) * cell
    assert abs(q.sum() - 1.0) < 1e-3, q.sum()
    q_mean = q @ np.asarray(points) / q.sum()
    q_sd = np.sqrt(q @ (np.asarray(points) - q_mean) ** 2 / q.sum())

    offsets = vi_native.draw_offsets(bent_residuals, BENT_MEAN, BENT_ARGS, KEY, 2000,
                                     nonlinear, False)
    draws = np.asarray(BENT_MEAN + offsets)
    standard_error = q_sd / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - q_mean) < 4 * standard_error)
    assert np.all(np.abs(draws.std(axis=0) / q_sd - 1) < 0.1)
    if nonlinear:  # the curved map is not MGVI's Gaussian: the test can tell them apart
        gauss_sd = np.sqrt(np.diag(np.linalg.inv(metric)))
        assert np.max(np.abs(q_sd / gauss_sd - 1)) > 0.15


BANANA_ARGS = {"s": jnp.asarray(30.0), "b": jnp.asarray(1.0)}


def banana_residuals(z, data_args):
    """One datum: ``ξ₁ = b ξ₀²`` to 1/s — a curved ridge in the latent plane."""
    return jnp.atleast_1d(data_args["s"] * (z[1] - data_args["b"] * z[0] ** 2))


@pytest.mark.slow
def test_pareto_k_flags_mgvi_on_a_curved_ridge_but_not_geovi():
    problem = Problem(names=("x", "y"), log_likelihood=lambda z, d: _log_posterior(
                          banana_residuals, z, d) + 0.5 * jnp.sum(z * z),
                      data_args=BANANA_ARGS, to_physical=lambda z, d: {"x": z[0], "y": z[1]},
                      init=jnp.zeros(2), residuals=banana_residuals, n_data=1)
    k = {mode: vi_native.run_vi_native(problem, KEY, start="init", sample_mode=mode,
                                       n_kl_iter=20).diagnostics["pareto_k"]
         for mode in ("linear_resample", "nonlinear_resample")}
    assert k["linear_resample"] > 0.7, k
    assert k["nonlinear_resample"] < 0.7, k
