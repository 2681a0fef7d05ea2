"""BAGPIPES parity on three SSP age binnings, and which binning is closer to a fine reference.

The draws are those of ``tests/test_parity_bagpipes.py`` (seed 1, 20 galaxies,
delayed-τ SFH, z ∈ [0.05, 3], GALEX FUV → SPIRE 500 µm, DL07 dust emission). For
each, tengri predicts the photometry with

- ``raw``: the 221 raw BC03 ages with linear-midpoint bins (tengri's default);
- ``bagpipes``: the BC03 spectra rebinned onto BAGPIPES' 0.1-dex ages
  (``SSPGrid.rebinned_ages(*bagpipes_age_grid())``), as BAGPIPES does;
- ``fine``: a reference with 10 ages per raw age step (log-spaced, spectra and
  surviving fractions linear in log age between raw ages) and log-midpoint bins,
  which approaches ∫ SFR(t) L(t) dt for spectra that vary smoothly in log age;
- with ``--hat``, also ``raw_hat`` and ``bagpipes_hat``: the same two grids with
  ``sfh_quadrature="hat"`` (SSP light linear in formation age between SSP ages).

Printed per dust law: median, 90th percentile and maximum of |Δ| of each binning
against BAGPIPES and against ``fine``, and the worst band and draw (written to
``bench/out/parity_age_binning.json``; the band fluxes [µJy], NaN blueward of
1.1 × Lyα, to ``.npz`` beside it).

    .venv/bin/python bench/parity_age_binning.py [--draws 20] [--dust calzetti,calzetti_nonebular,...] [--hat]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bagpipes_components, bagpipes_filter_files, write_json  # noqa: E402

UV_OPTICAL_NIR = ["galex_FUV", "galex_NUV", "sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0",
                  "twomass_J", "twomass_H", "twomass_Ks", "spitzer_irac_ch1", "spitzer_irac_ch2"]
INFRARED = ["spitzer_irac_ch3", "spitzer_irac_ch4", "spitzer_mips_24", "spitzer_mips_70", "spitzer_mips_160",
            "herschel_pacs_70", "herschel_pacs_100", "herschel_pacs_160", "herschel_spire_250",
            "herschel_spire_350", "herschel_spire_500"]
CASES = {  # name: (tengri dust law, bagpipes dust type, nebular, filters)
    "calzetti_nonebular": ("calzetti", "Calzetti", False, UV_OPTICAL_NIR),
    "calzetti": ("calzetti", "Calzetti", True, UV_OPTICAL_NIR + INFRARED),
    "cardelli": ("cardelli", "Cardelli", True, UV_OPTICAL_NIR + INFRARED),
    "smc": ("smc", "SMC", True, UV_OPTICAL_NIR + INFRARED),
    "cf00": ("cf00", "CF00", True, UV_OPTICAL_NIR + INFRARED),
}


def log_age_refined(grid, per_step: int):
    """``grid`` with ``per_step`` log-spaced ages per raw age step, linear in log age between them.

    The youngest step (0 → first positive age) is kept as it is. Log-midpoint
    bins (``tengri.physics.sfh.age_bin_edges_yr``).
    """
    from tengri.data.ssp import SSPGrid
    from tengri.physics.sfh import age_bin_edges_yr

    ages = grid.age_yr
    first = int(np.argmax(ages > 0))
    log_raw = np.log(ages[first:])
    fraction = np.arange(per_step) / per_step
    log_fine = np.concatenate([log_raw[:-1, None] + np.diff(log_raw)[:, None] * fraction, [[log_raw[-1]]]],
                              axis=None)
    lower = np.clip(np.searchsorted(log_raw, log_fine, side="right") - 1, 0, log_raw.size - 2)
    weight = (log_fine - log_raw[lower]) / (log_raw[lower + 1] - log_raw[lower])

    def interpolate(values):  # (..., n_age) along the age axis given
        raw = values[..., first:]
        return (1 - weight) * raw[..., lower] + weight * raw[..., lower + 1]

    fine_ages = np.concatenate([ages[:first], np.exp(log_fine)])
    lnu = np.concatenate([grid.lnu[:, :first], np.moveaxis(interpolate(np.moveaxis(grid.lnu, 1, -1)), -1, 1)],
                         axis=1)
    surviving = np.concatenate([grid.surviving_mass_fraction[:, :first],
                                interpolate(grid.surviving_mass_fraction)], axis=1)
    return SSPGrid.from_arrays(fine_ages, grid.metallicity_zsun, grid.wavelength_aa, lnu, surviving,
                               name=f"{grid.name} refined x{per_step} in log age",
                               age_edges_yr=age_bin_edges_yr(fine_ages, midpoints="log"))


def draws(model, n_draws: int, cf00: bool):
    """The parity test's draws: (theta, bagpipes components) per galaxy."""
    from tengri.physics.cosmology import age_of_universe_gyr

    rng = np.random.default_rng(1)
    for _ in range(n_draws):
        z = rng.uniform(0.05, 3.0)
        age_u = float(age_of_universe_gyr(z, model.cosmo))
        theta = {"redshift": z, "stellar_mass": 10.0, "age_gyr": rng.uniform(0.05, age_u),
                 "tau_gyr": 10 ** rng.uniform(-1.5, 1), "metallicity": 10 ** rng.uniform(-1.5, 0.3),
                 "av": rng.uniform(0, 2), "log_u": -2.5, "dust_eta": 1.0}
        yield theta, rng.uniform(0.4, 1.5) if cf00 else None


def summary(d: np.ndarray, filter_names, thetas) -> dict:
    a = np.abs(d)
    finite = np.isfinite(a)
    worst = np.unravel_index(np.nanargmax(a), a.shape)
    t = thetas[worst[0]]
    return {"median": float(np.median(a[finite])), "p90": float(np.percentile(a[finite], 90)),
            "max": float(a[finite].max()), "worst_band": filter_names[worst[1]], "worst_draw": int(worst[0]),
            "worst_draw_theta": {k: round(float(t[k]), 4) for k in ("redshift", "age_gyr", "tau_gyr", "metallicity")}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--dust", default=",".join(CASES))
    parser.add_argument("--per-step", type=int, default=10, help="fine reference: ages per raw age step")
    parser.add_argument("--hat", action="store_true", help="also the raw and bagpipes grids with sfh_quadrature='hat'")
    args = parser.parse_args(argv)

    import bagpipes

    from tengri import Fixed, Parameters, Photometry, SEDModel, Uniform
    from tengri.data.filters import load_filters
    from tengri.data.ssp import bagpipes_age_grid, load_ssp_grid, photometry_wavelength_grid

    bagpipes.config.R_phot, bagpipes.config.R_other = 1000.0, 200.0
    raw = load_ssp_grid()
    coarse = raw.resampled(photometry_wavelength_grid())
    grids = {"raw": raw, "bagpipes": raw.rebinned_ages(*bagpipes_age_grid()),
             "fine": log_age_refined(coarse, args.per_step)}
    print(f"fine reference: {grids['fine'].age_yr.size} ages", flush=True)
    variants = {name: (name, "bins") for name in grids}  # variant: (grid, sfh_quadrature)
    if args.hat:
        variants |= {"raw_hat": ("raw", "hat"), "bagpipes_hat": ("bagpipes", "hat")}
    results, arrays = {}, {}
    for case in args.dust.split(","):
        dust, bagpipes_dust, nebular, filter_names = CASES[case]
        start = time.perf_counter()
        priors = dict(redshift=Uniform(0.01, 4), stellar_mass=Uniform(8, 12), age_gyr=Uniform(0.01, 14),
                      tau_gyr=Uniform(0.01, 10), metallicity=Uniform(0.005, 2.5), av=Uniform(0, 3))
        if nebular:
            priors["log_u"] = Fixed(-2.5)
        if dust == "cf00":
            priors["dust_n"] = Uniform(0.3, 2.5)
        models = {name: SEDModel(Parameters(priors), Photometry(filter_names), sfh="delayed", dust=dust,
                                 nebular=nebular, dust_emission=True, cosmology={"h0": 70.0, "om0": 0.3},
                                 ssp=grids[grid], sfh_quadrature=quadrature)
                  for name, (grid, quadrature) in variants.items()}
        filters = load_filters(filter_names)
        eff = np.array([f.effective_wavelength_aa for f in filters])
        fluxes = {name: [] for name in (*variants, "bagpipes_code")}
        thetas = []
        with tempfile.TemporaryDirectory() as tmp:
            files = bagpipes_filter_files(filters, Path(tmp))
            for theta, n in draws(models["raw"], args.draws, dust == "cf00"):
                components = bagpipes_components(theta, nebular=nebular, dust=bagpipes_dust)
                if n is not None:
                    theta["dust_n"] = components["dust"]["n"] = n
                red_of_lya = eff > 1.1 * 1215.67 * (1 + theta["redshift"])
                thetas.append(theta)
                theirs = np.asarray(bagpipes.model_galaxy(components, filt_list=files, phot_units="mujy").photometry)
                fluxes["bagpipes_code"].append(np.where(red_of_lya, theirs, np.nan))
                for name, model in models.items():
                    fluxes[name].append(np.where(red_of_lya, np.asarray(model.predict_photometry(theta)) / 1e-29,
                                                 np.nan))
        f = {k: np.array(v) for k, v in fluxes.items()}
        out = {}
        for name in variants:
            out[f"{name}_vs_bagpipes"] = summary(f[name] / f["bagpipes_code"] - 1, filter_names, thetas)
        coarse_variants = [name for name in variants if name != "fine"]
        for name in coarse_variants:
            out[f"{name}_vs_fine"] = summary(f[name] / f["fine"] - 1, filter_names, thetas)
        out["bagpipes_code_vs_fine"] = summary(f["bagpipes_code"] / f["fine"] - 1, filter_names, thetas)
        short_old = [i for i, t in enumerate(thetas) if t["tau_gyr"] < 0.15 and t["age_gyr"] > 5 * t["tau_gyr"]]
        out["short_tau_old_draws"] = {
            str(i): {"theta": {k: round(float(thetas[i][k]), 4) for k in ("redshift", "age_gyr", "tau_gyr")},
                     **{f"{name}_vs_fine_max": float(np.nanmax(np.abs(f[name][i] / f["fine"][i] - 1)))
                        for name in (*coarse_variants, "bagpipes_code")},
                     **{f"{name}_vs_bagpipes_max": float(np.nanmax(np.abs(f[name][i] / f["bagpipes_code"][i] - 1)))
                        for name in coarse_variants}}
            for i in short_old}
        out["seconds"] = time.perf_counter() - start
        arrays[case] = f
        results[case] = out
        print(case, {k: (v if not isinstance(v, dict) or "median" not in v else
                         f"med {v['median']:.3%} p90 {v['p90']:.3%} max {v['max']:.3%} "
                         f"({v['worst_band']}, draw {v['worst_draw']} {v['worst_draw_theta']})")
                     for k, v in out.items()}, flush=True)
    path = write_json("parity_age_binning", {"draws": args.draws, "fine_per_step": args.per_step, "hat": args.hat,
                                             "cases": results})
    np.savez(path.with_suffix(".npz"), **{f"{case}_{name}": v for case, f in arrays.items() for name, v in f.items()})


if __name__ == "__main__":
    main()
