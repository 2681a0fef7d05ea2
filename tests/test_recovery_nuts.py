"""Recovery: NUTS on mocks made with tengri's own model (foundation acceptance, reduced size).

The mocks and fits are those of ``bench/recovery.py`` (delayed τ + Calzetti, 12
bands GALEX → IRAC, redshift known per galaxy) with its default noise model:
5% of each band's flux plus a per-band sky floor from GOODS-S-like 5σ depths
(``recovery.DEPTH_5SIGMA_AB``; the old S/N-20-everywhere mocks are
``noise_floor_mag="none"``). Fewer mocks and shorter chains than the bench so the
test stays small: N_MOCKS mocks, 2 chains of 200 warm-up + 200 draws. For
calibrated posteriors the truth falls inside the 16–84% interval for 68% of the
(galaxy, parameter) pairs; the band asserted is 68% ± 3 binomial σ. The chains
are too short for split-R̂ < 1.01 (that is the bench's job, recorded in
``bench/records/recovery_cpu_2core.json``); here the median R̂ must be < 1.05
and no chain may diverge more than a few percent of its draws.

Why the floor (issue 2, measured on mock 13 with S/N 20 everywhere): 5% errors on
GALEX/u fluxes ~1e-5 of a quiescent galaxy's optical flux made the UV residuals
grow from ~1σ to ~10⁴σ within 0.8 latent units of τ, an exponentially steep wall
that NUTS diverged at (181 divergences in 4 × 500 draws at target_accept 0.8) and
mixed slowly along (ESS 100–500 of 2000). No survey quotes such errors on fluxes
that faint: its background sets a floor.
"""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

import numpy as np

N_MOCKS = 8
NUTS_CI = {"n_chains": 2, "n_warmup": 200, "n_samples": 200, "use_dense": True, "target_accept": 0.9}


def test_mock_noise_is_five_percent_and_the_depth_floor_in_quadrature():
    from recovery import DEPTH_5SIGMA_AB, FILTERS, SNR, mock_noise_cgs, noise_floor_cgs

    floor = noise_floor_cgs("depths")
    # a 5σ depth of m AB is 5 floor σ: m = -2.5 log10(5 σ) - 48.6
    np.testing.assert_allclose(-2.5 * np.log10(5 * floor) - 48.6, [DEPTH_5SIGMA_AB[f] for f in FILTERS])
    bright, faint = np.full(len(FILTERS), 1e-26), np.full(len(FILTERS), 1e-33)
    np.testing.assert_allclose(mock_noise_cgs(bright), bright / SNR, rtol=1e-6)  # ~16 AB: floor negligible
    np.testing.assert_allclose(mock_noise_cgs(faint), floor, rtol=1e-6)          # ~34 AB: floor only
    at_floor = floor * SNR  # flux whose 5% equals the floor: the two add in quadrature
    np.testing.assert_allclose(mock_noise_cgs(at_floor), np.sqrt(2) * floor)
    np.testing.assert_allclose(mock_noise_cgs(faint, "none"), faint / SNR)       # the old definition
    np.testing.assert_allclose(noise_floor_cgs(26), np.full(len(FILTERS), 10 ** (-0.4 * 74.6) / 5))
    with pytest.raises(ValueError, match="noise_floor_mag"):
        noise_floor_cgs("deep")


@pytest.mark.slow
@pytest.mark.full
def test_nuts_recovers_mock_truths_with_calibrated_intervals():
    from recovery import fit_mocks, summarise

    records = fit_mocks(range(N_MOCKS), seed=2024, nebular=False, ssp_npz=None, nuts=NUTS_CI)
    summary = summarise(records)
    print(summary)
    assert summary["n_pairs"] == 5 * N_MOCKS
    band = 3 * (0.68 * 0.32 / summary["n_pairs"]) ** 0.5
    assert abs(summary["coverage_68"] - 0.68) <= band, summary
    assert summary["rhat_median"] < 1.05, summary
    assert summary["divergences_max_per_chain"] <= 0.05 * NUTS_CI["n_samples"], summary
