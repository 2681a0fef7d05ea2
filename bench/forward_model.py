"""Forward-model speed: tengri photometry (single, vmapped ×1000, gradient) vs bagpipes.

Both compute 12-band photometry (GALEX FUV → IRAC 4.5 µm) of a delayed-τ +
Calzetti + nebular galaxy at z = 1. bagpipes is timed in the same run
(``model_galaxy.update`` per evaluation). Writes bench/out/forward_model.json.

    .venv/bin/python bench/forward_model.py [--no-bagpipes]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bagpipes_components, bagpipes_filter_files, timeit, write_json  # noqa: E402

FILTERS = ["galex_FUV", "galex_NUV", "sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0",
           "twomass_J", "twomass_H", "twomass_Ks", "spitzer_irac_ch1", "spitzer_irac_ch2"]
THETA = {"redshift": 1.0, "stellar_mass": 10.5, "age_gyr": 2.0, "tau_gyr": 1.0, "metallicity": 1.0,
         "av": 0.5, "log_u": -2.5, "dust_eta": 1.0}
N_BATCH = 1000


def tengri_timings() -> dict:
    import jax
    import jax.numpy as jnp

    import tengri
    from tengri import Photometry, SEDModel
    from tengri.params import Parameters, Uniform

    params = tengri.Parameters({k: tengri.Fixed(v) for k, v in THETA.items() if k != "stellar_mass"}
                               | {"stellar_mass": Uniform(8, 12)})
    model = SEDModel(params, Photometry(FILTERS), sfh="delayed", dust="calzetti", nebular=True,
                     cosmology={"h0": 70.0, "om0": 0.3})
    flux = model.predict_photometry(THETA)
    problem = model.build_problem(flux, flux / 20)
    args = problem.data_args
    z0 = jnp.zeros(problem.n_dim)

    single = jax.jit(problem.log_likelihood)
    grad = jax.jit(jax.grad(problem.log_likelihood))
    batch = jax.jit(jax.vmap(problem.log_likelihood, in_axes=(0, None)))
    zb = jax.random.normal(jax.random.PRNGKey(0), (N_BATCH, problem.n_dim))
    for f, x in ((single, z0), (grad, z0), (batch, zb)):
        jax.block_until_ready(f(x, args))
    t_single = timeit(lambda: jax.block_until_ready(single(z0, args)), repeat=7, number=50)
    t_grad = timeit(lambda: jax.block_until_ready(grad(z0, args)), repeat=7, number=50)
    t_batch = timeit(lambda: jax.block_until_ready(batch(zb, args)), repeat=5, number=3)
    return {"n_wave": int(model.wavelength_aa.size), "n_age": int(model.ssp.age_yr.size),
            "single_s": t_single, "gradient_s": t_grad, "batch_1000_s": t_batch,
            "batch_per_eval_s": t_batch / N_BATCH, "photometry_ujy": (flux / 1e-29).tolist()}


def bagpipes_timing() -> dict:
    import bagpipes

    from tengri.data.filters import load_filters

    with tempfile.TemporaryDirectory() as tmp:
        files = bagpipes_filter_files(load_filters(FILTERS), Path(tmp))
        comps = bagpipes_components(THETA)
        model = bagpipes.model_galaxy(comps, filt_list=files, phot_units="mujy")
        t = timeit(lambda: model.update(comps), repeat=5, number=20)
        return {"per_eval_s": t, "photometry_ujy": np.asarray(model.photometry).tolist()}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-bagpipes", action="store_true")
    args = parser.parse_args()
    result = {"tengri": tengri_timings()}
    if not args.no_bagpipes:
        bp = bagpipes_timing()
        result["bagpipes"] = bp
        t = result["tengri"]
        result["ratios"] = {
            "bagpipes_over_tengri_single": bp["per_eval_s"] / t["single_s"],
            "bagpipes_over_tengri_batched": bp["per_eval_s"] / t["batch_per_eval_s"],
            "bagpipes_over_tengri_gradient": bp["per_eval_s"] / t["gradient_s"],
        }
        result["target"] = "bagpipes_over_tengri_batched >= 100"
    write_json("forward_model", result)


if __name__ == "__main__":
    main()
