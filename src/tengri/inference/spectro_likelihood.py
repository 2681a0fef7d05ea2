"""Spectroscopic and joint likelihoods, with calibration and line amplitudes integrated out.

The spectrum's likelihood is Gaussian in the pixels (inverse variance 0 where
masked). Two families of nuisances enter linearly and are integrated out exactly,
inside the jitted log-density:

* **calibration** (``calibration_marginalize=True``): the model spectrum m is
  multiplied by ``1 + Σ_{k=1..K} c_k T_k(x)``, T_k the Chebyshev polynomials and x
  the observed wavelength mapped linearly onto [-1, 1] over the spectrum; the
  columns are ``m · T_k`` and ``c_k ~ N(0, cal_prior_sigma²)``. (Prospector
  optimises this polynomial, BAGPIPES samples it.)
* **emission-line amplitudes** (Spectroscopy ``eline_mode="marginalized"``): the
  named lines are left out of m; the columns are their Gaussian profiles per unit
  flux [erg/s/cm²] and the amplitudes a_l have either a ``"cloudy"`` prior
  ``N(F_l, (w F_l + floor)²)``, F_l the Cloudy prediction after dust and w the
  Spectroscopy's ``eline_prior_width`` (the floor, 1e-3 w max_l F_l plus a tiny
  absolute term, keeps the prior proper when F = 0), or a ``"flat"`` prior.
  The line columns are not multiplied by the calibration polynomial: with both on,
  the amplitudes are the observed (calibrated) line fluxes.

With y = m + A b + noise and b ~ N(μ, Λ⁻¹) (Λ diagonal), the marginal is

    log L = −½ rᵀN⁻¹r + ½ hᵀP⁻¹h − ½ log|P| + ½ Σ_k log λ_k + (data normalisation),
    r = y − m − Aμ,  P = Λ + AᵀN⁻¹A,  h = AᵀN⁻¹r,

computed with a Cholesky factor of the (equilibrated) K×K matrix P.

The **flat** prior is improper. It is taken as the limit of an unnormalised
Gaussian ``exp(−λ_flat a²/2)`` of density 1 at a = 0 in units of erg/s/cm², with
λ_flat = (10³ S)⁻², S an upper bound on any line flux of the galaxy (peak |data| +
noise times the spectrum's width): the marginal is then ∫ L(a) da to ~1e-7, a line
the data do not cover adds the constant ½ log(2π/λ_flat), and the normalisation
(hence the evidence) is not comparable with other priors. Amplitudes may come out
negative (a Gaussian in a); the posterior draws of Posterior.eline_fluxes are
from the conditional Gaussian of the amplitudes given the other parameters.

Data layout (``build_problem``): a spectrum-only model takes the spectrum
(n_pix,); a joint model takes ``[band fluxes (n_band,), spectrum (n_pix,)]`` as
one array, or dicts ``{"phot": …, "spec": …}`` (the catalog names
``flux_obs``/``spec_obs`` for data and ``noise``/``spec_noise`` for noise are
accepted too). A data dict may carry ``wave_spec`` (n_pix,): this galaxy's pixel
centres [Å].
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import ConfigError, DataError, ParameterError
from tengri.inference.problem import Problem

__all__ = ["build_problem", "linear_gaussian_marginal", "conditional_draw", "chebyshev_design",
           "line_flux_function", "predictive_function", "spectral_options", "split_joint"]

_FLAT_SCALE = 1e3
_KEYS = {"phot": ("phot", "flux_obs", "noise"), "spec": ("spec", "spec_obs", "spec_noise")}


def chebyshev_design(wavelength_aa, n_poly: int) -> np.ndarray:
    """T_1 … T_K at x = the wavelengths mapped onto [-1, 1], shape (n_pix, K)."""
    wave = np.asarray(wavelength_aa, np.float64)
    x = 2.0 * (wave - wave[0]) / (wave[-1] - wave[0]) - 1.0
    return np.polynomial.chebyshev.chebvander(x, n_poly)[:, 1:]


def linear_gaussian_marginal(resid, inv_var, design, prior_mean, prior_prec, normalised):
    """Marginal log-likelihood of y = m + A b + ε over b ~ N(μ, Λ⁻¹), and b's conditional.

    Parameters
    ----------
    resid : array (n,)
        y − m.
    inv_var : array (n,)
        1/σ² per datum, 0 for masked data.
    design : array (n, K)
        A.
    prior_mean, prior_prec : arrays (K,)
        μ and the diagonal of Λ.
    normalised : bool array (K,)
        True for a normalised Gaussian prior; False for a flat prior, taken as the
        unnormalised ``exp(−λ (b − μ)²/2)``.

    Returns
    -------
    log_marginal : scalar
        Without the data normalisation ``−½ Σ log(2π σ²)``.
    mean : array (K,)
        Conditional mean of b.
    factor : (L, d)
        P = diag(1/d) L Lᵀ diag(1/d): draws are ``mean + d · (L⁻ᵀ ε)``.
    """
    r = resid - design @ prior_mean
    weighted = design.T * inv_var[None, :]
    precision = jnp.diag(prior_prec) + weighted @ design
    h = weighted @ r
    d = 1.0 / jnp.sqrt(jnp.diag(precision))
    chol = jnp.linalg.cholesky(precision * d[:, None] * d[None, :])
    alpha = jax.scipy.linalg.solve_triangular(chol, h * d, lower=True)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol))) - 2.0 * jnp.sum(jnp.log(d))
    log_prior_norm = 0.5 * jnp.sum(jnp.where(normalised, jnp.log(prior_prec), jnp.log(2.0 * jnp.pi)))
    log_marginal = -0.5 * jnp.sum(inv_var * r * r) + 0.5 * alpha @ alpha - 0.5 * log_det + log_prior_norm
    mean = prior_mean + d * jax.scipy.linalg.solve_triangular(chol.T, alpha, lower=False)
    return log_marginal, mean, (chol, d)


def conditional_draw(mean, factor, eps):
    """One draw of b from its conditional N(mean, P⁻¹), ``factor`` from
    :func:`linear_gaussian_marginal` and ``eps`` (K,) standard normal."""
    chol, d = factor
    return mean + d * jax.scipy.linalg.solve_triangular(chol.T, eps, lower=False)


def spectral_options(model, calibration_marginalize=False, cal_n_poly=3, cal_prior_sigma=1.0,
                     eline_marginalize=None, eline_prior_type=None) -> tuple:
    """Validated, hashable options: (calibrate, n_poly, cal_sigma, lines_marginalised, prior type)."""
    spec = model.spectroscopy
    if isinstance(cal_n_poly, bool) or not isinstance(cal_n_poly, (int, np.integer)) or cal_n_poly < 1:
        raise ParameterError(f"cal_n_poly must be an integer >= 1, got {cal_n_poly!r}")
    if not (np.isfinite(cal_prior_sigma) and cal_prior_sigma > 0):
        raise ParameterError(f"cal_prior_sigma must be finite and > 0, got {cal_prior_sigma!r}")
    marginalised = spec.eline_mode == "marginalized"
    if eline_marginalize is not None and bool(eline_marginalize) != marginalised:
        raise ParameterError(
            f"eline_marginalize={eline_marginalize} disagrees with the model's Spectroscopy "
            f"eline_mode={spec.eline_mode!r} (which decides whether the named lines are in the model "
            "spectrum): set eline_mode='marginalized' there, or leave eline_marginalize=None")
    prior = spec.eline_prior_type if eline_prior_type is None else eline_prior_type
    if prior not in ("flat", "cloudy"):
        raise ParameterError(f"eline_prior_type {prior!r} unknown; valid: flat, cloudy")
    if marginalised and prior == "cloudy" and not model.nebular:
        raise ConfigError('eline_prior_type="cloudy" centres the prior on the Cloudy lines: needs nebular=True')
    return (bool(calibration_marginalize), int(cal_n_poly), float(cal_prior_sigma), marginalised, prior)


def split_joint(model, value, what: str, n_phot: int, n_spec: int):
    """(photometry part or None, spectrum part) of data / noise / mask in either layout."""
    if isinstance(value, Mapping):
        wanted = {"phot": None, "spec": None}
        for part, keys in _KEYS.items():
            for key in keys:
                if key in value:
                    wanted[part] = value[key]
        if wanted["spec"] is None or (n_phot and wanted["phot"] is None):
            need = "'phot' and 'spec'" if n_phot else "'spec'"
            raise DataError(f"{what} as a dict needs the keys {need}; got {sorted(value)}")
        return wanted["phot"], wanted["spec"]
    if value is None:
        return None, None
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.shape[0] != n_phot + n_spec:
        layout = f"[photometry ({n_phot},), spectrum ({n_spec},)]" if n_phot else f"the spectrum ({n_spec},)"
        raise DataError(f"{what} must have shape ({n_phot + n_spec},): {layout}; got {arr.shape}")
    return (arr[:n_phot] if n_phot else None), arr[n_phot:]


def build_problem(model, data, noise, mask=None, fixed: Mapping[str, float] | None = None,
                  **options: Any) -> Problem:
    """The Problem of one galaxy's spectrum, or photometry + spectrum.

    Parameters
    ----------
    model : SEDModel
        With a Spectroscopy (or a Joint) observation.
    data, noise : array or dict
        See the module docstring for the layout; spectrum in the Spectroscopy's
        ``flux_unit``, photometry in erg/s/cm²/Hz.
    mask : bool array or dict, optional
        True = use the datum, same layout.
    fixed : mapping, optional
        Per-galaxy values of fixed parameters (e.g. redshift).
    **options
        ``calibration_marginalize``, ``cal_n_poly``, ``cal_prior_sigma``,
        ``eline_marginalize``, ``eline_prior_type`` (see :class:`tengri.Fitter`).
    """
    from tengri.model.sed_model import validate_data

    opts = spectral_options(model, **options)
    n_phot = model.photometry.n_data if model.photometry is not None else 0
    n_spec = model.spectroscopy.n_data
    wave = data.get("wave_spec") if isinstance(data, Mapping) else None
    parts = [split_joint(model, v, name, n_phot, n_spec) for v, name in
             ((data, "data"), (noise, "noise"), (mask, "data_mask"))]
    joined = [None if p[1] is None else np.concatenate([np.asarray(p[0], float if i < 2 else bool), np.asarray(p[1])])
              if n_phot else np.asarray(p[1]) for i, p in enumerate(parts)]
    y, sigma, used = validate_data(joined[0], joined[1], joined[2], n_phot + n_spec)
    ctx = model.prepare(fixed)
    spec_ctx = model._spectrum_plan.context(wave)
    safe = np.where(used, sigma, 1.0)
    y_spec, used_spec, safe_spec = y[n_phot:], used[n_phot:], safe[n_phot:]
    scale = (np.max(np.abs(y_spec[used_spec])) + np.max(safe_spec[used_spec])) * float(np.sum(spec_ctx["divisor"]))
    data_args = {
        **ctx,
        "grids": model.grids,
        "spec_ctx": spec_ctx,
        "spec_data": jnp.asarray(np.where(used_spec, y_spec, 0.0)),
        "spec_inv_var": jnp.asarray(np.where(used_spec, 1.0 / safe_spec**2, 0.0)),
        "spec_noise": jnp.asarray(safe_spec),
        "spec_mask": jnp.asarray(used_spec),
        "mask": jnp.asarray(used),  # the whole layout [photometry, spectrum], as Fitter.mask
        "cal_design": jnp.asarray(chebyshev_design(np.asarray(spec_ctx["wavelength_aa"]), opts[1])),
        "flat_precision": jnp.asarray(1.0 / (_FLAT_SCALE * scale) ** 2),
        "cloudy_floor": jnp.asarray(1e-9 * scale),
        "log_norm": jnp.asarray(-np.sum(np.log(safe[used])) - 0.5 * used.sum() * np.log(2 * np.pi)),
    }
    if n_phot:
        data_args.update(phot_data=jnp.asarray(np.where(used[:n_phot], y[:n_phot], 0.0)),
                         phot_noise=jnp.asarray(safe[:n_phot]), phot_mask=jnp.asarray(used[:n_phot]))
    fns = _functions(model, opts)
    return Problem(
        names=model.parameters.free_names,
        log_likelihood=fns["log_likelihood"],
        data_args=data_args,
        to_physical=model._to_physical_fn,
        init=jnp.zeros(model.parameters.n_free),
        residuals=fns["residuals"],
        n_data=int(used.sum()),
    )


def _functions(model, opts: tuple) -> dict:
    """log_likelihood / residuals / line functions of one model and options (memoised on the model)."""
    key = ("spectro_likelihood", opts)
    cache = model._jit_cache
    if key not in cache:
        cache[key] = _make_functions(model, opts)
    return cache[key]


def _make_functions(model, opts: tuple) -> dict:
    calibrate, _, cal_sigma, lines_marginalised, prior_type = opts
    params = model.parameters
    plan = model._spectrum_plan
    z_fixed = "redshift" in params.fixed_values
    has_phot = model.photometry is not None
    marginal = calibrate or lines_marginalised

    def forward(z, da):
        return forward_physical(params.to_physical(z, da["table"], da["fixed"]), da)

    def forward_physical(theta, da):
        """(spectrum parts (see SpectrumPlan.predict), band fluxes or None) at physical ``theta``."""
        state = model._run_chain(theta, da["grids"])
        spec = plan.predict(theta, state, da["grids"], da["spec_ctx"])
        phot = None
        if has_phot:
            w = da["band_matrix"] if z_fixed else model._band_matrix(theta["redshift"], da["grids"])
            phot = w @ state["sed"]
        return spec, phot

    def linear_system(spec, da):
        columns, means, precs, normalised = [], [], [], []
        if calibrate:
            k = da["cal_design"].shape[1]
            columns.append(spec["flux"][:, None] * da["cal_design"])
            means.append(jnp.zeros(k))
            precs.append(jnp.full(k, 1.0 / cal_sigma**2))
            normalised.append(jnp.ones(k, bool))
        if lines_marginalised:
            templates = spec["named_line_templates"]
            n = templates.shape[0]
            columns.append(templates.T)
            if prior_type == "cloudy":
                width = model.spectroscopy.eline_prior_width
                predicted = spec["named_line_flux"]
                sd = width * jnp.abs(predicted) + 1e-3 * width * jnp.max(jnp.abs(predicted)) + da["cloudy_floor"]
                means.append(predicted)
                precs.append(1.0 / sd**2)
                normalised.append(jnp.ones(n, bool))
            else:
                means.append(jnp.zeros(n))
                precs.append(jnp.full(n, 1.0) * da["flat_precision"])
                normalised.append(jnp.zeros(n, bool))
        return (jnp.concatenate(columns, axis=1), jnp.concatenate(means), jnp.concatenate(precs),
                jnp.concatenate(normalised))

    def phot_chi2(phot, da):
        r = jnp.where(da["phot_mask"], (phot - da["phot_data"]) / da["phot_noise"], 0.0)
        return jnp.sum(r * r)

    def log_likelihood(z, da):
        spec, phot = forward(z, da)
        out = da["log_norm"]
        if has_phot:
            out = out - 0.5 * phot_chi2(phot, da)
        resid = da["spec_data"] - spec["flux"]
        if not marginal:
            return out - 0.5 * jnp.sum(da["spec_inv_var"] * resid * resid)
        design, mean, prec, normalised = linear_system(spec, da)
        return out + linear_gaussian_marginal(resid, da["spec_inv_var"], design, mean, prec, normalised)[0]

    def residuals(z, da):
        spec, phot = forward(z, da)
        r = jnp.where(da["spec_mask"], (spec["flux"] - da["spec_data"]) / da["spec_noise"], 0.0)
        if not has_phot:
            return r
        rp = jnp.where(da["phot_mask"], (phot - da["phot_data"]) / da["phot_noise"], 0.0)
        return jnp.concatenate([rp, r])

    def line_fluxes(z, da, key):
        """(conditional mean, one draw) of the named lines' fluxes [erg/s/cm²]."""
        spec, _ = forward(z, da)
        if not lines_marginalised:
            return spec["named_line_flux"], spec["named_line_flux"]
        design, mean, prec, normalised = linear_system(spec, da)
        _, cond, factor = linear_gaussian_marginal(
            da["spec_data"] - spec["flux"], da["spec_inv_var"], design, mean, prec, normalised)
        draw = conditional_draw(cond, factor, jax.random.normal(key, cond.shape))
        n_lines = spec["named_line_flux"].shape[0]
        return cond[-n_lines:], draw[-n_lines:]

    return {"log_likelihood": log_likelihood, "residuals": None if marginal else residuals,
            "line_fluxes": jax.jit(jax.vmap(line_fluxes, in_axes=(0, None, 0))),
            "forward_physical": forward_physical, "linear_system": linear_system}


def line_flux_function(model, **options):
    """Jitted ``(z (n, d), data_args, keys (n, 2)) -> (means (n, L), draws (n, L))`` of the named
    lines, or None when the Spectroscopy has ``eline_mode="none"``."""
    if model.spectroscopy is None or model.spectroscopy.eline_mode == "none":
        return None
    return _functions(model, spectral_options(model, **options))["line_fluxes"]


def predictive_function(model, draw: bool, given_lines: bool, **options):
    """Jitted model data as the likelihood compares them to the data, per parameter vector.

    ``(theta, data_args, keys, line_amplitudes) -> dict`` with ``theta`` a dict of
    every parameter (free and fixed) → (n,) physical values, ``keys`` (n, 2) PRNG
    keys and ``line_amplitudes`` (n, n_lines) [erg/s/cm²] or None. Returns
    ``spectrum`` (n, n_pix) in the data unit and, for a joint model, ``photometry``
    (n, n_band) [erg/s/cm²/Hz]; with calibration marginalised ``calibration``
    (n, n_pix), the polynomial ``1 + Σ c_k T_k(x)``; with lines marginalised
    ``line_amplitudes`` (n, n_lines), the amplitudes added.

    The marginalised linear coefficients (calibration, line amplitudes) are set
    from their conditional Gaussian given θ and ``data_args["spec_data"]`` (the
    algebra of :func:`linear_gaussian_marginal`): its mean, or with ``draw=True``
    one draw per θ. With ``given_lines=True`` the line amplitudes are the ones
    passed in and only the calibration coefficients come from their conditional
    given θ, those amplitudes and the data (with a draw of the amplitudes from
    their marginal conditional this is a draw of both from their joint one).
    Without any marginalisation the spectrum is the model's. Memoised on the model.
    """
    opts = spectral_options(model, **options)
    key = ("spectro_predictive", opts, bool(draw), bool(given_lines))
    cache = model._jit_cache
    if key not in cache:
        cache[key] = _make_predictive(model, opts, bool(draw), bool(given_lines))
    return cache[key]


def _make_predictive(model, opts: tuple, draw: bool, given_lines: bool):
    calibrate, n_poly, _, lines_marginalised, _ = opts
    fns = _functions(model, opts)
    forward_physical, linear_system = fns["forward_physical"], fns["linear_system"]
    n_cal = n_poly if calibrate else 0

    def conditional(resid, da, design, mean, prec, normalised, key):
        _, cond, factor = linear_gaussian_marginal(resid, da["spec_inv_var"], design, mean, prec, normalised)
        return conditional_draw(cond, factor, jax.random.normal(key, cond.shape)) if draw else cond

    def predict(theta, da, key, line_amplitudes):
        spec, phot = forward_physical(theta, da)
        out = {"spectrum": spec["flux"]} if phot is None else {"spectrum": spec["flux"], "photometry": phot}
        if not (calibrate or lines_marginalised):
            return out
        design, mean, prec, normalised = linear_system(spec, da)
        resid = da["spec_data"] - spec["flux"]
        if given_lines and lines_marginalised:
            resid = resid - design[:, n_cal:] @ line_amplitudes
            cal = (conditional(resid, da, design[:, :n_cal], mean[:n_cal], prec[:n_cal], normalised[:n_cal], key)
                   if calibrate else jnp.zeros(0))
            coeffs = jnp.concatenate([cal, line_amplitudes])
        else:
            coeffs = conditional(resid, da, design, mean, prec, normalised, key)
        out["spectrum"] = spec["flux"] + design @ coeffs
        if calibrate:
            out["calibration"] = 1.0 + da["cal_design"] @ coeffs[:n_cal]
        if lines_marginalised:
            out["line_amplitudes"] = coeffs[n_cal:]
        return out

    return jax.jit(jax.vmap(predict, in_axes=(0, None, 0, 0 if given_lines else None)))
