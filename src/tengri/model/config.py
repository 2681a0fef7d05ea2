"""Model configuration files (TOML) → SEDModel + how to read a catalog.

Format::

    [model]
    sfh = "delayed"            # constant | exponential | delayed | lognormal | dpl | burst
                               # | continuity | stochastic, or a table of settings:
                               # { family = "continuity", n_bins = 7 }
                               # { family = "stochastic", n_grid = 64, psd = "drw", mean = "delayed" }
                               #   (psd: drw | extended_regulator)
    sfh_quadrature = "bins"    # bins | hat: SSP light linear in formation age, smooth in the
                               #   SFH parameters (all parametric families but dpl)
    dust = "calzetti"          # calzetti | cf00 | smc | kc13 | cardelli89 | salim18 | none
    nebular = true
    dust_emission = false      # false | true (= "dl07") | "mbb": IR re-emission, energy balance
    igm = "inoue14"            # inoue14 | none
    cosmology = { h0 = 70.0, om0 = 0.3 }   # or "planck18"
    ssp_ages = "raw"           # raw (BC03's 221 ages) | bagpipes (rebinned to 0.1 dex)
                               #   | sparse (BC03's own ages ~0.05 dex apart; needs sfh_quadrature = "hat")
    agn = false                # or true, or a table of settings (below)
    radio = false
    xray = false
    shock = false

``dust`` names: ``calzetti`` (Calzetti et al. 2000), ``cf00`` (Charlot & Fall 2000
power law, slope ``dust_n`` ~ Uniform(0.3, 2.5)), ``smc`` (Gordon et al. 2003),
``kc13`` (= ``kriek_conroy``, Kriek & Conroy 2013; ``dust_delta`` ~ Uniform(-1.2,
0.4)), ``cardelli89`` (= ``cardelli``, Cardelli et al. 1989, R_V = 3.1),
``salim18`` (= ``salim``, Salim et al. 2018; ``dust_delta``, ``dust_bump`` ~
Uniform(0, 5)). All take ``av`` [mag] ~ Uniform(0, 3) and ``dust_eta`` = Fixed(1).

The components beyond stars, nebulae and dust (``tengri.model.components``), with
their parameters (set priors in ``[params.<name>]``) and settings (the table form,
e.g. ``agn = { torus_beta = 2.0 }``):

=========  ==========================================  ====================================
key        parameters, default prior                   settings (default)
=========  ==========================================  ====================================
``agn``    ``agn_fraction`` L_AGN / host intrinsic     ``torus_hottest_temperature_k``
           L_bol, LogUniform(1e-4, 3);                 (1500), ``torus_beta`` (1.5),
           ``agn_torus_covering`` Fixed(0.5);          ``torus_n_temperatures`` (8)
           ``agn_torus_temperature_k`` [K] Fixed(100)
``radio``  ``radio_qir`` Fixed(2.64) (Bell 2003);      ``electron_temperature_k`` (1e4)
           ``radio_alpha`` Fixed(0.8)
``xray``   none (Lehmer et al. 2010 binaries; AGN      ``binaries`` (true),
           corona via α_ox, Just et al. 2007)           ``photon_index_binaries`` (2.0),
                                                       ``photon_index_agn`` (1.9)
``shock``  ``shock_fraction`` shock Hβ / H II Hβ,      none
           Uniform(0, 1)
=========  ==========================================  ====================================

``radio`` needs a dust law and ``shock`` needs ``nebular = true``; ``radio`` and
``xray`` extend the default wavelength grid to 10 m and down to 1 Å.

``ssp_ages = "bagpipes"`` averages the BC03 spectra onto BAGPIPES' 0.1-dex ages
(``SSPGrid.rebinned_ages`` with ``tengri.data.ssp.bagpipes_age_grid`` in the
model's cosmology), to reproduce BAGPIPES; the raw ages are the more accurate.
``ssp_ages = "sparse"`` keeps BC03's own SSPs about 0.05 dex apart in age
(``SEDModel(ssp_age_step_dex=0.05)``), with ``sfh_quadrature = "hat"`` only.

    [data]
    flux_unit = "uJy"          # uJy | nJy | mJy | Jy | cgs | maggie | zp25
    filters = ["sdss_u0", "sdss_g0"]
    missing_below = -90        # optional: values below are missing; NaN always is

    [params.redshift]
    column = "redshift"        # per-galaxy value read from this catalog column
    [params.age_gyr]
    prior = "uniform"
    low = 0.1
    high = "age_of_universe"   # follows each galaxy's redshift
    [params.log_u]
    fixed = -3.0

Parameters not listed take the model's default priors.

    [spectroscopy]             # optional: a spectrum file per galaxy (joint fit)
    column = "spectrum_file"
    resolution = 2000.0
    calibration_marginalize = true

Every key of ``[spectroscopy]`` is in :mod:`tengri.model.spectro_config`. Its
parameters (``veldisp_kms``, ``eline_scale_*``) may be set in ``[params.*]``; a
galaxy without a spectrum is fitted without them.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tengri.errors import ConfigError, ParameterError
from tengri.model.observation import FLUX_UNITS, Photometry

__all__ = ["CatalogSpec", "load_config", "model_from_config"]

_MODEL_KEYS = {"sfh", "dust", "nebular", "dust_emission", "igm", "cosmology", "agn", "radio", "xray", "shock",
               "ssp_ages", "sfh_quadrature"}
_SSP_AGES = ("raw", "bagpipes", "sparse")
SPARSE_AGE_STEP_DEX = 0.05  # ssp_ages = "sparse"
_DATA_KEYS = {"flux_unit", "filters", "missing_below"}


@dataclass(frozen=True)
class CatalogSpec:
    """How to read one galaxy's data from a catalog row.

    Attributes
    ----------
    filters : tuple of str
        Flux column names (= filter names); errors are ``<filter>_err``.
    flux_unit : str
        Unit of the flux and error columns (see ``FLUX_UNITS``).
    missing_below : float or None
        Values below this are missing (masked); NaN always is.
    columns : dict
        Parameter name → catalog column giving its per-galaxy fixed value.
    spectroscopy : SpectroscopySpec or None
        The ``[spectroscopy]`` table: a spectrum file per galaxy.
    """

    filters: tuple[str, ...]
    flux_unit: str = "cgs"
    missing_below: float | None = None
    columns: dict[str, str] = field(default_factory=dict)
    spectroscopy: Any = None


def load_config(config) -> dict:
    """Parse a TOML path or pass a dict through (copied)."""
    if isinstance(config, dict):
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    path = Path(config)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def model_from_config(config, observation: Photometry | None = None):
    """Build ``(SEDModel, CatalogSpec)`` from a TOML path or dict.

    Raises
    ------
    ConfigError
        Unknown sections or keys, missing filters, bad units.
    ParameterError
        Bad priors (e.g. low ≥ high), unknown parameter names.
    """
    from tengri.model.sed_model import SEDModel
    from tengri.params import Fixed, Parameters, prior_from_dict

    cfg = load_config(config)
    unknown = set(cfg) - {"model", "data", "params", "spectroscopy"}
    if unknown:
        raise ConfigError(f"unknown config sections {sorted(unknown)}; valid: model, data, params, spectroscopy")
    model_cfg = dict(cfg.get("model", {}))
    data_cfg = dict(cfg.get("data", {}))
    bad = set(model_cfg) - _MODEL_KEYS
    if bad:
        raise ConfigError(f"unknown [model] keys {sorted(bad)}; valid: {sorted(_MODEL_KEYS)}")
    bad = set(data_cfg) - _DATA_KEYS
    if bad:
        raise ConfigError(f"unknown [data] keys {sorted(bad)}; valid: {sorted(_DATA_KEYS)}")

    flux_unit = data_cfg.get("flux_unit", "cgs")
    if flux_unit not in FLUX_UNITS:
        raise ConfigError(f"[data] flux_unit {flux_unit!r} unknown; valid: {', '.join(FLUX_UNITS)}")
    missing_below = data_cfg.get("missing_below")
    if missing_below is not None and not (isinstance(missing_below, (int, float)) and math.isfinite(missing_below)):
        raise ConfigError(f"[data] missing_below must be a finite number, got {missing_below!r}")
    filters = data_cfg.get("filters")
    if observation is None:
        if not filters:
            raise ConfigError("[data] filters must list at least one filter name")
        observation = Photometry(filters)

    priors = {}
    columns = {}
    for name, spec in cfg.get("params", {}).items():
        if not isinstance(spec, dict):
            raise ConfigError(f"[params.{name}] must be a table, got {spec!r}")
        if "column" in spec:
            if set(spec) != {"column"}:
                raise ConfigError(f"[params.{name}]: 'column' cannot be combined with {sorted(set(spec) - {'column'})}")
            columns[name] = str(spec["column"])
            priors[name] = Fixed(0.0)  # placeholder; SEDModel.per_galaxy demands the value
            continue
        try:
            priors[name] = prior_from_dict(name, spec)
        except ParameterError as err:
            raise ParameterError(f"[params.{name}]: {err}") from None

    spectroscopy = None
    if "spectroscopy" in cfg:
        from tengri.model.spectro_config import spectroscopy_from_config

        fixed_names = [k for k, v in priors.items() if isinstance(v, Fixed)]
        spectroscopy = spectroscopy_from_config(cfg["spectroscopy"], bool(model_cfg.get("nebular", True)),
                                                fixed_names)
        if observation.kind == "photometry":
            # the model of galaxies without a spectrum has no spectral parameters
            priors = {k: v for k, v in priors.items() if k not in spectroscopy.parameter_names}

    kwargs: dict[str, Any] = {k: model_cfg[k] for k in model_cfg}
    ssp_ages = kwargs.pop("ssp_ages", "raw")
    if ssp_ages not in _SSP_AGES:
        raise ConfigError(f"[model] ssp_ages must be one of {', '.join(_SSP_AGES)}, got {ssp_ages!r}")
    if ssp_ages == "bagpipes":
        from tengri.data.ssp import bagpipes_age_grid, load_ssp_grid

        kwargs["ssp"] = load_ssp_grid().rebinned_ages(*bagpipes_age_grid(kwargs.get("cosmology", "planck18")))
    elif ssp_ages == "sparse":
        if kwargs.get("sfh_quadrature", "bins") != "hat":
            raise ConfigError('[model] ssp_ages = "sparse" needs sfh_quadrature = "hat"')
        kwargs["ssp_age_step_dex"] = SPARSE_AGE_STEP_DEX
    model = SEDModel(Parameters(priors), observation, per_galaxy=tuple(columns), **kwargs)
    spec = CatalogSpec(
        filters=tuple(filters) if filters else observation.filter_names,
        flux_unit=flux_unit,
        missing_below=None if missing_below is None else float(missing_below),
        columns=columns,
        spectroscopy=spectroscopy,
    )
    return model, spec
