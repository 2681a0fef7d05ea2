"""The main job: fit every galaxy of a catalog and write a summary + posteriors.

``tengri fit CATALOG --config MODEL.toml --method METHOD --out DIR [--plots]`` calls
:func:`fit_catalog`. Everything is validated (config, catalog columns, method,
options) before anything is written; each posterior file, figure and the summary
are written atomically (temporary file + rename), so an interrupted run leaves no
half-written file.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tengri.catalog_io import read_catalog
from tengri.errors import DataError
from tengri.inference import registry
from tengri.model.config import model_from_config

__all__ = ["fit_catalog", "summary_columns", "summarise"]

DERIVED_COLUMNS = ("log_mstar", "log_sfr100", "log_ssfr")


def summary_columns(free_names) -> list[str]:
    """Column names of summary.csv for a model's free parameters."""
    cols = ["id", "method", "wall_time_s"]
    for name in list(free_names) + list(DERIVED_COLUMNS):
        cols += [f"{name}_p16", f"{name}_p50", f"{name}_p84"]
    return cols + ["error"]


def _log10(x):
    x = np.asarray(x, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, np.log10(np.where(x > 0, x, 1.0)), -np.inf)


def summarise(gid: str, posterior, free_names) -> dict[str, Any]:
    """One summary row: 16/50/84th percentiles of parameters and derived values."""
    row: dict[str, Any] = {"id": gid, "method": posterior.method, "wall_time_s": posterior.wall_time_s}
    values = posterior.samples if posterior.samples is not None else posterior.params
    derived = posterior.derived
    quantities = {n: np.asarray(values[n], float) for n in free_names}
    quantities["log_mstar"] = _log10(derived["stellar_mass"])
    quantities["log_sfr100"] = _log10(derived["sfr_100myr"])
    quantities["log_ssfr"] = _log10(derived["ssfr"])
    for name, v in quantities.items():
        lo, med, hi = np.percentile(np.atleast_1d(v), [16, 50, 84])
        row[f"{name}_p16"], row[f"{name}_p50"], row[f"{name}_p84"] = lo, med, hi
    row["error"] = ""
    return row


def _atomic_write_csv(path: Path, columns, rows) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in columns})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fit_catalog(catalog, config, method: str = "map", out="tengri_out", *, options: dict | None = None,
                save_posteriors: bool = True, progress: bool = True, key=None,
                plots: bool = False) -> list[dict]:
    """Fit every galaxy of ``catalog`` with the model of ``config``.

    Parameters
    ----------
    catalog : path
        CSV, ECSV or FITS catalog (see :mod:`tengri.catalog_io`).
    config : path or dict
        Model configuration (see :mod:`tengri.model.config`).
    method : str
        Any inference method name.
    out : path
        Output directory: ``summary.csv`` and ``posteriors/<id>.h5``.
    options : dict, optional
        Method options (validated before anything runs).
    plots : bool
        Also write ``plots/<id>_corner.png`` (methods with draws only),
        ``plots/<id>_sed.png`` and ``plots/<id>_sfh.png`` per galaxy
        (:func:`tengri.posterior.plots.save_figures`).

    Returns
    -------
    list of dict
        The summary rows, in catalog order.
    """
    from tqdm.auto import tqdm

    from tengri.inference.fitter import Fitter

    options = dict(options or {})
    registry.method_options(method, options)  # unknown method / options fail here, before any write
    model, spec = model_from_config(config)
    galaxies = read_catalog(catalog, spec)
    if not galaxies:
        raise DataError(f"catalog {catalog} has no rows")

    out = Path(out)
    post_dir = out / "posteriors"
    post_dir.mkdir(parents=True, exist_ok=True)
    if plots:
        from tengri.posterior.plots import save_figures

        (out / "plots").mkdir(exist_ok=True)
    free = model.parameters.free_names
    rows = []
    bar = tqdm(galaxies, desc=f"tengri fit ({method})", unit="gal", disable=not progress)
    for gal in bar:
        try:
            fitter = Fitter(model, gal.flux_obs, gal.noise, data_mask=gal.mask, fixed=gal.fixed)
            post = fitter.run(method, key=key, **options)
            rows.append(summarise(gal.id, post, free))
            if save_posteriors:
                post.save(post_dir / f"{_safe_name(gal.id)}.h5")
            if plots:
                save_figures(post, out / "plots", _safe_name(gal.id))
        except (DataError, FloatingPointError) as err:
            rows.append({"id": gal.id, "method": method, "error": f"{type(err).__name__}: {err}"})
    _atomic_write_csv(out / "summary.csv", summary_columns(free), rows)
    return rows


def _safe_name(gid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in gid)
