"""Prior distributions and their maps to the latent (standard-normal) space.

Every free parameter ``x`` is written as ``x = F⁻¹(Φ(z))`` with ``z ~ N(0, 1)``,
``F`` the prior CDF and ``Φ`` the standard-normal CDF. Samplers work on ``z``
(see ``docs/architecture.md``); this module holds the one-dimensional maps.

Bounds may be the string ``"age_of_universe"``: they are resolved per galaxy
(from its redshift) by :meth:`tengri.params.Parameters.prior_table`, so one
compiled program serves galaxies at every redshift.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import jax.numpy as jnp
from jax.scipy.special import gammaln, ndtr, ndtri

from tengri.errors import ParameterError

__all__ = [
    "Prior",
    "Uniform",
    "LogUniform",
    "Normal",
    "TruncatedNormal",
    "StudentT",
    "Fixed",
    "DYNAMIC_BOUNDS",
    "prior_from_dict",
]

# Bound names that are resolved per galaxy (value in the parameter's own units).
DYNAMIC_BOUNDS = ("age_of_universe",)

Bound = Union[float, str]

# Keep Φ(z) inside (0, 1) so inverse maps stay finite in float64.
_EPS = 1e-15


def _check_bound(name: str, value: Bound) -> Bound:
    if isinstance(value, str):
        if value not in DYNAMIC_BOUNDS:
            raise ParameterError(
                f"prior bound {name}={value!r} is not a number or one of {DYNAMIC_BOUNDS}"
            )
        return value
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"prior bound {name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ParameterError(f"prior bound {name} must be finite, got {value}")
    return value


def _check_order(low: Bound, high: Bound) -> None:
    if isinstance(low, float) and isinstance(high, float) and not low < high:
        raise ParameterError(f"prior needs low < high, got low={low}, high={high}")


class Prior:
    """Base class: a one-dimensional prior with a latent-space map.

    Subclasses define ``kind`` (a static code), ``hyper(context)`` (four floats,
    the numeric hyper-parameters once dynamic bounds are resolved) and the three
    static functions below, which act element-wise on arrays of hyper-parameters.
    """

    kind: str = ""

    def hyper(self, context: dict | None = None) -> tuple[float, float, float, float]:
        raise NotImplementedError

    @property
    def is_fixed(self) -> bool:
        return False

    def describe(self) -> str:
        raise NotImplementedError


def _resolve(value: Bound, context: dict | None) -> float:
    if isinstance(value, float):
        return value
    if context is None or value not in context:
        raise ParameterError(
            f"prior bound {value!r} depends on the galaxy; pass a context with {value!r}"
        )
    return float(context[value])


@dataclass(frozen=True)
class Uniform(Prior):
    """Uniform prior on [low, high]."""

    low: Bound
    high: Bound
    kind = "uniform"

    def __post_init__(self):
        object.__setattr__(self, "low", _check_bound("low", self.low))
        object.__setattr__(self, "high", _check_bound("high", self.high))
        _check_order(self.low, self.high)

    def hyper(self, context=None):
        low, high = _resolve(self.low, context), _resolve(self.high, context)
        if not low < high:
            raise ParameterError(f"uniform prior needs low < high, got {low} and {high}")
        return (low, high, 0.0, 0.0)

    def describe(self):
        return f"Uniform({self.low}, {self.high})"


@dataclass(frozen=True)
class LogUniform(Prior):
    """Prior uniform in log x on [low, high], both > 0."""

    low: Bound
    high: Bound
    kind = "loguniform"

    def __post_init__(self):
        object.__setattr__(self, "low", _check_bound("low", self.low))
        object.__setattr__(self, "high", _check_bound("high", self.high))
        _check_order(self.low, self.high)
        if isinstance(self.low, float) and self.low <= 0:
            raise ParameterError(f"log-uniform prior needs low > 0, got low={self.low}")

    def hyper(self, context=None):
        low, high = _resolve(self.low, context), _resolve(self.high, context)
        if not 0 < low < high:
            raise ParameterError(f"log-uniform prior needs 0 < low < high, got {low} and {high}")
        return (math.log(low), math.log(high), 0.0, 0.0)

    def describe(self):
        return f"LogUniform({self.low}, {self.high})"


@dataclass(frozen=True)
class Normal(Prior):
    """Gaussian prior N(mu, sigma²)."""

    mu: float
    sigma: float
    kind = "normal"

    def __post_init__(self):
        object.__setattr__(self, "mu", float(_check_bound("mu", self.mu)))
        object.__setattr__(self, "sigma", float(_check_bound("sigma", self.sigma)))
        if self.sigma <= 0:
            raise ParameterError(f"normal prior needs sigma > 0, got sigma={self.sigma}")

    def hyper(self, context=None):
        return (self.mu, self.sigma, 0.0, 0.0)

    def describe(self):
        return f"Normal({self.mu}, {self.sigma})"


@dataclass(frozen=True)
class TruncatedNormal(Prior):
    """Gaussian N(mu, sigma²) truncated to [low, high]."""

    mu: float
    sigma: float
    low: Bound
    high: Bound
    kind = "truncnormal"

    def __post_init__(self):
        object.__setattr__(self, "mu", float(_check_bound("mu", self.mu)))
        object.__setattr__(self, "sigma", float(_check_bound("sigma", self.sigma)))
        object.__setattr__(self, "low", _check_bound("low", self.low))
        object.__setattr__(self, "high", _check_bound("high", self.high))
        if self.sigma <= 0:
            raise ParameterError(f"truncated normal prior needs sigma > 0, got {self.sigma}")
        _check_order(self.low, self.high)

    def hyper(self, context=None):
        low, high = _resolve(self.low, context), _resolve(self.high, context)
        if not low < high:
            raise ParameterError(f"truncated normal needs low < high, got {low} and {high}")
        return (self.mu, self.sigma, low, high)

    def describe(self):
        return f"TruncatedNormal({self.mu}, {self.sigma}, [{self.low}, {self.high}])"


@dataclass(frozen=True)
class StudentT(Prior):
    """Student-t prior with ``nu`` degrees of freedom, centre ``mu`` and scale ``scale``.

    The latent map needs the t quantile function, which has a closed form for
    ``nu = 2`` only (jax has no inverse incomplete beta function), so only ``nu = 2``
    is accepted: ``t = F⁻¹(Φ(z)) = erf(z/√2) / √(2 Φ(z) Φ(−z))``, exact in both tails.
    This is the prior of the continuity SFH's log SFR ratios (Leja et al. 2019:
    ``StudentT(0, 0.3, 2)``).
    """

    mu: float
    scale: float
    nu: float = 2.0
    kind = "studentt"

    def __post_init__(self):
        object.__setattr__(self, "mu", float(_check_bound("mu", self.mu)))
        object.__setattr__(self, "scale", float(_check_bound("scale", self.scale)))
        object.__setattr__(self, "nu", float(_check_bound("nu", self.nu)))
        if self.scale <= 0:
            raise ParameterError(f"Student-t prior needs scale > 0, got scale={self.scale}")
        if self.nu != 2.0:
            raise ParameterError(
                f"Student-t prior supports nu=2 only (its quantile has a closed form), got nu={self.nu}"
            )

    def hyper(self, context=None):
        return (self.mu, self.scale, self.nu, 0.0)

    def describe(self):
        return f"StudentT({self.mu}, {self.scale}, nu={self.nu:g})"


def _student_t2_quantile(z):
    """Quantile of the standard Student t with ν = 2 at Φ(z): erf(z/√2)/√(2Φ(z)Φ(−z))."""
    return (ndtr(z) - ndtr(-z)) / jnp.sqrt(2.0 * ndtr(z) * ndtr(-z))


def _student_t2_latent(t):
    """z with Φ(z) = F₂(t), F₂ the ν = 2 t CDF; the lower tail F₂(−|t|) = 1/(s(s + |t|)), s = √(2 + t²)."""
    s = jnp.sqrt(2.0 + t * t)
    lower = 1.0 / (s * (s + jnp.abs(t)))
    return -jnp.sign(t) * ndtri(jnp.clip(lower, _EPS, 0.5))


@dataclass(frozen=True)
class Fixed(Prior):
    """A parameter held at one value (not sampled)."""

    value: float
    kind = "fixed"

    def __post_init__(self):
        object.__setattr__(self, "value", float(_check_bound("value", self.value)))

    @property
    def is_fixed(self) -> bool:
        return True

    def hyper(self, context=None):
        return (self.value, 0.0, 0.0, 0.0)

    def describe(self):
        return f"Fixed({self.value})"


# --- element-wise latent maps; h is (..., 4) hyper-parameters --------------------


def latent_to_physical_1d(kind: str, z, h):
    """Physical value of latent ``z`` under a prior of ``kind`` with hyper ``h``."""
    if kind == "uniform":
        return h[0] + (h[1] - h[0]) * ndtr(z)
    if kind == "loguniform":
        return jnp.exp(h[0] + (h[1] - h[0]) * ndtr(z))
    if kind == "normal":
        return h[0] + h[1] * z
    if kind == "truncnormal":
        a = ndtr((h[2] - h[0]) / h[1])
        b = ndtr((h[3] - h[0]) / h[1])
        u = jnp.clip(a + (b - a) * ndtr(z), _EPS, 1 - _EPS)
        return jnp.clip(h[0] + h[1] * ndtri(u), h[2], h[3])
    if kind == "studentt":
        return h[0] + h[1] * _student_t2_quantile(z)
    raise ParameterError(f"unknown prior kind {kind!r}")


def physical_to_latent_1d(kind: str, x, h):
    """Latent value of physical ``x`` (inverse of :func:`latent_to_physical_1d`)."""
    if kind == "uniform":
        u = (x - h[0]) / (h[1] - h[0])
    elif kind == "loguniform":
        u = (jnp.log(x) - h[0]) / (h[1] - h[0])
    elif kind == "normal":
        return (x - h[0]) / h[1]
    elif kind == "truncnormal":
        a = ndtr((h[2] - h[0]) / h[1])
        b = ndtr((h[3] - h[0]) / h[1])
        u = (ndtr((x - h[0]) / h[1]) - a) / (b - a)
    elif kind == "studentt":
        return _student_t2_latent((x - h[0]) / h[1])
    else:
        raise ParameterError(f"unknown prior kind {kind!r}")
    return ndtri(jnp.clip(u, _EPS, 1 - _EPS))


def log_prob_1d(kind: str, x, h):
    """Log prior density of physical ``x`` (−inf outside the support)."""
    if kind == "uniform":
        inside = (x >= h[0]) & (x <= h[1])
        return jnp.where(inside, -jnp.log(h[1] - h[0]), -jnp.inf)
    if kind == "loguniform":
        lx = jnp.log(jnp.where(x > 0, x, 1.0))
        inside = (x > 0) & (lx >= h[0]) & (lx <= h[1])
        return jnp.where(inside, -lx - jnp.log(h[1] - h[0]), -jnp.inf)
    if kind == "normal":
        r = (x - h[0]) / h[1]
        return -0.5 * r * r - jnp.log(h[1]) - 0.5 * jnp.log(2 * jnp.pi)
    if kind == "truncnormal":
        r = (x - h[0]) / h[1]
        mass = ndtr((h[3] - h[0]) / h[1]) - ndtr((h[2] - h[0]) / h[1])
        inside = (x >= h[2]) & (x <= h[3])
        val = -0.5 * r * r - jnp.log(h[1]) - 0.5 * jnp.log(2 * jnp.pi) - jnp.log(mass)
        return jnp.where(inside, val, -jnp.inf)
    if kind == "studentt":
        r, nu = (x - h[0]) / h[1], h[2]
        return (gammaln(0.5 * (nu + 1.0)) - gammaln(0.5 * nu) - 0.5 * jnp.log(nu * jnp.pi) - jnp.log(h[1])
                - 0.5 * (nu + 1.0) * jnp.log1p(r * r / nu))
    raise ParameterError(f"unknown prior kind {kind!r}")


_PRIOR_NAMES = {
    "uniform": Uniform,
    "loguniform": LogUniform,
    "log_uniform": LogUniform,
    "normal": Normal,
    "gaussian": Normal,
    "truncnormal": TruncatedNormal,
    "truncated_normal": TruncatedNormal,
    "studentt": StudentT,
    "student_t": StudentT,
}


def prior_from_dict(name: str, spec: dict) -> Prior:
    """Build a prior from a config table.

    Accepted forms: ``{fixed = v}``, ``{prior = "uniform"|"loguniform", low, high}``,
    ``{prior = "normal", mu, sigma}``, ``{prior = "truncated_normal", mu, sigma, low, high}``,
    ``{prior = "student_t", mu, scale, nu = 2}``.
    A ``column`` key (per-galaxy value from a catalog) is handled by the caller.
    """
    spec = dict(spec)
    if "fixed" in spec:
        extra = set(spec) - {"fixed"}
        if extra:
            raise ParameterError(f"parameter {name!r}: 'fixed' cannot be combined with {sorted(extra)}")
        return Fixed(spec["fixed"])
    kind = spec.pop("prior", None)
    if kind is None:
        raise ParameterError(
            f"parameter {name!r}: give 'fixed', 'column' or 'prior' "
            f"(one of {sorted(set(_PRIOR_NAMES))})"
        )
    cls = _PRIOR_NAMES.get(str(kind).lower())
    if cls is None:
        raise ParameterError(
            f"parameter {name!r}: unknown prior {kind!r}; valid: {sorted(set(_PRIOR_NAMES))}"
        )
    fields = {
        Uniform: ("low", "high"),
        LogUniform: ("low", "high"),
        Normal: ("mu", "sigma"),
        TruncatedNormal: ("mu", "sigma", "low", "high"),
        StudentT: ("mu", "scale", "nu"),
    }[cls]
    if cls is StudentT:
        spec.setdefault("nu", 2.0)
    missing = [f for f in fields if f not in spec]
    unknown = sorted(set(spec) - set(fields))
    if missing or unknown:
        raise ParameterError(
            f"parameter {name!r}: prior {kind!r} takes {list(fields)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unknown {unknown}" if unknown else "")
        )
    try:
        return cls(**{f: spec[f] for f in fields})
    except ParameterError as err:
        raise ParameterError(f"parameter {name!r}: {err}") from None
