"""Point estimates: the maximum a posteriori (``map``) and the Laplace approximation.

Both work in the latent space of :mod:`tengri.inference.problem`, where the
unnormalised log posterior is ``log L(z) − |z|²/2``.

``map``
    Several starts (``problem.init`` and ``n_starts − 1`` draws from ``N(0, 0.5² I)``)
    are optimised one after the other by L-BFGS (Liu & Nocedal 1989) with a zoom
    line search satisfying the strong Wolfe conditions (Nocedal & Wright 2006,
    Alg. 3.5–3.6; ``optax.lbfgs``). Each start runs in a ``lax.while_loop`` until
    the gradient norm falls below ``tol · (1 + |f|)`` (relative to the objective
    f = −log posterior, so real photometry with χ² ~ 10⁴ converges as easily as a
    toy problem), the objective has not decreased by more than
    ``FTOL_RELATIVE · (1 + |f|)`` for ``STALL_ITERATIONS`` iterations in a row
    (float64 round-off, not progress), the best value has not dropped by
    ``CYCLE_FTOL_RELATIVE · (1 + |f|)`` for ``CYCLE_ITERATIONS`` iterations (steps
    cycling over a kink of the objective), or ``n_steps`` iterations; it returns
    its best iterate. When a line
    search fails, the L-BFGS memory is emptied (the next direction is the
    steepest descent), so a bad quasi-Newton direction cannot end a start early
    (five failed searches in a row used to stop real galaxies at gradient norms
    ~4000). ``n_starts``, ``n_steps`` and ``tol`` are traced, so changing them
    does not recompile. The start with the highest log posterior is kept.

``laplace``
    The MAP, then the Gaussian ``N(ẑ, H⁻¹)`` with ``H`` the Hessian of the
    negative log posterior at ``ẑ`` (exact, by ``jax.hessian``). If ``H`` is not
    positive definite its eigenvalues are raised to a small absolute floor (the
    nearest matrix with that eigenvalue floor in the Frobenius norm; Higham 1988),
    and the diagnostics say so.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import ParameterError
from tengri.inference import registry
from tengri.inference.methods._engine_cache import memoised_engine
from tengri.inference.problem import Problem, RawResult, log_density

# optax is imported where the MAP engine is traced: a process whose engines come
# from the disk cache never needs it (as blackjax in methods/mcmc.py).

__all__ = [
    "run_map", "run_laplace", "build_map_engine", "build_laplace_engine",
    "find_map", "history_capacity", "initial_point",
]

LBFGS_MEMORY = 10            # stored (s, y) pairs of the L-BFGS inverse Hessian
MAX_LINESEARCH_STEPS = 30    # zoom line-search evaluations per iteration
START_SCALE = 0.5            # random starts are 0.5·N(0, I): inside the prior bulk
STALL_ITERATIONS = 5         # stop after this many iterations without a decrease
FTOL_RELATIVE = 1e-12        # a decrease smaller than this × (1 + |f|) is round-off
CYCLE_ITERATIONS = 20        # stop when the best value has not dropped by
CYCLE_FTOL_RELATIVE = 1e-10  # this × (1 + |f|) in that many iterations
MIN_HISTORY_CAPACITY = 2048  # loss-history buffer; n_steps up to this share an engine
# Hessian eigenvalues are raised to this floor. Absolute, because in latent space
# the prior alone contributes curvature 1: a posterior variance above 1e8 prior
# variances carries no information, while a relative floor would flag stiff but
# valid Hessians (condition numbers beyond 1e8 occur, e.g. at a funnel's neck).
EIGENVALUE_FLOOR = 1e-8


# ------------------------------------------------------------------ options
def validated_options(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults of ``method`` merged with ``options`` (unknown option → ValueError)."""
    return registry.method_options(method, options)


def positive_int(method: str, name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``, else ParameterError naming the option."""
    try:
        number = operator.index(value)
    except TypeError:
        raise ParameterError(
            f"{method}: option {name!r} must be an integer >= {minimum}, got {value!r}"
        ) from None
    if number < minimum:
        raise ParameterError(f"{method}: option {name!r} must be >= {minimum}, got {number}")
    return int(number)


def finite_float(method: str, name: str, value: Any, low: float = 0.0,
                 high: float = np.inf, closed_low: bool = True) -> float:
    """``value`` as a float in ``[low, high]`` (or ``(low, high]``), else ParameterError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"{method}: option {name!r} must be a number, got {value!r}"
        ) from None
    above = number >= low if closed_low else number > low
    if not (np.isfinite(number) and above and number <= high):
        bracket = "[" if closed_low else "("
        raise ParameterError(
            f"{method}: option {name!r} must lie in {bracket}{low}, {high}], got {value!r}"
        )
    return number


def history_capacity(n_steps: int) -> int:
    """Static length of the loss-history buffer for up to ``n_steps`` iterations.

    The next power of two ≥ ``n_steps + 1``, at least ``MIN_HISTORY_CAPACITY``:
    any ``n_steps`` below the default capacity reuses one compiled engine.
    """
    return max(MIN_HISTORY_CAPACITY, 1 << int(n_steps).bit_length())


# ------------------------------------------------------------------ MAP engine
def _lbfgs():
    """optax's L-BFGS (optax.GradientTransformationExtraArgs) with the zoom line search."""
    import optax

    return optax.lbfgs(
        memory_size=LBFGS_MEMORY,
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=MAX_LINESEARCH_STEPS, initial_guess_strategy="one"
        ),
    )


def _forget_curvature_if_line_search_failed(solver, opt_state, z: jax.Array):
    """``opt_state`` with an empty L-BFGS memory where the last line search failed.

    A failed zoom line search (no step met the sufficient-decrease condition)
    means the quasi-Newton direction is useless here (on the short-τ ridge of real
    photometry it was, for dozens of iterations in a row, each moving z by ~1e-10).
    Forgetting the stored (s, y) pairs makes the next direction the steepest
    descent one; the line-search state (value and gradient at ``z``) is kept.
    """
    import optax

    failed = optax.tree_utils.tree_get(opt_state, "info").decrease_error > 0
    fresh = solver.init(z)[0]
    memory = jax.tree.map(lambda new, old: jnp.where(failed, new, old), fresh, opt_state[0])
    return (memory, *opt_state[1:])


def _minimise_one(objective: Callable, z0: jax.Array, max_steps: jax.Array,
                  tol: jax.Array, capacity: int) -> dict[str, jax.Array]:
    """L-BFGS from one start; every count is traced, the history buffer static.

    Returns the best iterate, which need not be the last: a failed line search
    can return a step that raises the objective. On the short-τ ridge of real
    photometry (a staircase of kinks from the SSP age bins) such steps made a
    few galaxies cycle (down, up, up by ~3e-4 in −log p) until ``n_steps``, the
    best value creeping down by ~1e-12 relative per cycle; hence the stop once
    the best value has not dropped by ``CYCLE_FTOL_RELATIVE · (1 + |f|)`` in
    ``CYCLE_ITERATIONS`` iterations.
    """
    import optax

    solver = _lbfgs()
    opt_state = solver.init(z0)
    value, grad = jax.value_and_grad(objective)(z0)
    history = jnp.full((capacity,), jnp.nan).at[0].set(value)

    def keep_going(carry):
        _, _, value, grad, i, n_stall, _, _, n_flat, _ = carry
        return ((i < max_steps) & (jnp.linalg.norm(grad) > tol * (1.0 + jnp.abs(value)))
                & jnp.isfinite(value) & (n_stall < STALL_ITERATIONS) & (n_flat < CYCLE_ITERATIONS))

    def iterate(carry):
        z, opt_state, value, grad, i, n_stall, best, reference, n_flat, history = carry
        updates, opt_state = solver.update(grad, opt_state, z, value=value, grad=grad,
                                           value_fn=objective)
        z_new = optax.apply_updates(z, updates)
        # The line search evaluated the objective at z_new. (optax's
        # value_and_grad_from_state would evaluate it again where that value is
        # not finite, a fourth copy of the likelihood and its gradient in the
        # compiled loop; the loop stops there anyway.)
        value_new = optax.tree_utils.tree_get(opt_state, "value")
        grad_new = optax.tree_utils.tree_get(opt_state, "grad")
        opt_state = _forget_curvature_if_line_search_failed(solver, opt_state, z_new)
        progress = value_new < value - FTOL_RELATIVE * (1.0 + jnp.abs(value))
        n_stall = jnp.where(progress, 0, n_stall + 1)
        better = value_new < best["value"]
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old),
                            {"z": z_new, "value": value_new, "grad": grad_new}, best)
        dropped = best["value"] < reference - CYCLE_FTOL_RELATIVE * (1.0 + jnp.abs(reference))
        reference = jnp.where(dropped, best["value"], reference)
        n_flat = jnp.where(dropped, 0, n_flat + 1)
        history = history.at[jnp.minimum(i + 1, capacity - 1)].set(value_new)
        return z_new, opt_state, value_new, grad_new, i + 1, n_stall, best, reference, n_flat, history

    zero = jnp.asarray(0)
    best = {"z": z0, "value": value, "grad": grad}
    carry = (z0, opt_state, value, grad, zero, zero, best, value, zero, history)
    *_, n_iter, _, best, _, _, history = jax.lax.while_loop(keep_going, iterate, carry)
    return {"z": best["z"], "value": best["value"], "grad_norm": jnp.linalg.norm(best["grad"]),
            "n_iterations": n_iter, "history": history}


def _start(key: jax.Array, z0: jax.Array, index: jax.Array) -> jax.Array:
    """Start ``index``: ``z0`` for 0, else a draw from N(0, START_SCALE² I)."""
    draw = START_SCALE * jax.random.normal(jax.random.fold_in(key, index), z0.shape,
                                           dtype=z0.dtype)
    return jnp.where(index == 0, z0, draw)


def find_map(log_likelihood: Callable, key: jax.Array, z0: jax.Array, data_args: Any,
             n_starts: jax.Array, max_steps: jax.Array, tol: jax.Array,
             capacity: int) -> dict[str, jax.Array]:
    """Multi-start L-BFGS MAP in latent space (traceable; used inside engines).

    The starts run one after the other in a loop whose length ``n_starts`` is
    traced, so every number of starts shares one compiled program. (Vmapping
    them was measured ten times slower: on the 12-band photometric model of
    ``tests/conftest.py``, 8 vmapped starts ran in 169 s, one after the other in
    16 s, because a batched loop runs every start for as many iterations as the
    slowest one and the batched model was ~2× slower per start.)

    Parameters
    ----------
    log_likelihood : callable
        ``(z (d,), data_args) -> scalar``.
    key : jax.Array
        PRNG key for the random starts.
    z0 : jax.Array, shape (d,)
        First start (the problem's own initial point).
    data_args : pytree
        Passed to ``log_likelihood``.
    n_starts, max_steps, tol : scalar arrays
        Number of starts, iteration limit per start, gradient-norm tolerance.
    capacity : int
        Length of the loss-history buffer (static).

    Returns
    -------
    dict
        Of the best start: ``point`` (d,), ``neg_log_density``, ``grad_norm``,
        ``n_iterations``, ``best_start``, ``history`` (capacity,) NaN-padded; and
        ``n_iterations_total`` over all starts.
    """
    def objective(z):
        return -log_density(log_likelihood, z, data_args)

    def minimise(index):
        run = _minimise_one(objective, _start(key, z0, index), max_steps, tol, capacity)
        run["best_start"] = jnp.asarray(index)
        return run

    def next_start(index, carry):
        best, n_total = carry
        run = minimise(index)
        better = (index == 0) | (jnp.isfinite(run["value"]) & ~(run["value"] >= best["value"]))
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), run, best)
        return best, n_total + run["n_iterations"]

    # Start 0 runs inside the loop too (its placeholder is always replaced): a
    # second copy of the L-BFGS loop outside it doubled the compiled program,
    # whose size sets the time a fresh process spends loading it from disk.
    placeholder = jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype),
                               jax.eval_shape(minimise, jnp.asarray(0)))
    best, n_total = jax.lax.fori_loop(0, jnp.maximum(n_starts, 1), next_start,
                                      (placeholder, jnp.asarray(0)))
    return {
        "point": best["z"],
        "neg_log_density": best["value"],
        "grad_norm": best["grad_norm"],
        "n_iterations": best["n_iterations"],
        "best_start": best["best_start"],
        "history": best["history"],
        "n_iterations_total": n_total,
    }


@memoised_engine
def build_map_engine(log_likelihood: Callable, n_dim: int, capacity: int) -> Callable:
    """Jitted ``engine(key, z0, data_args, n_starts, max_steps, tol) -> dict``.

    See :func:`find_map`; ``capacity`` is the loss-history length
    (:func:`history_capacity`).
    """

    @jax.jit
    def engine(key, z0, data_args, n_starts, max_steps, tol):
        return find_map(log_likelihood, key, z0, data_args, n_starts, max_steps, tol, capacity)

    return engine


def _map_diagnostics(found: dict[str, Any], tol: float, n_starts: int) -> dict[str, Any]:
    return {
        "n_iterations": int(found["n_iterations"]),
        "grad_norm": float(found["grad_norm"]),
        "converged": bool(found["grad_norm"] <= tol * (1.0 + abs(float(found["neg_log_density"])))),
        "n_starts": n_starts,
        "best_start": int(found["best_start"]),
        "n_iterations_total": int(found["n_iterations_total"]),
        "neg_log_density": float(found["neg_log_density"]),
    }


def _map_history(found: dict[str, Any]) -> np.ndarray:
    history = np.asarray(found["history"])
    return history[: int(found["n_iterations"]) + 1]


def initial_point(problem: Problem) -> jax.Array:
    """``problem.init`` as a float64 device array, shape (d,).

    ``jax.device_put`` of a numpy array compiles nothing, whereas ``jnp.asarray``
    of a host array compiles a small staging program for every new shape.
    """
    return jax.device_put(np.asarray(problem.init, dtype=np.float64))


def run_map_engine(problem: Problem, key: jax.Array, n_starts: int, n_steps: int,
                   tol: float) -> dict[str, Any]:
    """Run the memoised MAP engine of ``problem`` and return its raw output."""
    engine = build_map_engine(problem.log_likelihood, problem.n_dim, history_capacity(n_steps))
    return engine(key, initial_point(problem), problem.data_args, np.int64(n_starts),
                  np.int64(n_steps), np.float64(tol))


def _map_options(method: str, options: dict[str, Any]) -> tuple[int, int, float]:
    n_starts = positive_int(method, "n_starts", options["n_starts"])
    n_steps = positive_int(method, "n_steps", options["n_steps"], minimum=0)
    tol = finite_float(method, "tol", options["tol"])
    return n_starts, n_steps, tol


def run_map(problem: Problem, key: jax.Array, **options: Any) -> RawResult:
    """Maximum a posteriori point in latent space by multi-start L-BFGS.

    Parameters
    ----------
    problem : Problem
    key : jax.Array
        PRNG key (random starts).
    **options
        ``n_starts`` (starts, the first being ``problem.init``), ``n_steps``
        (iteration limit per start), ``tol`` (gradient-norm tolerance). Missing
        options take their ``defaults.toml`` values; unknown ones raise ValueError.

    Returns
    -------
    RawResult
        ``point`` = MAP, ``samples`` = None, ``loss_history`` = negative log
        posterior of the best start per iteration (entry 0 = its start), and
        diagnostics ``n_iterations``, ``grad_norm``, ``converged``
        (``grad_norm <= tol``), ``n_starts``, ``best_start``, ``n_iterations_total``
        (all starts), ``neg_log_density``.
    """
    options = validated_options("map", options)
    n_starts, n_steps, tol = _map_options("map", options)
    found = run_map_engine(problem, key, n_starts, n_steps, tol)
    return RawResult(
        method="map",
        point=found["point"],
        samples=None,
        diagnostics=_map_diagnostics(found, tol, n_starts),
        loss_history=_map_history(found),
    )


# ------------------------------------------------------------------ Laplace
def gaussian_at_mode(log_likelihood: Callable, z_map: jax.Array,
                     data_args: Any) -> dict[str, jax.Array]:
    """Laplace Gaussian at ``z_map``: covariance = (Hessian of −log posterior)⁻¹.

    Returns
    -------
    dict
        ``covariance`` (d, d), ``scale`` (d, d) with ``scale @ scaleᵀ =
        covariance``, ``min_eigenvalue`` of the symmetrised Hessian,
        ``positive_definite``, ``n_clipped`` eigenvalues raised to the floor
        ``EIGENVALUE_FLOOR``, and ``condition_number``
        of the covariance.
    """
    hessian = jax.hessian(lambda z: -log_density(log_likelihood, z, data_args))(z_map)
    hessian = 0.5 * (hessian + hessian.T)
    eigenvalues, eigenvectors = jnp.linalg.eigh(hessian)
    floor = EIGENVALUE_FLOOR
    clipped = jnp.maximum(eigenvalues, floor)
    scale = eigenvectors / jnp.sqrt(clipped)[None, :]
    covariance = scale @ scale.T
    return {
        "covariance": 0.5 * (covariance + covariance.T),
        "scale": scale,
        "min_eigenvalue": eigenvalues[0],
        "positive_definite": eigenvalues[0] > floor,
        "n_clipped": jnp.sum(eigenvalues <= floor),
        "condition_number": clipped[-1] / clipped[0],
    }


@memoised_engine
def build_laplace_engine(log_likelihood: Callable, n_dim: int, n_samples: int) -> Callable:
    """Jitted ``engine(key, z_map, data_args) -> dict``: the Gaussian and its draws.

    The dict holds :func:`gaussian_at_mode`'s entries and ``samples`` of shape
    (1, n_samples, d).

    The MAP comes from :func:`build_map_engine` (shared with ``map`` and the MCMC
    initialisation), so this engine only adds the Hessian and the draws.
    """

    @jax.jit
    def engine(key, z_map, data_args):
        gaussian = gaussian_at_mode(log_likelihood, z_map, data_args)
        normal = jax.random.normal(key, (n_samples, n_dim), dtype=z_map.dtype)
        draws = z_map[None, :] + normal @ gaussian["scale"].T
        gaussian["samples"] = draws[None, :, :]
        return gaussian

    return engine


def run_laplace(problem: Problem, key: jax.Array, **options: Any) -> RawResult:
    """Laplace approximation: Gaussian at the MAP with the inverse-Hessian covariance.

    Parameters
    ----------
    problem : Problem
    key : jax.Array
    **options
        ``n_samples`` (Gaussian draws) and the MAP options ``n_starts``,
        ``n_steps``, ``tol``.

    Returns
    -------
    RawResult
        ``point`` = MAP, ``samples`` of shape (1, n_samples, d), the MAP's
        ``loss_history``, and diagnostics: the MAP's, plus ``covariance`` (d, d),
        ``condition_number``, ``hessian_positive_definite``,
        ``hessian_min_eigenvalue`` and ``n_clipped_eigenvalues`` (> 0 when the
        Hessian had to be made positive definite).
    """
    options = validated_options("laplace", options)
    n_starts, n_steps, tol = _map_options("laplace", options)
    n_samples = positive_int("laplace", "n_samples", options["n_samples"])
    key_map, key_draws = jax.random.split(key)
    found = run_map_engine(problem, key_map, n_starts, n_steps, tol)
    engine = build_laplace_engine(problem.log_likelihood, problem.n_dim, n_samples)
    gaussian = engine(key_draws, found["point"], problem.data_args)
    diagnostics = _map_diagnostics(found, tol, n_starts)
    diagnostics.update(
        covariance=np.asarray(gaussian["covariance"]),
        condition_number=float(gaussian["condition_number"]),
        hessian_positive_definite=bool(gaussian["positive_definite"]),
        hessian_min_eigenvalue=float(gaussian["min_eigenvalue"]),
        n_clipped_eigenvalues=int(gaussian["n_clipped"]),
    )
    return RawResult(
        method="laplace",
        point=found["point"],
        samples=gaussian["samples"],
        diagnostics=diagnostics,
        loss_history=_map_history(found),
    )
