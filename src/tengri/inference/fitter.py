"""Fitter: one galaxy's data + an SEDModel → a Posterior, by any method.

The Fitter builds one :class:`~tengri.inference.problem.Problem` (log-likelihood
in latent space, shared by every galaxy of the model configuration), dispatches
``run(method)`` to the method registry, and turns the runner's latent draws into a
:class:`~tengri.posterior.Posterior` in physical units.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import ParameterError
from tengri.inference import registry
from tengri.inference.problem import Problem, RawResult

__all__ = ["Fitter"]

_DATA_TYPES = ("photometry", "spectroscopy", "joint")


class Fitter:
    """Fit one galaxy's data with an SEDModel.

    Parameters
    ----------
    model : SEDModel
        Forward model with parameters and an observation.
    data : array_like, shape (n_data,)
        Observed band fluxes f_ν [erg/s/cm²/Hz].
    noise : array_like, shape (n_data,)
        1σ uncertainties, same units; must be finite and > 0 where used.
    data_type : str or None
        ``"photometry"`` (inferred from ``model.observation`` when None).
        Spectroscopic and joint likelihoods arrive with the spectroscopy layer;
        asking for them now raises ParameterError.
    data_mask : array_like of bool, optional
        True = use the datum; False excludes it (non-detections, bad bands).
    fixed : mapping, optional
        Per-galaxy values of fixed parameters, e.g. ``{"redshift": 1.3}``.
    calibration_marginalize, cal_n_poly, cal_prior_sigma, eline_marginalize, eline_prior_type
        Spectroscopic options (see the seed API); they apply only to
        spectroscopic data and are rejected for photometry.
    compile_modes : None
        Background compilation is not available yet; only None is accepted.

    Examples
    --------
    >>> fitter = Fitter(model, flux, flux_err)          # doctest: +SKIP
    >>> post = fitter.run("nuts")                       # doctest: +SKIP
    >>> print(post.summary_table())                     # doctest: +SKIP
    """

    def __init__(
        self,
        model,
        data,
        noise,
        data_type: str | None = None,
        data_mask=None,
        calibration_marginalize: bool = False,
        cal_n_poly: int = 3,
        cal_prior_sigma: float = 1.0,
        eline_marginalize: bool | None = None,
        eline_prior_type: str | None = None,
        compile_modes=None,
        fixed: Mapping[str, float] | None = None,
    ):
        inferred = getattr(model.observation, "kind", None)
        if data_type is None:
            data_type = inferred
        if data_type not in _DATA_TYPES:
            raise ParameterError(f"data_type {data_type!r} unknown; valid: {', '.join(_DATA_TYPES)}")
        if data_type != "photometry":
            raise ParameterError(
                f"data_type {data_type!r} needs a spectroscopic observation, which this model "
                f"does not have (observation: {model.observation!r})"
            )
        if calibration_marginalize or eline_marginalize:
            raise ParameterError(
                "calibration_marginalize / eline_marginalize apply to spectroscopic data only "
                f"(data_type is {data_type!r})"
            )
        if compile_modes is not None:
            raise ParameterError("compile_modes: background compilation is not available yet; use None")
        self.model = model
        self.data_type = data_type
        self.cal_n_poly = int(cal_n_poly)
        self.cal_prior_sigma = float(cal_prior_sigma)
        self.eline_prior_type = eline_prior_type
        self.problem: Problem = model.build_problem(data, noise, data_mask, fixed=fixed)
        args = self.problem.data_args
        self.data = np.asarray(data, dtype=np.float64)
        self.noise = np.asarray(noise, dtype=np.float64)
        self.mask = np.asarray(args["mask"])
        self.fixed = dict(fixed or {})

    # --- public API ---------------------------------------------------------------------
    @property
    def n_data(self) -> int:
        return self.problem.n_data

    def compile_signature(self) -> tuple:
        """Hashable: equal for Fitters that can share compiled engines."""
        return (self.model.compile_signature(), self.data_type, self.problem.n_data == len(self.data))

    def run(self, method: str = "map", init_from=None, key=None, lean=None, **kwargs):
        """Run an inference method and return a Posterior.

        Parameters
        ----------
        method : str
            One of ``registry.available_methods()`` (e.g. ``"map"``, ``"nuts"``).
        init_from : Posterior or dict, optional
            Warm start: its parameter values (posterior mean) → latent space;
            samplers and VI then start there instead of at a fresh MAP.
        key : jax PRNGKey, optional
            Default ``jax.random.PRNGKey(42)``.
        lean : bool, optional
            Accepted for API compatibility; compiled engines are always kept.
        **kwargs
            Method options (see ``tengri/inference/defaults.toml``).

        Raises
        ------
        ParameterError
            Unknown method.
        ValueError
            An option the method does not take.
        """
        name = registry.canonical_method(method)
        if init_from is not None and "start" not in kwargs and "start" in registry.method_options(name, {}):
            kwargs = {**kwargs, "start": "init"}  # a warm start begins where it is told
        options = registry.method_options(name, kwargs)
        runner = registry.get_runner(name)
        key = jax.random.PRNGKey(42) if key is None else key
        problem = self.problem
        if init_from is not None:
            problem = dataclasses.replace(problem, init=self._latent_from(init_from))
        start = time.perf_counter()
        raw: RawResult = runner(problem, key, **options)
        jax.block_until_ready(raw.point)
        wall = time.perf_counter() - start
        return self._posterior(raw, wall)

    def summary(self) -> str:
        """Data type, data size and S/N, free parameters with priors, methods."""
        snr = np.median(np.abs(self.data[self.mask]) / self.noise[self.mask])
        params = self.model.parameters
        lines = [
            f"Fitter data_type: {self.data_type}",
            "─" * 62,
            f"  Data points: {self.n_data} used of {len(self.data)}",
            f"  Median S/N: {snr:.1f}",
            f"  Parameters: {params.n_free} free",
        ]
        for name, prior in params.priors.items():
            if name in self.fixed:
                desc = f"Fixed({self.fixed[name]}) per galaxy"
            else:
                desc = prior.describe()
            lines.append(f"    {name:<22} {desc}")
        lines.append(f"  Methods: {', '.join(registry.available_methods())}")
        return "\n".join(lines)

    # --- internals ----------------------------------------------------------------------
    def _latent_from(self, init_from) -> jax.Array:
        values = getattr(init_from, "params", init_from)
        if not isinstance(values, Mapping):
            raise ParameterError("init_from must be a Posterior or a dict of parameter values")
        table = self.problem.data_args["table"]
        z = self.model.parameters.to_latent({k: float(np.mean(v)) for k, v in values.items()}, table)
        if not np.all(np.isfinite(np.asarray(z))):
            raise ParameterError("init_from values map outside the prior support")
        return z

    def _physical(self, z_batch: jax.Array) -> dict[str, np.ndarray]:
        fn = _batched_to_physical(self.problem.to_physical)
        out = fn(z_batch, self.problem.data_args)
        return {k: np.asarray(v) for k, v in out.items()}

    def _posterior(self, raw: RawResult, wall: float):
        from tengri.posterior import Posterior

        point = {k: float(v[0]) for k, v in self._physical(raw.point[None, :]).items()}
        samples = None
        n_chains = 1
        if raw.samples is not None:
            s = jnp.asarray(raw.samples)
            if s.ndim == 2:
                s = s[None]
            n_chains = int(s.shape[0])
            samples = self._physical(s.reshape(-1, s.shape[-1]))
            params = {k: float(np.mean(v)) for k, v in samples.items()}
        else:
            params = point
        diagnostics = dict(raw.diagnostics)
        diagnostics.setdefault("point_estimate", point)
        return Posterior(
            samples=samples,
            params=params,
            method=raw.method,
            wall_time_s=wall,
            diagnostics=diagnostics,
            loss_history=raw.loss_history,
            log_evidence=raw.log_evidence,
            log_evidence_err=raw.log_evidence_err,
            n_chains=n_chains,
            model=self.model,
            fitter=self,
        )


_BATCHED: dict[Any, Any] = {}


def _batched_to_physical(to_physical):
    """jit(vmap(to_physical)) memoised on the function (shared by galaxies)."""
    if to_physical not in _BATCHED:
        _BATCHED[to_physical] = jax.jit(jax.vmap(to_physical, in_axes=(0, None)))
    return _BATCHED[to_physical]
