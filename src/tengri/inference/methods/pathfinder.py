"""Pathfinder variational inference, single- and multi-path (Zhang, Carpenter,
Gelman & Vehtari 2022, JMLR 23:306).

One *path*: L-BFGS runs on the latent log posterior ``log L(z) − |z|²/2``; at each
iterate the L-BFGS inverse-Hessian estimate defines a Gaussian, and the Gaussian
with the highest Monte Carlo ELBO (``num_samples_elbo`` draws each) is kept
(``blackjax.vi.pathfinder``).

Multi-path (``n_paths > 1``, the paper's Algorithm 2): paths start at
``problem.init`` and at ``n_paths − 1`` draws from the prior, ``N(0, I)`` in the
latent space; each draws ``n_draws_per_path`` points ``x`` from its Gaussian
``q_k``; the pooled draws get log weights ``log p(x) − log q(x)``, which are
Pareto-smoothed (PSIS, arviz), and ``n_samples`` draws are resampled from them with
replacement. A path that stopped at a worse local optimum has draws of low
``log p`` and loses its weight, so one good path is enough.

``q`` is by default (``importance_weights = "mixture"``) the equal mixture
``(1/K) Σ_k q_k`` of the K paths' Gaussians, the density the pooled draws were
actually drawn from (multiple importance sampling's balance heuristic). The paper's
Algorithm 2 weights each draw by its own path's ``q_k`` (``"path"``); that
estimator counts a mode once per path that found it: with modes of mass 0.95 and
0.05 found by 3 paths and 1 path it returns them in proportion 0.983 : 0.017
instead of 0.95 : 0.05 (tests/test_methods_pathfinder.py). All paths run under one
compiled program (``lax.map`` over the starts: paths run one after another, each
L-BFGS loop stopping at its own convergence, which a ``vmap`` would not do).

With ``n_paths = 1`` the method is single-path Pathfinder: ``n_samples`` draws of
the one Gaussian, not reweighted (the Pareto k̂ of their weights is still reported).

Paths start away from the MAP on purpose: Pathfinder estimates the covariance from
the L-BFGS path itself, so a path that starts at the optimum has no length and no
curvature information (measured on the 5-D Gaussian target: started at the MAP its
variances were 2–106× too large; started at the prior median within 12%).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.optimizers.lbfgs import (
    _minimize_lbfgs,
    bfgs_sample,
    lbfgs_inverse_hessian_factors,
)

from tengri.analysis.diagnostics import psis_log_weights, resample_indices
from tengri.errors import ParameterError
from tengri.inference.methods._engine_cache import memoised_engine
from tengri.inference.methods.optimize import initial_point, positive_int, validated_options
from tengri.inference.problem import Problem, RawResult, log_density

__all__ = ["run_pathfinder", "build_pathfinder_engine", "one_path"]


# "mixture": q = the equal mixture of all paths' Gaussians; "path": each draw's own path's
IMPORTANCE_WEIGHTS = ("mixture", "path")
# blackjax.vi.pathfinder's L-BFGS settings (history size, tolerances, line-search steps)
LBFGS_HISTORY = 10
LBFGS_GTOL = 1e-8
LBFGS_FTOL = 1e-5
LBFGS_MAX_LINESEARCH = 1000


def one_path(key: jax.Array, logdensity_fn: Callable, z0: jax.Array,
             num_samples_elbo: int, maxiter: int) -> dict[str, jax.Array]:
    """One Pathfinder path: L-BFGS from ``z0`` (d,), a Gaussian per iterate, ELBOs.

    Written on blackjax's L-BFGS pieces rather than ``blackjax.vi.pathfinder``
    because that (blackjax 1.7.1) centres each iterate's Gaussian at
    ``x + Σ ∇(−log p)``, a Newton step *away* from the mode (the L-BFGS history
    holds gradients of the objective −log p): checked on a 2-D Gaussian, whose
    iterate-3 Gaussian it centred at y = +1.06 instead of the mode's −2.0. Here the
    mean is ``x + Σ ∇log p`` (the paper's Algorithm 1), so early iterates compete
    for the best ELBO with correctly placed Gaussians.

    Returns
    -------
    dict
        ``position``, ``grad_log_density`` (maxiter + 1, d), ``alpha`` (maxiter + 1, d),
        ``beta`` (maxiter + 1, d, 2·history), ``gamma`` (maxiter + 1, 2·history,
        2·history), ``elbo`` (maxiter + 1,): −inf past the end of the path or where
        not finite.
    """
    (_, status), history = _minimize_lbfgs(
        lambda z: -logdensity_fn(z), z0, maxiter, LBFGS_HISTORY, LBFGS_GTOL, LBFGS_FTOL,
        LBFGS_MAX_LINESEARCH)
    grad_log_density = -history.g
    # position and gradient steps, zero where L-BFGS skipped the curvature update,
    # padded in front so that every iterate has a window of LBFGS_HISTORY pairs
    updated = history.update_mask[1:]
    pad = ((LBFGS_HISTORY, 0), (0, 0))
    steps = jnp.pad(jnp.where(updated, jnp.diff(history.x, axis=0), 0.0), pad)
    # the factors take the change of the objective's gradient, −Δ∇log p
    grad_steps = jnp.pad(jnp.where(updated, jnp.diff(history.g, axis=0), 0.0), pad)

    def gaussian_and_elbo(index, key_elbo):
        window = index + jnp.arange(LBFGS_HISTORY)
        beta, gamma = lbfgs_inverse_hessian_factors(
            steps[window].T, grad_steps[window].T, history.alpha[index])
        draws, log_q = bfgs_sample(key_elbo, num_samples_elbo, history.x[index],
                                   grad_log_density[index], history.alpha[index], beta,
                                   gamma)
        elbo = jnp.mean(jax.vmap(logdensity_fn)(draws) - log_q)
        return beta, gamma, elbo

    n_points = maxiter + 1
    beta, gamma, elbo = jax.vmap(gaussian_and_elbo)(
        jnp.arange(n_points), jax.random.split(key, n_points))
    on_path = (jnp.arange(n_points) < status.iter_num) & jnp.isfinite(elbo)
    return {"position": history.x, "grad_log_density": grad_log_density,
            "alpha": history.alpha, "beta": beta, "gamma": gamma,
            "elbo": jnp.where(on_path, elbo, -jnp.inf)}


def gaussian_log_pdf(x: jax.Array, mean: jax.Array, covariance: jax.Array) -> jax.Array:
    """log N(x; mean, covariance) of points ``x`` (n, d); mean (d,), covariance (d, d)."""
    chol = jnp.linalg.cholesky(covariance)
    whitened = jax.scipy.linalg.solve_triangular(chol, (x - mean).T, lower=True)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * (jnp.sum(whitened**2, axis=0) + log_det + mean.shape[0] * jnp.log(2 * jnp.pi))


@memoised_engine
def build_pathfinder_engine(log_likelihood: Callable, n_dim: int, maxiter: int,
                            num_samples_elbo: int, n_paths: int,
                            n_draws_per_path: int, n_resample: int) -> Callable:
    """Jitted ``engine(key, z0, data_args) -> dict`` running ``n_paths`` paths.

    Path 0 starts at ``z0`` (d,), the others at draws from ``N(0, I)``.

    Returns
    -------
    callable
        The engine returns, per path (leading axis ``n_paths``): ``starts`` (d,),
        ``draws`` (n_draws_per_path, d) from the path's best-ELBO Gaussian, their
        ``log_density`` and ``log_q`` (n_draws_per_path,), ``elbo`` of the chosen
        Gaussian, ``elbo_path`` (maxiter + 1,) with −inf past the end of the path
        or where the ELBO was not finite, ``neg_log_density_path`` (maxiter + 1,)
        along the L-BFGS path; and ``uniforms`` (n_resample,) in [0, 1) for the
        host's resampling.
    """

    @jax.jit
    def engine(key, z0, data_args):
        def logdensity_fn(z):
            return log_density(log_likelihood, z, data_args)

        def run_path(key_and_start):
            key_path, start = key_and_start
            key_fit, key_draws = jax.random.split(key_path)
            path = one_path(key_fit, logdensity_fn, start, num_samples_elbo, maxiter)
            best = jnp.argmax(path["elbo"])
            draws, log_q = bfgs_sample(key_draws, n_draws_per_path, path["position"][best],
                                       path["grad_log_density"][best], path["alpha"][best],
                                       path["beta"][best], path["gamma"][best])
            alpha, beta, gamma = (path[k][best] for k in ("alpha", "beta", "gamma"))
            covariance = jnp.diag(alpha) + beta @ gamma @ beta.T
            return {
                "draws": draws,
                "log_density": jax.vmap(logdensity_fn)(draws),
                "log_q": log_q,
                "mean": path["position"][best] + covariance @ path["grad_log_density"][best],
                "covariance": covariance,
                "elbo": path["elbo"][best],
                "elbo_path": path["elbo"],
                "neg_log_density_path": -jax.vmap(logdensity_fn)(path["position"]),
            }

        key_starts, key_paths, key_resample = jax.random.split(key, 3)
        prior_starts = jax.random.normal(key_starts, (n_paths - 1, n_dim), dtype=z0.dtype)
        starts = jnp.concatenate([z0[None, :], prior_starts], axis=0)
        out = jax.lax.map(run_path, (jax.random.split(key_paths, n_paths), starts))
        out["starts"] = starts
        pooled = out["draws"].reshape(-1, n_dim)
        log_q_each = jax.vmap(gaussian_log_pdf, in_axes=(None, 0, 0))(
            pooled, out["mean"], out["covariance"])                 # (n_paths, n_pooled)
        out["log_q_mixture"] = (jax.scipy.special.logsumexp(log_q_each, axis=0)
                                - jnp.log(n_paths)).reshape(n_paths, n_draws_per_path)
        out["uniforms"] = jax.random.uniform(key_resample, (n_resample,), dtype=z0.dtype)
        return out

    return engine


def _path_diagnostics(out: dict[str, np.ndarray], best: int) -> dict[str, Any]:
    """ELBO, best iterate and length of every path; entries for path ``best`` unsuffixed."""
    elbo_path = np.asarray(out["elbo_path"])
    finite = np.isfinite(elbo_path)
    lengths = finite.sum(axis=1)
    best_iterations = np.argmax(np.where(finite, elbo_path, -np.inf), axis=1)
    elbo = np.asarray(out["elbo"], dtype=np.float64)
    return {
        "elbo": float(elbo[best]),
        "best_iteration": int(best_iterations[best]),
        "path_length": int(lengths[best]),
        "best_path": best,
        "elbo_per_path": elbo,
        "path_length_per_path": lengths.astype(np.int64),
    }


def run_pathfinder(problem: Problem, key: jax.Array, **options: Any) -> RawResult:
    """Pathfinder approximation of the latent posterior (multi-path by default).

    Parameters
    ----------
    problem : Problem
    key : jax.Array
    **options
        ``n_samples`` (draws returned), ``n_paths`` (1: single-path Pathfinder from
        ``problem.init``; more: that path plus ``n_paths − 1`` from prior draws,
        importance-resampled), ``n_draws_per_path`` (draws of each path's Gaussian
        that are weighted and resampled; unused with one path),
        ``importance_weights`` ("mixture" or "path": the proposal density in the
        weights, module docstring), ``num_samples_elbo``
        (draws per ELBO estimate), ``maxiter`` (L-BFGS iterations, static: it sizes
        the path).

    Returns
    -------
    RawResult
        ``samples`` (1, n_samples, d), ``point`` = their mean, ``loss_history`` =
        negative log posterior along the L-BFGS path of the highest-ELBO path
        (entry 0 = its start). Diagnostics: ``elbo``, ``best_iteration`` (index of
        the chosen Gaussian on that path), ``path_length`` (its iterates with a
        finite ELBO), ``best_path``, ``elbo_per_path`` and
        ``path_length_per_path`` (n_paths,), ``weight_per_path`` (n_paths,: share
        of the smoothed importance weight held by each path's draws), ``pareto_k``
        (k̂ of the importance weights; > 0.7: the approximation is poor and the
        draws unreliable), ``ess`` (Kish effective size of the smoothed weights)
        and ``n_unique_draws`` (distinct draws among the returned ones).
    """
    options = validated_options("pathfinder", options)
    n_samples = positive_int("pathfinder", "n_samples", options["n_samples"])
    num_samples_elbo = positive_int("pathfinder", "num_samples_elbo",
                                    options["num_samples_elbo"])
    maxiter = positive_int("pathfinder", "maxiter", options["maxiter"])
    n_paths = positive_int("pathfinder", "n_paths", options["n_paths"])
    n_draws_per_path = positive_int("pathfinder", "n_draws_per_path",
                                    options["n_draws_per_path"])
    weighting = options["importance_weights"]
    if weighting not in IMPORTANCE_WEIGHTS:
        raise ParameterError(f"pathfinder: option 'importance_weights' must be one of "
                             f"{IMPORTANCE_WEIGHTS}, got {weighting!r}")
    single = n_paths == 1
    engine = build_pathfinder_engine(problem.log_likelihood, problem.n_dim, maxiter,
                                     num_samples_elbo, n_paths,
                                     n_samples if single else n_draws_per_path, n_samples)
    out = jax.device_get(engine(key, initial_point(problem), problem.data_args))

    draws = np.asarray(out["draws"]).reshape(-1, problem.n_dim)
    log_q = out["log_q_mixture"] if weighting == "mixture" else out["log_q"]
    log_weights, pareto_k = psis_log_weights(
        (np.asarray(out["log_density"]) - np.asarray(log_q)).ravel())
    if single:
        samples = draws
    else:
        samples = draws[resample_indices(log_weights, np.asarray(out["uniforms"]))]
    weights = np.exp(log_weights)
    best = int(np.argmax(out["elbo"]))
    diagnostics = _path_diagnostics(out, best)
    diagnostics.update(
        weight_per_path=weights.reshape(n_paths, -1).sum(axis=1),
        pareto_k=pareto_k,
        ess=float(1.0 / np.sum(weights**2)),
        n_unique_draws=int(len(np.unique(samples, axis=0))),
    )
    history = np.asarray(out["neg_log_density_path"][best])[: max(diagnostics["path_length"], 1)]
    # device_put, not jnp: no small staging program is compiled per call
    return RawResult(method="pathfinder", point=jax.device_put(samples.mean(axis=0)),
                     samples=jax.device_put(samples[None, :, :]), diagnostics=diagnostics,
                     loss_history=history)
