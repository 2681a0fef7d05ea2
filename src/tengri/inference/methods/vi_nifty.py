"""Geometric VI (``vi``, alias ``geovi``) and MGVI (``mgvi``) through NIFTy's JAX backend.

NIFTy (``nifty.re``) implements Metric Gaussian VI (Knollmüller & Enßlin 2019)
and geometric VI (Frank, Leike & Enßlin 2021) for models with a standard-normal
latent prior — exactly tengri's latent space, so the latent vector goes to NIFTy
unchanged. The likelihood must be Gaussian: ``Problem.residuals`` gives whitened
residuals ``r(ξ)`` and ``log L = −|r|²/2``, which is NIFTy's
``Gaussian(data=0)`` (unit covariance) amended with the forward model ``r``.

The forward model is handed to NIFTy as a NIFTy model whose ``data_args`` field
is dynamic (a traced pytree leaf) and whose static fields (the residual function,
the domain, a shared initializer) are equal for every galaxy of a model, so
NIFTy's internal ``jax.jit`` calls find their compiled programs again. (A plain
closure or ``Partial`` is wrapped by NIFTy in a fresh lambda: every galaxy then
recompiled everything with its data baked in as constants.)

Each iteration is NIFTy's ``OptimizeVI.update`` (the loop inside
``jft.optimize_kl``, driven here so that it can stop early): draw or update the
samples per ``sample_mode`` ("linear_resample" = MGVI, "nonlinear_resample" =
geoVI, see :mod:`tengri.inference.methods.vi_native`), then minimise the sampled
KL energy by Newton–CG. The loop stops after ``n_kl_iter`` iterations or when the
KL energy changes by less than ``tol_kl``; ``loss_history`` is that energy per
iteration. NIFTy's logger (DEBUG on stderr by default) is raised to ERROR for
the run unless ``verbose`` (then INFO: NIFTy's per-iteration reports).
``n_seeds`` (default 5) runs that loop with different random numbers and keeps
the run with the lowest final KL energy, as ``vi_native`` does. The KL is
estimated from 8 draws, so one run's end point depends on its random numbers:
on the SED mock of ``bench/methods.py`` (``sf_young``, keys 0–5) one run of
``vi`` put the medians 0.19–1.30 σ_NUTS from the NUTS reference (key 5: 1.30
in A_V), five 0.29–0.70 (warm 10 s → 31 s on 2 CPU cores).

Returned draws: NIFTy's final ``2·n_samples`` samples (mirrored pairs), then —
because so few draws make noisy summaries — further draws of the *same*
approximation (the linear or geoVI sample map at NIFTy's final mean) from
tengri's jitted implementation (:func:`~tengri.inference.methods.vi_native.
build_vi_draws_engine`) until there are ``n_posterior_samples``. NIFTy's own
sampler runs a Python loop per draw, far too slow for a thousand draws. This
keeps the returned cloud a sample of the fitted variational distribution rather
than, e.g., a Gaussian with a covariance estimated from eight draws.

NIFTy 9.2 supports only mirrored samples: ``mirror_samples=False`` is a
``ParameterError`` here (``vi_native`` supports it).

MGVI on curved degeneracies
---------------------------
MGVI's samples are a Gaussian ``N(ξ̄, M(ξ̄)⁻¹)`` in the latent space: straight
lines along the tangent of the posterior's ridge. On the 5-parameter SED mock of
``bench/methods.py`` (age–τ–Z degeneracy) the tangent samples at the MAP
(latent sd 1.2 in age) leave the curved ridge; minimising the sampled KL moves
the mean to where the likelihood is flat along them, both age and τ at the upper
edges of their priors (age 5.75 Gyr, τ 9.9 Gyr; geoVI and NUTS: ~4.6–4.9 and
~1.9–2.1 Gyr). It is MGVI's fixed point, not a defect of this wrapper: tengri's
independent ``vi_native`` with ``sample_mode="linear_resample"`` lands on the
same point (latent mean (3.3, 3.0, 0.15, −0.23, −0.44) against NIFTy's
(2.8, 3.4, 0.15, −0.22, −0.44)), for 4 or 16 sample pairs and 8 to 30
iterations. The Gaussian family MGVI can express does prefer it: the KL
divergence of ``N(ξ̄, M(ξ̄)⁻¹)`` to the posterior (4000 draws, up to the
evidence) is 59 nats at that point and 4396 at the geoVI mean, whose tangent
samples fall off the ridge. Use geoVI (``vi``, ``vi_native``) for such models.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import operator
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from tengri.errors import ParameterError
from tengri.inference.methods.vi_native import (
    check_vi_options, lowest_final_kl, topped_up, vi_start_point,
)
from tengri.inference.problem import Problem, RawResult

__all__ = ["nifty_likelihood", "run_vi", "run_mgvi"]


@functools.cache
def _forward_model_class():
    """A NIFTy model ``ξ ↦ r(ξ, data_args)`` with ``data_args`` a *dynamic* field.

    Built lazily (importing NIFTy is slow). NIFTy models are pytrees whose static
    fields are compared when a jitted function is looked up: the residual
    function (one object per model configuration) and the domain are static,
    ``data_args`` is traced, so a new galaxy finds the compiled programs.
    """
    from nifty.re.model import LazyModel

    class ResidualModel(LazyModel):
        data_args: Any = dataclasses.field(metadata=dict(static=False))

        def __init__(self, residuals: Callable, data_args: Any, domain: Any):
            self.residuals = residuals
            self.data_args = data_args
            super().__init__(domain=domain)

        def __call__(self, xi: jax.Array) -> jax.Array:
            return self.residuals(xi, self.data_args)

    return ResidualModel


@functools.cache
def _shared_initializer(n_dim: int):
    """One NIFTy initializer object per dimension (never used to draw: the start
    point is given), so that it compares equal across galaxies."""
    import nifty.re as jft
    from nifty.re.model import Initializer

    return Initializer(functools.partial(jft.random_like,
                                         primals=jax.ShapeDtypeStruct((n_dim,), jnp.float64)))


def nifty_likelihood(residuals: Callable, data_args: Any, n_dim: int):
    """NIFTy likelihood ``½|r(ξ)|²`` with ``data_args`` as traced leaves.

    Parameters
    ----------
    residuals : callable
        ``(ξ (d,), data_args) -> (n,)`` whitened residuals.
    data_args : pytree
        Galaxy data.
    n_dim : int
        Latent dimension ``d``.

    Returns
    -------
    nifty.re.Likelihood
    """
    import nifty.re as jft
    from nifty.re.likelihood import LikelihoodWithModel

    xi = jax.ShapeDtypeStruct((n_dim,), jnp.float64)
    n_data = jax.eval_shape(residuals, xi, data_args).shape
    # Unit noise given explicitly (NIFTy warns when it has to assume it);
    # operator.mul is one shared object and the ones are traced leaves.
    unit = Partial(operator.mul, jnp.ones(n_data))
    gaussian = jft.Gaussian(jnp.zeros(n_data), noise_cov_inv=unit, noise_std_inv=unit)
    forward = _forward_model_class()(residuals, data_args, xi)
    return LikelihoodWithModel(gaussian, forward, domain=xi, init=_shared_initializer(n_dim))


@contextmanager
def _nifty_log_level(verbose: bool) -> Iterator[None]:
    from nifty.re.logger import logger

    old = logger.level
    logger.setLevel(logging.INFO if verbose else logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def _optimise(likelihood, z0: jax.Array, key: jax.Array, opts: dict, method: str
              ) -> tuple[Any, list[float], bool]:
    """One NIFTy VI optimisation from ``z0``: (final samples, KL energy per iteration,
    whether the energy change fell below ``tol_kl``)."""
    import nifty.re as jft

    n_kl_iter, tol_kl = int(opts["n_kl_iter"]), float(opts["tol_kl"])
    # jft.optimize_kl's own settings (OptimizeVI's constructor defaults differ).
    optimizer = jft.OptimizeVI(likelihood, n_total_iterations=n_kl_iter, jit=True,
                               linear_minimizer_jit=False, nonlinear_minimizer_jit=False,
                               mirror_samples=True)
    samples = jft.Samples(pos=z0, samples=None, keys=None)
    state = optimizer.init_state(
        key, n_samples=int(opts["n_samples"]), sample_mode=str(opts["sample_mode"]),
        draw_linear_kwargs=dict(cg_name=None, cg_kwargs=dict()),
        nonlinearly_update_kwargs=dict(minimize_kwargs=dict(name=None,
                                                            cg_kwargs=dict(name=None))),
        kl_kwargs=dict(minimize_kwargs=dict(name=None, absdelta=tol_kl / 100.0,
                                            cg_kwargs=dict(name=None))))
    history: list[float] = []
    with _nifty_log_level(bool(opts["verbose"])):
        for _ in range(n_kl_iter):
            samples, state = optimizer.update(samples, state)
            history.append(float(state.minimization_state.fun))
            if opts["verbose"]:
                print(optimizer.get_status_message(samples, state, name=method))
            if len(history) > 1 and abs(history[-1] - history[-2]) < tol_kl:
                return samples, history, True
    return samples, history, False


def _run(method: str, problem: Problem, key: jax.Array, options: dict) -> RawResult:
    opts = check_vi_options(method, options, problem)
    if not opts["mirror_samples"]:
        raise ParameterError(
            f"{method}: NIFTy (nifty.re) supports only mirror_samples=True; "
            f"use method 'vi_native' for unmirrored samples")
    n_dim = problem.n_dim
    n_samples = int(opts["n_samples"])
    mode = str(opts["sample_mode"])
    map_key, vi_key, draw_key = jax.random.split(key, 3)
    z0 = vi_start_point(opts["start"], problem, map_key)

    likelihood = nifty_likelihood(problem.residuals, problem.data_args, n_dim)
    runs = [_optimise(likelihood, z0, jax.random.fold_in(vi_key, seed), opts, method)
            for seed in range(int(opts["n_seeds"]))]
    seed_final = np.array([run[1][-1] for run in runs])
    samples, history, converged = runs[lowest_final_kl(seed_final)]

    mean = samples.pos
    n_post = int(opts["n_posterior_samples"])
    draws, k_hat = topped_up(problem, draw_key, mean, np.asarray(samples.samples), n_post,
                             mode.startswith("nonlinear"), True)
    diagnostics = {
        "n_iter": len(history),
        "converged": converged,
        "final_kl": history[-1],
        "seed_final_kl": seed_final,
        "n_vi_samples": 2 * n_samples,
        "sample_mode": mode,
        "n_topped_up_draws": max(n_post - 2 * n_samples, 0),
        "pareto_k": k_hat,
    }
    return RawResult(method=method, point=mean, samples=jax.device_put(draws[None]),
                     diagnostics=diagnostics, loss_history=np.asarray(history))


def run_vi(problem: Problem, key: jax.Array, **options) -> RawResult:
    """Geometric VI of ``problem`` with NIFTy (defaults: ``[vi]`` in ``defaults.toml``).

    Options: ``n_samples`` (doubled by mirroring), ``n_kl_iter``, ``tol_kl``,
    ``sample_mode`` (default "nonlinear_resample"), ``mirror_samples`` (must be
    true), ``verbose``, ``n_posterior_samples`` (see the module docstring),
    ``start`` ("map" or "init": the first expansion point), ``n_seeds``
    (independent optimisations; the lowest final KL energy wins and is topped up).

    Returns
    -------
    RawResult
        ``point`` the VI mean; ``samples`` (1, n_posterior_samples, d);
        ``loss_history`` the KL energy per iteration; diagnostics ``n_iter``,
        ``converged``, ``final_kl``, ``seed_final_kl``, ``n_vi_samples``,
        ``n_topped_up_draws``, ``sample_mode`` and ``pareto_k`` (Pareto k̂ of the top-up draws'
        importance weights; above 0.7 the approximation misses part of the
        posterior; nan with fewer than 20 top-up draws; see
        :func:`~tengri.inference.methods.vi_native.approximation_log_weights`).

    Raises
    ------
    ValueError
        If the problem has no residuals (non-Gaussian likelihood).
    """
    return _run("vi", problem, key, options)


def run_mgvi(problem: Problem, key: jax.Array, **options) -> RawResult:
    """MGVI of ``problem`` with NIFTy (defaults: ``[mgvi]``, "linear_resample").

    Same options and result as :func:`run_vi`.
    """
    return _run("mgvi", problem, key, options)
