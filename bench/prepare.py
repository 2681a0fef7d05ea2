"""Per-galaxy preparation cost: ``SEDModel.prepare`` on the GOODS-S FAST-like model.

CPU time (``time.process_time``, robust on a shared machine) and wall time of
``model.prepare({"redshift": z})`` for every 10th of the first 400 GOODS-S
galaxies (the band matrix and band tables each galaxy's likelihood reads), after
one warm-up galaxy. ``--n-sub-bands`` forces the sub-band count (e.g. 304, the
count tuned at the placeholder z = 0 before). Prints one JSON line.

    .venv/bin/python bench/prepare.py [--real-dir /work/shared/data/real] [--n-sub-bands Q]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real-dir", default="/work/shared/data/real")
    parser.add_argument("--n-sub-bands", type=int, default=None)
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    from tengri import SEDModel
    from tengri.examples.goodss import FAST_LIKE_CONFIG, goodss_catalog

    model = SEDModel.from_config(FAST_LIKE_CONFIG)
    if args.n_sub_bands is not None:
        model._band_table_plan["n_sub_bands"] = args.n_sub_bands
    redshifts = np.asarray(goodss_catalog(args.real_dir)["redshift"])[::10][:40]
    model.prepare({"redshift": float(redshifts[0])})
    cpu, wall = [], []
    for z in redshifts:
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        ctx = jax.block_until_ready(model.prepare({"redshift": float(z)}))
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    tables = ctx["band_tables"]["stellar"]
    print(json.dumps({"n_galaxies": len(redshifts), "n_sub_bands": int(tables.shape[0]),
                      "table_mb": tables.size * 8 / 1e6, "median_cpu_ms": 1e3 * float(np.median(cpu)),
                      "min_cpu_ms": 1e3 * float(np.min(cpu)), "median_wall_ms": 1e3 * float(np.median(wall))}))


if __name__ == "__main__":
    main()
