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
holds strong references (an engine closes over its likelihood anyway); call
:func:`clear_engines` to release them, e.g. from ``tengri.gc()``.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable

__all__ = ["memoised_engine", "clear_engines", "n_cached_engines"]

_ENGINES: dict[tuple, Callable] = {}
# A background compile thread and the user's thread may ask for the same engine.
_LOCK = threading.RLock()


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
        (until :func:`clear_engines`). ``log_likelihood`` is compared by identity.
    """

    @functools.wraps(builder)
    def build(log_likelihood: Callable, n_dim: int, *static: Any, **static_kw: Any) -> Callable:
        key = _cache_key(builder, log_likelihood, n_dim, static, static_kw)
        with _LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = builder(log_likelihood, int(n_dim), *static, **static_kw)
                _ENGINES[key] = engine
        return engine

    return build


def clear_engines() -> int:
    """Forget every memoised engine; returns how many were dropped."""
    with _LOCK:
        n = len(_ENGINES)
        _ENGINES.clear()
    return n


def n_cached_engines() -> int:
    """Number of engines currently memoised."""
    return len(_ENGINES)
