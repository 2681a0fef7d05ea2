"""Markov chain Monte Carlo with blackjax: NUTS, HMC, dynamic HMC, GHMC and ESS.

All samplers work in the latent space of :mod:`tengri.inference.problem`
(``log posterior = log L(z) − |z|²/2``) and by default (``start = "map"``) start
from the MAP found by the ``map`` engine (with 4 starts; its compiled program is
shared with ``Fitter.run("map")``). ``start = "init"``
starts at ``problem.init`` instead: needed for funnel-shaped posteriors, whose
mode lies deep in the neck where a chain cannot adapt.

Gradient-based samplers
    ``mcmc_nuts`` (Hoffman & Gelman 2014), ``hmc`` (fixed ``num_integration_steps``;
    Neal 2011), ``dynamic_hmc`` (a number of leapfrog steps drawn uniformly in
    1…9 at each transition, blackjax's default) and ``ghmc`` (generalised HMC with
    persistent momentum and a non-reversible slice acceptance, one leapfrog step a
    transition; Horowitz 1991, Neal 2020). Warm-up is Stan's window adaptation
    (dual-averaging step size + windowed mass-matrix estimate,
    ``blackjax.window_adaptation``) driven by the sampler's *own* kernel: for
    ``dynamic_hmc`` and ``ghmc``, whose ``init`` needs a random key, a thin adapter
    supplies the key; for ``ghmc`` the adapted step size therefore targets the
    acceptance of single GHMC steps, not of NUTS trajectories. The diagonal or
    dense (``use_dense``) inverse mass matrix is passed to GHMC as its momentum
    metric (square root of the diagonal, or the dense matrix itself).

Metric seed (``metric_init``)
    Window adaptation starts from a metric, and the first windows' step-size
    search and trajectories run with it. ``"laplace"`` (the default) starts from
    the covariance of the Laplace approximation at the start point ``z0`` (the MAP
    by default): the inverse of −∇² log p(z0), eigenvalues of that precision
    clipped below at 1 (never wider than the N(0, I) prior of the latent space) and
    above at 1e8, its diagonal for a diagonal metric. Every later window's estimate
    is then blended with the previous window's metric with a pseudo-count of
    :data:`METRIC_SEED_PSEUDOCOUNT` draws (``imm_shrinkage_to_previous`` of
    ``blackjax.window_adaptation``), so that a short window does not throw away
    what the seed and the earlier windows knew. ``"identity"`` is Stan's and
    blackjax's own start (unit metric, each window's estimate replacing the last).

Dense or diagonal (``use_dense``)
    ``"auto"`` (NUTS's default) adapts a dense metric for up to
    :data:`DENSE_AUTO_MAX_DIM` free parameters and a diagonal one above: SED
    parameters are strongly correlated (mass with age and A_V, age with τ), which a
    dense metric follows; a dense estimate from a few hundred warm-up draws gets
    noisy as the dimension grows (stochastic-SFH models have hundreds).
    NUTS's defaults are the dense metric with the Laplace seed, a target
    acceptance of 0.9 and a first warm-up step of :data:`INITIAL_STEP_SIZE`.
    ``bench/nuts_metric.py`` (32 prior-drawn mocks of ``bench/single_galaxy.py``'s
    model, 5 free parameters, one chain of 500 + 1000, 2-core CPU; records
    ``nuts_metric_cpu_2core_s11``, ``…_s12_ta095`` with the first step 1.0 and
    ``…_s12`` with 0.1), median wall / min-ESS per second summed over mocks /
    median min-ESS / divergences (mocks with > 10):

    ============================================  ======  =====  ====  ============
    diagonal, identity seed, 0.8 (before)         1.11 s  96/s   125   792 (14)
    dense, identity seed, 0.8                     0.61 s  117/s  65    1207 (20)
    diagonal, Laplace seed, 0.8                   1.01 s  95/s   102   863 (18)
    dense, Laplace seed, 0.8                      0.52 s  140/s  64    1092 (21)
    diagonal, identity seed, 0.9                  1.31 s  89/s   114   498 (7)
    dense, Laplace seed, 0.9, first step 1.0      0.72 s  121/s  107   156 (6)
    dense, Laplace seed, 0.95, first step 1.0     1.02 s  105/s  106   70 (2)
    dense, Laplace seed, 0.9, first step 0.1      0.79 s  124/s  86    121 (2)
    (default)
    dense, Laplace seed, 0.95, first step 0.1     0.91 s  98/s   90    68 (3)
    ============================================  ======  =====  ====  ============

    The divergences come from the narrow end of the age–τ ridge; a dense metric
    takes longer steps across the ridge, which a higher target shortens again.
    The first step matters with several chains: see :data:`INITIAL_STEP_SIZE` and
    docs/validation.md (SBC of ``examples/sbc3.toml``: split-R̂ at most 1.72 from
    1.0, 1.20 from 0.1; ``target_accept = 0.95`` from 1.0: 1.09).

Elliptical slice sampling (``ess``; Murray, Adams & MacKay 2010)
    Exact here: in latent space the prior is ``N(0, I)``, so the ESS prior is
    ``N(0, I)`` and its log-likelihood is ``problem.log_likelihood``.

Each chain runs in two engines, a warm-up engine and a sampling engine (burn-in
and draws); chains run one after the other through the same two compiled engines,
so compile time does not depend on ``n_chains``. Between the two, the chains'
adaptations are pooled (``adaptation = "pooled"``, the default): every chain
samples with the mean of the chains' inverse mass matrices and the smallest of
their step sizes (:func:`pooled_adaptation` says why); ``"per_chain"`` keeps
Stan's rule, each chain its own. Measured for 4 NUTS chains on the 5-D Gaussian
target (2 busy CPU cores): one after the other, 9.3 s compile and 0.05 s to run;
vmapped, 22 s compile and 0.68 s to run (under ``vmap`` every chain waits for the
longest trajectory).

Chains start dispersed: chain c starts at ``z0 + init_jitter · ε_c`` with
``ε_c ~ N(0, I)`` drawn from its own key (``init_jitter`` in latent units, default
0.1; 0 starts every chain at ``z0``). Split-R̂ compares chains, so it can only
reveal a chain that has not forgotten its start when the starts differ; a jittered
start whose log density is not finite falls back to ``z0``. In the recovery mocks
(``bench/recovery.py``) the posterior's latent standard deviations range from
~0.03 (mass, A_V) to ~0.5 (τ), so 0.1 is overdispersed in the tight directions
while staying in the bulk of the prior.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import ParameterError
from tengri.inference import host_keys, registry
from tengri.inference.methods._engine_cache import memoised_engine
from tengri.inference.methods.optimize import (
    finite_float, initial_point, positive_int, run_map_engine, validated_options,
)
from tengri.inference.problem import Problem, RawResult, log_density

# blackjax is imported where an engine is traced, not here: a process whose engines
# come from the disk cache never traces one and skips that import (0.28 s of the
# 0.70 s start-up import, most of it scipy.fft through blackjax.diagnostics).

__all__ = [
    "run_nuts", "run_hmc", "run_dynamic_hmc", "run_ghmc", "run_ess",
    "build_hmc_warmup_engine", "build_hmc_sampling_engine", "build_ess_engine",
    "pooled_adaptation", "laplace_inverse_metric", "evaluated_start", "resolved_dense", "checked_metric_init",
    "HMC_FAMILY", "ADAPTATIONS", "METRIC_INITS", "DENSE_AUTO_MAX_DIM",
]

HMC_FAMILY = ("mcmc_nuts", "hmc", "dynamic_hmc", "ghmc")


# ------------------------------------------------------------------ kernels
def _key_init_adapter(init: Callable, build_kernel: Callable, key: jax.Array):
    """Algorithm object for ``window_adaptation`` whose ``init`` needs no key.

    ``window_adaptation`` calls ``algorithm.init(position, logdensity_fn)``;
    dynamic HMC and GHMC also need a PRNG key, which this adapter closes over.
    """
    return types.SimpleNamespace(
        init=lambda position, logdensity_fn: init(position, logdensity_fn, key),
        build_kernel=build_kernel,
    )


def _ghmc_metric(inverse_mass_matrix: jax.Array) -> jax.Array:
    # blackjax.ghmc squares a 1-D "momentum inverse scale" into the inverse mass
    # matrix and takes a 2-D argument as the inverse mass matrix itself.
    if inverse_mass_matrix.ndim == 1:
        return jnp.sqrt(inverse_mass_matrix)
    return inverse_mass_matrix


def _ghmc_adaptation_algorithm(key: jax.Array, alpha: jax.Array, delta: jax.Array):
    """GHMC as an algorithm with the ``(…, step_size, inverse_mass_matrix)`` kernel
    signature that ``window_adaptation`` drives."""
    import blackjax

    def build_kernel():
        base = blackjax.mcmc.ghmc.build_kernel()

        def kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix):
            return base(rng_key, state, logdensity_fn, step_size,
                        _ghmc_metric(inverse_mass_matrix), alpha, delta)

        return kernel

    return _key_init_adapter(blackjax.mcmc.ghmc.init, build_kernel, key)


def _dynamic_hmc_adaptation_algorithm(key: jax.Array):
    import blackjax

    def build_kernel(integrator=blackjax.mcmc.integrators.velocity_verlet):
        return blackjax.mcmc.dynamic_hmc.build_kernel(integrator=integrator)

    return _key_init_adapter(blackjax.mcmc.dynamic_hmc.init, build_kernel, key)


def _adaptation_algorithm(kind: str, key_init: jax.Array, max_num_doublings: int,
                          num_integration_steps: jax.Array, alpha: jax.Array, delta: jax.Array):
    """The algorithm ``window_adaptation`` drives for ``kind`` and its extra kernel options."""
    import blackjax

    if kind == "mcmc_nuts":
        return blackjax.nuts, {"max_num_doublings": max_num_doublings}
    if kind == "hmc":
        return blackjax.hmc, {"num_integration_steps": num_integration_steps}
    if kind == "dynamic_hmc":
        return _dynamic_hmc_adaptation_algorithm(key_init), {}
    if kind == "ghmc":
        return _ghmc_adaptation_algorithm(key_init, alpha, delta), {}
    raise ValueError(f"unknown HMC-family sampler {kind!r}; accepted: {', '.join(HMC_FAMILY)}")


def _sampler(kind: str, logdensity_fn: Callable, step_size: jax.Array,
             inverse_mass_matrix: jax.Array, max_num_doublings: int,
             num_integration_steps: jax.Array, alpha: jax.Array, delta: jax.Array):
    """The blackjax sampling algorithm of ``kind`` with a fixed step size and metric."""
    import blackjax

    if kind == "mcmc_nuts":
        return blackjax.nuts(logdensity_fn, step_size, inverse_mass_matrix,
                             max_num_doublings=max_num_doublings)
    if kind == "hmc":
        return blackjax.hmc(logdensity_fn, step_size, inverse_mass_matrix, num_integration_steps)
    if kind == "dynamic_hmc":
        return blackjax.dynamic_hmc(logdensity_fn, step_size, inverse_mass_matrix)
    return blackjax.ghmc(logdensity_fn, step_size, _ghmc_metric(inverse_mass_matrix), alpha, delta)


def _state_type(kind: str) -> type:
    """The blackjax state of ``kind``'s chains. States cross the boundary between the
    warm-up and the sampling engine as plain tuples: stored (exported) engines
    serialise tuples, not NamedTuples."""
    import blackjax

    return {"mcmc_nuts": blackjax.mcmc.hmc.HMCState, "hmc": blackjax.mcmc.hmc.HMCState,
            "dynamic_hmc": blackjax.mcmc.dynamic_hmc.DynamicHMCState,
            "ghmc": blackjax.mcmc.ghmc.GHMCState}[kind]


def _run_chain(step: Callable, state, key: jax.Array, n_burnin: int, n_samples: int):
    """Burn-in (discarded) then ``n_samples`` transitions; returns (positions, infos)."""
    key_burnin, key_sampling = jax.random.split(key)

    def advance(state, key):
        state, _ = step(key, state)
        return state, None

    def draw(state, key):
        state, info = step(key, state)
        return state, (state.position, info)

    state, _ = jax.lax.scan(advance, state, jax.random.split(key_burnin, n_burnin))
    _, (positions, infos) = jax.lax.scan(draw, state, jax.random.split(key_sampling, n_samples))
    return positions, infos


# ------------------------------------------------------------------ metric
METRIC_INITS = ("laplace", "identity")
"""Where window adaptation starts its metric (option ``metric_init``; module notes)."""

METRIC_SEED_PSEUDOCOUNT = 20.0
"""Draws' worth of weight each window's metric estimate gives the previous metric
when ``metric_init = "laplace"``."""

INITIAL_STEP_SIZE = 0.1
"""Step size [latent units] the warm-up's dual averaging starts from. blackjax
starts at 1.0 and skips Stan's search for a reasonable first step; dual averaging
then shrinks towards 10× its start, so the first trajectories took steps of order
1–10 where the adapted ones are 0.03–0.16 on the SED models. On the SBC of
``examples/sbc3.toml`` (4 chains × (500 + 1000), 200 simulations) those early long
trajectories left one chain in each of 3 simulations in a tail of little posterior mass
(split-R̂ 1.21–1.72); from 0.1, split-R̂ at most 1.20 and 200 divergences in all
instead of 422, with as much ESS per second on single chains (module notes)."""

_HESSIAN_STEP = 1e-4
"""Latent step of the central differences of :func:`evaluated_start`."""

DENSE_AUTO_MAX_DIM = 16
"""Largest number of free parameters for which ``use_dense = "auto"`` adapts a dense metric."""


def laplace_inverse_metric(precision: jax.Array, dense: bool) -> jax.Array:
    """Inverse mass matrix of the Laplace approximation with precision ``precision``.

    Parameters
    ----------
    precision : array, shape (d, d)
        −∇² log p at a mode (symmetrised here; from :func:`evaluated_start`).
    dense : bool
        Return the (d, d) covariance, or its diagonal (d,).

    Returns
    -------
    array
        The inverse of ``precision`` with its eigenvalues clipped to [1, 1e8]
        (non-finite ones set to 1): at most as wide as the standard-normal prior in
        every direction, and positive definite where the point is not a mode.
    """
    eigenvalues, vectors = jnp.linalg.eigh(0.5 * (precision + precision.T))
    eigenvalues = jnp.clip(jnp.where(jnp.isfinite(eigenvalues), eigenvalues, 1.0), 1.0, 1e8)
    covariance = (vectors / eigenvalues) @ vectors.T
    return covariance if dense else jnp.diag(covariance)


def resolved_dense(kind: str, use_dense: Any, n_dim: int) -> bool:
    """Option ``use_dense`` (True, False or "auto") as a bool for ``n_dim`` free parameters."""
    if isinstance(use_dense, str) and use_dense == "auto":
        return n_dim <= DENSE_AUTO_MAX_DIM
    if not isinstance(use_dense, (bool, np.bool_)):
        raise ParameterError(f"{kind}: option 'use_dense' must be True, False or 'auto', "
                             f"got {use_dense!r}")
    return bool(use_dense)


def checked_metric_init(kind: str, metric_init: Any) -> str:
    """Option ``metric_init``, checked against :data:`METRIC_INITS`."""
    if metric_init not in METRIC_INITS:
        raise ParameterError(f"{kind}: option 'metric_init' must be one of "
                             f"{', '.join(map(repr, METRIC_INITS))}, got {metric_init!r}")
    return metric_init


# ------------------------------------------------------------------ starts
INIT_JITTER = 0.1
"""Default latent standard deviation of the per-chain start perturbation."""


def evaluated_start(logdensity_fn: Callable, key: jax.Array, z0: jax.Array, init_jitter: jax.Array,
                    with_curvature: bool) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array | None]:
    """A chain's dispersed start with its log density and gradient, and the curvature at ``z0``.

    Returns
    -------
    (start, logdensity, logdensity_grad, precision)
        ``start`` = ``z0 + init_jitter · ε``, ε ~ N(0, I) from ``key``, or ``z0``
        where that point's log density is not finite; then that point's log density
        and gradient. Shapes (d,), (), (d,) and (d, d): ``precision`` is −∇² log p(z0) by central
        differences of the gradient (step :data:`_HESSIAN_STEP`; None unless
        ``with_curvature``).

    Notes
    -----
    Every evaluation runs through one ``value_and_grad`` inside ``lax.map``: the
    compiled engine holds one copy of the likelihood's gradient for all of them
    (each call site is a copy in the executable, which makes it larger and slower
    to load from the disk cache). Measured on the single-galaxy bench model: a
    ``jax.hessian`` added 3.1 s to the warm-up engine's compilation and a separate
    central-difference loop 1.2 s; with that separate loop the executable was 5.69 MB,
    with the shared one 3.28 MB (3.63 MB before any seed). Differences are accurate
    to ~1e-8 relative, ample for a seed.
    """
    moved = z0 + init_jitter * jax.random.normal(key, z0.shape, z0.dtype)
    points = [moved[None], z0[None]]
    if with_curvature:
        shifts = _HESSIAN_STEP * jnp.eye(z0.shape[0], dtype=z0.dtype)
        points += [z0 + shifts, z0 - shifts]
    values, grads = jax.lax.map(jax.value_and_grad(logdensity_fn), jnp.concatenate(points))
    finite = jnp.isfinite(values[0])
    start = jnp.where(finite, moved, z0)
    value = jnp.where(finite, values[0], values[1])
    grad = jnp.where(finite, grads[0], grads[1])
    if not with_curvature:
        return start, value, grad, None
    n_dim = z0.shape[0]
    precision = -(grads[2:2 + n_dim] - grads[2 + n_dim:]) / (2 * _HESSIAN_STEP)
    return start, value, grad, precision


def _started_at(algorithm, logdensity: jax.Array, logdensity_grad: jax.Array):
    """``algorithm`` whose ``init`` takes the start's log density and gradient as
    given instead of evaluating them again (its own evaluation is then unused and
    XLA drops it from the engine)."""
    def init(position, logdensity_fn):
        state = algorithm.init(position, logdensity_fn)
        return state._replace(logdensity=logdensity, logdensity_grad=logdensity_grad)

    return types.SimpleNamespace(init=init, build_kernel=algorithm.build_kernel)


# ------------------------------------------------------------------ engines
@memoised_engine
def build_hmc_warmup_engine(log_likelihood: Callable, n_dim: int, kind: str, n_warmup: int,
                            use_dense: bool, max_num_doublings: int, metric_init: str) -> Callable:
    """Stan's window adaptation of one HMC-family chain, from a dispersed start, its
    metric seeded as ``metric_init`` says (module notes; the seed's curvature is
    taken at ``z0``, not at the dispersed start).

    Returns
    -------
    callable
        ``engine(key, z0, data_args, target_accept, num_integration_steps, alpha,
        delta, init_jitter) -> dict`` with ``state`` (the sampler state after
        warm-up, as a tuple), ``step_size`` (), ``inverse_mass_matrix`` ((d,) or
        (d, d)) and ``start`` (d,), the chain's dispersed start. Options a sampler
        does not use are ignored by it but kept in the signature so that every kind
        has one.
    """

    @jax.jit
    def engine(key, z0, data_args, target_accept, num_integration_steps, alpha, delta,
               init_jitter):
        def logdensity_fn(z):
            return log_density(log_likelihood, z, data_args)

        key_warmup, _ = jax.random.split(key)
        start, logdensity, logdensity_grad, precision = evaluated_start(
            logdensity_fn, jax.random.fold_in(key, 1), z0, init_jitter, metric_init == "laplace")
        key_init, key_adapt = jax.random.split(key_warmup)
        algorithm, extra = _adaptation_algorithm(kind, key_init, max_num_doublings,
                                                 num_integration_steps, alpha, delta)
        if metric_init == "laplace":
            extra = {**extra, "initial_inverse_mass_matrix": laplace_inverse_metric(precision, use_dense),
                     "imm_shrinkage_to_previous": METRIC_SEED_PSEUDOCOUNT}
        import blackjax

        warmup = blackjax.window_adaptation(
            _started_at(algorithm, logdensity, logdensity_grad), logdensity_fn,
            is_mass_matrix_diagonal=not use_dense,
            target_acceptance_rate=target_accept, initial_step_size=INITIAL_STEP_SIZE,
            adaptation_info_fn=lambda *_: None, **extra,
        )
        (state, parameters), _ = warmup.run(key_adapt, start, num_steps=n_warmup)
        return {"state": tuple(state), "step_size": parameters["step_size"],
                "inverse_mass_matrix": parameters["inverse_mass_matrix"], "start": start}

    return engine


@memoised_engine
def build_hmc_sampling_engine(log_likelihood: Callable, n_dim: int, kind: str, n_burnin: int,
                              n_samples: int, use_dense: bool, max_num_doublings: int) -> Callable:
    """Burn-in and draws of one HMC-family chain with a given step size and metric.

    Returns
    -------
    callable
        ``engine(key, adapted, data_args, num_integration_steps, alpha, delta) -> dict``;
        ``adapted`` holds ``state`` (tuple, from the warm-up engine), ``step_size``
        () and ``inverse_mass_matrix``. The result has ``samples`` (n_samples, d),
        ``acceptance_rate``, ``n_divergences`` and ``n_integration_steps_mean``.
        ``key`` is the chain's key, the same one its warm-up engine was given.
    """

    @jax.jit
    def engine(key, adapted, data_args, num_integration_steps, alpha, delta):
        def logdensity_fn(z):
            return log_density(log_likelihood, z, data_args)

        sampler = _sampler(kind, logdensity_fn, adapted["step_size"],
                           adapted["inverse_mass_matrix"], max_num_doublings,
                           num_integration_steps, alpha, delta)
        state = _state_type(kind)(*adapted["state"])
        _, key_chain = jax.random.split(key)
        positions, infos = _run_chain(sampler.step, state, key_chain, n_burnin, n_samples)
        return {
            "samples": positions,
            "acceptance_rate": jnp.mean(infos.acceptance_rate),
            "n_divergences": jnp.sum(infos.is_divergent),
            "n_integration_steps_mean": jnp.mean(jnp.asarray(infos.num_integration_steps,
                                                             dtype=jnp.float64)),
        }

    return engine


ADAPTATIONS = ("pooled", "per_chain")
"""How the chains of one run share their warm-up (option ``adaptation``)."""


def pooled_adaptation(step_size: np.ndarray, inverse_mass_matrix: np.ndarray,
                      adaptation: str) -> tuple[np.ndarray, np.ndarray]:
    """Step sizes and metrics the chains sample with, from their own warm-ups.

    Parameters
    ----------
    step_size : array, shape (..., n_chains)
        Each chain's adapted step size (leading axes: e.g. galaxies of a batch).
    inverse_mass_matrix : array, shape (..., n_chains, d) or (..., n_chains, d, d)
        Each chain's adapted inverse mass matrix.
    adaptation : {"pooled", "per_chain"}
        ``"per_chain"``: Stan's rule, every chain keeps its own. ``"pooled"``: every
        chain samples with the mean of the chains' inverse mass matrices and the
        smallest of their step sizes.

    Returns
    -------
    (step_size, inverse_mass_matrix)
        The shapes of the inputs.

    Notes
    -----
    Why pool: in the recovery mocks (``bench/recovery.py``) the chains' mass
    matrices agree to ~10%, but dual averaging, which stops wherever its chain
    happens to be, leaves step sizes 1.2–3× apart; the chain with the largest one
    diverges hundreds of times in the posterior's narrow regions and sticks there,
    which is what split-R̂ > 1.01 was measuring. The smallest step is the one that
    the chain in the hardest region needed. Sampling after warm-up uses a fixed
    kernel either way, so both rules leave the target distribution unchanged.
    """
    if adaptation not in ADAPTATIONS:
        raise ParameterError(f"option 'adaptation' must be one of "
                             f"{', '.join(map(repr, ADAPTATIONS))}, got {adaptation!r}")
    step_size = np.asarray(step_size)
    inverse_mass_matrix = np.asarray(inverse_mass_matrix)
    if adaptation == "per_chain":
        return step_size, inverse_mass_matrix
    chain_axis = step_size.ndim - 1
    pooled_step = np.min(step_size, axis=chain_axis, keepdims=True)
    pooled_metric = np.mean(inverse_mass_matrix, axis=chain_axis, keepdims=True)
    return (np.broadcast_to(pooled_step, step_size.shape),
            np.broadcast_to(pooled_metric, inverse_mass_matrix.shape))


@memoised_engine
def build_ess_engine(log_likelihood: Callable, n_dim: int, n_burnin: int,
                     n_samples: int) -> Callable:
    """One jitted elliptical-slice chain with the exact N(0, I) latent prior.

    Returns
    -------
    callable
        ``engine(key, z0, data_args) -> dict`` with ``samples`` (n_samples, d) and
        ``n_slice_evaluations_mean``: likelihood evaluations per transition.
    """

    @jax.jit
    def engine(key, z0, data_args):
        def loglikelihood_fn(z):
            return log_likelihood(z, data_args)

        import blackjax

        sampler = blackjax.elliptical_slice(loglikelihood_fn, mean=jnp.zeros(n_dim),
                                            cov=jnp.ones(n_dim))
        state = sampler.init(z0)
        positions, infos = _run_chain(sampler.step, state, key, n_burnin, n_samples)
        return {
            "samples": positions,
            "n_slice_evaluations_mean": jnp.mean(jnp.asarray(infos.subiter, dtype=jnp.float64)),
        }

    return engine


# ------------------------------------------------------------------ runners
START_POINTS = ("map", "init")
# A chain only needs a start in the bulk of the posterior: fewer starts than
# Fitter.run("map"), same compiled engine (the number of starts is traced).
MAP_STARTS = 4


def _start_point(method: str, start: Any, problem: Problem, key: jax.Array) -> jax.Array:
    """Where every chain starts: the MAP (``"map"``) or ``problem.init`` (``"init"``).

    The MAP uses ``MAP_STARTS`` starts and the ``[map]`` iteration limit and
    tolerance; it shares its compiled engine with ``Fitter.run("map")``. ``"init"`` is for posteriors whose mode is a poor place
    to start, e.g. funnels, whose density peaks in the neck.
    """
    if start not in START_POINTS:
        raise ParameterError(f"{method}: option 'start' must be one of "
                             f"{', '.join(map(repr, START_POINTS))}, got {start!r}")
    if start == "init":
        return initial_point(problem)
    defaults = registry.method_options("map", {})
    found = run_map_engine(problem, key, MAP_STARTS, defaults["n_steps"], defaults["tol"])
    return found["point"]


def _chain_keys(key: jax.Array, n_chains: int) -> tuple[jax.Array, list[jax.Array]]:
    # fold_in rather than split(key, n_chains), in numpy: no program to compile or
    # load for any n_chains (host_keys gives jax.random's values).
    key_map, key_chains = host_keys.split_pair(key)
    return key_map, list(host_keys.fold_in_many(key_chains, np.arange(n_chains)))


def _stack_chains(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Engine outputs of the chains, each leaf stacked on a new leading chain axis."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *outputs)


def _samples_and_mean(chains: dict[str, np.ndarray]) -> tuple[jax.Array, jax.Array]:
    """Draws (n_chains, n_samples, d) as a jax array and their mean (in numpy, so
    that a new number of chains compiles nothing)."""
    samples = chains["samples"]
    # device_put, unlike jnp.asarray, does not compile a staging program per shape
    return jax.device_put(samples), jax.device_put(samples.mean(axis=(0, 1)))


def _run_hmc_family(kind: str, problem: Problem, key: jax.Array,
                    options: dict[str, Any]) -> RawResult:
    options = validated_options(kind, options)
    n_warmup = positive_int(kind, "n_warmup", options["n_warmup"])
    n_burnin = positive_int(kind, "n_burnin", options["n_burnin"], minimum=0)
    n_samples = positive_int(kind, "n_samples", options["n_samples"])
    n_chains = positive_int(kind, "n_chains", options["n_chains"])
    use_dense = resolved_dense(kind, options["use_dense"], problem.n_dim)
    metric_init = checked_metric_init(kind, options["metric_init"])
    target_accept = finite_float(kind, "target_accept", options["target_accept"],
                                 low=0.0, high=1.0, closed_low=False)
    max_num_doublings = positive_int(kind, "max_num_doublings",
                                     options.get("max_num_doublings", 10))
    num_integration_steps = positive_int(kind, "num_integration_steps",
                                         options.get("num_integration_steps", 1))
    alpha = finite_float(kind, "alpha", options.get("alpha", 1.0), high=1.0, closed_low=False)
    delta = finite_float(kind, "delta", options.get("delta", 0.0), high=2.0)
    init_jitter = finite_float(kind, "init_jitter", options.get("init_jitter", INIT_JITTER))
    adaptation = options.get("adaptation", "pooled")
    if adaptation not in ADAPTATIONS:
        raise ParameterError(f"{kind}: option 'adaptation' must be one of "
                             f"{', '.join(map(repr, ADAPTATIONS))}, got {adaptation!r}")
    # NUTS is the only kind whose trajectory buffers depend on max_num_doublings;
    # fixing it for the others keeps them at one engine each.
    doublings = max_num_doublings if kind == "mcmc_nuts" else 0
    warmup = build_hmc_warmup_engine(problem.log_likelihood, problem.n_dim, kind, n_warmup,
                                     use_dense, doublings, metric_init)
    sampling = build_hmc_sampling_engine(problem.log_likelihood, problem.n_dim, kind, n_burnin,
                                         n_samples, use_dense, doublings)
    key_map, chain_keys = _chain_keys(key, n_chains)

    def warmup_args(chain_key, z0):
        return (chain_key, z0, problem.data_args, np.float64(target_accept), np.int64(num_integration_steps),
                np.float64(alpha), np.float64(delta), np.float64(init_jitter))

    def sampling_args(chain_key, state, step_size, inverse_mass_matrix):
        return (chain_key, {"state": tuple(state), "step_size": step_size,
                            "inverse_mass_matrix": inverse_mass_matrix},
                problem.data_args, np.int64(num_integration_steps), np.float64(alpha), np.float64(delta))

    # In a fresh process the stored executables load in the background: the warm-up's
    # while the MAP start loads and runs, the sampler's while the warm-ups run.
    warmup.prefetch(*warmup_args(chain_keys[0], jax.ShapeDtypeStruct((problem.n_dim,), np.float64)))
    z0 = _start_point(kind, options["start"], problem, key_map)
    warmed = [warmup(*warmup_args(chain_key, z0)) for chain_key in chain_keys]
    # the sampler is called on host copies (numpy: never weakly typed) of these
    first = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), warmed[0])
    sampling.prefetch(*sampling_args(chain_keys[0], first["state"], first["step_size"],
                                     first["inverse_mass_matrix"]))
    warmed = _stack_chains(warmed)
    step_size, inverse_mass_matrix = pooled_adaptation(
        warmed["step_size"], warmed["inverse_mass_matrix"], adaptation)
    drawn = _stack_chains([
        sampling(*sampling_args(chain_key, (leaf[c] for leaf in warmed["state"]), step_size[c],
                                inverse_mass_matrix[c]))
        for c, chain_key in enumerate(chain_keys)
    ])
    chains = sampled_chains(warmed, drawn, step_size, inverse_mass_matrix)
    samples, point = _samples_and_mean(chains)
    diagnostics = chain_diagnostics(chains, n_chains, n_warmup, n_burnin, n_samples)
    diagnostics["adaptation"] = adaptation
    return RawResult(method=kind, point=point, samples=samples, diagnostics=diagnostics,
                     loss_history=None)


def sampled_chains(warmed: dict, drawn: dict, step_size: np.ndarray,
                   inverse_mass_matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-chain outputs of a run (leading axes (..., n_chains)): the sampling
    engines' results, the step sizes and metrics they used, the warm-ups' own step
    sizes (``adapted_step_size``) and the dispersed starts."""
    return {**drawn, "step_size": np.asarray(step_size),
            "inverse_mass_matrix": np.asarray(inverse_mass_matrix),
            "adapted_step_size": np.asarray(warmed["step_size"]),
            "start": np.asarray(warmed["start"])}


def chain_diagnostics(chains: dict, n_chains: int, n_warmup: int, n_burnin: int,
                      n_samples: int) -> dict[str, Any]:
    """Diagnostics of an HMC-family run from its stacked per-chain engine outputs."""
    return {
        "acceptance_rate": float(np.mean(chains["acceptance_rate"])),
        "divergences": int(np.sum(chains["n_divergences"])),
        "divergences_per_chain": np.asarray(chains["n_divergences"]),
        "step_size": float(np.mean(chains["step_size"])),
        "step_size_per_chain": chains["step_size"],
        "adapted_step_size_per_chain": chains["adapted_step_size"],
        "n_integration_steps_mean": float(np.mean(chains["n_integration_steps_mean"])),
        "inverse_mass_matrix": chains["inverse_mass_matrix"],
        "n_chains": n_chains,
        "n_warmup": n_warmup,
        "n_burnin": n_burnin,
        "n_samples": n_samples,
    }


def run_nuts(problem: Problem, key: jax.Array, **options: Any) -> RawResult:
    """No-U-Turn sampler with Stan's window adaptation, started at the MAP.

    Parameters
    ----------
    problem : Problem
    key : jax.Array
    **options
        ``n_warmup``, ``n_burnin``, ``n_samples``, ``n_chains``, ``use_dense``
        (True, False or "auto"), ``metric_init`` ("laplace" or "identity"),
        ``target_accept``, ``max_num_doublings``, ``start``, ``init_jitter``
        (latent sd of each chain's start around the MAP; see the module notes)
        (defaults from ``defaults.toml``; an unknown option raises ValueError).

    Returns
    -------
    RawResult
        ``samples`` (n_chains, n_samples, d), ``point`` = their mean, diagnostics
        ``acceptance_rate``, ``divergences`` (total count), ``divergences_per_chain``,
        ``step_size`` (mean over chains),
        ``step_size_per_chain``, ``n_integration_steps_mean`` (leapfrog steps per
        draw), ``inverse_mass_matrix`` (per chain), and the run's sizes.
    """
    return _run_hmc_family("mcmc_nuts", problem, key, options)


def run_hmc(problem: Problem, key: jax.Array, **options: Any) -> RawResult:
    """Hamiltonian Monte Carlo with ``num_integration_steps`` leapfrog steps a draw.

    Options as :func:`run_nuts`, with ``num_integration_steps`` in place of
    ``max_num_doublings``; the step size and mass matrix are window-adapted.
    """
    return _run_hmc_family("hmc", problem, key, options)


def run_dynamic_hmc(problem: Problem, key: jax.Array, **options: Any) -> RawResult:
    """HMC whose number of leapfrog steps is drawn uniformly in 1…9 at each draw.

    Options: ``n_warmup``, ``n_burnin``, ``n_samples``, ``n_chains``, ``use_dense``,
    ``target_accept``. Returns as :func:`run_nuts`.
    """
    return _run_hmc_family("dynamic_hmc", problem, key, options)


def run_ghmc(problem: Problem, key: jax.Array, **options: Any) -> RawResult:
    """Generalised HMC: one leapfrog step a draw, partial momentum refreshment.

    blackjax has no warm-up for GHMC; here Stan's window adaptation drives the
    GHMC kernel itself, so the step size is tuned (dual averaging) to give
    ``target_accept`` for single GHMC steps and the mass matrix is the windowed
    posterior covariance estimate. ``alpha`` is the fraction of the momentum
    refreshed per step (``p ← √(1−α) p + √α ξ``), ``delta`` the deterministic
    shift of the non-reversible slice variable (Neal 2020). Since consecutive
    GHMC draws are strongly correlated, ``n_samples`` defaults higher than for
    NUTS. Returns as :func:`run_nuts`.
    """
    return _run_hmc_family("ghmc", problem, key, options)


def run_ess(problem: Problem, key: jax.Array, **options: Any) -> RawResult:
    """Elliptical slice sampling with the exact standard-normal latent prior.

    Parameters
    ----------
    problem : Problem
    key : jax.Array
    **options
        ``n_burnin`` (discarded draws after the MAP start), ``n_samples``,
        ``n_chains``.

    Returns
    -------
    RawResult
        ``samples`` (n_chains, n_samples, d), ``point`` = their mean, diagnostics
        ``n_slice_evaluations_mean`` (likelihood calls per draw) and the run's sizes.
        No gradients are used by the sampler itself (the MAP start uses them).
    """
    options = validated_options("ess", options)
    n_burnin = positive_int("ess", "n_burnin", options["n_burnin"], minimum=0)
    n_samples = positive_int("ess", "n_samples", options["n_samples"])
    n_chains = positive_int("ess", "n_chains", options["n_chains"])
    engine = build_ess_engine(problem.log_likelihood, problem.n_dim, n_burnin, n_samples)
    key_map, chain_keys = _chain_keys(key, n_chains)
    z0 = _start_point("ess", options["start"], problem, key_map)
    chains = _stack_chains([engine(k, z0, problem.data_args) for k in chain_keys])
    samples, point = _samples_and_mean(chains)
    diagnostics = {
        "n_slice_evaluations_mean": float(np.mean(chains["n_slice_evaluations_mean"])),
        "n_chains": n_chains,
        "n_burnin": n_burnin,
        "n_samples": n_samples,
    }
    return RawResult(method="ess", point=point, samples=samples, diagnostics=diagnostics,
                     loss_history=None)
