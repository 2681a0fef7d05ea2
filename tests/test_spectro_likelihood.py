"""Spectroscopic likelihoods: analytic calibration and line marginalisation (issue 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from tengri import Fixed, Parameters, SEDModel
from tengri.errors import DataError, ParameterError
from tengri.inference.spectro_likelihood import chebyshev_design, linear_gaussian_marginal
from tengri.model import Spectroscopy

VALUES = {"age_gyr": 1.5, "tau_gyr": 1.0, "stellar_mass": 10.0, "metallicity": 1.0, "log_u": -2.5,
          "veldisp_kms": 150.0}
WAVE = np.linspace(12600.0, 13600.0, 120)  # around Hα at z = 1


def _gaussian_loglike(resid, sigma):
    return -0.5 * np.sum((resid / sigma) ** 2) - np.sum(np.log(sigma)) - 0.5 * resid.size * np.log(2 * np.pi)


def test_marginal_equals_quadrature_two_gaussian_coefficients():
    rng = np.random.default_rng(3)
    n = 40
    design = np.stack([np.linspace(-1, 1, n), np.cos(np.linspace(0, 3, n))], axis=1) * 0.3
    sigma = rng.uniform(0.5, 1.0, n)
    resid = design @ np.array([0.7, -0.4]) + sigma * rng.normal(size=n)
    prec = np.array([1.0 / 0.8**2, 1.0 / 1.5**2])
    analytic, mean, _ = linear_gaussian_marginal(jnp.asarray(resid), jnp.asarray(1 / sigma**2), jnp.asarray(design),
                                                 jnp.zeros(2), jnp.asarray(prec), jnp.ones(2, bool))
    analytic = float(analytic) - np.sum(np.log(sigma)) - 0.5 * n * np.log(2 * np.pi)

    def integrand(b, a):
        coef = np.array([a, b])
        prior = -0.5 * np.sum(prec * coef**2) + 0.5 * np.sum(np.log(prec / (2 * np.pi)))
        return np.exp(_gaussian_loglike(resid - design @ coef, sigma) + prior - analytic)

    value, _ = integrate.dblquad(integrand, -8, 8, -8, 8, epsabs=1e-12, epsrel=1e-10)
    assert value == pytest.approx(1.0, rel=1e-6)


def test_marginal_equals_quadrature_flat_prior():
    rng = np.random.default_rng(4)
    n = 30
    template = np.exp(-0.5 * ((np.arange(n) - 15) / 2.0) ** 2)
    sigma = np.full(n, 0.3)
    resid = 2.0 * template + sigma * rng.normal(size=n)
    flat = 1e-14
    analytic, mean, _ = linear_gaussian_marginal(jnp.asarray(resid), jnp.asarray(1 / sigma**2),
                                                 jnp.asarray(template[:, None]), jnp.zeros(1), jnp.full(1, flat),
                                                 jnp.zeros(1, bool))
    analytic = float(analytic) - np.sum(np.log(sigma)) - 0.5 * n * np.log(2 * np.pi)
    value, _ = integrate.quad(lambda a: np.exp(_gaussian_loglike(resid - a * template, sigma) - analytic),
                              -20, 20, epsabs=1e-13, epsrel=1e-11, points=[float(mean[0])])
    assert value == pytest.approx(1.0, rel=1e-6)


@pytest.fixture(scope="module")
def halpha_model():
    spec = Spectroscopy(WAVE, resolution=2000.0, eline_mode="marginalized", lines=["Halpha"])
    return SEDModel(Parameters({"redshift": Fixed(1.0), "av": Fixed(0.3)}), spec)


def test_model_likelihood_equals_quadrature_calibration_and_line(halpha_model):
    """Both marginalisations together through the Problem, against a 2-d quadrature."""
    model = halpha_model
    parts = model.predict_spectrum(VALUES, components=True)
    continuum, template = parts["flux"], parts["line_templates"][0]
    t1 = chebyshev_design(WAVE, 1)[:, 0]
    sigma = 0.05 * np.max(continuum) * np.ones(WAVE.size)
    rng = np.random.default_rng(5)
    flux_true = 1.5 * parts["line_flux"][0]
    data = continuum * (1 + 0.1 * t1) + flux_true * template + sigma * rng.normal(size=WAVE.size)
    problem = model.build_problem(data, sigma, spectral={"calibration_marginalize": True, "cal_n_poly": 1,
                                                         "cal_prior_sigma": 0.2})
    z = model.parameters.to_latent(VALUES, problem.data_args["table"])
    analytic = float(jax.jit(problem.log_likelihood)(z, problem.data_args))
    flat = float(problem.data_args["flat_precision"])
    scale = 1.0 / np.sqrt(np.sum(template**2 / sigma**2))  # posterior width of the amplitude

    def integrand(u, c):  # amplitude = flux_true + u * scale
        a = flux_true + u * scale
        model_flux = continuum * (1 + c * t1) + a * template
        prior = -0.5 * (c / 0.2) ** 2 - 0.5 * np.log(2 * np.pi * 0.2**2) - 0.5 * flat * a**2
        return np.exp(_gaussian_loglike(data - model_flux, sigma) + prior - analytic) * scale

    value, _ = integrate.dblquad(integrand, -1.0, 1.0, -12, 12, epsabs=1e-12, epsrel=1e-10)
    assert value == pytest.approx(1.0, rel=1e-6)
    assert problem.residuals is None  # not a Gaussian in the parameters any more


def test_layout_errors_name_the_argument(halpha_model):
    with pytest.raises(DataError, match="data"):
        halpha_model.build_problem(np.ones(5), np.ones(5))
    with pytest.raises(ParameterError, match="eline_marginalize"):
        halpha_model.build_problem(np.ones(WAVE.size), np.ones(WAVE.size), spectral={"eline_marginalize": False})
    with pytest.raises(ParameterError, match="cal_n_poly"):
        halpha_model.build_problem(np.ones(WAVE.size), np.ones(WAVE.size), spectral={"cal_n_poly": 0})
