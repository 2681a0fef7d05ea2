"""Real data: the VANDELS VIMOS spectrum of CDFS 017433 fitted end to end (issue 5).

Uses ../shared/data/real/VANDELS_CDFS_017433.fits (skipped with a message when
absent): WAVE [Å, observed], FLUX and ERR [erg/s/cm²/Å]. As in bagpipes' example,
5250 < λ < 9250 Å, binned by two. Redshift fixed at 1.039, calibration polynomial
(2nd order, as bagpipes' example) marginalised, Laplace fit (MAP from 4 starts, then
the Gaussian at the MAP). A gradient costs ~0.2 s on a shared 2-core machine, too
much for NUTS in CI. bagpipes' reference fit (double power law, CF00 dust): log
formed mass 11.52 (+0.07/−0.06), Av 0.62 ± 0.15.
"""

import time

import numpy as np
import pytest

from conftest import require_real_data

REDSHIFT = 1.039
RESOLUTION = 580.0
LAPLACE = {"n_starts": 4, "n_samples": 500}


def read_vandels(path):
    """(wavelength [Å], f_λ, σ [erg/s/cm²/Å]) over 5250–9250 Å, pixels binned by two."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        table = hdul[1].data
        wave, flux, err = (np.asarray(table[c][0], np.float64) for c in ("WAVE", "FLUX", "ERR"))
    keep = (wave > 5250.0) & (wave < 9250.0)
    wave, flux, err = wave[keep], flux[keep], err[keep]
    n = 2 * (wave.size // 2)
    pairs = [a[:n].reshape(-1, 2) for a in (wave, flux, err)]
    return pairs[0].mean(axis=1), pairs[1].mean(axis=1), np.sqrt(np.sum(pairs[2] ** 2, axis=1)) / 2.0


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.full
def test_vandels_spectrum_fits_end_to_end():
    real = require_real_data()
    path = real / "VANDELS_CDFS_017433.fits"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    from tengri import Fitter, Fixed, LogUniform, Parameters, SEDModel, Uniform
    from tengri.model import Spectroscopy

    wave, flux, err = read_vandels(path)
    assert np.all(np.isfinite(flux)) and np.all(err > 0)
    params = Parameters({
        "redshift": Fixed(REDSHIFT), "stellar_mass": Uniform(10.0, 12.5), "age_gyr": Uniform(0.3, "age_of_universe"),
        "tau_gyr": LogUniform(0.05, 5.0), "metallicity": LogUniform(0.2, 2.5), "av": Uniform(0.0, 2.0),
        "veldisp_kms": Uniform(50.0, 500.0),
    })
    model = SEDModel(params, Spectroscopy(wave, resolution=RESOLUTION), sfh="delayed", dust="calzetti", nebular=False)
    start = time.perf_counter()
    fitter = Fitter(model, flux, err, calibration_marginalize=True, cal_n_poly=2)
    post = fitter.run("laplace", **LAPLACE)
    best = post.diagnostics["point_estimate"]
    wall = time.perf_counter() - start
    summary = {k: np.percentile(post.samples[k], [16, 50, 84]) for k in ("stellar_mass", "age_gyr", "av",
                                                                          "tau_gyr", "metallicity", "veldisp_kms")}
    print(f"VANDELS CDFS 017433: MAP {best}; wall {wall:.0f} s (Laplace run {post.wall_time_s:.0f} s)")
    for k, (lo, med, hi) in summary.items():
        print(f"  {k:<14} {med:.3f} (+{hi - med:.3f} / -{med - lo:.3f})")
    assert post.diagnostics["converged"] and post.diagnostics["hessian_positive_definite"]
    for k in summary:
        assert np.all(np.isfinite(post.samples[k])), k
    # a massive, old galaxy: the fit must land near the published numbers, not on a prior edge
    assert 10.8 < summary["stellar_mass"][1] < 12.2
    assert summary["age_gyr"][1] > 1.0
