"""Reading galaxy catalogs (CSV, ECSV, FITS) into per-galaxy fitting inputs.

A catalog has an ``id`` column, one flux column per filter (named as the filter)
and an error column ``<filter>_err``, in the unit the configuration names, plus
any per-galaxy parameter columns (e.g. the redshift). NaN fluxes, values below
``missing_below`` and non-positive errors are masked out of the likelihood.

With a ``[spectroscopy]`` table in the configuration, its ``column`` holds each
galaxy's spectrum file, relative to the catalog's folder or absolute; an empty
cell means photometry only. Files are read when their galaxy is fitted
(:func:`tengri.spectrum_io.read_spectrum`), so a bad file fails that galaxy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tengri.errors import DataError
from tengri.model.config import CatalogSpec
from tengri.model.observation import to_cgs_fnu

__all__ = ["GalaxyInput", "read_catalog", "galaxies_from_table"]


@dataclass(frozen=True)
class GalaxyInput:
    """One galaxy ready for a Fitter: f_ν and errors in erg/s/cm²/Hz."""

    id: str
    flux_obs: np.ndarray  # (n_band,)
    noise: np.ndarray  # (n_band,)
    mask: np.ndarray  # (n_band,) bool, True = use
    fixed: dict  # per-galaxy fixed parameter values
    spectrum_file: str | None = None  # absolute path of the galaxy's spectrum, if any


def read_catalog(path, spec: CatalogSpec) -> list[GalaxyInput]:
    """Read a catalog file and convert every row (see module docstring).

    Raises
    ------
    DataError
        File missing or unreadable, or a required column absent (named).
    """
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise DataError(f"catalog file not found: {path}")
    try:
        table = Table.read(path, format="ascii.csv" if path.suffix.lower() == ".csv" else None)
    except Exception as err:  # astropy raises many types for unreadable files
        raise DataError(f"cannot read catalog {path}: {err}") from None
    return galaxies_from_table(table, spec, base_dir=path.resolve().parent)


def _spectrum_paths(table, column: str, base_dir) -> list[str | None]:
    """Absolute spectrum paths of a column (None for empty / masked cells)."""
    base = Path.cwd() if base_dir is None else Path(base_dir)
    cells = table[column]
    masked = np.ma.getmaskarray(cells)
    out = []
    for i, value in enumerate(np.asarray(cells, dtype=object)):
        text = "" if value is None or masked[i] else str(value).strip()
        if text.lower() in ("", "nan", "--"):
            out.append(None)
        else:
            out.append(str(base / Path(text).expanduser()))
    return out


def galaxies_from_table(table, spec: CatalogSpec, base_dir=None) -> list[GalaxyInput]:
    """Convert an astropy Table (or dict of columns) to GalaxyInput rows.

    ``base_dir`` is the folder relative spectrum paths start from (default: the
    working directory).
    """
    names = set(table.colnames) if hasattr(table, "colnames") else set(table)
    required = ["id"]
    for f in spec.filters:
        required += [f, f"{f}_err"]
    required += list(spec.columns.values())
    if spec.spectroscopy is not None:
        required.append(spec.spectroscopy.column)
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"catalog is missing columns {missing}")
    flux = np.column_stack([np.asarray(table[f], float) for f in spec.filters])
    err = np.column_stack([np.asarray(table[f"{f}_err"], float) for f in spec.filters])
    missing_mask = ~np.isfinite(flux) | ~np.isfinite(err) | (err <= 0)
    if spec.missing_below is not None:
        missing_mask |= (flux < spec.missing_below) | (err < spec.missing_below)
    flux_cgs = to_cgs_fnu(np.where(missing_mask, 0.0, flux), spec.flux_unit)
    err_cgs = to_cgs_fnu(np.where(missing_mask, 1.0, err), spec.flux_unit)
    ids = [str(v) for v in np.asarray(table["id"])]
    if len(set(ids)) != len(ids):
        raise DataError("catalog column 'id' has duplicate values")
    spectra = ([None] * len(ids) if spec.spectroscopy is None
               else _spectrum_paths(table, spec.spectroscopy.column, base_dir))
    out = []
    for i, gid in enumerate(ids):
        fixed = {p: float(np.asarray(table[c])[i]) for p, c in spec.columns.items()}
        out.append(GalaxyInput(gid, flux_cgs[i], err_cgs[i], ~missing_mask[i], fixed, spectra[i]))
    return out
