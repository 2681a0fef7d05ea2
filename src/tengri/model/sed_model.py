"""SEDModel: parameters → a chain of physical components → SED → photometry.

The model does per-galaxy work once (:meth:`SEDModel.prepare`: redshift, the band
matrix with IGM and luminosity distance folded in) so a likelihood call is one SFH
evaluation, one metallicity interpolation, a few dust products and one
``(n_band, n_wave) @ (n_wave,)`` projection. At a fixed redshift with a dust curve of
fixed shape, ``prepare`` goes further and projects every source through the bands
(:mod:`tengri.model.band_tables`): a likelihood call then has no wavelength axis
(:attr:`SEDModel.uses_band_tables`); the chain stays the reference and serves the
predictions.

Everything that is the same for all galaxies of a configuration (grids, filter
curves) travels as arrays in ``data_args["grids"]`` rather than as compile-time
constants, and everything galaxy-specific (data, priors, fixed values, the band
matrix) in the rest of ``data_args``: the log-likelihood is one Python function per
configuration, so compiled inference engines are shared across galaxies.
"""

from __future__ import annotations

import hashlib
import warnings
from functools import cached_property
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import DataError, ParameterError
from tengri.inference.problem import Problem
from tengri.model import band_tables
from tengri.model import components as comp
from tengri.model import spectrum as spectrum_model
from tengri.model.observation import Photometry, Spectroscopy, as_observation
from tengri.params import Fixed, Parameters, Prior, Uniform
from tengri.physics import attenuation, bandpass, cosmology, igm
from tengri.physics import dust_emission as dust_emission_physics
from tengri.physics import nebular as nebular_physics
from tengri.physics import sfh as sfh_physics

__all__ = ["SEDModel", "SED_COMPONENT_SUM_KEYS", "SFH_DERIVED_KEYS"]

SED_COMPONENT_SUM_KEYS = ("sed_attenuated", "sed_nebular", "sed_shock", "sed_dust_ir", "sed_agn", "sed_radio",
                          "sed_xray")
"""The keys of :meth:`SEDModel.sed_components` whose sum is ``sed_total`` (those present)."""

SFH_DERIVED_KEYS = ("stellar_mass", "mass_formed", "sfr_10myr", "sfr_100myr", "ssfr", "mass_weighted_age_gyr")
"""Derived quantities that need only the SFH and the SSPs' surviving mass (no spectrum):
:meth:`SEDModel.derived_quantities` computes a subset of these without the component chain."""

_DUST_LAWS = ("none", *attenuation.ATTENUATION_CURVES)
_IGM_MODELS = ("inoue14", "none")
_GYR = 1e9


class SEDModel:
    """A galaxy SED model: parameters with priors and a chain of physical components.

    Parameters
    ----------
    parameters : Parameters
        Free and fixed parameters. Parameters a component needs but that are not
        given take the component's default prior (see :meth:`default_priors`);
        ``redshift`` has no default and must be given (fixed, a prior, or per galaxy).
    observation : Photometry, Spectroscopy or (Photometry, Spectroscopy), optional
        What is observed; needed for :meth:`predict_photometry`,
        :meth:`predict_spectrum` and fitting. A pair becomes a
        :class:`tengri.model.Joint` (``model.observation.kind == "joint"``). With
        a spectrum the model adds ``veldisp_kms`` (σ [km/s], default prior
        Uniform(10, 400)) and, for ``eline_mode="fitted"``, ``eline_scale_<line>``
        (default LogUniform(0.1, 10)); its default wavelength grid gets the SSP's
        full resolution over the rest-frame range the spectrum can reach.
    sfh : str or dict
        Star-formation history: a parametric family (``constant``, ``exponential``,
        ``delayed``, ``lognormal``, ``dpl``, ``burst``), ``continuity`` (Leja et
        al. 2019, non-parametric) or ``stochastic`` (a mean family times a
        Gaussian random field with a power spectrum), or a table of settings, e.g.
        ``{"family": "continuity", "n_bins": 7}`` or ``{"family": "stochastic",
        "n_grid": 64, "psd": "drw" | "extended_regulator", "mean": "delayed"}``
        (see ``components.StarFormationHistory``).
    sfh_quadrature : str
        How a parametric SFH becomes SSP weights: ``"bins"`` (default; each SSP
        gets the mass formed in its age bin, so the SED has kinks in the SFH
        parameters where a sharp SFH crosses a bin edge) or ``"hat"`` (SSP light
        linear in formation age, the SFH integrated exactly against it: smooth in
        the parameters; every parametric family but ``dpl``;
        see ``tengri.physics.sfh_hat``).
    ssp_age_step_dex : float, optional
        Keep only the SSP ages about this far apart in log age [dex]
        (``SSPGrid.sparse_ages``: the grid's own SSPs, e.g. 106 of BC03's 221 at
        0.05). Needs ``sfh_quadrature="hat"``, which interpolates the SSPs linearly
        in formation age between the kept ones; each likelihood call then costs
        about as many fewer operations (docs/configuration.md for the accuracy).
    dust : str
        Attenuation curve, one of ``tengri.physics.attenuation.ATTENUATION_CURVES``
        (``calzetti`` — Calzetti et al. 2000 —, ``cardelli``, ``smc``,
        ``kriek_conroy``, ``salim``, ``cf00``; aliases ``kc13``, ``cardelli89``,
        ``salim18``) or ``none``; stars younger than
        ``t_bc_yr`` see ``dust_eta`` times more (see ``components.DustAttenuation``).
    nebular : bool
        Nebular continuum and lines from the Cloudy grids (parameter ``log_u``).
    dust_emission : bool or str
        Infrared re-emission of the absorbed light, with energy balance (see
        ``components.DustEmission``): ``False``/``"none"``, ``True`` or ``"dl07"``
        (Draine & Li 2007; ``dust_qpah``, ``dust_umin``, ``dust_gamma`` fixed by
        default at BAGPIPES' 2.0, 1.0, 0.01, which BAGPIPES always adds when dust
        is on) or ``"mbb"`` (modified blackbody; ``dust_temperature_k``,
        ``dust_beta``). Needs a dust law other than ``none``.
    igm : str
        ``inoue14`` (Inoue et al. 2014) or ``none``.
    cosmology : str or dict or FlatLambdaCDM
        ``"planck18"`` (default) or ``{"h0": 70, "om0": 0.3}``.
    ssp : tengri.data.ssp.SSPGrid, optional
        A user SSP grid; default the BC03 MILES grid shipped with bagpipes.
    wavelength_aa : array, optional
        Rest-frame model grid [Å]; default a coarse grid suited to photometry.
    t_bc_yr : float
        Birth-cloud lifetime [yr] (default 1e7).
    per_galaxy : tuple of str
        Fixed parameters whose value must be given for each galaxy (e.g. a
        catalog redshift column); :meth:`prepare` refuses to run without them.
    agn : bool or dict
        Accretion disk + dusty torus (``components.AGNEmission``): ``agn_fraction``
        (AGN / host intrinsic bolometric luminosity, default LogUniform(1e-4, 3)),
        ``agn_torus_covering`` (Fixed(0.5)), ``agn_torus_temperature_k``
        (coldest torus dust, Fixed(100)); a dict gives its settings.
    radio : bool or dict
        Synchrotron from the IR–radio correlation + free–free
        (``components.RadioEmission``): ``radio_qir`` (Fixed(2.64), Bell 2003),
        ``radio_alpha`` (Fixed(0.8)). Needs a dust law. Extends the default grid
        to 10 m (30 MHz).
    xray : bool or dict
        X-ray binaries (Lehmer et al. 2010) and, with ``agn``, the AGN corona via
        α_ox (``components.XRayEmission``); no free parameters, no absorption.
        Extends the default grid down to 1 Å (12.4 keV).
    shock : bool or dict
        Fast radiative shocks (``components.ShockEmission``): ``shock_fraction``
        (shock Hβ / H II-region Hβ, default Uniform(0, 1)). Needs ``nebular``.

    The published parts of the SED are listed in :meth:`sed_components`. With
    any of ``agn``, ``radio``, ``xray``, ``shock`` on, the likelihood runs the
    component chain (no band tables, see :attr:`uses_band_tables`).
    """

    def __init__(
        self,
        parameters: Parameters,
        observation: Photometry | None = None,
        *,
        sfh: str = "delayed",
        sfh_quadrature: str = "bins",
        ssp_age_step_dex: float | None = None,
        dust: str = "calzetti",
        nebular: bool = True,
        dust_emission: bool | str = False,
        igm: str = "inoue14",
        cosmology: Any = "planck18",
        ssp=None,
        wavelength_aa=None,
        t_bc_yr: float = 1e7,
        per_galaxy: tuple[str, ...] = (),
        agn: bool | Mapping[str, Any] = False,
        radio: bool | Mapping[str, Any] = False,
        xray: bool | Mapping[str, Any] = False,
        shock: bool | Mapping[str, Any] = False,
    ):
        from tengri.data.model_grid import ssp_grid_on
        from tengri.data.ssp import load_ssp_grid, photometry_wavelength_grid

        if not isinstance(parameters, Parameters):
            raise ParameterError(f"parameters must be a tengri.Parameters, got {type(parameters).__name__}")
        sfh, sfh_options = comp.parse_sfh_setting(sfh)
        dust = _DUST_LAW_ALIASES.get(dust, dust)
        if dust not in _DUST_LAWS:
            raise ParameterError(
                f"unknown dust law {dust!r}; valid: {', '.join(_DUST_LAWS)} "
                f"(aliases: {', '.join(f'{a}={n}' for a, n in _DUST_LAW_ALIASES.items())})"
            )
        dust_emission = _dust_emission_model(dust_emission)
        if dust_emission is not None and dust == "none":
            raise ParameterError(
                f"dust_emission={dust_emission!r} needs dust attenuation to re-emit; "
                f"dust='none' absorbs nothing (choose a dust law or dust_emission=False)"
            )
        if igm not in _IGM_MODELS:
            raise ParameterError(f"unknown igm model {igm!r}; valid: {', '.join(_IGM_MODELS)}")
        self.observation = as_observation(observation)
        self.photometry = getattr(self.observation, "photometry", self.observation)
        self.photometry = self.photometry if isinstance(self.photometry, Photometry) else None
        self.spectroscopy = getattr(self.observation, "spectroscopy", self.observation)
        self.spectroscopy = self.spectroscopy if isinstance(self.spectroscopy, Spectroscopy) else None
        self.sfh = sfh
        self._sfh_options = sfh_options
        self.sfh_quadrature = sfh_quadrature
        self.dust = dust
        self.nebular = bool(nebular)
        self.dust_emission = dust_emission  # None or a DUST_EMISSION_MODELS name
        self.igm = igm
        self.cosmo = _cosmology(cosmology)
        self.t_bc_yr = float(t_bc_yr)
        self.agn, self.radio, self.xray, self.shock = (
            _component_settings(name, value, cls)
            for name, value, cls in (("agn", agn, comp.AGNEmission), ("radio", radio, comp.RadioEmission),
                                     ("xray", xray, comp.XRayEmission), ("shock", shock, comp.ShockEmission))
        )  # None (off) or a dict of the component's settings
        if self.radio is not None and dust == "none":
            raise ParameterError("radio=True needs dust attenuation: synchrotron follows the infrared "
                                 "luminosity of the dust (choose a dust law, ideally with dust_emission)")
        if self.shock is not None and not self.nebular:
            raise ParameterError("shock=True needs nebular=True: shock lines are scaled to the H II regions' Hβ")

        # the packaged grid on the default photometric grid: rebinned once, then read from the tengri cache
        packaged = ssp is None and wavelength_aa is None and self.spectroscopy is None
        full = ssp if ssp is not None else (None if packaged else load_ssp_grid())
        wave = photometry_wavelength_grid() if wavelength_aa is None else np.asarray(wavelength_aa, float)
        if wavelength_aa is None:  # X-rays and radio lie beyond the SSPs: extended with zeros
            wave = _extended_grid(wave, _XRAY_MIN_WAVELENGTH_AA if self.xray is not None else None,
                                  _RADIO_MAX_WAVELENGTH_AA if self.radio is not None else None)
        z_range = None
        if self.spectroscopy is not None:
            z_range = spectrum_model.redshift_range(self.spectroscopy, parameters["redshift"]
                                                    if "redshift" in parameters else None, "redshift" in per_galaxy)
            if wavelength_aa is None:
                wave = spectrum_model.spectroscopic_wavelength_grid(
                    wave, full.wavelength_aa, *spectrum_model.rest_range_aa(self.spectroscopy, z_range))
        if packaged:
            self.ssp = ssp_grid_on(wave)
        else:
            self.ssp = full.resampled(wave) if not np.array_equal(wave, full.wavelength_aa) else full
        if ssp_age_step_dex is not None:
            if sfh_quadrature != "hat":
                raise ParameterError(
                    f"ssp_age_step_dex needs sfh_quadrature='hat' (got {sfh_quadrature!r}): with 'bins' each kept "
                    "SSP would stand for its whole, wider age bin"
                )
            self.ssp = self.ssp.sparse_ages(float(ssp_age_step_dex))
        self.wavelength_aa = np.asarray(self.ssp.wavelength_aa, float)

        self.components = self._build_components()
        self.parameters = self._complete_parameters(parameters)
        oldest_gyr = self._oldest_lookback_gyr()
        if oldest_gyr is not None:  # SSPs older than any history can reach: off every likelihood call
            trimmed = self.ssp.without_ages_beyond(oldest_gyr * _GYR)
            if trimmed is not self.ssp:
                self.ssp = trimmed
                self.components = self._build_components()
        self.per_galaxy = tuple(per_galaxy)
        not_fixed = [n for n in self.per_galaxy if n not in self.parameters.fixed_values]
        if not_fixed:
            raise ParameterError(f"per_galaxy parameters {not_fixed} must be Fixed in parameters")
        self._spectrum_plan = None
        if self.spectroscopy is not None:
            self._spectrum_plan = spectrum_model.SpectrumPlan.build(
                self, self.spectroscopy, _veldisp_bounds(self.parameters[spectrum_model.VELDISP_PARAMETER]), z_range)

    # --- construction -----------------------------------------------------------------
    def _build_components(self):
        chain = [
            comp.StarFormationHistory(self.sfh, self.ssp.age_bin_edges_yr, quadrature=self.sfh_quadrature,
                                      ssp_age_yr=self.ssp.age_yr, **self._sfh_options),
            comp.StellarPopulation(t_bc_yr=self.t_bc_yr),
        ]
        if self.nebular:
            chain.append(comp.NebularEmission(t_bc_yr=self.t_bc_yr))
        if self.dust != "none":
            chain.append(comp.DustAttenuation(law=self.dust, t_bc_yr=self.t_bc_yr))
        if self.shock is not None:  # before DustEmission, which re-emits what dust takes from it
            chain.append(comp.ShockEmission(dust_law=self.dust, **self.shock))
        if self.dust_emission is not None:
            chain.append(comp.DustEmission(model=self.dust_emission))
        if self.agn is not None:
            chain.append(comp.AGNEmission(**self.agn))
        if self.radio is not None:
            chain.append(comp.RadioEmission(self._ssp_ionising_photons_per_msun(), _nebular_red_end_aa(),
                                            **self.radio))
        if self.xray is not None:
            chain.append(comp.XRayEmission(agn=self.agn is not None, **self.xray))
        return tuple(chain)

    def _oldest_lookback_gyr(self) -> float | None:
        """The oldest lookback time [Gyr] at which this model's SFH can form stars, or None if unbounded.

        The age of the universe at the lowest redshift the model allows (a
        per-galaxy redshift is configured as 0) for the families that start at the
        Big Bang (``lognormal``, ``dpl``); the upper bound of the ``age_gyr`` prior
        (resolved there) for those that start ``age_gyr`` ago. None for the
        continuity and stochastic histories and for an unbounded ``age_gyr`` prior.
        """
        if self.sfh not in sfh_physics.SFH_FAMILIES:  # continuity, stochastic
            return None
        z_bounds = _prior_bounds(self.parameters["redshift"])
        z_low = max(0.0, z_bounds[0]) if z_bounds is not None else 0.0
        universe_gyr = float(cosmology.age_of_universe_gyr_numpy(z_low, self.cosmo))
        if "age_gyr" not in sfh_physics.SFH_FAMILIES[self.sfh].param_names:  # from the Big Bang
            return universe_gyr
        prior = self.parameters["age_gyr"]
        if getattr(prior, "high", None) == "age_of_universe":
            return universe_gyr
        bounds = _prior_bounds(prior)
        return None if bounds is None else float(bounds[1])

    def _ssp_ionising_photons_per_msun(self) -> np.ndarray:
        """Q(H) [photons/s per M☉ formed] of each SSP, shape (n_z, n_age), counted on the model grid."""
        from tengri.physics import radio

        weights = np.asarray(radio.ionising_photon_weights(self.wavelength_aa, bandpass.log_wavelength_widths(
            self.wavelength_aa)))
        ionising = weights > 0
        return np.asarray(self.ssp.lnu)[..., ionising] @ weights[ionising]

    def default_priors(self) -> dict[str, Prior]:
        """Every parameter the components need, with its default prior."""
        out: dict[str, Prior] = {}
        for c in self.components:
            out.update(c.defaults())
        if self.spectroscopy is not None:
            out.update(_spectroscopy_defaults(self.spectroscopy, self.nebular))
        return out

    def _complete_parameters(self, given: Parameters) -> Parameters:
        needed = self.default_priors()
        known = set(needed) | {"redshift"}
        unused = [n for n in given.names if n not in known]
        if unused:
            raise ParameterError(
                f"parameters {unused} are not used by this model; it takes {sorted(known)}"
            )
        if "redshift" not in given:
            raise ParameterError(
                "parameter 'redshift' is required: give Fixed(z), a prior, or a per-galaxy value"
            )
        merged = {"redshift": given["redshift"]}
        for name, prior in needed.items():
            merged[name] = given[name] if name in given else prior
        return Parameters(merged)

    @classmethod
    def from_config(cls, config, observation: Photometry | None = None) -> "SEDModel":
        """Build a model from a TOML file path or an already-parsed dict.

        See :mod:`tengri.model.config` for the format.
        """
        from tengri.model.config import model_from_config

        return model_from_config(config, observation=observation)[0]

    # --- signatures and shared arrays ------------------------------------------------------
    def compile_signature(self) -> tuple:
        """Hashable description of everything that changes compiled code.

        Two models with equal signatures can share compiled engines: components,
        free parameter names and prior kinds, fixed parameter names, grid shapes,
        observation and cosmology (H0, Ω_m are compile-time constants of the
        distance and age integrals), and the SSP age bins (the band tables split
        the ages into young and old ones, and pick the nebular ages, at compile time).
        """
        obs = self.observation.signature() if self.observation is not None else None
        edges = np.ascontiguousarray(self.ssp.age_bin_edges_yr, dtype=np.float64)
        return (
            tuple(c.signature() for c in self.components),
            ("cosmology", float(self.cosmo.h0), float(self.cosmo.om0)),
            self.parameters.signature(),
            self.ssp.lnu.shape,
            ("ssp_age_bin_edges_yr", hashlib.sha256(edges.tobytes()).hexdigest()[:16]),
            self.igm,
            obs,
        )

    @cached_property
    def grids(self) -> dict:
        """Arrays shared by every galaxy (passed as data, not constants)."""
        # device_put, not jnp.asarray: the latter is an XLA program per array in a fresh process
        out = {
            "ssp_lnu": np.asarray(self.ssp.lnu, np.float64),
            "ssp_z": np.asarray(self.ssp.metallicity_zsun, np.float64),
            "wavelength_aa": np.asarray(self.wavelength_aa),
            "ssp_surviving": np.asarray(self.ssp.surviving_mass_fraction, np.float64),
            "dlnlam": np.asarray(bandpass.log_wavelength_widths(self.wavelength_aa)),
        }
        for c in self.components:
            out.update(c.arrays(self.wavelength_aa))
        if self.photometry is not None:
            out["filter_wave_aa"], out["filter_trans"] = bandpass.pack_filters(self.photometry.filters)
        return jax.device_put(out)

    # --- the forward model (pure) ------------------------------------------------------
    def _initial_state(self, theta: Mapping[str, jax.Array]) -> dict:
        return {"age_of_universe_yr": cosmology.age_of_universe_gyr(theta["redshift"], self.cosmo) * _GYR,
                "derived": {}}

    def _run_chain(self, theta: Mapping[str, jax.Array], grids: dict) -> dict:
        state = self._initial_state(theta)
        for c in self.components:
            state = c.apply(state, theta, grids)
        if "sed" not in state:  # no dust: the total is the intrinsic light
            sed = state["stellar_old"] + state["stellar_young"]
            if "sed_nebular_intrinsic" in state:
                sed = sed + state["sed_nebular_intrinsic"]
            state = {**state, "sed": sed}
        return {**state, "derived": _with_ssfr(state["derived"])}

    def _band_matrix(self, z, grids):
        wave_obs = self.wavelength_aa * (1.0 + z)
        igm_t = (
            igm.igm_transmission_inoue14(wave_obs, z) if self.igm == "inoue14" else jnp.ones_like(wave_obs)
        )
        return bandpass.band_matrix(
            z,
            cosmology.luminosity_distance_cm(z, self.cosmo),
            jnp.asarray(self.wavelength_aa),
            grids["dlnlam"],
            grids["filter_wave_aa"],
            grids["filter_trans"],
            igm_t,
        )

    @cached_property
    def _n_igm_columns(self) -> int:
        """Rest-frame grid points the IGM can dim: bluer than Lyα (×1.001, clear of rounding)."""
        return int(np.searchsorted(self.wavelength_aa, igm.LYMAN_ALPHA_AA * 1.001))

    def _redshift_terms(self, z: float) -> tuple[np.float64, np.float64, np.ndarray]:
        """d_L [cm], age of the universe [Gyr] and the IGM transmission of the first
        :attr:`_n_igm_columns` grid points (exactly 1 redward) at redshift ``z``.

        On the host (numpy paths of the same formulae): no XLA program per model.
        Row 0 of :meth:`_redshift_terms_many`, so that :meth:`prepare` and
        :meth:`prepare_batch` agree to the last bit: numpy evaluates a 0-d input with
        scalar math, ``(1 + z) ** -1.5`` and ``arcsinh`` in libm, and an array with its
        SIMD loops, which differ in the last bit for ~4% of redshifts (AVX-512 host).
        An ulp in the age prior's bound changes a MAP's iterates, and on the rough
        short-τ ridge L-BFGS turns such ulps into ~1e-3 in the parameters.
        """
        d_l, age_gyr, igm_t = self._redshift_terms_many(np.asarray([z], dtype=np.float64))
        return d_l[0], age_gyr[0], igm_t[0]

    @cached_property
    def _numpy_filters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ln λ bin widths and packed filter curves as numpy arrays (for :meth:`_band_matrix_at`)."""
        return (bandpass.log_wavelength_widths(self.wavelength_aa), *bandpass.pack_filters(self.photometry.filters))

    def _band_matrix_at(self, z: float, terms=None) -> np.ndarray:
        """The band matrix at a known redshift, in numpy (shape (n_band, n_wave)); what
        :meth:`_band_matrix` gives, computed on the host. ``terms``: :meth:`_redshift_terms` at z."""
        d_l, _, igm_blue = self._redshift_terms(float(z)) if terms is None else terms
        igm_t = np.ones(self.wavelength_aa.size)
        igm_t[: self._n_igm_columns] = np.asarray(igm_blue)
        dlnlam, filter_wave, filter_trans = self._numpy_filters
        return bandpass.band_matrix_numpy(z, np.float64(d_l), self.wavelength_aa, dlnlam, filter_wave, filter_trans,
                                          igm_t)

    def _photometry(self, theta, grids, band_matrix=None):
        state = self._run_chain(theta, grids)
        w = self._band_matrix(theta["redshift"], grids) if band_matrix is None else band_matrix
        return w @ state["sed"]

    # --- user-facing predictions (accept dicts of scalars or of (n,) arrays) ---------------
    def _values(self, params: Mapping[str, Any]) -> tuple[dict, tuple]:
        values = {}
        for name in self.parameters.names:
            if name in params:
                values[name] = jnp.asarray(params[name], jnp.float64)
            elif name in self.parameters.fixed_values:
                values[name] = jnp.asarray(self.parameters.fixed_values[name], jnp.float64)
            else:
                raise ParameterError(f"value missing for parameter {name!r}")
        shapes = {v.shape for v in values.values()} - {()}
        if len(shapes) > 1:
            raise ParameterError(f"parameter arrays have different shapes: {shapes}")
        batch = shapes.pop() if shapes else ()
        values = {k: jnp.broadcast_to(v, batch) for k, v in values.items()}
        return values, batch

    def _map(self, fn, params):
        values, batch = self._values(params)
        flat = {k: v.reshape(-1) for k, v in values.items()}
        out = self._jitted(fn)(flat, self.grids)
        return jax.tree_util.tree_map(lambda a: np.asarray(a).reshape(batch + a.shape[1:]), out)

    @cached_property
    def _jit_cache(self):
        return {}

    def _jitted(self, fn):
        if fn not in self._jit_cache:
            self._jit_cache[fn] = jax.jit(jax.vmap(getattr(self, fn), in_axes=(0, None)))
        return self._jit_cache[fn]

    def predict_photometry(self, params: Mapping[str, Any]) -> np.ndarray:
        """Model band fluxes f_ν [erg/s/cm²/Hz], shape (n_band,) or (n, n_band)."""
        if self.photometry is None:
            raise ParameterError("predict_photometry needs an observation with Photometry")
        return self._map("_photometry", params)

    def _sed(self, theta, grids):
        state = self._run_chain(theta, grids)
        z = theta["redshift"]
        dl = cosmology.luminosity_distance_cm(z, self.cosmo)
        wave_obs = self.wavelength_aa * (1 + z)
        igm_t = igm.igm_transmission_inoue14(wave_obs, z) if self.igm == "inoue14" else 1.0
        fnu = state["sed"] * (1 + z) / (4 * jnp.pi * dl**2) * igm_t
        return {"lnu_rest": state["sed"], "fnu_obs": fnu, "wavelength_obs_aa": wave_obs}

    def predict_sed(self, params: Mapping[str, Any]) -> dict:
        """Rest-frame L_ν and observed f_ν on the model grid.

        Returns
        -------
        dict
            ``wavelength_rest_aa`` (n_wave,) [Å]; ``lnu_rest`` (..., n_wave)
            [erg/s/Hz]; ``wavelength_obs_aa`` (..., n_wave) [Å]; ``fnu_obs``
            (..., n_wave) [erg/s/cm²/Hz] including IGM absorption.
        """
        out = self._map("_sed", params)
        out["wavelength_rest_aa"] = self.wavelength_aa.copy()
        return out

    def _sfh_derived(self, theta, grids):
        """:data:`SFH_DERIVED_KEYS` from the SFH and the SSPs' surviving mass alone, by the
        chain's own code (its first component, StellarPopulation's mass, the chain's sSFR):
        no spectrum is built."""
        sfh_state = self.components[0].apply(self._initial_state(theta), theta, grids)
        derived = dict(sfh_state["derived"])
        derived["stellar_mass"] = comp.StellarPopulation.surviving_mass_msun(sfh_state["mass_per_age"], theta, grids)
        return _with_ssfr(derived)

    def _derived(self, theta, grids):
        state = self._run_chain(theta, grids)
        if self._spectrum_plan is None:
            return state["derived"]
        plan = self._spectrum_plan
        fluxes = plan.line_fluxes(theta, state, grids)[plan.named] * plan.named_scales(theta)
        names = self.spectroscopy.line_names
        return {**state["derived"], **{f"eline_flux_{n}": fluxes[i] for i, n in enumerate(names)}}

    def _spectrum(self, theta, grids, ctx):
        return self._spectrum_plan.predict(theta, self._run_chain(theta, grids), grids, ctx)

    def predict_spectrum(self, params: Mapping[str, Any], components: bool = False, wavelength_aa=None):
        """Model spectrum on the Spectroscopy's observed pixels, in its ``flux_unit``.

        The rest-frame SED (fine grid), redshifted, dimmed by the luminosity distance
        and the IGM, broadened by ``veldisp_kms`` and the instrument's LSF (Gaussians
        in ln λ, flux-conserving, integrated over each pixel), with every Cloudy line
        as a Gaussian of the combined width (see :mod:`tengri.model.spectrum`). With
        ``eline_mode="marginalized"`` the named lines are left out (their amplitudes
        belong to the likelihood).

        Parameters
        ----------
        params : mapping
            Parameter values (scalars, or (n,) arrays for n spectra).
        components : bool
            Return a dict of the parts instead of the flux alone.
        wavelength_aa : array (n_pix,), optional
            Other pixel centres of the same length (e.g. one catalog galaxy's).

        Returns
        -------
        numpy.ndarray, shape (n_pix,) or (n, n_pix)
            f_λ [erg/s/cm²/Å] or f_ν in the Spectroscopy's unit, pixel averages.
        dict, with ``components=True``
            ``flux``, ``continuum`` (n_pix,); ``line_flux`` (n_named,) [erg/s/cm²]
            of the named lines after dust and IGM; ``line_templates``
            (n_named, n_pix) their pixel values per erg/s/cm²; ``line_names``,
            ``line_wavelengths_aa`` (rest) and ``wavelength_aa`` (pixels).
        """
        if self.spectroscopy is None:
            raise ParameterError("predict_spectrum needs an observation with Spectroscopy")
        ctx = self._spectrum_plan.context(wavelength_aa)
        values, batch = self._values(params)
        flat = {k: v.reshape(-1) for k, v in values.items()}
        if "_spectrum_ctx" not in self._jit_cache:
            self._jit_cache["_spectrum_ctx"] = jax.jit(jax.vmap(self._spectrum, in_axes=(0, None, None)))
        out = self._jit_cache["_spectrum_ctx"](flat, self.grids, ctx)
        out = {k: np.asarray(a).reshape(batch + a.shape[1:]) for k, a in out.items()}
        if not components:
            return out["flux"]
        lines = self.spectroscopy.lines
        return {"flux": out["flux"], "continuum": out["continuum"], "line_flux": out["named_line_flux"],
                "line_templates": out["named_line_templates"], "line_names": lines.names,
                "line_wavelengths_aa": lines.wavelength_aa.copy(), "wavelength_aa": np.asarray(ctx["wavelength_aa"])}

    def _components(self, theta, grids):
        state = self._run_chain(theta, grids)
        out = {"sed_total": state["sed"], "sed_intrinsic": comp._intrinsic_sed(state),
               "sed_stellar_intrinsic": jnp.sum(state["lnu_age"], axis=0)}
        if "sed_dust_attenuated" in state:
            out["sed_attenuated"] = state["sed_dust_attenuated"]
        else:  # no dust: the stars as they leave their birth clouds
            out["sed_attenuated"] = state["stellar_old"] + state["stellar_young"]
        if self.nebular:
            out["sed_nebular"] = state.get("sed_nebular", state["sed_nebular_intrinsic"])
        for key in ("sed_shock", "sed_dust_ir", "sed_agn", "sed_radio", "sed_xray"):
            if key in state:
                out[key] = state[key]
        return out

    def sed_components(self, params: Mapping[str, Any]) -> dict:
        """The rest-frame SED split into its physical components.

        ``sed_total`` is the sum of ``sed_attenuated`` (stars after dust; without
        dust, after their birth clouds removed the ionising light the nebular
        component reprocesses), ``sed_nebular`` (after dust), ``sed_shock`` (after
        dust), ``sed_dust_ir``, ``sed_agn``, ``sed_radio`` and ``sed_xray`` — each
        present only when its component is on (:data:`SED_COMPONENT_SUM_KEYS`).
        Not in the sum: ``sed_intrinsic`` (stars + nebular emission before dust,
        what the dust and the AGN fraction act on) and ``sed_stellar_intrinsic``
        (the SSP light Σ over ages of ``lnu_age``, ionising light included).

        Returns
        -------
        dict
            ``wavelength`` (n_wave,) rest frame [Å] and the arrays above, L_ν
            [erg/s/Hz] of shape (n_wave,) for scalar parameters or (n, n_wave) for
            (n,) arrays.
        """
        out = self._map("_components", params)
        out["wavelength"] = self.wavelength_aa.copy()
        return out

    def derived_quantities(self, params: Mapping[str, Any], names=None) -> dict:
        """Derived physical quantities.

        Parameters
        ----------
        params : mapping
            Parameter values (scalars or (n,) arrays).
        names : sequence of str, optional
            Only these quantities (default all, see :attr:`derived_names`). When
            they are all in :data:`SFH_DERIVED_KEYS` they come from the SFH and the
            SSPs' surviving mass alone, without building a spectrum (same code as
            the full chain, far cheaper); otherwise the full chain runs.

        Returns
        -------
        dict
            ``stellar_mass`` (surviving, M☉), ``mass_formed`` (M☉), ``sfr_10myr``
            and ``sfr_100myr`` (M☉/yr, mean over the last 10 / 100 Myr), ``ssfr``
            (sfr_100myr / stellar_mass, yr⁻¹), ``mass_weighted_age_gyr`` (Gyr), and
            what the other components publish (e.g. ``luminosity_absorbed``,
            ``luminosity_dust_ir``, ``luminosity_agn`` [erg/s], ``eline_flux_<line>``);
            scalars for scalar inputs, arrays of shape (n,) for (n,) inputs.

        Raises
        ------
        ParameterError
            ``names`` empty, not a sequence of str, or naming a quantity this model
            does not derive.
        """
        if names is None:
            return self._map("_derived", params)
        names = self._checked_derived_names(names)
        fast = set(names) <= set(SFH_DERIVED_KEYS)
        out = self._map("_sfh_derived" if fast else "_derived", params)
        return {n: out[n] for n in names}

    @cached_property
    def derived_names(self) -> tuple[str, ...]:
        """Names of every quantity :meth:`derived_quantities` returns for this model."""
        theta = {n: jax.ShapeDtypeStruct((), jnp.float64) for n in self.parameters.names}
        return tuple(jax.eval_shape(self._derived, theta, self.grids))

    def _checked_derived_names(self, names) -> tuple[str, ...]:
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ParameterError(f"names must be a sequence of quantity names (str), got {names!r}")
        names = tuple(dict.fromkeys(names))
        if not names:
            raise ParameterError("names is empty: give at least one quantity, or names=None for all")
        unknown = [n for n in names if n not in SFH_DERIVED_KEYS and n not in self.derived_names]
        if unknown:
            raise ParameterError(f"names {unknown} are not derived by this model; it derives "
                                 f"{', '.join(self.derived_names)}")
        return names

    def _sfh_curve(self, theta, grids, lookback_yr, component="total"):
        sfh_component = next(c for c in self.components if isinstance(c, comp.StarFormationHistory))
        age_u = cosmology.age_of_universe_gyr(theta["redshift"], self.cosmo) * _GYR
        return sfh_component.sfr_curve(theta, age_u, lookback_yr, component)

    def predict_sfh(self, params: Mapping[str, Any], lookback_gyr=None, component: str = "total"):
        """Star-formation rate against lookback time.

        Parameters
        ----------
        params : mapping
            Parameter values (scalars or (n,) arrays).
        lookback_gyr : array, optional
            Lookback times [Gyr]; default 300 points from 0 to the age of the universe.
        component : {"total", "smooth"}
            For ``sfh="stochastic"``: the SFR with its stochastic field (``total``) or
            the smooth mean SFH alone, with the total's normalisation (``smooth``;
            total / smooth = 10^x). Other SFHs have no stochastic part: both are the SFH.

        Returns
        -------
        lookback_gyr : numpy.ndarray, shape (n_t,)
        sfr : numpy.ndarray, shape (n_t,) or (n, n_t) [M☉/yr]
        """
        if component not in ("total", "smooth"):
            raise ParameterError(f"component must be 'total' or 'smooth', got {component!r}")
        if lookback_gyr is None:
            values, _ = self._values(params)
            z_min = float(jnp.min(values["redshift"]))
            t_max = float(cosmology.age_of_universe_gyr(z_min, self.cosmo))
            lookback_gyr = np.linspace(0.0, t_max, 300)
        lookback_yr = jnp.asarray(np.asarray(lookback_gyr, float) * _GYR)
        values, batch = self._values(params)
        flat = {k: v.reshape(-1) for k, v in values.items()}
        fn = jax.jit(jax.vmap(lambda t, g, lb: self._sfh_curve(t, g, lb, component), in_axes=(0, None, None)))
        sfr = np.asarray(fn(flat, self.grids, lookback_yr)).reshape(batch + (lookback_yr.shape[0],))
        return np.asarray(lookback_gyr, float), sfr

    # --- the inference problem ------------------------------------------------------------
    def prepare(self, fixed: Mapping[str, float] | None = None) -> dict:
        """Per-galaxy context: prior table, fixed values, band matrix at fixed z.

        Parameters
        ----------
        fixed : mapping, optional
            Per-galaxy values of fixed parameters (e.g. ``{"redshift": 1.2}``) that
            override the configured ones.
        """
        fixed_values = self._galaxy_fixed_values(fixed)
        prepared = self._take_prepared(fixed_values)
        if prepared is not None:
            return prepared
        z_fixed = fixed_values.get("redshift")
        terms = None
        if z_fixed is not None:
            terms = self._redshift_terms(z_fixed)
            age_gyr = float(terms[1])
        else:
            age_gyr = float(cosmology.age_of_universe_gyr_numpy(_prior_min(self.parameters["redshift"]), self.cosmo))
        context = {"age_of_universe": age_gyr}
        ctx = {
            "table": jax.device_put(np.asarray(self.parameters.prior_table(context))),
            "fixed": jax.device_put(np.asarray([fixed_values[n] for n in sorted(fixed_values)], np.float64)),
        }
        if z_fixed is not None and self.photometry is not None:
            w = self._band_matrix_at(z_fixed, terms)
            if np.any(np.sum(w, axis=1) <= 0):
                bad = [self.photometry.filter_names[i] for i in np.flatnonzero(np.sum(w, axis=1) <= 0)]
                raise DataError(f"filters {bad} fall outside the model wavelength grid at z={z_fixed}")
            ctx["band_matrix"] = jax.device_put(w)
            if self._band_table_plan is not None:
                ctx["band_tables"] = self._band_tables(w, fixed_values, age_gyr)
        return ctx

    def _galaxy_fixed_values(self, fixed: Mapping[str, float] | None) -> dict:
        """The configured fixed values with one galaxy's own, checked (DataError / ParameterError)."""
        fixed_values = dict(self.parameters.fixed_values)
        missing = [n for n in self.per_galaxy if n not in (fixed or {})]
        if missing:
            raise DataError(f"per-galaxy values missing for {missing} (catalog columns)")
        for name, value in (fixed or {}).items():
            if name not in self.parameters.fixed_values:
                raise ParameterError(
                    f"per-galaxy value given for {name!r}, which is not a fixed parameter "
                    f"(fixed: {sorted(self.parameters.fixed_values)})"
                )
            if not np.isfinite(value):
                raise DataError(f"per-galaxy value of {name!r} is not finite: {value}")
            fixed_values[name] = float(value)
        z_fixed = fixed_values.get("redshift")
        if z_fixed is not None and not z_fixed > 0:
            raise DataError(f"redshift must be > 0, got {z_fixed}")
        return fixed_values

    # --- many galaxies at once (catalogs) --------------------------------------------------
    def prepare_batch(self, fixed: Sequence[Mapping[str, float] | None]) -> tuple[list, dict | None, list]:
        """:meth:`prepare` of many galaxies at once, vectorised over them.

        For photometry at a per-galaxy fixed redshift (the catalog case): the
        redshift terms (d_L, age, IGM) and band matrices of all galaxies are array
        operations over a galaxy axis, and the band tables of each spectrum set are
        one :func:`band_tables.tabulate_sources_many` pass writing into one array.
        Left per galaxy: the prior tables (a few µs) and the sub-band partition
        (its greedy runs differ per galaxy). Models with dust emission in their
        band tables are prepared galaxy by galaxy (``stacked`` is then None).

        Parameters
        ----------
        fixed : sequence of mapping or None
            Each galaxy's per-galaxy fixed values, as for :meth:`prepare`.

        Returns
        -------
        contexts : list of dict or None
            ``contexts[i]`` has :meth:`prepare`'s keys and values (to rounding,
            ~1e-16) for galaxy i, as numpy views of ``stacked`` (row i); None where
            ``errors[i]`` is set.
        stacked : dict or None
            The same tree with a leading galaxy axis (n_galaxy, ...) on every leaf
            that differs between galaxies; leaves shared by every galaxy (e.g. the
            birth-cloud shares) are the very objects found in each context. Rows of
            failed galaxies hold another galaxy's values.
        errors : list of Exception or None
            What :meth:`prepare` raises for galaxy i (DataError / ParameterError).
        """
        n = len(fixed)
        errors: list = [None] * n
        values: list = [None] * n
        for i, given in enumerate(fixed):
            try:
                values[i] = self._galaxy_fixed_values(given)
            except (DataError, ParameterError) as err:
                errors[i] = err
        good = [i for i in range(n) if errors[i] is None]
        plan = self._band_table_plan
        if not good:
            return [None] * n, None, errors
        if plan is not None and plan["dust_emission"] is not None:  # energy balance: galaxy by galaxy
            contexts = [None if errors[i] else self.prepare(fixed[i]) for i in range(n)]
            return contexts, None, errors
        values = [values[good[0]] if v is None else v for v in values]
        z_fixed = "redshift" in values[0]
        if z_fixed:
            redshift = np.asarray([v["redshift"] for v in values], dtype=np.float64)
            d_l, age_gyr, igm_blue = self._redshift_terms_many(redshift)
        else:
            age_gyr = np.full(n, float(cosmology.age_of_universe_gyr_numpy(
                _prior_min(self.parameters["redshift"]), self.cosmo)))
        stacked = {
            "table": np.stack([np.asarray(self.parameters.prior_table({"age_of_universe": float(a)}))
                               for a in age_gyr]),
            "fixed": np.asarray([[v[name] for name in sorted(v)] for v in values], dtype=np.float64),
        }
        shared: dict = {}
        if z_fixed and self.photometry is not None:
            w = self._band_matrices_at(redshift, d_l, igm_blue)
            for i in np.flatnonzero(np.any(np.sum(w, axis=2) <= 0, axis=1)).tolist():
                if errors[i] is None:
                    bad = [self.photometry.filter_names[b] for b in np.flatnonzero(np.sum(w[i], axis=1) <= 0)]
                    errors[i] = DataError(f"filters {bad} fall outside the model wavelength grid "
                                          f"at z={values[i]['redshift']}")
            good = [i for i in range(n) if errors[i] is None]
            if not good:
                return [None] * n, None, errors
            for i in set(range(n)) - set(good):  # failed rows: another galaxy's values, never used
                w[i], values[i], age_gyr[i] = w[good[0]], values[good[0]], age_gyr[good[0]]
            stacked["band_matrix"] = w
            if plan is not None:
                stacked["band_tables"], shared = self._band_tables_many(w, values, age_gyr)
        contexts = [None if errors[i] else _context_row(stacked, shared, i) for i in range(n)]
        if shared:
            stacked["band_tables"] = {**stacked["band_tables"], **shared}
        return contexts, stacked, errors

    def _redshift_terms_many(self, redshift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`_redshift_terms` of many redshifts (n,): d_L (n,), age (n,), IGM (n, n_igm_columns)."""
        blue_obs = self.wavelength_aa[: self._n_igm_columns][None, :] * (1.0 + redshift[:, None])
        igm_t = np.ones_like(blue_obs)
        if self.igm == "inoue14":  # in blocks of galaxies: the (block, n_column, 39) temporaries stay in the cache
            for first in range(0, redshift.size, bandpass.GALAXY_BLOCK):
                block = slice(first, first + bandpass.GALAXY_BLOCK)
                igm_t[block] = igm.igm_transmission_inoue14_numpy(
                    blue_obs[block], np.broadcast_to(redshift[block, None], blue_obs[block].shape))
        return (cosmology.luminosity_distance_cm_numpy(redshift, self.cosmo),
                cosmology.age_of_universe_gyr_numpy(redshift, self.cosmo), igm_t)

    def _band_matrices_at(self, redshift: np.ndarray, d_l: np.ndarray, igm_blue: np.ndarray) -> np.ndarray:
        """:meth:`_band_matrix_at` of many galaxies, shape (n, n_band, n_wave)."""
        igm_t = np.ones((redshift.size, self.wavelength_aa.size))
        igm_t[:, : self._n_igm_columns] = igm_blue
        dlnlam, filter_wave, filter_trans = self._numpy_filters
        return bandpass.band_matrices_numpy(redshift, d_l, self.wavelength_aa, dlnlam, filter_wave, filter_trans,
                                            igm_t)

    def _band_tables_many(self, band_matrices: np.ndarray, fixed_values: list, age_of_universe_gyr: np.ndarray
                          ) -> tuple[dict, dict]:
        """:meth:`_band_tables` of many galaxies (no dust emission): (per-galaxy leaves stacked
        over a leading galaxy axis, leaves shared by every galaxy)."""
        plan = self._band_table_plan
        k = plan["k"]
        n, n_band = band_matrices.shape[:2]
        subs = []
        for w, values in zip(band_matrices, fixed_values):  # the greedy partition, galaxy by galaxy
            if k is None:
                subs.append(band_tables.partition_sub_bands(w, None, n_band))
            else:
                subs.append(band_tables.partition_sub_bands(w, k, plan["n_sub_bands"], *self._attenuation_range(values),
                                                            plan["n_nodes"]))
        groups: dict = {}  # galaxies sharing fixed metallicity / log U share their source spectra
        for i, values in enumerate(fixed_values):
            key = tuple((name, values[name]) for name in ("metallicity", "log_u") if name in values)
            groups.setdefault(key, []).append(i)
        out: dict = {}
        for members in groups.values():
            spectra = self._cached_source_spectra(fixed_values[members[0]])
            whole = len(members) == n
            for name, lnu in spectra.items():
                if name not in out:
                    n_node, n_kind = (plan["n_nodes"], 2) if k is not None else (1, 1)
                    out[name] = band_tables._aligned_empty((n, subs[0].size.size, n_node, n_kind, *lnu.shape[:-1]))
                got = band_tables.tabulate_sources_many(lnu, band_matrices[members], [subs[i] for i in members], k,
                                                        plan["n_nodes"], out=out[name] if whole else None)
                if not whole:
                    out[name][members] = got
        eye = np.eye(n_band)
        out.update({
            "kappa": np.stack([sub.kappa for sub in subs]),
            "row_of": np.stack([eye[sub.band] for sub in subs]),
            "a_min": np.asarray([sub.a_min_mag for sub in subs], dtype=np.float64),
            "a_step": np.stack([sub.a_step_mag for sub in subs]),
            "error_bound": np.asarray([sub.error_bound for sub in subs], dtype=np.float64),
            "ssp_z": np.tile(np.asarray(self._table_nodes["ssp_z"]), (n, 1)),
            "age_of_universe_yr": np.asarray(age_of_universe_gyr, dtype=np.float64) * _GYR,
        })
        for bound, values in zip(out["error_bound"], fixed_values):
            self._warn_band_table_error(float(bound), values)
        shared = dict(self._age_weights)
        if self.nebular:
            shared["neb_z"], shared["neb_log_u"] = self._table_nodes["neb_z"], self._table_nodes["neb_log_u"]
        return out, shared

    @cached_property
    def _prepared_store(self):
        import threading

        return threading.local()

    def _take_prepared(self, fixed_values: Mapping[str, float]) -> dict | None:
        """A context handed over by :meth:`use_prepared` for these fixed values (used once), else None."""
        store = getattr(self._prepared_store, "contexts", None)
        if not store:
            return None
        waiting = store.get(tuple(sorted(fixed_values.items())))
        return waiting.pop(0) if waiting else None

    def use_prepared(self, fixed: Sequence[Mapping[str, float] | None], contexts: list):
        """Context manager: inside it (in this thread) :meth:`prepare` returns ``contexts[i]``
        for a galaxy with the fixed values ``fixed[i]``, each once (e.g. from
        :meth:`prepare_batch`), so a Fitter built there skips the preparation. None
        entries are skipped; anything else is prepared as usual."""
        import contextlib

        @contextlib.contextmanager
        def scope():
            store: dict = {}
            for given, ctx in zip(fixed, contexts):
                if ctx is not None:
                    key = tuple(sorted(self._galaxy_fixed_values(given).items()))
                    store.setdefault(key, []).append(ctx)
            previous = getattr(self._prepared_store, "contexts", None)
            self._prepared_store.contexts = store
            try:
                yield
            finally:
                self._prepared_store.contexts = previous

        return scope()

    @cached_property
    def _likelihoods(self) -> dict:
        """One log-likelihood / residual function pair per model (shared by galaxies).

        Band fluxes come from the per-galaxy band tables when :attr:`uses_band_tables`
        (see :mod:`tengri.model.band_tables`), from the component chain otherwise.
        """
        return self._likelihood_functions(fast=self._band_table_plan is not None)

    @cached_property
    def _chain_likelihoods(self) -> dict:
        """The same functions through the component chain: the reference for the fast path."""
        return self._likelihood_functions(fast=False)

    def _likelihood_functions(self, fast: bool) -> dict:
        params = self.parameters
        z_fixed = "redshift" in params.fixed_values

        def predicted(z, data_args):
            theta = params.to_physical(z, data_args["table"], data_args["fixed"])
            if fast:
                return self._photometry_from_tables(
                    theta, data_args["band_tables"], data_args["grids"], data_args["band_matrix"]
                )
            w = data_args["band_matrix"] if z_fixed else None
            return self._photometry(theta, data_args["grids"], w)

        def residuals(z, data_args):
            r = (predicted(z, data_args) - data_args["data"]) / data_args["noise"]
            return jnp.where(data_args["mask"], r, 0.0)

        def log_likelihood(z, data_args):
            r = residuals(z, data_args)
            return -0.5 * jnp.sum(r * r) + data_args["log_norm"]

        return {"log_likelihood": log_likelihood, "residuals": residuals, "predicted": predicted}

    def build_problem(self, data, noise, mask=None, fixed: Mapping[str, float] | None = None,
                      spectral: Mapping[str, Any] | None = None) -> Problem:
        """The inference Problem for one galaxy's photometry (or spectrum, or both).

        With a Spectroscopy in the observation this is
        :func:`tengri.inference.spectro_likelihood.build_problem` (data layout
        and ``spectral`` options there).

        Parameters
        ----------
        data, noise : array, shape (n_band,)
            Observed f_ν and 1σ errors [erg/s/cm²/Hz].
        mask : bool array, shape (n_band,), optional
            True = use the band. Default: all bands.
        fixed : mapping, optional
            Per-galaxy values of fixed parameters (e.g. redshift).
        """
        if self.observation is None:
            raise ParameterError("the model has no observation; give SEDModel(..., observation=Photometry(...))")
        if self.spectroscopy is not None:
            from tengri.inference import spectro_likelihood

            return spectro_likelihood.build_problem(self, data, noise, mask, fixed, **(spectral or {}))
        data, noise, mask = validate_data(data, noise, mask, self.observation.n_data)
        ctx = self.prepare(fixed)
        safe_noise = np.where(mask, noise, 1.0)
        data_args = {
            **ctx,
            "grids": self.grids,
            **jax.device_put({
                "data": np.where(mask, data, 0.0),
                "noise": safe_noise,
                "mask": np.asarray(mask),
                "log_norm": np.float64(-np.sum(np.log(safe_noise[mask])) - 0.5 * mask.sum() * np.log(2 * np.pi)),
            }),
        }
        lk = self._likelihoods
        params = self.parameters
        return Problem(
            names=params.free_names,
            log_likelihood=lk["log_likelihood"],
            data_args=data_args,
            to_physical=self._to_physical_fn,
            init=jax.device_put(np.zeros(params.n_free)),
            residuals=lk["residuals"],
            n_data=int(mask.sum()),
        )

    @cached_property
    def _to_physical_fn(self):
        params = self.parameters

        def to_physical(z, data_args):
            return params.to_physical(z, data_args["table"], data_args["fixed"])

        return to_physical

    def __repr__(self) -> str:
        parts = [f"sfh={self.sfh!r}", f"dust={self.dust!r}", f"nebular={self.nebular}", f"igm={self.igm!r}"]
        if self.sfh_quadrature != "bins":
            parts.insert(1, f"sfh_quadrature={self.sfh_quadrature!r}")
        return f"SEDModel({', '.join(parts)}, {self.parameters.n_free} free, {self.observation!r})"

    # --- the fast photometric path: per-galaxy band tables ---------------------------------
    @property
    def uses_band_tables(self) -> bool:
        """Whether the likelihood reads per-galaxy band tables instead of running the chain.

        True for photometry at a fixed redshift with an attenuation curve of fixed
        shape (``calzetti``, ``cardelli``, ``smc`` or ``none``), bounded priors on
        ``av`` and ``dust_eta``, and the components SFH, SSP, nebular emission, dust
        attenuation and dust emission (see :mod:`tengri.model.band_tables`); the
        chain otherwise. Predictions (:meth:`predict_photometry`, …) always run the
        chain. ``prepare`` warns (RuntimeWarning) when a galaxy's tables have an
        interpolation error bound above 1e-4.
        """
        return self._band_table_plan is not None

    @cached_property
    def _band_table_plan(self) -> dict | None:
        """What the band tables need that is the same for every galaxy, or None."""
        if self.photometry is None or self.spectroscopy is not None or "redshift" not in self.parameters.fixed_values:
            return None
        if any(type(c) not in _BAND_TABLE_COMPONENTS for c in self.components):
            return None
        plan = {"k": None, "n_nodes": 1, "a_range": None}
        if self.dust != "none":
            curve = attenuation.attenuation_curve(self.dust)
            av = _prior_bounds(self.parameters["av"])
            eta = _prior_bounds(self.parameters["dust_eta"])
            if curve.param_names or av is None or eta is None:
                return None
            low, high = _attenuation_range(av, eta)
            plan["k"] = self._plan_arrays["k"]
            plan["a_range"] = (low, high)
            plan["n_nodes"] = max(2, int(np.ceil((high - low) / _ATTENUATION_STEP_MAG - 1e-9)) + 1)
        young_share = self._plan_arrays["young_share"]
        young = young_share > 0
        n_young = int(young.sum())
        if not np.all(young[:n_young]):  # ages ascend, so the young ones come first
            return None
        plan["n_young"] = n_young
        plan["first_old"] = int(np.sum(young_share >= 1.0))
        if self.nebular:
            lit = self._plan_arrays["nebular_age_weights"].sum(axis=0) > 0
            plan["nebular_ages"] = np.flatnonzero(lit)
        plan["node_range"] = self._reachable_node_ranges()
        z = self.parameters.fixed_values["redshift"]
        # a per-galaxy redshift is configured as a placeholder 0 (no band matrix there):
        # the sub-bands are then tuned to fit the typical redshifts
        candidates = [round(f * self.photometry.n_data) for f in _SUB_BANDS_PER_BAND]
        plan["n_sub_bands"] = max(self._fewest_sub_bands(self._band_matrix_at(float(z_tune)), plan, candidates)
                                  for z_tune in ((z,) if z > 0 else _TUNING_REDSHIFTS))
        plan["dust_emission"] = next((c for c in self.components if isinstance(c, comp.DustEmission)), None)
        if plan["dust_emission"] is not None:
            names = dust_emission_physics.DUST_EMISSION_MODELS[plan["dust_emission"].model].param_names
            plan["ir_fixed"] = all(n in self.parameters.fixed_values for n in names)
            plan["n_sub_bolometric"] = self._fewest_sub_bands(
                self._bolometric_weights[None, :], plan, _BOLOMETRIC_SUB_BANDS
            )
        return plan

    def _reachable_node_ranges(self) -> dict:
        """Per (parameter, source group): the slice of its grid nodes that interpolation can read.

        Within a bounded prior's range linear interpolation reads only the nodes
        from the bracket of its lower bound to that of its upper bound, so the tables
        hold only those, as the attenuation nodes span only the A_V prior's range (a
        metallicity prior of 0.1-2 Z☉ on the 7 BC03 metallicities: 5 of them, and
        the vmapped likelihood's dense products shrink by as much). Unbounded: all.
        """
        grids = {"metallicity": {"stellar": self.ssp.metallicity_zsun, "young": self.ssp.metallicity_zsun}}
        if self.nebular:
            grids["metallicity"]["nebular"] = self.grids["neb_z"]
            grids["log_u"] = {"nebular": self.grids["neb_log_u"]}
        return {param: {name: _reachable_nodes(nodes, self.parameters[param] if param in self.parameters else None)
                        for name, nodes in by_name.items()}
                for param, by_name in grids.items()}

    def _fewest_sub_bands(self, weights: np.ndarray, plan: dict, candidates) -> int:
        """The fewest sub-bands of ``weights`` (n_row, n_wave) whose error bound is small.

        The per-call cost grows with them, so: the first of ``candidates`` whose
        :func:`band_tables.partition_sub_bands` bound is at most
        ``_BAND_TABLE_TOLERANCE`` (the last otherwise). For the bands, at the
        configured redshift.
        """
        if plan["k"] is None:
            return weights.shape[0]
        for n_sub in candidates:
            sub = band_tables.partition_sub_bands(weights, plan["k"], n_sub, *plan["a_range"], plan["n_nodes"])
            if sub.error_bound <= _BAND_TABLE_TOLERANCE:
                break
        return n_sub

    @cached_property
    def _plan_arrays(self) -> dict:
        """What the band tables need from the chain's physics, as numpy arrays: ``young_share``
        (n_age,) birth-cloud shares per SSP age, with nebular emission ``nebular_age_weights``
        (n_age, n_age_neb) SSP-age → nebular-age weights, and with a fixed-shape dust law ``k``
        (n_wave,) A_λ/A_V on the model grid (the chain's ``dust_k``).

        One jitted program: run op by op, the weights are tens of tiny XLA programs, each
        compiled (or loaded from the persistent cache) in every fresh process.
        """
        t_bc_yr, nebular = self.t_bc_yr, self.nebular

        def weights(edges, neb_edges):
            out = {"young_share": nebular_physics.birth_cloud_fraction(edges, t_bc_yr)}
            if nebular:
                out["nebular_age_weights"] = nebular_physics.nebular_age_weights(edges, neb_edges, t_bc_yr)
            return out

        neb_edges = np.asarray(self.grids["neb_age_bin_edges_yr"], np.float64) if nebular else None
        out = jax.jit(weights)(np.asarray(self.ssp.age_bin_edges_yr, np.float64), neb_edges)
        if "dust_k" in self.grids:
            out["k"] = self.grids["dust_k"]
        return {name: np.asarray(value, dtype=np.float64) for name, value in out.items()}

    @cached_property
    def _table_nodes(self) -> dict:
        """The metallicity (and log U) nodes of the band tables' free axes, cut as the tables are."""
        reach = self._band_table_plan["node_range"]
        out = {"ssp_z": np.asarray(self.ssp.metallicity_zsun, np.float64)[reach["metallicity"]["stellar"]]}
        if self.nebular:
            out["neb_z"] = np.asarray(self.grids["neb_z"], np.float64)[reach["metallicity"]["nebular"]]
            out["neb_log_u"] = np.asarray(self.grids["neb_log_u"], np.float64)[reach["log_u"]["nebular"]]
        return jax.device_put(out)

    @cached_property
    def _age_weights(self) -> dict:
        """The chain's birth-cloud shares per SSP age and, with nebular emission, the
        SSP-age → nebular-age weights of the lit nebular ages (the same for every call)."""
        out = {"young_share": self._plan_arrays["young_share"]}
        if self.nebular:
            lit = self._band_table_plan["nebular_ages"]
            out["nebular_age_weights"] = self._plan_arrays["nebular_age_weights"][:, lit]
        return jax.device_put(out)

    @cached_property
    def _bolometric_weights(self) -> np.ndarray:
        """ν Δln λ per grid point [Hz]: Σ L_ν · these is the luminosity (as DustAttenuation sums it)."""
        return comp.C_AA_PER_S / self.wavelength_aa * np.asarray(self.grids["dlnlam"])

    def _source_spectra(self, fixed_values: Mapping[str, float], reachable_only: bool = True) -> dict:
        """L_ν of the source groups [erg/s/Hz per M☉ formed], fixed parameters' axes contracted,
        the free ones cut to the nodes their priors reach (``reachable_only``, see
        :meth:`_reachable_node_ranges`).

        ``stellar`` (n_z, n_age, n_wave); with nebular emission also ``young`` (the
        first n_young ages, ionising light removed) and ``nebular`` (n_z, n_u, n_k, n_wave),
        and ``stellar`` then holds only the ages from ``first_old`` on (the younger ones
        shine only inside birth clouds, through ``young``).
        """
        plan = self._band_table_plan
        reach = plan["node_range"] if reachable_only else None
        stellar = np.asarray(self.ssp.lnu, dtype=np.float64)
        if "metallicity" in fixed_values:
            stellar = band_tables.interpolate_axis(stellar, self.ssp.metallicity_zsun, fixed_values["metallicity"], 0)
        elif reach is not None:
            stellar = stellar[reach["metallicity"]["stellar"]]
        spectra = {"stellar": stellar}
        if self.nebular:
            grids = self.grids
            kept = 1.0 - np.asarray(grids["ionising"])  # birth clouds absorb the ionising light
            spectra["young"] = stellar[:, : plan["n_young"]] * kept
            neb = np.asarray(grids["neb_total_lnu"])[:, :, plan["nebular_ages"]]
            if "metallicity" in fixed_values:
                neb = band_tables.interpolate_axis(neb, np.asarray(grids["neb_z"]), fixed_values["metallicity"], 0)
            elif reach is not None:
                neb = neb[reach["metallicity"]["nebular"]]
            if "log_u" in fixed_values:
                neb = band_tables.interpolate_axis(neb, np.asarray(grids["neb_log_u"]), fixed_values["log_u"], 1)
            elif reach is not None:
                neb = neb[:, reach["log_u"]["nebular"]]
            spectra["nebular"] = neb
            # a table of its own rather than a slice per call: under a vmap the dense
            # product would copy the sliced table (non-contiguous) at every call
            spectra["stellar"] = np.ascontiguousarray(stellar[:, plan["first_old"]:])
        return spectra

    @cached_property
    def _source_spectra_cache(self) -> dict:
        return {}

    def _cached_source_spectra(self, fixed_values: Mapping[str, float]) -> dict:
        """:meth:`_source_spectra`, kept for the last few fixed metallicity / log U values
        (galaxies of a catalog usually share them)."""
        key = tuple((name, fixed_values[name]) for name in ("metallicity", "log_u") if name in fixed_values)
        cache = self._source_spectra_cache
        if key not in cache:
            if len(cache) >= _SOURCE_SPECTRA_KEPT:
                cache.pop(next(iter(cache)))
            cache[key] = self._source_spectra(fixed_values)
        return cache[key]

    def _attenuation_range(self, fixed_values: Mapping[str, float]) -> tuple[float, float]:
        """A_V and η·A_V range [mag] of one galaxy (its fixed values, else the priors)."""
        return _attenuation_range(
            _prior_bounds(_fixed_or(self.parameters["av"], fixed_values, "av")),
            _prior_bounds(_fixed_or(self.parameters["dust_eta"], fixed_values, "dust_eta")),
        )

    def _tables_of(self, spectra: dict, weights: np.ndarray, n_sub: int, a_range) -> dict:
        """Tables of every source group through ``weights`` (n_row, n_wave), and their meta-data."""
        plan = self._band_table_plan
        k = plan["k"]
        if k is None:
            sub = band_tables.partition_sub_bands(weights, None, weights.shape[0])
        else:
            sub = band_tables.partition_sub_bands(weights, k, n_sub, *a_range, plan["n_nodes"])
        # device_put, not jnp.asarray: several times faster on these (Q, n_node, 2, n_src) tables
        out = {name: jax.device_put(band_tables.tabulate_sources(lnu, weights, sub, k, plan["n_nodes"]))
               for name, lnu in spectra.items()}
        out.update(jax.device_put({
            "kappa": sub.kappa,
            "row_of": np.eye(weights.shape[0])[sub.band],
            "a_min": np.float64(sub.a_min_mag),
            "a_step": sub.a_step_mag,
            "error_bound": np.float64(sub.error_bound),
        }))
        return out

    def _band_tables(self, band_matrix: np.ndarray, fixed_values: Mapping[str, float],
                     age_of_universe_gyr: float) -> dict:
        """One galaxy's band tables (numpy work, done once per galaxy)."""
        plan = self._band_table_plan
        a_range = None if plan["k"] is None else self._attenuation_range(fixed_values)
        spectra = self._cached_source_spectra(fixed_values)
        out = self._tables_of(spectra, band_matrix, plan["n_sub_bands"], a_range)
        self._warn_band_table_error(float(out["error_bound"]), fixed_values)
        out.update(self._table_nodes)
        out.update(self._age_weights)
        out["age_of_universe_yr"] = jax.device_put(np.float64(age_of_universe_gyr * _GYR))
        if plan["dust_emission"] is not None:
            out["bolometric"], out["intrinsic"] = self._bolometric_tables(a_range, fixed_values)
            if plan["ir_fixed"]:
                theta = {name: jnp.asarray(value) for name, value in fixed_values.items()}
                out["dust_ir"] = jnp.asarray(band_matrix @ np.asarray(self._unit_dust_emission(theta, self.grids)))
        return out

    def _warn_band_table_error(self, bound: float, fixed_values: Mapping[str, float]) -> None:
        """RuntimeWarning when a galaxy's band tables have an interpolation error bound above 1e-4."""
        if bound > _BAND_TABLE_WARNING:
            plan = self._band_table_plan
            configured = self.parameters.fixed_values["redshift"]
            tuned = f"the configured z={configured}" if configured > 0 else f"z in {_TUNING_REDSHIFTS}"
            warnings.warn(
                f"band tables at z={fixed_values['redshift']}: the interpolation error bound in "
                f"attenuation is {bound:.1e} (relative), for {plan['n_sub_bands']} sub-bands tuned at "
                f"{tuned}; expect errors of that "
                "size in bands far in the rest-frame ultraviolet (see tengri.model.band_tables)",
                RuntimeWarning, stacklevel=4,
            )

    @cached_property
    def _bolometric_cache(self) -> dict:
        return {}

    def _bolometric_tables(self, a_range, fixed_values: Mapping[str, float]) -> tuple[dict, dict]:
        """Attenuated and intrinsic luminosity tables of the source groups (for energy balance).

        The same tables as the bands', through ν Δln λ (one rest-frame pseudo-band, so
        the same for every galaxy): built once per attenuation range on the full grids,
        then the fixed parameters' axes are contracted (exact: the tables are linear).
        """
        plan = self._band_table_plan
        if a_range not in self._bolometric_cache:
            weights = self._bolometric_weights[None, :]
            spectra = self._source_spectra({}, reachable_only=False)  # fixed axes are contracted below
            attenuated = self._tables_of(spectra, weights, plan["n_sub_bolometric"], a_range)
            dust_free = band_tables.partition_sub_bands(weights, None, 1)
            intrinsic = {name: band_tables.tabulate_sources(lnu, weights, dust_free, None)
                         for name, lnu in spectra.items()}
            self._bolometric_cache[a_range] = ({k: np.asarray(v) for k, v in attenuated.items()}, intrinsic)
        attenuated, intrinsic = self._bolometric_cache[a_range]
        axes = {"stellar": {"metallicity": 3}, "young": {"metallicity": 3}, "nebular": {"metallicity": 3, "log_u": 4}}
        nodes = {"metallicity": {"stellar": self.ssp.metallicity_zsun, "young": self.ssp.metallicity_zsun}}
        if self.nebular:
            nodes["metallicity"]["nebular"] = np.asarray(self.grids["neb_z"])
            nodes["log_u"] = {"nebular": np.asarray(self.grids["neb_log_u"])}

        def contracted(tables):
            out = {}
            for name, table in tables.items():
                if name in axes:
                    for param, axis in axes[name].items():
                        if param in fixed_values:
                            table = band_tables.interpolate_axis(table, nodes[param][name], fixed_values[param], axis)
                        else:  # as the band tables are cut
                            table = table[(slice(None),) * axis + (plan["node_range"][param][name],)]
                out[name] = jnp.asarray(table)
            return out

        return contracted(attenuated), contracted(intrinsic)

    def _unit_dust_emission(self, theta, grids) -> jax.Array:
        """The dust-emission spectrum per unit absorbed luminosity [1/Hz], by the chain's component."""
        state = {"sed": 0.0, "derived": {"luminosity_absorbed": 1.0}}
        return self._band_table_plan["dust_emission"].apply(state, theta, grids)["sed_dust_ir"]

    def _photometry_from_tables(self, theta, tables: dict, grids: dict, band_matrix) -> jax.Array:
        """Band fluxes f_ν [erg/s/cm²/Hz] from one galaxy's band tables, shape (n_band,)."""
        plan = self._band_table_plan
        state = {"age_of_universe_yr": tables["age_of_universe_yr"], "derived": {}}
        mass = self.components[0].apply(state, theta, grids)["mass_per_age"]  # the chain's SFH
        young_share = tables["young_share"]
        dusty = plan["k"] is not None
        a_ism = theta["av"] if dusty else 0.0
        a_young = theta["dust_eta"] * theta["av"] if dusty else 0.0

        # (table, block start, block weights, attenuation) of each group of sources. Ages
        # younger than t_bc throughout have no light outside birth clouds, and only the
        # first n_young ages have some inside: only those blocks are contracted.
        z_start, z_weights = _bracket_or_fixed(tables["ssp_z"], theta["metallicity"], tables["stellar"].shape[3])
        first_old, n_young = plan["first_old"], plan["n_young"]
        young_mass = z_weights[:, None] * (mass * young_share)[None, :n_young]
        old_start = 0 if self.nebular else first_old  # with nebular emission the table starts there
        groups = [("stellar", (z_start, old_start), z_weights[:, None] * (mass * (1.0 - young_share))[None, first_old:],
                   a_ism)]
        if self.nebular:
            groups.append(("young", (z_start, 0), young_mass, a_young))
            neb_mass = mass @ tables["nebular_age_weights"]
            shape = tables["nebular"].shape
            zn_start, zn_weights = _bracket_or_fixed(tables["neb_z"], theta["metallicity"], shape[3])
            u_start, u_weights = _bracket_or_fixed(tables["neb_log_u"], theta["log_u"], shape[4])
            weights = zn_weights[:, None, None] * u_weights[None, :, None] * neb_mass[None, None, :]
            groups.append(("nebular", (zn_start, u_start, 0), weights, a_young))
        else:
            groups.append(("stellar", (z_start, 0), young_mass, a_young))

        def through(table_set, name, starts, weights, a_mag):
            return band_tables.attenuated_sums(table_set[name], starts, weights, a_mag, table_set["a_min"],
                                               table_set["a_step"], table_set["kappa"])

        flux = sum(through(tables, *group) for group in groups)
        bands = band_tables.sub_bands_to_bands(flux, tables["row_of"])
        if plan["dust_emission"] is None:
            return bands
        bolometric = tables["bolometric"]
        attenuated = sum(jnp.sum(through(bolometric, *group)) for group in groups)
        intrinsic = sum(
            jnp.sum(band_tables.attenuated_sums(tables["intrinsic"][name], starts, weights, 0.0, 0.0, 1.0, 0.0))
            for name, starts, weights, _ in groups
        )
        per_unit = tables["dust_ir"] if plan["ir_fixed"] else band_matrix @ self._unit_dust_emission(theta, grids)
        return bands + (intrinsic - attenuated) * per_unit


def _context_row(stacked: dict, shared: dict, i: int) -> dict:
    """Galaxy i's context: row i (a view) of every stacked leaf, plus the ``shared`` band-table leaves."""
    row = jax.tree_util.tree_map(lambda leaf: leaf[i], stacked)
    if shared:
        row["band_tables"] = {**row["band_tables"], **shared}
    return row


def _with_ssfr(derived: Mapping[str, jax.Array]) -> dict:
    """``derived`` plus ``ssfr`` = sfr_100myr / stellar_mass [1/yr]."""
    return {**derived, "ssfr": derived["sfr_100myr"] / derived["stellar_mass"]}


def _veldisp_bounds(prior: Prior) -> tuple[float, float]:
    """(low, high) of the velocity dispersion [km/s]; its window needs a bound."""
    bounds = _prior_bounds(prior)
    if bounds is None:
        raise ParameterError(
            f"{spectrum_model.VELDISP_PARAMETER} needs a bounded prior or a Fixed value (the spectrum's "
            f"broadening window is sized by its upper bound), got {prior!r}")
    if bounds[0] < 0:
        raise ParameterError(f"{spectrum_model.VELDISP_PARAMETER} must be >= 0 km/s, got prior {prior!r}")
    return bounds


def _spectroscopy_defaults(spectroscopy: Spectroscopy, nebular: bool) -> dict[str, Prior]:
    """Parameters a spectrum adds: the velocity dispersion and, when fitted, line scales."""
    out: dict[str, Prior] = {spectrum_model.VELDISP_PARAMETER: Uniform(10.0, 400.0)}
    if spectroscopy.eline_mode == "fitted":
        if not nebular:
            raise ParameterError('eline_mode="fitted" scales the Cloudy lines: it needs nebular=True')
        from tengri.params import LogUniform

        out.update({spectrum_model.eline_scale_name(n): LogUniform(0.1, 10.0) for n in spectroscopy.line_names})
    return out


def _prior_min(prior: Prior) -> float:
    for attr in ("low", "value", "mu"):
        v = getattr(prior, attr, None)
        if isinstance(v, float):
            return max(v, 1e-3)
    return 1e-3


# the fast photometric path (tengri.model.band_tables): components it reproduces,
# sub-bands per band tried in turn (per-call cost grows with them, the interpolation
# error falls as their k spread to the 4th power), the largest attenuation node step
# [mag] and the interpolation error bound aimed at
_BAND_TABLE_COMPONENTS = (comp.StarFormationHistory, comp.StellarPopulation, comp.NebularEmission,
                          comp.DustAttenuation, comp.DustEmission)
_SUB_BANDS_PER_BAND = (1, 1.5, 2, 3, 4, 6, 8)
_TUNING_REDSHIFTS = (0.5, 1.0, 2.0, 4.0, 6.0)  # sub-bands for a per-galaxy redshift fit all of these
_BOLOMETRIC_SUB_BANDS = (8, 16, 24, 32, 48, 64, 96, 128)  # the absorbed luminosity spans all k
_ATTENUATION_STEP_MAG = 0.25
_SOURCE_SPECTRA_KEPT = 4  # contracted source spectra kept per model (~6 MB each for 221 ages)
_BAND_TABLE_TOLERANCE = 1e-6
_BAND_TABLE_WARNING = 1e-4


def _prior_bounds(prior: Prior) -> tuple[float, float] | None:
    """(low, high) of a prior with numeric bounds, (v, v) for Fixed(v), else None."""
    if isinstance(prior, Fixed):
        return prior.value, prior.value
    low, high = getattr(prior, "low", None), getattr(prior, "high", None)
    if isinstance(low, float) and isinstance(high, float):
        return low, high
    return None


def _fixed_or(prior: Prior, fixed_values: Mapping[str, float], name: str) -> Prior:
    """The galaxy's fixed value of ``name`` if it has one, else its prior."""
    return Fixed(fixed_values[name]) if name in fixed_values else prior


def _attenuation_range(av: tuple[float, float], eta: tuple[float, float]) -> tuple[float, float]:
    """Range of A_V and η·A_V [mag] (with 0), widened to at least one node step."""
    corners = [a * e for a in av for e in eta]
    low = min(0.0, *av, *corners)
    high = max(0.0, *av, *corners)
    return low, max(high, low + _ATTENUATION_STEP_MAG)


def _reachable_nodes(nodes, prior: Prior | None) -> slice:
    """The nodes that :func:`band_tables.linear_bracket` reads for values within ``prior``'s bounds.

    From the bracket of the lower bound to that of the upper bound (the same rule:
    clamped to the grid, a node's own bracket starts at it); all nodes without bounds.
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    bounds = None if prior is None else _prior_bounds(prior)
    if bounds is None or nodes.size < 2:
        return slice(0, nodes.size)
    return slice(band_tables.bracket_start(nodes, bounds[0]), band_tables.bracket_start(nodes, bounds[1]) + 2)


def _bracket_or_fixed(nodes: jax.Array, x: jax.Array, axis_length: int) -> tuple[jax.Array, jax.Array]:
    """Start and weights of linear interpolation, or (0, [1]) on a contracted axis."""
    if axis_length == 1:
        return jnp.zeros((), jnp.int32), jnp.ones(1)
    return band_tables.linear_bracket(nodes, x)


_DUST_LAW_ALIASES = {"kc13": "kriek_conroy", "cardelli89": "cardelli", "salim18": "salim"}
"""Names of the attenuation curves as the issue / config spell them → ATTENUATION_CURVES keys."""
_XRAY_MIN_WAVELENGTH_AA = 1.0  # 12.4 keV: covers the 2-10 keV band
_RADIO_MAX_WAVELENGTH_AA = 1.0e11  # 10 m, 30 MHz
_EXTENSION_RESOLUTION = 20.0  # R = λ/Δλ of the smooth X-ray and radio power laws


def _component_settings(name: str, value, component_class) -> dict | None:
    """``agn``/``radio``/``xray``/``shock`` argument → None (off) or the component's settings."""
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if isinstance(value, Mapping):
        accepted = component_class.settings
        bad = sorted(set(value) - set(accepted))
        if bad:
            raise ParameterError(f"unknown {name} settings {bad}; valid: {sorted(accepted) or 'none'}")
        return dict(value)
    raise ParameterError(f"{name} must be True, False or a table of settings, got {value!r}")


def _extended_grid(wave: np.ndarray, min_aa: float | None, max_aa: float | None) -> np.ndarray:
    """``wave`` with log-spaced nodes (R = 20) added down to ``min_aa`` and up to ``max_aa``."""
    parts = [wave]
    step = 1.0 / _EXTENSION_RESOLUTION
    if min_aa is not None and min_aa < wave[0]:
        n = int(np.ceil(np.log(wave[0] / min_aa) / step))
        parts.insert(0, wave[0] * np.exp(-step * np.arange(n, 0, -1)))
    if max_aa is not None and max_aa > wave[-1]:
        n = int(np.ceil(np.log(max_aa / wave[-1]) / step))
        parts.append(wave[-1] * np.exp(step * np.arange(1, n + 1)))
    return np.concatenate(parts)


def _nebular_red_end_aa() -> float:
    """Red end [Å] of the Cloudy nebular continuum (free–free longward of it comes from the radio component)."""
    from tengri.data.nebular_grid import load_nebular_grid

    return float(load_nebular_grid().wavelength_aa[-1])


def _dust_emission_model(value) -> str | None:
    """``dust_emission`` argument → None or a model name (True means ``dl07``)."""
    if value is False or value is None or value == "none":
        return None
    if value is True:
        return "dl07"
    if isinstance(value, str) and value in dust_emission_physics.DUST_EMISSION_MODELS:
        return value
    raise ParameterError(
        f"unknown dust_emission {value!r}; valid: False, 'none', True, "
        + ", ".join(repr(m) for m in dust_emission_physics.DUST_EMISSION_MODELS)
    )


def _cosmology(value):
    if isinstance(value, cosmology.FlatLambdaCDM):
        return value
    return cosmology.cosmology_from_config(value)


def validate_data(data, noise, mask, n_expected: int):
    """Check one galaxy's data; return float64 arrays and a bool mask.

    Raises
    ------
    DataError
        Naming ``data``, ``noise`` or ``data_mask`` when shapes disagree, when an
        unmasked datum is NaN/inf, or when an unmasked noise is not finite and > 0.
    """
    data = np.asarray(data, dtype=np.float64)
    noise = np.asarray(noise, dtype=np.float64)
    if data.ndim != 1 or data.shape[0] != n_expected:
        raise DataError(f"data must have shape ({n_expected},) to match the observation, got {data.shape}")
    if noise.shape != data.shape:
        raise DataError(f"noise must have the same shape as data {data.shape}, got {noise.shape}")
    if mask is None:
        mask = np.ones(data.shape, bool)
    else:
        mask = np.asarray(mask)
        if mask.shape != data.shape:
            raise DataError(f"data_mask must have the same shape as data {data.shape}, got {mask.shape}")
        if mask.dtype != bool:
            raise DataError(f"data_mask must be boolean (True = use datum), got dtype {mask.dtype}")
    bad = mask & ~np.isfinite(data)
    if bad.any():
        raise DataError(
            f"data has NaN/inf at indices {np.flatnonzero(bad).tolist()}; "
            "exclude them with data_mask (False = do not use)"
        )
    bad = mask & ~(np.isfinite(noise) & (noise > 0))
    if bad.any():
        raise DataError(
            f"noise must be finite and > 0; bad at indices {np.flatnonzero(bad).tolist()} "
            f"(values {noise[bad].tolist()})"
        )
    if not mask.any():
        raise DataError("data_mask excludes every datum; nothing to fit")
    return data, noise, mask
