"""The Problem that every inference method solves, and the RawResult it returns.

A Problem is a log-likelihood over the latent space ``z ∈ R^d`` in which the prior
is a standard normal (see ``docs/architecture.md``). Runners never see priors,
bounds or galaxies: only ``log_likelihood(z, data_args)`` and its data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Problem", "RawResult", "log_density"]


def log_density(log_likelihood: Callable, z: jax.Array, data_args: Any) -> jax.Array:
    """Unnormalised log posterior at latent point ``z``: log L − |z|²/2."""
    return log_likelihood(z, data_args) - 0.5 * jnp.sum(z * z)


@dataclass(frozen=True)
class Problem:
    """One inference problem in latent (prior-whitened) coordinates.

    Attributes
    ----------
    names : tuple of str
        Free-parameter names, in latent-vector order.
    log_likelihood : callable
        ``(z (d,), data_args) -> scalar``; pure and jittable. The same Python object
        for every galaxy of a model configuration, so compiled engines are shared.
    data_args : pytree
        Everything galaxy-specific (data, noise, mask, prior table, per-galaxy
        forward-model context). Always passed as a traced argument.
    to_physical : callable
        ``(z (d,), data_args) -> dict`` of physical parameter values.
    init : jax.Array, shape (d,)
        Starting latent point.
    residuals : callable or None
        ``(z, data_args) -> (n,)`` whitened residuals ``(model − data)/noise`` with
        zeros where masked, for Gaussian likelihoods (``log L = −|r|²/2 + c``).
        Needed by geometric VI; None when the likelihood is not of that form.
    n_data : int
        Number of data points the likelihood uses.
    """

    names: tuple[str, ...]
    log_likelihood: Callable
    data_args: Any
    to_physical: Callable
    init: jax.Array
    residuals: Callable | None = None
    n_data: int = 0

    @property
    def n_dim(self) -> int:
        return len(self.names)

    def log_density(self, z: jax.Array, data_args: Any = None) -> jax.Array:
        """Unnormalised log posterior at ``z`` (``data_args`` defaults to own)."""
        return log_density(self.log_likelihood, z, self.data_args if data_args is None else data_args)


@dataclass
class RawResult:
    """What a runner returns, in latent coordinates.

    Attributes
    ----------
    method : str
        Canonical method name.
    point : jax.Array, shape (d,)
        Best or representative latent point (MAP, posterior mean, ...).
    samples : jax.Array or None, shape (n_chains, n_draws, d)
        Equally weighted latent draws; None for point estimates.
    diagnostics : dict
        Method-specific scalars or small arrays (acceptance rate, divergences, ...).
    loss_history : numpy.ndarray or None, shape (n_steps,)
        Negative log density per optimiser / VI iteration.
    log_evidence, log_evidence_err : float or None
        Natural-log evidence and its 1σ error (nested sampling only).
    """

    method: str
    point: jax.Array
    samples: jax.Array | None = None
    diagnostics: dict = field(default_factory=dict)
    loss_history: np.ndarray | None = None
    log_evidence: float | None = None
    log_evidence_err: float | None = None
