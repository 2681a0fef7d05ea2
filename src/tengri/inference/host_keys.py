"""JAX's threefry key derivations (``split``, ``fold_in``) computed in numpy.

Why: each ``jax.random`` call on a fresh process looks up a tiny XLA program of
its own (persistent-cache load, dispatch), which costs a few ms apiece on the
start-up path of a first fit. The few keys a run derives before its engines
start are computed here instead, bit for bit the values ``jax.random`` gives
(the default threefry implementation with ``jax_threefry_partitionable``, the
default since jax 0.5). Keys of any other form go through ``jax.random``.
"""

from __future__ import annotations

import jax
import numpy as np

__all__ = ["prng_key", "split_pair", "fold_in", "fold_in_many"]

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x: np.ndarray, bits: int) -> np.ndarray:
    return (x << np.uint32(bits)) | (x >> np.uint32(32 - bits))


def threefry_2x32(key: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Threefry-2x32 (20 rounds; Salmon et al. 2011) of the counter words ``(x0, x1)``
    under ``key``. ``key``: uint32 (2,); ``x0``, ``x1``: uint32 arrays of one shape."""
    k0, k1 = np.uint32(key[0]), np.uint32(key[1])
    schedule = (k0, k1, k0 ^ k1 ^ np.uint32(0x1BD11BDA))
    with np.errstate(over="ignore"):
        x0 = x0 + schedule[0]
        x1 = x1 + schedule[1]
        for block in range(5):
            for bits in _ROTATIONS[block % 2]:
                x0 = x0 + x1
                x1 = _rotate_left(x1, bits) ^ x0
            x0 = x0 + schedule[(block + 1) % 3]
            x1 = x1 + schedule[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _raw_threefry_key(key) -> np.ndarray | None:
    """``key`` as uint32 (2,) if it is a raw threefry key and JAX derives keys the
    way this module does, else None."""
    if not (jax.config.jax_threefry_partitionable
            and jax.config.jax_default_prng_impl == "threefry2x32"):
        return None
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return None
    raw = np.asarray(key)
    if raw.dtype != np.uint32 or raw.shape != (2,):
        return None
    return raw


def prng_key(seed: int):
    """``jax.random.PRNGKey(seed)``; numpy uint32 (2,) under the default threefry
    implementation. ``seed``: integer in [0, 2**63)."""
    if not 0 <= int(seed) < 2**63:
        raise ValueError(f"argument 'seed' must be an integer in [0, 2**63), got {seed!r}")
    if jax.config.jax_default_prng_impl != "threefry2x32":
        return jax.random.PRNGKey(seed)
    return np.array([int(seed) >> 32, int(seed) & 0xFFFFFFFF], dtype=np.uint32)


def _counter_key(raw: np.ndarray, counter: np.ndarray) -> np.ndarray:
    """Keys (n, 2) from counters (n,) as ``split`` and ``fold_in`` derive them."""
    words = threefry_2x32(raw, np.zeros_like(counter), counter)
    return np.stack(words, axis=-1)


def split_pair(key) -> tuple:
    """``jax.random.split(key)`` as two keys; numpy uint32 (2,) each for a raw key."""
    raw = _raw_threefry_key(key)
    if raw is None:
        first, second = jax.random.split(key)
        return first, second
    first, second = _counter_key(raw, np.arange(2, dtype=np.uint32))
    return first, second


def fold_in_many(key, data):
    """``jax.random.fold_in(key, d)`` for each ``d`` of ``data``, shape (n, 2); numpy
    uint32 for a raw key. ``data``: non-negative integers below 2**32, shape (n,)."""
    data = np.asarray(data)
    if data.ndim != 1 or (data.size and not (data.min() >= 0 and data.max() < 2**32)):
        raise ValueError(f"argument 'data' must be integers in [0, 2**32) of shape (n,), got {data!r}")
    raw = _raw_threefry_key(key)
    if raw is None:
        return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, data.astype(np.uint32))
    return _counter_key(raw, data.astype(np.uint32))


def fold_in(key, data: int):
    """``jax.random.fold_in(key, data)``; numpy uint32 (2,) for a raw key.

    ``data`` is a non-negative integer below 2**32.
    """
    if not 0 <= int(data) < 2**32:
        raise ValueError(f"argument 'data' must be an integer in [0, 2**32), got {data!r}")
    if _raw_threefry_key(key) is None:
        return jax.random.fold_in(key, data)
    return fold_in_many(key, [int(data)])[0]
