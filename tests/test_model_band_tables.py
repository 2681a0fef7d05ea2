"""The fast photometric likelihood: per-galaxy band tables against the component chain."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import DEMO_FILTERS

from tengri import Fixed, LogUniform, Normal, Parameters, Photometry, SEDModel, Uniform
from tengri.model import band_tables, sed_model
from tengri.physics import attenuation

N_DRAWS = 64


def _model(nebular, dust, fixed_metallicity, redshift=1.0, per_galaxy=(), dust_emission=False, filters=DEMO_FILTERS,
           **extra):
    priors = dict(
        redshift=Fixed(redshift) if isinstance(redshift, float) else redshift,
        stellar_mass=Uniform(8.0, 12.0),
        age_gyr=Uniform(0.01, "age_of_universe"),
        tau_gyr=LogUniform(0.05, 10.0),
        metallicity=Fixed(0.7) if fixed_metallicity else LogUniform(0.01, 2.5),
    )
    if dust != "none":
        priors["dust_eta"] = Uniform(1.0, 2.0)  # young stars see up to 2 A_V: a second attenuation
    if nebular:
        priors["log_u"] = Uniform(-4.0, -1.0) if not fixed_metallicity else Fixed(-2.5)
    priors.update(extra)
    return SEDModel(Parameters(priors), Photometry(filters), sfh="delayed", dust=dust, nebular=nebular,
                    per_galaxy=per_galaxy, dust_emission=dust_emission)


_MODELS = {}


def _shared_model(nebular, dust, fixed_metallicity, per_galaxy=()):
    """One model per configuration for the whole module (building and compiling cost seconds)."""
    key = (nebular, dust, fixed_metallicity, per_galaxy)
    if key not in _MODELS:
        _MODELS[key] = _model(nebular, dust, fixed_metallicity, per_galaxy=per_galaxy)
    return _MODELS[key]


def _problem(model, fixed=None):
    n_band = model.observation.n_data
    return model.build_problem(np.ones(n_band), np.ones(n_band), fixed=fixed)


def _fast_and_chain(model, problem, n=N_DRAWS, seed=0):
    """Band fluxes of n prior draws: the likelihood's (fast) and predict_photometry's (chain)."""
    z = jax.random.normal(jax.random.key(seed), (n, problem.init.size))
    fast = jax.jit(jax.vmap(model._likelihoods["predicted"], (0, None)))(z, problem.data_args)
    theta = jax.vmap(problem.to_physical, (0, None))(z, problem.data_args)
    chain = model.predict_photometry({k: np.asarray(v) for k, v in theta.items()})
    return np.asarray(fast), chain


# every value of each switch, every nebular × dust pair, metallicity free and fixed with each
CONFIGS = [
    (False, "calzetti", False),
    (False, "smc", True),
    (False, "none", False),
    (True, "calzetti", True),
    (True, "smc", False),
    (True, "none", True),
]


@pytest.mark.slow
@pytest.mark.parametrize("nebular,dust,fixed_metallicity", CONFIGS)
def test_fast_photometry_equals_chain_in_every_band(nebular, dust, fixed_metallicity):
    model = _shared_model(nebular, dust, fixed_metallicity)
    assert model.uses_band_tables
    fast, chain = _fast_and_chain(model, _problem(model))
    assert chain.shape == (N_DRAWS, 12) and np.all(chain > 0)
    assert np.max(np.abs(fast / chain - 1)) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("nebular,dust,fixed_metallicity,emission,extra", [
    (True, "calzetti", False, "dl07", {}),  # DL07 parameters fixed (bagpipes' defaults)
    (False, "smc", True, "mbb", {}),  # free dust temperature
    (True, "calzetti", True, "dl07", {"dust_umin": Uniform(0.5, 10.0)}),
])
def test_fast_photometry_with_dust_emission_equals_chain(nebular, dust, fixed_metallicity, emission, extra):
    # MIPS 24 µm at z = 1 sees mostly the dust re-emission (energy balance)
    model = _model(nebular, dust, fixed_metallicity, dust_emission=emission, filters=DEMO_FILTERS + ["spitzer_mips_24"],
                   **extra)
    assert model.uses_band_tables
    fast, chain = _fast_and_chain(model, _problem(model))
    assert np.all(chain > 0)
    assert np.max(np.abs(fast / chain - 1)) < 1e-4


@pytest.mark.slow
def test_fast_gradients_are_finite_and_agree_with_chain():
    model = _shared_model(True, "smc", False)
    truth = {"redshift": 1.0, "stellar_mass": 10.0, "age_gyr": 2.0, "tau_gyr": 1.0, "metallicity": 0.5,
             "dust_eta": 1.5, "log_u": -2.5, "av": 0.7}
    flux = model.predict_photometry(truth)
    problem = model.build_problem(flux * 1.1, flux * 0.05)
    z = jax.random.normal(jax.random.key(1), (8, problem.init.size))
    fast = jax.jit(jax.vmap(jax.grad(model._likelihoods["log_likelihood"]), (0, None)))(z, problem.data_args)
    chain = jax.jit(jax.vmap(jax.grad(model._chain_likelihoods["log_likelihood"]), (0, None)))(
        z, problem.data_args)
    assert bool(jnp.all(jnp.isfinite(fast)))
    relative = jnp.linalg.norm(fast - chain, axis=1) / jnp.linalg.norm(chain, axis=1)
    assert float(jnp.max(relative)) < 1e-3


@pytest.mark.slow
def test_fast_gradients_with_dust_emission_agree_with_chain():
    model = _model(False, "calzetti", True, dust_emission="mbb", filters=DEMO_FILTERS + ["spitzer_mips_24"])
    truth = {"redshift": 1.0, "stellar_mass": 10.0, "age_gyr": 2.0, "tau_gyr": 1.0, "metallicity": 0.7,
             "dust_eta": 1.5, "av": 0.7, "dust_temperature_k": 35.0, "dust_beta": 1.5}
    flux = model.predict_photometry(truth)
    problem = model.build_problem(flux * 1.1, flux * 0.05)
    z = jax.random.normal(jax.random.key(3), (8, problem.init.size))
    fast = jax.jit(jax.vmap(jax.grad(model._likelihoods["log_likelihood"]), (0, None)))(z, problem.data_args)
    chain = jax.jit(jax.vmap(jax.grad(model._chain_likelihoods["log_likelihood"]), (0, None)))(
        z, problem.data_args)
    assert bool(jnp.all(jnp.isfinite(fast)))
    relative = jnp.linalg.norm(fast - chain, axis=1) / jnp.linalg.norm(chain, axis=1)
    assert float(jnp.max(relative)) < 1e-3


def test_second_galaxy_does_not_retrace_the_likelihood():
    model = _shared_model(True, "calzetti", True, per_galaxy=("redshift", "metallicity"))
    first = _problem(model, fixed={"redshift": 0.8, "metallicity": 0.5})
    second = _problem(model, fixed={"redshift": 2.3, "metallicity": 1.4})
    assert first.log_likelihood is second.log_likelihood
    traces = []

    def counted(z, data_args):
        traces.append(1)
        return first.log_likelihood(z, data_args)

    grad = jax.jit(jax.grad(counted))
    for problem in (first, second):
        assert bool(jnp.all(jnp.isfinite(grad(problem.init, problem.data_args))))
    assert len(traces) == 1


def test_per_galaxy_fixed_metallicity_and_redshift_are_the_galaxys():
    model = _shared_model(True, "calzetti", True, per_galaxy=("redshift", "metallicity"))
    for fixed in ({"redshift": 0.8, "metallicity": 0.3}, {"redshift": 2.3, "metallicity": 1.4}):
        fast, chain = _fast_and_chain(model, _problem(model, fixed=fixed), n=16)
        assert np.max(np.abs(fast / chain - 1)) < 1e-4


def test_tables_need_fixed_redshift_and_a_fixed_shape_bounded_dust_curve():
    assert not _model(False, "calzetti", True, redshift=Uniform(0.5, 2.0)).uses_band_tables
    assert not _model(False, "kriek_conroy", True).uses_band_tables
    assert not _model(False, "calzetti", True, av=Normal(1.0, 0.3)).uses_band_tables


def test_likelihood_without_tables_is_the_chain():
    model = _model(False, "calzetti", True, av=Normal(1.0, 0.3))
    problem = _problem(model)
    assert "band_tables" not in problem.data_args
    z = jnp.full(problem.init.size, 0.3)
    assert float(problem.log_likelihood(z, problem.data_args)) == float(
        model._chain_likelihoods["log_likelihood"](z, problem.data_args))


def test_prepare_warns_when_the_bound_is_large_at_a_galaxys_redshift():
    # sub-bands tuned at z = 0.3; at z = 4 GALEX sees the rest-frame extreme UV, where
    # Cardelli's k is large and spread out
    model = _model(False, "cardelli", True, redshift=0.3, per_galaxy=("redshift",))
    with pytest.warns(RuntimeWarning, match="interpolation error bound"):
        model.prepare({"redshift": 4.0})


# --- the pure functions --------------------------------------------------------------------


def _synthetic(seed=0, n_band=3, n_wave=200, n_src=5):
    rng = np.random.default_rng(seed)
    wave = np.geomspace(1000.0, 20000.0, n_wave)
    w = np.zeros((n_band, n_wave))
    for b, (lo, hi) in enumerate([(1000, 2500), (2000, 6000), (5000, 20000)][:n_band]):
        inside = (wave >= lo) & (wave <= hi)
        w[b, inside] = rng.uniform(0.5, 1.0, inside.sum())
    k = 4.0 * (wave / 5500.0) ** -1.2  # steep in the UV, like the SMC curve
    lnu = rng.uniform(0.1, 1.0, (n_src, n_wave)) * (wave / 5500.0) ** rng.uniform(-3, 1, (n_src, 1))
    return w, k, lnu


def test_sub_bands_split_each_band_into_disjoint_groups_of_its_columns():
    w, k, _ = _synthetic()
    sub = band_tables.partition_sub_bands(w, k, 9, 0.0, 3.0, 13)
    assert len(sub.columns) == 9
    for b in range(w.shape[0]):
        mine = [c for c, owner in zip(sub.columns, sub.band) if owner == b and c.size]
        joined = np.concatenate(mine)
        assert joined.size == np.unique(joined).size
        np.testing.assert_array_equal(np.sort(joined), np.flatnonzero(w[b]))


def test_more_sub_bands_lower_the_error_bound():
    w, k, _ = _synthetic()
    bounds = [band_tables.partition_sub_bands(w, k, q, 0.0, 3.0, 13).error_bound for q in (3, 6, 12)]
    assert bounds[0] > bounds[1] > bounds[2]


@pytest.mark.parametrize("n_sub_bands", [3, 12])
def test_attenuated_sums_are_within_the_error_bound_of_the_exact_sum(n_sub_bands):
    w, k, lnu = _synthetic()
    sub = band_tables.partition_sub_bands(w, k, n_sub_bands, 0.0, 3.0, 13)
    table = jnp.asarray(band_tables.tabulate_sources(lnu, w, sub, k, 13))
    weights = jnp.asarray(np.random.default_rng(1).uniform(0, 1, lnu.shape[0]))
    to_bands = jnp.asarray(np.eye(w.shape[0])[sub.band])

    def fluxes(a):
        per_sub_band = band_tables.attenuated_sums(table, (0,), weights, a, sub.a_min_mag, jnp.asarray(sub.a_step_mag),
                                                   jnp.asarray(sub.kappa))
        return band_tables.sub_bands_to_bands(per_sub_band, to_bands)

    a = np.linspace(0.0, 3.0, 301)
    approx = np.asarray(jax.vmap(fluxes)(jnp.asarray(a)))
    exact = np.einsum("s,sl,bl,al->ab", np.asarray(weights), lnu, w, 10 ** (-0.4 * a[:, None] * k[None, :]))
    error = np.max(np.abs(approx / exact - 1))
    assert error <= sub.error_bound
    assert error > 0.0  # the test can see interpolation errors


def test_dust_free_tables_are_plain_band_fluxes():
    w, _, lnu = _synthetic()
    sub = band_tables.partition_sub_bands(w, None, w.shape[0])
    table = jnp.asarray(band_tables.tabulate_sources(lnu, w, sub, None))
    weights = jnp.ones(lnu.shape[0])
    per_sub_band = band_tables.attenuated_sums(table, (0,), weights, 0.0, 0.0, jnp.ones(3), jnp.zeros(3))
    np.testing.assert_allclose(band_tables.sub_bands_to_bands(per_sub_band, jnp.eye(3)), w @ lnu.sum(0), rtol=1e-13)


def test_interpolate_axis_follows_the_clamped_linear_rule():
    nodes = np.array([0.1, 0.5, 2.0])
    values = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(band_tables.interpolate_axis(values, nodes, 1.25, axis=0)[0],
                               0.5 * values[1] + 0.5 * values[2])
    np.testing.assert_allclose(band_tables.interpolate_axis(values, nodes, 9.0, axis=0)[0], values[2])
    start, weights = band_tables.linear_bracket(jnp.asarray(nodes), 1.25)
    assert int(start) == 1
    np.testing.assert_allclose(np.asarray(weights), [0.5, 0.5])


def test_tables_equal_the_explicit_sum_over_each_sub_bands_columns():
    w, k, lnu = _synthetic(seed=2)
    w[1] = 0.0  # a band without columns keeps an (empty) sub-band
    lnu = lnu.reshape(1, 5, -1)  # a leading (n_z, n_age) layout
    n_nodes = 5
    sub = band_tables.partition_sub_bands(w, k, 10, 0.2, 3.0, n_nodes)
    assert sub.size.sum() == np.count_nonzero(w) and sub.size[sub.band == 1].sum() == 0
    table = band_tables.tabulate_sources(lnu, w, sub, k, n_nodes)
    assert table.shape == (10, n_nodes, 2, 1, 5)
    c = band_tables.MAG_TO_LN
    for q, columns in enumerate(sub.columns):
        a = sub.a_min_mag + sub.a_step_mag[q] * np.arange(n_nodes)
        offset = k[columns] - sub.kappa[q]
        term = w[sub.band[q], columns] * np.exp(-c * a[:, None] * offset) * lnu[0][:, None, columns]  # (src, node, col)
        slope_term = -c * offset * term
        for kind, exact in ((0, term), (1, slope_term)):  # relative to Σ|terms| (the slopes cancel)
            error = np.abs(table[q, :, kind, 0].T - exact.sum(-1))
            np.testing.assert_array_less(error, 1e-12 * np.abs(exact).sum(-1) + 1e-300)


def test_partition_bisection_is_the_plain_one():
    # the batched bisection visits the same midpoints as one-at-a-time bisection
    def plain(threshold, low, high):
        if low >= threshold:
            return low
        for _ in range(14):
            mid = np.sqrt(low * high)
            low, high = (low, mid) if mid >= threshold else (mid, high)
        return high

    for threshold in (1e-7, 3.3e-4, 0.02, 0.5, 0.999):
        def fits(xs, threshold=threshold):
            return np.asarray(xs) >= threshold
        assert band_tables._smallest_fitting(fits, 1e-6, 1.0, steps=14) == plain(threshold, 1e-6, 1.0)


def test_host_band_matrix_equals_the_jitted_one():
    # prepare builds W in numpy, with the IGM evaluated only blueward of Lyα (z = 3: it matters)
    model = _model(False, "calzetti", True, redshift=Uniform(0.5, 4.0))
    for z in (0.7, 3.0):
        host = model._band_matrix_at(z)
        jitted = np.asarray(jax.jit(model._band_matrix)(jnp.asarray(z), model.grids))
        assert np.array_equal(host != 0, jitted != 0)
        np.testing.assert_allclose(host, jitted, rtol=0, atol=1e-13 * jitted.max())
    assert np.any(host[0] < jitted[0].max() * 1e-3)  # GALEX FUV at z = 3 is dimmed by the IGM


def test_one_sub_band_per_band_when_n_sub_bands_is_the_number_of_bands():
    # x = widest then covers each band exactly: rounding must not split one in two
    model = _model(False, "calzetti", True, redshift=Uniform(0.5, 4.0))
    k = np.asarray(attenuation.attenuation_curve("calzetti")(model.wavelength_aa))
    for z in (0.5, 1.6, 3.0):
        w = model._band_matrix_at(z)
        sub = band_tables.partition_sub_bands(w, k, w.shape[0], 0.0, 4.0, 17)
        np.testing.assert_array_equal(sub.band, np.arange(w.shape[0]))
        np.testing.assert_array_equal(sub.size, np.count_nonzero(w, axis=1))


def test_sub_bands_of_a_catalog_redshift_are_tuned_at_typical_redshifts():
    # a catalog column is configured as the placeholder Fixed(0.0): no band matrix exists there
    model = _model(False, "calzetti", True, redshift=0.0, per_galaxy=("redshift",))
    n_sub = model._band_table_plan["n_sub_bands"]
    assert n_sub < 8 * 12  # (tuned at z = 0 every band spanned the whole grid: the largest choice)
    for z in (0.5, 3.0):
        bound = float(model.prepare({"redshift": z})["band_tables"]["error_bound"])
        assert bound <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("dust_emission", [False, "dl07"])
def test_tables_hold_the_nodes_the_priors_reach_and_give_the_same_likelihood(dust_emission, monkeypatch):
    # metallicity 0.1-2 Z☉ reads the BC03 nodes 0.02-2.5 (5 of 7), log U -3.2 to -1.7 the nodes -3.5 to -1.5
    priors = {"metallicity": LogUniform(0.1, 2.0), "log_u": Uniform(-3.2, -1.7)}
    filters = DEMO_FILTERS + (["spitzer_mips_24"] if dust_emission else [])
    cut = _model(True, "calzetti", False, dust_emission=dust_emission, filters=filters, **priors)
    problem = _problem(cut)
    tables = problem.data_args["band_tables"]
    assert tables["stellar"].shape[3] == tables["young"].shape[3] == 5
    assert tables["nebular"].shape[3:5] == (5, 5)
    np.testing.assert_array_equal(tables["ssp_z"], [0.02, 0.2, 0.4, 1.0, 2.5])
    np.testing.assert_array_equal(tables["neb_log_u"], [-3.5, -3.0, -2.5, -2.0, -1.5])
    monkeypatch.setattr(sed_model, "_reachable_nodes", lambda nodes, prior: slice(0, np.size(nodes)))
    whole = _model(True, "calzetti", False, dust_emission=dust_emission, filters=filters, **priors)
    reference = _problem(whole)
    assert reference.data_args["band_tables"]["stellar"].shape[3] == 7
    # prior draws and points pressed against the bounds, one at a time and as a dense vmapped batch
    z = jax.random.normal(jax.random.key(3), (band_tables.DENSE_BATCH_MIN, problem.init.size))
    z = z.at[:8].multiply(8.0)
    one_at_a_time = lambda f: jax.jit(lambda zs, a: jax.lax.map(lambda zi: f(zi, a), zs))  # noqa: E731
    for transform in (one_at_a_time, lambda f: jax.jit(jax.vmap(f, (0, None)))):
        for name in ("predicted", "log_likelihood"):
            got = transform(cut._likelihoods[name])(z, problem.data_args)
            want = transform(whole._likelihoods[name])(z, reference.data_args)
            np.testing.assert_allclose(got, want, rtol=1e-12)
    grad = lambda m, p: jax.jit(jax.vmap(jax.grad(m._likelihoods["log_likelihood"]), (0, None)))(z, p.data_args)  # noqa: E731
    got, want = grad(cut, problem), grad(whole, reference)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * np.max(np.abs(want)))
