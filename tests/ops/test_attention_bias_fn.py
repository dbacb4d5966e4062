"""dot_product_attention(..., bias_fn=f, bias_params=p): a bias ``f(p, rows, cols)`` computed
per block (T5's buckets gathered from a ``(num_buckets, N)`` table, LongT5's local attention,
a learned function of the distance, per-sequence slopes), never a ``T x S`` array. Custom
VJP (``q, k, v`` and the params) vs autodiff of the twin (float64, 1e-10) and central
differences at several block sizes, with and without a window; equal to the op with the
dense ``bias=``; integer params held fixed; vmap sweeps of the params; grad of grad; the
residuals (the params, no ``T x S`` array); errors at trace time."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn import saved_residuals
from funcnet.nn.position_bias import relative_position_bucket
from funcnet.ops import reference as R
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand
from tests.ops.test_attention import DROP_KEY, _mask, _qkv

jax.config.update("jax_enable_x64", True)


def t5_bias(table, rows, cols):
    """T5's ``(N, t, s)`` bias: 8 buckets, bidirectional, exact below 2, log up to 6."""
    b = relative_position_bucket(cols[None, :] - rows[:, None], bidirectional=True,
                                 num_buckets=8, max_distance=6)
    return jnp.take(table, b, axis=0).transpose(2, 0, 1)


def distance_bias(p, rows, cols):
    """A ``(t, s)`` bias shared by the heads: ``w cos(a (i - j + offset))``, ``offset`` an
    integer leaf (held fixed)."""
    d = (rows[:, None] - cols[None, :] + p["offset"]).astype(p["w"].dtype)
    return p["w"] * jnp.cos(p["a"] * d)


def one_head_bias(p, rows, cols):
    """A ``(1, t, s)`` bias: ``-m |i - j|``, ALiBi with one learned slope for all heads."""
    return -p * jnp.abs(rows[:, None] - cols[None, :]).astype(p.dtype)[None]


def _jqkv(*dims, seed):
    """``_qkv``'s arrays as JAX arrays (closed over by the functions below)."""
    return tuple(jnp.asarray(a) for a in _qkv(*dims, seed=seed))


def per_sequence_bias(p, rows, cols):
    """A ``(B, N, t, s)`` bias: ALiBi with learned slopes ``(B, N)`` per sequence and head."""
    return -p[:, :, None, None] * jnp.abs(rows[:, None] - cols[None, :]).astype(p.dtype)[
        None, None]


def _params(kind, n, seed=5):
    if kind == "t5":
        return jnp.asarray(rand((8, n), seed))
    if kind == "distance":     # the integer offset: held fixed, added by _bind
        return {"w": jnp.asarray(0.7), "a": jnp.asarray(0.4)}
    if kind == "per_sequence":
        return jnp.asarray(rand((2, n), seed)) ** 2
    return jnp.asarray(0.3)


FNS = {"t5": t5_bias, "distance": distance_bias, "one_head": one_head_bias,
       "per_sequence": per_sequence_bias}


def _bind(f, fn, mask, causal, **kw):
    def bound(q, k, v, p):
        if fn is distance_bias:
            p = dict(p, offset=jnp.int32(2))
        return f(q, k, v, mask, bias_fn=fn, bias_params=p, causal=causal, **kw)
    return bound


# (id, (B, T, S, N, K, H), causal, mask kind, bias kind, window, block sizes, dropout)
CASES = [
    ("t5_one_block", (2, 5, 5, 2, 2, 3), False, None, "t5", None, (None,), False),
    ("t5_padded_key_blocks_gqa", (2, 6, 7, 4, 2, 3), False, None, "t5", None, (2, 3), False),
    ("t5_causal_fully_masked_row", (2, 5, 5, 2, 2, 3), True, "rows", "t5", None, (2,), False),
    ("t5_cross_t_lt_s_dropout", (2, 3, 7, 2, 1, 3), False, None, "t5", None, (None, 3), True),
    ("longt5_window_padded_query_blocks", (2, 7, 7, 2, 2, 3), False, None, "t5", 3, (2, 3),
     False),
    ("window_causal_distance_int_leaf", (1, 7, 7, 2, 1, 3), True, "keys", "distance", 3,
     (None, 2), False),
    ("distance_unbatched", (0, 4, 6, 2, 2, 3), False, None, "distance", None, (None, 4),
     False),
    ("one_head_window_dropout", (2, 6, 6, 2, 2, 3), False, None, "one_head", 2, (None, 4),
     True),
    ("per_sequence_gqa", (2, 5, 7, 4, 2, 3), True, None, "per_sequence", None, (None, 3),
     False),
    ("per_sequence_window", (2, 7, 7, 2, 1, 3), False, "keys", "per_sequence", 2, (None, 3),
     False),
]


@pytest.mark.parametrize("dims, causal, mask_kind, kind, window, blocks, dropout",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(dims, causal, mask_kind, kind, window,
                                                       blocks, dropout):
    """q, k, v AND the float params differentiated: the per-block rule (every block size)
    equals autodiff of the twin's dense bias to 1e-10 and central differences to 1e-6."""
    b, t, s, n, kh, h = dims
    mask = _mask(mask_kind, b, t, s, n) if b else None
    kw = dict(window=window)
    if dropout:
        kw.update(dropout_rate=0.3, dropout_key=DROP_KEY)
    args = _qkv(b, t, s, n, kh, h, seed=1) + (_params(kind, n),)
    fs = [_bind(attention, FNS[kind], mask, causal, block_size=bs, **kw) for bs in blocks]
    out = check_vjp(fs, _bind(R.dot_product_attention, FNS[kind], mask, causal, **kw), args,
                    seed=3)
    grads = jax.tree_util.tree_leaves(out["grads"][3])
    assert all(np.any(np.asarray(g) != 0) for g in grads)       # every float param is used
    plain = _bind(attention, None, mask, causal, **kw)(*args[:3], None)
    assert not np.allclose(out["value"], plain)                 # the bias does something


@pytest.mark.parametrize("window", [None, 3])
def test_equals_the_op_with_the_dense_bias(window):
    """``bias_fn`` equals ``bias=f(p, arange(T), arange(S))[None]`` in value and in every
    gradient (the dense bias differentiated through ``f`` by autodiff), on top of a given
    ``bias`` as well."""
    q, k, v = _jqkv(2, 9, 9, 4, 2, 3, seed=2)
    table = _params("t5", 4)
    extra = jnp.asarray(rand((2, 1, 1, 9), 4))

    def by_fn(q, k, v, table):
        return attention(q, k, v, bias=extra, bias_fn=t5_bias, bias_params=table,
                         block_size=4, window=window)

    def dense(q, k, v, table):
        rows = jnp.arange(9, dtype=jnp.int32)
        return attention(q, k, v, bias=extra + t5_bias(table, rows, rows)[None],
                         block_size=4, window=window)

    ct = jnp.asarray(rand((2, 9, 4, 3), 9))
    ya, va = jax.vjp(by_fn, q, k, v, table)
    yb, vb = jax.vjp(dense, q, k, v, table)
    assert_close(ya, yb, rtol=1e-12)
    for ga, gb in zip(va(ct), vb(ct)):
        assert_close(ga, gb, rtol=1e-11)


def test_integer_params_are_held_fixed_and_a_sweep_equals_the_calls_one_by_one():
    """A vmap over the params (float and integer leaves batched) equals the calls one by
    one, in value and in the params' gradient; the integer leaf gets no cotangent."""
    q, k, v = _jqkv(1, 6, 6, 2, 2, 3, seed=4)
    sweep = {"w": jnp.asarray([0.5, -1.0, 2.0]), "a": jnp.asarray([0.1, 0.4, 0.9]),
             "offset": jnp.asarray([0, 2, -3], jnp.int32)}

    def loss(p, window):
        o = attention(q, k, v, bias_fn=distance_bias, bias_params=p, causal=True,
                      block_size=2, window=window)
        return jnp.sum(jnp.sin(o))

    for window in (None, 3):
        f = jax.jit(jax.vmap(jax.value_and_grad(functools.partial(loss, window=window),
                                                allow_int=True)))
        values, grads = f(sweep)
        assert grads["offset"].dtype == jax.dtypes.float0
        for i in range(3):
            p = jax.tree_util.tree_map(lambda a: a[i], sweep)
            value, grad = jax.value_and_grad(loss, allow_int=True)(p, window)
            assert_close(values[i], value, rtol=1e-12)
            assert_close(grads["w"][i], grad["w"], rtol=1e-11)
            assert_close(grads["a"][i], grad["a"], rtol=1e-11)
        assert len(set(np.round(np.asarray(values), 8))) == 3     # the sweep does something


def test_grad_of_grad_equals_the_twin():
    """The backward rule is plain JAX (a vjp of ``f`` per block): its own gradient in the
    table equals the twin's second derivative."""
    q, k, v = _jqkv(1, 5, 5, 2, 2, 3, seed=6)

    def inner(f, table):
        g = jax.grad(lambda q: jnp.sum(jnp.sin(f(q, k, v, bias_fn=t5_bias, bias_params=table,
                                                  block_size=2))))(q)
        return jnp.sum(g * g)

    table = _params("t5", 2)
    got = jax.grad(functools.partial(inner, attention))(table)
    want = jax.grad(functools.partial(inner, R.dot_product_attention))(table)
    assert_close(got, want, rtol=1e-9)


def test_no_t_by_s_residual_only_the_params():
    """The residuals of a step are the table and O(T) arrays: no ``(1, N, T, S)`` bias,
    while the dense bias of the same layer costs ``N T S`` floats."""
    t, n, h = 512, 2, 8
    q = jax.ShapeDtypeStruct((1, t, n, h), jnp.float32)
    table = jax.ShapeDtypeStruct((8, n), jnp.float32)

    def by_fn(q, k, v, table):
        return jnp.sum(attention(q, k, v, bias_fn=t5_bias, bias_params=table, causal=True))

    def dense(q, k, v, table):
        rows = jnp.arange(t, dtype=jnp.int32)
        return jnp.sum(attention(q, k, v, bias=t5_bias(table, rows, rows)[None], causal=True))

    res = saved_residuals(by_fn, q, q, q, table)
    assert max(math.prod(r.shape) for r in res) == t * n * h, [str(r) for r in res]
    assert any(r.shape == (8, n) for r in res)
    big = [r for r in saved_residuals(dense, q, q, q, table) if math.prod(r.shape) >= t * t]
    assert big, "the dense bias is kept: the test can fail"


def test_errors_at_trace_time():
    q, k, v = _jqkv(1, 4, 6, 2, 2, 3, seed=0)
    table = _params("t5", 2)
    with pytest.raises(TypeError, match="bias_fn must be callable"):
        attention(q, k, v, bias_fn=table, bias_params=table)
    with pytest.raises(ValueError, match="bias_params is given but bias_fn is None"):
        attention(q, k, v, bias_params=table)
    with pytest.raises(ValueError, match=r"returned shape \(2, 6, 4\) for t=4 rows and s=6 "
                                         r"cols; expected \(t, s\), \(N\|1, t, s\) or "
                                         r"\(B\|1, N\|1, t, s\) with B = 1, N = 2"):
        attention(q, k, v, bias_fn=lambda p, i, j: t5_bias(p, i, j).transpose(0, 2, 1),
                  bias_params=table)
    with pytest.raises(ValueError, match=r"returned shape \(3, 4, 6\)"):
        attention(q, k, v, bias_fn=t5_bias, bias_params=_params("t5", 3))
    with pytest.raises(TypeError, match="must return a floating array, got int32"):
        attention(q, k, v, bias_fn=lambda p, i, j: i[:, None] - j[None, :], bias_params=table)
    with pytest.raises(TypeError, match="must return one array, got tuple"):
        attention(q, k, v, bias_fn=lambda p, i, j: (t5_bias(p, i, j),), bias_params=table)
    # a function that only works at the full sizes fails at the first block, by name
    fixed = jnp.asarray(rand((4, 6), 2))
    with pytest.raises(ValueError, match=r"returned shape \(4, 6\) for t=4 rows and s=2"):
        attention(q, k, v, bias_fn=lambda p, i, j: p * fixed, bias_params=jnp.asarray(1.0),
                  block_size=2)

    def closes_over(table):
        return jnp.sum(attention(q, k, v, bias_fn=lambda p, i, j: t5_bias(table, i, j),
                                 bias_params=None))

    with pytest.raises(TypeError, match=r"bias_fn closes over 1 traced value\(s\) "
                                        r"\(float64\(8, 2\)\); pass every array"):
        jax.grad(closes_over)(table)
    assert np.isfinite(closes_over(table))      # a concrete closure is a constant
