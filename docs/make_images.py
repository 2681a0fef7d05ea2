"""Make the documentation figures: one real GOODS-S galaxy fitted with NUTS.

Fits 3D-HST GOODS-S galaxy ``--id`` (default 14486: z_best = 1.043, 38 bands
from U to IRAC 8 µm, median S/N ≈ 50, log M* = 10.03 in the published FAST fit,
χ² ≈ 49 for 38 bands at our MAP — among the z ≈ 1 galaxies with S/N > 30, one the
model describes well) with the FAST-like model of :mod:`tengri.examples.goodss` (τ-model SFH,
Calzetti dust, solar metallicity, no nebular emission), first the MAP, then NUTS
warm-started from it, and writes

    docs/images/goodss_<id>_corner.png   parameters + log M*, log SFR; MAP marked
    docs/images/goodss_<id>_sed.png      f_ν [µJy] vs observed λ [µm], photometry, MAP SED
    docs/images/goodss_<id>_sfh.png      SFR vs lookback time, MAP SFH

The catalog errors are photometric only; as usual for such fits (and as FAST does
with its template error function) a floor of ``--error-floor`` (default 5%) of the
flux is put under them, so that the model's own systematic errors do not make the
posterior unrealistically narrow.

Run from the repository root (needs ../shared/data/real)::

    .venv/bin/python docs/make_images.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import tengri  # noqa: E402,F401  (x64)
from tengri.catalog_io import galaxies_from_table  # noqa: E402
from tengri.examples.goodss import FAST_LIKE_CONFIG, fast_reference, goodss_catalog  # noqa: E402
from tengri.inference.fitter import Fitter  # noqa: E402
from tengri.model.config import model_from_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = REPO.parent / "shared" / "data" / "real"
MAX_PNG_BYTES = 300_000
MAX_PIXELS = 1100  # longest side of a figure: a 7-column corner plot stays < 300 kB


def load_galaxy(real_dir: Path, galaxy_id: str, error_floor: float):
    """(model, galaxy input with the error floor applied, row of the FAST table)."""
    table = goodss_catalog(real_dir)
    rows = np.flatnonzero(np.asarray(table["id"]) == galaxy_id)
    if rows.size != 1:
        raise SystemExit(f"galaxy id {galaxy_id!r} not found in {real_dir}/GOODSS_td.cat")
    model, spec = model_from_config(FAST_LIKE_CONFIG)
    galaxy = galaxies_from_table(table[rows], spec)[0]
    noise = np.maximum(galaxy.noise, error_floor * np.abs(galaxy.flux_obs))
    fast = {k: v[rows[0]] for k, v in fast_reference(real_dir).items()}
    return model, galaxy, noise, fast


def map_reference(map_post) -> dict[str, float]:
    """MAP values under the corner's column names (parameters and log10 derived)."""
    values = dict(map_post.params)
    for name in ("stellar_mass", "sfr_100myr", "sfr_10myr"):
        value = map_post.derived[name]
        if value > 0:
            values[f"log10_{name}"] = float(np.log10(value))
    return values


def save(fig, path: Path) -> None:
    dpi = min(110.0, MAX_PIXELS / float(max(fig.get_size_inches())))
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    size = path.stat().st_size
    if size > MAX_PNG_BYTES:
        raise SystemExit(f"{path} is {size / 1e3:.0f} kB, over the {MAX_PNG_BYTES / 1e3:.0f} kB limit")
    print(f"wrote {path} ({size / 1e3:.0f} kB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--id", default="14486", help="3D-HST GOODS-S id (default 14486)")
    parser.add_argument("--out", default=str(REPO / "docs" / "images"))
    parser.add_argument("--error-floor", type=float, default=0.05, help="fractional error floor")
    parser.add_argument("--n-warmup", type=int, default=500)
    parser.add_argument("--n-samples", type=int, default=1000)
    args = parser.parse_args()

    model, galaxy, noise, fast = load_galaxy(REAL_DATA, args.id, args.error_floor)
    fitter = Fitter(model, galaxy.flux_obs, noise, data_mask=galaxy.mask, fixed=galaxy.fixed)
    redshift = galaxy.fixed["redshift"]
    print(f"galaxy {galaxy.id}: z = {redshift:.3f}, {int(galaxy.mask.sum())} bands used")

    start = time.perf_counter()
    map_post = fitter.run("map")
    post = map_post.refine("nuts", n_warmup=args.n_warmup, n_samples=args.n_samples)
    print(f"MAP + NUTS in {time.perf_counter() - start:.0f} s; "
          f"divergences {post.diagnostics.get('divergences')}, "
          f"acceptance {post.diagnostics.get('acceptance_rate', float('nan')):.2f}")
    print(post.summary_table())
    chi2 = post.posterior_predictive(galaxy.flux_obs)
    print(f"posterior-predictive chi2 median {chi2['chi2_median']:.1f} for {chi2['n_data']} bands")
    log_mstar = np.log10(post.derived["stellar_mass"])
    print(f"log M* = {np.median(log_mstar):.2f} (+{np.percentile(log_mstar, 84) - np.median(log_mstar):.2f}"
          f" -{np.median(log_mstar) - np.percentile(log_mstar, 16):.2f}); FAST: {fast['lmass']:.2f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"goodss_{galaxy.id}"
    title = f"GOODS-S {galaxy.id}, z = {redshift:.3f} (3D-HST)"

    fig = post.plot_corner(truths=map_reference(map_post), truth_label="MAP", label="NUTS")
    fig.suptitle(title, x=0.98, ha="right")
    save(fig, out / f"{stem}_corner.png")

    fig = post.plot_sed(n_draws=200, truths=map_post.params, truth_label="MAP")
    fig.axes[0].set_title(title)
    save(fig, out / f"{stem}_sed.png")

    fig = post.plot_sfh(n_draws=200, truths=map_post.params, truth_label="MAP")
    fig.axes[0].set_title(title)
    save(fig, out / f"{stem}_sfh.png")


if __name__ == "__main__":
    main()
