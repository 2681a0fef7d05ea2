"""Fitter: MAP and NUTS on one mock galaxy; errors for bad input."""

import warnings

import jax
import numpy as np
import pytest

from tengri import Fitter
from tengri.errors import DataError, ParameterError


@pytest.fixture(scope="module")
def mock(phot_model, truth):
    flux = phot_model.predict_photometry(truth)
    noise = flux / 20.0
    rng = np.random.default_rng(0)
    return flux + noise * rng.standard_normal(flux.shape), noise


def test_map_recovers_truth_on_noiseless_data(phot_model, truth):
    flux = phot_model.predict_photometry(truth)
    post = Fitter(phot_model, flux, flux / 50).run("map")
    assert post.samples is None
    assert abs(post.params["stellar_mass"] - truth["stellar_mass"]) < 0.05
    assert abs(post.params["av"] - truth["av"]) < 0.05
    assert post.loss_history is not None and len(post.loss_history) > 1


# 200 draws: a coverage smoke test, not a converged posterior
@pytest.mark.filterwarnings("ignore::tengri.errors.ConvergenceWarning")
def test_nuts_posterior_covers_truth(phot_model, truth, mock):
    post = Fitter(phot_model, *mock).run("nuts", n_warmup=150, n_samples=200, use_dense=True)
    assert post.samples["stellar_mass"].shape == (200,)
    lo, hi = np.percentile(post.samples["stellar_mass"], [0.5, 99.5])
    assert lo < truth["stellar_mass"] < hi
    assert post.diagnostics["divergences"] < 20


def test_masked_band_does_not_affect_fit(phot_model, mock):
    flux, noise = mock
    mask = np.ones(12, bool)
    mask[4] = False
    a = Fitter(phot_model, flux, noise, data_mask=mask).run("map")
    b = Fitter(phot_model, np.where(mask, flux, 1e-20), noise, data_mask=mask).run("map")
    for name in a.params:
        assert a.params[name] == pytest.approx(b.params[name], rel=1e-9, abs=1e-12)


def test_default_key_is_reproducible(phot_model, mock):
    a = Fitter(phot_model, *mock).run("map")
    b = Fitter(phot_model, *mock).run("map", key=jax.random.PRNGKey(42))
    assert a.params == b.params


def test_unknown_method_names_valid_ones(phot_model, mock):
    with pytest.raises(ParameterError, match="valid methods"):
        Fitter(phot_model, *mock).run("gibbs")


def test_unknown_option_is_value_error(phot_model, mock):
    with pytest.raises(ValueError, match="n_walkers"):
        Fitter(phot_model, *mock).run("nuts", n_walkers=4)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda f, n: (f[:-1], n[:-1]), "shape"),
        (lambda f, n: (f, np.zeros_like(n)), "noise"),
        (lambda f, n: (np.full_like(f, np.inf), n), "NaN/inf"),
    ],
)
def test_bad_data_is_rejected(phot_model, mock, change, match):
    with pytest.raises(DataError, match=match):
        Fitter(phot_model, *change(*mock))


def test_spectroscopic_options_rejected_for_photometry(phot_model, mock):
    with pytest.raises(ParameterError, match="spectroscopic"):
        Fitter(phot_model, *mock, calibration_marginalize=True)


def test_summary_lists_parameters_and_methods(phot_model, mock):
    text = Fitter(phot_model, *mock).summary()
    assert "photometry" in text and "stellar_mass" in text and "nuts" in text


def test_run_warns_when_an_approximation_reports_a_large_pareto_k(phot_model, mock, monkeypatch):
    from tengri.inference import registry
    from tengri.inference.problem import RawResult

    def approximation(problem, key, **options):  # draws around the start, the k̂ given
        draws = problem.init + 0.01 * jax.random.normal(key, (1, 50, problem.n_dim))
        return RawResult(method="mgvi", point=problem.init, samples=draws,
                         diagnostics={"pareto_k": pareto_k})

    fitter = Fitter(phot_model, *mock)
    monkeypatch.setattr(registry, "get_runner", lambda name: approximation)
    pareto_k = 2.5
    with pytest.warns(UserWarning, match=r"run\('mgvi'\): Pareto k̂ = 2.50 > 0.7"):
        post = fitter.run("mgvi")
    assert not post.check_convergence()["all_converged"]
    pareto_k = 0.4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fitter.run("mgvi").check_convergence()["all_converged"]


def test_run_warns_when_mcmc_chains_are_shorter_than_five_autocorrelation_times(
        phot_model, mock, monkeypatch):
    from tengri.errors import ConvergenceWarning
    from tengri.inference import registry
    from tengri.inference.problem import RawResult

    def chains(problem, key, **options):  # a random walk (τ ~ n) or white noise around init
        steps = 0.01 * jax.random.normal(key, (1, 2000, problem.n_dim))
        draws = problem.init + (jax.numpy.cumsum(steps, axis=1) if walk else steps)
        return RawResult(method="mcmc_nuts", point=problem.init, samples=draws)

    fitter = Fitter(phot_model, *mock)
    monkeypatch.setattr(registry, "get_runner", lambda name: chains)
    walk = True
    with pytest.warns(ConvergenceWarning, match=r"run\('nuts'\): the chains are shorter than 5"):
        fitter.run("nuts")
    walk = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fitter.run("nuts").check_convergence()["all_converged"]
