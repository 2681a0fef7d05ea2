"""Filter curves: sedpy names, user curves, validation, pivot wavelengths."""

import numpy as np
import pytest

from tengri.data import Filter, available_filter_names, load_filters
from tengri.errors import ParameterError


def test_available_names_include_common_surveys():
    names = available_filter_names()
    assert len(names) > 200
    assert {"sdss_r0", "jwst_f444w", "galex_FUV", "twomass_Ks", "herschel_spire_250"} <= set(names)


def test_load_filters_keeps_order_and_reads_curves():
    filters = load_filters(["sdss_g0", "sdss_r0"])
    assert [f.name for f in filters] == ["sdss_g0", "sdss_r0"]
    for f in filters:
        assert f.wavelength_aa.ndim == 1 and f.wavelength_aa.shape == f.transmission.shape
        assert np.all(np.diff(f.wavelength_aa) > 0) and np.all(f.transmission >= 0)


@pytest.mark.parametrize(
    "name, pivot_aa",
    # published pivot wavelengths: JWST NIRCam (STScI JDox), GALEX (Morrissey+2007 ≈ 1535/2301 Å)
    [("jwst_f444w", 44043.0), ("jwst_f150w", 15007.0), ("galex_FUV", 1535.0), ("galex_NUV", 2301.0)],
)
def test_effective_wavelength_is_the_pivot_wavelength(name, pivot_aa):
    (filt,) = load_filters([name])
    assert filt.effective_wavelength_aa == pytest.approx(pivot_aa, rel=3e-3)


def test_pivot_of_a_box_filter_is_analytic():
    wave = np.linspace(4000.0, 6000.0, 2001)
    filt = Filter.from_arrays("box", wave, np.ones_like(wave))
    expected = np.sqrt((6000.0**2 - 4000.0**2) / 2 / np.log(6000.0 / 4000.0))
    assert filt.effective_wavelength_aa == pytest.approx(expected, rel=1e-6)


def test_negative_samples_in_measured_curves_become_zero():
    (filt,) = load_filters(["vista_vircam_Z"])
    assert np.all(filt.transmission >= 0)


def test_zero_runs_at_the_ends_are_trimmed_to_one_sample():
    (filt,) = load_filters(["vista_vircam_Z_FILTER"])
    assert filt.transmission[1] > 0 and filt.transmission[-2] > 0


def test_filter_objects_pass_through():
    own = Filter.from_arrays("mine", [5000.0, 5100.0, 5200.0], [0.0, 1.0, 0.0])
    filters = load_filters([own, "sdss_r0"])
    assert filters[0] is own and filters[1].name == "sdss_r0"


def test_unknown_name_is_named_with_suggestions():
    with pytest.raises(ParameterError, match=r"'sdss_r'.*'sdss_r0'"):
        load_filters(["sdss_g0", "sdss_r"])


def test_single_string_is_rejected():
    with pytest.raises(ParameterError, match="sequence"):
        load_filters("sdss_r0")


@pytest.mark.parametrize(
    "wavelength, transmission, argument",
    [
        ([[1.0, 2.0]], [[1.0, 1.0]], "1-D"),
        ([1.0, 2.0, 3.0], [1.0, 1.0], "transmission has 2"),
        ([3.0, 2.0, 1.0], [1.0, 1.0, 1.0], "increasing"),
        ([1.0, 1.0, 2.0], [1.0, 1.0, 1.0], "increasing"),
        ([1.0, np.nan, 3.0], [1.0, 1.0, 1.0], "wavelength_aa must be finite"),
        ([1.0, 2.0, 3.0], [1.0, np.inf, 1.0], "transmission must be finite"),
        ([1.0, 2.0, 3.0], [1.0, -0.1, 1.0], "≥ 0"),
        ([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], "zero everywhere"),
        ([1.0], [1.0], "at least 2"),
    ],
)
def test_from_arrays_rejects_malformed_curves(wavelength, transmission, argument):
    with pytest.raises(ParameterError, match=argument):
        Filter.from_arrays("bad", wavelength, transmission)


def test_filter_arrays_are_read_only():
    (filt,) = load_filters(["sdss_r0"])
    with pytest.raises(ValueError):
        filt.transmission[0] = 1.0
