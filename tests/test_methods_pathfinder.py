"""Multi-path Pathfinder on a two-mode target whose answer is known.

Target (latent space, 2-D): a mixture of a minor, narrow Gaussian at
``MINOR_CENTRE`` (mass ``MINOR_MASS``) and a major, broader one at
``MAJOR_CENTRE``; the Problem's init sits on the minor mode, so a single L-BFGS
path from it never leaves it. Multi-path Pathfinder starts further paths at prior
draws, which reach the major mode; importance resampling must then return the
modes in their true proportion. (The Gaussian-target tests of Pathfinder are in
tests/test_methods_optimize.py.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tengri  # noqa: F401  (float64)
from tengri.analysis.diagnostics import psis_log_weights, resample_indices
from tengri.errors import ParameterError
from tengri.inference.methods.pathfinder import (
    build_pathfinder_engine,
    gaussian_log_pdf,
    run_pathfinder,
)
from tengri.inference.problem import Problem

MINOR_CENTRE = np.array([-2.0, 0.0])
MAJOR_CENTRE = np.array([1.5, 0.5])
MINOR_SD, MAJOR_SD = 0.3, 0.5
MINOR_MASS = 0.05
KEY = jax.random.PRNGKey(0)  # its 3 prior-draw paths all reach the major mode


def two_mode_log_likelihood(z, data_args):
    """log of the two-Gaussian mixture density, plus |z|²/2 (divides out the prior)."""
    def log_normal(centre, sd):
        return (-0.5 * jnp.sum(((z - centre) / sd) ** 2)
                - 2 * jnp.log(sd) - jnp.log(2 * jnp.pi))

    log_mix = jnp.logaddexp(
        jnp.log(data_args["minor_mass"]) + log_normal(data_args["minor"], MINOR_SD),
        jnp.log1p(-data_args["minor_mass"]) + log_normal(data_args["major"], MAJOR_SD))
    return log_mix + 0.5 * jnp.sum(z * z)


def two_mode_problem() -> Problem:
    return Problem(
        names=("a", "b"), log_likelihood=two_mode_log_likelihood,
        data_args={"minor": jnp.asarray(MINOR_CENTRE), "major": jnp.asarray(MAJOR_CENTRE),
                   "minor_mass": jnp.asarray(MINOR_MASS)},
        to_physical=lambda z, data_args: {"a": z[0], "b": z[1]},
        init=MINOR_CENTRE + np.array([0.05, -0.05]), residuals=None, n_data=0)


def fraction_in_minor_mode(result) -> float:
    draws = np.asarray(result.samples)[0]
    return float(np.mean(draws[:, 0] < 0.5 * (MINOR_CENTRE[0] + MAJOR_CENTRE[0])))


@pytest.fixture(scope="module")
def problem():
    return two_mode_problem()


def test_a_single_path_from_the_minor_mode_stays_there(problem):
    result = run_pathfinder(problem, KEY, n_paths=1, n_samples=2000, maxiter=50)
    assert fraction_in_minor_mode(result) == 1.0
    np.testing.assert_allclose(np.asarray(result.point), MINOR_CENTRE, atol=0.05)


def test_multi_path_returns_both_modes_in_their_true_proportion(problem):
    result = run_pathfinder(problem, KEY, n_paths=4, n_samples=4000,
                            n_draws_per_path=2000, maxiter=50)
    diag = result.diagnostics
    # path 0 (from init) found the minor mode (its best ELBO ≈ log 0.05, the log of
    # the mode's mass), the prior-draw paths the major one (ELBO ≈ log 0.95)
    np.testing.assert_allclose(diag["elbo_per_path"],
                               np.log([MINOR_MASS] + 3 * [1 - MINOR_MASS]), atol=0.05)
    weights = np.asarray(diag["weight_per_path"])
    assert weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(weights, [MINOR_MASS] + 3 * [(1 - MINOR_MASS) / 3], atol=0.01)
    assert diag["pareto_k"] < 0.7
    # binomial sd of the fraction from 4000 resampled draws: ~0.0035 (ESS is high here)
    assert fraction_in_minor_mode(result) == pytest.approx(MINOR_MASS, abs=0.015)
    exact_mean = MINOR_MASS * MINOR_CENTRE + (1 - MINOR_MASS) * MAJOR_CENTRE
    np.testing.assert_allclose(np.asarray(result.point), exact_mean, atol=0.08)
    assert diag["best_path"] != 0 and np.argmax(diag["elbo_per_path"]) == diag["best_path"]


def test_per_path_weights_count_a_mode_once_per_path(problem):
    # the paper's weights log p − log q_k: the major mode, found by 3 of 4 paths,
    # is counted three times (module docstring): minor fraction ≈ 0.05 / (0.05 + 3·0.95)
    result = run_pathfinder(problem, KEY, n_paths=4, n_samples=4000,
                            n_draws_per_path=2000, maxiter=50, importance_weights="path")
    expected = MINOR_MASS / (MINOR_MASS + 3 * (1 - MINOR_MASS))
    assert fraction_in_minor_mode(result) == pytest.approx(expected, abs=0.01)


def test_all_paths_share_one_compiled_engine(problem):
    engine = build_pathfinder_engine(problem.log_likelihood, 2, 50, 20, 4, 2000, 4000)
    assert engine._cache_size() == 1  # traced once for 4 paths (lax.map, not a loop)


def test_unknown_weighting_is_rejected(problem):
    with pytest.raises(ParameterError, match="importance_weights"):
        run_pathfinder(problem, KEY, importance_weights="uniform")


def test_psis_weights_are_normalised_and_ignore_non_finite_draws():
    log_w = np.array([0.0, np.log(3.0), -np.inf, np.nan])
    smoothed, khat = psis_log_weights(log_w)
    weights = np.exp(smoothed)
    assert weights[2] == weights[3] == 0.0
    assert weights.sum() == pytest.approx(1.0)
    assert weights[1] / weights[0] == pytest.approx(3.0, rel=1e-12)  # too few to smooth
    assert np.isnan(khat)
    heavy = np.random.default_rng(1).standard_normal(4000) * 3.0  # log-normal ratios
    smoothed, khat = psis_log_weights(np.append(heavy, np.nan))
    assert np.exp(smoothed[:-1]).sum() == pytest.approx(1.0) and smoothed[-1] == -np.inf
    assert khat > 0.7  # flagged: weights this heavy-tailed are unreliable


def test_resampling_follows_the_weights():
    log_w = np.array([np.log(0.1), -np.inf, np.log(0.6), np.log(0.3)])
    idx = resample_indices(log_w, np.random.default_rng(0).uniform(size=20000))
    np.testing.assert_allclose(np.bincount(idx, minlength=4) / 20000, [0.1, 0, 0.6, 0.3],
                               atol=0.01)


def test_gaussian_log_pdf_matches_scipy():
    from scipy.stats import multivariate_normal

    cov = np.array([[0.5, 0.2], [0.2, 0.3]])
    x = np.array([[0.1, -0.4], [1.0, 2.0]])
    np.testing.assert_allclose(gaussian_log_pdf(jnp.asarray(x), jnp.zeros(2), jnp.asarray(cov)),
                               multivariate_normal(np.zeros(2), cov).logpdf(x), rtol=1e-10)
