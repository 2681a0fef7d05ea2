"""Radio continuum of star formation: synchrotron and thermal free–free emission.

Synchrotron
    From the infrared–radio correlation (Helou et al. 1985; Bell 2003, ApJ 586,
    794, eq. 2) with the total-infrared (8–1000 µm) luminosity of dust heated by
    stars::

        q_IR = log10( L_IR / 3.75e12 Hz ) − log10( L_ν(1.4 GHz) ),

    q_IR = 2.64 (Bell 2003), and a power law L_ν ∝ ν^−α above and below 1.4 GHz
    (α ≈ 0.8, Condon 1992, ARA&A 30, 575). It is added longward of 100 µm only
    (where dust outshines it by orders of magnitude anyway), so that the power law
    does not run into the ultraviolet and X-ray.

Free–free
    Optically thin thermal bremsstrahlung of the H II regions, from their
    ionising-photon rate Q(H) (Murphy et al. 2011, ApJ 737, 67, eq. 10)::

        L_ν = Q(H) / 6.3e25 · (T_e / 10^4 K)^0.45 · (ν / GHz)^−0.1 · exp(−hν / k T_e)

    [erg/s/Hz, Q in 1/s]; the exponential is the high-frequency cut-off of the
    bremsstrahlung spectrum. Q(H) is counted on the model grid from the stellar
    L_ν shortward of 912 Å. The model adds this only longward of the Cloudy
    nebular continuum's red end (36 mm): shortward, ``nebular=True`` already holds
    the free–free emission.

Neither is absorbed (free–free self-absorption below ~1 GHz is ignored).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from tengri.data.ssp import wavelength_bin_edges_aa

__all__ = [
    "BELL03_Q_IR",
    "IR_RADIO_FREQUENCY_HZ",
    "total_infrared_weights_hz",
    "ionising_photon_weights",
    "synchrotron_lnu_1p4ghz_erg_s_hz",
    "synchrotron_lnu",
    "free_free_lnu_per_ionising_photon_rate",
]

C_AA_PER_S = 2.99792458e18
PLANCK_ERG_S = 6.62607015e-27
SECOND_RADIATION_CONSTANT_AA_K = 1.438776877e8  # h c / k_B [Å K]
LYMAN_LIMIT_AA = 912.0

BELL03_Q_IR = 2.64
IR_RADIO_FREQUENCY_HZ = 3.75e12
"""Normalising frequency of the q_IR definition (Helou et al. 1985) [Hz]."""
NU_1P4GHZ_HZ = 1.4e9
TOTAL_INFRARED_AA = (8.0e4, 1.0e7)
"""Wavelength range [Å] of the total-infrared luminosity L_IR (8–1000 µm)."""
SYNCHROTRON_MIN_WAVELENGTH_AA = 1.0e6


def total_infrared_weights_hz(wavelength_aa: ArrayLike, frequency_width_hz: ArrayLike) -> Array:
    """Quadrature weights [Hz] of L_IR = Σ L_ν,i w_i over 8–1000 µm (zero elsewhere)."""
    lam = jnp.asarray(wavelength_aa, dtype=float)
    inside = (lam >= TOTAL_INFRARED_AA[0]) & (lam <= TOTAL_INFRARED_AA[1])
    return jnp.where(inside, frequency_width_hz, 0.0)


def ionising_photon_weights(wavelength_aa: ArrayLike, dlnlam: ArrayLike) -> Array:
    """Weights [1/erg] such that Q(H) = Σ L_ν,i w_i [photons/s].

    Q = ∫_{λ<912 Å} L_ν / (hν) dν, and with Δν = ν Δln λ each node contributes
    L_ν Δln λ / h.
    """
    lam = jnp.asarray(wavelength_aa, dtype=float)
    return jnp.where(lam < LYMAN_LIMIT_AA, jnp.asarray(dlnlam, dtype=float) / PLANCK_ERG_S, 0.0)


def synchrotron_lnu_1p4ghz_erg_s_hz(l_ir_erg_s: ArrayLike, q_ir: ArrayLike) -> Array:
    """L_ν at 1.4 GHz [erg/s/Hz] from L_IR(8–1000 µm) [erg/s] and q_IR."""
    return l_ir_erg_s / IR_RADIO_FREQUENCY_HZ * 10.0 ** (-jnp.asarray(q_ir, dtype=float))


def synchrotron_lnu(lnu_1p4ghz: ArrayLike, spectral_index: ArrayLike, wavelength_aa: ArrayLike) -> Array:
    """Synchrotron L_ν = L_1.4GHz (ν / 1.4 GHz)^−α, zero shortward of 100 µm.

    Parameters
    ----------
    lnu_1p4ghz : scalar
        L_ν at 1.4 GHz [erg/s/Hz].
    spectral_index : scalar
        α (> 0 for a spectrum falling with frequency).
    wavelength_aa : array, shape (n_wave,)
        Rest-frame wavelength [Å].

    Returns
    -------
    jax.Array, shape (n_wave,) [erg/s/Hz]
    """
    lam = jnp.asarray(wavelength_aa, dtype=float)
    nu_ratio = C_AA_PER_S / lam / NU_1P4GHZ_HZ
    return jnp.where(lam >= SYNCHROTRON_MIN_WAVELENGTH_AA, lnu_1p4ghz * nu_ratio ** (-spectral_index), 0.0)


def free_free_lnu_per_ionising_photon_rate(
    electron_temperature_k: float, wavelength_aa: ArrayLike, min_wavelength_aa: float
) -> Array:
    """Free–free L_ν per unit Q(H) [erg/s/Hz per photon/s] (Murphy et al. 2011).

    Parameters
    ----------
    electron_temperature_k : float
        T_e [K].
    wavelength_aa : array, shape (n_wave,)
        Rest-frame wavelength [Å].
    min_wavelength_aa : float
        Zero shortward of this (where the nebular continuum already has it); the
        grid bin holding it (edges at geometric midpoints of the nodes) gets the
        share of its ln λ width that lies longward.

    Returns
    -------
    jax.Array, shape (n_wave,)
    """
    lam = jnp.asarray(wavelength_aa, dtype=float)
    log_edges = jnp.log(jnp.asarray(wavelength_bin_edges_aa(np.asarray(wavelength_aa, float))))
    share = jnp.clip((log_edges[1:] - np.log(min_wavelength_aa)) / (log_edges[1:] - log_edges[:-1]), 0.0, 1.0)
    nu_ghz = C_AA_PER_S / lam / 1e9
    shape = (
        (electron_temperature_k / 1e4) ** 0.45 * nu_ghz ** (-0.1)
        * jnp.exp(-SECOND_RADIATION_CONSTANT_AA_K / (lam * electron_temperature_k)) / 6.3e25
    )
    return share * shape
