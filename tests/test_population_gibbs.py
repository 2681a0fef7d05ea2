"""The Metropolis-within-Gibbs population sampler (run("gibbs")) on a linear-Gaussian population.

Galaxy i has y_i = s z_i + μ + n_i (D values) with z_i, n_i ~ N(0, I), s = exp(φ_0 / 2),
μ = φ_1 / 2, and φ ~ N(0, I): p(y_i | φ) = N(y_i; μ, (1 + s²) I), so the posterior of φ
and the posterior mean of every z_i follow from a 2-D grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tengri  # noqa: F401  (float64)
from tengri.analysis.diagnostics import effective_sample_size, rhat

N_GALAXIES, D = 6, 3


def scale_and_mean(phi):
    return jnp.exp(0.5 * phi[0]), 0.5 * phi[1]


def log_likelihoods(phi, latents, data):
    s, mu = scale_and_mean(phi)
    return -0.5 * jnp.sum((data["y"] - s * latents - mu) ** 2, axis=1)


def conditional_gaussian(phi, data):
    """The exact conditional, deliberately spoiled (mode shifted, precision scaled): the
    transport move must stay exact, only its acceptance may suffer."""
    s, mu = scale_and_mean(phi)
    mode = s * (data["y"] - mu) / (1 + s**2) + 0.3
    chol = jnp.sqrt(0.7 * (1 + s**2)) * jnp.broadcast_to(jnp.eye(D), (N_GALAXIES, D, D))
    return mode, chol


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    y = np.exp(0.5 * 0.8) * rng.normal(size=(N_GALAXIES, D)) + 0.25 + rng.normal(size=(N_GALAXIES, D))
    return {"y": jnp.asarray(y)}


def exact_posterior(y):
    """Grid (φ_0, φ_1) posterior: weights (n, n), axes, every galaxy's E[z_i | φ] (n, n, N, D)
    and Var[z_i | φ] (n, n, 1, 1)."""
    axis = np.linspace(-5, 5, 401)
    p0, p1 = np.meshgrid(axis, axis, indexing="ij")
    s, mu = np.exp(0.5 * p0)[..., None, None], 0.5 * p1[..., None, None]
    var = 1 + s**2
    log_post = (-0.5 * ((y - mu) ** 2 / var + np.log(var))).sum((-1, -2)) - 0.5 * (p0**2 + p1**2)
    weights = np.exp(log_post - log_post.max())
    return weights / weights.sum(), p0, p1, s * (y - mu) / var, 1 / var


# φ moved by the random walk with transport, or only by dragged moves; galaxies by HMC
# or Ray Tracing steps: each must leave the posterior invariant on its own
MOVES = {"transport": {"n_shared_steps": 1}, "dragged": {"n_shared_steps": 0, "n_drag_moves": 1, "n_drag_stages": 3}}
SAMPLERS = [("transport", "hmc"), ("dragged", "hmc"), ("transport", "raytrace"), ("dragged", "raytrace")]
# a wide step jitter for Ray Tracing (the option that helped at N = 40), the default for HMC
JITTER = {"hmc": (0.8, 1.2), "raytrace": (0.3, 1.3)}


@pytest.fixture(scope="module", params=SAMPLERS, ids=["-".join(s) for s in SAMPLERS])
def run(request, data):
    from tengri.inference.population_gibbs import build_gibbs_engine

    moves, galaxy_kernel = request.param
    engine = build_gibbs_engine(log_likelihoods, conditional_gaussian, n_leapfrog=6, n_warmup=300, n_samples=3000,
                                galaxy_kernel=galaxy_kernel, step_jitter=JITTER[galaxy_kernel], **MOVES[moves])
    starts = jnp.asarray([[-2.0, 2.0], [2.0, -2.0], [-1.0, -1.0], [1.5, 1.5]])
    latents0 = jnp.zeros((4, N_GALAXIES, D))
    out = engine(jax.random.PRNGKey(0), starts, latents0, data, jnp.full(N_GALAXIES, np.log(0.5)), 0.5 * jnp.eye(2))
    return {**out, "moves": moves}


def test_shared_draws_match_the_exact_posterior(run, data):
    weights, p0, p1, _, _ = exact_posterior(np.asarray(data["y"]))
    draws = np.asarray(run["shared"])  # (chains, n, 2)
    for j, grid in enumerate((p0, p1)):
        mean = np.sum(weights * grid)
        std = np.sqrt(np.sum(weights * (grid - mean) ** 2))
        chains = draws[..., j]
        assert rhat(chains) < 1.01
        ess = effective_sample_size(chains)
        assert ess > 400
        assert abs(chains.mean() - mean) < 4 * std / np.sqrt(ess)
        assert chains.std() == pytest.approx(std, rel=0.1)


def test_galaxy_draws_match_the_exact_posterior_means_and_widths(run, data):
    weights, _, _, conditional_means, conditional_var = exact_posterior(np.asarray(data["y"]))
    expected = np.einsum("ab,abnd->nd", weights, conditional_means)
    second_moment = np.einsum("ab,abnd->nd", weights, conditional_var + conditional_means**2)
    latents = np.asarray(run["latents"]).reshape(-1, N_GALAXIES, D)
    np.testing.assert_allclose(latents.mean(0), expected, atol=0.06)
    np.testing.assert_allclose(latents.std(0), np.sqrt(second_moment - expected**2), rtol=0.1)


def test_warmup_tunes_acceptances_towards_their_targets(run):
    from tengri.inference.population_gibbs import TARGET_GALAXY_ACCEPTANCE

    # per galaxy the Robbins–Monro steps still wobble after 300 sweeps; on average they hit
    acceptance = np.asarray(run["galaxy_acceptance"])
    assert abs(acceptance.mean() - TARGET_GALAXY_ACCEPTANCE) < 0.05
    assert np.all(np.abs(acceptance - TARGET_GALAXY_ACCEPTANCE) < 0.15)
    moved = {"transport": "shared_acceptance", "dragged": "drag_acceptance"}[run["moves"]]
    assert np.all(np.asarray(run[moved]) > 0.15)
