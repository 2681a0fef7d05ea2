"""Check of run("evi")'s Laplace evidences against annealed importance sampling (AIS) at pinned (σ, τ).

For each point (σ [dex], τ [Myr]) in ``--points`` and each of the first ``--n-galaxies``
galaxies of ``population.simulate`` (the bench's galaxies, ``simulate(--n-simulated)``),
the galaxy's latent z is taken to its mode by Gauss–Newton (the engine of
``tengri.inference.population_grid``) and its evidence estimated twice:

- Laplace: log L(ẑ) − ½|ẑ|² − ½ log det A, A = JᵀJ + I (what the grid uses);
- AIS (Neal 2001): ``--particles`` particles start from the Laplace Gaussian N(ẑ, A⁻¹)
  and move through ``--temperatures`` geometric bridges q^(1−β) p^β (β tanh-spaced)
  with one HMC move (5 leapfrog steps of ``--step`` in the Laplace-whitened coordinates
  u, z = ẑ + A^(−½) u) per temperature. The log of the particles' mean weight is an
  estimate of log p(d_i | σ, τ) whose expectation lies below it by about
  var(log w) / (2 × particles).

Prints one JSON line per point: the summed Laplace and AIS log-evidences, the
per-galaxy differences, the mean HMC acceptance and the largest sd(log w).

    nice -n 10 .venv/bin/python bench/population_evidence_check.py --points 0.1,338 0.42,338 0.8,338
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


def ais_log_evidence_fn(galaxy_ll, fixed_index, axes, n_dim: int, n_temperatures: int, n_particles: int,
                        n_leapfrog: int = 5):
    """Jitted ``(keys (N,), mode (N, d), precision (N, d, d), galaxies_args, σ, τ, step)
    -> (log evidence (N,), acceptance (N,), sd of log w (N,))``."""
    import jax
    import jax.numpy as jnp

    i_sigma, i_tau = fixed_index
    ramp = np.tanh(np.linspace(-4.0, 4.0, n_temperatures + 1))
    betas = jnp.asarray((ramp - ramp[0]) / (ramp[-1] - ramp[0]))

    def one(key, mode, precision, args, sigma, tau, step):
        args = {**args, "fixed": args["fixed"].at[i_sigma].set(sigma).at[i_tau].set(tau)}
        chol = jnp.linalg.cholesky(precision)

        def log_ratio(u):
            """log p(d, z(u)) + log|dz/du| − log N(u; 0, I) (2π constants cancel); |dz/du| = det A^(−½)."""
            z = mode + jax.scipy.linalg.solve_triangular(chol.T, u, lower=False)
            return (galaxy_ll(z, args) - 0.5 * jnp.sum(z**2) + 0.5 * jnp.sum(u**2)
                    - jnp.sum(jnp.log(jnp.diag(chol))))

        def log_bridge(u, beta):
            return -0.5 * jnp.sum(u**2) + beta * log_ratio(u)

        grad_bridge = jax.grad(log_bridge)

        def hmc(u, beta, k):
            k_momentum, k_accept = jax.random.split(k)
            p = jax.random.normal(k_momentum, u.shape)

            def leapfrog(carry, _):
                uu, pp = carry
                pp = pp + 0.5 * step * grad_bridge(uu, beta)
                uu = uu + step * pp
                pp = pp + 0.5 * step * grad_bridge(uu, beta)
                return (uu, pp), None

            (u_new, p_new), _ = jax.lax.scan(leapfrog, (u, p), None, length=n_leapfrog)
            gain = (log_bridge(u_new, beta) - 0.5 * jnp.sum(p_new**2)) - (log_bridge(u, beta) - 0.5 * jnp.sum(p**2))
            accept = jnp.log(jax.random.uniform(k_accept)) < jnp.where(jnp.isfinite(gain), gain, -jnp.inf)
            return jnp.where(accept, u_new, u), accept

        def particle(k):
            k_start, k_moves = jax.random.split(k)

            def anneal(carry, x):
                u, log_w = carry
                beta_prev, beta, k_move = x
                log_w = log_w + (beta - beta_prev) * log_ratio(u)
                u, accept = hmc(u, beta, k_move)
                return (u, log_w), accept

            start = (jax.random.normal(k_start, (n_dim,)), 0.0)
            (_, log_w), accepted = jax.lax.scan(anneal, start,
                                                (betas[:-1], betas[1:], jax.random.split(k_moves, n_temperatures)))
            return log_w, jnp.mean(accepted)

        log_w, acceptance = jax.vmap(particle)(jax.random.split(key, n_particles))
        return jax.nn.logsumexp(log_w) - jnp.log(n_particles), jnp.mean(acceptance), jnp.std(log_w)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, axes, None, None, None)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", nargs="+", default=["0.1,338", "0.26,1400", "0.42,338", "0.8,338"],
                        help="σ,τ pairs [dex, Myr]")
    parser.add_argument("--n-galaxies", type=int, default=10)
    parser.add_argument("--n-simulated", type=int, default=40, help="simulate this many, keep the first N")
    parser.add_argument("--temperatures", type=int, default=400)
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--step", type=float, default=0.25, help="HMC leapfrog step in whitened coordinates")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp

    from tengri.inference.population import PopulationFitter
    from tengri.inference.population_grid import build_laplace_engine

    galaxies = bench.simulate(args.n_simulated, 16, 20.0, 1)[:args.n_galaxies]
    fitter = PopulationFitter(bench.make_factory(16), galaxies, bench.SIGMA_PRIOR, bench.TAU_PRIOR)
    fitter.initialize()
    problem = fitter.fitters[0].problem
    laplace = build_laplace_engine(problem.log_likelihood, problem.residuals, fitter._fixed_index, fitter._axes, 25)
    d = len(fitter.galaxy_names)
    ais = ais_log_evidence_fn(problem.log_likelihood, fitter._fixed_index, fitter._axes, d, args.temperatures,
                              args.particles)
    galaxies_args = fitter.problem.data_args["galaxies"]
    z0 = jnp.asarray(fitter.map_point[2:].reshape(fitter.n_galaxies, d))
    for point in args.points:
        sigma, tau = (float(v) for v in point.split(","))
        start = time.perf_counter()
        log_laplace, mode, precision = laplace(z0, galaxies_args, sigma, tau)
        keys = jax.random.split(jax.random.PRNGKey(7), fitter.n_galaxies)
        log_ais, acceptance, sd = ais(keys, mode, precision, galaxies_args, sigma, tau, args.step)
        print(json.dumps({"sigma": sigma, "tau_myr": tau, "laplace": float(jnp.sum(log_laplace)),
                          "ais": float(jnp.sum(log_ais)), "ais_minus_laplace": float(jnp.sum(log_ais - log_laplace)),
                          "per_galaxy": np.round(np.asarray(log_ais - log_laplace), 2).tolist(),
                          "acceptance": float(jnp.mean(acceptance)), "sd_log_w_max": float(jnp.max(sd)),
                          "wall_s": time.perf_counter() - start}), flush=True)


if __name__ == "__main__":
    main()
