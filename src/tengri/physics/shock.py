"""Emission of fast radiative shocks, scaled to the H II regions' nebular emission.

Fast shocks (galactic winds, supernova remnants, AGN outflows) ionise and heat gas
that then cools through collisionally excited lines; their optical spectra are
those of the MAPPINGS III shock + precursor models of Allen et al. (2008, ApJS
178, 20): strong low-ionisation lines ([N II], [S II], [O I], [O II]) relative to
the Balmer lines, which put shocked gas in the LINER / Seyfert region of the BPT
diagrams (Kewley et al. 2006).

Parameterisation (tengri's; no fitting code that we know of has a shock component):

- the shocked gas adds ``shock_fraction`` times the Hβ luminosity of the H II
  regions (the Cloudy nebular component), i.e. L(Hβ)_shock = f · L(Hβ)_HII;
- its lines relative to Hβ are the fixed template :data:`SHOCK_LINE_RATIOS`;
- its continuum is that of ~10^4 K recombining gas, taken as the H II regions'
  own nebular continuum per unit Hβ (the recombination zone behind a shock and
  its photoionised precursor are at ~10^4 K), i.e. f times that continuum.

The template is a rounded, representative set of optical line ratios for Allen et
al.'s solar-abundance shock + precursor models with v_s ≈ 300–500 km/s and
n = 1 cm⁻³: [O III]λ5007/Hβ ≈ 3, [N II]λ6584/Hα ≈ 0.7, ([S II]λλ6717,6731)/Hα ≈
0.6, [O I]λ6300/Hα ≈ 0.2, [O II]λλ3726,3729/Hβ ≈ 5.5, Hα/Hβ = 3 (collisional
excitation raises it above case B's 2.86). It is *not* interpolated from their
tables: it describes where such shocks sit, not one model. The weaker doublet
members follow from atomic physics ([O III] 4959/5007 = 1/2.98, [N II]
6548/6584 = 1/3.05, [O I] 6363/6300 = 1/3.1). Ultraviolet and infrared shock lines
are not included, so the component carries only the optical part of the shock's
radiative energy. The model attenuates it with the diffuse (ISM) dust curve only.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

__all__ = ["SHOCK_LINE_RATIOS", "HBETA_LINE", "shock_line_weights", "shock_lnu"]

HBETA_LINE = "H  1  4861.32A"
"""Hβ's name in the Cloudy line list shipped with BAGPIPES."""

SHOCK_LINE_RATIOS: dict[str, float] = {
    "H  1  6562.80A": 3.0,
    "H  1  4861.32A": 1.0,
    "H  1  4340.46A": 0.47,
    "O  3  5006.84A": 3.0,
    "O  3  4958.91A": 1.0,
    "O  2  3726.03A": 2.3,
    "O  2  3728.81A": 3.2,
    "Ne 3  3868.76A": 0.6,
    "N  2  6583.45A": 2.1,
    "N  2  6548.05A": 0.69,
    "S  2  6716.44A": 1.0,
    "S  2  6730.82A": 0.8,
    "O  1  6300.30A": 0.6,
    "O  1  6363.78A": 0.19,
}
"""Line luminosity relative to Hβ, by Cloudy line name (see the module docstring)."""


def shock_line_weights(line_names: Sequence[str]) -> np.ndarray:
    """The template as a vector over a line list, shape (n_lines,) (zero for other lines).

    Raises
    ------
    ValueError
        If a template line is missing from ``line_names``.
    """
    names = [str(n) for n in line_names]
    missing = [n for n in SHOCK_LINE_RATIOS if n not in names]
    if missing:
        raise ValueError(f"line_names lacks the shock template lines {missing}")
    weights = np.zeros(len(names))
    for name, ratio in SHOCK_LINE_RATIOS.items():
        weights[names.index(name)] = ratio
    return weights


def shock_lnu(
    shock_fraction: ArrayLike,
    nebular_continuum_lnu: ArrayLike,
    hbeta_luminosity_erg_s: ArrayLike,
    template_lnu_per_hbeta: ArrayLike,
) -> Array:
    """Intrinsic shock L_ν [erg/s/Hz] (before dust).

    Parameters
    ----------
    shock_fraction : scalar
        L(Hβ)_shock / L(Hβ)_HII (≥ 0).
    nebular_continuum_lnu : array, shape (n_wave,)
        The H II regions' nebular continuum [erg/s/Hz].
    hbeta_luminosity_erg_s : scalar
        The H II regions' Hβ luminosity [erg/s].
    template_lnu_per_hbeta : array, shape (n_wave,)
        The line template deposited on the grid, per unit Hβ luminosity [1/Hz].

    Returns
    -------
    jax.Array, shape (n_wave,)
    """
    return shock_fraction * (nebular_continuum_lnu + hbeta_luminosity_erg_s * jnp.asarray(template_lnu_per_hbeta))
