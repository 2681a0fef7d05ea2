"""X-ray binaries and AGN corona (tengri.physics.xray)."""

import numpy as np

from tengri.physics import xray

C_AA_PER_S = 2.99792458e18


def test_lehmer10_relation():
    # Lehmer et al. 2010: α = 9.05e28 erg/s/M☉, β = 1.62e39 erg/s/(M☉/yr)
    np.testing.assert_allclose(xray.xray_binary_luminosity_2_10kev_erg_s(1e10, 0.0), 9.05e38)
    np.testing.assert_allclose(xray.xray_binary_luminosity_2_10kev_erg_s(0.0, 10.0), 1.62e40)


def test_alpha_ox_definition():
    l2500 = 1e30
    alpha_ox = float(xray.alpha_ox_just2007(l2500))
    np.testing.assert_allclose(alpha_ox, -0.140 * 30 + 2.705)
    l2kev = float(xray.agn_lnu_2kev_from_2500aa(l2500))
    nu_2kev = 2.0 * C_AA_PER_S / xray.KEV_AA
    nu_2500 = C_AA_PER_S / 2500.0
    # α_ox = log(L_2keV / L_2500) / log(ν_2keV / ν_2500)
    np.testing.assert_allclose(np.log10(l2kev / l2500) / np.log10(nu_2kev / nu_2500), alpha_ox, rtol=2e-4)


def test_power_law_carries_unit_2_10kev_luminosity():
    for gamma in (1.9, 2.0):
        wave = np.geomspace(0.5, 40.0, 100_000)
        dnu = C_AA_PER_S / wave * np.gradient(np.log(wave))
        lnu = np.asarray(xray.power_law_lnu_per_2_10kev_luminosity(gamma, wave))
        energy = xray.KEV_AA / wave
        band = (energy >= 2.0) & (energy <= 10.0)
        np.testing.assert_allclose(np.sum((lnu * dnu)[band]), 1.0, rtol=1e-3)
        assert np.all(lnu[energy < 0.5] == 0.0)
        slope = np.log(lnu[1000] / lnu[2000]) / np.log(wave[2000] / wave[1000])  # d ln L_ν / d ln ν
        np.testing.assert_allclose(slope, 1.0 - gamma, rtol=1e-9)
