"""dot_product_attention(..., bias=b): jax.nn's additive bias on the scaled logits (T5's
learned relative position biases, ALiBi), before the mask and the softmax, with a gradient
``dbias = dS`` summed over the bias's axes of size 1. Custom VJP vs autodiff of the twin
(float64, 1e-10) and central differences over ``q, k, v`` and the bias; values and
gradients vs ``jax.nn.dot_product_attention(bias=...)``; several key blocks, grouped
heads, mask with causal and a fully masked row; vmap over a per-example bias; dropout;
other float dtypes; a ``-inf`` bias; the residuals (the caller's bias, no ``T x S``
activation); errors."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn import saved_residuals
from funcnet.ops import reference as R
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand
from tests.ops.test_attention import (DROP_KEY, _jax_nn_gives_nan_for_masked_rows_in_float64,
                                      _mask, _qkv)

jax.config.update("jax_enable_x64", True)

F32, F64 = jnp.float32, jnp.float64


def _bias_shape(kind, b, t, s, n):
    return {"full": (b, n, t, s), "t5": (1, n, t, s), "keys": (b, 1, 1, s), "ts": (t, s),
            "nts": (n, t, s), "rows": (b, n, t, 1), "heads": (1, n, 1, 1)}[kind]


def _bias(kind, b, t, s, n, seed=13, dtype=np.float64):
    if kind == "alibi":   # ALiBi (Press et al. 2022): -slope_n |i - j|, slopes 2^(-8 n / N)
        slopes = 2.0 ** (-8.0 * np.arange(1, n + 1) / n)
        dist = np.abs(np.arange(t)[:, None] - np.arange(s)[None, :])
        return jnp.asarray((-slopes[:, None, None] * dist)[None], dtype)
    return jnp.asarray(rand(_bias_shape(kind, b, t, s, n), seed), dtype)


def _bind(f, mask, causal, **kw):
    return lambda q, k, v, bias: f(q, k, v, mask, bias=bias, causal=causal, **kw)


# (id, (B, T, S, N, K, H), causal, mask kind, bias kind, block sizes); block sizes that do
# not divide S exercise the padded last block (bias padded with 0, the keys still -inf)
CASES = [
    ("full", (2, 3, 5, 2, 2, 4), False, None, "full", (None, 2)),
    ("t5_shared_over_batch_mask_causal", (2, 5, 5, 2, 2, 3), True, "rows", "t5", (None, 2)),
    ("key_bias_gqa_causal_key_padding", (2, 3, 6, 4, 2, 3), True, "keys", "keys", (None, 4)),
    ("ts_mqa", (1, 4, 7, 3, 1, 2), False, None, "ts", (None, 3)),
    ("full_gqa_fully_masked_row", (2, 4, 5, 4, 2, 3), False, "rows", "full", (None, 2)),
    ("unbatched_nts", (0, 3, 5, 2, 2, 3), True, None, "nts", (None, 2)),
]


@pytest.mark.parametrize("dims, causal, mask_kind, bias_kind, blocks",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(dims, causal, mask_kind, bias_kind,
                                                       blocks):
    """q, k, v AND the bias differentiated: the custom rule (every block size) equals the
    twin's autodiff to 1e-10 and central differences to 1e-6."""
    b, t, s, n, kh, h = dims
    mask = _mask(mask_kind, b, t, s, n) if b else None
    args = _qkv(b, t, s, n, kh, h, seed=1) + (_bias(bias_kind, b, t, s, n),)
    fs = [_bind(attention, mask, causal, block_size=bs) for bs in blocks]
    out = check_vjp(fs, _bind(R.dot_product_attention, mask, causal), args, seed=3)
    assert out["grads"][3].shape == args[3].shape and out["grads"][3].dtype == F64
    if mask_kind == "rows":     # batch 0, head 0, query 1 is fully masked: no dbias there
        assert not np.any(np.asarray(out["grads"][3])[0, 0, 1])
    plain = _bind(attention, mask, causal)(*args[:3], None)
    assert not np.allclose(out["value"], plain)          # the bias does something


@pytest.mark.parametrize("bias_kind", ["rows", "heads"])
def test_bias_constant_along_the_keys_changes_nothing_and_gets_zero_gradient(bias_kind):
    """A bias of size 1 along S shifts every logit of a row alike: the softmax ignores it,
    and ``dbias = sum_j dS_ij = 0`` (summed over the 3 key blocks in the scan's carry;
    one block's part alone is not 0)."""
    b, t, s, n, kh, h = 2, 4, 7, 4, 2, 3
    q, k, v = (jnp.asarray(a) for a in _qkv(b, t, s, n, kh, h, seed=2))
    bias = 3.0 * _bias(bias_kind, b, t, s, n)
    mask = _mask("rows", b, t, s, n)

    def loss(f):
        return lambda q, k, v, bias: jnp.sum(jnp.sin(f(q, k, v, bias)))
    run = jax.jit(lambda q, k, v, bias: [
        jax.value_and_grad(loss(_bind(f, mask, False, **kw)), (0, 1, 2, 3))(q, k, v, bias)
        for f, kw in ((attention, {"block_size": 3}), (attention, {}),
                      (R.dot_product_attention, {}))])
    outs = run(q, k, v, bias)
    (want, wgrads), = jax.jit(lambda q, k, v: [jax.value_and_grad(
        lambda q, k, v: jnp.sum(jnp.sin(attention(q, k, v, mask))),
        (0, 1, 2))(q, k, v)])(q, k, v)
    for val, grads in outs:
        assert grads[3].shape == bias.shape and grads[3].dtype == F64
        assert float(jnp.max(jnp.abs(grads[3]))) < 1e-13
        assert abs(float(val - want)) < 1e-12
        assert_close(grads[:3], wgrads, 1e-11, "q, k, v gradients vs no bias")


def _jax_nn(q, k, v, mask, bias, causal):
    with jax.numpy_dtype_promotion("standard"):  # jax.nn promotes float64 with float32
        return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, is_causal=causal)


@functools.lru_cache(maxsize=None)
def _vs_jax_nn(causal, has_mask):
    """Value and VJP (q, k, v, bias) of funcnet (3-key blocks and the default plan), its
    twin and jax.nn, in one compilation per (causal, mask, bias shape)."""
    def run(q, k, v, mask, bias, ct):
        m = mask if has_mask else None
        outs = []
        for f in (lambda *a: attention(*a[:3], m, bias=a[3], causal=causal, block_size=3),
                  lambda *a: attention(*a[:3], m, bias=a[3], causal=causal),
                  lambda *a: R.dot_product_attention(*a[:3], m, bias=a[3], causal=causal),
                  lambda *a: _jax_nn(*a[:3], m, a[3], causal)):
            y, vjp = jax.vjp(f, q, k, v, bias)
            outs.append((y, vjp(ct)))
        return outs
    return jax.jit(run)


@pytest.mark.parametrize("bias_kind, causal, has_mask, dtype, rtol", [
    ("full", True, True, F64, 2e-6),
    ("full", False, False, F32, 2e-5),
    ("t5", True, True, F64, 2e-6),
    ("t5", True, False, F32, 2e-5),
    ("alibi", True, False, F64, 2e-6),
    ("keys", False, True, F64, 2e-6),
    ("ts", True, True, F64, 2e-6),
    ("ts", False, False, F32, 2e-5),
], ids=["full_mask_causal_f64", "full_f32", "t5_mask_causal_f64", "t5_causal_f32",
        "alibi_causal_f64", "keys_mask_f64", "ts_mask_causal_f64", "ts_f32"])
def test_equals_jax_nn_dot_product_attention_with_bias(bias_kind, causal, has_mask, dtype,
                                                       rtol):
    """Same value and gradients (q, k, v and bias) as jax.nn(bias=...) with grouped heads
    (N = 4, K = 2), T != S, three blocks of 3 keys (S = 7) and, with the mask, a fully
    masked row. jax.nn's softmax runs in float32 even for float64: hence 2e-6."""
    if has_mask and dtype == F64 and _jax_nn_gives_nan_for_masked_rows_in_float64():
        pytest.skip("this JAX's jax.nn returns NaN for a fully masked float64 row")
    b, t, s, n, kh, h = 2, 5, 7, 4, 2, 4
    q, k, v = (jnp.asarray(a, dtype) for a in _qkv(b, t, s, n, kh, h, seed=11))
    bias = _bias(bias_kind, b, t, s, n, dtype=dtype)
    mask = _mask("rows", b, t, s, n)
    ct = jnp.asarray(rand((b, t, n, h), 5), dtype)
    *ours, (y_nn, g_nn) = _vs_jax_nn(causal, has_mask)(q, k, v, mask, bias, ct)
    for y, g in ours:
        assert y.dtype == dtype and g[3].dtype == dtype and g[3].shape == bias.shape
        assert_close(y, y_nn, rtol, "value vs jax.nn")
        assert_close(g, g_nn, 5 * rtol, "vjp (q, k, v, bias) vs jax.nn")
    if dtype == F64:
        assert_close(ours[:2], [ours[2]] * 2, 1e-12, "vs the twin")


def _loss(f):
    def loss(q, k, v, bias):
        y = f(q, k, v, bias)
        return jnp.sum(jnp.sin(y)) + 0.1 * jnp.sum(y ** 2)
    return loss


def test_vmap_over_a_per_example_bias():
    """Per-example gradients under vmap with a per-example (1, N, T, S) bias (and q, k, v),
    and with only the bias mapped; equal to the twin and to one example alone."""
    q, k, v = (jnp.asarray(a) for a in _qkv(4, 5, 6, 2, 1, 3, seed=2))
    q, k, v = q[:, None], k[:, None], v[:, None]   # 4 examples of batch 1
    bias = jnp.asarray(rand((4, 1, 2, 5, 6), 21))
    ours = _bind(attention, None, True, block_size=4)
    ref = _bind(R.dot_product_attention, None, True)
    grad = functools.partial(jax.grad, argnums=(0, 1, 2, 3))

    run = jax.jit(lambda q, k, v, bias: [
        [jax.vmap(grad(_loss(f)))(q, k, v, bias), grad(_loss(f))(q[2], k[2], v[2], bias[2]),
         jax.vmap(grad(_loss(f)), in_axes=(None, None, None, 0))(q[0], k[0], v[0], bias)]
        for f in (ours, ref)])
    (got, one, bias_only), (want, _, want_bias_only) = run(q, k, v, bias)
    assert got[3].shape == bias.shape
    assert_close(jax.tree_util.tree_map(lambda g: g[2], got), one, 1e-12, "vmap vs single")
    assert_close(got, want, 1e-10, "vmap(grad) vs the twin")
    assert_close(bias_only, want_bias_only, 1e-10, "vmap over the bias only vs the twin")


@pytest.mark.parametrize("dims, causal, mask_kind, bias_kind, blocks", [
    ((2, 3, 5, 2, 2, 4), False, None, "full", (None, 2)),
    ((2, 4, 6, 4, 2, 3), True, "rows", "t5", (None, 4)),
], ids=["full_padded_blocks", "t5_gqa_causal_fully_masked_row"])
def test_dropout_with_bias_equals_the_twin_with_the_same_key(dims, causal, mask_kind,
                                                             bias_kind, blocks):
    """The bias is added before the softmax and dropout drops the probabilities after it:
    with the same key the op (every block size) equals the twin in value and in the
    gradients of q, k, v and the bias (1e-10, central differences)."""
    b, t, s, n, kh, h = dims
    mask = _mask(mask_kind, b, t, s, n)
    args = _qkv(b, t, s, n, kh, h, seed=4) + (_bias(bias_kind, b, t, s, n, seed=8),)
    drop = dict(dropout_rate=0.4, dropout_key=DROP_KEY)
    fs = [_bind(attention, mask, causal, block_size=bs, **drop) for bs in blocks]
    y = check_vjp(fs, _bind(R.dot_product_attention, mask, causal, **drop), args,
                  seed=5)["value"]
    assert not np.allclose(y, _bind(attention, mask, causal)(*args))


@pytest.mark.parametrize("q_dtype, bias_dtype, rtol", [
    (F64, F32, 1e-6), (F32, jnp.bfloat16, 1e-5), (F32, F64, 1e-5)],
    ids=["f64_q_f32_bias", "f32_q_bf16_bias", "f32_q_f64_bias"])
def test_bias_of_another_float_dtype_keeps_its_dtype(q_dtype, bias_dtype, rtol):
    """The bias is cast to the compute dtype for the logits; its gradient comes back in
    its own dtype and shape, as the twin's autodiff gives it."""
    q, k, v = (jnp.asarray(a, q_dtype) for a in _qkv(2, 4, 7, 2, 2, 3, seed=6))
    bias = _bias("t5", 2, 4, 7, 2, dtype=bias_dtype)
    ct = jnp.asarray(rand((2, 4, 2, 3), 9), q_dtype)
    run = jax.jit(lambda q, k, v, bias: [
        (lambda y, vjp: (y, vjp(ct)))(*jax.vjp(f, q, k, v, bias))
        for f in (_bind(attention, None, True, block_size=3),
                  _bind(R.dot_product_attention, None, True))])
    (y, g), (y_ref, g_ref) = run(q, k, v, bias)
    assert y.dtype == q_dtype and g[3].dtype == bias_dtype and g[3].shape == bias.shape
    assert_close(y, y_ref, rtol, "value vs twin")
    assert_close(g[:3], g_ref[:3], 10 * rtol, "q, k, v gradients vs twin")
    tol = 2 ** -7 if bias_dtype == jnp.bfloat16 else 10 * rtol
    assert_close(np.asarray(g[3], np.float64), np.asarray(g_ref[3], np.float64), tol,
                 "bias gradient vs twin")


def test_minus_infinity_bias_over_a_whole_key_block():
    """An additive -inf mask in the bias (jax.nn's habit) hiding the whole first block of
    3 keys from rows 1..3: the online softmax shifts those rows by 0 until a finite logit
    comes (no NaN); equal to the twin (and jax.nn); no gradient at a -inf entry."""
    b, t, s, n, kh, h = 1, 4, 7, 2, 2, 3
    bias = np.zeros((1, 1, t, s))
    bias[:, :, 1:, :3] = -np.inf
    args = _qkv(b, t, s, n, kh, h, seed=3) + (jnp.asarray(bias),)
    fs = [_bind(attention, None, False, block_size=bs) for bs in (3, None)]
    out = check_vjp(fs, _bind(R.dot_product_attention, None, False), args, seed=2)
    assert np.all(np.isfinite(out["value"]))
    assert not np.any(np.asarray(out["grads"][3])[:, :, 1:, :3])
    assert_close(out["value"], _jax_nn(*args[:3], None, args[3], False), 2e-6, "vs jax.nn")


def _activation_bytes(res):
    return sum(r.nbytes for r in res if not r.is_argument)


def test_residuals_are_the_callers_bias_and_no_probabilities():
    """With a (1, N, T, S) bias the backward pass keeps the caller's bias (an argument),
    never a T x S activation: the activations are those of the op without a bias."""
    t, n, h = 256, 2, 8
    q = jax.ShapeDtypeStruct((1, t, n, h), F32)
    bias = jax.ShapeDtypeStruct((1, n, t, t), F32)

    def res(with_bias):
        if with_bias:
            return saved_residuals(lambda q, k, v, b: jnp.sum(
                attention(q, k, v, bias=b, causal=True, block_size=64)), q, q, q, bias)
        return saved_residuals(lambda q, k, v: jnp.sum(
            attention(q, k, v, causal=True, block_size=64)), q, q, q)
    got = res(True)
    big = [r for r in got if math.prod(r.shape) >= t * t]
    assert [(r.shape, r.is_argument) for r in big] == [((1, n, t, t), True)]
    assert _activation_bytes(got) == _activation_bytes(res(False)) == t * n * (h + 2) * 4


# ------------------------------------------------------------------------------ errors
def _args():
    q, k, v = _qkv(2, 3, 5, 4, 2, 6)
    return q, k, v


BIAS_ERRORS = [
    (np.ones((2, 4, 3, 5), bool), TypeError,
     r"dot_product_attention: bias must be a floating array added to the logits, got bool "
     r"with shape \(2, 4, 3, 5\); pass a boolean mask as mask= \(True = attend\)"),
    (np.ones((2, 4, 3, 5), np.int32), TypeError,
     r"dot_product_attention: bias must have a floating dtype, got int32"),
    (np.ones((4, 3, 5)), ValueError,     # rank 3 with a batched q: not right-aligned
     r"dot_product_attention: bias has shape \(4, 3, 5\) \(rank 3\), expected rank 4 \(B, "
     r"N, T, S\) = \(2, 4, 3, 5\) \(each size 1 or full\) or rank 2 \(T, S\) = \(3, 5\); "
     r"a bias shared over the batch is \(1, N, T, S\) = \(1, 4, 3, 5\) \(no right-aligned"),
    (np.ones((5,)), ValueError, r"bias has shape \(5,\) \(rank 1\), expected rank 4"),
    (np.ones((2, 4, 3, 4)), ValueError,
     r"dot_product_attention: bias has shape \(2, 4, 3, 4\), expected a shape broadcastable "
     r"to \(2, 4, 3, 5\) \(B, N, T, S\); a bias shared over the batch is \(1, N, T, S\)"),
    (np.ones((1, 2, 3, 5)), ValueError,
     r"bias has shape \(1, 2, 3, 5\), expected a shape broadcastable to \(2, 4, 3, 5\)"),
    ([[0.0]], TypeError, r"dot_product_attention: bias must be an array, got list"),
]


@pytest.mark.parametrize("bias, exc, match", BIAS_ERRORS,
                         ids=["bool", "int", "rank3_batched", "rank1", "wrong_S",
                              "wrong_N", "list"])
def test_bad_bias_raises_eagerly_and_under_jit(bias, exc, match):
    q, k, v = _args()
    for f in (attention, R.dot_product_attention):
        with pytest.raises(exc, match=match):
            f(q, k, v, bias=bias)
        if hasattr(bias, "shape"):
            with pytest.raises(exc, match=match):
                jax.jit(lambda q, b: f(q, k, v, bias=b))(q, bias)


def test_unbatched_q_takes_an_nts_bias_and_checks_it():
    q, k, v = (a[0] for a in _args())
    for f in (attention, R.dot_product_attention):
        with pytest.raises(ValueError, match=r"bias has shape \(5,\) \(rank 1\), expected "
                                             r"rank 3 \(N, T, S\) = \(4, 3, 5\) .* a bias "
                                             r"shared over the batch is \(N, T, S\)"):
            f(q, k, v, bias=np.ones((5,)))
        with pytest.raises(ValueError, match=r"bias has shape \(2, 3, 5\), expected a shape "
                                             r"broadcastable to \(1, 4, 3, 5\)"):
            f(q, k, v, bias=np.ones((2, 3, 5)))


def test_float_mask_points_to_bias():
    """jax.nn's 4th positional argument is the bias: a float array there is refused,
    naming ``bias=``."""
    q, k, v = _args()
    for f in (attention, R.dot_product_attention):
        with pytest.raises(TypeError, match=r"mask must have dtype bool \(True = attend\), "
                                            r"got float64 with shape \(2, 4, 3, 5\); pass an "
                                            r"additive float array as bias="):
            f(q, k, v, np.zeros((2, 4, 3, 5)))
