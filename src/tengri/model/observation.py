"""What is observed: a set of photometric bands (and, later, spectra).

An observation knows its filters and units; the per-galaxy work that depends on
redshift (the band matrix) is done by :meth:`tengri.model.SEDModel.prepare`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tengri.errors import ParameterError

__all__ = ["Photometry", "FLUX_UNITS", "to_cgs_fnu"]

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
