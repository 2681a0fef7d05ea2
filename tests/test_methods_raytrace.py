"""Specification of the Ray Tracing sampler (Behroozi 2025) and its runner.

The kernel's invariance argument (see ``tengri.inference.methods.raytrace``) rests
on two facts checked directly here: the refraction kick keeps the speed and is
undone by refracting the reversed ray, and the log-determinant of its Jacobian
is exactly minus the predicted luminosity change. The runner is then checked on
the 5-D correlated Gaussian of ``tests/methods_targets.py`` (mean within 4 Monte
Carlo errors, covariance within 10 %), for both integrators, and against HMC
driven by the same code when the gradient is noisy.
"""

from __future__ import annotations

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from methods_targets import count_xla_compilations, gaussian_posterior, gaussian_problem

from tengri.errors import ParameterError
from tengri.inference import registry
from tengri.inference.methods import raytrace
from tengri.inference.problem import Problem

KEY = jax.random.PRNGKey(5)
# Enough draws for a variance to a few per cent (the effective sample size of
# the slowest direction is ~2000 of 8000 draws); sampling is milliseconds.
GAUSSIAN_RUN = {"n_samples": 4000, "n_chains": 2, "n_steps_per_sample": 16, "start": "init"}


@pytest.fixture(scope="module")
def gaussian():
    problem = gaussian_problem()
    mean, cov = gaussian_posterior(problem)
    return problem, mean, cov


@pytest.fixture(scope="module", params=raytrace.INTEGRATORS)
def gaussian_run(request, gaussian):
    integrator = request.param
    return integrator, raytrace.run_raytrace(gaussian[0], KEY, integrator=integrator,
                                             **GAUSSIAN_RUN)


def _ess_per_dimension(samples: np.ndarray) -> np.ndarray:
    return np.array([float(az.ess(samples[..., i])) for i in range(samples.shape[-1])])


# ------------------------------------------------------------------ the kick
_refract = jax.jit(raytrace.refract_velocity)


def _random_ray(seed: int, dim: int = 6):
    key_v, key_g = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(key_v, (dim,)), 3.0 * jax.random.normal(key_g, (dim,))


def test_refraction_keeps_the_speed():
    velocity, grad = _random_ray(0)
    turned, _ = _refract(velocity, grad, 0.3)
    np.testing.assert_allclose(jnp.linalg.norm(turned), jnp.linalg.norm(velocity), rtol=1e-12)


def test_refraction_turns_the_ray_toward_the_gradient():
    velocity, grad = _random_ray(1)
    turned, _ = _refract(velocity, grad, 0.3)
    assert jnp.vdot(turned, grad) > jnp.vdot(velocity, grad)


def test_refracting_the_reversed_ray_undoes_the_kick():
    velocity, grad = _random_ray(2)
    turned, delta = _refract(velocity, grad, 0.4)
    back, delta_back = _refract(-turned, grad, 0.4)
    np.testing.assert_allclose(back, -velocity, atol=1e-12)
    np.testing.assert_allclose(delta_back, -delta, atol=1e-12)


@jax.jit
def _kick_log_det_and_delta(velocity, grad):
    def kick(v):
        return raytrace.refract_velocity(v, grad, 0.2)[0]

    _, log_det = jnp.linalg.slogdet(jax.jacfwd(kick)(velocity))
    return log_det, raytrace.refract_velocity(velocity, grad, 0.2)[1]


@pytest.mark.parametrize("dim", [2, 30])
def test_kick_log_jacobian_is_minus_the_predicted_luminosity_change(dim):
    # The Metropolis ratio exp(Δ ln p − Δ ln 𝓛) is exact only if
    # |∂v'/∂v| = exp(−Δ ln 𝓛).
    log_det, delta = _kick_log_det_and_delta(*_random_ray(3, dim))
    assert abs(float(delta)) > 0.1
    np.testing.assert_allclose(log_det, -delta, atol=1e-9)


def test_a_ray_along_the_gradient_predicts_the_directional_derivative():
    velocity = jnp.array([1.0, 2.0, -0.5, 0.3])
    for sign in (1.0, -1.0):
        turned, delta = _refract(velocity, sign * 0.15 * velocity, 0.3)
        np.testing.assert_allclose(turned, velocity, atol=1e-12)
        # |g| |v| τ cos θ with θ = 0 or π
        np.testing.assert_allclose(delta, sign * 0.15 * 0.3 * jnp.sum(velocity**2), rtol=1e-12)


def test_gradient_noise_wrapper_keeps_the_value_and_perturbs_the_gradient_by_sigma():
    def fn(z, scale):
        return -0.5 * scale * jnp.sum(z * z)

    noisy = raytrace.with_gradient_noise(fn, relative_sigma=0.1, seed=3)

    @jax.jit
    def relative_noise(points):
        exact_grad = jax.vmap(jax.grad(fn), in_axes=(0, None))(points, 2.0)
        noisy_grad = jax.vmap(jax.grad(noisy), in_axes=(0, None))(points, 2.0)
        norm = jnp.linalg.norm(exact_grad, axis=1, keepdims=True)
        return (noisy_grad - exact_grad) / norm, noisy(points[0], 2.0) - fn(points[0], 2.0)

    relative, value_error = relative_noise(jax.random.normal(jax.random.PRNGKey(0), (400, 8)))
    assert float(value_error) == 0.0
    assert abs(float(jnp.std(relative)) - 0.1) < 0.01
    assert abs(float(jnp.mean(relative))) < 0.01


def test_kernel_composes_with_vmap_like_a_blackjax_algorithm():
    algorithm = raytrace.as_top_level_api(lambda x: -0.5 * jnp.sum(x * x), step_size=0.3,
                                          n_steps=4)
    states = jax.jit(jax.vmap(algorithm.init))(jnp.zeros((3, 4)))
    keys = jax.random.split(KEY, 3)
    new_states, infos = jax.jit(jax.vmap(algorithm.step))(keys, states)
    assert new_states.position.shape == (3, 4)
    assert infos.acceptance_rate.shape == (3,)
    assert not np.array_equal(np.asarray(new_states.position[0]),
                              np.asarray(new_states.position[1]))


# ------------------------------------------------------------------ Gaussian
@pytest.mark.slow
def test_raytrace_mean_is_within_four_monte_carlo_errors_of_the_gaussian_mean(gaussian,
                                                                             gaussian_run):
    _, mean, cov = gaussian
    integrator, result = gaussian_run
    samples = np.asarray(result.samples)
    mcse = np.sqrt(np.diag(cov) / _ess_per_dimension(samples))
    error = samples.reshape(-1, 5).mean(axis=0) - mean
    assert np.all(np.abs(error) < 4 * mcse), (integrator, error / mcse)


@pytest.mark.slow
def test_raytrace_covariance_is_within_ten_percent_of_the_gaussian_covariance(gaussian,
                                                                            gaussian_run):
    _, _, cov = gaussian
    integrator, result = gaussian_run
    estimate = np.cov(np.asarray(result.samples).reshape(-1, 5).T)
    variance_ratio = np.diag(estimate) / np.diag(cov)
    assert np.all(np.abs(variance_ratio - 1) < 0.1), (integrator, variance_ratio)
    assert np.linalg.norm(estimate - cov) < 0.1 * np.linalg.norm(cov), integrator


@pytest.mark.slow
def test_warmup_adapts_the_step_size_to_the_target_acceptance(gaussian_run):
    integrator, result = gaussian_run
    assert abs(result.diagnostics["acceptance_rate"] - 0.8) < 0.1, integrator
    assert result.diagnostics["step_size"] != 0.05
    assert result.diagnostics["divergences"] == 0


@pytest.mark.slow
def test_result_holds_chains_mean_point_and_run_settings(gaussian_run):
    integrator, result = gaussian_run
    samples = np.asarray(result.samples)
    assert result.method == "mcmc_raytrace"
    assert samples.shape == (2, 4000, 5)
    np.testing.assert_allclose(result.point, samples.reshape(-1, 5).mean(axis=0))
    assert result.diagnostics["integrator"] == integrator
    assert result.diagnostics["sample_hmc"] is False
    assert result.loss_history is None and result.log_evidence is None


# ------------------------------------------------------------------ noisy gradients
def _isotropic_log_likelihood(z, data_args):
    # Posterior N(0, s² I) under the N(0, I) prior.
    return -0.5 * jnp.sum(z * z) * (1.0 / data_args["sd"] ** 2 - 1.0)


NOISY_DIM = 100
NOISY_SD = 0.5
# 16 steps of 0.08: 2.6 radians of the target's orbit, away from the half-orbit
# resonance (step 0.1) where HMC's noise heating diverges outright.
# The kernel itself is compared, in the target's own coordinates: no preconditioner.
NOISY_RUN = {"n_warmup": 200, "n_samples": 2000, "step_size": 0.08, "n_steps_per_sample": 16,
             "refresh_rate": 0.0, "metropolis_check": False, "start": "init",
             "precondition": "none"}


def noisy_problem() -> Problem:
    names = tuple(f"x{i}" for i in range(NOISY_DIM))
    noisy = raytrace.with_gradient_noise(_isotropic_log_likelihood, relative_sigma=0.1)
    return Problem(names=names, log_likelihood=noisy, data_args={"sd": jnp.asarray(NOISY_SD)},
                   to_physical=lambda z, d: dict(zip(names, z)), init=jnp.zeros(NOISY_DIM))


def variance_ratio_with_noisy_gradients(sample_hmc: bool) -> float:
    """Mean posterior variance over the true one, gradient noise σ = 0.1 |∇ log L|
    per component, no Metropolis correction (the stochastic-gradient regime)."""
    result = raytrace.run_raytrace(noisy_problem(), KEY, sample_hmc=sample_hmc, **NOISY_RUN)
    return float(np.mean(np.var(np.asarray(result.samples)[0], axis=0))) / NOISY_SD**2


@pytest.mark.slow
def test_ray_tracing_keeps_its_accuracy_with_noisy_gradients_where_hmc_does_not():
    raytrace_ratio = variance_ratio_with_noisy_gradients(sample_hmc=False)
    hmc_ratio = variance_ratio_with_noisy_gradients(sample_hmc=True)
    assert abs(raytrace_ratio - 1) < 0.05, raytrace_ratio
    assert hmc_ratio > 1.25, hmc_ratio


# ------------------------------------------------------------------ contract
@pytest.mark.slow
def test_second_galaxy_reuses_the_compiled_sampler(gaussian):
    raytrace.run_raytrace(gaussian[0], KEY, **GAUSSIAN_RUN)
    other = gaussian_problem(mean=np.array([-0.3, 0.2, 0.9, -1.0, 0.5]))
    with count_xla_compilations() as compiles:
        result = raytrace.run_raytrace(other, KEY, **GAUSSIAN_RUN)
    assert len(compiles) == 0
    other_mean, other_cov = gaussian_posterior(other)
    mcse = np.sqrt(np.diag(other_cov) / _ess_per_dimension(np.asarray(result.samples)))
    assert np.all(np.abs(np.asarray(result.point) - other_mean) < 4 * mcse)


@pytest.mark.slow
def test_chain_count_and_trajectory_length_change_no_compiled_program(gaussian):
    raytrace.run_raytrace(gaussian[0], KEY, **GAUSSIAN_RUN)
    options = dict(GAUSSIAN_RUN, n_chains=3, n_steps_per_sample=5, step_size=0.02)
    with count_xla_compilations() as compiles:
        result = raytrace.run_raytrace(gaussian[0], KEY, **options)
    assert len(compiles) == 0
    assert np.asarray(result.samples).shape == (3, 4000, 5)


def test_sampler_rejects_an_unknown_option(gaussian):
    with pytest.raises(ValueError, match="n_leapfrog_steps"):
        raytrace.run_raytrace(gaussian[0], KEY, n_leapfrog_steps=10)


# ------------------------------------------------------------------ preconditioning
def test_laplace_scale_is_a_square_root_of_the_gaussian_covariance(gaussian):
    problem, mean, cov = gaussian

    def logdensity(z):
        return problem.log_likelihood(z, problem.data_args) - 0.5 * z @ z

    scale, ok = raytrace.laplace_scale(logdensity, jnp.asarray(mean))
    assert bool(ok)
    np.testing.assert_allclose(scale @ scale.T, cov, rtol=1e-8, atol=1e-12)


def test_laplace_scale_falls_back_to_the_identity_off_a_mode():
    scale, ok = raytrace.laplace_scale(lambda z: 0.5 * z @ z, jnp.zeros(3))
    assert not bool(ok)
    np.testing.assert_array_equal(scale, np.eye(3))


def test_preconditioning_lets_one_step_size_cross_a_hundredfold_range_of_widths():
    # Latent posterior N(0, diag(sd²)), sd from 0.01 to 1: without a preconditioner the
    # adapted step follows the narrowest direction and the widest one random-walks.
    sd = jnp.array([0.01, 0.1, 1.0])
    names = ("a", "b", "c")
    problem = Problem(names=names, data_args={"sd": sd}, init=jnp.zeros(3),
                      log_likelihood=lambda z, d: -0.5 * jnp.sum(z * z * (1 / d["sd"] ** 2 - 1)),
                      to_physical=lambda z, d: dict(zip(names, z)))
    run = {"n_warmup": 300, "n_samples": 1000, "start": "init"}
    whitened = raytrace.run_raytrace(problem, KEY, precondition="laplace", **run)
    plain = raytrace.run_raytrace(problem, KEY, precondition="none", **run)
    assert whitened.diagnostics["preconditioned"] and not plain.diagnostics["preconditioned"]
    ess_whitened = _ess_per_dimension(np.asarray(whitened.samples))
    ess_plain = _ess_per_dimension(np.asarray(plain.samples))
    assert ess_whitened[2] > 10 * ess_plain[2], (ess_whitened, ess_plain)
    np.testing.assert_allclose(np.asarray(whitened.samples)[0].std(axis=0), sd, rtol=0.15)


def test_sampler_rejects_an_unknown_preconditioner(gaussian):
    with pytest.raises(ParameterError, match="precondition"):
        raytrace.run_raytrace(gaussian[0], KEY, precondition="dense")


def test_sampler_rejects_an_unknown_integrator(gaussian):
    with pytest.raises(ParameterError, match="dkd"):
        raytrace.run_raytrace(gaussian[0], KEY, integrator="leapfrog")


def test_ray_tracing_refuses_a_one_dimensional_problem():
    problem = Problem(names=("a",), log_likelihood=_isotropic_log_likelihood,
                      data_args={"sd": jnp.asarray(0.5)}, to_physical=None, init=jnp.zeros(1))
    with pytest.raises(ParameterError, match="sample_hmc"):
        raytrace.run_raytrace(problem, KEY, start="init")


def test_raytrace_is_registered_under_its_name_and_alias():
    assert registry.get_runner("mcmc_raytrace") is raytrace.run_raytrace
    assert registry.get_runner("raytrace") is raytrace.run_raytrace
