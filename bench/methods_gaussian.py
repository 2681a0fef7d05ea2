"""Wall times of the Ray Tracing, nested-sampling and VI runners on one problem.

The 5-D correlated linear-Gaussian target of tests/methods_targets.py, default
options of each method except ``start = "init"`` (no MAP, so that only the method
itself is timed). For each runner: the first call (compilation + run) and the
best of three further calls on a *second galaxy* (new data, same compiled
programs). Prints the NIFTy-geoVI / native-geoVI ratio and writes
bench/out/methods_gaussian.json.

    .venv/bin/python bench/methods_gaussian.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import jax
import numpy as np

from _common import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tengri  # noqa: E402,F401
from methods_targets import gaussian_problem  # noqa: E402
from tengri.inference.methods.nested import run_nss  # noqa: E402
from tengri.inference.methods.raytrace import run_raytrace  # noqa: E402
from tengri.inference.methods.vi_native import run_vi_native  # noqa: E402
from tengri.inference.methods.vi_nifty import run_mgvi, run_vi  # noqa: E402

INIT = {"start": "init"}
RUNS = {
    "mcmc_raytrace (dkd)": (run_raytrace, {"integrator": "dkd", **INIT}),
    "mcmc_raytrace (kdk)": (run_raytrace, {"integrator": "kdk", **INIT}),
    "hmc via raytrace driver": (run_raytrace, {"sample_hmc": True, **INIT}),
    "nss": (run_nss, {}),
    "vi (NIFTy geoVI)": (run_vi, INIT),
    "mgvi (NIFTy)": (run_mgvi, INIT),
    "vi_native (geoVI)": (run_vi_native, INIT),
    "vi_native (MGVI)": (run_vi_native, {"sample_mode": "linear_resample", **INIT}),
}


def _call(runner, problem, key, options) -> float:
    start = time.perf_counter()
    result = runner(problem, key, **options)
    jax.block_until_ready(result.samples)
    return time.perf_counter() - start


def main() -> None:
    first_galaxy = gaussian_problem()
    second_galaxy = gaussian_problem(mean=np.array([-0.3, 0.2, 0.9, -1.0, 0.5]))
    times = {}
    for name, (runner, options) in RUNS.items():
        first = _call(runner, first_galaxy, jax.random.PRNGKey(0), options)
        warm = min(_call(runner, second_galaxy, jax.random.PRNGKey(i), options)
                   for i in range(1, 4))
        times[name] = {"first_call_s": first, "warm_call_s": warm}
        print(f"{name:26s} first call {first:7.2f} s   warm {warm:8.4f} s", flush=True)
    ratio = times["vi (NIFTy geoVI)"]["warm_call_s"] / times["vi_native (geoVI)"]["warm_call_s"]
    ratio_mgvi = times["mgvi (NIFTy)"]["warm_call_s"] / times["vi_native (MGVI)"]["warm_call_s"]
    print(f"warm NIFTy / native: geoVI {ratio:.0f}×, MGVI {ratio_mgvi:.0f}×")
    write_json("methods_gaussian", {"problem": "5-D linear Gaussian (tests/methods_targets.py)",
                                    "times": times, "nifty_over_native_geovi": ratio,
                                    "nifty_over_native_mgvi": ratio_mgvi})


if __name__ == "__main__":
    main()
