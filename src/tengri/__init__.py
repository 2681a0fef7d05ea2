"""tengri: differentiable galaxy SED fitting on JAX.

The public names live here; everything else is internal and may move.
Importing tengri enables 64-bit floats in JAX (see docs/architecture.md).
"""

import importlib

import jax

jax.config.update("jax_enable_x64", True)

from tengri.errors import ConfigError, DataError, ParameterError  # noqa: E402

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "Parameters": "tengri.params",
    "Uniform": "tengri.params",
    "LogUniform": "tengri.params",
    "Normal": "tengri.params",
    "TruncatedNormal": "tengri.params",
    "StudentT": "tengri.params",
    "Fixed": "tengri.params",
    "SEDModel": "tengri.model",
    "Photometry": "tengri.model",
    "Spectroscopy": "tengri.model",
    "Fitter": "tengri.inference.fitter",
    "CatalogFitter": "tengri.inference.catalog",
    "PopulationFitter": "tengri.inference.population",
    "PopulationPosterior": "tengri.inference.population",
    "Posterior": "tengri.posterior",
    "lean": "tengri.inference.cache",
    "persistent": "tengri.inference.cache",
    "gc": "tengri.inference.cache",
    "enable_persistent_cache": "tengri.inference.cache",
    "persistent_cache_dir": "tengri.inference.cache",
}

__all__ = ["ParameterError", "DataError", "ConfigError", "__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tengri' has no attribute {name!r}")
