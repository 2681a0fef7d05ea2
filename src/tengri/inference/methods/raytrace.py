"""Ray Tracing sampler (Behroozi 2025, arXiv:2510.25824) and its runner.

The algorithm
-------------
A ray of light crosses a medium of refractive index ``n(x) = p(x)^{1/(D−1)}``,
``p`` the target density and ``D ≥ 2`` the dimension. The ray moves at a constant
speed ``|v|``; Snell's law (``n sin θ`` conserved across a gradient) bends it toward
``∇ ln p``. A microcanonical ensemble of such rays — uniform on the shell
``|p_opt| = n(x)`` of optical momentum — has the position marginal
``∝ n(x)^{D−1} = p(x)``, the target. Unlike Hamiltonian Monte Carlo the ray carries
no kinetic energy, so a noisy gradient can turn it but cannot heat it: that is
the sampler's robustness to stochastic gradients.

One transition, as in the author's reference JAX implementation
(``raytrace_jax.py`` of https://bitbucket.org/pbehroozi/ray-tracing-sampler, read
for the algorithm only):

1. draw ``v ~ N(0, I_D)`` (speed ``|v| ≈ √D``, direction uniform on the sphere);
2. integrate ``n_steps`` steps of a symmetric splitting, DKD (drift ``h/2``, kick
   ``h``, drift ``h/2``) or KDK (kick ``h/2``, drift ``h``, kick ``h/2``), where
   a *drift* is ``x ← x + τ v`` and a *kick* over travel time ``τ`` rotates ``v``
   in the plane of ``(v, g)``, ``g = ∇ ln p(x)``, from its angle ``θᵢ`` to ``g`` to
   ``θ_f`` with

       tan(θ_f / 2) = tan(θᵢ / 2) · exp(−|g| |v| τ / (D − 1)),

   the exact ray path through a medium whose ``ln n`` has the constant gradient
   ``g / (D − 1)``; ``|v|`` is unchanged;
3. accept the end point with probability
   ``min(1, exp[ln p(x') − ln p(x) − Δ ln 𝓛])``, where the predicted *luminosity*
   change ``Δ ln 𝓛 = Σ_kicks (D − 1) ln(sin θᵢ / sin θ_f)`` is what Snell's law says
   ``ln p`` should have changed by.

Why the target is invariant (the argument this implementation relies on, checked
by the tests): with the velocity drawn from an isotropic Gaussian and the map
followed by a velocity flip, the proposal is a deterministic involution of
``(x, v)`` — a drift is undone by the drift of the flipped velocity, and a kick of
the flipped velocity at the same gradient undoes the kick (``θ → π − θ`` turns
``tan(θ/2)`` into its inverse). A drift is a shear (unit Jacobian). A kick keeps
``|v|`` and maps the polar angle ``θᵢ → θ_f``; since
``dθ_f / dθᵢ = sin θ_f / sin θᵢ`` the Jacobian on the sphere is
``(sin θ_f / sin θᵢ)^{D−1}``. Metropolis–Hastings for a deterministic involution
accepts with ``π(x') |J| / π(x)``, i.e. ``exp[Δ ln p + Σ (D−1) ln(sin θ_f / sin θᵢ)]
= exp[Δ ln p − Δ ln 𝓛]``: the reference implementation's test exactly. The
Gaussian speed density cancels because kicks and drifts keep ``|v|``. The optional
in-trajectory *refresh*, ``v ← f v + √(1 − f²) ξ`` with ``f = exp(−rate · h / 2)``
before and after every step, is an autoregressive move that leaves ``N(0, I)``
invariant and is reversible with respect to it; the path-probability ratio of
the noise then cancels the velocity density ratio exactly as in generalised HMC,
so the same acceptance probability stays exact.

``sample_hmc=True`` swaps the kick for the ordinary momentum kick
``v ← v + τ g`` (unit mass) and ``Δ ln 𝓛`` for the change of kinetic energy across
kicks: plain HMC, driven by the same code, for like-for-like comparisons.

Step size and dimension
-----------------------
``step_size`` is a travel *time* ``h``: each step moves ``x`` by ``h |v| ≈ h √D``
and each coordinate by ``≈ h`` — the reference implementation's convention, so
that its advice carries over (``h ≈ 0.03 / √D`` for neural networks; the seed
reports ``h = 0.05`` at ``D ≈ 137`` on a whitened SED posterior, with acceptance
falling from 80 % to 0 % past ``h ≈ 0.06``). ``h`` must stay below about the
smallest posterior standard deviation in latent units (on the 5-D test target,
σ_min = 0.1, adaptation settles at ``h ≈ 0.06``), and at fixed ``h`` the
acceptance falls with ``D``. Measured here on ``N(0, I_D)``, 8 DKD steps per
transition, mean acceptance at ``h`` = 0.2 / 0.4 / 0.6 / 0.8 / 1.0:

    D = 5    0.99 / 0.98 / 0.95 / 0.92 / 0.79
    D = 20   0.98 / 0.95 / 0.93 / 0.80 / 0.73
    D = 137  0.96 / 0.87 / 0.86 / 0.35 / 0.27
    D = 500  0.90 / 0.70 / 0.76 / 0.00 / 0.04

so the step for a given acceptance shrinks slowly with dimension (roughly
``D^{-1/4}``, as for HMC) while the fall past it becomes a cliff in high
dimension — the behaviour the seed describes. A starting value is
``h ≈ 0.6 σ_min (D / 5)^{-1/4}`` (0.6 σ_min is what adaptation finds on the 5-D
target; for ``D = 137`` and ``σ_min ≈ 0.2`` this gives the seed's 0.05); stay on
the small side of the cliff. By default ``n_warmup`` adapts ``h`` by dual averaging
(Hoffman & Gelman 2014, §3.2.1) toward ``target_accept``; ``step_size`` is then
only the starting value (``adapt_step_size=False`` keeps it fixed).

Preconditioning
---------------
The speed is the same in every direction, so without a preconditioner ``h`` is
set by the narrowest direction of the posterior and the widest one is explored
by a random walk of such steps. ``precondition="laplace"`` runs
the ray in whitened coordinates ``u``, ``z = z₀ + S u`` with ``S Sᵀ = H⁻¹`` and
``H = −∇² ln p(z₀)`` the Hessian at the start point (the MAP by default) — the
role HMC's mass matrix plays. The map is linear, so its Jacobian is a constant
and the chain is still exact; ``h`` and the statements above are then in units
of the Laplace standard deviations. Where ``H`` is not positive definite (a start
that is not a mode) the identity is used and ``diagnostics["preconditioned"]``
says so. ``precondition="none"`` (the default) samples ``z`` directly. On the 5-parameter SED
mock of ``bench/methods.py`` (latent posterior standard deviations from 0.025,
log M*, to ~0.6, age) the adapted step went from 0.004 (latent units) to
0.07–0.11 (Laplace units) and the minimum ESS of 2000 draws (8 steps each) from
6 to 4–19 (DKD and KDK, two keys each): a gain, not a cure — the age–τ–Z ridge
is curved, so no single linear map whitens it. The gain is clear on targets
that a linear map does whiten (``tests/test_methods_raytrace.py``). It is not the
default: in simulation-based calibration on ``examples/sbc3.toml`` (200 simulations,
docs/validation.md) its intervals were narrower than without it, 95% coverage
0.890 / 0.830 / 0.860 (stellar mass / age / A_V) against 0.920 / 0.880 / 0.905, both
below the nominal 0.95.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.step_size import dual_averaging_adaptation
from blackjax.base import SamplingAlgorithm

from tengri.errors import ParameterError
from tengri.inference.methods._engine_cache import memoised_engine
from tengri.inference.methods.optimize import initial_point, run_map_engine
from tengri.inference.problem import Problem, RawResult, log_density
from tengri.inference.registry import method_options

__all__ = [
    "RayTraceState",
    "RayTraceInfo",
    "init",
    "build_kernel",
    "as_top_level_api",
    "refract_velocity",
    "with_gradient_noise",
    "build_raytrace_engine",
    "run_raytrace",
    "INTEGRATORS",
    "PRECONDITIONERS",
    "laplace_scale",
]

INTEGRATORS = ("dkd", "kdk")
PRECONDITIONERS = ("laplace", "none")


class RayTraceState(NamedTuple):
    """State of a Ray Tracing (or same-driver HMC) chain.

    Attributes
    ----------
    position : jax.Array, shape (d,)
        Current point.
    logdensity : jax.Array, scalar
        ``ln p`` at ``position``.
    logdensity_grad : jax.Array, shape (d,)
        ``∇ ln p`` at ``position`` (reused by the first KDK kick).
    """

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


class RayTraceInfo(NamedTuple):
    """What one transition did.

    Attributes
    ----------
    acceptance_rate : jax.Array, scalar
        Metropolis acceptance probability of the proposal (1 without the check).
    is_accepted : jax.Array, bool scalar
        Whether the proposal became the new state.
    is_divergent : jax.Array, bool scalar
        Whether the proposal's log density or the acceptance ratio was not finite.
    delta_logdensity : jax.Array, scalar
        ``ln p(x') − ln p(x)`` of the proposal.
    delta_log_luminosity : jax.Array, scalar
        Change of ``ln p`` predicted by the dynamics: Snell's-law luminosity
        change for rays, kinetic-energy loss for HMC. The Metropolis log ratio is
        ``delta_logdensity − delta_log_luminosity``.
    proposal : RayTraceState
        The end point of the trajectory, accepted or not.
    """

    acceptance_rate: jax.Array
    is_accepted: jax.Array
    is_divergent: jax.Array
    delta_logdensity: jax.Array
    delta_log_luminosity: jax.Array
    proposal: RayTraceState


def init(position: jax.Array, logdensity_fn: Callable) -> RayTraceState:
    """Initial state at ``position`` for the target ``logdensity_fn``.

    Parameters
    ----------
    position : jax.Array, shape (d,)
        Starting point (a flat vector; ``d ≥ 2`` for ray tracing).
    logdensity_fn : callable
        ``x (d,) -> ln p(x)``, unnormalised.
    """
    position = jnp.asarray(position)
    value, grad = jax.value_and_grad(logdensity_fn)(position)
    return RayTraceState(position, value, grad)


def refract_velocity(velocity: jax.Array, grad: jax.Array, travel_time: jax.Array
                     ) -> tuple[jax.Array, jax.Array]:
    """Turn a ray toward ``grad`` as it crosses a medium with ``∇ ln n = grad/(D−1)``.

    With ``u = v/|v|``, ``ĝ = g/|g|``, ``a = |u − ĝ|``, ``b = |u + ĝ|`` (so
    ``tan(θᵢ/2) = a/b``) and ``k = |g||v|τ/(D−1)``, the exact ray through a
    constant index gradient has ``tan(θ_f/2) = (a/b) e^{−k}``. The new direction is
    ``u' = cos θ_f ĝ + f (u − cos θᵢ ĝ)`` with ``f = sin θ_f / sin θᵢ =
    e^{−k}(a² + b²) / (b² + a² e^{−2k})``, a form that stays accurate when ``v`` is
    (anti-)parallel to ``g``, where ``sin θ`` itself is lost to rounding.

    Parameters
    ----------
    velocity : jax.Array, shape (D,)
        Ray velocity ``v``; its norm (the speed) is preserved.
    grad : jax.Array, shape (D,)
        ``∇ ln p`` at the kick position.
    travel_time : scalar
        Kick duration ``τ`` (``h`` for DKD, ``h/2`` for each KDK half-kick).

    Returns
    -------
    new_velocity : jax.Array, shape (D,)
    delta_log_luminosity : jax.Array, scalar
        ``−(D−1) ln f = (D−1) ln(sin θᵢ / sin θ_f)``, the change of ``ln p`` that
        Snell's law (``n sin θ`` conserved) implies; ``±|g||v|τ`` for a ray along
        ``±g``. It equals minus the log-determinant of ``∂v'/∂v``.
    """
    dim = velocity.shape[-1]
    speed = jnp.linalg.norm(velocity)
    grad_norm = jnp.linalg.norm(grad)
    moving = (speed > 0) & (grad_norm > 0)
    unit_v = velocity / jnp.where(speed > 0, speed, 1.0)
    unit_g = grad / jnp.where(grad_norm > 0, grad_norm, 1.0)
    a2 = jnp.sum((unit_v - unit_g) ** 2)
    b2 = jnp.sum((unit_v + unit_g) ** 2)
    total = a2 + b2                                    # 4 up to rounding
    k = jnp.where(moving, grad_norm * speed * travel_time / (dim - 1.0), 0.0)
    shrink = jnp.exp(-2.0 * k)
    denominator = b2 + a2 * shrink                     # 0 only for u = −ĝ with e^{−k} → 0
    safe = jnp.where(denominator > 0, denominator, 1.0)
    cos_i = (b2 - a2) / total
    cos_f = jnp.where(denominator > 0, (b2 - a2 * shrink) / safe, -1.0)
    ratio = jnp.where(denominator > 0, jnp.exp(-k) * total / safe, 0.0)
    new_unit = cos_f * unit_g + ratio * (unit_v - cos_i * unit_g)
    new_velocity = jnp.where(moving, speed * new_unit, velocity)
    # −ln f = k + ln(b² + a² e^{−2k}) − ln(a² + b²), in log form against overflow.
    log_denominator = jnp.logaddexp(jnp.log(b2), jnp.log(a2) - 2.0 * k)
    delta = (dim - 1.0) * (k + log_denominator - jnp.log(total))
    return new_velocity, jnp.where(moving, delta, 0.0)


def _hmc_kick(velocity: jax.Array, grad: jax.Array, travel_time: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
    """Unit-mass momentum kick ``v + τ g`` and the kinetic energy it removes."""
    new_velocity = velocity + travel_time * grad
    delta = 0.5 * (jnp.sum(new_velocity**2) - jnp.sum(velocity**2))
    return new_velocity, delta


def _refresh(key: jax.Array, velocity: jax.Array, persistence: jax.Array) -> jax.Array:
    """Autoregressive refresh ``f v + √(1−f²) ξ``; leaves ``N(0, I)`` invariant."""
    noise = jax.random.normal(key, velocity.shape, velocity.dtype)
    return persistence * velocity + jnp.sqrt(1.0 - persistence**2) * noise


def build_kernel(integrator: str = "dkd", sample_hmc: bool = False,
                 metropolis_check: bool = True) -> Callable:
    """Build the Ray Tracing transition kernel.

    Parameters
    ----------
    integrator : {"dkd", "kdk"}
        Drift-kick-drift (the reference implementation's choice) or its
        time-reversed partner kick-drift-kick; both are symmetric, symplectic
        in the HMC case, and second order.
    sample_hmc : bool
        Use the HMC momentum kick instead of refraction (same driver).
    metropolis_check : bool
        Accept/reject with the exact log density. Without it every proposal is
        accepted — the regime of stochastic gradients where ``ln p`` is not
        available exactly; the chain is then only approximately invariant.

    Returns
    -------
    callable
        ``step(rng_key, state, logdensity_fn, step_size, n_steps, refresh_rate=0.0)
        -> (RayTraceState, RayTraceInfo)``. ``n_steps`` may be traced;
        ``refresh_rate`` is the in-trajectory refresh rate per unit travel time
        (0 keeps the velocity drawn at the start of the trajectory).
    """
    if integrator not in INTEGRATORS:
        raise ParameterError(f"integrator must be one of {INTEGRATORS}, got {integrator!r}")
    kick = _hmc_kick if sample_hmc else refract_velocity
    kick_first = integrator == "kdk"

    def step(rng_key: jax.Array, state: RayTraceState, logdensity_fn: Callable,
             step_size: float, n_steps: int, refresh_rate: float = 0.0
             ) -> tuple[RayTraceState, RayTraceInfo]:
        velocity_key, refresh_key, accept_key = jax.random.split(rng_key, 3)
        value_and_grad = jax.value_and_grad(logdensity_fn)
        h = jnp.asarray(step_size, dtype=state.position.dtype)
        persistence = jnp.exp(-jnp.abs(refresh_rate * h) / 2.0)
        velocity = jax.random.normal(velocity_key, state.position.shape, state.position.dtype)

        def one_step(i, carry):
            x, v, value, grad, luminosity = carry
            k_before, k_after = jax.random.split(jax.random.fold_in(refresh_key, i))
            v = _refresh(k_before, v, persistence)
            if kick_first:
                v, d1 = kick(v, grad, h / 2)
                x = x + h * v
                value, grad = value_and_grad(x)
                v, d2 = kick(v, grad, h / 2)
                luminosity = luminosity + d1 + d2
            else:
                x = x + 0.5 * h * v
                _, grad_mid = value_and_grad(x)
                v, d = kick(v, grad_mid, h)
                x = x + 0.5 * h * v
                luminosity = luminosity + d
            v = _refresh(k_after, v, persistence)
            return x, v, value, grad, luminosity

        zero = jnp.zeros((), state.position.dtype)
        x, _, value, grad, luminosity = jax.lax.fori_loop(
            0, n_steps, one_step,
            (state.position, velocity, state.logdensity, state.logdensity_grad, zero))
        if not kick_first:
            # DKD ends on a drift: the end point's density is not yet known.
            value, grad = value_and_grad(x)
        proposal = RayTraceState(x, value, grad)

        delta_logdensity = value - state.logdensity
        log_ratio = delta_logdensity - luminosity
        finite = jnp.isfinite(log_ratio) & jnp.all(jnp.isfinite(x))
        if metropolis_check:
            accept_prob = jnp.where(finite, jnp.exp(jnp.minimum(log_ratio, 0.0)), 0.0)
            accepted = jax.random.uniform(accept_key) < accept_prob
        else:
            accept_prob = jnp.ones((), x.dtype)
            accepted = finite
        new_state = jax.tree.map(lambda new, old: jnp.where(accepted, new, old), proposal, state)
        info = RayTraceInfo(accept_prob, accepted, ~finite, delta_logdensity, luminosity, proposal)
        return new_state, info

    return step


def as_top_level_api(logdensity_fn: Callable, step_size: float, n_steps: int,
                     refresh_rate: float = 0.0, integrator: str = "dkd",
                     sample_hmc: bool = False, metropolis_check: bool = True
                     ) -> SamplingAlgorithm:
    """Bundle ``init`` and a parametrised ``step`` as a blackjax ``SamplingAlgorithm``.

    Nothing is jitted here; compose ``jax.jit``, ``jax.vmap`` and ``lax.scan``
    around ``step(rng_key, state)`` as with any blackjax algorithm.
    """
    kernel = build_kernel(integrator, sample_hmc, metropolis_check)

    def init_fn(position: jax.Array, rng_key: jax.Array | None = None) -> RayTraceState:
        return init(position, logdensity_fn)

    def step_fn(rng_key: jax.Array, state: RayTraceState) -> tuple[RayTraceState, RayTraceInfo]:
        return kernel(rng_key, state, logdensity_fn, step_size, n_steps, refresh_rate)

    return SamplingAlgorithm(init_fn, step_fn)


def with_gradient_noise(fn: Callable, relative_sigma: float = 0.1, seed: int = 0) -> Callable:
    """Wrap ``fn(z, *args)`` so that its gradient in ``z`` carries Gaussian noise.

    The value is exact; the derivative with respect to ``z`` becomes
    ``∇fn + relative_sigma · |∇fn| · ξ(z)`` with ``ξ ~ N(0, I_d)`` — each component
    of the noise has standard deviation ``relative_sigma`` times the gradient's
    norm. ``ξ`` is a pseudo-random function of the bits of ``z`` (and ``seed``), so
    every new point gets fresh noise without threading keys through the sampler.
    Used to reproduce the stochastic-gradient regime (mini-batches, Monte Carlo
    likelihoods) in which Behroozi (2025) compares Ray Tracing with HMC; run it
    with ``metropolis_check=False``, as there. (With the check, the chain stays
    exact: a kick by a fixed function of position is still reversible, and the
    luminosity/energy bookkeeping uses the same noisy gradient.)

    Parameters
    ----------
    fn : callable
        ``(z (d,), *args) -> scalar``.
    relative_sigma : float
        Noise standard deviation per component, in units of ``|∇fn|``.
    seed : int
        Seed of the noise field.
    """
    base_key = jax.random.PRNGKey(seed)

    def noise_at(z: jax.Array) -> jax.Array:
        bits = jax.lax.bitcast_convert_type(z, jnp.uint32).reshape(-1)
        mixed = jnp.bitwise_xor.reduce(bits * jnp.uint32(2654435761) +
                                       jnp.arange(bits.size, dtype=jnp.uint32))
        return jax.random.normal(jax.random.fold_in(base_key, mixed), z.shape, z.dtype)

    @jax.custom_jvp
    def noisy(z, *args):
        return fn(z, *args)

    @noisy.defjvp
    def noisy_jvp(primals, tangents):
        z, *args = primals
        value, tangent_out = jax.jvp(fn, tuple(primals), tuple(tangents))
        grad = jax.grad(fn)(z, *args)
        noise = relative_sigma * jnp.linalg.norm(grad) * noise_at(z)
        return value, tangent_out + jnp.vdot(noise, tangents[0])

    return noisy


def laplace_scale(logdensity_fn: Callable, z0: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A square root ``S`` (d, d) of the Laplace covariance at ``z0`` and whether it exists.

    ``S Sᵀ = H⁻¹`` with ``H = −∇² logdensity_fn(z0)`` (``S = C⁻ᵀ`` for the Cholesky
    factor ``C Cᵀ = H``). Where ``H`` is not positive definite (Cholesky gives NaN),
    the identity and ``False``.
    """
    precision = -jax.hessian(logdensity_fn)(z0)
    precision = 0.5 * (precision + precision.T)
    identity = jnp.eye(z0.shape[0], dtype=z0.dtype)
    chol = jnp.linalg.cholesky(precision)
    scale = jax.scipy.linalg.solve_triangular(chol, identity, lower=True).T
    ok = jnp.all(jnp.isfinite(scale))
    return jnp.where(ok, scale, identity), ok


@memoised_engine
def build_raytrace_engine(log_likelihood: Callable, n_dim: int, n_warmup: int, n_burnin: int,
                          n_samples: int, integrator: str, sample_hmc: bool,
                          metropolis_check: bool, adapt_step_size: bool,
                          precondition: str = "none") -> Callable:
    """Jitted one-chain Ray Tracing engine for a likelihood, dimension and static options.

    Chains run one after the other through the same engine (as the blackjax
    runners do), so the compiled program does not depend on the number of chains.

    Returns
    -------
    callable
        ``engine(key, z0, data_args, step_size, n_steps, refresh_rate,
        target_accept) -> dict`` with ``samples`` (n_samples, d),
        ``acceptance_rate`` and ``is_divergent`` (n_samples,), ``logdensity``
        (n_samples,), the final ``step_size`` and ``preconditioned`` (whether the
        ``precondition="laplace"`` whitening was applied; see the module
        docstring). ``n_steps`` (steps per trajectory), step size, refresh rate
        and target acceptance are traced. Without the Metropolis check there is
        no acceptance rate to adapt to, so the step size is then never adapted.
    """
    if precondition not in PRECONDITIONERS:
        raise ParameterError(
            f"precondition must be one of {PRECONDITIONERS}, got {precondition!r}")
    kernel = build_kernel(integrator, sample_hmc, metropolis_check)
    n_total = n_warmup + n_burnin + n_samples
    adapting = adapt_step_size and metropolis_check and n_warmup > 0

    @jax.jit
    def engine(key, z0, data_args, step_size, n_steps, refresh_rate, target_accept):
        def target_logdensity(z):
            return log_density(log_likelihood, z, data_args)

        if precondition == "laplace":
            scale, preconditioned = laplace_scale(target_logdensity, z0)
        else:
            scale, preconditioned = jnp.eye(n_dim, dtype=z0.dtype), jnp.asarray(False)

        def logdensity_fn(u):  # the ray's coordinates: z = z0 + S u (constant Jacobian)
            return target_logdensity(z0 + scale @ u)

        da_init, da_update, _ = dual_averaging_adaptation(target_accept)
        h0 = jnp.asarray(step_size, dtype=z0.dtype)

        # One scan over warm-up, burn-in and sampling keeps a single copy of the
        # kernel in the compiled program (three scans compile three copies).
        def transition(carry, inputs):
            st, da = carry
            i, k = inputs
            warming = i < n_warmup
            if adapting:
                h = jnp.where(warming, jnp.exp(da.log_step_size), jnp.exp(da.log_step_size_avg))
            else:
                h = h0
            st, info = kernel(k, st, logdensity_fn, h, n_steps, refresh_rate)
            if adapting:
                updated = da_update(da, info.acceptance_rate)
                da = jax.tree.map(lambda new, old: jnp.where(warming, new, old), updated, da)
            return (st, da), (st.position, info.acceptance_rate, info.is_divergent,
                              st.logdensity, h)

        carry = (init(jnp.zeros_like(z0), logdensity_fn), da_init(h0))
        inputs = (jnp.arange(n_total), jax.random.split(key, n_total))
        _, (draws, accept, divergent, logp, h) = jax.lax.scan(transition, carry, inputs)
        kept = slice(n_warmup + n_burnin, None)
        return {"samples": z0 + draws[kept] @ scale.T, "acceptance_rate": accept[kept],
                "is_divergent": divergent[kept], "logdensity": logp[kept], "step_size": h[-1],
                "preconditioned": preconditioned}

    return engine


START_POINTS = ("map", "init")


def _start_point(start: str, problem: Problem, key: jax.Array) -> jax.Array:
    """The MAP (with the ``[map]`` defaults, sharing its engine) or ``problem.init``."""
    if start == "init":
        return initial_point(problem)
    defaults = method_options("map", {})
    return run_map_engine(problem, key, defaults["n_starts"], defaults["n_steps"],
                          defaults["tol"])["point"]


def _validated(options: dict) -> dict:
    opts = method_options("mcmc_raytrace", options)
    for name in ("n_warmup", "n_burnin"):
        if int(opts[name]) < 0:
            raise ParameterError(f"{name} must be ≥ 0, got {opts[name]!r}")
    for name in ("n_samples", "n_chains", "n_steps_per_sample"):
        if int(opts[name]) < 1:
            raise ParameterError(f"{name} must be ≥ 1, got {opts[name]!r}")
    if not float(opts["step_size"]) > 0:
        raise ParameterError(f"step_size must be > 0, got {opts['step_size']!r}")
    if float(opts["refresh_rate"]) < 0:
        raise ParameterError(f"refresh_rate must be ≥ 0, got {opts['refresh_rate']!r}")
    if not 0 < float(opts["target_accept"]) < 1:
        raise ParameterError(f"target_accept must be in (0, 1), got {opts['target_accept']!r}")
    if opts["integrator"] not in INTEGRATORS:
        raise ParameterError(
            f"integrator must be one of {INTEGRATORS}, got {opts['integrator']!r}")
    if opts["start"] not in START_POINTS:
        raise ParameterError(f"start must be one of {START_POINTS}, got {opts['start']!r}")
    if opts["precondition"] not in PRECONDITIONERS:
        raise ParameterError(
            f"precondition must be one of {PRECONDITIONERS}, got {opts['precondition']!r}")
    return opts


def run_raytrace(problem: Problem, key: jax.Array, **options) -> RawResult:
    """Sample the latent posterior of ``problem`` with Ray Tracing (or HMC).

    Options (defaults in the ``[mcmc_raytrace]`` section of ``defaults.toml``)
    ----------------------------------------------------------------------
    n_warmup : int
        Transitions run first and discarded; the step size is adapted during
        them when ``adapt_step_size`` (dual averaging toward ``target_accept``).
    n_burnin : int
        Further discarded transitions at the final step size.
    n_samples, n_chains : int
        Kept draws per chain; chains run one after the other through one
        compiled engine, all from the same start point with their own keys.
    step_size : float
        Travel time ``h`` per integration step (see the module docstring for how
        it scales with dimension); the starting value when adapting.
    integrator : {"dkd", "kdk"}
    refresh_rate : float
        In-trajectory velocity refresh per unit travel time (0: none).
    n_steps_per_sample : int
        Integration steps per transition (trajectory length ``h × n``).
    sample_hmc : bool
        Plain HMC with the same driver.
    metropolis_check : bool
        Exact accept/reject (turn off only for stochastic likelihoods).
    adapt_step_size : bool, target_accept : float
        Step-size adaptation during warm-up (only with ``metropolis_check``).
    start : {"map", "init"}
        Start at the MAP (``[map]`` defaults, shared engine) or ``problem.init``.
    precondition : {"laplace", "none"}
        Whiten by the Laplace covariance at the start point (module docstring).

    Returns
    -------
    RawResult
        ``samples`` of shape (n_chains, n_samples, d); ``point`` the latent
        posterior mean; diagnostics ``acceptance_rate`` (and per chain),
        ``step_size`` (mean over chains after adaptation, and per chain),
        ``divergences``, ``integrator``, ``sample_hmc``, ``n_chains``,
        ``precondition`` and ``preconditioned`` (false where the Hessian at the
        start was not positive definite and the identity was used).
    """
    opts = _validated(options)
    n_dim = problem.n_dim
    sample_hmc = bool(opts["sample_hmc"])
    if n_dim < 2 and not sample_hmc:
        raise ParameterError("Ray Tracing needs at least 2 dimensions (the refractive index "
                             "is p^{1/(D-1)}); use sample_hmc=True for a 1-D problem")
    engine = build_raytrace_engine(
        problem.log_likelihood, n_dim, int(opts["n_warmup"]), int(opts["n_burnin"]),
        int(opts["n_samples"]), str(opts["integrator"]), sample_hmc,
        bool(opts["metropolis_check"]), bool(opts["adapt_step_size"]),
        str(opts["precondition"]))
    map_key, chain_key = jax.random.split(key)
    z0 = _start_point(opts["start"], problem, map_key)
    dynamic = (np.float64(opts["step_size"]), np.int64(opts["n_steps_per_sample"]),
               np.float64(opts["refresh_rate"]), np.float64(opts["target_accept"]))
    chains = [engine(jax.random.fold_in(chain_key, c), z0, problem.data_args, *dynamic)
              for c in range(int(opts["n_chains"]))]
    stacked = {k: np.stack([np.asarray(c[k]) for c in chains]) for k in chains[0]}
    draws = stacked["samples"]
    diagnostics = {
        "acceptance_rate": float(np.mean(stacked["acceptance_rate"])),
        "acceptance_rate_per_chain": np.mean(stacked["acceptance_rate"], axis=1),
        "step_size": float(np.mean(stacked["step_size"])),
        "step_size_per_chain": stacked["step_size"],
        "divergences": int(np.sum(stacked["is_divergent"])),
        "n_steps_per_sample": int(opts["n_steps_per_sample"]),
        "integrator": str(opts["integrator"]),
        "sample_hmc": sample_hmc,
        "n_chains": int(opts["n_chains"]),
        "max_log_density": float(np.max(stacked["logdensity"])),
        "precondition": str(opts["precondition"]),
        "preconditioned": bool(np.all(stacked["preconditioned"])),
    }
    return RawResult(
        method="mcmc_raytrace",
        point=jax.device_put(draws.reshape(-1, n_dim).mean(axis=0)),
        samples=jax.device_put(draws),
        diagnostics=diagnostics,
        loss_history=None,
    )
