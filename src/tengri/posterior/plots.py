"""Figures of a Posterior: corner plot, SED with its band, star-formation history.

Each function returns a matplotlib Figure and never calls ``show``, so it works with
the non-interactive Agg backend. Axes carry physical units: the SED in the observed
frame is f_ν [µJy] against observed wavelength [µm] on log axes, as in Prospector's
and BAGPIPES' figures; parameter labels come from a table of the model's parameters
or from the unit suffix of a name (``tau_myr`` → [Myr]).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["plot_corner", "plot_sed", "plot_sfh", "parameter_label", "save_figures"]

# Speed of light [Å/s]: λ L_λ = (c/λ) L_ν.
_C_AA_PER_S = 2.99792458e18
# 1 µJy in erg/s/cm²/Hz, and 1 µm in Å.
_UJY_CGS = 1e-29
_UM_AA = 1e4
# Default observed-frame range around the filters: effective wavelengths ÷/× this.
_FILTER_MARGIN = 1.6

# Derived quantities shown in the corner plot, in log10 (keys of Posterior.derived).
_CORNER_DERIVED = ("stellar_mass", "sfr_100myr", "sfr_10myr")

_KNOWN_LABELS = {
    "redshift": "redshift $z$",
    "stellar_mass": r"$\log_{10} M_\mathrm{formed}$ [M$_\odot$]",
    "age_gyr": "age [Gyr]",
    "tau_gyr": r"$\tau$ [Gyr]",
    "metallicity": r"$Z$ [Z$_\odot$]",
    "av": r"$A_V$ [mag]",
    "log_u": r"$\log_{10} U$",
    "dust_eta": r"$\eta$ (birth-cloud $A_V$ factor)",
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
# Gaussian smoothing of the 2-D histograms [bins], as BAGPIPES' corner plots use.
_CORNER_SMOOTH = 1.0


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
        # SFH-only quantities: no spectrum is built per draw (Posterior.derived_subset)
        values = posterior.derived_subset(_CORNER_DERIVED)
        derived = {
            f"log10_{k}": np.log10(np.where(np.asarray(values[k]) > 0, values[k], np.nan))
            for k in _CORNER_DERIVED
            if k in values and np.ndim(values[k]) == 1
        }
    if params is None:
        columns = {n: samples[n] for n in scalar if np.ptp(samples[n]) > 0}
        for name, values in derived.items():
            n_bad = int(np.sum(~np.isfinite(values)))
            if n_bad:
                # e.g. an SFR of exactly 0 after the SFH has died away: dropping those
                # draws would bias every other panel, so the column goes instead.
                warnings.warn(f"plot_corner: {name} left out, not finite (≤ 0 before the log) in "
                              f"{n_bad} of {values.size} draws; ask for it with params= to plot the rest")
            elif np.nanmax(values) > np.nanmin(values):
                columns[name] = values
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
    truth_label: str | None = None,
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
        [M☉/yr] (log10 of ``posterior.derived``); a derived column that is ≤ 0 in
        some draws (an SFH that has died away) is left out with a warning.
    truths : dict, optional
        Column name → reference value (the truth of a mock, or a MAP), drawn as
        dashed black lines (derived columns in log10). Keys that are not plotted
        are ignored.
    color : str
        Colour of this posterior's histograms and contours.
    fig : matplotlib Figure, optional
        A corner figure with the same columns to draw over (to compare posteriors).
    axes : array of matplotlib Axes, optional
        Alternatively, the axes of such a figure.
    label : str, optional
        Legend entry for this posterior, shown in the top-left panel.
    truth_label : str, optional
        Legend entry for the ``truths`` lines (e.g. ``"truth"`` or ``"MAP"``).

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    Draws with a non-finite value in a requested column (e.g. log10 of a zero SFR)
    are dropped, with a warning saying how many.
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
    first = fig is None
    fig = corner.corner(
        data,
        labels=[parameter_label(n) for n in names],
        color=color,
        fig=fig,
        levels=_CORNER_LEVELS,
        smooth=_CORNER_SMOOTH,
        plot_datapoints=False,
        plot_density=False,
        hist_kwargs={"density": True},
        # Median and 16–84% interval above each histogram, for the first posterior
        # drawn on a figure only (an overlay would overwrite them).
        show_titles=first,
        titles=[parameter_label(n).split(" [")[0] for n in names],  # units are on the axes
        quantiles=[0.16, 0.5, 0.84] if first else None,
        title_fmt=".3f",
        title_kwargs={"fontsize": "small"},
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
    if truth_label is not None and truths is not None:
        grid[0, 0].plot([], [], color="k", ls="--", lw=1, label=truth_label)
    if grid[0, 0].get_legend_handles_labels()[1]:
        # The top-left panel has a free area above-right of it for the legend.
        grid[0, 0].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.05, 1.0), frameon=False)
    return fig


# --- SED -------------------------------------------------------------------------------
def _common_wavelength(wave: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One wavelength grid for all draws.

    ``wave`` is (n_wave,) or, from a model evaluated per draw, (n_draws, n_wave).
    Rows that differ (a free redshift) are interpolated onto the first row's grid
    restricted to the range every draw covers.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim == 1:
        return wave, y
    if np.all(wave == wave[0]):
        return wave[0], y
    low, high = wave[:, 0].max(), wave[:, -1].min()
    grid = wave[0][(wave[0] >= low) & (wave[0] <= high)]
    return grid, np.stack([np.interp(grid, w, row) for w, row in zip(wave, y)])


def _default_wave_range(model, observed: bool, wave: np.ndarray) -> tuple[float, float]:
    """Observed frame: the filters' span widened by a margin; rest frame: 0.1–5 µm."""
    observation = getattr(model, "observation", None)
    if observed and observation is not None:
        wave_eff = np.asarray(observation.effective_wavelength_aa, dtype=np.float64)
        return float(wave_eff.min() / _FILTER_MARGIN), float(wave_eff.max() * _FILTER_MARGIN)
    return max(1e3, float(wave.min())), min(5e4, float(wave.max()))


def _observed_photometry(posterior, ax, values: dict, color: str) -> list[np.ndarray]:
    """Data ± 1σ and model photometry [µJy] at the filters' effective wavelengths [µm].

    Data below 2σ are drawn as 2σ upper limits (they have no place on a log axis).
    Returns the plotted flux values, for the axis limits.
    """
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
        return []
    x = wave_eff / _UM_AA
    flux, err = data / _UJY_CGS, noise / _UJY_CGS
    detected = flux > 2 * err
    for used, style, label in ((mask, {"color": "k"}, "observed"),
                               (~mask, {"color": "0.5", "mfc": "none"}, "masked")):
        points = used & detected
        if points.any():
            ax.errorbar(x[points], flux[points], yerr=err[points], fmt="o", ms=4, label=label, **style)
        limits = used & ~detected
        if limits.any():
            ax.errorbar(x[limits], 2 * err[limits], yerr=0.3 * 2 * err[limits], uplims=True, fmt="v",
                        ms=4, label=f"{label} (2σ upper limit)", **style)
    predicted = np.median(np.atleast_2d(np.asarray(model.predict_photometry(values))), axis=0) / _UJY_CGS
    ax.scatter(x, predicted, marker="s", s=36, facecolors="none", edgecolors=color, zorder=3,
               label="model photometry")
    return [flux[mask & detected], 2 * err[mask & ~detected], predicted]


def _sed_curves(sed: Mapping[str, Any], observed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(wavelength [µm or Å], y (n, n_wave)) of the plotted quantity from ``predict_sed``."""
    if observed:
        y = np.atleast_2d(np.asarray(sed["fnu_obs"], dtype=np.float64)) / _UJY_CGS
        wave, y = _common_wavelength(sed["wavelength_obs_aa"], y)
        return wave / _UM_AA, y
    wave = np.asarray(sed["wavelength_rest_aa"], dtype=np.float64)
    return wave, _C_AA_PER_S / wave * np.atleast_2d(np.asarray(sed["lnu_rest"], dtype=np.float64))


def plot_sed(
    posterior,
    n_draws: int = 100,
    wave_range: tuple[float, float] | None = None,
    ax: Any = None,
    frame: str = "auto",
    truths: Mapping[str, Any] | None = None,
    truth_label: str = "truth",
):
    """Model SED with its 16–84% band over posterior draws, and the photometry.

    Parameters
    ----------
    posterior : Posterior
        Needs an attached model (``model.predict_sed``).
    n_draws : int
        Draws used for the band (picked without replacement, fixed seed); a point
        estimate plots its single SED.
    wave_range : (float, float), optional
        Wavelength range shown [Å], in the plotted frame. Default: in the observed
        frame the filters' effective wavelengths widened by a factor 1.6 on each
        side; in the rest frame 1000 Å–5 µm (clipped to the model grid).
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure otherwise.
    frame : {"auto", "observed", "rest"}
        ``"observed"``: f_ν [µJy] against observed wavelength [µm], from the
        ``wavelength_obs_aa`` and ``fnu_obs`` [erg/s/cm²/Hz] entries of
        ``model.predict_sed``, with the observed photometry (± 1σ, from the attached
        Fitter's data, noise and mask; masked points hollow, data below 2σ as 2σ
        upper limits) and the median model photometry at
        ``model.observation.effective_wavelength_aa``.
        ``"rest"``: rest-frame λL_λ (= νL_ν from ``lnu_rest``) normalised to the
        median SED at 5500 Å, against rest-frame wavelength [Å]; photometry is not
        drawn (it lives in the observed frame). ``"auto"`` (default) picks
        "observed" when the model provides it.
    truths : dict, optional
        Parameter values of a reference SED (a mock's truth, or a MAP's
        ``params``), drawn as a dashed black line; missing fixed parameters take
        the model's values.
    truth_label : str
        Legend entry of that line.

    Returns
    -------
    matplotlib.figure.Figure
        Log–log axes.
    """
    if frame not in ("auto", "observed", "rest"):
        raise ValueError(f'frame must be "auto", "observed" or "rest", got {frame!r}')
    if wave_range is not None:
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
    wave, y = _sed_curves(sed, observed)
    wave_aa = wave * _UM_AA if observed else wave
    if wave_range is None:
        low, high = _default_wave_range(model, observed, wave_aa)
    shown = (wave_aa >= low / 1.05) & (wave_aa <= high * 1.05)
    if shown.sum() < 2:
        raise ValueError(
            f"wave_range ({low:.4g}, {high:.4g}) Å does not overlap the model grid "
            f"[{wave_aa[0]:.4g}, {wave_aa[-1]:.4g}] Å"
        )
    norm = 1.0 if observed else np.interp(5500.0, wave, np.median(y, axis=0))
    fig, ax = _new_axes(ax)
    label = "model" if posterior.samples is not None else "best fit"
    _band(ax, wave[shown], y[:, shown] / norm, "C0", label)
    plotted = [np.median(y[:, shown], axis=0) / norm]
    if truths is not None:
        t_wave, t_y = _sed_curves(model.predict_sed(truths), observed)
        t_shown = (t_wave >= wave[shown][0]) & (t_wave <= wave[shown][-1])
        ax.plot(t_wave[t_shown], t_y[0, t_shown] / norm, color="k", ls="--", lw=1, label=truth_label)
    if observed and posterior._fitter is not None:
        plotted += _observed_photometry(posterior, ax, values, "C0")
    ax.set_xscale("log")
    ax.set_yscale("log")
    scale = _UM_AA if observed else 1.0
    ax.set_xlim(low / scale, high / scale)
    ax.set_ylim(*_log_limits(np.concatenate([np.ravel(p) for p in plotted])))
    if observed:
        ax.set_xlabel(r"observed wavelength [$\mu$m]")
        ax.set_ylabel(r"$f_\nu$ [$\mu$Jy]")
    else:
        ax.set_xlabel("rest-frame wavelength [Å]")
        ax.set_ylabel(r"$\lambda L_\lambda\,/\,\lambda L_\lambda(5500\,\mathrm{\AA})$")
    ax.legend(fontsize="small", frameon=False)
    return fig


def _log_limits(values: np.ndarray, dynamic_range: float = 1e4) -> tuple[float, float]:
    """Log-axis limits around the positive values: ×/÷ 2, at most ``dynamic_range`` deep.

    Without this a Lyman break (f_ν → 0 under the IGM) would stretch the axis over
    tens of decades.
    """
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        return (1e-3, 1.0)
    high = 2.0 * positive.max()
    low = max(0.5 * positive.min(), high / dynamic_range)
    return (low, high)


# --- SFH -------------------------------------------------------------------------------
def _sfh_extent_gyr(lookback_gyr: np.ndarray, sfr: np.ndarray) -> float:
    """Right edge of the SFH axis: 15% beyond the oldest star formation in any draw.

    A galaxy whose stars are all younger than 1 Gyr would otherwise sit in a corner
    of an axis that spans the whole age of the universe.
    """
    forming = np.flatnonzero(np.any(sfr > 0, axis=0))
    if forming.size == 0:
        return float(lookback_gyr.max())
    return float(min(lookback_gyr.max(), 1.15 * lookback_gyr[forming[-1]]))


def plot_sfh(
    posterior,
    n_draws: int = 100,
    ax: Any = None,
    truths: Mapping[str, Any] | None = None,
    truth_label: str = "truth",
):
    """Star-formation rate against lookback time, with its 16–84% band.

    For a stochastic SFH (``model.sfh == "stochastic"``) the smooth mean SFH (the
    model's ``predict_sfh(..., component="smooth")``) is drawn as its own band
    under the total, so the stochastic part is the difference between the two.

    Parameters
    ----------
    posterior : Posterior
        Needs an attached model; ``model.predict_sfh(values, lookback_gyr=None)``
        must return ``(lookback_gyr (n_t,), sfr)`` with sfr [M☉/yr] of shape (n_t,)
        or (n_draws, n_t).
    n_draws : int
        Draws used for the band; a point estimate plots its single SFH.
    ax : matplotlib Axes, optional
    truths : dict, optional
        Parameter values of a reference SFH (a mock's truth or a MAP's ``params``),
        drawn as a dashed black line on the same lookback grid.
    truth_label : str
        Legend entry of that line.

    Returns
    -------
    matplotlib.figure.Figure
        x: lookback time [Gyr], up to 15% beyond the oldest star formation in the
        draws (at most the model's lookback grid); y: SFR [M☉/yr], from 0.
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
    if getattr(model, "sfh", None) == "stochastic":
        _, smooth = model.predict_sfh(_draw_values(posterior, n_draws), lookback_gyr=lookback_gyr,
                                      component="smooth")
        _band(ax, lookback_gyr, np.atleast_2d(np.asarray(smooth, dtype=np.float64)), "C0",
              "smooth component")
    if truths is not None:
        _, reference = model.predict_sfh(truths, lookback_gyr=lookback_gyr)
        ax.plot(lookback_gyr, np.ravel(reference), color="k", ls="--", lw=1, label=truth_label)
    ax.set_xlabel("lookback time [Gyr]")
    ax.set_ylabel(r"SFR [M$_\odot$ yr$^{-1}$]")
    ax.set_xlim(lookback_gyr.min(), _sfh_extent_gyr(lookback_gyr, sfr))
    ax.set_ylim(bottom=0.0)
    ax.legend(fontsize="small", frameon=False)
    return fig


# --- files ---------------------------------------------------------------------------
# Longest side of a saved figure [pixels]; keeps an 8-column corner plot near 200 kB.
_MAX_FIGURE_PIXELS = 1000
def _save_atomically(fig, path: Path, dpi: int) -> None:
    """``fig`` as PNG at ``path``: written beside it under a temporary name, then renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_figures(posterior, directory, stem: str, dpi: int = 90, truths: Mapping[str, Any] | None = None,
                 truth_label: str = "truth") -> list[Path]:
    """Write ``<stem>_corner.png``, ``<stem>_sed.png`` and ``<stem>_sfh.png`` into ``directory``.

    Each file is written atomically (temporary file + rename) and its figure closed.
    The corner plot needs draws, so a point estimate (MAP) gets only the SED and
    the SFH.

    Parameters
    ----------
    posterior : Posterior
        With an attached model (and fitter, for the photometry in the SED).
    directory : path
        Existing output directory.
    stem : str
        File-name prefix, e.g. the galaxy id.
    dpi : int
        Resolution of the PNGs (lowered for large figures so that the longest
        side stays within 1000 pixels).
    truths, truth_label
        Reference values drawn in all three figures (see :func:`plot_corner`,
        :func:`plot_sed`, :func:`plot_sfh`).

    Returns
    -------
    list of pathlib.Path
        The files written, in the order corner (if any), SED, SFH.
    """
    import matplotlib.pyplot as plt

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"save_figures: directory {str(directory)!r} does not exist")
    figures = {}
    if posterior.samples is not None:
        figures["corner"] = lambda: plot_corner(posterior, truths=truths,
                                                truth_label=truth_label if truths is not None else None)
    figures["sed"] = lambda: plot_sed(posterior, truths=truths, truth_label=truth_label)
    figures["sfh"] = lambda: plot_sfh(posterior, truths=truths, truth_label=truth_label)
    written = []
    for kind, make in figures.items():
        fig = make()
        try:
            path = directory / f"{stem}_{kind}.png"
            # A corner figure grows with its number of columns: cap its pixel size.
            width_in = float(max(fig.get_size_inches()))
            _save_atomically(fig, path, min(dpi, _MAX_FIGURE_PIXELS / width_in))
            written.append(path)
        finally:
            plt.close(fig)
    return written
