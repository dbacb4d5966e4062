"""embedding: scatter-add custom VJP vs the jnp.take twin and central differences,
repeated ids accumulate, ids of any shape and int dtype, transforms, residuals,
out-of-range ids (eager error, NaN under jit), errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import rand

V, F = 7, 3


def _ids(shape, seed=0, dtype=np.int32, high=V):
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


@pytest.mark.parametrize("ids", [
    _ids((4, 5)), _ids((), 1), _ids((6,), 2, np.int64), _ids((2, 3, 2), 3, np.uint8),
    np.array([2, 2, 2, 0, 6]),                              # repeated ids, first and last row
], ids=["N_T", "scalar", "int64_vector", "uint8_rank3", "repeated"])
def test_vjp_matches_reference_and_central_differences(ids):
    check_vjp(ops.embedding, R.embedding, (ids, rand((V, F), 10)), argnums=(1,), seed=11)


def test_values_and_repeated_ids_accumulate():
    table = rand((V, F), 20)
    ids = np.array([[2, 5, 2], [2, 0, 5]])
    dy = rand((2, 3, F), 21)
    y, vjp = jax.vjp(lambda t: ops.embedding(ids, t), table)
    np.testing.assert_array_equal(y, table[ids])
    np.testing.assert_array_equal(y, jnp.take(table, ids, axis=0))
    (dtable,) = vjp(dy)
    want = np.zeros((V, F))
    np.add.at(want, ids, dy)                      # unbuffered: repeats accumulate
    np.testing.assert_allclose(dtable, want, rtol=1e-14)
    np.testing.assert_allclose(dtable[2], dy[0, 0] + dy[0, 2] + dy[1, 0], rtol=1e-14)
    assert not np.any(np.asarray(dtable)[[1, 3, 4, 6]])       # ids that never occur get 0


def test_jit_vmap_and_second_order():
    table = jnp.asarray(rand((V, F), 30))
    ids = jnp.asarray(_ids((4, 3), 31))

    def loss(mod):
        return lambda t, i: jnp.sum(jnp.sin(mod.embedding(i, t)) @ jnp.arange(1.0, F + 1))

    @jax.jit
    def run(t, i):
        out = []
        for mod in (ops, R):
            f = loss(mod)
            out.append((jax.vmap(jax.grad(f), in_axes=(None, 0))(t, i),          # per row
                        jax.vmap(jax.grad(f), in_axes=(0, None))(jnp.stack([t, 2 * t]), i),
                        jax.grad(lambda t: jnp.sum(jax.grad(f)(t, i) ** 2))(t)))
        return out

    got, want = run(table, ids)
    assert_close(got, want, 1e-10, "vmap(grad), grad(grad)")
    assert_close(jnp.sum(got[0], 0), jax.grad(loss(ops))(table, ids), 1e-12, "sum of rows")


def test_residual_is_the_ids_only():
    table = jnp.asarray(rand((50, 8), 40))
    ids = jnp.asarray(_ids((4, 6), 41, high=50))
    kept = saved_residuals(ops.embedding, ids, table)
    assert [(r.shape, r.dtype, r.is_argument) for r in kept] == [((4, 6), np.int32, True)]
    assert "custom_vjp_call" in str(jax.make_jaxpr(ops.embedding)(ids, table))


def test_out_of_range_ids_under_jit_give_nan_rows_and_no_gradient():
    """Under jit ids are not known at trace time: no error, a NaN row (neither clipped
    nor wrapped: -1 is NOT the last row), and no contribution to dtable."""
    table = jnp.asarray(rand((V, F), 50))
    ids = jnp.asarray([1, -1, V, 3, 1000])
    f = jax.jit(lambda t, i: ops.embedding(i, t))
    y = f(table, ids)
    assert np.all(np.isnan(y[np.array([1, 2, 4])])) and np.all(np.isfinite(y[np.array([0, 3])]))
    dtable = jax.jit(jax.grad(lambda t, i: jnp.sum(jnp.nan_to_num(ops.embedding(i, t)))))(
        table, ids)
    want = np.zeros((V, F))
    want[[1, 3]] = 1.0
    np.testing.assert_array_equal(dtable, want)
    np.testing.assert_array_equal(jax.jit(lambda t, i: R.embedding(i, t))(table, ids), y)


@pytest.mark.parametrize("ids, table, exc, match", [
    (np.array([0.0, 1.0]), rand((V, F)), TypeError,
     r"embedding: ids must have an integer dtype \(token ids; cast float ids with "
     r"\.astype\(int\)\), got float64"),
    (np.array([True, False]), rand((V, F)), TypeError,
     r"embedding: ids must have an integer dtype .*got bool"),
    (np.array([0, 1]), np.ones((V, F), np.int32), TypeError,
     r"embedding: table must have a floating dtype, got int32"),
    (np.array([0, 1]), rand((V * F,)), ValueError,
     r"embedding: table has shape \(21,\) \(rank 1\), expected rank 2 \(V, F\)"),
    ([0, 1], rand((V, F)), TypeError, r"embedding: ids must be an array, got list"),
    (np.array([0]), rand((0, F)), ValueError,     # was an IndexError from jnp.take under jit
     r"embedding: table has shape \(0, 3\), expected at least one row \(V >= 1\)"),
])
def test_bad_input_raises_eagerly_and_under_jit(ids, table, exc, match):
    for fn in (ops.embedding, jax.jit(ops.embedding), R.embedding):
        with pytest.raises(exc, match=match):
            fn(ids, table)


@pytest.mark.parametrize("bad", [V, -1])
def test_out_of_range_concrete_ids_raise(bad):
    ids = np.array([[0, 3], [bad, 1]])
    match = rf"embedding: ids hold {bad} \(at index \(1, 0\)\), expected ids in \[0, {V}\) " \
            rf"for a table of shape \({V}, {F}\)"
    for fn in (ops.embedding, R.embedding):
        with pytest.raises(ValueError, match=match):
            fn(ids, rand((V, F)))


@pytest.mark.parametrize("dtype, v", [(np.int8, 300), (np.uint8, 300), (np.int16, 40000)])
def test_small_id_dtypes_with_more_rows_than_they_can_hold(dtype, v):
    """The backward rule marks bad ids with row V: ids are widened to int32 first, so a V
    beyond the id dtype's range works (it was an OverflowError in the backward pass)."""
    top = np.iinfo(dtype).max
    ids = np.array([[0, 1, top], [top, 2, 1]], dtype)
    table = rand((v, 2), 60)
    fd = 1e-6 if v < 1000 else None        # central differences over 80,000 entries: skip
    check_vjp(ops.embedding, R.embedding, (ids, table), argnums=(1,), seed=61, fd_rtol=fd)
    dtable = jax.jit(jax.grad(lambda t, i: jnp.sum(ops.embedding(i, t))))(table, ids)
    want = np.zeros((v, 2))
    np.add.at(want, ids.astype(np.int64), 1.0)
    np.testing.assert_array_equal(dtable, want)


def test_wide_unsigned_ids_are_not_wrapped_into_the_table_under_jit():
    """uint64 2**32 (+1) and uint32 2**32 - 1 are outside [0, V): a NaN row and no
    gradient, not row 0 or 1 (a cast to int32 would wrap them there)."""
    assert jax.config.jax_enable_x64   # (tests/conftest.py) else uint64 would be uint32
    table = jnp.asarray(rand((V, F), 62))
    run = jax.jit(lambda t, i: (ops.embedding(i, t), jax.grad(
        lambda t: jnp.sum(jnp.nan_to_num(ops.embedding(i, t))))(t)))
    for ids in (jnp.array([2 ** 32, 2 ** 32 + 1, 3], jnp.uint64),
                jnp.array([2 ** 32 - 1, 2 ** 32 - 1, 3], jnp.uint32)):
        y, dtable = run(table, ids)
        assert np.all(np.isnan(y[:2])) and np.array_equal(y[2], table[3])
        want = np.zeros((V, F))
        want[3] = 1.0
        np.testing.assert_array_equal(dtable, want)
        np.testing.assert_array_equal(jax.jit(lambda t, i: R.embedding(i, t))(table, ids), y)


def test_python_int_id_is_one_row_like_jnp_take():
    """``embedding(3, table)`` is ``table[3]`` (was a TypeError from indexing a bool)."""
    table = jnp.asarray(rand((V, F), 63))
    for fn in (ops.embedding, R.embedding, jax.jit(ops.embedding)):
        np.testing.assert_array_equal(fn(3, table), jnp.take(table, 3, axis=0))
    dy = jnp.asarray(rand((F,), 64))
    check_vjp(ops.embedding, R.embedding, (3, table), argnums=(1,), seed=65)
    (dtable,) = jax.vjp(lambda t: ops.embedding(3, t), table)[1](dy)
    want = np.zeros((V, F))
    want[3] = dy
    np.testing.assert_array_equal(dtable, want)
    with pytest.raises(ValueError, match=r"embedding: ids hold 7 \(at index \(\)\)"):
        ops.embedding(7, table)


def test_zero_feature_table_has_a_zero_size_gradient():
    """F = 0: (..., 0) rows and a (V, 0) gradient, like the twin (was ZeroDivisionError
    from reshape(-1, 0) in the backward rule)."""
    ids = np.array([[1, 2], [0, 1]])
    for f in (ops.embedding, R.embedding):
        y, dtable = jax.jit(lambda t: jax.value_and_grad(
            lambda t: jnp.sum(f(ids, t)))(t))(jnp.ones((3, 0)))
        assert float(y) == 0.0 and dtable.shape == (3, 0)
        assert f(ids, jnp.ones((3, 0))).shape == (2, 2, 0)
