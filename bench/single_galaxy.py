"""One galaxy, NUTS: compile time, sampling time, min ESS/s; optionally vs bagpipes.

A 12-band mock (delayed-τ + Calzetti + nebular, z = 1, S/N 20) is fitted with
NUTS twice in one process (cold: includes compilation; warm: a second galaxy's
data through the same compiled engine). ``--bagpipes`` fits the same mock with
bagpipes (its default sampler; nautilus here) in the same run and reports the
wall-time ratio. Writes bench/out/single_galaxy.json.

    .venv/bin/python bench/single_galaxy.py [--bagpipes]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bagpipes_components, bagpipes_filter_files, write_json  # noqa: E402
from forward_model import FILTERS, THETA  # noqa: E402


def build_model():
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = Parameters(redshift=Fixed(THETA["redshift"]), stellar_mass=Uniform(8, 12),
                        age_gyr=Uniform(0.1, "age_of_universe"), tau_gyr=LogUniform(0.05, 10),
                        metallicity=LogUniform(0.1, 2.0), av=Uniform(0, 2), log_u=Fixed(-2.5))
    return SEDModel(params, Photometry(FILTERS), sfh="delayed", dust="calzetti", nebular=True,
                    cosmology={"h0": 70.0, "om0": 0.3})


def mock(model, seed):
    flux = model.predict_photometry(THETA)
    noise = flux / 20
    return flux + noise * np.random.default_rng(seed).standard_normal(flux.shape), noise


def tengri_fit(n_warmup: int, n_samples: int) -> dict:
    from tengri import Fitter

    model = build_model()
    out = {}
    for label, seed in (("cold", 0), ("warm", 1)):
        flux, noise = mock(model, seed)
        start = time.perf_counter()
        post = Fitter(model, flux, noise).run("nuts", n_warmup=n_warmup, n_samples=n_samples)
        wall = time.perf_counter() - start
        ess = post.effective_sample_size()
        min_ess = float(min(ess[n] for n in model.parameters.free_names))
        out[label] = {"wall_s": wall, "min_ess": min_ess, "min_ess_per_s": min_ess / wall,
                      "divergences": int(post.diagnostics.get("divergences", -1)),
                      "median_stellar_mass": float(np.median(post.samples["stellar_mass"]))}
    out["compile_s_estimate"] = out["cold"]["wall_s"] - out["warm"]["wall_s"]
    return out


def bagpipes_fit() -> dict:
    import bagpipes

    from tengri.data.filters import load_filters

    model = build_model()
    flux, noise = mock(model, 1)
    with tempfile.TemporaryDirectory() as tmp:
        files = bagpipes_filter_files(load_filters(FILTERS), Path(tmp) / "filters")
        phot = np.column_stack([flux / 1e-29, noise / 1e-29])

        def load(_id):
            return phot

        galaxy = bagpipes.galaxy("mock", load, spectrum_exists=False, filt_list=files)
        fit_instructions = {"redshift": THETA["redshift"], "t_bc": 0.01,
                            "delayed": {"massformed": (8, 12), "metallicity": (0.1, 2.0),
                                        "age": (0.1, 5.5), "tau": (0.05, 10.0)},
                            "dust": {"type": "Calzetti", "Av": (0, 2)}, "nebular": {"logU": -2.5}}
        start = time.perf_counter()
        import os
        cwd = os.getcwd()
        os.chdir(tmp)
        bagpipes.utils.working_dir = tmp  # bagpipes resolves its output folders from the cwd at import
        try:
            fit = bagpipes.fit(galaxy, fit_instructions, run="bench")
            fit.fit(verbose=False)
        finally:
            os.chdir(cwd)
        wall = time.perf_counter() - start
    return {"wall_s": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bagpipes", action="store_true")
    parser.add_argument("--n-warmup", type=int, default=500)
    parser.add_argument("--n-samples", type=int, default=1000)
    args = parser.parse_args()
    result = {"tengri_nuts": tengri_fit(args.n_warmup, args.n_samples),
              "settings": {"n_warmup": args.n_warmup, "n_samples": args.n_samples}}
    if args.bagpipes:
        result["bagpipes"] = bagpipes_fit()
        result["ratio_bagpipes_over_tengri_warm"] = result["bagpipes"]["wall_s"] / result["tengri_nuts"]["warm"]["wall_s"]
        result["target"] = "ratio_bagpipes_over_tengri_warm >= 100"
    write_json("single_galaxy", result)


if __name__ == "__main__":
    main()
