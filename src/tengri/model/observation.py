"""What is observed: photometric bands, a spectrum, or both (:class:`Joint`).

An observation knows its filters and units; the per-galaxy work that depends on
redshift (the band matrix) is done by :meth:`tengri.model.SEDModel.prepare`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tengri.errors import ParameterError

__all__ = ["Photometry", "Spectroscopy", "Joint", "FLUX_UNITS", "SPECTRAL_FLUX_UNITS", "to_cgs_fnu",
           "as_observation"]

# multiplicative factor from each accepted unit to erg/s/cm²/Hz
FLUX_UNITS: dict[str, float] = {
    "cgs": 1.0,
    "uJy": 1e-29,
    "nJy": 1e-32,
    "mJy": 1e-26,
    "Jy": 1e-23,
    "maggie": 3.631e-20,
    "zp25": 3.631e-30,  # AB zero point 25: 1 unit = 1e-10 maggie
}


def to_cgs_fnu(values, unit: str) -> np.ndarray:
    """Convert f_ν values from ``unit`` (see :data:`FLUX_UNITS`) to erg/s/cm²/Hz."""
    if unit not in FLUX_UNITS:
        raise ParameterError(f"unknown flux unit {unit!r}; valid units: {', '.join(FLUX_UNITS)}")
    return np.asarray(values, dtype=np.float64) * FLUX_UNITS[unit]


class Photometry:
    """Broadband photometry through a set of filters.

    Parameters
    ----------
    filters : sequence of str or tengri.data.filters.Filter
        astro-sedpy filter names (e.g. ``"sdss_r0"``) or user curves made with
        ``Filter.from_arrays``.

    Notes
    -----
    Model photometry is f_ν in erg/s/cm²/Hz (AB convention, photon-counting
    detectors). Catalog units are converted at the boundary (``to_cgs_fnu``).
    """

    kind = "photometry"

    def __init__(self, filters: Sequence):
        from tengri.data.filters import load_filters

        if isinstance(filters, str) or not len(filters):
            raise ParameterError("filters must be a non-empty sequence of filter names or Filter objects")
        self.filters = load_filters(filters)
        names = [f.name for f in self.filters]
        if len(set(names)) != len(names):
            raise ParameterError(f"filters contains duplicates: {names}")

    @property
    def filter_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.filters)

    @property
    def n_data(self) -> int:
        return len(self.filters)

    @property
    def effective_wavelength_aa(self) -> np.ndarray:
        """Effective wavelength of each band [Å], shape (n_band,)."""
        return np.array([f.effective_wavelength_aa for f in self.filters])

    def signature(self) -> tuple:
        return ("photometry", self.filter_names)

    def __repr__(self) -> str:
        return f"Photometry({len(self.filters)} bands: {', '.join(self.filter_names)})"


#: Spectral flux units: ``"flam"`` is f_λ in erg/s/cm²/Å; the others are f_ν units of :data:`FLUX_UNITS`.
SPECTRAL_FLUX_UNITS = ("flam", *FLUX_UNITS)
ELINE_MODES = ("none", "fitted", "marginalized")
ELINE_PRIOR_TYPES = ("flat", "cloudy")


def _positive_per_pixel(name: str, value, n_pix: int, allow_zero: bool) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim not in (0, 1) or (arr.ndim == 1 and arr.shape[0] != n_pix):
        raise ParameterError(f"{name} must be a scalar or have shape ({n_pix},) like wavelength_aa, got {arr.shape}")
    ok = np.isfinite(arr) & ((arr >= 0) if allow_zero else (arr > 0))
    if not np.all(ok):
        raise ParameterError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {arr[~ok][:5].tolist()}")
    return np.broadcast_to(arr, (n_pix,)).copy()


class Spectroscopy:
    """A spectrum on a grid of observed-frame pixels.

    Parameters
    ----------
    wavelength_aa : array, shape (n_pix,)
        Observed pixel centres [Å], strictly increasing (vacuum or air as the
        data; the model lines are Cloudy's, air above 2000 Å).
    resolution : float or array (n_pix,), optional
        Resolving power R = λ / FWHM of the line-spread function (LSF).
    sigma_aa : float or array (n_pix,), optional
        Instead of ``resolution``: the LSF Gaussian σ [Å] per pixel. With neither,
        no instrumental broadening (only the velocity dispersion ``veldisp_kms``).
    flux_unit : str
        ``"flam"`` (default): f_λ in erg/s/cm²/Å; or an f_ν unit of
        :data:`FLUX_UNITS` (``"cgs"`` = erg/s/cm²/Hz, ``"uJy"``, …). Data, noise
        and :meth:`tengri.model.SEDModel.predict_spectrum` are in this unit,
        averaged over each pixel.
    eline_mode : {"none", "fitted", "marginalized"}
        ``"none"``: every Cloudy line at the model's prediction. ``"fitted"``: the
        named ``lines`` get free parameters ``eline_scale_<name>`` multiplying
        their Cloudy flux (default prior LogUniform(0.1, 10)). ``"marginalized"``:
        the named lines' amplitudes are linear parameters integrated out in the
        likelihood (:mod:`tengri.inference.spectro_likelihood`).
    eline_prior_type : {"flat", "cloudy"}
        Prior of the marginalised amplitudes: flat (improper), or Gaussian centred
        on the Cloudy prediction with fractional width ``eline_prior_width``.
    eline_prior_width : float
        Fractional 1σ width of the ``"cloudy"`` prior (default 0.5).
    lines : sequence of str, optional
        The named lines (:data:`tengri.physics.emission_lines.DEFAULT_LINES` by
        default: Lyα, [OII]3726,3729, [NeIII]3869, Hδ, Hγ, Hβ, [OIII]4959,5007,
        [NI]5200, HeI5876, [OI]6300, [NII]6548,6584, Hα, [SII]6716,6731).
    redshift_range : (float, float), optional
        Redshifts the model's fine wavelength grid must serve; default the
        redshift prior's bounds (or 0–10 for per-galaxy or unbounded redshifts).

    Notes
    -----
    Fitting a spectrum also needs the model to know the velocity dispersion:
    the parameter ``veldisp_kms`` (σ, km/s; default prior Uniform(10, 400)).
    """

    kind = "spectroscopy"

    def __init__(self, wavelength_aa, resolution=None, sigma_aa=None, flux_unit: str = "flam",
                 eline_mode: str = "none", eline_prior_type: str = "flat", eline_prior_width: float = 0.5,
                 lines=None, redshift_range=None):
        wave = np.asarray(wavelength_aa, dtype=np.float64)
        if wave.ndim != 1 or wave.shape[0] < 2:
            raise ParameterError(f"wavelength_aa must be a 1-d array of at least 2 pixels, got shape {wave.shape}")
        if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
            raise ParameterError("wavelength_aa must be finite and > 0")
        if np.any(np.diff(wave) <= 0):
            bad = int(np.flatnonzero(np.diff(wave) <= 0)[0])
            raise ParameterError(f"wavelength_aa must be strictly increasing; it is not at index {bad}")
        if resolution is not None and sigma_aa is not None:
            raise ParameterError("give resolution or sigma_aa, not both")
        self.wavelength_aa = wave
        self.resolution = None if resolution is None else _positive_per_pixel("resolution", resolution, wave.size, False)
        self.sigma_aa = None if sigma_aa is None else _positive_per_pixel("sigma_aa", sigma_aa, wave.size, True)
        if flux_unit not in SPECTRAL_FLUX_UNITS:
            raise ParameterError(f"unknown flux_unit {flux_unit!r}; valid: {', '.join(SPECTRAL_FLUX_UNITS)}")
        if eline_mode not in ELINE_MODES:
            raise ParameterError(f"unknown eline_mode {eline_mode!r}; valid: {', '.join(ELINE_MODES)}")
        if eline_prior_type not in ELINE_PRIOR_TYPES:
            raise ParameterError(f"unknown eline_prior_type {eline_prior_type!r}; valid: {', '.join(ELINE_PRIOR_TYPES)}")
        if not (np.isfinite(eline_prior_width) and eline_prior_width > 0):
            raise ParameterError(f"eline_prior_width must be finite and > 0, got {eline_prior_width}")
        if redshift_range is not None:
            lo, hi = (float(v) for v in redshift_range)
            if not (0 <= lo <= hi and np.isfinite(hi)):
                raise ParameterError(f"redshift_range must be (low, high) with 0 <= low <= high, got {redshift_range}")
            redshift_range = (lo, hi)
        self.flux_unit = flux_unit
        self.eline_mode = eline_mode
        self.eline_prior_type = eline_prior_type
        self.eline_prior_width = float(eline_prior_width)
        self.redshift_range = redshift_range
        from tengri.data.nebular_grid import load_nebular_grid
        from tengri.physics.emission_lines import resolve_lines

        self.lines = resolve_lines(lines, load_nebular_grid())

    @property
    def n_data(self) -> int:
        return int(self.wavelength_aa.size)

    @property
    def line_names(self) -> tuple[str, ...]:
        return self.lines.names

    def lsf_sigma_ln(self) -> np.ndarray:
        """Instrumental σ in ln λ at each pixel, shape (n_pix,)."""
        from tengri.physics.spectral_convolution import lsf_sigma_ln

        return lsf_sigma_ln(self.wavelength_aa, self.resolution, self.sigma_aa)

    def signature(self) -> tuple:
        return ("spectroscopy", self.n_data, self.flux_unit, self.eline_mode, self.eline_prior_type,
                self.lines.names)

    def __repr__(self) -> str:
        lsf = (f"R={np.median(self.resolution):.0f}" if self.resolution is not None else
               f"sigma={np.median(self.sigma_aa):.2f} Å" if self.sigma_aa is not None else "no LSF")
        return (f"Spectroscopy({self.n_data} pixels, {self.wavelength_aa[0]:.0f}–{self.wavelength_aa[-1]:.0f} Å, "
                f"{lsf}, {self.flux_unit}, eline_mode={self.eline_mode!r})")


class Joint:
    """Photometry and a spectrum of the same galaxy, fitted together.

    ``SEDModel(observation=(Photometry(...), Spectroscopy(...)))`` builds one. The
    data layout of a joint fit is photometry first, then the spectrum: either one
    array ``[band fluxes (n_band,), spectrum (n_pix,)]`` or a dict
    ``{"phot": ..., "spec": ...}`` (see :class:`tengri.Fitter`).
    """

    kind = "joint"

    def __init__(self, photometry: Photometry, spectroscopy: Spectroscopy):
        if not isinstance(photometry, Photometry) or not isinstance(spectroscopy, Spectroscopy):
            raise ParameterError("Joint needs a Photometry and a Spectroscopy")
        self.photometry = photometry
        self.spectroscopy = spectroscopy

    @property
    def n_data(self) -> int:
        return self.photometry.n_data + self.spectroscopy.n_data

    def signature(self) -> tuple:
        return ("joint", self.photometry.signature(), self.spectroscopy.signature())

    def __repr__(self) -> str:
        return f"Joint({self.photometry!r}, {self.spectroscopy!r})"


def as_observation(value):
    """``observation`` argument → None, Photometry, Spectroscopy or Joint.

    A tuple/list of one Photometry and one Spectroscopy (any order) makes a Joint.
    """
    if value is None or isinstance(value, (Photometry, Spectroscopy, Joint)):
        return value
    if isinstance(value, (tuple, list)):
        phot = [v for v in value if isinstance(v, Photometry)]
        spec = [v for v in value if isinstance(v, Spectroscopy)]
        if len(phot) == 1 and len(spec) == 1 and len(value) == 2:
            return Joint(phot[0], spec[0])
    raise ParameterError(
        "observation must be a Photometry, a Spectroscopy, or a (Photometry, Spectroscopy) pair; "
        f"got {value!r}"
    )
