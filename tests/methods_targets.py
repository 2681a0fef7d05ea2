"""Known-answer target Problems for the inference-method tests.

Each target is a :class:`tengri.inference.problem.Problem` in latent space (prior
``N(0, I)``), built from a module-level ``log_likelihood`` so that two problems of
the same family share the function object (and hence compiled engines), and the
posterior is known in closed form or by direct (exact, independent) sampling:

- ``gaussian_problem``: 5-D linear-Gaussian model, ``r = A z − y``, ``log L = −|r|²/2``;
  the posterior is Gaussian with precision ``AᵀA + I`` and mean ``(AᵀA + I)⁻¹ Aᵀy``.
  ``A`` and ``y`` are chosen so that the posterior covariance has standard
  deviations 0.1 … 0.7 and correlations up to ±0.8 (condition number ≈ 250).
- ``banana_problem``: 2-D twisted Gaussian (Haario, Saksman & Tamminen 1999),
  ``z₁ ~ N(0, σ₁²)``, ``z₂ | z₁ ~ N(b (z₁² − σ₁²), σ₂²)``.
- ``funnel_problem``: Neal's funnel (Neal 2003, *Slice sampling*, §8),
  ``v ~ N(0, σ_v²)``, ``x_i | v ~ N(0, e^v)``, ``i = 1 … d−1``.

For the banana and the funnel the target density is the posterior itself, so the
"likelihood" handed to the runners is ``log p(z) + |z|²/2`` (dividing out the
standard-normal prior that every runner multiplies back in).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

import tengri  # noqa: F401  (enables float64)
from tengri.inference.problem import Problem

__all__ = [
    "GAUSSIAN_SD", "GAUSSIAN_CORRELATION", "GAUSSIAN_MEAN",
    "gaussian_problem", "gaussian_posterior",
    "banana_problem", "banana_reference_draws",
    "funnel_problem", "funnel_reference_draws",
    "count_xla_compilations",
]

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_xla_compilations() -> Iterator[list[float]]:
    """Record every XLA backend compilation inside the ``with`` block.

    Yields a list that receives one duration (s) per compilation, so
    ``len(compiles) == 0`` after the block means nothing was compiled: neither
    an engine nor an eager operation.
    """
    durations: list[float] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == _BACKEND_COMPILE_EVENT:
            durations.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield durations
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _identity_to_physical(names: tuple[str, ...]):
    def to_physical(z, data_args):
        return {name: z[i] for i, name in enumerate(names)}
    return to_physical


def _half_norm2(z: jax.Array) -> jax.Array:
    return 0.5 * jnp.sum(z * z)


# ---------------------------------------------------------------- 5-D Gaussian
GAUSSIAN_SD = np.array([0.1, 0.2, 0.3, 0.5, 0.7])
_SIGNS = np.array([1.0, -1.0, -1.0, 1.0, 1.0])
_LAG = np.abs(np.subtract.outer(np.arange(5), np.arange(5)))
GAUSSIAN_CORRELATION = np.outer(_SIGNS, _SIGNS) * 0.8**_LAG
GAUSSIAN_MEAN = np.array([1.0, -0.5, 0.3, 2.0, -1.0])


def gaussian_residuals(z: jax.Array, data_args: dict) -> jax.Array:
    """Whitened residuals ``A z − y`` of the linear-Gaussian target, shape (d,)."""
    return data_args["design"] @ z - data_args["data"]


def gaussian_log_likelihood(z: jax.Array, data_args: dict) -> jax.Array:
    """``−|A z − y|²/2`` (the constant is dropped)."""
    r = gaussian_residuals(z, data_args)
    return -0.5 * jnp.sum(r * r)


def gaussian_problem(mean: np.ndarray | None = None, sd: np.ndarray | None = None) -> Problem:
    """5-D linear-Gaussian Problem whose latent posterior is ``N(mean, C)``.

    ``C = diag(sd) R diag(sd)`` with ``R = GAUSSIAN_CORRELATION``. The design
    ``A`` satisfies ``AᵀA = C⁻¹ − I`` (which needs every eigenvalue of ``C`` below
    1) and the data ``y`` solve ``Aᵀy = C⁻¹ mean``.

    Parameters
    ----------
    mean : array of shape (5,), optional
        Posterior mean (default ``GAUSSIAN_MEAN``). Different means give different
        ``data_args`` with the same likelihood function (a "second galaxy").
    sd : array of shape (5,), optional
        Posterior standard deviations (default ``GAUSSIAN_SD``).
    """
    mean = GAUSSIAN_MEAN if mean is None else np.asarray(mean, dtype=float)
    sd = GAUSSIAN_SD if sd is None else np.asarray(sd, dtype=float)
    cov = np.outer(sd, sd) * GAUSSIAN_CORRELATION
    precision = np.linalg.inv(cov)
    lik_precision = precision - np.eye(5)
    if np.linalg.eigvalsh(lik_precision).min() <= 0:
        raise ValueError(
            "gaussian_problem: every eigenvalue of the posterior covariance must be < 1"
        )
    chol = np.linalg.cholesky(lik_precision)           # Λ = L Lᵀ, A = Lᵀ
    design = chol.T
    data = np.linalg.solve(chol, precision @ mean)     # Aᵀ y = P μ
    names = tuple(f"g{i}" for i in range(5))
    return Problem(
        names=names,
        log_likelihood=gaussian_log_likelihood,
        data_args={"design": jnp.asarray(design), "data": jnp.asarray(data)},
        to_physical=_identity_to_physical(names),
        init=jnp.zeros(5),
        residuals=gaussian_residuals,
        n_data=5,
    )


def gaussian_posterior(problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    """Analytic latent posterior ``(mean (d,), covariance (d, d))`` of a Gaussian target.

    Computed from the problem's own ``data_args``: precision ``AᵀA + I``, mean
    ``precision⁻¹ Aᵀ y``.
    """
    design = np.asarray(problem.data_args["design"])
    data = np.asarray(problem.data_args["data"])
    precision = design.T @ design + np.eye(design.shape[1])
    cov = np.linalg.inv(precision)
    return cov @ design.T @ data, 0.5 * (cov + cov.T)


# ---------------------------------------------------------------- 2-D banana
def banana_log_density(z: jax.Array, data_args: dict) -> jax.Array:
    """Normalised log density of the twisted Gaussian (Haario et al. 1999)."""
    s1, b, s2 = data_args["sigma1"], data_args["bend"], data_args["sigma2"]
    u = z[0] / s1
    w = (z[1] - b * (z[0] ** 2 - s1**2)) / s2
    return -0.5 * (u * u + w * w) - jnp.log(2 * jnp.pi * s1 * s2)


def banana_log_likelihood(z: jax.Array, data_args: dict) -> jax.Array:
    """Banana density divided by the N(0, I) prior (up to a constant)."""
    return banana_log_density(z, data_args) + _half_norm2(z)


def banana_problem(sigma1: float = 1.0, bend: float = 1.0, sigma2: float = 0.5) -> Problem:
    """2-D banana Problem: ``z₁ ~ N(0, σ₁²)``, ``z₂ | z₁ ~ N(b (z₁² − σ₁²), σ₂²)``."""
    names = ("b0", "b1")
    return Problem(
        names=names,
        log_likelihood=banana_log_likelihood,
        data_args={
            "sigma1": jnp.asarray(float(sigma1)),
            "bend": jnp.asarray(float(bend)),
            "sigma2": jnp.asarray(float(sigma2)),
        },
        to_physical=_identity_to_physical(names),
        init=jnp.zeros(2),
        residuals=None,
        n_data=0,
    )


def banana_reference_draws(problem: Problem, n: int, seed: int = 0) -> np.ndarray:
    """``n`` exact independent draws from the banana, shape (n, 2)."""
    s1 = float(problem.data_args["sigma1"])
    b = float(problem.data_args["bend"])
    s2 = float(problem.data_args["sigma2"])
    rng = np.random.default_rng(seed)
    z1 = s1 * rng.standard_normal(n)
    z2 = b * (z1**2 - s1**2) + s2 * rng.standard_normal(n)
    return np.stack([z1, z2], axis=1)


# ---------------------------------------------------------------- Neal's funnel
def funnel_log_density(z: jax.Array, data_args: dict) -> jax.Array:
    """Normalised log density of Neal's funnel; ``z = (v, x_1, …, x_{d−1})``."""
    sigma_v = data_args["sigma_v"]
    v, x = z[0], z[1:]
    log_pv = -0.5 * (v / sigma_v) ** 2 - jnp.log(sigma_v) - 0.5 * jnp.log(2 * jnp.pi)
    # x_i ~ N(0, e^v): log N = −x²e^{−v}/2 − v/2 − log(2π)/2
    log_px = jnp.sum(-0.5 * x * x * jnp.exp(-v) - 0.5 * v - 0.5 * jnp.log(2 * jnp.pi))
    return log_pv + log_px


def funnel_log_likelihood(z: jax.Array, data_args: dict) -> jax.Array:
    """Funnel density divided by the N(0, I) prior (up to a constant)."""
    return funnel_log_density(z, data_args) + _half_norm2(z)


def funnel_problem(n_dim: int = 10, sigma_v: float = 3.0) -> Problem:
    """Neal's funnel Problem in ``n_dim`` dimensions (Neal's choice: σ_v = 3)."""
    names = ("v",) + tuple(f"x{i}" for i in range(1, n_dim))
    return Problem(
        names=names,
        log_likelihood=funnel_log_likelihood,
        data_args={"sigma_v": jnp.asarray(float(sigma_v))},
        to_physical=_identity_to_physical(names),
        init=jnp.zeros(n_dim),
        residuals=None,
        n_data=0,
    )


def funnel_reference_draws(problem: Problem, n: int, seed: int = 0) -> np.ndarray:
    """``n`` exact independent draws from the funnel, shape (n, d)."""
    sigma_v = float(problem.data_args["sigma_v"])
    rng = np.random.default_rng(seed)
    v = sigma_v * rng.standard_normal(n)
    x = np.exp(0.5 * v)[:, None] * rng.standard_normal((n, problem.n_dim - 1))
    return np.concatenate([v[:, None], x], axis=1)
