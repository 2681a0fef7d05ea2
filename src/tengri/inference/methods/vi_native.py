"""Geometric variational inference in pure JAX (``vi_native``).

The same objective as NIFTy's geoVI (Frank, Leike & Enßlin 2021) and MGVI
(Knollmüller & Enßlin 2019), written without NIFTy so that the whole
optimisation is one jitted (and vmappable) program. It needs a Gaussian
likelihood given by whitened residuals ``r(ξ)`` (``log L = −|r|²/2``) and uses
tengri's latent prior ``ξ ~ N(0, I)``.

Ingredients, at an expansion point ``ξ̄`` with residual Jacobian ``J̄ = ∂r/∂ξ(ξ̄)``:

* **Fisher metric** ``M = J̄ᵀJ̄ + I`` (likelihood Fisher information plus prior).
* **Linear (MGVI) sample**: ``t = J̄ᵀη₁ + η₂`` with ``η₁ ~ N(0, I_n)``,
  ``η₂ ~ N(0, I_d)`` has covariance ``M``; ``δ = M⁻¹t`` (conjugate gradients with
  matrix-vector products through ``jvp``/``vjp``) is a draw of ``N(0, M⁻¹)``.
* **Nonlinear (geoVI) sample**: geoVI's coordinate map
  ``g(ξ) = ξ + J̄ᵀ r(ξ)`` pushes the posterior toward a standard normal; a sample
  is the solution of ``g(ξ̄ + δ) − g(ξ̄) = t``, found by Gauss–Newton iterations
  (normal equations solved with CG, backtracking on ``|g − g(ξ̄) − t|``) started
  at the linear sample, which is the solution of the linearised equation.
* **Mirroring**: each draw ``(η₁, η₂)`` is used with both signs (antithetic
  sampling), so ``n_samples = 3`` gives 6 draws.
* **KL minimisation**: with the sample offsets ``δ_i`` held fixed, minimise the
  sampled KL energy ``E(ξ̄) = mean_i [|r(ξ̄ + δ_i)|²/2 + |ξ̄ + δ_i|²/2]`` by
  Newton–CG with the sample-averaged metric and an Armijo backtracking search.

Linear algebra (``solver``, static): for ``d ≤ DENSE_MAX_DIM`` (the default
``auto``) every Jacobian is formed explicitly with forward mode (``jacfwd``:
``d`` tangents, one vectorised pass) and the ``d × d`` systems above are solved
directly (Cholesky for ``M`` and the KL metric, LU for the geoVI step) — the
same solutions as the matrix-free CG path (``solver="cg"``, used above
``DENSE_MAX_DIM``) to round-off (``tests/test_methods_vi.py``). A geoVI solve stops
when the mismatch is below 1e-10 or an accepted step moves ``ξ`` by less than
1e-10. On CPU the top-up samples are solved one at a time (``lax.map``) so that
no sample waits for the slowest of a vmapped batch. On the 5-parameter SED mock
of ``bench/methods.py`` (2 shared CPU cores) this took the warm run from 217 s to
17.6 s (``bench/methods.py --quick``; the top-up draws alone 44 s → 13 s with
identical draws, ``bench/vi_native_profile.py``).

``sample_mode`` chooses how samples evolve over the ``n_kl_iter`` iterations, as in
NIFTy: ``linear_resample`` (MGVI: new linear samples every iteration),
``linear_sample`` (same random numbers every iteration), ``nonlinear_resample``
(geoVI, new random numbers), ``nonlinear_sample`` (geoVI, same random numbers),
``nonlinear_update`` (geoVI; later iterations update the previous samples' offsets
instead of restarting from the linear solution). The loop stops early when the
KL energy changes by less than ``tol_kl`` between iterations.

``n_seeds`` (default 5) runs independent optimisations with different random
numbers (one after the other, through the same compiled engine) from the same
start and keeps the one with the lowest final KL energy; only that one is topped
up with further draws. The KL is estimated from 8 draws, so one optimisation's
end point depends on its random numbers: on the SED mock of ``bench/methods.py``
(``sf_young``, keys 0–5) one seed put the medians 0.31–2.86 σ_NUTS from the NUTS
reference (key 0: 2.86 in log M*), five seeds 0.25–0.56
(``bench/records/methods_cpu_2core_s14``), for ~1 s more (the KL iterations
take 0.24 s a seed, the 992 top-up draws 2.25 s).

This implementation is *not* posterior-equivalent to NIFTy's: different inner
solvers and stopping rules land on different points on hard problems (the seed
reports an order-of-magnitude difference in a PSD timescale on a 137-D model;
on the funnel below the two geoVI means of ``v`` differ by 0.3). Compare before
swapping.

Returned draws: the VI samples of the last iteration, re-centred on the final
mean (as NIFTy does), then — if ``n_posterior_samples`` asks for more — fresh
mirrored draws of the same approximate posterior (the same linear or geoVI
sample map at the final mean). If fewer are asked for, the first ones are
returned.

What VI gets wrong on funnels
-----------------------------
Take the residuals ``r_i = c x_i e^{−v/2}`` (``i = 1 … 9``, ``c = 10``): in the
latent space the posterior is a funnel, the width of every ``x_i`` set by ``v``,
and the exact marginal ``p(v) ∝ N(v) (1 + c² e^{−v})^{−9/2}`` has mean 3.38 and
standard deviation 0.76. The Fisher metric ``JᵀJ + I`` at the VI mean, where
``x̄ = 0``, has no likelihood term for ``v`` (``∂r/∂v ∝ x̄``), so the samples of
``v`` come essentially from its prior. Measured with this module (20
iterations, 5 keys): the standard deviation of ``v`` is 0.95–1.02 for both MGVI
and geoVI (over-dispersed by ~30 %; ``tests/test_methods_vi.py`` checks it), the
mean of ``v`` scatters from run to run between 2.8 and 4.4 (the KL is estimated
from 8 draws), and MGVI loses the funnel's coupling of ``v`` and the ``x``-width
(correlation of ``v`` with ``log|x₁|``: 0.0 ± 0.05 against 0.25 exactly; geoVI's
curved samples give 0.30–0.36). NIFTy's ``vi``/``mgvi`` give the same picture
(sd 0.93–0.95). Ray Tracing on the same problem recovers 3.37 ± 0.75. Use a
sampler for hierarchical scale parameters.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

from tengri.analysis.diagnostics import pareto_k
from tengri.errors import ParameterError
from tengri.inference.methods._engine_cache import memoised_engine
from tengri.inference.methods.optimize import initial_point, run_map_engine
from tengri.inference.problem import Problem, RawResult
from tengri.inference.registry import method_options

__all__ = [
    "SAMPLE_MODES",
    "VIState",
    "metric_sample",
    "geovi_transform_sample",
    "draw_offsets",
    "approximation_log_weights",
    "kl_energy",
    "minimize_kl",
    "build_vi_native_engine",
    "build_vi_draws_engine",
    "check_vi_options",
    "lowest_final_kl",
    "topped_up",
    "vi_start_point",
    "run_vi_native",
]

SAMPLE_MODES = ("linear_resample", "linear_sample", "nonlinear_resample",
                "nonlinear_sample", "nonlinear_update")
_NEWTON_STEPS = 30       # KL Newton–CG iterations per VI iteration (max)
_GEOVI_STEPS = 10        # Gauss–Newton iterations of the geoVI map (max)
_GEOVI_XTOL = 1e-10      # ... or stop once an accepted step moves ξ by less (latent units)
_LINE_SEARCH = 12        # step halvings tried by the backtracking searches
_CG_TOL = 1e-9           # relative residual of every CG solve


# At or below this latent dimension the residual Jacobian J (n_data × d) is formed
# explicitly (d forward-mode passes, vectorised) and every d × d system is solved
# directly; above it, matrix-free CG through jvp/vjp. For the SED models (d ≈ 5–100)
# one explicit Jacobian costs less than a single CG iteration's jvp + vjp pair
# times the 2d + 20 iterations CG may take, and it compiles to a far smaller program.
DENSE_MAX_DIM = 128
SOLVERS = ("auto", "dense", "cg")


def _cg_maxiter(n_dim: int) -> int:
    return 2 * n_dim + 20


def _geovi_chunk(n_lanes: int) -> int:
    """How many geoVI samples are solved side by side (lax.map over vmapped chunks).

    A vmapped while_loop runs every lane as long as its slowest (3–10 Gauss–Newton
    steps per sample on the SED mock). On CPU a vmapped model evaluation costs as
    much per lane as a single one, so one lane at a time is fastest (992 top-up
    draws at the mock's VI mean: 13 s one at a time, 16 s in chunks of 4,
    25 s of 16, 2 shared cores). Accelerators keep all lanes in one vmap (not
    measured here).
    """
    return 1 if jax.default_backend() == "cpu" else n_lanes


def _dense(solver: str, n_dim: int) -> bool:
    """Whether ``solver`` means explicit Jacobians for a ``n_dim``-dimensional latent."""
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return solver == "dense" or (solver == "auto" and n_dim <= DENSE_MAX_DIM)


def residuals_and_jacobian(residuals: Callable, x: jax.Array, data_args: Any
                           ) -> tuple[jax.Array, jax.Array]:
    """Whitened residuals ``r(x)`` (n,) and their Jacobian ``∂r/∂ξ`` (n, d) at ``x``.

    Forward mode: ``d`` tangents pushed through one vectorised ``jvp``; the
    primal is computed once.
    """
    def both(y):
        r = residuals(y, data_args)
        return r, r

    jac, r = jax.jacfwd(both, has_aux=True)(x)
    return r, jac


def _spd_solve(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """``matrix⁻¹ rhs`` for a symmetric positive definite ``matrix`` (d, d) (Cholesky)."""
    return jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(matrix, lower=True), rhs)


class VIState(NamedTuple):
    """Carry of the VI iteration loop (one seed).

    Attributes
    ----------
    mean : jax.Array, shape (d,)
        Expansion point ``ξ̄``.
    offsets : jax.Array, shape (m, d)
        Sample offsets ``δ_i`` (``m = n_samples`` or ``2·n_samples`` mirrored).
    sample_key : jax.Array
        Key of the current samples' random numbers (reused by ``*_sample`` and
        ``nonlinear_update`` modes).
    energy : jax.Array, scalar
        KL energy after the last iteration (``+inf`` before the first).
    n_iter : jax.Array, int scalar
        Iterations done.
    converged : jax.Array, bool scalar
        Whether the energy change fell below ``tol_kl``.
    """

    mean: jax.Array
    offsets: jax.Array
    sample_key: jax.Array
    energy: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def _linear_operators(residuals: Callable, x: jax.Array, data_args: Any):
    """``(r(x), v ↦ J v, u ↦ Jᵀ u)`` at ``x``, linearised once."""
    r, jvp = jax.linearize(lambda y: residuals(y, data_args), x)
    vjp = jax.linear_transpose(jvp, x)
    return r, jvp, lambda u: vjp(u)[0]


def metric_sample(residuals: Callable, mean: jax.Array, data_args: Any, key: jax.Array,
                  solver: str = "auto") -> tuple[jax.Array, jax.Array]:
    """A draw ``t ~ N(0, M)`` and the linear sample ``δ = M⁻¹ t ~ N(0, M⁻¹)``.

    Parameters
    ----------
    residuals : callable
        ``(ξ (d,), data_args) -> r (n,)`` whitened residuals.
    mean : jax.Array, shape (d,)
        Expansion point ``ξ̄``.
    data_args : pytree
        Passed to ``residuals``.
    key : jax.Array
        Random key for ``(η₁, η₂)``.
    solver : {"auto", "dense", "cg"}
        ``dense``: explicit Jacobian and a Cholesky solve of ``M``; ``cg``:
        matrix-free conjugate gradients; ``auto``: dense for
        ``d ≤ DENSE_MAX_DIM``. Both draw the same ``(η₁, η₂)`` from ``key``.

    Returns
    -------
    delta, t : jax.Array, shape (d,)
    """
    k_lik, k_prior = jax.random.split(key)
    if _dense(solver, mean.shape[0]):
        r, jac = residuals_and_jacobian(residuals, mean, data_args)
        t = jac.T @ jax.random.normal(k_lik, r.shape, r.dtype) + jax.random.normal(
            k_prior, mean.shape, mean.dtype)
        metric = jac.T @ jac + jnp.eye(mean.shape[0], dtype=mean.dtype)
        return _spd_solve(metric, t), t
    r, jvp, vjp = _linear_operators(residuals, mean, data_args)
    t = vjp(jax.random.normal(k_lik, r.shape, r.dtype)) + jax.random.normal(
        k_prior, mean.shape, mean.dtype)
    delta, _ = cg(lambda v: vjp(jvp(v)) + v, t, x0=t / 2, tol=_CG_TOL,
                  maxiter=_cg_maxiter(mean.shape[0]))
    return delta, t


def geovi_transform_sample(residuals: Callable, mean: jax.Array, data_args: Any,
                           start: jax.Array, target: jax.Array, solver: str = "auto"
                           ) -> tuple[jax.Array, jax.Array]:
    """Solve geoVI's ``g(ξ) − g(ξ̄) = target`` for ``ξ``, ``g(ξ) = ξ + J̄ᵀ r(ξ)``.

    Parameters
    ----------
    residuals, mean, data_args
        As in :func:`metric_sample`.
    start : jax.Array, shape (d,)
        Starting point (``ξ̄ + δ_linear``, or a previous sample).
    target : jax.Array, shape (d,)
        ``±t``, the metric sample of :func:`metric_sample`.
    solver : {"auto", "dense", "cg"}
        How each Gauss–Newton step is solved (see :func:`metric_sample`). Dense:
        ``A = I + J̄ᵀJ(ξ)`` (d, d) is formed and ``A step = −mismatch`` solved by
        LU, the same step as CG's normal equations ``AᵀA step = −Aᵀ mismatch``
        whenever ``A`` is invertible.

    Returns
    -------
    sample : jax.Array, shape (d,)
        The nonlinear sample ``ξ`` (absolute position).
    mismatch : jax.Array, scalar
        ``|g(ξ) − g(ξ̄) − target|`` at the end (0 for an exact solution).
    """
    if _dense(solver, mean.shape[0]):
        return _geovi_transform_dense(residuals, mean, data_args, start, target)
    r_bar, jvp_bar, vjp_bar = _linear_operators(residuals, mean, data_args)
    g_bar = mean + vjp_bar(r_bar)
    maxiter = _cg_maxiter(mean.shape[0])

    def mismatch_of(x):
        return x + vjp_bar(residuals(x, data_args)) - g_bar - target

    def cost(x):
        m = mismatch_of(x)
        return 0.5 * jnp.sum(m * m)

    def newton_step(x):
        _, jvp_x, vjp_x = _linear_operators(residuals, x, data_args)

        def a_mv(v):          # A = ∂g/∂ξ = I + J̄ᵀ J(x)
            return v + vjp_bar(jvp_x(v))

        def at_mv(w):         # Aᵀ = I + J(x)ᵀ J̄
            return w + vjp_x(jvp_bar(w))

        m = mismatch_of(x)
        step, _ = cg(lambda v: at_mv(a_mv(v)), -at_mv(m), tol=_CG_TOL, maxiter=maxiter)
        return step

    return _gauss_newton_solve(cost, newton_step, start)


def _geovi_transform_dense(residuals: Callable, mean: jax.Array, data_args: Any,
                           start: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """:func:`geovi_transform_sample` with explicit Jacobians (Newton on ``g``)."""
    r_bar, jac_bar = residuals_and_jacobian(residuals, mean, data_args)
    g_bar = mean + jac_bar.T @ r_bar
    identity = jnp.eye(mean.shape[0], dtype=mean.dtype)

    def mismatch_from(x, r_x):
        return x + jac_bar.T @ r_x - g_bar - target

    def cost(x):
        m = mismatch_from(x, residuals(x, data_args))
        return 0.5 * jnp.sum(m * m)

    def newton_step(x):
        r_x, jac_x = residuals_and_jacobian(residuals, x, data_args)
        return jnp.linalg.solve(identity + jac_bar.T @ jac_x, -mismatch_from(x, r_x))

    return _gauss_newton_solve(cost, newton_step, start)


def _gauss_newton_solve(cost: Callable, newton_step: Callable, start: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
    """Minimise ``cost = |mismatch|²/2`` from ``start`` by ``newton_step`` with backtracking.

    Stops after ``_GEOVI_STEPS`` steps, when a step does not lower the cost, when
    the cost is below 1e-20 or when an accepted step moves ξ by less than
    ``_GEOVI_XTOL``. Returns the point and ``|mismatch|`` there.
    """
    def body(carry):
        x, c, i, _ = carry
        step = newton_step(x)
        x_new, c_new = _backtrack(cost, x, c, step, 0.0)
        improved = c_new < c
        small_step = jnp.max(jnp.abs(x_new - x)) < _GEOVI_XTOL
        return (jnp.where(improved, x_new, x), jnp.minimum(c_new, c), i + 1,
                ~improved | (c_new < 1e-20) | small_step)

    def cond(carry):
        _, _, i, done = carry
        return (i < _GEOVI_STEPS) & ~done

    x, c, _, _ = jax.lax.while_loop(cond, body, (start, cost(start), 0, False))
    return x, jnp.sqrt(2.0 * c)


def _backtrack(fun: Callable, x: jax.Array, f0: jax.Array, step: jax.Array,
               slope: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Halve ``step`` until ``fun(x + α step) ≤ f0 + 1e-4 α slope`` (Armijo)."""
    def cond(carry):
        alpha, f, i = carry
        return (i < _LINE_SEARCH) & ~(f <= f0 + 1e-4 * alpha * slope)

    def body(carry):
        alpha, _, i = carry
        alpha = 0.5 * alpha
        return alpha, fun(x + alpha * step), i + 1

    f1 = fun(x + step)
    alpha, f, _ = jax.lax.while_loop(cond, body, (jnp.ones_like(f0), f1, 0))
    f = jnp.where(jnp.isfinite(f), f, jnp.inf)
    return x + alpha * step, f


def draw_offsets(residuals: Callable, mean: jax.Array, data_args: Any, key: jax.Array,
                 n_samples: int, nonlinear: bool, mirror: bool,
                 previous: jax.Array | None = None, use_previous: jax.Array | bool = False,
                 solver: str = "auto") -> jax.Array:
    """Sample offsets ``δ_i`` of the approximate posterior at ``mean``.

    Parameters
    ----------
    residuals, mean, data_args
        As in :func:`metric_sample`.
    key : jax.Array
        Key of the random numbers; sample ``i`` uses ``fold_in(key, i)``, so the
        same key reproduces the same ``(η₁, η₂)`` at any ``mean``.
    n_samples : int
        Independent draws; ``2·n_samples`` offsets with ``mirror``.
    nonlinear : bool
        Apply the geoVI map (else linear MGVI samples).
    mirror : bool
        Antithetic pairs ``(+δ, −δ)``, interleaved.
    previous : jax.Array, shape (m, d), optional
        Offsets to start the geoVI solve from (``nonlinear_update``) ...
    use_previous : bool or traced bool
        ... when true (else the linear samples are the starting points).
    solver : {"auto", "dense", "cg"}
        See :func:`metric_sample`.

    Returns
    -------
    jax.Array, shape (m, d)
    """
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_samples))
    deltas, targets = jax.vmap(
        lambda k: metric_sample(residuals, mean, data_args, k, solver))(keys)
    if mirror:
        deltas = jnp.stack([deltas, -deltas], axis=1).reshape(-1, mean.shape[0])
        targets = jnp.stack([targets, -targets], axis=1).reshape(-1, mean.shape[0])
    if not nonlinear:
        return deltas
    starts = mean + (deltas if previous is None else jnp.where(use_previous, previous, deltas))
    samples, _ = jax.lax.map(
        lambda st: geovi_transform_sample(residuals, mean, data_args, st[0], st[1], solver),
        (starts, targets), batch_size=_geovi_chunk(starts.shape[0]))
    return samples - mean



def approximation_log_weights(residuals: Callable, mean: jax.Array, draws: jax.Array,
                              data_args: Any, nonlinear: bool) -> jax.Array:
    """Importance log weights ``log p(ξ) − log q(ξ)`` of draws of the approximation at ``mean``.

    ``p ∝ exp(−|r(ξ)|²/2 − |ξ|²/2)`` is the latent posterior the VI fits. ``q`` is
    the distribution the draws come from: MGVI's ``N(ξ̄, M̄⁻¹)`` (``nonlinear``
    false; ``log q = −δᵀM̄δ/2``, ``δ = ξ − ξ̄``), or geoVI's push-forward of
    ``t ~ N(0, M̄)`` through the inverse of ``ξ ↦ t(ξ) = δ + J̄ᵀ(r(ξ) − r(ξ̄))``
    (``log q = −tᵀM̄⁻¹t/2 + log|det(I + J̄ᵀJ(ξ))|``). Both are exact for draws made
    at ``mean`` by :func:`draw_offsets` (mirrored or not), up to one constant
    shared by all draws, which Pareto smoothing ignores. Each draw's Jacobian is
    formed explicitly (forward mode) for the geoVI determinant.

    Parameters
    ----------
    residuals : callable
        ``(ξ (d,), data_args) -> r (n,)`` whitened residuals.
    mean : jax.Array, shape (d,)
        Expansion point ``ξ̄`` the draws were made at.
    draws : jax.Array, shape (m, d)
        Absolute positions ``ξ``.
    data_args : pytree
    nonlinear : bool
        Whether the draws are geoVI samples (else linear MGVI samples).

    Returns
    -------
    jax.Array, shape (m,)
    """
    r_bar, jac_bar = residuals_and_jacobian(residuals, mean, data_args)
    identity = jnp.eye(mean.shape[0], dtype=mean.dtype)
    metric_factor = jax.scipy.linalg.cho_factor(jac_bar.T @ jac_bar + identity, lower=True)

    def one(x):
        delta = x - mean
        if nonlinear:
            r_x, jac_x = residuals_and_jacobian(residuals, x, data_args)
            t = delta + jac_bar.T @ (r_x - r_bar)
            _, log_det = jnp.linalg.slogdet(identity + jac_bar.T @ jac_x)
            log_q = -0.5 * jnp.vdot(t, jax.scipy.linalg.cho_solve(metric_factor, t)) + log_det
        else:
            r_x = residuals(x, data_args)
            j_delta = jac_bar @ delta
            log_q = -0.5 * (jnp.vdot(j_delta, j_delta) + jnp.vdot(delta, delta))
        log_p = -0.5 * (jnp.vdot(r_x, r_x) + jnp.vdot(x, x))
        return log_p - log_q

    return jax.lax.map(one, draws, batch_size=_geovi_chunk(draws.shape[0]))


def kl_energy(residuals: Callable, mean: jax.Array, offsets: jax.Array, data_args: Any
              ) -> jax.Array:
    """Sampled KL energy ``mean_i [|r(ξ̄+δ_i)|²/2 + |ξ̄+δ_i|²/2]`` (no constants)."""
    def hamiltonian(x):
        r = residuals(x, data_args)
        return 0.5 * (jnp.sum(r * r) + jnp.sum(x * x))

    return jnp.mean(jax.vmap(hamiltonian)(mean + offsets))


def minimize_kl(residuals: Callable, mean: jax.Array, offsets: jax.Array, data_args: Any,
                tol: jax.Array, solver: str = "auto") -> tuple[jax.Array, jax.Array]:
    """Newton–CG minimisation of :func:`kl_energy` over the mean, offsets fixed.

    The Hessian is replaced by the sample-averaged Fisher metric
    ``mean_i J_iᵀJ_i + I`` (positive definite, as in NIFTy). Stops after
    ``_NEWTON_STEPS`` steps, or when a step lowers the energy by less than
    ``tol / 100``. ``solver`` as in :func:`metric_sample` (dense: the gradient
    ``mean_i J_iᵀ r_i + ξ̄ + δ_i`` and the metric from explicit Jacobians, Cholesky).

    Returns
    -------
    mean : jax.Array, shape (d,)
    energy : jax.Array, scalar
    """
    def energy(m):
        return kl_energy(residuals, m, offsets, data_args)

    batch_residuals = jax.vmap(residuals, in_axes=(0, None))
    maxiter = _cg_maxiter(mean.shape[0])
    dense = _dense(solver, mean.shape[0])
    identity = jnp.eye(mean.shape[0], dtype=mean.dtype)

    def dense_step(m):
        x = m + offsets
        r, jac = jax.vmap(residuals_and_jacobian, in_axes=(None, 0, None))(
            residuals, x, data_args)
        grad = jnp.mean(jnp.einsum("knd,kn->kd", jac, r) + x, axis=0)
        metric = jnp.einsum("knd,kne->de", jac, jac) / offsets.shape[0] + identity
        return grad, _spd_solve(metric, -grad)

    def cg_step(m):
        _, grad = jax.value_and_grad(energy)(m)
        _, jvp, vjp = _linear_operators(batch_residuals, m + offsets, data_args)
        n = offsets.shape[0]

        def metric_mv(v):
            return vjp(jvp(jnp.broadcast_to(v, offsets.shape))).sum(axis=0) / n + v

        step, _ = cg(metric_mv, -grad, tol=_CG_TOL, maxiter=maxiter)
        return grad, step

    def body(carry):
        m, e, i, _ = carry
        grad, step = dense_step(m) if dense else cg_step(m)
        m_new, e_new = _backtrack(energy, m, e, step, jnp.vdot(grad, step))
        improved = e_new < e
        done = ~improved | (e - e_new < tol / 100.0)
        return jnp.where(improved, m_new, m), jnp.minimum(e, e_new), i + 1, done

    def cond(carry):
        _, _, i, done = carry
        return (i < _NEWTON_STEPS) & ~done

    m, e, _, _ = jax.lax.while_loop(cond, body, (mean, energy(mean), 0, False))
    return m, e


def _n_offsets(n_samples: int, mirror: bool) -> int:
    return 2 * n_samples if mirror else n_samples


# Shortest static iteration loop. Iterations past n_kl_iter are skipped by a
# lax.cond and cost nothing measurable, so a long loop lets every usual n_kl_iter
# share one compiled engine.
MIN_ITERATION_BUCKET = 64


def _iteration_bucket(n_kl_iter: int) -> int:
    """Static loop length for a dynamic iteration count (power of two ≥ 64)."""
    return max(MIN_ITERATION_BUCKET, 1 << (max(int(n_kl_iter), 1) - 1).bit_length())


@memoised_engine
def build_vi_native_engine(residuals: Callable, n_dim: int, n_samples: int, sample_mode: str,
                           mirror_samples: bool, max_iterations: int,
                           solver: str = "auto") -> Callable:
    """Jitted one-seed geoVI / MGVI engine, memoised on the residual function and
    static options.

    Seeds run one after the other through the same engine, so the compiled
    program does not depend on ``n_seeds``.

    Parameters
    ----------
    residuals : callable
        ``(ξ (d,), data_args) -> (n,)`` whitened residuals.
    n_dim, n_samples : int
    sample_mode : str
        One of :data:`SAMPLE_MODES`.
    mirror_samples : bool
    max_iterations : int
        Static length of the iteration loop (see :func:`_iteration_bucket`); the
        actual ``n_kl_iter ≤ max_iterations`` is traced.
    solver : {"auto", "dense", "cg"}
        Linear algebra of every sample and Newton step (see :func:`metric_sample`).

    Returns
    -------
    callable
        ``engine(key, z0, data_args, n_kl_iter, tol_kl) -> dict`` with ``mean``
        (d,), ``draws`` (the last iteration's VI samples re-centred on the final
        mean, (2·n_samples or n_samples, d); further draws come from
        :func:`build_vi_draws_engine`), ``energies`` (max_iterations,; NaN past
        ``n_iter``), ``n_iter``, ``converged`` and ``energy`` (final KL).
    """
    _dense(solver, n_dim)  # validates solver
    nonlinear = sample_mode.startswith("nonlinear")
    fresh_keys = sample_mode.endswith("resample")
    n_vi = _n_offsets(n_samples, mirror_samples)

    def one_iteration(state: VIState, data_args, it_key, tol):
        key = jax.random.fold_in(it_key, 1) if fresh_keys else state.sample_key
        if sample_mode == "nonlinear_update":
            # First iteration draws; later ones re-solve from the previous offsets.
            offsets = draw_offsets(residuals, state.mean, data_args, key, n_samples, True,
                                   mirror_samples, previous=state.offsets,
                                   use_previous=state.n_iter > 0, solver=solver)
        else:
            offsets = draw_offsets(residuals, state.mean, data_args, key, n_samples,
                                   nonlinear, mirror_samples, solver=solver)
        mean, energy = minimize_kl(residuals, state.mean, offsets, data_args, tol, solver)
        converged = jnp.abs(state.energy - energy) < tol
        return VIState(mean, offsets, key, energy, state.n_iter + 1, converged)

    @jax.jit
    def engine(key, z0, data_args, n_kl_iter, tol):
        # three keys, the third unused since the top-ups moved out: the same numbers as before
        init_key, loop_key, _ = jax.random.split(key, 3)
        offsets0 = jnp.zeros((n_vi, n_dim), z0.dtype)
        state = VIState(z0, offsets0, init_key, jnp.asarray(jnp.inf, z0.dtype),
                        jnp.asarray(0), jnp.asarray(False))

        def step(st, i):
            active = (i < n_kl_iter) & ~st.converged
            st = jax.lax.cond(active,
                              lambda: one_iteration(st, data_args,
                                                    jax.random.fold_in(loop_key, i), tol),
                              lambda: st)
            return st, jnp.where(active, st.energy, jnp.nan)

        state, energies = jax.lax.scan(step, state, jnp.arange(max_iterations))
        return {"mean": state.mean, "draws": state.mean + state.offsets, "energies": energies,
                "n_iter": state.n_iter, "converged": state.converged, "energy": state.energy}

    return engine


@memoised_engine
def build_vi_draws_engine(residuals: Callable, n_dim: int, n_draws: int, nonlinear: bool,
                          mirror_samples: bool, solver: str = "auto") -> Callable:
    """Jitted ``(key, mean, data_args) -> dict`` of draws of the linear or geoVI
    approximation at ``mean`` (used to top up NIFTy's few VI samples): ``draws``
    (n_draws, d) and their importance ``log_weights`` (n_draws,;
    :func:`approximation_log_weights`). ``solver`` as in :func:`metric_sample`."""
    _dense(solver, n_dim)  # validates solver
    n_pairs = -(-n_draws // (2 if mirror_samples else 1))

    @jax.jit
    def engine(key, mean, data_args):
        offsets = draw_offsets(residuals, mean, data_args, key, n_pairs, nonlinear,
                               mirror_samples, solver=solver)
        draws = mean + offsets[:n_draws]
        return {"draws": draws, "log_weights": approximation_log_weights(
            residuals, mean, draws, data_args, nonlinear)}

    return engine


def lowest_final_kl(seed_final: np.ndarray) -> int:
    """Index of the seed with the lowest final KL energy (a non-finite one never wins)."""
    return int(np.argmin(np.where(np.isfinite(seed_final), seed_final, np.inf)))


def topped_up(problem: Problem, key: jax.Array, mean: jax.Array, vi_draws: np.ndarray,
              n_posterior_samples: int, nonlinear: bool, mirror_samples: bool
              ) -> tuple[np.ndarray, float]:
    """``n_posterior_samples`` draws: the VI samples ``vi_draws`` (m, d), then fresh draws
    of the same approximation at ``mean`` (:func:`build_vi_draws_engine`) while more are
    asked for; and the Pareto k̂ of the fresh draws' importance weights
    (:func:`approximation_log_weights`; nan without at least 20 of them)."""
    n_extra = n_posterior_samples - vi_draws.shape[0]
    if n_extra <= 0:
        return vi_draws[:n_posterior_samples], float("nan")
    extra = build_vi_draws_engine(problem.residuals, problem.n_dim, n_extra, nonlinear,
                                  mirror_samples)(key, mean, problem.data_args)
    return (np.concatenate([vi_draws, np.asarray(extra["draws"])]),
            pareto_k(np.asarray(extra["log_weights"])))


def check_vi_options(method: str, options: dict, problem: Problem) -> dict:
    """Merge ``options`` with the defaults of ``method`` and validate them.

    Raises
    ------
    ValueError
        If ``problem.residuals`` is None: geometric VI needs a Gaussian likelihood.
    ParameterError
        For an invalid option value.
    """
    opts = method_options(method, options)
    if problem.residuals is None:
        raise ValueError(
            f"method {method!r} needs a Gaussian likelihood given as whitened residuals "
            f"(Problem.residuals, log L = -|r|²/2); this problem has none. Use a sampler "
            f"('mcmc_nuts', 'mcmc_raytrace', 'nss') or 'pathfinder' instead.")
    if opts["sample_mode"] not in SAMPLE_MODES:
        raise ParameterError(
            f"sample_mode must be one of {', '.join(SAMPLE_MODES)}; got {opts['sample_mode']!r}")
    for name in ("n_samples", "n_kl_iter", "n_posterior_samples"):
        if int(opts[name]) < 1:
            raise ParameterError(f"{name} must be ≥ 1, got {opts[name]!r}")
    if "n_seeds" in opts and int(opts["n_seeds"]) < 1:
        raise ParameterError(f"n_seeds must be ≥ 1, got {opts['n_seeds']!r}")
    if not float(opts["tol_kl"]) >= 0:
        raise ParameterError(f"tol_kl must be ≥ 0, got {opts['tol_kl']!r}")
    if opts["start"] not in START_POINTS:
        raise ParameterError(f"start must be one of {START_POINTS}, got {opts['start']!r}")
    return opts


START_POINTS = ("map", "init")


def vi_start_point(start: str, problem: Problem, key: jax.Array) -> jax.Array:
    """First expansion point: the MAP (``[map]`` defaults, sharing the MAP engine
    with ``Fitter.run("map")``) or ``problem.init``."""
    if start == "init":
        return initial_point(problem)
    defaults = method_options("map", {})
    return run_map_engine(problem, key, defaults["n_starts"], defaults["n_steps"],
                          defaults["tol"])["point"]


def run_vi_native(problem: Problem, key: jax.Array, **options) -> RawResult:
    """Geometric VI (or MGVI) of ``problem`` in one jitted program.

    Options (defaults in the ``[vi_native]`` section of ``defaults.toml``)
    --------------------------------------------------------------------
    n_samples : int
        Independent VI samples per iteration (doubled by ``mirror_samples``).
    n_kl_iter : int
        Maximum VI iterations (traced: no recompilation within a power-of-two
        bucket of at least 64).
    tol_kl : float
        Stop when the KL energy changes by less than this between iterations.
    sample_mode : str
        One of :data:`SAMPLE_MODES`.
    mirror_samples : bool
    verbose : bool
        Print a one-line summary per seed after the run.
    n_seeds : int
        Independent runs; the lowest final KL energy wins and is topped up.
    n_posterior_samples : int
        Draws returned (module docstring).
    start : {"map", "init"}
        First expansion point.

    Returns
    -------
    RawResult
        ``point`` the VI mean ``ξ̄``; ``samples`` (1, n_posterior_samples, d);
        ``loss_history`` the KL energy per iteration; diagnostics ``n_iter``,
        ``converged``, ``final_kl``, ``seed_final_kl``, ``n_vi_samples``,
        ``sample_mode`` and ``pareto_k`` (the Pareto k̂ of the top-up draws'
        importance weights, :func:`approximation_log_weights`; above
        ``tengri.analysis.diagnostics.PARETO_K_RELIABLE`` (0.7) the approximation
        misses part of the posterior; nan with fewer than 20 top-up draws).
    """
    opts = check_vi_options("vi_native", options, problem)
    n_kl_iter = int(opts["n_kl_iter"])
    mode, mirror = str(opts["sample_mode"]), bool(opts["mirror_samples"])
    n_post = int(opts["n_posterior_samples"])
    # The seeds run the KL iterations only; the winner alone is topped up (the
    # top-up draws cost ~10× the iterations on the SED mock).
    engine = build_vi_native_engine(problem.residuals, problem.n_dim, int(opts["n_samples"]),
                                    mode, mirror, _iteration_bucket(n_kl_iter))
    map_key, vi_key, draw_key = jax.random.split(key, 3)
    z0 = vi_start_point(opts["start"], problem, map_key)
    dynamic = (np.int64(n_kl_iter), np.float64(opts["tol_kl"]))
    runs = [engine(jax.random.fold_in(vi_key, seed), z0, problem.data_args, *dynamic)
            for seed in range(int(opts["n_seeds"]))]
    seed_final = np.array([float(run["energy"]) for run in runs])
    best = runs[lowest_final_kl(seed_final)]
    draws, k_hat = topped_up(problem, draw_key, best["mean"], np.asarray(best["draws"]), n_post,
                             mode.startswith("nonlinear"), mirror)
    n_iter = int(best["n_iter"])
    history = np.asarray(best["energies"])[:n_iter]
    if opts["verbose"]:
        for i, e in enumerate(seed_final):
            print(f"vi_native seed {i}: final KL energy {e:.6g}")
        print(f"vi_native: kept the lowest ({history[-1]:.6g}) after {n_iter} iterations")
    diagnostics = {
        "n_iter": n_iter,
        "converged": bool(best["converged"]),
        "final_kl": float(history[-1]),
        "seed_final_kl": seed_final,
        "n_vi_samples": _n_offsets(int(opts["n_samples"]), bool(opts["mirror_samples"])),
        "sample_mode": mode,
        "pareto_k": k_hat,
    }
    # numpy then device_put: no staging program compiled for a new shape
    return RawResult(method="vi_native", point=best["mean"], samples=jax.device_put(draws[None]),
                     diagnostics=diagnostics, loss_history=history)
