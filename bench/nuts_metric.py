"""NUTS's metric: dense or diagonal, seeded from the Laplace covariance or the identity,
at target acceptance 0.8, 0.9 or 0.95.

Fits N mocks drawn from the priors of ``bench/single_galaxy.py``'s model (delayed τ,
Calzetti, nebular, 12 bands, z = 1, BAGPIPES' 0.1-dex SSP ages; S/N 20 plus a 1e-31
erg/s/cm²/Hz floor) with one NUTS chain of 500 + 1000 for each metric setting
(``use_dense`` × ``metric_init``), the same mocks and key for every setting, each
setting's engines compiled on mock 0 first (not counted). Per setting: median and
total wall time, median and smallest min-ESS (over parameters), min-ESS summed over
mocks per second of summed wall time, divergences in all and mocks with more than 10.

    .venv/bin/python bench/nuts_metric.py [--mocks 32] [--ssp-ages bagpipes|raw] [--sfh-quadrature bins|hat]
        [--settings NAME ...] [--name nuts_metric]

Writes bench/out/<name>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402
from single_galaxy import build_model  # noqa: E402

SETTINGS = {  # name -> NUTS options; the first is the default before session 11
    "diag_identity_ta08": {"use_dense": False, "metric_init": "identity", "target_accept": 0.8},
    "dense_identity_ta08": {"use_dense": True, "metric_init": "identity", "target_accept": 0.8},
    "diag_laplace_ta08": {"use_dense": False, "metric_init": "laplace", "target_accept": 0.8},
    "dense_laplace_ta08": {"use_dense": True, "metric_init": "laplace", "target_accept": 0.8},
    "diag_identity_ta09": {"use_dense": False, "metric_init": "identity", "target_accept": 0.9},
    "dense_laplace_ta09": {"use_dense": True, "metric_init": "laplace", "target_accept": 0.9},
    "dense_laplace_ta095": {"use_dense": True, "metric_init": "laplace", "target_accept": 0.95},
}


def prior_mocks(model, n: int, seed: int = 7) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """``n`` (truth, fluxes, noise) from the bench priors, age and τ kept inside their bounds."""
    rng = np.random.default_rng(seed)
    mocks = []
    for i in range(n):
        truth = {"redshift": 1.0, "stellar_mass": rng.uniform(9.5, 11.5), "age_gyr": rng.uniform(0.3, 5.5),
                 "tau_gyr": float(np.exp(rng.uniform(np.log(0.1), np.log(10.0)))),
                 "metallicity": float(np.exp(rng.uniform(np.log(0.15), np.log(1.8)))),
                 "av": rng.uniform(0.0, 1.5), "log_u": -2.5, "dust_eta": 1.0}
        flux = np.asarray(model.predict_photometry(truth))
        noise = np.sqrt((flux / 20.0) ** 2 + 1e-31 ** 2)
        mocks.append((truth, flux + noise * np.random.default_rng(i).standard_normal(flux.shape), noise))
    return mocks


def run_setting(model, mocks, options: dict) -> dict:
    from tengri import Fitter

    free = model.parameters.free_names
    Fitter(model, mocks[0][1], mocks[0][2]).run("nuts", **options)  # compile
    runs = []
    for truth, flux, noise in mocks:
        start = time.perf_counter()
        post = Fitter(model, flux, noise).run("nuts", **options)
        wall = time.perf_counter() - start
        ess = post.effective_sample_size()
        runs.append({"wall_s": wall, "min_ess": float(min(ess[name] for name in free)),
                     "divergences": int(post.diagnostics["divergences"]),
                     "leapfrog_steps_per_draw": float(post.diagnostics["n_integration_steps_mean"]),
                     "truth": {name: float(truth[name]) for name in free}})
    walls = np.array([r["wall_s"] for r in runs])
    min_ess = np.array([r["min_ess"] for r in runs])
    divergences = np.array([r["divergences"] for r in runs])
    return {"options": options, "median_wall_s": float(np.median(walls)), "total_wall_s": float(walls.sum()),
            "median_min_ess": float(np.median(min_ess)), "smallest_min_ess": float(min_ess.min()),
            "min_ess_per_s": float(min_ess.sum() / walls.sum()),
            "median_leapfrog_steps_per_draw": float(np.median([r["leapfrog_steps_per_draw"] for r in runs])),
            "divergences_total": int(divergences.sum()), "mocks_with_over_10_divergences": int((divergences > 10).sum()),
            "runs": runs}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mocks", type=int, default=32)
    parser.add_argument("--ssp-ages", choices=("bagpipes", "raw"), default="bagpipes")
    parser.add_argument("--sfh-quadrature", choices=("bins", "hat"), default="bins")
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=tuple(SETTINGS))
    parser.add_argument("--name", default="nuts_metric", help="JSON name under bench/out")
    args = parser.parse_args()
    if args.mocks < 1:
        parser.error("--mocks must be >= 1")
    model = build_model(args.ssp_ages, args.sfh_quadrature)
    mocks = prior_mocks(model, args.mocks)
    result = {"settings": {"mocks": args.mocks, "ssp_ages": args.ssp_ages, "sfh_quadrature": args.sfh_quadrature,
                           "n_warmup": 500, "n_samples": 1000}}
    for name in args.settings:
        result[name] = run_setting(model, mocks, SETTINGS[name])
        summary = {k: v for k, v in result[name].items() if k not in ("runs", "options")}
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}, flush=True)
    write_json(args.name, result)


if __name__ == "__main__":
    main()
