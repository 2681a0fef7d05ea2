"""Posterior: construction, diagnostics, emission lines, predictions, refits, conversions."""

import arviz as az
import jax
import numpy as np
import pytest
from scipy.signal import lfilter
from test_posterior_fakes import (
    SED_LINES,
    FakeFitter,
    FakeModel,
    gaussian_posterior,
    mock_photometry,
)

from tengri.errors import DataError
from tengri.params import Fixed, Parameters, TruncatedNormal
from tengri.posterior import Posterior


def ar1(rho, n, seed):
    return lfilter([1.0], [1.0, -rho], np.random.default_rng(seed).standard_normal(n))


@pytest.fixture
def sampled():
    """Two NUTS-like chains of 10000 draws: AR(1) parameters, a fixed one and a latent field."""
    rng = np.random.default_rng(0)
    n = 20_000
    samples = {
        "c0": 2.0 + 0.1 * ar1(0.5, n, 1),
        "c1": -0.5 + 0.05 * ar1(0.8, n, 2),
        "redshift": np.full(n, 1.0),
        "psd_xi": rng.standard_normal((n, 3)),
    }
    return Posterior(samples, {"c0": 2.0, "c1": -0.5, "redshift": 1.0, "psd_xi": np.zeros(3)},
                     "mcmc_nuts", 12.5, diagnostics={"acceptance_rate": 0.81, "divergences": 0},
                     n_chains=2, model=FakeModel())


@pytest.fixture
def point():
    return Posterior(None, {"c0": 2.0, "c1": -0.5}, "map", 0.4, loss_history=[10.0, 3.0, 2.5],
                     model=FakeModel())


# --- construction ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"method": ""}, ValueError, "method"),
        ({"wall_time_s": -1.0}, ValueError, "wall_time_s"),
        ({"n_chains": 0}, ValueError, "n_chains"),
        ({"n_chains": 3}, ValueError, "n_chains=3"),
        ({"samples": {"a": np.zeros(10), "b": np.zeros(9)}}, DataError, "same n_samples"),
        ({"samples": {}}, ValueError, "non-empty"),
        ({"eline_fluxes": np.ones(2), "eline_names": ["Halpha"]}, DataError, "eline_names"),
    ],
)
def test_bad_arguments_are_rejected_by_name(kwargs, error, match):
    args = {"samples": {"a": np.zeros(10)}, "params": {"a": 0.0}, "method": "nuts", "wall_time_s": 1.0}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        Posterior(**args)


def test_samples_and_params_become_numpy(sampled):
    assert sampled.n_samples == 20_000 and sampled.has_samples
    assert isinstance(sampled.params["c0"], float)
    assert sampled.params["psd_xi"].shape == (3,)


# --- derived -----------------------------------------------------------------------------
def test_derived_without_model_is_a_runtime_error():
    post = Posterior(None, {"c0": 1.0, "c1": 0.0}, "map", 0.1)
    with pytest.raises(RuntimeError, match="forward model"):
        post.derived


def test_derived_is_per_draw_and_cached(sampled):
    first = sampled.derived
    assert first["stellar_mass"].shape == (20_000,)
    np.testing.assert_allclose(first["stellar_mass"], 1e10 * np.exp(sampled.samples["c0"] - 1))
    assert sampled.derived is first
    assert sampled._model.calls["derived_quantities"] == 1


def test_derived_of_point_estimate_is_scalar(point):
    assert point.derived["sfr_100myr"] == pytest.approx(np.exp(-0.5))
    assert isinstance(point.derived["sfr_100myr"], float)


# --- convergence diagnostics -------------------------------------------------------------
def test_autocorrelation_per_parameter(sampled):
    acf = sampled.autocorrelation()
    assert acf["c0"].shape == (10_000,) and acf["c0"][0] == pytest.approx(1.0)
    assert acf["c0"][1] == pytest.approx(0.5, abs=0.05)
    np.testing.assert_array_equal(acf["redshift"], 0.0)
    assert acf["psd_xi"].shape == (10_000, 3)


def test_autocorrelation_time_and_ess_follow_the_ar1_chains(sampled):
    tau = sampled.autocorrelation_time()
    assert tau["c1"]["tau_max"] == pytest.approx(9.0, rel=0.25)  # (1 + 0.8)/(1 − 0.8)
    assert np.isnan(tau["redshift"]["tau_max"])
    ess = sampled.effective_sample_size()
    assert ess["c0"] == pytest.approx(20_000 / 3, rel=0.2)
    assert "redshift" not in ess
    assert ess["psd_xi"].shape == (3,)


def test_rhat_skips_latent_field_and_fixed_parameters(sampled):
    r = sampled.rhat()
    assert set(r) == {"c0", "c1"}
    assert all(v < 1.01 for v in r.values())
    assert sampled.rhat(exclude_prefixes=())["psd_xi"].shape == (3,)


def test_rhat_flags_chains_in_different_modes():
    rng = np.random.default_rng(3)
    draws = np.concatenate([rng.normal(-3, 1, 500), rng.normal(3, 1, 500)])
    post = Posterior({"x": draws}, {"x": 0.0}, "mcmc_nuts", 1.0, n_chains=2)
    assert post.rhat()["x"] > 1.1


def test_check_convergence_flags_short_chains():
    slow = ar1(0.995, 400, 4)
    post = Posterior({"slow": slow, "fast": ar1(0.0, 400, 5)}, {"slow": 0.0, "fast": 0.0}, "mcmc_nuts", 1.0)
    conv = post.check_convergence()
    assert not conv["all_converged"]
    assert [w.split(":")[0] for w in conv["warnings"]] == ["slow"]


@pytest.mark.parametrize("k, flagged", [(1.3, True), (0.5, False), (float("nan"), False)])
def test_check_convergence_reads_an_approximations_pareto_k(k, flagged):
    # independent draws pass the autocorrelation test; k̂ > 0.7 says they miss the posterior
    draws = np.random.default_rng(6).normal(size=1000)
    post = Posterior({"x": draws}, {"x": 0.0}, "mgvi", 1.0, diagnostics={"pareto_k": k})
    conv = post.check_convergence()
    assert conv["all_converged"] is (not flagged)
    assert any("Pareto k̂ = 1.30" in w for w in conv["warnings"]) is flagged


def test_check_convergence_passes_long_chains(sampled):
    conv = sampled.check_convergence()
    assert conv["all_converged"], conv["warnings"]
    assert conv["constant"] == ["redshift"]


def test_point_estimate_has_no_chain_diagnostics(point):
    assert "no samples" in point.ess_table()
    for method in (point.autocorrelation, point.effective_sample_size, point.check_convergence, point.rhat):
        with pytest.raises(ValueError, match="point estimate"):
            method()


def test_ess_table_lists_scalar_parameters(sampled):
    table = sampled.ess_table()
    assert "c0" in table and "c1" in table and "fixed" in table
    assert "2 chain(s)" in table


# --- emission lines ----------------------------------------------------------------------
LINE_NAMES = ["Hbeta", "[OIII]5007", "Halpha", "[NII]6584"]
LINE_WAVES = [4861.33, 5006.84, 6562.80, 6583.45]


def line_posterior(fluxes, model=None):
    fluxes = np.asarray(fluxes, float)
    samples = None if fluxes.ndim == 1 else {"c0": np.linspace(1.5, 2.5, fluxes.shape[0]),
                                             "c1": np.zeros(fluxes.shape[0])}
    return Posterior(samples, {"c0": 2.0, "c1": 0.0}, "map" if samples is None else "vi", 1.0,
                     eline_fluxes=fluxes, eline_names=LINE_NAMES, eline_wavelengths_aa=LINE_WAVES,
                     model=model)


def test_line_fluxes_are_median_and_68_percent_interval():
    rng = np.random.default_rng(6)
    fluxes = np.abs(rng.normal([1.0, 2.0, 3.0, 1.0], 0.1, size=(5000, 4)))
    med, lo, hi = line_posterior(fluxes).line_fluxes()["Halpha"]
    assert med == pytest.approx(3.0, abs=0.01)
    assert hi - lo == pytest.approx(0.2, rel=0.05)


def test_balmer_decrement_and_av_of_a_point_estimate():
    ebv = 0.3
    ratio = 2.86 * 10 ** (0.4 * ebv * (3.61 - 2.53))
    post = line_posterior([1.0, 2.0, ratio, 0.5])
    assert post.balmer_decrement() == pytest.approx((ratio,) * 3)
    assert post.av_from_balmer() == pytest.approx((4.05 * ebv,) * 3)


def test_bpt_nii_gives_log_ratios_and_nan_for_non_detections():
    fluxes = np.array([[1.0, 3.0, 4.0, 0.4], [1.0, -1.0, 4.0, 0.4]])
    x, y = line_posterior(fluxes).bpt_nii()
    assert x[0] == pytest.approx(-1.0) and y[0] == pytest.approx(np.log10(3.0))
    assert np.isnan(y[1])


def test_line_diagnostics_without_lines_are_explained(point):
    with pytest.raises(ValueError, match="eline_mode"):
        point.line_fluxes()
    with pytest.raises(ValueError, match="eline_mode"):
        point.balmer_decrement()


def test_equivalent_widths_from_the_model_sed():
    post = line_posterior(np.ones((200, 4)), model=FakeModel())
    widths = post.equivalent_widths()
    c0 = post.samples["c0"]
    for name in ("Hbeta", "[OIII]5007", "Halpha"):
        expected = SED_LINES[name][1] * np.percentile(c0, [50, 16, 84])
        np.testing.assert_allclose(widths[name], expected, rtol=1e-3)
    assert set(widths) == set(LINE_NAMES)


def test_equivalent_widths_need_a_model():
    with pytest.raises(RuntimeError, match="forward model"):
        line_posterior(np.ones(4)).equivalent_widths()


def test_sed_components_pass_through(point):
    parts = point.sed_components()
    assert {"wavelength", "sed_total", "sed_nebular"} <= set(parts)
    assert parts["sed_total"].shape == parts["wavelength"].shape


# --- resampling and the posterior predictive -----------------------------------------------
def test_resample_draws_existing_samples(sampled):
    drawn = sampled.resample(jax.random.PRNGKey(1), 50)
    assert drawn["psd_xi"].shape == (50, 3)
    assert np.all(np.isin(drawn["c0"], sampled.samples["c0"]))


def test_resample_of_point_estimate_repeats_it(point):
    drawn = point.resample(jax.random.PRNGKey(0), 4)
    np.testing.assert_array_equal(drawn["c0"], np.full(4, 2.0))


def test_resample_rejects_bad_n(point):
    with pytest.raises(ValueError, match="n must be"):
        point.resample(jax.random.PRNGKey(0), 0)


def test_chi2_of_map_is_near_n_data_minus_n_free():
    model = FakeModel(n_band=200)
    data, noise = mock_photometry(model)
    mean, _ = model.exact_posterior(data, noise)
    post = Posterior(None, {"c0": mean[0], "c1": mean[1]}, "map", 0.1, model=model,
                     fitter=FakeFitter(data, noise))
    ppc = post.posterior_predictive(data)
    assert ppc["chi2"].shape == (1,) and ppc["predictions"].shape == (1, 200)
    assert ppc["chi2_median"] == pytest.approx(200 - 2, rel=0.3)


def test_posterior_draws_add_chi2_of_n_free_to_the_minimum():
    model = FakeModel(n_band=200)
    data, noise = mock_photometry(model)
    post = gaussian_posterior(model, data, noise)
    ppc = post.posterior_predictive(data)
    mean, _ = model.exact_posterior(data, noise)
    chi2_min = np.sum(((data - model.predict_photometry({"c0": mean[0], "c1": mean[1]})) / noise) ** 2)
    assert ppc["chi2_median"] == pytest.approx(200 - 2, rel=0.3)
    assert ppc["chi2_median"] - chi2_min == pytest.approx(2 * np.log(2), abs=0.15)  # median of χ²₂


def test_masked_data_do_not_count_in_chi2():
    model = FakeModel(n_band=20)
    data, noise = mock_photometry(model)
    mask = np.ones(20, bool)
    mask[:5] = False
    bad = data.copy()
    bad[:5] += 1e3
    post = Posterior(None, {"c0": 2.0, "c1": -0.5}, "map", 0.1, model=model,
                     fitter=FakeFitter(bad, noise, mask=mask))
    ppc = post.posterior_predictive(bad)
    expected = np.sum(((data[5:] - model.predict_photometry({"c0": 2.0, "c1": -0.5})[5:]) / noise[5:]) ** 2)
    assert ppc["chi2"][0] == pytest.approx(expected)
    assert ppc["n_data"] == 15


def test_posterior_predictive_subsamples_with_a_key():
    model = FakeModel(n_band=10)
    data, noise = mock_photometry(model)
    post = gaussian_posterior(model, data, noise, n_samples=500)
    ppc = post.posterior_predictive(data, n_samples=30, key=jax.random.PRNGKey(3))
    assert ppc["residuals"].shape == (30, 10)


def test_posterior_predictive_needs_a_fitter(point):
    with pytest.raises(RuntimeError, match="Fitter"):
        point.posterior_predictive(np.ones(12))


def test_posterior_predictive_rejects_data_of_wrong_shape(point):
    point._fitter = FakeFitter(np.ones(12), np.ones(12))
    with pytest.raises(DataError, match="shape"):
        point.posterior_predictive(np.ones(11))


# --- refits -------------------------------------------------------------------------------
def test_refine_warm_starts_the_fitter(point):
    point._fitter = FakeFitter(np.ones(12), np.ones(12), result=lambda method, kw: ("ran", method))
    assert point.refine("mcmc_raytrace", n_samples=10) == ("ran", "mcmc_raytrace")
    assert point._fitter.calls == [{"method": "mcmc_raytrace", "init_from": point, "n_samples": 10}]


def test_refine_needs_a_fitter(point):
    with pytest.raises(RuntimeError, match="Fitter"):
        point.refine()


def check_run(shift=0.0, n_free=2):
    """A fitter whose MCMC returns N(shift, 1) draws for parameters p0..p{n_free-1}."""
    def result(method, kwargs):
        rng = np.random.default_rng(11)
        draws = {f"p{i}": rng.normal(shift, 1, kwargs["n_samples"]) for i in range(n_free)}
        return Posterior(draws, {k: shift for k in draws}, method, 1.0)
    return FakeFitter(np.ones(3), np.ones(3), result=result)


def vi_result(n_free=2, fitter=None):
    rng = np.random.default_rng(12)
    draws = {f"p{i}": rng.normal(0, 1, 1000) for i in range(n_free)}
    draws["redshift"] = np.ones(1000)
    return Posterior(draws, {k: 0.0 for k in draws}, "vi", 1.0, fitter=fitter)


def test_validate_passes_when_mcmc_agrees():
    post = vi_result()
    post._fitter = check_run()
    report = post.validate(n_steps=400)
    assert report["passed"]
    assert set(report["overlap"]) == {"p0", "p1"} and min(report["overlap"].values()) > 0.7
    assert post._fitter.calls[0]["method"] == "mcmc_nuts"
    assert post._fitter.calls[0]["n_samples"] == 400 and post._fitter.calls[0]["init_from"] is post
    assert post._fitter.calls[0]["n_chains"] == 4


def test_validate_takes_the_callers_chain_count():
    post = vi_result()
    post._fitter = check_run()
    post.validate(n_steps=100, n_chains=1)
    assert post._fitter.calls[0]["n_chains"] == 1


def test_validate_fails_when_mcmc_disagrees():
    post = vi_result()
    post._fitter = check_run(shift=3.0)
    report = post.validate()
    assert not report["passed"] and max(report["overlap"].values()) < 0.5


def test_validate_uses_ray_tracing_above_twenty_dimensions():
    post = vi_result(n_free=21)
    post._fitter = check_run(n_free=21)
    post.validate(n_steps=50)
    assert post._fitter.calls[0]["method"] == "mcmc_raytrace"


def test_validate_of_a_point_estimate_uses_its_rank_in_the_mcmc_marginal():
    post = Posterior(None, {"p0": 0.0, "p1": 2.5}, "map", 0.1, fitter=check_run())
    overlap = post.validate(n_steps=2000)["overlap"]
    assert overlap["p0"] == pytest.approx(1.0, abs=0.05)
    assert overlap["p1"] == pytest.approx(2 * 0.0062, abs=0.01)  # 2·(1 − Φ(2.5))


# --- conversions ---------------------------------------------------------------------------
def test_param_spec_of_point_estimate_is_fixed(point):
    spec = point.to_param_spec()
    assert isinstance(spec, Parameters)
    assert spec["c0"] == Fixed(2.0) and spec.n_free == 0


def test_param_spec_of_draws_is_truncated_normal(sampled):
    spec = sampled.to_param_spec()
    c0 = sampled.samples["c0"]
    assert spec["c0"] == TruncatedNormal(np.median(c0), np.std(c0), c0.min(), c0.max())
    assert spec["redshift"] == Fixed(1.0)
    assert "psd_xi" not in spec


def test_to_arviz_passes_arviz_summary(sampled):
    tree = sampled.to_arviz()
    assert tree.posterior["c0"].shape == (2, 10_000)
    assert "psd_xi" not in tree.posterior and "redshift" not in tree.posterior
    table = az.summary(tree)
    assert {"c0", "c1"} <= set(table.index)
    assert float(table.loc["c1", "r_hat"]) < 1.01


def test_to_arviz_of_point_estimate_is_an_error(point):
    with pytest.raises(ValueError, match="point estimate"):
        point.to_arviz()


def test_summary_of_sampler_shows_intervals_ess_and_diagnostics(sampled):
    text = sampled.summary_str()
    assert "mcmc_nuts" in text and "20000 samples (2 chains)" in text and "12.50 s" in text
    row = next(line for line in text.splitlines() if line.startswith("c0"))
    assert len(row.split()) == 5  # name, median, 16%, 84%, ESS
    assert "acceptance_rate=0.81" in text and "psd_xi" in text
    assert text == sampled.summary_table()


def test_summary_of_map_and_of_evidence(point):
    text = point.summary_str()
    assert "MAP" in text and "final loss: 2.5 after 3 steps" in text
    nss = Posterior({"a": np.zeros(10)}, {"a": 0.0}, "nss", 2.0, log_evidence=-12.5, log_evidence_err=0.1)
    assert "log evidence: -12.5 ± 0.1" in nss.summary_str()
