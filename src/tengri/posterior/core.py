"""The Posterior: what every inference method returns.

A Posterior holds draws in *physical* parameter space (or only a point estimate),
the method's diagnostics, and runtime links to the model and the fitter that made
it. Everything here runs on numpy arrays after the fit; the forward model is only
called through ``self._model`` (``derived_quantities``, ``predict_photometry``,
``predict_sed``, ``predict_sfh``, ``sed_components``) and refits go through
``self._fitter.run``.
"""

from __future__ import annotations

import math
import warnings
from functools import cached_property
from os import PathLike
from typing import Any, Mapping, Sequence

import numpy as np

from tengri.analysis import diagnostics as diag
from tengri.analysis.diagnostics import spectral
from tengri.errors import DataError

__all__ = ["Posterior"]

# Methods whose draws form Markov chains (ESS and R̂ are meaningful diagnostics).
_MCMC_METHODS = ("mcmc_nuts", "hmc", "dynamic_hmc", "ghmc", "ess", "mcmc_raytrace")
# Latent white-noise fields of the stochastic SFH: high-dimensional, not summarised.
_LATENT_PREFIXES = ("psd_xi",)


def _plain(value: Any) -> Any:
    """``value`` with array-likes as numpy arrays and numpy scalars as Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if hasattr(value, "__array__"):
        return np.asarray(value)
    return value


def _point_value(value: Any) -> float | np.ndarray:
    """A point-estimate value: a Python float for scalars, a float array otherwise."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        return float(array)
    return array


def _median_interval(values: Any) -> tuple[float, float, float]:
    """(median, 16th, 84th percentile), ignoring NaN; a scalar gives three equal values."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 0:
        v = float(array)
        return (v, v, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN → NaN is the answer
        lo, med, hi = np.nanpercentile(array, [16, 50, 84])
    return (float(med), float(lo), float(hi))


def _check_prefixes(exclude_prefixes: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(exclude_prefixes, str):
        return (exclude_prefixes,)
    prefixes = tuple(exclude_prefixes)
    if not all(isinstance(p, str) for p in prefixes):
        raise ValueError(f"exclude_prefixes must be strings, got {exclude_prefixes!r}")
    return prefixes


class Posterior:
    """Inference result: draws or a point estimate, diagnostics and derived quantities.

    Parameters
    ----------
    samples : dict of str to array_like, or None
        Draws in physical parameter space; every value has shape ``(n_samples, ...)``
        with the chains concatenated chain-major (chain 0's draws first). A
        vector-valued parameter (the stochastic-SFH latent field ``psd_xi``) has shape
        ``(n_samples, n_grid)``. None for point estimates (MAP).
    params : dict of str to float or array_like
        Best-fit (MAP) or representative (posterior mean) values.
    method : str
        Inference method name (e.g. ``"map"``, ``"mcmc_nuts"``, ``"vi"``, ``"nss"``).
    wall_time_s : float
        Wall-clock time of the fit [s].
    diagnostics : dict, optional
        Method-specific diagnostics (acceptance rate, divergences, ...), possibly
        nested: values are numbers, bools, strings, None, arrays, lists or dicts.
    loss_history : array_like, shape (n_steps,), optional
        Negative log density per optimiser / VI iteration.
    log_evidence, log_evidence_err : float, optional
        Natural-log evidence and its 1σ error (nested sampling).
    eline_fluxes : array_like, shape (n_lines,) or (n_samples, n_lines), optional
        Emission-line fluxes [erg/s/cm²], per draw or for the point estimate.
    eline_names : sequence of str, optional
        Line names, length n_lines.
    eline_wavelengths_aa : array_like, shape (n_lines,), optional
        Rest-frame line wavelengths [Å].
    n_chains : int
        Number of chains concatenated in ``samples`` (used by split-R̂ and τ).
    model : SEDModel, optional
        Forward model, for derived quantities, predictions and plots (runtime only,
        not saved).
    fitter : Fitter, optional
        The Fitter that produced this result, for ``refine``, ``validate`` and
        ``posterior_predictive`` (runtime only, not saved).

    Examples
    --------
    >>> import numpy as np
    >>> draws = np.random.default_rng(0).normal(1.5, 0.1, size=400)
    >>> post = Posterior({"age_gyr": draws}, {"age_gyr": 1.5}, "mcmc_nuts", 3.0, n_chains=2)
    >>> post.n_samples
    400
    >>> round(post.rhat()["age_gyr"], 2)
    1.0
    """

    def __init__(
        self,
        samples: Mapping[str, Any] | None,
        params: Mapping[str, Any],
        method: str,
        wall_time_s: float,
        diagnostics: Mapping[str, Any] | None = None,
        loss_history: Any = None,
        log_evidence: float | None = None,
        log_evidence_err: float | None = None,
        eline_fluxes: Any = None,
        eline_names: Sequence[str] | None = None,
        eline_wavelengths_aa: Any = None,
        n_chains: int = 1,
        model: Any = None,
        fitter: Any = None,
    ):
        if not isinstance(method, str) or not method:
            raise ValueError(f"method must be a non-empty string, got {method!r}")
        wall_time_s = float(wall_time_s)
        if not math.isfinite(wall_time_s) or wall_time_s < 0:
            raise ValueError(f"wall_time_s must be a finite number ≥ 0, got {wall_time_s}")
        if isinstance(n_chains, bool) or not isinstance(n_chains, (int, np.integer)) or n_chains < 1:
            raise ValueError(f"n_chains must be a positive integer, got {n_chains!r}")
        if not isinstance(params, Mapping):
            raise ValueError(f"params must be a dict of name → value, got {type(params).__name__}")
        if diagnostics is not None and not isinstance(diagnostics, Mapping):
            raise ValueError(f"diagnostics must be a dict or None, got {type(diagnostics).__name__}")

        self.method = method
        self.wall_time_s = wall_time_s
        self.n_chains = int(n_chains)
        self.params = {str(k): _point_value(v) for k, v in params.items()}
        self.samples = self._check_samples(samples)
        self.diagnostics = _plain(dict(diagnostics or {}))
        self.loss_history = None if loss_history is None else np.asarray(loss_history, np.float64)
        self.log_evidence = None if log_evidence is None else float(log_evidence)
        self.log_evidence_err = None if log_evidence_err is None else float(log_evidence_err)
        self.eline_names = None if eline_names is None else [str(n) for n in eline_names]
        self.eline_wavelengths_aa = (
            None if eline_wavelengths_aa is None else np.asarray(eline_wavelengths_aa, np.float64)
        )
        self.eline_fluxes = None if eline_fluxes is None else np.asarray(eline_fluxes, np.float64)
        self._check_elines()
        self._model = model
        self._fitter = fitter

    # --- construction checks ------------------------------------------------------
    def _check_samples(self, samples: Mapping[str, Any] | None) -> dict[str, np.ndarray] | None:
        if samples is None:
            return None
        if not isinstance(samples, Mapping) or not samples:
            raise ValueError("samples must be None or a non-empty dict of name → draws")
        out = {str(k): np.asarray(v) for k, v in samples.items()}
        lengths = {k: (v.shape[0] if v.ndim else None) for k, v in out.items()}
        first = next(iter(lengths.values()))
        for name, n in lengths.items():
            if n is None or n < 1 or n != first:
                raise DataError(
                    f"samples[{name!r}] has shape {out[name].shape}; every parameter needs "
                    f"shape (n_samples, ...) with the same n_samples ({first})"
                )
        if first % self.n_chains:
            raise ValueError(
                f"{first} draws cannot be split into n_chains={self.n_chains} equal chains"
            )
        return out

    def _check_elines(self) -> None:
        if self.eline_fluxes is None:
            return
        n_lines = self.eline_fluxes.shape[-1] if self.eline_fluxes.ndim else 0
        if self.eline_fluxes.ndim not in (1, 2):
            raise DataError(
                f"eline_fluxes must have shape (n_lines,) or (n_samples, n_lines), "
                f"got {self.eline_fluxes.shape}"
            )
        others = (("eline_names", self.eline_names), ("eline_wavelengths_aa", self.eline_wavelengths_aa))
        for label, other in others:
            if other is not None and len(other) != n_lines:
                raise DataError(f"{label} has {len(other)} entries but eline_fluxes has {n_lines} lines")

    # --- basic facts ----------------------------------------------------------------
    @property
    def has_samples(self) -> bool:
        """True when the result holds draws, False for a point estimate."""
        return self.samples is not None

    @property
    def n_samples(self) -> int:
        """Number of draws (all chains together); 0 for a point estimate."""
        return 0 if self.samples is None else next(iter(self.samples.values())).shape[0]

    def __repr__(self) -> str:
        what = f"{self.n_samples} draws" if self.has_samples else "point estimate"
        return f"Posterior(method={self.method!r}, {what}, parameters={list(self.params)})"

    def _values(self) -> dict:
        """What the model is evaluated on: all draws if present, else the point estimate."""
        return self.samples if self.samples is not None else self.params

    def _require_model(self, what: str):
        if self._model is None:
            raise RuntimeError(
                f"{what} needs the forward model, but none is attached to this Posterior; "
                "pass model= to Posterior.load(...) or set posterior._model"
            )
        return self._model

    def _require_fitter(self, what: str):
        if self._fitter is None:
            raise RuntimeError(
                f"{what} needs the Fitter that produced this result, but none is attached "
                "(e.g. after Posterior.load); set posterior._fitter = Fitter(model, data, noise)"
            )
        return self._fitter

    def _require_samples(self, what: str) -> dict[str, np.ndarray]:
        if self.samples is None:
            raise ValueError(
                f"{what} needs posterior draws, but method {self.method!r} returned a point "
                "estimate; run a sampler (e.g. refine('mcmc_nuts'))"
            )
        return self.samples

    def _chains(self, what: str, exclude_prefixes: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Draws per parameter as (n_chains, n_per_chain, n_components)."""
        samples = self._require_samples(what)
        return {
            name: diag.split_chains(values, self.n_chains, name)
            for name, values in samples.items()
            if not name.startswith(exclude_prefixes)
        }

    def _scalar_sample_names(self) -> list[str]:
        """Scalar, non-latent parameters in the draws."""
        return [
            name
            for name, values in (self.samples or {}).items()
            if values.ndim == 1 and not name.startswith(_LATENT_PREFIXES)
        ]

    # --- derived quantities ---------------------------------------------------------
    @cached_property
    def derived(self) -> dict[str, float | np.ndarray]:
        """Derived physical quantities from the forward model (computed once, cached).

        Calls ``model.derived_quantities(values)`` on all draws (arrays of shape
        (n_samples,)) or on the point estimate (floats). Keys and units are the
        model's (e.g. ``stellar_mass`` [M☉], ``sfr_100myr``, ``sfr_10myr`` [M☉/yr],
        ``ssfr`` [1/yr]).

        Raises
        ------
        RuntimeError
            If no model is attached.
        """
        return self.derived_subset(None)

    def derived_subset(self, names: Sequence[str] | None) -> dict[str, float | np.ndarray]:
        """Only the derived quantities ``names`` (None: all, as :attr:`derived`).

        Taken from :attr:`derived` when it is already computed; otherwise asks the
        model for these alone, which for SFH-only quantities (``stellar_mass``,
        ``sfr_100myr``, ``ssfr``, …) skips the spectrum (see
        ``SEDModel.derived_quantities``). Not cached.

        Raises
        ------
        RuntimeError
            If no model is attached.
        ParameterError
            From the model, for names it does not derive.
        """
        cached = self.__dict__.get("derived")
        if names is not None and cached is not None and not isinstance(names, str) and set(names) <= set(cached):
            return {n: cached[n] for n in names}
        model = self._require_model("derived")
        values = self._values()
        out = model.derived_quantities(values) if names is None else model.derived_quantities(values, names=names)
        return {str(k): _point_value(v) for k, v in out.items()}

    # --- convergence diagnostics -----------------------------------------------------
    def autocorrelation(self) -> dict[str, np.ndarray]:
        """Normalised ACF per parameter (FFT; ACF[0] = 1; a fixed parameter gives zeros).

        Returns
        -------
        dict
            name → array of shape (n_per_chain,), or (n_per_chain, n_components) for
            a vector-valued parameter. Several chains are combined as in
            :func:`tengri.analysis.diagnostics.autocorrelation`.

        Examples
        --------
        >>> acf = result.autocorrelation()  # doctest: +SKIP
        >>> lag = np.argmax(acf["age_gyr"] < 0.05)  # doctest: +SKIP
        """
        out = {}
        for name, chains in self._chains("autocorrelation").items():
            acfs = np.stack([diag.autocorrelation(chains[:, :, j]) for j in range(chains.shape[2])], axis=-1)
            out[name] = acfs[:, 0] if self.samples[name].ndim == 1 else acfs
        return out

    def autocorrelation_time(self) -> dict[str, dict[str, float | np.ndarray]]:
        """Integrated autocorrelation times per parameter [draws].

        Estimated on split half-chains (``split=True`` in
        :func:`tengri.analysis.diagnostics.autocorrelation_time`), so that a chain
        that has not settled shows a long τ; the same τ is used by
        :meth:`effective_sample_size` and :meth:`check_convergence`.

        Returns
        -------
        dict
            name → ``{"tau_standard", "tau_absolute", "tau_max"}`` (see
            :func:`tengri.analysis.diagnostics.autocorrelation_time`): floats for scalar
            parameters, arrays of shape (n_components,) for vector-valued ones; NaN
            for fixed (constant) parameters.
        """
        out = {}
        for name, chains in self._chains("autocorrelation_time").items():
            per = [diag.autocorrelation_time(chains[:, :, j], split=True) for j in range(chains.shape[2])]
            keys = ("tau_standard", "tau_absolute", "tau_max")
            if self.samples[name].ndim == 1:
                out[name] = per[0]
            else:
                out[name] = {k: np.array([p[k] for p in per]) for k in keys}
        return out

    def effective_sample_size(self) -> dict[str, float | np.ndarray]:
        """Effective sample size ESS = N / τ_max per parameter (Sokal window, c = 5).

        τ_max is the larger of the standard and absolute-deviation autocorrelation
        times (Behroozi 2025), so the estimate is conservative; it is estimated on
        split half-chains as in ArviZ/Stan. N counts the draws of all chains. Fixed
        (constant) parameters are dropped.

        Returns
        -------
        dict
            name → ESS (float), or an array of shape (n_components,) for a
            vector-valued parameter (NaN for constant components).
        """
        out = {}
        for name, chains in self._chains("effective_sample_size").items():
            ess = np.array(
                [diag.effective_sample_size(chains[:, :, j], split=True) for j in range(chains.shape[2])]
            )
            if np.all(np.isnan(ess)):
                continue
            out[name] = float(ess[0]) if self.samples[name].ndim == 1 else ess
        return out

    def check_convergence(self) -> dict:
        """Whether every parameter's chains exceed 5 autocorrelation times, and
        whether an approximation's draws are trustworthy.

        See :func:`tengri.analysis.diagnostics.check_convergence` (Behroozi 2025):
        returns ``{"all_converged", "warnings", "tau", "n_samples", "n_per_chain",
        "constant"}``. Independent draws pass that test by construction, so for a
        method that reports the Pareto k̂ of its draws' importance weights
        (``diagnostics["pareto_k"]``: ``pathfinder``, ``vi``, ``mgvi``,
        ``vi_native``) a k̂ above ``PARETO_K_RELIABLE`` (0.7) adds a warning and
        sets ``all_converged`` to False.

        Examples
        --------
        >>> conv = result.check_convergence()  # doctest: +SKIP
        >>> if not conv["all_converged"]:  # doctest: +SKIP
        ...     print("\\n".join(conv["warnings"]))
        """
        result = diag.check_convergence(self._require_samples("check_convergence"), self.n_chains)
        unreliable = diag.pareto_k_warning(self.method, self.diagnostics.get("pareto_k"))
        if unreliable is not None:
            result["warnings"].append(unreliable)
            result["all_converged"] = False
        return result

    def ess_table(self) -> str:
        """ESS, τ, median and 68% interval per scalar parameter, as a text table.

        For a point estimate the string says there are no samples. Use :meth:`rhat`
        for the split-chain Gelman–Rubin diagnostic.
        """
        if self.samples is None:
            return (
                f"method {self.method!r} returned a point estimate: no samples, so no "
                "effective sample size or convergence diagnostics"
            )
        return diag.ess_table(self.samples, self.n_chains)

    def rhat(self, exclude_prefixes: str | Sequence[str] = _LATENT_PREFIXES) -> dict[str, float | np.ndarray]:
        """Split-R̂ per parameter (Gelman et al. 2013; > 1.01 suggests poor mixing).

        Each chain is split in half (see :func:`tengri.analysis.diagnostics.rhat`).

        Parameters
        ----------
        exclude_prefixes : str or tuple of str
            Parameter-name prefixes to skip; the default skips the latent field
            ``psd_xi``. Pass ``()`` to keep every parameter.

        Returns
        -------
        dict
            name → R̂ (float, or an array per component for vector-valued
            parameters). Fixed (zero-variance) parameters are dropped.
        """
        prefixes = _check_prefixes(exclude_prefixes)
        out = {}
        for name, chains in self._chains("rhat", prefixes).items():
            values = np.array([diag.rhat(chains[:, :, j]) for j in range(chains.shape[2])])
            if np.all(np.isnan(values)):
                continue
            out[name] = float(values[0]) if self.samples[name].ndim == 1 else values
        return out

    # --- emission lines --------------------------------------------------------------
    def _require_elines(self, what: str) -> np.ndarray:
        if self.eline_fluxes is None:
            raise ValueError(
                f"no emission-line fluxes in this result (method {self.method!r}); {what} "
                'needs a Spectroscopy observation with eline_mode="marginalized" or "fitted"'
            )
        return self.eline_fluxes

    def _line_flux(self, line: str, what: str) -> np.ndarray:
        fluxes = self._require_elines(what)
        index = spectral.find_line(line, self.eline_names, self.eline_wavelengths_aa)
        return fluxes[..., index]

    def line_fluxes(self) -> dict[str, tuple[float, float, float]]:
        """Median and 68% interval of every emission-line flux.

        Returns
        -------
        dict
            line name → (median, 16th, 84th percentile) [erg/s/cm²]; all three equal
            for a point estimate. Unnamed lines are called ``line_0``, ``line_1``, ....

        Raises
        ------
        ValueError
            If the result has no emission-line fluxes.
        """
        fluxes = self._require_elines("line_fluxes")
        names = self.eline_names or [f"line_{i}" for i in range(fluxes.shape[-1])]
        return {name: _median_interval(fluxes[..., i]) for i, name in enumerate(names)}

    def balmer_decrement(self) -> tuple[float, float, float]:
        """Hα/Hβ flux ratio: (median, 16th, 84th percentile), dimensionless.

        Case B recombination gives 2.86 (Osterbrock 1989); larger values mean dust.
        Draws with a non-positive Hβ or Hα flux are ignored.

        Raises
        ------
        ValueError
            If there are no line fluxes or Hα/Hβ is not among them.
        """
        ratio = spectral.balmer_decrement(
            self._line_flux("halpha", "balmer_decrement"), self._line_flux("hbeta", "balmer_decrement")
        )
        return _median_interval(ratio)

    def av_from_balmer(self) -> tuple[float, float, float]:
        """V-band attenuation from the Balmer decrement [mag]: (median, 16th, 84th).

        Case B Hα/Hβ = 2.86 and the Calzetti et al. (2000) curve (k(Hα) = 2.53,
        k(Hβ) = 3.61, R_V = 4.05): ``A_V = 4.05 · 2.5/(3.61 − 2.53) · log10(ratio/2.86)``
        per draw (see :func:`tengri.analysis.diagnostics.spectral.av_from_balmer_decrement`).
        Negative values are returned as they are.
        """
        ratio = spectral.balmer_decrement(
            self._line_flux("halpha", "av_from_balmer"), self._line_flux("hbeta", "av_from_balmer")
        )
        return _median_interval(spectral.av_from_balmer_decrement(ratio))

    def bpt_nii(self) -> tuple[float | np.ndarray, float | np.ndarray]:
        """[NII]-BPT coordinates per draw.

        Returns
        -------
        log_nii_ha, log_oiii_hb : numpy.ndarray of shape (n_samples,), or floats for a point estimate
            log10([NII]6584/Hα) and log10([OIII]5007/Hβ); NaN where a flux is ≤ 0
            (non-detections), which matplotlib leaves out. Compare with the Kewley et
            al. (2001) and Kauffmann et al. (2003) demarcations.
        """
        x, y = spectral.bpt_nii_ratios(
            self._line_flux("nii_6584", "bpt_nii"),
            self._line_flux("halpha", "bpt_nii"),
            self._line_flux("oiii_5007", "bpt_nii"),
            self._line_flux("hbeta", "bpt_nii"),
        )
        if x.ndim == 0:
            return float(x), float(y)
        return x, y

    def equivalent_widths(
        self, window_aa: float = 20.0, continuum_width_aa: float = 50.0
    ) -> dict[str, tuple[float, float, float]]:
        """Rest-frame equivalent widths of the fitted lines from the model SED.

        For every draw (or the point estimate) the rest-frame SED is predicted with
        ``model.predict_sed(values)`` (keys ``wavelength_rest_aa`` [Å] and
        ``lnu_rest``), turned into L_λ ∝ L_ν/λ², and each line's width is measured
        against a straight-line continuum fitted to sidebands
        ``[λ0 ± w, λ0 ± (w + c)]`` (see
        :func:`tengri.analysis.diagnostics.spectral.equivalent_width`). Positive for
        emission.

        Parameters
        ----------
        window_aa : float
            Half-width w of the integration window [Å].
        continuum_width_aa : float
            Width c of each sideband [Å]. Sidebands should avoid neighbouring lines;
            the defaults suit the optical BPT lines.

        Returns
        -------
        dict
            line name → (median, 16th, 84th percentile) of the width [Å].

        Raises
        ------
        ValueError
            No line wavelengths in this result, or bad window widths.
        RuntimeError
            No model attached.
        """
        if self.eline_wavelengths_aa is None:
            raise ValueError(
                "equivalent_widths needs eline_wavelengths_aa (rest-frame line centres), "
                f"which this result (method {self.method!r}) does not have"
            )
        model = self._require_model("equivalent_widths")
        sed = model.predict_sed(self._values())
        wave = np.asarray(sed["wavelength_rest_aa"], dtype=np.float64)
        llam = np.asarray(sed["lnu_rest"], dtype=np.float64) / wave**2
        names = self.eline_names or [f"line_{i}" for i in range(self.eline_wavelengths_aa.size)]
        return {
            name: _median_interval(
                spectral.equivalent_width(wave, llam, center, window_aa, continuum_width_aa)
            )
            for name, center in zip(names, self.eline_wavelengths_aa)
        }

    def sed_components(self) -> dict[str, np.ndarray]:
        """The model SED split into its physical components.

        Passes ``model.sed_components(values)`` through as numpy arrays: the key
        ``wavelength`` (rest frame [Å]) plus ``sed_total``, ``sed_attenuated``,
        ``sed_intrinsic``, ``sed_nebular``, ``sed_shock``, ``sed_dust_ir``,
        ``sed_agn``, ``sed_radio``, ``sed_xray`` as the model provides them, each of
        shape (n_wave,) for a point estimate or (n_samples, n_wave) for draws.

        Raises
        ------
        RuntimeError
            No model attached.
        """
        model = self._require_model("sed_components")
        return {str(k): np.asarray(v) for k, v in model.sed_components(self._values()).items()}

    # --- prediction, resampling, refits --------------------------------------------
    def resample(self, key: Any, n: int) -> dict[str, np.ndarray]:
        """``n`` draws picked uniformly with replacement (Monte Carlo propagation).

        Parameters
        ----------
        key : jax.Array
            PRNG key (``jax.random.PRNGKey(seed)``); unused for a point estimate.
        n : int
            Number of draws.

        Returns
        -------
        dict
            name → array of shape (n, ...). A point estimate is repeated n times.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if self.samples is None:
            return {k: np.repeat(np.asarray(v)[None, ...], n, axis=0) for k, v in self.params.items()}
        index = self._draw_index(key, n)
        return {k: v[index] for k, v in self.samples.items()}

    def _draw_index(self, key: Any, n: int) -> np.ndarray:
        """Indices of the draws :meth:`resample` picks, shape (n,)."""
        import jax

        return np.asarray(jax.random.randint(key, (int(n),), 0, self.n_samples))

    def posterior_predictive(self, data: Any, n_samples: int | None = None, key: Any = None) -> dict:
        """Model data of the draws, whitened residuals and the χ² distribution.

        Deterministic posterior predictive: no noise realisation is added to the
        predictions (add ``noise * normal`` yourself for replicated data).

        For a spectroscopic or joint fit the prediction is what the likelihood
        compares to the data: with ``calibration_marginalize`` the model spectrum
        times the calibration polynomial, with marginalised lines the lines added;
        their coefficients come from the conditional Gaussian given the draw and
        ``data`` — the conditional mean for a point estimate, one draw per
        posterior draw (the stored per-draw ``eline_fluxes`` as line amplitudes,
        the calibration drawn given them), as for ``eline_fluxes``; see
        :mod:`tengri.posterior.predictive`.

        Parameters
        ----------
        data : array_like or dict
            The data the posterior was conditioned on, in the layout the Fitter
            took: photometry (n_band,) f_ν [erg/s/cm²/Hz]; a spectrum (n_pix,) in
            the Spectroscopy's ``flux_unit``; for a joint fit
            ``[band fluxes (n_band,), spectrum (n_pix,)]`` or
            ``{"phot": …, "spec": …}``. n_obs is n_band, n_pix or their sum, in
            the order [photometry, spectrum].
        n_samples : int, optional
            Number of draws to evaluate, picked with :meth:`resample` (with
            replacement). None uses every draw (1 for a point estimate).
        key : jax.Array, optional
            PRNG key for the resampling; default ``jax.random.PRNGKey(0)``.

        Returns
        -------
        dict
            ``predictions`` (N, n_obs); ``residuals`` (data − prediction)/noise,
            (N, n_obs), for every datum including masked ones; ``chi2`` (N,) summed
            over unmasked data; ``chi2_median``, ``chi2_lo``, ``chi2_hi`` (50th, 16th,
            84th percentiles); ``mask`` (n_obs,) and ``n_data`` (number used).
            Noise and mask come from the attached Fitter (``fitter.noise``,
            ``fitter.mask``, True = used). A joint fit adds ``chi2_photometry``
            and ``chi2_spectrum`` (N,) that sum to ``chi2``, ``n_data_photometry``
            and ``n_data_spectrum``; a marginalised calibration adds
            ``calibration`` (N, n_pix), the polynomial 1 + Σ c_k T_k(x), and
            marginalised lines ``line_amplitudes`` (N, n_lines) [erg/s/cm²].

        Raises
        ------
        RuntimeError
            No fitter or no model attached.
        DataError
            ``data`` does not match the fitter's layout, noise or the model's
            predictions.

        Notes
        -----
        With correct noise, the best fit's χ² follows a χ² distribution with about
        n_data − n_free degrees of freedom. A posterior draw adds the spread of the
        draws, about one unit per well-constrained parameter (less for parameters the
        prior bounds), so the median over draws lies between n_data − n_free and
        n_data. Either is one noise realisation: its scatter is √(2 n_data) or so.
        """
        from tengri.posterior.predictive import chi2_summary, spectroscopic_predictive

        fitter = self._require_fitter("posterior_predictive")
        model = self._require_model("posterior_predictive")
        if getattr(fitter, "data_type", "photometry") != "photometry":
            return spectroscopic_predictive(self, fitter, data, n_samples, key)
        observed = np.asarray(data, dtype=np.float64)
        noise = np.asarray(fitter.noise, dtype=np.float64)
        mask = np.ones(noise.shape, bool) if fitter.mask is None else np.asarray(fitter.mask, bool)
        if observed.ndim != 1 or observed.shape != noise.shape or mask.shape != noise.shape:
            raise DataError(
                f"data must have the shape of the fitter's noise {noise.shape} (mask "
                f"{mask.shape}), got {observed.shape}"
            )
        if self.samples is None:
            values = self.params
        elif n_samples is None:
            values = self.samples
        else:
            if key is None:
                import jax

                key = jax.random.PRNGKey(0)
            values = self.resample(key, n_samples)
        predictions = np.atleast_2d(np.asarray(model.predict_photometry(values), dtype=np.float64))
        if predictions.shape[-1] != observed.size:
            raise DataError(
                f"model predicts {predictions.shape[-1]} photometric points, data has {observed.size}"
            )
        residuals = (observed - predictions) / noise
        return {
            "predictions": predictions,
            "residuals": residuals,
            **chi2_summary(residuals, mask),
            "mask": mask,
            "n_data": int(mask.sum()),
        }

    def refine(self, method: str = "mcmc_nuts", **kwargs: Any) -> "Posterior":
        """Run another method warm-started from this result.

        Calls ``fitter.run(method, init_from=self, **kwargs)``: e.g. VI → NUTS for
        exact inference on top of a variational fit.

        Raises
        ------
        RuntimeError
            No fitter attached.
        """
        return self._require_fitter("refine").run(method, init_from=self, **kwargs)

    def _n_dimensions(self) -> int:
        """Free dimensions: varying scalar components of the draws, or of the params."""
        if self.samples is None:
            return int(sum(np.size(v) for v in self.params.values()))
        return int(sum(np.sum(np.ptp(v.reshape(v.shape[0], -1), axis=0) > 0) for v in self.samples.values()))

    def validate(self, n_steps: int = 200, **kwargs: Any) -> dict:
        """Check this result against a short MCMC run started from it.

        Runs ``fitter.run(method, init_from=self, n_samples=n_steps, n_chains=4, **kwargs)``
        with NUTS when the problem has ≤ 20 free dimensions, Ray Tracing otherwise, and
        compares the marginals parameter by parameter (scalar parameters except
        ``psd_xi`` and those constant in both results). Four chains by default
        (``n_chains=`` overrides): one short chain can sit in a minor mode or cover a
        curved degeneracy only in part, and then flags a correct result (measured on
        a 12-band delayed-τ mock: one chain of 300 draws gave a metallicity overlap of
        0.0 for one key, four chains ≥ 0.70 for every key tried).

        For draws the agreement is the histogram intersection (1 = identical, 0 =
        disjoint). For a point estimate it is ``2 min(F, 1 − F)``, with F the MCMC
        marginal CDF at the point (1 at the MCMC median, → 0 in the tails).

        Parameters
        ----------
        n_steps : int
            MCMC draws per chain (default 200: a quick sanity check).
        **kwargs
            Forwarded to ``fitter.run`` (e.g. ``key``, ``n_warmup``).

        Returns
        -------
        dict
            ``mcmc_result`` (Posterior), ``overlap`` (name → float in [0, 1]),
            ``passed`` (True when every overlap is > 0.5).

        Notes
        -----
        The number of free dimensions is counted from the varying components of the
        draws; for a point estimate every parameter value counts (fixed ones too).
        """
        fitter = self._require_fitter("validate")
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 2:
            raise ValueError(f"n_steps must be an integer ≥ 2, got {n_steps!r}")
        method = "mcmc_nuts" if self._n_dimensions() <= 20 else "mcmc_raytrace"
        kwargs.setdefault("n_chains", 4)
        check = fitter.run(method, init_from=self, n_samples=int(n_steps), **kwargs)
        reference = check._require_samples("validate (MCMC check)")
        overlap = {}
        for name, draws in reference.items():
            if draws.ndim != 1 or name.startswith(_LATENT_PREFIXES):
                continue
            if self.samples is not None:
                mine = self.samples.get(name)
                if mine is None or mine.ndim != 1 or (np.ptp(mine) == 0 and np.ptp(draws) == 0):
                    continue
                overlap[name] = diag.histogram_overlap(mine, draws)
            elif name in self.params and np.ndim(self.params[name]) == 0:
                if np.ptp(draws) == 0:
                    continue
                point = self.params[name]
                cdf = (np.sum(draws < point) + 0.5 * np.sum(draws == point)) / draws.size
                overlap[name] = float(2.0 * min(cdf, 1.0 - cdf))
        if not overlap:
            raise ValueError("validate found no varying scalar parameter shared by both results")
        return {
            "mcmc_result": check,
            "overlap": overlap,
            "passed": all(v > 0.5 for v in overlap.values()),
        }

    # --- conversions -----------------------------------------------------------------
    def to_param_spec(self):
        """Priors for a follow-up fit built from this result (``tengri.Parameters``).

        A point estimate gives ``Fixed(value)`` per parameter. Draws give
        ``TruncatedNormal(median, std, min, max)`` per parameter (``Fixed`` where the
        draws are constant). Vector-valued parameters (``psd_xi``) are left out: a
        latent field is not a set of independent scalar priors, and its grid settings
        belong to the model.
        """
        from tengri.params import Fixed, Parameters, TruncatedNormal

        priors = {}
        if self.samples is None:
            for name, value in self.params.items():
                if np.ndim(value) == 0:
                    priors[name] = Fixed(value)
            return Parameters(priors)
        for name, draws in self.samples.items():
            if draws.ndim != 1:
                continue
            draws = draws.astype(np.float64)
            low, high = float(draws.min()), float(draws.max())
            if low == high:
                priors[name] = Fixed(low)
            else:
                priors[name] = TruncatedNormal(float(np.median(draws)), float(np.std(draws)), low, high)
        return Parameters(priors)

    def to_arviz(self):
        """The draws as an ArviZ DataTree (``arviz_base.from_dict``).

        The ``posterior`` group holds every varying scalar parameter with shape
        (n_chains, n_draws); ``psd_xi``, other vector-valued parameters and fixed
        (constant) ones are left out. Works with ``arviz.summary``, ``arviz.ess``, ``arviz.rhat``, plots.

        Raises
        ------
        ValueError
            For a point estimate (no draws).
        """
        samples = self._require_samples("to_arviz")
        from arviz_base import from_dict

        n_per_chain = self.n_samples // self.n_chains
        posterior = {
            name: samples[name].reshape(self.n_chains, n_per_chain)
            for name in self._scalar_sample_names()
            if np.ptp(samples[name]) > 0
        }
        if not posterior:
            raise ValueError("to_arviz: the draws hold no varying scalar parameter")
        return from_dict({"posterior": posterior})

    # --- reporting -------------------------------------------------------------------
    def summary_table(self) -> str:
        """A text summary of the result.

        Method, number of draws (or "MAP" for a point estimate), wall time; per scalar
        parameter the median and 16–84% interval (the value for a point estimate) and,
        with draws, the ESS; the method's scalar diagnostics, the final loss and the
        log evidence when present. Latent fields (``psd_xi``) are not listed.
        """
        if self.samples is None:
            head = (
                f"Posterior  method: {self.method}  MAP (point estimate)  "
                f"wall time: {self.wall_time_s:.2f} s"
            )
            names = [k for k, v in self.params.items() if np.ndim(v) == 0]
            width = max([len(n) for n in names] + [9])
            lines = [head, f"{'parameter':<{width}}  {'value':>12}", "─" * (width + 14)]
            lines += [f"{n:<{width}}  {self.params[n]:>12.6g}" for n in names]
        else:
            head = (
                f"Posterior  method: {self.method}  {self.n_samples} samples "
                f"({self.n_chains} chain{'s' if self.n_chains > 1 else ''})  "
                f"wall time: {self.wall_time_s:.2f} s"
            )
            names = self._scalar_sample_names()
            ess = self.effective_sample_size() if self.n_samples // self.n_chains >= 4 else {}
            width = max([len(n) for n in names] + [9])
            columns = f"{'parameter':<{width}}  {'median':>12}  {'16%':>12}  {'84%':>12}  {'ESS':>9}"
            lines = [head, columns, "─" * len(columns)]
            for n in names:
                med, lo, hi = _median_interval(self.samples[n])
                ess_text = f"{ess[n]:>9.1f}" if n in ess else f"{'fixed':>9}"
                lines.append(f"{n:<{width}}  {med:>12.6g}  {lo:>12.6g}  {hi:>12.6g}  {ess_text}")
        vectors = [k for k, v in self._values().items() if np.ndim(v) > (0 if self.samples is None else 1)]
        if vectors:
            lines.append(f"not listed (vector-valued): {', '.join(vectors)}")
        scalars = {k: v for k, v in self.diagnostics.items() if isinstance(v, (bool, int, float, str))}
        if scalars:
            shown = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items()
            )
            lines.append(f"diagnostics: {shown}")
        if self.loss_history is not None and self.loss_history.size:
            lines.append(f"final loss: {self.loss_history[-1]:.6g} after {self.loss_history.size} steps")
        if self.log_evidence is not None:
            err = "" if self.log_evidence_err is None else f" ± {self.log_evidence_err:.3g}"
            lines.append(f"log evidence: {self.log_evidence:.6g}{err}")
        return "\n".join(lines)

    def summary_str(self) -> str:
        """Same text as :meth:`summary_table` (parity with ``Parameters.summary_str``)."""
        return self.summary_table()

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | PathLike) -> None:
        """Write the result to HDF5 (atomically); see :mod:`tengri.posterior.io`.

        The model and fitter are runtime objects and are not saved.
        """
        from tengri.posterior.io import save_posterior

        save_posterior(self, path)

    @classmethod
    def load(cls, path: str | PathLike, model: Any = None) -> "Posterior":
        """Read a result written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        model : SEDModel, optional
            Attached for derived quantities, predictions and plots. The fitter is
            not restored; set ``posterior._fitter`` to use refine/validate.
        """
        from tengri.posterior.io import load_posterior

        return load_posterior(path, model=model)

    # --- plots --------------------------------------------------------------------------
    def plot_corner(self, params=None, truths=None, color="C0", fig=None, axes=None, label=None,
                    truth_label=None):
        """Corner plot of the draws; see :func:`tengri.posterior.plots.plot_corner`."""
        from tengri.posterior.plots import plot_corner

        return plot_corner(self, params=params, truths=truths, color=color, fig=fig, axes=axes, label=label,
                           truth_label=truth_label)

    def plot_sed(self, n_draws: int = 100, wave_range=None, ax=None, frame: str = "auto", truths=None,
                 truth_label: str = "truth"):
        """SED [µJy] against observed wavelength [µm] with its 16–84% band and the photometry.

        See :func:`tengri.posterior.plots.plot_sed`.
        """
        from tengri.posterior.plots import plot_sed

        return plot_sed(self, n_draws=n_draws, wave_range=wave_range, ax=ax, frame=frame, truths=truths,
                        truth_label=truth_label)

    def plot_sfh(self, n_draws: int = 100, ax=None, truths=None, truth_label: str = "truth"):
        """Star-formation history with its 16–84% band; see :func:`tengri.posterior.plots.plot_sfh`."""
        from tengri.posterior.plots import plot_sfh

        return plot_sfh(self, n_draws=n_draws, ax=ax, truths=truths, truth_label=truth_label)
