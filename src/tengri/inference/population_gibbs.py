"""Metropolis-within-Gibbs sampler of a hierarchical population (``PopulationFitter.run("gibbs")``).

Target, in the latent space of :mod:`tengri.inference.population` (standard-normal
priors on the shared latents φ (S,) and on every galaxy's latent z_i (d,))::

    log p(φ, z_1, …, z_N) = Σ_i log L_i(z_i; φ) − |φ|²/2 − Σ_i |z_i|²/2

One sweep alternates two moves, each of which leaves this density invariant:

1. **Galaxies given φ.** Given φ the galaxies are independent, so every z_i takes
   one HMC step at once (``vmap`` over galaxies, an accept/reject per galaxy). The
   step works in whitened coordinates u_i = C_iᵀ (z_i − m_i), where m_i(φ) and
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
from jax.scipy.linalg import solve_triangular

from tengri.inference import cache

__all__ = ["GibbsState", "GibbsInfo", "GibbsTuning", "init", "galaxy_step", "shared_step", "build_gibbs_engine",
           "population_model_functions"]

# warm-up targets: HMC in whitened, near-Gaussian coordinates; a 2-D random walk
TARGET_GALAXY_ACCEPTANCE = 0.8
TARGET_SHARED_ACCEPTANCE = 0.3


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
    """What one sweep did: ``galaxy_acceptance`` (N,) HMC acceptance probabilities and
    ``shared_acceptance`` () the transport move's."""

    galaxy_acceptance: jax.Array
    shared_acceptance: jax.Array


class GibbsTuning(NamedTuple):
    """Step sizes: ``log_step`` (N,) per-galaxy leapfrog step in whitened coordinates
    (log), ``shared_chol`` (S, S) Cholesky factor of the φ random walk's covariance."""

    log_step: jax.Array
    shared_chol: jax.Array


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


def galaxy_step(key, state: GibbsState, log_step: jax.Array, data: Any, log_likelihoods: Callable,
                n_leapfrog: int) -> tuple[GibbsState, jax.Array]:
    """One HMC step of every galaxy's z_i given φ (``n_leapfrog`` leapfrog steps of size
    exp(log_step_i) × U(0.8, 1.2) in whitened coordinates, identity metric).
    Returns the new state and the acceptance probabilities (N,)."""
    phi, mode, chol = state.shared, state.mode, state.chol

    def galaxy_log_densities(u):
        z = _to_latent(u, mode, chol)
        return log_likelihoods(phi, z, data) - 0.5 * jnp.sum(z**2, axis=1), z

    def potential_and_grad(u):
        def total(v):
            values, z = galaxy_log_densities(v)
            return jnp.sum(values), (values, z)

        # galaxies are independent, so the gradient of the sum holds every galaxy's own
        (_, (values, z)), grad = jax.value_and_grad(total, has_aux=True)(u)
        return values, z, grad

    k_momentum, k_jitter, k_accept = jax.random.split(key, 3)
    u0 = _to_whitened(state.latents, mode, chol)
    p0 = jax.random.normal(k_momentum, u0.shape)
    step = jnp.exp(log_step) * jax.random.uniform(k_jitter, log_step.shape, minval=0.8, maxval=1.2)
    values0 = state.log_likelihoods - 0.5 * jnp.sum(state.latents**2, axis=1)
    _, _, grad0 = potential_and_grad(u0)

    def leapfrog(carry, _):
        u, p, grad = carry
        p = p + 0.5 * step[:, None] * grad
        u = u + step[:, None] * p
        _, _, grad = potential_and_grad(u)
        p = p + 0.5 * step[:, None] * grad
        return (u, p, grad), None

    (u1, p1, _), _ = jax.lax.scan(leapfrog, (u0, p0, grad0), None, length=n_leapfrog)
    values1, z1 = galaxy_log_densities(u1)
    log_ratio = values1 - 0.5 * jnp.sum(p1**2, axis=1) - values0 + 0.5 * jnp.sum(p0**2, axis=1)
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
    mode1, chol1 = conditional_gaussian(phi1, data)
    z1 = _to_latent(_to_whitened(state.latents, state.mode, state.chol), mode1, chol1)
    log_lik1 = log_likelihoods(phi1, z1, data)
    log_jacobian = (jnp.sum(jnp.log(jnp.diagonal(state.chol, axis1=1, axis2=2)))
                    - jnp.sum(jnp.log(jnp.diagonal(chol1, axis1=1, axis2=2))))
    log_ratio = (_log_joint(phi1, z1, log_lik1) - _log_joint(state.shared, state.latents, state.log_likelihoods)
                 + log_jacobian)
    log_ratio = jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)
    accept = jnp.log(jax.random.uniform(k_accept)) < log_ratio
    proposed = GibbsState(phi1, z1, log_lik1, mode1, chol1)
    new = jax.tree.map(lambda a, b: jnp.where(accept, a, b), proposed, state)
    return new, jnp.minimum(1.0, jnp.exp(log_ratio))


def _sweep(key, state, tuning: GibbsTuning, data, log_likelihoods, conditional_gaussian, n_leapfrog: int,
           n_shared_steps: int):
    """One galaxy HMC step, then ``n_shared_steps`` transport moves (mean acceptance)."""
    k_galaxy, k_shared = jax.random.split(key)
    state, galaxy_acc = galaxy_step(k_galaxy, state, tuning.log_step, data, log_likelihoods, n_leapfrog)

    def move(state, k):
        return shared_step(k, state, tuning.shared_chol, data, log_likelihoods, conditional_gaussian)

    state, shared_acc = jax.lax.scan(move, state, jax.random.split(k_shared, n_shared_steps))
    return state, GibbsInfo(galaxy_acc, jnp.mean(shared_acc))


def _adapted(tuning: GibbsTuning, info: GibbsInfo, t) -> GibbsTuning:
    """Robbins–Monro step towards the target acceptances, gain decaying as (t + 10)^-0.6."""
    gain = 2.0 * (t + 10.0) ** -0.6
    log_step = tuning.log_step + gain * (info.galaxy_acceptance - TARGET_GALAXY_ACCEPTANCE)
    shared_chol = tuning.shared_chol * jnp.exp(gain * (info.shared_acceptance - TARGET_SHARED_ACCEPTANCE))
    return GibbsTuning(log_step, shared_chol)


_ENGINES: dict[tuple, Callable] = {}
cache.register_gc_hook(_ENGINES.clear)  # tengri.gc() drops these as it drops every other engine


def build_gibbs_engine(log_likelihoods: Callable, conditional_gaussian: Callable, n_leapfrog: int, n_warmup: int,
                       n_samples: int, n_shared_steps: int = 1) -> Callable:
    """Jitted ``engine(key, shared0 (C, S), latents0 (C, N, d), data, log_step0 (N,), shared_chol0 (S, S)) -> dict``.

    A sweep is one HMC step of every galaxy, then ``n_shared_steps`` transport moves of φ.
    C chains (``vmap``) of ``n_warmup`` adapting sweeps, then ``n_samples`` kept sweeps
    with the tuning frozen. Half-way through the warm-up the φ proposal's covariance
    is reset to (2.38² / S) × the covariance of the chains' first-half φ draws. Returns ``shared`` (C, n, S),
    ``latents`` (C, n, N, d), ``galaxy_acceptance`` (C, N) and ``shared_acceptance``
    (C,) (means over the kept sweeps), and the chains' final ``log_step`` (C, N) and
    ``shared_chol`` (C, S, S). Memoised on its arguments (one compilation per population).
    """
    key = (log_likelihoods, conditional_gaussian, int(n_leapfrog), int(n_warmup), int(n_samples), int(n_shared_steps))
    if key not in _ENGINES:
        _ENGINES[key] = _gibbs_engine(*key)
    return _ENGINES[key]


def _gibbs_engine(log_likelihoods, conditional_gaussian, n_leapfrog, n_warmup, n_samples, n_shared_steps):
    def warm_phase(key, state, tuning, data, t0, n):
        """n adapting sweeps of one chain; returns its state, tuning and φ draws (n, S)."""
        def warm(carry, xs):
            state, tuning = carry
            k, t = xs
            state, info = _sweep(k, state, tuning, data, log_likelihoods, conditional_gaussian, n_leapfrog,
                                 n_shared_steps)
            return (state, _adapted(tuning, info, t)), state.shared

        (state, tuning), shared = jax.lax.scan(
            warm, (state, tuning), (jax.random.split(key, n), t0 + jnp.arange(n, dtype=float)))
        return state, tuning, shared

    def keep_phase(key, state, tuning, data):
        def keep(state, k):
            state, info = _sweep(k, state, tuning, data, log_likelihoods, conditional_gaussian, n_leapfrog,
                                 n_shared_steps)
            return state, (state.shared, state.latents, info)

        _, (shared, latents, info) = jax.lax.scan(keep, state, jax.random.split(key, n_samples))
        return {"shared": shared, "latents": latents, "galaxy_acceptance": jnp.mean(info.galaxy_acceptance, 0),
                "shared_acceptance": jnp.mean(info.shared_acceptance), "log_step": tuning.log_step,
                "shared_chol": tuning.shared_chol}

    @jax.jit
    def engine(key, shared0, latents0, data, log_step0, shared_chol0):
        n_chains, n_shared = shared0.shape
        k_first, k_second, k_keep = (jax.random.split(k, n_chains) for k in jax.random.split(key, 3))
        state = jax.vmap(init, in_axes=(0, 0, None, None, None))(shared0, latents0, data, log_likelihoods,
                                                                conditional_gaussian)
        tuning = GibbsTuning(jnp.broadcast_to(log_step0, (n_chains,) + log_step0.shape),
                             jnp.broadcast_to(shared_chol0, (n_chains,) + shared_chol0.shape))
        first = n_warmup // 2
        if first > 1:
            state, tuning, shared = jax.vmap(warm_phase, in_axes=(0, 0, 0, None, None, None))(
                k_first, state, tuning, data, 0.0, first)
            # φ's proposal takes the shape of the first half's draws, pooled over chains
            # (ridges in (σ, τ) that the Laplace grid's covariance misses), its scale
            # set again by the second half
            cov = jnp.cov(shared.reshape(-1, n_shared), rowvar=False) + 1e-6 * jnp.eye(n_shared)
            chol = 2.38 / jnp.sqrt(n_shared) * jnp.linalg.cholesky(cov)
            tuning = tuning._replace(shared_chol=jnp.broadcast_to(chol, tuning.shared_chol.shape))
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
