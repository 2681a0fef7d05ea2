"""Photometric log-likelihood cost with the stochastic and continuity SFHs against the delayed one.

Jitted single evaluations and gradients (best of 200 calls after compiling), 12 bands
GALEX → IRAC, Calzetti dust, nebular emission, fixed z = 1 (band-table fast path).

    .venv/bin/python bench/sfh_likelihood.py
"""

import time

import jax
import numpy as np

import tengri  # noqa: F401
from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

FILTERS = ["galex_FUV", "galex_NUV", "sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0",
           "twomass_J", "twomass_H", "twomass_Ks", "spitzer_irac_ch1", "spitzer_irac_ch2"]


def best_of(fn, *args, n=200):
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    for sfh in ("delayed", "continuity", {"family": "stochastic", "n_grid": 64, "psd": "drw"},
                {"family": "stochastic", "n_grid": 64, "psd": "extended_regulator"}):
        params = Parameters(redshift=Fixed(1.0), metallicity=LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0),
                            log_u=Fixed(-2.5))
        model = SEDModel(params, Photometry(FILTERS), sfh=sfh, dust="calzetti", nebular=True)
        draw = {k: v[0] for k, v in model.parameters.sample(jax.random.PRNGKey(0), 1, {"age_of_universe": 5.9}).items()}
        flux = model.predict_photometry(draw)
        prob = model.build_problem(flux, 0.05 * flux)
        z = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (len(prob.names),))
        t0 = time.perf_counter()
        value = jax.jit(prob.log_likelihood)
        grad = jax.jit(jax.grad(prob.log_likelihood))
        jax.block_until_ready(grad(z, prob.data_args))
        compile_s = time.perf_counter() - t0
        t_val = best_of(value, z, prob.data_args)
        t_grad = best_of(grad, z, prob.data_args)
        label = sfh if isinstance(sfh, str) else f"{sfh['family']}/{sfh['psd']}/n_grid={sfh['n_grid']}"
        print(f"{label:36s} {len(prob.names):4d} free  band tables={model.uses_band_tables}  "
              f"value {t_val * 1e6:7.1f} us  grad {t_grad * 1e6:7.1f} us  (grad compile {compile_s:.1f} s)")


if __name__ == "__main__":
    main()
