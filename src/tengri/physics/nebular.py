"""Nebular emission from HII regions around young stars (pure ``jax.numpy``).

The emission comes from precomputed Cloudy grids (Ferland et al. 2017) of HII
regions lit by the same SSPs as the stellar model, in the approach of Byler et
al. (2017) as implemented by bagpipes (Carnall et al. 2018, sect. 2.3); see
:mod:`tengri.data.nebular_grid` for the grid and what bagpipes does with it.
The pieces, each a small pure function:

1. :func:`interpolate_metallicity_log_u` — bilinear interpolation of a grid in
   (Z, log U), linear in Z as bagpipes does (or in log Z), clamped at the edges.
2. :func:`line_lnu_matrix` / :func:`gaussian_line_lnu_matrix` — put line
   luminosities [erg/s] on a wavelength grid as L_ν [erg/s/Hz] so that
   ``Σ_i L_ν,i ν_i Δln λ_i`` equals each line's luminosity (the bins of
   ``tengri.data.ssp.wavelength_bin_edges_aa`` and of ``tengri.physics.bandpass``).
3. :func:`birth_cloud_fraction` and :func:`nebular_age_weights` — which share of
   each SSP's age interval is younger than the birth-cloud age t_bc, and how it
   overlaps the nebular grid's age bins (bagpipes counts the bin holding t_bc in
   part; the overlap weights generalise that to any SSP age axis).
4. :func:`nebular_lnu_by_ssp_age` / :func:`nebular_line_luminosity_by_ssp_age` —
   nebular emission per M☉ formed on the SSP age axis, zero for ages older than
   t_bc or than the grid (3·10^7 yr), ready to add to the per-age stellar cube.
5. :func:`remove_ionising_stellar_lnu` — the stellar light below 912 Å of the
   populations inside birth clouds is absorbed (kept in a fraction ``f_esc``): the
   Cloudy grids were normalised to re-emit exactly that energy.

Grids are passed in as arrays (:class:`NebularTables`, built once per wavelength
grid by :func:`nebular_tables`); nothing here holds state.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "C_AA_S",
    "C_KMS",
    "LYMAN_LIMIT_AA",
    "NebularTables",
    "nebular_tables",
    "nebular_tables_numpy",
    "interpolate_metallicity_log_u",
    "log_wavelength_bin_widths",
    "line_lnu_matrix",
    "gaussian_line_lnu_matrix",
    "birth_cloud_fraction",
    "nebular_age_weights",
    "nebular_lnu_by_ssp_age",
    "nebular_line_luminosity_by_ssp_age",
    "remove_ionising_stellar_lnu",
]

C_AA_S = 2.99792458e18
"""Speed of light [Å/s]."""

C_KMS = 2.99792458e5
"""Speed of light [km/s]."""

LYMAN_LIMIT_AA = 912.0
"""Wavelength below which bagpipes removes the birth-cloud stars' light [Å]."""


class NebularTables(NamedTuple):
    """A nebular grid on one model wavelength grid, as arrays (a JAX pytree).

    Attributes
    ----------
    metallicity_zsun : array, shape (n_z,)
        Grid metallicities Z/Z☉.
    log_u : array, shape (n_u,)
        Grid log10 ionisation parameters.
    age_bin_edges_yr : array, shape (n_age_neb + 1,)
        Age bins the grid ages stand for [yr].
    continuum_lnu : array, shape (n_z, n_u, n_age_neb, n_wave)
        Nebular continuum [erg/s/Hz per M☉ formed] on the model grid.
    line_luminosity : array, shape (n_z, n_u, n_age_neb, n_lines)
        Line luminosities [erg/s per M☉ formed].
    total_lnu : array, shape (n_z, n_u, n_age_neb, n_wave)
        Continuum plus lines deposited with the tables' line matrix
        [erg/s/Hz per M☉ formed]: one interpolation gives the whole nebular SED.
    """

    metallicity_zsun: jax.Array
    log_u: jax.Array
    age_bin_edges_yr: jax.Array
    continuum_lnu: jax.Array
    line_luminosity: jax.Array
    total_lnu: jax.Array


def nebular_tables(grid, wavelength_aa, line_sigma_kms: float | None = None) -> NebularTables:
    """Prepare a :class:`tengri.data.NebularGrid` for one model wavelength grid.

    Done once per model (numpy work, not traced): the continuum is rebinned with
    the grid's ``resampled`` (a grid already on ``wavelength_aa`` is used as it
    is) and the lines are deposited, either each into the bin
    holding it (``line_sigma_kms=None``, for photometry) or as Gaussians of that
    velocity dispersion (for spectroscopy).

    Parameters
    ----------
    grid : tengri.data.NebularGrid
    wavelength_aa : array_like, shape (n_wave,)
        Model rest-frame wavelength grid [Å].
    line_sigma_kms : float or None
        Gaussian line σ [km/s], or None for unresolved lines.

    Returns
    -------
    NebularTables
        Of jax arrays; :func:`nebular_tables_numpy` gives the same numbers as
        numpy arrays.
    """
    return NebularTables(*(jnp.asarray(a) for a in nebular_tables_numpy(grid, wavelength_aa, line_sigma_kms)))


def nebular_tables_numpy(grid, wavelength_aa, line_sigma_kms: float | None = None) -> NebularTables:
    """:func:`nebular_tables` as host (numpy) arrays.

    For arrays that go to the model as data: no copy onto the device and back
    (the tables of the bench model are 25 MB each).
    """
    wave = np.asarray(wavelength_aa, dtype=np.float64)
    on_grid = grid if np.array_equal(grid.wavelength_aa, wave) else grid.resampled(wave)
    line_wave = np.asarray(grid.line_wavelength_aa, dtype=np.float64)
    # jitted: op-by-op eager dispatch of these small functions is several times slower
    if line_sigma_kms is None:
        matrix = jax.jit(line_lnu_matrix)(wave, line_wave)
    else:
        matrix = jax.jit(gaussian_line_lnu_matrix)(wave, line_wave, line_sigma_kms)
    lines = np.asarray(grid.line_luminosity)
    continuum = np.asarray(on_grid.continuum_lnu)
    total = _plus_lines(continuum.reshape(-1, continuum.shape[-1]), lines.reshape(-1, lines.shape[-1]),
                        np.asarray(matrix)).reshape(continuum.shape)
    return NebularTables(
        metallicity_zsun=np.asarray(grid.metallicity_zsun),
        log_u=np.asarray(grid.log_u),
        age_bin_edges_yr=np.asarray(grid.age_bin_edges_yr),
        continuum_lnu=np.asarray(on_grid.continuum_lnu),
        line_luminosity=lines,
        total_lnu=total,
    )


def _plus_lines(continuum: np.ndarray, lines: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``continuum + lines @ matrix`` for continuum (n, n_wave), lines (n, n_lines) and
    matrix (n_lines, n_wave), the product formed on the matrix's nonzero columns only
    (unresolved lines fill one bin each) and added into one copy of the continuum."""
    columns = np.flatnonzero(np.any(matrix != 0.0, axis=0))
    total = np.array(continuum, dtype=np.result_type(continuum, lines, matrix))
    total[:, columns] += lines @ matrix[:, columns]
    return total


def _bracket(value: jax.Array, nodes: jax.Array, log_scale: bool = False) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Indices of the nodes around ``value`` and the weight of the upper one.

    ``value`` is clamped to the node range. With one node both indices are 0.
    """
    if nodes.shape[0] == 1:
        zero = jnp.zeros((), dtype=jnp.int32)
        return zero, zero, jnp.zeros_like(value)
    x = jnp.clip(value, nodes[0], nodes[-1])
    lower = jnp.clip(jnp.searchsorted(nodes, x, side="right") - 1, 0, nodes.shape[0] - 2)
    x0, x1 = nodes[lower], nodes[lower + 1]
    if log_scale:
        x, x0, x1 = jnp.log(x), jnp.log(x0), jnp.log(x1)
    return lower, lower + 1, (x - x0) / (x1 - x0)


def interpolate_metallicity_log_u(
    metallicity_zsun: jax.Array,
    log_u: jax.Array,
    grid_metallicity_zsun: jax.Array,
    grid_log_u: jax.Array,
    values: jax.Array,
    log_metallicity: bool = False,
) -> jax.Array:
    """Bilinear interpolation of a grid over its first two axes (Z, log U).

    Linear in log U and, by default, linear in Z — as bagpipes does for its
    stellar and nebular grids; ``log_metallicity=True`` interpolates in log Z.
    Values outside the grid are clamped to its edge (zero gradient there).

    Parameters
    ----------
    metallicity_zsun, log_u : scalar arrays
        Where to evaluate: Z/Z☉ and log10 U.
    grid_metallicity_zsun : array, shape (n_z,)
    grid_log_u : array, shape (n_u,)
    values : array, shape (n_z, n_u, ...)
        E.g. ``continuum_lnu`` (…= n_age_neb, n_wave) or ``line_luminosity``.
    log_metallicity : bool
        Interpolate in log Z instead of Z (static).

    Returns
    -------
    array, shape values.shape[2:]
    """
    z0, z1, wz = _bracket(metallicity_zsun, grid_metallicity_zsun, log_scale=log_metallicity)
    u0, u1, wu = _bracket(log_u, grid_log_u)
    return (
        (1 - wz) * (1 - wu) * values[z0, u0]
        + (1 - wz) * wu * values[z0, u1]
        + wz * (1 - wu) * values[z1, u0]
        + wz * wu * values[z1, u1]
    )


def _log_bin_edges(wavelength_aa: jax.Array) -> jax.Array:
    """ln λ of the bin edges: geometric midpoints, half a step beyond the ends."""
    log_wave = jnp.log(wavelength_aa)
    first = log_wave[0] - 0.5 * (log_wave[1] - log_wave[0])
    last = log_wave[-1] + 0.5 * (log_wave[-1] - log_wave[-2])
    return jnp.concatenate([first[None], 0.5 * (log_wave[1:] + log_wave[:-1]), last[None]])


def log_wavelength_bin_widths(wavelength_aa: jax.Array) -> jax.Array:
    """Δ ln λ of the bin around each node (edges at geometric midpoints), shape (n_wave,)."""
    return jnp.diff(_log_bin_edges(wavelength_aa))


def _bin_frequency_width_hz(wavelength_aa: jax.Array) -> jax.Array:
    """ν_i Δ ln λ_i [Hz]: the frequency width each node stands for."""
    return C_AA_S / wavelength_aa * log_wavelength_bin_widths(wavelength_aa)


def line_lnu_matrix(wavelength_aa: jax.Array, line_wavelength_aa: jax.Array) -> jax.Array:
    """L_ν per unit line luminosity for unresolved lines, shape (n_lines, n_wave) [1/Hz].

    Each line goes whole into the grid bin that holds it (edges at geometric
    midpoints; a line on an edge goes to the redder bin), divided by the bin's
    frequency width ν_i Δ ln λ_i, so ``Σ_i L_ν,i ν_i Δ ln λ_i = L`` — bagpipes'
    nearest-pixel rule. A line on a bin edge such as Lyα on
    :func:`tengri.data.photometry_wavelength_grid` thus stays entirely redward of
    the IGM's Lyα step. Lines outside the outer bin edges give zero rows. The
    result is piecewise constant in the line wavelength: for a fitted velocity
    shift use :func:`gaussian_line_lnu_matrix`, which is smooth.

    Parameters
    ----------
    wavelength_aa : array, shape (n_wave,)
        Model grid [Å], increasing.
    line_wavelength_aa : array, shape (n_lines,)
        Line wavelengths [Å].

    Returns
    -------
    array, shape (n_lines, n_wave)
        ``line_luminosity_erg_s @ matrix`` is L_ν [erg/s/Hz].
    """
    n_wave = wavelength_aa.shape[0]
    log_edges = _log_bin_edges(wavelength_aa)
    holder = jnp.searchsorted(log_edges, jnp.log(line_wavelength_aa), side="right") - 1
    inside = (holder >= 0) & (holder < n_wave)
    shares = jnp.where(inside[:, None], jax.nn.one_hot(jnp.clip(holder, 0, n_wave - 1), n_wave), 0.0)
    return shares / _bin_frequency_width_hz(wavelength_aa)


def gaussian_line_lnu_matrix(
    wavelength_aa: jax.Array, line_wavelength_aa: jax.Array, sigma_kms: jax.Array
) -> jax.Array:
    """L_ν per unit line luminosity for Gaussian lines, shape (n_lines, n_wave) [1/Hz].

    Each line is a Gaussian in λ with σ_λ = λ_line σ_v / c; each node receives
    the Gaussian's integral over its bin (geometric-midpoint edges), divided by
    the bin's ν_i Δ ln λ_i. So ``Σ_i L_ν,i ν_i Δ ln λ_i = L`` up to the part of the
    profile beyond the grid ends, and a σ much narrower than a bin falls into the
    bin holding the line.

    Parameters
    ----------
    wavelength_aa : array, shape (n_wave,)
        Model grid [Å], increasing.
    line_wavelength_aa : array, shape (n_lines,)
        Line centres [Å].
    sigma_kms : scalar or array broadcastable to (n_lines,)
        Gaussian velocity dispersion σ [km/s] (not the FWHM), > 0.

    Returns
    -------
    array, shape (n_lines, n_wave)
    """
    edges = jnp.exp(_log_bin_edges(wavelength_aa))
    sigma_aa = line_wavelength_aa * jnp.broadcast_to(sigma_kms, line_wavelength_aa.shape) / C_KMS
    sigma_aa = jnp.maximum(sigma_aa, 1e-12 * line_wavelength_aa)
    standardised = (edges[None, :] - line_wavelength_aa[:, None]) / sigma_aa[:, None]
    cumulative = jax.scipy.special.ndtr(standardised)
    return jnp.diff(cumulative, axis=1) / _bin_frequency_width_hz(wavelength_aa)


def _interval_overlap(low_a, high_a, low_b, high_b):
    """Length of the overlap of [low_a, high_a] and [low_b, high_b] (broadcasting)."""
    return jnp.clip(jnp.minimum(high_a, high_b) - jnp.maximum(low_a, low_b), 0.0, None)


def birth_cloud_fraction(ssp_age_bin_edges_yr: jax.Array, t_bc_yr: jax.Array) -> jax.Array:
    """Share of each SSP's age interval younger than the birth-cloud age.

    Parameters
    ----------
    ssp_age_bin_edges_yr : array, shape (n_age + 1,)
        Age intervals of the SSPs [yr] (``SSPGrid.age_bin_edges_yr``).
    t_bc_yr : scalar
        Birth-cloud dispersal age [yr] (bagpipes' default 10^7).

    Returns
    -------
    array, shape (n_age,)
        In [0, 1]: 1 for intervals entirely younger than t_bc, 0 for older ones,
        the fraction in between for the interval holding t_bc (assuming mass
        formed uniformly in time within it, as bagpipes does).
    """
    low, high = ssp_age_bin_edges_yr[:-1], ssp_age_bin_edges_yr[1:]
    width = high - low
    young = _interval_overlap(low, high, 0.0, t_bc_yr)
    # a zero-width interval (a lone SSP at age 0) is young when it starts before t_bc
    return jnp.where(width > 0, young / jnp.where(width > 0, width, 1.0), (low < t_bc_yr) * 1.0)


def nebular_age_weights(
    ssp_age_bin_edges_yr: jax.Array, nebular_age_bin_edges_yr: jax.Array, t_bc_yr: jax.Array
) -> jax.Array:
    """How much of each SSP's mass lights each nebular age bin, shape (n_age, n_age_neb).

    ``W[a, k]`` is the share of SSP interval ``a`` that lies in nebular bin ``k``
    *and* is younger than t_bc; nebular emission on the SSP axis is then
    ``W @ nebular_per_age``. Rows sum to :func:`birth_cloud_fraction` wherever the
    nebular grid covers the young ages, and to less for intervals older than its
    last bin (3·10^7 yr for bagpipes' grid), which therefore get no nebular
    emission. When the SSP axis is the nebular one, ``W`` is diagonal with
    bagpipes' weights (1 below t_bc, the young share of the bin holding t_bc).

    Parameters
    ----------
    ssp_age_bin_edges_yr : array, shape (n_age + 1,) [yr]
    nebular_age_bin_edges_yr : array, shape (n_age_neb + 1,) [yr]
    t_bc_yr : scalar [yr]

    Returns
    -------
    array, shape (n_age, n_age_neb)
    """
    low_a, high_a = ssp_age_bin_edges_yr[:-1, None], ssp_age_bin_edges_yr[1:, None]
    low_k = jnp.minimum(nebular_age_bin_edges_yr[None, :-1], t_bc_yr)
    high_k = jnp.minimum(nebular_age_bin_edges_yr[None, 1:], t_bc_yr)
    width = high_a - low_a
    overlap = _interval_overlap(low_a, high_a, low_k, high_k)
    return overlap / jnp.where(width > 0, width, 1.0)


def nebular_lnu_by_ssp_age(
    metallicity_zsun: jax.Array,
    log_u: jax.Array,
    t_bc_yr: jax.Array,
    ssp_age_bin_edges_yr: jax.Array,
    tables: NebularTables,
    include_lines: bool = True,
    log_metallicity: bool = False,
) -> jax.Array:
    """Nebular L_ν on the SSP age axis [erg/s/Hz per M☉ formed], shape (n_age, n_wave).

    ``W @ interp(Z, log U)`` with ``W`` from :func:`nebular_age_weights`: zero for
    ages older than t_bc or than the grid's last bin. Add it to the per-age
    stellar cube after :func:`remove_ionising_stellar_lnu`. If only the
    SFH-weighted sum is needed, contracting the SFH weights with ``W`` first
    (``(m @ W) @ nebular``) is cheaper than forming this cube.

    Parameters
    ----------
    metallicity_zsun : scalar
        Gas metallicity Z/Z☉.
    log_u : scalar
        log10 ionisation parameter.
    t_bc_yr : scalar
        Birth-cloud age [yr].
    ssp_age_bin_edges_yr : array, shape (n_age + 1,) [yr]
    tables : NebularTables
    include_lines : bool
        Add the deposited lines (``tables.total_lnu``) or only the continuum (static).
    log_metallicity : bool
        Interpolate in log Z instead of Z (static).
    """
    per_age = interpolate_metallicity_log_u(
        metallicity_zsun,
        log_u,
        tables.metallicity_zsun,
        tables.log_u,
        tables.total_lnu if include_lines else tables.continuum_lnu,
        log_metallicity=log_metallicity,
    )
    weights = nebular_age_weights(ssp_age_bin_edges_yr, tables.age_bin_edges_yr, t_bc_yr)
    return weights @ per_age


def nebular_line_luminosity_by_ssp_age(
    metallicity_zsun: jax.Array,
    log_u: jax.Array,
    t_bc_yr: jax.Array,
    ssp_age_bin_edges_yr: jax.Array,
    tables: NebularTables,
    log_metallicity: bool = False,
) -> jax.Array:
    """Line luminosities on the SSP age axis [erg/s per M☉ formed], shape (n_age, n_lines)."""
    per_age = interpolate_metallicity_log_u(
        metallicity_zsun,
        log_u,
        tables.metallicity_zsun,
        tables.log_u,
        tables.line_luminosity,
        log_metallicity=log_metallicity,
    )
    return nebular_age_weights(ssp_age_bin_edges_yr, tables.age_bin_edges_yr, t_bc_yr) @ per_age


def remove_ionising_stellar_lnu(
    lnu_by_age: jax.Array,
    wavelength_aa: jax.Array,
    birth_cloud_share: jax.Array,
    escape_fraction: jax.Array = 0.0,
) -> jax.Array:
    """Stellar L_ν with the birth clouds' ionising photons absorbed.

    Below 912 Å, the part ``birth_cloud_share`` of each SSP still inside its
    birth cloud keeps only ``escape_fraction`` of its light (bagpipes multiplies
    its young spectrum below 912 Å by ``fesc``):

    .. math::  L_\\nu \\to L_\\nu\\,[1 - s_a (1 - f_{esc})] \\quad (\\lambda < 912\\,Å)

    Parameters
    ----------
    lnu_by_age : array, shape (n_age, n_wave)
        Stellar L_ν per age [erg/s/Hz per M☉ formed].
    wavelength_aa : array, shape (n_wave,) [Å]
    birth_cloud_share : array, shape (n_age,)
        From :func:`birth_cloud_fraction`.
    escape_fraction : scalar
        f_esc in [0, 1].

    Returns
    -------
    array, shape (n_age, n_wave)
    """
    kept = 1.0 - birth_cloud_share[:, None] * (1.0 - escape_fraction)
    ionising = (wavelength_aa < LYMAN_LIMIT_AA)[None, :]
    return jnp.where(ionising, lnu_by_age * kept, lnu_by_age)
