"""One galaxy, NUTS: compile time, sampling time, min ESS/s; optionally vs bagpipes.

A 12-band mock (delayed-τ + Calzetti + nebular, z = 1, S/N 20) is fitted with
NUTS in one process: once cold (includes compilation), then warm on
``--warm-mocks`` further noise draws of the same galaxy through the same
compiled engine (the median warm wall time is the figure). ``--ssp-ages`` picks
the SSP age sampling of tengri's model (``[model] ssp_ages``): ``bagpipes``
(default here) is BAGPIPES' own 0.1-dex grid, i.e. the same physics as the
BAGPIPES fit it is compared with; ``raw`` is tengri's default (BC03's 221
ages); ``both`` runs each. ``--sfh-quadrature`` picks ``[model] sfh_quadrature``
(``bins``, the default, or ``hat``); ``--name`` the JSON's name. ``--bagpipes`` fits the middle warm mock with
bagpipes (its default sampler; nautilus here) in the same run and reports the
wall-time ratio for each age sampling. Writes bench/out/single_galaxy.json.

    .venv/bin/python bench/single_galaxy.py [--bagpipes] [--ssp-ages bagpipes|raw|both] [--warm-mocks 5]
        [--sfh-quadrature bins|hat] [--name single_galaxy]
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


def build_model(ssp_ages: str = "raw", sfh_quadrature: str = "bins"):
    """The mock's model; ``ssp_ages`` as ``[model] ssp_ages`` ("raw" | "bagpipes"), ``sfh_quadrature``
    as ``[model] sfh_quadrature`` ("bins" | "hat")."""
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    extra = {}
    if ssp_ages == "bagpipes":
        from tengri.data.ssp import bagpipes_age_grid, load_ssp_grid

        extra["ssp"] = load_ssp_grid().rebinned_ages(*bagpipes_age_grid({"h0": 70.0, "om0": 0.3}))
    elif ssp_ages != "raw":
        raise ValueError(f"ssp_ages must be 'raw' or 'bagpipes', got {ssp_ages!r}")
    params = Parameters(redshift=Fixed(THETA["redshift"]), stellar_mass=Uniform(8, 12),
                        age_gyr=Uniform(0.1, "age_of_universe"), tau_gyr=LogUniform(0.05, 10),
                        metallicity=LogUniform(0.1, 2.0), av=Uniform(0, 2), log_u=Fixed(-2.5))
    return SEDModel(params, Photometry(FILTERS), sfh="delayed", dust="calzetti", nebular=True,
                    cosmology={"h0": 70.0, "om0": 0.3}, sfh_quadrature=sfh_quadrature, **extra)


def mock(model, seed):
    flux = model.predict_photometry(THETA)
    noise = flux / 20
    return flux + noise * np.random.default_rng(seed).standard_normal(flux.shape), noise


def tengri_fit(n_warmup: int, n_samples: int, ssp_ages: str, warm_mocks: int, sfh_quadrature: str = "bins") -> dict:
    """Cold fit of mock seed 0, then warm fits of seeds 1 … ``warm_mocks``; the warm
    figures are medians over those (each run's own figures under ``warm_runs``)."""
    from tengri import Fitter

    model = build_model(ssp_ages, sfh_quadrature)

    def fit(seed: int) -> dict:
        flux, noise = mock(model, seed)
        start = time.perf_counter()
        post = Fitter(model, flux, noise).run("nuts", n_warmup=n_warmup, n_samples=n_samples)
        wall = time.perf_counter() - start
        ess = post.effective_sample_size()
        min_ess = float(min(ess[n] for n in model.parameters.free_names))
        return {"seed": seed, "wall_s": wall, "min_ess": min_ess, "min_ess_per_s": min_ess / wall,
                "divergences": int(post.diagnostics.get("divergences", -1)),
                "leapfrog_steps_per_draw": float(post.diagnostics["n_integration_steps_mean"]),
                "median_stellar_mass": float(np.median(post.samples["stellar_mass"]))}

    out = {"ssp_ages": ssp_ages, "sfh_quadrature": sfh_quadrature, "cold": fit(0)}
    runs = [fit(seed) for seed in range(1, warm_mocks + 1)]
    out["warm"] = {key: float(np.median([run[key] for run in runs]))
                   for key in ("wall_s", "min_ess", "min_ess_per_s", "divergences",
                               "leapfrog_steps_per_draw", "median_stellar_mass")}
    out["warm_runs"] = runs
    out["compile_s_estimate"] = out["cold"]["wall_s"] - out["warm"]["wall_s"]
    return out


def bagpipes_fit(seed: int) -> dict:
    import bagpipes

    from tengri.data.filters import load_filters

    model = build_model()
    flux, noise = mock(model, seed)
    with tempfile.TemporaryDirectory() as tmp:
        files = bagpipes_filter_files(load_filters(FILTERS), Path(tmp) / "filters")
        phot = np.column_stack([flux / 1e-29, noise / 1e-29])

        def load(_id):
            return phot

        galaxy = bagpipes.galaxy("mock", load, spectrum_exists=False, filt_list=files)
        fit_instructions = {"redshift": THETA["redshift"], "t_bc": 0.01,
                            "delayed": {"massformed": (8, 12), "metallicity": (0.1, 2.0),
                                        "metallicity_prior": "log_10", "age": (0.1, 5.5),
                                        "tau": (0.05, 10.0), "tau_prior": "log_10"},
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
    parser.add_argument("--ssp-ages", choices=("bagpipes", "raw", "both"), default="bagpipes")
    parser.add_argument("--warm-mocks", type=int, default=5)
    parser.add_argument("--sfh-quadrature", choices=("bins", "hat"), default="bins")
    parser.add_argument("--name", default="single_galaxy", help="JSON name under bench/out")
    args = parser.parse_args()
    if args.warm_mocks < 1:
        parser.error("--warm-mocks must be >= 1")
    grids = ("bagpipes", "raw") if args.ssp_ages == "both" else (args.ssp_ages,)
    fits = {grid: tengri_fit(args.n_warmup, args.n_samples, grid, args.warm_mocks, args.sfh_quadrature)
            for grid in grids}
    result = {"tengri_nuts": fits[grids[0]],
              "settings": {"n_warmup": args.n_warmup, "n_samples": args.n_samples,
                           "warm_mocks": args.warm_mocks, "sfh_quadrature": args.sfh_quadrature}}
    if len(grids) > 1:
        result["tengri_nuts_raw_ages"] = fits["raw"]
    if args.bagpipes:
        result["bagpipes"] = bagpipes_fit((args.warm_mocks + 1) // 2)
        for grid in grids:
            key = "ratio_bagpipes_over_tengri_warm" + ("" if grid == grids[0] else "_raw_ages")
            result[key] = result["bagpipes"]["wall_s"] / fits[grid]["warm"]["wall_s"]
        result["target"] = "ratio_bagpipes_over_tengri_warm >= 100"
    write_json(args.name, result)


if __name__ == "__main__":
    main()
