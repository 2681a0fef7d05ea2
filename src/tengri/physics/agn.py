"""Active galactic nucleus: accretion disk and dusty torus, with energy conservation.

The AGN's bolometric luminosity ``L_AGN`` is the luminosity of its accretion disk.
A fraction ``C`` (the torus covering factor, sky-averaged) of it is absorbed by the
dusty torus and re-emitted in the infrared; the rest escapes. So the AGN adds
exactly ``L_AGN`` to the galaxy, ``(1 − C) L_AGN`` as disk light and ``C L_AGN``
as torus emission, whatever the viewing angle (orientation effects — type 1 vs
type 2 — are averaged over, not modelled).

Accretion disk
    Piecewise power laws in λL_λ (Schartmann et al. 2005, A&A 437, 861; the form
    used by the SKIRTOR torus models, Stalevski et al. 2012, MNRAS 420, 2756,
    eq. 1, and Stalevski et al. 2016, MNRAS 458, 2288)::

        λL_λ ∝ λ^1.2     10 Å  ≤ λ < 100 Å
        λL_λ ∝ λ^0       100 Å ≤ λ < 1000 Å
        λL_λ ∝ λ^-0.5    1000 Å ≤ λ < 5 µm
        λL_λ ∝ λ^-3      λ ≥ 5 µm  (Rayleigh–Jeans tail)

    continuous at the breaks and zero below 10 Å. It is normalised analytically
    (∫ L_λ dλ over 10 Å … ∞ = 1), not on the model grid, so its luminosity does
    not depend on how far the grid reaches.

Dusty torus
    A clumpy torus holds dust from the sublimation temperature (~1500 K, Barvainis
    1987, ApJ 320, 537) down to a cold outer edge; its SED is broad, roughly flat
    in νL_ν from ~2 to ~30 µm (Nenkova et al. 2008, ApJ 685, 160). We approximate it
    by optically thin modified blackbodies ν^β B_ν(T) with equal luminosity per
    ln T between ``agn_torus_temperature_k`` (the coldest dust) and the hottest
    temperature, each normalised to unit luminosity on the model grid (so the
    torus carries exactly ``C L_AGN`` on it). This is a smooth approximation,
    not a radiative-transfer model: no 9.7 µm silicate feature.

The AGN light is *not* attenuated by the host galaxy's dust (it is added after the
host's attenuation and dust emission): the torus models the nucleus's own
obscuration, and host energy balance stays that of stars and nebulae.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from tengri.physics.dust_emission import modified_blackbody_lnu_per_unit_luminosity

__all__ = [
    "DISK_BREAKS_AA",
    "DISK_SLOPES",
    "accretion_disk_lnu_per_unit_luminosity",
    "torus_lnu_per_unit_luminosity",
]

C_AA_PER_S = 2.99792458e18

DISK_BREAKS_AA = (10.0, 100.0, 1000.0, 5.0e4)
"""Wavelengths [Å] where the disk's λL_λ power law changes slope; zero below the first."""

DISK_SLOPES = (1.2, 0.0, -0.5, -3.0)
"""d ln(λL_λ) / d ln λ on [10, 100), [100, 1000), [1000, 5e4) Å and beyond."""


def _disk_piece_amplitudes() -> tuple[np.ndarray, float]:
    """λL_λ at each break for a continuous law with λL_λ(10 Å) = 1, and its integral ∫ L_λ dλ."""
    amplitudes = [1.0]
    for (low, high), slope in zip(zip(DISK_BREAKS_AA[:-1], DISK_BREAKS_AA[1:]), DISK_SLOPES[:-1]):
        amplitudes.append(amplitudes[-1] * (high / low) ** slope)
    # ∫ L_λ dλ = ∫ λL_λ d ln λ, piece by piece; the last piece runs to infinity (slope < 0)
    total = 0.0
    uppers = (*DISK_BREAKS_AA[1:], np.inf)
    for amp, low, high, slope in zip(amplitudes, DISK_BREAKS_AA, uppers, DISK_SLOPES):
        if slope == 0.0:
            total += amp * np.log(high / low)
        else:
            total += amp * (((high / low) ** slope if np.isfinite(high) else 0.0) - 1.0) / slope
    return np.asarray(amplitudes), total


def accretion_disk_lnu_per_unit_luminosity(wavelength_aa: ArrayLike) -> Array:
    """Accretion-disk spectrum of unit bolometric luminosity, L_ν [1/Hz].

    Parameters
    ----------
    wavelength_aa : array, shape (n_wave,)
        Rest-frame wavelength [Å].

    Returns
    -------
    jax.Array, shape (n_wave,)
        L_ν / L_AGN [1/Hz]; ``∫ L_ν dν = 1`` over 10 Å … ∞ (analytically).
    """
    lam = jnp.asarray(wavelength_aa, dtype=float)
    amplitudes, total = _disk_piece_amplitudes()
    breaks = jnp.asarray(DISK_BREAKS_AA)
    piece = jnp.clip(jnp.searchsorted(breaks, lam, side="right") - 1, 0, len(DISK_BREAKS_AA) - 1)
    lam_l_lam = jnp.asarray(amplitudes)[piece] * (lam / breaks[piece]) ** jnp.asarray(DISK_SLOPES)[piece]
    lam_l_lam = jnp.where(lam >= DISK_BREAKS_AA[0], lam_l_lam, 0.0) / total
    return lam_l_lam * lam / C_AA_PER_S  # L_ν = λL_λ / ν


def torus_lnu_per_unit_luminosity(
    coldest_temperature_k: ArrayLike,
    hottest_temperature_k: float,
    beta: float,
    n_temperatures: int,
    wavelength_aa: ArrayLike,
    frequency_width_hz: ArrayLike,
) -> Array:
    """Dusty-torus spectrum of unit luminosity on the grid, L_ν [1/Hz].

    Mean of ``n_temperatures`` modified blackbodies ν^β B_ν(T), each of unit
    luminosity on the grid, at temperatures log-spaced from the coldest to the
    hottest (equal luminosity per ln T).

    Parameters
    ----------
    coldest_temperature_k : scalar
        Temperature of the coldest torus dust [K], > 0 and below the hottest.
    hottest_temperature_k : float
        Temperature of the hottest dust [K] (sublimation, ~1500 K).
    beta : float
        Emissivity index of the torus dust.
    n_temperatures : int
        Number of temperatures (≥ 2).
    wavelength_aa : array, shape (n_wave,)
        Rest-frame wavelength [Å].
    frequency_width_hz : array, shape (n_wave,)
        Quadrature weights Δν_i [Hz] (ν Δln λ), the same the caller integrates with.

    Returns
    -------
    jax.Array, shape (n_wave,)
        s_ν [1/Hz] with ``Σ_i s_ν,i Δν_i = 1``.
    """
    fractions = jnp.linspace(0.0, 1.0, n_temperatures)
    log_cold = jnp.log(jnp.asarray(coldest_temperature_k, dtype=float))
    temperatures = jnp.exp(log_cold + fractions * (np.log(hottest_temperature_k) - log_cold))
    shapes = [
        modified_blackbody_lnu_per_unit_luminosity(temperatures[i], beta, wavelength_aa, frequency_width_hz)
        for i in range(n_temperatures)
    ]
    return sum(shapes) / n_temperatures
