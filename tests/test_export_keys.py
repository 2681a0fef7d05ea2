"""Keys of exported engines on the SED model: they follow the program, not the data,
and are computed lazily (a Fitter traces nothing for them; a run traces only the
function its engine closes over)."""

import numpy as np
import pytest

import tengri
from tengri import Fitter
from tengri.inference import cache
from tengri.inference.methods import _export_cache

FILTERS = ["sdss_g0", "sdss_r0", "twomass_Ks"]


def _model(sfh="delayed", dust="calzetti"):
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = Parameters(
        redshift=Fixed(1.0), stellar_mass=Uniform(8.0, 12.0), age_gyr=Uniform(0.1, "age_of_universe"),
        tau_gyr=LogUniform(0.05, 10.0), metallicity=LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0),
    )
    return SEDModel(params, Photometry(FILTERS), sfh=sfh, dust=dust, nebular=False)


def _data(seed):
    rng = np.random.default_rng(seed)
    flux = 1e-29 * (1.0 + rng.uniform(size=len(FILTERS)))
    return flux, 0.05 * flux


def _own_key(model, seed):
    """Key of the model's own log-likelihood (not the one shared between equal signatures)."""
    flux, noise = _data(seed)
    problem = model.build_problem(flux, noise)
    _export_cache.register_problem_functions((problem.log_likelihood,), problem.init, problem.data_args)
    return _export_cache.function_key(problem.log_likelihood)


@pytest.fixture(scope="module")
def base():
    return _model()


def test_equal_signature_models_with_different_data_get_the_same_key(base):
    twin = _model()
    assert twin is not base and twin.compile_signature() == base.compile_signature()
    key = _own_key(base, seed=0)
    assert key is not None and key == _own_key(twin, seed=1)
    # the Fitters' (shared) functions give the same key as well
    flux, noise = _data(2)
    other_flux, other_noise = _data(3)
    first, second = Fitter(base, flux, noise), Fitter(twin, other_flux, other_noise)
    assert (_export_cache.function_key(first.problem.log_likelihood)
            == _export_cache.function_key(second.problem.log_likelihood) is not None)


@pytest.mark.parametrize("option", [{"sfh": "exponential"}, {"dust": "smc"}])
def test_a_different_physics_option_gets_a_different_key(base, option):
    other = _model(**option)
    assert other.parameters.free_names == base.parameters.free_names  # same parameters, other physics
    assert _own_key(other, seed=0) != _own_key(base, seed=0)


def test_fitter_traces_nothing_and_a_key_traces_only_its_function(monkeypatch):
    traced = []
    original = _export_cache._program_digest

    def counting(fn, *args):
        traced.append(fn)
        return original(fn, *args)

    monkeypatch.setattr(_export_cache, "_program_digest", counting)
    tengri.gc()  # forget the functions shared by other tests' models: this one's are new
    flux, noise = _data(4)
    fitter = Fitter(_model(), flux, noise)
    assert traced == []
    problem = fitter.problem
    key = _export_cache.function_key(problem.log_likelihood)
    assert key is not None and traced == [problem.log_likelihood]
    assert _export_cache.function_key(problem.log_likelihood) == key and len(traced) == 1  # remembered
    assert _export_cache.function_key(problem.residuals) not in (None, key) and len(traced) == 2


def test_unregistered_or_untraceable_functions_have_no_key():
    assert _export_cache.function_key(lambda z, data_args: z) is None

    def untraceable(z, data_args):
        raise TypeError("not traceable")

    _export_cache.register_problem_functions((untraceable,), np.zeros(2), {"x": np.zeros(3)})
    assert _export_cache.function_key(untraceable) is None


def test_keys_do_not_need_the_persistent_cache(base):
    """Shapes are recorded whether or not export is on, so enabling it later still keys the Fitter."""
    before = cache.persistent_cache_dir()
    cache.disable_persistent_cache()
    try:
        flux, noise = _data(5)
        fitter = Fitter(base, flux, noise)
        assert _export_cache.function_key(fitter.problem.log_likelihood) is not None
    finally:
        if before is not None:
            cache.enable_persistent_cache(before)
