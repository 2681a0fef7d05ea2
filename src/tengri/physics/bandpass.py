"""Redshifting a rest-frame SED and integrating it through filter curves.

The observed flux density of a source at redshift z is

.. math::  f_\\nu(\\lambda_{obs}) = (1+z)\\, L_\\nu(\\lambda_{obs}/(1+z)) / (4\\pi d_L^2)

and the band flux of a photon-counting detector, in the AB convention, is

.. math::  \\bar f_\\nu = \\int f_\\nu\\, T(\\lambda)\\, d\\lambda/\\lambda \\big/ \\int T(\\lambda)\\, d\\lambda/\\lambda .

Both integrals are done on the model's own rest-frame grid (the filter curve is
interpolated onto the redshifted grid), so emission lines deposited into single
grid bins are integrated exactly, and a flat f_ν gives back its value exactly.
Everything that depends only on the redshift is folded into one matrix
``W (n_band, n_wave)``: band fluxes are then ``W @ L_ν``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["pack_filters", "log_wavelength_widths", "band_matrix", "band_matrix_numpy", "band_matrices_numpy",
           "MPC_CM"]

MPC_CM = 3.0856775814913673e24


def pack_filters(filters) -> tuple[np.ndarray, np.ndarray]:
    """Stack filter curves into padded arrays for vectorised interpolation.

    Parameters
    ----------
    filters : sequence of objects with ``wavelength_aa`` and ``transmission``

    Returns
    -------
    wavelength_aa, transmission : numpy.ndarray, shape (n_band, n_max)
        Each row padded by repeating its last wavelength with zero transmission, so
        ``jnp.interp`` (which clamps) returns 0 outside every curve.
    """
    n_max = max(len(f.wavelength_aa) for f in filters) + 2
    wave = np.zeros((len(filters), n_max))
    trans = np.zeros((len(filters), n_max))
    for i, f in enumerate(filters):
        w = np.asarray(f.wavelength_aa, float)
        t = np.asarray(f.transmission, float)
        n = len(w)
        # zero-transmission guards just outside each end so interpolation falls to 0
        wave[i, 0] = w[0] * (1 - 1e-6)
        wave[i, 1 : n + 1] = w
        wave[i, n + 1 :] = w[-1] * (1 + 1e-6)
        trans[i, 1 : n + 1] = t
    return wave, trans


def log_wavelength_widths(wavelength_aa: np.ndarray) -> np.ndarray:
    """Width of each grid bin in ln λ (midpoint edges), shape (n_wave,)."""
    lnw = np.log(np.asarray(wavelength_aa, float))
    edges = np.concatenate([[lnw[0] - 0.5 * (lnw[1] - lnw[0])], 0.5 * (lnw[1:] + lnw[:-1]),
                            [lnw[-1] + 0.5 * (lnw[-1] - lnw[-2])]])
    return np.diff(edges)


def band_matrix(redshift, luminosity_distance_cm, wavelength_rest_aa, dlnlam,
                filter_wave_aa, filter_trans, igm_transmission):
    """Matrix taking rest-frame L_ν to band-averaged observed f_ν.

    Parameters
    ----------
    redshift : scalar
    luminosity_distance_cm : scalar
    wavelength_rest_aa : array, shape (n_wave,)
        Model rest-frame grid [Å].
    dlnlam : array, shape (n_wave,)
        Bin widths in ln λ (:func:`log_wavelength_widths`); redshift-invariant.
    filter_wave_aa, filter_trans : array, shape (n_band, n_max)
        From :func:`pack_filters` [Å, dimensionless].
    igm_transmission : array, shape (n_wave,)
        IGM transmission at the observed wavelengths ``(1+z)·λ_rest``.

    Returns
    -------
    array, shape (n_band, n_wave)
        ``W`` such that band f_ν [erg/s/cm²/Hz] = ``W @ L_ν`` [erg/s/Hz].
    """
    wave_obs = wavelength_rest_aa * (1.0 + redshift)
    trans = jax.vmap(jnp.interp, in_axes=(None, 0, 0))(wave_obs, filter_wave_aa, filter_trans)
    return _normalised(trans, redshift, luminosity_distance_cm, dlnlam, igm_transmission, jnp)


def band_matrix_numpy(redshift: float, luminosity_distance_cm: float, wavelength_rest_aa, dlnlam,
                      filter_wave_aa, filter_trans, igm_transmission) -> np.ndarray:
    """:func:`band_matrix` in numpy, at one known redshift (no tracing, no device transfer).

    The same arguments as numpy arrays and floats; returns numpy.ndarray, shape (n_band, n_wave).
    Per-galaxy preparation calls it (``SEDModel.prepare``): on the host it is several
    times faster than the jitted interpolation.
    """
    wave_obs = np.asarray(wavelength_rest_aa, dtype=np.float64) * (1.0 + redshift)
    trans = np.stack([np.interp(wave_obs, wave, curve) for wave, curve in zip(filter_wave_aa, filter_trans)])
    return _normalised(trans, redshift, luminosity_distance_cm, dlnlam, igm_transmission, np)


def band_matrices_numpy(redshift: np.ndarray, luminosity_distance_cm: np.ndarray, wavelength_rest_aa, dlnlam,
                        filter_wave_aa, filter_trans, igm_transmission: np.ndarray) -> np.ndarray:
    """:func:`band_matrix_numpy` of many galaxies at once, shape (n_galaxy, n_band, n_wave).

    ``redshift`` and ``luminosity_distance_cm`` [cm] have shape (n_galaxy,),
    ``igm_transmission`` (n_galaxy, n_wave); the other arguments as for
    :func:`band_matrix_numpy`. Each galaxy's matrix is the one
    :func:`band_matrix_numpy` gives (element by element the same arithmetic). The
    interpolation is one call per filter for a block of galaxies; blocks of
    :data:`GALAXY_BLOCK` keep the temporaries in the cache (over a whole catalog
    chunk at once, the normalisation alone was 5x slower than galaxy by galaxy).
    """
    redshift = np.asarray(redshift, dtype=np.float64)
    distance = np.asarray(luminosity_distance_cm, dtype=np.float64)
    igm_transmission = np.asarray(igm_transmission, dtype=np.float64)
    rest = np.asarray(wavelength_rest_aa, dtype=np.float64)
    out = np.empty((redshift.size, len(filter_wave_aa), rest.size))
    for first in range(0, redshift.size, GALAXY_BLOCK):
        block = slice(first, first + GALAXY_BLOCK)
        wave_obs = rest[None, :] * (1.0 + redshift[block, None])
        weights = out[block]
        for b, (wave, curve) in enumerate(zip(filter_wave_aa, filter_trans)):
            weights[:, b] = np.interp(wave_obs, wave, curve)
        # _normalised's arithmetic, in place
        weights *= dlnlam
        norm = np.sum(weights, axis=-1, keepdims=True)
        scale = (1.0 + redshift[block]) / (4.0 * np.pi * distance[block] ** 2)
        weights /= np.where(norm > 0, norm, 1.0)
        weights *= igm_transmission[block, None, :]
        weights *= scale[:, None, None]
    return out


GALAXY_BLOCK = 8
"""Galaxies per block of :func:`band_matrices_numpy` (~8 MB of temporaries for 41 bands × 3266 points)."""


def _normalised(trans, redshift, luminosity_distance_cm, dlnlam, igm_transmission, xp):
    """Filter transmission on the grid (n_band, n_wave) → band matrix (``xp``: numpy or jax.numpy)."""
    weights = trans * dlnlam
    norm = xp.sum(weights, axis=1, keepdims=True)
    scale = (1.0 + redshift) / (4.0 * xp.pi * luminosity_distance_cm**2)
    return weights / xp.where(norm > 0, norm, 1.0) * igm_transmission * scale
