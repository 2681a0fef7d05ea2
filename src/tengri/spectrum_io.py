"""Reading one galaxy's spectrum file (FITS, CSV, ECSV) for ``tengri fit``.

A spectrum file has three columns: the observed wavelength, the flux density and
its 1σ error. Column names are matched case-insensitively against the aliases
below (the first alias present wins); an inverse-variance column (``ivar``) is
used when there is no error column, and SDSS's ``loglam`` (log10 λ/Å) when there
is no wavelength column. A FITS file is read from its first binary table holding
the columns, either one pixel per row or one row of vectors (the ESO Phase-3
"spectral container" layout of e.g. VANDELS: ``WAVE``, ``FLUX``, ``ERR``).

Units are the caller's (the ``[spectroscopy]`` table of the configuration):
``flux_unit`` is ``"flam"`` (f_λ, erg/s/cm²/Å) or an f_ν unit of
:data:`tengri.model.observation.FLUX_UNITS`, times ``flux_scale`` (e.g. 1e-17);
``wavelength_unit`` one of :data:`WAVELENGTH_UNITS`. When a column declares its
own unit (FITS ``TUNIT``, ECSV) and it disagrees with the configured one, the
file is refused rather than fitted in the wrong unit. Everything is returned as
f_λ [erg/s/cm²/Å] on wavelengths in Å, the unit of ``Spectroscopy(flux_unit="flam")``.

Pixels with a NaN/inf flux or error, an error ≤ 0 (or ivar ≤ 0), are masked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tengri.errors import DataError
from tengri.model.observation import FLUX_UNITS, SPECTRAL_FLUX_UNITS, to_cgs_fnu
from tengri.model.spectrum import C_AA_S

__all__ = ["read_spectrum", "WAVELENGTH_UNITS", "SPECTRUM_SUFFIXES", "flux_to_flam",
           "WAVELENGTH_ALIASES", "FLUX_ALIASES", "ERROR_ALIASES", "IVAR_ALIASES"]

#: Å per unit of each accepted wavelength unit.
WAVELENGTH_UNITS: dict[str, float] = {"aa": 1.0, "nm": 10.0, "um": 1e4}
SPECTRUM_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz", ".csv", ".ecsv")
WAVELENGTH_ALIASES = ("wavelength", "wave", "lambda", "lam", "wl", "wavelength_aa")
FLUX_ALIASES = ("flux", "fl", "flam", "f_lambda", "fnu", "f_nu", "spectrum", "spec")
ERROR_ALIASES = ("error", "err", "flux_err", "flux_error", "fluxerr", "noise", "sigma", "unc",
                 "uncertainty")
IVAR_ALIASES = ("ivar", "inverse_variance", "invvar")
_LOGLAM = "loglam"
_ASTROPY_UNITS = {"flam": "erg / (s cm2 Angstrom)", "aa": "Angstrom", "nm": "nm", "um": "um",
                  **{u: f"{FLUX_UNITS[u]!r} erg / (s cm2 Hz)" for u in FLUX_UNITS}}


def flux_to_flam(values, wavelength_aa, flux_unit: str) -> np.ndarray:
    """Flux densities in ``flux_unit`` → f_λ [erg/s/cm²/Å] at ``wavelength_aa`` [Å].

    ``"flam"`` is returned as is; f_ν units (``FLUX_UNITS``) use f_λ = f_ν c / λ².
    """
    values = np.asarray(values, dtype=np.float64)
    if flux_unit == "flam":
        return values
    if flux_unit not in FLUX_UNITS:
        raise DataError(f"flux_unit {flux_unit!r} unknown; valid: {', '.join(SPECTRAL_FLUX_UNITS)}")
    return to_cgs_fnu(values, flux_unit) * C_AA_S / np.asarray(wavelength_aa, dtype=np.float64) ** 2


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SPECTRUM_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _read_table(path: Path):
    """The astropy Table of the file (FITS: the first binary table with a flux column)."""
    from astropy.table import Table

    suffix = _suffix(path)
    if suffix not in SPECTRUM_SUFFIXES:
        raise DataError(f"spectrum file {path}: unknown format {suffix!r}; valid: "
                        f"{', '.join(SPECTRUM_SUFFIXES)}")
    try:
        if suffix == ".csv":
            return Table.read(path, format="ascii.csv")
        if suffix == ".ecsv":
            return Table.read(path, format="ascii.ecsv")
        from astropy.io import fits

        with fits.open(path) as hdul:
            for hdu in hdul:
                if isinstance(hdu, fits.BinTableHDU) and _find(hdu.columns.names, FLUX_ALIASES):
                    return Table.read(hdu)
    except DataError:
        raise
    except Exception as err:  # astropy raises many types for unreadable files
        raise DataError(f"cannot read spectrum file {path}: {type(err).__name__}: {err}") from None
    raise DataError(f"spectrum file {path}: no binary table with a flux column "
                    f"(one of {', '.join(FLUX_ALIASES)}, any case)")


def _find(names, aliases) -> str | None:
    lower = {n.lower(): n for n in names}
    return next((lower[a] for a in aliases if a in lower), None)


def _column(table, name: str) -> np.ndarray:
    """A column as a 1-d float array: one pixel per row, or a single row of vectors."""
    values = np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan)
    if values.ndim == 2 and values.shape[0] == 1:
        values = values[0]
    return np.ravel(values) if values.ndim == 1 else values


def _check_declared_unit(path: Path, table, column: str, expected: str, scale: float) -> None:
    """DataError when the column declares a unit that is not ``scale`` × ``expected``."""
    import astropy.units as u

    declared = getattr(table[column], "unit", None)
    if declared is None or isinstance(declared, u.UnrecognizedUnit):
        return
    want = scale * u.Unit(_ASTROPY_UNITS[expected])
    try:
        factor = float(declared.to(want, equivalencies=u.spectral()))
    except u.UnitConversionError:
        factor = np.nan  # e.g. f_ν declared, f_λ configured
    if not np.isclose(factor, 1.0, rtol=1e-6):
        raise DataError(f"spectrum file {path}: column {column!r} declares unit {declared}, but the "
                        f"configuration says {expected!r}" + (f" × {scale:g}" if scale != 1.0 else "")
                        + " (set [spectroscopy] flux_unit / wavelength_unit / flux_scale to match)")


def read_spectrum(path, flux_unit: str = "flam", wavelength_unit: str = "aa", flux_scale: float = 1.0):
    """Read a spectrum file (see the module docstring).

    Parameters
    ----------
    path : path
        FITS, CSV or ECSV file.
    flux_unit : str
        ``"flam"`` (erg/s/cm²/Å, default) or an f_ν unit (``"cgs"`` = erg/s/cm²/Hz,
        ``"uJy"``, …) of the flux and error columns.
    wavelength_unit : {"aa", "nm", "um"}
        Unit of the wavelength column (ignored for ``loglam``, always log10 Å).
    flux_scale : float
        The columns hold flux / ``flux_scale`` (e.g. 1e-17 for SDSS).

    Returns
    -------
    wavelength_aa : ndarray (n_pix,)
        Observed wavelengths [Å], strictly increasing.
    flux, error : ndarray (n_pix,)
        f_λ and its 1σ error [erg/s/cm²/Å]; masked pixels hold 0 and 1.
    mask : ndarray of bool (n_pix,)
        True = usable pixel.

    Raises
    ------
    DataError
        Naming the file and the column or argument: file missing or unreadable,
        unknown unit or format, a missing column, columns of different lengths,
        wavelengths not finite and strictly increasing, a declared column unit
        that disagrees, or no usable pixel.
    """
    if flux_unit not in SPECTRAL_FLUX_UNITS:
        raise DataError(f"spectrum file {path}: flux_unit {flux_unit!r} unknown; valid: "
                        f"{', '.join(SPECTRAL_FLUX_UNITS)}")
    if wavelength_unit not in WAVELENGTH_UNITS:
        raise DataError(f"spectrum file {path}: wavelength_unit {wavelength_unit!r} unknown; valid: "
                        f"{', '.join(WAVELENGTH_UNITS)}")
    if not (np.isfinite(flux_scale) and flux_scale > 0):
        raise DataError(f"spectrum file {path}: flux_scale must be finite and > 0, got {flux_scale!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"spectrum file not found: {path}")
    table = _read_table(path)
    names = table.colnames
    wave_col = _find(names, WAVELENGTH_ALIASES) or _find(names, (_LOGLAM,))
    flux_col = _find(names, FLUX_ALIASES)
    err_col = _find(names, ERROR_ALIASES)
    ivar_col = None if err_col else _find(names, IVAR_ALIASES)
    for role, col, aliases in (("wavelength", wave_col, WAVELENGTH_ALIASES + (_LOGLAM,)),
                               ("flux", flux_col, FLUX_ALIASES),
                               ("error", err_col or ivar_col, ERROR_ALIASES + IVAR_ALIASES)):
        if col is None:
            raise DataError(f"spectrum file {path}: no {role} column (one of {', '.join(aliases)}, any "
                            f"case); columns are {names}")
    columns = {c: _column(table, c) for c in (wave_col, flux_col, err_col or ivar_col)}
    sizes = {c: v.shape for c, v in columns.items()}
    if any(len(s) != 1 for s in sizes.values()) or len({s[0] for s in sizes.values()}) != 1:
        raise DataError(f"spectrum file {path}: columns must be 1-d and of one length, got {sizes}")
    if wave_col.lower() == _LOGLAM:
        wave = 10.0 ** columns[wave_col]
    else:
        _check_declared_unit(path, table, wave_col, wavelength_unit, 1.0)
        wave = columns[wave_col] * WAVELENGTH_UNITS[wavelength_unit]
    _check_declared_unit(path, table, flux_col, flux_unit, flux_scale)
    if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
        raise DataError(f"spectrum file {path}: column {wave_col!r} must be finite and > 0")
    if wave.size < 2 or np.any(np.diff(wave) <= 0):
        bad = int(np.flatnonzero(np.diff(wave) <= 0)[0]) if wave.size >= 2 else 0
        raise DataError(f"spectrum file {path}: column {wave_col!r} must be strictly increasing with at "
                        f"least 2 pixels; it is not at row {bad}")
    flux = columns[flux_col]
    if err_col is not None:
        error = columns[err_col]
    else:
        ivar = columns[ivar_col]
        with np.errstate(divide="ignore", invalid="ignore"):
            error = np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.nan)
    mask = np.isfinite(flux) & np.isfinite(error) & (error > 0)
    if not mask.any():
        raise DataError(f"spectrum file {path}: no usable pixel (every {flux_col!r} or "
                        f"{err_col or ivar_col!r} value is NaN, inf or an error ≤ 0)")
    flux = flux_to_flam(np.where(mask, flux, 0.0) * flux_scale, wave, flux_unit)
    error = np.where(mask, flux_to_flam(np.where(mask, error, 1.0) * flux_scale, wave, flux_unit), 1.0)
    return wave, flux, error, mask
