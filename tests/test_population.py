"""PopulationFitter / PopulationPosterior: the joint density, diagnostics aggregation, storage, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tengri  # noqa: F401  (float64)
from tengri.errors import ConfigError, DataError, ParameterError
from tengri.posterior.population import SHARED_NAMES, PopulationPosterior

FILTERS = ["sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "twomass_J"]
SIGMA_PRIOR, TAU_PRIOR = (0.05, 0.8), (20.0, 1000.0)


def factory(sigma, tau):
    from tengri import Fixed, Parameters, Photometry, SEDModel

    params = Parameters(redshift=Fixed(1.0), metallicity=Fixed(1.0), av=Fixed(0.3),
                        sfh_field_psd_sigma=Fixed(sigma), sfh_field_psd_tau_myr=Fixed(tau))
    sfh = {"family": "stochastic", "n_grid": 8, "psd": "drw", "mean": "delayed"}
    return SEDModel(params, Photometry(FILTERS), sfh=sfh, dust="calzetti", nebular=False)


@pytest.fixture(scope="module")
def galaxies():
    model = factory(0.3, 300.0)
    draws = model.parameters.sample(jax.random.PRNGKey(1), 4, {"age_of_universe": 5.9})
    flux = np.asarray(model.predict_photometry(draws))
    return [{"flux_obs": f, "noise": 0.05 * f} for f in flux]


@pytest.fixture(scope="module")
def population(galaxies):
    from tengri.inference.population import PopulationFitter

    return PopulationFitter(factory, galaxies, SIGMA_PRIOR, TAU_PRIOR)


def test_layout_and_exports(population):
    from tengri import PopulationFitter, PopulationPosterior as Exported

    assert isinstance(population, PopulationFitter) and Exported is PopulationPosterior
    d = len(population.galaxy_names)
    assert d == 16 + 3  # ξ (2 n_grid) + age, τ, mass of the mean SFH
    assert population.n_dim == 2 + 4 * d == len(population.names)
    assert population.names[:2] == SHARED_NAMES and population.names[2].startswith("g0000/")
    assert population.vmapped


def test_joint_density_is_the_sum_of_single_galaxy_fitters_plus_priors(population, galaxies):
    from tengri import Fitter
    from tengri.inference.population import shared_physical

    z = np.random.default_rng(3).normal(size=population.n_dim)
    sigma, tau = (float(v) for v in shared_physical(jnp.asarray(z[:2]), population.problem.data_args["shared_hyper"]))
    assert SIGMA_PRIOR[0] < sigma < SIGMA_PRIOR[1] and TAU_PRIOR[0] < tau < TAU_PRIOR[1]
    model = factory(sigma, tau)  # the hyperparameters Fixed at this point's values
    d = len(population.galaxy_names)
    expected = -0.5 * np.sum(z**2)
    for i, galaxy in enumerate(galaxies):
        prob = Fitter(model, galaxy["flux_obs"], galaxy["noise"]).problem
        expected += float(prob.log_likelihood(jnp.asarray(z[2 + i * d: 2 + (i + 1) * d]), prob.data_args))
    assert float(jax.jit(population.log_density)(z)) == pytest.approx(expected, rel=1e-10)


def test_gradients_wrt_sigma_and_tau_are_finite_and_nonzero(population):
    z = jnp.asarray(np.random.default_rng(4).normal(size=population.n_dim))
    grad = np.asarray(jax.jit(jax.grad(population.log_density))(z))
    assert np.all(np.isfinite(grad))
    assert grad[0] != 0.0 and grad[1] != 0.0


def _stalled_posterior(n_galaxies=8, n_draws=400):
    """Two chains per galaxy that mix, except galaxy 3 whose chains sit at different values."""
    rng = np.random.default_rng(0)
    shared = {name: rng.normal(1.0, 0.1, 2 * n_draws) for name in SHARED_NAMES}
    individual = []
    for g in range(n_galaxies):
        mass = rng.normal(10.0, 0.2, 2 * n_draws)
        if g == 3:
            mass = np.r_[np.full(n_draws, 9.5), np.full(n_draws, 10.5)] + rng.normal(0, 1e-3, 2 * n_draws)
        individual.append({"stellar_mass": mass, "psd_xi_000": rng.normal(size=2 * n_draws),
                           "redshift": np.full(2 * n_draws, 1.0)})
    return PopulationPosterior(shared, None, individual, method="mcmc", wall_time_s=1.5,
                               diagnostics={"acceptance_rate": 0.8, "n_chains": 2}, n_chains=2)


def test_per_galaxy_aggregation_flags_one_stalled_galaxy():
    post = _stalled_posterior()
    diag = post.diagnostics()
    assert set(diag["shared"]) == set(SHARED_NAMES)
    assert all(abs(v["rhat"] - 1) < 0.02 for v in diag["shared"].values())
    mass = diag["per_galaxy"]["stellar_mass"]
    assert mass["n_galaxies"] == 8
    assert mass["rhat_max"] > 10 and mass["rhat_p50"] < 1.02  # the signature of one stuck galaxy
    assert mass["ess_min"] < 0.05 * mass["ess_p50"]
    assert "psd_xi_000" not in diag["per_galaxy"]  # excluded by default
    assert "redshift" not in diag["per_galaxy"]  # constant: dropped
    assert "psd_xi_000" in post.diagnostics(exclude_prefixes=())["per_galaxy"]
    assert post.diagnostics["acceptance_rate"] == 0.8  # still the method's dict


def test_summary_individual_and_plot():
    post = _stalled_posterior()
    summary = post.summary()
    for name in SHARED_NAMES:
        s = summary[name]
        assert s["lo68"] < s["median"] < s["hi68"]
        assert post.shared_params[name] == pytest.approx(np.mean(post.shared_samples[name]))
    assert len(post.individual) == 8 and post.individual[0].params["stellar_mass"] == pytest.approx(
        np.mean(post.individual_samples[0]["stellar_mass"]))
    import matplotlib

    matplotlib.use("Agg")
    axes = post.plot_population(params=("sfh_field_psd_sigma", "psd_tau_myr"))
    assert axes.shape == (2, 2)
    with pytest.raises(ParameterError, match="unknown shared parameter"):
        post.plot_population(params=("av",))


def test_save_load_round_trip(tmp_path):
    post = _stalled_posterior()
    path = tmp_path / "pop.h5"
    post.save(path)
    back = PopulationPosterior.load(path)
    assert back.method == post.method and back.n_chains == 2 and back.wall_time_s == 1.5
    for name in SHARED_NAMES:
        np.testing.assert_array_equal(back.shared_samples[name], post.shared_samples[name])
        assert back.shared_params[name] == post.shared_params[name]
    assert len(back.individual_samples) == 8
    np.testing.assert_array_equal(back.individual_samples[3]["stellar_mass"], post.individual_samples[3]["stellar_mass"])
    assert dict(back.diagnostics) == dict(post.diagnostics)
    assert back.diagnostics() == post.diagnostics()
    assert [p.name for p in tmp_path.iterdir()] == ["pop.h5"]  # no temporary left behind


def test_bad_input_is_rejected_with_the_argument_named(galaxies):
    from tengri.inference.population import PopulationFitter

    with pytest.raises(DataError, match="empty"):
        PopulationFitter(factory, [], SIGMA_PRIOR, TAU_PRIOR)
    with pytest.raises(ParameterError, match="psd_sigma_prior"):
        PopulationFitter(factory, galaxies, (0.8, 0.05), TAU_PRIOR)
    with pytest.raises(ParameterError, match="psd_tau_prior"):
        PopulationFitter(factory, galaxies, SIGMA_PRIOR, (100.0,))
    with pytest.raises(DataError, match="noise"):
        PopulationFitter(factory, [{"flux_obs": galaxies[0]["flux_obs"]}], SIGMA_PRIOR, TAU_PRIOR)
    with pytest.raises(DataError, match=r"galaxies\[1\]"):
        bad = [galaxies[0], {"flux_obs": galaxies[1]["flux_obs"], "noise": galaxies[1]["noise"][:3]}]
        PopulationFitter(factory, bad, SIGMA_PRIOR, TAU_PRIOR)
    with pytest.raises(DataError, match="shared"):
        PopulationFitter(factory, [{**galaxies[0], "sfh_field_psd_sigma": 0.3}], SIGMA_PRIOR, TAU_PRIOR)
    with pytest.raises(ParameterError, match="model_factory"):
        PopulationFitter("not callable", galaxies, SIGMA_PRIOR, TAU_PRIOR)
    with pytest.raises(DataError, match="shared_samples"):
        PopulationPosterior({"sfh_field_psd_sigma": np.ones(4), "sfh_field_psd_tau_myr": np.ones(5)})


def test_run_rejects_unknown_methods_and_options(population):
    with pytest.raises(ParameterError, match="method"):
        population.run("nested")
    with pytest.raises(ParameterError, match="n_iterations"):
        population.run("evi", n_iterations=0)
    with pytest.raises(ParameterError, match="gauss_newton_steps"):
        population.run("evi", n_iterations=100)  # the Laplace grid has no Adam steps
    with pytest.raises(ParameterError, match="n_chains"):
        population.run("gibbs", n_chains=1)
    with pytest.raises(ParameterError, match="n_chains"):
        population.run("mcmc", n_chains=1)
    with pytest.raises(ParameterError, match="n_chains"):
        population.run("raytrace", n_chains=1)
    with pytest.raises(ParameterError, match="n_shared_steps and n_drag_moves"):
        population.run("gibbs", n_shared_steps=0)
    with pytest.raises(ParameterError, match="n_drag_stages"):
        population.run("gibbs", n_drag_moves=1, n_drag_stages=0)
    with pytest.raises(ParameterError, match="conditional"):
        population.run("gibbs", conditional="exact")
    with pytest.raises(ValueError, match="step_size"):
        population.run("gibbs", step_size=0.1)
    with pytest.raises(ParameterError, match="init"):
        population.run("gibbs", init="map")  # 'gibbs' always starts from the Laplace grid
    with pytest.raises(ParameterError, match="init"):
        population.run("mcmc", init="map")
    with pytest.raises(ParameterError, match="sample_hmc"):
        population.run("mcmc", sample_hmc="yes")
    with pytest.raises(ParameterError, match="step_jitter"):
        population.run("mcmc", step_jitter=(1.2, 0.8))
    with pytest.raises(ParameterError, match="step_jitter"):
        population.run("mcmc", step_jitter=0.5)
    with pytest.raises(ValueError, match="rank_of"):
        population.run("evi", rank_of=3)
    with pytest.raises(ParameterError, match="objective"):
        population.run("evi", objective="iwae")
    with pytest.raises(ParameterError, match="family"):
        population.run("evi", objective="iw", family="lowrank")
    with pytest.raises(ParameterError, match="n_importance"):
        population.run("evi", objective="iw", n_importance=0)


@pytest.mark.slow
@pytest.mark.full
def test_evi_run_returns_a_population_posterior(population):
    # the objective "elbo" path (Adam on a Gaussian q); its compilation makes this test slow
    post = population.run("evi", objective="elbo", n_iterations=20, n_posterior_samples=64, map_starts=1, map_steps=50)
    assert post.shared_samples["sfh_field_psd_sigma"].shape == (64,)
    assert len(post.individual_samples) == 4 and post.individual_samples[0]["stellar_mass"].shape == (64,)
    assert np.all(np.isfinite(post.diagnostics["neg_elbo_history"]))


def test_arrow_family_draws_have_the_block_arrow_covariance():
    from tengri.inference.population import _arrow_blocks, _arrow_draws, _arrow_init, _arrow_logdet

    rng = np.random.default_rng(5)
    n_galaxies, d = 3, 4
    chol = jax.tree.map(lambda a: a + 0.3 * rng.normal(size=a.shape), _arrow_init(n_galaxies, d, 0.5))
    shared, galaxy = (np.asarray(b) for b in _arrow_blocks(chol))
    dense = np.zeros((2 + n_galaxies * d,) * 2)
    dense[:2, :2] = shared
    for g in range(n_galaxies):
        rows = slice(2 + g * d, 2 + (g + 1) * d)
        dense[rows, :2] = np.asarray(chol["coupling"][g])
        dense[rows, rows] = galaxy[g]
    mean = jnp.asarray(rng.normal(size=dense.shape[0]))
    draws = np.asarray(_arrow_draws(jax.random.PRNGKey(0), mean, chol, 200_000))
    np.testing.assert_allclose(np.cov(draws.T), dense @ dense.T, atol=0.02)
    assert float(_arrow_logdet(chol)) == pytest.approx(np.linalg.slogdet(dense @ dense.T)[1], rel=1e-10)


def test_evi_default_is_the_laplace_grid_and_its_draws_stay_in_their_cells(population):
    post = population.run("evi", gauss_newton_steps=3, n_sigma=3, n_tau=2, n_posterior_samples=200, map_starts=1,
                          map_steps=30)
    diag = post.diagnostics
    assert diag["objective"] == "laplace" and post.method == "Hierarchical EVI (Laplace grid)"
    sigma, tau = post.shared_samples["sfh_field_psd_sigma"], post.shared_samples["sfh_field_psd_tau_myr"]
    assert sigma.shape == (200,) and np.all((sigma > SIGMA_PRIOR[0]) & (sigma < SIGMA_PRIOR[1]))
    assert np.all((tau > TAU_PRIOR[0]) & (tau < TAU_PRIOR[1]))
    assert diag["grid_log_evidence"].shape == (3, 2) and np.all(np.isfinite(diag["grid_log_evidence"]))
    # the drawn σ come from the cells in proportion to the grid's masses (a 3-cell check)
    edges = np.linspace(*SIGMA_PRIOR, 4)
    mass = np.exp(diag["grid_log_evidence"] - diag["grid_log_evidence"].max()) * np.diff(
        np.geomspace(*TAU_PRIOR, 3))[None, :]
    expected = mass.sum(1) / mass.sum()
    observed = np.histogram(sigma, edges)[0] / sigma.size
    np.testing.assert_allclose(observed, expected, atol=0.1)
    assert len(post.individual_samples) == 4 and np.all(np.isfinite(post.individual_samples[0]["stellar_mass"]))


def test_evi_start_is_each_galaxys_mode_at_the_grid_median_hyperparameters(population):
    from scipy.special import ndtri

    point = population.initialize_evi(jax.random.PRNGKey(3), map_starts=1, map_steps=30, n_sigma=3, n_tau=2,
                                      gauss_newton_steps=15, n_posterior_samples=200)
    diag = population.evi_diagnostics
    assert point.shape == (population.n_dim,) and population.evi_point is point
    assert SIGMA_PRIOR[0] < diag["init_sigma"] < SIGMA_PRIOR[1] and TAU_PRIOR[0] < diag["init_tau_myr"] < TAU_PRIOR[1]
    expected_phi = ndtri((diag["init_sigma"] - SIGMA_PRIOR[0]) / (SIGMA_PRIOR[1] - SIGMA_PRIOR[0]))
    assert point[0] == pytest.approx(expected_phi, abs=1e-9)
    # a mode given (σ, τ): the joint density's gradient in every galaxy's block vanishes there
    grad = np.asarray(jax.grad(population.log_density)(jnp.asarray(point)))
    assert np.max(np.abs(grad[2:])) < 1e-4 * max(1.0, np.max(np.abs(point[2:])))


def test_evi_init_is_rejected_outside_the_samplers(population):
    with pytest.raises(ParameterError, match="init"):
        population.run("evi", init="evi")
    with pytest.raises(ParameterError, match="init"):
        population.run("nuts", init="grid")


@pytest.mark.parametrize("method, options, label", [
    ("gibbs", {}, "Hierarchical MCMC (HMC within Gibbs)"),
    ("mcmc", {"n_drag_moves": 1, "n_drag_stages": 2, "step_jitter": (0.3, 1.3)},
     "Hierarchical MCMC (Ray Tracing within Gibbs)"),
])
def test_gibbs_samplers_start_from_distinct_laplace_grid_draws(population, method, options, label):
    with pytest.warns(UserWarning, match="have not converged: sfh_field_psd_sigma .*ESS"):  # 80 draws < 100
        post = population.run(method, n_iterations=20, n_warmup=10, n_shared_steps=2, n_leapfrog=3, map_starts=1,
                              map_steps=30, init_evi_options={"n_sigma": 3, "n_tau": 2, "gauss_newton_steps": 5,
                                                              "n_posterior_samples": 50}, **options)
    diag = post.diagnostics
    assert post.method == label and post.n_chains == 4
    assert diag["sample_hmc"] == (method == "gibbs")
    if options:
        assert diag["drag_acceptance"].shape == (4,) and np.all(diag["drag_acceptance"] >= 0.0)
    assert tuple(diag["step_jitter"]) == options.get("step_jitter", (0.8, 1.2))
    sigma = post.shared_samples["sfh_field_psd_sigma"]
    # closed interval: a chain this short can sit far out in latent φ, where σ rounds to the edge
    assert sigma.shape == (80,) and np.all((sigma >= SIGMA_PRIOR[0]) & (sigma <= SIGMA_PRIOR[1]))
    assert np.unique(diag["start_sigma"]).size == 4  # four different grid draws
    assert 0.0 < diag["acceptance_rate"] <= 1.0 and 0.0 < diag["galaxy_acceptance_mean"] <= 1.0
    assert population.laplace_table["precision"].shape == (3, 2, 4, len(population.galaxy_names),
                                                           len(population.galaxy_names))
    assert len(post.individual_samples) == 4 and np.all(np.isfinite(post.individual_samples[0]["stellar_mass"]))
    assert set(post.diagnostics()["shared"]) == set(SHARED_NAMES)
