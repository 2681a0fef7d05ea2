"""check_convergence (N > 5τ), ess_table and histogram_overlap."""

import numpy as np
import pytest
from scipy.signal import lfilter

from tengri.analysis.diagnostics import check_convergence, ess_table, histogram_overlap


def ar1(rho, n, seed=0, n_chains=1):
    noise = np.random.default_rng(seed).standard_normal((n_chains, n))
    return lfilter([1.0], [1.0, -rho], noise, axis=1).reshape(-1)


def test_long_chains_pass():
    conv = check_convergence({"a": ar1(0.5, 5000), "b": ar1(0.9, 5000, seed=1)})
    assert conv["all_converged"] and conv["warnings"] == []
    assert conv["tau"]["b"] == pytest.approx(19, rel=0.3)
    assert conv["n_samples"] == 5000


def test_chain_shorter_than_five_tau_is_flagged_by_name():
    conv = check_convergence({"fast": ar1(0.0, 300), "slow": ar1(0.99, 300, seed=2)})
    assert not conv["all_converged"]
    assert len(conv["warnings"]) == 1 and conv["warnings"][0].startswith("slow:")
    assert 300 <= 5 * conv["tau"]["slow"]


def test_fixed_parameters_are_not_tested():
    conv = check_convergence({"a": ar1(0.5, 2000), "z": np.full(2000, 1.0)})
    assert conv["all_converged"]
    assert conv["constant"] == ["z"] and "z" not in conv["tau"]


def test_chain_that_never_moved_fails():
    conv = check_convergence({"a": np.full(500, 3.0), "b": np.full(500, -1.0)})
    assert not conv["all_converged"]
    assert "never moved" in conv["warnings"][0]


def test_criterion_uses_length_of_each_chain():
    draws = ar1(0.9, 60, seed=3, n_chains=10)  # 600 draws, but each chain only 60 ≈ 3τ
    assert not check_convergence({"a": draws}, n_chains=10)["all_converged"]
    assert check_convergence({"a": draws}, n_chains=10)["n_per_chain"] == 60


def test_vector_parameter_counts_its_slowest_component():
    field = np.stack([ar1(0.0, 2000), ar1(0.95, 2000, seed=4)], axis=1)
    conv = check_convergence({"psd_xi": field})
    assert conv["tau"]["psd_xi"] > 20


def test_chains_not_dividing_draws_are_rejected():
    with pytest.raises(ValueError, match="n_chains=3"):
        check_convergence({"a": np.zeros(100)}, n_chains=3)


def test_empty_samples_rejected():
    with pytest.raises(ValueError, match="empty"):
        check_convergence({})


def test_ess_table_lists_parameters_and_fixed_ones():
    table = ess_table({"age_gyr": ar1(0.5, 2000), "redshift": np.ones(2000), "psd_xi": np.zeros((2000, 3))})
    assert "age_gyr" in table and "yes" in table
    assert "redshift" in table and "fixed" in table
    assert "psd_xi" in table.splitlines()[-1]


def test_overlap_of_one_distribution_is_high_and_of_disjoint_ones_zero():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=500), rng.normal(size=500)
    assert histogram_overlap(a, b) > 0.8
    assert histogram_overlap(a, b + 20) == 0.0
    assert histogram_overlap(np.ones(5), np.ones(7)) == 1.0


def test_overlap_rejects_bad_bins():
    with pytest.raises(ValueError, match="n_bins"):
        histogram_overlap([1.0, 2.0], [1.0, 2.0], n_bins=0)
