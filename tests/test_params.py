"""Priors, Parameters and the latent-space maps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import tengri  # noqa: F401  (enables x64)
from tengri.errors import ParameterError
from tengri.params import Fixed, LogUniform, Normal, Parameters, TruncatedNormal, Uniform, prior_from_dict

PRIORS = {
    "a": Uniform(-1.0, 3.0),
    "b": LogUniform(0.01, 10.0),
    "c": Normal(2.0, 0.5),
    "d": TruncatedNormal(0.0, 1.0, -0.5, 2.0),
}
SCIPY = {
    "a": stats.uniform(-1, 4),
    "b": stats.loguniform(0.01, 10),
    "c": stats.norm(2, 0.5),
    "d": stats.truncnorm(-0.5, 2.0),
}


@pytest.fixture
def params():
    return Parameters(PRIORS, e=Fixed(7.0))


def test_free_and_fixed_names(params):
    assert params.free_names == ("a", "b", "c", "d")
    assert params.fixed_values == {"e": 7.0}


def test_latent_standard_normal_maps_to_prior_distribution(params):
    draws = params.sample(jax.random.PRNGKey(0), 20000)
    for name, dist in SCIPY.items():
        result = stats.kstest(np.asarray(draws[name]), dist.cdf)
        assert result.pvalue > 1e-3, name
    assert np.all(np.asarray(draws["e"]) == 7.0)


def test_latent_round_trip(params):
    table = jnp.asarray(params.prior_table())
    z = jnp.array([0.3, -1.2, 2.0, 0.1])
    back = params.to_latent(params.to_physical(z, table), table)
    np.testing.assert_allclose(back, z, atol=1e-10)


def test_log_jacobian_matches_autodiff(params):
    table = jnp.asarray(params.prior_table())
    z = jnp.array([0.3, -1.2, 0.7, 0.1])
    names = params.free_names
    jac = jax.jacobian(lambda zz: jnp.stack([params.to_physical(zz, table)[n] for n in names]))(z)
    expected = jnp.log(jnp.abs(jnp.linalg.det(jac)))
    np.testing.assert_allclose(params.log_abs_det_jacobian(z, table), expected, rtol=1e-8)


def test_log_prior_matches_scipy(params):
    table = jnp.asarray(params.prior_table())
    values = {"a": 0.5, "b": 0.2, "c": 1.7, "d": 0.4}
    expected = sum(SCIPY[n].logpdf(v) for n, v in values.items())
    np.testing.assert_allclose(params.log_prior(values, table), expected, rtol=1e-10)


def test_log_prior_outside_support_is_minus_inf(params):
    table = jnp.asarray(params.prior_table())
    assert params.log_prior({"a": 5.0, "b": 0.2, "c": 1.7, "d": 0.4}, table) == -jnp.inf


def test_dynamic_bound_resolved_per_galaxy():
    p = Parameters(age_gyr=Uniform(0.1, "age_of_universe"))
    assert p.prior_table({"age_of_universe": 5.0})[0, 1] == 5.0
    with pytest.raises(ParameterError, match="age_of_universe"):
        p.prior_table()


@pytest.mark.parametrize(
    "make",
    [lambda: Uniform(2.0, 1.0), lambda: LogUniform(-1.0, 1.0), lambda: Normal(0.0, 0.0),
     lambda: Uniform(0.0, float("nan")), lambda: Uniform(0.0, "tomorrow")],
)
def test_bad_prior_raises(make):
    with pytest.raises(ParameterError):
        make()


def test_prior_from_dict_forms():
    assert prior_from_dict("x", {"fixed": 1.0}) == Fixed(1.0)
    assert prior_from_dict("x", {"prior": "uniform", "low": 0, "high": 1}) == Uniform(0.0, 1.0)
    with pytest.raises(ParameterError, match="'x'.*low < high"):
        prior_from_dict("x", {"prior": "uniform", "low": 1, "high": 0})
    with pytest.raises(ParameterError, match="unknown prior"):
        prior_from_dict("x", {"prior": "cauchy"})
    with pytest.raises(ParameterError, match="missing"):
        prior_from_dict("x", {"prior": "normal", "mu": 0})


def test_summary_str_lists_every_parameter(params):
    text = params.summary_str()
    for name in "abcde":
        assert name in text
    assert "4 free, 1 fixed" in text
