"""The real GOODS-S catalog (616 galaxies) through CatalogFitter: MAP, Laplace, NUTS, Dask.

For each method: the time to prepare the galaxies (per-galaxy band tables; numpy; one
Fitter each, and batched: ``SEDModel.prepare_batch`` and CatalogFitter's whole batch
preparation with and without it),
the wall time of the fits after compilation (the engines are compiled first on a
few galaxies of the same batch shape), galaxies/s, and for the MAP the log M*
offset (median) and scatter (NMAD) against FAST's ``lmass``. ``--check-fitter N``
compares the batched MAP of the first N galaxies with per-galaxy ``Fitter`` MAPs.
``--dask`` runs the MAP again through ``tengri.fit_catalog`` on a Dask
LocalCluster(2). NUTS is run on ``--nuts-galaxies`` galaxies (0: none) and extrapolated
to 616 (marked as such in the JSON). A ``laplace`` run finds the MAP itself, so
``map_and_laplace_in_one_laplace_run_wall_s_after_compile`` (its wall time) is what a
catalog needing both costs; ``map_plus_laplace_wall_s_after_compile`` adds the separate
MAP run. Writes bench/out/catalog.json.

    .venv/bin/python bench/catalog.py [--n-galaxies 616] [--map-starts 2] [--nuts-galaxies 8] [--dask]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def offset_scatter(ours: np.ndarray, ref: np.ndarray) -> dict:
    """Median offset and NMAD scatter [dex] of ``ours − ref`` over finite pairs."""
    ok = np.isfinite(ours) & np.isfinite(ref)
    delta = ours[ok] - ref[ok]
    offset = float(np.median(delta))
    return {"n": int(ok.sum()), "median_offset_dex": offset,
            "nmad_scatter_dex": float(1.4826 * np.median(np.abs(delta - offset)))}


def timed_fit(model, galaxies, method, n_pad, options, warm):
    """Compile on ``warm`` galaxies (same batch shape), then time the whole catalog."""
    from tengri.inference.catalog import CatalogFitter

    start = time.perf_counter()
    CatalogFitter(model, galaxies[:warm], method=method, n_pad=n_pad, **options).run()
    compile_s = time.perf_counter() - start
    fitter = CatalogFitter(model, galaxies, method=method, n_pad=n_pad, **options)
    start = time.perf_counter()
    result = fitter.run()
    wall = time.perf_counter() - start
    return result, {"method": method, "strategy": result.strategy, "batch_mode": fitter.batch_mode,
                    "options": options, "n_pad": n_pad, "n_galaxies": len(galaxies),
                    "n_failed": result.n_failed, "compile_and_first_batch_s": compile_s,
                    "wall_s_after_compile": wall, "galaxies_per_s": len(galaxies) / wall,
                    "load_average_after": __import__("os").getloadavg()}


def preparation_timings(model, galaxies, n_pad: int) -> dict:
    """Seconds per galaxy of preparing a batch of ``n_pad`` galaxies (after one warm-up):
    one Fitter per galaxy (``SEDModel.prepare`` each), and what CatalogFitter's batched
    strategy does (``_build_fitters(batched=True)``: one ``prepare_batch``, then the Fitters,
    and the stacking of the batch's data_args), against the same without ``prepare_batch``."""
    import jax

    from tengri.inference import catalog
    from tengri.inference.fitter import Fitter

    records = [catalog._as_record(g, i, model, {}) for i, g in enumerate(galaxies[: 2 * n_pad])]
    warm, batch = records[:n_pad], records[n_pad:]
    Fitter(model, warm[0].flux_obs, warm[0].noise, data_mask=warm[0].mask, fixed=warm[0].fixed)
    start = time.perf_counter()
    for rec in batch:
        Fitter(model, rec.flux_obs, rec.noise, data_mask=rec.mask, fixed=rec.fixed)
    fitter_each = (time.perf_counter() - start) / len(batch)
    start = time.perf_counter()
    model.prepare_batch([rec.fixed for rec in batch])
    prepare_batch = (time.perf_counter() - start) / len(batch)

    def catalog_preparation(batched: bool) -> float:
        start = time.perf_counter()
        fitters, _, prepared = catalog._build_fitters(model, batch, batched=batched)
        args = [f.problem.data_args for f in fitters]
        context = None if prepared is None else catalog._batch_context(prepared, list(range(len(batch))),
                                                                       len(batch))
        axes = catalog._data_axes(fitters[0]) if context is None else catalog._data_axes_between(*fitters[:2])
        jax.block_until_ready(catalog._stack(args, axes, context))
        return (time.perf_counter() - start) / len(batch)

    catalog_preparation(True)
    return {"prepare_timings_batch": len(batch), "fitter_s_per_galaxy_warm": fitter_each,
            "prepare_batch_s_per_galaxy": prepare_batch,
            "catalog_preparation_s_per_galaxy": {"per_galaxy_prepare": catalog_preparation(False),
                                                 "prepare_batch": catalog_preparation(True)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-galaxies", type=int, default=616)
    parser.add_argument("--n-pad", type=int, default=32)
    parser.add_argument("--map-starts", type=int, default=2)
    parser.add_argument("--nuts-galaxies", type=int, default=8)
    parser.add_argument("--nuts-warmup", type=int, default=300)
    parser.add_argument("--nuts-samples", type=int, default=500)
    parser.add_argument("--nuts-batched", action="store_true",
                        help="NUTS through CatalogFitter(strategy='batched'): n_pad galaxies per vmapped call "
                             "(the accelerator path; per-galaxy Fitters otherwise)")
    parser.add_argument("--nuts-threads", type=int, default=1,
                        help="galaxies fitted side by side by the sequential NUTS (CatalogFitter n_threads)")
    parser.add_argument("--check-fitter", type=int, default=0)
    parser.add_argument("--dask", action="store_true")
    parser.add_argument("--real-dir", type=Path, default=REAL, help="folder with the GOODS-S files")
    parser.add_argument("--name", default="catalog", help="JSON name under bench/out")
    parser.add_argument("--no-laplace", action="store_true", help="MAP only (and NUTS if asked)")
    parser.add_argument("--prepare-only", action="store_true", help="the preparation timings alone")
    args = parser.parse_args()
    real = args.real_dir

    import tengri
    from tengri.catalog_io import galaxies_from_table
    from tengri.examples.goodss import FAST_LIKE_CONFIG, fast_reference, goodss_catalog
    from tengri.model.config import model_from_config

    if not real.is_dir():
        sys.exit(f"real data not found at {real}")
    tengri.enable_persistent_cache()
    model, spec = model_from_config(FAST_LIKE_CONFIG)
    table = goodss_catalog(real)[: args.n_galaxies]
    galaxies = galaxies_from_table(table, spec)
    fast = fast_reference(real)
    lmass = dict(zip(np.asarray(fast["id"]).astype(str), np.asarray(fast["lmass"], float)))
    out: dict = {"n_galaxies": len(galaxies), "cpu_cores": len(__import__("os").sched_getaffinity(0))}

    # preparing a galaxy (prior table, band matrix, band tables) is per-galaxy numpy work
    from tengri.inference.fitter import Fitter

    start = time.perf_counter()
    for g in galaxies[:20]:
        Fitter(model, g.flux_obs, g.noise, data_mask=g.mask, fixed=g.fixed)
    out["prepare_s_per_galaxy"] = (time.perf_counter() - start) / 20  # the first includes set-up
    out.update(preparation_timings(model, galaxies, args.n_pad))
    out["uptime_load_after_prepare"] = __import__("os").getloadavg()
    if args.prepare_only:
        write_json(args.name, out)
        return

    map_options = {"n_starts": args.map_starts}
    result, out["map"] = timed_fit(model, galaxies, "map", args.n_pad, map_options, args.n_pad)
    ours = np.array([row.get("log_mstar_p50", np.nan) for row in result.summary], float)
    ref = np.array([lmass.get(g.id, np.nan) for g in galaxies])
    out["map"]["log_mstar_vs_fast"] = offset_scatter(ours, ref)
    out["map"]["errors"] = sorted({row["error"] for row in result.summary if row["error"]})[:5]

    if args.check_fitter:
        from tengri.inference.catalog import galaxy_key

        key = __import__("jax").random.PRNGKey(42)
        worst = {"value": 0.0, "id": None, "parameter": None}
        n_above = 0
        start = time.perf_counter()
        for i, g in enumerate(galaxies[: args.check_fitter]):
            if result.posteriors[i] is None:
                continue
            ref_post = Fitter(model, g.flux_obs, g.noise, data_mask=g.mask, fixed=g.fixed).run(
                "map", key=galaxy_key(key, i), **map_options)
            diffs = {k: abs(ref_post.params[k] - result.posteriors[i].params[k])
                     for k in model.parameters.free_names}
            name = max(diffs, key=diffs.get)
            n_above += diffs[name] > 1e-4
            if diffs[name] > worst["value"]:  # id stays None when every galaxy agrees exactly
                worst = {"value": diffs[name], "id": g.id, "parameter": name}
        out["map"]["max_abs_diff_vs_fitter"] = {
            "n": args.check_fitter, **worst, "n_above_1e-4": int(n_above),
            "fitter_wall_s": time.perf_counter() - start}

    if not args.no_laplace:
        _, out["laplace"] = timed_fit(model, galaxies, "laplace", args.n_pad,
                                      {**map_options, "n_samples": 500}, args.n_pad)
        out["map_plus_laplace_wall_s_after_compile"] = (out["map"]["wall_s_after_compile"]
                                                        + out["laplace"]["wall_s_after_compile"])
        # a laplace run finds each galaxy's MAP itself (diagnostics["point_estimate"]), so a
        # catalog wanting both needs that one run: its wall time is the MAP + Laplace figure
        out["map_and_laplace_in_one_laplace_run_wall_s_after_compile"] = out["laplace"]["wall_s_after_compile"]

    if args.nuts_galaxies > 0:
        nuts_options = {"n_warmup": args.nuts_warmup, "n_samples": args.nuts_samples}
        sub = galaxies[: args.nuts_galaxies]
        if args.nuts_batched:
            _, nuts = timed_fit(model, sub, "nuts", args.n_pad, {**nuts_options, "strategy": "batched"},
                                args.n_pad)
        else:
            _, nuts = timed_fit(model, sub, "nuts", None, {**nuts_options, "n_threads": args.nuts_threads}, 1)
        if len(sub) < 616:
            nuts["extrapolated_wall_s_616"] = nuts["wall_s_after_compile"] / len(sub) * 616
        out["nuts"] = nuts

    if args.dask:
        from tengri.fit_catalog import fit_catalog

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "goodss.ecsv"
            table.write(path, format="ascii.ecsv")
            start = time.perf_counter()
            rows = fit_catalog(path, FAST_LIKE_CONFIG, "map", Path(tmp) / "out", options=map_options,
                               progress=False, save_posteriors=False, chunk_size=args.n_pad,
                               n_pad=args.n_pad, dask="local:2")
            wall = time.perf_counter() - start
        out["dask_local2_map"] = {"wall_s_including_worker_start_and_compile": wall,
                                  "galaxies_per_s": len(rows) / wall,
                                  "n_failed": sum(1 for r in rows if r["error"])}
    write_json(args.name, out)


if __name__ == "__main__":
    main()
