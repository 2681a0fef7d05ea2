"""The stochastic star-formation history: a smooth mean SFH times a Gaussian random field.

Model
-----
``log10 SFR(t) = log10 SFR_mean(t) + x(t) + const``, with ``SFR_mean`` a parametric
family of :mod:`tengri.physics.sfh` (default ``delayed``), ``x`` a stationary
Gaussian field of zero mean and power spectral density P(f), and the constant
chosen so that the total formed mass is ``10^stellar_mass``.

Time grid
---------
The history ``[0, T]`` (T the age of the universe at the galaxy's redshift, so the
grid follows each galaxy's redshift and is traced, not compiled in) is cut into
``n_grid`` cells of width ``Δt = T / n_grid``; ``x`` takes one value ``x_n`` per cell
and is held constant across it. With the default ``n_grid = 64``, Δt is 92 Myr at
z = 1 and 215 Myr at z = 0: raise ``n_grid`` to resolve shorter timescales.

Fourier convention
------------------
``x_n`` are the first ``n_grid`` points of a periodic field of ``L = 2 n_grid`` points
(twice the history, so the ends of the history are not correlated through the
wrap-around); its spectrum is sampled at ``f_k = k / (L Δt)``, k = 0 … n_grid:

    x_m = Σ_k a_k e^{2πi k m / L},   E|a_k|² = P_Δt(f_k) Δf,   Δf = 1/(L Δt),

computed as ``irfft(L a)``. The latent white noise ``ξ`` (``psd_xi_000 …``, 2 n_grid
numbers, prior N(0, 1)) fills the coefficients in order of frequency:
``a_0 = √(P_0 Δf) ξ_0``, ``a_k = √(P_k Δf / 2) (ξ_{2k−1} + i ξ_{2k})`` for
k = 1 … n_grid − 1, ``a_{n_grid} = √(P_{n_grid} Δf) ξ_{2 n_grid − 1}`` (Nyquist). The
periodogram ``|rfft(x)_k|² Δt / L`` of the periodic field then has expectation
``P_Δt(f_k)``.

``P_Δt`` is the spectrum of the continuous process *sampled* every Δt, i.e. P(f)
aliased onto the grid, ``P_Δt(f) = Σ_m P(f + m/Δt)`` (closed forms below). Power at
periods shorter than the grid (bursts the grid cannot resolve) is therefore folded
into the cell values instead of being dropped: each ``x_n`` has the full variance of
the continuous process, and the covariance of the cells is the continuous one,
``C(|n − m| Δt)``, up to the periodic images ``C(|n − m| Δt + j L Δt)`` that matter only
when a timescale approaches the length of the history.

PSDs (two-sided, f in 1/Myr, P in dex² Myr; σ in dex, times in Myr)
---------------------------------------------------------------------
- ``"drw"``, damped random walk: ``P(f) = 2 τ σ² / (1 + (2π τ f)²)``, covariance
  ``σ² e^{−|Δt|/τ}``. Parameters ``sfh_field_psd_sigma`` (σ, the rms of x) and
  ``sfh_field_psd_tau_myr`` (τ). Sampled: ``σ² Δt (1 − ρ²)/(1 − 2ρ cos 2πfΔt + ρ²)``,
  ρ = e^{−Δt/τ}.
- ``"extended_regulator"``, the extended regulator model (Tacchella, Forbes &
  Caplar 2020; as a Gaussian-process kernel in Iyer et al. 2024, ApJ 961, 53): a gas
  regulator with equilibrium timescale τ_eq fed by an inflow correlated over τ_in,
  plus short-lived giant molecular clouds:
  ``P(f) = 2σ²(τ_eq + τ_in) / ([1 + (2πτ_eq f)²][1 + (2πτ_in f)²]) + 2τ_gmc σ_gmc² / (1 + (2πτ_gmc f)²)``,
  covariance ``σ²(τ_in e^{−|Δt|/τ_in} − τ_eq e^{−|Δt|/τ_eq})/(τ_in − τ_eq) + σ_gmc² e^{−|Δt|/τ_gmc}``.
  Parameters ``sfh_field_psd_sigma`` (σ, rms of the regulator part; x has rms
  √(σ² + σ_gmc²)), ``sfh_field_psd_tau_myr`` (τ_eq), ``sfh_field_psd_tau_in_myr``
  (τ_in), ``sfh_field_psd_sigma_gmc`` (σ_gmc) and ``sfh_field_psd_tau_gmc_myr``
  (τ_gmc).

Default hyperparameters (fixed unless given a prior): σ = 0.3 dex; DRW τ = 200 Myr;
extended regulator τ_eq = 200 Myr, τ_in = 100 Myr, σ_gmc = 0.03 dex, τ_gmc = 50 Myr
(the timescales of Iyer et al. 2024's cosmic-noon example).

Recent SFRs
-----------
``sfr_10myr`` and ``sfr_100myr`` are the exact mass formed in the window divided by
it, fluctuations included. When Δt exceeds the window (the usual case for 10 Myr)
the window lies in the first cell, so the 10-Myr SFR is the mean SFH's times
``10^{x_0}``: the burst state of the present cell, which (by the aliasing above)
carries the full variance of the field, unresolved bursts included. For bursts
shorter than the window this slightly overstates the scatter of the 10-Myr average.
"""

from __future__ import annotations

import math
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from tengri.errors import ParameterError
from tengri.physics import sfh as sfh_physics

__all__ = [
    "PSD_MODELS",
    "PSD_PARAMETERS",
    "DEFAULT_PSD_VALUES",
    "MEAN_FAMILIES",
    "DEFAULT_N_GRID",
    "check_settings",
    "psd_drw",
    "psd_extended_regulator",
    "sampled_psd",
    "field_frequencies_per_myr",
    "xi_names",
    "periodic_field_from_xi",
    "log_sfr_field_dex",
    "grid_step_yr",
    "mass_per_age_bin",
    "mass_and_recent_sfr",
    "average_sfr_msun_per_yr",
    "sfr_msun_per_yr",
    "mass_weighted_age_gyr",
]

DEFAULT_N_GRID = 64
YR_PER_MYR = 1e6
YR_PER_GYR = 1e9

PSD_PARAMETERS: dict[str, tuple[str, ...]] = {
    "drw": ("sfh_field_psd_sigma", "sfh_field_psd_tau_myr"),
    "extended_regulator": (
        "sfh_field_psd_sigma",
        "sfh_field_psd_tau_myr",
        "sfh_field_psd_tau_in_myr",
        "sfh_field_psd_sigma_gmc",
        "sfh_field_psd_tau_gmc_myr",
    ),
}
PSD_MODELS = tuple(PSD_PARAMETERS)
DEFAULT_PSD_VALUES = {
    "drw": {"sfh_field_psd_sigma": 0.3, "sfh_field_psd_tau_myr": 200.0},
    "extended_regulator": {
        "sfh_field_psd_sigma": 0.3,
        "sfh_field_psd_tau_myr": 200.0,
        "sfh_field_psd_tau_in_myr": 100.0,
        "sfh_field_psd_sigma_gmc": 0.03,
        "sfh_field_psd_tau_gmc_myr": 50.0,
    },
}
# mean SFHs with a rate (the burst has none)
MEAN_FAMILIES = tuple(f for f in sfh_physics.SFH_FAMILIES if f != "burst")


def check_settings(n_grid, psd: str, mean: str) -> None:
    """ParameterError naming the setting when ``n_grid``, ``psd`` or ``mean`` is invalid."""
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 2:
        raise ParameterError(f"stochastic SFH n_grid must be an integer >= 2, got {n_grid!r}")
    if psd not in PSD_PARAMETERS:
        raise ParameterError(f"stochastic SFH psd {psd!r} unknown; valid: {', '.join(PSD_MODELS)}")
    if mean not in MEAN_FAMILIES:
        raise ParameterError(f"stochastic SFH mean {mean!r} unknown; valid: {', '.join(MEAN_FAMILIES)}")


# --- power spectra ---------------------------------------------------------------


def _lorentzian(f, tau):
    """Unit-variance DRW spectrum 2τ/(1 + (2πτf)²) [Myr]."""
    return 2.0 * tau / (1.0 + (2.0 * math.pi * tau * f) ** 2)


def _sampled_lorentzian(f, tau, dt):
    """Σ_m of :func:`_lorentzian` at f + m/Δt: Δt (1 − ρ²)/((1 − ρ)² + 4ρ sin²(πfΔt)), ρ = e^{−Δt/τ}."""
    rho = jnp.exp(-dt / tau)
    return dt * -jnp.expm1(-2.0 * dt / tau) / (jnp.expm1(-dt / tau) ** 2 + 4.0 * rho * jnp.sin(math.pi * f * dt) ** 2)


def _distinct(tau_eq, tau_in):
    """τ_in nudged by 1e-6 relative where it equals τ_eq (the regulator form is 0/0 there)."""
    close = jnp.abs(tau_in - tau_eq) < 1e-6 * tau_eq
    return jnp.where(close, tau_eq * (1.0 + 1e-6), tau_in)


def psd_drw(frequency_per_myr: ArrayLike, sigma_dex: ArrayLike, tau_myr: ArrayLike) -> Array:
    """Damped-random-walk PSD ``2τσ²/(1 + (2πτf)²)`` [dex² Myr], two-sided, variance σ²."""
    return sigma_dex**2 * _lorentzian(jnp.asarray(frequency_per_myr, dtype=float), tau_myr)


def psd_extended_regulator(
    frequency_per_myr: ArrayLike,
    sigma_dex: ArrayLike,
    tau_eq_myr: ArrayLike,
    tau_in_myr: ArrayLike,
    sigma_gmc_dex: ArrayLike,
    tau_gmc_myr: ArrayLike,
) -> Array:
    """Extended-regulator PSD [dex² Myr], two-sided, variance σ² + σ_gmc² (see module docs)."""
    f = jnp.asarray(frequency_per_myr, dtype=float)
    w = 2.0 * math.pi * f
    regulator = 2.0 * (tau_eq_myr + tau_in_myr) / ((1.0 + (w * tau_eq_myr) ** 2) * (1.0 + (w * tau_in_myr) ** 2))
    return sigma_dex**2 * regulator + sigma_gmc_dex**2 * _lorentzian(f, tau_gmc_myr)


def _sampled_psd_drw(f, dt, sigma, tau):
    return sigma**2 * _sampled_lorentzian(f, tau, dt)


def _sampled_psd_extended_regulator(f, dt, sigma, tau_eq, tau_in, sigma_gmc, tau_gmc):
    # partial fractions: the regulator term is σ²(τ_eq L_eq − τ_in L_in)/(τ_eq − τ_in), L the
    # unit-variance Lorentzians, each of which aliases in closed form
    tau_in = _distinct(tau_eq, tau_in)
    regulator = (tau_eq * _sampled_lorentzian(f, tau_eq, dt) - tau_in * _sampled_lorentzian(f, tau_in, dt)) / (
        tau_eq - tau_in
    )
    return sigma**2 * regulator + sigma_gmc**2 * _sampled_lorentzian(f, tau_gmc, dt)


_SAMPLED = {"drw": _sampled_psd_drw, "extended_regulator": _sampled_psd_extended_regulator}


def sampled_psd(psd: str, frequency_per_myr: ArrayLike, dt_myr: ArrayLike, hyper: Mapping[str, ArrayLike]) -> Array:
    """PSD of the process sampled every ``dt_myr``: P aliased onto the grid [dex² Myr].

    Parameters
    ----------
    psd : {"drw", "extended_regulator"}
    frequency_per_myr : array
        Frequencies in [0, 1/(2 dt)].
    dt_myr : float
        Grid step [Myr].
    hyper : dict
        The PSD's hyperparameters by their parameter names (``PSD_PARAMETERS[psd]``).

    Returns
    -------
    jax.Array, shape of ``frequency_per_myr``
        ``Σ_m P(f + m/Δt)``; integrates over [−1/2Δt, 1/2Δt] to the variance of x.
    """
    if psd not in _SAMPLED:
        raise ParameterError(f"psd {psd!r} unknown; valid: {', '.join(PSD_MODELS)}")
    missing = [n for n in PSD_PARAMETERS[psd] if n not in hyper]
    if missing:
        raise ParameterError(f"psd {psd!r} needs hyperparameters {missing}")
    args = [jnp.asarray(hyper[n], dtype=float) for n in PSD_PARAMETERS[psd]]
    return _SAMPLED[psd](jnp.asarray(frequency_per_myr, dtype=float), dt_myr, *args)


# --- the field -------------------------------------------------------------------


def field_frequencies_per_myr(n_grid: int, dt_myr: ArrayLike) -> Array:
    """``f_k = k/(2 n_grid Δt)``, k = 0 … n_grid [1/Myr]: the periodic grid's rfft frequencies."""
    return jnp.arange(n_grid + 1, dtype=float) / (2 * n_grid * jnp.asarray(dt_myr, dtype=float))


def xi_names(n_grid: int) -> tuple[str, ...]:
    """Names of the 2 n_grid latent white-noise parameters: ``psd_xi_000``, ``psd_xi_001``, …"""
    width = max(3, len(str(2 * n_grid - 1)))
    return tuple(f"psd_xi_{i:0{width}d}" for i in range(2 * n_grid))


def periodic_field_from_xi(xi: ArrayLike, psd_values: ArrayLike, dt_myr: ArrayLike) -> Array:
    """The periodic field of ``L = 2 n_grid`` points from white noise ``xi`` [dex].

    Parameters
    ----------
    xi : array, shape (2 n_grid,)
        Latent white noise, N(0, 1) a priori, in frequency order (module docs).
    psd_values : array, shape (n_grid + 1,)
        The sampled PSD at :func:`field_frequencies_per_myr` [dex² Myr].
    dt_myr : float
        Grid step [Myr].

    Returns
    -------
    jax.Array, shape (2 n_grid,)
    """
    xi = jnp.asarray(xi, dtype=float)
    n_grid = xi.shape[0] // 2
    length = 2 * n_grid
    amplitude = jnp.sqrt(psd_values / (length * dt_myr))  # √(P Δf)
    modes = (xi[1:-1:2] + 1j * xi[2:-1:2]) * amplitude[1:-1] / math.sqrt(2.0)
    coefficients = jnp.concatenate([(xi[:1] * amplitude[:1]).astype(modes.dtype), modes,
                                    (xi[-1:] * amplitude[-1:]).astype(modes.dtype)])
    return jnp.fft.irfft(length * coefficients, n=length)


def log_sfr_field_dex(
    xi: ArrayLike,
    sigma_dex: ArrayLike,
    tau_myr: ArrayLike,
    dt_myr: ArrayLike,
    psd: str = "drw",
    **more_hyper: ArrayLike,
) -> Array:
    """The field x on the history's cells [dex], shape (n_grid,), from ``xi`` (2 n_grid,).

    A pure function of (ξ, σ, τ, Δt) — differentiable in all of them — for the
    hierarchical fit of the PSD. ``more_hyper``: the extended regulator's other
    hyperparameters by parameter name (``sfh_field_psd_tau_in_myr``, …).
    """
    xi = jnp.asarray(xi, dtype=float)
    if xi.ndim != 1 or xi.shape[0] % 2 or xi.shape[0] < 4:
        raise ParameterError(f"xi must have shape (2 n_grid,) with n_grid >= 2, got {xi.shape}")
    n_grid = xi.shape[0] // 2
    hyper = {"sfh_field_psd_sigma": sigma_dex, "sfh_field_psd_tau_myr": tau_myr, **more_hyper}
    psd_values = sampled_psd(psd, field_frequencies_per_myr(n_grid, dt_myr), dt_myr, hyper)
    return periodic_field_from_xi(xi, psd_values, dt_myr)[:n_grid]


def grid_step_yr(n_grid: int, age_of_universe_yr: ArrayLike) -> Array:
    """Cell width Δt = T / n_grid [yr]."""
    return jnp.asarray(age_of_universe_yr, dtype=float) / n_grid


# --- mass and SFR of the product SFR_mean · 10^x ------------------------------------------


def _mean_family(mean: str, mean_params: Mapping[str, ArrayLike]):
    fam = sfh_physics.sfh_family(mean)
    if mean not in MEAN_FAMILIES:
        raise ParameterError(f"mean SFH {mean!r} has no rate; valid: {', '.join(MEAN_FAMILIES)}")
    return fam, {n: jnp.asarray(mean_params[n], dtype=float) for n in fam.param_names}


def _weighted_mass_before(lookback_yr, field_dex, mean, mean_params, age_of_universe_yr):
    """Mass formed more recently than each lookback time, and the total, in units of the mean SFH's mass.

    W(t) = Σ_{cells n below t} 10^{x_n} m_n + 10^{x_i} m(c_i, t), m the mean SFH's mass
    between two times (exact, see SFHFamily.mass_between) and i the cell holding t.
    F and 1 − F of the mean are evaluated once at the cell edges and once at each t.
    """
    fam, p = _mean_family(mean, mean_params)
    n_grid = field_dex.shape[0]
    age_u_gyr = jnp.asarray(age_of_universe_yr, dtype=float) / YR_PER_GYR
    dt_gyr = age_u_gyr / n_grid
    t = jnp.minimum(jnp.asarray(lookback_yr, dtype=float) / YR_PER_GYR, age_u_gyr)
    i = jnp.clip(jnp.floor(t / dt_gyr).astype(int), 0, n_grid - 1)
    points = jnp.concatenate([jnp.arange(n_grid + 1, dtype=float) * dt_gyr, jnp.ravel(t)])
    f_all = fam.cumulative_fn(points, p, age_u_gyr)
    r_all = fam.recent(points, p, age_u_gyr)
    f, r = f_all[: n_grid + 1], r_all[: n_grid + 1]
    f_t, r_t = jnp.reshape(f_all[n_grid + 1 :], t.shape), jnp.reshape(r_all[n_grid + 1 :], t.shape)
    boost = 10.0 ** field_dex
    cell_mass = boost * sfh_physics.stable_difference(f[:-1], r[:-1], f[1:], r[1:])
    cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(cell_mass)])
    partial = boost[i] * sfh_physics.stable_difference(f[i], r[i], f_t, r_t)
    return cumulative[i] + partial, cumulative[-1]


def mass_and_recent_sfr(
    field_dex: ArrayLike,
    mean: str,
    mean_params: Mapping[str, ArrayLike],
    age_bin_edges_yr: ArrayLike,
    windows_yr: ArrayLike,
    mass_formed_msun: ArrayLike,
    age_of_universe_yr: ArrayLike,
) -> tuple[Array, Array]:
    """:func:`mass_per_age_bin` (as M☉) and :func:`average_sfr_msun_per_yr` over ``windows_yr`` in one pass.

    Returns
    -------
    mass_per_age : jax.Array, shape (n_age,) [M☉]
    sfr : jax.Array, shape of ``windows_yr`` [M☉/yr]
    """
    edges = jnp.asarray(age_bin_edges_yr, dtype=float)
    edges = edges.at[-1].set(jnp.maximum(edges[-1], age_of_universe_yr))
    windows = jnp.asarray(windows_yr, dtype=float)
    points = jnp.concatenate([edges, jnp.ravel(windows)])
    before, total = _weighted_mass_before(points, jnp.asarray(field_dex), mean, mean_params, age_of_universe_yr)
    scale = mass_formed_msun / total
    n_edges = edges.shape[0]
    sfr = jnp.reshape(before[n_edges:], windows.shape) * scale / windows
    return jnp.diff(before[:n_edges]) * scale, sfr


def mass_per_age_bin(
    field_dex: ArrayLike,
    mean: str,
    mean_params: Mapping[str, ArrayLike],
    age_bin_edges_yr: ArrayLike,
    age_of_universe_yr: ArrayLike,
) -> Array:
    """Fraction of the formed mass in each SSP age bin, shape (n_age,).

    Exact for the model (the mean SFH's exact mass in each piece of a bin, times the
    piece's cell factor 10^{x_n}). Mass older than the last SSP edge goes to the
    oldest bin, so the fractions sum to 1.

    Parameters
    ----------
    field_dex : array, shape (n_grid,)
        x on the cells, from :func:`log_sfr_field_dex`.
    mean, mean_params
        The mean SFH family and its parameters (Gyr).
    age_bin_edges_yr : array, shape (n_age + 1,)
    age_of_universe_yr : float
    """
    edges = jnp.asarray(age_bin_edges_yr, dtype=float)
    edges = edges.at[-1].set(jnp.maximum(edges[-1], age_of_universe_yr))
    before, total = _weighted_mass_before(edges, jnp.asarray(field_dex), mean, mean_params, age_of_universe_yr)
    return jnp.diff(before) / total


def average_sfr_msun_per_yr(
    window_yr: ArrayLike,
    field_dex: ArrayLike,
    mean: str,
    mean_params: Mapping[str, ArrayLike],
    mass_formed_msun: ArrayLike,
    age_of_universe_yr: ArrayLike,
) -> Array:
    """Mean SFR over the last ``window_yr`` [M☉/yr], fluctuations included (module docs)."""
    window = jnp.asarray(window_yr, dtype=float)
    before, total = _weighted_mass_before(window, jnp.asarray(field_dex), mean, mean_params, age_of_universe_yr)
    return mass_formed_msun * before / total / window


def sfr_msun_per_yr(
    lookback_yr: ArrayLike,
    field_dex: ArrayLike,
    mean: str,
    mean_params: Mapping[str, ArrayLike],
    mass_formed_msun: ArrayLike,
    age_of_universe_yr: ArrayLike,
    component: str = "total",
) -> Array:
    """SFR at each lookback time [M☉/yr].

    ``component="total"``: ``A · SFR_mean(t) · 10^{x(t)}``; ``"smooth"``: ``A · SFR_mean(t)``,
    the same normalisation A (the one that makes the total's formed mass
    ``mass_formed_msun``), so total / smooth = 10^x.
    """
    if component not in ("total", "smooth"):
        raise ParameterError(f"component must be 'total' or 'smooth', got {component!r}")
    fam, p = _mean_family(mean, mean_params)
    field_dex = jnp.asarray(field_dex)
    n_grid = field_dex.shape[0]
    age_u = jnp.asarray(age_of_universe_yr, dtype=float)
    _, total = _weighted_mass_before(jnp.zeros(()), field_dex, mean, mean_params, age_u)
    t = jnp.asarray(lookback_yr, dtype=float)
    rate_per_yr = fam.rate_fn(t / YR_PER_GYR, p, age_u / YR_PER_GYR) / YR_PER_GYR
    sfr = mass_formed_msun * rate_per_yr / total
    if component == "smooth":
        return sfr
    i = jnp.clip(jnp.floor(t / grid_step_yr(n_grid, age_u)).astype(int), 0, n_grid - 1)
    return sfr * 10.0 ** field_dex[i]


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(4)
_GL_X, _GL_W = 0.5 * (_GL_NODES + 1.0), 0.5 * _GL_WEIGHTS  # on [0, 1]


def mass_weighted_age_gyr(
    field_dex: ArrayLike,
    mean: str,
    mean_params: Mapping[str, ArrayLike],
    age_of_universe_yr: ArrayLike,
) -> Array:
    """Mean lookback age of the formed mass [Gyr].

    Per cell, ``∫ t dM = b R(b) − a R(a) − ∫_a^b R dt`` (R = 1 − F of the mean SFH,
    continuous) with a 4-point Gauss–Legendre rule for the last integral: exact up to
    the rule's error on R across a cell.
    """
    fam, p = _mean_family(mean, mean_params)
    field_dex = jnp.asarray(field_dex)
    n_grid = field_dex.shape[0]
    age_u_gyr = jnp.asarray(age_of_universe_yr, dtype=float) / YR_PER_GYR
    dt = age_u_gyr / n_grid
    a = jnp.arange(n_grid, dtype=float) * dt
    b = a + dt
    nodes = a[:, None] + dt * jnp.asarray(_GL_X)[None, :]
    integral = dt * jnp.sum(jnp.asarray(_GL_W) * fam.recent(nodes, p, age_u_gyr), axis=1)
    moment = b * fam.recent(b, p, age_u_gyr) - a * fam.recent(a, p, age_u_gyr) - integral
    boost = 10.0 ** field_dex
    mass = boost * fam.mass_between(a, b, p, age_u_gyr)
    return jnp.sum(boost * moment) / jnp.sum(mass)
