"""Laplace-approximated posterior of the shared (σ_PSD, τ_PSD) on a grid, a reference for bench/population.py.

For each grid point (σ [dex], τ [Myr]) and each simulated galaxy of
``population.simulate`` (same seed, same galaxies), the galaxy's latent vector z_i
(32 ξ and log M*) is moved to its posterior mode by ``--steps`` Gauss–Newton steps
on the whitened residuals r_i(z) and the standard-normal latent prior, and the
galaxy's evidence is approximated by Laplace's method::

    log p(d_i | σ, τ) ≈ −½|r_i(ẑ)|² − ½|ẑ|² − ½ log det(J_iᵀJ_i + I) + const

(J_i the residuals' Jacobian at ẑ; the Gauss–Newton Hessian, exact for zero
residuals). The population posterior on the grid is exp(Σ_i log p(d_i | σ, τ))
times the uniform priors; its marginals give medians, 68 % intervals and standard
deviations for the first N galaxies, N in ``--sizes``.

Caveat (measured): a galaxy's posterior in z can have several modes. The scan
warm-starts each τ from the previous τ of the same σ (and each σ row from the
first τ of the previous row), and the mode it follows depends on that path: from
z = 0 the summed log-evidence of the first 10 galaxies at (0.30, 1490) is −165.9,
on the warm-started scan −124.9. The grid therefore approximates the posterior
only as well as the modes it found; it is a check of EVI's widths, not an exact
reference.

    .venv/bin/python bench/population_laplace.py [--spectra] [--sizes 10 20 40] [--n-sigma 24 --n-tau 24]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import population as bench  # noqa: E402
from _common import write_json  # noqa: E402


def laplace_grid_of(fitter, n_steps: int, sigma_dex: np.ndarray, tau_myr: np.ndarray) -> np.ndarray:
    """Per-galaxy Laplace log-evidences (N, n_σ, n_τ) of a PopulationFitter's galaxies on the
    grid, with the library's engine and warm-started scan (:mod:`tengri.inference.population_grid`),
    from z = 0."""
    from tengri.inference.population_grid import build_laplace_engine, laplace_grid

    problem = fitter.fitters[0].problem
    engine = build_laplace_engine(problem.log_likelihood, problem.residuals, fitter._fixed_index, fitter._axes,
                                  n_steps)
    z0 = np.zeros((fitter.n_galaxies, problem.n_dim))
    log_evidence, _ = laplace_grid(engine, fitter.problem.data_args["galaxies"], z0, sigma_dex, tau_myr)
    return log_evidence


def marginal_summary(grid: np.ndarray, weights: np.ndarray) -> dict:
    """Median, 68 % interval, mean and std of a 1-D marginal given on ``grid``."""
    cdf = np.cumsum(weights)
    mean = float(np.sum(weights * grid))
    return {"median": float(np.interp(0.5, cdf, grid)), "lo68": float(np.interp(0.16, cdf, grid)),
            "hi68": float(np.interp(0.84, cdf, grid)), "mean": mean,
            "std": float(np.sqrt(np.sum(weights * (grid - mean) ** 2)))}


def grid_posterior(log_evidence: np.ndarray, sigma_dex: np.ndarray, tau_myr: np.ndarray) -> dict:
    """Marginal summaries of σ and τ from the summed log-evidence (n_sigma, n_tau) under uniform
    priors (cell widths as weights: the τ grid is log-spaced)."""
    log_post = log_evidence + np.log(np.gradient(sigma_dex))[:, None] + np.log(np.gradient(tau_myr))[None, :]
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    j, k = np.unravel_index(np.argmax(log_post), log_post.shape)
    return {"sfh_field_psd_sigma": marginal_summary(sigma_dex, post.sum(1)),
            "sfh_field_psd_tau_myr": marginal_summary(tau_myr, post.sum(0)),
            "mode": [float(sigma_dex[j]), float(tau_myr[k])]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--spectra", action="store_true")
    parser.add_argument("--n-sigma", type=int, default=24)
    parser.add_argument("--n-tau", type=int, default=24)
    parser.add_argument("--sigma-range", type=float, nargs=2, default=[0.06, 0.99], help="grid ends [dex]")
    parser.add_argument("--tau-range", type=float, nargs=2, default=[25.0, 1490.0], help="grid ends [Myr], log-spaced")
    parser.add_argument("--steps", type=int, default=25, help="Gauss–Newton steps per grid point")
    parser.add_argument("--name", default="population_laplace")
    args = parser.parse_args(argv)

    from tengri.inference.population import PopulationFitter

    resolution = 100.0 if args.spectra else None
    galaxies = bench.simulate(max(args.sizes), 16, 20.0, 1, resolution, 15.0)
    fitter = PopulationFitter(bench.make_factory(16, resolution), galaxies, bench.SIGMA_PRIOR, bench.TAU_PRIOR)
    sigma_dex = np.linspace(*args.sigma_range, args.n_sigma)
    tau_myr = np.geomspace(*args.tau_range, args.n_tau)
    start = time.perf_counter()
    log_evidence = laplace_grid_of(fitter, args.steps, sigma_dex, tau_myr)
    summary = {n: grid_posterior(log_evidence[:n].sum(0), sigma_dex, tau_myr) for n in sorted(args.sizes)}
    print(json.dumps(summary, indent=1))
    write_json(args.name, {"settings": vars(args), "truth": bench.TRUTH, "sigma_dex": sigma_dex.tolist(),
                           "tau_myr": tau_myr.tolist(), "summary": summary, "log_evidence": log_evidence.tolist(),
                           "wall_s": time.perf_counter() - start})


if __name__ == "__main__":
    main()
