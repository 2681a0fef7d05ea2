"""The ``[spectroscopy]`` table of a model configuration: a spectrum file per galaxy.

::

    [spectroscopy]
    column = "spectrum_file"       # catalog column: a path per galaxy (relative to the
                                   # catalog's folder, or absolute); empty → photometry only
    flux_unit = "flam"             # flam (erg/s/cm²/Å) | cgs (erg/s/cm²/Hz) | uJy | nJy | mJy | Jy | maggie | zp25
    flux_scale = 1.0               # the file holds flux / flux_scale (e.g. 1e-17)
    wavelength_unit = "aa"         # aa | nm | um
    resolution = 2000.0            # R = λ / FWHM of the LSF   (or sigma_aa = LSF σ [Å])
    eline_mode = "none"            # none | fitted | marginalized
    eline_marginalize = false      # true is eline_mode = "marginalized"
    eline_prior_type = "flat"      # flat | cloudy (marginalised amplitudes)
    eline_prior_width = 0.5
    lines = ["Halpha", "Hbeta"]    # the named lines (default: all of DEFAULT_LINES)
    redshift_range = [0.0, 2.0]    # redshifts one model serves (default below)
    calibration_marginalize = true # Chebyshev calibration polynomial integrated out
    cal_n_poly = 3
    cal_prior_sigma = 1.0

The reader keys (``column``, units) are :func:`tengri.spectrum_io.read_spectrum`'s;
the observation keys are :class:`tengri.Spectroscopy`'s, the likelihood keys
:class:`tengri.Fitter`'s. Without ``redshift_range`` a galaxy whose redshift is a
catalog column gets a model built for its own redshift only (the model's
wavelength grid is then as short as it can be).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from tengri.errors import ConfigError, ParameterError
from tengri.model.observation import ELINE_MODES, ELINE_PRIOR_TYPES, SPECTRAL_FLUX_UNITS

__all__ = ["SpectroscopySpec", "spectroscopy_from_config", "SPECTROSCOPY_KEYS"]

_READER_KEYS = ("column", "flux_unit", "flux_scale", "wavelength_unit")
_OBSERVATION_KEYS = ("resolution", "sigma_aa", "eline_mode", "eline_prior_type", "eline_prior_width",
                     "lines", "redshift_range")
_FITTER_KEYS = ("calibration_marginalize", "cal_n_poly", "cal_prior_sigma", "eline_marginalize")
SPECTROSCOPY_KEYS = _READER_KEYS + _OBSERVATION_KEYS + _FITTER_KEYS
_PROBE_WAVELENGTH_AA = (5000.0, 5001.0)  # any valid grid: the probe only checks settings


@dataclass(frozen=True)
class SpectroscopySpec:
    """How ``tengri fit`` reads and models each galaxy's spectrum.

    Attributes
    ----------
    column : str
        Catalog column holding each galaxy's spectrum path.
    flux_unit, wavelength_unit : str
        Units of the files' columns (see :func:`tengri.spectrum_io.read_spectrum`).
    flux_scale : float
        The files hold flux / flux_scale.
    observation : dict
        ``Spectroscopy`` keyword arguments other than the wavelengths (the flux
        unit is always ``"flam"``: the reader converts).
    fitter_options : dict
        ``Fitter`` keyword arguments of the spectroscopic likelihood.
    parameter_names : tuple of str
        Parameters that only a spectrum uses (``veldisp_kms``, ``eline_scale_*``).
    free_parameter_names : tuple of str
        Those of them not fixed by the configuration, in model order (they follow
        the photometric model's free parameters in a joint model).
    """

    column: str
    flux_unit: str = "flam"
    wavelength_unit: str = "aa"
    flux_scale: float = 1.0
    observation: dict = field(default_factory=dict)
    fitter_options: dict = field(default_factory=dict)
    parameter_names: tuple[str, ...] = ()
    free_parameter_names: tuple[str, ...] = ()

    def spectroscopy(self, wavelength_aa, redshift_range=None):
        """A :class:`tengri.Spectroscopy` on ``wavelength_aa`` [Å] with these settings.

        ``redshift_range`` is used when the configuration gives none.
        """
        from tengri.model.observation import Spectroscopy

        kwargs = dict(self.observation)
        if kwargs.get("redshift_range") is None:
            kwargs["redshift_range"] = redshift_range
        return Spectroscopy(wavelength_aa, flux_unit="flam", **kwargs)


def _number(key: str, value, positive: bool = True, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"[spectroscopy] {key} must be a finite number, got {value!r}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise ConfigError(f"[spectroscopy] {key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _flag(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"[spectroscopy] {key} must be true or false, got {value!r}")
    return value


def _choice(key: str, value, valid) -> str:
    if value not in valid:
        raise ConfigError(f"[spectroscopy] {key} {value!r} unknown; valid: {', '.join(valid)}")
    return value


def spectroscopy_from_config(table: Mapping[str, Any], nebular: bool,
                             fixed_names=()) -> SpectroscopySpec:
    """Validate a ``[spectroscopy]`` table (see the module docstring).

    Parameters
    ----------
    table : mapping
        The parsed TOML table.
    nebular : bool
        The model's ``nebular`` setting (fitted and Cloudy-centred lines need it).
    fixed_names : iterable of str
        Parameters the configuration fixes (``[params.<name>] fixed = …`` or a column).

    Raises
    ------
    ConfigError
        Naming the key: unknown keys, missing ``column``, bad units, values or combinations.
    """
    from tengri.spectrum_io import WAVELENGTH_UNITS

    if not isinstance(table, Mapping):
        raise ConfigError(f"[spectroscopy] must be a table, got {table!r}")
    unknown = sorted(set(table) - set(SPECTROSCOPY_KEYS))
    if unknown:
        raise ConfigError(f"unknown [spectroscopy] keys {unknown}; valid: {', '.join(SPECTROSCOPY_KEYS)}")
    column = table.get("column")
    if not isinstance(column, str) or not column:
        raise ConfigError(f"[spectroscopy] column must name the catalog column of spectrum files, got {column!r}")
    flux_unit = _choice("flux_unit", table.get("flux_unit", "flam"), SPECTRAL_FLUX_UNITS)
    wavelength_unit = _choice("wavelength_unit", table.get("wavelength_unit", "aa"), tuple(WAVELENGTH_UNITS))
    flux_scale = _number("flux_scale", table.get("flux_scale", 1.0))

    observation: dict[str, Any] = {}
    if "resolution" in table and "sigma_aa" in table:
        raise ConfigError("[spectroscopy] give resolution or sigma_aa, not both")
    if "resolution" in table:
        observation["resolution"] = _number("resolution", table["resolution"])
    if "sigma_aa" in table:
        observation["sigma_aa"] = _number("sigma_aa", table["sigma_aa"], allow_zero=True)
    eline_mode = _choice("eline_mode", table.get("eline_mode", "none"), ELINE_MODES)
    if "eline_marginalize" in table:
        marginalize = _flag("eline_marginalize", table["eline_marginalize"])
        if marginalize and eline_mode == "none":
            eline_mode = "marginalized"
        elif marginalize != (eline_mode == "marginalized"):
            raise ConfigError(f"[spectroscopy] eline_marginalize = {str(marginalize).lower()} contradicts "
                              f"eline_mode = {eline_mode!r}")
    observation["eline_mode"] = eline_mode
    observation["eline_prior_type"] = _choice("eline_prior_type", table.get("eline_prior_type", "flat"),
                                              ELINE_PRIOR_TYPES)
    if "eline_prior_width" in table:
        observation["eline_prior_width"] = _number("eline_prior_width", table["eline_prior_width"])
    if "lines" in table:
        lines = table["lines"]
        if isinstance(lines, str) or not isinstance(lines, (list, tuple)) or not all(
                isinstance(n, str) for n in lines):
            raise ConfigError(f"[spectroscopy] lines must be a list of line names, got {lines!r}")
        observation["lines"] = tuple(lines)
    if "redshift_range" in table:
        rng = table["redshift_range"]
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise ConfigError(f"[spectroscopy] redshift_range must be [low, high], got {rng!r}")
        observation["redshift_range"] = tuple(_number("redshift_range", v, allow_zero=True) for v in rng)
    if not nebular and (eline_mode == "fitted" or (eline_mode == "marginalized"
                                                   and observation["eline_prior_type"] == "cloudy")):
        raise ConfigError("[spectroscopy] eline_mode = 'fitted' and the 'cloudy' eline_prior_type scale the "
                          "Cloudy lines: they need [model] nebular = true")

    fitter_options = {"calibration_marginalize": _flag("calibration_marginalize",
                                                       table.get("calibration_marginalize", False))}
    n_poly = table.get("cal_n_poly", 3)
    if isinstance(n_poly, bool) or not isinstance(n_poly, int) or n_poly < 1:
        raise ConfigError(f"[spectroscopy] cal_n_poly must be an integer >= 1, got {n_poly!r}")
    fitter_options["cal_n_poly"] = n_poly
    fitter_options["cal_prior_sigma"] = _number("cal_prior_sigma", table.get("cal_prior_sigma", 1.0))

    spec = SpectroscopySpec(column, flux_unit, wavelength_unit, flux_scale, observation, fitter_options)
    try:
        probe = spec.spectroscopy(_PROBE_WAVELENGTH_AA)  # line names, widths, ranges
        from tengri.model.sed_model import _spectroscopy_defaults

        names = tuple(_spectroscopy_defaults(probe, nebular))
    except ParameterError as err:
        raise ConfigError(f"[spectroscopy] {err}") from None
    free = tuple(n for n in names if n not in set(fixed_names))
    return SpectroscopySpec(column, flux_unit, wavelength_unit, flux_scale, observation, fitter_options,
                            names, free)
