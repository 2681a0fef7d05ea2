"""Dust attenuation curves A_λ/A_V and the birth-cloud attenuation of young stars.

Every curve is a function of **rest-frame** wavelength in Å and returns
``k(λ)/R_V = A_λ/A_V`` (dimensionless, shape of the input). Light is attenuated by
``10^(−0.4 A_V A_λ/A_V)``. Where a curve is defined piecewise, the pieces (and their
extensions beyond the published wavelength range) are those of BAGPIPES 1.3.6
(``models/dust_attenuation_model.py``), so that fits can be compared one to one:

============== ======================================= ===========================
name           curve                                   free parameters
============== ======================================= ===========================
calzetti       Calzetti et al. 2000, eq. 4, R_V = 4.05 —
cardelli       Cardelli, Clayton & Mathis 1989, R_V 3.1 —
smc            Gordon et al. 2003, SMC bar             —
kriek_conroy   Kriek & Conroy 2013 (Noll et al. 2009)  dust_delta
salim          Salim, Boquien & Lee 2018               dust_delta, dust_bump
cf00           Charlot & Fall 2000 power law           dust_n
============== ======================================= ===========================

(BAGPIPES has no Kriek & Conroy curve; its other curves are matched here to ~1e-15.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike

from tengri.errors import ParameterError
from tengri.params import Prior, Uniform

__all__ = [
    "calzetti2000",
    "cardelli1989",
    "smc_gordon2003",
    "kriek_conroy2013",
    "salim2018",
    "charlot_fall2000",
    "drude_bump",
    "AttenuationCurve",
    "ATTENUATION_CURVES",
    "attenuation_curve",
    "dust_transmission_per_age",
    "V_BAND_AA",
]

V_BAND_AA = 5500.0
CALZETTI_RV = 4.05
BUMP_CENTRE_AA = 2175.0
BUMP_WIDTH_AA = 350.0


def _as_wavelength(wavelength_aa: ArrayLike) -> Array:
    return jnp.asarray(wavelength_aa, dtype=float)


def calzetti2000(wavelength_aa: ArrayLike) -> Array:
    """Calzetti et al. (2000, ApJ 533, 682) starburst curve, eq. 4, divided by R_V = 4.05.

    .. math::
        k(λ) = 2.659(−2.156 + 1.509/λ − 0.198/λ^2 + 0.011/λ^3) + R_V,  0.12–0.63 µm

        k(λ) = 2.659(−1.857 + 1.040/λ) + R_V,  0.63–2.20 µm (λ in µm).

    Extensions (BAGPIPES'): blueward of 0.12 µm the power law
    ``k(0.12 µm) (λ/0.12 µm)^−0.77``; the near-infrared branch is used up to 3.1 µm,
    where it reaches ~0 (k = 0.004), and A_λ = 0 beyond.

    Parameters
    ----------
    wavelength_aa : array, any shape
        Rest-frame wavelength in Å.

    Returns
    -------
    jax.Array, shape of ``wavelength_aa``
        A_λ/A_V; k(5500 Å)/R_V = 0.9995, k(Hα)/R_V = 2.53/4.05, k(Hβ)/R_V = 3.61/4.05.
    """
    lam_aa = _as_wavelength(wavelength_aa)
    lam_um = lam_aa * 1e-4
    safe_um = jnp.where(lam_um > 0, lam_um, 1.0)

    def uv_optical(x):
        return 2.659 * (-2.156 + 1.509 / x - 0.198 / x**2 + 0.011 / x**3) + CALZETTI_RV

    k_far_uv = uv_optical(0.12) * (safe_um / 0.12) ** -0.77
    k_near_ir = 2.659 * (-1.857 + 1.040 / safe_um) + CALZETTI_RV
    k = jnp.where(
        lam_aa < 1200.0,
        k_far_uv,
        jnp.where(lam_aa < 6300.0, uv_optical(safe_um), jnp.where(lam_aa < 31000.0, k_near_ir, 0.0)),
    )
    return k / CALZETTI_RV


def cardelli1989(wavelength_aa: ArrayLike, r_v: float = 3.1) -> Array:
    """Milky Way extinction curve of Cardelli, Clayton & Mathis (1989, ApJ 345, 245).

    ``A_λ/A_V = a(x) + b(x)/R_V`` with x = 1/λ in µm⁻¹: infrared (eq. 2, applied to
    all x < 1.1), optical/near-IR polynomial in y = x − 1.82 (eq. 3, 1.1 ≤ x < 3.3),
    ultraviolet (eq. 4, 3.3 ≤ x < 8, with the F_a, F_b terms above x = 5.9) and far
    UV (eq. 5, applied to all x ≥ 8). Equal to 1 at x = 1.82 (5495 Å).

    Parameters
    ----------
    wavelength_aa : array, any shape
        Rest-frame wavelength in Å.
    r_v : float
        Total-to-selective extinction ratio (BAGPIPES fixes 3.1).

    Returns
    -------
    jax.Array, shape of ``wavelength_aa``
        A_λ/A_V.
    """
    lam_aa = _as_wavelength(wavelength_aa)
    x = 1e4 / jnp.where(lam_aa > 0, lam_aa, 1.0)

    a_ir, b_ir = 0.574 * x**1.61, -0.527 * x**1.61

    y = x - 1.82
    a_opt = (
        1 + 0.17699 * y - 0.50447 * y**2 - 0.02427 * y**3 + 0.72085 * y**4
        + 0.01979 * y**5 - 0.77530 * y**6 + 0.32999 * y**7
    )
    b_opt = (
        1.41388 * y + 2.28305 * y**2 + 1.07233 * y**3 - 5.38434 * y**4
        - 0.62251 * y**5 + 5.30260 * y**6 - 2.09002 * y**7
    )

    d = x - 5.9
    far = x >= 5.9
    a_uv = 1.752 - 0.316 * x - 0.104 / ((x - 4.67) ** 2 + 0.341) + jnp.where(
        far, -0.04473 * d**2 - 0.009779 * d**3, 0.0
    )
    b_uv = -3.090 + 1.825 * x + 1.206 / ((x - 4.62) ** 2 + 0.263) + jnp.where(
        far, 0.2130 * d**2 + 0.1207 * d**3, 0.0
    )

    e = x - 8.0
    a_fuv = -1.073 - 0.628 * e + 0.137 * e**2 - 0.070 * e**3
    b_fuv = 13.670 + 4.257 * e - 0.420 * e**2 + 0.374 * e**3

    a = jnp.where(x < 1.1, a_ir, jnp.where(x < 3.3, a_opt, jnp.where(x < 8.0, a_uv, a_fuv)))
    b = jnp.where(x < 1.1, b_ir, jnp.where(x < 3.3, b_opt, jnp.where(x < 8.0, b_uv, b_fuv)))
    return a + b / r_v


# Gordon et al. (2003, ApJ 594, 279) SMC bar: Fitzpatrick & Martin parameters (their
# Table 3) and the optical/near-IR A_λ/A_V (their Table 4, with the 1.25 and 2.198 µm
# values of Gordon et al. 2016, ApJ 826, 104, as BAGPIPES uses them).
_SMC_FM = {"c1": -4.959, "c2": 2.264, "c3": 0.389, "c4": 0.461, "x0": 4.6, "gamma": 1.0, "r_v": 2.74}
_SMC_OPTICAL_AA = np.array([0.276, 0.296, 0.37, 0.44, 0.55, 0.65, 0.81, 1.25, 1.65, 2.198, 3.1]) * 1e4
_SMC_OPTICAL_A = np.array([2.220, 2.000, 1.672, 1.374, 1.00, 0.801, 0.567, 0.25, 0.169, 0.11, 0.0])


def smc_gordon2003(wavelength_aa: ArrayLike) -> Array:
    """SMC bar curve of Gordon et al. (2003).

    Below 2760 Å the Fitzpatrick & Martin (1990) form
    ``A_λ/A_V = (c1 + c2 x + c3 D(x; x0, γ) + c4 F(x))/R_V + 1`` (x in µm⁻¹, F = 0 for
    x < 5.9); above, linear interpolation of the tabulated optical/near-IR values,
    0 beyond 3.1 µm. As in BAGPIPES, the far-UV form is not capped below ~1000 Å.

    Parameters
    ----------
    wavelength_aa : array, any shape
        Rest-frame wavelength in Å.

    Returns
    -------
    jax.Array, shape of ``wavelength_aa``
        A_λ/A_V (1 at 5500 Å).
    """
    lam_aa = _as_wavelength(wavelength_aa)
    x = 1e4 / jnp.where(lam_aa > 0, lam_aa, 1.0)
    p = _SMC_FM
    drude = x**2 / ((x**2 - p["x0"] ** 2) ** 2 + x**2 * p["gamma"] ** 2)
    far_uv = jnp.where(x < 5.9, 0.0, 0.5392 * (x - 5.9) ** 2 + 0.05644 * (x - 5.9) ** 3)
    uv = (p["c1"] + p["c2"] * x + p["c3"] * drude + p["c4"] * far_uv) / p["r_v"] + 1.0
    optical = jnp.interp(lam_aa, jnp.asarray(_SMC_OPTICAL_AA), jnp.asarray(_SMC_OPTICAL_A), right=0.0)
    return jnp.where(lam_aa > 2760.0, optical, uv)


def drude_bump(wavelength_aa: ArrayLike, amplitude: ArrayLike) -> Array:
    """Drude profile of the 2175 Å bump (as in Noll et al. 2009 and KC13 eq. 2).

    ``D(λ) = E_b (λ Δλ)² / ((λ² − λ0²)² + (λ Δλ)²)``, λ0 = 2175 Å, Δλ = 350 Å (FWHM).

    Parameters
    ----------
    wavelength_aa : array, any shape
        Rest-frame wavelength in Å.
    amplitude : float
        Bump strength E_b (in units of k, i.e. A_λ R_V/A_V).

    Returns
    -------
    jax.Array, shape of ``wavelength_aa``
    """
    lam = _as_wavelength(wavelength_aa)
    width2 = (lam * BUMP_WIDTH_AA) ** 2
    return amplitude * width2 / ((lam**2 - BUMP_CENTRE_AA**2) ** 2 + width2)


def kriek_conroy2013(wavelength_aa: ArrayLike, dust_delta: ArrayLike) -> Array:
    """Kriek & Conroy (2013, ApJL 775, L16) curve: Calzetti tilted by δ plus a bump.

    Their eq. 1 (the Noll et al. 2009 parameterisation) with the bump strength tied
    to the slope by their eq. 3, E_b = 0.85 − 1.9 δ:

    .. math::  A_λ/A_V = \\frac{k_{Cal}(λ) + D(λ; E_b)}{4.05} (λ/5500 Å)^δ .

    δ < 0 steepens the curve. For δ > 0.447 the bump turns negative (outside the
    default prior).

    Parameters
    ----------
    wavelength_aa : array, any shape
        Rest-frame wavelength in Å.
    dust_delta : float
        Slope offset δ from Calzetti.

    Returns
    -------
    jax.Array, shape of ``wavelength_aa``
        A_λ/A_V.
    """
    lam = _as_wavelength(wavelength_aa)
    bump = drude_bump(lam, 0.85 - 1.9 * dust_delta)
    k_calzetti = calzetti2000(lam) * CALZETTI_RV
    return (k_calzetti + bump) / CALZETTI_RV * (lam / V_BAND_AA) ** dust_delta


def salim2018(wavelength_aa: ArrayLike, dust_delta: ArrayLike, dust_bump: ArrayLike) -> Array:
    """Salim, Boquien & Lee (2018, ApJ 859, 11) modified Calzetti curve, eqs. 3–4.

    .. math::
        k(λ) = k_{Cal}(λ) \\frac{R_{V,mod}}{4.05} (λ/5500 Å)^δ + D(λ; B),
        \\quad R_{V,mod} = \\frac{4.05}{5.05\\,(4400/5500)^δ − 4.05},

    returned as ``k(λ)/R_{V,mod}`` (BAGPIPES' ``Salim`` law).

    Parameters
    ----------
    wavelength_aa : array, any shape
        Rest-frame wavelength in Å.
    dust_delta : float
        Slope offset δ from Calzetti.
    dust_bump : float
        Bump amplitude B of the Drude profile.

    Returns
    -------
    jax.Array, shape of ``wavelength_aa``
        A_λ/A_V.
    """
    lam = _as_wavelength(wavelength_aa)
    r_v_mod = CALZETTI_RV / ((CALZETTI_RV + 1.0) * (4400.0 / V_BAND_AA) ** dust_delta - CALZETTI_RV)
    tilted = calzetti2000(lam) * (lam / V_BAND_AA) ** dust_delta
    return tilted + drude_bump(lam, dust_bump) / r_v_mod


def charlot_fall2000(wavelength_aa: ArrayLike, dust_n: ArrayLike) -> Array:
    """Power-law curve of Charlot & Fall (2000, ApJ 539, 718): (λ/5500 Å)^−n.

    BAGPIPES' ``CF00`` law (Carnall et al. 2018, 2019) with its slope parameter n > 0
    (Charlot & Fall's value is n = 0.7).

    Parameters
    ----------
    wavelength_aa : array, any shape
        Rest-frame wavelength in Å.
    dust_n : float
        Power-law index n.

    Returns
    -------
    jax.Array, shape of ``wavelength_aa``
        A_λ/A_V.
    """
    return (_as_wavelength(wavelength_aa) / V_BAND_AA) ** (-dust_n)


@dataclass(frozen=True)
class AttenuationCurve:
    """A registered attenuation curve; call it as ``curve(wavelength_aa, **params)``.

    Attributes
    ----------
    name : str
    fn : callable
        ``(wavelength_aa, **params) -> A_λ/A_V``.
    param_names : tuple of str
        Free shape parameters (empty for fixed curves).
    default_priors : dict
        Parameter name → :class:`tengri.params.Prior`.
    description : str
    """

    name: str
    fn: Callable
    param_names: tuple[str, ...] = ()
    default_priors: Mapping[str, Prior] = field(default_factory=dict)
    description: str = ""

    def __call__(self, wavelength_aa: ArrayLike, **params: ArrayLike) -> Array:
        missing = [n for n in self.param_names if n not in params]
        extra = sorted(set(params) - set(self.param_names))
        if missing or extra:
            accepted = ", ".join(self.param_names) or "no parameters"
            raise ParameterError(
                f"attenuation curve {self.name!r} takes {accepted}; "
                + ", ".join(
                    part
                    for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unknown {', '.join(extra)}" if extra else "",
                    )
                    if part
                )
            )
        return self.fn(wavelength_aa, **params)


_DELTA_PRIOR = Uniform(-1.2, 0.4)

ATTENUATION_CURVES: dict[str, AttenuationCurve] = {
    "calzetti": AttenuationCurve("calzetti", calzetti2000, description="Calzetti et al. 2000, R_V = 4.05"),
    "cardelli": AttenuationCurve("cardelli", cardelli1989, description="Cardelli et al. 1989, R_V = 3.1"),
    "smc": AttenuationCurve("smc", smc_gordon2003, description="Gordon et al. 2003 SMC bar"),
    "kriek_conroy": AttenuationCurve(
        "kriek_conroy",
        kriek_conroy2013,
        ("dust_delta",),
        {"dust_delta": _DELTA_PRIOR},
        "Kriek & Conroy 2013: Calzetti × (λ/5500)^δ + bump E_b = 0.85 − 1.9δ",
    ),
    "salim": AttenuationCurve(
        "salim",
        salim2018,
        ("dust_delta", "dust_bump"),
        {"dust_delta": _DELTA_PRIOR, "dust_bump": Uniform(0.0, 5.0)},
        "Salim et al. 2018: modified Calzetti with slope δ and bump B",
    ),
    "cf00": AttenuationCurve(
        "cf00",
        charlot_fall2000,
        ("dust_n",),
        {"dust_n": Uniform(0.3, 2.5)},
        "Charlot & Fall 2000 power law (λ/5500)^−n",
    ),
}


def attenuation_curve(name: str) -> AttenuationCurve:
    """The registered curve ``name``; ParameterError listing the valid names otherwise."""
    if name not in ATTENUATION_CURVES:
        raise ParameterError(
            f"unknown attenuation curve {name!r}; valid curves: {', '.join(ATTENUATION_CURVES)}"
        )
    return ATTENUATION_CURVES[name]


def dust_transmission_per_age(
    wavelength_aa: ArrayLike,
    age_yr: ArrayLike,
    av: ArrayLike,
    curve: str | ArrayLike,
    birth_cloud_eta: ArrayLike = 1.0,
    t_bc_yr: float = 1e7,
    *,
    curve_params: Mapping[str, ArrayLike] | None = None,
    age_bin_edges_yr: ArrayLike | None = None,
) -> Array:
    """Fraction of the light of each SSP age that escapes the dust.

    All stars see the diffuse (ISM) attenuation A_V; stars younger than ``t_bc_yr``
    are still in their birth clouds and see ``η A_V`` in total, i.e. an extra
    ``(η − 1) A_V`` with the same curve. This is BAGPIPES' convention (``eta`` in its
    ``dust`` component, ``t_bc`` = 0.01 Gyr by default; ``model_galaxy.py``):

    .. math::  T(a, λ) = 10^{−0.4 A_V k(λ)} \\left[1 − f(a) + f(a)\\,
               10^{−0.4 (η−1) A_V k(λ)}\\right],

    with f(a) the fraction of an SSP's stars younger than t_bc: with
    ``age_bin_edges_yr``, the fraction of its age bin below t_bc (BAGPIPES splits the
    bin holding t_bc this way); otherwise a step, f = 1 for ``age_yr < t_bc_yr``. The
    ages are a fixed grid, so T is smooth in ``av``, ``birth_cloud_eta`` and the curve
    parameters.

    Parameters
    ----------
    wavelength_aa : array, shape (n_wave,)
        Rest-frame wavelength in Å.
    age_yr : array, shape (n_age,)
        SSP ages in yr.
    av : float
        Diffuse V-band attenuation A_V in mag.
    curve : str or array of shape (n_wave,)
        A name in :data:`ATTENUATION_CURVES` or a precomputed A_λ/A_V.
    birth_cloud_eta : float
        η ≥ 1: total A_V of birth-cloud stars over A_V (1 = no extra dust).
    t_bc_yr : float
        Birth-cloud lifetime in yr.
    curve_params : dict, optional
        Shape parameters of a named curve (e.g. ``{"dust_delta": -0.3}``).
    age_bin_edges_yr : array, shape (n_age + 1,), optional
        SSP age-bin edges, to split the bin that holds t_bc.

    Returns
    -------
    jax.Array, shape (n_age, n_wave)
        Transmission in (0, 1] for A_V ≥ 0, η ≥ 1 and k ≥ 0.
    """
    wavelength_aa = _as_wavelength(wavelength_aa)
    if isinstance(curve, str):
        k = attenuation_curve(curve)(wavelength_aa, **(curve_params or {}))
    else:
        if curve_params:
            raise ParameterError("curve_params are only accepted with a named curve")
        k = jnp.asarray(curve, dtype=float)
    if age_bin_edges_yr is None:
        young = (jnp.asarray(age_yr, dtype=float) < t_bc_yr).astype(float)
    else:
        edges = jnp.asarray(age_bin_edges_yr, dtype=float)
        young = jnp.clip((t_bc_yr - edges[:-1]) / (edges[1:] - edges[:-1]), 0.0, 1.0)
    ism = 10.0 ** (-0.4 * av * k)
    birth_cloud = 10.0 ** (-0.4 * (birth_cloud_eta - 1.0) * av * k)
    return ism[None, :] * (1.0 - young[:, None] + young[:, None] * birth_cloud[None, :])
