"""Diagnostics for posterior draws: ACF, τ, ESS, split-R̂, N > 5τ, and Pareto k̂.

Plain numpy functions that run on results (not inside jitted code). Draws of one
scalar quantity have shape ``(n,)`` or ``(n_chains, n)``; the dictionary-level
functions take ``{name: (N, ...)}`` with chains concatenated chain-major.
Importance weights of an approximation (Pareto smoothing, k̂, resampling) are in
``_importance``. Emission-line diagnostics live in :mod:`tengri.analysis.diagnostics.spectral`.
"""

from tengri.analysis.diagnostics import spectral
from tengri.analysis.diagnostics._autocorr import (
    SOKAL_WINDOW_FACTOR,
    autocorrelation,
    autocorrelation_time,
    effective_sample_size,
    split_halves,
)
from tengri.analysis.diagnostics._convergence import (
    CONVERGENCE_TAU_FACTOR,
    check_convergence,
    ess_table,
    split_chains,
)
from tengri.analysis.diagnostics._importance import (
    PARETO_K_RELIABLE,
    pareto_k,
    pareto_k_warning,
    psis_log_weights,
    resample_indices,
)
from tengri.analysis.diagnostics._overlap import histogram_overlap
from tengri.analysis.diagnostics._rhat import rhat

__all__ = [
    "autocorrelation",
    "autocorrelation_time",
    "effective_sample_size",
    "rhat",
    "check_convergence",
    "ess_table",
    "split_chains",
    "split_halves",
    "histogram_overlap",
    "psis_log_weights",
    "pareto_k",
    "pareto_k_warning",
    "resample_indices",
    "PARETO_K_RELIABLE",
    "spectral",
    "SOKAL_WINDOW_FACTOR",
    "CONVERGENCE_TAU_FACTOR",
]
