"""Equivalent widths and line-ratio diagnostics."""

import numpy as np
import pytest

from tengri.analysis.diagnostics.spectral import (
    av_from_balmer_decrement,
    balmer_decrement,
    bpt_nii_ratios,
    equivalent_width,
    find_line,
)
from tengri.errors import DataError

WAVE = np.arange(6300.0, 6800.0, 0.5)


def gaussian(center, sigma=2.0):
    return np.exp(-0.5 * ((WAVE - center) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))


def test_emission_line_on_flat_continuum_gives_its_positive_width():
    flux = 3.0 * (1 + 12.0 * gaussian(6563.0))
    assert equivalent_width(WAVE, flux, 6563.0) == pytest.approx(12.0, rel=1e-6)


def test_absorption_line_gives_negative_width():
    flux = 1 - 2.5 * gaussian(6563.0)
    assert equivalent_width(WAVE, flux, 6563.0) == pytest.approx(-2.5, rel=1e-6)


def test_sloped_continuum_is_removed():
    continuum = 1.0 + 0.002 * (WAVE - 6563.0)
    flux = continuum * (1 + 7.0 * gaussian(6563.0))
    assert equivalent_width(WAVE, flux, 6563.0) == pytest.approx(7.0, rel=1e-4)


def test_window_edges_between_grid_points_are_interpolated():
    flux = 1 + 4.0 * gaussian(6563.25)
    assert equivalent_width(WAVE, flux, 6563.25, window_aa=15.3) == pytest.approx(4.0, rel=1e-6)


def test_leading_axes_are_independent_spectra():
    flux = np.stack([1 + 2.0 * gaussian(6563.0), 1 + 5.0 * gaussian(6563.0)])
    np.testing.assert_allclose(equivalent_width(WAVE, flux[None], 6563.0), [[2.0, 5.0]], rtol=1e-6)


def test_sidebands_outside_grid_are_rejected():
    with pytest.raises(ValueError, match="needs wavelengths"):
        equivalent_width(WAVE, np.ones_like(WAVE), 6330.0)


@pytest.mark.parametrize("name, value", [("window_aa", 0.0), ("continuum_width_aa", -5.0)])
def test_bad_widths_are_rejected(name, value):
    with pytest.raises(ValueError, match=name):
        equivalent_width(WAVE, np.ones_like(WAVE), 6563.0, **{name: value})


def test_flux_not_matching_wavelengths_is_rejected():
    with pytest.raises(DataError, match="shape"):
        equivalent_width(WAVE, np.ones(10), 6563.0)


def test_balmer_decrement_and_av_follow_calzetti():
    ebv = 0.2
    ratio = 2.86 * 10 ** (0.4 * ebv * (3.61 - 2.53))
    assert balmer_decrement(ratio * 5.0, 5.0) == pytest.approx(ratio)
    assert av_from_balmer_decrement(ratio) == pytest.approx(4.05 * ebv)
    assert av_from_balmer_decrement(2.86) == pytest.approx(0.0)


def test_non_detections_give_nan_ratios():
    x, y = bpt_nii_ratios([1.0, -1.0], [10.0, 10.0], [3.0, 3.0], [0.0, 1.0])
    assert x[0] == pytest.approx(-1.0) and np.isnan(x[1])
    assert np.isnan(y[0]) and y[1] == pytest.approx(np.log10(3.0))


def test_lines_found_by_wavelength_or_name():
    assert find_line("halpha", ["a", "b"], [4861.3, 6564.6]) == 1  # vacuum Hα
    assert find_line("oiii_5007", ["Hbeta", "[OIII]5007"]) == 1
    assert find_line("hbeta", ["H  1  4861.33A"]) == 0


def test_missing_line_is_reported_with_available_lines():
    with pytest.raises(ValueError, match="not among the fitted"):
        find_line("nii_6584", ["Halpha"], [6562.8])
    with pytest.raises(ValueError, match="must be one of"):
        find_line("lyalpha", ["Halpha"])
