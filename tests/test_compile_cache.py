"""Compile once, reuse everywhere: Fitter.compile, compile signatures, shared engines,
background compilation, lean / persistent / gc and the persistent XLA cache.

Most tests use a stand-in model around the 5-D Gaussian target (its "data" is the
posterior mean) so that compiling is cheap; one test uses the real SED model.
Compilations are counted with jax's monitoring events (``count_compilations``).
"""

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import tengri
from tengri import Fitter
from tengri.errors import ParameterError
from tengri.inference import cache
from tengri.inference.methods import _engine_cache, _export_cache
from tengri.inference.methods._engine_cache import cached_engines, memoised_engine

from methods_targets import (
    GAUSSIAN_MEAN, gaussian_log_likelihood, gaussian_posterior, gaussian_problem,
    gaussian_residuals,
)

# short chains on purpose: these tests count compilations, not draws
pytestmark = pytest.mark.filterwarnings("ignore::tengri.errors.ConvergenceWarning")

TESTS = Path(__file__).resolve().parent
OTHER_MEAN = GAUSSIAN_MEAN + np.array([0.4, -0.3, 0.2, -0.5, 0.3])
NUTS = {"n_warmup": 60, "n_samples": 60}
RAYTRACE = {"n_warmup": 60, "n_samples": 60}
NSS = {"n_live": 60, "num_delete": 6}
# the same sizes, as Fitter.compile takes them
COMPILE_SIZES = {"n_warmup": 60, "n_mcmc_samples": 60, "options": {"nss": NSS}}


class GaussianModel:
    """Stand-in for SEDModel: the 5-D Gaussian target, data = posterior mean.

    Like an SEDModel it builds its likelihood functions once per instance, as
    closures; ``scale`` multiplies the log-likelihood and is baked into their code
    as a constant (like a model setting its compile signature might forget).
    ``broken=True`` gives a likelihood that fails when jax traces it.
    """

    observation = SimpleNamespace(kind="photometry")

    def __init__(self, scale: float = 1.0, signature: str = "gaussian-test-model",
                 broken: bool = False):
        self._signature = signature
        root = np.sqrt(scale)
        names = gaussian_problem().names

        def log_likelihood(z, data_args):
            if broken:
                raise FloatingPointError("broken likelihood")
            return scale * gaussian_log_likelihood(z, data_args)

        def residuals(z, data_args):
            return root * gaussian_residuals(z, data_args)

        def to_physical(z, data_args):
            return {name: z[i] for i, name in enumerate(names)}

        self._functions = {"log_likelihood": log_likelihood, "to_physical": to_physical,
                           "residuals": residuals}

    def compile_signature(self):
        return (self._signature,)

    def build_problem(self, data, noise, mask=None, fixed=None):
        problem = gaussian_problem(mean=np.asarray(data))
        data_args = {**problem.data_args, "mask": np.ones(5, bool)}
        return dataclasses.replace(problem, data_args=data_args, **self._functions)


@pytest.fixture(autouse=True)
def no_persistent_cache():
    """Count real compilations: a disk cache left on by an earlier test (``tengri fit``
    turns it on) or an earlier run would serve programs without compiling them."""
    from jax.experimental.compilation_cache import compilation_cache

    before = jax.config.jax_enable_compilation_cache
    exported_before = _export_cache.export_dir()
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    _export_cache.disable()
    yield
    jax.config.update("jax_enable_compilation_cache", before)
    compilation_cache.reset_cache()
    if exported_before is not None:
        _export_cache.enable(exported_before)


@pytest.fixture(scope="module")
def model():
    return GaussianModel()


def _fitter(model, mean=GAUSSIAN_MEAN, **kwargs):
    return Fitter(model, mean, np.ones(5), **kwargs)


def _latent_mean(post):
    return np.array([post.params[f"g{i}"] for i in range(5)])


# ------------------------------------------------------------------ compile() and shared engines
@pytest.mark.slow
def test_compile_then_run_of_another_galaxy_compiles_nothing(model):
    """The first test to compile these engines for ``model`` (the next tests reuse them)."""
    fitter = _fitter(model)
    with tengri.persistent():
        times = fitter.compile(modes=("nonlinear_resample", "vi_native", "raytrace"),
                               mcmc_methods=("nuts",), nss=True, **COMPILE_SIZES)
        assert list(times) == ["map", "vi[nonlinear_resample]", "vi_native", "mcmc_raytrace",
                               "mcmc_nuts", "nss"]
        second = _fitter(model, OTHER_MEAN)
        runs = [("map", {}), ("vi", {"n_kl_iter": 4}),
                ("vi_native", {"n_kl_iter": 12, "n_seeds": 2}),
                ("raytrace", {**RAYTRACE, "n_chains": 2, "n_steps_per_sample": 5}),
                ("nuts", {**NUTS, "n_chains": 2}), ("nss", NSS)]
        for method, options in runs:
            with cache.count_compilations() as seen:
                second.run(method, **options)
            assert seen.n_compiles == 0, method


@pytest.mark.slow
@pytest.mark.parametrize("method, options", [
    ("map", {}),
    ("nuts", NUTS),
    ("raytrace", RAYTRACE),
    ("nss", NSS),
    ("vi", {"n_kl_iter": 3}),
    ("vi_native", {}),
])
def test_second_fitter_with_new_data_compiles_nothing(model, method, options):
    with tengri.persistent():
        _fitter(model).run(method, **options)
        second = _fitter(model, OTHER_MEAN)
        with cache.count_compilations() as seen:
            post = second.run(method, **options)
    assert seen.n_compiles == 0
    new, _ = gaussian_posterior(second.problem)  # the new galaxy's posterior, not the old one's
    found = _latent_mean(post)
    assert np.linalg.norm(found - new) < np.linalg.norm(found - GAUSSIAN_MEAN)


@pytest.mark.parametrize("method, option, first, second", [
    ("map", "n_steps", 20, 500),
    ("vi_native", "n_kl_iter", 3, 40),
    ("vi", "n_kl_iter", 2, 5),
    ("nss", "max_steps", 1000, 5000),
])
def test_changing_an_iteration_count_compiles_nothing(model, method, option, first, second):
    extra = NSS if method == "nss" else {}
    with tengri.persistent():
        _fitter(model).run(method, **{option: first}, **extra)
        with cache.count_compilations() as seen:
            _fitter(model, OTHER_MEAN).run(method, **{option: second}, **extra)
    assert seen.n_compiles == 0


def test_changing_a_sample_count_compiles(model):
    with tengri.persistent():
        _fitter(model).run("nuts", **NUTS)
        with cache.count_compilations() as seen:
            _fitter(model, OTHER_MEAN).run("nuts", **{**NUTS, "n_samples": 70})
    assert seen.n_compiles > 0


def test_models_with_equal_signatures_share_compiled_engines(model):
    with tengri.persistent():
        _fitter(model).run("vi_native")
        twin = GaussianModel()  # new instance, same configuration and code
        with cache.count_compilations() as seen:
            post = _fitter(twin, OTHER_MEAN).run("vi_native")
    assert seen.n_compiles == 0
    mean, _ = gaussian_posterior(gaussian_problem(OTHER_MEAN))
    assert np.allclose(_latent_mean(post), mean, atol=0.1)


def test_fitters_of_one_model_share_one_jitted_likelihood(model):
    a, b = _fitter(model).problem, _fitter(model, OTHER_MEAN).problem
    assert a.log_likelihood is b.log_likelihood and a.residuals is b.residuals
    assert isinstance(a.log_likelihood, jax.stages.Wrapped)
    raw = model.build_problem(GAUSSIAN_MEAN, np.ones(5))
    z = np.linspace(-1, 1, 5)
    assert float(a.log_likelihood(z, a.data_args)) == pytest.approx(
        float(raw.log_likelihood(z, raw.data_args)), rel=1e-12)


def test_equal_signature_with_different_code_is_not_shared(model):
    """A constant the signature does not mention gives a model its own programs."""
    sharp = GaussianModel(scale=4.0)  # same compile signature, 4× the log-likelihood
    fitter = _fitter(sharp)
    assert fitter.compile_signature() == _fitter(model).compile_signature()
    assert fitter.problem.log_likelihood is not _fitter(model).problem.log_likelihood
    z = np.linspace(-1, 1, 5)
    plain = _fitter(model).problem
    assert float(fitter.problem.log_likelihood(z, fitter.problem.data_args)) == pytest.approx(
        4.0 * float(plain.log_likelihood(z, plain.data_args)))


# ------------------------------------------------------------------ compile() errors
@pytest.mark.parametrize("kwargs, match", [
    ({"modes": ("geovi_fast",)}, "compile mode 'geovi_fast' unknown"),
    ({"modes": (), "mcmc_methods": ("vi",)}, "not an MCMC method"),
    ({"modes": (), "options": {"nuts": {"n_walkers": 4}}, "mcmc_methods": ("nuts",)}, None),
    ({"n_iterations": 0}, "n_iterations"),
])
def test_compile_rejects_bad_requests_before_compiling(model, kwargs, match):
    with cache.count_compilations() as seen:
        if match is None:
            with pytest.raises(ValueError, match="n_walkers"):
                _fitter(model).compile(**kwargs)
        else:
            with pytest.raises(ParameterError, match=match):
                _fitter(model).compile(**kwargs)
    assert seen.n_compiles == 0


# ------------------------------------------------------------------ compile_signature
def test_compile_signature_ignores_data_mask_and_memory_mode(model):
    a = _fitter(model)
    b = Fitter(model, OTHER_MEAN, 2 * np.ones(5), data_mask=np.array([1, 1, 0, 1, 1], bool),
               memory_mode="low")
    assert a.compile_signature() == b.compile_signature()
    hash(a.compile_signature())


def test_compile_signature_follows_the_model_signature(model):
    other = GaussianModel(signature="another-configuration")
    assert _fitter(other).compile_signature() != _fitter(model).compile_signature()


def test_memory_modes_give_identical_posteriors(model):
    options = {**NSS, "n_samples": 600}  # 600 draws: 3 low-memory chunks
    with tengri.persistent():
        fast = _fitter(model).run("nss", **options)
        low = _fitter(model, memory_mode="low").run("nss", **options)
    for name in fast.samples:
        np.testing.assert_array_equal(fast.samples[name], low.samples[name])


def test_unknown_memory_mode_is_rejected(model):
    with pytest.raises(ParameterError, match="memory_mode 'tiny' unknown; valid: fast, low"):
        _fitter(model, memory_mode="tiny")


# ------------------------------------------------------------------ background compilation
@pytest.mark.slow
def test_background_compile_prepares_the_first_run(monkeypatch):
    monkeypatch.delenv("TENGRI_NO_BACKGROUND_COMPILE", raising=False)
    fresh = GaussianModel(scale=1.5)  # code no other test compiled
    fitter = _fitter(fresh, compile_modes=("mcmc_nuts",))
    fitter.wait_for_compile()
    with cache.count_compilations() as seen, tengri.persistent():
        post = fitter.run("nuts")
    assert seen.n_compiles == 0
    assert post.samples["g0"].shape == (1000,)


def test_failed_background_compile_raises_runtime_error_once(monkeypatch):
    monkeypatch.delenv("TENGRI_NO_BACKGROUND_COMPILE", raising=False)
    fitter = _fitter(GaussianModel(signature="broken", broken=True), compile_modes=("map",))
    with pytest.raises(RuntimeError, match="background compilation of .'map',. failed") as raised:
        fitter.run("map")
    assert isinstance(raised.value.__cause__, FloatingPointError)
    with pytest.raises(FloatingPointError):  # later runs compile (and fail) themselves
        fitter.run("map")


def test_environment_variable_disables_background_compile(monkeypatch, model):
    compiled = []
    monkeypatch.setattr(Fitter, "_compile", lambda self, plan: compiled.append(plan))
    monkeypatch.setenv("TENGRI_NO_BACKGROUND_COMPILE", "1")
    _fitter(model, compile_modes="auto").wait_for_compile()
    assert compiled == []
    monkeypatch.delenv("TENGRI_NO_BACKGROUND_COMPILE")
    _fitter(model, compile_modes="auto").wait_for_compile()
    assert [label for label, _, _ in compiled[0]] == [
        "map", "vi[linear_resample]", "vi[nonlinear_update]"]


def test_unknown_compile_mode_is_rejected_at_construction(model):
    with pytest.raises(ParameterError, match="compile mode 'fast' unknown"):
        _fitter(model, compile_modes=("map", "fast"))


# ------------------------------------------------------------------ lean / persistent
@pytest.fixture
def engine_cache(monkeypatch):
    """An empty engine cache for the test (the session's engines are put back after)."""
    monkeypatch.setattr(_engine_cache, "_ENGINES", {})
    monkeypatch.setattr(_engine_cache, "_RUN_TAGS", {})


@memoised_engine
def build_toy_engine(log_likelihood, n_dim, size):
    return lambda: size


def _toy_run(size, tag, lean):
    """What Fitter.run does around a runner, with a toy engine instead."""
    with _engine_cache.recording_engine_use() as used:
        build_toy_engine(gaussian_log_likelihood, 5, size)
    cache.finish_run(used, tag, lean)


def _toy_sizes():
    return sorted(e.static[0] for e in cached_engines() if e.builder == "build_toy_engine")


def test_lean_run_drops_engines_of_runs_with_another_method(engine_cache):
    _toy_run(1, ("sig", "map"), lean=True)
    _toy_run(2, ("sig", "mcmc_nuts"), lean=True)
    assert _toy_sizes() == [2]


def test_lean_run_keeps_engines_of_earlier_runs_with_the_same_method(engine_cache):
    _toy_run(1, ("sig", "mcmc_nuts"), lean=True)
    _toy_run(2, ("sig", "mcmc_nuts"), lean=True)  # e.g. another n_samples
    assert _toy_sizes() == [1, 2]


def test_lean_run_keeps_engines_it_shares_with_other_methods(engine_cache):
    _toy_run(1, ("sig", "map"), lean=True)
    with _engine_cache.recording_engine_use() as used:  # NUTS starting at the MAP
        build_toy_engine(gaussian_log_likelihood, 5, 1)
        build_toy_engine(gaussian_log_likelihood, 5, 2)
    cache.finish_run(used, ("sig", "mcmc_nuts"), lean_run=True)
    assert _toy_sizes() == [1, 2]
    assert cached_engines()[0].run_tags == {("sig", "map"), ("sig", "mcmc_nuts")}


def test_lean_run_keeps_precompiled_engines_until_their_first_run(engine_cache):
    build_toy_engine(gaussian_log_likelihood, 5, 3)  # Fitter.compile: not a run
    _toy_run(1, ("sig", "map"), lean=True)
    assert _toy_sizes() == [1, 3]
    _toy_run(3, ("sig", "nss"), lean=True)
    _toy_run(1, ("sig", "map"), lean=True)
    assert _toy_sizes() == [1]


def test_non_lean_run_keeps_everything(engine_cache):
    _toy_run(1, ("sig", "map"), lean=True)
    _toy_run(2, ("sig", "mcmc_nuts"), lean=False)
    assert _toy_sizes() == [1, 2]


def test_lean_is_the_default_and_persistent_and_lean_blocks_nest():
    assert cache.lean_default() is True
    with tengri.persistent():
        assert cache.lean_default() is False
        with tengri.lean():
            assert cache.lean_default() is True
        assert cache.lean_default() is False
    assert cache.lean_default() is True


def test_lean_fitter_runs_keep_the_current_engines_and_the_forward_programs(model):
    fitter = _fitter(model)
    signature = fitter.compile_signature()

    def builders():
        return sorted(e.builder for e in cached_engines()
                      if any(tag[0] == signature for tag in e.run_tags))

    with tengri.persistent():
        fitter.run("map", n_steps=50)
        fitter.run("nss", **NSS)
        assert {"build_map_engine", "build_nss_engine"} <= set(builders())
    fitter.run("laplace", n_steps=50)  # lean: laplace uses the MAP engine, not NSS
    assert builders() == ["build_laplace_engine", "build_map_engine"]
    with cache.count_compilations() as seen:
        fitter.run("map", n_steps=50, lean=False)  # to_physical and MAP programs survived
    assert seen.n_compiles == 0
    assert builders() == ["build_laplace_engine", "build_map_engine"]


# ------------------------------------------------------------------ gc and the disk cache
def _run_script(code: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "TENGRI_NO_BACKGROUND_COMPILE": "1"}
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=TESTS, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_gc_drops_every_program_and_the_disk_cache_brings_them_back(tmp_path):
    """In a subprocess: gc() empties every in-memory cache (it clears jax's too);
    with the persistent cache on, the next run loads its programs from disk."""
    out = _run_script(f"""
        import jax, numpy as np, tengri
        from tengri.inference import cache
        from tengri.inference.methods._engine_cache import cached_engines
        from test_compile_cache import GaussianModel, GAUSSIAN_MEAN
        cache.enable_persistent_cache({str(tmp_path / "xla")!r})
        double = jax.jit(lambda x: 2 * x)
        fitter = tengri.Fitter(GaussianModel(), GAUSSIAN_MEAN, np.ones(5))
        options = dict(start="init", n_burnin=10, n_samples=10)
        with cache.count_compilations() as cold:
            fitter.run("ess", **options)
            double(1.0)
        dropped = tengri.gc()
        with cache.count_compilations() as after_gc:
            fitter.run("ess", **options)
            double(1.0)
        print(cold.n_compiles, dropped["engines"], dropped["shared_signatures"],
              after_gc.n_compiles, after_gc.persistent_cache_hits, len(cached_engines()))
    """, tmp_path)
    cold, engines, signatures, recompiled, hits, engines_after = map(int, out.split())
    assert cold > 0 and engines == 1 and signatures == 1
    assert recompiled == 0 and hits > 0  # what it needed came back from disk
    assert engines_after == 1
    assert any((tmp_path / "xla").iterdir())


def test_enable_persistent_cache_sets_the_jax_cache_directory(tmp_path):
    before = cache.persistent_cache_dir()
    try:
        path = tengri.enable_persistent_cache(tmp_path / "xla")
        assert path == tmp_path / "xla" and path.is_dir()
        assert cache.persistent_cache_dir() == path
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    finally:
        if before is None:
            cache.disable_persistent_cache()
        else:
            cache.enable_persistent_cache(before)
    assert cache.persistent_cache_dir() == before


def test_default_persistent_cache_dir_follows_tengri_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TENGRI_CACHE_DIR", str(tmp_path))
    assert cache.default_persistent_cache_dir() == tmp_path / "xla"
    monkeypatch.delenv("TENGRI_CACHE_DIR")
    assert cache.default_persistent_cache_dir() == Path("/tmp/tengri_jax_cache")


# ------------------------------------------------------------------ the real SED model
@pytest.mark.slow
def test_second_galaxy_on_the_sed_model_compiles_nothing(phot_model, truth):
    flux = phot_model.predict_photometry(truth)
    Fitter(phot_model, flux, flux / 20).run("map", n_steps=3)
    other = Fitter(phot_model, 1.3 * flux, flux / 10)
    with cache.count_compilations() as seen:
        post = other.run("map", n_steps=3)
    assert seen.n_compiles == 0
    assert post.method == "map"


def test_engines_with_lapack_calls_run_from_the_disk_cache_in_a_fresh_process(tmp_path):
    """Laplace (eigh) and dense NUTS (Cholesky) loaded as stored executables in a
    new process: jaxlib binds its LAPACK kernels only when it lowers such a call,
    so before the export cache did that binding the second process crashed. Tracing
    nothing, that process never imports blackjax or optax (0.3 s of start-up)."""
    code = f"""
        import numpy as np, tengri
        from tengri.inference import cache
        from tengri.inference.methods import _export_cache
        from test_compile_cache import GaussianModel, GAUSSIAN_MEAN
        cache.enable_persistent_cache({str(tmp_path / "xla")!r})
        fitter = tengri.Fitter(GaussianModel(signature="lapack-reload"), GAUSSIAN_MEAN, np.ones(5))
        laplace = fitter.run("laplace", n_starts=2, n_samples=50)
        nuts = fitter.run("nuts", use_dense=True, n_warmup=50, n_samples=20)
        import sys
        traced_with = sum(name in sys.modules for name in ("blackjax", "optax"))
        print(_export_cache.n_loaded(), traced_with, float(laplace.samples["g0"].sum()),
              float(nuts.samples["g0"].sum()))
    """
    first = _run_script(code, tmp_path).split()
    second = _run_script(code, tmp_path).split()
    assert int(first[0]) == 0 and int(second[0]) >= 3  # MAP, Laplace, NUTS warm-up and sampling from disk
    # nothing was traced, so the libraries engines are written with were never imported
    assert int(first[1]) == 2 and int(second[1]) == 0
    np.testing.assert_allclose([float(v) for v in second[2:]], [float(v) for v in first[2:]], rtol=1e-10)
