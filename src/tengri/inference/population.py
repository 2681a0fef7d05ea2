"""Hierarchical population inference of the stochastic SFH's power spectrum.

Model
-----
N galaxies share the hyperparameters of their SFH field's PSD, σ
(``sfh_field_psd_sigma``, dex) and τ (``sfh_field_psd_tau_myr``, Myr), each with a
uniform population prior; each galaxy keeps its own white-noise field ξ_i
(``psd_xi_*``) and physical parameters θ_i::

    log p(φ, ξ_1, θ_1, …) = Σ_i log L_i(ξ_i, θ_i; σ(φ), τ(φ)) − |φ|²/2 − Σ_i |(ξ_i, θ_i)|²/2

in the latent space of ``docs/architecture.md``: one flat vector
``[φ_σ, φ_τ, ξ_1, θ_1, …, ξ_N, θ_N]`` with a standard-normal prior, σ = lo + (hi − lo) Φ(φ_σ)
(likewise τ). The ξ_i are the *non-centred* field (the field is x = F(ξ; σ, τ)), which
keeps the hierarchical geometry free of Neal's funnel.

How σ and τ reach each galaxy
-----------------------------
``model_factory(σ, τ)`` returns an SEDModel with both hyperparameters Fixed. Fixed
values are traced data (``data_args["fixed"]``, see ``SEDModel.prepare``), so the
population likelihood builds each galaxy's ordinary Problem once (at the prior
centre) and overwrites the two entries of its fixed vector with σ(φ), τ(φ) inside
the traced function: the likelihood of galaxy i is *exactly* the single-galaxy
Fitter's, and it is differentiable in σ and τ. Galaxies whose data arrays share
shapes are evaluated with one ``vmap``; leaves equal for all galaxies (the SSP
grids) are not copied.

The population log-density is itself a :class:`~tengri.inference.problem.Problem`
(log-likelihood Σ_i log L_i, residuals the concatenated whitened residuals), so
NUTS and native geoVI run on it unchanged; the Metropolis-within-Gibbs samplers of
:mod:`tengri.inference.population_gibbs` ("mcmc", "gibbs") use its per-galaxy pieces.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tengri.errors import ConfigError, DataError, ParameterError
from tengri.inference.methods._engine_cache import memoised_engine
from tengri.inference.problem import Problem, log_density
from tengri.inference.population_gibbs import DEFAULT_STEP_JITTER
from tengri.params.priors import latent_to_physical_1d, physical_to_latent_1d
from tengri.posterior.population import SHARED_NAMES, PopulationPosterior

__all__ = ["PopulationFitter", "PopulationPosterior", "SHARED_NAMES", "POPULATION_METHODS"]

POPULATION_METHODS = ("evi", "vi", "mcmc", "raytrace", "nuts", "gibbs")
_DATA_KEYS = ("flux_obs", "noise", "mask", "spec_obs", "spec_noise", "wave_spec")
_SPEC_KEYS = ("spec_obs", "spec_noise", "wave_spec")
_METHOD_LABELS = {"evi": "Hierarchical EVI (JIT)", "vi": "Hierarchical geoVI (vi_native)",
                  "nuts": "Hierarchical MCMC (NUTS)"}
# the Metropolis-within-Gibbs sampler (population_gibbs) behind "mcmc", its alias "raytrace",
# and "gibbs" (the same with HMC galaxy steps by default)
_GIBBS_METHODS = ("mcmc", "raytrace", "gibbs")
_GIBBS_LABELS = {False: "Hierarchical MCMC (Ray Tracing within Gibbs)", True: "Hierarchical MCMC (HMC within Gibbs)"}
_EVI_OPTIONS = {"objective": "laplace", "n_sigma": 24, "n_tau": 24, "family": "arrow", "n_samples": None,
                "n_importance": 16, "rank": 4, "learning_rate": 0.01, "init_scale": 0.1, "n_posterior_samples": 1000,
                "n_eval_importance": 64, "proposal_scale": 2.0, "warmup_fraction": 0.5, "gauss_newton_steps": 25}
_EVI_FAMILIES = ("arrow", "lowrank")
_EVI_OBJECTIVES = ("laplace", "iw", "elbo")
# _GIBBS_METHODS: sweeps = n_iterations (kept, default 2000) + n_warmup per chain; sample_hmc's
# default is False for "mcmc" / "raytrace" and True for "gibbs"
_GIBBS_OPTIONS = {"n_chains": 4, "n_warmup": 500, "n_leapfrog": 8, "n_shared_steps": 30, "n_drag_moves": 0,
                  "n_drag_stages": 8, "conditional": "grid", "gauss_newton_steps": 15, "sample_hmc": False,
                  "step_jitter": DEFAULT_STEP_JITTER}
# φ draws per Adam step: each costs K galaxy evaluations under "iw", one under "elbo"
_EVI_DEFAULT_N_SAMPLES = {"iw": 4, "elbo": 16, "laplace": 1}


# ------------------------------------------------------------------ validation
def _check_prior(value, name: str) -> tuple[float, float]:
    """(lo, hi) of a uniform prior with 0 < lo < hi."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be a (lo, hi) pair of numbers, got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo < hi):
        raise ParameterError(f"{name} must satisfy 0 < lo < hi (finite), got ({lo}, {hi})")
    return lo, hi


def _check_galaxies(galaxies) -> list[Mapping]:
    if isinstance(galaxies, Mapping) or not isinstance(galaxies, Sequence):
        raise DataError(f"galaxies must be a list of dicts, got {type(galaxies).__name__}")
    if len(galaxies) == 0:
        raise DataError("galaxies is empty: give at least one galaxy dict with 'flux_obs' and 'noise'")
    for i, galaxy in enumerate(galaxies):
        if not isinstance(galaxy, Mapping):
            raise DataError(f"galaxies[{i}] must be a dict, got {type(galaxy).__name__}")
        missing = [k for k in ("flux_obs", "noise") if k not in galaxy]
        if missing:
            raise DataError(f"galaxies[{i}] lacks {missing} (needs 'flux_obs' and 'noise')")
        shared = [k for k in SHARED_NAMES if k in galaxy]
        if shared:
            raise DataError(f"galaxies[{i}] gives {shared}: these are shared population parameters")
    return list(galaxies)


def _galaxy_fitter(model, galaxy: Mapping, index: int):
    """The single-galaxy Fitter of one galaxy dict (its data checks apply)."""
    from tengri.inference.fitter import Fitter

    fixed = {k: float(v) for k, v in galaxy.items() if k not in _DATA_KEYS}
    has_spec = any(k in galaxy for k in _SPEC_KEYS)
    try:
        if has_spec:
            if "spec_obs" not in galaxy or "spec_noise" not in galaxy:
                raise DataError("a spectrum needs both 'spec_obs' and 'spec_noise'")
            data = {"phot": galaxy["flux_obs"], "spec": galaxy["spec_obs"]}
            if "wave_spec" in galaxy:
                data["wave_spec"] = galaxy["wave_spec"]
            noise = {"phot": galaxy["noise"], "spec": galaxy["spec_noise"]}
            mask = galaxy.get("mask")
            return Fitter(model, data, noise, data_mask=mask, fixed=fixed)
        return Fitter(model, galaxy["flux_obs"], galaxy["noise"], data_mask=galaxy.get("mask"), fixed=fixed)
    except (DataError, ParameterError) as err:
        raise type(err)(f"galaxies[{index}]: {err}") from None


def _shared_axes(arg_list: list) -> Any:
    """vmap in_axes of the per-galaxy data_args: None for leaves that are one object for
    every galaxy (e.g. the SSP grids), 0 otherwise."""
    return jax.tree.map(lambda *leaves: None if all(l is leaves[0] for l in leaves) else 0, *arg_list)


def _stackable(arg_list: list) -> bool:
    """Whether every galaxy's data_args has the same structure and leaf shapes."""
    structures = {jax.tree.structure(a) for a in arg_list}
    if len(structures) != 1:
        return False
    shapes = [tuple(np.shape(l) for l in jax.tree.leaves(a)) for a in arg_list]
    return all(s == shapes[0] for s in shapes)


def _stack(arg_list: list, axes) -> Any:
    return jax.tree.map(lambda ax, *leaves: leaves[0] if ax is None else jnp.stack(leaves), axes, *arg_list,
                        is_leaf=lambda x: x is None)


# ------------------------------------------------------------------ the joint density
def shared_physical(phi: jax.Array, shared_hyper: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(σ [dex], τ [Myr]) of the shared latents φ (2,) under uniform priors; ``shared_hyper``
    (2, 2) holds the (lo, hi) rows of σ and τ."""
    return (latent_to_physical_1d("uniform", phi[0], shared_hyper[0]),
            latent_to_physical_1d("uniform", phi[1], shared_hyper[1]))


_FUNCTIONS: dict[tuple, dict] = {}


def population_functions(galaxy_ll: Callable, galaxy_res: Callable | None, galaxy_phys: Callable,
                         n_galaxies: int, n_dim_galaxy: int, fixed_index: tuple[int, int],
                         axes: Any | None) -> dict:
    """Joint log-likelihood, residuals and per-galaxy physical map of a population.

    Memoised on every argument (the axes by structure), so that equal populations
    reuse the same function objects and hence the compiled engines.

    Parameters
    ----------
    galaxy_ll, galaxy_res, galaxy_phys : callable
        A galaxy Problem's ``log_likelihood``, ``residuals`` and ``to_physical``.
    n_galaxies, n_dim_galaxy : int
        N and the latent dimension of one galaxy.
    fixed_index : (int, int)
        Positions of σ and τ in the galaxy's fixed vector.
    axes : pytree or None
        vmap in_axes of the stacked per-galaxy data_args; None: the data_args are a
        tuple of per-galaxy trees, summed in an unrolled loop.

    Returns
    -------
    dict
        ``log_likelihood(z (2 + N d,), args)``, ``residuals`` (or None),
        ``galaxy_values(z, args) -> (σ, τ, per-galaxy latent (N, d), per-galaxy args)``
        and ``to_physical``.
    """
    axes_key = None if axes is None else jax.tree.flatten(axes, is_leaf=lambda x: x is None)
    key = (galaxy_ll, galaxy_res, galaxy_phys, n_galaxies, n_dim_galaxy, fixed_index,
           None if axes_key is None else (axes_key[1], tuple(axes_key[0])))
    if key in _FUNCTIONS:
        return _FUNCTIONS[key]
    i_sigma, i_tau = fixed_index

    def with_hyper(args_i, sigma, tau):
        return {**args_i, "fixed": args_i["fixed"].at[i_sigma].set(sigma).at[i_tau].set(tau)}

    def per_galaxy(fn, z, args):
        """fn(z_i, args_i) for every galaxy, stacked on axis 0."""
        sigma, tau = shared_physical(z[:2], args["shared_hyper"])
        latents = z[2:].reshape(n_galaxies, n_dim_galaxy)
        if axes is not None:
            return jax.vmap(lambda zi, ai: fn(zi, with_hyper(ai, sigma, tau)), in_axes=(0, axes))(
                latents, args["galaxies"])
        return jnp.stack([fn(latents[i], with_hyper(args["galaxies"][i], sigma, tau)) for i in range(n_galaxies)])

    def galaxy_log_likelihoods(z, args):
        return per_galaxy(galaxy_ll, z, args)

    def log_likelihood(z, args):
        return jnp.sum(per_galaxy(galaxy_ll, z, args))

    residuals = None
    if galaxy_res is not None:
        def residuals(z, args):
            return per_galaxy(galaxy_res, z, args).reshape(-1)

    def to_physical(z, args):
        sigma, tau = shared_physical(z[:2], args["shared_hyper"])
        return {SHARED_NAMES[0]: sigma, SHARED_NAMES[1]: tau}

    def galaxy_physical(z, args):
        """Every galaxy's physical values: dict name → (N,)."""
        return per_galaxy(galaxy_phys, z, args) if axes is not None else jax.tree.map(
            lambda *v: jnp.stack(v), *[galaxy_phys(zi, ai) for zi, ai in _galaxy_parts(z, args)])

    def _galaxy_parts(z, args):
        sigma, tau = shared_physical(z[:2], args["shared_hyper"])
        latents = z[2:].reshape(n_galaxies, n_dim_galaxy)
        return [(latents[i], with_hyper(args["galaxies"][i], sigma, tau)) for i in range(n_galaxies)]

    out = {"log_likelihood": log_likelihood, "galaxy_log_likelihoods": galaxy_log_likelihoods,
           "residuals": residuals, "to_physical": to_physical, "galaxy_physical": galaxy_physical}
    _FUNCTIONS[key] = out
    return out


# ------------------------------------------------------------------ hierarchical EVI
def _lowrank_logdet(log_scale: jax.Array, factor: jax.Array) -> jax.Array:
    """log det(diag(s²) + U Uᵀ) by the matrix determinant lemma; s = exp(log_scale) (D,),
    U = factor (D, r)."""
    scaled = factor * jnp.exp(-log_scale)[:, None]
    small = jnp.eye(factor.shape[1]) + scaled.T @ scaled
    return 2.0 * jnp.sum(log_scale) + jnp.linalg.slogdet(small)[1]


def _gaussian_draws(key, mean, log_scale, factor, n: int) -> jax.Array:
    """n draws (n, D) of N(mean, diag(s²) + U Uᵀ)."""
    k1, k2 = jax.random.split(key)
    eps = jax.random.normal(k1, (n, mean.shape[0]))
    eta = jax.random.normal(k2, (n, factor.shape[1]))
    return mean + eps * jnp.exp(log_scale) + eta @ factor.T


N_SHARED = 2  # φ_σ, φ_τ


def _arrow_init(n_galaxies: int, n_dim_galaxy: int, init_scale: jax.Array) -> dict:
    """Initial block-arrow Cholesky factor (module ``_arrow_draws``): diagonal ``init_scale``,
    no correlations."""
    log_s = jnp.log(init_scale)
    return {"shared_log_diag": jnp.full((N_SHARED,), log_s), "shared_lower": jnp.zeros((N_SHARED, N_SHARED)),
            "coupling": jnp.zeros((n_galaxies, n_dim_galaxy, N_SHARED)),
            "galaxy_log_diag": jnp.full((n_galaxies, n_dim_galaxy), log_s),
            "galaxy_lower": jnp.zeros((n_galaxies, n_dim_galaxy, n_dim_galaxy))}


def _arrow_blocks(chol: dict) -> tuple[jax.Array, jax.Array]:
    """Lower-triangular diagonal blocks: shared (S, S) and per galaxy (N, d, d), with
    positive diagonals exp(log_diag)."""
    shared = jnp.tril(chol["shared_lower"], -1) + jnp.diag(jnp.exp(chol["shared_log_diag"]))
    eye = jnp.eye(chol["galaxy_lower"].shape[-1])
    galaxy = jnp.tril(chol["galaxy_lower"], -1) + eye * jnp.exp(chol["galaxy_log_diag"])[:, :, None]
    return shared, galaxy


def _arrow_draws(key, mean: jax.Array, chol: dict, n: int) -> jax.Array:
    """n draws (n, D) of N(mean, L Lᵀ) with L block lower-triangular in the *arrow* layout
    of the flat vector [φ (S), ξθ_1 (d), …, ξθ_N (d)]::

        L = [[L_φφ,  0,    0,  …],
             [C_1,  L_11,  0,  …],
             [C_2,   0,  L_22, …], …]

    so that every galaxy block has a full covariance and a full coupling to the shared
    block (cov(z_i, φ) = C_i L_φφᵀ), while galaxies are independent given φ. Parameters:
    S(S+1)/2 + N d (d + 1)/2 + N d S numbers, linear in N.
    """
    shared_block, galaxy_block = _arrow_blocks(chol)
    n_galaxies, d = chol["galaxy_log_diag"].shape
    k1, k2 = jax.random.split(key)
    eps_s = jax.random.normal(k1, (n, N_SHARED))
    eps_g = jax.random.normal(k2, (n, n_galaxies, d))
    z_s = eps_s @ shared_block.T
    z_g = jnp.einsum("ngj,gij->ngi", eps_g, galaxy_block) + jnp.einsum("ns,gis->ngi", eps_s, chol["coupling"])
    return mean + jnp.concatenate([z_s, z_g.reshape(n, -1)], axis=1)


def _arrow_logdet(chol: dict) -> jax.Array:
    """log det(L Lᵀ) of the block-arrow factor = 2 Σ log diag(L)."""
    return 2.0 * (jnp.sum(chol["shared_log_diag"]) + jnp.sum(chol["galaxy_log_diag"]))


@memoised_engine
def build_evi_engine(log_likelihood: Callable, n_dim: int, n_samples: int, rank: int, n_iterations: int,
                     n_posterior_samples: int, family: str = "lowrank", n_galaxies: int = 0) -> Callable:
    """Jitted ``engine(key, z0, data_args, learning_rate, init_scale) -> dict``.

    Maximises the ELBO ``E_q[log p(z)] + H[q]`` of a Gaussian q over the latent vector
    with ``n_samples`` reparameterised draws per Adam step (learning rate cosine-decayed
    to 1 % of ``learning_rate`` over the run), for ``n_iterations`` steps in one
    ``lax.scan``. ``family``:

    - ``"arrow"``: q = N(μ, L Lᵀ), L block-arrow (:func:`_arrow_draws`; needs
      ``n_galaxies``): full covariance within each galaxy and with the shared block.
    - ``"lowrank"``: q = N(μ, diag(s²) + U Uᵀ), U of rank ``rank`` (0 = mean-field).

    Returns ``mean``, ``neg_elbo`` history (n_iterations,) and ``draws``
    (n_posterior_samples, D) of the final q.
    """
    rank_ = max(int(rank), 1)  # a zero column keeps shapes static for rank 0
    use_factor = rank > 0
    arrow = family == "arrow"
    if arrow:
        d_galaxy = (n_dim - N_SHARED) // max(n_galaxies, 1)
        if n_galaxies < 1 or N_SHARED + n_galaxies * d_galaxy != n_dim:
            raise ConfigError(f"evi 'arrow' needs n_dim = {N_SHARED} + N d; got n_dim {n_dim}, N {n_galaxies}")

    def draws_of(params, k, n):
        mean, shape = params
        if arrow:
            return _arrow_draws(k, mean, shape, n)
        log_scale, factor = shape
        factor = factor if use_factor else jnp.zeros_like(factor)
        return _gaussian_draws(k, mean, log_scale, factor, n)

    def half_logdet(params):
        _, shape = params
        if arrow:
            return 0.5 * _arrow_logdet(shape)
        log_scale, factor = shape
        return 0.5 * _lowrank_logdet(log_scale, factor if use_factor else jnp.zeros_like(factor))

    @jax.jit
    def engine(key, z0, data_args, learning_rate, init_scale):
        def logp(z):
            return log_density(log_likelihood, z, data_args)

        def neg_elbo(params, k):
            z = draws_of(params, k, n_samples)
            return -(jnp.mean(jax.vmap(logp)(z)) + half_logdet(params))

        init_key, loop_key, draw_key = jax.random.split(key, 3)
        if arrow:
            shape0 = _arrow_init(n_galaxies, d_galaxy, init_scale)
        else:
            shape0 = (jnp.full((n_dim,), jnp.log(init_scale)), 1e-3 * jax.random.normal(init_key, (n_dim, rank_)))
        params = (z0, shape0)
        schedule = optax.cosine_decay_schedule(learning_rate, n_iterations, alpha=0.01)
        optimiser = optax.adam(schedule)
        state = optimiser.init(params)

        step = guarded_adam_step(neg_elbo, optimiser)
        (params, _), history = jax.lax.scan(step, (params, state), jax.random.split(loop_key, n_iterations))
        draws = draws_of(params, draw_key, n_posterior_samples)
        return {"mean": params[0], "neg_elbo": history, "draws": draws}

    return engine


def guarded_adam_step(loss: Callable, optimiser) -> Callable:
    """``step((params, state), key) -> ((params, state), loss value)``: one optimiser step on
    ``loss(params, key)`` for a ``lax.scan``. A step whose loss or gradient is not finite (a
    draw far in a tail) is skipped rather than poisoning the state."""
    def step(carry, k):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params, k)
        ok = jnp.isfinite(value) & jax.tree.reduce(lambda a, g: a & jnp.all(jnp.isfinite(g)), grads, True)
        updates, new_state = optimiser.update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        params, state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), (new_params, new_state), (params, state))
        return (params, state), value

    return step


def _history_diagnostics(history: np.ndarray, name: str) -> dict:
    """The final objective (mean of the last 10 % of steps) and its change over the 10 % before."""
    n_iter = history.size
    tail = history[-max(1, n_iter // 10):]
    head = history[-max(2, n_iter // 5):-max(1, n_iter // 10)] if n_iter >= 10 else history[:1]
    return {"n_iterations": int(n_iter), f"final_{name}": float(np.mean(tail)),
            f"{name}_change_last_10pct": float(np.mean(head) - np.mean(tail)), f"{name}_history": history}


_REGISTERED = {"vi": "vi_native", "nuts": "mcmc_nuts"}
INIT_POINTS = ("map", "evi")  # where 'nuts' chains start (PopulationFitter.run)


def _with_defaults(method: str, options: dict, defaults: dict) -> dict:
    """``defaults`` updated by ``options``; ValueError naming any option ``method`` does not take."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"method {method!r} does not take {unknown}; accepted options: {sorted(defaults)}")
    return {**defaults, **options}


def _evi_options(options: dict) -> dict:
    """EVI options with defaults, checked (ValueError for unknown ones)."""
    opts = _with_defaults("evi", options, _EVI_OPTIONS)
    if opts["objective"] not in _EVI_OBJECTIVES:
        raise ParameterError(f"objective must be one of {_EVI_OBJECTIVES}, got {opts['objective']!r}")
    if opts["family"] not in _EVI_FAMILIES:
        raise ParameterError(f"family must be one of {_EVI_FAMILIES}, got {opts['family']!r}")
    if opts["objective"] == "iw" and opts["family"] != "arrow":
        raise ParameterError(f"objective 'iw' needs family 'arrow' (per-galaxy blocks), got {opts['family']!r}")
    if opts["n_samples"] is None:
        opts["n_samples"] = _EVI_DEFAULT_N_SAMPLES[opts["objective"]]
    for name in ("n_samples", "n_posterior_samples", "n_importance", "n_eval_importance", "n_sigma", "n_tau",
                 "gauss_newton_steps"):
        if int(opts[name]) < 1:
            raise ParameterError(f"{name} must be ≥ 1, got {opts[name]!r}")
    if int(opts["rank"]) < 0:
        raise ParameterError(f"rank must be ≥ 0, got {opts['rank']!r}")
    if not 0.0 <= float(opts["warmup_fraction"]) < 1.0:
        raise ParameterError(f"warmup_fraction must be in [0, 1), got {opts['warmup_fraction']!r}")
    for name in ("learning_rate", "init_scale", "proposal_scale"):
        if not float(opts[name]) > 0:
            raise ParameterError(f"{name} must be > 0, got {opts[name]!r}")
    return opts


def _gibbs_options(method: str, options: dict) -> dict:
    """Options of the Metropolis-within-Gibbs ``method`` with defaults, checked (ValueError
    for unknown ones)."""
    opts = _with_defaults(method, options, {**_GIBBS_OPTIONS, "sample_hmc": method == "gibbs"})
    if not isinstance(opts["sample_hmc"], (bool, np.bool_)):
        raise ParameterError(f"sample_hmc must be True or False, got {opts['sample_hmc']!r}")
    from tengri.inference.population_gibbs import CONDITIONALS, checked_step_jitter

    opts["step_jitter"] = checked_step_jitter(opts["step_jitter"])

    if opts["conditional"] not in CONDITIONALS:
        raise ParameterError(f"conditional must be one of {CONDITIONALS}, got {opts['conditional']!r}")
    minimum = {"n_chains": 2, "n_warmup": 0, "n_leapfrog": 1, "gauss_newton_steps": 1, "n_shared_steps": 0,
               "n_drag_moves": 0, "n_drag_stages": 1}
    for name, lowest in minimum.items():
        value = opts[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
            why = " (split-R̂ needs several chains)" if name == "n_chains" else ""
            raise ParameterError(f"{name} must be an integer ≥ {lowest}{why}, got {value!r}")
    if opts["n_shared_steps"] + opts["n_drag_moves"] == 0:
        raise ParameterError("n_shared_steps and n_drag_moves are both 0: φ would never move")
    kinds = {"conditional": str, "sample_hmc": bool, "step_jitter": tuple}
    return {k: kinds.get(k, int)(v) for k, v in opts.items()}


def _registered_options(method: str, n_iterations: int | None, options: dict) -> dict:
    """Options of the registered runner behind ``method``, starting at the MAP initialisation."""
    from tengri.inference import registry

    options = {**options, "start": "init"}
    if n_iterations is not None:
        options["n_kl_iter" if method == "vi" else "n_samples"] = int(n_iterations)
    if method != "vi":
        options["n_chains"] = int(options.get("n_chains", 2))
        if options["n_chains"] < 2:
            raise ParameterError(f"n_chains must be ≥ 2 for population MCMC (split-R̂), got {options['n_chains']}")
    return registry.method_options(_REGISTERED[method], options)


# the convergence a population MCMC run is held to before it is reported without a warning
# (docs/population_results.md): split-R̂ and multi-chain ESS of σ and τ
CONVERGED_RHAT, CONVERGED_ESS = 1.05, 100.0


def _warn_if_unconverged(posterior: PopulationPosterior, method: str) -> None:
    """UserWarning naming σ / τ when their split-R̂ ≥ CONVERGED_RHAT or ESS < CONVERGED_ESS."""
    from tengri.posterior.population import _rhat_and_ess

    poor = []
    for name, draws in posterior.shared_samples.items():
        stats = _rhat_and_ess(draws, posterior.n_chains)
        if stats is not None and (not stats[0] < CONVERGED_RHAT or not stats[1] >= CONVERGED_ESS):
            poor.append(f"{name} (R̂ {stats[0]:.3f}, ESS {stats[1]:.0f})")
    if poor:
        warnings.warn(f"run({method!r}): the shared parameters have not converged: {', '.join(poor)}; need R̂ < "
                      f"{CONVERGED_RHAT} and ESS ≥ {CONVERGED_ESS:.0f}. Run longer (n_iterations, kept sweeps per "
                      "chain); more galaxies need more sweeps (docs/population_results.md)", UserWarning,
                      stacklevel=3)


# ------------------------------------------------------------------ the fitter
class PopulationFitter:
    """Hierarchical inference of the shared PSD of stochastic SFHs across galaxies.

    Learns σ_PSD (``sfh_field_psd_sigma``, dex) and τ_PSD
    (``sfh_field_psd_tau_myr``, Myr) shared by all galaxies, together with every
    galaxy's own latent field ``psd_xi_*`` and physical parameters, on one flat
    latent vector ``[φ_shared (2), ξ_1, θ_1, …, ξ_N, θ_N]`` (module docstring).

    Parameters
    ----------
    model_factory : callable
        ``model_factory(psd_sigma, psd_tau_myr) -> SEDModel`` with a stochastic SFH
        whose ``sfh_field_psd_sigma`` and ``sfh_field_psd_tau_myr`` are Fixed at the
        given values. It is called once, at the prior centre; the values then
        enter every galaxy's likelihood as traced data.
    galaxies : list of dict
        Per galaxy: ``flux_obs`` (n_band,) and ``noise`` [erg/s/cm²/Hz], optional
        ``mask`` (bool, True = use), optional ``spec_obs``, ``spec_noise``,
        ``wave_spec`` (for a model with a Spectroscopy: see :class:`tengri.Fitter`),
        and per-galaxy values of the model's other fixed parameters (e.g.
        ``redshift``).
    psd_sigma_prior, psd_tau_prior : (float, float)
        Bounds (lo, hi) of the uniform population priors on σ [dex] and τ [Myr].

    Notes
    -----
    There is no ``init_from`` (unlike :meth:`tengri.Fitter.run`): every method
    starts from per-galaxy MAP estimates at the prior-centre hyperparameters, so a
    warm start of single-galaxy posteriors has nothing to add, and a posterior of
    one galaxy carries no value for the shared block.

    There is no ``n_pad`` (unlike :class:`tengri.CatalogFitter`): the shared
    hyperparameters couple all N galaxies, and a padding galaxy would still bring
    its field's prior into the joint density (and, unless its likelihood were
    removed exactly, pull σ and τ). Compiled programs depend on N; reuse them
    across sessions with :func:`tengri.enable_persistent_cache`.

    Examples
    --------
    >>> def factory(sigma, tau):                                    # doctest: +SKIP
    ...     params = base.updated(sfh_field_psd_sigma=Fixed(sigma), sfh_field_psd_tau_myr=Fixed(tau))
    ...     return SEDModel(params, Photometry(filters), sfh={"family": "stochastic", "n_grid": 16})
    >>> pop = PopulationFitter(factory, galaxies, (0.05, 0.8), (20.0, 1000.0))  # doctest: +SKIP
    >>> post = pop.run("evi")                                       # doctest: +SKIP
    >>> post.summary()                                               # doctest: +SKIP
    """

    def __init__(self, model_factory: Callable, galaxies: Sequence[Mapping[str, Any]],
                 psd_sigma_prior: tuple[float, float] = (0.05, 1.0),
                 psd_tau_prior: tuple[float, float] = (10.0, 1000.0)):
        if not callable(model_factory):
            raise ParameterError(f"model_factory must be callable (psd_sigma, psd_tau_myr) -> SEDModel, "
                                 f"got {type(model_factory).__name__}")
        self.psd_sigma_prior = _check_prior(psd_sigma_prior, "psd_sigma_prior")
        self.psd_tau_prior = _check_prior(psd_tau_prior, "psd_tau_prior")
        self.galaxies = _check_galaxies(galaxies)
        centre = (0.5 * sum(self.psd_sigma_prior), 0.5 * sum(self.psd_tau_prior))
        model = model_factory(*centre)
        params = getattr(model, "parameters", None)
        if params is None:
            raise ConfigError(f"model_factory must return an SEDModel, got {type(model).__name__}")
        not_fixed = [n for n in SHARED_NAMES if n not in params.fixed_values]
        if not_fixed:
            raise ConfigError(
                f"model_factory's model must have a stochastic SFH with {list(SHARED_NAMES)} Fixed at the "
                f"given values; {not_fixed} are {'free' if all(n in params for n in not_fixed) else 'absent'}")
        self.model = model
        self.fitters = [_galaxy_fitter(model, g, i) for i, g in enumerate(self.galaxies)]
        self.galaxy_names: tuple[str, ...] = self.fitters[0].problem.names
        fixed_names = sorted(params.fixed_values)
        fixed_index = tuple(fixed_names.index(n) for n in SHARED_NAMES)
        arg_list = [f.problem.data_args for f in self.fitters]
        axes = _shared_axes(arg_list) if _stackable(arg_list) else None
        galaxies_args = _stack(arg_list, axes) if axes is not None else tuple(arg_list)
        gp = self.fitters[0].problem
        self._functions = population_functions(gp.log_likelihood, gp.residuals, gp.to_physical, self.n_galaxies,
                                               gp.n_dim, fixed_index, axes)
        self.vmapped = axes is not None
        self._fixed_index, self._axes = fixed_index, axes
        self._laplace_engines: dict[int, Callable] = {}
        data_args = {"galaxies": galaxies_args,
                     "shared_hyper": jnp.asarray([self.psd_sigma_prior, self.psd_tau_prior], jnp.float64)}
        self.problem = Problem(
            names=self.names, log_likelihood=self._functions["log_likelihood"], data_args=data_args,
            to_physical=self._functions["to_physical"], init=jnp.zeros(self.n_dim),
            residuals=self._functions["residuals"], n_data=sum(f.problem.n_data for f in self.fitters))
        self.map_point: np.ndarray | None = None
        self.evi_point: np.ndarray | None = None
        self.evi_draws: np.ndarray | None = None  # (n, n_dim) the Laplace grid's draws behind evi_point
        self.laplace_table: dict | None = None  # initialize_evi(keep_table=True)
        self.evi_diagnostics: dict = {}

    # --- layout -------------------------------------------------------------------------
    @property
    def n_galaxies(self) -> int:
        return len(self.galaxies)

    @property
    def n_dim(self) -> int:
        """Length of the flat latent vector: 2 + N × (galaxy dimension)."""
        return 2 + self.n_galaxies * len(self.galaxy_names)

    @property
    def names(self) -> tuple[str, ...]:
        """Flat-vector names: the two shared ones, then ``g<i>/<name>`` per galaxy."""
        per = tuple(f"g{i:04d}/{n}" for i in range(self.n_galaxies) for n in self.galaxy_names)
        return SHARED_NAMES + per

    def log_density(self, z: jax.Array) -> jax.Array:
        """Joint latent log-density (Σ_i log L_i − |z|²/2) at ``z`` (n_dim,)."""
        z = jnp.asarray(z, jnp.float64)
        if z.shape != (self.n_dim,):
            raise DataError(f"z must have shape ({self.n_dim},), got {z.shape}")
        return self.problem.log_density(z)

    # --- initialisation -----------------------------------------------------------------
    def initialize(self, key=None, n_starts: int = 4, n_steps: int = 500) -> np.ndarray:
        """Per-galaxy MAP at the prior-centre hyperparameters (φ = 0), as a flat latent vector.

        Each galaxy's MAP runs through the shared single-galaxy MAP engine (one
        compilation for all). Stored in ``self.map_point`` and reused by later runs.
        """
        from tengri.inference.methods.optimize import run_map_engine

        key = jax.random.PRNGKey(0) if key is None else key
        points = [np.asarray(run_map_engine(f.problem, jax.random.fold_in(key, i), int(n_starts), int(n_steps),
                                            1e-8)["point"])
                  for i, f in enumerate(self.fitters)]
        self.map_point = np.concatenate([np.zeros(2)] + points)
        return self.map_point

    def initialize_evi(self, key=None, map_starts: int = 4, map_steps: int = 500, keep_table: bool = False,
                       **evi_options) -> np.ndarray:
        """Start of the MCMC chains from the Laplace grid (``run("evi")``'s default), flat (n_dim,).

        φ is at the grid posterior's medians of σ [dex] and τ [Myr]; each galaxy's
        latent at its Laplace mode given those values (Gauss–Newton from its MAP at
        the prior centre). Why: at φ = 0 the per-galaxy MAPs sit where the shared
        block's posterior mass is not, and the chains spent their warm-up walking
        there (docs/population_results.md). Stored in ``self.evi_point``; the grid's draws
        (n, n_dim) in ``self.evi_draws``; with ``keep_table``, every node's Laplace modes
        and precisions in ``self.laplace_table`` (dict: ``sigma`` (n_σ,) [dex], ``tau_myr``
        (n_τ,), ``mode`` (n_σ, n_τ, N, d), ``precision`` (n_σ, n_τ, N, d, d)).
        """
        key = jax.random.PRNGKey(0) if key is None else key
        init_key, grid_key = jax.random.split(key)
        if self.map_point is None:
            self.initialize(init_key, map_starts, map_steps)
        opts = _evi_options({**evi_options, "objective": "laplace"})
        problem = dataclasses.replace(self.problem, init=jax.device_put(self.map_point))
        draws, _, diagnostics = self._run_evi_laplace(problem, grid_key, int(opts["gauss_newton_steps"]), opts,
                                                      keep_table)
        hyper = np.asarray(self.problem.data_args["shared_hyper"])
        phi = np.median(draws[0, :, :2], axis=0)
        sigma, tau = (float(latent_to_physical_1d("uniform", phi[j], hyper[j])) for j in range(2))
        engine = self._laplace_engines[int(opts["gauss_newton_steps"])]
        z0 = self.map_point[2:].reshape(self.n_galaxies, len(self.galaxy_names))
        _, modes, _ = engine(jnp.asarray(z0), problem.data_args["galaxies"], sigma, tau)
        self.evi_point = np.concatenate([phi, np.asarray(modes).ravel()])
        self.evi_draws = draws[0]
        self.evi_diagnostics = {"init_sigma": sigma, "init_tau_myr": tau,
                                "init_grid_mode_sigma": diagnostics["grid_mode_sigma"],
                                "init_grid_mode_tau_myr": diagnostics["grid_mode_tau_myr"]}
        return self.evi_point

    # --- running --------------------------------------------------------------------------
    def run(self, method: str = "evi", n_iterations: int | None = None, key=None,
            keep_individual: bool = True, map_starts: int = 4, map_steps: int = 500,
            **kwargs) -> PopulationPosterior:
        """Run hierarchical inference and return a PopulationPosterior.

        Parameters
        ----------
        method : {"evi", "vi", "mcmc", "raytrace", "nuts", "gibbs"}
            - ``"evi"``: the shared (σ, τ) posterior from the galaxies' evidences.
              Default ``objective="laplace"``
              (:mod:`tengri.inference.population_grid`): on an ``n_sigma`` × ``n_tau``
              grid (24 × 24; σ in equal cells, τ in equal cells of log τ, over the
              priors) every galaxy's latent is taken to its mode by
              ``gauss_newton_steps`` (25) Gauss–Newton steps and its evidence
              approximated by Laplace's method; (σ, τ) are drawn from the summed
              grid posterior (uniform within a cell) and each galaxy's latent from
              its Laplace Gaussian at the drawn cell's node. The (σ, τ) widths are
              posterior widths (up to the Laplace approximation and the grid
              cell), unlike those of a fitted q. Needs galaxies of equal data
              shapes and Gaussian noise. Measured (bench/population.py,
              docs/population_results.md): truths within 2σ at N = 20 and 40,
              N = 10 in 25 s on 2 loaded cores.

              ``objective="elbo"``: a Gaussian q(z) over the whole flat
              vector, ELBO maximised by Adam (cosine-decayed learning rate) with
              reparameterised draws, the whole loop one jitted ``lax.scan``.
              ``family="arrow"`` (default): q = N(μ, L Lᵀ) with L block-arrow —
              a full covariance within each galaxy's block and a full coupling of
              every galaxy's block to the shared (σ, τ) block, galaxies independent
              given the shared block (N d (d + 1)/2 + 2 N d + 3 numbers, linear in
              N); ``family="lowrank"``: N(μ, diag(s²) + U Uᵀ), rank ``rank`` (4;
              0 = mean-field). Options ``family``, ``n_samples`` (draws per step,
              16), ``rank``, ``learning_rate`` (0.01, peak), ``init_scale`` (0.1,
              initial scales), ``n_posterior_samples`` (1000). ``n_iterations``:
              Adam steps (default 1000).

              ``objective="iw"`` (arrow family only) maximises instead a per-galaxy
              importance-weighted bound with ``n_importance`` (K, 16) draws of each
              galaxy's conditional q per draw of φ (``n_samples`` φ draws per step,
              default 4; the first ``warmup_fraction`` (0.5) of the steps with K = 1),
              and returns draws importance-resampled from a proposal over φ (q(φ)
              with its scale × ``proposal_scale``, 2) whose per-galaxy evidences are
              estimated with ``n_eval_importance`` (64) draws
              (:mod:`tengri.inference.population_iw`). Its bias → 0 as K → ∞, but
              measured on the bench galaxies at K = 16–64 it follows the ELBO's σ
              dependence, not the Laplace evidence's (docs/population_results.md):
              a Gaussian proposal in the 33-D galaxy block needs far more draws
              where the posterior is non-Gaussian.

              What the ELBO gets right / wrong (measured, bench/population.py, z = 2,
              10 bands, S/N 20, true σ = 0.4 dex, τ = 300 Myr; see
              docs/population_results.md): the arrow family removes most of the
              mean-field collapse of σ (N = 10: σ = 0.25 ± 0.02 against 0.105 ±
              0.006 for the old rank-4 family) and its widths shrink with N, but it
              still sits below the truth (outside 2σ) and puts τ near the top of
              its prior (τ ≈ 1200 ± 100 Myr), while dense NUTS runs, not yet
              converged in σ, put τ at 180–880 Myr (tree depth 6) or ≈ 40 Myr
              (depth 8, τ mixed). τ is at most weakly
              identified by this photometry. The cause is the objective: the
              ELBO's gap (the galaxies' KL(q ‖ posterior)) grows with σ by 20–30
              nats over the prior range relative to the Laplace evidence, so its
              optimum moves to small σ / large τ; q's (σ, τ) widths are 5–10×
              narrower than posterior widths. Kept as an option for comparison.
            - ``"vi"``: geometric VI of the flat vector with
              :mod:`tengri.inference.methods.vi_native` (options of ``vi_native``);
              ``n_iterations``: ``n_kl_iter``.
            - ``"mcmc"`` (alias ``"raytrace"``): Metropolis-within-Gibbs
              (:mod:`tengri.inference.population_gibbs`) with Ray Tracing steps
              for the galaxies. Each sweep takes one Ray Tracing step
              (``n_leapfrog`` drift-kick-drift steps, :mod:`~tengri.inference.methods.raytrace`)
              of every galaxy's latent given (σ, τ) (all galaxies at once, whitened
              by each galaxy's Laplace approximation, per-galaxy step sizes adapted
              in warm-up); ``sample_hmc=True`` takes an HMC step instead. Then
              ``n_shared_steps`` random-walk Metropolis moves of φ that carry every
              galaxy along with its conditional Laplace Gaussian (exact: the
              Jacobian enters the acceptance), and ``n_drag_moves`` dragged moves
              (longer φ proposals walked in ``n_drag_stages`` stages with a galaxy
              step after each stage, Neal 2005). Chains start from distinct draws
              of the Laplace grid (:meth:`initialize_evi`, grid options in
              ``init_evi_options``, default 12 × 12), which also sets the φ
              proposals' initial covariance and, with ``conditional="grid"``
              (default), the Laplace modes and precisions interpolated to each
              proposed φ (no likelihood evaluation; ``"gauss_newton"``:
              ``gauss_newton_steps`` (15) fresh Gauss–Newton steps per proposal,
              slower). Options ``n_chains`` (4), ``n_warmup`` (500 adapting
              sweeps), ``n_leapfrog`` (8), ``n_shared_steps`` (30),
              ``n_drag_moves`` (0), ``n_drag_stages`` (8), ``sample_hmc``
              (False), ``step_jitter`` ((0.8, 1.2): each galaxy step is the
              adapted one times a factor drawn log-uniformly from this range;
              (0.3, 1.3) helped 16 chains at N = 40), ``conditional``,
              ``gauss_newton_steps``; ``n_iterations``:
              kept sweeps per chain (2000). Needs what the Laplace grid needs
              (equal data shapes, Gaussian noise). On the bench galaxies the
              defaults converge at N = 10; N = 20 needs up to 8000 sweeps and
              N = 40 16 chains × 16 000 with ``step_jitter=(0.3, 1.3)``; a run
              that has not converged warns (below).
              Measured: docs/population_results.md.
            - ``"gibbs"``: the same sampler with HMC galaxy steps by default
              (``sample_hmc=True``).
            - ``"nuts"``: NUTS over the flat vector (options of ``mcmc_nuts``, at
              least 2 chains); it did not converge on the bench galaxies
              (docs/population_results.md). "vi" and "nuts" start from the
              per-galaxy MAP (:meth:`initialize`); "nuts" from the Laplace grid
              with ``init="evi"``.
        init : {"map", "evi"}, keyword
            Where chains start. ``"mcmc"`` / ``"raytrace"`` / ``"gibbs"``: always
            ``"evi"`` (the default), distinct draws of the Laplace grid. ``"nuts"``:
            ``"map"`` (default): chains start at φ = 0 (the prior centre of σ, τ)
            and each galaxy's MAP there; ``"evi"``: at the Laplace grid's median σ,
            τ and each galaxy's Laplace mode given them (grid options in
            ``init_evi_options``, e.g. ``{"n_sigma": 12, "n_tau": 12}``); the
            chains' ``init_jitter`` disperses them as usual.
        n_iterations : int, optional
            See above.
        key : jax PRNGKey, optional
            Default ``PRNGKey(42)``.
        keep_individual : bool
            Keep every galaxy's draws (``individual_samples``); False saves memory.
        map_starts, map_steps : int
            Starts and L-BFGS steps of each galaxy's MAP initialisation.
        **kwargs
            Method options (above).

        Warns
        -----
        UserWarning
            After "mcmc" / "raytrace" / "gibbs" / "nuts", when σ or τ has split-R̂ ≥
            1.05 or ESS < 100 (``CONVERGED_RHAT``, ``CONVERGED_ESS``): the draws are
            returned, but they are not yet a posterior.
        """
        if method not in POPULATION_METHODS:
            raise ParameterError(f"method {method!r} unknown; valid: {', '.join(POPULATION_METHODS)}")
        if n_iterations is not None and (not isinstance(n_iterations, (int, np.integer)) or n_iterations < 1):
            raise ParameterError(f"n_iterations must be a positive integer, got {n_iterations!r}")
        gibbs = method in _GIBBS_METHODS
        init = kwargs.pop("init", "evi" if gibbs else "map")
        init_evi_options = dict(kwargs.pop("init_evi_options", {}))
        if init not in INIT_POINTS:
            raise ParameterError(f"init must be one of {INIT_POINTS}, got {init!r}")
        if gibbs and init != "evi":
            raise ParameterError(f"init: {method!r} always starts from Laplace-grid draws (init='evi'); "
                                 "init='map' applies to 'nuts'")
        if init == "evi" and not gibbs and method != "nuts":
            raise ParameterError(f"init='evi' starts the chains of 'nuts', not method {method!r}")
        key = jax.random.PRNGKey(42) if key is None else key
        init_key, run_key = jax.random.split(key)
        if gibbs:
            start = time.perf_counter()
            options = _gibbs_options(method, kwargs)
            draws, n_chains, diagnostics = self._run_gibbs(method, init_key, run_key, n_iterations, options,
                                                           map_starts, map_steps, init_evi_options)
            posterior = self._posterior(draws, n_chains, _GIBBS_LABELS[options["sample_hmc"]], diagnostics,
                                        keep_individual)
            _warn_if_unconverged(posterior, method)
            posterior.wall_time_s = time.perf_counter() - start
            return posterior
        options = _evi_options(kwargs) if method == "evi" else _registered_options(method, n_iterations, kwargs)
        start = time.perf_counter()
        init_diagnostics = {}
        if init == "evi":
            start_point = self.initialize_evi(init_key, map_starts, map_steps, **init_evi_options)
            init_diagnostics = dict(self.evi_diagnostics)
        else:
            if self.map_point is None:
                self.initialize(init_key, map_starts, map_steps)
            start_point = self.map_point
        problem = dataclasses.replace(self.problem, init=jax.device_put(start_point))
        if method == "evi":
            draws, n_chains, diagnostics = self._run_evi(problem, run_key, n_iterations, options)
        else:
            draws, n_chains, diagnostics = self._run_registered(method, problem, run_key, options)
            diagnostics = {**diagnostics, "init": init, **init_diagnostics}
        label = _METHOD_LABELS[method]
        if method == "evi":
            label = {"laplace": "Hierarchical EVI (Laplace grid)", "iw": "Hierarchical EVI (IW bound)",
                     "elbo": "Hierarchical EVI (JIT)"}[options["objective"]]
        posterior = self._posterior(draws, n_chains, label, diagnostics, keep_individual)
        posterior.wall_time_s = time.perf_counter() - start
        if method == "nuts":
            _warn_if_unconverged(posterior, method)
        return posterior

    def _run_gibbs(self, method: str, init_key, key, n_iterations, opts: dict, map_starts: int, map_steps: int,
                   grid_options: dict):
        """Chains of :mod:`tengri.inference.population_gibbs` from distinct Laplace-grid draws:
        (draws (C, n, n_dim), C, diagnostics)."""
        from tengri.inference.population_gibbs import build_gibbs_engine, population_model_functions

        gp = self.fitters[0].problem
        if not self.vmapped or gp.residuals is None:
            raise ConfigError(f"method {method!r} needs galaxies whose data have equal shapes and a model with "
                              "whitened residuals (Gaussian noise); use 'nuts' or 'vi'")
        n_chains, d = opts["n_chains"], len(self.galaxy_names)
        grid_key, pick_key = jax.random.split(init_key)
        table = opts["conditional"] == "grid"
        self.initialize_evi(grid_key, map_starts, map_steps, keep_table=table,
                            **{"n_sigma": 12, "n_tau": 12, **grid_options})
        grid = self.evi_draws
        if grid.shape[0] < n_chains:
            raise ParameterError(f"n_chains ({n_chains}) exceeds the Laplace grid's draws ({grid.shape[0]}): "
                                 "raise init_evi_options['n_posterior_samples']")
        rng = np.random.default_rng(np.asarray(jax.random.key_data(pick_key)).ravel()[-1].item())
        starts = grid[rng.choice(grid.shape[0], n_chains, replace=False)]
        # a 2-D random walk's optimal scale is 2.38 / √2 times the target's (Roberts & Rosenthal 2001)
        shared_chol0 = 2.38 / np.sqrt(2.0) * np.linalg.cholesky(np.cov(grid[:, :2].T) + 1e-9 * np.eye(2))
        log_likelihoods, conditional = population_model_functions(gp.log_likelihood, gp.residuals,
                                                                  self._fixed_index, self._axes,
                                                                  opts["conditional"], opts["gauss_newton_steps"])
        n_samples = 2000 if n_iterations is None else int(n_iterations)
        engine = build_gibbs_engine(log_likelihoods, conditional, opts["n_leapfrog"], opts["n_warmup"], n_samples,
                                    opts["n_shared_steps"], opts["n_drag_moves"], opts["n_drag_stages"],
                                    "hmc" if opts["sample_hmc"] else "raytrace", opts["step_jitter"])
        data = {"galaxies": self.problem.data_args["galaxies"], "shared_hyper": self.problem.data_args["shared_hyper"]}
        if table:
            t = self.laplace_table
            data["table"] = {"sigma": jnp.asarray(t["sigma"]), "log_tau": jnp.asarray(np.log(t["tau_myr"])),
                             "mode": jnp.asarray(t["mode"]), "chol": jnp.linalg.cholesky(jnp.asarray(t["precision"]))}
        else:
            data["reference"] = jnp.asarray(self.evi_point[2:].reshape(self.n_galaxies, d))
        out = engine(key, jnp.asarray(starts[:, :2]), jnp.asarray(starts[:, 2:].reshape(n_chains, self.n_galaxies, d)),
                     data, jnp.full(self.n_galaxies, np.log(0.5)), jnp.asarray(shared_chol0))
        shared, latents = np.asarray(out["shared"]), np.asarray(out["latents"])
        draws = np.concatenate([shared, latents.reshape(n_chains, n_samples, -1)], axis=2)
        hyper = np.asarray(self.problem.data_args["shared_hyper"])
        galaxy_acceptance = np.asarray(out["galaxy_acceptance"])
        diagnostics = {**opts, "step_jitter": np.asarray(opts["step_jitter"]), "n_samples": n_samples, "init": "evi",
                       "acceptance_rate": float(np.mean(out["shared_acceptance"])),
                       "shared_acceptance": np.asarray(out["shared_acceptance"]),
                       "galaxy_acceptance_mean": float(np.mean(galaxy_acceptance)),
                       "galaxy_acceptance_min": float(np.min(galaxy_acceptance)),
                       "galaxy_step_size_median": float(np.median(np.exp(np.asarray(out["log_step"])))),
                       "shared_proposal_chol": np.asarray(out["shared_chol"]),
                       "shared_proposal_chol_start": shared_chol0,
                       "start_sigma": np.asarray(latent_to_physical_1d("uniform", starts[:, 0], hyper[0])),
                       "start_tau_myr": np.asarray(latent_to_physical_1d("uniform", starts[:, 1], hyper[1])),
                       **self.evi_diagnostics}
        if opts["n_drag_moves"]:
            diagnostics.update(drag_acceptance=np.asarray(out["drag_acceptance"]),
                               drag_proposal_chol=np.asarray(out["drag_chol"]))
        return draws, n_chains, diagnostics

    def _run_evi(self, problem: Problem, key, n_iterations, opts: dict):
        if opts["objective"] == "laplace":
            if n_iterations is not None:
                raise ParameterError("n_iterations sets the Adam steps of objective 'elbo' / 'iw'; the 'laplace' "
                                     "grid (the default) takes gauss_newton_steps")
            return self._run_evi_laplace(problem, key, int(opts["gauss_newton_steps"]), opts)
        n_iter = 1000 if n_iterations is None else int(n_iterations)
        if opts["objective"] == "iw":
            return self._run_evi_iw(problem, key, n_iter, opts)
        engine = build_evi_engine(problem.log_likelihood, problem.n_dim, int(opts["n_samples"]), int(opts["rank"]),
                                  n_iter, int(opts["n_posterior_samples"]), str(opts["family"]), self.n_galaxies)
        out = engine(key, problem.init, problem.data_args, np.float64(opts["learning_rate"]),
                     np.float64(opts["init_scale"]))
        diagnostics = {**_history_diagnostics(np.asarray(out["neg_elbo"]), "neg_elbo"), "objective": "elbo",
                       "family": str(opts["family"]), "rank": int(opts["rank"]), "n_samples": int(opts["n_samples"])}
        return np.asarray(out["draws"])[None], 1, diagnostics

    def _run_evi_laplace(self, problem: Problem, key, n_steps: int, opts: dict, keep_table: bool = False):
        from tengri.inference.population_grid import build_laplace_engine, grid_draws, grid_nodes, laplace_grid

        gp = self.fitters[0].problem
        if not self.vmapped or gp.residuals is None:
            raise ConfigError("objective 'laplace' needs galaxies whose data have equal shapes and a model with "
                              "whitened residuals (Gaussian noise); use objective='elbo'")
        if n_steps not in self._laplace_engines:
            self._laplace_engines[n_steps] = build_laplace_engine(gp.log_likelihood, gp.residuals, self._fixed_index,
                                                                  self._axes, n_steps)
        engine = self._laplace_engines[n_steps]
        args = problem.data_args["galaxies"]
        d = len(self.galaxy_names)
        sigma_nodes, sigma_edges = grid_nodes(self.psd_sigma_prior, int(opts["n_sigma"]), log_spaced=False)
        tau_nodes, tau_edges = grid_nodes(self.psd_tau_prior, int(opts["n_tau"]), log_spaced=True)
        z0 = np.asarray(problem.init)[2:].reshape(self.n_galaxies, d)
        log_evidence, modes, *precisions = laplace_grid(engine, args, z0, sigma_nodes, tau_nodes, keep_table)
        if keep_table:
            self.laplace_table = {"sigma": sigma_nodes, "tau_myr": tau_nodes, "mode": modes,
                                  "precision": precisions[0]}
        # uniform priors: a cell's mass is its evidence times its width in σ and in τ
        log_post = (log_evidence.sum(0) + np.log(np.diff(sigma_edges))[:, None]
                    + np.log(np.diff(tau_edges))[None, :])
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1].item())
        n_draws = int(opts["n_posterior_samples"])
        sigma, tau, cells = grid_draws(rng, log_post, sigma_edges, tau_edges, n_draws)
        latents = np.zeros((n_draws, self.n_galaxies, d))
        shape = log_post.shape
        for cell in np.unique(cells):
            j, k = np.unravel_index(cell, shape)
            _, mode, precision = engine(jnp.asarray(modes[j, k]), args, sigma_nodes[j], tau_nodes[k])
            chol = np.linalg.cholesky(np.asarray(precision))  # (N, d, d), precision = L Lᵀ
            rows = np.flatnonzero(cells == cell)
            eps = rng.normal(size=(rows.size, self.n_galaxies, d))
            # z = mode + L⁻ᵀ ε has covariance (L Lᵀ)⁻¹
            latents[rows] = np.asarray(mode)[None] + np.linalg.solve(np.swapaxes(chol, 1, 2)[None], eps[..., None])[..., 0]
        hyper = np.asarray(problem.data_args["shared_hyper"])
        phi = np.stack([np.asarray(physical_to_latent_1d("uniform", x, hyper[j])) for j, x in enumerate((sigma, tau))],
                       axis=1)
        draws = np.concatenate([phi, latents.reshape(n_draws, -1)], axis=1)
        j, k = np.unravel_index(np.argmax(log_post), shape)
        diagnostics = {"objective": "laplace", "gauss_newton_steps": n_steps, "grid_sigma": sigma_nodes,
                       "grid_tau_myr": tau_nodes, "grid_log_evidence": log_evidence.sum(0),
                       "grid_mode_sigma": float(sigma_nodes[j]), "grid_mode_tau_myr": float(tau_nodes[k]),
                       "n_cells_drawn": int(np.unique(cells).size)}
        return draws[None], 1, diagnostics

    def _run_evi_iw(self, problem: Problem, key, n_iter: int, opts: dict):
        from tengri.inference.population_iw import build_iw_engine

        engine = build_iw_engine(self._functions["galaxy_log_likelihoods"], self.n_galaxies, len(self.galaxy_names),
                                 int(opts["n_samples"]), int(opts["n_importance"]), n_iter,
                                 int(opts["n_posterior_samples"]), int(opts["n_eval_importance"]),
                                 float(opts["proposal_scale"]), int(float(opts["warmup_fraction"]) * n_iter))
        out = engine(key, problem.init, problem.data_args, np.float64(opts["learning_rate"]),
                     np.float64(opts["init_scale"]))
        diagnostics = {**_history_diagnostics(np.asarray(out["neg_bound"]), "neg_bound"), "objective": "iw",
                       "family": "arrow", "n_samples": int(opts["n_samples"]),
                       "n_importance": int(opts["n_importance"]), "n_eval_importance": int(opts["n_eval_importance"]),
                       "proposal_scale": float(opts["proposal_scale"]), "shared_ess": float(out["shared_ess"]),
                       "shared_log_weights": np.asarray(out["shared_log_weights"]),
                       "proposal_shared": np.asarray(out["proposal_shared"])}
        return np.asarray(out["draws"])[None], 1, diagnostics

    def _run_registered(self, method: str, problem: Problem, key, options: dict):
        from tengri.inference import registry

        name = _REGISTERED[method]
        raw = registry.get_runner(name)(problem, key, **options)
        diagnostics = {k: v for k, v in raw.diagnostics.items()}
        if raw.loss_history is not None:
            diagnostics["loss_history"] = np.asarray(raw.loss_history)
        draws = np.asarray(raw.samples)
        return draws, draws.shape[0], diagnostics

    def _posterior(self, draws: np.ndarray, n_chains: int, label: str, diagnostics: dict,
                   keep_individual: bool) -> PopulationPosterior:
        flat = draws.reshape(-1, draws.shape[-1])  # chain-major
        hyper = np.asarray(self.problem.data_args["shared_hyper"])
        shared = {name: np.asarray(latent_to_physical_1d("uniform", flat[:, j], hyper[j]))
                  for j, name in enumerate(SHARED_NAMES)}
        individual = self._individual(flat) if keep_individual else None
        diagnostics = {k: v for k, v in diagnostics.items()
                       if isinstance(v, (bool, int, float, str, np.ndarray, np.generic))}
        return PopulationPosterior(shared, None, individual, method=label, wall_time_s=0.0,
                                   diagnostics=diagnostics, n_chains=int(n_chains))

    def _individual(self, flat: np.ndarray, chunk: int = 256) -> list[dict]:
        """Per-galaxy physical draws of the free parameters: list of name → (n,)."""
        fn = _physical_engine(self._functions["galaxy_physical"])
        wanted = self.galaxy_names
        parts = []
        for i in range(0, flat.shape[0], chunk):
            block = flat[i:i + chunk]
            pad = chunk - block.shape[0]
            block = np.concatenate([block, np.repeat(block[-1:], pad, axis=0)]) if pad else block
            values = fn(jax.device_put(block), self.problem.data_args)
            parts.append({n: np.asarray(values[n])[: chunk - pad] for n in wanted})
        merged = {n: np.concatenate([p[n] for p in parts]) for n in wanted}  # (n, N)
        return [{n: merged[n][:, g] for n in wanted} for g in range(self.n_galaxies)]


_PHYSICAL: dict = {}


def _physical_engine(galaxy_physical: Callable) -> Callable:
    """Jitted vmap of ``galaxy_physical`` over draws (one program per population functions)."""
    if galaxy_physical not in _PHYSICAL:
        _PHYSICAL[galaxy_physical] = jax.jit(jax.vmap(galaxy_physical, in_axes=(0, None)))
    return _PHYSICAL[galaxy_physical]
