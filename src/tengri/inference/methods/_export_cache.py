"""Inference engines serialised to disk with ``jax.export``, for fresh processes.

jax's persistent compilation cache (:func:`tengri.enable_persistent_cache`) saves
the XLA compilation, but a fresh process still traces and lowers every engine to
find its cache key: on the photometric SED model that is several seconds per
engine (the MAP engine, then window adaptation + NUTS). An *exported* engine is
its lowered StableHLO module, serialised; loading one is a deserialisation, and
calling it lowers a stub around the stored module, whose compilation the
persistent cache then provides.

**Keys.** A stored engine is valid only for the same program. Its key hashes
(1) the *likelihood program* it closes over — the jaxpr text and constants of
the problem function the engine was built on (the log-likelihood, or the
residuals for geometric VI), traced on the galaxy's abstract data shapes: not
the compile signature alone, which equal models share even when constants
differ. :func:`register_problem_functions` only records those shapes; the trace
happens at the first engine call that needs the key (:func:`function_key`), once
per function, so a NUTS fit never traces the residuals or ``to_physical`` for
it —,
(2) the engine builder, latent dimension and static options, (3) the shapes,
dtypes and tree structure of the call's arguments, and (4) the code: the source
of every tengri module and the versions of jax, jaxlib, blackjax, optax and
numpy, the backend and the x64 flag. A change to any of them misses the cache.

**Executables.** Beside each export lies its compiled XLA executable
(``.xlaexec``, keyed as the export plus the platform, its devices and the XLA
settings): a fresh process loads that and calls it, skipping the export's
deserialisation, the lowering of the stub around it and the hashing of the
persistent-cache key (on the bench model's first NUTS run ~0.3 s of ~1.5 s at
load ~4, the rest being the executables' own deserialisation). It is written
by the process that compiled it (one that jax's persistent cache provided does
not serialise again); one that cannot be read is ignored, and the export runs.

**Prefetch.** A runner that knows which engine it calls next can have its
executable loaded in a background thread (:meth:`ExportedEngine.prefetch`)
while it loads or runs another: the NUTS runner loads its warm-up while the MAP
start loads and runs, and its sampler while the warm-ups run. On the start-up
bench's model that took the first NUTS run's loading from 0.47 to 0.28 s
(medians of 5 fresh processes each, interleaved).

Engines called inside another trace (``CatalogFitter`` vmaps them) run as they
are. An engine that cannot be exported (or a stored export that cannot be read)
falls back to plain ``jax.jit`` for the rest of the process, with a warning.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import threading
import time
import warnings
import weakref
from concurrent.futures import Future
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["enable", "disable", "export_dir", "register_problem_functions", "function_key", "ExportedEngine",
           "code_fingerprint", "n_loaded", "n_exported"]

_STATE: dict[str, Any] = {"dir": None, "loaded": 0, "exported": 0}
_LOCK = threading.RLock()
# problem function object (a jitted wrapper) -> abstract (z, data_args) to trace it on
_ABSTRACT_ARGS: "weakref.WeakKeyDictionary[Callable, tuple]" = weakref.WeakKeyDictionary()
# problem function object -> hex digest of its program ("" when it cannot be traced)
_FUNCTION_KEYS: "weakref.WeakKeyDictionary[Callable, str]" = weakref.WeakKeyDictionary()
_VERSIONED = ("jax", "jaxlib", "blackjax", "optax", "numpy")


def enable(directory: str | os.PathLike) -> Path:
    """Store exported engines under ``directory`` and load them from there."""
    path = Path(directory).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    _STATE["dir"] = path
    return path


def disable() -> None:
    """Stop storing and loading exported engines (files are kept)."""
    _STATE["dir"] = None


def export_dir() -> Path | None:
    """The directory in use, or None when disabled."""
    return _STATE["dir"]


def n_loaded() -> int:
    """Engines loaded from disk by this process."""
    return _STATE["loaded"]


def n_exported() -> int:
    """Engines exported (and written) by this process."""
    return _STATE["exported"]


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """Hash of tengri's source files and the versions of the libraries engines use."""
    from importlib import metadata

    root = Path(__file__).resolve().parents[2]  # the tengri package
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".toml") and path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    for name in _VERSIONED:
        try:
            digest.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{name}=absent".encode())
    return digest.hexdigest()


def program(fn: Callable, z: Any, data_args: Any) -> tuple:
    """What jax would compile for ``fn(z, data_args)``: jaxpr text and constants."""
    closed = jax.make_jaxpr(fn)(z, data_args)
    consts = tuple((a.dtype.str, a.shape, a.tobytes())
                   for a in (np.ascontiguousarray(np.asarray(c)) for c in closed.consts))
    return str(closed.jaxpr), consts


def _program_digest(fn: Callable, z: Any, data_args: Any) -> bytes:
    text, consts = program(fn, z, data_args)
    digest = hashlib.sha256(text.encode())
    for dtype, shape, data in consts:
        digest.update(f"{dtype}{shape}".encode())
        digest.update(data)
    return digest.digest()


def register_problem_functions(functions: tuple, z: Any, data_args: Any) -> None:
    """Record the shapes to key ``functions`` (log_likelihood, residuals, to_physical; None allowed) on.

    Keeps the abstract values (shape, dtype) of ``z`` and ``data_args``; nothing is
    traced until :func:`function_key` is asked for a function. The first shapes
    recorded for a function are kept (Fitters sharing a function share its shapes).
    """
    present = [f for f in functions if f is not None]
    with _LOCK:
        if all(f in _FUNCTION_KEYS or f in _ABSTRACT_ARGS for f in present):
            return
    abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jax.numpy.result_type(a)),
                                      (z, data_args))
    with _LOCK:
        for fn in present:
            if fn not in _FUNCTION_KEYS:
                _ABSTRACT_ARGS.setdefault(fn, abstract)


def function_key(fn: Callable) -> str | None:
    """Hex digest of ``fn``'s program on its registered shapes (traced once, then remembered).

    None for a function never registered, or one that does not trace on abstract
    values (its engines then run as plain jit).
    """
    with _LOCK:
        key = _FUNCTION_KEYS.get(fn)
        abstract = _ABSTRACT_ARGS.get(fn) if key is None else None
    if key is None:
        if abstract is None:
            return None
        try:
            key = _program_digest(fn, *abstract).hex()
        except Exception:  # noqa: BLE001 - not traceable on abstract values: unkeyed
            key = ""
        with _LOCK:
            key = _FUNCTION_KEYS.setdefault(fn, key)
            _ABSTRACT_ARGS.pop(fn, None)
    return key or None


def _call_signature(args: tuple) -> tuple | None:
    """Tree structure and leaf signatures of a call's arguments; None inside a trace."""
    leaves, treedef = jax.tree_util.tree_flatten(args)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return None
    return str(treedef), tuple(_leaf_signature(leaf) for leaf in leaves)


def _leaf_signature(leaf: Any) -> str:
    aval = jax.typeof(leaf)
    return f"{aval.dtype.name}{tuple(aval.shape)}{'w' if getattr(aval, 'weak_type', False) else ''}"


class ExportedEngine:
    """A jitted engine that, when export is enabled, runs through a stored export.

    Parameters
    ----------
    engine : jitted callable
        What the builder returned.
    function : callable
        The problem function the builder closed over (its first argument).
    description : str
        Builder name, latent dimension and static options (part of the key).
    """

    def __init__(self, engine: Callable, function: Callable, description: str):
        self.engine = engine
        self._function = function
        self._description = description
        self._calls: dict[tuple, Callable] = {}
        self._broken = False

    def __getattr__(self, name: str) -> Any:  # lower, trace, eval_shape, ... of the jitted engine
        if name.startswith("__") or name == "engine":
            raise AttributeError(name)
        return getattr(self.engine, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        directory = _STATE["dir"]
        if directory is None or self._broken or kwargs:
            return self.engine(*args, **kwargs)
        shapes = _call_signature(args)
        if shapes is None:  # called inside another trace
            return self.engine(*args)
        call = self._calls.get(shapes)
        if isinstance(call, Future):  # prefetched; threads fitting at once may share it
            pending, call = call, call.result()
            with _LOCK:
                if self._calls.get(shapes) is pending:
                    if call is None:
                        del self._calls[shapes]
                    else:
                        self._calls[shapes] = call
                        _STATE["loaded"] += 1
        if call is None:
            program_key = function_key(self._function)
            if program_key is None:
                return self.engine(*args)
            call = self._load_or_export(directory, program_key, shapes, args)
            if call is None:
                return self.engine(*args)
            self._calls[shapes] = call
        return call(*args)

    def prefetch(self, *args: Any) -> None:
        """Start loading the stored executable for a call on arguments shaped like ``args``.

        A background thread reads and deserialises it while the caller goes on (XLA
        releases the GIL for much of the work; on the bench model two executables
        loaded in two threads took 0.40-0.44 s against 0.61-0.64 s one after the
        other), and the call with such arguments then waits for it. Only the shapes,
        dtypes and tree structure of ``args`` matter (arrays still being computed
        will do). Nothing happens when export is disabled, for a signature already
        loaded or pending, or when no executable is stored for it: the call then
        loads, exports or compiles as usual.
        """
        directory = _STATE["dir"]
        if directory is None or self._broken:
            return
        shapes = _call_signature(args)
        if shapes is None or shapes in self._calls:
            return
        program_key = function_key(self._function)
        if program_key is None:
            return
        path = self._executable_path(directory, self._key(program_key, shapes))
        if not path.is_file():
            return
        _initialise_linear_algebra()  # once, in this thread: its fallback lowers a program
        future: Future = Future()
        self._calls[shapes] = future
        threading.Thread(target=_resolve, args=(future, path), name="tengri-engine-prefetch", daemon=True).start()

    def _key(self, program_key: str, shapes: tuple) -> str:
        parts = (code_fingerprint(), program_key, self._description, repr(shapes), jax.default_backend(),
                 str(jax.config.jax_enable_x64))
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    @staticmethod
    def _executable_path(directory: Path, key: str) -> Path:
        """Where the compiled executable of the call keyed ``key`` is stored (this jaxlib and device)."""
        return directory / f"engine-{key}-{_executable_key()}.xlaexec"

    def _load_or_export(self, directory: Path, program_key: str, shapes: tuple, args: tuple):
        key = self._key(program_key, shapes)
        executable_path = self._executable_path(directory, key)
        compiled = _load_executable(executable_path)
        if compiled is not None:
            _STATE["loaded"] += 1
            return compiled
        path = directory / f"engine-{key}.jaxexport"
        try:
            if path.exists():
                exported = jax.export.deserialize(bytearray(path.read_bytes()))
                _STATE["loaded"] += 1
            else:
                exported = jax.export.export(self.engine)(*args)
                _write_atomically(path, bytes(exported.serialize()))
                _STATE["exported"] += 1
        except Exception as err:  # noqa: BLE001 - any failure: plain jit for this engine
            warnings.warn(f"engine export disabled for {self._description}: {type(err).__name__}: {err}",
                          RuntimeWarning, stacklevel=3)
            self._broken = True
            return None
        call = jax.jit(exported.call)
        return _compiled_and_stored(call, args, executable_path) or call


def _executable_key() -> str:
    """Hex digest (16) of what an XLA executable depends on beyond its program.

    The platform and its version, the devices, ``XLA_FLAGS`` and the jax settings
    that enter XLA's compile options (jaxlib's version is in the code key).
    """
    devices = jax.devices()
    settings = [f"{name}={getattr(jax.config, name, None)!r}" for name in _COMPILE_SETTINGS]
    parts = (devices[0].client.platform, devices[0].client.platform_version,
             repr(sorted((d.platform, d.device_kind) for d in devices)), os.environ.get("XLA_FLAGS", ""),
             *settings)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


_COMPILE_SETTINGS = ("jax_optimization_level", "jax_memory_fitting_level", "jax_use_shardy_partitioner",
                     "jax_enable_remat_opt_pass", "jax_xla_profile_version")


EXECUTABLE_LOAD_EVENT = "/tengri/export_cache/executable_load_duration"
"""jax.monitoring duration event of each stored executable loaded (counted by
:func:`tengri.inference.cache.count_compilations` as a persistent-cache load)."""


@cache
def _initialise_linear_algebra() -> None:
    """Make the CPU's LAPACK kernels callable before a stored executable runs.

    jaxlib binds its LAPACK custom calls (Cholesky, eigh, solves: dense NUTS metrics,
    the Laplace engine) to their routines only when it lowers such an operation. A
    stored executable is not lowered in this process, so without this it would call
    unbound routines and crash the process (segmentation fault). jaxlib's own binding
    call takes ~0.1 s in a fresh process, most of it importing scipy.linalg, whose
    routines it binds; where a jaxlib lacks it, lowering one small Cholesky (~90 ms,
    no compilation) binds them too.
    """
    try:
        from jaxlib import lapack

        lapack._lapack.initialize()
    except (ImportError, AttributeError):
        jax.jit(jnp.linalg.cholesky).lower(jax.ShapeDtypeStruct((2, 2), jnp.float64))


def _resolve(future: Future, path: Path) -> None:
    """Set ``future`` to the executable stored at ``path``, or None: never leave it pending."""
    try:
        compiled = _load_executable(path)
    except BaseException:  # noqa: BLE001 - the waiting call then loads or compiles itself
        compiled = None
    future.set_result(compiled)


def _load_executable(path: Path) -> Callable | None:
    """The compiled engine stored at ``path``; None when absent or unreadable."""
    from jax.experimental import serialize_executable

    start = time.perf_counter()
    try:
        data = path.read_bytes()
    except OSError:
        return None
    _initialise_linear_algebra()
    try:
        payload, in_tree, out_tree = pickle.loads(data)
        compiled = serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception:  # noqa: BLE001 - corrupt or from another jax: the export runs instead
        return None
    jax.monitoring.record_event_duration_secs(EXECUTABLE_LOAD_EVENT, time.perf_counter() - start)
    return compiled


_PERSISTENT_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def _compiled_and_stored(call: Callable, args: tuple, path: Path) -> Callable | None:
    """``call`` compiled for ``args``; None on failure.

    The executable is written to ``path`` only when XLA compiled it here: one
    loaded from jax's persistent cache does not serialise again on the CPU (the
    copy lacked its kernels: "Function iota_convert_fusion not found" when run).
    """
    from jax.experimental import serialize_executable

    this_thread = threading.get_ident()
    loaded = []

    def on_event(event: str, **kwargs: Any) -> None:
        if event == _PERSISTENT_HIT_EVENT and threading.get_ident() == this_thread:
            loaded.append(event)

    jax.monitoring.register_event_listener(on_event)
    try:
        compiled = call.lower(*args).compile()
    except Exception:  # noqa: BLE001 - the jitted stub compiles at its first call instead
        return None
    finally:
        jax.monitoring.unregister_event_listener(on_event)
    if not loaded:
        try:
            _write_atomically(path, pickle.dumps(serialize_executable.serialize(compiled)), suffix=".xlaexec")
        except Exception:  # noqa: BLE001 - not serialisable here: this process still uses it
            pass
    return compiled


def _write_atomically(path: Path, data: bytes, suffix: str = ".jaxexport") -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
