"""Catalog-summary cost per galaxy: full SED chain per draw vs the SFH-only derived path.

GOODS-S FAST-like model (``tengri.examples.goodss``), one Laplace posterior of
``--n-draws`` draws per galaxy. For each galaxy, alternately (so both see the same
machine load): the old summary path (``Posterior.derived``: every derived quantity,
the whole component chain per draw) and the new one (``catalog_summary.summarise``,
which asks for ``stellar_mass``, ``sfr_100myr``, ``ssfr`` only). Both are compiled
on the first galaxy before timing. Reports CPU time (``time.process_time``, all
threads) and wall time per galaxy, and the largest difference of the summary's
derived columns between the two. Then the new path alone again (``fast_alone``),
as a catalog run sees it. Writes bench/out/<name>.json.

    .venv/bin/python bench/derived_fast.py [--n-galaxies 4] [--n-draws 1000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def _timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return value, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-galaxies", type=int, default=4)
    parser.add_argument("--n-draws", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--real-dir", type=Path, default=REAL, help="folder with the GOODS-S files")
    parser.add_argument("--name", default="derived_fast", help="JSON name under bench/out")
    args = parser.parse_args()
    if not args.real_dir.is_dir():
        sys.exit(f"real data not found at {args.real_dir}")

    import tengri
    from tengri.catalog_io import galaxies_from_table
    from tengri.catalog_summary import DERIVED_COLUMNS, summarise
    from tengri.examples.goodss import FAST_LIKE_CONFIG, goodss_catalog
    from tengri.inference.fitter import Fitter
    from tengri.model.config import model_from_config
    from tengri.posterior import Posterior

    tengri.enable_persistent_cache()
    model, spec = model_from_config(FAST_LIKE_CONFIG)
    galaxies = galaxies_from_table(goodss_catalog(args.real_dir)[: args.n_galaxies], spec)
    free = list(model.parameters.free_names)

    fits = [Fitter(model, g.flux_obs, g.noise, data_mask=g.mask, fixed=g.fixed).run("laplace",
                                                                                    n_samples=args.n_draws)
            for g in galaxies]

    def fresh(post):  # nothing cached, as a catalog run sees it
        return Posterior(post.samples, post.params, post.method, post.wall_time_s, n_chains=post.n_chains,
                         model=model)

    def full_summary(post, gid):  # the previous catalog_summary: every derived quantity
        derived = fresh(post).derived
        logs = {c: np.log10(derived[k]) for c, k in zip(DERIVED_COLUMNS, ("stellar_mass", "sfr_100myr", "ssfr"))}
        return {f"{c}_p{q}": float(np.percentile(v, q)) for c, v in logs.items() for q in (16, 50, 84)}

    def fast_summary(post, gid):
        return summarise(gid, fresh(post), free)

    full_summary(fits[0], "warm")  # compile both
    fast_summary(fits[0], "warm")
    times = {"full": {"cpu": [], "wall": []}, "fast": {"cpu": [], "wall": []}}
    worst_rel = 0.0
    for _ in range(args.repeats):
        for g, post in zip(galaxies, fits):
            ref, cpu, wall = _timed(lambda: full_summary(post, g.id))
            times["full"]["cpu"].append(cpu)
            times["full"]["wall"].append(wall)
            row, cpu, wall = _timed(lambda: fast_summary(post, g.id))
            times["fast"]["cpu"].append(cpu)
            times["fast"]["wall"].append(wall)
            worst_rel = max(worst_rel, max(abs(row[k] - v) / max(abs(v), 1e-300) for k, v in ref.items()))

    # the new path alone, as a catalog run sees it: right after the full chain the fast call
    # sometimes costs ~1 s more CPU (no recompilation; an aftermath of the heavy full call)
    times["fast_alone"] = {"cpu": [], "wall": []}
    for _ in range(args.repeats):
        for g, post in zip(galaxies, fits):
            _, cpu, wall = _timed(lambda: fast_summary(post, g.id))
            times["fast_alone"]["cpu"].append(cpu)
            times["fast_alone"]["wall"].append(wall)

    out = {"n_galaxies": len(galaxies), "n_draws": args.n_draws, "repeats": args.repeats,
           "model": "goodss FAST_LIKE_CONFIG (exponential, calzetti, no nebular)",
           "max_rel_diff_summary_columns": worst_rel}
    for path, t in times.items():
        out[path] = {"cpu_s_per_galaxy_median": float(np.median(t["cpu"])),
                     "wall_s_per_galaxy_median": float(np.median(t["wall"])),
                     "cpu_s_per_galaxy": [round(v, 4) for v in t["cpu"]]}
    for path in ("fast", "fast_alone"):
        out[f"cpu_speedup_{path}"] = out["full"]["cpu_s_per_galaxy_median"] / out[path]["cpu_s_per_galaxy_median"]
        out[f"wall_speedup_{path}"] = out["full"]["wall_s_per_galaxy_median"] / out[path]["wall_s_per_galaxy_median"]
    print({k: v for k, v in out.items() if k not in times})
    for path in times:
        print(path, {k: v for k, v in out[path].items() if k != "cpu_s_per_galaxy"})
    write_json(args.name, out)


if __name__ == "__main__":
    main()
