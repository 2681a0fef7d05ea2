"""run("evi")'s default objective: per-galaxy Laplace evidences summed on a (σ, τ) grid.

Checked on a linear-Gaussian population, where Laplace's method is exact: galaxy i has
y_i = s z_i + n_i with z_i, n_i ~ N(0, I) and s = σ (the first shared value; τ unused),
so p(y_i | s) = N(y_i; 0, (1 + s²) I)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tengri  # noqa: F401  (float64)

N_GALAXIES, D = 5, 3


def galaxy_res(z, args):
    return args["y"] - args["fixed"][0] * z


def galaxy_ll(z, args):
    return -0.5 * jnp.sum(galaxy_res(z, args) ** 2) - 0.5 * D * jnp.log(2 * jnp.pi)


def exact_log_evidence(y, scale):
    var = 1.0 + scale**2
    return -0.5 * np.sum(y**2, axis=1) / var - 0.5 * D * np.log(2 * np.pi * var)


@pytest.fixture(scope="module")
def population():
    rng = np.random.default_rng(0)
    y = 0.8 * rng.normal(size=(N_GALAXIES, D)) + rng.normal(size=(N_GALAXIES, D))
    args = {"y": jnp.asarray(y), "fixed": jnp.zeros((N_GALAXIES, 2))}
    return y, args


def test_laplace_evidence_is_exact_for_a_linear_gaussian_galaxy(population):
    from tengri.inference.population_grid import build_laplace_engine

    y, args = population
    engine = build_laplace_engine(galaxy_ll, galaxy_res, (0, 1), {"y": 0, "fixed": 0}, 3)
    for scale in (0.2, 0.8, 2.5):
        log_evidence, mode, precision = engine(jnp.zeros((N_GALAXIES, D)), args, scale, 100.0)
        np.testing.assert_allclose(np.asarray(log_evidence), exact_log_evidence(y, scale), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(mode), scale * y / (1 + scale**2), rtol=1e-10)
        np.testing.assert_allclose(np.asarray(precision), np.broadcast_to((1 + scale**2) * np.eye(D),
                                                                          (N_GALAXIES, D, D)), rtol=1e-10)


def test_grid_posterior_matches_the_exact_hyperparameter_posterior(population):
    from tengri.inference.population_grid import build_laplace_engine, grid_draws, grid_nodes, laplace_grid

    y, args = population
    engine = build_laplace_engine(galaxy_ll, galaxy_res, (0, 1), {"y": 0, "fixed": 0}, 3)
    sigma_nodes, sigma_edges = grid_nodes((0.05, 3.0), 60, log_spaced=False)
    tau_nodes, tau_edges = grid_nodes((20.0, 1500.0), 3, log_spaced=True)
    log_evidence, modes = laplace_grid(engine, args, np.zeros((N_GALAXIES, D)), sigma_nodes, tau_nodes)
    assert log_evidence.shape == (N_GALAXIES, 60, 3) and modes.shape == (60, 3, N_GALAXIES, D)
    log_post = log_evidence.sum(0) + np.log(np.diff(sigma_edges))[:, None] + np.log(np.diff(tau_edges))[None, :]
    sigma, tau, _ = grid_draws(np.random.default_rng(1), log_post, sigma_edges, tau_edges, 20_000)
    fine = np.linspace(0.05, 3.0, 20_001)
    post = np.exp(np.array([exact_log_evidence(y, s).sum() for s in fine]))
    post /= post.sum()
    mean = np.sum(post * fine)
    std = np.sqrt(np.sum(post * (fine - mean) ** 2))
    assert np.mean(sigma) == pytest.approx(mean, abs=0.05 * std)
    assert np.std(sigma) == pytest.approx(std, rel=0.05)
    # τ does not enter the likelihood: its posterior is the uniform prior
    assert np.mean(tau) == pytest.approx(0.5 * (20.0 + 1500.0), rel=0.03)
    assert np.all((tau >= 20.0) & (tau <= 1500.0))


def test_grid_nodes_cover_the_prior_in_equal_cells():
    from tengri.inference.population_grid import grid_nodes

    nodes, edges = grid_nodes((20.0, 1500.0), 4, log_spaced=True)
    assert edges[0] == pytest.approx(20.0) and edges[-1] == pytest.approx(1500.0)
    np.testing.assert_allclose(np.diff(np.log(edges)), np.log(75.0) / 4)
    assert np.all((edges[:-1] < nodes) & (nodes < edges[1:]))
    nodes, edges = grid_nodes((0.05, 1.0), 19, log_spaced=False)
    np.testing.assert_allclose(np.diff(edges), 0.05)
    np.testing.assert_allclose(nodes, edges[:-1] + 0.025)
