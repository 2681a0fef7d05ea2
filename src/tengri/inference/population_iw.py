"""Hierarchical EVI with a per-galaxy importance-weighted bound (``run("evi", objective="iw")``).

Why not the ELBO
----------------
The ELBO of a Gaussian q over [φ, z_1, …, z_N] is log p(d) minus KL(q ‖ posterior).
Each galaxy's share of that KL is the misfit of its Gaussian block to its posterior in
the non-centred field ξ_i, and that posterior grows more curved and multimodal as σ
grows (the field enters as 10^x). So the ELBO's bias is a function of (σ, τ): on the
bench galaxies it penalises σ = 0.4 against σ = 0.26 by 20–30 nats more than the
Laplace evidence does, and the joint optimum lands at small σ / large τ
(docs/population_results.md).

The bound used here
-------------------
Given the shared latents φ, the galaxies are independent, so the evidence factorises:
p(d | φ) = Π_i p(d_i | φ). Each factor is estimated by importance sampling with K
draws z_ik of the galaxy's conditional q(z_i | φ) (the block-arrow family of
:mod:`tengri.inference.population`: z_i = μ_i + C_i ε_φ + L_i ε_ik)::

    L_K = E_{q(φ)} [ Σ_i log (1/K Σ_k p(d_i, z_ik | φ) / q(z_ik | φ)) + log p(φ) − log q(φ) ]

(Burda et al. 2016, applied per galaxy). L_1 is the ELBO; L_K ≤ log p(d) for every K
and L_K → E_q(φ)[log p(d | φ) + log p(φ) − log q(φ)] as K → ∞, whatever q(z_i | φ)
is (as long as it covers the posterior), so the part of the bias that depends on σ
through the galaxies' non-Gaussianity falls like 1/K. What remains is a 2-D
variational problem for q(φ), which is cheap to correct afterwards.

Measured limit: the 1/K regime starts only once K exceeds roughly exp(variance of the
log weights). On the bench galaxies (33-D blocks, σ ≈ 0.4 dex) the ELBO is ~3 nats per
galaxy below the Laplace evidence, and K = 16–64 Gaussian draws recovered too little of
that to change the σ profile (docs/population_results.md); the default objective is
the Laplace grid of :mod:`tengri.inference.population_grid`.

The posterior of (σ, τ)
-----------------------
q(φ) is a Gaussian fit and its width is not a posterior width. After the fit, M
proposals φ_m are drawn from q(φ) with its scale multiplied by ``proposal_scale``,
each galaxy's evidence at φ_m is estimated with ``n_eval_importance`` draws, and the
φ_m are importance-resampled with weights p̂(d | φ_m) p(φ_m) / proposal(φ_m) (a
pseudo-marginal importance sampler; the estimate p̂ is unbiased, so the resampled φ
follow the exact marginal posterior as M grows). Every galaxy's draw is resampled
with the same index, from its K draws at φ_m by their weights, so the joint draws
follow the hierarchical posterior. The effective sample size of the φ weights is
returned: a small one (≪ M) means the proposal missed part of the posterior.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from tengri.errors import ConfigError
from tengri.inference.methods._engine_cache import memoised_engine
from tengri.inference.population import N_SHARED, _arrow_blocks, _arrow_init, guarded_adam_step

__all__ = ["galaxy_draws_given_shared", "galaxy_log_evidence", "iw_bound", "build_iw_engine"]

def galaxy_draws_given_shared(key, mean: jax.Array, chol: dict, eps_shared: jax.Array,
                              n_importance: int) -> tuple[jax.Array, jax.Array]:
    """K draws of every galaxy block from q(z_i | φ), φ = μ_φ + L_φφ ε_φ.

    Parameters
    ----------
    mean : (S + N d,) flat mean [μ_φ, μ_1, …, μ_N].
    chol : block-arrow factor (``_arrow_init`` layout of :mod:`tengri.inference.population`).
    eps_shared : (S,) the standard-normal shared draw ε_φ.

    Returns
    -------
    z : (K, N, d) draws z_ik = μ_i + C_i ε_φ + L_i ε_ik.
    log_q : (K, N) log q(z_ik | φ) without the −d/2 log 2π constant (it cancels against
        the same constant left out of the standard-normal latent prior).
    """
    _, galaxy_block = _arrow_blocks(chol)
    n_galaxies, d = chol["galaxy_log_diag"].shape
    eps = jax.random.normal(key, (n_importance, n_galaxies, d))
    centre = mean[N_SHARED:].reshape(n_galaxies, d) + chol["coupling"] @ eps_shared
    z = centre + jnp.einsum("kgj,gij->kgi", eps, galaxy_block)
    log_q = -0.5 * jnp.sum(eps**2, axis=-1) - jnp.sum(chol["galaxy_log_diag"], axis=-1)
    return z, log_q


def galaxy_log_weights(galaxy_lls: Callable, phi: jax.Array, z: jax.Array, log_q: jax.Array,
                       data_args) -> jax.Array:
    """log p(d_i, z_ik | φ) − log q(z_ik | φ), shape (K, N), for draws ``z`` (K, N, d).

    ``galaxy_lls(z_flat (S + N d,), data_args) -> (N,)`` are the galaxies' log-likelihoods
    at the flat vector [φ, z_1, …, z_N]; the latent prior of each z_i is standard normal.
    """
    def one(z_k):
        flat = jnp.concatenate([phi, z_k.reshape(-1)])
        return galaxy_lls(flat, data_args) - 0.5 * jnp.sum(z_k**2, axis=-1)

    return jax.vmap(one)(z) - log_q


def _log_mean_exp(log_w: jax.Array) -> jax.Array:
    """log (1/K Σ_k exp(log_w_k)) over axis 0."""
    return jax.nn.logsumexp(log_w, axis=0) - jnp.log(log_w.shape[0])


def galaxy_log_evidence(key, galaxy_lls: Callable, mean: jax.Array, chol: dict, eps_shared: jax.Array,
                        data_args, n_importance: int) -> jax.Array:
    """Importance-sampling estimate of log p(d_i | φ) for every galaxy, shape (N,), at
    φ = μ_φ + L_φφ ε_φ with K = ``n_importance`` draws of q(z_i | φ). Its expectation is
    ≤ log p(d_i | φ) and the gap falls like 1/K (for K = 1 it is the galaxy's ELBO)."""
    shared_block, _ = _arrow_blocks(chol)
    phi = mean[:N_SHARED] + shared_block @ eps_shared
    z, log_q = galaxy_draws_given_shared(key, mean, chol, eps_shared, n_importance)
    return _log_mean_exp(galaxy_log_weights(galaxy_lls, phi, z, log_q, data_args))


def iw_bound(key, galaxy_lls: Callable, mean: jax.Array, chol: dict, data_args, n_samples: int,
             n_importance: int) -> jax.Array:
    """Monte Carlo estimate of the hierarchical importance-weighted bound L_K (module
    docstring) with ``n_samples`` draws of φ and K = ``n_importance`` draws per galaxy
    and φ. The −(S + N d)/2 log 2π constants of prior and q cancel and are left out
    (the ``neg_elbo`` of the ELBO engine also leaves out q's entropy constant
    (S + N d)/2, so it is (S + N d)/2 below this bound at K = 1)."""
    shared_block, _ = _arrow_blocks(chol)
    k_shared, k_galaxy = jax.random.split(key)
    eps_shared = jax.random.normal(k_shared, (n_samples, N_SHARED))

    def one(eps, k):
        phi = mean[:N_SHARED] + shared_block @ eps
        evidence = galaxy_log_evidence(k, galaxy_lls, mean, chol, eps, data_args, n_importance)
        log_prior_over_q = -0.5 * jnp.sum(phi**2) + 0.5 * jnp.sum(eps**2) + jnp.sum(chol["shared_log_diag"])
        return jnp.sum(evidence) + log_prior_over_q

    return jnp.mean(jax.vmap(one)(eps_shared, jax.random.split(k_galaxy, n_samples)))


def _categorical_ess(log_w: jax.Array) -> jax.Array:
    """Kish effective sample size of normalised weights exp(log_w)."""
    w = jax.nn.softmax(log_w)
    return 1.0 / jnp.sum(w**2)


@memoised_engine
def build_iw_engine(galaxy_lls: Callable, n_galaxies: int, n_dim_galaxy: int, n_samples: int,
                    n_importance: int, n_iterations: int, n_posterior_samples: int, n_eval_importance: int,
                    proposal_scale: float, n_warmup: int = 0, eval_batch: int = 8) -> Callable:
    """Jitted ``engine(key, z0, data_args, learning_rate, init_scale) -> dict``.

    Maximises :func:`iw_bound` over a block-arrow Gaussian (mean and factor) with Adam
    (learning rate cosine-decayed to 1 % over ``n_iterations`` steps, one ``lax.scan``;
    a step whose bound or gradient is not finite is skipped). The first ``n_warmup``
    of the steps use K = 1 (the ELBO): from the narrow initial q, the K-draw gradient
    is dominated by one draw per galaxy and Adam left q poor where the posterior is
    non-Gaussian (measured at σ = 0.42 dex: the bound 50 nats below an ELBO-trained
    q's ELBO), while from the ELBO's q the bound can only start above the ELBO. Then draws
    ``n_posterior_samples`` joint draws by importance resampling of φ (module
    docstring).

    Returns a dict: ``mean`` (D,), ``neg_bound`` history (n_iterations,), ``draws``
    (M, D), ``shared_log_weights`` (M,), ``shared_ess``, ``proposal_shared`` (M, S),
    and ``log_evidence`` (M, N) (the per-galaxy estimates at each proposal).
    """
    if n_galaxies < 1 or n_dim_galaxy < 1:
        raise ConfigError(f"the IW engine needs N ≥ 1 galaxies of dimension ≥ 1, got {n_galaxies}, {n_dim_galaxy}")

    @jax.jit
    def engine(key, z0, data_args, learning_rate, init_scale):
        def loss(params, k, n_draws):
            mean, chol = params
            return -iw_bound(k, galaxy_lls, mean, chol, data_args, n_samples, n_draws)

        loop_key, draw_key = jax.random.split(key)
        params = (z0, _arrow_init(n_galaxies, n_dim_galaxy, init_scale))
        optimiser = optax.adam(optax.cosine_decay_schedule(learning_rate, n_iterations, alpha=0.01))
        state = optimiser.init(params)

        def step(n_draws):
            return guarded_adam_step(lambda p, k: loss(p, k, n_draws), optimiser)

        keys = jax.random.split(loop_key, n_iterations)
        carry, warm = jax.lax.scan(step(1), (params, state), keys[:n_warmup])
        (params, _), history = jax.lax.scan(step(n_importance), carry, keys[n_warmup:])
        history = jnp.concatenate([warm, history])
        draws = _resample(draw_key, params, data_args)
        return {"mean": params[0], "neg_bound": history, **draws}

    def _resample(key, params, data_args):
        mean, chol = params
        shared_block, _ = _arrow_blocks(chol)
        k_prop, k_eval, k_pick = jax.random.split(key, 3)
        # proposal N(μ_φ, (c L_φφ)(c L_φφ)ᵀ): ε_φ = c η with η standard normal
        eta = jax.random.normal(k_prop, (n_posterior_samples, N_SHARED))
        eps_shared = proposal_scale * eta
        phi = mean[:N_SHARED] + eps_shared @ shared_block.T
        log_proposal = (-0.5 * jnp.sum(eta**2, axis=1) - jnp.sum(chol["shared_log_diag"])
                        - N_SHARED * jnp.log(proposal_scale))

        def at(args):
            eps, p, k = args
            k_draw, k_choose = jax.random.split(k)
            z, log_q = galaxy_draws_given_shared(k_draw, mean, chol, eps, n_eval_importance)
            log_w = galaxy_log_weights(galaxy_lls, p, z, log_q, data_args)  # (K, N)
            pick = jax.random.categorical(k_choose, log_w, axis=0)  # (N,)
            chosen = jnp.take_along_axis(z, pick[None, :, None], axis=0)[0]  # (N, d)
            return _log_mean_exp(log_w), chosen

        keys = jax.random.split(k_eval, n_posterior_samples)
        log_evidence, chosen = jax.lax.map(at, (eps_shared, phi, keys), batch_size=eval_batch)
        log_w = jnp.sum(log_evidence, axis=1) - 0.5 * jnp.sum(phi**2, axis=1) - log_proposal
        log_w = jnp.where(jnp.isfinite(log_w), log_w, -jnp.inf)
        index = jax.random.categorical(k_pick, log_w, shape=(n_posterior_samples,))
        draws = jnp.concatenate([phi[index], chosen[index].reshape(n_posterior_samples, -1)], axis=1)
        return {"draws": draws, "shared_log_weights": log_w, "shared_ess": _categorical_ess(log_w),
                "proposal_shared": phi, "log_evidence": log_evidence}

    return engine
