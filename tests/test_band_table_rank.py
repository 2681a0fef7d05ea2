"""band_table_rank.source_sums: the projected (low-rank) dense product equals the gathered form.

Tables built like real ones (sums of exponentials in A over sub-bands of small k
spread) have a low numerical rank across their (node, kind) rows: the batched
product runs through the projected table. Random tables do not: the full product
runs. Both must agree with the gathered contraction to rounding under jit, vmap
and vmap of grad.
"""

import jax
import jax.numpy as jnp
import numpy as np

from tengri.model import band_table_rank, band_tables

RTOL = 1e-10
N_Q, N_NODE, N_Z, N_AGE, N_COLUMN = 4, 9, 5, 12, 30
A_STEP = 0.25
Z_NODES = jnp.asarray([0.02, 0.2, 0.4, 1.0, 2.5])


def _exponential_table(seed=0):
    """(Q, n_node, 2, n_z, n_age): R and dR/dA at the nodes of positive spectra over columns of small k spread."""
    rng = np.random.default_rng(seed)
    spectra = rng.uniform(0.1, 1.0, (N_Q, N_COLUMN, N_Z, N_AGE))
    offset = rng.uniform(-0.15, 0.15, (N_Q, N_COLUMN))  # k − κ of each column
    nodes = A_STEP * np.arange(N_NODE)
    decay = np.exp(-band_tables.MAG_TO_LN * offset[:, :, None] * nodes)  # (Q, col, node)
    value = np.einsum("qcn,qczs->qnzs", decay, spectra)
    slope = np.einsum("qcn,qczs->qnzs", -band_tables.MAG_TO_LN * offset[:, :, None] * decay, spectra)
    return jnp.asarray(np.stack([value, slope], axis=2))


TABLE = _exponential_table()
KAPPA = jnp.linspace(0.5, 3.0, N_Q)
STEP = jnp.full(N_Q, A_STEP)


def _close(actual, reference):
    actual, reference = np.asarray(actual), np.asarray(reference)
    assert actual.shape == reference.shape
    np.testing.assert_allclose(actual, reference, rtol=RTOL, atol=RTOL * np.max(np.abs(reference)))


def _is_low_rank(table):
    rows = table.reshape(table.shape[0], -1, np.prod(table.shape[3:]))
    singular = band_table_rank._left_singular(rows)[1]
    return bool(jnp.all(singular[:, band_table_rank.RANK] <= band_table_rank.RANK_RTOL * singular[:, 0]))


def _sums(theta, table, sums):
    metallicity, av, scale = theta
    z_start, z_weights = band_tables.linear_bracket(Z_NODES, metallicity)
    ages = jnp.exp(-jnp.arange(N_AGE) / (2.0 + scale))
    return sums(table, (z_start, 2), z_weights[:, None] * (scale * ages[2:])[None, :], av, 0.0, STEP, KAPPA)


def _thetas(n, seed=1):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.column_stack([rng.uniform(0.01, 3.0, n), rng.uniform(-0.05, 2.5, n),
                                        rng.uniform(0.5, 2.0, n)]))


def test_the_svd_through_the_triangular_factor_matches_numpy():
    rows = TABLE.reshape(N_Q, 2 * N_NODE, -1)
    left, singular = band_table_rank._left_singular(rows)
    expected = np.linalg.svd(np.asarray(rows), compute_uv=False)
    np.testing.assert_allclose(singular, expected, rtol=1e-12, atol=1e-14 * np.max(expected))
    # the basis spans the rows: projecting them changes nothing
    basis = left[:, :, : band_table_rank.RANK]
    _close(jnp.einsum("qrk,qsk,qsn->qrn", basis, basis, rows), rows)


def test_exponential_tables_are_low_rank_and_random_ones_are_not():
    assert _is_low_rank(TABLE)
    rng = np.random.default_rng(3)
    assert not _is_low_rank(jnp.asarray(rng.uniform(size=TABLE.shape)))


def test_source_sums_agree_with_the_full_product():
    rng = np.random.default_rng(2)
    weights = jnp.asarray(rng.uniform(size=TABLE.shape[3:]))
    full = jnp.tensordot(TABLE, weights, axes=((3, 4), (0, 1)))
    _close(jax.jit(band_table_rank.source_sums)(TABLE, weights), full)
    random_table = jnp.asarray(rng.uniform(size=TABLE.shape))  # full rank: the full product runs
    _close(jax.jit(band_table_rank.source_sums)(random_table, weights),
           jnp.tensordot(random_table, weights, axes=((3, 4), (0, 1))))


def test_batched_values_and_gradients_agree_with_the_gathered_form():
    """A vmap of DENSE_BATCH_MIN evaluations: the dense product through the projected table."""
    thetas = _thetas(band_tables.DENSE_BATCH_MIN)

    def both(sums):
        f = lambda theta: _sums(theta, TABLE, sums)  # noqa: E731
        loss = lambda theta: jnp.sum(jnp.sin(f(theta)))  # noqa: E731
        return jax.jit(jax.vmap(lambda t: (f(t), jax.grad(loss)(t), jax.jacfwd(f)(t))))(thetas)

    for tested, reference in zip(both(band_tables.attenuated_sums), both(band_tables._gathered_sums), strict=True):
        _close(tested, reference)
    assert "custom_vmap_call" in str(jax.make_jaxpr(lambda t: _sums(t, TABLE, band_tables.attenuated_sums))(thetas[0]))
