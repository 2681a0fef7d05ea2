"""Exact posteriors of the SBC simulations of ``sbc3.toml``, on a grid: is a method's miscalibration its own?

``tengri sbc`` reports how often a method's intervals contain the truth. Over a
finite set of simulations even the exact posterior misses the nominal coverage by
binomial noise; this script computes that exact posterior, on a dense grid, for the
very same simulations (same seed, S/N and prior draws as :func:`tengri.validation.sbc.simulate`),
so that a method's coverage can be compared with the exact one simulation by simulation.

Model: three free parameters with uniform priors, ``stellar_mass`` [log10 M☉],
``age_gyr`` [Gyr] and ``av`` [mag], everything else fixed (``src/tengri/examples/sbc3.toml``).
The band fluxes are linear in 10^stellar_mass, so templates are computed once on an
(age, A_V) grid (log-spaced in age) through the fit's own Problem (``residuals``),
and the stellar mass is a fine grid of flux scales. Posterior mass of a cell =
Gaussian likelihood × prior density × cell volume; marginal quantiles are read off
the cumulative sums.

Printed: the exact posterior's 68% / 95% central-interval coverage per parameter
and, with ``--sbc DIR`` (the output of ``tengri sbc`` with the same seed and S/N),
the method's coverage on the same simulations, the simulations where only one of
the two contains the truth, and |rank/(L+1) − exact CDF at the truth| (0 … 1; an
exact sampler with L = 99 thinned draws scatters by about 0.03–0.05).

    .venv/bin/python bench/sbc_exact_posterior.py [--n 200] [--seed 0] [--snr 20]
        [--grid 400,400,1000] [--sbc sbc/nuts] [--out exact.npz]

Cost at the default grid: about 17 minutes for 200 simulations on two shared, loaded CPU cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SBC3 = Path(__file__).resolve().parents[1] / "src" / "tengri" / "examples" / "sbc3.toml"
NAMES = ("stellar_mass", "age_gyr", "av")
QUANTILES = np.array([0.025, 0.16, 0.5, 0.84, 0.975])
PRUNE_CHI2 = 50.0  # (age, A_V) cells whose best χ² exceeds the minimum by more carry < e⁻²⁵


def uniform_bounds(model) -> dict[str, tuple[float, float]]:
    """``name → (low, high)`` of the free parameters; they must be exactly ``NAMES``, uniform."""
    params = model.parameters
    if sorted(params.free_names) != sorted(NAMES) or set(params.kinds) != {"uniform"}:
        raise SystemExit(f"this check needs free {NAMES} with uniform priors; the model has "
                         f"{list(zip(params.free_names, params.kinds))}")
    table = params.prior_table()
    return {n: (float(table[i, 0]), float(table[i, 1])) for i, n in enumerate(params.free_names)}


def template_fluxes(model, redshift: float, age_gyr: np.ndarray, av_mag: np.ndarray,
                    bounds: dict) -> np.ndarray:
    """Band fluxes f_ν [erg/s/cm²/Hz] at stellar_mass = 10 of every (age, A_V) pair,
    shape (n_age · n_av, n_band), read through the fit's Problem (the fitted model itself)."""
    import jax
    import jax.numpy as jnp
    from scipy.special import ndtri

    from tengri.inference.fitter import Fitter

    n_band = len(model.photometry.filter_names)
    problem = Fitter(model, np.zeros(n_band), np.ones(n_band), fixed={"redshift": redshift}).problem
    age, av = np.meshgrid(age_gyr, av_mag, indexing="ij")
    physical = {"age_gyr": age.ravel(), "av": av.ravel(), "stellar_mass": np.full(age.size, 10.0)}
    latent = np.stack([ndtri((physical[n] - bounds[n][0]) / (bounds[n][1] - bounds[n][0]))
                       for n in problem.names], axis=1)
    residuals = jax.jit(jax.vmap(problem.residuals, in_axes=(0, None)))
    chunks = np.array_split(latent, max(1, latent.shape[0] // 20000))
    # residual = (model − data) / noise = model, with data 0 and noise 1
    return np.concatenate([np.asarray(residuals(jnp.asarray(c), problem.data_args)) for c in chunks])


def exact_marginals(templates, cell_volume, mass_scale, data, sigma) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mass per (age, A_V) cell (n_cell,) and per stellar-mass cell (n_mass,),
    unnormalised, for one galaxy's fluxes ``data`` and errors ``sigma`` (n_band,)."""
    a = np.sum(templates**2 / sigma**2, 1)
    b = np.sum(templates * data / sigma**2, 1)
    c = np.sum(data**2 / sigma**2)
    best = np.clip(b / a, mass_scale[0], mass_scale[-1])
    chi2_best = a * best**2 - 2 * b * best + c
    keep = np.flatnonzero(chi2_best - chi2_best.min() < PRUNE_CHI2)
    cell, mass = np.zeros(templates.shape[0]), np.zeros(mass_scale.size)
    for part in np.array_split(keep, max(1, keep.size // 5000)):
        chi2 = a[part, None] * mass_scale**2 - 2 * b[part, None] * mass_scale + c
        w = np.exp(-0.5 * (chi2 - chi2_best.min())) * cell_volume[part, None]
        cell[part] = w.sum(1)
        mass += w.sum(0)
    return cell, mass


def quantiles_and_cdf(edges, mass, truth) -> tuple[np.ndarray, float]:
    """``QUANTILES`` of a 1-D gridded marginal (cell edges, masses) and its CDF at ``truth``."""
    cdf = np.concatenate([[0.0], np.cumsum(mass)]) / mass.sum()
    return np.interp(QUANTILES, cdf, edges), float(np.interp(truth, edges, cdf))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(SBC3))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snr", type=float, default=20.0)
    parser.add_argument("--grid", default="400,400,1000", help="cells in age, A_V, stellar mass")
    parser.add_argument("--sbc", action="append", default=[], help="a `tengri sbc` output directory")
    parser.add_argument("--out", default=None, help="save quantiles and CDFs (.npz)")
    args = parser.parse_args()

    import tengri  # noqa: F401  (float64)
    from tengri.validation import sbc

    model, _, redshift = sbc._model_and_redshift(args.config, None)
    bounds = uniform_bounds(model)
    n_age, n_av, n_mass = (int(v) for v in args.grid.split(","))
    edges = {"age_gyr": np.geomspace(*bounds["age_gyr"], n_age + 1),
             "av": np.linspace(*bounds["av"], n_av + 1),
             "stellar_mass": np.linspace(*bounds["stellar_mass"], n_mass + 1)}
    mid = {k: 0.5 * (e[1:] + e[:-1]) for k, e in edges.items()}
    templates = template_fluxes(model, redshift, mid["age_gyr"], mid["av"], bounds)
    cell_volume = (np.diff(edges["age_gyr"])[:, None] * np.diff(edges["av"])[None, :]).ravel()
    mass_scale = 10.0 ** (mid["stellar_mass"] - 10.0)

    q = {n: np.zeros((args.n, QUANTILES.size)) for n in NAMES}
    cdf = {n: np.zeros(args.n) for n in NAMES}
    truth = {n: np.zeros(args.n) for n in NAMES}
    for i in range(args.n):
        t, galaxy = sbc.simulate(model, i, args.seed, args.snr, redshift)
        cell, mass = exact_marginals(templates, cell_volume, mass_scale,
                                     np.asarray(galaxy["flux_obs"]), np.asarray(galaxy["noise"]))
        cell = cell.reshape(n_age, n_av)
        marginal = {"stellar_mass": mass, "age_gyr": cell.sum(1), "av": cell.sum(0)}
        for n in NAMES:
            truth[n][i] = t[n]
            q[n][i], cdf[n][i] = quantiles_and_cdf(edges[n], marginal[n], t[n])

    exact_in = {}
    print(f"exact posterior on a {args.grid} grid, {args.n} simulations (seed {args.seed}, S/N {args.snr:g})")
    for n in NAMES:
        in68 = (q[n][:, 1] <= truth[n]) & (truth[n] <= q[n][:, 3])
        in95 = (q[n][:, 0] <= truth[n]) & (truth[n] <= q[n][:, 4])
        exact_in[n] = {"0.68": in68, "0.95": in95}
        print(f"  {n:<13} coverage 68% {in68.mean():.3f}  95% {in95.mean():.3f}")
    for directory in args.sbc:
        sims = [json.loads((Path(directory) / "sims" / f"sim-{i:05d}.json").read_text()) for i in range(args.n)]
        print(f"{directory}: the method on the same simulations")
        for n in NAMES:
            for i, s in enumerate(sims):
                if abs(s["truth"][n] - truth[n][i]) > 1e-9 * max(1.0, abs(truth[n][i])):
                    raise SystemExit(f"{directory}: simulation {i} has another truth; same --seed and --snr?")
            cells = []
            for level in ("0.68", "0.95"):
                hit = np.array([s["inside"][level][n] for s in sims])
                only_exact = np.flatnonzero(exact_in[n][level] & ~hit).tolist()
                only_method = np.flatnonzero(~exact_in[n][level] & hit).tolist()
                cells.append(f"{level}: {hit.mean():.3f} (only exact {len(only_exact)}, only method {len(only_method)})")
            u = np.array([(s["ranks"][n] + 0.5) / (s["n_max"][n] + 1) for s in sims])
            d = np.abs(u - cdf[n])
            print(f"  {n:<13} " + "  ".join(cells)
                  + f"  |rank − exact CDF| median {np.median(d):.3f}, 90% {np.quantile(d, 0.9):.3f}, max {d.max():.3f}")
    if args.out:
        np.savez(args.out, **{f"{n}_{k}": v[n] for n in NAMES for k, v in
                              (("quantiles", q), ("cdf", cdf), ("truth", truth))})


if __name__ == "__main__":
    main()
