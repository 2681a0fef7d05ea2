"""Memoisation of compiled inference engines, shared by every runner.

An *engine* is a jitted function built by ``build_<method>_engine(log_likelihood,
n_dim, *static_options)``. Its compiled program depends only on the likelihood
function, the dimension and the static options; everything galaxy-specific
(``data_args``), the start point, the key and dynamic options are traced arguments.
Returning the *same* jitted object for the same ``(builder, log_likelihood, n_dim,
static options)`` therefore lets a second galaxy reuse the compiled program: jax's
own compilation cache is keyed on the function object, so a fresh closure would
compile again even with identical code.

Usage::

    @memoised_engine
    def build_map_engine(log_likelihood, n_dim, n_starts):
        @jax.jit
        def engine(key, z0, data_args, max_steps, tol):
            ...
        return engine

Static options must be hashable (ints, floats, bools, strings, tuples). The cache
holds strong references (an engine closes over its likelihood anyway); dropping an
entry lets jax free the compiled program, and building it again compiles again
(or loads it from the persistent XLA cache).

Bookkeeping for ``Fitter.run(..., lean=True)`` (policy in
:mod:`tengri.inference.cache`): :func:`recording_engine_use` collects the keys of
the engines a block of code asks for, :func:`mark_run` tags those entries with the
run that used them, and :func:`drop_stale_engines` removes entries that earlier
runs used but no run with the current tag did. Entries never used by a tagged run
(pre-compiled by ``Fitter.compile`` or built by a runner called directly) are
never stale.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Iterator

from tengri.inference.methods._export_cache import ExportedEngine

__all__ = [
    "memoised_engine", "clear_engines", "n_cached_engines", "cached_engines", "EngineEntry",
    "recording_engine_use", "mark_run", "drop_stale_engines",
]

_ENGINES: dict[tuple, Callable] = {}
# key -> tags (e.g. (compile signature, method)) of the Fitter runs that used it
_RUN_TAGS: dict[tuple, set[Hashable]] = {}
# A background compile thread and the user's thread may ask for the same engine.
_LOCK = threading.RLock()
# The set collecting engine keys inside recording_engine_use (per thread: a new
# thread starts with the default, None, so a background compile records nothing).
_USED: ContextVar[set[tuple] | None] = ContextVar("tengri_engines_used", default=None)


@dataclass(frozen=True)
class EngineEntry:
    """One memoised engine, as reported by :func:`cached_engines`.

    Attributes
    ----------
    builder : str
        Name of the builder, e.g. ``"build_map_engine"``.
    n_dim : int
        Latent dimension.
    static : tuple
        Static options, positional then ``(name, value)`` pairs of keyword ones.
    run_tags : frozenset
        Tags of the runs that used it (empty: never used by a tagged run).
    """

    builder: str
    n_dim: int
    static: tuple
    run_tags: frozenset


def _cache_key(builder: Callable, log_likelihood: Callable, n_dim: int,
               static: tuple, static_kw: dict[str, Any]) -> tuple:
    key = (builder, log_likelihood, int(n_dim), static, tuple(sorted(static_kw.items())))
    try:
        hash(key)
    except TypeError as err:
        raise TypeError(
            f"{builder.__qualname__}: static engine options must be hashable "
            f"(int, float, bool, str, tuple); got {static!r} {static_kw!r}"
        ) from err
    return key


def memoised_engine(builder: Callable) -> Callable:
    """Decorate an engine builder so equal arguments return the same engine.

    Parameters
    ----------
    builder : callable
        ``builder(log_likelihood, n_dim, *static, **static_kw) -> engine``.

    Returns
    -------
    callable
        Same signature as ``builder``; the engine for a given
        ``(log_likelihood, n_dim, static options)`` is built once per process
        (until it is dropped). ``log_likelihood`` is compared by identity.
    """

    @functools.wraps(builder)
    def build(log_likelihood: Callable, n_dim: int, *static: Any, **static_kw: Any) -> Callable:
        key = _cache_key(builder, log_likelihood, n_dim, static, static_kw)
        with _LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = ExportedEngine(
                    builder(log_likelihood, int(n_dim), *static, **static_kw), log_likelihood,
                    f"{builder.__module__}.{builder.__qualname__}|{int(n_dim)}|{key[3]!r}|{key[4]!r}")
                _ENGINES[key] = engine
        used = _USED.get()
        if used is not None:
            used.add(key)
        return engine

    return build


@contextlib.contextmanager
def recording_engine_use() -> Iterator[set[tuple]]:
    """Collect the keys of every engine asked for inside the block (this thread)."""
    used: set[tuple] = set()
    token = _USED.set(used)
    try:
        yield used
    finally:
        _USED.reset(token)


def mark_run(keys: Iterable[tuple], tag: Hashable) -> None:
    """Record that the run tagged ``tag`` used the engines ``keys``."""
    with _LOCK:
        for key in keys:
            if key in _ENGINES:
                _RUN_TAGS.setdefault(key, set()).add(tag)


def drop_stale_engines(tag: Hashable, keep: Iterable[tuple] = ()) -> int:
    """Drop engines used by earlier runs, none of them tagged ``tag``.

    Parameters
    ----------
    tag : hashable
        Tag of the current run.
    keep : iterable of keys
        Engines to keep regardless (those the current run used).

    Returns
    -------
    int
        Number of engines dropped.
    """
    keep = set(keep)
    with _LOCK:
        stale = [key for key, tags in _RUN_TAGS.items() if tag not in tags and key not in keep]
        for key in stale:
            _ENGINES.pop(key, None)
            del _RUN_TAGS[key]
    return len(stale)


def clear_engines() -> int:
    """Forget every memoised engine; returns how many were dropped."""
    with _LOCK:
        n = len(_ENGINES)
        _ENGINES.clear()
        _RUN_TAGS.clear()
    return n


def n_cached_engines() -> int:
    """Number of engines currently memoised."""
    return len(_ENGINES)


def cached_engines() -> list[EngineEntry]:
    """The memoised engines, in the order they were built."""
    with _LOCK:
        return [
            EngineEntry(builder=key[0].__name__, n_dim=key[2], static=key[3] + key[4],
                        run_tags=frozenset(_RUN_TAGS.get(key, ())))
            for key in _ENGINES
        ]
