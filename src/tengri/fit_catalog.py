"""The main job: fit every galaxy of a catalog and write a summary + posteriors.

``tengri fit CATALOG --config MODEL.toml --method METHOD --out DIR`` calls
:func:`fit_catalog`. Everything is validated (config, catalog columns, method,
options, format) before anything is written. The catalog is cut into chunks of
``chunk_size`` galaxies, each fitted by
:class:`~tengri.inference.catalog.CatalogFitter`'s machinery, in this process or
as one Dask task per chunk (``dask="local[:N]"`` or a scheduler address).

Output directory::

    run.json                    method, options, key and configuration of the run
    posteriors/<id>.h5          one per galaxy (unless save_posteriors=False)
    parts/part-<first>-<hash>.csv  the summary rows of one finished chunk
    summary.<csv|fits|h5>       all rows, in catalog order (written at the end)

With a ``[spectroscopy]`` table in the configuration, a galaxy whose spectrum
column is filled is fitted jointly (its photometry and its spectrum file, read by
:func:`tengri.spectrum_io.read_spectrum`) by a per-galaxy Fitter on a model built
for its pixels (``data_type="joint"``); galaxies with identical pixel grids (and
redshift, unless ``redshift_range`` is configured) share one model and its
compiled programs. The others are fitted as photometry. The summary then also
has the spectral parameters' columns (``veldisp_kms``…), empty for galaxies
fitted without a spectrum. A spectrum file that cannot be used fails its galaxy
only (an error row). With Dask, the workers read the spectrum files: they must
see the same paths.

A chunk writes its posteriors, then its part file, each atomically (temporary
file + ``os.replace``); a part file therefore means its galaxies are finished.
With ``resume=True`` (the default) galaxies found in part files are not fitted
again, so a killed run loses nothing it wrote and repeats nothing it finished.
Galaxy ``i`` of the catalog always uses the key ``fold_in(key, i)``, so its result
does not depend on chunking, resuming or the worker that fitted it. A chunk task
only writes its own files, so Dask may run it again (after a worker died) safely.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tengri.catalog_io import read_catalog
from tengri.catalog_summary import (
    DERIVED_COLUMNS, FORMATS, error_row, read_summary_csv, summarise, summary_columns, write_summary,
)
from tengri.errors import ConfigError, DataError
from tengri.inference import registry
from tengri.model.config import load_config, model_from_config

__all__ = ["fit_catalog", "summary_columns", "summarise", "DERIVED_COLUMNS", "parse_dask",
           "summary_path"]

RUN_FILE = "run.json"
PARTS_DIR = "parts"
DEFAULT_CHUNK_SIZE = 64


def summary_path(out, fmt: str = "csv") -> Path:
    """Where the summary of format ``fmt`` is written in output directory ``out``."""
    return Path(out) / f"summary{FORMATS[fmt]}"


def parse_dask(spec: str | None) -> tuple[str, Any] | None:
    """``"local"``, ``"local:N"`` → ("local", N workers); ``"tcp://h:p"`` → ("address", it).

    Raises
    ------
    ConfigError
        Anything else.
    """
    if spec is None:
        return None
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2] or "2"
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"--dask local:N needs a positive number of workers, got {spec!r}")
        return "local", int(n)
    if "://" in spec:
        return "address", spec
    raise ConfigError(f"--dask must be 'local', 'local:N' or a scheduler address like "
                      f"tcp://host:8786, got {spec!r}")


def _run_manifest(config, method: str, options: dict, key_seed: int, n_pad, strategy) -> dict:
    cfg = json.dumps(load_config(config), sort_keys=True, default=str)
    return {"method": method, "options": json.dumps(options, sort_keys=True, default=str),
            "key_seed": key_seed, "n_pad": n_pad, "strategy": strategy,
            "config_sha1": hashlib.sha1(cfg.encode()).hexdigest()}


def _check_resume(out: Path, manifest: dict, resume: bool) -> None:
    """Refuse to resume a run made with other settings; start afresh if not resuming."""
    run_file = out / RUN_FILE
    if resume and run_file.is_file():
        before = json.loads(run_file.read_text())
        changed = sorted(k for k in manifest if before.get(k) != manifest[k])
        if changed:
            raise ConfigError(
                f"{out} holds a run with other settings ({', '.join(changed)} differ); "
                "use --no-resume to start afresh or another --out directory")
    if not resume:
        for part in (out / PARTS_DIR).glob("part-*.csv"):
            part.unlink()
    tmp = out / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, run_file)


def _finished_rows(out: Path) -> dict[str, dict]:
    rows = {}
    for part in sorted((out / PARTS_DIR).glob("part-*.csv")):
        for row in read_summary_csv(part):
            rows.setdefault(row["id"], row)
    return rows


def _part_name(indices: list[int], ids: list[str]) -> str:
    digest = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:12]
    return f"part-{indices[0]:08d}-{digest}.csv"


def _safe_name(gid: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in gid)


def catalog_free_names(model, spectroscopy=None) -> list[str]:
    """Free parameters of the summary: the model's, then the spectrum-only ones."""
    extra = () if spectroscopy is None else spectroscopy.free_parameter_names
    return list(model.parameters.free_names) + [n for n in extra if n not in model.parameters.free_names]


def _spectrum_record(cat, gal, index: int, spectroscopy):
    """GalaxyRecord of a galaxy with a spectrum file (raises DataError for a bad file)."""
    from tengri.spectrum_io import read_spectrum

    wave, flux, error, mask = read_spectrum(gal.spectrum_file, spectroscopy.flux_unit,
                                            spectroscopy.wavelength_unit, spectroscopy.flux_scale)
    spectro = {"spec_obs": flux, "spec_noise": error, "spec_mask": mask, "wave_spec": wave}
    return cat.GalaxyRecord(gal.id, index, gal.flux_obs, gal.noise, gal.mask, dict(gal.fixed), spectro)


def _joint_groups(model, records, spectroscopy) -> dict[tuple, list[int]]:
    """Positions of ``records`` by (pixel grid, redshift range of their model)."""
    per_galaxy_z = "redshift" in model.per_galaxy and spectroscopy.observation.get("redshift_range") is None
    groups: dict[tuple, list[int]] = {}
    for n, rec in enumerate(records):
        wave = np.asarray(rec.spectro["wave_spec"])
        z = float(rec.fixed["redshift"]) if per_galaxy_z else None
        key = (hashlib.sha1(wave.tobytes()).hexdigest(), wave.size, None if z is None else (z, z))
        groups.setdefault(key, []).append(n)
    return groups


def _fit_joint(model, records, method, options, key, config, spectroscopy):
    """Per-galaxy joint fits, one model per group of identical pixel grids."""
    from tengri.catalog_summary import error_row
    from tengri.inference import catalog as cat
    from tengri.model.observation import Joint

    posteriors, rows = [None] * len(records), [None] * len(records)
    for (_, _, z_range), members in _joint_groups(model, records, spectroscopy).items():
        group = [records[n] for n in members]
        try:
            observation = Joint(model.photometry, spectroscopy.spectroscopy(group[0].spectro["wave_spec"],
                                                                            z_range))
            joint = model_from_config(config, observation=observation)[0]
        except Exception as err:  # e.g. pixels beyond the SSP grid: these galaxies fail
            got = ([None] * len(group), [error_row(r.id, method, f"{type(err).__name__}: {err}")
                                         for r in group])
        else:  # the model is built on these pixels: no per-galaxy grid to pass
            group = [dataclasses.replace(r, spectro={k: v for k, v in r.spectro.items() if k != "wave_spec"})
                     for r in group]
            got = cat.fit_records(joint, group, method, options, key, None, "sequential",
                                  fitter_options=spectroscopy.fitter_options)
        for n, post, row in zip(members, *got):
            posteriors[n], rows[n] = post, row
    return posteriors, rows


def fit_chunk(model, galaxies, indices, method: str, options: dict, key_seed: int, out,
              n_pad=None, strategy: str = "auto", save_posteriors: bool = True,
              plots: bool = False, config: dict | None = None, spectroscopy=None, n_threads: int = 1
              ) -> list[dict]:
    """Fit one chunk and write its posteriors and part file (idempotent).

    Parameters
    ----------
    model : SEDModel
    galaxies : list of GalaxyInput
    indices : list of int
        Catalog positions of ``galaxies`` (they select the PRNG keys).
    key_seed : int
        The run's key is ``jax.random.PRNGKey(key_seed)``.
    out : path
        Output directory.
    config : dict, optional
        The parsed configuration (builds the joint models of galaxies with a spectrum).
    spectroscopy : SpectroscopySpec, optional
        ``CatalogSpec.spectroscopy``; galaxies with a ``spectrum_file`` need it.
    n_threads : int
        Photometric galaxies fitted side by side by the sequential strategy.

    Returns
    -------
    list of dict
        The chunk's summary rows.
    """
    import jax

    from tengri.catalog_summary import error_row
    from tengri.inference import catalog as cat

    out = Path(out)
    method = registry.canonical_method(method)
    options = cat.method_options(method, options)
    key = jax.random.PRNGKey(key_seed)
    posteriors, rows = [None] * len(galaxies), [None] * len(galaxies)
    photometric, joint = {}, {}  # position in the chunk → GalaxyRecord
    for n, (g, i) in enumerate(zip(galaxies, indices)):
        if getattr(g, "spectrum_file", None) is None:
            photometric[n] = cat.GalaxyRecord(g.id, i, g.flux_obs, g.noise, g.mask, dict(g.fixed))
            continue
        try:
            if spectroscopy is None or config is None:
                raise DataError("a spectrum file needs a [spectroscopy] table in the configuration")
            joint[n] = _spectrum_record(cat, g, i, spectroscopy)
        except Exception as err:  # a bad spectrum file fails its galaxy only
            rows[n] = error_row(g.id, method, f"{type(err).__name__}: {err}")
    if photometric:
        got = cat.fit_records(model, list(photometric.values()), method, options, key, n_pad,
                              cat.choose_strategy(method, strategy, False), n_threads=n_threads)
        for n, post, row in zip(photometric, *got):
            posteriors[n], rows[n] = post, row
    if joint:
        got = _fit_joint(model, list(joint.values()), method, options, key, config, spectroscopy)
        for n, post, row in zip(joint, *got):
            posteriors[n], rows[n] = post, row
    for gal, post, row in zip(galaxies, posteriors, rows):
        if post is None:
            continue
        try:
            if save_posteriors:
                post.save(out / "posteriors" / f"{_safe_name(gal.id)}.h5")
            if plots:
                from tengri.posterior.plots import save_figures

                save_figures(post, out / "plots", _safe_name(gal.id))
        except Exception as err:
            row.clear()
            row.update(error_row(gal.id, method, f"{type(err).__name__}: {err}"))
    columns = summary_columns(catalog_free_names(model, spectroscopy))
    write_summary(out / PARTS_DIR / _part_name(list(indices), [g.id for g in galaxies]), columns,
                  rows, "csv")
    return rows


_WORKER_MODELS: dict[str, Any] = {}


def _chunk_task(config: dict, cache_dir: str | None, galaxies, indices, method, options, key_seed,
                out, n_pad, strategy, save_posteriors, plots) -> list[dict]:
    """A Dask task: the worker builds the model once (per configuration) and fits a chunk."""
    import tengri

    if cache_dir is not None and tengri.persistent_cache_dir() != Path(cache_dir):
        tengri.enable_persistent_cache(cache_dir)
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _WORKER_MODELS:
        _WORKER_MODELS[key] = model_from_config(config)
    model, spec = _WORKER_MODELS[key]
    return fit_chunk(model, galaxies, indices, method, options, key_seed, out,
                     n_pad, strategy, save_posteriors, plots, config, spec.spectroscopy)


def _dask_client(spec: tuple[str, Any]):
    from distributed import Client, LocalCluster

    kind, value = spec
    if kind == "local":
        cluster = LocalCluster(n_workers=value, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster
    return Client(value), None


def fit_catalog(catalog, config, method: str = "map", out="tengri_out", *, options: dict | None = None,
                save_posteriors: bool = True, progress: bool = True, key=None,
                plots: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE, resume: bool = True,
                fmt: str = "csv", dask: str | None = None, client=None, n_pad: int | None = None,
                strategy: str = "auto", n_threads: int = 1) -> list[dict]:
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
        Output directory (layout in the module docstring).
    options : dict, optional
        Method options (validated before anything runs).
    key : int, optional
        Seed of the run's PRNG key (default 42); galaxy ``i`` uses ``fold_in(key, i)``.
    plots : bool
        Also write ``plots/<id>_{corner,sed,sfh}.png`` per galaxy.
    chunk_size : int
        Galaxies per chunk (one part file, one Dask task).
    resume : bool
        Skip galaxies already in part files of ``out`` (default True). A run
        with another method, options, key or configuration is refused
        (ConfigError); ``resume=False`` deletes the old part files first.
    fmt : {"csv", "fits", "hdf5"}
        Format of the final summary.
    dask : str, optional
        ``"local"`` / ``"local:N"`` (a LocalCluster of N worker processes, 2 by
        default) or a scheduler address (``tcp://host:8786``).
    client : dask.distributed.Client, optional
        Use this client instead of ``dask``.
    n_pad : int, optional
        Batch size of batched fits (see :class:`~tengri.inference.catalog.CatalogFitter`);
        default ``min(chunk_size, number of galaxies)``, so that every chunk has one shape.
    n_threads : int
        Galaxies fitted side by side in this process by the per-galaxy
        (``"sequential"``) strategy, e.g. NUTS (default 1; see
        :class:`~tengri.inference.catalog.CatalogFitter`). The results do not
        depend on it, so a resumed run may change it. Dask workers fit one at a time.
    strategy : {"auto", "batched", "sequential"}

    Returns
    -------
    list of dict
        The summary rows, in catalog order.
    """
    from tqdm.auto import tqdm

    import tengri

    options = dict(options or {})
    method = registry.canonical_method(method)
    registry.method_options(method, options)  # unknown method / options fail here, before any write
    if fmt not in FORMATS:
        raise ConfigError(f"summary format {fmt!r} unknown; valid: {', '.join(FORMATS)}")
    from tengri.inference.catalog import choose_strategy, positive_count

    positive_count("chunk_size", chunk_size)
    if n_pad is not None:
        positive_count("n_pad", n_pad)
    n_threads = positive_count("n_threads", n_threads)

    choose_strategy(method, strategy, False)  # an impossible strategy fails before any write
    dask_spec = parse_dask(dask)
    key_seed = 42 if key is None else int(key)
    model, spec = model_from_config(config)
    galaxies = read_catalog(catalog, spec)
    if not galaxies:
        raise DataError(f"catalog {catalog} has no rows")
    if any(g.spectrum_file for g in galaxies):  # spectra are fitted one by one
        choose_strategy(method, strategy, True)

    out = Path(out)
    (out / "posteriors").mkdir(parents=True, exist_ok=True)
    (out / PARTS_DIR).mkdir(exist_ok=True)
    if plots:
        (out / "plots").mkdir(exist_ok=True)
    _check_resume(out, _run_manifest(config, method, options, key_seed, n_pad, strategy), resume)
    done = _finished_rows(out)
    todo = [i for i, g in enumerate(galaxies) if g.id not in done]
    # every chunk padded to one batch shape: one compilation for the whole run
    n_pad = n_pad or min(chunk_size, len(galaxies))
    chunks = [todo[i:i + chunk_size] for i in range(0, len(todo), chunk_size)]
    args = (method, options, key_seed, str(out), n_pad, strategy, save_posteriors, plots)
    config_dict = load_config(config)

    bar = tqdm(total=len(galaxies), initial=len(galaxies) - len(todo), unit="gal",
               desc=f"tengri fit ({method})", disable=not progress, smoothing=0.1)
    failed: dict[str, str] = {}
    try:
        if dask_spec is None and client is None:
            for chunk in chunks:
                fit_chunk(model, [galaxies[i] for i in chunk], chunk, *args, config_dict,
                          spec.spectroscopy, n_threads=n_threads)
                bar.update(len(chunk))
        else:
            failed = _fit_chunks_dask(dask_spec, client, config_dict, chunks, galaxies,
                                      args, bar, tengri.persistent_cache_dir())
    finally:
        bar.close()

    finished = _finished_rows(out)
    rows = [finished.get(g.id) or error_row(g.id, method, failed.get(g.id, "no result"))
            for g in galaxies]
    write_summary(summary_path(out, fmt), summary_columns(catalog_free_names(model, spec.spectroscopy)),
                  rows, fmt)
    return rows


def _fit_chunks_dask(dask_spec, client, config: dict, chunks, galaxies, args, bar,
                     cache_dir) -> dict[str, str]:
    """One task per chunk; returns ``{id: error}`` for the galaxies of failed tasks
    (they have no part file, so a resumed run tries them again)."""
    from distributed import as_completed

    cluster = None
    if client is None:
        client, cluster = _dask_client(dask_spec)
    failed: dict[str, str] = {}
    try:
        futures = {}
        for chunk in chunks:
            future = client.submit(_chunk_task, config, None if cache_dir is None else str(cache_dir),
                                   [galaxies[i] for i in chunk], chunk, *args, pure=False)
            futures[future] = chunk
        for future in as_completed(futures):
            chunk = futures[future]
            if future.status == "error":
                err = future.exception()
                failed.update({galaxies[i].id: f"{type(err).__name__}: {err}" for i in chunk})
            bar.update(len(chunk))
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    return failed
