"""Inference-method names, aliases, runners and their defaults.

Each canonical method maps to ``(module, function)``; the module is imported on
first use so that ``import tengri`` stays light. Defaults come from the packaged
``defaults.toml``; keyword arguments override them, and a keyword a method does not
list there is a ``ValueError``.
"""

from __future__ import annotations

import importlib
import tomllib
from functools import cache
from importlib import resources
from typing import Any, Callable

from tengri.errors import ParameterError

__all__ = ["METHODS", "ALIASES", "canonical_method", "method_options", "get_runner", "available_methods"]

_PKG = "tengri.inference.methods"

# canonical name -> (module under tengri.inference.methods, runner function)
METHODS: dict[str, tuple[str, str]] = {
    "map": ("optimize", "run_map"),
    "laplace": ("optimize", "run_laplace"),
    "pathfinder": ("pathfinder", "run_pathfinder"),
    "mcmc_nuts": ("mcmc", "run_nuts"),
    "hmc": ("mcmc", "run_hmc"),
    "dynamic_hmc": ("mcmc", "run_dynamic_hmc"),
    "ghmc": ("mcmc", "run_ghmc"),
    "ess": ("mcmc", "run_ess"),
    "mcmc_raytrace": ("raytrace", "run_raytrace"),
    "nss": ("nested", "run_nss"),
    "vi": ("vi_nifty", "run_vi"),
    "mgvi": ("vi_nifty", "run_mgvi"),
    "vi_native": ("vi_native", "run_vi_native"),
}

ALIASES: dict[str, str] = {
    "nuts": "mcmc_nuts",
    "raytrace": "mcmc_raytrace",
    "evidence": "nss",
    "geovi": "vi",
}


def available_methods() -> tuple[str, ...]:
    """All accepted method names: canonical names, then aliases."""
    return tuple(METHODS) + tuple(ALIASES)


def canonical_method(method: str) -> str:
    """Resolve an alias; raise ParameterError naming the valid methods otherwise."""
    if not isinstance(method, str):
        raise ParameterError(f"method must be a string, got {type(method).__name__}")
    name = ALIASES.get(method, method)
    if name not in METHODS:
        raise ParameterError(
            f"unknown method {method!r}; valid methods: {', '.join(available_methods())}"
        )
    return name


@cache
def _defaults() -> dict[str, dict[str, Any]]:
    text = resources.files("tengri.inference").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


def method_options(method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Defaults of ``method`` updated with ``overrides``.

    Raises
    ------
    ValueError
        If ``overrides`` holds a keyword the method does not take.
    """
    name = canonical_method(method)
    defaults = dict(_defaults().get(name, {}))
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(
            f"method {name!r} does not take {', '.join(map(repr, unknown))}; "
            f"accepted options: {', '.join(sorted(defaults)) or '(none)'}"
        )
    defaults.update(overrides)
    return defaults


def get_runner(method: str) -> Callable:
    """The runner ``(problem, key, **options) -> RawResult`` of ``method``."""
    name = canonical_method(method)
    module, func = METHODS[name]
    return getattr(importlib.import_module(f"{_PKG}.{module}"), func)
