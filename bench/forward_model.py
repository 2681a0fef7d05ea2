"""Forward-model speed: tengri photometry (single, vmapped ×1000, gradient) vs bagpipes.

Both compute 12-band photometry (GALEX FUV → IRAC 4.5 µm) of a delayed-τ +
Calzetti + nebular galaxy at z = 1 (tengri with 6 free parameters, through the band
tables that its likelihood uses at fixed z and through the full-spectrum chain). bagpipes is timed in the same run
(``model_galaxy.update`` per evaluation). The band-table likelihood is also timed over
the same 1000 points vmapped 64 at a time, its gradient vmapped ×1000, and its SFH weights
alone (the floor of a call). The value and gradient are also timed inside one compiled loop
of 1000 calls (``*_in_loop_s``), as NUTS calls them.

BAGPIPES sums its SSPs on 0.1-dex ages (about 40 up to the age of the universe);
tengri's default sums the 221 raw BC03 ages, the more accurate (``bench/parity_age_binning.py``)
and about 4x the work per call. ``band_tables_bagpipes_ages`` times the same likelihood on
BAGPIPES' ages (``ssp_ages = "bagpipes"``), the like-for-like comparison; the ratios of both
are reported, and the target is read on the default.
Writes bench/out/forward_model.json.

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

    from tengri import Photometry, SEDModel

    params = _parameters()
    model = SEDModel(params, Photometry(FILTERS), sfh="delayed", dust="calzetti", nebular=True,
                     cosmology={"h0": 70.0, "om0": 0.3})
    flux = model.predict_photometry(THETA)
    problem = model.build_problem(flux, flux / 20)
    args = problem.data_args
    z0 = jnp.zeros(problem.n_dim)
    zb = jax.random.normal(jax.random.PRNGKey(0), (N_BATCH, problem.n_dim))
    out = {"n_wave": int(model.wavelength_aa.size), "n_age": int(model.ssp.age_yr.size),
           "n_free": int(problem.n_dim), "photometry_ujy": (flux / 1e-29).tolist()}
    # "band_tables": what the likelihood runs at fixed z; "chain": the full-spectrum component chain
    paths = {"band_tables": model._likelihoods["log_likelihood"],
             "chain": model._chain_likelihoods["log_likelihood"]}
    for name, log_likelihood in paths.items():
        single = jax.jit(log_likelihood)
        grad = jax.jit(jax.grad(log_likelihood))
        batch = jax.jit(jax.vmap(log_likelihood, in_axes=(0, None)))
        for f, x in ((single, z0), (grad, z0), (batch, zb)):
            jax.block_until_ready(f(x, args))
        t_single = timeit(lambda: jax.block_until_ready(single(z0, args)), repeat=7, number=50)
        t_grad = timeit(lambda: jax.block_until_ready(grad(z0, args)), repeat=7, number=20)
        t_batch = timeit(lambda: jax.block_until_ready(batch(zb, args)), repeat=3, number=1)
        out[name] = {"single_s": t_single, "gradient_s": t_grad, "batch_1000_s": t_batch,
                     "batch_per_eval_s": t_batch / N_BATCH}
    out["uses_band_tables"] = bool(model.uses_band_tables)
    # the same 1000 evaluations vmapped 64 at a time: one vmap of 1000 materialises every
    # evaluation's gathered table slices at once (~280 MB here) and runs ~3x slower per evaluation
    log_likelihood = paths["band_tables"]
    # what NUTS pays per leapfrog step: its trajectories are compiled loops, so each gradient
    # runs without the per-call dispatch that single_s / gradient_s include (~100 us or more)
    out["band_tables"]["single_in_loop_s"] = _in_loop_seconds(log_likelihood, z0, args)
    out["band_tables"]["gradient_in_loop_s"] = _in_loop_seconds(jax.grad(log_likelihood), z0, args)
    chunked = jax.jit(lambda z, a: jax.lax.map(lambda zi: log_likelihood(zi, a), z, batch_size=64))
    jax.block_until_ready(chunked(zb, args))
    t_chunked = timeit(lambda: jax.block_until_ready(chunked(zb, args)), repeat=3, number=1)
    out["band_tables"]["batch_1000_in_64s_per_eval_s"] = t_chunked / N_BATCH
    # the gradient vmapped x1000: like the value, one dense product over the shared tables
    batch_grad = jax.jit(jax.vmap(jax.grad(log_likelihood), in_axes=(0, None)))
    jax.block_until_ready(batch_grad(zb, args))
    t_batch_grad = timeit(lambda: jax.block_until_ready(batch_grad(zb, args)), repeat=3, number=1)
    out["band_tables"]["batch_gradient_per_eval_s"] = t_batch_grad / N_BATCH

    # the SFH weights alone (masses per SSP age, from z): every band-table call starts with them
    def sfh_masses(z, data_args):
        theta = problem.to_physical(z, data_args)
        state = {"age_of_universe_yr": data_args["band_tables"]["age_of_universe_yr"], "derived": {}}
        return model.components[0].apply(state, theta, data_args["grids"])["mass_per_age"]

    sfh_batch = jax.jit(jax.vmap(sfh_masses, in_axes=(0, None)))
    jax.block_until_ready(sfh_batch(zb, args))
    out["sfh_weights_batch_per_eval_s"] = timeit(lambda: jax.block_until_ready(sfh_batch(zb, args)),
                                                 repeat=3, number=1) / N_BATCH
    out["band_table_shapes"] = {name: list(np.shape(table)) for name, table in args["band_tables"].items()
                                if np.ndim(table) >= 3}
    out["band_tables_bagpipes_ages"] = _bagpipes_ages_timings(zb)
    return out


N_LOOP = 1000


def _in_loop_seconds(f, z0, args) -> float:
    """Seconds per call of ``f(z, args)`` called N_LOOP times, at a new z each, in one jitted fori_loop."""
    import jax
    import jax.numpy as jnp

    def run(z, data_args):
        def body(i, total):
            return total + jnp.sum(f(z + 1e-3 * jnp.sin(1.0 * i), data_args))

        return jax.lax.fori_loop(0, N_LOOP, body, 0.0)

    looped = jax.jit(run)
    jax.block_until_ready(looped(z0, args))
    return timeit(lambda: jax.block_until_ready(looped(z0, args)), repeat=5, number=1) / N_LOOP


def _parameters():
    import tengri
    from tengri.params import Uniform

    return tengri.Parameters(
        redshift=tengri.Fixed(THETA["redshift"]), stellar_mass=Uniform(8, 12),
        age_gyr=Uniform(0.1, "age_of_universe"), tau_gyr=tengri.LogUniform(0.05, 10.0),
        metallicity=tengri.LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0), log_u=Uniform(-4.0, -1.0),
    )


def _bagpipes_ages_timings(zb) -> dict:
    """The band-table likelihood on BAGPIPES' 0.1-dex SSP ages: vmapped ×1000, in 64s, gradient [s]."""
    import jax
    import jax.numpy as jnp

    from tengri import Photometry, SEDModel
    from tengri.data.ssp import bagpipes_age_grid, load_ssp_grid

    cosmology = {"h0": 70.0, "om0": 0.3}
    ssp = load_ssp_grid().rebinned_ages(*bagpipes_age_grid(cosmology))
    model = SEDModel(_parameters(), Photometry(FILTERS), sfh="delayed", dust="calzetti", nebular=True,
                     cosmology=cosmology, ssp=ssp)
    flux = model.predict_photometry(THETA)
    problem = model.build_problem(flux, flux / 20)
    args, log_likelihood = problem.data_args, model._likelihoods["log_likelihood"]
    grad = jax.jit(jax.grad(log_likelihood))
    batch = jax.jit(jax.vmap(log_likelihood, in_axes=(0, None)))
    chunked = jax.jit(lambda z, a: jax.lax.map(lambda zi: log_likelihood(zi, a), z, batch_size=64))
    z0 = jnp.zeros(problem.n_dim)
    for f, x in ((grad, z0), (batch, zb), (chunked, zb)):
        jax.block_until_ready(f(x, args))
    return {"n_age": int(ssp.age_yr.size),
            "gradient_s": timeit(lambda: jax.block_until_ready(grad(z0, args)), repeat=7, number=20),
            "batch_per_eval_s": timeit(lambda: jax.block_until_ready(batch(zb, args)), repeat=3) / N_BATCH,
            "batch_1000_in_64s_per_eval_s": timeit(lambda: jax.block_until_ready(chunked(zb, args)),
                                                   repeat=3) / N_BATCH}


SPECTRUM_PIXELS = 4000


def spectrum_timings() -> dict:
    """Per-evaluation and gradient cost of a 4000-pixel spectroscopic likelihood.

    A VANDELS-like spectrum (5000–9000 Å observed, R = 2000, z = 1 fixed) of the
    delayed-τ + Calzetti + nebular galaxy with ``veldisp_kms`` free (7 free
    parameters), plain and with the cubic calibration polynomial marginalised
    (``cal_n_poly=3``). Times the jitted log-likelihood and its gradient [s].
    """
    import jax
    import jax.numpy as jnp

    import tengri
    from tengri import SEDModel
    from tengri.model import Spectroscopy
    from tengri.params import Uniform

    params = tengri.Parameters(
        redshift=tengri.Fixed(THETA["redshift"]), stellar_mass=Uniform(8, 12),
        age_gyr=Uniform(0.1, "age_of_universe"), tau_gyr=tengri.LogUniform(0.05, 10.0),
        metallicity=tengri.LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0), log_u=Uniform(-4.0, -1.0),
        veldisp_kms=Uniform(10.0, 400.0),
    )
    wave = np.linspace(5000.0, 9000.0, SPECTRUM_PIXELS)
    model = SEDModel(params, Spectroscopy(wave, resolution=2000.0), sfh="delayed", dust="calzetti",
                     nebular=True, cosmology={"h0": 70.0, "om0": 0.3})
    flux = model.predict_spectrum({**THETA, "veldisp_kms": 150.0})
    out = {"n_pixels": SPECTRUM_PIXELS, "n_wave": int(model.wavelength_aa.size),
           "n_window": int(model._spectrum_plan.n_window), "n_free": int(model.parameters.n_free)}
    for name, spectral in (("plain", {}), ("calibration_marginalized", {"calibration_marginalize": True})):
        problem = model.build_problem(flux, flux / 20, spectral=spectral)
        args, z0 = problem.data_args, jnp.zeros(problem.n_dim)
        single = jax.jit(problem.log_likelihood)
        grad = jax.jit(jax.grad(problem.log_likelihood))
        for f in (single, grad):
            jax.block_until_ready(f(z0, args))
        out[name] = {"single_s": timeit(lambda: jax.block_until_ready(single(z0, args)), repeat=5, number=10),
                     "gradient_s": timeit(lambda: jax.block_until_ready(grad(z0, args)), repeat=5, number=10)}
    return out


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
    result["spectrum"] = spectrum_timings()
    if not args.no_bagpipes:
        bp = bagpipes_timing()
        result["bagpipes"] = bp
        result["ratios"] = {
            f"bagpipes_over_tengri_{path}_{what}": bp["per_eval_s"] / result["tengri"][path][key]
            for path in ("band_tables", "chain")
            for what, key in (("single", "single_s"), ("batched", "batch_per_eval_s"),
                              ("gradient", "gradient_s"))
        }
        result["ratios"]["bagpipes_over_tengri_band_tables_batched_in_64s"] = (
            bp["per_eval_s"] / result["tengri"]["band_tables"]["batch_1000_in_64s_per_eval_s"])
        like_for_like = result["tengri"]["band_tables_bagpipes_ages"]
        for what, key in (("batched", "batch_per_eval_s"), ("batched_in_64s", "batch_1000_in_64s_per_eval_s"),
                          ("gradient", "gradient_s")):
            result["ratios"][f"bagpipes_over_tengri_band_tables_bagpipes_ages_{what}"] = (
                bp["per_eval_s"] / like_for_like[key])
        result["target"] = "bagpipes_over_tengri_band_tables_batched >= 100 (the likelihood path)"
    write_json("forward_model", result)


if __name__ == "__main__":
    main()
