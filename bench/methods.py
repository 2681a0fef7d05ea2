"""Every inference method on one SED mock, against a long NUTS reference.

One 12-band mock galaxy from the demo model (``src/tengri/examples/demo.toml``:
delayed-τ SFH, Calzetti dust, nebular emission with log U = −2.5, Inoue+14 IGM),
redshift fixed at ``REDSHIFT``, one Gaussian noise draw (seed ``NOISE_SEED``),
five free parameters; ``--mock`` picks the truth and noise model (``MOCKS``). A
NUTS reference (``n_chains`` chains, the mock's ``reference`` lengths) is run,
then every method through ``Fitter.run(method)`` twice on the same data: the
first call (compilation + run) and a warm call (new key, compiled programs
reused). Each method runs with its ``defaults.toml`` options except where
``OPTIONS`` says otherwise (``--quick``: ``QUICK_OPTIONS`` on top, a smoke test).

Mocks:

- ``demo`` (default, kept for comparison with earlier records): truth age 3 Gyr,
  τ 1 Gyr, Z 0.8, A_V 0.4, log M* 10.5; σ = 5% of the flux in every band;
  reference 4 × (500 + 1000). Its posterior has two modes along age–τ–Z
  (docs/methods.md), which its reference does not mix between (min ESS ~100–250,
  R̂ up to 1.015): agreement with it measures chain luck as much as methods.
- ``sf``, **pre-registered** (this paragraph was written before any method other
  than NUTS ran on it): a star-forming truth, age 1.5 Gyr, τ 2 Gyr, Z 0.8,
  A_V 0.6, log M* 10.5, with the recovery bench's noise model
  (``bench/recovery.py`` ``mock_noise_cgs``: 5% of the flux and the GOODS-S 5σ
  depth floors in quadrature, as real catalogs quote errors); reference
  4 × (1000 + 2000). **Criterion** for using a mock in the table: its NUTS
  reference has split-R̂ < ``CRITERION_RHAT`` (1.01) and ESS > ``CRITERION_ESS``
  (400) on every free parameter. The criterion looks at the reference alone, never
  at another method's agreement. **Rule if it fails**, fixed in advance: take the
  next mock of ``PRE_REGISTERED`` in order (``sf_young``: age 1.0 Gyr, then
  ``sf_younger``: age 0.7 Gyr, everything else unchanged; a younger population
  has a brighter UV and a less degenerate age–τ–Z ridge), and say so here and in
  the record. The bench refuses to run other methods on a pre-registered mock
  whose reference fails the criterion.

Outcome (2026-11-26, 2-core CPU, load ~5): ``sf`` **failed** the criterion:
split-R̂ max 1.0135 (A_V; Z 1.0128), min ESS 224 (A_V; Z 272), 127 divergences in
8000 draws (``bench/records/methods_cpu_2core_s6.sf_reference.json``). By the rule,
``sf_young`` next, which **met** it: split-R̂ max 1.0060 (age), min ESS 1695 (age),
46 divergences in 8000 draws. The table of record is on ``sf_young``
(``bench/records/methods_cpu_2core_s6.{json,md}``).

On a pre-registered mock the reference runs before any method. Run it alone
first (``--reference-only``), then the table with ``--resume``, so that every
row's first call is timed in a fresh process as on ``demo``.

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
- ``pareto_k``: an approximation's own reliability diagnostic, the Pareto k̂ of
  its draws' importance weights (pathfinder, vi, mgvi, vi_native; > 0.7:
  unreliable, ``tengri.analysis.diagnostics.pareto_k_warning``).
- ``--keys K``: every method also runs with keys 2 … K−1; ``median_by_key``,
  ``pareto_k_by_key`` and ``max_dev_sigma_by_key`` hold keys 0 … K−1 (key 0 is
  the first call), and the table gives the range of the latter and how many
  keys agree. A method whose answer depends on its random numbers shows here.

Writes bench/out/methods.json and bench/out/methods.md (updated after every method;
``--resume`` keeps the rows of an earlier run and runs only the missing methods).

    .venv/bin/python bench/methods.py [--mock demo|sf|sf_young|sf_younger] [--quick]
        [--reference-only] [--resume] [--methods LABEL ...] [--keys K] [--name NAME]
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
_SF_TRUTH = {"stellar_mass": 10.5, "age_gyr": 1.5, "tau_gyr": 2.0, "metallicity": 0.8, "av": 0.6}
_SF_REFERENCE = {"n_chains": 4, "n_warmup": 1000, "n_samples": 2000}
# name -> truth, noise model ("snr": |f|/SNR in every band; "depths": recovery.mock_noise_cgs),
# NUTS reference lengths
MOCKS: dict[str, dict] = {
    "demo": {"truth": TRUTH, "noise": "snr", "reference": REFERENCE},
    "sf": {"truth": _SF_TRUTH, "noise": "depths", "reference": _SF_REFERENCE},
    "sf_young": {"truth": {**_SF_TRUTH, "age_gyr": 1.0}, "noise": "depths", "reference": _SF_REFERENCE},
    "sf_younger": {"truth": {**_SF_TRUTH, "age_gyr": 0.7}, "noise": "depths", "reference": _SF_REFERENCE},
}
PRE_REGISTERED = ("sf", "sf_young", "sf_younger")  # tried in this order (module docstring)
CRITERION_RHAT = 1.01  # split-R̂ of the reference below this on every free parameter
CRITERION_ESS = 400.0  # and its ESS above this on every free parameter

# label -> (method, options on top of defaults.toml)
OPTIONS: dict[str, tuple[str, dict]] = {
    "map": ("map", {}),
    "nuts": ("nuts", {}),
    "vi_native": ("vi_native", {}),
    "vi": ("vi", {}),
    "mgvi": ("mgvi", {}),
    "vi (1 seed)": ("vi", {"n_seeds": 1}),
    "mgvi (1 seed)": ("mgvi", {"n_seeds": 1}),
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


def mock_photometry(model, truth: dict, redshift: float, snr: float, seed: int,
                    noise_model: str = "snr"):
    """Noisy band fluxes and 1σ errors [erg/s/cm²/Hz], shape (n_band,) each.

    ``noise_model``: "snr" (σ = |f|/snr in every band) or "depths" (the recovery
    bench's ``mock_noise_cgs``: |f|/snr and the GOODS-S depth floors in quadrature).
    """
    flux = np.asarray(model.predict_photometry({**truth, "redshift": redshift}))
    if noise_model == "snr":
        noise = np.abs(flux) / snr
    elif noise_model == "depths":
        from recovery import FILTERS, mock_noise_cgs

        bands = tuple(model.observation.filter_names)
        if bands != tuple(FILTERS):  # the floors are listed in recovery.FILTERS order
            raise ValueError(f"noise_model='depths' needs the bands {FILTERS}, got {bands}")
        noise = mock_noise_cgs(flux, "depths", snr)
    else:
        raise ValueError(f"noise_model must be 'snr' or 'depths', got {noise_model!r}")
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


def method_row(fitter, label: str, method: str, options: dict, names,
               n_keys: int = 2) -> dict:
    """Time a method twice; numbers and medians of the warm run (key 1), and the
    medians and Pareto k̂ of every key ``0 … n_keys − 1`` (key 0: the first call)."""
    first, first_s = timed_run(fitter, method, 0, options)
    post, warm_s = timed_run(fitter, method, 1, options)
    by_key = [first, post] + [timed_run(fitter, method, k, options)[0] for k in range(2, n_keys)]
    ess, ess_kind = min_ess(post, names)
    diag = post.diagnostics
    row = {"method": label, "options": options, "first_call_s": first_s, "warm_call_s": warm_s,
           "n_draws": post.n_samples, "min_ess": ess, "ess_kind": ess_kind,
           "min_ess_per_s": None if ess is None else ess / warm_s,
           "divergences": diag.get("divergences"), "acceptance_rate": diag.get("acceptance_rate"),
           "pareto_k": diag.get("pareto_k"), "median": centre(post, names),
           "median_by_key": [centre(p, names) for p in by_key],
           "pareto_k_by_key": [p.diagnostics.get("pareto_k") for p in by_key]}
    return row


def nuts_reference(fitter, options: dict, names) -> dict:
    """Median, σ (standard deviation), ESS, R̂ and the criterion's verdict of a long NUTS run."""
    post, wall_s = timed_run(fitter, "nuts", 7, options)
    ess = post.effective_sample_size()
    reference = {"options": options, "wall_s": wall_s, "median": centre(post, names),
                 "sigma": {n: float(np.std(post.samples[n])) for n in names},
                 "min_ess": min_ess(post, names)[0], "ess": {n: float(ess[n]) for n in names},
                 "rhat": post.rhat(), "divergences": post.diagnostics.get("divergences"),
                 "quantiles_16_84": {n: np.percentile(post.samples[n], [16, 84]).tolist()
                                     for n in names}}
    reference["criterion"] = reference_criterion(reference, names)
    print(f"[methods] NUTS reference {reference}", flush=True)
    return reference


def reference_criterion(reference: dict, names) -> dict:
    """Whether the reference has split-R̂ < CRITERION_RHAT and ESS > CRITERION_ESS everywhere."""
    rhat_max = max(float(reference["rhat"][n]) for n in names)
    ess_min = min(float(reference["ess"][n]) for n in names)
    return {"rhat_below": CRITERION_RHAT, "ess_above": CRITERION_ESS, "rhat_max": rhat_max,
            "ess_min": ess_min, "met": bool(rhat_max < CRITERION_RHAT and ess_min > CRITERION_ESS)}


def markdown_table(rows: list[dict], header: str) -> str:
    """The method × time × ESS × agreement table in markdown."""
    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    def keys(r):
        devs = r.get("max_dev_sigma_by_key")
        if not devs:
            return "–"
        return (f"{len(devs)}: {min(devs):.2f}–{max(devs):.2f} "
                f"({sum(d < 1.0 for d in devs)}/{len(devs)} ✓)")

    mark = {True: "✓", False: "✗", None: "–"}
    lines = [header, "",
             "| method | first call [s] | warm call [s] | min ESS | min ESS/s (warm) "
             "| max \\|Δmedian\\|/σ_NUTS | worst parameter | agrees (< 1σ) | divergences "
             "| Pareto k̂ | keys: max \\|Δmedian\\|/σ range |",
             "|---|---:|---:|---:|---:|---:|---|:---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | – | – | – | – | – | error: {r['error']} | ✗ | – "
                         f"| – | – |")
            continue
        lines.append(
            f"| {r['method']} | {r['first_call_s']:.1f} | {r['warm_call_s']:.2f} | "
            f"{fmt(r['min_ess'], '.0f')} | {fmt(r['min_ess_per_s'], '.1f')} | "
            f"{fmt(r.get('max_dev_sigma'), '.2f')} | {r.get('worst_parameter', '–')} | "
            f"{mark[r.get('agrees')]} | {fmt(r.get('divergences'), 'd')} | "
            f"{fmt(r.get('pareto_k'), '.2f')} | {keys(r)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mock", choices=list(MOCKS), default="demo",
                        help="truth and noise model (module docstring); default demo")
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows (and reference) of an earlier run's JSON")
    parser.add_argument("--reference-only", action="store_true",
                        help="run the NUTS reference, judge it by the criterion and stop")
    parser.add_argument("--methods", nargs="*", default=list(OPTIONS), help="labels to run")
    parser.add_argument("--keys", type=int, default=2,
                        help="run every method with keys 0 … KEYS−1 (key 0 is the first call, "
                             "key 1 the warm call the table's agreement uses); default 2")
    parser.add_argument("--name", default="methods",
                        help="output file stem under bench/out (keeps a partial run apart)")
    args = parser.parse_args()
    if args.keys < 2:
        parser.error(f"--keys must be ≥ 2 (the first and the warm call), got {args.keys}")
    unknown = [label for label in args.methods if label not in OPTIONS]
    if unknown:
        parser.error(f"--methods: unknown labels {unknown}; known: {list(OPTIONS)}")

    from tengri.inference.fitter import Fitter

    mock = MOCKS[args.mock]
    model, _ = build_model()
    names = list(model.parameters.free_names)
    flux, noise = mock_photometry(model, mock["truth"], REDSHIFT, SNR, NOISE_SEED, mock["noise"])
    fitter = Fitter(model, flux, noise, fixed={"redshift": REDSHIFT})
    reference_options = QUICK_REFERENCE if args.quick else mock["reference"]

    name = args.name  # the JSON and the markdown say whether --quick was used
    noise_text = (f"S/N {SNR:.0f} in 12 bands" if mock["noise"] == "snr" else
                  f"σ = {100 / SNR:.0f}% of the flux and the GOODS-S 5σ depth floors in "
                  "quadrature (bench/recovery.py mock_noise_cgs)")
    problem = (f"mock '{args.mock}' of demo.toml, z = {REDSHIFT} fixed, {noise_text} (noise seed "
               f"{NOISE_SEED}), truth {mock['truth']}")
    rows, reference, spent_s = [], None, 0.0
    if args.resume and (OUT_DIR / f"{name}.json").exists():
        done = json.loads((OUT_DIR / f"{name}.json").read_text())
        if done.get("mock", "demo") != args.mock:
            parser.error(f"--resume: {name}.json is of mock {done.get('mock', 'demo')!r}, "
                         f"not {args.mock!r}")
        rows = [r for r in done["rows"] if "error" not in r]
        reference, spent_s = done["reference_nuts"], done["total_wall_s"]
    bench_start = time.perf_counter()

    def write(reference):
        write_outputs(name, args.mock, problem, args.quick, names, rows, reference,
                      spent_s + time.perf_counter() - bench_start)

    if reference is None and (args.reference_only or args.mock in PRE_REGISTERED):
        reference = nuts_reference(fitter, reference_options, names)
        write(reference)
    if args.reference_only:
        return
    if args.mock in PRE_REGISTERED and not args.quick and not reference["criterion"]["met"]:
        nxt = PRE_REGISTERED[PRE_REGISTERED.index(args.mock) + 1:]
        sys.exit(f"[methods] mock {args.mock!r}: the NUTS reference fails the pre-registered "
                 f"criterion {reference['criterion']}; no other method is run on it. Next by the "
                 f"rule: {nxt[0] if nxt else 'none left'}")
    for label in args.methods:
        if any(r["method"] == label for r in rows):
            continue
        method, options = OPTIONS[label]
        options = {**options, **(QUICK_OPTIONS.get(label, {}) if args.quick else {})}
        try:
            row = method_row(fitter, label, method, options, names, args.keys)
        except Exception as exc:  # one broken method must not hide the others
            traceback.print_exc()
            row = {"method": label, "options": options, "error": f"{type(exc).__name__}: {exc}"[:200]}
        rows.append(row)
        print(f"[methods] {label:16s} {row}", flush=True)
        if reference is None and method == "nuts":  # reuses the warm NUTS engine
            reference = nuts_reference(fitter, reference_options, names)
        write(reference)
    if reference is None:
        reference = nuts_reference(fitter, reference_options, names)
    write(reference)


def reference_text(reference: dict) -> str:
    """One line on the reference run: lengths, R̂, ESS and the criterion's verdict."""
    opts = reference["options"]
    text = (f"NUTS, {opts['n_chains']} chains × ({opts.get('n_warmup', '?')} warm-up + "
            f"{opts['n_samples']} draws), {reference.get('divergences')} divergences")
    crit = reference.get("criterion")
    if crit is not None:
        text += (f", split-R̂ max {crit['rhat_max']:.4f}, min ESS {crit['ess_min']:.0f} (criterion "
                 f"R̂ < {crit['rhat_below']} and ESS > {crit['ess_above']:.0f}: "
                 f"{'met' if crit['met'] else 'NOT met'})")
    return text


def write_outputs(name: str, mock: str, problem: str, quick: bool, names, rows: list[dict],
                  reference: dict | None, total_s: float) -> None:
    """Agreement with the reference (when there is one), then the JSON and markdown."""
    for row in rows:
        if "error" in row or reference is None:
            continue
        dev = agreement(row["median"], reference["median"], reference["sigma"])
        worst = max(dev, key=dev.get)
        row.update(deviation_sigma=dev, max_dev_sigma=dev[worst], worst_parameter=worst,
                   agrees=bool(dev[worst] < 1.0))
        if row.get("median_by_key"):
            row["max_dev_sigma_by_key"] = [
                max(agreement(m, reference["median"], reference["sigma"]).values())
                for m in row["median_by_key"]]
    by_label = {r["method"]: r for r in rows}
    vi_ratio = None
    if all(k in by_label and "error" not in by_label[k] for k in ("vi", "vi_native")):
        vi_ratio = by_label["vi"]["warm_call_s"] / by_label["vi_native"]["warm_call_s"]
        print(f"[methods] warm wall time NIFTy vi / vi_native = {vi_ratio:.1f}×")
    write_json(name, {"mock": mock, "problem": problem, "quick": quick, "free_parameters": names,
                      "reference_nuts": reference, "rows": rows,
                      "vi_over_vi_native_warm": vi_ratio, "total_wall_s": total_s})
    ref = "pending" if reference is None else reference_text(reference)
    header = (f"# Inference methods on one SED mock{' (--quick)' if quick else ''}\n\n"
              f"{problem}. Reference: {ref}. Generated by `bench/methods.py`; "
              f"definitions in its docstring. Warm NIFTy vi / vi_native wall time: "
              f"{'–' if vi_ratio is None else f'{vi_ratio:.1f}×'}. Total {total_s:.0f} s.")
    (OUT_DIR / f"{name}.md").write_text(markdown_table(rows, header))

if __name__ == "__main__":
    main()
