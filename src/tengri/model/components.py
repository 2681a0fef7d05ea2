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
from tengri.params import Fixed, LogUniform, Normal, StudentT, Uniform
from tengri.physics import attenuation, dust_emission, nebular, sfh, sfh_continuity, sfh_hat, sfh_stochastic

__all__ = ["StarFormationHistory", "StellarPopulation", "NebularEmission", "DustAttenuation", "DustEmission",
           "ShockEmission", "AGNEmission", "RadioEmission", "XRayEmission"]

YR_PER_GYR = 1e9
C_AA_PER_S = 2.99792458e18


@dataclass(frozen=True)
class StarFormationHistory:
    """Mass formed in each SSP age bin, from one of three kinds of history.

    - a parametric family of :mod:`tengri.physics.sfh` (``constant``, ``exponential``,
      ``delayed``, ``lognormal``, ``dpl``, ``burst``);
    - ``continuity`` (:mod:`tengri.physics.sfh_continuity`, Leja et al. 2019):
      ``n_bins`` bins (default 7), free ``log_sfr_ratio_1 … log_sfr_ratio_{n_bins−1}``
      with default prior ``StudentT(0, 0.3, nu=2)``;
    - ``stochastic`` (:mod:`tengri.physics.sfh_stochastic`): the ``mean`` family
      (default ``delayed``, its own parameters and default priors) times
      ``10^x``, x a Gaussian field on ``n_grid`` cells (default 64) with PSD ``psd``
      (``drw`` default, or ``extended_regulator``); latent ``psd_xi_000 …`` (2 n_grid,
      ``Normal(0, 1)``) and PSD hyperparameters ``sfh_field_psd_*`` (default Fixed at
      ``sfh_stochastic.DEFAULT_PSD_VALUES``).

    All take ``stellar_mass`` (log10 formed mass, default ``Uniform(7, 13)``) and
    publish ``mass_formed``, ``sfr_10myr``, ``sfr_100myr`` [M☉/yr] and
    ``mass_weighted_age_gyr`` in ``derived``; the stochastic one also puts its field
    (n_grid,) [dex] in ``state["sfh_field_dex"]``. A user setting gives the family and
    options through :func:`parse_sfh_setting` (as ``SEDModel`` builds it).

    ``quadrature`` says how a parametric history becomes SSP weights: ``"bins"``
    (default) gives each SSP the exact mass formed in its age bin
    (:func:`tengri.physics.sfh.mass_formed_per_age_bin`); ``"hat"`` takes the SSP
    light linear in formation age between neighbouring ``ssp_age_yr`` and
    integrates the SFH exactly against it (:mod:`tengri.physics.sfh_hat`: constant,
    exponential, delayed, lognormal, burst), smooth (C1) in the SFH parameters. Only the mass
    per SSP changes: the birth-cloud shares and nebular age weights downstream stay
    per age bin, adequate because at the young ages where they matter the raw BC03
    SSP ages are only 0.02 dex apart.
    """

    family: str
    age_bin_edges_yr: np.ndarray  # (n_age + 1,)
    n_bins: int = 7
    n_grid: int = sfh_stochastic.DEFAULT_N_GRID
    psd: str = "drw"
    mean: str = "delayed"
    quadrature: str = "bins"
    ssp_age_yr: np.ndarray | None = None  # (n_age,), needed by quadrature="hat"

    name = "sfh"

    def __post_init__(self):
        if self.family == "continuity":
            sfh_continuity.check_n_bins(self.n_bins)
        elif self.family == "stochastic":
            sfh_stochastic.check_settings(self.n_grid, self.psd, self.mean)
        else:
            sfh.sfh_family(self.family)
        sfh_hat.check_quadrature(self.quadrature, self.family)
        if self.quadrature == "hat" and self.ssp_age_yr is None:
            raise ParameterError("sfh_quadrature='hat' needs the SSP ages (ssp_age_yr)")

    def defaults(self):
        mass = {"stellar_mass": Uniform(7.0, 13.0)}
        if self.family == "continuity":
            ratios = {name: StudentT(0.0, 0.3, 2.0) for name in sfh_continuity.ratio_names(self.n_bins)}
            return ratios | mass
        if self.family == "stochastic":
            hyper = {name: Fixed(value) for name, value in sfh_stochastic.DEFAULT_PSD_VALUES[self.psd].items()}
            xi = {name: Normal(0.0, 1.0) for name in sfh_stochastic.xi_names(self.n_grid)}
            return dict(sfh.SFH_FAMILIES[self.mean].default_priors) | mass | hyper | xi
        return dict(sfh.SFH_FAMILIES[self.family].default_priors) | mass

    def arrays(self, wavelength_aa):
        out = {"age_bin_edges_yr": np.asarray(self.age_bin_edges_yr, float)}
        if self.quadrature == "hat":
            out["ssp_age_yr"] = np.asarray(self.ssp_age_yr, float)
        return out

    def field_dex(self, theta, age_of_universe_yr):
        """The stochastic SFH's field x on its cells [dex], shape (n_grid,)."""
        xi = jnp.stack([theta[name] for name in sfh_stochastic.xi_names(self.n_grid)])
        hyper = {name: theta[name] for name in sfh_stochastic.PSD_PARAMETERS[self.psd]}
        dt_myr = sfh_stochastic.grid_step_yr(self.n_grid, age_of_universe_yr) / 1e6
        return sfh_stochastic.log_sfr_field_dex(
            xi, hyper.pop("sfh_field_psd_sigma"), hyper.pop("sfh_field_psd_tau_myr"), dt_myr, self.psd, **hyper
        )

    def apply(self, state, theta, arrays):
        age_u = state["age_of_universe_yr"]
        mass_formed = 10.0 ** theta["stellar_mass"]
        edges = arrays["age_bin_edges_yr"]
        derived = dict(state["derived"])
        derived["mass_formed"] = mass_formed
        windows = ((1e7, "sfr_10myr"), (1e8, "sfr_100myr"))
        extra = {}
        if self.family == "continuity":
            bins = sfh_continuity.bin_edges_yr(self.n_bins, age_u)
            ratios = jnp.stack([theta[n] for n in sfh_continuity.ratio_names(self.n_bins)])
            sfr = sfh_continuity.sfr_per_bin(ratios, bins, mass_formed)
            mass_per_age = sfh_continuity.mass_per_age_bin(sfr, bins, edges)
            for window_yr, key in windows:
                derived[key] = sfh_continuity.average_sfr_msun_per_yr(window_yr, sfr, bins)
            derived["mass_weighted_age_gyr"] = sfh_continuity.mass_weighted_age_gyr(sfr, bins)
        elif self.family == "stochastic":
            field = self.field_dex(theta, age_u)
            mean_params = {n: theta[n] for n in sfh.SFH_FAMILIES[self.mean].param_names}
            mass_per_age, sfrs = sfh_stochastic.mass_and_recent_sfr(
                field, self.mean, mean_params, edges, jnp.asarray([w for w, _ in windows]), mass_formed, age_u
            )
            for (_, key), value in zip(windows, sfrs):
                derived[key] = value
            derived["mass_weighted_age_gyr"] = sfh_stochastic.mass_weighted_age_gyr(
                field, self.mean, mean_params, age_u
            )
            extra["sfh_field_dex"] = field
        else:
            sfh_params = {n: theta[n] for n in sfh.SFH_FAMILIES[self.family].param_names}
            if self.quadrature == "hat":
                fractions = sfh_hat.mass_formed_per_ssp_age(self.family, sfh_params, arrays["ssp_age_yr"], age_u)
            else:
                fractions = sfh.mass_formed_per_age_bin(self.family, sfh_params, edges, age_u)
            mass_per_age = mass_formed * fractions
            for window_yr, key in windows:
                derived[key] = sfh.average_sfr_msun_per_yr(self.family, sfh_params, window_yr, mass_formed, age_u)
            derived["mass_weighted_age_gyr"] = sfh.mass_weighted_age_gyr(self.family, sfh_params, age_u)
        return {**state, **extra, "mass_per_age": mass_per_age, "derived": derived}

    def sfr_curve(self, theta, age_of_universe_yr, lookback_yr, component: str = "total"):
        """SFR [M☉/yr] at ``lookback_yr``; ``component="smooth"`` drops the stochastic field.

        For the parametric and continuity histories both components are the SFH itself.
        """
        if component not in ("total", "smooth"):
            raise ParameterError(f"component must be 'total' or 'smooth', got {component!r}")
        mass_formed = 10.0 ** theta["stellar_mass"]
        if self.family == "continuity":
            bins = sfh_continuity.bin_edges_yr(self.n_bins, age_of_universe_yr)
            ratios = jnp.stack([theta[n] for n in sfh_continuity.ratio_names(self.n_bins)])
            sfr = sfh_continuity.sfr_per_bin(ratios, bins, mass_formed)
            return sfh_continuity.sfr_msun_per_yr(lookback_yr, sfr, bins)
        if self.family == "stochastic":
            mean_params = {n: theta[n] for n in sfh.SFH_FAMILIES[self.mean].param_names}
            return sfh_stochastic.sfr_msun_per_yr(
                lookback_yr, self.field_dex(theta, age_of_universe_yr), self.mean, mean_params, mass_formed,
                age_of_universe_yr, component,
            )
        sfh_params = {n: theta[n] for n in sfh.SFH_FAMILIES[self.family].param_names}
        return sfh.sfr_msun_per_yr(self.family, sfh_params, lookback_yr, mass_formed, age_of_universe_yr)

    def signature(self):
        if self.family == "continuity":
            return ("sfh", self.family, self.n_bins)
        if self.family == "stochastic":
            return ("sfh", self.family, self.n_grid, self.psd, self.mean)
        return ("sfh", self.family, self.quadrature)


SFH_KINDS = (*sfh.SFH_FAMILIES, "continuity", "stochastic")
_SFH_SETTINGS = {"continuity": ("n_bins",), "stochastic": ("n_grid", "psd", "mean")}


def parse_sfh_setting(setting) -> tuple[str, dict]:
    """``(family, settings)`` of a user SFH setting: a name or a table of settings.

    ``"delayed"``, ``"continuity"``, ``"stochastic"``, … or e.g.
    ``{"family": "stochastic", "n_grid": 64, "psd": "drw", "mean": "delayed"}`` /
    ``{"family": "continuity", "n_bins": 7}``. ParameterError naming the bad key or
    value otherwise (values are checked by :class:`StarFormationHistory`).
    """
    if isinstance(setting, str):
        family, options = setting, {}
    elif isinstance(setting, dict):
        options = dict(setting)
        family = options.pop("family", None)
        if family is None:
            raise ParameterError(f"sfh settings need a 'family' (one of {', '.join(SFH_KINDS)}), got {setting!r}")
    else:
        raise ParameterError(f"sfh must be a family name or a table of settings, got {setting!r}")
    if family not in SFH_KINDS:
        raise ParameterError(f"unknown sfh {family!r}; valid: {', '.join(SFH_KINDS)}")
    accepted = _SFH_SETTINGS.get(family, ())
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ParameterError(
            f"sfh {family!r} does not take settings {unknown}; it takes {list(accepted) or 'none'}"
        )
    return family, options


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

    @staticmethod
    def surviving_mass_msun(mass_per_age, theta, arrays):
        """Mass still in stars and remnants [M☉], scalar: Σ_ages mass formed (n_age,) × the SSPs'
        surviving fraction at ``theta["metallicity"]``. Needs no spectrum."""
        i, t = _interp_weights(arrays["ssp_z"], theta["metallicity"])
        surviving = (1 - t) * arrays["ssp_surviving"][i] + t * arrays["ssp_surviving"][i + 1]
        return jnp.sum(mass_per_age * surviving)

    def apply(self, state, theta, arrays):
        grid = arrays["ssp_lnu"]  # (n_z, n_age, n_wave) per M☉ formed
        i, t = _interp_weights(arrays["ssp_z"], theta["metallicity"])
        lnu_per_msun = (1 - t) * grid[i] + t * grid[i + 1]
        mass = state["mass_per_age"]
        young_share = nebular.birth_cloud_fraction(arrays["age_bin_edges_yr"], self.t_bc_yr)
        derived = dict(state["derived"])
        derived["stellar_mass"] = self.surviving_mass_msun(mass, theta, arrays)
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
        from tengri.data.model_grid import nebular_grid_on

        tables = nebular.nebular_tables_numpy(nebular_grid_on(wavelength_aa), wavelength_aa)
        return {
            "neb_z": tables.metallicity_zsun,
            "neb_log_u": tables.log_u,
            "neb_total_lnu": tables.total_lnu,
            "neb_line_luminosity": tables.line_luminosity,
            "neb_age_bin_edges_yr": tables.age_bin_edges_yr,
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


def fixed_curve_on(law: str, wavelength_aa) -> np.ndarray:
    """A parameter-free attenuation curve k(λ) = A_λ/A_V on a model grid, shape (n_wave,).

    The curve's own (eager) values, computed once per grid, law and code, then
    read from the tengri cache (:func:`tengri.data.cache.cached_derived`): op by
    op it is ~15 small XLA programs to trace and load, ~0.05-0.1 s of a fresh
    process. The key holds the jax and jaxlib versions, whose kernels made the values.
    """
    import jax
    import jaxlib

    from tengri.data.cache import array_digest, cached_derived, code_digest

    wave = np.asarray(wavelength_aa, dtype=np.float64)
    curve = attenuation.attenuation_curve(law)
    key = (f"{law}|{array_digest(wave)}|code {code_digest(attenuation.__file__)}"
           f"|jax {jax.__version__} jaxlib {jaxlib.__version__}")
    return cached_derived(f"attenuation_{law}", key, lambda: {"k": np.asarray(curve(wave))})["k"]


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
        return {"dust_k": fixed_curve_on(self.law, wavelength_aa)}

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


# --- components beyond stars, nebulae and dust (energy sources of their own) -------------
def _frequency_widths_hz(arrays):
    """ν Δln λ per grid point [Hz]: the quadrature every component integrates L_ν with."""
    return C_AA_PER_S / arrays["wavelength_aa"] * arrays["dlnlam"]


def _intrinsic_sed(state):
    """Stars and nebular emission before dust [erg/s/Hz] (birth clouds' ionising light removed)."""
    sed = state["stellar_old"] + state["stellar_young"]
    return sed + state["sed_nebular_intrinsic"] if "sed_nebular_intrinsic" in state else sed


def _running_total(state):
    """The running total L_ν; without dust it starts as the intrinsic light."""
    return state["sed"] if "sed" in state else _intrinsic_sed(state)


def _check_settings(component: str, given: dict, accepted) -> dict:
    bad = sorted(set(given) - set(accepted))
    if bad:
        raise ParameterError(f"unknown {component} settings {bad}; valid: {sorted(accepted)}")
    return dict(given)


@dataclass(frozen=True)
class ShockEmission:
    """Fast radiative shocks: lines with shock ratios plus recombination continuum.

    Adds ``shock_fraction`` × the H II regions' Hβ luminosity in the line template
    of :mod:`tengri.physics.shock`, plus the same fraction of their nebular
    continuum (needs :class:`NebularEmission`). The shocked gas lies in the diffuse
    ISM: it is dimmed by the ISM attenuation curve only (A_V, not η A_V), and the
    luminosity its dust absorbs joins ``luminosity_absorbed`` so that
    :class:`DustEmission` (which must come after) re-emits it.
    Publishes ``sed_shock`` (after dust) and ``sed_shock_intrinsic`` [erg/s/Hz].
    """

    dust_law: str = "none"  # the model's attenuation curve, or "none"

    name = "shock"
    settings = ()

    def defaults(self):
        return {"shock_fraction": Uniform(0.0, 1.0)}

    def arrays(self, wavelength_aa):
        import jax

        from tengri.data.nebular_grid import load_nebular_grid
        from tengri.physics import shock

        grid = load_nebular_grid()
        matrix = np.asarray(jax.jit(nebular.line_lnu_matrix)(
            jnp.asarray(wavelength_aa, float), jnp.asarray(grid.line_wavelength_aa)))
        hbeta = np.asarray([str(n) == shock.HBETA_LINE for n in grid.line_names], float)
        return {
            "shock_line_matrix": matrix,  # (n_lines, n_wave): NebularEmission's deposition
            "shock_hbeta_selector": hbeta,
            "shock_template_lnu_per_hbeta": shock.shock_line_weights(grid.line_names) @ matrix,
        }

    def apply(self, state, theta, arrays):
        from tengri.physics import shock

        lines = state["line_luminosity"]
        continuum = state["sed_nebular_intrinsic"] - lines @ arrays["shock_line_matrix"]
        hbeta = lines @ arrays["shock_hbeta_selector"]
        intrinsic = shock.shock_lnu(theta["shock_fraction"], continuum, hbeta, arrays["shock_template_lnu_per_hbeta"])
        derived = dict(state["derived"])
        if self.dust_law == "none":
            dimmed = intrinsic
        else:
            dimmed = intrinsic * 10.0 ** (-0.4 * theta["av"] * _attenuation_k(self.dust_law, theta, arrays))
            derived["luminosity_absorbed"] = derived["luminosity_absorbed"] + jnp.sum(
                (intrinsic - dimmed) * _frequency_widths_hz(arrays))
        return {**state, "sed": _running_total(state) + dimmed, "sed_shock": dimmed,
                "sed_shock_intrinsic": intrinsic, "derived": derived}

    def signature(self):
        return ("shock", self.dust_law)


def _attenuation_k(law, theta, arrays):
    """A_λ/A_V of ``law`` on the grid, as DustAttenuation evaluates it."""
    curve = attenuation.attenuation_curve(law)
    if curve.param_names:
        return curve(arrays["wavelength_aa"], **{p: theta[p] for p in curve.param_names})
    return arrays["dust_k"]


@dataclass(frozen=True)
class AGNEmission:
    """Accretion disk and dusty torus of an AGN (:mod:`tengri.physics.agn`).

    The AGN's bolometric luminosity is ``agn_fraction`` × the host's intrinsic
    (dust-free) stellar + nebular luminosity on the model grid (as Prospector's
    ``fagn`` is relative to the stellar luminosity). A fraction
    ``agn_torus_covering`` of it is re-emitted by the torus, whose coldest dust is
    at ``agn_torus_temperature_k``; the rest leaves as disk light. Not attenuated
    by host dust. Publishes ``sed_agn`` (n_wave,) [erg/s/Hz] and in ``derived``
    ``luminosity_agn`` [erg/s] and ``agn_lnu_2500aa`` (the disk's L_ν at 2500 Å,
    before the torus) [erg/s/Hz].

    Settings: ``torus_hottest_temperature_k`` (1500, dust sublimation),
    ``torus_beta`` (emissivity index, 1.5), ``torus_n_temperatures`` (8).
    """

    torus_hottest_temperature_k: float = 1500.0
    torus_beta: float = 1.5
    torus_n_temperatures: int = 8

    name = "agn"
    settings = ("torus_hottest_temperature_k", "torus_beta", "torus_n_temperatures")

    def __post_init__(self):
        if not self.torus_hottest_temperature_k > 0:
            raise ParameterError(f"agn torus_hottest_temperature_k must be > 0, got {self.torus_hottest_temperature_k}")
        if int(self.torus_n_temperatures) != self.torus_n_temperatures or self.torus_n_temperatures < 2:
            raise ParameterError(f"agn torus_n_temperatures must be an integer ≥ 2, got {self.torus_n_temperatures}")

    def defaults(self):
        return {
            "agn_fraction": LogUniform(1e-4, 3.0),
            "agn_torus_covering": Fixed(0.5),
            "agn_torus_temperature_k": Fixed(100.0),
        }

    def arrays(self, wavelength_aa):
        from tengri.physics import agn

        return {
            "agn_disk_lnu": np.asarray(agn.accretion_disk_lnu_per_unit_luminosity(wavelength_aa)),
            "agn_disk_lnu_2500aa": np.asarray(agn.accretion_disk_lnu_per_unit_luminosity(np.array([2500.0])))[0],
        }

    def apply(self, state, theta, arrays):
        from tengri.physics import agn

        dnu = _frequency_widths_hz(arrays)
        luminosity = theta["agn_fraction"] * jnp.sum(_intrinsic_sed(state) * dnu)
        covering = theta["agn_torus_covering"]
        torus = agn.torus_lnu_per_unit_luminosity(
            theta["agn_torus_temperature_k"], self.torus_hottest_temperature_k, self.torus_beta,
            int(self.torus_n_temperatures), arrays["wavelength_aa"], dnu)
        sed_agn = luminosity * ((1.0 - covering) * arrays["agn_disk_lnu"] + covering * torus)
        derived = dict(state["derived"])
        derived["luminosity_agn"] = luminosity
        derived["agn_lnu_2500aa"] = luminosity * arrays["agn_disk_lnu_2500aa"]
        return {**state, "sed": _running_total(state) + sed_agn, "sed_agn": sed_agn, "derived": derived}

    def signature(self):
        return ("agn", self.torus_hottest_temperature_k, self.torus_beta, int(self.torus_n_temperatures))


@dataclass(frozen=True)
class RadioEmission:
    """Synchrotron (IR–radio correlation) and free–free radio continuum (:mod:`tengri.physics.radio`).

    Synchrotron is normalised to the 8–1000 µm luminosity of the host's dust
    emission (``sed_dust_ir``; without :class:`DustEmission`, to the absorbed
    luminosity, which dust re-emits in the infrared) through ``radio_qir`` and
    falls as ν^−``radio_alpha``. Free–free follows from the ionising-photon rate of
    the stars inside birth clouds (the light the nebular component reprocesses),
    counted on the SSP grid, and is added longward of ``free_free_min_wavelength_aa``
    (the nebular continuum's red end). Needs dust attenuation.
    Publishes ``sed_radio`` (n_wave,) [erg/s/Hz] and in ``derived``
    ``ionising_photon_rate`` [1/s], ``luminosity_ir_8_1000um`` [erg/s],
    ``lnu_synchrotron_1p4ghz`` [erg/s/Hz].

    Settings: ``electron_temperature_k`` (10⁴ K).
    """

    ssp_ionising_photons_per_msun: np.ndarray  # (n_z, n_age) Q(H) per M☉ formed [1/s]
    free_free_min_wavelength_aa: float = 3.6e8
    electron_temperature_k: float = 1e4

    name = "radio"
    settings = ("electron_temperature_k",)

    def __post_init__(self):
        if not self.electron_temperature_k > 0:
            raise ParameterError(f"radio electron_temperature_k must be > 0, got {self.electron_temperature_k}")

    def defaults(self):
        from tengri.physics import radio

        return {"radio_qir": Fixed(radio.BELL03_Q_IR), "radio_alpha": Fixed(0.8)}

    def arrays(self, wavelength_aa):
        from tengri.physics import radio

        return {
            "radio_q_per_msun": np.asarray(self.ssp_ionising_photons_per_msun, float),
            "radio_free_free_per_q": np.asarray(radio.free_free_lnu_per_ionising_photon_rate(
                self.electron_temperature_k, wavelength_aa, self.free_free_min_wavelength_aa)),
        }

    def apply(self, state, theta, arrays):
        from tengri.physics import radio

        dnu = _frequency_widths_hz(arrays)
        if "sed_dust_ir" in state:
            l_ir = jnp.sum(state["sed_dust_ir"] * radio.total_infrared_weights_hz(arrays["wavelength_aa"], dnu))
        else:
            l_ir = state["derived"]["luminosity_absorbed"]
        lnu_1p4 = radio.synchrotron_lnu_1p4ghz_erg_s_hz(l_ir, theta["radio_qir"])
        synchrotron = radio.synchrotron_lnu(lnu_1p4, theta["radio_alpha"], arrays["wavelength_aa"])
        i, t = _interp_weights(arrays["ssp_z"], theta["metallicity"])
        q_per_msun = (1 - t) * arrays["radio_q_per_msun"][i] + t * arrays["radio_q_per_msun"][i + 1]
        q_h = jnp.sum(state["mass_per_age"] * state["young_share"] * q_per_msun)
        sed_radio = synchrotron + q_h * arrays["radio_free_free_per_q"]
        derived = dict(state["derived"])
        derived.update(ionising_photon_rate=q_h, luminosity_ir_8_1000um=l_ir, lnu_synchrotron_1p4ghz=lnu_1p4)
        return {**state, "sed": _running_total(state) + sed_radio, "sed_radio": sed_radio, "derived": derived}

    def signature(self):
        return ("radio", self.free_free_min_wavelength_aa, self.electron_temperature_k,
                np.shape(self.ssp_ionising_photons_per_msun))


@dataclass(frozen=True)
class XRayEmission:
    """X-ray binaries (Lehmer et al. 2010) and, with an AGN, its corona via α_ox.

    See :mod:`tengri.physics.xray`. Binaries scale with ``derived`` ``stellar_mass``
    and ``sfr_100myr``; the AGN corona with ``agn_lnu_2500aa`` from
    :class:`AGNEmission` (which must come first). No free parameters; no X-ray
    absorption. Publishes ``sed_xray`` (n_wave,) [erg/s/Hz] and in ``derived``
    ``luminosity_xrb_2_10kev`` [erg/s] (and ``agn_lnu_2kev`` [erg/s/Hz]).

    Settings: ``binaries`` (True), ``photon_index_binaries`` (2.0),
    ``photon_index_agn`` (1.9); ``agn`` is set by the model when the AGN is on.
    """

    agn: bool = False
    binaries: bool = True
    photon_index_binaries: float = 2.0
    photon_index_agn: float = 1.9

    name = "xray"
    settings = ("binaries", "photon_index_binaries", "photon_index_agn")

    def __post_init__(self):
        if not (self.agn or self.binaries):
            raise ParameterError("xray: binaries=False and no AGN leaves nothing to emit; turn xray off instead")

    def defaults(self):
        return {}

    def arrays(self, wavelength_aa):
        from tengri.physics import xray

        return {
            "xrb_lnu_per_lx": np.asarray(xray.power_law_lnu_per_2_10kev_luminosity(
                self.photon_index_binaries, wavelength_aa)),
            "xagn_lnu_per_l2kev": np.asarray(xray.power_law_lnu(self.photon_index_agn, 2.0, wavelength_aa)),
        }

    def apply(self, state, theta, arrays):
        from tengri.physics import xray

        derived = dict(state["derived"])
        sed_xray = jnp.zeros_like(arrays["wavelength_aa"])
        if self.binaries:
            l_x = xray.xray_binary_luminosity_2_10kev_erg_s(derived["stellar_mass"], derived["sfr_100myr"])
            derived["luminosity_xrb_2_10kev"] = l_x
            sed_xray = sed_xray + l_x * arrays["xrb_lnu_per_lx"]
        if self.agn:
            l_2kev = xray.agn_lnu_2kev_from_2500aa(derived["agn_lnu_2500aa"])
            derived["agn_lnu_2kev"] = l_2kev
            sed_xray = sed_xray + l_2kev * arrays["xagn_lnu_per_l2kev"]
        return {**state, "sed": _running_total(state) + sed_xray, "sed_xray": sed_xray, "derived": derived}

    def signature(self):
        return ("xray", self.agn, self.binaries, self.photon_index_binaries, self.photon_index_agn)
