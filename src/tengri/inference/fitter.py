"""Fitter: one galaxy's data + an SEDModel → a Posterior, by any method.

The Fitter builds one :class:`~tengri.inference.problem.Problem` (log-likelihood
in latent space, shared by every galaxy of the model configuration), dispatches
``run(method)`` to the method registry, and turns the runner's latent draws into a
:class:`~tengri.posterior.Posterior` in physical units.

Compilation (see :mod:`tengri.inference.cache`): engines are compiled on first
use and shared by every Fitter with the same :meth:`Fitter.compile_signature`;
:meth:`Fitter.compile` compiles ahead of time, ``compile_modes`` does it in a
background thread, and ``run(..., lean=...)`` decides which engines to keep.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import warnings
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from tengri.analysis import diagnostics as diag
from tengri.errors import ApproximationWarning, ConvergenceWarning, ParameterError
from tengri.inference import cache, host_keys, registry
from tengri.inference.methods._engine_cache import recording_engine_use
from tengri.inference.problem import Problem, RawResult

__all__ = ["Fitter", "VI_SAMPLE_MODES", "DEFAULT_COMPILE_MODES", "AUTO_COMPILE_MODES",
           "MCMC_METHODS", "MEMORY_MODES", "FAST_CHUNK", "LOW_MEMORY_CHUNK",
           "NO_BACKGROUND_COMPILE_ENV", "run_warning"]

_DATA_TYPES = ("photometry", "spectroscopy", "joint")

# NIFTy / native geoVI sample modes (tengri.inference.methods.vi_native.SAMPLE_MODES,
# repeated here so that importing the Fitter does not import the methods).
VI_SAMPLE_MODES = ("linear_resample", "linear_sample", "nonlinear_resample",
                   "nonlinear_sample", "nonlinear_update")
# compile()'s default: MGVI and the cheapest geoVI variant of method "vi"
DEFAULT_COMPILE_MODES = ("linear_resample", "nonlinear_update")
# compile_modes="auto": the MAP (start of every sampler and VI) and the default modes
AUTO_COMPILE_MODES = ("map",) + DEFAULT_COMPILE_MODES
MCMC_METHODS = ("mcmc_nuts", "hmc", "dynamic_hmc", "ghmc", "ess", "mcmc_raytrace")
_VI_METHODS = ("vi", "mgvi", "vi_native")
MEMORY_MODES = ("fast", "low")
# Latent draws are mapped to physical values this many at a time (the last batch
# padded), so that one compiled program serves every sample and chain count.
FAST_CHUNK = 4096
LOW_MEMORY_CHUNK = 256
NO_BACKGROUND_COMPILE_ENV = "TENGRI_NO_BACKGROUND_COMPILE"
_LATENT_FIELD_PREFIX = "psd_xi"  # the stochastic SFH's white-noise latents


def _background_compile_disabled() -> bool:
    value = os.environ.get(NO_BACKGROUND_COMPILE_ENV, "").strip().lower()
    return value not in ("", "0", "false", "no")


def _as_names(value, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    try:
        names = tuple(value)
    except TypeError:
        raise ParameterError(f"{what} must be a string or a sequence of strings, "
                             f"got {value!r}") from None
    if not all(isinstance(n, str) for n in names):
        raise ParameterError(f"{what} must hold strings, got {value!r}")
    return names


def _compile_item(name: str) -> tuple[str, str | None]:
    """``(canonical method, VI sample mode or None)`` of a compile mode name."""
    if name in VI_SAMPLE_MODES:
        return "vi", name
    try:
        return registry.canonical_method(name), None
    except ParameterError:
        raise ParameterError(
            f"compile mode {name!r} unknown; valid: the VI sample modes "
            f"{', '.join(VI_SAMPLE_MODES)}, or a method: {', '.join(registry.available_methods())}"
        ) from None


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
    data : array_like or dict
        For a Spectroscopy model the spectrum (n_pix,) in its ``flux_unit``; for
        a joint model ``[band fluxes (n_band,), spectrum (n_pix,)]`` or a dict
        ``{"phot": …, "spec": …}`` (``flux_obs`` / ``spec_obs`` also accepted, and
        ``wave_spec``: this galaxy's pixel centres [Å]); noise and data_mask in the
        same layout (see :mod:`tengri.inference.spectro_likelihood`).
    data_type : str or None
        ``"photometry"``, ``"spectroscopy"`` or ``"joint"``; inferred from
        ``model.observation`` when None, and must agree with it when given.
    data_mask : array_like of bool, optional
        True = use the datum; False excludes it (non-detections, bad bands).
    fixed : mapping, optional
        Per-galaxy values of fixed parameters, e.g. ``{"redshift": 1.3}``.
    calibration_marginalize, cal_n_poly, cal_prior_sigma, eline_marginalize, eline_prior_type
        Spectroscopic options, rejected for photometry: the model spectrum times
        ``1 + Σ_{k=1..cal_n_poly} c_k T_k(x)`` with c_k ~ N(0, cal_prior_sigma²)
        integrated out analytically; the named lines' amplitudes integrated out
        (``eline_marginalize`` None = from the Spectroscopy's ``eline_mode``; it
        must agree) with an ``eline_prior_type`` "flat" or "cloudy" prior (None =
        the Spectroscopy's). Posterior.eline_fluxes then holds per-draw line
        fluxes [erg/s/cm²] drawn from their conditional Gaussian (the conditional
        mean for the MAP); with ``eline_mode="fitted"`` the fitted fluxes. See
        :mod:`tengri.inference.spectro_likelihood`.
    compile_modes : None, str, sequence of str, or "auto"
        Compile these in a background daemon thread, so that compilation
        overlaps whatever the caller does before ``run``: VI sample modes (of
        method ``"vi"``) and/or method names, as for ``compile(modes=...)``
        (e.g. ``("mcmc_nuts",)``); a string is one mode; ``"auto"`` is
        ``AUTO_COMPILE_MODES`` (the MAP and ``compile()``'s default VI modes).
        None (default): nothing in the background; the first ``run`` compiles.
        The environment variable ``TENGRI_NO_BACKGROUND_COMPILE=1`` disables the
        thread (the modes are still validated). ``run`` and ``compile`` first
        wait for the thread; if it failed, that call raises RuntimeError (once;
        later runs compile lazily).
    memory_mode : {"fast", "low"}
        How posterior draws are mapped to physical values: ``FAST_CHUNK``
        (4096) at a time, or ``LOW_MEMORY_CHUNK`` (256) at a time ("low", for
        large models). Results are identical; the compile signature does not
        depend on it.

    Examples
    --------
    >>> fitter = Fitter(model, flux, flux_err)          # doctest: +SKIP
    >>> post = fitter.run("nuts")                       # doctest: +SKIP
    >>> print(post.summary_table())                     # doctest: +SKIP

    Compile while reading the next galaxy::

    >>> fitter = Fitter(model, flux, flux_err, compile_modes=("mcmc_nuts",))  # doctest: +SKIP
    >>> ...                                             # other work meanwhile
    >>> post = fitter.run("nuts")                       # doctest: +SKIP
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
        memory_mode: str = "fast",
    ):
        inferred = getattr(model.observation, "kind", None)
        if data_type is None:
            data_type = inferred
        if data_type not in _DATA_TYPES:
            raise ParameterError(f"data_type {data_type!r} unknown; valid: {', '.join(_DATA_TYPES)}")
        if data_type != inferred:
            raise ParameterError(
                f"data_type {data_type!r} does not match the model's observation "
                f"({model.observation!r}, kind {inferred!r}); build the SEDModel with the observation to fit"
            )
        if data_type == "photometry" and (calibration_marginalize or eline_marginalize):
            raise ParameterError(
                "calibration_marginalize / eline_marginalize apply to spectroscopic data only "
                f"(data_type is {data_type!r})"
            )
        spectral = None
        if data_type != "photometry":
            from tengri.inference import spectro_likelihood

            spectral = dict(calibration_marginalize=calibration_marginalize, cal_n_poly=cal_n_poly,
                            cal_prior_sigma=cal_prior_sigma, eline_marginalize=eline_marginalize,
                            eline_prior_type=eline_prior_type)
            spectro_likelihood.spectral_options(model, **spectral)  # validate before building
        if memory_mode not in MEMORY_MODES:
            raise ParameterError(
                f"memory_mode {memory_mode!r} unknown; valid: {', '.join(MEMORY_MODES)}")
        modes = self._background_modes(compile_modes)
        self.model = model
        self.data_type = data_type
        self.memory_mode = memory_mode
        self.calibration_marginalize = bool(calibration_marginalize)
        self.cal_n_poly = int(cal_n_poly)
        self.cal_prior_sigma = float(cal_prior_sigma)
        self.eline_marginalize = eline_marginalize
        self.eline_prior_type = eline_prior_type
        if spectral is None:
            problem = model.build_problem(data, noise, data_mask, fixed=fixed)
            self.data = np.asarray(data, dtype=np.float64)
            self.noise = np.asarray(noise, dtype=np.float64)
        else:
            problem = model.build_problem(data, noise, data_mask, fixed=fixed, spectral=spectral)
            self.data, self.noise = (self._joined(model, v, name) for v, name in ((data, "data"), (noise, "noise")))
        self._spectral = spectral
        self.mask = np.asarray(problem.data_args["mask"])
        self.fixed = dict(fixed or {})
        self._signature = (
            "tengri.Fitter", model.compile_signature(), data_type, int(self.data.shape[0]),
            self.calibration_marginalize, self.cal_n_poly, self.cal_prior_sigma,
            eline_marginalize, eline_prior_type,
        )
        self.problem: Problem = cache.share_problem_functions(self._signature, problem)
        self.compile_modes = modes
        self._background: threading.Thread | None = None
        self._background_error: BaseException | None = None
        if modes is not None and not _background_compile_disabled():
            self._start_background_compile(modes)

    @staticmethod
    def _joined(model, value, what: str) -> np.ndarray:
        """Data or noise as one array [photometry, spectrum] (either accepted layout)."""
        from tengri.inference.spectro_likelihood import split_joint

        n_phot = model.photometry.n_data if model.photometry is not None else 0
        phot, spec = split_joint(model, value, what, n_phot, model.spectroscopy.n_data)
        parts = ([np.asarray(phot, np.float64)] if n_phot else []) + [np.asarray(spec, np.float64)]
        return np.concatenate(parts)

    def _eline_results(self, raw: RawResult, n_draws: int) -> dict:
        """Posterior kwargs with the named lines' fluxes (conditional draws, or the conditional
        mean for a point estimate); empty without spectroscopic lines."""
        if self._spectral is None:
            return {}
        from tengri.inference.spectro_likelihood import line_flux_function

        fn = line_flux_function(self.model, **self._spectral)
        if fn is None:
            return {}
        lines = self.model.spectroscopy.lines
        if raw.samples is None:
            z = np.asarray(raw.point)[None, :]
            fluxes = np.asarray(fn(jax.device_put(z), self.problem.data_args, jax.random.split(jax.random.PRNGKey(0), 1))[0])[0]
        else:
            s = np.asarray(raw.samples).reshape(-1, np.asarray(raw.samples).shape[-1])
            keys = jax.random.split(jax.random.PRNGKey(1), s.shape[0])
            fluxes = np.concatenate([np.asarray(fn(jax.device_put(s[i:i + 512]), self.problem.data_args,
                                                   keys[i:i + 512])[1]) for i in range(0, s.shape[0], 512)])
        return {"eline_fluxes": fluxes, "eline_names": list(lines.names),
                "eline_wavelengths_aa": np.asarray(lines.wavelength_aa)}

    # --- public API ---------------------------------------------------------------------
    @property
    def n_data(self) -> int:
        return self.problem.n_data

    def compile_signature(self) -> tuple:
        """Hashable: equal for Fitters that can share compiled engines.

        Made of the model's ``compile_signature()``, the data type, the number of
        data points (masked ones included: the mask is traced) and the
        spectroscopic likelihood settings. Data, noise, mask and per-galaxy fixed
        values are traced, and ``memory_mode`` only changes how draws are mapped
        to physical values, so none of them is part of it. Computed once.
        """
        return self._signature

    def run(self, method: str = "map", init_from=None, key=None, lean: bool | None = None,
            **kwargs):
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
            After the run, drop the compiled engines of earlier runs with another
            (compile signature, method), except those this run used too (e.g.
            the MAP engine that starts a sampler); see
            :mod:`tengri.inference.cache`. None: from the innermost
            ``tengri.lean()`` / ``tengri.persistent()`` block, True outside both.
        **kwargs
            Method options (see ``tengri/inference/defaults.toml``).

        Raises
        ------
        ParameterError
            Unknown method.
        ValueError
            An option the method does not take.
        RuntimeError
            The background compilation (``compile_modes``) failed.

        Warns
        -----
        tengri.errors.ApproximationWarning
            (a UserWarning) An approximation (``pathfinder``, ``vi``, ``mgvi``,
            ``vi_native``) whose draws' importance weights have a Pareto k̂ above
            0.7 (``posterior.diagnostics["pareto_k"]``): it misses part of the
            posterior.
        tengri.errors.ConvergenceWarning
            (a UserWarning) MCMC chains shorter than 5 autocorrelation times
            (``posterior.check_convergence()``): run longer or more chains.
        """
        self.wait_for_compile()
        name = registry.canonical_method(method)
        if init_from is not None and "start" not in kwargs and "start" in registry.method_options(name, {}):
            kwargs = {**kwargs, "start": "init"}  # a warm start begins where it is told
        options = registry.method_options(name, kwargs)
        key = host_keys.prng_key(42) if key is None else key
        problem = self.problem
        if init_from is not None:
            problem = dataclasses.replace(problem, init=self._latent_from(init_from))
        lean_run = cache.lean_default() if lean is None else bool(lean)
        start = time.perf_counter()
        with recording_engine_use() as used:
            raw = self._run_raw(name, problem, key, options)
        wall = time.perf_counter() - start
        posterior = self._posterior(raw, wall)
        cache.finish_run(used, (self._signature, name), lean_run)
        untrustworthy = run_warning(posterior, f"run({method!r})")
        if untrustworthy is not None:
            warnings.warn(untrustworthy[1], untrustworthy[0], stacklevel=2)
        return posterior

    def compile(
        self,
        n_iterations: int = 2,
        n_samples: int | None = None,
        n_posterior_samples: int | None = None,
        modes: str | Sequence[str] = DEFAULT_COMPILE_MODES,
        mcmc_methods: str | Sequence[str] = (),
        n_warmup: int | None = None,
        n_burnin: int | None = None,
        n_mcmc_samples: int | None = None,
        nss: bool = False,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> dict[str, float]:
        """Compile engines ahead of time by running them once on this galaxy.

        Each requested engine runs once, on this Fitter's data, with the static
        options a later ``run`` uses, so jax's in-memory cache — and the
        persistent disk cache when enabled (:func:`tengri.enable_persistent_cache`)
        — holds its programs: a later ``run`` of this or any Fitter with the same
        :meth:`compile_signature` compiles nothing. The MAP engine (the start of
        every sampler and VI run) is always compiled. Results are discarded.

        Static options (a different value compiles anew) are the sample counts:
        ``n_samples`` and ``n_posterior_samples`` (VI), ``n_warmup``, ``n_burnin``
        and ``n_mcmc_samples`` (MCMC), the NSS sizes (``n_live``,
        ``num_delete``, ``num_inner_steps``), and flags such as ``use_dense``,
        ``sample_mode``, ``mirror_samples`` or the Ray Tracing ``integrator``.
        Traced (changing them compiles nothing): data, noise, mask, keys, start
        points, iteration counts (VI ``n_kl_iter`` up to 64, MAP ``n_steps`` up
        to 2047 and ``n_starts``, NSS ``max_steps``), tolerances, step sizes,
        ``target_accept``, Ray Tracing's ``n_steps_per_sample`` and HMC's
        ``num_integration_steps``, and the numbers of chains and seeds (they run
        one after another through one engine). The compilation runs use cheap
        values of these (one chain, few iterations, ``start="init"``); a
        sampler still runs one whole chain of the static sizes, so its
        compilation costs that run too.

        Parameters
        ----------
        n_iterations : int
            VI iterations (and MAP steps) of the compilation run; traced.
        n_samples : int, optional
            VI samples per iteration (default: the method's, from defaults.toml).
        n_posterior_samples : int, optional
            VI posterior draws returned (default: the method's).
        modes : str or sequence of str
            VI sample modes of method ``"vi"`` (NIFTy geoVI; ``"linear_resample"``
            is also what ``"mgvi"`` runs) and/or method names (``"map"``,
            ``"vi_native"``, ``"mcmc_raytrace"``, ``"nss"``, ``"mcmc_nuts"``, ...).
            Default ``DEFAULT_COMPILE_MODES``.
        mcmc_methods : str or sequence of str
            MCMC methods (``"nuts"``, ``"hmc"``, ``"dynamic_hmc"``, ``"ghmc"``,
            ``"ess"``, ``"raytrace"``, or their canonical names).
        n_warmup, n_burnin, n_mcmc_samples : int, optional
            MCMC sizes (default: each method's); use the values of the later run.
        nss : bool
            Also compile nested slice sampling (at its default sizes, or those in
            ``options["nss"]``).
        options : mapping, optional
            Further static options per method, e.g. ``{"nuts": {"use_dense": True}}``.

        Returns
        -------
        dict
            Wall time [s] of each compilation run, e.g. ``{"map": 4.1,
            "vi[linear_resample]": 2.0, "mcmc_nuts": 21.7}``.

        Raises
        ------
        ParameterError
            Unknown mode or method, or a method in ``mcmc_methods`` that is not MCMC.
        ValueError
            An option in ``options`` that the method does not take.
        RuntimeError
            The background compilation (``compile_modes``) failed.
        """
        self.wait_for_compile()
        plan = self._compile_plan(n_iterations, n_samples, n_posterior_samples, modes,
                                  mcmc_methods, n_warmup, n_burnin, n_mcmc_samples, nss,
                                  options or {})
        return self._compile(plan)

    def summary(self) -> str:
        """Data type, data size and S/N, free parameters with priors, methods."""
        snr = np.median(np.abs(self.data[self.mask]) / self.noise[self.mask])
        params = self.model.parameters
        latent = [n for n in params.free_names if n.startswith(_LATENT_FIELD_PREFIX)]
        lines = [
            f"Fitter data_type: {self.data_type}",
            "─" * 62,
            f"  Data points: {self.n_data} used of {len(self.data)}",
            f"  Median S/N: {snr:.1f}",
            f"  Parameters: {params.n_free} free"
            + (f" ({params.n_free - len(latent)} physical + {len(latent)} latent ξ grid values)" if latent else ""),
        ]
        if latent:
            lines.append(f"    {latent[0] + '…' + latent[-1]:<22} {params[latent[0]].describe()} each "
                         f"(white noise of the stochastic SFH field)")
        for name, prior in params.priors.items():
            if name in latent:
                continue
            if name in self.fixed:
                desc = f"Fixed({self.fixed[name]}) per galaxy"
            else:
                desc = prior.describe()
            lines.append(f"    {name:<22} {desc}")
        lines.append(f"  Methods: {', '.join(registry.available_methods())}")
        return "\n".join(lines)

    # --- compilation --------------------------------------------------------------------
    @staticmethod
    def _background_modes(compile_modes) -> tuple[str, ...] | None:
        """Validated ``compile_modes`` (None, or a tuple of compile mode names)."""
        if compile_modes is None:
            return None
        modes = AUTO_COMPILE_MODES if compile_modes == "auto" else _as_names(compile_modes,
                                                                            "compile_modes")
        for name in modes:
            _compile_item(name)
        return modes

    def _compile_plan(self, n_iterations, n_samples, n_posterior_samples, modes, mcmc_methods,
                      n_warmup, n_burnin, n_mcmc_samples, nss,
                      options: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, dict]]:
        """``[(label, canonical method, run options)]``, the MAP first."""
        n_iterations = int(n_iterations)
        if n_iterations < 1:
            raise ParameterError(f"n_iterations must be ≥ 1, got {n_iterations}")
        items = [_compile_item(name) for name in _as_names(modes, "modes")]
        for name in _as_names(mcmc_methods, "mcmc_methods"):
            method = registry.canonical_method(name)
            if method not in MCMC_METHODS:
                raise ParameterError(f"mcmc_methods: {name!r} is not an MCMC method; valid: "
                                     f"{', '.join(MCMC_METHODS)} (and aliases nuts, raytrace)")
            items.append((method, None))
        if nss:
            items.append(("nss", None))
        overrides = {registry.canonical_method(m): dict(o) for m, o in options.items()}
        items = [("map", None)] + [item for item in dict.fromkeys(items) if item != ("map", None)]
        sizes = {"n_samples": n_samples, "n_posterior_samples": n_posterior_samples,
                 "n_warmup": n_warmup, "n_burnin": n_burnin, "n_mcmc_samples": n_mcmc_samples}
        plan = []
        for method, mode in items:
            run_options = _compile_run_options(method, mode, n_iterations, sizes)
            run_options.update(overrides.get(method, {}))
            registry.method_options(method, run_options)  # unknown option → ValueError now
            label = method if mode is None else f"{method}[{mode}]"
            plan.append((label, method, run_options))
        return plan

    def _compile(self, plan: list[tuple[str, str, dict]]) -> dict[str, float]:
        times = {}
        for label, method, run_options in plan:
            start = time.perf_counter()
            options = registry.method_options(method, run_options)
            raw = self._run_raw(method, self.problem, jax.random.PRNGKey(0), options)
            self._posterior(raw, 0.0)  # the programs mapping draws to physical values
            times[label] = time.perf_counter() - start
        return times

    def _start_background_compile(self, modes: tuple[str, ...]) -> None:
        plan = self._compile_plan(2, None, None, modes, (), None, None, None, False, {})

        def work() -> None:
            try:
                self._compile(plan)
            except BaseException as err:  # reported by the next run()/compile()
                self._background_error = err

        thread = threading.Thread(target=work, name="tengri-background-compile", daemon=True)
        cache.track_background_compile(thread)
        self._background = thread
        thread.start()

    def wait_for_compile(self) -> None:
        """Block until the background compilation (``compile_modes``) has finished.

        Returns at once when there is none. ``run`` and ``compile`` call it.

        Raises
        ------
        RuntimeError
            The background compilation failed (raised once; the original
            exception is its ``__cause__``).
        """
        thread = self._background
        if thread is None:
            return
        thread.join()
        self._background = None
        error, self._background_error = self._background_error, None
        if error is not None:
            raise RuntimeError(
                f"background compilation of {self.compile_modes} failed "
                f"({type(error).__name__}: {error}); later runs compile when called"
            ) from error

    # --- internals ----------------------------------------------------------------------
    @staticmethod
    def _run_raw(name: str, problem: Problem, key, options: dict) -> RawResult:
        raw: RawResult = registry.get_runner(name)(problem, key, **options)
        jax.block_until_ready(raw.point)
        return raw

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
        """Physical values of latent draws ``(n, d)``, in fixed-size padded batches.

        ``FAST_CHUNK`` rows a batch ("fast") or ``LOW_MEMORY_CHUNK`` ("low"): one
        compiled program per mode, whatever the number of draws.
        """
        fn = _batched_to_physical(self.problem.to_physical)
        z = np.asarray(z_batch, dtype=np.float64)
        n = z.shape[0]
        size = LOW_MEMORY_CHUNK if self.memory_mode == "low" else FAST_CHUNK
        pieces = []
        for first in range(0, n, size):
            block = z[first:first + size]
            n_real = block.shape[0]
            if n_real < size:  # pad with copies of a real draw (valid input, discarded)
                block = np.concatenate([block, np.repeat(block[-1:], size - n_real, axis=0)])
            out = fn(jax.device_put(block), self.problem.data_args)
            pieces.append({k: np.asarray(v)[:n_real] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}

    def _posterior(self, raw: RawResult, wall: float, physical: tuple | None = None):
        """The Posterior of ``raw``. ``physical``: ``(point, samples)`` already mapped to
        physical values (name → array of shape (1,), and of shape (n_draws,) or None),
        as CatalogFitter does for a whole batch in one call."""
        from tengri.posterior import Posterior

        if physical is None:
            point_values = self._physical(np.asarray(raw.point)[None, :])
        else:
            point_values, samples = physical
        point = {k: float(v[0]) for k, v in point_values.items()}
        n_chains = 1
        if raw.samples is None:
            samples, params = None, point
        else:
            s = np.asarray(raw.samples)
            if s.ndim == 2:
                s = s[None]
            n_chains = int(s.shape[0])
            if physical is None:
                samples = self._physical(s.reshape(-1, s.shape[-1]))
            params = {k: float(np.mean(v)) for k, v in samples.items()}
        diagnostics = dict(raw.diagnostics)
        diagnostics.setdefault("point_estimate", point)
        diagnostics.setdefault("data_type", self.data_type)  # saved with the posterior
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
            **self._eline_results(raw, 0),
        )


def _compile_run_options(method: str, mode: str | None, n_iterations: int,
                         sizes: Mapping[str, int | None]) -> dict[str, Any]:
    """Options of the compilation run of ``method``: the static ones as a later run
    would pass them, the traced ones as cheap as possible."""
    accepted = registry.method_options(method, {})
    options: dict[str, Any] = {}
    if "start" in accepted:
        options["start"] = "init"  # the MAP engine is compiled by its own run
    if mode is not None:
        options["sample_mode"] = mode
    if method in ("map", "laplace"):
        options["n_steps"] = n_iterations
    if method in _VI_METHODS:
        options["n_kl_iter"] = n_iterations
        for name in ("n_samples", "n_posterior_samples"):
            if sizes[name] is not None:
                options[name] = int(sizes[name])
    if method in MCMC_METHODS:
        for name, size in (("n_warmup", sizes["n_warmup"]), ("n_burnin", sizes["n_burnin"]),
                           ("n_samples", sizes["n_mcmc_samples"])):
            if size is not None and name in accepted:
                options[name] = int(size)
    if "n_chains" in accepted:
        options["n_chains"] = 1
    if "n_seeds" in accepted:
        options["n_seeds"] = 1
    if "n_steps_per_sample" in accepted:
        options["n_steps_per_sample"] = 1
    if "num_integration_steps" in accepted:
        options["num_integration_steps"] = 1
    if method == "nss":
        # one chunk of iterations, and no "did not converge" warning about it
        options.update(max_steps=1, dlogz=1e300)
    return options


def run_warning(posterior, what: str) -> tuple[type[Warning], str] | None:
    """The warning a posterior's own diagnostics call for, or None.

    An approximation with a Pareto k̂ above 0.7 gets an ApproximationWarning
    (:func:`tengri.analysis.diagnostics.pareto_k_warning`); MCMC chains that fail
    ``posterior.check_convergence()`` (fewer than 5 autocorrelation times per
    chain) a ConvergenceWarning. ``what`` starts the message (e.g. ``"run('nuts')"``).
    """
    unreliable = diag.pareto_k_warning(what, posterior.diagnostics.get("pareto_k"))
    if unreliable is not None:
        return ApproximationWarning, unreliable
    if posterior.method in MCMC_METHODS and posterior.samples is not None:
        convergence = posterior.check_convergence()
        if not convergence["all_converged"]:
            shown = "; ".join(convergence["warnings"][:3])
            more = len(convergence["warnings"]) - 3
            return ConvergenceWarning, (
                f"{what}: the chains are shorter than {diag.CONVERGENCE_TAU_FACTOR:g} autocorrelation times "
                f"({shown}{f'; and {more} more' if more > 0 else ''}): the draws do not yet "
                f"represent the posterior. Run longer (n_samples) or more chains (n_chains).")
    return None


_BATCHED: dict[Any, Any] = {}


def _batched_to_physical(to_physical):
    """jit(vmap(to_physical)) memoised on the function (shared by galaxies)."""
    if to_physical not in _BATCHED:
        _BATCHED[to_physical] = jax.jit(jax.vmap(to_physical, in_axes=(0, None)))
    return _BATCHED[to_physical]


cache.register_gc_hook(_BATCHED.clear)
