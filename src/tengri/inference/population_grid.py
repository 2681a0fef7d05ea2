"""The shared (σ, τ) posterior by quadrature of per-galaxy Laplace evidences (``run("evi")``'s default).

Given (σ, τ) the galaxies are independent, so the population posterior of the two
shared parameters is p(σ, τ | d) ∝ p(σ) p(τ) Π_i p(d_i | σ, τ): a 2-D density that a
grid integrates exactly enough. Each galaxy's evidence is approximated by Laplace's
method at its posterior mode in the latent (ξ_i, θ_i), found by Gauss–Newton on the
whitened residuals r_i and the standard-normal latent prior::

    log p(d_i | σ, τ) ≈ log L_i(ẑ_i) − ½|ẑ_i|² − ½ log det(J_iᵀJ_i + I)

(J_i the residuals' Jacobian at ẑ_i; the Gauss–Newton Hessian, exact for zero
residuals). Why not the ELBO: its gap to the evidence is the galaxies' KL(q ‖ posterior),
which grows with σ (the field enters as 10^x) and moved the EVI optimum to small σ /
large τ; the Laplace error is the curvature mismatch at the mode only, and on the
bench galaxies its σ profile differs from the ELBO's by 20–30 nats
(docs/population_results.md).

Checked (bench/population_evidence_check.py, 10 bench galaxies): against annealed
importance sampling the summed Laplace evidence is within 0.7 nats for σ ≤ 0.58 dex
(0.02 at the truth σ = 0.4, τ = 300 Myr); at σ = 0.8 AIS did not converge and Laplace
may be too high by up to 17–33 nats, so the σ ≳ 0.7 tail may be too heavy.

Known limit (measured): a galaxy's posterior can have several modes, and Gauss–Newton
finds the one its start leads to. The scan warm-starts each grid point from the
previous τ of the same σ row (each row from the first point of the previous row), so
neighbouring points follow one mode.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["grid_nodes", "build_laplace_engine", "laplace_grid", "grid_draws"]


def grid_nodes(bounds: tuple[float, float], n: int, log_spaced: bool) -> tuple[np.ndarray, np.ndarray]:
    """(nodes (n,), edges (n + 1,)) of n cells covering ``bounds``: equal cells in the value,
    or in its logarithm (nodes at the geometric cell centres)."""
    lo, hi = bounds
    if log_spaced:
        edges = np.geomspace(lo, hi, n + 1)
        return np.sqrt(edges[:-1] * edges[1:]), edges
    edges = np.linspace(lo, hi, n + 1)
    return 0.5 * (edges[:-1] + edges[1:]), edges


def build_laplace_engine(galaxy_ll: Callable, galaxy_res: Callable, fixed_index: tuple[int, int], axes: Any,
                         n_steps: int) -> Callable:
    """Jitted ``(z0 (N, d), galaxies_args, σ, τ) -> (log evidence (N,), mode (N, d), precision (N, d, d))``.

    ``galaxy_ll`` / ``galaxy_res`` are one galaxy's Problem ``log_likelihood`` and
    ``residuals``; ``galaxies_args`` the stacked per-galaxy data_args (vmap ``axes``);
    σ [dex] and τ [Myr] overwrite positions ``fixed_index`` of each galaxy's fixed vector.
    """
    i_sigma, i_tau = fixed_index

    def one(z0, args, sigma, tau):
        args = {**args, "fixed": args["fixed"].at[i_sigma].set(sigma).at[i_tau].set(tau)}

        def precision(z):
            jac = jax.jacfwd(galaxy_res)(z, args)
            return jac.T @ jac + jnp.eye(z.size), jac

        def step(z, _):
            a, jac = precision(z)
            return z - jnp.linalg.solve(a, jac.T @ galaxy_res(z, args) + z), None

        z, _ = jax.lax.scan(step, z0, None, length=n_steps)
        a, _ = precision(z)
        log_evidence = galaxy_ll(z, args) - 0.5 * jnp.sum(z**2) - 0.5 * jnp.linalg.slogdet(a)[1]
        return log_evidence, z, a

    return jax.jit(jax.vmap(one, in_axes=(0, axes, None, None)))


def laplace_grid(engine: Callable, galaxies_args, z0: np.ndarray, sigma_nodes: np.ndarray,
                 tau_nodes: np.ndarray, with_precision: bool = False) -> tuple[np.ndarray, ...]:
    """Per-galaxy Laplace log-evidences (N, n_σ, n_τ) and modes (n_σ, n_τ, N, d) on the grid,
    warm-started along τ within each σ row (module docstring); with ``with_precision``
    also the precisions (n_σ, n_τ, N, d, d)."""
    n_galaxies, d = z0.shape
    log_evidence = np.zeros((n_galaxies, sigma_nodes.size, tau_nodes.size))
    modes = np.zeros((sigma_nodes.size, tau_nodes.size, n_galaxies, d))
    precisions = np.zeros(modes.shape + (d,)) if with_precision else None
    z_row = jnp.asarray(z0)
    for j, sigma in enumerate(sigma_nodes):
        z = z_row
        for k, tau in enumerate(tau_nodes):
            values, z, precision = engine(z, galaxies_args, sigma, tau)
            log_evidence[:, j, k] = np.asarray(values)
            modes[j, k] = np.asarray(z)
            if with_precision:
                precisions[j, k] = np.asarray(precision)
            if k == 0:
                z_row = z
    return (log_evidence, modes, precisions) if with_precision else (log_evidence, modes)


def grid_draws(rng: np.random.Generator, log_post: np.ndarray, sigma_edges: np.ndarray, tau_edges: np.ndarray,
               n_draws: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws of (σ, τ) from the piecewise-constant density whose cell (j, k) has log mass
    ``log_post[j, k]``: a cell by its mass, then uniform within it. Returns σ (n,), τ (n,)
    and the flat cell index (n,)."""
    mass = np.exp(log_post - np.max(log_post)).ravel()
    cells = rng.choice(mass.size, size=n_draws, p=mass / mass.sum())
    j, k = np.unravel_index(cells, log_post.shape)
    sigma = rng.uniform(sigma_edges[j], sigma_edges[j + 1])
    tau = rng.uniform(tau_edges[k], tau_edges[k + 1])
    return sigma, tau, cells
