"""Compiled programs: the persistent XLA cache, lean/persistent runs, and gc.

On a CPU, compiling an inference engine costs far more than running it (seconds
to tens of seconds against milliseconds; see ``bench/compile.py``). tengri keeps
compiled programs at three levels:

1. **Engines** (:mod:`tengri.inference.methods._engine_cache`): one jitted
   function per ``(likelihood, dimension, static options)``, shared by every
   galaxy of a model configuration (data are traced arguments).
2. **Shared problem functions** (:func:`share_problem_functions`): the
   likelihood functions are jitted (traced once per engine rather than at every
   call site), and Fitters whose compile signatures are equal use one set of
   them, so that two ``SEDModel`` instances built from the same configuration
   share engines too. Before sharing, the programs of the two models are traced
   and compared (jaxpr text and constants), so a signature that misses a setting
   (e.g. a cosmology baked into the code as constants) costs a compilation,
   never a wrong answer.
3. **The persistent XLA cache** (:func:`enable_persistent_cache`): compiled
   executables on disk, so a fresh process skips XLA compilation. It still
   traces and lowers each program and loads it from disk, which is not free
   (numbers in ``bench/out/compile_*.json``).

Lean runs (the default)
-----------------------
``Fitter.run(method, lean=None)`` takes ``lean`` from the innermost
``with tengri.lean():`` / ``with tengri.persistent():`` block, ``True`` outside
both. After a lean run, the engines of earlier runs with another
``(compile signature, method)`` are dropped, except those the current run used
too (e.g. the MAP engine that starts a sampler). Engines of earlier runs with
the same signature and method (e.g. another ``n_samples``), engines never used by
a run (pre-compiled by ``Fitter.compile`` or ``compile_modes`` and waiting for
their first run) and all forward-model, log-density and ``to_physical`` programs
survive. A
MAP → NUTS → posterior-predictive session therefore holds one sampler body at a
time, and a loop that calls ``run`` with the same model and method compiles once.
``persistent`` keeps everything. NIFTy's own jitted programs (methods ``vi`` and
``mgvi``) live in jax's caches, not in the engine cache: only :func:`gc` drops them.

:func:`gc` drops everything: engines, shared problem functions, the Fitter's
``to_physical`` programs and all of jax's in-memory caches (``jax.clear_caches``).
Use it between loops over many different model configurations.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc as _python_gc
import os
import threading
import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator

import jax
import numpy as np

from tengri.inference.methods import _export_cache
from tengri.inference.methods._engine_cache import (
    clear_engines, drop_stale_engines, mark_run,
)
from tengri.inference.problem import Problem

__all__ = [
    "CACHE_DIR_ENV", "DEFAULT_PERSISTENT_CACHE_DIR",
    "enable_persistent_cache", "disable_persistent_cache", "persistent_cache_dir",
    "default_persistent_cache_dir",
    "lean", "persistent", "lean_default", "gc",
    "count_compilations", "CompileCounter",
    "share_problem_functions", "n_shared_signatures",
]

CACHE_DIR_ENV = "TENGRI_CACHE_DIR"
DEFAULT_PERSISTENT_CACHE_DIR = Path("/tmp/tengri_jax_cache")
EXPORTED_SUBDIR = "tengri-exported"
"""Sub-folder of the persistent cache holding exported engines (``methods._export_cache``)."""

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_PERSISTENT_HIT_EVENT = "/jax/compilation_cache/cache_hits"


# ------------------------------------------------------------------ persistent XLA cache
def default_persistent_cache_dir() -> Path:
    """``$TENGRI_CACHE_DIR/xla`` if ``TENGRI_CACHE_DIR`` is set, else ``/tmp/tengri_jax_cache``."""
    base = os.environ.get(CACHE_DIR_ENV)
    return Path(base).expanduser() / "xla" if base else DEFAULT_PERSISTENT_CACHE_DIR


def enable_persistent_cache(path: str | os.PathLike | None = None) -> Path:
    """Store compiled XLA programs on disk and look them up before compiling.

    Every program is cached, however small or quick to compile
    (``jax_persistent_cache_min_compile_time_secs = 0`` and
    ``jax_persistent_cache_min_entry_size_bytes = 0``), so a fresh process
    compiles nothing that an earlier process with the same code, shapes and jax
    version compiled. Takes effect immediately, also in a process that has
    already compiled programs.

    Parameters
    ----------
    path : str or path-like, optional
        Cache directory (created if missing). Default
        :func:`default_persistent_cache_dir`.

    Returns
    -------
    pathlib.Path
        The directory in use.

    Notes
    -----
    The cache is trusted code: do not point it at a directory that others can
    write to. Entries are keyed by the program, the compile options, the
    backend and the jax/jaxlib versions; stale ones are never reused.
    """
    from jax.experimental.compilation_cache import compilation_cache

    directory = default_persistent_cache_dir() if path is None else Path(path).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # jax decides once per process whether the cache is in use (at the first
    # compilation); resetting makes it look again at the new directory.
    compilation_cache.reset_cache()
    _export_cache.enable(directory / EXPORTED_SUBDIR)
    return directory


def disable_persistent_cache() -> None:
    """Stop reading and writing the persistent XLA cache (files are kept)."""
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    _export_cache.disable()


def persistent_cache_dir() -> Path | None:
    """The persistent XLA cache directory in use, or None."""
    value = jax.config.jax_compilation_cache_dir
    return Path(value) if value else None


# ------------------------------------------------------------------ lean / persistent
_LEAN: ContextVar[bool] = ContextVar("tengri_lean", default=True)


@contextlib.contextmanager
def lean() -> Iterator[None]:
    """Runs inside the block default to ``lean=True`` (the default outside any block).

    Examples
    --------
    >>> with tengri.persistent():                      # doctest: +SKIP
    ...     with tengri.lean():
    ...         post = fitter.run("nuts")              # drops stale engines
    """
    token = _LEAN.set(True)
    try:
        yield
    finally:
        _LEAN.reset(token)


@contextlib.contextmanager
def persistent() -> Iterator[None]:
    """Runs inside the block default to ``lean=False``: every compiled engine is kept.

    Examples
    --------
    >>> with tengri.persistent():                      # doctest: +SKIP
    ...     for method in ("map", "nuts", "nss"):
    ...         posts[method] = fitter.run(method)     # all three engines stay
    """
    token = _LEAN.set(False)
    try:
        yield
    finally:
        _LEAN.reset(token)


def lean_default() -> bool:
    """The ``lean`` of a ``Fitter.run(..., lean=None)`` here (innermost block; True)."""
    return _LEAN.get()


def finish_run(used_engines: Iterable[tuple], tag: Hashable, lean_run: bool) -> int:
    """Book-keeping after a successful run: tag its engines, drop stale ones if lean.

    Parameters
    ----------
    used_engines : iterable of engine keys
        What the run asked for (``recording_engine_use``).
    tag : hashable
        ``(compile signature, canonical method)`` of the run.
    lean_run : bool

    Returns
    -------
    int
        Number of engines dropped.
    """
    used = set(used_engines)
    mark_run(used, tag)
    return drop_stale_engines(tag, keep=used) if lean_run else 0


# ------------------------------------------------------------------ shared problem functions
@dataclass(frozen=True)
class _ProblemFunctions:
    log_likelihood: Callable
    residuals: Callable | None
    to_physical: Callable

    def jitted(self) -> "_ProblemFunctions":
        return _ProblemFunctions(_jitted(self.log_likelihood), _jitted(self.residuals),
                                 _jitted(self.to_physical))


_JITTED_ATTRIBUTE = "_tengri_jitted"


def _jitted(fn: Callable | None) -> Callable | None:
    """``jax.jit(fn)``, one wrapper per function object (kept on the function).

    Engines call the likelihood many times in their body (value, gradient, line
    search, warm-up, sampler); jitted, it is traced once per engine instead of at
    every call site, and lowered once. On the photometric SED model this took
    the MAP engine from 17 s to 4 s of tracing and from 48 s to 23 s of XLA
    compilation. A function that takes no attribute is returned as it is (a
    fresh wrapper per call would defeat the engine cache).
    """
    if fn is None or isinstance(fn, jax.stages.Wrapped):
        return fn
    wrapper = getattr(fn, _JITTED_ATTRIBUTE, None)
    if wrapper is None:
        wrapper = jax.jit(fn)
        try:
            setattr(fn, _JITTED_ATTRIBUTE, wrapper)
        except (AttributeError, TypeError):
            return fn
    return wrapper


_SHARE_LOCK = threading.RLock()
_CANONICAL: dict[Hashable, _ProblemFunctions] = {}
# a model's log-likelihood -> the shared functions its Fitters use, or _OWN (its
# own functions; not stored, so that the entry dies with the model)
_RESOLVED: "weakref.WeakKeyDictionary[Callable, Any]" = weakref.WeakKeyDictionary()
_OWN = object()


def _functions(problem: Problem) -> _ProblemFunctions:
    return _ProblemFunctions(problem.log_likelihood, problem.residuals, problem.to_physical)


def _same_programs(a: _ProblemFunctions, b: _ProblemFunctions, problem: Problem) -> bool:
    """True when ``a`` and ``b`` trace to identical programs on ``problem``'s data."""
    if (a.residuals is None) != (b.residuals is None):
        return False
    z = jax.ShapeDtypeStruct(np.shape(problem.init), np.float64)
    pairs = [(a.log_likelihood, b.log_likelihood), (a.to_physical, b.to_physical)]
    if a.residuals is not None:
        pairs.append((a.residuals, b.residuals))
    try:
        return all(_export_cache.program(fa, z, problem.data_args) == _export_cache.program(fb, z, problem.data_args)
                   for fa, fb in pairs)
    except Exception:  # a function that does not trace on the other's data: not shareable
        return False


def share_problem_functions(signature: Hashable, problem: Problem) -> Problem:
    """``problem`` with jitted likelihood functions, shared by equal signatures.

    Engines are memoised on the likelihood *object*, so Fitters built on two
    ``SEDModel`` instances of one configuration would otherwise compile
    everything twice. The first model seen with a compile signature provides the
    functions; a later model with the same signature uses them when its own
    functions trace to the same programs (checked once per model, on its data),
    and keeps its own otherwise. Either way the functions are wrapped in
    ``jax.jit`` (one wrapper per function; see ``_jitted``), which makes engines
    much cheaper to trace and compile without changing what they compute.

    Parameters
    ----------
    signature : hashable
        ``Fitter.compile_signature()``.
    problem : Problem

    Returns
    -------
    Problem
        Same data; ``log_likelihood``/``residuals``/``to_physical`` jitted, and
        possibly replaced by equivalent shared ones.
    """
    own = _functions(problem)
    with _SHARE_LOCK:
        resolved = _RESOLVED.get(problem.log_likelihood)
        if resolved is None:
            canonical = _CANONICAL.setdefault(signature, own)
            shared = canonical is not own and _same_programs(canonical, own, problem)
            resolved = canonical if shared else _OWN
            _RESOLVED[problem.log_likelihood] = resolved
        functions = (own if resolved is _OWN else resolved).jitted()
    _export_cache.register_problem_functions(
        (functions.log_likelihood, functions.residuals, functions.to_physical), problem.init, problem.data_args)
    return dataclasses.replace(problem, log_likelihood=functions.log_likelihood,
                               residuals=functions.residuals, to_physical=functions.to_physical)


def n_shared_signatures() -> int:
    """Number of compile signatures with shared problem functions."""
    return len(_CANONICAL)


# ------------------------------------------------------------------ gc
_GC_HOOKS: list[Callable[[], Any]] = []
_BACKGROUND: "weakref.WeakSet[threading.Thread]" = weakref.WeakSet()


def register_gc_hook(clear: Callable[[], Any]) -> None:
    """Have :func:`gc` call ``clear()`` (for module-level caches of compiled programs)."""
    _GC_HOOKS.append(clear)


def track_background_compile(thread: threading.Thread) -> None:
    """Let :func:`gc` wait for ``thread`` (a background compilation) before clearing."""
    _BACKGROUND.add(thread)


def gc() -> dict[str, int]:
    """Drop every compiled program tengri and jax hold in memory.

    Waits for running background compilations, then forgets all engines, the
    shared problem functions and the Fitter's ``to_physical`` programs, and calls
    ``jax.clear_caches()``. The persistent disk cache is untouched. Existing
    Fitters stay usable; their next run compiles again (or loads from disk).

    Returns
    -------
    dict
        ``{"engines": n, "shared_signatures": n}``: how many were dropped.
    """
    for thread in list(_BACKGROUND):
        if thread is not threading.current_thread():
            thread.join()
    dropped = {"engines": clear_engines()}
    with _SHARE_LOCK:
        dropped["shared_signatures"] = len(_CANONICAL)
        _CANONICAL.clear()
        _RESOLVED.clear()
    for clear in _GC_HOOKS:
        clear()
    jax.clear_caches()
    _python_gc.collect()
    return dropped


# ------------------------------------------------------------------ counting compilations
@dataclass
class CompileCounter:
    """What :func:`count_compilations` saw.

    Attributes
    ----------
    durations_s : list of float
        One entry per XLA compilation (seconds).
    load_durations_s : list of float
        One entry per program loaded from the persistent cache instead.
    """

    durations_s: list[float] = field(default_factory=list)
    load_durations_s: list[float] = field(default_factory=list)
    _pending_loads: int = 0

    @property
    def n_compiles(self) -> int:
        return len(self.durations_s)

    @property
    def compile_time_s(self) -> float:
        return float(sum(self.durations_s))

    @property
    def persistent_cache_hits(self) -> int:
        return len(self.load_durations_s)


@contextlib.contextmanager
def count_compilations() -> Iterator[CompileCounter]:
    """Count XLA compilations and persistent-cache loads inside the block.

    Every backend compilation counts, of an engine or of a single eager
    operation; a program found in jax's in-memory caches counts as nothing, one
    loaded from the persistent cache (or an engine's stored executable, see
    ``methods._export_cache``) as a load. Events of every thread count;
    with compilations in several threads at once, a load may be counted as a
    compilation or the reverse (jax reports them as one event plus a "hit").

    Examples
    --------
    >>> with count_compilations() as seen:             # doctest: +SKIP
    ...     fitter.run("map")
    >>> seen.n_compiles, seen.persistent_cache_hits    # doctest: +SKIP
    """
    counter = CompileCounter()
    lock = threading.Lock()

    # jax times a disk load as a "backend compile" too; the cache-hit event comes
    # first, from inside that timed block.
    def on_event(event: str, **kwargs: Any) -> None:
        if event == _PERSISTENT_HIT_EVENT:
            with lock:
                counter._pending_loads += 1

    def on_duration(event: str, duration: float, **kwargs: Any) -> None:
        if event == _export_cache.EXECUTABLE_LOAD_EVENT:
            with lock:
                counter.load_durations_s.append(duration)
            return
        if event != _BACKEND_COMPILE_EVENT:
            return
        with lock:
            if counter._pending_loads:
                counter._pending_loads -= 1
                counter.load_durations_s.append(duration)
            else:
                counter.durations_s.append(duration)

    jax.monitoring.register_event_listener(on_event)
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        yield counter
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        jax.monitoring.unregister_event_listener(on_event)
