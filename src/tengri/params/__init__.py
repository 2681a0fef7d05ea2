"""Parameters, priors and the latent-space maps every inference method uses."""

from tengri.params.parameters import Parameters
from tengri.params.priors import (
    DYNAMIC_BOUNDS,
    Fixed,
    LogUniform,
    Normal,
    Prior,
    StudentT,
    TruncatedNormal,
    Uniform,
    prior_from_dict,
)

__all__ = [
    "Parameters",
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
