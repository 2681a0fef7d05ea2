"""CatalogFitter: batched MAP = per-galaxy MAP, one compile for any catalog size,
failed galaxies reported in the summary, summary formats."""

import os
import warnings

import h5py
import jax
import numpy as np
import pytest

from tengri.errors import DataError, ParameterError
from tengri.inference.catalog import CatalogFitter, galaxy_key, method_options

FILTERS = ["sdss_u0", "sdss_g0", "sdss_r0", "sdss_i0", "sdss_z0", "twomass_J"]


@pytest.fixture(scope="module")
def small_model():
    """Delayed-τ + Calzetti, no nebular emission, 6 bands, redshift per galaxy."""
    from tengri import Fixed, LogUniform, Parameters, Photometry, SEDModel, Uniform

    params = Parameters(redshift=Fixed(1.0), stellar_mass=Uniform(8.0, 12.0),
                        age_gyr=Uniform(0.1, "age_of_universe"), tau_gyr=LogUniform(0.05, 10.0),
                        metallicity=Fixed(1.0), av=Uniform(0.0, 2.0))
    return SEDModel(params, Photometry(FILTERS), sfh="delayed", dust="calzetti", nebular=False)


def mock_galaxies(model, n, seed=0):
    """``n`` galaxy dicts at S/N 20 with their own redshift (0.3–2)."""
    rng = np.random.default_rng(seed)
    gals = []
    for i in range(n):
        z = float(rng.uniform(0.3, 2.0))
        theta = {"redshift": z, "stellar_mass": rng.uniform(9.5, 11.0), "age_gyr": rng.uniform(0.5, 2.5),
                 "tau_gyr": rng.uniform(0.3, 3.0), "metallicity": 1.0, "av": rng.uniform(0.1, 1.0)}
        flux = model.predict_photometry(theta)
        noise = flux / 20
        gals.append({"id": f"g{i:03d}", "flux_obs": flux + noise * rng.standard_normal(flux.shape),
                     "noise": noise, "redshift": z})
    return gals


def test_options_and_bad_input_are_refused(small_model):
    gals = mock_galaxies(small_model, 2)
    with pytest.raises(ValueError, match="n_samplez"):
        CatalogFitter(small_model, gals, method="map", n_samplez=3)
    with pytest.raises(ParameterError, match="n_pad"):
        CatalogFitter(small_model, gals, method="map", n_pad=0)
    with pytest.raises(ParameterError, match="batched"):
        CatalogFitter(small_model, gals, method="vi", strategy="batched")
    with pytest.raises(DataError, match="noise"):
        CatalogFitter(small_model, [{"flux_obs": gals[0]["flux_obs"]}], method="map")
    with pytest.raises(DataError, match="colour"):
        CatalogFitter(small_model, [{**gals[0], "colour": 1}], method="map")
    with pytest.raises(DataError, match="redshift has 1 values for 2"):
        CatalogFitter(small_model, [{k: v for k, v in g.items() if k != "redshift"} for g in gals],
                      method="map", redshift=[1.0])
    assert method_options("vi_native", {"n_seeds": 2}) == {"n_seeds": 2}
    with pytest.raises(ValueError, match="n_seeds"):
        method_options("map", {"n_seeds": 2})
    assert CatalogFitter(small_model, gals, method="map").strategy == "batched"
    assert CatalogFitter(small_model, gals, method="nuts").strategy == "sequential"


def test_galaxy_keys_are_each_galaxys_own_key():
    from tengri.inference.catalog import galaxy_keys

    key = jax.random.PRNGKey(3)
    indices = [0, 7, 615, 2**20]
    expected = np.stack([np.asarray(galaxy_key(key, i)) for i in indices])
    assert np.array_equal(galaxy_keys(key, indices), expected)


N_PAD = 8  # one batch shape for every test here: the batched engine compiles once


def ridge_and_easy_galaxies(model):
    """Three galaxies at S/N 20: one on the short-τ ridge of the age–τ degeneracy
    (τ = 0.06 Gyr, 3 Gyr old: a staircase of local optima along the ridge, where
    1-ulp differences in the objective grow to O(1) parameter differences within
    tens of L-BFGS iterations), and two ordinary ones."""
    rng = np.random.default_rng(11)
    thetas = [{"redshift": 0.6, "stellar_mass": 10.3, "age_gyr": 3.0, "tau_gyr": 0.06, "av": 0.3},
              {"redshift": 1.3, "stellar_mass": 10.0, "age_gyr": 1.5, "tau_gyr": 1.0, "av": 0.6},
              {"redshift": 0.9, "stellar_mass": 9.7, "age_gyr": 0.8, "tau_gyr": 2.0, "av": 1.2}]
    gals = []
    for i, theta in enumerate(thetas):
        flux = model.predict_photometry({**theta, "metallicity": 1.0})
        noise = flux / 20
        gals.append({"id": f"r{i}", "flux_obs": flux + noise * rng.standard_normal(flux.shape),
                     "noise": noise, "redshift": theta["redshift"]})
    return gals


@pytest.mark.slow
@pytest.mark.parametrize("batch_mode", [
    "scan",
    pytest.param("vmap", marks=pytest.mark.skipif(
        not os.environ.get("TENGRI_TEST_VMAP"),
        reason="jax.vmap of the MAP engine takes minutes to compile on a CPU; set TENGRI_TEST_VMAP=1")),
])
def test_batched_map_equals_per_galaxy_fitter(small_model, batch_mode):
    """The batched MAP runs each galaxy's own optimisation: with ``lax.map`` the very
    same iterates as the Fitter (loss histories equal to 1e-9, to the last bit where XLA
    reduces in the same order); with ``vmap``
    the same optimum to 1e-4. bench/catalog.py --check-fitter N does this on the real
    catalog."""
    from tengri.inference.fitter import Fitter

    gals = ridge_and_easy_galaxies(small_model)
    key = jax.random.PRNGKey(3)
    result = CatalogFitter(small_model, gals, method="map", key=key, n_pad=N_PAD, batch_mode=batch_mode,
                           n_starts=2).run()
    assert result.strategy == "batched" and result.n_failed == 0
    # the batch prepares its galaxies with prepare_batch, equal to prepare's tables to
    # rounding (numpy's summation order): the reference Fitters get the same contexts,
    # so that the loss histories compare the engines alone
    fixed = [{"redshift": gal["redshift"]} for gal in gals]
    contexts = small_model.prepare_batch(fixed)[0]
    for i, gal in enumerate(gals):
        with small_model.use_prepared([fixed[i]], [contexts[i]]):
            ref = Fitter(small_model, gal["flux_obs"], gal["noise"], fixed=fixed[i])
        expected = ref.run("map", key=galaxy_key(key, i), n_starts=2)
        got = result.posteriors[i]
        for name in small_model.parameters.free_names:
            assert abs(got.params[name] - expected.params[name]) < 1e-4, (i, name, got.params[name],
                                                                          expected.params[name])
        if batch_mode == "scan":
            # the same iterates: equal to the last bit on some CPUs; on an AVX-512 host the batched
            # objective's first value differs by 1 ulp (XLA's reduction order), and L-BFGS keeps it
            # within 1.1e-11 over the 47 iterations of the ridge galaxy
            np.testing.assert_allclose(got.loss_history, expected.loss_history, rtol=1e-9, atol=0,
                                       err_msg=gal["id"])
        assert result.summary[i]["stellar_mass_p50"] == pytest.approx(got.params["stellar_mass"])


@pytest.mark.slow
def test_n_pad_gives_one_compile_for_37_and_150_galaxies(small_model):
    from tengri.inference.cache import count_compilations

    # below z ≈ 0.45 this model's band tables have fewer sub-bands (another shape,
    # batched apart and compiled once more): keep to one shape here
    gals = [g for g in mock_galaxies(small_model, 240, seed=2) if g["redshift"] > 0.5][:187]
    assert len(gals) == 187
    options = {"n_starts": 1, "n_steps": 40}
    first = CatalogFitter(small_model, gals[:37], method="map", n_pad=N_PAD, **options).run()
    with count_compilations() as seen:
        second = CatalogFitter(small_model, gals[37:], method="map", n_pad=N_PAD, **options).run()
    assert first.n_failed == 0 and second.n_failed == 0
    assert len(second.posteriors) == 150
    assert seen.n_compiles == 0, seen.durations_s


@pytest.mark.parametrize("method, options", [("map", {"n_starts": 1, "n_steps": 40}),
                                             ("laplace", {"n_starts": 1, "n_steps": 40, "n_samples": 50})])
def test_summary_rows_from_one_derived_call_per_batch_equal_each_posteriors_own(small_model, method,
                                                                                  options):
    from tengri.catalog_summary import summarise

    gals = [g for g in mock_galaxies(small_model, 16, seed=4) if g["redshift"] > 0.5][:10]
    result = CatalogFitter(small_model, gals, method=method, n_pad=N_PAD, **options).run()  # 8 + 2 padded
    assert result.n_failed == 0
    for row, post in zip(result.summary, result.posteriors):
        own = summarise(row["id"], post, small_model.parameters.free_names)
        for name, value in own.items():
            if name.endswith(("_p16", "_p50", "_p84")):
                assert row[name] == pytest.approx(value, rel=1e-12, abs=0), name


def test_the_next_batch_is_prepared_in_a_thread_while_this_one_is_fitted(small_model, monkeypatch):
    import threading

    from tengri.inference import catalog

    calls = []
    original = catalog._prepare_contexts

    def recorded(model, records):
        calls.append((threading.current_thread().name, [r.id for r in records]))
        return original(model, records)

    monkeypatch.setattr(catalog, "_prepare_contexts", recorded)
    gals = [g for g in mock_galaxies(small_model, 30, seed=5) if g["redshift"] > 0.5][:20]
    result = CatalogFitter(small_model, gals, method="map", n_pad=N_PAD, n_starts=1, n_steps=40).run()
    assert result.n_failed == 0
    assert [ids for _, ids in calls] == [[g["id"] for g in gals[i:i + N_PAD]] for i in (0, 8, 16)]
    assert all(name.startswith("tengri-prepare") for name, _ in calls)


@pytest.mark.slow
def test_failed_galaxies_are_rows_with_errors(small_model, monkeypatch):
    from tengri.inference.fitter import Fitter

    gals = mock_galaxies(small_model, 4, seed=3)
    gals[1] = {**gals[1], "flux_obs": np.full(len(FILTERS), np.nan)}
    gals[2] = {**gals[2], "redshift": 0.0}
    result = CatalogFitter(small_model, gals, method="map", n_pad=N_PAD, n_starts=1).run()
    errors = [row["error"] for row in result.summary]
    assert errors[0] == "" and errors[3] == ""
    assert errors[1].startswith("DataError") and "no usable photometry" in errors[1]
    assert errors[2].startswith("DataError") and "redshift" in errors[2]
    assert result.posteriors[1] is None and result.posteriors[2] is None
    assert np.isfinite(result.summary[3]["stellar_mass_p50"])

    original = Fitter.run

    def failing(self, method="map", **kw):
        if self.fixed["redshift"] == gals[3]["redshift"]:
            raise RuntimeError("sampler blew up")
        return original(self, method, **kw)

    monkeypatch.setattr(Fitter, "run", failing)
    result = CatalogFitter(small_model, [gals[0], gals[3]], method="map", strategy="sequential",
                           n_starts=1).run()
    assert [row["error"] for row in result.summary] == ["", "RuntimeError: sampler blew up"]


@pytest.mark.parametrize("fmt", ["csv", "fits", "hdf5"])
def test_summary_formats_round_trip(tmp_path, fmt):
    from astropy.table import Table

    from tengri.catalog_summary import read_summary_csv, summary_columns, write_summary

    columns = summary_columns(["av"])
    rows = [{"id": "a", "method": "map", "wall_time_s": 0.1, "av_p50": 0.123456789012345, "error": ""},
            {"id": "b", "method": "map", "error": "DataError: no usable photometry"}]
    path = write_summary(tmp_path / f"summary.{fmt}", columns, rows, fmt)
    if fmt == "csv":
        back = read_summary_csv(path)
        assert list(back[0]) == columns
        av, ids, errs = [r["av_p50"] for r in back], [r["id"] for r in back], [r["error"] for r in back]
    elif fmt == "fits":
        table = Table.read(path)
        assert table.colnames == columns
        av, ids, errs = list(table["av_p50"]), list(table["id"]), list(table["error"])
    else:
        with h5py.File(path) as f:
            assert list(f["summary"]) == columns
            av = list(f["summary/av_p50"][:])
            ids = [s.decode() for s in f["summary/id"][:]]
            errs = [s.decode() for s in f["summary/error"][:]]
    assert ids == ["a", "b"] and errs[1] == "DataError: no usable photometry"
    assert av[0] == 0.123456789012345 and np.isnan(np.ma.filled(np.ma.asarray(av[1], float), np.nan))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    with pytest.raises(ValueError, match="parquet"):
        write_summary(tmp_path / "s", columns, rows, "parquet")


# 300 draws on purpose: batched and per-galaxy chains are compared draw for draw
@pytest.mark.filterwarnings("ignore::tengri.errors.ConvergenceWarning")
@pytest.mark.slow
def test_batched_hmc_pools_each_galaxys_chains_and_agrees_with_the_fitter(small_model):
    """Batched MCMC (``lax.map`` over galaxies) pools the warm-ups of each galaxy's
    own chains, never across galaxies, and samples the posterior ``Fitter.run``
    samples. (Draws are not compared bit for bit: the batched program rounds
    differently in the last bit, and a sampler's accept/reject and step-size
    decisions amplify that into different chains.) HMC rather than NUTS: the same
    code path, a program that compiles in a fraction of NUTS's time."""
    from tengri.inference.fitter import Fitter

    gals = mock_galaxies(small_model, 2, seed=5)
    key = jax.random.PRNGKey(4)
    options = {"n_chains": 2, "n_warmup": 150, "n_samples": 300, "num_integration_steps": 8}
    result = CatalogFitter(small_model, gals, method="hmc", strategy="batched", batch_mode="scan",
                           key=key, n_pad=N_PAD, **options).run()
    assert result.strategy == "batched" and result.n_failed == 0
    steps = []
    for i, gal in enumerate(gals):
        got = result.posteriors[i].diagnostics
        assert got["adaptation"] == "pooled"
        np.testing.assert_array_equal(got["step_size_per_chain"],
                                      np.full(2, got["adapted_step_size_per_chain"].min()))
        np.testing.assert_array_equal(got["inverse_mass_matrix"][0], got["inverse_mass_matrix"][1])
        steps.append(got["step_size_per_chain"][0])
        ref = Fitter(small_model, gal["flux_obs"], gal["noise"], fixed={"redshift": gal["redshift"]})
        expected = ref.run("hmc", key=galaxy_key(key, i), **options)
        for name in ("stellar_mass", "av"):
            sd = np.std(expected.samples[name])
            assert abs(np.median(result.posteriors[i].samples[name])
                       - np.median(expected.samples[name])) < 2 * sd, (i, name)
    assert steps[0] != steps[1]


def test_sequential_fits_in_threads_equal_one_at_a_time(small_model):
    """n_threads only runs galaxies side by side: every galaxy's result is the same, in order."""
    gals = mock_galaxies(small_model, 5, seed=7)
    gals[2] = {**gals[2], "flux_obs": np.full_like(gals[2]["flux_obs"], np.nan)}  # fails: reported, not dropped
    one = CatalogFitter(small_model, gals, method="laplace", strategy="sequential", n_starts=1, n_samples=50).run()
    calls = []
    two = CatalogFitter(small_model, gals, method="laplace", strategy="sequential", n_starts=1, n_samples=50,
                        n_threads=2).run(progress=calls.append)
    assert sum(calls) == len(gals)
    assert [row["id"] for row in two.summary] == [g["id"] for g in gals]
    assert two.summary[2]["error"] and two.posteriors[2] is None
    for a, b in zip(one.posteriors, two.posteriors):
        if a is None:
            assert b is None
            continue
        for name in small_model.parameters.free_names:
            np.testing.assert_array_equal(a.samples[name], b.samples[name])
    with pytest.raises(ParameterError, match="n_threads"):
        CatalogFitter(small_model, gals, method="map", n_threads=0)


def test_unreliable_approximations_are_reported_once_for_the_catalog(small_model, monkeypatch):
    from tengri.errors import ApproximationWarning
    from tengri.inference import registry
    from tengri.inference.problem import RawResult

    calls = []

    def approximation(problem, key, **options):  # galaxies 0 and 2 get k̂ 1.5
        calls.append(key)
        draws = problem.init + 0.01 * jax.random.normal(key, (1, 40, problem.n_dim))
        return RawResult(method="mgvi", point=problem.init, samples=draws,
                         diagnostics={"pareto_k": 1.5 if len(calls) % 2 else 0.2})

    monkeypatch.setattr(registry, "get_runner", lambda name: approximation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CatalogFitter(small_model, mock_galaxies(small_model, 4), method="mgvi").run()
    approximate = [w for w in caught if issubclass(w.category, ApproximationWarning)]
    assert len(approximate) == 1, [str(w.message) for w in caught]
    assert "for 2 of 4 galaxies (g000, g002)" in str(approximate[0].message)
    assert [p.diagnostics["pareto_k"] for p in result.posteriors] == [1.5, 0.2, 1.5, 0.2]


def test_unconverged_chains_are_reported_once_for_the_catalog(small_model, monkeypatch):
    from tengri.errors import ConvergenceWarning
    from tengri.inference import registry
    from tengri.inference.problem import RawResult

    calls = []

    def chains(problem, key, **options):  # galaxies 0 and 2: a random walk (τ ~ n)
        calls.append(key)
        steps = 0.01 * jax.random.normal(key, (1, 1000, problem.n_dim))
        walk = len(calls) % 2 == 1
        return RawResult(method="mcmc_nuts", point=problem.init,
                         samples=problem.init + (steps.cumsum(axis=1) if walk else steps))

    monkeypatch.setattr(registry, "get_runner", lambda name: chains)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CatalogFitter(small_model, mock_galaxies(small_model, 4), method="nuts",
                      strategy="sequential").run()
    unconverged = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(unconverged) == 1, [str(w.message) for w in caught]
    assert "for 2 of 4 galaxies (g000, g002)" in str(unconverged[0].message)
