"""Importance weights of an approximate posterior: Pareto smoothing, k̂, resampling.

An approximation ``q`` (Pathfinder's Gaussians, MGVI's or geoVI's variational
distribution) is judged by the log weights ``log p(x) − log q(x)`` of its own
draws ``x ~ q``. Pareto-smoothed importance sampling (PSIS; Vehtari et al. 2024,
JMLR 25:72) fits a generalised Pareto distribution to the largest weights; its
shape ``k̂`` says how heavy their tail is. Below ``PARETO_K_RELIABLE`` (0.7) the
approximation is close enough for importance-weighted estimates to be reliable;
above it the draws of ``q`` miss a part of the posterior that matters (Yao,
Vehtari, Simpson & Gelman 2018, "Yes, but did it work?: evaluating variational
inference").
"""

from __future__ import annotations

import numpy as np
from arviz_stats.base.array import array_stats

__all__ = ["PARETO_K_RELIABLE", "PSIS_MIN_DRAWS", "psis_log_weights", "pareto_k",
           "pareto_k_warning", "resample_indices"]

PARETO_K_RELIABLE = 0.7  # k̂ above this: the approximation's draws are not trustworthy
PSIS_MIN_DRAWS = 20      # fewer finite draws than this are not Pareto-smoothed


def psis_log_weights(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed, normalised importance log weights and the Pareto k̂.

    Parameters
    ----------
    log_weights : array of shape (n,)
        ``log p(x) − log q(x)`` of the draws, up to a constant; non-finite entries
        (a draw where the density could not be evaluated) get zero weight.

    Returns
    -------
    (array of shape (n,), float)
        Smoothed log weights with ``logsumexp = 0``, and k̂ of the largest weights'
        generalised Pareto fit (arviz): below ``PARETO_K_RELIABLE`` the
        importance-weighted estimates are reliable. k̂ is nan (weights not
        smoothed) below ``PSIS_MIN_DRAWS`` finite draws, and −inf when the largest
        weights are all equal (an exact approximation: no tail).

    Raises
    ------
    ValueError
        If no entry of ``log_weights`` is finite.
    """
    log_weights = np.asarray(log_weights, dtype=np.float64)
    finite = np.isfinite(log_weights)
    if not finite.any():
        raise ValueError("log_weights: no draw has a finite log density; cannot weight them")
    smoothed = np.full(log_weights.shape, -np.inf)
    if finite.sum() < PSIS_MIN_DRAWS:  # too few draws to fit a tail: raw weights, no k̂
        smoothed[finite] = log_weights[finite] - np.logaddexp.reduce(log_weights[finite])
        return smoothed, float("nan")
    centred = log_weights[finite] - log_weights[finite].max()
    try:
        # arviz's psislw is written for PSIS-LOO, whose ratios are 1 / p(y_i | θ): it
        # takes log-likelihoods and smooths their negatives, hence the minus sign
        with np.errstate(over="ignore"):  # the Pareto quantiles of a k̂ ≫ 1 overflow
            lw, khat = array_stats.psislw(-centred)
    except ValueError as err:
        if "tail values are the same" not in str(err):
            raise
        # the largest weights are all equal (q = p): no tail to fit, nothing to smooth
        smoothed[finite] = centred - np.logaddexp.reduce(centred)
        return smoothed, float("-inf")
    smoothed[finite] = lw
    return smoothed, float(khat)


def pareto_k(log_weights: np.ndarray) -> float:
    """Pareto k̂ of importance log weights (shape (n,)); nan with fewer than
    ``PSIS_MIN_DRAWS`` finite entries (none at all included)."""
    log_weights = np.asarray(log_weights, dtype=np.float64)
    if np.isfinite(log_weights).sum() < PSIS_MIN_DRAWS:
        return float("nan")
    return psis_log_weights(log_weights)[1]


def pareto_k_warning(method: str, k: float | None) -> str | None:
    """The warning for an approximation whose k̂ exceeds ``PARETO_K_RELIABLE``, else None.

    ``k`` None or nan (no k̂ was computed) gives None.
    """
    if k is None or not np.isfinite(k) or k <= PARETO_K_RELIABLE:
        return None
    return (f"{method}: Pareto k̂ = {k:.2f} > {PARETO_K_RELIABLE} for the importance weights "
            f"p/q of the approximation's own draws: it misses part of the posterior, and its "
            f"medians and intervals may be wrong. Check against a sampler ('nuts', 'nss').")


def resample_indices(log_weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Multinomial resampling: for each uniform in [0, 1), the index of the draw
    whose cumulative normalised weight first exceeds it. Shapes (n,), (m,) → (m,)."""
    weights = np.exp(log_weights - np.logaddexp.reduce(log_weights))
    cumulative = np.cumsum(weights)
    cumulative /= cumulative[-1]
    return np.minimum(np.searchsorted(cumulative, uniforms, side="right"),
                      len(weights) - 1)
