"""Photometric likelihood speed: the component chain vs the per-galaxy band tables.

Same machine, same run, for two 12-band configurations at z = 1 (GALEX FUV → IRAC
4.5 µm): ``nebular`` (delayed-τ, Calzetti, nebular, free metallicity; log U fixed
as in bench/single_galaxy.py) and ``fast_catalog`` (exponential SFH, Calzetti,
fixed metallicity, no nebular: the GOODS-S setup of tengri.examples.goodss).
For each it reports

- ``grad_us``: one jitted log-likelihood gradient [µs], best of interleaved rounds,
  chain (``before``) and band tables (``after``); ``grad_in_jitted_loop_us``: the
  same inside one jitted loop (no dispatch: what a sampler's engine pays);
- ``batched_forward_us``: band fluxes of 1000 parameter sets in one vmapped call,
  per set [µs];
- ``prepare_ms``: per-galaxy ``SEDModel.prepare`` (band matrix + tables) [ms],
  median over redshifts 0.5 … 3 after a warm-up; ``table_mb``: the tables' memory;
- ``nuts_warm_s``: ``Fitter(...).run("nuts")`` wall time, second run (compiled),
  chain and band tables (``--no-nuts`` skips it; the chain run takes minutes).

Writes bench/out/likelihood_speed.json.

    .venv/bin/python bench/likelihood_speed.py [--no-nuts] [--n-warmup 500 --n-samples 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402
from forward_model import FILTERS, THETA  # noqa: E402

N_BATCH = 1000


def build_model(name: str, chain: bool = False):
    """One of the two configurations; ``chain=True`` makes its likelihood run the chain."""
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    common = dict(redshift=Fixed(THETA["redshift"]), stellar_mass=Uniform(8, 12),
                  age_gyr=Uniform(0.1, "age_of_universe"), tau_gyr=LogUniform(0.05, 10), av=Uniform(0, 2))
    if name == "nebular":
        params = Parameters(**common, metallicity=LogUniform(0.1, 2.0), log_u=Fixed(-2.5))
        model = SEDModel(params, Photometry(FILTERS), sfh="delayed", dust="calzetti", nebular=True)
    else:
        params = Parameters(**common, metallicity=Fixed(1.0))
        model = SEDModel(params, Photometry(FILTERS), sfh="exponential", dust="calzetti", nebular=False)
    if chain:  # the reference path, for the "before" numbers only
        model.__dict__["_likelihoods"] = model._chain_likelihoods
    return model


def mock(model, seed: int):
    theta = {k: v for k, v in THETA.items() if k in model.parameters.names}
    flux = model.predict_photometry(theta)
    noise = flux / 20
    return flux + noise * np.random.default_rng(seed).standard_normal(flux.shape), noise


def best_times(fns: dict, args: tuple, rounds: int = 7, calls: dict | None = None) -> dict:
    """Best time per call [s] of each function, measured in interleaved rounds."""
    import jax

    for f in fns.values():
        jax.block_until_ready(f(*args))
    best = {k: np.inf for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            n = (calls or {}).get(k, 100)
            start = time.perf_counter()
            for _ in range(n):
                jax.block_until_ready(f(*args))
            best[k] = min(best[k], (time.perf_counter() - start) / n)
    return best


def gradient_in_loop(log_likelihood, problem, n: int) -> float:
    """Time per gradient [s] inside one jitted loop of n gradients (as a sampler sees it)."""
    import jax

    grad = jax.grad(log_likelihood)

    @jax.jit
    def run(z, data_args):
        def body(_, carry):
            z, total = carry
            g = grad(z, data_args)
            return z + 1e-9 * g, total + g.sum()

        return jax.lax.fori_loop(0, n, body, (z, 0.0))[1]

    z0 = problem.init + 0.1
    run(z0, problem.data_args).block_until_ready()
    best = np.inf
    for _ in range(3):
        start = time.perf_counter()
        run(z0, problem.data_args).block_until_ready()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def likelihood_timings(name: str) -> dict:
    import jax

    model = build_model(name)
    flux, noise = mock(model, 0)
    problem = model.build_problem(flux, noise)
    z0 = problem.init + 0.1
    grads = {"before": jax.jit(jax.grad(model._chain_likelihoods["log_likelihood"])),
             "after": jax.jit(jax.grad(model._likelihoods["log_likelihood"]))}
    grad = best_times(grads, (z0, problem.data_args), calls={"before": 10, "after": 200})
    in_loop = {"before": gradient_in_loop(model._chain_likelihoods["log_likelihood"], problem, 50),
               "after": gradient_in_loop(model._likelihoods["log_likelihood"], problem, 2000)}
    batch = jax.random.normal(jax.random.key(0), (N_BATCH, problem.init.size))
    forwards = {"before": jax.jit(jax.vmap(model._chain_likelihoods["predicted"], (0, None))),
                "after": jax.jit(jax.vmap(model._likelihoods["predicted"], (0, None)))}
    forward = best_times(forwards, (batch, problem.data_args), rounds=3, calls={"before": 1, "after": 5})

    prepare_s = []
    for z in np.linspace(0.5, 3.0, 11):
        start = time.perf_counter()
        ctx = model.prepare({"redshift": float(z)})
        jax.block_until_ready(ctx)
        prepare_s.append(time.perf_counter() - start)
    tables = ctx["band_tables"]
    table_bytes = sum(leaf.nbytes for leaf in jax.tree_util.tree_leaves(tables))
    shapes = {k: list(v.shape) for k, v in tables.items() if hasattr(v, "shape") and v.ndim >= 3}
    return {
        "uses_band_tables": model.uses_band_tables,
        "grad_us": {k: v * 1e6 for k, v in grad.items()},
        "grad_speedup": grad["before"] / grad["after"],
        "grad_in_jitted_loop_us": {k: v * 1e6 for k, v in in_loop.items()},
        "grad_in_jitted_loop_speedup": in_loop["before"] / in_loop["after"],
        "batched_forward_us": {k: v / N_BATCH * 1e6 for k, v in forward.items()},
        "prepare_ms": {"median": float(np.median(prepare_s)) * 1e3, "max": float(np.max(prepare_s)) * 1e3},
        "table_mb": table_bytes / 1e6,
        "table_shapes": shapes,
        "interpolation_error_bound_at_z3": float(tables["error_bound"]),
    }


def nuts_warm(name: str, n_warmup: int, n_samples: int) -> dict:
    from tengri import Fitter

    out = {}
    for label, chain in (("after", False), ("before", True)):
        model = build_model(name, chain=chain)
        walls = []
        for seed in (1, 2):
            flux, noise = mock(model, seed)
            start = time.perf_counter()
            post = Fitter(model, flux, noise).run("nuts", n_warmup=n_warmup, n_samples=n_samples)
            walls.append(time.perf_counter() - start)
        out[label] = {"first_s": walls[0], "second_s": walls[1],
                      "divergences": int(post.diagnostics.get("divergences", -1)),
                      "median_stellar_mass": float(np.median(post.samples["stellar_mass"]))}
    out["speedup_second"] = out["before"]["second_s"] / out["after"]["second_s"]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-nuts", action="store_true")
    parser.add_argument("--n-warmup", type=int, default=500)
    parser.add_argument("--n-samples", type=int, default=1000)
    args = parser.parse_args()
    result = {name: likelihood_timings(name) for name in ("nebular", "fast_catalog")}
    if not args.no_nuts:
        result["nebular"]["nuts_warm_s"] = nuts_warm("nebular", args.n_warmup, args.n_samples)
    result["settings"] = {"n_warmup": args.n_warmup, "n_samples": args.n_samples, "n_batch": N_BATCH}
    result["targets"] = {"nuts_warm_s": "<= 2", "batched_forward_us": "<= 50 (100x bagpipes' ~5 ms)",
                         "prepare_ms (616-galaxy MAP catalogs)": "<< 16"}
    write_json("likelihood_speed", result)


if __name__ == "__main__":
    main()
