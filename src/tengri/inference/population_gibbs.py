"""Metropolis-within-Gibbs sampler of a hierarchical population (``PopulationFitter.run("gibbs")``).

Target, in the latent space of :mod:`tengri.inference.population` (standard-normal
priors on the shared latents φ (S,) and on every galaxy's latent z_i (d,))::

    log p(φ, z_1, …, z_N) = Σ_i log L_i(z_i; φ) − |φ|²/2 − Σ_i |z_i|²/2

One sweep runs up to three moves, each of which leaves this density invariant:

1. **Galaxies given φ.** Given φ the galaxies are independent, so every z_i takes
   one step at once (an accept/reject per galaxy): a Ray Tracing step
   (:mod:`tengri.inference.methods.raytrace`, the default of ``run("mcmc")``) or an
   HMC step (``run("gibbs")``, ``sample_hmc=True``). The step works in whitened
   coordinates u_i = C_iᵀ (z_i − m_i), where m_i(φ) and
   C_i(φ) C_i(φ)ᵀ are the mode and precision of a Gaussian approximation of galaxy
   i's conditional posterior (``conditional_gaussian``; the population fitter passes
   the Laplace approximation of :mod:`tengri.inference.population_grid`). Each
   galaxy has its own step size, adapted during warm-up.

2. **φ with the galaxies carried along** (a transport move, ``n_shared_steps`` of
   them per sweep: each costs one likelihood evaluation of the N galaxies when
   the conditional Gaussians come from a table). Propose φ' = φ + B ε
   (B a Cholesky factor, its scale adapted during warm-up) and move every galaxy to
   the same position *relative to its conditional Gaussian*::

       z_i' = m_i(φ') + C_i(φ')⁻ᵀ C_i(φ)ᵀ (z_i − m_i(φ))

   accepted with probability min(1, p(φ', z') / p(φ, z) · |∂z'/∂z|), log |∂z'/∂z|
   = Σ_i (log det C_i(φ) − log det C_i(φ')). The map φ → (m, C) must be a
   deterministic function of φ (Gauss–Newton from a fixed start, a fixed number of
   steps, or an interpolation in a fixed table) so that the move is its own
   reverse; then the move is exact whatever the quality of the approximation,
   which sets only its acceptance.

3. **Dragged moves of φ** (``n_drag_moves`` per sweep, none by default;
   :func:`dragged_step`, Neal 2005): a longer proposal walked in stages, the
   galaxies carried along at each stage and relaxed by a galaxy step between
   stages, accepted on the summed log density ratios. Exact for any number of
   stages. Measured on the bench galaxies (N = 40) it raised the acceptance of
   proposals as long as φ's posterior width (32 stages: 0.27 against 0.16 for
   one transport move) but not the ESS per second, each move costing ~30 galaxy
   steps (docs/population_results.md).

Why the transport move: with the non-centred field (x_i = σ L(τ) ξ_i) an update of
φ with the ξ_i held fixed moves every galaxy's field, which its photometry
forbids, so φ's conditional is narrow and φ mixes slowly (joint NUTS on the bench
galaxies: ESS 3 in 1800 draws); holding the field fixed instead (the centred
parameterisation) pins φ to the galaxies' field scatter. When each galaxy's
conditional posterior is close to its Gaussian approximation, the transport move
accepts with the ratio of the galaxies' marginal likelihoods p(d_i | φ'), i.e. it
is a random walk on p(φ | d) itself. Measured on the bench galaxies (z = 2, 10
bands, S/N 20) it is not that close: at the mode the Gauss–Newton precision
agrees with the exact Hessian to within 25 % (whitened eigenvalues 0.76–1.19, 4
galaxies), but a draw of the Laplace Gaussian lies 1–200 nats below the
Gaussian's prediction (0–4 nats at 0.3 × its width), so the move accepts ≈ 0.3
only with steps well below φ's posterior width, and many moves per sweep (30 by
default, each one likelihood evaluation) are needed. Warm-up adapts their scale
and, half-way, resets the proposal's shape to the covariance of the chains' φ
draws so far.

The kernel knows nothing of galaxies or SEDs: it takes two functions of
``(φ, …, data)``. :func:`population_model_functions` builds them for a
PopulationFitter.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

from tengri.errors import ParameterError
from tengri.inference import cache

__all__ = ["GibbsState", "GibbsInfo", "GibbsTuning", "init", "galaxy_step", "shared_step", "dragged_step",
           "build_gibbs_engine", "checked_step_jitter", "population_model_functions", "GALAXY_KERNELS",
           "DEFAULT_STEP_JITTER"]

# warm-up targets: HMC / Ray Tracing in whitened, near-Gaussian coordinates; 2-D random walks
TARGET_GALAXY_ACCEPTANCE = 0.8
TARGET_SHARED_ACCEPTANCE = 0.3
TARGET_DRAG_ACCEPTANCE = 0.3
# galaxy steps are exp(log_step) × a factor drawn log-uniformly from this range (docs/population_results.md:
# (0.3, 1.3) helped 16 chains at N = 40 and hurt 4 chains at N = 10 and 20)
DEFAULT_STEP_JITTER = (0.8, 1.2)


class GibbsState(NamedTuple):
    """State of one chain.

    Attributes
    ----------
    shared : (S,) the shared latents φ.
    latents : (N, d) every galaxy's latent z_i.
    log_likelihoods : (N,) log L_i(z_i; φ).
    mode : (N, d) m_i(φ), the conditional Gaussians' means at the current φ.
    chol : (N, d, d) C_i(φ), lower Cholesky factors of their precisions.
    """

    shared: jax.Array
    latents: jax.Array
    log_likelihoods: jax.Array
    mode: jax.Array
    chol: jax.Array


class GibbsInfo(NamedTuple):
    """What one sweep did: ``galaxy_acceptance`` (N,) the galaxy steps' acceptance probabilities,
    ``shared_acceptance`` () the transport moves' and ``drag_acceptance`` () the
    dragged moves' (mean over the sweep's moves)."""

    galaxy_acceptance: jax.Array
    shared_acceptance: jax.Array
    drag_acceptance: jax.Array


class GibbsTuning(NamedTuple):
    """Step sizes: ``log_step`` (N,) per-galaxy leapfrog step in whitened coordinates
    (log), ``shared_chol`` (S, S) Cholesky factor of the φ random walk's covariance,
    ``drag_chol`` (S, S) that of the dragged move's proposal."""

    log_step: jax.Array
    shared_chol: jax.Array
    drag_chol: jax.Array


def init(shared: jax.Array, latents: jax.Array, data: Any, log_likelihoods: Callable,
         conditional_gaussian: Callable) -> GibbsState:
    """The state at φ = ``shared`` (S,), z = ``latents`` (N, d).

    ``log_likelihoods(φ, z, data) -> (N,)``; ``conditional_gaussian(φ, data) -> (mode
    (N, d), chol (N, d, d))``, deterministic in φ (module docstring).
    """
    mode, chol = conditional_gaussian(shared, data)
    return GibbsState(shared, latents, log_likelihoods(shared, latents, data), mode, chol)


def _to_latent(u, mode, chol):
    """z = m + C⁻ᵀ u, per galaxy: u, mode (N, d), chol (N, d, d)."""
    return mode + jax.vmap(lambda c, v: solve_triangular(c, v, trans="T", lower=True))(chol, u)


def _to_whitened(z, mode, chol):
    """u = Cᵀ (z − m), per galaxy."""
    return jnp.einsum("nji,nj->ni", chol, z - mode)


GALAXY_KERNELS = ("raytrace", "hmc")


def galaxy_step(key, state: GibbsState, log_step: jax.Array, data: Any, log_likelihoods: Callable,
                n_leapfrog: int, kernel: str = "hmc", step_jitter: tuple[float, float] = DEFAULT_STEP_JITTER
                ) -> tuple[GibbsState, jax.Array]:
    """One transition of every galaxy's z_i given φ, all at once, in whitened
    coordinates u_i = C_iᵀ (z_i − m_i) (an accept/reject per galaxy).

    ``kernel="hmc"``: ``n_leapfrog`` leapfrog steps (kick-drift-kick, identity
    metric). ``kernel="raytrace"``: ``n_leapfrog`` drift-kick-drift steps of a Ray
    Tracing ray (:mod:`tengri.inference.methods.raytrace`: the velocity is refracted
    by ∇ ln p at constant speed and the Metropolis test subtracts the predicted
    luminosity change). Step sizes exp(log_step_i) × a factor drawn log-uniformly
    from ``step_jitter`` (lo, hi), per galaxy.
    Returns the new state and the acceptance probabilities (N,).
    """
    if kernel not in GALAXY_KERNELS:
        raise ValueError(f"kernel must be one of {GALAXY_KERNELS}, got {kernel!r}")
    phi, mode, chol = state.shared, state.mode, state.chol

    def galaxy_log_densities(u):
        z = _to_latent(u, mode, chol)
        return log_likelihoods(phi, z, data) - 0.5 * jnp.sum(z**2, axis=1), z

    def log_density_grad(u):
        # galaxies are independent, so the gradient of the sum holds every galaxy's own
        return jax.grad(lambda v: jnp.sum(galaxy_log_densities(v)[0]))(u)

    k_momentum, k_jitter, k_accept = jax.random.split(key, 3)
    u0 = _to_whitened(state.latents, mode, chol)
    p0 = jax.random.normal(k_momentum, u0.shape)
    # drawn independently of the state, so the kernel stays exact; a wide range gives a galaxy
    # that wanders where its adapted step is too long some short steps
    jitter = jnp.exp(jax.random.uniform(k_jitter, log_step.shape, minval=np.log(step_jitter[0]),
                                        maxval=np.log(step_jitter[1])))
    step = (jnp.exp(log_step) * jitter)[:, None]
    values0 = state.log_likelihoods - 0.5 * jnp.sum(state.latents**2, axis=1)

    if kernel == "hmc":
        def leapfrog(carry, _):
            u, p, grad = carry
            p = p + 0.5 * step * grad
            u = u + step * p
            grad = log_density_grad(u)
            p = p + 0.5 * step * grad
            return (u, p, grad), None

        (u1, p1, _), _ = jax.lax.scan(leapfrog, (u0, p0, log_density_grad(u0)), None, length=n_leapfrog)
        predicted = 0.5 * jnp.sum(p1**2, axis=1) - 0.5 * jnp.sum(p0**2, axis=1)  # kinetic energy gained
    else:
        from tengri.inference.methods.raytrace import refract_velocity

        refract = jax.vmap(refract_velocity)

        def ray(carry, _):
            u, v, luminosity = carry
            u = u + 0.5 * step * v
            v, change = refract(v, log_density_grad(u), step[:, 0])
            u = u + 0.5 * step * v
            return (u, v, luminosity + change), None

        (u1, _, predicted), _ = jax.lax.scan(ray, (u0, p0, jnp.zeros(u0.shape[0], u0.dtype)), None,
                                             length=n_leapfrog)
    values1, z1 = galaxy_log_densities(u1)
    log_ratio = values1 - values0 - predicted
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
    accept = jnp.log(jax.random.uniform(k_accept, log_ratio.shape)) < log_ratio
    latents = jnp.where(accept[:, None], z1, state.latents)
    log_lik = jnp.where(accept, values1 + 0.5 * jnp.sum(z1**2, axis=1), state.log_likelihoods)
    return state._replace(latents=latents, log_likelihoods=log_lik), jnp.minimum(1.0, jnp.exp(log_ratio))


def _log_joint(phi, latents, log_lik):
    return jnp.sum(log_lik) - 0.5 * jnp.sum(latents**2) - 0.5 * jnp.sum(phi**2)


def shared_step(key, state: GibbsState, shared_chol: jax.Array, data: Any, log_likelihoods: Callable,
                conditional_gaussian: Callable) -> tuple[GibbsState, jax.Array]:
    """One transport move of φ (module docstring). Returns the new state and the
    acceptance probability ()."""
    k_prop, k_accept = jax.random.split(key)
    phi1 = state.shared + shared_chol @ jax.random.normal(k_prop, state.shared.shape)
    proposed, log_ratio = _transported(state, phi1, data, log_likelihoods, conditional_gaussian)
    accept = jnp.log(jax.random.uniform(k_accept)) < log_ratio
    new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), proposed, state)
    return new, jnp.minimum(1.0, jnp.exp(log_ratio))


def _transported(state: GibbsState, phi1, data, log_likelihoods, conditional_gaussian):
    """The state at φ' = ``phi1`` with every galaxy carried along (module docstring), and
    log p(φ', z') − log p(φ, z) + log |∂z'/∂z| (−inf where not finite)."""
    mode1, chol1 = conditional_gaussian(phi1, data)
    z1 = _to_latent(_to_whitened(state.latents, state.mode, state.chol), mode1, chol1)
    log_lik1 = log_likelihoods(phi1, z1, data)
    log_jacobian = (jnp.sum(jnp.log(jnp.diagonal(state.chol, axis1=1, axis2=2)))
                    - jnp.sum(jnp.log(jnp.diagonal(chol1, axis1=1, axis2=2))))
    log_ratio = (_log_joint(phi1, z1, log_lik1) - _log_joint(state.shared, state.latents, state.log_likelihoods)
                 + log_jacobian)
    return GibbsState(phi1, z1, log_lik1, mode1, chol1), jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)


def dragged_step(key, state: GibbsState, drag_chol: jax.Array, log_step: jax.Array, data: Any,
                 log_likelihoods: Callable, conditional_gaussian: Callable, n_stages: int,
                 n_leapfrog: int, kernel: str = "hmc", step_jitter: tuple[float, float] = DEFAULT_STEP_JITTER
                 ) -> tuple[GibbsState, jax.Array]:
    """One dragged move of φ (Neal 2005, "dragging fast variables"). Returns the new
    state and the acceptance probability ().

    Propose φ' = φ + B ε and walk φ to it in ``n_stages`` equal stages. At each stage
    the galaxies are carried along (the transport of :func:`shared_step`), and between
    stages every galaxy takes one step of ``kernel`` (:func:`galaxy_step`) at the
    intermediate φ, which relaxes what the transport got wrong. Accepted with probability min(1, e^W),
    W the sum of the stages' log density ratios (Jacobians included). Exact for any
    ``n_stages``: the galaxy steps leave their intermediate conditionals invariant and
    are reversible, and the reverse move passes the same intermediates in reverse order.
    More stages cost more and raise the acceptance of long proposals.
    """
    k_prop, k_relax, k_accept = jax.random.split(key, 3)
    phi0 = state.shared
    phi1 = phi0 + drag_chol @ jax.random.normal(k_prop, phi0.shape)

    def stage(carry, xs):
        current, work = carry
        k, fraction = xs
        moved, log_ratio = _transported(current, phi0 + fraction * (phi1 - phi0), data, log_likelihoods,
                                        conditional_gaussian)
        relaxed, _ = galaxy_step(k, moved, log_step, data, log_likelihoods, n_leapfrog, kernel, step_jitter)
        return (relaxed, work + log_ratio), None

    fractions = jnp.arange(1, n_stages, dtype=phi0.dtype) / n_stages
    (current, work), _ = jax.lax.scan(stage, (state, jnp.zeros((), phi0.dtype)),
                                      (jax.random.split(k_relax, n_stages - 1), fractions))
    proposed, log_ratio = _transported(current, phi1, data, log_likelihoods, conditional_gaussian)
    work = work + log_ratio
    accept = jnp.log(jax.random.uniform(k_accept)) < work
    new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), proposed, state)
    return new, jnp.minimum(1.0, jnp.exp(work))


def _sweep(key, state, tuning: GibbsTuning, data, log_likelihoods, conditional_gaussian, n_leapfrog: int,
           n_shared_steps: int, n_drag_moves: int, n_drag_stages: int, kernel: str,
           step_jitter: tuple[float, float]):
    """One galaxy step of ``kernel``, ``n_shared_steps`` transport moves, then ``n_drag_moves``
    dragged moves (mean acceptances)."""
    k_galaxy, k_shared, k_drag = jax.random.split(key, 3)
    state, galaxy_acc = galaxy_step(k_galaxy, state, tuning.log_step, data, log_likelihoods, n_leapfrog, kernel,
                                    step_jitter)

    def move(state, k):
        return shared_step(k, state, tuning.shared_chol, data, log_likelihoods, conditional_gaussian)

    shared_acc = jnp.full((1,), TARGET_SHARED_ACCEPTANCE)  # no move: leave its scale as it is
    if n_shared_steps:
        state, shared_acc = jax.lax.scan(move, state, jax.random.split(k_shared, n_shared_steps))
    drag_acc = jnp.full((1,), TARGET_DRAG_ACCEPTANCE)
    if n_drag_moves:
        def drag(state, k):
            return dragged_step(k, state, tuning.drag_chol, tuning.log_step, data, log_likelihoods,
                                conditional_gaussian, n_drag_stages, n_leapfrog, kernel, step_jitter)

        state, drag_acc = jax.lax.scan(drag, state, jax.random.split(k_drag, n_drag_moves))
    return state, GibbsInfo(galaxy_acc, jnp.mean(shared_acc), jnp.mean(drag_acc))


def _adapted(tuning: GibbsTuning, info: GibbsInfo, t) -> GibbsTuning:
    """Robbins–Monro step towards the target acceptances, gain decaying as (t + 10)^-0.6."""
    gain = 2.0 * (t + 10.0) ** -0.6
    log_step = tuning.log_step + gain * (info.galaxy_acceptance - TARGET_GALAXY_ACCEPTANCE)
    shared_chol = tuning.shared_chol * jnp.exp(gain * (info.shared_acceptance - TARGET_SHARED_ACCEPTANCE))
    drag_chol = tuning.drag_chol * jnp.exp(gain * (info.drag_acceptance - TARGET_DRAG_ACCEPTANCE))
    return GibbsTuning(log_step, shared_chol, drag_chol)


_ENGINES: dict[tuple, Callable] = {}
cache.register_gc_hook(_ENGINES.clear)  # tengri.gc() drops these as it drops every other engine


def checked_step_jitter(step_jitter) -> tuple[float, float]:
    """``step_jitter`` as floats (lo, hi); ParameterError unless a pair with 0 < lo ≤ hi."""
    try:
        lo, hi = (float(f) for f in step_jitter)
    except (TypeError, ValueError):
        lo = hi = float("nan")
    if not 0.0 < lo <= hi:
        raise ParameterError(f"step_jitter must be (lo, hi) with 0 < lo ≤ hi, got {step_jitter!r}")
    return lo, hi


def build_gibbs_engine(log_likelihoods: Callable, conditional_gaussian: Callable, n_leapfrog: int, n_warmup: int,
                       n_samples: int, n_shared_steps: int = 1, n_drag_moves: int = 0,
                       n_drag_stages: int = 8, galaxy_kernel: str = "hmc",
                       step_jitter: tuple[float, float] = DEFAULT_STEP_JITTER) -> Callable:
    """Jitted ``engine(key, shared0 (C, S), latents0 (C, N, d), data, log_step0 (N,), shared_chol0 (S, S)) -> dict``
    (``shared_chol0`` starts both the random walk's and the dragged move's proposal).

    A sweep is one step of every galaxy (``galaxy_kernel``, ``step_jitter``, :func:`galaxy_step`), then
    ``n_shared_steps`` transport moves of φ and ``n_drag_moves`` dragged moves of
    ``n_drag_stages`` stages each. C chains (``vmap``) of ``n_warmup`` adapting sweeps,
    then ``n_samples`` kept sweeps with the tuning frozen. Half-way through the warm-up
    the φ proposal's covariance is reset to (2.38² / S) × the covariance of the chains'
    first-half φ draws (both proposals; each then scales its own to its target
    acceptance). Returns ``shared`` (C, n, S), ``latents`` (C, n, N, d),
    ``galaxy_acceptance`` (C, N), ``shared_acceptance`` and ``drag_acceptance`` (C,)
    (means over the kept sweeps), and the chains' final ``log_step`` (C, N),
    ``shared_chol`` and ``drag_chol`` (C, S, S). Memoised on its arguments (one
    compilation per population).
    """
    if galaxy_kernel not in GALAXY_KERNELS:
        raise ValueError(f"galaxy_kernel must be one of {GALAXY_KERNELS}, got {galaxy_kernel!r}")
    lo, hi = checked_step_jitter(step_jitter)
    key = (log_likelihoods, conditional_gaussian, int(n_leapfrog), int(n_warmup), int(n_samples), int(n_shared_steps),
           int(n_drag_moves), int(n_drag_stages), str(galaxy_kernel), (lo, hi))
    if key not in _ENGINES:
        _ENGINES[key] = _gibbs_engine(*key)
    return _ENGINES[key]


def _gibbs_engine(log_likelihoods, conditional_gaussian, n_leapfrog, n_warmup, n_samples, n_shared_steps,
                  n_drag_moves, n_drag_stages, galaxy_kernel, step_jitter):
    def warm_phase(key, state, tuning, data, t0, n):
        """n adapting sweeps of one chain; returns its state, tuning and φ draws (n, S)."""
        def warm(carry, xs):
            state, tuning = carry
            k, t = xs
            state, info = _sweep(k, state, tuning, data, log_likelihoods, conditional_gaussian, n_leapfrog,
                                 n_shared_steps, n_drag_moves, n_drag_stages, galaxy_kernel, step_jitter)
            return (state, _adapted(tuning, info, t)), state.shared

        (state, tuning), shared = jax.lax.scan(
            warm, (state, tuning), (jax.random.split(key, n), t0 + jnp.arange(n, dtype=float)))
        return state, tuning, shared

    def keep_phase(key, state, tuning, data):
        def keep(state, k):
            state, info = _sweep(k, state, tuning, data, log_likelihoods, conditional_gaussian, n_leapfrog,
                                 n_shared_steps, n_drag_moves, n_drag_stages, galaxy_kernel, step_jitter)
            return state, (state.shared, state.latents, info)

        _, (shared, latents, info) = jax.lax.scan(keep, state, jax.random.split(key, n_samples))
        return {"shared": shared, "latents": latents, "galaxy_acceptance": jnp.mean(info.galaxy_acceptance, 0),
                "shared_acceptance": jnp.mean(info.shared_acceptance),
                "drag_acceptance": jnp.mean(info.drag_acceptance), "log_step": tuning.log_step,
                "shared_chol": tuning.shared_chol, "drag_chol": tuning.drag_chol}

    @jax.jit
    def engine(key, shared0, latents0, data, log_step0, shared_chol0):
        n_chains, n_shared = shared0.shape
        k_first, k_second, k_keep = (jax.random.split(k, n_chains) for k in jax.random.split(key, 3))
        state = jax.vmap(init, in_axes=(0, 0, None, None, None))(shared0, latents0, data, log_likelihoods,
                                                                conditional_gaussian)
        chol0 = jnp.broadcast_to(shared_chol0, (n_chains,) + shared_chol0.shape)
        tuning = GibbsTuning(jnp.broadcast_to(log_step0, (n_chains,) + log_step0.shape), chol0, chol0)
        first = n_warmup // 2
        if first > 1:
            state, tuning, shared = jax.vmap(warm_phase, in_axes=(0, 0, 0, None, None, None))(
                k_first, state, tuning, data, 0.0, first)
            # φ's proposal takes the shape of the first half's draws, pooled over chains
            # (ridges in (σ, τ) that the Laplace grid's covariance misses), its scale
            # set again by the second half
            cov = jnp.cov(shared.reshape(-1, n_shared), rowvar=False) + 1e-6 * jnp.eye(n_shared)
            chol = 2.38 / jnp.sqrt(n_shared) * jnp.linalg.cholesky(cov)
            chol = jnp.broadcast_to(chol, tuning.shared_chol.shape)
            tuning = tuning._replace(shared_chol=chol, drag_chol=chol)
        if n_warmup - first > 0:
            state, tuning, _ = jax.vmap(warm_phase, in_axes=(0, 0, 0, None, None, None))(
                k_second, state, tuning, data, float(first), n_warmup - first)
        return jax.vmap(keep_phase, in_axes=(0, 0, 0, None))(k_keep, state, tuning, data)

    return engine


def _bilinear(table: jax.Array, x_nodes: jax.Array, y_nodes: jax.Array, x, y) -> jax.Array:
    """``table`` (n_x, n_y, ...) interpolated bilinearly at (x, y), clamped to the nodes' range."""
    i = jnp.clip(jnp.searchsorted(x_nodes, x) - 1, 0, x_nodes.size - 2)
    j = jnp.clip(jnp.searchsorted(y_nodes, y) - 1, 0, y_nodes.size - 2)
    tx = jnp.clip((x - x_nodes[i]) / (x_nodes[i + 1] - x_nodes[i]), 0.0, 1.0)
    ty = jnp.clip((y - y_nodes[j]) / (y_nodes[j + 1] - y_nodes[j]), 0.0, 1.0)
    return ((1 - tx) * (1 - ty) * table[i, j] + tx * (1 - ty) * table[i + 1, j]
            + (1 - tx) * ty * table[i, j + 1] + tx * ty * table[i + 1, j + 1])


def interpolated_conditional(phi: jax.Array, data: Any) -> tuple[jax.Array, jax.Array]:
    """Conditional Gaussians (mode (N, d), chol (N, d, d)) at σ(φ), τ(φ), interpolated
    bilinearly in (σ, ln τ) between the nodes of a Laplace grid.

    ``data["table"]``: ``sigma`` (n_σ,) [dex], ``log_tau`` (n_τ,) [ln Myr], ``mode``
    (n_σ, n_τ, N, d) and ``chol`` (n_σ, n_τ, N, d, d), lower Cholesky factors of the
    nodes' precisions (a convex combination of them is again lower-triangular with a
    positive diagonal); ``data["shared_hyper"]`` the priors' (lo, hi) rows. Costs no
    likelihood evaluation, and is a fixed function of φ, as the transport move needs.
    """
    from tengri.inference.population import shared_physical

    table = data["table"]
    sigma, tau = shared_physical(phi, data["shared_hyper"])
    log_tau = jnp.log(tau)
    return (_bilinear(table["mode"], table["sigma"], table["log_tau"], sigma, log_tau),
            _bilinear(table["chol"], table["sigma"], table["log_tau"], sigma, log_tau))


_MODEL_FUNCTIONS: dict[tuple, tuple[Callable, Callable]] = {}
cache.register_gc_hook(_MODEL_FUNCTIONS.clear)
CONDITIONALS = ("grid", "gauss_newton")


def population_model_functions(galaxy_ll: Callable, galaxy_res: Callable, fixed_index: tuple[int, int], axes: Any,
                               conditional: str = "grid", gauss_newton_steps: int = 15) -> tuple[Callable, Callable]:
    """``(log_likelihoods, conditional_gaussian)`` of a PopulationFitter's galaxies, for the kernel.

    ``data`` is ``{"galaxies": stacked per-galaxy data_args (vmap ``axes``), "shared_hyper":
    (2, 2) prior bounds of σ and τ}`` and, by ``conditional``:

    - ``"grid"``: ``"table"`` (:func:`interpolated_conditional`), the Laplace grid's
      modes and precisions interpolated to σ(φ), τ(φ); no likelihood evaluation.
    - ``"gauss_newton"``: ``"reference"`` (N, d), each galaxy's Laplace approximation
      at σ(φ), τ(φ) computed afresh: ``gauss_newton_steps`` Gauss–Newton steps from
      ``reference`` (a fixed start, so that it is a function of φ), precision JᵀJ + I.

    Memoised, so that equal populations reuse one compiled engine.
    """
    if conditional not in CONDITIONALS:
        raise ValueError(f"conditional must be one of {CONDITIONALS}, got {conditional!r}")
    from tengri.inference.population import shared_physical
    from tengri.inference.population_grid import build_laplace_engine

    axes_key = jax.tree.flatten(axes, is_leaf=lambda x: x is None)
    key = (galaxy_ll, galaxy_res, fixed_index, axes_key[1], tuple(axes_key[0]), conditional,
           gauss_newton_steps if conditional == "gauss_newton" else None)
    if key in _MODEL_FUNCTIONS:
        return _MODEL_FUNCTIONS[key]
    i_sigma, i_tau = fixed_index

    def log_likelihoods(phi, latents, data):
        sigma, tau = shared_physical(phi, data["shared_hyper"])

        def one(z, args):
            return galaxy_ll(z, {**args, "fixed": args["fixed"].at[i_sigma].set(sigma).at[i_tau].set(tau)})

        return jax.vmap(one, in_axes=(0, axes))(latents, data["galaxies"])

    if conditional == "grid":
        _MODEL_FUNCTIONS[key] = (log_likelihoods, interpolated_conditional)
        return _MODEL_FUNCTIONS[key]
    laplace = build_laplace_engine(galaxy_ll, galaxy_res, fixed_index, axes, gauss_newton_steps)

    def conditional_gaussian(phi, data):
        sigma, tau = shared_physical(phi, data["shared_hyper"])
        _, mode, precision = laplace(data["reference"], data["galaxies"], sigma, tau)
        return mode, jnp.linalg.cholesky(precision)

    _MODEL_FUNCTIONS[key] = (log_likelihoods, conditional_gaussian)
    return log_likelihoods, conditional_gaussian
