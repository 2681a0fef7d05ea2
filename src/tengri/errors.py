"""Exceptions raised by tengri.

Every error names the offending argument and, where there is a closed set of
valid values, lists them.
"""

__all__ = ["ParameterError", "DataError", "ConfigError", "ApproximationWarning",
           "ConvergenceWarning"]


class ParameterError(ValueError):
    """An unknown or invalid parameter, prior, method name or option."""


class DataError(ValueError):
    """Observed data that cannot be fitted: NaN/inf values, non-positive noise,
    shapes that disagree, missing catalog columns."""


class ConfigError(ValueError):
    """A model configuration (TOML or dict) that cannot be turned into a model."""


class ApproximationWarning(UserWarning):
    """An approximate posterior (VI, Pathfinder) whose own diagnostic, the Pareto k̂
    of its draws' importance weights, says it misses part of the posterior."""


class ConvergenceWarning(UserWarning):
    """MCMC chains shorter than their own diagnostics ask for (fewer than 5
    autocorrelation times per chain): the draws do not yet represent the posterior."""
