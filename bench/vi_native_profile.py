"""Where ``vi_native``'s wall time goes on the ``bench/methods.py`` SED mock.

Same mock, same MAP start, same options as ``defaults.toml``'s ``[vi_native]``;
for each linear solver (``dense``: explicit Jacobians and d × d direct solves;
``cg``: matrix-free conjugate gradients, the earlier implementation) it times,
warm (second call, compiled programs reused):

- ``residual_s`` / ``jacobian_s``: one residual vector, one explicit Jacobian;
- ``kl_s``: the KL iterations alone (the engine with no top-up draws);
- ``topup_s``: the top-up draws alone (``build_vi_draws_engine``, the same
  geoVI sample map at the final mean), for ``--topup-draws`` draws
  (the default run draws 1000 − 8 = 992);
and the first-call (compile + run) time of each. A run is one ``kl_s`` per seed
(``n_seeds``) plus one ``topup_s``: since 2026-11-27 ``run_vi_native`` tops up
only the winning seed, through ``build_vi_draws_engine`` (records made before
time a ``full_s``, the old engine with the top-ups inside).

    .venv/bin/python bench/vi_native_profile.py [--solvers dense cg] [--cg-topup-draws 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402
from methods import NOISE_SEED, REDSHIFT, SNR, TRUTH, build_model, mock_photometry  # noqa: E402


def first_and_warm(fn, *args) -> tuple[float, float, object]:
    """Wall times [s] of a first and a second call (results blocked on)."""
    import jax

    times, out = [], None
    for _ in range(2):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times[0], times[1], out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvers", nargs="*", default=["dense", "cg"])
    parser.add_argument("--topup-draws", type=int, default=992)
    parser.add_argument("--cg-topup-draws", type=int, default=64,
                        help="top-up draws timed for the slow cg solver")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    from tengri.inference.fitter import Fitter
    from tengri.inference.methods import vi_native
    from tengri.inference.registry import method_options

    model, _ = build_model()
    flux, noise = mock_photometry(model, TRUTH, REDSHIFT, SNR, NOISE_SEED)
    fitter = Fitter(model, flux, noise, fixed={"redshift": REDSHIFT})
    problem = fitter.problem
    opts = method_options("vi_native", {})
    key = jax.random.PRNGKey(1)
    z0 = vi_native.vi_start_point("map", problem, key)
    args_dyn = (np.int64(opts["n_kl_iter"]), np.float64(opts["tol_kl"]))
    n_dim = problem.n_dim

    residual = jax.jit(problem.residuals)
    jacobian = jax.jit(lambda z, d: vi_native.residuals_and_jacobian(problem.residuals, z, d))
    result = {"problem": f"bench/methods.py mock, d = {n_dim}, n_data = {problem.n_data}",
              "options": opts, "solvers": {}}
    _, result["residual_s"], _ = first_and_warm(residual, z0, problem.data_args)
    _, result["jacobian_s"], _ = first_and_warm(jacobian, z0, problem.data_args)
    print(result, flush=True)

    for solver in args.solvers:
        row: dict = {}
        kl_engine = vi_native.build_vi_native_engine(
            problem.residuals, n_dim, int(opts["n_samples"]), opts["sample_mode"],
            bool(opts["mirror_samples"]), vi_native._iteration_bucket(int(opts["n_kl_iter"])),
            solver=solver)
        row["kl_first_s"], row["kl_s"], kl = first_and_warm(
            kl_engine, key, z0, problem.data_args, *args_dyn)
        row["n_iter"] = int(kl["n_iter"])
        row["mean"] = np.asarray(kl["mean"]).tolist()
        n_topup = args.topup_draws if solver == "dense" else args.cg_topup_draws
        draws_engine = vi_native.build_vi_draws_engine(problem.residuals, n_dim, n_topup, True,
                                                       True, solver=solver)
        row["topup_draws"] = n_topup
        row["topup_first_s"], row["topup_s"], draws = first_and_warm(
            draws_engine, key, kl["mean"], problem.data_args)
        row["topup_sd"] = np.asarray(jnp.std(draws["draws"], axis=0)).tolist()
        result["solvers"][solver] = row
        print(solver, row, flush=True)
    write_json("vi_native_profile", result)


if __name__ == "__main__":
    main()
