"""A model drops the SSP ages no star-formation history of it can reach, and nothing else changes."""

import numpy as np
import pytest

from conftest import DEMO_FILTERS, prior_draws


def _model(age_high, redshift=1.0, sfh="delayed", **kwargs):
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = {"redshift": Fixed(redshift), "stellar_mass": Uniform(8.0, 12.0),
              "metallicity": LogUniform(0.1, 2.0), "av": Uniform(0.0, 2.0), "log_u": Fixed(-2.5)}
    if sfh in ("delayed", "exponential"):
        params.update(age_gyr=Uniform(0.1, age_high), tau_gyr=LogUniform(0.05, 10.0))
    return SEDModel(Parameters(**params), Photometry(DEMO_FILTERS), sfh=sfh, dust="calzetti", nebular=True,
                    **kwargs)


def test_ages_older_than_the_universe_are_dropped_and_predictions_are_unchanged(monkeypatch):
    from tengri import Fitter, SEDModel
    from tengri.data.ssp import load_ssp_grid
    from tengri.physics.cosmology import age_of_universe_gyr_numpy

    trimmed = _model("age_of_universe")
    with monkeypatch.context() as patch:  # the same model on all BC03 ages
        patch.setattr(SEDModel, "_oldest_lookback_gyr", lambda self: None)
        full = _model("age_of_universe")
    n_full = load_ssp_grid().age_yr.size
    assert full.ssp.age_yr.size == n_full
    universe_yr = float(age_of_universe_gyr_numpy(1.0, trimmed.cosmo)) * 1e9
    ages = trimmed.ssp.age_yr
    assert ages.size < 0.8 * n_full
    assert ages[-2] < universe_yr <= ages[-1]  # up to the first age ≥ the oldest reachable
    np.testing.assert_array_equal(trimmed.ssp.age_bin_edges_yr, full.ssp.age_bin_edges_yr[: ages.size + 1])
    assert trimmed.compile_signature() != full.compile_signature()

    draws = prior_draws(trimmed, 1.0, 40, seed=3)
    draws["redshift"] = np.full(40, 1.0)
    np.testing.assert_allclose(trimmed.predict_photometry(draws), full.predict_photometry(draws), rtol=1e-12)

    flux = np.asarray(trimmed.predict_photometry({k: v[0] for k, v in draws.items()}))
    fit_trimmed, fit_full = Fitter(trimmed, flux, 0.05 * flux), Fitter(full, flux, 0.05 * flux)
    z = np.linspace(-1.0, 1.0, fit_trimmed.problem.n_dim)
    assert float(fit_trimmed.problem.log_density(z)) == pytest.approx(float(fit_full.problem.log_density(z)),
                                                                      rel=1e-12)
    assert _model(20.0).ssp.age_yr.size == n_full  # an age prior reaching BC03's oldest SSP keeps them all


@pytest.mark.parametrize("case", ["stochastic", "unbounded"])
def test_no_trim_without_a_bound(case):
    from tengri import Normal

    if case == "stochastic":
        model = _model(None, sfh="stochastic")
    else:
        from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

        params = Parameters(redshift=Fixed(1.0), stellar_mass=Uniform(8.0, 12.0), age_gyr=Normal(2.0, 0.5),
                            tau_gyr=LogUniform(0.05, 10.0), metallicity=Fixed(1.0), av=Uniform(0.0, 2.0))
        model = SEDModel(params, Photometry(DEMO_FILTERS), sfh="delayed", nebular=False)
    assert model._oldest_lookback_gyr() is None
    assert model.ssp.age_yr.size == 221


def test_fixed_age_and_per_galaxy_redshift_bounds():
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform
    from tengri.physics.cosmology import age_of_universe_gyr_numpy

    fixed_age = Parameters(redshift=Fixed(0.5), stellar_mass=Uniform(8.0, 12.0), age_gyr=Fixed(1.0),
                           tau_gyr=LogUniform(0.05, 10.0), metallicity=Fixed(1.0), av=Uniform(0.0, 2.0))
    model = SEDModel(fixed_age, Photometry(DEMO_FILTERS), sfh="exponential", nebular=False)
    assert model._oldest_lookback_gyr() == 1.0
    assert model.ssp.age_yr[-2] < 1e9 <= model.ssp.age_yr[-1]
    # a catalog redshift column is configured as Fixed(0): the universe's age today bounds every galaxy
    per_galaxy = Parameters(redshift=Fixed(0.0), stellar_mass=Uniform(8.0, 12.0),
                            tmax_gyr=Uniform(0.1, "age_of_universe"), fwhm_gyr=Uniform(0.1, 10.0),
                            metallicity=Fixed(1.0), av=Uniform(0.0, 2.0))
    model = SEDModel(per_galaxy, Photometry(DEMO_FILTERS), sfh="lognormal", nebular=False, per_galaxy=("redshift",))
    assert model._oldest_lookback_gyr() == pytest.approx(float(age_of_universe_gyr_numpy(0.0, model.cosmo)))
    assert 13e9 < model.ssp.age_yr[-1] < 15e9


def test_without_ages_beyond_checks_its_argument():
    from tengri.data.ssp import load_ssp_grid
    from tengri.errors import ParameterError

    grid = load_ssp_grid()
    assert grid.without_ages_beyond(1e11) is grid
    with pytest.raises(ParameterError, match="oldest_yr"):
        grid.without_ages_beyond(float("nan"))
    with pytest.raises(ParameterError, match="oldest_yr"):
        grid.without_ages_beyond(0.0)


def test_sparse_ages_keep_own_ssps_about_a_step_apart():
    from tengri.data.ssp import load_ssp_grid
    from tengri.errors import ParameterError

    grid = load_ssp_grid()
    sparse = grid.sparse_ages(0.05)
    kept = np.flatnonzero(np.isin(grid.age_yr, sparse.age_yr))
    assert kept.size == sparse.age_yr.size == 106
    assert kept[0] == 0 and kept[-1] == grid.age_yr.size - 1
    np.testing.assert_array_equal(sparse.lnu, grid.lnu[:, kept])  # the SSPs themselves, not averages
    steps = np.diff(np.log10(sparse.age_yr[1:]))
    assert np.median(steps) == pytest.approx(0.05, abs=0.01)
    wide = np.flatnonzero(steps > 0.08)  # only where BC03 itself has no age in between (1e5 -> 10^5.15 yr)
    assert np.all(np.diff(kept[1:])[wide] == 1)
    assert grid.sparse_ages(0.1).age_yr.size < sparse.age_yr.size
    assert grid.sparse_ages(1e-3) is grid
    for bad in (0.0, -0.1, float("inf")):
        with pytest.raises(ParameterError, match="log_age_step_dex"):
            grid.sparse_ages(bad)


def test_sparse_ages_with_hat_quadrature_stay_close_to_all_ages():
    """0.05-dex SSPs with the hat quadrature: photometry within a few per cent of all 221 ages."""
    from tengri.errors import ConfigError, ParameterError
    from tengri.model.config import model_from_config

    every = _model("age_of_universe", sfh_quadrature="hat")
    sparse = _model("age_of_universe", sfh_quadrature="hat", ssp_age_step_dex=0.05)
    assert sparse.ssp.age_yr.size < 0.6 * every.ssp.age_yr.size
    assert sparse.compile_signature() != every.compile_signature()
    draws = prior_draws(every, 1.0, 60, seed=5)
    draws["redshift"] = np.full(60, 1.0)
    dmag = np.abs(2.5 * np.log10(np.asarray(sparse.predict_photometry(draws))
                                 / np.asarray(every.predict_photometry(draws))))
    assert np.median(dmag) < 0.005 and dmag.max() < 0.12
    with pytest.raises(ParameterError, match="sfh_quadrature='hat'"):
        _model("age_of_universe", ssp_age_step_dex=0.05)
    config = {"model": {"ssp_ages": "sparse", "sfh_quadrature": "hat", "nebular": False},
              "data": {"filters": ["sdss_r0"]}, "params": {"redshift": {"fixed": 0.5}}}
    model, _ = model_from_config(config)
    assert model.ssp.age_yr.size < 120
    with pytest.raises(ConfigError, match="sparse"):
        model_from_config({**config, "model": {"ssp_ages": "sparse", "nebular": False}})
