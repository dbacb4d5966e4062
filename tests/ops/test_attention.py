"""dot_product_attention: blockwise custom VJP vs autodiff of the twin, central differences,
jax.nn.dot_product_attention, masks (fully masked rows), causal with T != S, grouped
heads, low precision, transforms (jit, vmap, grad of grad, reference_mode) and errors.
The memory claim (no T x S residual) is in test_attention_memory.py."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as R
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand

F64, F32 = jnp.float64, jnp.float32


def _qkv(b, t, s, n, kh, h, seed=0, dtype=np.float64):
    lead = (b,) if b else ()
    shapes = (lead + (t, n, h), lead + (s, kh, h), lead + (s, kh, h))
    return tuple(rand(shape, seed + i).astype(dtype) for i, shape in enumerate(shapes))


def _mask(kind, b, t, s, n, seed=7):
    """None; "keys": (B, 1, 1, S) padding mask; "rows": (B, N, T, S) random with a fully
    masked row in batch 0 / head 0 / query 1."""
    if kind is None:
        return None
    rng = np.random.default_rng(seed)
    if kind == "keys":
        m = np.ones((b, 1, 1, s), bool)
        m[..., s // 2:] = rng.random((b, 1, 1, s - s // 2)) > 0.5
        return jnp.asarray(m)
    m = rng.random((b, n, t, s)) > 0.4
    m[0, 0, min(1, t - 1), :] = False
    return jnp.asarray(m)


def _bind(f, mask, causal, **kw):
    return lambda q, k, v: f(q, k, v, mask, causal=causal, **kw)


# (id, (B, T, S, N, K, H), causal, mask kind, block sizes): block sizes that do not divide
# S exercise the padded last block; None is the default plan (one block here).
CASES = [
    ("mha", (2, 3, 5, 2, 2, 4), False, None, (None, 2)),
    ("causal_T<S", (1, 4, 7, 2, 2, 3), True, None, (None, 3)),
    ("causal_T>S", (1, 6, 4, 2, 2, 3), True, None, (None, 3)),
    ("mask_with_fully_masked_row", (2, 4, 5, 2, 2, 3), False, "rows", (None, 2)),
    ("mask_and_causal", (1, 5, 5, 2, 2, 2), True, "rows", (4,)),
    ("gqa_key_padding_mask", (2, 3, 6, 4, 2, 3), True, "keys", (None, 4)),
    ("mqa", (1, 3, 4, 3, 1, 2), False, None, (None, 1)),
    ("T1", (2, 1, 4, 2, 2, 3), False, None, (None, 3)),
    ("S1", (1, 3, 1, 2, 2, 3), False, None, (None,)),
    ("unbatched", (0, 3, 5, 2, 2, 3), True, None, (None, 2)),
]


@pytest.mark.parametrize("dims, causal, kind, blocks", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(dims, causal, kind, blocks):
    b, t, s, n, kh, h = dims
    mask = _mask(kind, b, t, s, n) if b else None
    args = _qkv(b, t, s, n, kh, h)
    fs = [_bind(attention, mask, causal, block_size=bs) for bs in blocks]
    y = check_vjp(fs, _bind(R.dot_product_attention, mask, causal), args, seed=3)["value"]
    assert y.shape == args[0].shape and y.dtype == F64


def _jax_nn(q, k, v, mask, causal):
    with jax.numpy_dtype_promotion("standard"):  # jax.nn promotes float64 with float32
        return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal)


@functools.lru_cache(maxsize=None)
def _jax_nn_gives_nan_for_masked_rows_in_float64() -> bool:
    """Older jax.nn (JAX 0.8) masks float64 logits with ``0.7 * finfo(float64).min``, which
    overflows its float32 softmax: a fully masked row is NaN (and its gradient poisons
    every key's). Newer jax.nn and funcnet use a value finite in float32 (the mean of v)."""
    one = jnp.ones((1, 1, 1, 1), jnp.float64)
    return bool(jnp.isnan(_jax_nn(one, one, one, jnp.zeros((1, 1, 1, 1), bool), False)).any())


@functools.lru_cache(maxsize=None)
def _vs_jax_nn(causal, has_mask):
    """One compilation per (causal, mask): value and VJP of funcnet (two block sizes) and jax.nn."""
    def run(q, k, v, mask, ct):
        m = mask if has_mask else None
        outs = []
        for f in (lambda *a: attention(*a, m, causal=causal, block_size=3),
                  lambda *a: attention(*a, m, causal=causal),
                  lambda *a: _jax_nn(*a, m, causal)):
            y, vjp = jax.vjp(f, q, k, v)
            outs.append((y, vjp(ct)))
        return outs
    return jax.jit(run)


@pytest.mark.parametrize("dtype, rtol", [(F32, 2e-5), (F64, 2e-6)], ids=["f32", "f64"])
@pytest.mark.parametrize("causal, has_mask", [(False, False), (True, False), (False, True),
                                              (True, True)], ids=["plain", "causal", "mask",
                                                                  "mask_causal"])
def test_equals_jax_nn_dot_product_attention(dtype, rtol, causal, has_mask):
    """Same value and gradient as jax.nn (xla) with T != S, a fully masked row included.

    jax.nn computes its softmax in float32 even for float64 inputs: hence 2e-6 in float64.
    """
    if has_mask and dtype == jnp.float64 and _jax_nn_gives_nan_for_masked_rows_in_float64():
        pytest.skip("this JAX's jax.nn returns NaN for a fully masked float64 row")
    b, t, s, n, h = 2, 5, 7, 3, 4
    q, k, v = (jnp.asarray(a, dtype) for a in _qkv(b, t, s, n, n, h, seed=11))
    mask = _mask("rows", b, t, s, n)
    ct = jnp.asarray(rand((b, t, n, h), 5), dtype)
    (y1, g1), (y2, g2), (y_nn, g_nn) = _vs_jax_nn(causal, has_mask)(q, k, v, mask, ct)
    assert y1.dtype == dtype and all(g.dtype == dtype for g in g1)
    for y, g in ((y1, g1), (y2, g2)):
        assert_close(y, y_nn, rtol, "value vs jax.nn")
        assert_close(g, g_nn, 5 * rtol, "vjp vs jax.nn")


def test_fully_masked_row_is_the_mean_of_the_values_with_zero_q_gradient():
    """jax.nn's convention (a finite large negative logit): uniform weights over all S keys,
    not NaN; the row's q gets no gradient, its keys none from it."""
    q, k, v = (jnp.asarray(a) for a in _qkv(1, 3, 4, 1, 1, 2, seed=4))
    mask = jnp.asarray(np.array([True, False, True])[None, None, :, None]
                       & np.ones((1, 1, 3, 4), bool))
    ct = jnp.zeros(q.shape).at[0, 1].set(1.0)
    run = jax.jit(lambda q, k, v: [
        (lambda y, vjp: (y, vjp(ct)))(*jax.vjp(
            lambda q, k, v: attention(q, k, v, mask, block_size=bs), q, k, v))
        for bs in (None, 3)] + [_jax_nn(q, k, v, mask, False)])
    *outs, y_nn = run(q, k, v)
    for y, (dq, dk, dv) in outs:
        np.testing.assert_allclose(y[0, 1, 0], jnp.mean(v[0, :, 0], axis=0), rtol=1e-14)
        assert not np.any(dq) and not np.any(dk)
        np.testing.assert_allclose(dv[0, :, 0], np.full((4, 2), 0.25), rtol=1e-14)
        if not _jax_nn_gives_nan_for_masked_rows_in_float64():
            assert_close(y, y_nn, 1e-6, "fully masked row vs jax.nn")


def test_causal_first_query_sees_only_the_first_key():
    """T = 1 causal (and the first row of any causal call): o = v_0, no gradient to q."""
    q, k, v = (jnp.asarray(a) for a in _qkv(2, 1, 4, 2, 2, 3, seed=6))
    run = jax.jit(lambda q, k, v: [
        (lambda y, vjp: (y, vjp(jnp.ones_like(y))))(*jax.vjp(
            lambda q, k, v: attention(q, k, v, causal=True, block_size=bs), q, k, v))
        for bs in (None, 3)])
    for y, (dq, dk, dv) in run(q, k, v):
        np.testing.assert_allclose(y, v[:, :1], rtol=1e-15)
        assert np.max(np.abs(dq)) < 1e-14 and np.max(np.abs(dk)) < 1e-14
        np.testing.assert_allclose(dv[:, 0], np.ones((2, 2, 3)), rtol=1e-15)
        assert not np.any(dv[:, 1:])


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_large_logits_in_low_precision_do_not_overflow(dtype):
    """Logits up to ~1e5 (float16 overflows at 65504): computed in float32, finite output
    equal to the float32 twin on the same rounded inputs, and finite gradients."""
    q, k, v = (jnp.asarray(a, dtype) for a in _qkv(2, 5, 9, 2, 2, 8, seed=9))
    q = q * jnp.asarray(60.0, dtype)
    k = k * jnp.asarray(20.0, dtype)
    run = jax.jit(lambda q, k, v: [
        jax.value_and_grad(lambda q, k, v: jnp.sum(f(q, k, v).astype(F32)), (0, 1, 2))(q, k, v)
        for f in (_bind(attention, None, True, block_size=4),
                  _bind(R.dot_product_attention, None, True))]
        + [R.dot_product_attention(*(a.astype(F32) for a in (q, k, v)), causal=True)])
    (val, grads), (val_ref, _), y32 = run(q, k, v)
    y = attention(q, k, v, causal=True, block_size=4)
    assert y.dtype == dtype and np.all(np.isfinite(np.asarray(y, np.float32)))
    assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in grads)
    tol = 2 ** -7 if dtype == jnp.bfloat16 else 2 ** -10
    assert_close(np.asarray(y, np.float32), y32, 2 * tol, "vs float32 math")
    assert abs(float(val) - float(val_ref)) <= 4 * tol * (1 + abs(float(val_ref)))


def _loss(f):
    def loss(q, k, v):
        return jnp.sum(jnp.sin(f(q, k, v))) + 0.1 * jnp.sum(f(q, k, v) ** 2)
    return loss


def test_jit_vmap_per_example_grads_and_grad_of_grad():
    """vmap over an extra batch axis (per-example gradients) and reverse-over-reverse
    (the backward rule is plain jnp/lax), against the twin, in one compilation."""
    q, k, v = (jnp.asarray(a) for a in _qkv(4, 5, 6, 2, 1, 3, seed=2))
    q, k, v = q[:, None], k[:, None], v[:, None]   # 4 examples of batch 1
    ours = _bind(attention, None, True, block_size=4)
    ref = _bind(R.dot_product_attention, None, True)

    def gg(f, q, k, v):  # curvature along k of |dL/dq|^2
        return jax.grad(lambda k: jnp.sum(jax.grad(_loss(f))(q, k, v) ** 2))(k)

    run = jax.jit(lambda q, k, v: [
        [jax.vmap(jax.grad(_loss(f), (0, 1, 2)))(q, k, v), jax.grad(_loss(f), (0, 1, 2))(
            q[2], k[2], v[2]), gg(f, q[0], k[0], v[0])] for f in (ours, ref)])
    (got, one, got2), (want, _, want2) = run(q, k, v)
    assert_close(jax.tree_util.tree_map(lambda g: g[2], got), one, 1e-12, "vmap vs single")
    assert_close(got, want, 1e-10, "vmap(grad) vs reference")
    assert_close(got2, want2, 1e-9, "grad(grad) vs reference")


def test_op_is_custom_vjp_with_one_scan_per_pass_and_reference_mode_swaps_it():
    q, k, v = (jnp.asarray(a) for a in _qkv(1, 4, 10, 2, 2, 3))
    f = _bind(attention, None, True, block_size=4)
    assert "custom_vjp_call" in str(jax.make_jaxpr(f)(q, k, v))
    jaxpr = jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(f(*a)), (0, 1, 2)))(q, k, v)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert [e.params["length"] for e in scans] == [3, 3]    # ceil(10 / 4) blocks, fwd + bwd
    one_block = jax.make_jaxpr(jax.grad(lambda *a: jnp.sum(attention(*a)), (0, 1, 2)))(q, k, v)
    assert "scan" not in str(one_block)                     # short S: one block, no loop
    with ops.reference_mode():   # a fresh function: traces are cached per function
        g = _bind(attention, None, True, block_size=4)
        assert "custom_vjp_call" not in str(jax.make_jaxpr(g)(q, k, v))
        y, y_dot = jax.jvp(g, (q, k, v), (q, k, v))           # forward mode works
    assert_close(y, f(q, k, v), 1e-12, "reference_mode value")
    eps = 1e-6
    fd = (f(q + eps * q, k + eps * k, v + eps * v) - f(q - eps * q, k - eps * k, v - eps * v))
    assert_close(y_dot, fd / (2 * eps), 1e-6, "jvp vs central differences")


def test_default_blocks_bound_the_working_set():
    """The default plan: one block when S fits, else ~2^18 scores per block (>= 64 keys)."""
    from funcnet.ops.attention import _plan
    assert _plan(256, 4 * 256, False, 1.0, None).blocks == 1
    p = _plan(512, 4 * 512, False, 1.0, None)
    assert (p.block, p.blocks) == (128, 4)
    p = _plan(1000, 2 * 1000, False, 1.0, None)
    assert p.block % 8 == 0 and p.block * p.blocks - 1000 < p.block and p.blocks == 8
    assert _plan(8192, 4 * 8192, False, 1.0, None).block == 64
    assert _plan(8192, 4, False, 1.0, None).blocks == 1      # one query: all keys at once
    assert _plan(5, 10, False, 1.0, 8).block == 5


# ------------------------------------------------------------------------------ errors
def _good():
    q, k, v = _qkv(2, 3, 5, 4, 2, 6)
    return {"q": q, "k": k, "v": v, "mask": None, "causal": False, "scale": None,
            "block_size": None}


ERRORS = [
    ({"q": np.zeros((3, 4, 6), np.int32)}, TypeError,
     r"dot_product_attention: q must have a floating dtype, got int32"),
    ({"q": np.zeros((3, 4))}, ValueError,
     r"dot_product_attention: q has shape \(3, 4\) \(rank 2\), expected rank 3 or 4 "
     r"\(B, T, N, H\) or \(T, N, H\)"),
    ({"q": np.zeros((3, 4, 6))}, ValueError,
     r"dot_product_attention: k has shape \(2, 5, 2, 6\) \(rank 4\), expected rank 3"),
    ({"k": np.zeros((2, 5, 2, 6), np.float32)}, TypeError,
     r"dot_product_attention: q has dtype float64 but k has dtype float32"),
    ({"v": np.zeros((2, 5, 2, 7))}, ValueError,
     r"dot_product_attention: v has shape \(2, 5, 2, 7\), expected \(2, 5, 2, 6\)"),
    ({"k": np.zeros((2, 5, 2, 5)), "v": np.zeros((2, 5, 2, 5))}, ValueError,
     r"dot_product_attention: k has shape \(2, 5, 2, 5\), expected \(2, \*, \*, 6\)"),
    ({"k": np.zeros((1, 5, 2, 6)), "v": np.zeros((1, 5, 2, 6))}, ValueError,
     r"k has shape \(1, 5, 2, 6\), expected \(2, \*, \*, 6\)"),
    ({"k": np.zeros((2, 5, 3, 6)), "v": np.zeros((2, 5, 3, 6))}, ValueError,
     r"q has 4 heads and k has 3; the number of query heads must be a multiple"),
    ({"k": np.zeros((2, 0, 2, 6)), "v": np.zeros((2, 0, 2, 6))}, ValueError,
     r"every size must be >= 1"),
    ({"mask": np.ones((2, 4, 3, 5), np.float32)}, TypeError,
     r"dot_product_attention: mask must have dtype bool \(True = attend\), got float32 "
     r"with shape \(2, 4, 3, 5\); pass an additive float array as bias="),
    ({"mask": np.ones((2, 4, 3, 4), bool)}, ValueError,
     r"mask has shape \(2, 4, 3, 4\), expected a shape broadcastable to \(2, 4, 3, 5\) "
     r"\(B, N, T, S\)"),
    ({"mask": np.ones((1, 2, 4, 3, 5), bool)}, ValueError, r"mask has shape \(1, 2, 4, 3, 5\)"),
    ({"mask": np.ones((5,), bool)}, ValueError,       # was right-aligned to (1, 1, 1, 5)
     r"dot_product_attention: mask has shape \(5,\) \(rank 1\), expected rank 4 \(B, N, T, "
     r"S\) = \(2, 4, 3, 5\) \(each size 1 or full\) or rank 2 \(T, S\) = \(3, 5\); a "
     r"key-padding mask is \(B, 1, 1, S\) = \(2, 1, 1, 5\)"),
    ({"mask": np.ones((1, 1, 5), bool)}, ValueError,  # was right-aligned to (1, 1, 1, 5)
     r"mask has shape \(1, 1, 5\) \(rank 3\), expected rank 4 .* \(B, 1, 1, S\) = "),
    ({"mask": np.ones((2, 5), bool)}, ValueError,     # (B, S) is not (T, S)
     r"mask has shape \(2, 5\), expected a shape broadcastable to \(2, 4, 3, 5\) \(B, N, T, "
     r"S\); a key-padding mask is \(B, 1, 1, S\)"),
    ({"mask": [[True]]}, TypeError, r"dot_product_attention: mask must be an array, got list"),
    ({"scale": float("nan")}, ValueError, r"dot_product_attention: scale must be finite"),
    ({"scale": "2"}, TypeError, r"dot_product_attention: scale must be a number or a scalar "
                                r"array, got str"),
    ({"scale": np.ones(2)}, ValueError, r"dot_product_attention: scale must be a scalar, got "
                                        r"shape \(2,\)"),
    ({"causal": 1}, TypeError, r"dot_product_attention: causal must be a bool, got int"),
    ({"block_size": 0}, ValueError, r"dot_product_attention: block_size must be >= 1, got 0"),
    ({"block_size": 2.0}, TypeError, r"dot_product_attention: block_size must be an int"),
]


@pytest.mark.parametrize("change, exc, match", ERRORS, ids=[e[2][:40] for e in ERRORS])
def test_bad_input_raises_eagerly_and_under_jit(change, exc, match):
    a = dict(_good(), **change)
    statics = {n: a.pop(n) for n in ("causal", "scale", "block_size")}
    for f in (attention, R.dot_product_attention):
        with pytest.raises(exc, match=match):
            f(a["q"], a["k"], a["v"], a["mask"], **statics)
        arrays = {n: x for n, x in a.items() if hasattr(x, "shape")}
        with pytest.raises(exc, match=match):
            jax.jit(lambda arr: f(arr["q"], arr["k"], arr["v"], arr.get("mask", a["mask"]),
                                  **statics))(arrays)


def test_mask_ranks_are_not_right_aligned():
    """nn_audit item 5: with B = N = T = S = 2, a (B, 1, S) or (S,) key-padding mask was
    right-aligned like jax.nn's and silently read as (N, 1, S) or the same keys for every
    example. Rank 4 (sizes 1 or full) and (T, S) work and equal the explicit full mask;
    rank 1 and 3 are refused naming (B, 1, 1, S); an unbatched q also takes (N, T, S)."""
    q, k, v = (jnp.asarray(a) for a in _qkv(2, 2, 2, 2, 2, 3, seed=12))
    valid = np.array([[True, True], [True, False]])     # example 1: key 1 is padding
    full = np.broadcast_to(valid[:, None, None, :], (2, 2, 2, 2))
    ts = np.array([[True, False], [True, True]])
    run = jax.jit(lambda q, k, v: [f(q, k, v, jnp.asarray(m)) for m in (
        full, valid[:, None, None, :], ts, np.broadcast_to(ts, (2, 2, 2, 2)))
        for f in (attention, R.dot_product_attention)])
    want, want_r, pad, pad_r, tmask, tmask_r, tfull, tfull_r = run(q, k, v)
    assert_close([want_r, pad, pad_r], [want] * 3, 1e-14, "(B, 1, 1, S) = full mask")
    assert_close([tmask, tmask_r, tfull_r], [tfull] * 3, 1e-14, "(T, S) = full mask")
    one = jax.jit(lambda q, k, v: [attention(q, k, v, jnp.asarray(m))
                                   for m in (full[1], full[1, :1, :1], full[1, :1])])
    assert_close(one(q[1], k[1], v[1]), [want[1]] * 3, 1e-14, "unbatched (N, T, S)")
    for f in (attention, R.dot_product_attention, jax.jit(attention)):
        for bad in (valid[:, None, :], valid[1]):      # (B, 1, S), (S,)
            with pytest.raises(ValueError, match=r"\(rank [13]\), expected rank 4 .* a key-"
                                                 r"padding mask is \(B, 1, 1, S\) = \(2, 1, 1, 2\)"):
                f(q, k, v, jnp.asarray(bad))
        with pytest.raises(ValueError, match=r"\(rank 1\), expected rank 3 \(N, T, S\) = "
                                             r"\(2, 2, 2\) .* is \(1, 1, S\) = \(1, 1, 2\)"):
            f(q[1], k[1], v[1], jnp.asarray(valid[1]))


# ----------------------------------------------------------------------------- dropout
DROP_KEY = jax.random.PRNGKey(11)

# (id, (B, T, S, N, K, H), causal, mask kind, block sizes); dropout on the probabilities
DROPOUT_CASES = [
    ("mha_padded_blocks", (2, 3, 5, 2, 2, 4), False, None, (None, 2)),
    ("gqa_causal_keys_mask", (2, 4, 6, 4, 2, 3), True, "keys", (None, 4)),
    ("fully_masked_row", (2, 4, 5, 2, 2, 3), False, "rows", (None, 3)),
]


@pytest.mark.parametrize("dims, causal, kind, blocks", [c[1:] for c in DROPOUT_CASES],
                         ids=[c[0] for c in DROPOUT_CASES])
def test_dropout_vjp_matches_reference_and_central_differences(dims, causal, kind, blocks):
    """The mask depends on the key only (not on block_size): every block size gives the
    twin's value, and the backward rule that regenerates the mask matches autodiff."""
    b, t, s, n, kh, h = dims
    mask = _mask(kind, b, t, s, n)
    args = _qkv(b, t, s, n, kh, h, seed=4)
    drop = dict(dropout_rate=0.4, dropout_key=DROP_KEY)
    fs = [_bind(attention, mask, causal, block_size=bs, **drop) for bs in blocks]
    y = check_vjp(fs, _bind(R.dot_product_attention, mask, causal, **drop), args,
                  seed=5)["value"]
    plain = _bind(attention, mask, causal)(*args)
    assert y.shape == plain.shape and not np.allclose(y, plain)


def test_dropout_is_per_key_unbiased_and_off_at_rate_zero():
    q, k, v = (jnp.asarray(a) for a in _qkv(2, 6, 7, 2, 2, 3))
    f = jax.jit(lambda key, rate: attention(q, k, v, causal=True, dropout_rate=rate,
                                            dropout_key=key), static_argnums=1)
    a, b, c = f(DROP_KEY, 0.3), f(DROP_KEY, 0.3), f(jax.random.PRNGKey(12), 0.3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert_close(f(DROP_KEY, 0.0), attention(q, k, v, causal=True), 1e-14, "rate 0")
    typed = attention(q, k, v, causal=True, dropout_rate=0.3,
                      dropout_key=jax.random.key(11))     # typed keys work too
    assert typed.shape == a.shape and np.all(np.isfinite(typed))
    # uniform probabilities (q = 0) and v = 1: o = mean_j Z_ij / (1 - r), E[o] = 1
    z = jnp.zeros((4, 64, 4, 8), F32)
    o = attention(z, z, jnp.ones_like(z), dropout_rate=0.5, dropout_key=DROP_KEY,
                  block_size=16)
    assert abs(float(jnp.mean(o)) - 1.0) < 0.02                 # 65536 draws: std 0.004
    assert float(jnp.mean(o == 0.0)) < 1e-3      # a row loses all 64 keys with p = 2^-64


@pytest.mark.parametrize("kw, exc, match", [
    ({"dropout_rate": 0.1}, ValueError,
     r"dot_product_attention: dropout_rate=0.1 needs dropout_key, a PRNG key"),
    ({"dropout_rate": 1.0, "dropout_key": DROP_KEY}, ValueError,
     r"dot_product_attention: dropout_rate must be in \[0, 1\), got 1"),
    ({"dropout_rate": "0.1", "dropout_key": DROP_KEY}, TypeError,
     r"dot_product_attention: dropout_rate must be a number or a scalar array"),
    ({"dropout_rate": 0.1, "dropout_key": 3}, TypeError,
     r"dot_product_attention: dropout_key must be a PRNG key"),
], ids=["no_key", "rate_1", "rate_str", "key_int"])
def test_dropout_arguments_are_checked(kw, exc, match):
    q, k, v = _qkv(1, 2, 3, 1, 1, 2)
    for f in (attention, R.dot_product_attention):
        with pytest.raises(exc, match=match):
            f(q, k, v, **kw)
        with pytest.raises(exc, match=match):                    # at trace time
            jax.jit(lambda q: f(q, k, v, **kw))(q)
