"""Every inference method on one SED mock, against a long NUTS reference.

One 12-band mock galaxy from the demo model (``src/tengri/examples/demo.toml``:
delayed-τ SFH, Calzetti dust, nebular emission, Inoue+14 IGM), redshift fixed at
``REDSHIFT``, S/N ``SNR`` in every band (one Gaussian noise draw), truth
``TRUTH``; five free parameters. A NUTS reference (``REFERENCE`` chains) is run,
then every method through ``Fitter.run(method)`` twice on the same data: the
first call (compilation + run) and a warm call (new key, compiled programs
reused). Each method runs with its ``defaults.toml`` options except where
``OPTIONS`` says otherwise (``--quick``: ``QUICK_OPTIONS`` on top, a smoke test).

Per method (warm call unless stated):

- ``first_call_s`` / ``warm_call_s``: wall time of ``Fitter.run`` [s]. Samplers
  start from the MAP, whose engine is compiled once (counted in ``map``'s first
  call) and shared, so their first call is their own compilation only.
- ``min_ess``: MCMC (nuts, hmc, dynamic_hmc, ghmc, ess, raytrace):
  ``Posterior.effective_sample_size()`` (N / τ_max, split chains), minimum over
  the free parameters. Independent-draw methods (laplace, pathfinder, vi, mgvi,
  vi_native): the number of draws. nss: the Kish ESS of its importance weights
  (``diagnostics["ess"]``). map: none (a point).
- ``min_ess_per_s`` = ``min_ess / warm_call_s``.
- ``agreement``: |median − NUTS median| / NUTS σ per parameter (σ = standard
  deviation of the reference draws), ``max_dev_sigma`` its maximum, ``agrees``
  = all < 1. For map the point estimate (the mode) stands in for the median.

Writes bench/out/methods.json and bench/out/methods.md (updated after every method;
``--resume`` keeps the rows of an earlier run and runs only the missing methods).

    .venv/bin/python bench/methods.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, write_json  # noqa: E402

REDSHIFT = 1.0
SNR = 20.0
NOISE_SEED = 3
TRUTH = {"stellar_mass": 10.5, "age_gyr": 3.0, "tau_gyr": 1.0, "metallicity": 0.8, "av": 0.4}
REFERENCE = {"n_chains": 4, "n_warmup": 500, "n_samples": 1000}
QUICK_REFERENCE = {"n_chains": 2, "n_warmup": 300, "n_samples": 500}

# label -> (method, options on top of defaults.toml)
OPTIONS: dict[str, tuple[str, dict]] = {
    "map": ("map", {}),
    "nuts": ("nuts", {}),
    "vi_native": ("vi_native", {}),
    "vi": ("vi", {}),
    "mgvi": ("mgvi", {}),
    "laplace": ("laplace", {}),
    "raytrace (dkd)": ("raytrace", {"integrator": "dkd"}),
    "raytrace (kdk)": ("raytrace", {"integrator": "kdk"}),
    "hmc": ("hmc", {}),
    "dynamic_hmc": ("dynamic_hmc", {}),
    "ghmc": ("ghmc", {}),
    "ess": ("ess", {}),
    "pathfinder": ("pathfinder", {}),
    "nss": ("nss", {}),
}
_MCMC_SMALL = {"n_warmup": 300, "n_samples": 500}
QUICK_OPTIONS: dict[str, dict] = {
    "nuts": _MCMC_SMALL, "hmc": _MCMC_SMALL, "dynamic_hmc": _MCMC_SMALL, "ghmc": _MCMC_SMALL,
    "ess": {"n_burnin": 300, "n_samples": 500},
    "raytrace (dkd)": _MCMC_SMALL, "raytrace (kdk)": _MCMC_SMALL,
    "nss": {"n_live": 200, "num_delete": 20},
}
MCMC_METHODS = ("mcmc_nuts", "hmc", "dynamic_hmc", "ghmc", "ess", "mcmc_raytrace")
DRAW_METHODS = ("laplace", "pathfinder", "vi", "mgvi", "vi_native")


def build_model():
    """The demo model and its observation spec (``demo.toml``)."""
    from tengri.demo import demo_config_path
    from tengri.model.config import model_from_config

    return model_from_config(demo_config_path())


def mock_photometry(model, truth: dict, redshift: float, snr: float, seed: int):
    """Noisy band fluxes and 1σ errors [erg/s/cm²/Hz], shape (n_band,) each."""
    flux = np.asarray(model.predict_photometry({**truth, "redshift": redshift}))
    noise = np.abs(flux) / snr
    return flux + noise * np.random.default_rng(seed).standard_normal(flux.shape), noise


def timed_run(fitter, method: str, seed: int, options: dict):
    """(Posterior, wall time of ``fitter.run`` [s])."""
    import jax

    start = time.perf_counter()
    post = fitter.run(method, key=jax.random.PRNGKey(seed), **options)
    return post, time.perf_counter() - start


def centre(post, names) -> dict[str, float]:
    """Posterior median per parameter (the point estimate for a point method)."""
    if post.samples is None:
        return {n: float(post.params[n]) for n in names}
    return {n: float(np.median(post.samples[n])) for n in names}


def min_ess(post, names) -> tuple[float | None, str]:
    """Smallest effective sample size over ``names`` and what it is."""
    from tengri.inference.registry import canonical_method

    method = canonical_method(post.method)
    if method in MCMC_METHODS:
        ess = post.effective_sample_size()
        return float(min(ess[n] for n in names)), "autocorrelation (N / tau_max)"
    if method == "nss":
        return float(post.diagnostics["ess"]), "Kish ESS of the nested-sampling weights"
    if method in DRAW_METHODS:
        return float(post.n_samples), "number of independent draws"
    return None, "point estimate"


def agreement(medians: dict, ref_median: dict, ref_sigma: dict) -> dict[str, float]:
    """|median − reference median| / reference σ per parameter (dimensionless)."""
    return {n: abs(medians[n] - ref_median[n]) / ref_sigma[n] for n in ref_median}


def method_row(fitter, label: str, method: str, options: dict, names) -> dict:
    """Time a method twice; numbers and medians of the warm run."""
    _, first_s = timed_run(fitter, method, 0, options)
    post, warm_s = timed_run(fitter, method, 1, options)
    ess, ess_kind = min_ess(post, names)
    diag = post.diagnostics
    row = {"method": label, "options": options, "first_call_s": first_s, "warm_call_s": warm_s,
           "n_draws": post.n_samples, "min_ess": ess, "ess_kind": ess_kind,
           "min_ess_per_s": None if ess is None else ess / warm_s,
           "divergences": diag.get("divergences"), "acceptance_rate": diag.get("acceptance_rate"),
           "median": centre(post, names)}
    return row


def nuts_reference(fitter, options: dict, names) -> dict:
    """Median, σ (standard deviation), min ESS and R̂ of a long NUTS run."""
    post, wall_s = timed_run(fitter, "nuts", 7, options)
    reference = {"options": options, "wall_s": wall_s, "median": centre(post, names),
                 "sigma": {n: float(np.std(post.samples[n])) for n in names},
                 "min_ess": min_ess(post, names)[0], "rhat": post.rhat(),
                 "divergences": post.diagnostics.get("divergences")}
    print(f"[methods] NUTS reference {reference}", flush=True)
    return reference


def markdown_table(rows: list[dict], header: str) -> str:
    """The method × time × ESS × agreement table in markdown."""
    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    lines = [header, "",
             "| method | first call [s] | warm call [s] | min ESS | min ESS/s (warm) "
             "| max \\|Δmedian\\|/σ_NUTS | worst parameter | agrees (< 1σ) | divergences |",
             "|---|---:|---:|---:|---:|---:|---|:---:|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | – | – | – | – | – | error: {r['error']} | ✗ | – |")
            continue
        lines.append(
            f"| {r['method']} | {r['first_call_s']:.1f} | {r['warm_call_s']:.2f} | "
            f"{fmt(r['min_ess'], '.0f')} | {fmt(r['min_ess_per_s'], '.1f')} | "
            f"{fmt(r.get('max_dev_sigma'), '.2f')} | {r.get('worst_parameter', '–')} | "
            f"{ {True: '✓', False: '✗', None: '–'}[r.get('agrees')]} | "
            f"{fmt(r.get('divergences'), 'd')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows (and reference) of an earlier run's JSON")
    parser.add_argument("--methods", nargs="*", default=list(OPTIONS), help="labels to run")
    parser.add_argument("--name", default="methods",
                        help="output file stem under bench/out (keeps a partial run apart)")
    args = parser.parse_args()

    from tengri.inference.fitter import Fitter

    model, _ = build_model()
    names = list(model.parameters.free_names)
    flux, noise = mock_photometry(model, TRUTH, REDSHIFT, SNR, NOISE_SEED)
    fitter = Fitter(model, flux, noise, fixed={"redshift": REDSHIFT})
    reference_options = QUICK_REFERENCE if args.quick else REFERENCE

    name = args.name  # the JSON and the markdown say whether --quick was used
    problem = (f"demo.toml mock, z = {REDSHIFT} fixed, S/N {SNR:.0f} in 12 bands (noise seed "
               f"{NOISE_SEED}), truth {TRUTH}")
    rows, reference, spent_s = [], None, 0.0
    if args.resume and (OUT_DIR / f"{name}.json").exists():
        done = json.loads((OUT_DIR / f"{name}.json").read_text())
        rows = [r for r in done["rows"] if "error" not in r]
        reference, spent_s = done["reference_nuts"], done["total_wall_s"]
    bench_start = time.perf_counter()
    for label in args.methods:
        if any(r["method"] == label for r in rows):
            continue
        method, options = OPTIONS[label]
        options = {**options, **(QUICK_OPTIONS.get(label, {}) if args.quick else {})}
        try:
            row = method_row(fitter, label, method, options, names)
        except Exception as exc:  # one broken method must not hide the others
            traceback.print_exc()
            row = {"method": label, "options": options, "error": f"{type(exc).__name__}: {exc}"[:200]}
        rows.append(row)
        print(f"[methods] {label:16s} {row}", flush=True)
        if reference is None and method == "nuts":  # reuses the warm NUTS engine
            reference = nuts_reference(fitter, reference_options, names)
        write_outputs(name, problem, args.quick, names, rows, reference,
                      spent_s + time.perf_counter() - bench_start)
    if reference is None:
        reference = nuts_reference(fitter, reference_options, names)
    write_outputs(name, problem, args.quick, names, rows, reference,
                  spent_s + time.perf_counter() - bench_start)


def write_outputs(name: str, problem: str, quick: bool, names, rows: list[dict],
                  reference: dict | None, total_s: float) -> None:
    """Agreement with the reference (when there is one), then the JSON and markdown."""
    for row in rows:
        if "error" in row or reference is None:
            continue
        dev = agreement(row["median"], reference["median"], reference["sigma"])
        worst = max(dev, key=dev.get)
        row.update(deviation_sigma=dev, max_dev_sigma=dev[worst], worst_parameter=worst,
                   agrees=bool(dev[worst] < 1.0))
    by_label = {r["method"]: r for r in rows}
    vi_ratio = None
    if all(k in by_label and "error" not in by_label[k] for k in ("vi", "vi_native")):
        vi_ratio = by_label["vi"]["warm_call_s"] / by_label["vi_native"]["warm_call_s"]
        print(f"[methods] warm wall time NIFTy vi / vi_native = {vi_ratio:.1f}×")
    write_json(name, {"problem": problem, "quick": quick, "free_parameters": names,
                      "reference_nuts": reference, "rows": rows,
                      "vi_over_vi_native_warm": vi_ratio, "total_wall_s": total_s})
    ref = "pending" if reference is None else (
        f"NUTS, {reference['options']['n_chains']} chains × {reference['options']['n_samples']} draws")
    header = (f"# Inference methods on one SED mock{' (--quick)' if quick else ''}\n\n"
              f"{problem}. Reference: {ref}. Generated by `bench/methods.py`; "
              f"definitions in its docstring. Warm NIFTy vi / vi_native wall time: "
              f"{'–' if vi_ratio is None else f'{vi_ratio:.1f}×'}. Total {total_s:.0f} s.")
    (OUT_DIR / f"{name}.md").write_text(markdown_table(rows, header))

if __name__ == "__main__":
    main()
