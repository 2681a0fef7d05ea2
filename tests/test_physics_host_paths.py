"""numpy host paths of the per-galaxy set-up (cosmology, IGM, band matrix) agree with
the jax functions the likelihood differentiates, to 1e-12."""

import jax.numpy as jnp
import numpy as np
import pytest

from tengri.physics import cosmology, igm

REDSHIFTS = np.array([0.0, 0.01, 0.3, 1.0, 1.19, 1.21, 2.5, 4.69, 4.71, 7.0, 12.0])


@pytest.mark.parametrize("cosmo", [cosmology.PLANCK18, cosmology.FlatLambdaCDM(70.0, 0.3)])
def test_cosmology_numpy_equals_jax(cosmo):
    for z in (REDSHIFTS, 1.3):
        d_np = cosmology.luminosity_distance_cm_numpy(z, cosmo)
        d_jax = np.asarray(cosmology.luminosity_distance_cm(jnp.asarray(z), cosmo))
        assert isinstance(d_np, (np.ndarray, np.floating)) and np.shape(d_np) == np.shape(z)
        np.testing.assert_allclose(d_np, d_jax, rtol=1e-12, atol=0)
        np.testing.assert_allclose(cosmology.age_of_universe_gyr_numpy(z, cosmo),
                                   cosmology.age_of_universe_gyr(jnp.asarray(z), cosmo), rtol=1e-12, atol=0)


@pytest.mark.parametrize("z", REDSHIFTS)
def test_igm_transmission_numpy_equals_jax(z):
    wave_obs = np.geomspace(500.0, 2000.0, 3000) * (1.0 + z)
    host = igm.igm_transmission_inoue14_numpy(wave_obs, z)
    device = np.asarray(igm.igm_transmission_inoue14(jnp.asarray(wave_obs), z))
    assert host.dtype == np.float64 and host.shape == wave_obs.shape
    # relative where the light gets through; an e^-τ of 1e-30 is dark either way
    lit = device > 1e-30
    np.testing.assert_allclose(host[lit], device[lit], rtol=1e-12, atol=0)
    np.testing.assert_allclose(host[~lit], device[~lit], rtol=0, atol=1e-30)
    np.testing.assert_array_equal(host[wave_obs >= igm.LYMAN_ALPHA_AA * (1 + z)], 1.0)


@pytest.mark.parametrize("z", [0.4, 1.0, 3.2, 6.5])
def test_band_matrix_on_the_host_equals_the_chain(phot_model, z):
    """prepare's band matrix (numpy d_L and IGM) is the one the chain builds in jax."""
    host = phot_model._band_matrix_at(z)
    device = np.asarray(phot_model._band_matrix(jnp.asarray(z), phot_model.grids))
    scale = np.max(np.abs(device), axis=1, keepdims=True)
    np.testing.assert_allclose(host / scale, device / scale, rtol=0, atol=1e-12)
    d_l, age_gyr, _ = phot_model._redshift_terms(z)
    np.testing.assert_allclose(age_gyr, cosmology.age_of_universe_gyr(z, phot_model.cosmo), rtol=1e-12)
    np.testing.assert_allclose(d_l, cosmology.luminosity_distance_cm(z, phot_model.cosmo), rtol=1e-12)
