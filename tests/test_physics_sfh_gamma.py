"""The regularised lower incomplete gamma function behind the exponential and delayed SFHs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

import tengri  # noqa: F401  (float64)
from tengri.physics import sfh

X = np.concatenate([[0.0, 1e-300, 1e-12, 1e-6], np.geomspace(1e-4, 60.0, 400), [1.0, np.nextafter(1.0, 0.0)]])


def _unrolled_horner(k, x):
    """The earlier implementation: the same series as a Python loop of multiply-adds."""
    small = jnp.minimum(x, 1.0)
    series = jnp.zeros_like(small)
    for n in reversed(range(sfh._SERIES_TERMS)):
        series = series * small + 1.0 / math.factorial(k + n)
    low = small**k * jnp.exp(-small) * series
    big = jnp.maximum(x, 1.0)
    partial = sum(big**n / math.factorial(n) for n in range(k))
    high = -jnp.expm1(-big) - jnp.exp(-big) * (partial - 1.0)
    return jnp.where(x < 1.0, low, high)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_polynomial_series_matches_the_unrolled_loop_and_scipy(k):
    x = jnp.asarray(X)
    new = np.asarray(jax.jit(lambda v: sfh._regularised_lower_gamma(k, v))(x))
    old = np.asarray(jax.jit(lambda v: _unrolled_horner(k, v))(x))
    np.testing.assert_allclose(new, old, rtol=1e-12, atol=0.0)
    positive = X > 0
    np.testing.assert_allclose(new[positive], special.gammainc(k, X[positive]), rtol=1e-12, atol=0.0)
    assert new[0] == 0.0


@pytest.mark.parametrize("k", [2, 3])
def test_polynomial_series_gradient_matches_the_density(k):
    """dP(k, x)/dx = x^(k−1) e^(−x) / (k−1)!, through the polynomial's own derivative rule."""
    x = jnp.asarray(X[X > 0])
    grad = np.asarray(jax.jit(jax.vmap(jax.grad(lambda v: sfh._regularised_lower_gamma(k, v))))(x))
    expected = np.exp((k - 1) * np.log(X[X > 0]) - X[X > 0] - math.lgamma(k))
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-300)
    old = np.asarray(jax.jit(jax.vmap(jax.grad(lambda v: _unrolled_horner(k, v))))(x))
    at_one = X[X > 0] == 1.0  # the loop's minimum/maximum gave half the gradient there
    assert np.allclose(old[at_one], 0.5 * expected[at_one], rtol=1e-12)
    np.testing.assert_allclose(grad[~at_one], old[~at_one], rtol=1e-12, atol=1e-300)


def test_series_is_not_traced_as_a_loop_of_multiply_adds():
    """The series is one call (jnp.polyval), not 40 equations per evaluation."""
    jaxpr = jax.make_jaxpr(lambda v: sfh._regularised_lower_gamma(2, v))(jnp.ones(3))
    assert len(jaxpr.jaxpr.eqns) < 25
    unrolled = jax.make_jaxpr(lambda v: _unrolled_horner(2, v))(jnp.ones(3))
    assert len(unrolled.jaxpr.eqns) > 40
