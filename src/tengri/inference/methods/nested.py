"""Nested slice sampling (``nss``, alias ``evidence``): Bayesian evidence and posterior.

Nested sampling (Skilling 2006) integrates the likelihood over the prior by
shrinking a set of live points through nested likelihood contours. The inner
move is blackjax's nested *slice* sampler (``blackjax.nss``; Yallup, Kroupa &
Handley 2026): hit-and-run slice steps along directions drawn from the live-point
covariance, constrained to ``log L > log L_min``.

In tengri's latent space the prior is ``N(0, I)`` (see ``docs/architecture.md``), so
the initial live points are standard-normal draws and ``logprior_fn`` is the
standard-normal log density; any physical prior (uniform box, log-uniform, ...)
is already folded into the latent map, and the evidence is the evidence of the
physical model.

Stopping, evidence and its error
--------------------------------
The run stops at the end of the first chunk of ``CHUNK_STEPS`` iterations after
which ``log(Z_dead + Z_live) − log Z_dead < dlogz`` (for small ``dlogz`` this is
"the live points hold less than the fraction ``dlogz`` of the evidence"), or
after ``max_steps`` iterations. Iterations run in fixed-size jitted chunks so
that every galaxy reuses one compiled program; running up to one chunk past the
criterion only compresses the prior further.

The dead points and the final live points are then weighted exactly as
``blackjax.ns.utils.finalise`` + ``log_weights`` do — the effective number of live
points at each death for batch deletion (Fowlie, Handley & Su 2021), simulated
prior-volume shrinkage ``log X_i = Σ log(u_j)/m_j`` with ``u ~ U(0, 1)`` (Skilling
2006), trapezoidal volume elements — but in numpy (:func:`nested_sampling_weights`).
blackjax's versions cannot be jitted (a data-dependent boolean mask) and, run op
by op, recompile for every new number of dead points: 5–11 s per galaxy measured
here, against milliseconds in numpy. ``tests/test_methods_nested.py`` checks the
effective live counts against ``blackjax.ns.utils.compute_num_live``.

Each of the ``N_VOLUME_DRAWS`` simulated volume sequences gives one ``log Z``;
``log_evidence`` is their mean and ``log_evidence_err`` their standard deviation —
the standard nested-sampling estimate of the statistical error (Skilling 2006),
which does not include any bias of an imperfect inner sampler.

Posterior draws
---------------
Live points are *not* posterior samples. Like ``blackjax.ns.utils.sample``, the
dead + final-live points are resampled with replacement with weights
``exp(mean log w)`` into ``n_samples`` equally weighted draws; the number of
distinct points is about the Kish effective sample size, reported as ``ess``.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import ParameterError
from tengri.inference.methods._engine_cache import memoised_engine
from tengri.inference.problem import Problem, RawResult
from tengri.inference.registry import method_options

__all__ = ["NSSEngine", "build_nss_engine", "run_nss", "standard_normal_logpdf",
           "effective_live_points", "nested_sampling_weights"]

# Iterations per jitted chunk; the stopping rule is checked between chunks.
CHUNK_STEPS = 25
# Simulated prior-volume sequences for the evidence error.
N_VOLUME_DRAWS = 200


def standard_normal_logpdf(z: jax.Array) -> jax.Array:
    """``log N(z; 0, I)`` of a latent point ``z`` of shape (d,)."""
    return -0.5 * jnp.sum(z * z) - 0.5 * z.shape[-1] * jnp.log(2.0 * jnp.pi)


class NSSEngine(NamedTuple):
    """The two jitted pieces of a nested-sampling run.

    Attributes
    ----------
    init : callable
        ``(key, data_args) -> state``: ``n_live`` standard-normal live points.
    run_chunk : callable
        ``(key, state, data_args) -> (state, dead, log_z, log_z_live)``: run
        ``chunk_steps`` iterations; ``dead`` holds the deleted particles with a
        leading axis of ``chunk_steps × num_delete``.
    """

    init: Callable
    run_chunk: Callable


def effective_live_points(log_l_death: np.ndarray, log_l_birth: np.ndarray) -> np.ndarray:
    """Number of live points at each death, for any deletion schedule.

    Fowlie, Handley & Su (2021): order every birth (``+1``) and death (``−1``) by
    log-likelihood, deaths before births at a tie (a point born on a contour is
    born after the point defining it died), and count; the live count at a death
    is the running sum just before it. Initial live points are born at
    ``−∞`` (``NaN`` birth).

    Parameters
    ----------
    log_l_death, log_l_birth : numpy.ndarray, shape (n,)
        Log-likelihood of each particle and of the contour it was born on.

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        Live count at each death, in order of increasing ``log_l_death``.
    """
    births = np.where(np.isnan(log_l_birth), -np.inf, log_l_birth)
    level = np.concatenate([births, log_l_death])
    change = np.concatenate([np.ones(births.size, int), -np.ones(log_l_death.size, int)])
    order = np.lexsort((change, level))
    running = np.maximum(np.cumsum(change[order]), 0)
    return running[change[order] == -1] + 1


def nested_sampling_weights(log_l_death: np.ndarray, log_l_birth: np.ndarray,
                            rng: np.random.Generator, n_volume_draws: int = N_VOLUME_DRAWS
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Importance log-weights of all dead (and final live) points.

    Parameters
    ----------
    log_l_death, log_l_birth : numpy.ndarray, shape (n,)
        As in :func:`effective_live_points`.
    rng : numpy.random.Generator
        Source of the simulated shrinkage factors.
    n_volume_draws : int
        Simulated prior-volume sequences.

    Returns
    -------
    log_w : numpy.ndarray, shape (n, n_volume_draws)
        ``log(ΔX_i L_i)`` per particle (input order) and volume sequence, with
        ``ΔX_i = (X_{i−1} − X_{i+1}) / 2``, ``X_0 = 1``, ``X_{n+1} = 0``.
    log_z : numpy.ndarray, shape (n_volume_draws,)
        ``log Σ_i w_i`` for each sequence.
    """
    order = np.argsort(log_l_death, kind="stable")
    live = effective_live_points(log_l_death, log_l_birth)
    shrink = np.log1p(-rng.uniform(size=(order.size, n_volume_draws))) / live[:, None]
    log_x = np.cumsum(shrink, axis=0)
    before = np.vstack([np.zeros((1, n_volume_draws)), log_x[:-1]])
    after = np.vstack([log_x[1:], np.full((1, n_volume_draws), -np.inf)])
    # log((X_{i−1} − X_{i+1})/2) = log X_{i−1} + log(1 − X_{i+1}/X_{i−1}) − log 2
    log_dx = before + np.log(-np.expm1(after - before)) - np.log(2.0)
    log_w_sorted = log_dx + log_l_death[order][:, None]
    log_w = np.empty_like(log_w_sorted)
    log_w[order] = log_w_sorted
    peak = log_w.max(axis=0)
    log_z = peak + np.log(np.sum(np.exp(log_w - peak), axis=0))
    return log_w, log_z


@memoised_engine
def build_nss_engine(log_likelihood: Callable, n_dim: int, n_live: int, num_delete: int,
                     num_inner_steps: int, chunk_steps: int = CHUNK_STEPS) -> NSSEngine:
    """Build (once per likelihood, dimension and static options) the NSS engine.

    Parameters
    ----------
    log_likelihood : callable
        ``(z (d,), data_args) -> scalar``.
    n_dim, n_live, num_delete, num_inner_steps, chunk_steps : int
        Static sizes; ``num_inner_steps`` already resolved (> 0).
    """

    def algorithm(data_args: Any):
        return blackjax.nss(
            logprior_fn=standard_normal_logpdf,
            loglikelihood_fn=lambda z: log_likelihood(z, data_args),
            num_delete=num_delete,
            num_inner_steps=num_inner_steps,
        )

    @jax.jit
    def init(key, data_args):
        live = jax.random.normal(key, (n_live, n_dim))
        return algorithm(data_args).init(live)

    @jax.jit
    def run_chunk(key, state, data_args):
        step = algorithm(data_args).step

        def one(st, k):
            st, info = step(k, st)
            return st, info.particles

        state, dead = jax.lax.scan(one, state, jax.random.split(key, chunk_steps))
        dead = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), dead)
        return state, dead, state.integrator.logZ, state.integrator.logZ_live

    return NSSEngine(init, run_chunk)


def _validated(options: dict, n_dim: int) -> dict:
    opts = method_options("nss", options)
    for name in ("n_live", "num_delete", "n_samples", "max_steps"):
        if int(opts[name]) < 1:
            raise ParameterError(f"{name} must be ≥ 1, got {opts[name]!r}")
    if int(opts["num_delete"]) >= int(opts["n_live"]):
        raise ParameterError(
            f"num_delete ({opts['num_delete']}) must be smaller than n_live ({opts['n_live']})")
    if int(opts["num_inner_steps"]) < 0:
        raise ParameterError(f"num_inner_steps must be ≥ 0 (0 = max(5, 2·dim)), "
                             f"got {opts['num_inner_steps']!r}")
    if not float(opts["dlogz"]) > 0:
        raise ParameterError(f"dlogz must be > 0, got {opts['dlogz']!r}")
    if int(opts["num_inner_steps"]) == 0:
        opts["num_inner_steps"] = max(5, 2 * n_dim)
    return opts


def run_nss(problem: Problem, key: jax.Array, **options) -> RawResult:
    """Nested slice sampling of ``problem``: log-evidence and posterior draws.

    Options (defaults in the ``[nss]`` section of ``defaults.toml``)
    --------------------------------------------------------------
    n_live : int
        Live points (the evidence error scales as ``√(H / n_live)``, ``H`` the
        prior-to-posterior information in nats).
    num_delete : int
        Points replaced per iteration (parallel batch).
    num_inner_steps : int
        Slice steps per new point; 0 → ``max(5, 2·dim)`` (blackjax's advice:
        fewer can bias the evidence upward above ``dim ≈ 10``).
    dlogz : float
        Stopping tolerance (module docstring).
    n_samples : int
        Equally weighted posterior draws returned.
    max_steps : int
        Iteration cap (rounded up to whole chunks); hitting it warns.

    Returns
    -------
    RawResult
        ``samples`` (1, n_samples, d), ``point`` their mean, ``log_evidence`` and
        ``log_evidence_err`` (natural log), diagnostics ``n_iterations``,
        ``n_dead``, ``ess``, ``converged``, ``log_z_integrator`` (blackjax's
        running estimate, for comparison), ``num_inner_steps``.
    """
    opts = _validated(options, problem.n_dim)
    n_live, num_delete = int(opts["n_live"]), int(opts["num_delete"])
    engine = build_nss_engine(problem.log_likelihood, problem.n_dim, n_live, num_delete,
                              int(opts["num_inner_steps"]))
    init_key, run_key, finish_key = jax.random.split(key, 3)
    state = engine.init(init_key, problem.data_args)

    dlogz = float(opts["dlogz"])
    max_chunks = -(-int(opts["max_steps"]) // CHUNK_STEPS)
    dead_chunks: list = []
    converged = False
    log_z = log_z_live = -np.inf
    for chunk in range(max_chunks):
        state, dead, log_z, log_z_live = engine.run_chunk(
            jax.random.fold_in(run_key, chunk), state, problem.data_args)
        dead_chunks.append(dead)
        log_z, log_z_live = float(log_z), float(log_z_live)
        if np.isfinite(log_z) and np.logaddexp(log_z, log_z_live) - log_z < dlogz:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"nss: stopped after max_steps={opts['max_steps']} iterations before reaching "
            f"dlogz={dlogz} (live fraction log Z_live − log Z = {log_z_live - log_z:.3g}); "
            f"the evidence misses the live points' unexplored mass", RuntimeWarning, stacklevel=2)

    # Merge dead and final live points (what blackjax's finalise does), on the host.
    final = [state.particles] + dead_chunks
    positions = np.concatenate([np.asarray(c.position) for c in final])
    log_l = np.concatenate([np.asarray(c.loglikelihood) for c in final])
    log_l_birth = np.concatenate([np.asarray(c.loglikelihood_birth) for c in final])
    rng = np.random.default_rng(np.asarray(jax.random.key_data(finish_key)).tolist())
    log_w, log_z_draws = nested_sampling_weights(log_l, log_l_birth, rng)
    mean_log_w = log_w.mean(axis=1)
    weights = np.exp(mean_log_w - mean_log_w.max())
    weights /= weights.sum()
    ess = 1.0 / np.sum(weights**2)
    draws = positions[rng.choice(positions.shape[0], size=int(opts["n_samples"]), p=weights)]
    n_iterations = len(dead_chunks) * CHUNK_STEPS
    diagnostics = {
        "n_iterations": n_iterations,
        "n_dead": int(log_l.size),
        "n_likelihood_contours": n_iterations * num_delete,
        "ess": float(ess),
        "converged": converged,
        "log_z_integrator": float(np.logaddexp(log_z, log_z_live)),
        "num_inner_steps": int(opts["num_inner_steps"]),
        "n_live": n_live,
    }
    return RawResult(
        method="nss",
        point=jax.device_put(draws.mean(axis=0)),
        samples=jax.device_put(draws[None]),
        diagnostics=diagnostics,
        loss_history=None,
        log_evidence=float(np.mean(log_z_draws)),
        log_evidence_err=float(np.std(log_z_draws, ddof=1)),
    )
