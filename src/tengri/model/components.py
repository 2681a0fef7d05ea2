"""The physical components of an SEDModel, run as a chain over one state.

Each component is a small frozen object with

- ``defaults()``: the free parameters it needs and their default priors;
- ``arrays(wavelength_aa)``: the grids it needs, as numpy arrays (they travel as
  data, not as compile-time constants, so XLA does not fold megabytes of grid);
- ``apply(state, theta, arrays)``: a pure function that reads the state, adds its
  contribution and publishes what it made in ``state["derived"]``;
- ``signature()``: what about it changes compiled code.

State keys used here (all arrays, ``n_age`` SSP ages, ``n_wave`` rest wavelengths):
``age_of_universe_yr``, ``mass_per_age`` (n_age,) [M☉ formed], ``lnu_age``
(n_age, n_wave) stellar L_ν per age [erg/s/Hz], ``nebular_age`` (n_age, n_wave),
``sed`` (n_wave,) the running total [erg/s/Hz], and ``derived`` (dict).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from tengri.errors import ParameterError
from tengri.params import Fixed, LogUniform, Uniform
from tengri.physics import attenuation, dust_emission, nebular, sfh

__all__ = ["StarFormationHistory", "StellarPopulation", "NebularEmission", "DustAttenuation", "DustEmission"]

YR_PER_GYR = 1e9
C_AA_PER_S = 2.99792458e18


@dataclass(frozen=True)
class StarFormationHistory:
    """Mass formed in each SSP age bin from a parametric SFH family."""

    family: str
    age_bin_edges_yr: np.ndarray  # (n_age + 1,)

    name = "sfh"

    def defaults(self):
        return {name: prior for name, prior in sfh.SFH_FAMILIES[self.family].default_priors.items()} | {
            "stellar_mass": Uniform(7.0, 13.0)
        }

    def arrays(self, wavelength_aa):
        return {"age_bin_edges_yr": np.asarray(self.age_bin_edges_yr, float)}

    def apply(self, state, theta, arrays):
        fam = sfh.SFH_FAMILIES[self.family]
        sfh_params = {n: theta[n] for n in fam.param_names}
        mass_formed = 10.0 ** theta["stellar_mass"]
        fractions = sfh.mass_formed_per_age_bin(
            self.family, sfh_params, arrays["age_bin_edges_yr"], state["age_of_universe_yr"]
        )
        mass_per_age = mass_formed * fractions
        derived = dict(state["derived"])
        derived["mass_formed"] = mass_formed
        for window_yr, key in ((1e7, "sfr_10myr"), (1e8, "sfr_100myr")):
            derived[key] = sfh.average_sfr_msun_per_yr(
                self.family, sfh_params, window_yr, mass_formed, state["age_of_universe_yr"]
            )
        derived["mass_weighted_age_gyr"] = sfh.mass_weighted_age_gyr(
            self.family, sfh_params, state["age_of_universe_yr"]
        )
        return {**state, "mass_per_age": mass_per_age, "derived": derived}

    def signature(self):
        return ("sfh", self.family)


@dataclass(frozen=True)
class StellarPopulation:
    """SSP spectra interpolated in metallicity, weighted by the SFH.

    Publishes the per-age cube ``lnu_age`` (n_age, n_wave) and the two sums the
    rest of the chain needs: light of stars still inside birth clouds
    (``stellar_young``, ages < t_bc; the age interval holding t_bc counts in part)
    and of the others (``stellar_old``). Only the sums enter the likelihood, so the
    cube costs nothing there (XLA drops unused values).
    Metallicity is interpolated linearly in Z between grid nodes, as bagpipes does.
    """

    t_bc_yr: float = 1e7

    name = "ssp"

    def defaults(self):
        return {"metallicity": LogUniform(0.01, 2.5)}

    def arrays(self, wavelength_aa):
        return {}

    def apply(self, state, theta, arrays):
        grid = arrays["ssp_lnu"]  # (n_z, n_age, n_wave) per M☉ formed
        i, t = _interp_weights(arrays["ssp_z"], theta["metallicity"])
        lnu_per_msun = (1 - t) * grid[i] + t * grid[i + 1]
        surviving = (1 - t) * arrays["ssp_surviving"][i] + t * arrays["ssp_surviving"][i + 1]
        mass = state["mass_per_age"]
        young_share = nebular.birth_cloud_fraction(arrays["age_bin_edges_yr"], self.t_bc_yr)
        derived = dict(state["derived"])
        derived["stellar_mass"] = jnp.sum(mass * surviving)
        # Contract the ages on each metallicity node before interpolating: this reads
        # the two grid slices once instead of building the (n_age, n_wave) cube
        # (3x faster per gradient call; the cube below is only kept when used).
        weights = jnp.stack([mass * young_share, mass * (1 - young_share)])
        sums = (1 - t) * (weights @ grid[i]) + t * (weights @ grid[i + 1])
        return {
            **state,
            "lnu_per_msun": lnu_per_msun,
            "lnu_age": mass[:, None] * lnu_per_msun,
            "young_share": young_share,
            "stellar_young": sums[0],
            "stellar_old": sums[1],
            "derived": derived,
        }

    def signature(self):
        return ("ssp", self.t_bc_yr)


def _interp_weights(grid, value):
    """Lower index and upper weight for linear interpolation on ``grid`` (clamped)."""
    x = jnp.clip(value, grid[0], grid[-1])
    i = jnp.clip(jnp.searchsorted(grid, x, side="right") - 1, 0, grid.shape[0] - 2)
    return i, (x - grid[i]) / (grid[i + 1] - grid[i])


@dataclass(frozen=True)
class NebularEmission:
    """Nebular continuum and lines from the Cloudy grids (Byler et al. 2017 approach).

    Stars younger than t_bc ionise their birth cloud: their light below 912 Å is
    absorbed (escape fraction 0) and re-emitted as the Cloudy continuum and lines
    for the galaxy's metallicity and ``log_u`` (see :mod:`tengri.physics.nebular`).
    Publishes ``sed_nebular_intrinsic`` (n_wave,) and per-age ``nebular_age``.
    """

    t_bc_yr: float = 1e7

    name = "nebular"

    def defaults(self):
        return {"log_u": Uniform(-4.0, -1.0)}

    def arrays(self, wavelength_aa):
        from tengri.data.nebular_grid import load_nebular_grid

        tables = nebular.nebular_tables(load_nebular_grid(), wavelength_aa)
        return {
            "neb_z": np.asarray(tables.metallicity_zsun),
            "neb_log_u": np.asarray(tables.log_u),
            "neb_total_lnu": np.asarray(tables.total_lnu),
            "neb_line_luminosity": np.asarray(tables.line_luminosity),
            "neb_age_bin_edges_yr": np.asarray(tables.age_bin_edges_yr),
            "ionising": (np.asarray(wavelength_aa) < nebular.LYMAN_LIMIT_AA).astype(float),
        }

    def apply(self, state, theta, arrays):
        per_age = nebular.interpolate_metallicity_log_u(
            theta["metallicity"], theta["log_u"], arrays["neb_z"], arrays["neb_log_u"], arrays["neb_total_lnu"]
        )  # (n_age_neb, n_wave) per M☉ formed
        weights = nebular.nebular_age_weights(
            arrays["age_bin_edges_yr"], arrays["neb_age_bin_edges_yr"], self.t_bc_yr
        )  # (n_age, n_age_neb)
        mass = state["mass_per_age"]
        sed_neb = (mass @ weights) @ per_age
        lines = nebular.interpolate_metallicity_log_u(
            theta["metallicity"], theta["log_u"], arrays["neb_z"], arrays["neb_log_u"],
            arrays["neb_line_luminosity"],
        )
        return {
            **state,
            "stellar_young": state["stellar_young"] * (1.0 - arrays["ionising"]),
            "nebular_age": mass[:, None] * (weights @ per_age),
            "sed_nebular_intrinsic": sed_neb,
            "line_luminosity": (mass @ weights) @ lines,  # (n_lines,) erg/s, before dust
        }

    def signature(self):
        return ("nebular", self.t_bc_yr)


@dataclass(frozen=True)
class DustAttenuation:
    """Dust attenuation of starlight and nebular emission, with birth clouds.

    All light is dimmed by the ISM curve, ``10^(−0.4 A_V k(λ))`` with k(λ) = A_λ/A_V;
    light from stars younger than t_bc (and their nebular emission) additionally by
    ``10^(−0.4 (η − 1) A_V k(λ))`` so that it sees ``η A_V`` in total (bagpipes'
    convention; η = ``dust_eta``, default fixed at 1, i.e. no extra attenuation).
    Publishes ``sed_dust_attenuated`` (stellar, after dust), ``sed_nebular``
    (after dust), ``nebular_transmission`` (n_wave,) (the factor the nebular light
    got; the spectrum uses it for line fluxes) and ``luminosity_absorbed`` [erg/s]
    for energy balance.
    """

    law: str = "calzetti"
    t_bc_yr: float = 1e7

    name = "dust"

    def defaults(self):
        curve = attenuation.attenuation_curve(self.law)
        return {"av": Uniform(0.0, 3.0), "dust_eta": Fixed(1.0), **curve.default_priors}

    def arrays(self, wavelength_aa):
        curve = attenuation.attenuation_curve(self.law)
        if curve.param_names:  # shape depends on free parameters: computed per call
            return {}
        return {"dust_k": np.asarray(curve(np.asarray(wavelength_aa, float)))}

    def apply(self, state, theta, arrays):
        curve = attenuation.attenuation_curve(self.law)
        if curve.param_names:
            k = curve(arrays["wavelength_aa"], **{p: theta[p] for p in curve.param_names})
        else:
            k = arrays["dust_k"]
        ism = 10.0 ** (-0.4 * theta["av"] * k)
        birth = 10.0 ** (-0.4 * (theta["dust_eta"] - 1.0) * theta["av"] * k)
        young = state["stellar_young"]
        old = state["stellar_old"]
        neb = state.get("sed_nebular_intrinsic", jnp.zeros_like(old))
        stellar_att = ism * (old + birth * young)
        neb_att = ism * birth * neb
        intrinsic = old + young + neb
        total = stellar_att + neb_att
        # ∫ L_ν dν over the grid: ν Δln λ per bin
        dnu = C_AA_PER_S / arrays["wavelength_aa"] * arrays["dlnlam"]
        derived = dict(state["derived"])
        derived["luminosity_absorbed"] = jnp.sum((intrinsic - total) * dnu)
        return {**state, "sed": total, "sed_dust_attenuated": stellar_att, "sed_nebular": neb_att,
                "nebular_transmission": ism * birth, "derived": derived}

    def signature(self):
        return ("dust", self.law, self.t_bc_yr)


@dataclass(frozen=True)
class DustEmission:
    """Infrared emission of the dust that absorbed starlight (energy balance).

    Adds ``L_abs · s_ν`` to the running total, where ``L_abs`` is
    ``derived["luminosity_absorbed"]`` from :class:`DustAttenuation` (which must
    come first) and ``s_ν`` a spectrum of unit luminosity on the model grid
    (:mod:`tengri.physics.dust_emission`): ``dl07`` (Draine & Li 2007; parameters
    ``dust_qpah``, ``dust_umin``, ``dust_gamma``, fixed by default at BAGPIPES'
    2.0, 1.0, 0.01) or ``mbb`` (modified blackbody; ``dust_temperature_k``,
    ``dust_beta``). The emitted light is not attenuated again, as in BAGPIPES.
    Publishes ``sed_dust_ir`` (n_wave,) [erg/s/Hz] and ``luminosity_dust_ir`` [erg/s].
    """

    model: str = "dl07"

    name = "dust_emission"

    def __post_init__(self):
        if self.model not in dust_emission.DUST_EMISSION_MODELS:
            raise ParameterError(
                f"unknown dust emission model {self.model!r}; valid: {', '.join(dust_emission.DUST_EMISSION_MODELS)}"
            )

    def defaults(self):
        return dict(dust_emission.DUST_EMISSION_MODELS[self.model].default_priors)

    def arrays(self, wavelength_aa):
        if self.model != "dl07":
            return {}
        from tengri.data.dust_emission_grid import load_dust_emission_grid

        tables = dust_emission.dl07_tables(load_dust_emission_grid("dl07"), wavelength_aa)
        return {f"dl07_{k}": np.asarray(v) for k, v in tables._asdict().items()}

    def apply(self, state, theta, arrays):
        dnu = C_AA_PER_S / arrays["wavelength_aa"] * arrays["dlnlam"]  # the DustAttenuation weights
        if self.model == "dl07":
            tables = dust_emission.DL07Tables(
                *(arrays[f"dl07_{k}"] for k in dust_emission.DL07Tables._fields)
            )
            shape = dust_emission.dl07_lnu_per_unit_luminosity(
                theta["dust_qpah"], theta["dust_umin"], theta["dust_gamma"], tables, dnu
            )
        else:
            shape = dust_emission.modified_blackbody_lnu_per_unit_luminosity(
                theta["dust_temperature_k"], theta["dust_beta"], arrays["wavelength_aa"], dnu
            )
        sed_ir = state["derived"]["luminosity_absorbed"] * shape
        derived = dict(state["derived"])
        derived["luminosity_dust_ir"] = jnp.sum(sed_ir * dnu)
        return {**state, "sed": state["sed"] + sed_ir, "sed_dust_ir": sed_ir, "derived": derived}

    def signature(self):
        return ("dust_emission", self.model)
