"""CatalogFitter: many galaxies, one model configuration, shared compiled programs.

Every galaxy of a catalog has the same likelihood function and differs only in
its ``data_args`` (data, noise, mask, prior table, band matrix and band tables),
which engines take as a traced argument (``docs/architecture.md``). So:

``"batched"`` (default for ``map`` and ``laplace``)
    The galaxies' ``data_args`` are stacked along a leading axis (leaves that are
    the same object for every galaxy, such as the model grids, are passed once)
    and the single-galaxy engines of :mod:`tengri.inference.methods.optimize`
    run over the batch in one jitted call per batch: under ``jax.vmap``
    (``batch_mode="vmap"``; the batched loops run until the slowest galaxy of
    the batch has converged, converged galaxies stay where they are) or in a
    ``lax.map`` loop inside the call (``batch_mode="scan"``). Every galaxy keeps
    its own multi-start L-BFGS, so the answers are the per-galaxy Fitter's. With
    ``"scan"`` they are so to the last bit: an optimisation barrier keeps XLA from
    fusing the batch slicing into the objective, which otherwise changed its
    round-off by an ulp, and on the short-τ ridge of real photometry (a staircase
    of local optima from the SSP age bins) L-BFGS amplified that to 0.38 Gyr in
    age within ~30 iterations. Under ``"vmap"`` the batched arithmetic rounds
    differently, so such galaxies can end in a neighbouring local optimum.
    With ``mcmc_nuts``/``hmc``/``dynamic_hmc``/``ghmc`` (only when asked for:
    ``strategy="batched"``), the MAP starts are batched as above and then the
    sampler's engines (window adaptation, then burn-in + draws) are batched over
    galaxies; between them each galaxy's chains pool their adaptation as
    ``Fitter.run`` does (option ``adaptation``).
    **What is shared** is the compiled program, the warm-up schedule and the
    number of steps; each galaxy adapts its *own* step size and diagonal mass
    matrix (latent posterior widths differ by orders of magnitude between a
    faint and a bright galaxy, so one mass matrix for all would be a poor metric
    for most of them).
``"sequential"``
    One :class:`~tengri.inference.fitter.Fitter` per galaxy, one after the
    other, all using the engines compiled for the first (any method).

``n_pad`` fixes the batch shape: galaxies are fitted ``n_pad`` at a time, the
last batch filled with masked dummy galaxies (no datum used, so their fit is
the prior's mode and costs a few iterations), so catalogs of any size reuse one
compiled program.

Randomness: galaxy ``i`` (its position in ``galaxies``) gets the key
``jax.random.fold_in(key, i)`` whatever the strategy, batch or chunk, so a
galaxy's result does not depend on how the catalog is cut up.

Measured on two CPU cores (``bench/catalog.py``): vmapping does not make the
per-galaxy gradient cheaper on a CPU, and NUTS under ``vmap`` pays the longest
trajectory of the batch at every step (see :mod:`tengri.inference.methods.mcmc`),
so ``strategy="auto"`` batches map/laplace only, and ``batch_mode="auto"`` uses
``lax.map`` on a CPU and ``vmap`` on an accelerator.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from tengri.analysis.diagnostics import CONVERGENCE_TAU_FACTOR, PARETO_K_RELIABLE
from tengri.errors import ApproximationWarning, ConvergenceWarning, DataError, ParameterError
from tengri.inference import cache, host_keys, registry

__all__ = ["CatalogFitter", "CatalogResult", "GalaxyRecord", "galaxy_key", "galaxy_keys", "STRATEGIES",
           "fit_records", "choose_strategy", "method_options",
           "SPECTRO_KEYS", "SPECTRAL_FITTER_OPTIONS"]

STRATEGIES = ("auto", "batched", "sequential")
VMAP_POINT_METHODS = ("map", "laplace")
VMAP_MCMC_METHODS = ("mcmc_nuts", "hmc", "dynamic_hmc", "ghmc")
SPECTRO_KEYS = ("spec_obs", "spec_noise", "spec_mask", "wave_spec")
# Fitter arguments of the spectroscopic likelihood, the same for every galaxy of a catalog
SPECTRAL_FITTER_OPTIONS = ("calibration_marginalize", "cal_n_poly", "cal_prior_sigma",
                           "eline_marginalize", "eline_prior_type")
_GALAXY_KEYS = ("id", "flux_obs", "noise", "mask", "fixed") + SPECTRO_KEYS


def galaxy_key(key: jax.Array, index: int) -> jax.Array:
    """PRNG key of the galaxy at position ``index`` of the catalog."""
    return jax.random.fold_in(key, int(index))


def galaxy_keys(key: jax.Array, indices: Sequence[int]) -> np.ndarray:
    """:func:`galaxy_key` of each of ``indices`` (one call instead of one per galaxy),
    shape (len(indices), 2)."""
    return np.asarray(host_keys.fold_in_many(key, np.asarray(indices, dtype=np.int64)))


@dataclass
class GalaxyRecord:
    """One galaxy's input, normalised.

    Attributes
    ----------
    id : str
    index : int
        Position in the catalog (selects the galaxy's PRNG key).
    flux_obs, noise : numpy.ndarray, shape (n_band,)
        f_ν and 1σ errors [erg/s/cm²/Hz].
    mask : numpy.ndarray of bool, shape (n_band,) or None
        True = use the band.
    fixed : dict
        Per-galaxy values of fixed parameters (e.g. ``{"redshift": 1.2}``).
    spectro : dict
        ``spec_obs`` / ``spec_noise`` / ``spec_mask`` / ``wave_spec`` when given
        (the spectrum in the model Spectroscopy's unit, True = use the pixel,
        pixel centres [Å]).
    """

    id: str
    index: int
    flux_obs: np.ndarray
    noise: np.ndarray
    mask: np.ndarray | None
    fixed: dict
    spectro: dict = field(default_factory=dict)


@dataclass
class CatalogResult:
    """What :meth:`CatalogFitter.run` returns.

    Attributes
    ----------
    posteriors : list of Posterior or None
        In catalog order; None where the galaxy failed.
    summary : list of dict
        One row per galaxy, in catalog order (``tengri.catalog_summary``
        columns); ``error`` is "" or ``"<ExceptionType>: <message>"``.
    strategy : str
        ``"batched"`` or ``"sequential"``.
    wall_time_s : float
    """

    posteriors: list
    summary: list
    strategy: str
    wall_time_s: float

    @property
    def n_failed(self) -> int:
        return sum(1 for row in self.summary if row.get("error"))


def _as_record(gal: Any, index: int, model, fixed_columns: Mapping[str, Any]) -> GalaxyRecord:
    """A galaxy dict (or ``tengri.catalog_io.GalaxyInput``) → GalaxyRecord."""
    if hasattr(gal, "flux_obs") and not isinstance(gal, Mapping):
        if getattr(gal, "spectrum_file", None):  # never fit its photometry alone silently
            raise DataError(f"galaxies[{index}] ({gal.id!r}) has a spectrum file, which CatalogFitter does "
                            "not read: use tengri.fit_catalog.fit_catalog, or give spec_obs/spec_noise")
        gal = {"id": gal.id, "flux_obs": gal.flux_obs, "noise": gal.noise, "mask": gal.mask,
               "fixed": gal.fixed}
    if not isinstance(gal, Mapping):
        raise DataError(f"galaxies[{index}] must be a dict with 'flux_obs' and 'noise', "
                        f"got {type(gal).__name__}")
    fixed_names = set(model.parameters.fixed_values)
    unknown = [k for k in gal if k not in _GALAXY_KEYS and k not in fixed_names]
    if unknown:
        raise DataError(f"galaxies[{index}] has unknown keys {unknown}; valid: "
                        f"{', '.join(_GALAXY_KEYS)} and the fixed parameters {sorted(fixed_names)}")
    for name in ("flux_obs", "noise"):
        if name not in gal:
            raise DataError(f"galaxies[{index}] has no {name!r}")
    fixed = dict(gal.get("fixed") or {})
    fixed.update({k: float(v) for k, v in gal.items() if k in fixed_names})
    for name, values in fixed_columns.items():
        fixed.setdefault(name, float(values[index]))
    mask = gal.get("mask")
    return GalaxyRecord(
        id=str(gal.get("id", index)), index=index,
        flux_obs=np.asarray(gal["flux_obs"], dtype=np.float64),
        noise=np.asarray(gal["noise"], dtype=np.float64),
        mask=None if mask is None else np.asarray(mask, dtype=bool),
        fixed=fixed, spectro={k: gal[k] for k in SPECTRO_KEYS if k in gal},
    )


def method_options(method: str, options: Mapping[str, Any]) -> dict:
    """``options`` checked against ``method`` (ValueError naming an unknown one)."""
    options = dict(options)
    registry.method_options(method, options)
    return options


def choose_strategy(method: str, strategy: str, spectro: bool) -> str:
    """``"batched"`` or ``"sequential"`` for a canonical ``method`` (see the module docstring).

    Raises
    ------
    ParameterError
        Unknown ``strategy``, or ``"batched"`` for a method or data it cannot batch.
    """
    if strategy not in STRATEGIES:
        raise ParameterError(f"strategy {strategy!r} unknown; valid: {', '.join(STRATEGIES)}")
    vmappable = method in VMAP_POINT_METHODS + VMAP_MCMC_METHODS and not spectro
    if strategy == "batched" and not vmappable:
        raise ParameterError(
            f"strategy 'batched' needs photometry and a method among "
            f"{', '.join(VMAP_POINT_METHODS + VMAP_MCMC_METHODS)}; got {method!r}"
            + (" with spectroscopy" if spectro else ""))
    if strategy == "auto":
        return "batched" if vmappable and method in VMAP_POINT_METHODS else "sequential"
    return strategy


def resolve_batch_mode(batch_mode: str) -> str:
    """``"vmap"`` or ``"scan"``; ``"auto"`` is ``"scan"`` on a CPU, ``"vmap"`` on accelerators."""
    if batch_mode == "auto":
        return "scan" if jax.default_backend() == "cpu" else "vmap"
    if batch_mode not in BATCH_MODES:
        raise ParameterError(f"batch_mode {batch_mode!r} unknown; valid: auto, {', '.join(BATCH_MODES)}")
    return batch_mode


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class CatalogFitter:
    """Fit every galaxy of a catalog with one model, sharing compiled programs.

    Parameters
    ----------
    model : SEDModel
    galaxies : sequence of dict
        Each with ``flux_obs`` and ``noise`` (shape (n_band,), erg/s/cm²/Hz),
        optionally ``mask`` (bool, True = use), ``id``, per-galaxy values of fixed
        parameters (``"redshift": 1.2``, or ``"fixed": {...}``) and the
        spectroscopy keys ``spec_obs``, ``spec_noise``, ``wave_spec`` (passed to
        the Fitter; such galaxies are fitted one by one).
        :class:`tengri.catalog_io.GalaxyInput` rows are accepted too.
    method : str
        Any method of ``Fitter.run`` (default ``"vi"``).
    key : jax PRNGKey, optional
        Default ``jax.random.PRNGKey(42)``; galaxy ``i`` uses ``fold_in(key, i)``.
    n_pad : int, optional
        Batch size of the vmapped strategy: batches are padded to it with masked
        dummy galaxies, so every catalog size uses one compiled program. Default:
        one batch holding the whole catalog.
    client : dask.distributed.Client, optional
        Fit chunks of ``chunk_size`` galaxies on the cluster's workers (each
        worker receives the model once and compiles once; enable the persistent
        cache, :func:`tengri.enable_persistent_cache`, to share compilations).
    chunk_size : int, optional
        Galaxies per dask task (default ``n_pad`` or 64).
    strategy : {"auto", "batched", "sequential"}
        See the module docstring.
    n_threads : int
        Galaxies fitted at once by strategy ``"sequential"`` (default 1), each in
        its own thread: XLA releases the GIL while it runs, so on a machine with
        several cores this many fits proceed in parallel (the first galaxy is
        fitted alone, so the engines compile once). Results do not depend on it:
        galaxy ``i`` always uses its own key. Ignored by ``"batched"``, which
        already keeps the cores busy (its next batch is prepared in a thread).
    batch_mode : {"auto", "vmap", "scan"}
        How strategy "batched" runs a batch in its one jitted call: ``jax.vmap``, or
        ``lax.map`` (one galaxy after the other inside the call). ``"auto"``:
        ``"scan"`` on a CPU, ``"vmap"`` on a GPU/TPU (on two CPU cores the
        vmapped MAP engine took minutes to compile and its batched gradient was
        slower per galaxy than the unbatched one; ``bench/catalog.py``).
    **kwargs
        A name that is a fixed parameter of the model (e.g. ``redshift``) gives
        per-galaxy values (a sequence as long as ``galaxies``) for galaxies that
        do not carry their own; ``calibration_marginalize``, ``cal_n_poly``,
        ``cal_prior_sigma``, ``eline_marginalize``, ``eline_prior_type`` go to the
        Fitter of every galaxy with a spectrum; anything else is a method option.

    Examples
    --------
    >>> result = CatalogFitter(model, galaxies, method="map", n_pad=64).run()  # doctest: +SKIP
    >>> result.summary[0]["stellar_mass_p50"], result.posteriors[0]         # doctest: +SKIP
    """

    def __init__(self, model, galaxies: Sequence[Any], method: str = "vi", key=None,
                 n_pad: int | None = None, client=None, chunk_size: int | None = None,
                 strategy: str = "auto", batch_mode: str = "auto", n_threads: int = 1, **kwargs: Any):
        self.model = model
        self.n_threads = positive_count("n_threads", n_threads)
        self.batch_mode = resolve_batch_mode(batch_mode)
        self.method = registry.canonical_method(method)
        fixed_names = set(model.parameters.fixed_values)
        fixed_columns = {k: v for k, v in kwargs.items() if k in fixed_names}
        self.fitter_options = {k: kwargs[k] for k in SPECTRAL_FITTER_OPTIONS if k in kwargs}
        self.options = method_options(self.method, {k: v for k, v in kwargs.items()
                                                    if k not in fixed_names and k not in self.fitter_options})
        self.n_pad = None if n_pad is None else positive_count("n_pad", n_pad)
        self.chunk_size = positive_count("chunk_size", chunk_size or self.n_pad or 64)
        self.key = jax.random.PRNGKey(42) if key is None else key
        self.client = client
        galaxies = list(galaxies)
        for name, values in fixed_columns.items():
            if np.ndim(values) == 0:
                fixed_columns[name] = np.full(len(galaxies), float(values))
            elif len(values) != len(galaxies):
                raise DataError(f"{name} has {len(values)} values for {len(galaxies)} galaxies")
        self.records = [_as_record(g, i, model, fixed_columns) for i, g in enumerate(galaxies)]
        ids = [r.id for r in self.records]
        if len(set(ids)) != len(ids):
            raise DataError("galaxy ids are not unique")
        self.strategy = choose_strategy(self.method, strategy, any(r.spectro for r in self.records))

    # ------------------------------------------------------------------ running
    def run(self, progress=None) -> CatalogResult:
        """Fit every galaxy.

        Parameters
        ----------
        progress : callable, optional
            Called as ``progress(n_done)`` after each batch / galaxy / chunk.

        Returns
        -------
        CatalogResult
            A galaxy whose input is unusable (e.g. no finite flux) or whose fit
            raises has ``posteriors[i] = None`` and its error in the summary; the
            rest of the catalog is fitted.
        """
        start = time.perf_counter()
        if self.client is not None:
            posteriors, rows = self._run_dask(progress)
        else:
            posteriors, rows = fit_records(self.model, self.records, self.method, self.options,
                                           self.key, self.n_pad, self.strategy, progress,
                                           self.batch_mode, self.fitter_options, self.n_threads)
        return CatalogResult(posteriors, rows, self.strategy, time.perf_counter() - start)

    def _run_dask(self, progress):
        from distributed import as_completed

        model_future = self.client.scatter(self.model, broadcast=True)
        chunks = [self.records[i:i + self.chunk_size]
                  for i in range(0, len(self.records), self.chunk_size)]
        futures = {self.client.submit(_fit_chunk_remote, model_future, chunk, self.method,
                                      self.options, self.key, self.n_pad, self.strategy,
                                      self.batch_mode, self.fitter_options,
                                      pure=False): n for n, chunk in enumerate(chunks)}
        results: dict[int, tuple] = {}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if progress is not None:
                progress(len(chunks[futures[future]]))
        posteriors, rows = [], []
        for n in range(len(chunks)):
            chunk_posts, chunk_rows = results[n]
            for post in chunk_posts:
                if post is not None:
                    post._model = self.model
            posteriors += chunk_posts
            rows += chunk_rows
        _warn_untrustworthy(self.method, posteriors, rows)
        return posteriors, rows


def _warn_untrustworthy(method: str, posteriors: list, rows: list) -> None:
    """One warning per kind for a set of galaxies (the per-galaxy ones of
    ``Fitter.run`` are silenced), naming the galaxies whose own diagnostics say
    their posterior is not yet trustworthy (:func:`tengri.inference.fitter.run_warning`)."""
    from tengri.inference.fitter import run_warning

    flagged: dict[type, list] = {}
    for post, row in zip(posteriors, rows):
        found = None if post is None else run_warning(post, method)
        if found is not None:
            flagged.setdefault(found[0], []).append(row["id"])
    for category, ids in flagged.items():
        shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
        what = ("Pareto k̂ > {k}: their approximations miss part of the posterior "
                "(posterior.diagnostics['pareto_k'])".format(k=PARETO_K_RELIABLE)
                if category is ApproximationWarning else
                f"chains shorter than {CONVERGENCE_TAU_FACTOR:g} autocorrelation times "
                "(posterior.check_convergence())")
        warnings.warn(f"{method}: {what}, for {len(ids)} of {len(rows)} galaxies ({shown}). "
                      f"Check them with a longer run or another method.", category, stacklevel=3)


def positive_count(name: str, value) -> int:
    """``value`` as an int ≥ 1 (bools refused), else ParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _fit_chunk_remote(model, records, method, options, key, n_pad, strategy, batch_mode,
                      fitter_options=None):
    """A dask task: fit ``records``; posteriors travel back without model or fitter
    (the catalog's Approximation/ConvergenceWarnings are raised by the client)."""
    posteriors, rows = _fit_records_quietly(model, records, method, options, key, n_pad,
                                            strategy, None, resolve_batch_mode(batch_mode),
                                            fitter_options, 1)
    for post in posteriors:
        if post is not None:
            post._model = None
            post._fitter = None
    return posteriors, rows


# ------------------------------------------------------------------ the strategies
def fit_records(model, records: Sequence[GalaxyRecord], method: str, options: dict, key,
                n_pad: int | None, strategy: str, progress=None,
                batch_mode: str = "auto", fitter_options: Mapping[str, Any] | None = None,
                n_threads: int = 1) -> tuple[list, list]:
    """Fit ``records`` in this process; ``(posteriors, summary rows)`` in their order.

    ``strategy`` is ``"batched"`` or ``"sequential"`` (as chosen by CatalogFitter);
    ``batch_mode`` and ``n_threads`` as in :class:`CatalogFitter`; ``fitter_options``
    are the spectroscopic Fitter arguments of galaxies with a spectrum.

    Warns
    -----
    ApproximationWarning
        Once, naming the galaxies whose approximation (``vi``, ``mgvi``,
        ``vi_native``, ``pathfinder``) has a Pareto k̂ above 0.7.
    ConvergenceWarning
        Once, naming the galaxies whose MCMC chains are shorter than 5
        autocorrelation times. The per-galaxy warnings of ``Fitter.run`` are
        silenced.
    """
    posteriors, rows = _fit_records_quietly(model, records, method, options, key, n_pad,
                                            strategy, progress, resolve_batch_mode(batch_mode),
                                            fitter_options, n_threads)
    _warn_untrustworthy(method, posteriors, rows)
    return posteriors, rows


def _fit_records_quietly(*args) -> tuple[list, list]:
    """:func:`_fit_records` without the per-galaxy Approximation/ConvergenceWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ApproximationWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return _fit_records(*args)


def _fit_records(model, records, method, options, key, n_pad, strategy, progress, batch_mode,
                 fitter_options, n_threads) -> tuple[list, list]:
    from tengri.catalog_summary import error_row

    posteriors: list = [None] * len(records)
    errors = [""] * len(records)
    rows: dict[int, dict] = {}
    # Fitters (whose data_args hold each galaxy's band tables) live for one batch
    # only; the posteriors keep the model but drop their fitter.
    step = (n_pad or len(records) or 1) if strategy == "batched" else 1
    batches = [list(range(first, min(first + step, len(records)))) for first in range(0, len(records), step)]
    if strategy == "sequential" and n_threads > 1 and len(batches) > 1:
        _fit_in_threads(model, records, batches, method, options, key, batch_mode, fitter_options,
                        n_threads, progress, posteriors, errors, rows)
    else:
        with _Prefetch(model, records, batches if strategy == "batched" else []) as prefetch:
            for number, idx in enumerate(batches):
                _fit_one_batch(model, records, idx, method, options, key, step, strategy, batch_mode,
                               fitter_options, prefetch.contexts(number), posteriors, errors, rows)
                if progress is not None:
                    progress(len(idx))
    return posteriors, [rows[i] if i in rows else error_row(rec.id, method, errors[i])
                        for i, rec in enumerate(records)]


def _fit_in_threads(model, records, batches, method, options, key, batch_mode, fitter_options, n_threads,
                    progress, posteriors, errors, rows) -> None:
    """The one-galaxy ``batches`` of the sequential strategy, ``n_threads`` at a time.

    The first runs alone: it compiles (or loads) the engines and fills the model's
    caches, which the others then only read. Each fit writes its own entries of
    ``posteriors``, ``errors`` and ``rows``.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    def fit(idx):
        _fit_one_batch(model, records, idx, method, options, key, 1, "sequential", batch_mode,
                       fitter_options, None, posteriors, errors, rows)
        return len(idx)

    done = fit(batches[0])
    if progress is not None:
        progress(done)
    with ThreadPoolExecutor(max_workers=n_threads, thread_name_prefix="tengri-fit") as pool:
        for future in as_completed([pool.submit(fit, idx) for idx in batches[1:]]):
            done = future.result()
            if progress is not None:
                progress(done)


class _Prefetch:
    """Batch preparations (:func:`_prepare_contexts`) one batch ahead, in a thread.

    The preparation is numpy (BLAS releases the GIL) and the fits of a batch run
    in XLA's threads, so on two cores the next batch's band tables are built while
    the current batch is being fitted instead of before it.
    """

    def __init__(self, model, records, batches: list):
        self.model, self.records, self.batches = model, records, batches
        self.pool, self.pending = None, {}

    def __enter__(self):
        if len(self.batches) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tengri-prepare")
            self._submit(0)
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return False

    def _submit(self, number: int) -> None:
        if number < len(self.batches):
            chunk = [self.records[i] for i in self.batches[number]]
            self.pending[number] = self.pool.submit(_prepare_contexts, self.model, chunk)

    def contexts(self, number: int) -> tuple | None:
        """:func:`_prepare_contexts` of batch ``number`` (None: let _build_fitters prepare it)."""
        if self.pool is None or number not in self.pending:
            return None
        future = self.pending.pop(number)
        self._submit(number + 1)
        try:
            return future.result()
        except Exception:  # _build_fitters prepares again and reports the error per galaxy
            return None


def _fit_one_batch(model, records, idx, method, options, key, step, strategy, batch_mode,
                   fitter_options, contexts_prepared, posteriors, errors, rows) -> None:
    """Fit the galaxies ``idx`` of ``records`` (one batch, or one galaxy when sequential),
    filling ``posteriors``, ``errors`` and the summary ``rows`` in place."""
    from tengri.catalog_summary import summarise

    free = model.parameters.free_names
    first = idx[0]
    fitters, errs, prepared = _build_fitters(model, [records[i] for i in idx], fitter_options,
                                             batched=strategy == "batched",
                                             contexts_prepared=contexts_prepared)
    ready = [(i, f) for i, f, e in zip(idx, fitters, errs) if f is not None]
    for i, e in zip(idx, errs):
        errors[i] = e
    if strategy == "batched" and ready:
        # galaxies whose data_args differ in shape (e.g. band tables with another
        # number of sub-bands) cannot share a stack: one padded batch per shape
        groups: dict[tuple, list] = {}
        for n, (_, fitter) in enumerate(ready):
            groups.setdefault(_shape_signature(fitter), []).append(n)
        outs = [None] * len(ready)
        for members in groups.values():
            try:
                context = None if prepared is None else _batch_context(
                    prepared, [ready[n][0] - first for n in members], step)
                got = _fit_batch(method, options, key, [records[ready[n][0]] for n in members],
                                 [ready[n][1] for n in members], step, batch_mode, context)
            except Exception as err:  # the whole batch failed: say so for each galaxy
                got = [err] * len(members)
            for n, out in zip(members, got):
                outs[n] = out
    else:
        outs = []
        for i, fitter in ready:
            try:
                outs.append(fitter.run(method, key=galaxy_key(key, records[i].index), **options))
            except Exception as err:  # one failed galaxy must not stop the catalog
                outs.append(err)
    derived = _derived_of_batch(model, outs, step)
    for (i, _), out, values in zip(ready, outs, derived):
        if isinstance(out, BaseException):
            errors[i] = _error_text(out)
            continue
        try:
            rows[i] = summarise(records[i].id, out, free, values)
        except Exception as err:
            errors[i] = _error_text(err)
            continue
        out._fitter = None
        posteriors[i] = out


def _derived_of_batch(model, outs: list, batch: int) -> list:
    """:func:`tengri.catalog_summary.batch_derived` of the posteriors among ``outs`` (a
    Posterior or an exception each), padded to ``batch`` galaxies of equal draws; None
    per galaxy where that is not possible (then each posterior computes its own)."""
    from tengri.catalog_summary import batch_derived

    posts = [out for out in outs if not isinstance(out, BaseException)]
    if len(posts) < 2 or any(p._model is None for p in posts):
        return [None] * len(outs)
    sizes = {len(p.samples[next(iter(p.samples))]) if p.samples is not None else 1 for p in posts}
    try:
        got = iter(batch_derived(model, posts, batch * max(sizes)))
    except Exception:  # e.g. draws of different lengths: per galaxy, each with its own error
        return [None] * len(outs)
    return [None if isinstance(out, BaseException) else next(got) for out in outs]


def _fitter_data(rec: GalaxyRecord) -> tuple:
    """``(data, noise, data_mask)`` for the Fitter: arrays, or the joint dict layout
    ``{"phot": …, "spec": …}`` when the galaxy has a spectrum."""
    if not rec.spectro:
        return rec.flux_obs, rec.noise, rec.mask
    for name in ("spec_obs", "spec_noise"):
        if name not in rec.spectro:
            raise DataError(f"galaxy {rec.id!r} has spectroscopy keys but no {name!r}")
    spec_mask = rec.spectro.get("spec_mask")
    data = {"phot": rec.flux_obs, "spec": np.asarray(rec.spectro["spec_obs"], np.float64)}
    if "wave_spec" in rec.spectro:
        data["wave_spec"] = np.asarray(rec.spectro["wave_spec"], np.float64)
    noise = {"phot": rec.noise, "spec": np.asarray(rec.spectro["spec_noise"], np.float64)}
    mask = {"phot": np.ones(rec.flux_obs.shape, bool) if rec.mask is None else rec.mask,
            "spec": np.ones(data["spec"].shape, bool) if spec_mask is None else np.asarray(spec_mask, bool)}
    return data, noise, mask


def _usable(rec: GalaxyRecord) -> bool:
    """Whether the galaxy has a usable datum (a finite flux with a finite error > 0, or a spectrum)."""
    usable = np.ones(rec.flux_obs.shape, bool) if rec.mask is None else rec.mask.copy()
    usable &= np.isfinite(rec.flux_obs) & np.isfinite(rec.noise) & (rec.noise > 0)
    return bool(usable.any()) or bool(rec.spectro)


def _prepare_contexts(model, records) -> tuple | None:
    """``(rows, model.prepare_batch(...))`` of the usable ``records`` (their positions
    and the batch preparation), or None for models that prepare galaxy by galaxy.

    numpy work only, so :func:`fit_records` runs it for the next batch in a thread
    while the current batch's fits run on the device.
    """
    if not hasattr(model, "prepare_batch") or model.spectroscopy is not None:
        return None
    rows = [n for n, rec in enumerate(records) if _usable(rec)]
    return rows, model.prepare_batch([records[n].fixed for n in rows])


def _build_fitters(model, records, fitter_options=None, batched: bool = False,
                   contexts_prepared: tuple | None = None) -> tuple[list, list, Any]:
    """One Fitter per galaxy (None + error text where the input is unusable).

    ``fitter_options``: the spectroscopic Fitter arguments (``SPECTRAL_FITTER_OPTIONS``),
    used for galaxies with a spectrum. With ``batched`` (photometric models), the
    galaxies' contexts come from one :meth:`SEDModel.prepare_batch` call
    (``contexts_prepared``: :func:`_prepare_contexts` of ``records`` when already
    done), which the Fitters then use instead of preparing one by one; the third
    value is ``(stacked contexts, galaxy position → stacked row)`` for
    :func:`_batch_context`, else None.
    """
    from tengri.inference.fitter import Fitter

    usable_ones = [_usable(rec) for rec in records]
    prepared, contexts = None, [None] * len(records)
    if batched and contexts_prepared is None:
        contexts_prepared = _prepare_contexts(model, records)
    if batched and contexts_prepared is not None:
        rows, (got, stacked, _) = contexts_prepared
        for row, n in enumerate(rows):
            contexts[n] = got[row]  # None where prepare fails: the Fitter then raises its error
        if stacked is not None:
            first_row = next(c for c in got if c is not None)
            in_stack = {id(leaf) for leaf in jax.tree_util.tree_leaves(stacked)}
            shared = {id(leaf) for leaf in jax.tree_util.tree_leaves(first_row) if id(leaf) in in_stack}
            prepared = (stacked, {n: row for row, n in enumerate(rows)}, shared, len(rows))
    scope = model.use_prepared([rec.fixed for rec in records], contexts) if prepared is not None else None
    fitters, errors = [], []
    with scope if scope is not None else _no_scope():
        for rec, ok in zip(records, usable_ones):
            try:
                if not ok:
                    raise DataError(f"galaxy {rec.id!r}: no usable photometry (every flux or error "
                                    "is missing, NaN or ≤ 0)")
                data, noise, mask = _fitter_data(rec)
                extra = dict(fitter_options or {}) if rec.spectro else {}
                fitters.append(Fitter(model, data, noise, data_mask=mask, fixed=rec.fixed, **extra))
                errors.append("")
            except Exception as err:
                fitters.append(None)
                errors.append(_error_text(err))
    return fitters, errors, prepared


def _no_scope():
    import contextlib

    return contextlib.nullcontext()


def _batch_context(prepared, positions: list, batch: int) -> dict:
    """The stacked contexts of the galaxies at ``positions`` (of the records given to
    :func:`_build_fitters`), padded to ``batch`` rows with the first one's (as
    :func:`_dummy_args` pads); the stacked arrays themselves when their rows are the batch."""
    stacked, row_of, shared, n_rows = prepared
    rows = [row_of[p] for p in positions]
    rows += [rows[0]] * (batch - len(rows))
    if n_rows == batch and rows == list(range(batch)):
        return stacked
    index = np.asarray(rows)
    return jax.tree_util.tree_map(lambda leaf: leaf if id(leaf) in shared else np.take(leaf, index, axis=0),
                                  stacked)


def _data_axes(fitter) -> tuple:
    """``(treedef, leaf axes)``: None for leaves shared by every galaxy of the model
    (the same object in two independently built problems, e.g. the grids), 0 else."""
    problem = fitter.problem
    again = fitter.model.build_problem(fitter.data, fitter.noise, fitter.mask, fixed=fitter.fixed)
    leaves, treedef = jax.tree_util.tree_flatten(problem.data_args)
    other = jax.tree_util.tree_leaves(again.data_args)
    return treedef, tuple(None if a is b else 0 for a, b in zip(leaves, other))


def _data_axes_between(first, second) -> tuple:
    """:func:`_data_axes` from two galaxies of one batch (no third problem built): with
    batch-prepared contexts every per-galaxy leaf is its own object (a row of the
    stacked contexts, its own data), and shared leaves are the same object in both."""
    leaves, treedef = jax.tree_util.tree_flatten(first.problem.data_args)
    other = jax.tree_util.tree_leaves(second.problem.data_args)
    return treedef, tuple(None if a is b else 0 for a, b in zip(leaves, other))


def _shape_signature(fitter) -> tuple:
    """Shapes and dtypes of a galaxy's data_args leaves (equal ones can be stacked)."""
    # leaf.dtype, not np.result_type(leaf): numpy deprecates reading a dtype from an array
    return tuple((np.shape(leaf), np.dtype(getattr(leaf, "dtype", type(leaf))).str)
                 for leaf in jax.tree_util.tree_leaves(fitter.problem.data_args))


def _dummy_args(data_args: dict) -> dict:
    """A galaxy that uses no datum (padding): its fit is the prior's mode."""
    mask = np.zeros(np.shape(data_args["mask"]), bool)
    return {**data_args, "mask": mask, "data": np.zeros(np.shape(data_args["data"])),
            "noise": np.ones(np.shape(data_args["noise"])), "log_norm": np.float64(0.0)}


def _stack(all_args: list, axes: tuple, context: dict | None = None) -> Any:
    """Stack galaxies' data_args along axis 0 (shared leaves once), on the device.

    ``context``: the context part (prior tables, band matrices, band tables)
    already stacked, in the batch's rows: those leaves are taken as they are.
    """
    treedef, leaf_axes = axes
    columns = [jax.tree_util.tree_leaves(args) for args in all_args]
    given = columns[0]
    if context is not None:
        template, template_def = jax.tree_util.tree_flatten({**all_args[0], **context})
        if template_def != treedef:
            raise DataError("the stacked contexts do not have the galaxies' data_args structure")
        given = template
    leaves = []
    for j, axis in enumerate(leaf_axes):
        if axis is None:
            leaves.append(columns[0][j])
        elif given[j] is not columns[0][j]:  # a stacked context leaf
            leaves.append(jax.device_put(given[j]))
        else:
            leaves.append(jax.device_put(np.stack([np.asarray(c[j]) for c in columns])))
    return jax.tree_util.tree_unflatten(treedef, leaves)


_BATCHED: dict[tuple, Any] = {}
BATCH_MODES = ("vmap", "scan")


def _batched(engine, axes: tuple, n_unbatched: int, mode: str = "vmap"):
    """One jitted call of ``engine`` over a batch; memoised.

    The call takes (keys (n, 2), points (n, d), stacked data_args, then
    ``n_unbatched`` arguments shared by the batch). ``mode="vmap"`` batches the
    engine (``jax.vmap``); ``"scan"`` runs it galaxy after galaxy in a
    ``lax.map`` loop (same program as the single-galaxy engine: compiles as fast
    and pays no lock-step cost, but has no batch parallelism).
    """
    memo = (engine, axes, n_unbatched, mode)
    if memo not in _BATCHED:
        treedef, leaf_axes = axes

        def call(keys, points, data_args, *rest):
            leaves = jax.tree_util.tree_leaves(data_args)
            mapped = [leaf for leaf, axis in zip(leaves, leaf_axes) if axis == 0]

            def one(xs):
                key, point, own = xs
                own, shared = iter(own), iter(leaves)
                full = [next(own) if axis == 0 else leaf
                        for axis, leaf in zip(leaf_axes, shared)]
                # the same arithmetic as the unbatched engine (see the module docstring)
                key, point, full = jax.lax.optimization_barrier((key, point, full))
                return engine(key, point, jax.tree_util.tree_unflatten(treedef, full), *rest)

            if mode == "vmap":
                return jax.vmap(one)((keys, points, mapped))
            return jax.lax.map(one, (keys, points, mapped))

        _BATCHED[memo] = jax.jit(call)
    return _BATCHED[memo]


cache.register_gc_hook(_BATCHED.clear)


def _fit_batch(method: str, options: dict, key, records, fitters, batch: int, mode: str,
               context: dict | None = None) -> list:
    """Vmapped fits of one batch (padded to ``batch``): a Posterior or an exception each.

    ``context``: the galaxies' prepared contexts already stacked (``batch`` rows,
    :func:`_batch_context`), used instead of stacking each galaxy's.
    """
    from tengri.inference.methods import optimize
    from tengri.inference.problem import RawResult

    start = time.perf_counter()
    opts = registry.method_options(method, options)
    problem = fitters[0].problem
    n_real = len(fitters)
    axes = _data_axes(fitters[0]) if context is None or n_real < 2 else _data_axes_between(*fitters[:2])
    all_args = [f.problem.data_args for f in fitters]
    all_args += [_dummy_args(all_args[0])] * (batch - n_real)
    data_args = _stack(all_args, axes, context)
    keys = galaxy_keys(key, [r.index for r in records] + [records[0].index] * (batch - n_real))
    inits = np.stack([np.asarray(f.problem.init, np.float64) for f in fitters]
                     + [np.asarray(problem.init, np.float64)] * (batch - n_real))
    with cache.persistent():  # the engines below are used by every batch
        if method in VMAP_POINT_METHODS:
            found, extra = _vmapped_point(method, opts, problem, keys, inits, data_args, axes, mode)
        else:
            found, extra = _vmapped_mcmc(method, opts, problem, keys, inits, data_args, axes, mode)
    physical = None
    if method in VMAP_POINT_METHODS:
        physical = _physical_of_batch(problem, keys, found, extra, data_args, axes, mode)
    found = jax.tree.map(np.asarray, found)
    extra = jax.tree.map(np.asarray, extra) if extra is not None else None
    wall = (time.perf_counter() - start) / n_real
    outs = []
    for g, fitter in enumerate(fitters):
        try:
            one = {k: v[g] for k, v in found.items()}
            if method in VMAP_POINT_METHODS:
                if not np.isfinite(one["neg_log_density"]):
                    raise FloatingPointError("the MAP's log posterior is not finite")
                n_starts, _, tol = optimize._map_options(method, opts)
                diagnostics = optimize._map_diagnostics(one, tol, n_starts)
                samples = None
                if method == "laplace":
                    gauss = {k: v[g] for k, v in extra.items()}
                    diagnostics.update(
                        covariance=gauss["covariance"],
                        condition_number=float(gauss["condition_number"]),
                        hessian_positive_definite=bool(gauss["positive_definite"]),
                        hessian_min_eigenvalue=float(gauss["min_eigenvalue"]),
                        n_clipped_eigenvalues=int(gauss["n_clipped"]),
                    )
                    samples = gauss["samples"]
                raw = RawResult(method=method, point=one["point"], samples=samples,
                                diagnostics=diagnostics, loss_history=optimize._map_history(one))
                own = {k: v[g] for k, v in physical.items()}
                values = ({k: v[:1] for k, v in own.items()},
                          None if samples is None else {k: v[1:] for k, v in own.items()})
                outs.append(fitter._posterior(raw, wall, values))
            else:
                outs.append(fitter._posterior(_mcmc_raw(method, opts, one), wall))
        except Exception as err:
            outs.append(err)
    return outs


_PHYSICAL: dict[Any, Any] = {}
cache.register_gc_hook(_PHYSICAL.clear)


def _physical_engine(to_physical):
    """``engine(key, z (n, d), data_args) -> dict of (n,)``: a galaxy's latent points
    in physical values, in the engine signature of :func:`_batched`; memoised."""
    if to_physical not in _PHYSICAL:
        def engine(key, z, data_args):
            return jax.vmap(to_physical, in_axes=(0, None))(z, data_args)

        _PHYSICAL[to_physical] = engine
    return _PHYSICAL[to_physical]


def _physical_of_batch(problem, keys, found, extra, data_args, axes, mode) -> dict:
    """Physical values of each galaxy's MAP (column 0) and Laplace draws (columns 1…)
    in one call for the batch: name → numpy array (batch, 1 + n_draws)."""
    z = found["point"][:, None, :]
    if extra is not None:
        draws = extra["samples"]
        z = jax.numpy.concatenate([z, draws.reshape(draws.shape[0], -1, draws.shape[-1])], axis=1)
    out = _batched(_physical_engine(problem.to_physical), axes, 0, mode)(keys, z, data_args)
    return {k: np.asarray(v) for k, v in out.items()}


def _vmapped_point(method, opts, problem, keys, inits, data_args, axes, mode):
    """MAP (and Laplace Gaussians) of a batch, exactly as run_map / run_laplace do."""
    from tengri.inference.methods import optimize

    n_starts, n_steps, tol = optimize._map_options(method, opts)
    map_keys = keys
    if method == "laplace":
        split = jax.vmap(jax.random.split)(keys)
        map_keys, draw_keys = split[:, 0], split[:, 1]
    engine = optimize.build_map_engine(problem.log_likelihood, problem.n_dim,
                                       optimize.history_capacity(n_steps))
    found = _batched(engine, axes, 3, mode)(map_keys, inits, data_args, np.int64(n_starts),
                                      np.int64(n_steps), np.float64(tol))
    if method != "laplace":
        return found, None
    n_samples = optimize.positive_int("laplace", "n_samples", opts["n_samples"])
    lap = optimize.build_laplace_engine(problem.log_likelihood, problem.n_dim, n_samples)
    return found, _batched(lap, axes, 0, mode)(draw_keys, found["point"], data_args)


def _vmapped_mcmc(method, opts, problem, keys, inits, data_args, axes, mode):
    """HMC-family chains of a batch, per galaxy as ``mcmc._run_hmc_family`` runs them."""
    from tengri.inference.methods import mcmc, optimize

    n_warmup = optimize.positive_int(method, "n_warmup", opts["n_warmup"])
    n_burnin = optimize.positive_int(method, "n_burnin", opts["n_burnin"], minimum=0)
    n_samples = optimize.positive_int(method, "n_samples", opts["n_samples"])
    n_chains = optimize.positive_int(method, "n_chains", opts["n_chains"])
    max_doublings = optimize.positive_int(method, "max_num_doublings", opts.get("max_num_doublings", 10))
    use_dense = mcmc.resolved_dense(method, opts["use_dense"], problem.n_dim)
    metric_init = mcmc.checked_metric_init(method, opts["metric_init"])
    doublings = max_doublings if method == "mcmc_nuts" else 0
    warmup = mcmc.build_hmc_warmup_engine(problem.log_likelihood, problem.n_dim, method, n_warmup,
                                          use_dense, doublings, metric_init)
    sampling = mcmc.build_hmc_sampling_engine(problem.log_likelihood, problem.n_dim, method,
                                              n_burnin, n_samples, use_dense, doublings)
    # per galaxy: key → (key_map, key_chains) as in mcmc._chain_keys
    split = jax.vmap(jax.random.split)(keys)
    key_map, key_chains = split[:, 0], split[:, 1]
    if opts["start"] == "map":
        defaults = registry.method_options("map", {})
        map_engine = optimize.build_map_engine(problem.log_likelihood, problem.n_dim,
                                               optimize.history_capacity(defaults["n_steps"]))
        z0 = _batched(map_engine, axes, 3, mode)(key_map, inits, data_args, np.int64(mcmc.MAP_STARTS),
                                           np.int64(defaults["n_steps"]),
                                           np.float64(defaults["tol"]))["point"]
    else:
        z0 = inits
    nis, alpha, delta = (np.int64(opts.get("num_integration_steps", 1)),
                         np.float64(opts.get("alpha", 1.0)), np.float64(opts.get("delta", 0.0)))
    chain_keys = [jax.vmap(lambda k, c=chain: jax.random.fold_in(k, c))(key_chains)
                  for chain in range(n_chains)]
    run_warmup = _batched(warmup, axes, 5, mode)
    warmed = [jax.tree.map(np.asarray, run_warmup(
        keys_c, z0, data_args, np.float64(opts["target_accept"]), nis, alpha, delta,
        np.float64(opts.get("init_jitter", mcmc.INIT_JITTER)))) for keys_c in chain_keys]
    warmed = jax.tree.map(lambda *leaves: np.stack(leaves, axis=1), *warmed)  # (batch, chain, ...)
    step_size, metric = mcmc.pooled_adaptation(warmed["step_size"], warmed["inverse_mass_matrix"],
                                               opts.get("adaptation", "pooled"))
    run_sampling = _batched(sampling, axes, 3, mode)
    drawn = [jax.tree.map(np.asarray, run_sampling(
        keys_c, {"state": tuple(leaf[:, c] for leaf in warmed["state"]),
                 "step_size": step_size[:, c], "inverse_mass_matrix": metric[:, c]},
        data_args, nis, alpha, delta)) for c, keys_c in enumerate(chain_keys)]
    drawn = {k: np.stack([d[k] for d in drawn], axis=1) for k in drawn[0]}
    stacked = mcmc.sampled_chains(warmed, drawn, step_size, metric)
    stacked["_sizes"] = np.tile([n_chains, n_warmup, n_burnin, n_samples], (len(keys), 1))
    return stacked, None


def _mcmc_raw(method, opts, one: dict):
    from tengri.inference.problem import RawResult

    n_chains, n_warmup, n_burnin, n_samples = (int(v) for v in one["_sizes"])
    samples = one["samples"]
    from tengri.inference.methods.mcmc import chain_diagnostics

    diagnostics = {**chain_diagnostics(one, n_chains, n_warmup, n_burnin, n_samples),
                   "catalog_strategy": "batched", "adaptation": opts.get("adaptation", "pooled")}
    return RawResult(method=method, point=samples.mean(axis=(0, 1)), samples=samples,
                     diagnostics=diagnostics, loss_history=None)
