"""AGN accretion disk and torus spectra (tengri.physics.agn)."""

import jax
import jax.numpy as jnp
import numpy as np

from tengri.physics import agn

C_AA_PER_S = 2.99792458e18


def _fine_grid(low, high, n=200_000):
    wave = np.geomspace(low, high, n)
    dnu = C_AA_PER_S / wave * np.gradient(np.log(wave))
    return wave, dnu


def test_disk_has_unit_luminosity():
    wave, dnu = _fine_grid(9.0, 1e10)
    lnu = np.asarray(agn.accretion_disk_lnu_per_unit_luminosity(wave))
    np.testing.assert_allclose(np.sum(lnu * dnu), 1.0, rtol=1e-4)


def test_disk_slopes_and_continuity():
    lam = np.array([20.0, 40.0, 200.0, 400.0, 2000.0, 4000.0, 1e5, 2e5])
    lam_l_lam = np.asarray(agn.accretion_disk_lnu_per_unit_luminosity(lam)) * C_AA_PER_S / lam
    slopes = np.log(lam_l_lam[1::2] / lam_l_lam[::2]) / np.log(2.0)
    np.testing.assert_allclose(slopes, agn.DISK_SLOPES, atol=1e-12)
    for b in agn.DISK_BREAKS_AA[1:]:  # continuous across each break
        below, above = agn.accretion_disk_lnu_per_unit_luminosity(np.array([b * (1 - 1e-9), b]))
        np.testing.assert_allclose(below, above, rtol=1e-8)
    assert float(agn.accretion_disk_lnu_per_unit_luminosity(np.array([9.9]))[0]) == 0.0


def test_torus_unit_luminosity_peak_and_gradient():
    wave, dnu = _fine_grid(1e3, 1e8, 20_000)
    wave, dnu = jnp.asarray(wave), jnp.asarray(dnu)
    torus = agn.torus_lnu_per_unit_luminosity(100.0, 1500.0, 1.5, 8, wave, dnu)
    np.testing.assert_allclose(float(jnp.sum(torus * dnu)), 1.0, rtol=1e-12)
    nu_l_nu = np.asarray(torus * C_AA_PER_S / wave)
    peak_um = float(wave[np.argmax(nu_l_nu)]) / 1e4
    assert 2.0 < peak_um < 40.0  # between hot (1500 K) and cold (100 K) dust
    grad = jax.grad(lambda t: jnp.sum(agn.torus_lnu_per_unit_luminosity(t, 1500.0, 1.5, 8, wave, dnu)[::50]))(150.0)
    assert np.isfinite(float(grad))
