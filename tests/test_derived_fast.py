"""The SFH-only derived path: SEDModel.derived_quantities(names=...) without a spectrum.

It must give the full chain's numbers for every SFH, leave spectrum quantities to
the chain, and be what the catalog summary uses.
"""

import numpy as np
import pytest

from tengri import Fixed, Parameters, SEDModel
from tengri.catalog_summary import summarise
from tengri.errors import ParameterError
from tengri.model.sed_model import SFH_DERIVED_KEYS
from tengri.posterior import Posterior

from conftest import prior_draws

REDSHIFT = 0.7
N_DRAWS = 4
SFH_SETTINGS = {
    "constant": "constant", "exponential": "exponential", "delayed": "delayed", "lognormal": "lognormal",
    "dpl": "dpl", "burst": "burst", "continuity": {"family": "continuity", "n_bins": 5},
    "stochastic": {"family": "stochastic", "n_grid": 16},
}


def _spy_on_map(model, monkeypatch) -> list:
    """Record the names of the per-draw functions ``model`` runs."""
    calls = []
    run = model._map

    def spy(fn, params):
        calls.append(fn)
        return run(fn, params)

    monkeypatch.setattr(model, "_map", spy)
    return calls


@pytest.fixture(scope="module")
def delayed_model():
    """Delayed τ with Calzetti dust: the full chain has a quantity the SFH path lacks (luminosity_absorbed)."""
    return SEDModel(Parameters(redshift=Fixed(REDSHIFT)), sfh="delayed", dust="calzetti", nebular=False)


@pytest.mark.parametrize("sfh", SFH_SETTINGS)
def test_sfh_only_path_equals_the_full_chain(sfh, monkeypatch):
    # nebular light and dust do not touch these quantities (the next test has them on)
    model = SEDModel(Parameters(redshift=Fixed(REDSHIFT)), sfh=SFH_SETTINGS[sfh], dust="none", nebular=False)
    draws = prior_draws(model, REDSHIFT, N_DRAWS, seed=11)
    calls = _spy_on_map(model, monkeypatch)
    full = model.derived_quantities(draws)
    fast = model.derived_quantities(draws, names=SFH_DERIVED_KEYS)
    assert calls == ["_derived", "_sfh_derived"]
    assert set(fast) == set(SFH_DERIVED_KEYS) <= set(full)
    for name in SFH_DERIVED_KEYS:
        assert fast[name].shape == (N_DRAWS,)
        assert np.all(np.isfinite(fast[name])) and np.all(fast[name] >= 0), name
        np.testing.assert_allclose(fast[name], full[name], rtol=1e-10, atol=0, err_msg=name)


def test_subset_with_nebular_dust_emission_and_agn_matches_the_full_call(monkeypatch):
    model = SEDModel(Parameters(redshift=Fixed(REDSHIFT)), sfh="delayed", dust="calzetti", nebular=True, dust_emission="dl07", agn=True)
    draws = prior_draws(model, REDSHIFT, N_DRAWS, seed=12)
    calls = _spy_on_map(model, monkeypatch)
    full = model.derived_quantities(draws)
    sfh_only = model.derived_quantities(draws, names=("stellar_mass", "sfr_100myr", "ssfr"))
    mixed = model.derived_quantities(draws, names=["luminosity_dust_ir", "stellar_mass", "luminosity_agn"])
    assert calls == ["_derived", "_sfh_derived", "_derived"]  # spectrum quantities take the chain
    assert list(sfh_only) == ["stellar_mass", "sfr_100myr", "ssfr"]
    assert list(mixed) == ["luminosity_dust_ir", "stellar_mass", "luminosity_agn"]
    for out in (sfh_only, mixed):
        for name, value in out.items():
            np.testing.assert_allclose(value, full[name], rtol=1e-10, atol=0, err_msg=name)
    assert np.all(mixed["luminosity_dust_ir"] > 0) and np.all(mixed["luminosity_agn"] > 0)
    assert set(model.derived_names) == set(full)


def test_scalar_inputs_give_scalars(delayed_model):
    model = delayed_model
    point = {k: float(v[0]) for k, v in prior_draws(model, REDSHIFT, 1, seed=13).items()}
    out = model.derived_quantities(point, names=["stellar_mass"])
    assert out["stellar_mass"].shape == ()
    assert float(out["stellar_mass"]) == pytest.approx(float(model.derived_quantities(point)["stellar_mass"]),
                                                       rel=1e-10)


@pytest.mark.parametrize("names, match", [(["stellar_mass", "dust_mass"], "dust_mass"), ([], "empty"),
                                          ("stellar_mass", "sequence")])
def test_bad_names_are_refused(names, match, delayed_model):
    with pytest.raises(ParameterError, match=match):
        delayed_model.derived_quantities({}, names=names)


@pytest.fixture
def sampled_posterior(delayed_model):
    """A fresh Posterior (nothing cached) of 6 prior draws on ``delayed_model``."""
    model = delayed_model
    draws = prior_draws(model, REDSHIFT, 6, seed=14)
    free = [n for n in model.parameters.names if n not in model.parameters.fixed_values]
    samples = {n: draws[n] for n in free}
    post = Posterior(samples, {n: float(np.mean(v)) for n, v in samples.items()}, "laplace", 1.0, model=model)
    return post, model, free


def test_catalog_summary_takes_the_sfh_only_path(sampled_posterior, monkeypatch):
    post, model, free = sampled_posterior
    calls = _spy_on_map(model, monkeypatch)
    row = summarise("g1", post, free)
    assert calls == ["_sfh_derived"], "catalog_summary must not run the full SED chain per draw"
    assert "derived" not in post.__dict__  # it did not fill (or need) the full derived cache
    full = post.derived
    for column, key in (("log_mstar", "stellar_mass"), ("log_sfr100", "sfr_100myr"), ("log_ssfr", "ssfr")):
        lo, med, hi = np.percentile(np.log10(full[key]), [16, 50, 84])
        np.testing.assert_allclose([row[f"{column}_p16"], row[f"{column}_p50"], row[f"{column}_p84"]],
                                   [lo, med, hi], rtol=1e-10)


def test_posterior_subset_reuses_a_computed_derived(sampled_posterior, monkeypatch):
    post, model, _ = sampled_posterior
    full = post.derived
    calls = _spy_on_map(model, monkeypatch)
    subset = post.derived_subset(["ssfr", "luminosity_absorbed"])
    assert calls == []
    assert subset["ssfr"] is full["ssfr"] and subset["luminosity_absorbed"] is full["luminosity_absorbed"]
