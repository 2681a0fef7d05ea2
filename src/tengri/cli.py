"""The ``tengri`` command.

    tengri fit CATALOG --config MODEL.toml --method METHOD --out DIR [--option k=v ...] [--plots]
               [--chunk-size N] [--no-resume] [--dask local[:N] | tcp://host:port]
               [--format csv|fits|hdf5] [--n-pad N] [--threads N]
    tengri sbc --config MODEL.toml --method METHOD --n N --out DIR [--snr 20] [--seed S]
               [--tolerance 0.05] [--redshift Z] [--option k=v ...] [--no-resume]
    tengri demo [--out DIR]
    tengri info
"""

from __future__ import annotations

import argparse
import ast
import sys

__all__ = ["main"]


def _parse_option(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tengri", description="Differentiable galaxy SED fitting on JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="fit every galaxy of a catalog")
    fit.add_argument("catalog", help="CSV, ECSV or FITS catalog")
    fit.add_argument("--config", required=True, help="model configuration (TOML)")
    fit.add_argument("--method", default="map", help="inference method (default: map)")
    fit.add_argument("--out", required=True, help="output directory")
    fit.add_argument("--option", action="append", default=[], type=_parse_option,
                     metavar="KEY=VALUE", help="method option, repeatable (e.g. n_samples=500)")
    fit.add_argument("--no-posteriors", action="store_true", help="write only summary.csv")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.add_argument("--plots", action="store_true",
                     help="also write plots/<id>_{corner,sed,sfh}.png per galaxy (corner needs draws)")
    fit.add_argument("--chunk-size", type=int, default=64,
                     help="galaxies per chunk: one summary part file, one Dask task (default 64)")
    fit.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="skip galaxies finished by an earlier run into --out (default: on)")
    fit.add_argument("--dask", default=None, metavar="local[:N]|tcp://host:port",
                     help="fit chunks on a Dask LocalCluster of N worker processes or a scheduler")
    fit.add_argument("--format", default="csv", choices=("csv", "fits", "hdf5"),
                     help="summary file format (default csv)")
    fit.add_argument("--n-pad", type=int, default=None,
                     help="batch size of vmapped fits (map/laplace); batches are padded to it")
    fit.add_argument("--seed", type=int, default=42, help="PRNG seed of the run (default 42)")
    fit.add_argument("--threads", type=int, default=1,
                     help="galaxies fitted side by side by per-galaxy methods such as nuts (default 1; "
                          "e.g. the number of cores); the results do not depend on it")

    sbc = sub.add_parser("sbc", help="simulation-based calibration of a method on a model")
    sbc.add_argument("--config", required=True, help="model configuration (TOML)")
    sbc.add_argument("--method", required=True, help="inference method")
    sbc.add_argument("--n", type=int, default=200, help="number of simulations (default 200)")
    sbc.add_argument("--out", required=True, help="output directory")
    sbc.add_argument("--snr", type=float, default=20.0, help="S/N of every simulated band (default 20)")
    sbc.add_argument("--seed", type=int, default=0, help="seed of draws, noise and fits (default 0)")
    sbc.add_argument("--tolerance", type=float, default=0.05,
                     help="largest |coverage - nominal| accepted at 68%% and 95%% (default 0.05)")
    sbc.add_argument("--redshift", type=float, default=None,
                     help="redshift of the simulations (needed when the config reads a column)")
    sbc.add_argument("--option", action="append", default=[], type=_parse_option,
                     metavar="KEY=VALUE", help="method option, repeatable (e.g. n_samples=500)")
    sbc.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                     help="skip simulations finished by an earlier run into --out (default: on)")
    sbc.add_argument("--quiet", action="store_true", help="no progress bar")

    demo = sub.add_parser("demo", help="fit a generated mock catalog and write plots")
    demo.add_argument("--out", default="demo_output")

    sub.add_parser("info", help="versions, grids and methods")
    return parser


def main(argv=None) -> int:
    args = _build_parser().parse_args(argv)
    import tengri

    tengri.enable_persistent_cache()  # a fresh process reuses compiled programs
    from tengri.errors import ConfigError, DataError, ParameterError

    try:
        if args.command == "fit":
            from tengri.fit_catalog import fit_catalog

            from tengri.fit_catalog import summary_path

            rows = fit_catalog(args.catalog, args.config, args.method, args.out,
                               options=dict(args.option), save_posteriors=not args.no_posteriors,
                               progress=not args.quiet, plots=args.plots, key=args.seed,
                               chunk_size=args.chunk_size, resume=args.resume, fmt=args.format,
                               dask=args.dask, n_pad=args.n_pad, n_threads=args.threads)
            n_err = sum(1 for r in rows if r.get("error"))
            print(f"fitted {len(rows) - n_err} of {len(rows)} galaxies → "
                  f"{summary_path(args.out, args.format)}")
            return 0 if n_err < len(rows) else 1
        if args.command == "sbc":
            from tengri.validation.sbc import report_lines, run_sbc

            report = run_sbc(args.config, args.method, args.n, args.out, snr=args.snr, seed=args.seed,
                             tolerance=args.tolerance, redshift=args.redshift,
                             options=dict(args.option), resume=args.resume, progress=not args.quiet)
            print("\n".join(report_lines(report)))
            return 0 if report["calibrated"] else 1
        if args.command == "demo":
            from tengri.demo import run_demo

            run_demo(args.out)
            return 0
        if args.command == "info":
            import jax

            import tengri
            from tengri.inference.registry import available_methods

            print(f"tengri {tengri.__version__}, jax {jax.__version__}, devices {jax.devices()}")
            print(f"methods: {', '.join(available_methods())}")
            return 0
    except (ConfigError, DataError, ParameterError, ValueError) as err:
        print(f"tengri: error: {err}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
