"""Filter transmission curves: astro-sedpy's collection by name, or your own.

sedpy (``sedpy/data/filters/<name>.par``) stores each curve as two columns,
wavelength [Å] and the detector signal per incoming photon (a photon-counting
response), with ``#`` comments. The files are read directly, so sedpy is not
imported. Negative samples (noise in a few measured curves, e.g. VISTA) are set
to zero — sedpy drops them instead — and runs of zeros at either end are trimmed
to one.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Sequence

import numpy as np

from tengri.errors import ParameterError

__all__ = ["Filter", "load_filters", "available_filter_names", "sedpy_filter_dir"]


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class Filter:
    """One photon-counting filter curve.

    Attributes
    ----------
    name : str
    wavelength_aa : numpy.ndarray, shape (n,)
        Observed-frame wavelength [Å], strictly increasing.
    transmission : numpy.ndarray, shape (n,)
        Detector signal per photon (dimensionless, ≥ 0, any normalisation).
    """

    name: str
    wavelength_aa: np.ndarray
    transmission: np.ndarray

    @classmethod
    def from_arrays(cls, name: str, wavelength_aa, transmission) -> "Filter":
        """A filter from your own curve, validated.

        Parameters
        ----------
        name : str
        wavelength_aa : array_like, shape (n,), n ≥ 2
            [Å], finite, > 0, strictly increasing.
        transmission : array_like, shape (n,)
            Photon-counting response: finite, ≥ 0, not all zero.

        Raises
        ------
        tengri.errors.ParameterError
            Naming the filter and the argument at fault.
        """
        wave = np.array(wavelength_aa, dtype=np.float64)
        trans = np.array(transmission, dtype=np.float64)
        label = f"filter {name!r}:"
        if wave.ndim != 1 or trans.ndim != 1:
            raise ParameterError(f"{label} wavelength_aa and transmission must be 1-D")
        if wave.size != trans.size:
            raise ParameterError(
                f"{label} wavelength_aa has {wave.size} values but transmission has {trans.size}"
            )
        if wave.size < 2:
            raise ParameterError(f"{label} needs at least 2 samples")
        if not np.all(np.isfinite(wave)) or np.any(wave <= 0):
            raise ParameterError(f"{label} wavelength_aa must be finite and > 0")
        if np.any(np.diff(wave) <= 0):
            raise ParameterError(f"{label} wavelength_aa must be strictly increasing")
        if not np.all(np.isfinite(trans)):
            raise ParameterError(f"{label} transmission must be finite")
        if np.any(trans < 0):
            raise ParameterError(f"{label} transmission must be ≥ 0")
        if not np.any(trans > 0):
            raise ParameterError(f"{label} transmission is zero everywhere")
        return cls(name=str(name), wavelength_aa=_frozen(wave), transmission=_frozen(trans))

    @property
    def effective_wavelength_aa(self) -> float:
        """Pivot wavelength [Å] of the photon-counting response.

        .. math::  \\lambda_p^2 = \\int T\\,\\lambda\\,d\\lambda \\big/ \\int T\\,\\lambda^{-1}\\,d\\lambda

        (Tokunaga & Vacca 2005, eq. A11), the wavelength at which the band-averaged
        f_ν and f_λ are related by ``f_λ = c f_ν / λ_p²``; independent of the source.
        """
        wave, trans = self.wavelength_aa, self.transmission
        return float(np.sqrt(np.trapezoid(trans * wave, wave) / np.trapezoid(trans / wave, wave)))


def sedpy_filter_dir() -> Path:
    """The ``data/filters`` directory of the installed astro-sedpy.

    Raises
    ------
    FileNotFoundError
        If astro-sedpy is not installed.
    """
    spec = importlib.util.find_spec("sedpy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("astro-sedpy is not installed (pip install 'astro-sedpy>=0.4,<0.5')")
    return Path(spec.submodule_search_locations[0]) / "data" / "filters"


@cache
def available_filter_names() -> tuple[str, ...]:
    """Names of the filters shipped with astro-sedpy, sorted."""
    return tuple(sorted(path.stem for path in sedpy_filter_dir().glob("*.par")))


def _trim_zero_ends(wave: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep one zero sample before the first and after the last positive one."""
    positive = np.flatnonzero(trans > 0)
    start, stop = max(positive[0] - 1, 0), min(positive[-1] + 2, trans.size)
    return wave[start:stop], trans[start:stop]


@cache
def _read_sedpy_filter(name: str) -> Filter:
    table = np.loadtxt(sedpy_filter_dir() / f"{name}.par", comments="#", usecols=(0, 1), ndmin=2)
    order = np.argsort(table[:, 0], kind="stable")
    wave, trans = table[order, 0], np.clip(table[order, 1], 0.0, None)
    wave, trans = _trim_zero_ends(wave, trans)
    return Filter.from_arrays(name, wave, trans)


def load_filters(names: Sequence[str | Filter]) -> tuple[Filter, ...]:
    """Filters by sedpy name (e.g. ``"sdss_r0"``, ``"jwst_f444w"``) or as given.

    Parameters
    ----------
    names : sequence of str or Filter
        Each entry is a sedpy filter name or an already built :class:`Filter`,
        which is passed through. A single string is an error (it would be read as
        a list of one-letter names).

    Returns
    -------
    tuple of Filter, in the order given.

    Raises
    ------
    tengri.errors.ParameterError
        For an unknown name, naming it and suggesting the closest available names.
    """
    if isinstance(names, (str, Filter)):
        raise ParameterError(f"names must be a sequence of filter names or Filters, got {names!r}; wrap it in a list")
    known = available_filter_names()
    filters = []
    for entry in names:
        if isinstance(entry, Filter):
            filters.append(entry)
            continue
        if not isinstance(entry, str):
            raise ParameterError(f"filter entries must be names (str) or Filter objects, got {type(entry).__name__}")
        if entry not in known:
            close = difflib.get_close_matches(entry, known, n=5, cutoff=0.5)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ParameterError(
                f"unknown filter {entry!r}{hint} (see tengri.data.available_filter_names())"
            )
        filters.append(_read_sedpy_filter(entry))
    return tuple(filters)
