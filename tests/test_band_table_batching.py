"""attenuated_sums: the dense (batched) and gathered (one evaluation) contractions agree.

Under a ``vmap`` of at least ``DENSE_BATCH_MIN`` evaluations over one shared table the
band-table sums are one dense product; otherwise each evaluation gathers its entries
(``_gathered_sums``, the reference here). Values and derivatives of both must agree
to rounding in every context: jit, vmap, vmap of grad / jacfwd, hessian, linear_transpose.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tengri.model import band_tables

RTOL = 1e-10
BATCH = band_tables.DENSE_BATCH_MIN
SMALL_BATCH = 8  # below DENSE_BATCH_MIN
Z_NODES = jnp.asarray([0.02, 0.2, 0.4, 1.0, 2.5])
U_NODES = jnp.asarray([-4.0, -3.0, -2.0, -1.0])
N_Q, N_NODE, N_AGE, FIRST_OLD = 5, 6, 9, 3


def _close(actual, reference):
    """Equal to RTOL of the reference's largest magnitude (derivatives may cross zero)."""
    actual, reference = np.asarray(actual), np.asarray(reference)
    assert actual.shape == reference.shape
    np.testing.assert_allclose(actual, reference, rtol=RTOL, atol=RTOL * np.max(np.abs(reference)))


def _tables(seed=0):
    """Random positive values with signed slopes, shaped like stellar, nebular and dust-free tables."""
    rng = np.random.default_rng(seed)

    def table(*sources, n_node=N_NODE, n_kind=2):
        t = rng.uniform(0.5, 2.0, (N_Q, n_node, n_kind, *sources))
        if n_kind == 2:
            t[:, :, 1] -= 1.25  # dR/dA of either sign
        return jnp.asarray(t)

    return {"stellar": table(Z_NODES.size, N_AGE), "nebular": table(Z_NODES.size, U_NODES.size, 4),
            "dust_free": table(Z_NODES.size, N_AGE, n_node=1, n_kind=1),
            "a_step": jnp.asarray(rng.uniform(0.1, 0.4, N_Q)), "kappa": jnp.asarray(rng.uniform(0.0, 3.0, N_Q))}


TABLES = _tables()


def _sums(theta, tables, sums):
    """Sub-band fluxes (3 · Q,) of a metallicity-bracketed SFH block, a (Z, log U) block and a dust-free one.

    theta = (metallicity [Z☉], log U, A_V [mag], mass scale); every input enters the
    weights or the attenuation continuously, as in the likelihood.
    """
    metallicity, log_u, av, scale = theta
    z_start, z_weights = band_tables.linear_bracket(Z_NODES, metallicity)
    u_start, u_weights = band_tables.linear_bracket(U_NODES, log_u)
    ages = jnp.exp(-jnp.arange(N_AGE) / (2.0 + scale))
    old = z_weights[:, None] * (scale * ages[FIRST_OLD:])[None, :]
    nebular = z_weights[:, None, None] * u_weights[None, :, None] * (scale * ages[:4])[None, None, :]
    a_step, kappa = tables["a_step"], tables["kappa"]
    return jnp.concatenate([
        sums(tables["stellar"], (z_start, FIRST_OLD), old, av, -0.1, a_step, kappa),
        sums(tables["nebular"], (z_start, u_start, 0), nebular, 1.7 * av, -0.1, a_step, kappa),
        sums(tables["dust_free"], (z_start, 0), z_weights[:, None] * ages[None, :], 0.0, 0.0, 1.0, 0.0),
    ])


def _pair(tables=TABLES):
    """(tested, reference): the sums through attenuated_sums and through the gathered form alone."""
    return (lambda theta: _sums(theta, tables, band_tables.attenuated_sums),
            lambda theta: _sums(theta, tables, band_tables._gathered_sums))


def _loss(f):
    return lambda theta: jnp.sum(jnp.sin(f(theta)))


def _thetas(n, seed=1):
    """n parameter points spanning the grids, the clamps beyond their ends and A beyond the last node."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.column_stack([rng.uniform(0.01, 3.0, n), rng.uniform(-4.5, -0.5, n),
                                        rng.uniform(-0.05, 2.5, n), rng.uniform(0.5, 2.0, n)]))


THETA = jnp.asarray([0.7, -2.4, 0.55, 1.3])


def _dense_is_used(batch, tables_batched=False):
    """Whether attenuated_sums contracts densely under a vmap of ``batch`` (the tracing-time choice)."""
    weights = jnp.ones((batch, 2, N_AGE))
    table = jnp.broadcast_to(TABLES["stellar"], (batch, *TABLES["stellar"].shape)) if tables_batched \
        else TABLES["stellar"]
    return bool(jax.vmap(band_tables._contracts_densely, in_axes=(0 if tables_batched else None, 0), out_axes=None)(
        table, (weights,)))


def test_dense_contraction_is_chosen_only_for_a_large_batch_over_a_shared_table():
    assert not bool(band_tables._contracts_densely(TABLES["stellar"], (jnp.ones((2, N_AGE)),)))
    assert _dense_is_used(BATCH)
    assert not _dense_is_used(SMALL_BATCH)
    assert not _dense_is_used(BATCH, tables_batched=True)


MANY_NODES = (N_Q, 40, 2, 20, N_AGE)  # many attenuation nodes and a long metallicity axis


def _stellar_sums(table, theta, sums=band_tables.attenuated_sums):
    """A metallicity-bracketed SFH block of ``table`` (its metallicity axis on 0.01-3 Z☉)."""
    metallicity, _, av, scale = theta
    z_start, z_weights = band_tables.linear_bracket(jnp.linspace(0.01, 3.0, table.shape[3]), metallicity)
    weights = z_weights[:, None] * (scale * jnp.exp(-jnp.arange(N_AGE) / (2.0 + scale)))[None, :]
    return sums(table, (z_start, 0), weights, av, -0.1, TABLES["a_step"], TABLES["kappa"])


def test_dense_contraction_is_not_offered_when_it_would_do_far_more_work(monkeypatch):
    """Many attenuation nodes and a traced start on a long axis: the gather reads a tiny part,
    so even a large batch gathers."""
    assert band_tables._dense_extra_work(MANY_NODES, (jnp.asarray(3), 0), (2, N_AGE)) \
        > band_tables.DENSE_MAX_EXTRA_WORK
    traced = []
    dense = band_tables._dense_sums
    monkeypatch.setattr(band_tables, "_dense_sums", lambda *args: traced.append(True) or dense(*args))
    thetas = _thetas(BATCH)
    jax.make_jaxpr(jax.vmap(lambda theta: _stellar_sums(jnp.ones(MANY_NODES), theta)))(thetas)
    assert not traced
    jax.make_jaxpr(jax.vmap(lambda theta: _stellar_sums(TABLES["stellar"], theta)))(thetas)
    assert traced  # the spy sees the dense form where it is offered


def test_a_large_batch_that_gathers_agrees_with_the_gathered_form():
    """Past DENSE_MAX_EXTRA_WORK a batch sums its entries as the gather reads them (``fused``)."""
    rng = np.random.default_rng(5)
    table = rng.uniform(0.5, 2.0, MANY_NODES)
    table[:, :, 1] -= 1.25
    table = jnp.asarray(table)
    f = lambda theta: _stellar_sums(table, theta)  # noqa: E731
    ref = lambda theta: _stellar_sums(table, theta, band_tables._gathered_sums)  # noqa: E731
    thetas = _thetas(BATCH, seed=6)
    _close_trees(jax.jit(jax.vmap(_derivatives(f)))(thetas), jax.jit(jax.vmap(_derivatives(ref)))(thetas))
    total = lambda g: jax.jit(jax.grad(lambda ts: jnp.sum(jax.vmap(_loss(g))(ts))))  # noqa: E731
    _close(total(f)(thetas), total(ref)(thetas))


def test_dense_form_reads_starts_as_dynamic_slice_does():
    """Starts past either end of an axis (static or traced) are read as lax.dynamic_slice reads them."""
    table, weights = TABLES["stellar"], jnp.linspace(0.5, 1.5, 2 * (N_AGE - 2)).reshape(2, N_AGE - 2)
    for start in ((-3, 4), (Z_NODES.size, 10), (jnp.asarray(9), jnp.asarray(-1)), (jnp.asarray(-2), 1)):
        args = (table, start, weights, 0.3, 0.0, TABLES["a_step"], TABLES["kappa"])
        _close(band_tables._dense_sums(*args), band_tables._gathered_sums(*args))


def _derivatives(g):
    """θ ↦ (g(θ), ∇ Σ sin g(θ), ∂g/∂θ by jacfwd)."""
    return lambda theta: (g(theta), jax.grad(_loss(g))(theta), jax.jacfwd(g)(theta))


def _close_trees(actual, reference):
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(reference), strict=True):
        _close(a, b)


def test_values_and_derivatives_agree_under_jit():
    """Also the Hessian (Laplace) and a vjp by linearize + linear_transpose (geometric VI)."""
    cotangent = jnp.linspace(-1.0, 1.0, 3 * N_Q)

    def everything(g):
        def run(theta):
            _, jvp = jax.linearize(g, theta)
            vjp = jax.linear_transpose(jvp, theta)(cotangent)[0]
            return *_derivatives(g)(theta), jax.hessian(_loss(g))(theta), vjp

        return jax.jit(run)(THETA)

    f, ref = _pair()
    _close_trees(everything(f), everything(ref))


def test_values_and_derivatives_agree_under_vmap():
    f, ref = _pair()
    thetas = _thetas(BATCH)
    _close_trees(jax.jit(jax.vmap(_derivatives(f)))(thetas), jax.jit(jax.vmap(_derivatives(ref)))(thetas))
    # the gradient of a batched sum: one reverse pass through the dense product for the whole batch
    total = lambda g: jax.jit(jax.grad(lambda ts: jnp.sum(jax.vmap(_loss(g))(ts))))  # noqa: E731
    _close(total(f)(thetas), total(ref)(thetas))


def test_per_galaxy_tables_under_vmap_agree():
    """A batch of tables (one per galaxy, as a catalog vmap passes them) keeps the gathered form."""
    tables = jax.tree.map(lambda *xs: jnp.stack(xs), *[_tables(seed) for seed in range(BATCH)])
    thetas = _thetas(BATCH, seed=4)

    def value_and_grad(sums):
        g = jax.value_and_grad(lambda theta, t: jnp.sum(_sums(theta, t, sums)))
        return jax.jit(jax.vmap(g))(thetas, tables)

    _close_trees(value_and_grad(band_tables.attenuated_sums), value_and_grad(band_tables._gathered_sums))


def test_band_table_likelihood_agrees_with_the_gathered_form(phot_model, truth, monkeypatch):
    """The model's log-likelihood and its gradient vmapped over 128 points (the dense contraction).

    One point at a time the model runs the gathered form itself (the tests above check
    the choice, and every derivative in both contexts on tables of the same layout).
    """
    flux = phot_model.predict_photometry(truth)
    problem = phot_model.build_problem(flux, flux / 20)
    args = problem.data_args
    z0 = jnp.full(problem.n_dim, 0.1)
    zb = jax.random.normal(jax.random.key(0), (BATCH, problem.n_dim))

    def log_likelihood(z, a):  # a fresh function: jax.jit traces again with the attenuated_sums in place
        return phot_model._likelihoods["log_likelihood"](z, a)

    def evaluate():
        both = jax.value_and_grad(lambda z, a: log_likelihood(z, a))
        return jax.jit(jax.vmap(both, in_axes=(0, None)))(zb, args)

    def traced():
        return str(jax.make_jaxpr(lambda z, a: log_likelihood(z, a))(z0, args))

    tested = evaluate()
    assert "custom_vmap_call" in traced()
    monkeypatch.setattr(band_tables, "attenuated_sums", band_tables._gathered_sums)
    assert "custom_vmap_call" not in traced()  # the reference really is the gathered form
    _close_trees(tested, evaluate())
