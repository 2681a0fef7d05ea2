"""Split-R̂."""

import numpy as np
import pytest
from scipy.signal import lfilter

from tengri.analysis.diagnostics import rhat


def test_converged_chains_have_rhat_near_one():
    noise = np.random.default_rng(0).standard_normal((4, 5000))
    chains = lfilter([1.0], [1.0, -0.5], noise, axis=1)
    assert 0.99 < rhat(chains) < 1.01


def test_chains_stuck_in_different_modes_have_large_rhat():
    rng = np.random.default_rng(1)
    chains = np.stack([rng.normal(-3, 1, 1000), rng.normal(3, 1, 1000)])
    assert rhat(chains) > 1.1


def test_single_chain_is_split_and_drift_is_detected():
    rng = np.random.default_rng(2)
    drifting = np.linspace(0, 5, 2000) + rng.normal(size=2000)
    assert rhat(drifting) > 1.1
    assert rhat(rng.normal(size=2000)) < 1.01


def test_rhat_matches_textbook_formula():
    chains = np.random.default_rng(3).normal(size=(2, 9))
    seq = np.concatenate([chains[:, :4], chains[:, 5:]])  # odd length: middle draw dropped
    w = seq.var(axis=1, ddof=1).mean()
    b = 4 * seq.mean(axis=1).var(ddof=1)
    assert rhat(chains) == pytest.approx(np.sqrt((3 / 4 * w + b / 4) / w))


def test_constant_chains_give_nan_or_inf():
    assert np.isnan(rhat(np.full((2, 10), 0.1)))
    assert rhat(np.stack([np.zeros(10), np.ones(10)])) == np.inf


def test_too_short_chain_is_rejected():
    with pytest.raises(ValueError, match="at least 4"):
        rhat(np.arange(3.0))
