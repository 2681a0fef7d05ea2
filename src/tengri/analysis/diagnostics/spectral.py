"""Emission-line diagnostics: equivalent widths, Balmer decrement, BPT ratios.

Pure numpy functions on spectra or line fluxes; they run on fit results, not inside
the likelihood.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

from tengri.errors import DataError

__all__ = [
    "equivalent_width",
    "find_line",
    "balmer_decrement",
    "av_from_balmer_decrement",
    "bpt_nii_ratios",
    "LINE_WAVELENGTHS_AA",
    "CASE_B_HALPHA_HBETA",
    "K_HALPHA_CALZETTI",
    "K_HBETA_CALZETTI",
    "RV_CALZETTI",
]

#: Rest-frame air wavelengths [Å] of the lines used by the diagnostics below.
LINE_WAVELENGTHS_AA = {
    "halpha": 6562.80,
    "hbeta": 4861.33,
    "nii_6584": 6583.45,
    "oiii_5007": 5006.84,
}

# Vacuum wavelengths lie ≤ 1.9 Å above air ones here; neighbours ([NII]6548/6584
# around Hα) are ≥ 14 Å away, so 2.5 Å identifies a line in either convention.
_MATCH_TOLERANCE_AA = 2.5

# Accepted names once lower-cased with spaces, "_", "-", "[", "]", "(", ")" removed;
# the "…a" forms are the Cloudy labels shipped with bagpipes ("H  1  6562.81A").
_LINE_ALIASES = {
    "halpha": {"halpha", "ha", "hα", "h16563", "halpha6563", "ha6563", "h16562.81a"},
    "hbeta": {"hbeta", "hb", "hβ", "h14861", "hbeta4861", "hb4861", "h14861.33a"},
    "nii_6584": {"nii6584", "nii6583", "n26584", "n26583", "n26583.45a"},
    "oiii_5007": {"oiii5007", "o35007", "o35006.84a"},
}

#: Case B Hα/Hβ at T = 10⁴ K, n_e = 10² cm⁻³ (Osterbrock 1989).
CASE_B_HALPHA_HBETA = 2.86
#: Calzetti et al. (2000) attenuation curve k(λ) at Hα and Hβ, and R_V = k(V).
K_HALPHA_CALZETTI = 2.53
K_HBETA_CALZETTI = 3.61
RV_CALZETTI = 4.05


def _normalise_name(name: str) -> str:
    return "".join(c for c in name.lower() if c not in " _-[]()")


def find_line(
    line: str, names: Sequence[str] | None, wavelengths_aa: ArrayLike | None = None
) -> int:
    """Index of a diagnostic line among the fitted emission lines.

    Parameters
    ----------
    line : {"halpha", "hbeta", "nii_6584", "oiii_5007"}
        The line wanted.
    names : sequence of str or None
        Names of the fitted lines.
    wavelengths_aa : array_like, shape (n_lines,), optional
        Their rest wavelengths [Å]. When given, the line is matched by wavelength
        (within 2.5 Å, air or vacuum); otherwise by name (e.g. "Halpha", "Ha",
        "H 1 6562.81A", "[NII]6584", "[OIII]5007").

    Raises
    ------
    ValueError
        If ``line`` is not one of the diagnostic lines, or it is not among the fitted
        lines (the message lists them).
    """
    if line not in LINE_WAVELENGTHS_AA:
        raise ValueError(f"line must be one of {sorted(LINE_WAVELENGTHS_AA)}, got {line!r}")
    if wavelengths_aa is not None:
        offsets = np.abs(np.asarray(wavelengths_aa, dtype=np.float64) - LINE_WAVELENGTHS_AA[line])
        if offsets.size and offsets.min() <= _MATCH_TOLERANCE_AA:
            return int(np.argmin(offsets))
    elif names is not None:
        for i, name in enumerate(names):
            if _normalise_name(name) in _LINE_ALIASES[line]:
                return i
    raise ValueError(
        f"line {line!r} ({LINE_WAVELENGTHS_AA[line]} Å) is not among the fitted emission "
        f"lines: names={list(names) if names is not None else None}, "
        f"wavelengths_aa={None if wavelengths_aa is None else np.asarray(wavelengths_aa).tolist()}"
    )


def _positive_ratio(numerator: ArrayLike, denominator: ArrayLike) -> np.ndarray:
    """numerator / denominator, NaN where either is non-positive (a non-detection)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    valid = (num > 0) & (den > 0)
    return np.where(valid, num / np.where(valid, den, 1.0), np.nan)


def balmer_decrement(halpha: ArrayLike, hbeta: ArrayLike) -> np.ndarray:
    """Hα/Hβ flux ratio (dimensionless); NaN where a flux is ≤ 0.

    Parameters
    ----------
    halpha, hbeta : array_like, same shape
        Line fluxes in the same units (e.g. erg/s/cm²).
    """
    return _positive_ratio(halpha, hbeta)


def av_from_balmer_decrement(ratio: ArrayLike) -> np.ndarray:
    """V-band attenuation A_V [mag] from the observed Hα/Hβ ratio.

    With the Calzetti et al. (2000) curve and Case B recombination,

    .. math::

        E(B-V) = \\frac{2.5}{k(H\\beta) - k(H\\alpha)}
                 \\log_{10}\\frac{(H\\alpha/H\\beta)_{obs}}{2.86},
        \\qquad A_V = R_V\\, E(B-V),

    with k(Hα) = 2.53, k(Hβ) = 3.61 and R_V = 4.05. This follows from
    ``ratio_obs = 2.86 · 10^{0.4 E(B−V) (k(Hβ) − k(Hα))}``. Ratios below 2.86 give
    negative A_V, returned as is.

    Parameters
    ----------
    ratio : array_like
        Observed Hα/Hβ; NaN or non-positive values give NaN.
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    safe = np.where(ratio > 0, ratio, np.nan)
    ebv = 2.5 / (K_HBETA_CALZETTI - K_HALPHA_CALZETTI) * np.log10(safe / CASE_B_HALPHA_HBETA)
    return RV_CALZETTI * ebv


def bpt_nii_ratios(
    nii_6584: ArrayLike, halpha: ArrayLike, oiii_5007: ArrayLike, hbeta: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the [NII]-BPT diagram (Baldwin, Phillips & Terlevich 1981).

    Returns
    -------
    log_nii_ha, log_oiii_hb : numpy.ndarray
        log10([NII]6584/Hα) and log10([OIII]5007/Hβ), NaN where a flux is ≤ 0.
    """
    return (
        np.log10(_positive_ratio(nii_6584, halpha)),
        np.log10(_positive_ratio(oiii_5007, hbeta)),
    )


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of Å, got {value}")
    return value


def equivalent_width(
    wavelength_aa: ArrayLike,
    flux: ArrayLike,
    line_center_aa: float,
    window_aa: float = 20.0,
    continuum_width_aa: float = 50.0,
) -> float | np.ndarray:
    """Rest-frame equivalent width of a line against a sideband continuum.

    The continuum ``C(λ)`` is a straight line fitted by least squares to the flux in
    the two sidebands ``[λ0 − w − c, λ0 − w]`` and ``[λ0 + w, λ0 + w + c]``
    (``w = window_aa``, ``c = continuum_width_aa``); then

    .. math::

        W = \\int_{\\lambda_0 - w}^{\\lambda_0 + w}
            \\frac{F(\\lambda) - C(\\lambda)}{C(\\lambda)}\\, d\\lambda

    by the trapezoid rule on the grid points inside the window plus the two window
    edges (flux linearly interpolated there).

    Sign convention: **positive for emission**, negative for absorption — the opposite
    of the stellar-absorption convention ``∫(1 − F/C) dλ`` (e.g. Lick indices).

    Parameters
    ----------
    wavelength_aa : array_like, shape (n_wave,)
        Strictly increasing wavelengths [Å].
    flux : array_like, shape (..., n_wave)
        Flux density per unit wavelength (F_λ or L_λ, any units). F_ν gives nearly the
        same width (the ratio F/C is frame-invariant; only the straight-line
        continuum differs slightly). Leading axes are independent spectra.
    line_center_aa : float
        Line centre λ0 [Å], in the same frame as ``wavelength_aa``.
    window_aa : float
        Half-width ``w`` of the integration window [Å].
    continuum_width_aa : float
        Width ``c`` of each sideband [Å].

    Returns
    -------
    float or numpy.ndarray of shape flux.shape[:-1]
        Equivalent width [Å]; NaN for a spectrum whose fitted continuum is ≤ 0
        anywhere in the window.

    Raises
    ------
    ValueError
        Bad widths or centre, sidebands outside the wavelength grid, or fewer than
        one grid point in a sideband.
    DataError
        Non-increasing or non-finite wavelengths, non-finite flux, or a flux whose
        last axis does not match the wavelengths.
    """
    wave = np.asarray(wavelength_aa, dtype=np.float64)
    spectra = np.asarray(flux, dtype=np.float64)
    window = _check_positive("window_aa", window_aa)
    side_width = _check_positive("continuum_width_aa", continuum_width_aa)
    center = float(line_center_aa)
    if wave.ndim != 1 or wave.size < 4 or not np.all(np.isfinite(wave)) or np.any(np.diff(wave) <= 0):
        raise DataError("wavelength_aa must be a finite, strictly increasing 1-D array of ≥ 4 values")
    if spectra.ndim < 1 or spectra.shape[-1] != wave.size:
        raise DataError(
            f"flux must have shape (..., {wave.size}) to match wavelength_aa, got {spectra.shape}"
        )
    if not np.all(np.isfinite(spectra)):
        raise DataError("flux holds NaN or infinite values")
    outer_lo, outer_hi = center - window - side_width, center + window + side_width
    if not (np.isfinite(center) and outer_lo >= wave[0] and outer_hi <= wave[-1]):
        raise ValueError(
            f"line_center_aa={center} with window_aa={window} and continuum_width_aa="
            f"{side_width} needs wavelengths [{outer_lo}, {outer_hi}] Å; the grid covers "
            f"[{wave[0]}, {wave[-1]}] Å"
        )
    blue = (wave >= outer_lo) & (wave <= center - window)
    red = (wave >= center + window) & (wave <= outer_hi)
    if not blue.any() or not red.any():
        raise ValueError(
            f"each sideband needs at least one wavelength point: blue has {blue.sum()}, "
            f"red has {red.sum()}; widen continuum_width_aa (now {side_width} Å)"
        )

    batch = spectra.reshape(-1, wave.size)
    side = blue | red
    design = np.stack([np.ones(side.sum()), wave[side] - center], axis=1)
    coefficients = np.linalg.lstsq(design, batch[:, side].T, rcond=None)[0]  # (2, n_batch)

    inside = (wave > center - window) & (wave < center + window)
    edges = np.array([center - window, center + window])
    grid = np.concatenate([edges[:1], wave[inside], edges[1:]])
    right = np.searchsorted(wave, edges)  # wave[right - 1] < edge <= wave[right]
    frac = (edges - wave[right - 1]) / (wave[right] - wave[right - 1])
    edge_flux = batch[:, right - 1] * (1 - frac) + batch[:, right] * frac
    flux_grid = np.concatenate([edge_flux[:, :1], batch[:, inside], edge_flux[:, 1:]], axis=1)
    continuum = coefficients[0][:, None] + coefficients[1][:, None] * (grid - center)
    valid = np.all(continuum > 0, axis=1)
    ratio = (flux_grid - continuum) / np.where(continuum > 0, continuum, 1.0)
    width = np.where(valid, np.trapezoid(ratio, grid, axis=1), np.nan)
    if spectra.ndim == 1:
        return float(width[0])
    return width.reshape(spectra.shape[:-1])
