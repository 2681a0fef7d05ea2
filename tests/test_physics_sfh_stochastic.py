"""The stochastic SFH: PSDs, the field built from white noise, masses, and the model wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import tengri  # noqa: F401  (float64)
from tengri.errors import ParameterError
from tengri.physics import sfh, sfh_stochastic as st

from conftest import DEMO_FILTERS

REGULATOR = {"sfh_field_psd_tau_in_myr": 4.0, "sfh_field_psd_sigma_gmc": 0.05, "sfh_field_psd_tau_gmc_myr": 2.0}


def _hyper(psd, sigma, tau):
    more = REGULATOR if psd == "extended_regulator" else {}
    return {"sfh_field_psd_sigma": sigma, "sfh_field_psd_tau_myr": tau, **more}


def _continuous(psd, f, hyper):
    if psd == "drw":
        return st.psd_drw(f, hyper["sfh_field_psd_sigma"], hyper["sfh_field_psd_tau_myr"])
    return st.psd_extended_regulator(f, *(hyper[n] for n in st.PSD_PARAMETERS[psd]))


@pytest.mark.parametrize("psd", st.PSD_MODELS)
def test_sampled_psd_is_the_continuous_psd_aliased_onto_the_grid(psd):
    dt, hyper = 1.0, _hyper(psd, 0.3, 8.0)
    f = np.linspace(0.0, 0.5 / dt, 9)
    images = np.arange(-4000, 4001)[:, None] / dt
    brute = np.sum(np.asarray(_continuous(psd, f[None, :] + images, hyper)), axis=0)
    np.testing.assert_allclose(st.sampled_psd(psd, f, dt, hyper), brute, rtol=1e-4)


@pytest.mark.parametrize("psd", st.PSD_MODELS)
def test_periodogram_over_500_draws_matches_the_psd_in_every_band(psd):
    n_grid, dt, hyper = 64, 10.0, _hyper(psd, 0.3, 30.0)
    if psd == "extended_regulator":
        hyper = {**hyper, "sfh_field_psd_tau_in_myr": 40.0, "sfh_field_psd_tau_gmc_myr": 15.0}
    f = st.field_frequencies_per_myr(n_grid, dt)
    psd_values = st.sampled_psd(psd, f, dt, hyper)
    xi = jax.random.normal(jax.random.PRNGKey(7), (500, 2 * n_grid))
    fields = jax.vmap(st.periodic_field_from_xi, in_axes=(0, None, None))(xi, psd_values, dt)
    periodogram = np.mean(np.abs(np.fft.rfft(np.asarray(fields), axis=1)) ** 2, axis=0) * dt / (2 * n_grid)
    bands = np.arange(0, n_grid + 2, 8)  # 8 frequencies a band: the mean of 4000 χ² draws (±1.6 %)
    for lo, hi in zip(bands[:-1], bands[1:]):
        ratio = periodogram[lo:hi].sum() / np.asarray(psd_values)[lo:hi].sum()
        assert abs(ratio - 1) < 0.10, (psd, lo, ratio)
    # and the field's variance is the integral of the PSD (= σ² for the DRW)
    expected_var = np.sum(np.asarray(psd_values) * np.r_[1, 2 * np.ones(n_grid - 1), 1]) / (2 * n_grid * dt)
    assert np.var(np.asarray(fields)) == pytest.approx(expected_var, rel=0.05)


def _simulate(psd, hyper, n_grid, n_series, dt, seed):
    xi = jax.random.normal(jax.random.PRNGKey(seed), (n_series, 2 * n_grid))
    sigma, tau = hyper["sfh_field_psd_sigma"], hyper["sfh_field_psd_tau_myr"]
    more = {k: v for k, v in hyper.items() if k not in ("sfh_field_psd_sigma", "sfh_field_psd_tau_myr")}
    fn = jax.jit(jax.vmap(lambda x: st.log_sfr_field_dex(x, sigma, tau, dt, psd, **more)))
    return np.asarray(fn(xi))


def test_drw_sigma_and_tau_are_recovered_by_maximum_likelihood():
    # exact AR(1) likelihood of the sampled DRW on 64 independent series of 512 cells
    dt, sigma, tau = 1.0, 0.3, 5.0
    x = _simulate("drw", _hyper("drw", sigma, tau), 512, 64, dt, seed=11)

    def nll(p):
        s, t = np.exp(p)
        rho = np.exp(-dt / t)
        innov = s**2 * (1 - rho**2)
        r = x[:, 1:] - rho * x[:, :-1]
        return (np.sum(np.log(s**2) + x[:, 0] ** 2 / s**2)
                + np.sum(np.log(innov) + r**2 / innov))

    fit = optimize.minimize(nll, np.log([0.2, 2.0]), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-6})
    s_hat, t_hat = np.exp(fit.x)
    assert s_hat == pytest.approx(sigma, rel=0.05)
    assert t_hat == pytest.approx(tau, rel=0.10)


def test_extended_regulator_sigma_and_tau_eq_are_recovered_by_maximum_likelihood():
    # Gaussian likelihood with the model's covariance (τ_in, σ_gmc, τ_gmc known), 200 series of 96 cells
    dt, sigma, tau_eq = 1.0, 0.3, 8.0
    x = _simulate("extended_regulator", _hyper("extended_regulator", sigma, tau_eq), 96, 200, dt, seed=12)
    lag = np.abs(np.subtract.outer(np.arange(96), np.arange(96))) * dt
    t_in, s_gmc, t_gmc = (REGULATOR[k] for k in ("sfh_field_psd_tau_in_myr", "sfh_field_psd_sigma_gmc",
                                                  "sfh_field_psd_tau_gmc_myr"))

    def nll(p):
        s, t_eq = np.exp(p)
        cov = s**2 * (t_in * np.exp(-lag / t_in) - t_eq * np.exp(-lag / t_eq)) / (t_in - t_eq)
        cov = cov + s_gmc**2 * np.exp(-lag / t_gmc)
        chol = np.linalg.cholesky(cov)
        white = np.linalg.solve(chol, x.T)
        return x.shape[0] * 2 * np.sum(np.log(np.diag(chol))) + np.sum(white**2)

    fit = optimize.minimize(nll, np.log([0.2, 12.0]), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-6})
    s_hat, t_hat = np.exp(fit.x)
    assert s_hat == pytest.approx(sigma, rel=0.05)
    assert t_hat == pytest.approx(tau_eq, rel=0.10)


def test_field_is_a_differentiable_function_of_xi_sigma_tau_and_step():
    xi = jax.random.normal(jax.random.PRNGKey(0), (32,))

    def total(sigma, tau, dt):
        return jnp.sum(st.log_sfr_field_dex(xi, sigma, tau, dt) ** 2)

    grads = jax.grad(total, argnums=(0, 1, 2))(0.3, 50.0, 20.0)
    assert all(np.isfinite(float(g)) and float(g) != 0.0 for g in grads)
    field = st.log_sfr_field_dex(xi, 0.3, 50.0, 20.0)
    np.testing.assert_allclose(st.log_sfr_field_dex(xi, 0.6, 50.0, 20.0), 2 * field, rtol=1e-12)


def test_bad_settings_and_shapes_are_parameter_errors():
    with pytest.raises(ParameterError, match="psd"):
        st.check_settings(64, "lorentz", "delayed")
    with pytest.raises(ParameterError, match="mean"):
        st.check_settings(64, "drw", "burst")
    with pytest.raises(ParameterError, match="n_grid"):
        st.check_settings(1, "drw", "delayed")
    with pytest.raises(ParameterError, match="xi"):
        st.log_sfr_field_dex(jnp.zeros(7), 0.3, 10.0, 1.0)
    assert st.xi_names(64)[0] == "psd_xi_000" and st.xi_names(64)[-1] == "psd_xi_127"


AGE_U = 5.9e9
MEAN = {"age_gyr": 3.0, "tau_gyr": 0.8}
EDGES = np.concatenate([[0.0], np.logspace(5, 10.3, 120)])


def test_without_fluctuations_the_masses_are_the_mean_sfh():
    @jax.jit
    def both(field):
        windows = jnp.array([1e7, 1e8])
        stochastic = (st.mass_per_age_bin(field, "delayed", MEAN, EDGES, AGE_U),
                      st.average_sfr_msun_per_yr(windows, field, "delayed", MEAN, 1e10, AGE_U),
                      st.mass_weighted_age_gyr(field, "delayed", MEAN, AGE_U))
        parametric = (sfh.mass_formed_per_age_bin("delayed", MEAN, EDGES, AGE_U),
                      sfh.average_sfr_msun_per_yr("delayed", MEAN, windows, 1e10, AGE_U),
                      sfh.mass_weighted_age_gyr("delayed", MEAN, AGE_U))
        return stochastic, parametric

    (frac, sfr, age), (frac_ref, sfr_ref, age_ref) = both(jnp.zeros(48))
    np.testing.assert_allclose(frac, frac_ref, atol=1e-15)
    np.testing.assert_allclose(sfr, sfr_ref, rtol=1e-12)
    assert float(age) == pytest.approx(float(age_ref), rel=1e-5)  # the 4-point rule per cell


def test_masses_are_exact_integrals_of_the_gridded_sfr_and_sum_to_one():
    n_grid = 48
    field = st.log_sfr_field_dex(jax.random.normal(jax.random.PRNGKey(3), (2 * n_grid,)), 0.4, 150.0,
                                 AGE_U / n_grid / 1e6)
    frac = np.asarray(st.mass_per_age_bin(field, "delayed", MEAN, EDGES, AGE_U))
    assert frac.sum() == pytest.approx(1.0, abs=1e-13) and frac.min() >= 0
    # brute force: midpoint rule on pieces that never straddle a cell or bin edge
    cuts = np.unique(np.concatenate([np.linspace(0.0, AGE_U, 100_001), np.minimum(EDGES, AGE_U),
                                     np.arange(n_grid + 1) * AGE_U / n_grid]))
    mid = 0.5 * (cuts[1:] + cuts[:-1])
    sfr = np.asarray(jax.jit(st.sfr_msun_per_yr, static_argnums=2)(mid, field, "delayed", MEAN, 1.0, AGE_U))
    brute = np.bincount(np.searchsorted(EDGES, mid) - 1, sfr * np.diff(cuts), minlength=EDGES.size - 1)
    np.testing.assert_allclose(frac, brute, atol=1e-8)
    # the recent SFRs include the field: the 10-Myr window lies in the first cell
    smooth = st.sfr_msun_per_yr(np.array([5e6]), field, "delayed", MEAN, 1e10, AGE_U, component="smooth")
    total = st.sfr_msun_per_yr(np.array([5e6]), field, "delayed", MEAN, 1e10, AGE_U)
    assert float(total[0] / smooth[0]) == pytest.approx(10 ** float(field[0]), rel=1e-12)


# --- the model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def stochastic_model():
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = Parameters(
        redshift=Fixed(1.0), metallicity=LogUniform(0.1, 2.0), av=Uniform(0.0, 2.0), log_u=Fixed(-2.5),
        sfh_field_psd_sigma=Uniform(0.05, 0.6), sfh_field_psd_tau_myr=LogUniform(20.0, 1000.0),
    )
    sfh_setting = {"family": "stochastic", "n_grid": 8, "psd": "drw", "mean": "delayed"}
    return SEDModel(params, Photometry(DEMO_FILTERS), sfh=sfh_setting, dust="calzetti", nebular=True)


@pytest.fixture(scope="module")
def prior_draws(stochastic_model):
    """20 prior draws and their photometry through the component chain."""
    draws = stochastic_model.parameters.sample(jax.random.PRNGKey(5), 20, {"age_of_universe": 5.9})
    return draws, stochastic_model.predict_photometry(draws)


@pytest.fixture(scope="module")
def stochastic_problem(stochastic_model, prior_draws):
    flux = prior_draws[1][0]
    return stochastic_model.build_problem(flux, 0.05 * flux)


def test_model_takes_the_latent_field_and_psd_hyperparameters(stochastic_model):
    free = stochastic_model.parameters.free_names
    assert sum(n.startswith("psd_xi_") for n in free) == 16
    assert {"sfh_field_psd_sigma", "sfh_field_psd_tau_myr", "age_gyr", "tau_gyr", "stellar_mass"} <= set(free)
    assert stochastic_model.uses_band_tables


def test_gradient_is_finite_for_every_parameter_at_200_prior_draws(stochastic_problem):
    prob = stochastic_problem
    z = jax.random.normal(jax.random.PRNGKey(9), (200, len(prob.names)))
    grads = jax.jit(jax.vmap(jax.grad(prob.log_likelihood), in_axes=(0, None)))(z, prob.data_args)
    assert np.all(np.isfinite(np.asarray(grads)))
    # every latent field value moves the likelihood somewhere (the DC mode only rescales, then renormalises)
    moved = np.any(np.asarray(grads) != 0, axis=0)
    names = np.array(prob.names)
    assert moved[np.char.startswith(names.astype(str), "psd_xi_")][1:].all()


def test_band_tables_give_the_chain_photometry(stochastic_model, stochastic_problem, prior_draws):
    draws, chain = prior_draws
    prob = stochastic_problem
    table = prob.data_args["table"]
    z = jax.vmap(lambda d: stochastic_model.parameters.to_latent(d, table))(draws)
    fast = jax.jit(jax.vmap(stochastic_model._likelihoods["predicted"], in_axes=(0, None)))(z, prob.data_args)
    np.testing.assert_allclose(fast, chain, rtol=1e-6)


def test_predict_sfh_total_is_smooth_times_the_field(stochastic_model):
    values = {k: v[0] for k, v in stochastic_model.parameters.sample(jax.random.PRNGKey(2), 1,
                                                                    {"age_of_universe": 5.9}).items()}
    lookback, total = stochastic_model.predict_sfh(values)
    _, smooth = stochastic_model.predict_sfh(values, lookback_gyr=lookback, component="smooth")
    ratio = np.log10(total[smooth > 0] / smooth[smooth > 0])
    assert ratio.std() > 0.01  # the field is there
    assert np.trapezoid(total, lookback * 1e9) == pytest.approx(10 ** float(values["stellar_mass"]), rel=0.02)
    with pytest.raises(ParameterError, match="component"):
        stochastic_model.predict_sfh(values, component="burst")


@pytest.mark.slow
@pytest.mark.full
def test_map_on_a_stochastic_mock_returns_finite_values(stochastic_model, stochastic_problem):
    from tengri import Fitter

    data_args = stochastic_problem.data_args
    post = Fitter(stochastic_model, np.asarray(data_args["data"]), np.asarray(data_args["noise"])).run(
        "map", n_starts=2, n_steps=100)
    assert set(stochastic_problem.names) <= set(post.params)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in post.params.values())


def test_config_table_selects_the_stochastic_sfh_and_rejects_unknown_settings():
    from tengri.model.config import model_from_config

    cfg = {"model": {"sfh": {"family": "stochastic", "n_grid": 16, "psd": "extended_regulator"}},
           "data": {"filters": DEMO_FILTERS[:3]}, "params": {"redshift": {"fixed": 1.0}}}
    model, _ = model_from_config(cfg)
    assert model.sfh == "stochastic"
    assert model.parameters["sfh_field_psd_tau_in_myr"].is_fixed
    assert sum(n.startswith("psd_xi_") for n in model.parameters.free_names) == 32
    cfg["model"]["sfh"] = {"family": "stochastic", "n_bins": 5}
    with pytest.raises(ParameterError, match="n_bins"):
        model_from_config(cfg)


def test_plot_sfh_draws_the_smooth_component_under_the_total(stochastic_model, prior_draws):
    import matplotlib

    matplotlib.use("Agg")
    from tengri.posterior import Posterior

    draws = {k: np.asarray(v) for k, v in prior_draws[0].items()}
    post = Posterior(draws, {k: v[0] for k, v in draws.items()}, "nuts", 1.0, model=stochastic_model)
    fig = post.plot_sfh(n_draws=10)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "smooth component median" in labels and "SFR median" in labels
    lookback, total = stochastic_model.predict_sfh({k: v[:1] for k, v in draws.items()})
    _, smooth = stochastic_model.predict_sfh({k: v[:1] for k, v in draws.items()}, lookback_gyr=lookback,
                                             component="smooth")
    assert not np.allclose(total, smooth)  # the field is drawn, not flat


def test_fitter_summary_counts_the_latent_field_on_one_line(stochastic_model, prior_draws):
    from tengri import Fitter

    flux = prior_draws[1][0]
    text = Fitter(stochastic_model, flux, 0.05 * flux).summary()
    n_xi = sum(n.startswith("psd_xi") for n in stochastic_model.parameters.free_names)
    assert f"{n_xi} latent ξ grid values" in text
    assert "psd_xi_000…" in text and "\n    psd_xi_001 " not in text
