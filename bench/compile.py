"""What compilation costs, and what the caches save: cold, warm in-process, warm disk.

For each target and method (map, nuts, raytrace, nss, vi_native) two fresh
processes share one new persistent-cache directory:

1. *cold*: empty disk cache. A Fitter runs the method on galaxy 1 (compilation
   and run: ``cold_run_s``), then a second Fitter on galaxy 2 with other data
   runs it again (``warm_in_process_run_s``: the in-memory engines, no compilation).
2. *warm disk*: a new process, same disk cache; the first run
   (``fresh_process_warm_disk_run_s``) traces and lowers but loads every program
   from disk.

``*_overhead_s`` subtracts the warm in-process time (running the method alone):
what compilation costs cold, and what tracing, lowering and loading cost with
a warm disk cache.

Each run's XLA compilations and persistent-cache loads are counted
(``tengri.inference.cache.count_compilations``). The method's module is imported
before the timed runs (blackjax and optax are imported where an engine is first
traced, ~0.3 s inside a cold run, never in a warm-disk one);
``*_process_to_first_posterior_s`` is the child's wall time from the start of the
script to the first posterior, imports and model set-up included. Options: every
method's ``defaults.toml`` values (smaller sampler sizes on ``sed``); samplers and
VI start at the MAP, as a user's first run would. With ``--repeat`` the best time
of each measurement is reported (the machine is shared and noisy), all kept.

Background compilation (``--background``): a process builds a Fitter, does
``other_work_s`` seconds of other (I/O-bound) work, then runs NUTS at its
defaults — once with ``compile_modes=("mcmc_nuts",)``, once without; both with a
cold cache.

Targets: ``gaussian`` (the 5-D Gaussian of tests/methods_targets.py behind the
stand-in model of tests/test_compile_cache.py; runs take milliseconds, so times
are overheads) and ``sed`` (the 12-band delayed-τ + Calzetti + nebular
photometric model of tests/conftest.py).

    .venv/bin/python bench/compile.py --repeat 3 --background   # gaussian, all methods
    .venv/bin/python bench/compile.py --targets sed --background

Writes bench/out/compile_<target>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_START = time.perf_counter()

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("map", "nuts", "raytrace", "nss", "vi_native")
SED_OPTIONS = {
    "map": {},
    "nuts": {"n_warmup": 200, "n_samples": 200},
    "raytrace": {"n_warmup": 200, "n_samples": 400},
    "nss": {"n_live": 200, "num_delete": 20},
    "vi_native": {},
}


# ------------------------------------------------------------------ child process
def _setup(target: str):
    """(model, galaxy 1 (data, noise), galaxy 2 (data, noise))."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tests"))
    if target == "gaussian":
        from methods_targets import GAUSSIAN_MEAN
        from test_compile_cache import OTHER_MEAN, GaussianModel

        return GaussianModel(), (GAUSSIAN_MEAN, np.ones(5)), (OTHER_MEAN, np.ones(5))
    from conftest import DEMO_FILTERS
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = Parameters(
        redshift=Fixed(1.0), stellar_mass=Uniform(8.0, 12.0),
        age_gyr=Uniform(0.1, "age_of_universe"), tau_gyr=LogUniform(0.05, 10.0),
        metallicity=LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0), log_u=Fixed(-2.5),
    )
    model = SEDModel(params, Photometry(DEMO_FILTERS), sfh="delayed", dust="calzetti",
                     nebular=True)
    truth = {"redshift": 1.0, "stellar_mass": 10.3, "age_gyr": 2.0, "tau_gyr": 1.0,
             "metallicity": 0.8, "av": 0.4, "log_u": -2.5}
    flux = model.predict_photometry(truth)
    rng = np.random.default_rng(1)
    other = flux * (1 + 0.05 * rng.standard_normal(flux.shape))
    return model, (flux, flux / 20), (other, flux / 15)


def _timed_run(fitter, method: str, options: dict) -> dict:
    from tengri.inference.cache import count_compilations

    start = time.perf_counter()
    with count_compilations() as seen:
        fitter.run(method, **options)
    return {"run_s": time.perf_counter() - start, "n_compiles": seen.n_compiles,
            "compile_time_s": seen.compile_time_s,
            "persistent_cache_hits": seen.persistent_cache_hits}


def child(target: str, method: str, phase: str, cache_dir: str, other_work_s: float) -> dict:
    import tengri
    from tengri import Fitter
    from tengri.inference import registry

    if cache_dir:
        tengri.enable_persistent_cache(cache_dir)
    t_import = time.perf_counter() - _START
    model, first, second = _setup(target)
    t_setup = time.perf_counter() - _START - t_import
    # The runner's module (blackjax, optax, NIFTy: seconds on a busy machine) is
    # imported here, so that run_s times compilation and running only.
    registry.get_runner(method)
    out = {"import_s": t_import, "setup_s": t_setup,
           "method_import_s": time.perf_counter() - _START - t_import - t_setup}
    options = SED_OPTIONS[method] if target == "sed" else {}
    if phase in ("background", "no_background"):
        # compile_modes compiles a method at its defaults, so the run uses them too
        options = {}
        os.environ["TENGRI_NO_BACKGROUND_COMPILE"] = "0"
        start = time.perf_counter()
        modes = ("mcmc_nuts",) if phase == "background" else None
        fitter = Fitter(model, *first, compile_modes=modes)
        time.sleep(other_work_s)  # the caller's other work (reading the next galaxy, ...)
        out.update(_timed_run(fitter, method, options))
        out["construct_to_posterior_s"] = time.perf_counter() - start
        return out
    out["first"] = _timed_run(Fitter(model, *first), method, options)
    out["process_to_first_posterior_s"] = time.perf_counter() - _START
    if phase == "cold":
        out["second_galaxy"] = _timed_run(Fitter(model, *second), method, options)
    return out


# ------------------------------------------------------------------ parent
def _spawn(target: str, method: str, phase: str, cache_dir: str, other_work_s: float = 0.0) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", target, method, phase, cache_dir, str(other_work_s)],
        capture_output=True, text=True, env=env, cwd=ROOT / "bench")
    if done.returncode != 0:
        raise RuntimeError(f"{target}/{method}/{phase} failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["subprocess_wall_s"] = time.perf_counter() - start
    return result


def _summary(runs: list[tuple[dict, dict]]) -> dict:
    """Best (minimum) time over the repeats of each measurement, all values kept;
    compilation counts are the largest seen."""
    def values(phase: str, part: str, field: str) -> list:
        return [(cold if phase == "cold" else warm)[part][field] for cold, warm in runs]

    def process(phase: str) -> list:
        return [(cold if phase == "cold" else warm)["process_to_first_posterior_s"]
                for cold, warm in runs]

    cold = values("cold", "first", "run_s")
    in_process = values("cold", "second_galaxy", "run_s")
    warm = values("warm", "first", "run_s")
    return {
        "n_repeats": len(runs),
        "cold_run_s": min(cold),
        "cold_n_compiles": max(values("cold", "first", "n_compiles")),
        "cold_compile_time_s": min(values("cold", "first", "compile_time_s")),
        "warm_in_process_run_s": min(in_process),
        "warm_in_process_n_compiles": max(values("cold", "second_galaxy", "n_compiles")),
        "fresh_process_warm_disk_run_s": min(warm),
        "fresh_process_warm_disk_n_compiles": max(values("warm", "first", "n_compiles")),
        "fresh_process_warm_disk_cache_hits": max(values("warm", "first",
                                                         "persistent_cache_hits")),
        "warm_disk_over_cold": min(warm) / min(cold),
        # what is not running the method: compiling, or tracing + loading from disk
        "cold_overhead_s": min(cold) - min(in_process),
        "fresh_process_warm_disk_overhead_s": min(warm) - min(in_process),
        "cold_process_to_first_posterior_s": min(process("cold")),
        "warm_disk_process_to_first_posterior_s": min(process("warm")),
        "all_cold_run_s": cold,
        "all_warm_in_process_run_s": in_process,
        "all_fresh_process_warm_disk_run_s": warm,
        "runs": [{"cold": c, "warm_disk": w} for c, w in runs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["gaussian"], choices=["gaussian", "sed"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--background", action="store_true",
                        help="also measure background compilation of NUTS")
    parser.add_argument("--other-work-s", type=float, default=None,
                        help="seconds of other work before run() (default: 80%% of the cold "
                             "NUTS run, or 10 s)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="cold/warm-disk process pairs per method (best time reported)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        target, method, phase, cache_dir, other = args.child
        print(json.dumps(child(target, method, phase, cache_dir, float(other)), default=float))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from _common import write_json

    with tempfile.TemporaryDirectory(prefix="tengri_bench_xla_") as tmp:
        for target in args.targets:
            per_method = {}
            for method in args.methods:
                runs = []
                for repeat in range(args.repeat):
                    cache_dir = str(Path(tmp) / f"{target}-{method}-{repeat}")
                    runs.append((_spawn(target, method, "cold", cache_dir),
                                 _spawn(target, method, "warm_disk", cache_dir)))
                per_method[method] = _summary(runs)
                row = per_method[method]
                print(f"{target:>8} {method:>10}: cold {row['cold_run_s']:7.2f} s "
                      f"({row['cold_n_compiles']} compiles), warm in-process "
                      f"{row['warm_in_process_run_s']:6.2f} s "
                      f"({row['warm_in_process_n_compiles']}), "
                      f"fresh process + warm disk {row['fresh_process_warm_disk_run_s']:6.2f} s "
                      f"({row['fresh_process_warm_disk_n_compiles']} compiles, "
                      f"{row['warm_disk_over_cold']:.0%} of cold)", file=sys.stderr, flush=True)
            entry = {"methods": per_method}
            if args.background:
                other = args.other_work_s
                if other is None:
                    other = 0.8 * per_method["nuts"]["cold_run_s"] if "nuts" in per_method else 10.0
                entry["background"] = {
                    "other_work_s": other,
                    "with_compile_modes": _spawn(target, "nuts", "background", "", other),
                    "without": _spawn(target, "nuts", "no_background", "", other),
                }
                bg = entry["background"]
                print(f"{target:>8} background: construct→posterior "
                      f"{bg['with_compile_modes']['construct_to_posterior_s']:.2f} s with "
                      f"compile_modes, {bg['without']['construct_to_posterior_s']:.2f} s without "
                      f"({other:.1f} s of other work)", file=sys.stderr, flush=True)
            write_json(f"compile_{target}", {"target": target, **entry})


if __name__ == "__main__":
    main()
