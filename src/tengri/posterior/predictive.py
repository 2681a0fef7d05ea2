"""Posterior predictive check of spectroscopic and joint fits.

The prediction of a posterior draw is what the likelihood compares to the data
(:func:`tengri.inference.spectro_likelihood.predictive_function`): with
``calibration_marginalize`` the model spectrum times the calibration polynomial,
with marginalised lines the lines added, the coefficients of both taken from their
conditional Gaussian given the draw's parameters and the data.

Which value of the conditional: the same rule as ``Posterior.eline_fluxes``. A
point estimate (MAP) uses the conditional mean. Posterior draws use one draw of
the coefficients each, so that (θ, coefficients) is a draw from the full
posterior and the χ² distribution is that of full posterior draws; where the
Posterior holds per-draw line fluxes (the fitter draws them from the conditional)
those are the amplitudes, and the calibration is drawn from its conditional given
θ, those amplitudes and the data. The conditional mean instead would give every
draw the best-fitting coefficients, and a χ² lower by about the number of
coefficients.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import DataError, ParameterError

__all__ = ["spectroscopic_predictive", "chi2_summary", "PREDICTIVE_CHUNK"]

# Draws are evaluated this many at a time (the last batch padded): the forward
# model's chain state per draw is large, and one program serves every count above it.
PREDICTIVE_CHUNK = 256


def chi2_summary(residuals: np.ndarray, mask: np.ndarray) -> dict:
    """χ² per draw over the used data, and its 50th/16th/84th percentiles.

    Parameters
    ----------
    residuals : array (N, n_obs)
        (data − prediction)/noise.
    mask : bool array (n_obs,)
        True = counted.
    """
    chi2 = np.sum(np.where(mask, residuals, 0.0) ** 2, axis=1)
    lo, med, hi = np.percentile(chi2, [16, 50, 84])
    return {"chi2": chi2, "chi2_median": float(med), "chi2_lo": float(lo), "chi2_hi": float(hi)}


def _parameter_batch(model, values: dict, fixed: np.ndarray) -> dict:
    """Every parameter → (N,) float64 array: ``values``, or the fit's fixed value when absent."""
    params = model.parameters
    fixed_names = sorted(params.fixed_values)
    missing = [n for n in params.free_names if n not in values]
    if missing:
        raise ParameterError(f"posterior_predictive: values missing for free parameters {missing}")
    batch = {n: np.atleast_1d(np.asarray(values[n], np.float64)) for n in params.free_names}
    n = next(iter(batch.values())).shape[0] if batch else 1
    for j, name in enumerate(fixed_names):
        value = values.get(name, fixed[j])
        batch[name] = np.broadcast_to(np.asarray(value, np.float64), (n,)).copy()
    return batch


def _evaluate(fn, theta: dict, data_args: dict, keys, lines) -> dict:
    """``fn`` over the draws in padded chunks of PREDICTIVE_CHUNK; numpy arrays (N, ...)."""
    n = next(iter(theta.values())).shape[0]
    size = min(n, PREDICTIVE_CHUNK)
    pieces = []
    for first in range(0, n, size):
        index = np.arange(first, min(first + size, n))
        index = np.concatenate([index, np.full(size - index.size, index[-1])])  # pad with a real draw
        out = fn({k: jnp.asarray(v[index]) for k, v in theta.items()}, data_args, keys[index],
                 None if lines is None else jnp.asarray(lines[index]))
        n_real = min(size, n - first)
        pieces.append({k: np.asarray(v)[:n_real] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}


def spectroscopic_predictive(posterior, fitter, data: Any, n_samples: int | None, key: Any) -> dict:
    """``Posterior.posterior_predictive`` for data_type "spectroscopy" or "joint".

    Parameters
    ----------
    posterior : Posterior
    fitter : Fitter
        The spectroscopic or joint Fitter of the fit (noise, mask, options, data_args).
    data : array or dict
        Fitter's layout: the spectrum (n_pix,), or for a joint fit
        ``[band fluxes (n_band,), spectrum (n_pix,)]`` or ``{"phot": …, "spec": …}``.
    n_samples, key
        As in ``Posterior.posterior_predictive``.

    Returns
    -------
    dict
        The photometric keys with n_obs = n_band + n_pix in the layout
        [photometry, spectrum]; for a joint fit also ``chi2_photometry``,
        ``chi2_spectrum`` (N,) and ``n_data_photometry``, ``n_data_spectrum``; with
        calibration marginalised ``calibration`` (N, n_pix); with lines
        marginalised ``line_amplitudes`` (N, n_lines) [erg/s/cm²].
    """
    from tengri.inference.spectro_likelihood import predictive_function

    model = fitter.model
    n_phot = model.photometry.n_data if model.photometry is not None else 0
    observed = fitter._joined(model, data, "data")  # DataError naming data for a wrong layout
    noise = np.asarray(fitter.noise, np.float64)
    mask = np.asarray(fitter.mask, bool)
    if observed.shape != noise.shape:
        raise DataError(f"data has {observed.shape[0]} values, the fit has {noise.shape[0]}")
    if not np.all(np.isfinite(observed[mask])):
        raise DataError("data has NaN/inf where the fit's data_mask uses the datum")
    key = jax.random.PRNGKey(0) if key is None else key
    stored = posterior.eline_fluxes
    if posterior.samples is None:
        values, index, draw = posterior.params, None, False
    else:
        index = (np.arange(posterior.n_samples) if n_samples is None
                 else posterior._draw_index(key, n_samples))
        values, draw = {k: v[index] for k, v in posterior.samples.items()}, True
    data_args = dict(fitter.problem.data_args)
    theta = _parameter_batch(model, values, np.asarray(data_args["fixed"]))
    n_draws = next(iter(theta.values())).shape[0]
    spec_used = mask[n_phot:]
    data_args["spec_data"] = jnp.asarray(np.where(spec_used, observed[n_phot:], 0.0))
    lines = None
    if (draw and model.spectroscopy.eline_mode == "marginalized" and stored is not None
            and stored.ndim == 2 and stored.shape[0] == posterior.n_samples):
        lines = stored[index]
        n_lines = len(model.spectroscopy.lines.names)
        if lines.shape[1] != n_lines:
            raise DataError(f"posterior.eline_fluxes has {lines.shape[1]} lines per draw, the model's "
                            f"Spectroscopy marginalises {n_lines}")
    fn = predictive_function(model, draw, lines is not None, **fitter._spectral)
    keys = jax.random.split(jax.random.fold_in(key, 1), n_draws)
    out = _evaluate(fn, theta, data_args, keys, lines)
    parts = ([out["photometry"]] if n_phot else []) + [out["spectrum"]]
    predictions = np.concatenate(parts, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # masked data may have zero/NaN noise
        residuals = (observed - predictions) / noise
    result = {"predictions": predictions, "residuals": residuals, **chi2_summary(residuals, mask),
              "mask": mask, "n_data": int(mask.sum())}
    if n_phot:
        result["chi2_photometry"] = chi2_summary(residuals[:, :n_phot], mask[:n_phot])["chi2"]
        result["chi2_spectrum"] = chi2_summary(residuals[:, n_phot:], spec_used)["chi2"]
        result["n_data_photometry"] = int(mask[:n_phot].sum())
        result["n_data_spectrum"] = int(spec_used.sum())
    for name in ("calibration", "line_amplitudes"):
        if name in out:
            result[name] = out[name]
    return result
