"""SEDModel: parameters → a chain of physical components → SED → photometry.

The model does per-galaxy work once (:meth:`SEDModel.prepare`: redshift, the band
matrix with IGM and luminosity distance folded in) so a likelihood call is one SFH
evaluation, one metallicity interpolation, a few dust products and one
``(n_band, n_wave) @ (n_wave,)`` projection.

Everything that is the same for all galaxies of a configuration (grids, filter
curves) travels as arrays in ``data_args["grids"]`` rather than as compile-time
constants, and everything galaxy-specific (data, priors, fixed values, the band
matrix) in the rest of ``data_args``: the log-likelihood is one Python function per
configuration, so compiled inference engines are shared across galaxies.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import DataError, ParameterError
from tengri.inference.problem import Problem
from tengri.model import components as comp
from tengri.model.observation import Photometry
from tengri.params import Fixed, Parameters, Prior, Uniform
from tengri.physics import attenuation, bandpass, cosmology, igm
from tengri.physics import dust_emission as dust_emission_physics
from tengri.physics import sfh as sfh_physics

__all__ = ["SEDModel"]

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
    observation : Photometry, optional
        What is observed; needed for :meth:`predict_photometry` and fitting.
    sfh : str
        Star-formation history family: ``constant``, ``exponential``, ``delayed``,
        ``lognormal``, ``dpl`` or ``burst``.
    dust : str
        Attenuation curve, one of ``tengri.physics.attenuation.ATTENUATION_CURVES``
        (``calzetti`` — Calzetti et al. 2000 —, ``cardelli``, ``smc``,
        ``kriek_conroy``, ``salim``, ``cf00``) or ``none``; stars younger than
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
    """

    def __init__(
        self,
        parameters: Parameters,
        observation: Photometry | None = None,
        *,
        sfh: str = "delayed",
        dust: str = "calzetti",
        nebular: bool = True,
        dust_emission: bool | str = False,
        igm: str = "inoue14",
        cosmology: Any = "planck18",
        ssp=None,
        wavelength_aa=None,
        t_bc_yr: float = 1e7,
        per_galaxy: tuple[str, ...] = (),
    ):
        from tengri.data.ssp import load_ssp_grid, photometry_wavelength_grid

        if not isinstance(parameters, Parameters):
            raise ParameterError(f"parameters must be a tengri.Parameters, got {type(parameters).__name__}")
        if sfh not in sfh_physics.SFH_FAMILIES:
            raise ParameterError(f"unknown sfh {sfh!r}; valid: {', '.join(sfh_physics.SFH_FAMILIES)}")
        if dust not in _DUST_LAWS:
            raise ParameterError(f"unknown dust law {dust!r}; valid: {', '.join(_DUST_LAWS)}")
        dust_emission = _dust_emission_model(dust_emission)
        if dust_emission is not None and dust == "none":
            raise ParameterError(
                f"dust_emission={dust_emission!r} needs dust attenuation to re-emit; "
                f"dust='none' absorbs nothing (choose a dust law or dust_emission=False)"
            )
        if igm not in _IGM_MODELS:
            raise ParameterError(f"unknown igm model {igm!r}; valid: {', '.join(_IGM_MODELS)}")
        if observation is not None and not isinstance(observation, Photometry):
            raise ParameterError(
                f"observation must be a Photometry, got {type(observation).__name__}"
            )
        self.observation = observation
        self.sfh = sfh
        self.dust = dust
        self.nebular = bool(nebular)
        self.dust_emission = dust_emission  # None or a DUST_EMISSION_MODELS name
        self.igm = igm
        self.cosmo = _cosmology(cosmology)
        self.t_bc_yr = float(t_bc_yr)

        full = ssp if ssp is not None else load_ssp_grid()
        wave = photometry_wavelength_grid() if wavelength_aa is None else np.asarray(wavelength_aa, float)
        self.ssp = full.resampled(wave) if not np.array_equal(wave, full.wavelength_aa) else full
        self.wavelength_aa = np.asarray(self.ssp.wavelength_aa, float)

        self.components = self._build_components()
        self.parameters = self._complete_parameters(parameters)
        self.per_galaxy = tuple(per_galaxy)
        not_fixed = [n for n in self.per_galaxy if n not in self.parameters.fixed_values]
        if not_fixed:
            raise ParameterError(f"per_galaxy parameters {not_fixed} must be Fixed in parameters")

    # --- construction -----------------------------------------------------------------
    def _build_components(self):
        chain = [
            comp.StarFormationHistory(self.sfh, self.ssp.age_bin_edges_yr),
            comp.StellarPopulation(t_bc_yr=self.t_bc_yr),
        ]
        if self.nebular:
            chain.append(comp.NebularEmission(t_bc_yr=self.t_bc_yr))
        if self.dust != "none":
            chain.append(comp.DustAttenuation(law=self.dust, t_bc_yr=self.t_bc_yr))
        if self.dust_emission is not None:
            chain.append(comp.DustEmission(model=self.dust_emission))
        return tuple(chain)

    def default_priors(self) -> dict[str, Prior]:
        """Every parameter the components need, with its default prior."""
        out: dict[str, Prior] = {}
        for c in self.components:
            out.update(c.defaults())
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
        free parameter names and prior kinds, fixed parameter names, grid shapes
        and observation.
        """
        obs = self.observation.signature() if self.observation is not None else None
        return (
            tuple(c.signature() for c in self.components),
            self.parameters.signature(),
            self.ssp.lnu.shape,
            self.igm,
            obs,
        )

    @cached_property
    def grids(self) -> dict:
        """Arrays shared by every galaxy (passed as data, not constants)."""
        out = {
            "ssp_lnu": jnp.asarray(self.ssp.lnu, jnp.float64),
            "ssp_z": jnp.asarray(self.ssp.metallicity_zsun, jnp.float64),
            "wavelength_aa": jnp.asarray(self.wavelength_aa),
            "ssp_surviving": jnp.asarray(self.ssp.surviving_mass_fraction, jnp.float64),
            "dlnlam": jnp.asarray(bandpass.log_wavelength_widths(self.wavelength_aa)),
        }
        for c in self.components:
            out.update({k: jnp.asarray(v) for k, v in c.arrays(self.wavelength_aa).items()})
        if self.observation is not None:
            fw, ft = bandpass.pack_filters(self.observation.filters)
            out["filter_wave_aa"] = jnp.asarray(fw)
            out["filter_trans"] = jnp.asarray(ft)
        return out

    # --- the forward model (pure) ------------------------------------------------------
    def _run_chain(self, theta: Mapping[str, jax.Array], grids: dict) -> dict:
        z = theta["redshift"]
        state = {
            "age_of_universe_yr": cosmology.age_of_universe_gyr(z, self.cosmo) * _GYR,
            "derived": {},
        }
        for c in self.components:
            state = c.apply(state, theta, grids)
        if "sed" not in state:  # no dust: the total is the intrinsic light
            sed = state["stellar_old"] + state["stellar_young"]
            if "sed_nebular_intrinsic" in state:
                sed = sed + state["sed_nebular_intrinsic"]
            state = {**state, "sed": sed}
        derived = dict(state["derived"])
        derived["ssfr"] = derived["sfr_100myr"] / derived["stellar_mass"]
        return {**state, "derived": derived}

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
    def _band_matrix_jit(self):
        return jax.jit(self._band_matrix)

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
        if self.observation is None:
            raise ParameterError("predict_photometry needs an observation (Photometry)")
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

    def _derived(self, theta, grids):
        return self._run_chain(theta, grids)["derived"]

    def derived_quantities(self, params: Mapping[str, Any]) -> dict:
        """Derived physical quantities.

        Returns
        -------
        dict
            ``stellar_mass`` (surviving, M☉), ``mass_formed`` (M☉), ``sfr_10myr``
            and ``sfr_100myr`` (M☉/yr, mean over the last 10 / 100 Myr), ``ssfr``
            (sfr_100myr / stellar_mass, yr⁻¹), ``mass_weighted_age_gyr`` (Gyr);
            scalars for scalar inputs, arrays of shape (n,) for (n,) inputs.
        """
        return self._map("_derived", params)

    def _sfh_curve(self, theta, grids, lookback_yr):
        fam = sfh_physics.SFH_FAMILIES[self.sfh]
        age_u = cosmology.age_of_universe_gyr(theta["redshift"], self.cosmo) * _GYR
        return sfh_physics.sfr_msun_per_yr(
            self.sfh, {n: theta[n] for n in fam.param_names}, lookback_yr,
            10.0 ** theta["stellar_mass"], age_u,
        )

    def predict_sfh(self, params: Mapping[str, Any], lookback_gyr=None):
        """Star-formation rate against lookback time.

        Returns
        -------
        lookback_gyr : numpy.ndarray, shape (n_t,)
        sfr : numpy.ndarray, shape (n_t,) or (n, n_t) [M☉/yr]
        """
        if lookback_gyr is None:
            values, _ = self._values(params)
            z_min = float(jnp.min(values["redshift"]))
            t_max = float(cosmology.age_of_universe_gyr(z_min, self.cosmo))
            lookback_gyr = np.linspace(0.0, t_max, 300)
        lookback_yr = jnp.asarray(np.asarray(lookback_gyr, float) * _GYR)
        values, batch = self._values(params)
        flat = {k: v.reshape(-1) for k, v in values.items()}
        fn = jax.jit(jax.vmap(self._sfh_curve, in_axes=(0, None, None)))
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
        z_for_bounds = z_fixed if z_fixed is not None else _prior_min(self.parameters["redshift"])
        context = {"age_of_universe": float(cosmology.age_of_universe_gyr(z_for_bounds, self.cosmo))}
        ctx = {
            "table": jnp.asarray(self.parameters.prior_table(context)),
            "fixed": jnp.asarray([fixed_values[n] for n in sorted(fixed_values)], jnp.float64),
        }
        if z_fixed is not None and self.observation is not None:
            w = self._band_matrix_jit(jnp.asarray(z_fixed), self.grids)
            if np.any(np.asarray(jnp.sum(w, axis=1)) <= 0):
                bad = [self.observation.filter_names[i] for i in np.flatnonzero(np.asarray(jnp.sum(w, axis=1)) <= 0)]
                raise DataError(f"filters {bad} fall outside the model wavelength grid at z={z_fixed}")
            ctx["band_matrix"] = w
        return ctx

    @cached_property
    def _likelihoods(self) -> dict:
        """One log-likelihood / residual function pair per model (shared by galaxies)."""
        params = self.parameters
        z_fixed = "redshift" in params.fixed_values

        def predicted(z, data_args):
            theta = params.to_physical(z, data_args["table"], data_args["fixed"])
            w = data_args["band_matrix"] if z_fixed else None
            return self._photometry(theta, data_args["grids"], w)

        def residuals(z, data_args):
            r = (predicted(z, data_args) - data_args["data"]) / data_args["noise"]
            return jnp.where(data_args["mask"], r, 0.0)

        def log_likelihood(z, data_args):
            r = residuals(z, data_args)
            return -0.5 * jnp.sum(r * r) + data_args["log_norm"]

        return {"log_likelihood": log_likelihood, "residuals": residuals, "predicted": predicted}

    def build_problem(self, data, noise, mask=None, fixed: Mapping[str, float] | None = None) -> Problem:
        """The inference Problem for one galaxy's photometry.

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
        data, noise, mask = validate_data(data, noise, mask, self.observation.n_data)
        ctx = self.prepare(fixed)
        safe_noise = np.where(mask, noise, 1.0)
        data_args = {
            **ctx,
            "grids": self.grids,
            "data": jnp.asarray(np.where(mask, data, 0.0)),
            "noise": jnp.asarray(safe_noise),
            "mask": jnp.asarray(mask),
            "log_norm": jnp.asarray(
                -np.sum(np.log(safe_noise[mask])) - 0.5 * mask.sum() * np.log(2 * np.pi)
            ),
        }
        lk = self._likelihoods
        params = self.parameters
        return Problem(
            names=params.free_names,
            log_likelihood=lk["log_likelihood"],
            data_args=data_args,
            to_physical=self._to_physical_fn,
            init=jnp.zeros(params.n_free),
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
        return f"SEDModel({', '.join(parts)}, {self.parameters.n_free} free, {self.observation!r})"


def _prior_min(prior: Prior) -> float:
    for attr in ("low", "value", "mu"):
        v = getattr(prior, attr, None)
        if isinstance(v, float):
            return max(v, 1e-3)
    return 1e-3


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
