"""The emission lines a spectroscopic model names, fits or marginalises.

The nebular grid (:mod:`tengri.data.nebular_grid`) predicts 124 Cloudy lines, all of
which appear in a model spectrum. A :class:`tengri.model.Spectroscopy` additionally
*names* a short list of them: their fluxes are published, and they are the ones
whose amplitudes are fitted (``eline_mode="fitted"``) or marginalised
(``eline_mode="marginalized"``). This module maps short names to the Cloudy labels.

Wavelengths are Cloudy's (air above 2000 Å, vacuum below), as bagpipes uses them.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from tengri.errors import ParameterError

__all__ = ["DEFAULT_LINES", "LineList", "resolve_lines"]

#: Short name → Cloudy label of the lines named by default (rest wavelength in the label).
DEFAULT_LINES: dict[str, str] = {
    "Lya": "H  1  1215.67A",
    "OII_3726": "O  2  3726.03A",
    "OII_3729": "O  2  3728.81A",
    "NeIII_3869": "Ne 3  3868.76A",
    "Hdelta": "H  1  4101.73A",
    "Hgamma": "H  1  4340.46A",
    "Hbeta": "H  1  4861.32A",
    "OIII_4959": "O  3  4958.91A",
    "OIII_5007": "O  3  5006.84A",
    "NI_5200": "N  1  5200.26A",
    "HeI_5876": "Blnd  5875.66A",
    "OI_6300": "O  1  6300.30A",
    "NII_6548": "N  2  6548.05A",
    "Halpha": "H  1  6562.80A",
    "NII_6584": "N  2  6583.45A",
    "SII_6716": "S  2  6716.44A",
    "SII_6731": "S  2  6730.82A",
}


class LineList(NamedTuple):
    """Named emission lines and where they sit in the Cloudy grid.

    Attributes
    ----------
    names : tuple of str
        Short names (``"Halpha"``) or, for lines outside :data:`DEFAULT_LINES`,
        the Cloudy label as given.
    labels : tuple of str
        Cloudy labels.
    grid_index : numpy.ndarray of int, shape (n_lines,)
        Position of each line in the nebular grid's line axis.
    wavelength_aa : numpy.ndarray, shape (n_lines,)
        Rest wavelengths [Å].
    """

    names: tuple[str, ...]
    labels: tuple[str, ...]
    grid_index: np.ndarray
    wavelength_aa: np.ndarray


def resolve_lines(lines: Sequence[str] | None, grid) -> LineList:
    """The named lines of a spectroscopic model.

    Parameters
    ----------
    lines : sequence of str or None
        Short names from :data:`DEFAULT_LINES` or Cloudy labels
        (``"Ar 3  7135.79A"``, whitespace-insensitive); None means every line of
        :data:`DEFAULT_LINES`.
    grid : tengri.data.NebularGrid

    Raises
    ------
    tengri.errors.ParameterError
        Naming ``lines`` for an unknown line or a duplicate.
    """
    wanted = list(DEFAULT_LINES) if lines is None else list(lines)
    if isinstance(lines, str):
        raise ParameterError("lines must be a sequence of line names, not one string")
    names, labels, index = [], [], []
    for name in wanted:
        label = DEFAULT_LINES.get(name, name)
        try:
            i = grid.line_index(label)
        except ParameterError as err:
            raise ParameterError(f"lines: {err} (short names: {', '.join(DEFAULT_LINES)})") from None
        names.append(str(name))
        labels.append(str(grid.line_names[i]))
        index.append(i)
    if len(set(index)) != len(index):
        raise ParameterError(f"lines contains the same line twice: {wanted}")
    index = np.asarray(index, dtype=int)
    return LineList(tuple(names), tuple(labels), index, np.asarray(grid.line_wavelength_aa)[index].copy())
