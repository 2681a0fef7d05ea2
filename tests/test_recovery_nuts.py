"""Recovery: NUTS on mocks made with tengri's own model (foundation acceptance; a reduced size, still beyond the CI budget: marked full).

The mocks and fits are those of ``bench/recovery.py`` (delayed τ + Calzetti, 12
bands GALEX → IRAC, S/N 20, redshift known per galaxy), fewer and shorter so the
test fits the CI budget: 8 mocks, 2 chains of 200 warm-up + 200 draws. For
calibrated posteriors the truth falls inside the 16–84% interval for 68% of the
40 (galaxy, parameter) pairs; the band asserted is 68% ± 3 binomial σ (±22%).
The full-size run (20 mocks, 4 chains × 1000 draws) is ``bench/recovery.py``,
recorded in ``bench/records/recovery_h100_host_16core.json``: coverage 72% of
100 pairs, but split-R̂ up to 1.26 (median 1.013) with hundreds of divergences
in some chains — the R̂ < 1.01 target is not met yet.
"""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

N_MOCKS = 8
NUTS_CI = {"n_chains": 2, "n_warmup": 200, "n_samples": 200, "use_dense": True}


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
    assert summary["rhat_median"] < 1.1, summary
