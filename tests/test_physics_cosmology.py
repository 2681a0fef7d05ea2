"""Flat ΛCDM distances and times against astropy, and the configuration entry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM as AstropyFlatLambdaCDM

import tengri  # noqa: F401  (enables float64)
from tengri.errors import ConfigError
from tengri.physics import cosmology as cosmo_mod
from tengri.physics.cosmology import (
    PLANCK18,
    FlatLambdaCDM,
    age_of_universe_gyr,
    comoving_distance_mpc,
    cosmology_from_config,
    lookback_time_gyr,
    luminosity_distance_cm,
)

REDSHIFTS = np.geomspace(1e-3, 10.0, 60)
COSMOLOGIES = [(67.66, 0.30966), (70.0, 0.3), (55.0, 0.1), (80.0, 0.8)]


@pytest.mark.parametrize("h0, om0", COSMOLOGIES)
def test_comoving_and_luminosity_distances_match_astropy_without_radiation(h0, om0):
    ref = AstropyFlatLambdaCDM(H0=h0, Om0=om0, Tcmb0=0)
    cosmo = FlatLambdaCDM(h0, om0)
    dc = np.asarray(comoving_distance_mpc(REDSHIFTS, cosmo))
    dl = np.asarray(luminosity_distance_cm(REDSHIFTS, cosmo))
    np.testing.assert_allclose(dc, ref.comoving_distance(REDSHIFTS).value, rtol=1e-9)
    np.testing.assert_allclose(dl, ref.luminosity_distance(REDSHIFTS).to("cm").value, rtol=1e-9)


@pytest.mark.parametrize("h0, om0", COSMOLOGIES)
def test_age_and_lookback_time_match_astropy_without_radiation(h0, om0):
    ref = AstropyFlatLambdaCDM(H0=h0, Om0=om0, Tcmb0=0)
    cosmo = FlatLambdaCDM(h0, om0)
    np.testing.assert_allclose(
        np.asarray(age_of_universe_gyr(REDSHIFTS, cosmo)), ref.age(REDSHIFTS).value, rtol=1e-9
    )
    np.testing.assert_allclose(
        np.asarray(lookback_time_gyr(REDSHIFTS, cosmo)), ref.lookback_time(REDSHIFTS).value, rtol=1e-9
    )


def test_planck18_holds_the_published_h0_and_om0():
    assert PLANCK18.h0 == 67.66
    assert PLANCK18.om0 == 0.30966


def test_distances_vanish_at_redshift_zero():
    assert float(comoving_distance_mpc(0.0)) == 0.0
    assert float(lookback_time_gyr(0.0)) == 0.0


def test_luminosity_distance_gradient_matches_finite_differences():
    def dl(z, h0, om0):
        return luminosity_distance_cm(z, FlatLambdaCDM(h0, om0)) / cosmo_mod.MPC_CM

    args = (2.0, 70.0, 0.3)
    grad = jax.grad(dl, argnums=(0, 1, 2))(*args)
    for i, step in enumerate((1e-5, 1e-4, 1e-6)):
        up, down = list(args), list(args)
        up[i] += step
        down[i] -= step
        fd = (dl(*up) - dl(*down)) / (2 * step)
        np.testing.assert_allclose(float(grad[i]), float(fd), rtol=1e-6)


def test_age_gradient_in_redshift_is_minus_one_over_h_of_z_times_one_plus_z():
    # dt/dz = -1 / ((1+z) H(z))
    z, cosmo = 3.0, FlatLambdaCDM(70.0, 0.3)
    e_z = np.sqrt(0.3 * (1 + z) ** 3 + 0.7)
    expected = -float(cosmo_mod.hubble_time_gyr(cosmo)) / ((1 + z) * e_z)
    assert float(jax.grad(age_of_universe_gyr)(z, cosmo)) == pytest.approx(expected, rel=1e-12)


def test_cosmology_is_a_pytree_that_vmaps_over_h0():
    h0s = jnp.array([60.0, 70.0, 80.0])
    dl = jax.jit(jax.vmap(lambda h0: luminosity_distance_cm(1.0, FlatLambdaCDM(h0, 0.3))))(h0s)
    # d_L ∝ 1/H0 at fixed Ω_m
    np.testing.assert_allclose(np.asarray(dl) * np.asarray(h0s), float(dl[0]) * 60.0, rtol=1e-12)
    assert len(jax.tree_util.tree_leaves(PLANCK18)) == 2


def test_cosmology_from_config_accepts_name_dict_and_instance():
    assert cosmology_from_config("Planck18") == PLANCK18
    assert cosmology_from_config({"h0": 70, "om0": 0.3}) == FlatLambdaCDM(70.0, 0.3)
    custom = FlatLambdaCDM(65.0, 0.25)
    assert cosmology_from_config(custom) is custom


@pytest.mark.parametrize(
    "value, message",
    [
        ("wmap9", "valid names: planck18"),
        ({"h0": 70}, "exactly the keys"),
        ({"h0": 70, "om0": 0.3, "ol0": 0.7}, "exactly the keys"),
        ({"h0": -70, "om0": 0.3}, "h0 must be a positive"),
        ({"h0": 70, "om0": 1.0}, r"om0 must be in \(0, 1\)"),
        (70.0, "must be a name"),
    ],
)
def test_cosmology_from_config_rejects_bad_values_naming_what_is_accepted(value, message):
    with pytest.raises(ConfigError, match=message):
        cosmology_from_config(value)
