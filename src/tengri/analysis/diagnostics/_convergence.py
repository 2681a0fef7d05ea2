"""Convergence report over a dictionary of parameter draws (Behroozi 2025: N > 5τ)."""

from __future__ import annotations

from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike

from tengri.analysis.diagnostics._autocorr import autocorrelation_time

__all__ = ["check_convergence", "ess_table", "split_chains", "CONVERGENCE_TAU_FACTOR"]

#: A chain counts as converged when its length exceeds this many autocorrelation times.
CONVERGENCE_TAU_FACTOR = 5.0


def split_chains(values: ArrayLike, n_chains: int, name: str = "samples") -> np.ndarray:
    """Chain-major draws as an array of shape (n_chains, n_per_chain, n_components).

    Parameters
    ----------
    values : array_like, shape (N, ...)
        Draws of one parameter with the chains concatenated one after another
        (chain 0 first). Trailing axes (a vector-valued parameter such as ``psd_xi``)
        are flattened into components.
    n_chains : int
        Number of chains; must divide ``N``.
    name : str
        Parameter name, for error messages.
    """
    if isinstance(n_chains, bool) or not isinstance(n_chains, (int, np.integer)) or n_chains < 1:
        raise ValueError(f"n_chains must be a positive integer, got {n_chains!r}")
    draws = np.asarray(values, dtype=np.float64)
    if draws.ndim < 1 or draws.shape[0] < 1:
        raise ValueError(f"{name}: draws need shape (n_samples, ...), got shape {draws.shape}")
    n_total = draws.shape[0]
    if n_total % n_chains:
        raise ValueError(
            f"{name}: {n_total} draws cannot be split into n_chains={n_chains} equal chains"
        )
    return draws.reshape(n_chains, n_total // n_chains, -1)


def _component_tau_max(chains: np.ndarray) -> np.ndarray:
    """τ_max of every component of (n_chains, n, k) draws; NaN for constant components."""
    return np.array(
        [autocorrelation_time(chains[:, :, j], split=True)["tau_max"] for j in range(chains.shape[2])]
    )


def check_convergence(samples: Mapping[str, ArrayLike], n_chains: int = 1) -> dict:
    """Flag parameters whose chains are shorter than 5 autocorrelation times.

    Parameters
    ----------
    samples : mapping of str to array_like, each of shape (N, ...)
        Draws per parameter, chains concatenated chain-major. A vector-valued
        parameter counts with its slowest component.
    n_chains : int
        Number of chains in each array.

    Returns
    -------
    dict
        ``all_converged`` (bool): every varying parameter has ``n > 5 τ_max``, where
        ``n`` is the length of one chain and τ_max is estimated on split half-chains
        (``autocorrelation_time(..., split=True)``): on an unsplit chain the window
        estimate satisfies ``n > 5τ`` by construction, however short the chain.
        ``warnings`` (list of str): one line per failing parameter, plus one if no
        parameter varies at all (a chain that never moved).
        ``tau`` (dict str → float): τ_max per varying parameter [draws].
        ``n_samples`` (int): total number of draws ``N``.
        ``n_per_chain`` (int): draws per chain.
        ``constant`` (list of str): parameters with zero variance (fixed ones), which
        are not tested.

    References
    ----------
    Behroozi (2025) for the N > 5τ criterion; Sokal (1997) for the τ window.
    """
    if not samples:
        raise ValueError("samples is empty: pass a dict of parameter name → draws")
    tau: dict[str, float] = {}
    warnings: list[str] = []
    constant: list[str] = []
    n_total = n_per_chain = None
    for name, values in samples.items():
        chains = split_chains(values, n_chains, name)
        if n_total is None:
            n_total, n_per_chain = chains.shape[0] * chains.shape[1], chains.shape[1]
        elif chains.shape[0] * chains.shape[1] != n_total:
            raise ValueError(
                f"parameter {name!r} has {chains.shape[0] * chains.shape[1]} draws, "
                f"others have {n_total}"
            )
        taus = _component_tau_max(chains)
        if np.all(np.isnan(taus)):
            constant.append(name)
            continue
        tau[name] = float(np.nanmax(taus))
        needed = CONVERGENCE_TAU_FACTOR * tau[name]
        if not n_per_chain > needed:
            warnings.append(
                f"{name}: {n_per_chain} draws per chain ≤ {CONVERGENCE_TAU_FACTOR:g}τ = "
                f"{needed:.1f} (τ = {tau[name]:.1f}); run more than {int(np.ceil(needed))} draws"
            )
    if not tau:
        warnings.append("every parameter is constant: the chains never moved")
    return {
        "all_converged": not warnings,
        "warnings": warnings,
        "tau": tau,
        "n_samples": int(n_total),
        "n_per_chain": int(n_per_chain),
        "constant": constant,
    }


def ess_table(samples: Mapping[str, ArrayLike], n_chains: int = 1) -> str:
    """A text table of median, 68% interval, τ and ESS per scalar parameter.

    Parameters
    ----------
    samples : mapping of str to array_like, each of shape (N,) or (N, ...)
        Draws per parameter, chains concatenated chain-major. Vector-valued
        parameters are named in a footnote, not tabulated.
    n_chains : int
        Number of chains in each array.

    Returns
    -------
    str
        One row per scalar parameter: median, 16th and 84th percentiles, τ_max (on
        split half-chains, as in :func:`check_convergence`) and ESS = N/τ_max
        [draws], and whether the chains pass ``n > 5τ``; fixed
        (constant) parameters show "fixed".
    """
    if not samples:
        raise ValueError("samples is empty: pass a dict of parameter name → draws")
    scalar = {k: v for k, v in samples.items() if np.ndim(v) == 1}
    vector = [k for k in samples if np.ndim(samples[k]) != 1]
    width = max([len(k) for k in scalar] + [9])
    header = (
        f"{'parameter':<{width}}  {'median':>11}  {'16%':>11}  {'84%':>11}  "
        f"{'tau':>8}  {'ESS':>9}  N>5tau"
    )
    lines = [header, "─" * len(header)]
    for name, values in scalar.items():
        chains = split_chains(values, n_chains, name)
        flat = chains.reshape(-1)
        lo, med, hi = np.percentile(flat, [16, 50, 84])
        tau = autocorrelation_time(chains[:, :, 0], split=True)["tau_max"]
        if np.isnan(tau):
            tail = f"{'fixed':>8}  {'—':>9}  —"
        else:
            ok = "yes" if chains.shape[1] > CONVERGENCE_TAU_FACTOR * tau else "NO"
            tail = f"{tau:>8.2f}  {flat.size / tau:>9.1f}  {ok}"
        lines.append(f"{name:<{width}}  {med:>11.5g}  {lo:>11.5g}  {hi:>11.5g}  {tail}")
    n_draws = np.shape(next(iter(samples.values())))[0]
    lines.append(f"N = {n_draws} draws in {n_chains} chain(s)")
    if vector:
        lines.append(f"vector-valued parameters not tabulated: {', '.join(vector)}")
    return "\n".join(lines)
