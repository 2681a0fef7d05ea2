"""The model spectrum on an observed pixel grid (used by SEDModel with a Spectroscopy).

The component chain makes the rest-frame SED on the model grid, in which the
nebular lines sit in single bins (bagpipes' rule, right for photometry). For a
spectrum this module:

1. takes the Cloudy lines out of the SED again (the chain's deposit, times the
   nebular dust transmission the chain applied), leaving the continuum;
2. redshifts, dims by the luminosity distance and the IGM, and broadens the
   continuum by the velocity dispersion ``veldisp_kms`` and the instrument's LSF
   (Gaussians in ln λ; :mod:`tengri.physics.spectral_convolution`), integrated
   over each pixel;
3. adds each line back as a Gaussian of the combined width at its own observed
   wavelength, with its flux after dust (the nebular transmission interpolated at
   the line) and the IGM;
4. divides by the pixel width in λ (f_λ) or ν (f_ν) and converts to the
   Spectroscopy's unit.

Line fluxes are observed-frame [erg/s/cm²] throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from tengri.errors import DataError, ParameterError
from tengri.model.observation import FLUX_UNITS
from tengri.physics import cosmology, igm
from tengri.physics import spectral_convolution as conv

__all__ = ["SpectrumPlan", "spectroscopic_wavelength_grid", "VELDISP_PARAMETER", "eline_scale_name",
           "GRID_PADDING_LN"]

C_AA_S = 2.99792458e18
VELDISP_PARAMETER = "veldisp_kms"
#: ln λ margin of the fine model grid beyond the spectrum (6σ at 1000 km/s)
GRID_PADDING_LN = 0.02
_DEFAULT_REDSHIFT_RANGE = (0.0, 10.0)


def eline_scale_name(line: str) -> str:
    """Free parameter multiplying a named line's Cloudy flux (``eline_mode="fitted"``)."""
    return f"eline_scale_{line}"


def spectroscopic_wavelength_grid(coarse_aa, full_aa, rest_low_aa: float, rest_high_aa: float) -> np.ndarray:
    """The coarse photometric grid with the full SSP resolution inside [low, high] [Å].

    Parameters
    ----------
    coarse_aa : array
        Photometric model grid (``tengri.data.photometry_wavelength_grid``).
    full_aa : array
        The SSP grid's native wavelengths.
    rest_low_aa, rest_high_aa : float
        Rest-frame range a spectrum can reach.
    """
    coarse = np.asarray(coarse_aa, float)
    full = np.asarray(full_aa, float)
    inside = full[(full >= rest_low_aa) & (full <= rest_high_aa)]
    if inside.size == 0:
        raise ParameterError(
            f"the spectrum's rest-frame range {rest_low_aa:.0f}–{rest_high_aa:.0f} Å is outside the SSP grid"
        )
    outside = coarse[(coarse < inside[0]) | (coarse > inside[-1])]
    return np.unique(np.concatenate([outside, inside]))


def redshift_range(spectroscopy, redshift_prior, per_galaxy: bool) -> tuple[float, float]:
    """Redshifts the fine grid serves: the Spectroscopy's, else the prior's bounds."""
    if spectroscopy.redshift_range is not None:
        return spectroscopy.redshift_range
    if per_galaxy:
        return _DEFAULT_REDSHIFT_RANGE
    value = getattr(redshift_prior, "value", None)
    if isinstance(value, float):
        return value, value
    low, high = getattr(redshift_prior, "low", None), getattr(redshift_prior, "high", None)
    if isinstance(low, float) and isinstance(high, float):
        return max(low, 0.0), high
    return _DEFAULT_REDSHIFT_RANGE


def rest_range_aa(spectroscopy, z_range) -> tuple[float, float]:
    """Rest wavelengths [Å] a spectrum can reach, padded by GRID_PADDING_LN."""
    wave = spectroscopy.wavelength_aa
    return (wave[0] * np.exp(-GRID_PADDING_LN) / (1 + z_range[1]),
            wave[-1] * np.exp(GRID_PADDING_LN) / (1 + z_range[0]))


@dataclass(frozen=True, eq=False)
class SpectrumPlan:
    """What a model's spectrum needs that is the same for every galaxy (static).

    Built by SEDModel once its parameters are complete. ``line_index`` are the
    Cloudy lines drawn in the spectrum (those the rest range can reach plus the
    named ones); ``named`` are the positions of the Spectroscopy's named lines
    among them.
    """

    spectroscopy: object
    wavelength_aa: np.ndarray  # rest model grid
    model_edges_ln: np.ndarray
    nebular: bool
    igm: str
    cosmo: object
    line_index: np.ndarray  # (n_sel,) into the Cloudy line axis
    line_wavelength_aa: np.ndarray  # (n_sel,)
    holder: np.ndarray  # (n_sel,) model bin holding each line (the chain's deposit)
    holder_weight: np.ndarray  # (n_sel,) 1 / (ν Δln λ) of that bin, 0 outside the grid
    named: np.ndarray  # (n_named,) positions in line_index
    n_window: int
    sigma_max_ln: float

    @classmethod
    def build(cls, model, spectroscopy, veldisp_bounds, z_range):
        from tengri.data.nebular_grid import load_nebular_grid

        wave = np.asarray(model.wavelength_aa, float)
        edges = conv.log_bin_edges(wave)
        grid = load_nebular_grid()
        lo, hi = rest_range_aa(spectroscopy, z_range)
        line_wave = np.asarray(grid.line_wavelength_aa, float)
        in_range = np.flatnonzero((line_wave >= lo) & (line_wave <= hi))
        line_index = np.union1d(in_range, spectroscopy.lines.grid_index).astype(int)
        named = np.searchsorted(line_index, spectroscopy.lines.grid_index)
        holder = np.searchsorted(edges, np.log(line_wave[line_index]), side="right") - 1
        inside = (holder >= 0) & (holder < wave.size)
        holder = np.clip(holder, 0, wave.size - 1)
        dnu = C_AA_S / wave * np.diff(edges)
        holder_weight = np.where(inside, 1.0 / dnu[holder], 0.0)
        lsf = spectroscopy.lsf_sigma_ln()
        sigma_max = float(np.sqrt((veldisp_bounds[1] / conv.C_KMS) ** 2 + np.max(lsf) ** 2))
        pix_edges = conv.log_bin_edges(spectroscopy.wavelength_aa)
        n_window = conv.window_size(edges, pix_edges, sigma_max, (np.log1p(z_range[0]), np.log1p(z_range[1])))
        return cls(spectroscopy, wave, edges, model.nebular, model.igm, model.cosmo, line_index,
                   line_wave[line_index], holder, holder_weight, named, n_window, sigma_max)

    # --- per galaxy (numpy) ------------------------------------------------------------
    def context(self, wavelength_aa=None) -> dict:
        """Pixel geometry of one galaxy's spectrum, as arrays for ``data_args``.

        ``wavelength_aa`` (n_pix,) replaces the Spectroscopy's pixel centres (same
        number of pixels; the LSF σ in ln λ is kept per pixel).

        Raises
        ------
        DataError
            Naming ``wavelength_aa`` when the pixels differ in number, are not
            increasing, or need a wider window than the model was built for.
        """
        spec = self.spectroscopy
        if wavelength_aa is None:
            wave = spec.wavelength_aa
        else:
            wave = np.asarray(wavelength_aa, dtype=np.float64)
            if wave.shape != spec.wavelength_aa.shape:
                raise DataError(f"wavelength_aa must have shape {spec.wavelength_aa.shape} like the model's "
                                f"Spectroscopy, got {wave.shape}")
            if not np.all(np.isfinite(wave)) or np.any(np.diff(wave) <= 0) or wave[0] <= 0:
                raise DataError("wavelength_aa must be finite, > 0 and strictly increasing")
        pix_edges = conv.log_bin_edges(wave)
        if wavelength_aa is not None:
            need = conv.window_size(self.model_edges_ln, pix_edges, self.sigma_max_ln,
                                    (np.log1p(0.0), np.log1p(10.0)))
            if need > self.n_window:
                raise DataError("wavelength_aa has pixels wider than the model's Spectroscopy allows; "
                                "build the model with this galaxy's wavelengths")
        lam_edges = np.exp(pix_edges)
        if spec.flux_unit == "flam":
            divisor = np.diff(lam_edges)  # Å
        else:
            divisor = np.abs(np.diff(C_AA_S / lam_edges)) * FLUX_UNITS[spec.flux_unit]  # Hz × unit
        return {
            "pixel_edges_ln": jnp.asarray(pix_edges),
            "pixel_centre_ln": jnp.asarray(np.log(wave)),
            "lsf_sigma_ln": jnp.asarray(spec.lsf_sigma_ln()),
            "divisor": jnp.asarray(divisor),
            "wavelength_aa": jnp.asarray(wave),
        }

    # --- pure functions of (theta, chain state) -----------------------------------------
    def line_fluxes(self, theta, state, grids):
        """Observed flux of every drawn line after dust and IGM [erg/s/cm²], shape (n_sel,)."""
        if not self.nebular:
            return jnp.zeros(self.line_index.size)
        z = theta["redshift"]
        dl = cosmology.luminosity_distance_cm(z, self.cosmo)
        lum = state["line_luminosity"][self.line_index]
        trans = state.get("nebular_transmission")
        if trans is not None:
            lum = lum * jnp.interp(jnp.log(self.line_wavelength_aa), jnp.log(grids["wavelength_aa"]), trans)
        if self.igm == "inoue14":
            lum = lum * igm.igm_transmission_inoue14(self.line_wavelength_aa * (1 + z), z)
        return lum / (4 * jnp.pi * dl**2)

    def _sigma(self, theta, ctx, u_obs):
        lsf = jnp.interp(u_obs, ctx["pixel_centre_ln"], ctx["lsf_sigma_ln"])
        return jnp.sqrt((theta[VELDISP_PARAMETER] / conv.C_KMS) ** 2 + lsf**2)

    def continuum_pixels(self, theta, state, grids, ctx):
        """Broadened continuum (lines removed) per pixel, in the data unit, shape (n_pix,)."""
        z = theta["redshift"]
        wave = grids["wavelength_aa"]
        sed = state["sed"]
        if self.nebular:
            deposit = jnp.zeros(wave.shape[0]).at[self.holder].add(
                state["line_luminosity"][self.line_index] * self.holder_weight)
            sed = sed - state.get("nebular_transmission", 1.0) * deposit
        dl = cosmology.luminosity_distance_cm(z, self.cosmo)
        density = C_AA_S / wave * sed / (4 * jnp.pi * dl**2)  # ν f_ν per unit ln λ
        if self.igm == "inoue14":
            density = density * igm.igm_transmission_inoue14(wave * (1 + z), z)
        shift = jnp.log1p(z)
        centres = 0.5 * (self.model_edges_ln[1:] + self.model_edges_ln[:-1]) + shift
        sigma = self._sigma(theta, ctx, centres)
        flux = conv.broaden_to_pixels(density, jnp.asarray(self.model_edges_ln), shift, sigma,
                                      ctx["pixel_edges_ln"], self.n_window)
        return flux / ctx["divisor"]

    def line_shapes(self, theta, ctx):
        """Pixel values of each drawn line per unit flux (1 erg/s/cm²), shape (n_sel, n_pix)."""
        z = theta["redshift"]
        centre = jnp.log(self.line_wavelength_aa) + jnp.log1p(z)
        shares = conv.gaussian_lines_to_pixels(centre, self._sigma(theta, ctx, centre), ctx["pixel_edges_ln"])
        return shares / ctx["divisor"][None, :]

    def named_scales(self, theta):
        """Multipliers of the named lines' Cloudy fluxes (``eline_mode="fitted"``), shape (n_named,)."""
        if self.spectroscopy.eline_mode != "fitted":
            return jnp.ones(self.named.size)
        return jnp.stack([theta[eline_scale_name(n)] for n in self.spectroscopy.lines.names])

    def predict(self, theta, state, grids, ctx) -> dict:
        """The model spectrum and its parts.

        Returns
        -------
        dict
            ``flux`` (n_pix,) in the data unit; ``continuum`` (n_pix,);
            ``named_line_flux`` (n_named,) [erg/s/cm²] (after dust, IGM and, when
            fitted, the scales); ``named_line_templates`` (n_named, n_pix) the
            pixel values per unit flux. With ``eline_mode="marginalized"`` the named
            lines are left out of ``flux`` (the likelihood adds them).
        """
        fluxes = self.line_fluxes(theta, state, grids)
        named_flux = fluxes[self.named] * self.named_scales(theta)
        if self.spectroscopy.eline_mode == "marginalized":
            drawn = fluxes.at[self.named].set(0.0)
        else:
            drawn = fluxes.at[self.named].set(named_flux)
        shapes = self.line_shapes(theta, ctx)
        continuum = self.continuum_pixels(theta, state, grids, ctx)
        return {
            "flux": continuum + drawn @ shapes,
            "continuum": continuum,
            "named_line_flux": named_flux,
            "named_line_templates": shapes[self.named],
        }
