"""The dense band-table product through a low-rank basis of the attenuation nodes.

Under a large ``vmap`` :func:`tengri.model.band_tables.attenuated_sums` multiplies a
whole table (Q, n_node, n_kind, *sources) by each evaluation's one-hot source weights:
one matrix product whose rows are the n_node × n_kind numbers (R and dR/dA at every
node) of each sub-band. For one sub-band those rows are not independent: every
source's row is Σ_λ W L [e^{−cA_j d_λ}, −c d_λ e^{−cA_j d_λ}]_j with
|d_λ| = |k_λ − κ_q| ≤ δ_q / 2, a point in the span of one short curve of
exponentials with small rates, whatever the spectra. To rounding, that span has
a low dimension (7-9 of 18 for the default 9 nodes).

So, once per call (the table is shared by the batch): an SVD of each sub-band's
(n_node · n_kind, n_source) block gives the basis U_q; when the singular values
past the first :data:`RANK` are below :data:`RANK_RTOL` of the largest for every
sub-band, each evaluation multiplies only the projected table U_qᵀ T_q (RANK rows
instead of n_node · n_kind) and maps the result back with U_q; otherwise (a table
of higher rank, e.g. random numbers) the full product runs. The choice is a
``lax.cond`` on the (unbatched) table: one branch runs.

The derivative with respect to the table is the projected one: exact for any
change of the source spectra (it stays in the same span), not for an arbitrary
change of the table's numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["RANK", "RANK_RTOL", "source_sums"]

RANK = 10
"""Rows per sub-band of the projected table (of n_node · n_kind = 18 by default)."""

RANK_RTOL = 1e-15
"""Largest singular value past RANK, relative to the sub-band's largest, for the projected product."""


def source_sums(table: jax.Array, weights: jax.Array) -> jax.Array:
    """Σ over sources of ``table · weights``, per sub-band, node and kind.

    Parameters
    ----------
    table : array, shape (Q, n_node, n_kind, *sources)
        Band table (see :func:`tengri.model.band_tables.tabulate_sources`).
    weights : array, shape (*sources,)
        Source weights of one evaluation.

    Returns
    -------
    array, shape (Q, n_node, n_kind)
        The same numbers as ``tensordot(table, weights)`` to rounding.
    """
    n_q, n_node, n_kind = table.shape[:3]
    n_row = n_node * n_kind

    def full_product(table, weights):
        return jnp.tensordot(table, weights, axes=(tuple(range(3, table.ndim)), tuple(range(weights.ndim))))

    if RANK >= n_row:
        return full_product(table, weights)
    rows = table.reshape(n_q, n_row, -1)
    basis, singular = _left_singular(jax.lax.stop_gradient(rows))
    basis = basis[:, :, :RANK]  # (Q, n_row, RANK)
    low_rank = jnp.all(singular[:, RANK] <= RANK_RTOL * singular[:, 0])

    def projected_product(table, weights):
        projected = jnp.einsum("qrk,qrs->qks", basis, table.reshape(n_q, n_row, -1))  # (Q, RANK, n_source)
        coefficients = (projected.reshape(n_q * RANK, -1) @ weights.reshape(-1)).reshape(n_q, RANK)
        return jnp.einsum("qrk,qk->qr", basis, coefficients).reshape(n_q, n_node, n_kind)

    return jax.lax.cond(low_rank, projected_product, full_product, table, weights)


def _left_singular(rows: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Left singular vectors (Q, n_row, n_row) and singular values (Q, n_row) of ``rows`` (Q, n_row, n).

    Through the triangular factor of ``rowsᵀ = Q R`` (rows = Rᵀ Qᵀ): the SVD of the
    small Rᵀ has the same left vectors and values, ~10x cheaper than that of the wide rows.
    """
    triangular = jnp.linalg.qr(jnp.swapaxes(rows, 1, 2), mode="r")  # (Q, n_row, n_row)
    left, singular, _ = jnp.linalg.svd(jnp.swapaxes(triangular, 1, 2))
    return left, singular
