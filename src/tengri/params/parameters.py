"""Named parameters: free ones with priors, fixed ones with values.

``Parameters`` is the only place that knows about priors. It turns a latent vector
``z`` (prior N(0, I), see ``docs/architecture.md``) into physical values and back.
Prior hyper-parameters travel as an array (the *prior table*), so per-galaxy
bounds such as ``high = "age_of_universe"`` do not force a recompile.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from tengri.errors import ParameterError
from tengri.params.priors import (
    Fixed,
    Prior,
    latent_to_physical_1d,
    log_prob_1d,
    physical_to_latent_1d,
)

__all__ = ["Parameters"]


class Parameters:
    """An ordered set of named parameters.

    Parameters
    ----------
    priors : mapping of str to Prior, optional
        Parameter name → prior (``Fixed(v)`` for a fixed value). Keyword arguments
        are added after the mapping.

    Examples
    --------
    >>> from tengri import Parameters, Uniform, Fixed
    >>> p = Parameters({"stellar_mass": Uniform(8, 12), "redshift": Fixed(1.0)})
    >>> p.free_names
    ('stellar_mass',)
    """

    def __init__(self, priors: Mapping[str, Prior] | None = None, **more: Prior):
        merged = dict(priors or {})
        merged.update(more)
        for name, prior in merged.items():
            if not isinstance(name, str) or not name:
                raise ParameterError(f"parameter names must be non-empty strings, got {name!r}")
            if not isinstance(prior, Prior):
                raise ParameterError(
                    f"parameter {name!r}: expected a prior (Uniform, LogUniform, Normal, "
                    f"TruncatedNormal, Fixed), got {type(prior).__name__}"
                )
        self._priors: dict[str, Prior] = merged
        self.free_names: tuple[str, ...] = tuple(n for n, p in merged.items() if not p.is_fixed)
        self.kinds: tuple[str, ...] = tuple(merged[n].kind for n in self.free_names)
        self.fixed_values: dict[str, float] = {
            n: p.value for n, p in merged.items() if isinstance(p, Fixed)
        }

    # --- container behaviour ---------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._priors)

    @property
    def priors(self) -> dict[str, Prior]:
        return dict(self._priors)

    @property
    def n_free(self) -> int:
        return len(self.free_names)

    def __contains__(self, name: str) -> bool:
        return name in self._priors

    def __getitem__(self, name: str) -> Prior:
        if name not in self._priors:
            raise ParameterError(f"unknown parameter {name!r}; parameters: {list(self._priors)}")
        return self._priors[name]

    def __len__(self) -> int:
        return len(self._priors)

    def __repr__(self) -> str:
        return f"Parameters({', '.join(f'{n}={p.describe()}' for n, p in self._priors.items())})"

    def updated(self, **priors: Prior) -> "Parameters":
        """A copy with some priors replaced or added."""
        merged = dict(self._priors)
        merged.update(priors)
        return Parameters(merged)

    def signature(self) -> tuple:
        """Hashable description of what changes compiled code: names and prior kinds.

        Hyper-parameters and fixed values are data, not part of the signature.
        """
        return (self.free_names, self.kinds, tuple(sorted(self.fixed_values)))

    # --- priors as data ----------------------------------------------------------
    def prior_table(self, context: Mapping[str, float] | None = None) -> np.ndarray:
        """Numeric prior hyper-parameters of the free parameters.

        Parameters
        ----------
        context : mapping, optional
            Values of dynamic bounds for this galaxy, e.g. ``{"age_of_universe": 5.9}``.

        Returns
        -------
        numpy.ndarray, shape (n_free, 4)
        """
        rows = [self._priors[n].hyper(context) for n in self.free_names]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), 4)

    def fixed_vector(self) -> np.ndarray:
        """Fixed values in ``sorted(fixed_values)`` order, shape (n_fixed,)."""
        return np.asarray([self.fixed_values[n] for n in sorted(self.fixed_values)], np.float64)

    # --- maps between latent and physical space (pure, jittable) ------------------
    def to_physical(self, z: jax.Array, table: jax.Array, fixed: jax.Array | None = None) -> dict:
        """Physical values of latent vector ``z``.

        Parameters
        ----------
        z : array, shape (n_free,)
        table : array, shape (n_free, 4)
            From :meth:`prior_table`.
        fixed : array, shape (n_fixed,), optional
            Fixed values (sorted-name order); defaults to the configured ones.

        Returns
        -------
        dict
            Every parameter name (free and fixed) → scalar array.
        """
        out = {
            name: latent_to_physical_1d(kind, z[i], table[i])
            for i, (name, kind) in enumerate(zip(self.free_names, self.kinds))
        }
        fixed = self.fixed_vector() if fixed is None else fixed
        for j, name in enumerate(sorted(self.fixed_values)):
            out[name] = jnp.asarray(fixed[j])
        return out

    def to_latent(self, values: Mapping[str, float], table: jax.Array) -> jax.Array:
        """Latent vector of physical ``values`` (only free names are read)."""
        missing = [n for n in self.free_names if n not in values]
        if missing:
            raise ParameterError(f"values missing for free parameters {missing}")
        return jnp.stack(
            [
                physical_to_latent_1d(kind, jnp.asarray(values[name], jnp.float64), table[i])
                for i, (name, kind) in enumerate(zip(self.free_names, self.kinds))
            ]
        )

    def log_prior(self, values: Mapping[str, float], table: jax.Array) -> jax.Array:
        """Sum of log prior densities of the free parameters at physical ``values``."""
        terms = [
            log_prob_1d(kind, jnp.asarray(values[name], jnp.float64), table[i])
            for i, (name, kind) in enumerate(zip(self.free_names, self.kinds))
        ]
        return jnp.sum(jnp.stack(terms)) if terms else jnp.asarray(0.0)

    def log_abs_det_jacobian(self, z: jax.Array, table: jax.Array) -> jax.Array:
        """log |dx/dz| of the latent → physical map at ``z``.

        Because ``x = F⁻¹(Φ(z))``, this equals ``log N(z; 0, I) − log p(x(z))``:
        ``log p(x) + log|dx/dz| = log N(z)``, which is why samplers in latent space
        only add ``−|z|²/2`` to the log-likelihood.
        """
        values = self.to_physical(z, table)
        log_normal = -0.5 * jnp.sum(z * z) - 0.5 * z.shape[0] * jnp.log(2 * jnp.pi)
        return log_normal - self.log_prior(values, table)

    def sample(self, key: jax.Array, n: int, context: Mapping[str, float] | None = None) -> dict:
        """``n`` draws from the prior, as a dict of arrays of shape (n,)."""
        table = jnp.asarray(self.prior_table(context))
        z = jax.random.normal(key, (n, self.n_free))
        return jax.vmap(lambda zi: self.to_physical(zi, table))(z)

    # --- reporting -----------------------------------------------------------------
    def summary_str(self) -> str:
        """A table of every parameter: free/fixed, prior and bounds."""
        width = max([len(n) for n in self._priors] + [9])
        lines = [f"{'parameter':<{width}}  status  prior", "─" * (width + 40)]
        for name, prior in self._priors.items():
            status = "fixed " if prior.is_fixed else "free  "
            lines.append(f"{name:<{width}}  {status}  {prior.describe()}")
        lines.append(f"{self.n_free} free, {len(self.fixed_values)} fixed")
        return "\n".join(lines)
