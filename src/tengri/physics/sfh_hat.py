"""SSP weights of a parametric SFH with the SSP light linear in formation age ("hat" quadrature).

:func:`tengri.physics.sfh.mass_formed_per_age_bin` ("bins") gives the SSP of age
``a_j`` all the mass formed in its bin: the light is then piecewise constant in the
age at which the stars formed, and where the SFH is sharp (short τ; the exponential's
jump at its start, at every τ) the SED is only continuous, not smooth, in the SFH
parameters: a kink each time a bin edge crosses the sharp feature.

Here the SSPs are interpolated linearly in age between neighbouring SSP ages (the
piecewise-linear interpolant FSPS and DSPS use too), and the SFH is integrated
exactly against that interpolant. With hat functions φ_j on the SSP ages
a_0 < … < a_{n−1} (φ_j(a_j) = 1, linear to 0 at a_{j±1}; mass formed more recently
than a_0 goes to a_0, earlier than a_{n−1} to a_{n−1}) the weight of SSP j is

.. math::  w_j = \\int \\psi(t)\\,\\phi_j(t)\\,dt \\Big/ \\int \\psi(t)\\,dt,

t the lookback time. Per interval [a_i, a_{i+1}], with the exact mass m_i formed in
it (the numerically careful F differences of :mod:`tengri.physics.sfh`) and the
ψ-weighted mean position x̄_i ∈ [0, 1] of that mass inside the interval, SSP i gets
m_i (1 − x̄_i) and SSP i+1 gets m_i x̄_i. The weights are C1 in the SFH parameters
(φ_j is continuous, so the jump of an exponential SFH at its start only moves
continuously along the interpolant), where the bins' weights are only C0.

The mean position needs the partial first moment of ψ, in closed form per family:
for the gamma-function families (ψ ∝ s^{k−1} e^{−s/τ}, s the time since the start)
it is a ratio of the integrals ``K_n(r) = ∫_0^1 v^n e^{−r v} dv`` (r = width/τ),
which depend on the width of the interval, not on where it sits, and stay finite
for r → 0 and r → ∞ (:func:`_unit_decay_moments`). The lognormal is a Gaussian in
u = ln(cosmic time): over an interval wider than half a σ in u the mean cosmic time
is the closed form ``e^{T0 + τ²/2} [Φ(β − τ) − Φ(α − τ)] / [Φ(β) − Φ(α)]``; over a
narrower one (all the young intervals, where that difference of nearly equal Φ
would lose up to ten digits) a 6-node Gauss–Legendre rule in u, exact to rounding
there (:func:`_lognormal_mean_position`).

Families: ``constant``, ``exponential``, ``delayed``, ``lognormal`` and ``burst``
(its mass split linearly in age between the two SSP ages around it). ``dpl`` is not
supported: its F is itself a 48-node quadrature, and its partial moment would need
another.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import log_ndtr
from jax.typing import ArrayLike

from tengri.errors import ParameterError
from tengri.physics import sfh

__all__ = ["SFH_QUADRATURES", "HAT_FAMILIES", "check_quadrature", "mass_formed_per_ssp_age"]

SFH_QUADRATURES = ("bins", "hat")


# Lookback time [Gyr] beyond any SFH: the upper end of the mass older than the oldest SSP.
_BEYOND_ANY_SFH_GYR = 1e3

# Below this r the moments K_n(r) come from their Taylor series (12 terms: truncation
# < 0.25^12/12! ~ 1e-16), above it from the upward recurrence, which loses at most two
# digits there for n ≤ 2 and none as r grows.
_TAYLOR_BELOW = 0.25
_TAYLOR_TERMS = 12


def _unit_decay_moments(n_max: int, r) -> list:
    """``[K_0(r), …, K_{n_max}(r)]``, ``K_n(r) = ∫_0^1 v^n e^{−r v} dv`` for r ≥ 0, each of the shape of ``r``.

    For r < 1/4 the Taylor series ``Σ_m (−r)^m / (m! (n + m + 1))`` (exact 1/(n+1) at
    r = 0); above, ``K_0 = (1 − e^{−r})/r`` and ``K_n = (n K_{n−1} − e^{−r})/r``. Never
    overflows (the exponential decays), and stays finite in the gradient at r = 0.
    """
    below = r < _TAYLOR_BELOW
    # where, not minimum/maximum: at the threshold those split the gradient between the branches
    small = jnp.where(below, r, _TAYLOR_BELOW)
    big = jnp.where(below, 1.0, r)
    decay = jnp.exp(-big)
    upward = [-jnp.expm1(-big) / big]
    for n in range(1, n_max + 1):
        upward.append((n * upward[-1] - decay) / big)
    out = []
    for n in range(n_max + 1):
        coefficients = np.array([(-1.0) ** m / (math.factorial(m) * (n + m + 1))
                                 for m in reversed(range(_TAYLOR_TERMS))])
        taylor = jnp.polyval(coefficients, small, unroll=_TAYLOR_TERMS)
        out.append(jnp.where(below, taylor, upward[n]))
    return out


def _truncated_exponential_mean(r):
    """Mean of v ∈ [0, 1] under e^{−r v}: ``1/r − 1/(e^r − 1)``, for r ≥ 0 (1/2 at r = 0).

    A 5-term series below r = 0.1 (truncation < r^9/47900160 ~ 2e-17), where the
    closed form cancels; ``1/(e^r − 1)`` written as ``e^{−r}/(1 − e^{−r})`` so that
    neither it nor its gradient overflows for large r.
    """
    below = r < 0.1
    small = jnp.where(below, r, 0.1)
    big = jnp.where(below, 1.0, r)
    series = 0.5 - small / 12.0 + small**3 / 720.0 - small**5 / 30240.0 + small**7 / 1209600.0
    closed = 1.0 / big - jnp.exp(-big) / -jnp.expm1(-big)
    return jnp.where(below, series, closed)


def _gamma_mean_from_old_end(k: int, start_offset, width, tau):
    """Mean of y ∈ [0, width] under (start_offset + y)^{k−1} e^{−y/τ}, as a fraction of ``width``.

    y is the time since the interval's oldest point, ``start_offset`` (≥ 0) the time
    from the SFH's start to that point: the mass of ψ ∝ s^{k−1} e^{−s/τ} on
    s ∈ [start_offset, start_offset + width]. Expanding the binomial with
    α = start_offset/(start_offset + width), β = width/(start_offset + width), the
    fraction is Σ_j C(k−1, j) α^{k−1−j} β^j K_{j+1}(r) / Σ_j C(k−1, j) α^{k−1−j} β^j K_j(r),
    r = width/τ (for k = 1, K_1/K_0 in closed form). Arrays broadcast; 1/2 where the
    interval is empty (its mass is 0).
    """
    r = width / tau
    if k == 1:
        return _truncated_exponential_mean(r)
    total = start_offset + width
    empty = total <= 0.0
    safe_total = jnp.where(empty, 1.0, total)
    alpha = jnp.where(empty, 0.0, start_offset / safe_total)
    beta = jnp.where(empty, 1.0, width / safe_total)
    moments = _unit_decay_moments(k, r)
    coefficients = [math.comb(k - 1, j) * alpha ** (k - 1 - j) * beta**j for j in range(k)]
    first = sum(c * moments[j + 1] for j, c in enumerate(coefficients))
    zeroth = sum(c * moments[j] for j, c in enumerate(coefficients))
    return first / zeroth


def _clipped_width(lo_gyr, hi_gyr, age_gyr):
    """Oldest point of each interval inside the SFH and the interval's width there [Gyr]."""
    hi_inside = jnp.clip(age_gyr, lo_gyr, hi_gyr)
    return hi_inside, hi_inside - lo_gyr


def _gamma_mean_position(k: int):
    # ψ ∝ s^{k−1} e^{−s/τ} with s = age − t: the oldest point of the interval inside the
    # SFH, t = hi, is the nearest to the start. The mean lookback time is hi − ȳ.
    def mean_position(lo_gyr, hi_gyr, p, age_of_universe_gyr):
        age, tau = p["age_gyr"], p["tau_gyr"]
        hi_inside, width = _clipped_width(lo_gyr, hi_gyr, age)
        fraction_from_old_end = _gamma_mean_from_old_end(k, age - hi_inside, width, tau)
        return width / (hi_gyr - lo_gyr) * (1.0 - fraction_from_old_end)

    return mean_position


def _constant_mean_position(lo_gyr, hi_gyr, p, age_of_universe_gyr):
    _, width = _clipped_width(lo_gyr, hi_gyr, p["age_gyr"])
    return 0.5 * width / (hi_gyr - lo_gyr)


# --- lognormal: a Gaussian in u = ln(cosmic time) -------------------------------------

# Intervals narrower than this many σ in u take Gauss–Legendre (truncation below
# (L/2τ)^{2n}/(2n)! ~ 1e-16 with 6 nodes); wider ones the closed form, whose
# cancellation (cosmic time over interval width) is then at most a few hundred.
_LOGNORMAL_NARROW_SIGMAS = 0.5
_LOGNORMAL_NODES, _LOGNORMAL_WEIGHTS = np.polynomial.legendre.leggauss(6)
# Standard deviations below the peak that stand in for the Big Bang (Φ(−40) ~ 1e-350).
_LOGNORMAL_FAR_SIGMAS = 40.0


def _log_normal_mass_between(lo, hi):
    """log(Φ(hi) − Φ(lo)) for lo < hi, without cancellation in either tail."""
    upper = lo > 0.0  # both in the upper tail: Φ(hi) − Φ(lo) = Φ(−lo) − Φ(−hi)
    a = jnp.where(upper, -lo, hi)
    b = jnp.where(upper, -hi, lo)
    log_a, log_b = log_ndtr(a), log_ndtr(b)
    return log_a + jnp.log(-jnp.expm1(log_b - log_a))


def _lognormal_mean_position(lo_gyr, hi_gyr, p, age_of_universe_gyr):
    # Lookback [lo, hi] is cosmic time [U − hi, U − lo]; x̄ = (T_young − E[T]) / (hi − lo),
    # T_young = U − lo, the mean E[T] of the lognormal's mass inside, clipped at the Big Bang.
    tau, t0 = sfh.lognormal_shape(p["tmax_gyr"], p["fwhm_gyr"])
    t_young = age_of_universe_gyr - lo_gyr
    t_old = age_of_universe_gyr - hi_gyr
    exists = t_young > 0.0
    u_young = jnp.log(jnp.where(exists, t_young, 1.0))
    after_big_bang = t_old > 0.0
    far = t0 - _LOGNORMAL_FAR_SIGMAS * tau
    u_old = jnp.where(after_big_bang, jnp.log(jnp.where(after_big_bang, t_old, 1.0)), jnp.minimum(far, u_young - tau))
    width_sigmas = (u_young - u_old) / tau
    narrow = exists & (width_sigmas < _LOGNORMAL_NARROW_SIGMAS)
    closed_form = exists & ~narrow

    # narrow: Gauss–Legendre in u; the density relative to its value at the midpoint
    half = 0.5 * jnp.where(narrow, u_young - u_old, tau)[..., None]
    mid = jnp.where(narrow, 0.5 * (u_young + u_old), t0)[..., None]
    u = mid + half * _LOGNORMAL_NODES
    log_density = -(u - mid) * (u + mid - 2.0 * t0) / (2.0 * tau**2)
    weight = _LOGNORMAL_WEIGHTS * jnp.exp(log_density)
    young = mid + half
    offset = -jnp.exp(young) * jnp.expm1(u - young)  # T_young − T, without cancellation
    quadrature = jnp.sum(weight * offset, axis=-1) / jnp.sum(weight, axis=-1)

    # wide: E[T] = e^{T0 + τ²/2} [Φ(β − τ) − Φ(α − τ)] / [Φ(β) − Φ(α)]
    beta = jnp.where(closed_form, (u_young - t0) / tau, 1.0)
    alpha = jnp.where(closed_form, (u_old - t0) / tau, 0.0)
    log_mean_t = (t0 + 0.5 * tau**2 + _log_normal_mass_between(alpha - tau, beta - tau)
                  - _log_normal_mass_between(alpha, beta))
    closed = jnp.where(closed_form, t_young, 1.0) - jnp.exp(jnp.where(closed_form, log_mean_t, 0.0))

    mean_offset = jnp.where(narrow, quadrature, jnp.where(closed_form, closed, 0.0))
    return mean_offset / (hi_gyr - lo_gyr)


# family → ``(lo_gyr (n,), hi_gyr (n,), params, age_of_universe_gyr) -> (n,)``: the
# ψ-weighted mean position, in [0, 1] from lo, of the mass formed in each interval.
_MEAN_POSITION: dict[str, Callable] = {
    "constant": _constant_mean_position,
    "exponential": _gamma_mean_position(1),
    "delayed": _gamma_mean_position(2),
    "lognormal": _lognormal_mean_position,
}

HAT_FAMILIES = (*_MEAN_POSITION, "burst")


def check_quadrature(quadrature: str, family: str) -> None:
    """ParameterError unless ``quadrature`` is known and, for ``"hat"``, ``family`` supports it."""
    if quadrature not in SFH_QUADRATURES:
        raise ParameterError(f"sfh_quadrature must be one of {', '.join(SFH_QUADRATURES)}, got {quadrature!r}")
    if quadrature == "hat" and family not in HAT_FAMILIES:
        raise ParameterError(
            f"sfh_quadrature='hat' supports the SFH families {', '.join(HAT_FAMILIES)}, not {family!r}; "
            f"use sfh_quadrature='bins'"
        )


def _burst_linear_fractions(age_gyr, node_gyr):
    """Burst mass split between the two SSP ages around it, linearly in age (end SSPs outside)."""
    x = jnp.clip(age_gyr, node_gyr[0], node_gyr[-1])
    i = jnp.clip(jnp.searchsorted(node_gyr, x, side="right") - 1, 0, node_gyr.shape[0] - 2)
    t = (x - node_gyr[i]) / (node_gyr[i + 1] - node_gyr[i])
    return jnp.zeros_like(node_gyr).at[i].add(1.0 - t).at[i + 1].add(t)


def _hat_weights(masses, mean_position):
    """Node weights (n,) from the masses (n + 1,) [below a_0, each interval, above a_{n−1}]
    and the mean positions (n − 1,) of the interval masses."""
    between = masses[1:-1]
    to_younger = jnp.concatenate([between * (1.0 - mean_position), jnp.zeros(1)])
    to_older = jnp.concatenate([jnp.zeros(1), between * mean_position])
    return (to_younger + to_older).at[0].add(masses[0]).at[-1].add(masses[-1])


def mass_formed_per_ssp_age(
    family: str,
    sfh_params: Mapping[str, ArrayLike],
    ssp_age_yr: ArrayLike,
    age_of_universe_yr: ArrayLike,
) -> Array:
    """Fraction of the formed mass given to each SSP with the SSPs linear in formation age.

    ``w_j = ∫ ψ φ_j dt / ∫ ψ dt`` with hat functions φ_j on the SSP ages (see the
    module docstring); exact, up to rounding, for every supported family. The
    fractions sum to 1.

    Parameters
    ----------
    family : str
        One of :data:`HAT_FAMILIES`.
    sfh_params : dict
        Scalars keyed by the family's ``param_names`` (Gyr for times).
    ssp_age_yr : array, shape (n_age,)
        SSP ages in yr, strictly increasing, ≥ 0, n_age ≥ 2.
    age_of_universe_yr : float
        Age of the universe at the galaxy's redshift, in yr.

    Returns
    -------
    jax.Array, shape (n_age,)
        Mass fractions, youngest SSP first.

    Raises
    ------
    ParameterError
        For a family without the hat quadrature, or bad ``sfh_params``.
    """
    check_quadrature("hat", family)
    fam, p = sfh._checked(family, sfh_params)
    node_gyr = jnp.asarray(ssp_age_yr, dtype=float) / sfh.YR_PER_GYR
    if family == "burst":
        return _burst_linear_fractions(p["age_gyr"], node_gyr)
    age_u_gyr = jnp.asarray(age_of_universe_yr, dtype=float) / sfh.YR_PER_GYR
    edges_gyr = jnp.concatenate([jnp.zeros(1), node_gyr, jnp.full(1, _BEYOND_ANY_SFH_GYR)])
    masses = fam.masses_between_edges(edges_gyr, p, age_u_gyr)
    position = _MEAN_POSITION[family](node_gyr[:-1], node_gyr[1:], p, age_u_gyr)
    return _hat_weights(masses, position)
