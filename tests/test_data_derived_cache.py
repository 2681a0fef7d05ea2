"""Derived grids kept in the tengri cache (rebinned SSP and nebular grids): the same
arrays as computing them, computed once, invalidated by their inputs."""

import jax.numpy as jnp
import numpy as np
import pytest

from tengri.data import cache, model_grid, nebular_grid, ssp
from tengri.data.ssp import load_ssp_grid, photometry_wavelength_grid, rebin_lnu
from tengri.errors import ParameterError


@pytest.fixture
def derived_dir(tmp_path, monkeypatch):
    """Derived entries in a fresh directory (the converted grids stay where they are)."""
    monkeypatch.setattr(cache, "_derived_dir", lambda: tmp_path)
    return tmp_path


def _counting(arrays):
    calls = []

    def compute():
        calls.append(1)
        return arrays

    return compute, calls


def test_cached_derived_computes_once_per_key(derived_dir):
    compute, calls = _counting({"x": np.arange(5.0), "n": np.array([3])})
    first = cache.cached_derived("demo", "key one", compute)
    second = cache.cached_derived("demo", "key one", compute)
    assert len(calls) == 1
    for name in ("x", "n"):
        np.testing.assert_array_equal(second[name], first[name])
        assert second[name].dtype == first[name].dtype
    cache.cached_derived("demo", "key two", compute)
    assert len(calls) == 2


def test_cached_derived_recomputes_a_damaged_entry(derived_dir):
    compute, calls = _counting({"x": np.ones(3)})
    cache.cached_derived("demo", "k", compute)
    (entry,) = derived_dir.glob("demo-*.npz")
    entry.write_bytes(b"not an npz")
    np.testing.assert_array_equal(cache.cached_derived("demo", "k", compute)["x"], np.ones(3))
    assert len(calls) == 2


def test_cached_derived_keeps_the_most_recent_entries(derived_dir):
    compute, _ = _counting({"x": np.zeros(2)})
    for i in range(5):
        cache.cached_derived("demo", f"key {i}", compute, keep=3)
    assert len(list(derived_dir.glob("demo-*.npz"))) == 3
    cache.cached_derived("other", "key", compute, keep=3)
    assert len(list(derived_dir.glob("demo-*.npz"))) == 3


def test_cached_derived_without_a_writable_directory_computes(monkeypatch):
    def unwritable():
        raise PermissionError("read-only cache")

    monkeypatch.setattr(cache, "_derived_dir", unwritable)
    compute, calls = _counting({"x": np.ones(2)})
    np.testing.assert_array_equal(cache.cached_derived("demo", "k", compute)["x"], np.ones(2))
    assert len(calls) == 1


def test_array_digest_sees_values_dtype_and_shape():
    a = np.linspace(1.0, 2.0, 6)
    assert cache.array_digest(a) == cache.array_digest(a.copy())
    b = a.copy()
    b[3] = np.nextafter(b[3], 3.0)
    assert len({cache.array_digest(x) for x in (a, b, a.astype(np.float32), a.reshape(2, 3))}) == 4


@pytest.fixture(scope="module")
def photometry_grid():
    return photometry_wavelength_grid()


def test_nebular_rebinned_from_the_cache_equals_rebinning(derived_dir, monkeypatch, photometry_grid):
    grid = nebular_grid.load_nebular_grid()
    expected = rebin_lnu(grid.wavelength_aa, grid.continuum_lnu, photometry_grid)
    first = grid.resampled(photometry_grid)
    np.testing.assert_array_equal(first.continuum_lnu, expected)
    assert len(list(derived_dir.glob("nebular_*.npz"))) == 1

    def no_rebinning(*args, **kwargs):
        raise AssertionError("rebinned again")

    monkeypatch.setattr(nebular_grid, "rebin_lnu", no_rebinning)
    again = nebular_grid.load_nebular_grid().resampled(photometry_grid)
    np.testing.assert_array_equal(again.continuum_lnu, expected)
    np.testing.assert_array_equal(again.wavelength_aa, photometry_grid)
    assert not again.continuum_lnu.flags.writeable
    # another grid is another entry
    coarse = photometry_grid[::2]
    monkeypatch.undo()
    monkeypatch.setattr(cache, "_derived_dir", lambda: derived_dir)
    np.testing.assert_array_equal(grid.resampled(coarse).continuum_lnu,
                                  rebin_lnu(grid.wavelength_aa, grid.continuum_lnu, coarse))
    assert len(list(derived_dir.glob("nebular_*.npz"))) == 2


def test_a_nebular_grid_of_unknown_origin_is_not_cached(derived_dir):
    grid = nebular_grid.load_nebular_grid()
    small = nebular_grid.NebularGrid(
        metallicity_zsun=grid.metallicity_zsun[:2], log_u=grid.log_u[:2], age_yr=grid.age_yr,
        wavelength_aa=grid.wavelength_aa, continuum_lnu=grid.continuum_lnu[:2, :2],
        line_luminosity=grid.line_luminosity[:2, :2], line_names=grid.line_names,
        line_wavelength_aa=grid.line_wavelength_aa)
    out = small.resampled(np.geomspace(1e3, 1e4, 50))
    assert out.continuum_lnu.shape == (2, 2, grid.age_yr.size, 50)
    assert not list(derived_dir.glob("*.npz"))


def test_ssp_grid_on_equals_load_and_resample(derived_dir, monkeypatch, photometry_grid):
    expected = load_ssp_grid().resampled(photometry_grid)
    for attempt in range(2):
        got = model_grid.ssp_grid_on(photometry_grid)
        for field in ("age_yr", "metallicity_zsun", "wavelength_aa", "lnu", "surviving_mass_fraction"):
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
            assert getattr(got, field).dtype == np.float64 and not getattr(got, field).flags.writeable
        assert got.name == expected.name and got.age_edges_yr is None
        np.testing.assert_array_equal(got.age_bin_edges_yr, expected.age_bin_edges_yr)

        def no_loading(*args, **kwargs):
            raise AssertionError("the full grid was read again")

        monkeypatch.setattr(ssp, "load_ssp_grid", no_loading)  # the second attempt reads the cache only


def test_ssp_grid_on_rejects_bad_input():
    with pytest.raises(ParameterError, match="unknown SSP grid"):
        model_grid.ssp_grid_on(np.geomspace(1e3, 1e4, 10), name="nope")
    with pytest.raises(ParameterError, match="wavelength_aa"):
        model_grid.ssp_grid_on(np.array([2.0, 1.0]))


def test_nebular_grid_on_equals_load_and_resample(derived_dir, monkeypatch, photometry_grid):
    expected = nebular_grid.load_nebular_grid().resampled(photometry_grid)
    for attempt in range(2):
        got = model_grid.nebular_grid_on(photometry_grid)
        for field in model_grid._NEBULAR_FIELDS:
            np.testing.assert_array_equal(getattr(got, field), getattr(expected, field))
            assert getattr(got, field).dtype == getattr(expected, field).dtype
            assert not getattr(got, field).flags.writeable
        assert (got.name, got.source_key) == (expected.name, expected.source_key)

        def no_loading(*args, **kwargs):
            raise AssertionError("the full grid was read again")

        monkeypatch.setattr(nebular_grid, "load_nebular_grid", no_loading)  # the second attempt reads the cache only


def test_nebular_grid_on_rejects_bad_input():
    with pytest.raises(ParameterError, match="unknown nebular grid"):
        model_grid.nebular_grid_on(np.geomspace(1e3, 1e4, 10), name="nope")
    with pytest.raises(ParameterError, match="wavelength_aa"):
        model_grid.nebular_grid_on(np.array([2.0, 1.0]))


def test_fixed_attenuation_curve_comes_from_the_cache_after_the_first_time(derived_dir, monkeypatch,
                                                                           photometry_grid):
    import dataclasses

    from tengri.model import components
    from tengri.physics import attenuation

    curve = attenuation.attenuation_curve("calzetti")
    expected = np.asarray(curve(photometry_grid))
    np.testing.assert_array_equal(components.fixed_curve_on("calzetti", photometry_grid), expected)

    def no_evaluation(*args, **kwargs):
        raise AssertionError("the curve was evaluated again")

    monkeypatch.setitem(attenuation.ATTENUATION_CURVES, "calzetti", dataclasses.replace(curve, fn=no_evaluation))
    np.testing.assert_array_equal(components.fixed_curve_on("calzetti", photometry_grid), expected)
    with pytest.raises(AssertionError, match="evaluated again"):  # another grid: another entry
        components.fixed_curve_on("calzetti", photometry_grid[::2])


def test_band_table_plan_arrays_equal_the_chain_physics(phot_model):
    """The plan's jitted weights and k are the eager physics functions' values (to 1e-12)."""
    from tengri.physics import attenuation
    from tengri.physics import nebular as nebular_physics

    edges = jnp.asarray(phot_model.ssp.age_bin_edges_yr)
    neb_edges = jnp.asarray(phot_model.grids["neb_age_bin_edges_yr"])
    plan = phot_model._plan_arrays
    np.testing.assert_allclose(plan["young_share"], nebular_physics.birth_cloud_fraction(edges, phot_model.t_bc_yr),
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(plan["nebular_age_weights"],
                               nebular_physics.nebular_age_weights(edges, neb_edges, phot_model.t_bc_yr),
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose(plan["k"], attenuation.attenuation_curve("calzetti")(phot_model.wavelength_aa),
                               rtol=1e-12, atol=0)
