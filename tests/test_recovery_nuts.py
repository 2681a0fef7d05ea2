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

Why (issue 2, measured on mock 13): the model is smooth where the chains go (jax.grad
matches finite differences; the SSP age-bin edges give derivative jumps of ~1e-3
relative, and assigning the mass linearly between SSP ages instead did not change the
divergence count), but the mocks' noise is 5% of each band's flux, also in GALEX/u
where a quiescent galaxy is ~1e-5 of its optical flux: past a τ-dependent wall the
UV residuals grow from ~1σ to ~10⁴σ within 0.8 latent units, so the posterior is a
plateau in τ bounded by an exponentially steep wall, with preconditioned Hessian
eigenvalues from ~0.1 to ~400 (some negative) across the bulk. NUTS diverges at the
wall (181 divergences in 4 × 500 draws at target_accept 0.8, 51 at 0.9, 17 at 0.95)
and mixes slowly along τ (ESS 100–500 of 2000), so split-R̂ over 8 half-chains
scatters above 1.01. Chains now start dispersed around the MAP (``init_jitter``).
"""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))

N_MOCKS = 8
NUTS_CI = {"n_chains": 2, "n_warmup": 200, "n_samples": 200, "use_dense": True, "target_accept": 0.9}


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
