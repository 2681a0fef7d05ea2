"""Gaussian broadening of a model spectrum onto observed pixels (pure ``jax.numpy``).

Velocity dispersion and the instrument's line-spread function (LSF) are Gaussians
in u = ln λ: a velocity σ_v gives σ_u = σ_v / c, a resolving power R (= λ/FWHM)
gives σ_u = 1 / (2√(2 ln 2) R), an LSF width σ_λ [Å] gives σ_u = σ_λ / λ. The two
add in quadrature.

The model is piecewise constant in its bins (edges at geometric midpoints, as in
:mod:`tengri.physics.bandpass`): a flux density per unit ln λ, ``g_i = λ f_λ = ν f_ν``.
Each bin is spread by a Gaussian of the σ at its own wavelength and the result is
integrated over each observed pixel, exactly (:func:`box_gaussian_pixel_weights`).
Every model bin therefore hands out all of its flux (flux conservation is exact up
to the Gaussian tails beyond the window, Φ(−6) ≈ 1e-9) even when pixels or model
bins are wider than σ. Each observed pixel reads a fixed number of model bins
(``n_window``, static), found per call by ``searchsorted`` so that the redshift can
be a free parameter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "FWHM_PER_SIGMA",
    "C_KMS",
    "WINDOW_SIGMAS",
    "log_bin_edges",
    "lsf_sigma_ln",
    "gaussian_antiderivative",
    "box_gaussian_pixel_weights",
    "window_size",
    "broaden_to_pixels",
    "gaussian_lines_to_pixels",
]

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
C_KMS = 2.99792458e5
#: half-width of the window each pixel reads, in units of the largest σ
WINDOW_SIGMAS = 6.0


def log_bin_edges(wavelength_aa) -> np.ndarray:
    """ln λ of the bin edges around increasing nodes, shape (n + 1,) (numpy).

    Geometric midpoints inside, half a step beyond each end.
    """
    u = np.log(np.asarray(wavelength_aa, dtype=np.float64))
    return np.concatenate([[u[0] - 0.5 * (u[1] - u[0])], 0.5 * (u[1:] + u[:-1]), [u[-1] + 0.5 * (u[-1] - u[-2])]])


def lsf_sigma_ln(wavelength_aa, resolution=None, sigma_aa=None) -> np.ndarray:
    """Instrumental Gaussian σ in ln λ at each pixel, shape (n_pix,) (numpy).

    Parameters
    ----------
    wavelength_aa : array, shape (n_pix,)
        Observed pixel centres [Å].
    resolution : float or array (n_pix,), optional
        Resolving power R = λ / FWHM.
    sigma_aa : float or array (n_pix,), optional
        LSF σ [Å] (not the FWHM). With neither, zeros (no instrumental broadening).
    """
    wave = np.asarray(wavelength_aa, dtype=np.float64)
    if resolution is not None:
        return np.broadcast_to(1.0 / (FWHM_PER_SIGMA * np.asarray(resolution, np.float64)), wave.shape).copy()
    if sigma_aa is not None:
        return np.broadcast_to(np.asarray(sigma_aa, np.float64), wave.shape) / wave
    return np.zeros_like(wave)


def gaussian_antiderivative(x: jax.Array) -> jax.Array:
    """ψ(x) = ∫_{-∞}^x Φ(t) dt = x Φ(x) + φ(x), Φ the standard normal CDF."""
    return x * jax.scipy.special.ndtr(x) + jnp.exp(-0.5 * x * x) / jnp.sqrt(2.0 * jnp.pi)


def box_gaussian_pixel_weights(lo, hi, pix_lo, pix_hi, sigma):
    """Share of a unit-height box [lo, hi] (in u) that lands in [pix_lo, pix_hi] after
    convolution with a Gaussian of width ``sigma``; integrates to ``hi − lo`` over all u.

    ``σ [ψ((b−lo)/σ) − ψ((a−lo)/σ) − ψ((b−hi)/σ) + ψ((a−hi)/σ)]`` with a, b the pixel edges.
    All arguments broadcast.
    """
    s = jnp.maximum(sigma, 1e-12)
    psi = gaussian_antiderivative
    return s * (psi((pix_hi - lo) / s) - psi((pix_lo - lo) / s) - psi((pix_hi - hi) / s) + psi((pix_lo - hi) / s))


def window_size(model_edges_ln, pixel_edges_ln, sigma_max_ln: float, shift_range_ln) -> int:
    """Number of model bins each pixel must read (static; numpy).

    Parameters
    ----------
    model_edges_ln : array, shape (n_wave + 1,)
        Rest-frame model bin edges in ln λ.
    pixel_edges_ln : array, shape (n_pix + 1,)
        Observed pixel edges in ln λ.
    sigma_max_ln : float
        Largest combined σ in ln λ.
    shift_range_ln : (float, float)
        Range of ln(1 + z).
    """
    half = WINDOW_SIGMAS * sigma_max_ln
    widest = 0
    for shift in np.linspace(shift_range_ln[0], shift_range_ln[1], 9):
        lo = np.searchsorted(model_edges_ln + shift, pixel_edges_ln[:-1] - half, side="right") - 1
        hi = np.searchsorted(model_edges_ln + shift, pixel_edges_ln[1:] + half, side="left")
        widest = max(widest, int(np.max(hi - lo)))
    return widest + 2


def broaden_to_pixels(density_ln, model_edges_ln, shift_ln, sigma_model_ln, pixel_edges_ln, n_window: int):
    """Flux of a broadened piecewise-constant spectrum in each pixel, shape (n_pix,).

    Parameters
    ----------
    density_ln : array, shape (n_wave,)
        Flux per unit ln λ in each model bin (e.g. ν f_ν) [flux units].
    model_edges_ln : array, shape (n_wave + 1,)
        Rest-frame ln λ edges of the model bins.
    shift_ln : scalar
        ln(1 + z): observed edges are ``model_edges_ln + shift_ln``.
    sigma_model_ln : array, shape (n_wave,)
        Gaussian σ in ln λ for each model bin.
    pixel_edges_ln : array, shape (n_pix + 1,)
        Observed pixel edges in ln λ.
    n_window : int
        Model bins read per pixel (:func:`window_size`), static.

    Returns
    -------
    array, shape (n_pix,)
        Flux in each pixel [flux units × ln λ], i.e. ``Σ_i g_i Δu_i × share``.
    """
    edges = model_edges_ln + shift_ln
    n_wave = density_ln.shape[0]
    half = WINDOW_SIGMAS * jnp.max(sigma_model_ln)
    start = jnp.clip(jnp.searchsorted(edges, pixel_edges_ln[:-1] - half, side="right") - 1, 0, n_wave - 1)
    index = start[:, None] + jnp.arange(n_window)[None, :]  # (n_pix, n_window)
    inside = index < n_wave
    index = jnp.minimum(index, n_wave - 1)
    shares = box_gaussian_pixel_weights(
        edges[index], edges[index + 1], pixel_edges_ln[:-1, None], pixel_edges_ln[1:, None], sigma_model_ln[index]
    )
    return jnp.sum(jnp.where(inside, density_ln[index] * shares, 0.0), axis=1)


def gaussian_lines_to_pixels(center_ln, sigma_ln, pixel_edges_ln):
    """Share of each Gaussian line in each pixel, shape (n_lines, n_pix).

    Parameters
    ----------
    center_ln : array, shape (n_lines,)
        Observed ln λ of each line centre.
    sigma_ln : array, shape (n_lines,)
        Gaussian σ of each line in ln λ.
    pixel_edges_ln : array, shape (n_pix + 1,)
    """
    s = jnp.maximum(sigma_ln, 1e-12)[:, None]
    cdf = jax.scipy.special.ndtr((pixel_edges_ln[None, :] - center_ln[:, None]) / s)
    return jnp.diff(cdf, axis=1)
