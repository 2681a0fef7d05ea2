"""The importance-weighted hierarchical bound of "evi" on a linear-Gaussian population whose
evidence is known exactly: y_i = s z_i + n_i, z_i ~ N(0, I), n_i ~ N(0, I), s = exp(φ_0),
so y_i ~ N(0, (1 + s²) I) and the posterior of z_i is N(s y_i / (1 + s²), I / (1 + s²))."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tengri  # noqa: F401  (float64)

N_GALAXIES, D = 6, 3


def galaxy_lls(flat, data_args):
    """Per-galaxy log N(y_i; s z_i, I) at the flat vector [φ (2), z_1, …, z_N]; φ_1 is unused."""
    scale = jnp.exp(flat[0])
    z = flat[2:].reshape(N_GALAXIES, D)
    r = data_args["y"] - scale * z
    return -0.5 * jnp.sum(r**2, axis=1) - 0.5 * D * jnp.log(2 * jnp.pi)


def exact_log_evidence(y, scale):
    """log p(y_i | s) per galaxy, (N,)."""
    var = 1.0 + scale**2
    return -0.5 * np.sum(y**2, axis=1) / var - 0.5 * D * np.log(2 * np.pi * var)


def simulate(scale, seed=0):
    rng = np.random.default_rng(seed)
    return scale * rng.normal(size=(N_GALAXIES, D)) + rng.normal(size=(N_GALAXIES, D))


def prior_q(log_shared_scale=np.log(1e-6)):
    """A q whose galaxy blocks are the latent prior N(0, I) (a poor proposal when s is large)
    and whose shared block is pinned at its mean."""
    from tengri.inference.population import _arrow_init

    chol = _arrow_init(N_GALAXIES, D, 1.0)
    chol["shared_log_diag"] = jnp.full((2,), log_shared_scale)
    return chol


@pytest.mark.parametrize("log_scale", [0.0, 1.0])
def test_galaxy_evidence_approaches_the_exact_one_as_k_grows_and_the_elbo_does_not(log_scale):
    from tengri.inference.population_iw import galaxy_log_evidence

    y = simulate(np.exp(log_scale))
    mean = jnp.concatenate([jnp.array([log_scale, 0.0]), jnp.zeros(N_GALAXIES * D)])
    chol, exact = prior_q(), exact_log_evidence(y, np.exp(log_scale))

    def gap(k, n_repeat=200):
        fn = jax.jit(jax.vmap(lambda key: galaxy_log_evidence(key, galaxy_lls, mean, chol, jnp.zeros(2),
                                                              {"y": jnp.asarray(y)}, k)))
        return float(np.sum(exact - np.mean(np.asarray(fn(jax.random.split(jax.random.PRNGKey(k), n_repeat))), 0)))

    elbo_gap, gap_16, gap_4096 = gap(1), gap(16), gap(4096)
    assert elbo_gap > 2.0  # the ELBO of the prior as q: KL(prior ‖ posterior) summed over galaxies
    assert 0.0 < gap_16 < elbo_gap
    assert abs(gap_4096) < 0.05 * elbo_gap + 0.02


def test_engine_shared_draws_follow_the_exact_hyperparameter_posterior():
    from tengri.inference.population_iw import build_iw_engine

    y = simulate(np.exp(0.7), seed=4)
    engine = build_iw_engine(galaxy_lls, N_GALAXIES, D, 4, 16, 600, 2000, 64, 2.0, 200)
    out = engine(jax.random.PRNGKey(0), jnp.zeros(2 + N_GALAXIES * D), {"y": jnp.asarray(y)}, 0.02, 0.3)
    phi0 = np.asarray(out["draws"][:, 0])
    grid = np.linspace(-3, 3, 2001)
    log_post = np.array([exact_log_evidence(y, np.exp(g)).sum() for g in grid]) - 0.5 * grid**2
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    exact_mean = np.sum(post * grid)
    exact_std = np.sqrt(np.sum(post * (grid - exact_mean) ** 2))
    assert float(out["shared_ess"]) > 200
    assert abs(np.mean(phi0) - exact_mean) < 0.2 * exact_std
    assert np.std(phi0) == pytest.approx(exact_std, rel=0.15)
    # φ_1 does not enter the likelihood: its posterior is the N(0, 1) prior
    assert np.std(np.asarray(out["draws"][:, 1])) == pytest.approx(1.0, rel=0.15)
