"""Inoue et al. (2014) IGM transmission: limits, Table 2 values, and BAGPIPES parity."""

import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tengri  # noqa: F401  (enables float64)
from tengri.physics.igm import (
    LYMAN_ALPHA_AA,
    igm_optical_depth_inoue14,
    igm_transmission_inoue14,
    lyman_series_coefficients,
)


@pytest.fixture(scope="module")
def bagpipes_inoue14():
    """BAGPIPES' own implementation of the Inoue+14 equations, loaded without
    importing the bagpipes package (which builds grids and takes seconds)."""
    root = Path(importlib.util.find_spec("bagpipes").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location("bagpipes_igm_inoue2014", root / "models" / "making" / "igm_inoue2014.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_Inoue14_trans


@pytest.mark.parametrize("z", [0.2, 3.0, 7.5])
def test_transmission_is_one_redward_of_redshifted_lyman_alpha(z):
    wave_obs = np.linspace(LYMAN_ALPHA_AA * (1 + z), 3e4, 500)
    assert np.all(np.asarray(igm_transmission_inoue14(wave_obs, z)) == 1.0)


@pytest.mark.parametrize("z", [0.0, 0.8, 1.9, 2.1, 4.6, 4.8, 6.0, 10.0])
def test_transmission_lies_in_zero_one(z):
    wave_obs = np.geomspace(100.0, 2e4, 3000)
    t = np.asarray(igm_transmission_inoue14(wave_obs, z))
    assert np.all((t >= 0.0) & (t <= 1.0))


def test_table2_is_read_with_39_lines_from_lyman_alpha():
    coefs = lyman_series_coefficients()
    assert coefs["wavelength_aa"].shape == (39,)
    assert coefs["wavelength_aa"][0] == pytest.approx(1215.67)
    assert coefs["laf"].shape == (39, 3) and coefs["dla"].shape == (39, 2)


@pytest.mark.parametrize(
    "z, expected_tau",
    [
        # Lyα only, just blueward of (1+z) 1215.67 Å. 1+z = 2: LAF branch 1 (< 2.2),
        # DLA branch 1 (< 3); 1+z = 4: LAF branch 2 (2.2–5.7), DLA branch 2 (≥ 3).
        (1.0, 1.690e-2 * 2.0**1.2 + 1.617e-4 * 2.0**2),
        (3.0, 2.354e-3 * 4.0**3.7 + 5.390e-5 * 4.0**3),
        # 1+z = 7: LAF branch 3 (≥ 5.7)
        (6.0, 1.026e-4 * 7.0**5.5 + 5.390e-5 * 7.0**3),
    ],
)
def test_lyman_alpha_optical_depth_follows_table2_coefficients(z, expected_tau):
    wave_obs = LYMAN_ALPHA_AA * (1 + z) * (1 - 1e-10)
    assert float(igm_optical_depth_inoue14(wave_obs, z)) == pytest.approx(expected_tau, rel=1e-8)


@pytest.mark.parametrize("z", [0.3, 1.0, 1.5, 2.5, 3.0, 4.0, 5.5, 7.0, 9.5])
def test_matches_bagpipes_implementation_of_the_same_equations(bagpipes_inoue14, z):
    rest_aa = np.linspace(500.3, 1300.3, 2001)
    ours = np.asarray(igm_transmission_inoue14(rest_aa * (1 + z), z))
    np.testing.assert_allclose(ours, bagpipes_inoue14(rest_aa, z), rtol=0, atol=1e-12)


def test_mean_lyman_alpha_forest_transmission_falls_with_redshift():
    rest_aa = np.linspace(1080.0, 1180.0, 200)
    redshifts = np.arange(0.5, 8.01, 0.5)
    means = [float(jnp.mean(igm_transmission_inoue14(rest_aa * (1 + z), z))) for z in redshifts]
    assert np.all(np.diff(means) < 0)
    assert means[0] > 0.95 and means[-1] < 1e-3


def test_lyman_continuum_transmission_falls_with_redshift_to_opaque_by_z6():
    rest_aa = np.linspace(850.0, 910.0, 61)
    means = [float(jnp.mean(igm_transmission_inoue14(rest_aa * (1 + z), z))) for z in range(1, 8)]
    assert np.all(np.diff(means) < 0)
    assert means[0] > 0.8 and means[5] < 0.01


def test_transmission_gradient_in_redshift_matches_finite_differences():
    wave_obs = np.linspace(4000.0, 4800.0, 300)

    def mean_t(z):
        return jnp.mean(igm_transmission_inoue14(wave_obs, z))

    z, h = 3.3, 1e-6
    fd = (mean_t(z + h) - mean_t(z - h)) / (2 * h)
    assert float(jax.grad(mean_t)(z)) == pytest.approx(float(fd), rel=1e-5)


def test_transmission_jits_and_vmaps_over_redshift():
    wave_obs = jnp.linspace(3000.0, 6000.0, 100)
    batched = jax.jit(jax.vmap(igm_transmission_inoue14, in_axes=(None, 0)))(wave_obs, jnp.array([2.0, 3.0]))
    assert batched.shape == (2, 100)
    np.testing.assert_allclose(batched[1], igm_transmission_inoue14(wave_obs, 3.0), rtol=1e-14)
