"""Nebular emission physics: grid interpolation, line deposition, birth clouds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tengri.data import load_nebular_grid, load_ssp_grid, photometry_wavelength_grid
from tengri.physics import nebular as neb

C_AA_S = neb.C_AA_S


@pytest.fixture(scope="module")
def grid():
    return load_nebular_grid()


@pytest.fixture(scope="module")
def wavelength():
    return photometry_wavelength_grid()


@pytest.fixture(scope="module")
def tables(grid, wavelength):
    return neb.nebular_tables(grid, wavelength)


@pytest.fixture(scope="module")
def ssp(wavelength):
    full = load_ssp_grid()
    young = int(np.searchsorted(full.age_yr, 5e7))
    return full.subset(age_index=slice(0, young), metallicity_index=4).resampled(wavelength)


@jax.jit
def energy(wavelength_aa, lnu):
    """Σ L_ν ν Δ ln λ over the grid's bins [erg/s]."""
    return jnp.sum(lnu * C_AA_S / wavelength_aa * neb.log_wavelength_bin_widths(wavelength_aa), axis=-1)


# jitted once: eager dispatch op by op is what costs time on CPU
line_matrix = jax.jit(neb.line_lnu_matrix)
gaussian_matrix = jax.jit(neb.gaussian_line_lnu_matrix)
interpolate = jax.jit(neb.interpolate_metallicity_log_u, static_argnames="log_metallicity")


# --- interpolation -----------------------------------------------------------------


@pytest.mark.parametrize("log_metallicity", [False, True])
def test_interpolation_reproduces_grid_nodes(grid, log_metallicity):
    values = jnp.asarray(grid.line_luminosity)
    for i, j in [(0, 0), (4, 4), (6, 8), (2, 5)]:
        result = interpolate(
            grid.metallicity_zsun[i], grid.log_u[j], jnp.asarray(grid.metallicity_zsun),
            jnp.asarray(grid.log_u), values, log_metallicity=log_metallicity,
        )  # fmt: skip
        np.testing.assert_allclose(result, grid.line_luminosity[i, j], rtol=1e-12)


def test_interpolation_is_linear_in_metallicity_and_log_u():
    metallicity = jnp.array([0.2, 1.0])
    log_u = jnp.array([-3.0, -2.0])
    values = jnp.array([[1.0, 2.0], [5.0, 10.0]])
    result = neb.interpolate_metallicity_log_u(0.6, -2.75, metallicity, log_u, values)
    expected = 0.5 * (0.75 * 1.0 + 0.25 * 2.0) + 0.5 * (0.75 * 5.0 + 0.25 * 10.0)
    assert float(result) == pytest.approx(expected, rel=1e-14)


def test_log_metallicity_interpolation_puts_the_midpoint_at_the_geometric_mean():
    metallicity = jnp.array([0.1, 1.0])
    values = jnp.array([[0.0], [1.0]])
    result = neb.interpolate_metallicity_log_u(np.sqrt(0.1), 0.0, metallicity, jnp.array([0.0]), values, True)
    assert float(result) == pytest.approx(0.5, rel=1e-12)


def test_values_outside_the_grid_are_clamped_to_its_edge(grid):
    args = (jnp.asarray(grid.metallicity_zsun), jnp.asarray(grid.log_u), jnp.asarray(grid.line_luminosity))
    low = interpolate(0.001, -5.0, *args)
    high = interpolate(9.0, 1.0, *args)
    np.testing.assert_allclose(low, grid.line_luminosity[0, 0])
    np.testing.assert_allclose(high, grid.line_luminosity[-1, -1])


# --- line deposition ---------------------------------------------------------------


def test_unresolved_lines_conserve_luminosity(grid, wavelength):
    wave = jnp.asarray(wavelength)
    matrix = line_matrix(wave, jnp.asarray(grid.line_wavelength_aa))
    np.testing.assert_allclose(energy(wave, matrix), 1.0, rtol=1e-12)


def test_line_bins_are_the_bins_bandpass_integrates_over(wavelength):
    from tengri.physics.bandpass import log_wavelength_widths

    ours = neb.log_wavelength_bin_widths(jnp.asarray(wavelength))
    np.testing.assert_allclose(ours, log_wavelength_widths(wavelength))


def test_unresolved_line_lands_in_the_bin_holding_it():
    wave = jnp.geomspace(1000.0, 2000.0, 11)
    ratio = float(wave[1] / wave[0])
    lines = jnp.array([float(wave[3]) * ratio**0.4, float(wave[3]) * ratio**0.6])
    rows = np.asarray(line_matrix(wave, lines))
    assert [np.flatnonzero(row).tolist() for row in rows] == [[3], [4]]


def test_line_on_a_bin_edge_goes_to_the_redder_bin():
    wave = jnp.asarray(photometry_wavelength_grid(900.0, 1500.0))
    row = np.asarray(line_matrix(wave, jnp.array([1215.67])))[0]
    (holder,) = np.flatnonzero(row)
    assert float(wave[holder]) > 1215.67 > float(wave[holder - 1])


def test_lines_outside_the_grid_are_dropped():
    wave = jnp.geomspace(1000.0, 2000.0, 11)
    matrix = line_matrix(wave, jnp.array([500.0, 3000.0]))
    np.testing.assert_array_equal(matrix, 0.0)


def test_gaussian_line_moves_smoothly_with_its_wavelength():
    wave = jnp.geomspace(1000.0, 2000.0, 101)

    def centroid(line):
        return jnp.sum(neb.gaussian_line_lnu_matrix(wave, line[None], 300.0)[0] * jnp.arange(101.0))

    slope = float(jax.jit(jax.grad(centroid))(1500.3))
    assert np.isfinite(slope) and slope > 0


def test_gaussian_lines_conserve_luminosity_and_centre(wavelength):
    wave = jnp.asarray(np.geomspace(4000.0, 8000.0, 4000))
    lines = jnp.array([4861.32, 6562.80])
    matrix = gaussian_matrix(wave, lines, 150.0)
    np.testing.assert_allclose(energy(wave, matrix), 1.0, rtol=1e-10)
    weights = matrix * C_AA_S / wave * neb.log_wavelength_bin_widths(wave)
    np.testing.assert_allclose(weights @ wave, lines, rtol=1e-6)
    sigma_aa = np.sqrt(weights @ wave**2 - (weights @ wave) ** 2)
    np.testing.assert_allclose(sigma_aa, lines * 150.0 / neb.C_KMS, rtol=0.02)


def test_narrow_gaussian_falls_in_the_bin_holding_the_line():
    wave = jnp.geomspace(1000.0, 2000.0, 11)
    matrix = gaussian_matrix(wave, jnp.array([float(wave[5]) * 1.001]), 0.01)
    assert np.flatnonzero(np.asarray(matrix[0]) > 1e-30 * float(jnp.max(matrix))).tolist() == [5]


def test_tables_hold_continuum_plus_deposited_lines(grid, wavelength, tables):
    matrix = line_matrix(jnp.asarray(wavelength), jnp.asarray(grid.line_wavelength_aa))
    np.testing.assert_allclose(
        tables.total_lnu[4, 4, 0], tables.continuum_lnu[4, 4, 0] + grid.line_luminosity[4, 4, 0] @ matrix, rtol=1e-10
    )


@pytest.mark.parametrize("line_sigma_kms", [None, 300.0])
def test_host_tables_equal_the_jax_tables(grid, wavelength, line_sigma_kms):
    host = neb.nebular_tables_numpy(grid, wavelength, line_sigma_kms)
    device = neb.nebular_tables(grid, wavelength, line_sigma_kms)
    for name, value in host._asdict().items():
        assert isinstance(value, np.ndarray), name
        np.testing.assert_allclose(value, device._asdict()[name], rtol=1e-15, atol=0.0, err_msg=name)
    matrix = (line_matrix(jnp.asarray(wavelength), jnp.asarray(grid.line_wavelength_aa)) if line_sigma_kms is None
              else gaussian_matrix(jnp.asarray(wavelength), jnp.asarray(grid.line_wavelength_aa), line_sigma_kms))
    full = host.continuum_lnu + grid.line_luminosity @ np.asarray(matrix)
    np.testing.assert_allclose(host.total_lnu, full, rtol=1e-14, atol=0.0)


def test_a_grid_already_on_the_wavelengths_is_not_rebinned_again(grid, wavelength, monkeypatch):
    on_grid = grid.resampled(wavelength)
    expected = neb.nebular_tables_numpy(grid, wavelength)

    def no_rebinning(*args, **kwargs):
        raise AssertionError("rebinned again")

    monkeypatch.setattr(type(grid), "resampled", no_rebinning)
    got = neb.nebular_tables_numpy(on_grid, wavelength)
    for name, value in expected._asdict().items():
        np.testing.assert_array_equal(getattr(got, name), value, err_msg=name)


def test_deposition_over_nonzero_columns_equals_the_full_product():
    rng = np.random.default_rng(3)
    matrix = np.zeros((4, 9))
    matrix[[0, 1, 2, 3], [2, 2, 5, 8]] = rng.uniform(1.0, 2.0, 4)  # two lines share bin 2
    lines = rng.uniform(0.0, 1.0, (6, 4))
    continuum = rng.uniform(0.0, 1.0, (6, 9))
    kept = continuum.copy()
    np.testing.assert_allclose(neb._plus_lines(continuum, lines, matrix), continuum + lines @ matrix,
                               rtol=1e-15, atol=0.0)
    dense = rng.uniform(0.0, 1.0, (4, 9))
    np.testing.assert_allclose(neb._plus_lines(continuum, lines, dense), continuum + lines @ dense,
                               rtol=1e-15, atol=0.0)
    np.testing.assert_array_equal(continuum, kept)  # the continuum is not written into


# --- birth clouds and the SSP age axis ---------------------------------------------


def test_birth_cloud_fraction_splits_the_bin_holding_t_bc():
    edges = jnp.array([0.0, 1e6, 2e6, 4e6, 8e6])
    np.testing.assert_allclose(neb.birth_cloud_fraction(edges, 3e6), [1.0, 1.0, 0.5, 0.0])


def test_age_weights_are_bagpipes_weights_on_the_nebular_axis(grid):
    edges = jnp.asarray(grid.age_bin_edges_yr)
    weights = neb.nebular_age_weights(edges, edges, 1e7)
    expected = np.diag(np.asarray(neb.birth_cloud_fraction(edges, 1e7)))
    np.testing.assert_allclose(weights, expected, atol=1e-15)
    # the bin holding t_bc = 10^7 (edges 10^6.95, 10^7.05) counts in part
    assert 0 < float(weights[10, 10]) < 1


def test_age_weights_sum_to_the_birth_cloud_share_where_the_grid_covers(grid, ssp):
    weights = neb.nebular_age_weights(jnp.asarray(ssp.age_bin_edges_yr), jnp.asarray(grid.age_bin_edges_yr), 1e7)
    share = neb.birth_cloud_fraction(jnp.asarray(ssp.age_bin_edges_yr), 1e7)
    np.testing.assert_allclose(weights.sum(axis=1), share, atol=1e-12)


def test_no_nebular_emission_beyond_the_grid_or_t_bc(ssp, tables):
    edges = jnp.asarray(ssp.age_bin_edges_yr)
    for t_bc in (1e7, 1e9):
        lnu = neb.nebular_lnu_by_ssp_age(1.0, -2.0, t_bc, edges, tables)
        old = np.asarray(edges[:-1]) >= min(t_bc, float(tables.age_bin_edges_yr[-1]))
        assert old.any() and np.all(np.asarray(lnu)[old] == 0)
        assert np.all(np.asarray(lnu)[~old].sum(axis=1) > 0)


def test_removing_ionising_light_touches_only_lyman_continuum(ssp):
    wave = jnp.asarray(ssp.wavelength_aa)
    lnu = jnp.asarray(ssp.lnu[0])
    share = jnp.linspace(0.0, 1.0, lnu.shape[0])
    removed = np.asarray(neb.remove_ionising_stellar_lnu(lnu, wave, share, escape_fraction=0.25))
    ionising = ssp.wavelength_aa < 912.0
    np.testing.assert_array_equal(removed[:, ~ionising], ssp.lnu[0][:, ~ionising])
    np.testing.assert_allclose(removed[:, ionising], ssp.lnu[0][:, ionising] * (1 - 0.75 * share[:, None]))


def test_full_escape_keeps_the_stellar_spectrum(ssp):
    lnu = jnp.asarray(ssp.lnu[0])
    kept = neb.remove_ionising_stellar_lnu(lnu, jnp.asarray(ssp.wavelength_aa), jnp.ones(lnu.shape[0]), 1.0)
    np.testing.assert_array_equal(kept, lnu)


@pytest.mark.parametrize("log_u, t_bc_yr", [(-2.0, 1e7), (-3.2, 4e6)])
def test_nebular_emission_replaces_the_absorbed_ionising_energy(ssp, tables, log_u, t_bc_yr):
    # constant star formation: the mass in each SSP interval is its width
    edges = jnp.asarray(ssp.age_bin_edges_yr)
    wave = jnp.asarray(ssp.wavelength_aa)
    lnu = jnp.asarray(ssp.lnu[0])
    share = neb.birth_cloud_fraction(edges, t_bc_yr)
    absorbed = energy(wave, lnu - neb.remove_ionising_stellar_lnu(lnu, wave, share)) @ jnp.diff(edges)
    # each Cloudy model was lit by the SSP of its own metallicity: the SSPs here are Z☉
    emitted = energy(wave, neb.nebular_lnu_by_ssp_age(1.0, log_u, t_bc_yr, edges, tables)) @ jnp.diff(edges)
    assert float(emitted) == pytest.approx(float(absorbed), rel=0.03)


def test_nebular_cube_is_jittable_and_differentiable(ssp, tables):
    edges = jnp.asarray(ssp.age_bin_edges_yr)
    wave = jnp.asarray(ssp.wavelength_aa)

    @jax.jit
    def total(params, tables):
        metallicity, log_u, t_bc = params
        return jnp.sum(energy(wave, neb.nebular_lnu_by_ssp_age(metallicity, log_u, t_bc, edges, tables)))

    params = jnp.array([0.7, -2.3, 8e6])
    gradient = jax.grad(total)(params, tables)
    assert np.all(np.isfinite(gradient)) and np.all(np.asarray(gradient) != 0)
    step = jnp.array([1e-4, 1e-4, 1.0])
    numeric = [
        (total(params + shift, tables) - total(params - shift, tables)) / (2 * shift[i])
        for i, shift in enumerate(jnp.diag(step))
    ]
    np.testing.assert_allclose(gradient, numeric, rtol=1e-4)


def test_line_luminosities_by_age_are_differentiable(ssp, tables):
    edges = jnp.asarray(ssp.age_bin_edges_yr)
    h_alpha = int(np.argmin(np.abs(np.asarray(load_nebular_grid().line_wavelength_aa) - 6562.80)))

    def h_alpha_total(log_u):
        return neb.nebular_line_luminosity_by_ssp_age(1.3, log_u, 1e7, edges, tables)[:, h_alpha].sum()

    assert np.isfinite(float(jax.jit(jax.grad(h_alpha_total))(-2.7)))
