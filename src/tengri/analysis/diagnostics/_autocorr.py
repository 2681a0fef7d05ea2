"""Autocorrelation function, integrated autocorrelation time and effective sample size.

The integrated autocorrelation time is estimated with Sokal's self-consistent window
(Sokal 1997, "Monte Carlo methods in statistical mechanics", §3): for a window ``M``

    τ(M) = 1 + 2 Σ_{k=1}^{M} ρ(k),

and the window is the smallest ``M`` with ``M ≥ c τ(M)`` (``c = 5``), the choice
Behroozi (2025) uses together with the convergence criterion ``N > 5 τ``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from tengri.errors import DataError

__all__ = [
    "autocorrelation",
    "autocorrelation_time",
    "effective_sample_size",
    "split_halves",
    "SOKAL_WINDOW_FACTOR",
]

#: ``c`` in Sokal's window rule ``M ≥ c τ(M)``.
SOKAL_WINDOW_FACTOR = 5.0


def as_chains(x: ArrayLike, name: str = "x", min_length: int = 2) -> np.ndarray:
    """``x`` as a float64 array of shape (n_chains, n); a 1-D input is one chain.

    Raises
    ------
    ValueError
        If ``x`` is not 1-D or 2-D, or a chain is shorter than ``min_length``.
    DataError
        If ``x`` holds NaN or infinite values.
    """
    chains = np.asarray(x, dtype=np.float64)
    if chains.ndim == 1:
        chains = chains[None, :]
    if chains.ndim != 2:
        raise ValueError(
            f"{name} must have shape (n,) or (n_chains, n), got shape {np.shape(x)}"
        )
    if chains.shape[0] < 1 or chains.shape[1] < min_length:
        raise ValueError(
            f"{name} needs at least {min_length} draws per chain, got shape {chains.shape}"
        )
    if not np.all(np.isfinite(chains)):
        raise DataError(f"{name} holds NaN or infinite values")
    return chains


def _autocovariances(chains: np.ndarray) -> np.ndarray:
    """Biased autocovariance Σ_t x_t x_{t+k} / n of every chain; shape (n_chains, n)."""
    n = chains.shape[1]
    centred = chains - chains.mean(axis=1, keepdims=True)
    # An exactly constant chain has zero autocovariance; its float mean need not be exact.
    centred[np.ptp(chains, axis=1) == 0] = 0.0
    # Zero-pad to ≥ 2n so that the FFT's circular correlation equals the linear one.
    n_fft = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(centred, n=n_fft, axis=1)
    return np.fft.irfft(spectrum * np.conj(spectrum), n=n_fft, axis=1)[:, :n] / n


def autocorrelation(x: ArrayLike) -> np.ndarray:
    """Normalised autocorrelation function of a chain, by FFT in O(n log n).

    Parameters
    ----------
    x : array_like, shape (n,) or (n_chains, n)
        Draws of one scalar quantity.

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``ρ(k)`` for lags ``k = 0 … n−1``, with ``ρ(0) = 1`` and ``|ρ(k)| ≤ 1``.
        One chain: the biased estimator ``ρ(k) = γ(k)/γ(0)`` (every lag divided by
        ``n``). Several chains: the multi-chain estimator behind Stan's ESS
        (Vehtari et al. 2021), ``ρ(k) = 1 − (W − mean_c γ_c(k)) / V̂⁺`` with ``W`` the mean
        within-chain variance and ``V̂⁺`` the split-R̂ total variance, so that chains
        that disagree with each other look correlated over long lags. A chain (or set
        of chains) with zero variance, such as a fixed parameter, has an all-zero ACF,
        including lag 0; chains constant at different values have ``ρ ≡ 1``.

    Examples
    --------
    >>> import numpy as np
    >>> acf = autocorrelation(np.random.default_rng(0).normal(size=1000))
    >>> float(acf[0])
    1.0
    """
    chains = as_chains(x)
    n_chains, n = chains.shape
    autocov = _autocovariances(chains)
    if n_chains == 1:
        return autocov[0] / autocov[0, 0] if autocov[0, 0] > 0 else np.zeros(n)
    if np.ptp(chains) == 0:
        return np.zeros(n)
    within = float(np.mean(autocov[:, 0])) * n / (n - 1)
    between_over_n = float(np.var(chains.mean(axis=1), ddof=1))
    var_plus = (n - 1) / n * within + between_over_n
    acf = 1.0 - (within - autocov.mean(axis=0)) / var_plus
    acf[0] = 1.0
    return np.clip(acf, -1.0, 1.0)


def split_halves(x: ArrayLike, name: str = "x") -> np.ndarray:
    """Every chain cut into its first and last ``n // 2`` draws: (2 n_chains, n // 2).

    As in split-R̂: a trend within a chain becomes a difference between its halves.
    """
    chains = as_chains(x, name=name, min_length=4)
    n = chains.shape[1]
    half = n // 2
    return np.concatenate([chains[:, :half], chains[:, n - half :]], axis=0)


def _sokal_tau(acf: np.ndarray, window_factor: float) -> float:
    """Integrated autocorrelation time of ``acf`` with Sokal's window; NaN if all zero."""
    if acf[0] == 0.0:
        return float("nan")
    # τ(M) = 1 + 2 Σ_{k=1}^{M} ρ(k) = 2 Σ_{k=0}^{M} ρ(k) − 1, since ρ(0) = 1.
    tau_of_window = 2.0 * np.cumsum(acf) - 1.0
    long_enough = np.arange(acf.size) >= window_factor * tau_of_window
    window = int(np.argmax(long_enough)) if long_enough.any() else acf.size - 1
    return float(tau_of_window[window])


def autocorrelation_time(x: ArrayLike, split: bool = False) -> dict[str, float]:
    """Integrated autocorrelation time, standard and robust, with Sokal's window.

    Parameters
    ----------
    x : array_like, shape (n,) or (n_chains, n)
        Draws of one scalar quantity (several chains are combined as in
        :func:`autocorrelation`).
    split : bool
        Cut every chain in half first (see :func:`split_halves`), as split-R̂ does.
        Use it to judge convergence: for one unsplit chain the biased ACF of the
        centred series sums to zero over all lags (``τ(n − 1) = 0``), so Sokal's
        window always exists and the estimate always satisfies ``n > 5τ`` however
        short the chain; split halves that disagree keep ``ρ`` high and ``τ`` large.

    Returns
    -------
    dict
        ``tau_standard``: τ from the ACF of ``x``.
        ``tau_absolute``: τ from the ACF of ``|x − median(x)|`` (median over all
        draws). It sees slow drifts of the spread of a chain, which the standard ACF
        misses when the mean is steady, so it guards against chains whose variance
        still changes.
        ``tau_max``: the larger of the two (NaN-aware), the conservative value used for
        the effective sample size and the convergence check.
        All three are in units of draws and NaN for a constant chain.

    Notes
    -----
    τ(M) = 1 + 2 Σ_{k=1}^{M} ρ(k), with the window ``M`` the smallest lag satisfying
    ``M ≥ 5 τ(M)`` (Sokal 1997; Behroozi 2025). If no lag satisfies it, the chains
    are too short to estimate τ and τ at the longest lag is returned.
    """
    chains = split_halves(x) if split else as_chains(x)
    deviation = np.abs(chains - np.median(chains))
    tau_standard = _sokal_tau(autocorrelation(chains), SOKAL_WINDOW_FACTOR)
    tau_absolute = _sokal_tau(autocorrelation(deviation), SOKAL_WINDOW_FACTOR)
    finite = [t for t in (tau_standard, tau_absolute) if np.isfinite(t)]
    return {
        "tau_standard": tau_standard,
        "tau_absolute": tau_absolute,
        "tau_max": max(finite) if finite else float("nan"),
    }


def effective_sample_size(x: ArrayLike, split: bool = False) -> float:
    """Effective number of independent draws, ``N / τ_max``.

    Parameters
    ----------
    x : array_like, shape (n,) or (n_chains, n)
        Draws of one scalar quantity; ``N`` counts the draws of all chains and τ_max
        comes from the multi-chain ACF (see :func:`autocorrelation_time`).
    split : bool
        Estimate τ on split half-chains (as split-R̂ and ArviZ/Stan's ESS do); then
        a chain that has not settled gets a low ESS.

    Returns
    -------
    float
        ESS in draws; NaN for a constant chain.
    """
    chains = as_chains(x)
    return chains.size / autocorrelation_time(chains, split=split)["tau_max"]
