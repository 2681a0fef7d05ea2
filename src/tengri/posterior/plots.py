"""Figures of a Posterior: corner plot, SED with its band, star-formation history.

Each function returns a matplotlib Figure and never calls ``show``, so it works with
the non-interactive Agg backend. Axes carry physical units (taken from the unit
suffix of a parameter name, e.g. ``age_gyr`` → [Gyr], where there is one).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["plot_corner", "plot_sed", "plot_sfh", "parameter_label"]

# Speed of light [Å/s]: ν f_ν = (c/λ) f_ν.
_C_AA_PER_S = 2.99792458e18

# Derived quantities shown in the corner plot, in log10 (keys of Posterior.derived).
_CORNER_DERIVED = ("stellar_mass", "sfr_100myr", "sfr_10myr")

_KNOWN_LABELS = {
    "redshift": "redshift $z$",
    "log10_stellar_mass": r"$\log_{10} M_\star$ [M$_\odot$]",
    "log10_sfr_100myr": r"$\log_{10}$ SFR$_{100\,\mathrm{Myr}}$ [M$_\odot$ yr$^{-1}$]",
    "log10_sfr_10myr": r"$\log_{10}$ SFR$_{10\,\mathrm{Myr}}$ [M$_\odot$ yr$^{-1}$]",
}
_UNIT_SUFFIXES = (
    ("_gyr", "Gyr"),
    ("_myr", "Myr"),
    ("_yr", "yr"),
    ("_aa", "Å"),
    ("_mag", "mag"),
    ("_kms", "km s$^{-1}$"),
    ("_msun", r"M$_\odot$"),
)
# 2-D credible regions drawn in the corner plot (probability mass enclosed).
_CORNER_LEVELS = (0.68, 0.95)


def parameter_label(name: str) -> str:
    """Axis label for a parameter: its name and, when the name says it, its unit."""
    if name in _KNOWN_LABELS:
        return _KNOWN_LABELS[name]
    for suffix, unit in _UNIT_SUFFIXES:
        if name.lower().endswith(suffix):
            return f"{name} [{unit}]"
    return name


def _new_axes(ax):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        return fig, ax
    return ax.figure, ax


def _check_n_draws(n_draws: int) -> int:
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive integer, got {n_draws!r}")
    return int(n_draws)


def _draw_values(posterior, n_draws: int) -> dict:
    """Up to ``n_draws`` distinct draws (fixed seed, reproducible), or the point estimate."""
    n_draws = _check_n_draws(n_draws)
    if posterior.samples is None:
        return posterior.params
    n = posterior.n_samples
    index = np.sort(np.random.default_rng(0).choice(n, size=min(n_draws, n), replace=False))
    return {k: v[index] for k, v in posterior.samples.items()}


def _band(ax, x: np.ndarray, y: np.ndarray, color: str, label: str) -> None:
    """Median line and 16–84% band of y (n_draws, n_x); a single curve if one draw."""
    y = np.atleast_2d(y)
    if y.shape[0] == 1:
        ax.plot(x, y[0], color=color, label=label)
        return
    lo, med, hi = np.percentile(y, [16, 50, 84], axis=0)
    ax.fill_between(x, lo, hi, color=color, alpha=0.3, lw=0, label=f"{label} 16–84%")
    ax.plot(x, med, color=color, label=f"{label} median")


# --- corner ------------------------------------------------------------------------
def _corner_columns(posterior, params: Sequence[str] | None) -> dict[str, np.ndarray]:
    samples = posterior._require_samples("plot_corner")
    scalar = [n for n in posterior._scalar_sample_names()]
    derived = {}
    if posterior._model is not None:
        values = posterior.derived
        derived = {
            f"log10_{k}": np.log10(np.where(np.asarray(values[k]) > 0, values[k], np.nan))
            for k in _CORNER_DERIVED
            if k in values and np.ndim(values[k]) == 1
        }
    if params is None:
        columns = {n: samples[n] for n in scalar if np.ptp(samples[n]) > 0}
        columns.update({k: v for k, v in derived.items() if np.nanmax(v) > np.nanmin(v)})
        return columns
    columns = {}
    for name in params:
        if name in scalar:
            columns[name] = samples[name]
        elif name in derived:
            columns[name] = derived[name]
        else:
            raise ValueError(
                f"plot_corner: unknown parameter {name!r}; available: {scalar + list(derived)}"
            )
        if not np.nanmax(columns[name]) > np.nanmin(columns[name]):
            raise ValueError(f"plot_corner: parameter {name!r} is constant and cannot be plotted")
    return columns


def plot_corner(
    posterior,
    params: Sequence[str] | None = None,
    truths: Mapping[str, float] | None = None,
    color: str = "C0",
    fig: Any = None,
    axes: Any = None,
    label: str | None = None,
):
    """Corner (triangle) plot of the draws, with 68% and 95% credible contours.

    Parameters
    ----------
    posterior : Posterior
        A result with draws (a point estimate has nothing to plot: ValueError).
    params : list of str, optional
        Columns to show. Default: every scalar parameter that varies (``psd_xi`` and
        fixed parameters are left out) plus, when a model is attached, the derived
        ``log10_stellar_mass`` [M☉], ``log10_sfr_100myr`` and ``log10_sfr_10myr``
        [M☉/yr] (log10 of ``posterior.derived``).
    truths : dict, optional
        Column name → true value, drawn as dashed black lines (derived columns in
        log10). Keys that are not plotted are ignored.
    color : str
        Colour of this posterior's histograms and contours.
    fig : matplotlib Figure, optional
        A corner figure with the same columns to draw over (to compare posteriors).
    axes : array of matplotlib Axes, optional
        Alternatively, the axes of such a figure.
    label : str, optional
        Legend entry for this posterior, shown in the top-left panel.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Draws with a non-finite value in a column (e.g. log10 of a zero SFR) are dropped,
    with a warning saying how many.
    """
    import corner

    columns = _corner_columns(posterior, params)
    if not columns:
        raise ValueError("plot_corner: no varying scalar parameter to plot")
    names = list(columns)
    data = np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in names])
    finite = np.all(np.isfinite(data), axis=1)
    if not finite.all():
        warnings.warn(f"plot_corner: dropped {int((~finite).sum())} draws with non-finite values")
        data = data[finite]
    if fig is None and axes is not None:
        fig = np.asarray(axes).ravel()[0].figure
    fig = corner.corner(
        data,
        labels=[parameter_label(n) for n in names],
        color=color,
        fig=fig,
        levels=_CORNER_LEVELS,
        plot_datapoints=False,
        plot_density=False,
        hist_kwargs={"density": True},
    )
    grid = np.asarray(fig.axes).reshape(len(names), len(names))
    for j, name in enumerate(names):
        if truths is None or name not in truths:
            continue
        for i in range(j, len(names)):
            grid[i, j].axvline(truths[name], color="k", ls="--", lw=1)
        for k in range(j):
            grid[j, k].axhline(truths[name], color="k", ls="--", lw=1)
    if label is not None:
        grid[0, 0].plot([], [], color=color, label=label)
        grid[0, 0].legend(fontsize="small", loc="upper left", frameon=False)
    return fig


# --- SED -------------------------------------------------------------------------------
def _observed_photometry(posterior, ax, values: dict, color: str) -> None:
    """Data ± noise and model photometry at the filters' effective wavelengths."""
    fitter, model = posterior._fitter, posterior._model
    wave_eff = np.asarray(model.observation.effective_wavelength_aa, dtype=np.float64)
    data = np.asarray(fitter.data, dtype=np.float64)
    noise = np.asarray(fitter.noise, dtype=np.float64)
    mask = np.ones(data.shape, bool) if fitter.mask is None else np.asarray(fitter.mask, bool)
    if data.shape != wave_eff.shape:
        warnings.warn(
            f"plot_sed: the fitter's data ({data.size} values) are not one flux per filter "
            f"({wave_eff.size} filters), so they are not drawn"
        )
        return
    nu = _C_AA_PER_S / wave_eff
    ax.errorbar(wave_eff[mask], (nu * data)[mask], yerr=(nu * noise)[mask], fmt="o", color="k",
                ms=4, label="observed")
    if (~mask).any():
        ax.errorbar(wave_eff[~mask], (nu * data)[~mask], yerr=(nu * noise)[~mask], fmt="o",
                    color="0.5", mfc="none", ms=4, label="masked")
    predicted = np.median(np.atleast_2d(np.asarray(model.predict_photometry(values))), axis=0)
    ax.scatter(wave_eff, nu * predicted, marker="s", s=30, facecolors="none", edgecolors=color,
               zorder=3, label="model photometry")


def plot_sed(
    posterior,
    n_draws: int = 100,
    wave_range: tuple[float, float] = (1e3, 5e4),
    ax: Any = None,
    frame: str = "auto",
):
    """Model SED with its 16–84% band over posterior draws, and the photometry.

    Parameters
    ----------
    posterior : Posterior
        Needs an attached model (``model.predict_sed``).
    n_draws : int
        Draws used for the band (picked without replacement, fixed seed); a point
        estimate plots its single SED.
    wave_range : (float, float)
        Wavelength range shown [Å], in the plotted frame.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure otherwise.
    frame : {"auto", "observed", "rest"}
        ``"observed"``: ν f_ν [erg s⁻¹ cm⁻²] against observed wavelength, from the
        ``wavelength_obs_aa`` and ``fnu_obs`` [erg/s/cm²/Hz] entries of
        ``model.predict_sed``, with the observed photometry (± 1σ, from the attached
        Fitter's data, noise and mask; masked points hollow) and the model
        photometry at ``model.observation.effective_wavelength_aa``.
        ``"rest"``: rest-frame λL_λ (= νL_ν from ``lnu_rest``) normalised to the
        median SED at 5500 Å; photometry is not drawn (it lives in the observed
        frame). ``"auto"`` (default) picks "observed" when the model provides it.

    Returns
    -------
    matplotlib.figure.Figure
        Log–log axes.
    """
    if frame not in ("auto", "observed", "rest"):
        raise ValueError(f'frame must be "auto", "observed" or "rest", got {frame!r}')
    try:
        low, high = (float(v) for v in wave_range)
    except (TypeError, ValueError):
        raise ValueError(f"wave_range must be two wavelengths in Å, got {wave_range!r}") from None
    if not 0 < low < high:
        raise ValueError(f"wave_range needs 0 < low < high [Å], got {wave_range!r}")
    model = posterior._require_model("plot_sed")
    values = _draw_values(posterior, n_draws)
    sed = model.predict_sed(values)
    has_observed = "wavelength_obs_aa" in sed and "fnu_obs" in sed
    if frame == "observed" and not has_observed:
        raise ValueError(
            'frame="observed" needs "wavelength_obs_aa" and "fnu_obs" from model.predict_sed; '
            'use frame="rest"'
        )
    observed = frame == "observed" or (frame == "auto" and has_observed)
    if observed:
        wave = np.asarray(sed["wavelength_obs_aa"], dtype=np.float64)
        y = _C_AA_PER_S / wave * np.atleast_2d(np.asarray(sed["fnu_obs"], dtype=np.float64))
        xlabel, ylabel = "observed wavelength [Å]", r"$\nu f_\nu$ [erg s$^{-1}$ cm$^{-2}$]"
    else:
        wave = np.asarray(sed["wavelength_rest_aa"], dtype=np.float64)
        y = _C_AA_PER_S / wave * np.atleast_2d(np.asarray(sed["lnu_rest"], dtype=np.float64))
        y = y / np.interp(5500.0, wave, np.median(y, axis=0))
        xlabel = "rest-frame wavelength [Å]"
        ylabel = r"$\lambda L_\lambda\,/\,\lambda L_\lambda(5500\,\mathrm{\AA})$"
    shown = (wave >= low / 1.05) & (wave <= high * 1.05)
    if shown.sum() < 2:
        raise ValueError(
            f"wave_range {wave_range} Å does not overlap the model grid [{wave[0]:.4g}, {wave[-1]:.4g}] Å"
        )
    fig, ax = _new_axes(ax)
    label = "model" if posterior.samples is not None else "best fit"
    _band(ax, wave[shown], y[:, shown], "C0", label)
    if observed and posterior._fitter is not None:
        _observed_photometry(posterior, ax, values, "C0")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, high)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", frameon=False)
    return fig


# --- SFH -------------------------------------------------------------------------------
def plot_sfh(posterior, n_draws: int = 100, ax: Any = None):
    """Star-formation rate against lookback time, with its 16–84% band.

    Parameters
    ----------
    posterior : Posterior
        Needs an attached model; ``model.predict_sfh(values)`` must return
        ``(lookback_gyr (n_t,), sfr)`` with sfr [M☉/yr] of shape (n_t,) or
        (n_draws, n_t).
    n_draws : int
        Draws used for the band; a point estimate plots its single SFH.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
        x: lookback time [Gyr]; y: SFR [M☉/yr].
    """
    model = posterior._require_model("plot_sfh")
    lookback_gyr, sfr = model.predict_sfh(_draw_values(posterior, n_draws))
    lookback_gyr = np.asarray(lookback_gyr, dtype=np.float64)
    sfr = np.atleast_2d(np.asarray(sfr, dtype=np.float64))
    if sfr.shape[-1] != lookback_gyr.size:
        raise ValueError(
            f"model.predict_sfh returned {lookback_gyr.size} lookback times but SFRs of shape {sfr.shape}"
        )
    fig, ax = _new_axes(ax)
    _band(ax, lookback_gyr, sfr, "C1", "SFR" if posterior.samples is not None else "best-fit SFR")
    ax.set_xlabel("lookback time [Gyr]")
    ax.set_ylabel(r"SFR [M$_\odot$ yr$^{-1}$]")
    ax.set_xlim(lookback_gyr.min(), lookback_gyr.max())
    ax.legend(fontsize="small", frameon=False)
    return fig
