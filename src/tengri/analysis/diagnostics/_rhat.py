"""Split-R̂, the potential scale reduction factor on split chains.

Gelman & Rubin (1992) with the chain splitting of Gelman et al. (2013, BDA3 §11.4):
each chain is cut into halves so that a drift within one chain shows up as a
difference between its halves.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from tengri.analysis.diagnostics._autocorr import split_halves

__all__ = ["rhat"]


def rhat(chains: ArrayLike) -> float:
    """Split-R̂ of one scalar quantity.

    Parameters
    ----------
    chains : array_like, shape (n_chains, n) or (n,)
        Draws per chain (a 1-D input is one chain). Every chain is split into its
        first and last ``n // 2`` draws (the middle draw is dropped when ``n`` is odd),
        giving ``m = 2 n_chains`` sequences of length ``L = n // 2``.

    Returns
    -------
    float
        ``R̂ = sqrt(V̂ / W)`` with ``W`` the mean within-sequence variance,
        ``B = L · var(sequence means)`` and ``V̂ = (L − 1)/L · W + B/L``. Values near 1
        mean the sequences agree; ``R̂ > 1.01`` (Vehtari et al. 2021) signals chains
        that have not mixed. NaN when every sequence is constant at one value, ``inf``
        when sequences are constant at different values.

    Raises
    ------
    ValueError
        If a chain has fewer than 4 draws (each half needs two).
    """
    sequences = split_halves(chains, name="chains")
    half = sequences.shape[1]
    # A constant sequence has zero variance even where its float mean is inexact.
    variances = np.where(np.ptp(sequences, axis=1) == 0, 0.0, np.var(sequences, axis=1, ddof=1))
    within = float(np.mean(variances))
    between = half * float(np.var(np.mean(sequences, axis=1), ddof=1))
    if within == 0.0:
        return float("nan") if between == 0.0 else float("inf")
    var_plus = (half - 1) / half * within + between / half
    return float(np.sqrt(var_plus / within))
