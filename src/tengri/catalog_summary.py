"""The catalog summary table: one row per galaxy, written as CSV, FITS or HDF5.

Columns: ``id``, ``method``, ``wall_time_s``, the 16th/50th/84th percentiles of
every free parameter and of ``log_mstar`` (log10 surviving stellar mass [M☉]),
``log_sfr100`` (log10 SFR over the last 100 Myr [M☉/yr]) and ``log_ssfr``
(log10 [1/yr]), then ``error`` ("" when the fit worked, else
``"<ExceptionType>: <message>"``; the numbers of such a row are NaN).

Every file is written atomically (temporary file beside it + ``os.replace``), so
a reader never sees half a table.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from tengri.errors import ConfigError

__all__ = ["DERIVED_COLUMNS", "FORMATS", "summary_columns", "summarise", "batch_derived", "error_row",
           "write_summary", "read_summary_csv", "atomic_path"]

DERIVED_COLUMNS = ("log_mstar", "log_sfr100", "log_ssfr")
_DERIVED_INPUTS = ("stellar_mass", "sfr_100myr", "ssfr")  # Posterior.derived keys behind DERIVED_COLUMNS
FORMATS = {"csv": ".csv", "fits": ".fits", "hdf5": ".h5"}
_TEXT_COLUMNS = ("id", "method", "error")


def summary_columns(free_names) -> list[str]:
    """Column names of the summary for a model's free parameters."""
    cols = ["id", "method", "wall_time_s"]
    for name in list(free_names) + list(DERIVED_COLUMNS):
        cols += [f"{name}_p16", f"{name}_p50", f"{name}_p84"]
    return cols + ["error"]


def _log10(x):
    x = np.asarray(x, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), -np.inf)


def summarise(gid: str, posterior, free_names, derived: dict | None = None) -> dict[str, Any]:
    """One summary row: 16/50/84th percentiles of parameters and derived values.

    ``derived``: the posterior's ``stellar_mass``, ``sfr_100myr`` and ``ssfr`` per
    draw (or at the point) when already computed (e.g. for a whole batch of
    galaxies at once, :func:`batch_derived`); else the posterior computes them.
    """
    row: dict[str, Any] = {"id": gid, "method": posterior.method, "wall_time_s": posterior.wall_time_s}
    values = posterior.samples if posterior.samples is not None else posterior.params
    if derived is None:
        derived = posterior.derived_subset(_DERIVED_INPUTS)  # SFH-only: no spectrum per draw
    quantities = {n: np.asarray(values[n], float) for n in free_names}
    quantities["log_mstar"] = _log10(derived["stellar_mass"])
    quantities["log_sfr100"] = _log10(derived["sfr_100myr"])
    quantities["log_ssfr"] = _log10(derived["ssfr"])
    for name, v in quantities.items():
        lo, med, hi = np.percentile(np.atleast_1d(v), [16, 50, 84])
        row[f"{name}_p16"], row[f"{name}_p50"], row[f"{name}_p84"] = float(lo), float(med), float(hi)
    row["error"] = ""
    return row


def batch_derived(model, posteriors: list, n_values: int | None = None) -> list[dict]:
    """The summary's derived inputs of many posteriors of ``model`` in one model call.

    Parameters
    ----------
    model : SEDModel
    posteriors : list of Posterior
        Their draws (or point estimates) are evaluated together.
    n_values : int, optional
        Pad the joined draws to this many (copies of the last), so batches of
        different sizes reuse one compiled program.

    Returns
    -------
    list of dict
        Per posterior, ``stellar_mass`` [M☉], ``sfr_100myr`` [M☉/yr] and ``ssfr``
        [1/yr], arrays of shape (n_draws,) (or (1,) for a point estimate), as
        :func:`summarise` takes them.
    """
    values = [p.samples if p.samples is not None else p.params for p in posteriors]
    sizes = [int(np.size(v[next(iter(v))])) for v in values]
    joined = {name: np.concatenate([np.ravel(np.asarray(v[name], np.float64)) for v in values])
              for name in values[0]}
    total = sum(sizes)
    if n_values is not None and n_values > total:
        joined = {k: np.concatenate([a, np.repeat(a[-1:], n_values - total)]) for k, a in joined.items()}
    out = model.derived_quantities(joined, names=_DERIVED_INPUTS)
    bounds = np.cumsum([0] + sizes)
    return [{k: np.asarray(out[k])[a:b] for k in _DERIVED_INPUTS} for a, b in zip(bounds[:-1], bounds[1:])]


def error_row(gid: str, method: str, error: str) -> dict[str, Any]:
    """The row of a galaxy that could not be fitted (numbers left empty → NaN)."""
    return {"id": gid, "method": method, "error": error or "unknown error"}


def atomic_path(path: Path):
    """A fresh temporary path beside ``path`` (same file system: ``os.replace`` is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _columns_of(rows: list[dict], columns: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for c in columns:
        if c in _TEXT_COLUMNS:
            out[c] = np.array([str(r.get(c, "") or "") for r in rows], dtype=str)
        else:
            out[c] = np.array([_number(r.get(c)) for r in rows], dtype=np.float64)
    return out


def _number(value) -> float:
    if value is None or value == "":
        return np.nan
    return float(value)


def write_summary(path, columns: list[str], rows: Iterable[dict], fmt: str = "csv") -> Path:
    """Write the summary atomically.

    Parameters
    ----------
    path : path
        Target file (its suffix is not changed).
    columns : list of str
        :func:`summary_columns`.
    rows : iterable of dict
    fmt : {"csv", "fits", "hdf5"}
        CSV (floats written as ``repr``, so they read back exactly), a FITS
        binary table (extension ``SUMMARY``), or HDF5 with one dataset per column
        under the group ``summary`` (strings as UTF-8).

    Raises
    ------
    ConfigError
        Unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"summary format {fmt!r} unknown; valid: {', '.join(FORMATS)}")
    path = Path(path)
    rows = list(rows)
    tmp = atomic_path(path)
    try:
        if fmt == "csv":
            with open(tmp, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=columns)
                writer.writeheader()
                for row in rows:
                    writer.writerow({c: _csv_cell(row.get(c, "")) for c in columns})
        elif fmt == "fits":
            from astropy.table import Table

            Table(_columns_of(rows, columns), names=columns, meta={"EXTNAME": "SUMMARY"}).write(
                tmp, format="fits", overwrite=True)
        else:
            import h5py

            data = _columns_of(rows, columns)
            with h5py.File(tmp, "w", track_order=True) as f:
                group = f.create_group("summary", track_order=True)
                for c in columns:
                    v = data[c]
                    if v.dtype.kind == "U":
                        group.create_dataset(c, data=v.astype(object), dtype=h5py.string_dtype())
                    else:
                        group.create_dataset(c, data=v)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _csv_cell(value):
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return value


def read_summary_csv(path) -> list[dict[str, Any]]:
    """Rows of a CSV summary (or summary part); numbers as float, empty → NaN."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        out.append({k: (v if k in _TEXT_COLUMNS else _number(v)) for k, v in row.items()})
    return out
