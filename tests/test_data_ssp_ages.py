"""SSP age bins: explicit edges, rebinning onto other ages, BAGPIPES' age grid."""

import numpy as np
import pytest

from tengri import Fixed, Parameters, SEDModel
from tengri.data import load_ssp_grid
from tengri.data.ssp import SSPGrid, age_overlap_weights, bagpipes_age_grid
from tengri.errors import ParameterError
from tengri.physics.sfh import age_bin_edges_yr


@pytest.fixture(scope="module")
def bc03_solar():
    """BC03 at Z = 0.2, 1 Z☉ (all 221 ages, full wavelength grid)."""
    return load_ssp_grid("bc03_miles").subset(metallicity_index=[2, 4])


@pytest.fixture(scope="module")
def bagpipes_grid(bc03_solar):
    return bc03_solar.rebinned_ages(*bagpipes_age_grid())


def test_bagpipes_age_grid_is_0_1_dex_from_1_myr_with_log_midpoint_edges():
    ages, edges = bagpipes_age_grid()
    assert ages.size == 42 and edges.shape == (43,)
    np.testing.assert_allclose(np.log10(ages), 6.0 + 0.1 * np.arange(42), atol=1e-12)
    assert edges[0] == 0.0
    assert edges[-1] == pytest.approx(13.4669e9, rel=1e-4)  # H0 = 70, Ωm = 0.3 at z = 0
    np.testing.assert_allclose(edges[1:-1], np.sqrt(ages[1:] * ages[:-1]), rtol=1e-12)
    _, planck_edges = bagpipes_age_grid("planck18")
    assert planck_edges[-1] == pytest.approx(13.79e9, rel=2e-3)


def test_bagpipes_age_grid_rejects_a_bad_step():
    with pytest.raises(ParameterError, match="log_age_step_dex"):
        bagpipes_age_grid(log_age_step_dex=0.0)


def test_rebinned_grid_keeps_its_edges_and_axes(bc03_solar, bagpipes_grid):
    ages, edges = bagpipes_age_grid()
    assert bagpipes_grid.shape == (2, 42, bc03_solar.shape[2])
    np.testing.assert_array_equal(bagpipes_grid.age_bin_edges_yr, edges)
    np.testing.assert_array_equal(bagpipes_grid.age_yr, ages)
    np.testing.assert_array_equal(bagpipes_grid.metallicity_zsun, bc03_solar.metallicity_zsun)
    assert not bagpipes_grid.lnu.flags.writeable


def test_rebinning_conserves_the_light_of_a_constant_star_formation_history(bc03_solar, bagpipes_grid):
    """Σ L̄_j Δt_j on the new bins = Σ L_i Δt_i of the raw bins over [0, age of the universe]."""
    new_edges = bagpipes_grid.age_bin_edges_yr
    raw_edges = bc03_solar.age_bin_edges_yr
    raw_time_inside = np.clip(np.minimum(raw_edges[1:], new_edges[-1]) - raw_edges[:-1], 0.0, None)
    raw_light = np.einsum("a,zaw->zw", raw_time_inside, bc03_solar.lnu)
    new_light = np.einsum("a,zaw->zw", np.diff(new_edges), bagpipes_grid.lnu)
    np.testing.assert_allclose(new_light, raw_light, rtol=1e-10)
    raw_mass = bc03_solar.surviving_mass_fraction @ raw_time_inside
    np.testing.assert_allclose(bagpipes_grid.surviving_mass_fraction @ np.diff(new_edges), raw_mass, rtol=1e-12)


def test_a_new_bin_inside_one_raw_bin_reproduces_that_ssp(bc03_solar):
    raw = bc03_solar.age_bin_edges_yr
    inside = (raw[100] + 0.1 * (raw[101] - raw[100]), raw[101] - 0.1 * (raw[101] - raw[100]))
    ages = bc03_solar.age_yr[[50, 100, 150]]
    grid = bc03_solar.rebinned_ages(ages, [0.0, inside[0], inside[1], 2e10])
    np.testing.assert_array_equal(grid.lnu[:, 1], bc03_solar.lnu[:, 100])
    np.testing.assert_array_equal(grid.surviving_mass_fraction[:, 1], bc03_solar.surviving_mass_fraction[:, 100])


def test_overlap_weights_stretch_the_outermost_bins_over_the_new_range():
    weights = age_overlap_weights(np.array([1.0, 2.0, 4.0]), np.array([0.0, 3.0, 6.0]))
    np.testing.assert_allclose(weights, [[2 / 3, 1 / 3], [0.0, 1.0]])


@pytest.mark.parametrize(
    "edges, message",
    [
        ([0.0, 5e6, 5e8], "shape"),
        ([0.0, 5e6, 5e8, np.nan], "finite"),
        ([-1.0, 5e6, 5e8, 2e10], "≥ 0"),
        ([0.0, 5e8, 5e6, 2e10], "increasing"),
        ([0.0, 5e6, 5e7, 2e10], "outside its bin"),
    ],
)
def test_bad_age_edges_are_refused_naming_the_argument(bc03_solar, edges, message):
    ages = np.array([1e6, 1e8, 1e10])
    with pytest.raises(ParameterError, match=f"edges_yr.*{message}|{message}.*edges_yr"):
        bc03_solar.rebinned_ages(ages, edges)
    wave = np.geomspace(100, 1e5, 5)
    with pytest.raises(ParameterError, match="age_edges_yr"):
        SSPGrid.from_arrays(ages, [1.0], wave, np.ones((1, 3, 5)), age_edges_yr=edges)


def test_subset_slices_consecutive_edges_and_drops_them_otherwise(bagpipes_grid):
    edges = bagpipes_grid.age_bin_edges_yr
    run = bagpipes_grid.subset(age_index=slice(5, 20))
    np.testing.assert_array_equal(run.age_bin_edges_yr, edges[5:21])
    one = bagpipes_grid.subset(age_index=7)
    np.testing.assert_array_equal(one.age_bin_edges_yr, edges[7:9])
    sparse = bagpipes_grid.subset(age_index=[1, 5, 9])
    assert sparse.age_edges_yr is None
    a = sparse.age_yr
    linear_midpoints = [max(0.0, a[0] - (a[1] - a[0]) / 2), (a[0] + a[1]) / 2, (a[1] + a[2]) / 2, 1.5 * a[2] - a[1] / 2]
    np.testing.assert_allclose(sparse.age_bin_edges_yr, linear_midpoints, rtol=1e-12)


def test_resampling_in_wavelength_keeps_the_age_bins(bagpipes_grid):
    coarse = bagpipes_grid.resampled(np.geomspace(1000, 1e5, 200))
    np.testing.assert_array_equal(coarse.age_bin_edges_yr, bagpipes_grid.age_bin_edges_yr)


def test_compile_signature_tells_age_grids_apart(bc03_solar):
    ages, edges = bagpipes_age_grid()
    wave = np.geomspace(900, 3e4, 300)
    small = bc03_solar.resampled(wave)
    log_bins = small.rebinned_ages(ages, edges)
    linear_bins = small.rebinned_ages(ages, age_bin_edges_yr(ages, edges[-1], midpoints="linear"))
    params = Parameters(redshift=Fixed(1.0))
    signature = {name: SEDModel(params, ssp=grid, wavelength_aa=wave, nebular=False).compile_signature()
                 for name, grid in (("log", log_bins), ("log again", log_bins), ("linear", linear_bins))}
    assert log_bins.shape == linear_bins.shape
    assert signature["log"] == signature["log again"] != signature["linear"]


@pytest.mark.bagpipes
def test_rebinning_bc03_matches_bagpipes_own_grid(bc03_solar, bagpipes_grid):
    """bagpipes' stellar grid construction, run on the raw spectra, gives the same ages and spectra."""
    from bagpipes import config
    from bagpipes.models.stellar_model import stellar

    ages, edges = bagpipes_age_grid()
    np.testing.assert_array_equal(ages, config.age_sampling)
    np.testing.assert_allclose(edges, config.age_bins, rtol=1e-12)
    builder = stellar.__new__(stellar)
    builder.wavelengths = config.wavelengths
    raw = np.stack([np.asarray(hdu.data) for hdu in config.raw_stellar_grid])  # (n_z, n_age, n_wave) L☉/Å
    theirs_lsun_per_aa = builder._resample_in_age(np.transpose(raw, (2, 0, 1)))[:, [2, 4]]  # (n_wave, n_z, n_age)
    lnu_per_llambda = 3.826e33 * bc03_solar.wavelength_aa**2 / 2.99792458e18
    ours_lsun_per_aa = np.transpose(bagpipes_grid.lnu / lnu_per_llambda, (2, 0, 1))
    lit = theirs_lsun_per_aa > 1e-30 * theirs_lsun_per_aa.max()
    np.testing.assert_allclose(ours_lsun_per_aa[lit], theirs_lsun_per_aa[lit], rtol=1e-6)


def test_config_ssp_ages_bagpipes_bins_the_grid_in_the_models_cosmology():
    from tengri.errors import ConfigError
    from tengri.model.config import model_from_config

    config = {"model": {"ssp_ages": "bagpipes", "nebular": False, "cosmology": {"h0": 70.0, "om0": 0.3}},
              "data": {"filters": ["sdss_r0"]}, "params": {"redshift": {"fixed": 0.5}}}
    model, _ = model_from_config(config)
    ages, edges = bagpipes_age_grid({"h0": 70.0, "om0": 0.3})
    # up to the first age older than the universe at z = 0.5 (8.4 Gyr here): the model drops the rest
    n_kept = int(np.searchsorted(ages, model._oldest_lookback_gyr() * 1e9)) + 1
    assert n_kept < ages.size
    np.testing.assert_array_equal(model.ssp.age_yr, ages[:n_kept])
    np.testing.assert_array_equal(model.ssp.age_bin_edges_yr, edges[: n_kept + 1])
    with pytest.raises(ConfigError, match="ssp_ages"):
        model_from_config({**config, "model": {"ssp_ages": "bc03"}})


@pytest.mark.slow
def test_band_tables_on_bagpipes_age_bins_equal_the_component_chain():
    """The band tables split ages into birth-cloud and older ones from the edges at build time."""
    import jax

    from conftest import DEMO_FILTERS
    from tengri import LogUniform, Photometry, Uniform

    grid = load_ssp_grid().rebinned_ages(*bagpipes_age_grid())
    priors = Parameters(redshift=Fixed(1.0), stellar_mass=Uniform(9.0, 11.0), age_gyr=Uniform(0.01, "age_of_universe"),
                        tau_gyr=LogUniform(0.05, 10.0), metallicity=LogUniform(0.01, 2.5),
                        dust_eta=Uniform(1.0, 2.0), log_u=Uniform(-4.0, -1.0))
    model = SEDModel(priors, Photometry(DEMO_FILTERS), sfh="delayed", dust="calzetti", nebular=True,
                     dust_emission="dl07", ssp=grid)
    assert model.uses_band_tables
    problem = model.build_problem(np.ones(12), np.ones(12))
    z = jax.random.normal(jax.random.key(0), (32, problem.init.size))
    fast = np.asarray(jax.jit(jax.vmap(model._likelihoods["predicted"], (0, None)))(z, problem.data_args))
    theta = jax.vmap(problem.to_physical, (0, None))(z, problem.data_args)
    chain = model.predict_photometry({k: np.asarray(v) for k, v in theta.items()})
    assert np.all(chain > 0)
    assert np.max(np.abs(fast / chain - 1)) < 1e-4
