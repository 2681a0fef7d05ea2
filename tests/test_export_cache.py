"""Engines exported to the disk cache (jax.export) with their compiled executables:
loaded instead of traced, keyed by the likelihood programs, the code and the call's
shapes; safe fallbacks."""

import jax
import numpy as np
import pytest

import tengri
from tengri import Fitter
from tengri.inference import cache
from tengri.inference.methods import _export_cache

from test_compile_cache import GAUSSIAN_MEAN, OTHER_MEAN, GaussianModel

# short chains on purpose: these tests are about stored executables, not draws
pytestmark = pytest.mark.filterwarnings("ignore::tengri.errors.ConvergenceWarning")

MAP = {"n_starts": 2}
ESS = {"start": "init", "n_burnin": 20, "n_samples": 40}


@pytest.fixture
def exported(tmp_path):
    """Export (and the jax disk cache) on in a fresh directory; engines forgotten around the test."""
    before = cache.persistent_cache_dir()
    tengri.gc()
    directory = cache.enable_persistent_cache(tmp_path / "xla")
    yield directory / cache.EXPORTED_SUBDIR
    tengri.gc()
    if before is None:
        cache.disable_persistent_cache()
    else:
        cache.enable_persistent_cache(before)


def _files(directory):
    return sorted(p.name for p in directory.glob("*.jaxexport"))


def _run(model, method, options, mean=GAUSSIAN_MEAN):
    return Fitter(model, mean, np.ones(5)).run(method, **options)


def _draws(post):
    """(n, 5) draws, or the (1, 5) point of a MAP."""
    source = post.samples if post.samples is not None else post.params
    return np.atleast_2d(np.column_stack([np.atleast_1d(source[f"g{i}"]) for i in range(5)]))


def test_a_dropped_engine_comes_back_from_its_export(exported):
    model = GaussianModel(signature="export-round-trip")
    n_exported, n_loaded = _export_cache.n_exported(), _export_cache.n_loaded()
    first = {m: _run(model, m, o) for m, o in (("map", MAP), ("ess", ESS))}
    written = _files(exported)
    assert len(written) == 2 and _export_cache.n_exported() == n_exported + 2
    tengri.gc()  # every in-memory program gone: only the files remain
    again = {m: _run(model, m, o) for m, o in (("map", MAP), ("ess", ESS))}
    assert _export_cache.n_loaded() == n_loaded + 2 and _files(exported) == written
    for method in first:
        np.testing.assert_allclose(_draws(again[method]), _draws(first[method]), rtol=1e-12)
    # another galaxy (new data, same shapes) runs through the same export
    other = _run(model, "map", MAP, mean=OTHER_MEAN)
    assert _files(exported) == written
    np.testing.assert_allclose([other.params[f"g{i}"] for i in range(5)], OTHER_MEAN, atol=1e-3)


def test_a_likelihood_with_other_constants_gets_its_own_export(exported):
    """Equal compile signatures, different code (a constant): never served the other's program."""
    narrow = GaussianModel(scale=4.0, signature="export-constants")
    wide = GaussianModel(scale=1.0, signature="export-constants")
    spread = {}
    for name, model in (("narrow", narrow), ("wide", wide)):
        post = _run(model, "ess", {**ESS, "n_samples": 400})
        spread[name] = np.std(_draws(post), axis=0)
    assert len(_files(exported)) == 2  # one ESS engine for each likelihood (start="init": no MAP)
    np.testing.assert_allclose(spread["narrow"] / spread["wide"], 0.5, rtol=0.35)


def test_changed_code_misses_the_export(exported, monkeypatch):
    model = GaussianModel(signature="export-code")
    _run(model, "map", MAP)
    assert len(_files(exported)) == 1
    tengri.gc()
    monkeypatch.setattr(_export_cache, "code_fingerprint", lambda: "edited-source")
    _run(model, "map", MAP)
    assert len(_files(exported)) == 2


def test_other_shapes_get_another_export_and_traced_calls_bypass_it(exported):
    model = GaussianModel(signature="export-shapes")
    fitter = Fitter(model, GAUSSIAN_MEAN, np.ones(5))
    fitter.run("map", **MAP)
    from tengri.inference.methods.optimize import build_map_engine, history_capacity, initial_point

    problem = fitter.problem
    engine = build_map_engine(problem.log_likelihood, problem.n_dim, history_capacity(100))
    assert isinstance(engine, _export_cache.ExportedEngine)
    args = (jax.random.PRNGKey(0), initial_point(problem), problem.data_args, np.int64(2), np.int64(100),
            np.float64(1e-6))
    direct = engine.engine(*args)["point"]
    n_files = len(_files(exported))
    inside = jax.jit(lambda *a: engine(*a)["point"])(*args)  # tracers: the plain engine
    assert len(_files(exported)) == n_files
    np.testing.assert_allclose(inside, direct, rtol=1e-12)
    batched = jax.vmap(lambda k: engine(k, *args[1:])["point"])(jax.random.split(args[0], 3))
    assert batched.shape == (3, 5) and len(_files(exported)) == n_files


def test_an_engine_that_cannot_be_exported_runs_plainly_with_a_warning(exported, monkeypatch):
    def refuse(fn, **kwargs):
        raise NotImplementedError("no export here")

    monkeypatch.setattr(jax.export, "export", refuse)
    model = GaussianModel(signature="export-refused")
    with pytest.warns(RuntimeWarning, match="engine export disabled.*no export here"):
        post = _run(model, "map", MAP)
    np.testing.assert_allclose([post.params[f"g{i}"] for i in range(5)], GAUSSIAN_MEAN, atol=1e-3)
    assert _files(exported) == []


def _executables(directory):
    return sorted(directory.glob("*.xlaexec"))


def test_a_stored_executable_runs_without_reading_its_export(exported):
    model = GaussianModel(signature="export-executable")
    first = _run(model, "map", MAP)
    (path,) = exported.glob("*.jaxexport")
    assert len(_executables(exported)) == 1
    path.write_bytes(b"not an export")  # never read while the executable is there
    tengri.gc()
    n_loaded = _export_cache.n_loaded()
    again = _run(model, "map", MAP)
    assert _export_cache.n_loaded() == n_loaded + 1
    np.testing.assert_allclose(_draws(again), _draws(first), rtol=1e-12)


def test_loading_a_stored_executable_counts_as_a_persistent_cache_load(exported):
    _run(GaussianModel(signature="export-count-load"), "map", MAP)
    (path,) = _executables(exported)
    with cache.count_compilations() as seen:
        assert _export_cache._load_executable(path) is not None
    assert (seen.n_compiles, seen.persistent_cache_hits) == (0, 1) and seen.load_durations_s[0] > 0


def test_a_corrupt_executable_falls_back_to_the_export(exported):
    model = GaussianModel(signature="export-corrupt-executable")
    first = _run(model, "map", MAP)
    (path,) = _executables(exported)
    path.write_bytes(b"not an executable")
    tengri.gc()
    again = _run(model, "map", MAP)
    np.testing.assert_allclose(_draws(again), _draws(first), rtol=1e-12)


def test_an_executable_from_the_persistent_cache_is_not_stored_again(exported):
    """Only XLA's own compilation is serialised (a CPU executable loaded from jax's
    cache serialises without its kernels)."""
    model = GaussianModel(signature="export-no-reserialise")
    first = _run(model, "map", MAP)
    (path,) = _executables(exported)
    path.unlink()
    tengri.gc()
    with cache.count_compilations() as seen:
        again = _run(model, "map", MAP)
    assert seen.persistent_cache_hits >= 1 and _executables(exported) == []
    np.testing.assert_allclose(_draws(again), _draws(first), rtol=1e-12)


NUTS = {"n_warmup": 60, "n_samples": 60, "n_chains": 2}


def _loads_by_thread(monkeypatch):
    """Patch the executable loader to record which thread loads each file."""
    import threading

    loads = []
    load = _export_cache._load_executable

    def recorded(path):
        loads.append(threading.current_thread().name)
        return load(path)

    monkeypatch.setattr(_export_cache, "_load_executable", recorded)
    return loads


def test_nuts_loads_its_warmup_and_sampler_while_other_work_runs(exported, monkeypatch):
    """A fresh process's NUTS run loads the warm-up executable in a background thread
    while the MAP start loads and runs, and the sampler's while the warm-ups run."""
    model = GaussianModel(signature="export-prefetch")
    first = _run(model, "nuts", NUTS)
    assert len(_executables(exported)) == 3  # MAP, warm-up, sampler
    tengri.gc()
    loads = _loads_by_thread(monkeypatch)
    n_loaded = _export_cache.n_loaded()
    again = _run(model, "nuts", NUTS)
    assert sorted(loads) == ["MainThread", "tengri-engine-prefetch", "tengri-engine-prefetch"]
    assert _export_cache.n_loaded() == n_loaded + 3
    np.testing.assert_allclose(_draws(again), _draws(first), rtol=1e-12)


def test_a_prefetch_that_finds_nothing_usable_leaves_the_call_to_load(exported, monkeypatch):
    model = GaussianModel(signature="export-prefetch-corrupt")
    first = _run(model, "nuts", NUTS)
    for path in _executables(exported):
        path.write_bytes(b"not an executable")  # every load fails: the exports run
    tengri.gc()
    loads = _loads_by_thread(monkeypatch)
    again = _run(model, "nuts", NUTS)
    assert loads.count("tengri-engine-prefetch") == 2
    np.testing.assert_allclose(_draws(again), _draws(first), rtol=1e-12)


def test_prefetch_does_nothing_without_a_stored_executable(exported, monkeypatch):
    from tengri.inference.methods.optimize import build_map_engine

    model = GaussianModel(signature="export-prefetch-none")
    problem = Fitter(model, GAUSSIAN_MEAN, np.ones(5)).problem
    engine = build_map_engine(problem.log_likelihood, problem.n_dim, 10)
    loads = _loads_by_thread(monkeypatch)
    engine.prefetch(np.zeros(2, np.uint32), np.zeros((2, 5)), problem.data_args)
    assert engine._calls == {} and loads == []


def test_a_corrupt_export_file_falls_back_to_tracing(exported):
    model = GaussianModel(signature="export-corrupt")
    _run(model, "map", MAP)
    (path,) = exported.glob("*.jaxexport")
    path.write_bytes(b"not an export")
    for executable in _executables(exported):
        executable.unlink()
    tengri.gc()
    with pytest.warns(RuntimeWarning, match="engine export disabled"):
        post = _run(model, "map", MAP)
    np.testing.assert_allclose([post.params[f"g{i}"] for i in range(5)], GAUSSIAN_MEAN, atol=1e-3)


def test_disabled_export_writes_nothing(tmp_path):
    before = cache.persistent_cache_dir()
    cache.disable_persistent_cache()
    try:
        assert _export_cache.export_dir() is None
        n = _export_cache.n_exported()
        _run(GaussianModel(signature="export-off"), "map", MAP)
        assert _export_cache.n_exported() == n
    finally:
        if before is not None:
            cache.enable_persistent_cache(before)
