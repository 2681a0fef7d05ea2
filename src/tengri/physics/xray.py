"""X-ray emission: X-ray binaries from M★ and SFR, and an AGN corona from α_ox.

X-ray binaries
    Lehmer et al. (2010, ApJ 724, 559, eq. 4 and table 4; Kroupa IMF, as the BC03
    grid here): the 2–10 keV luminosity of low-mass binaries scales with stellar
    mass and that of high-mass binaries with the star-formation rate,

        L_2–10keV = α M★ + β SFR,
        α = 9.05e28 erg/s/M☉,  β = 1.62e39 erg/s/(M☉/yr).

    (These are z ≈ 0 relations; Lehmer et al. 2016 find both grow with redshift.)

AGN corona
    The 2 keV luminosity follows from the disk's 2500 Å luminosity through the
    optical-to-X-ray index α_ox = 0.3838 log(L_ν(2 keV) / L_ν(2500 Å)), with
    α_ox = −0.140 log L_ν(2500 Å) + 2.705 (Just et al. 2007, ApJ 665, 1004, eq. 2;
    L_ν in erg/s/Hz).

Both are spread over a power law in photon number, N(E) ∝ E^−Γ, i.e.
L_ν ∝ ν^(1−Γ), from 0.5 keV (24.8 Å) to the blue end of the model grid, with no
absorption (neither photo-electric absorption in the galaxy nor in the Milky Way).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

__all__ = [
    "LEHMER10_ALPHA_ERG_S_PER_MSUN",
    "LEHMER10_BETA_ERG_S_PER_MSUN_YR",
    "KEV_AA",
    "xray_binary_luminosity_2_10kev_erg_s",
    "alpha_ox_just2007",
    "agn_lnu_2kev_from_2500aa",
    "power_law_lnu",
    "power_law_lnu_per_2_10kev_luminosity",
]

C_AA_PER_S = 2.99792458e18
KEV_AA = 12.398419843320026
"""h c [keV Å]: λ[Å] = KEV_AA / E[keV]."""

LEHMER10_ALPHA_ERG_S_PER_MSUN = 9.05e28
LEHMER10_BETA_ERG_S_PER_MSUN_YR = 1.62e39
SOFT_EDGE_KEV = 0.5
"""The power laws start at this energy (0.5 keV = 24.8 Å)."""

_ALPHA_OX_LOG_FREQUENCY_RATIO = 1.0 / 0.3838  # log10(ν_2keV / ν_2500Å)


def xray_binary_luminosity_2_10kev_erg_s(stellar_mass_msun: ArrayLike, sfr_msun_per_yr: ArrayLike) -> Array:
    """2–10 keV luminosity of X-ray binaries [erg/s] (Lehmer et al. 2010).

    Parameters
    ----------
    stellar_mass_msun : scalar or array
        Stellar mass M★ [M☉] (surviving).
    sfr_msun_per_yr : scalar or array
        Star-formation rate [M☉/yr].
    """
    return LEHMER10_ALPHA_ERG_S_PER_MSUN * stellar_mass_msun + LEHMER10_BETA_ERG_S_PER_MSUN_YR * sfr_msun_per_yr


def alpha_ox_just2007(lnu_2500aa_erg_s_hz: ArrayLike) -> Array:
    """Optical-to-X-ray index α_ox for a disk L_ν(2500 Å) [erg/s/Hz] (Just et al. 2007)."""
    return -0.140 * jnp.log10(lnu_2500aa_erg_s_hz) + 2.705


def agn_lnu_2kev_from_2500aa(lnu_2500aa_erg_s_hz: ArrayLike) -> Array:
    """AGN L_ν at 2 keV [erg/s/Hz] from L_ν at 2500 Å [erg/s/Hz] via α_ox (Just et al. 2007)."""
    alpha_ox = alpha_ox_just2007(lnu_2500aa_erg_s_hz)
    return lnu_2500aa_erg_s_hz * 10.0 ** (alpha_ox * _ALPHA_OX_LOG_FREQUENCY_RATIO)


def power_law_lnu(photon_index: float, reference_kev: float, wavelength_aa: ArrayLike) -> Array:
    """L_ν ∝ ν^(1−Γ) equal to 1 at ``reference_kev``, zero below 0.5 keV (λ > 24.8 Å).

    Parameters
    ----------
    photon_index : float
        Γ of N(E) ∝ E^−Γ.
    reference_kev : float
        Energy [keV] where the result is 1.
    wavelength_aa : array, shape (n_wave,)
        Rest-frame wavelength [Å].

    Returns
    -------
    jax.Array, shape (n_wave,), dimensionless
    """
    lam = jnp.asarray(wavelength_aa, dtype=float)
    energy_kev = KEV_AA / lam
    shape = (energy_kev / reference_kev) ** (1.0 - photon_index)
    return jnp.where(energy_kev >= SOFT_EDGE_KEV, shape, 0.0)


def power_law_lnu_per_2_10kev_luminosity(photon_index: float, wavelength_aa: ArrayLike) -> Array:
    """L_ν ∝ ν^(1−Γ) [1/Hz] whose integral over 2–10 keV is 1 (analytically).

    Zero below 0.5 keV; the grid's X-ray end bounds it above.
    """
    nu_2 = 2.0 * C_AA_PER_S / KEV_AA
    nu_10 = 10.0 * C_AA_PER_S / KEV_AA
    # ∫ (ν/ν_2)^(1−Γ) dν from ν_2 to ν_10
    if abs(photon_index - 2.0) < 1e-12:
        integral = nu_2 * jnp.log(nu_10 / nu_2)
    else:
        integral = nu_2 * ((nu_10 / nu_2) ** (2.0 - photon_index) - 1.0) / (2.0 - photon_index)
    return power_law_lnu(photon_index, 2.0, wavelength_aa) / integral
