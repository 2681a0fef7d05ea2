"""The non-parametric "continuity" star-formation history (Leja et al. 2019, ApJ 876, 3).

The SFR is constant within ``n_bins`` fixed bins of lookback time. The free
parameters are the log ratios of the SFRs of neighbouring bins,

.. math::  r_i = \\log_{10}(\\mathrm{SFR}_i / \\mathrm{SFR}_{i+1}),\\qquad i = 1 … n_{bins} − 1,

bin 1 the youngest (as Prospector's ``logsfr_ratios``), plus the total formed mass.
A Student-t prior on each r_i (ν = 2, scale 0.3, centre 0: Leja et al. 2019) favours
smooth histories but allows sharp changes.

Bins (the Leja/Prospector layout, per galaxy): 0–30 Myr, 30–100 Myr, and
``n_bins − 2`` bins spaced evenly in log lookback time from 100 Myr to the age of
the universe at the galaxy's redshift. The edges follow the redshift, so they are
computed inside the traced model (one compiled program for every redshift).

Because the SFR is piecewise constant, the mass formed before any lookback time is
piecewise linear and the mass in each SSP age bin is exact.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from tengri.errors import ParameterError

__all__ = [
    "FIXED_EDGES_YR",
    "check_n_bins",
    "ratio_names",
    "bin_edges_yr",
    "sfr_per_bin",
    "mass_formed_before_yr",
    "mass_per_age_bin",
    "average_sfr_msun_per_yr",
    "sfr_msun_per_yr",
    "mass_weighted_age_gyr",
]

# the two young bins of Leja et al. (2019): 0–30 Myr and 30–100 Myr
FIXED_EDGES_YR = (0.0, 3e7, 1e8)


def check_n_bins(n_bins) -> int:
    """``n_bins`` as an int ≥ 3 (two fixed young bins and at least one log bin)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 3:
        raise ParameterError(f"continuity SFH n_bins must be an integer >= 3, got {n_bins!r}")
    return n_bins


def ratio_names(n_bins: int) -> tuple[str, ...]:
    """Free parameter names ``log_sfr_ratio_1 … log_sfr_ratio_{n_bins−1}``."""
    return tuple(f"log_sfr_ratio_{i}" for i in range(1, check_n_bins(n_bins)))


def bin_edges_yr(n_bins: int, age_of_universe_yr: ArrayLike) -> Array:
    """Lookback-time edges of the continuity bins [yr], shape (n_bins + 1,).

    0, 30 Myr, 100 Myr, then ``n_bins − 2`` bins log-spaced up to
    ``age_of_universe_yr`` (which must exceed 100 Myr, i.e. z ≲ 30).
    """
    n_bins = check_n_bins(n_bins)
    log_top = jnp.log(jnp.asarray(age_of_universe_yr, dtype=float))
    frac = jnp.arange(1, n_bins - 1, dtype=float) / (n_bins - 2)
    old = jnp.exp(math.log(FIXED_EDGES_YR[2]) + frac * (log_top - math.log(FIXED_EDGES_YR[2])))
    return jnp.concatenate([jnp.asarray(FIXED_EDGES_YR), old])


def sfr_per_bin(log_sfr_ratios: ArrayLike, edges_yr: ArrayLike, mass_formed_msun: ArrayLike) -> Array:
    """SFR in each bin [M☉/yr], youngest first, shape (n_bins,).

    ``log SFR_{i+1} = log SFR_i − r_i``; the overall level makes the formed mass
    ``Σ SFR_i Δt_i`` equal ``mass_formed_msun``. Computed in log space (a
    log-sum-exp) so extreme ratios neither overflow nor underflow the total.

    Parameters
    ----------
    log_sfr_ratios : array, shape (n_bins − 1,)
        r_i = log10(SFR_i / SFR_{i+1}).
    edges_yr : array, shape (n_bins + 1,)
        Bin edges in yr, from :func:`bin_edges_yr`.
    mass_formed_msun : float
        Total formed mass [M☉].
    """
    r = jnp.asarray(log_sfr_ratios, dtype=float)
    edges = jnp.asarray(edges_yr, dtype=float)
    ln10 = math.log(10.0)
    log_rel = -jnp.concatenate([jnp.zeros(1), jnp.cumsum(r)]) * ln10  # ln(SFR_i / SFR_1)
    log_mass = log_rel + jnp.log(jnp.diff(edges))
    log_norm = jnp.log(mass_formed_msun) - logsumexp(log_mass)
    return jnp.exp(log_rel + log_norm)


def mass_formed_before_yr(lookback_yr: ArrayLike, sfr: ArrayLike, edges_yr: ArrayLike) -> Array:
    """Mass formed more recently than each lookback time [M☉] (exact, piecewise linear).

    Parameters
    ----------
    lookback_yr : array, shape (n,)
    sfr : array, shape (n_bins,)
        From :func:`sfr_per_bin`.
    edges_yr : array, shape (n_bins + 1,)
    """
    t = jnp.asarray(lookback_yr, dtype=float)[..., None]
    edges = jnp.asarray(edges_yr, dtype=float)
    inside = jnp.clip(t - edges[:-1], 0.0, jnp.diff(edges))
    return jnp.sum(sfr * inside, axis=-1)


def mass_per_age_bin(sfr: ArrayLike, edges_yr: ArrayLike, age_bin_edges_yr: ArrayLike) -> Array:
    """Mass formed in each SSP age bin [M☉], shape (n_age,).

    The exact integral of the piecewise-constant SFR over each bin. Mass older than
    the last SSP edge (if the age of the universe exceeds it) goes to the oldest
    bin, so the masses always sum to the formed mass.
    """
    ssp_edges = jnp.asarray(age_bin_edges_yr, dtype=float)
    top = jnp.maximum(ssp_edges[-1], jnp.asarray(edges_yr)[-1])
    cumulative = mass_formed_before_yr(ssp_edges.at[-1].set(top), sfr, edges_yr)
    return jnp.diff(cumulative)


def average_sfr_msun_per_yr(window_yr: ArrayLike, sfr: ArrayLike, edges_yr: ArrayLike) -> Array:
    """Mean SFR over the last ``window_yr`` [M☉/yr] (e.g. 1e7 → sfr_10myr)."""
    window = jnp.asarray(window_yr, dtype=float)
    return mass_formed_before_yr(window, sfr, edges_yr) / window


def sfr_msun_per_yr(lookback_yr: ArrayLike, sfr: ArrayLike, edges_yr: ArrayLike) -> Array:
    """SFR at each lookback time [M☉/yr]: the SFR of its bin, 0 outside [0, age of universe]."""
    t = jnp.asarray(lookback_yr, dtype=float)
    edges = jnp.asarray(edges_yr, dtype=float)
    index = jnp.clip(jnp.searchsorted(edges, t, side="right") - 1, 0, sfr.shape[0] - 1)
    return jnp.where((t >= 0.0) & (t <= edges[-1]), sfr[index], 0.0)


def mass_weighted_age_gyr(sfr: ArrayLike, edges_yr: ArrayLike) -> Array:
    """Mean lookback age of the formed mass [Gyr] (exact: each bin's mass sits at its midpoint on average)."""
    edges = jnp.asarray(edges_yr, dtype=float)
    mass = sfr * jnp.diff(edges)
    return jnp.sum(mass * 0.5 * (edges[1:] + edges[:-1])) / jnp.sum(mass) / 1e9
