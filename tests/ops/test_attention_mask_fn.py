"""dot_product_attention(..., mask_fn=f, mask_params=p): a boolean mask ``f(p, rows, cols)``
computed per block (packed sequences' segment ids, a prefix-LM mask), and-ed with ``mask``
and ``causal``, never a ``T x S`` array. Packed sequences equal each sequence attended
alone (values and gradients, with a window too); custom VJP vs autodiff of the twin
(float64, 1e-10) and central differences at several block sizes; equal to the op with the
dense ``mask=``; vmap over examples; the residuals (the segment ids, no ``T x S`` mask);
errors at trace time."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn import saved_residuals
from funcnet.ops import reference as R, same_segment
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand
from tests.ops.test_attention import DROP_KEY, _mask, _qkv
from tests.ops.test_attention_bias_fn import _jqkv, t5_bias

jax.config.update("jax_enable_x64", True)


def prefix_lm(prefix, rows, cols):
    """A prefix LM's ``(t, s)`` mask: the first ``prefix`` keys are seen by every query,
    the rest causally."""
    return (cols[None, :] <= rows[:, None]) | (cols[None, :] < prefix)


def _segments(b, t, seed=3):
    """``(B, T)`` int32 ids of 2-4 packed sequences per row, sorted."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.sort(rng.integers(0, 3, (b, t)), axis=1), jnp.int32)


def _bind(f, fn, params, mask, causal, **kw):
    return lambda q, k, v: f(q, k, v, mask, mask_fn=fn, mask_params=params, causal=causal,
                             **kw)


# (id, (B, T, S, N, K, H), causal, mask kind, mask_fn kind, extra keywords, block sizes)
CASES = [
    ("segments_causal_padded_blocks", (2, 7, 7, 2, 2, 3), True, None, "segments", {},
     (None, 2, 3)),
    ("segments_gqa_key_padding_t5", (2, 6, 6, 4, 2, 3), False, "keys", "segments",
     {"bias_fn": t5_bias, "bias_params": jnp.asarray(rand((8, 4), 5))}, (None, 4)),
    ("cross_segments_t_lt_s_dropout", (2, 4, 7, 2, 1, 3), False, None, "cross",
     {"dropout_rate": 0.3, "dropout_key": DROP_KEY}, (None, 3)),
    ("segments_window_causal", (2, 9, 9, 2, 2, 3), True, None, "segments", {"window": 3},
     (None, 2)),
    ("prefix_lm_unbatched_window", (0, 8, 8, 2, 2, 3), False, None, "prefix",
     {"window": 4}, (None, 3)),
    ("prefix_lm_fully_masked_rows", (2, 5, 5, 2, 2, 3), False, "rows", "prefix", {},
     (None, 2)),
]


def _fn_and_params(kind, b, t, s):
    if kind == "segments":
        return same_segment, _segments(b, t)
    if kind == "cross":
        return same_segment, (_segments(b, t), _segments(b, s, seed=4))
    return prefix_lm, jnp.int32(3)


@pytest.mark.parametrize("dims, causal, mask_kind, kind, kw, blocks", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(dims, causal, mask_kind, kind, kw,
                                                       blocks):
    b, t, s, n, kh, h = dims
    mask = _mask(mask_kind, b, t, s, n) if b else None
    fn, params = _fn_and_params(kind, max(b, 1), t, s)
    args = _qkv(b, t, s, n, kh, h, seed=1)
    fs = [_bind(attention, fn, params, mask, causal, block_size=bs, **kw) for bs in blocks]
    out = check_vjp(fs, _bind(R.dot_product_attention, fn, params, mask, causal, **kw), args,
                    seed=3)
    plain = _bind(attention, None, None, mask, causal, **kw)(*args)
    assert not np.allclose(out["value"], plain)                 # the mask does something


def _packed_and_alone(window):
    """Causal attention over a row of 3 packed sequences (lengths 5, 4, 3) and over each
    sequence alone, concatenated."""
    bounds = [(0, 5), (5, 9), (9, 12)]
    seg = jnp.asarray([[i for i, (a, z) in enumerate(bounds) for _ in range(z - a)]] * 2,
                      jnp.int32)

    def packed(q, k, v):
        return attention(q, k, v, causal=True, window=window, block_size=4,
                         mask_fn=same_segment, mask_params=seg)

    def alone(q, k, v):
        return jnp.concatenate([attention(q[:, a:z], k[:, a:z], v[:, a:z], causal=True,
                                          window=window) for a, z in bounds], axis=1)
    return packed, alone


@pytest.mark.parametrize("window", [None, 3])
def test_packed_sequences_equal_each_sequence_alone(window):
    """The segment mask makes a packed row exactly the sequences attended one by one, in
    value and in every gradient (no attention, no gradient across a boundary)."""
    q, k, v = _jqkv(2, 12, 12, 4, 2, 3, seed=7)
    packed, alone = _packed_and_alone(window)
    ct = jnp.asarray(rand((2, 12, 4, 3), 8))
    ya, va = jax.vjp(packed, q, k, v)
    yb, vb = jax.vjp(alone, q, k, v)
    assert_close(ya, yb, rtol=1e-12)
    assert_close(va(ct), vb(ct), rtol=1e-11)
    whole = attention(q, k, v, causal=True, window=window)
    assert not np.allclose(whole, yb)           # without the mask the sequences mix


@pytest.mark.parametrize("window", [None, 3])
def test_equals_the_op_with_the_dense_mask(window):
    """``mask_fn`` equals ``mask=f(p, arange(T), arange(S))`` and-ed with a given mask."""
    q, k, v = _jqkv(2, 9, 9, 4, 2, 3, seed=2)
    seg = _segments(2, 9)
    keys = _mask("keys", 2, 9, 9, 4)
    rows = jnp.arange(9, dtype=jnp.int32)
    ct = jnp.asarray(rand((2, 9, 4, 3), 9))
    ya, va = jax.vjp(lambda q, k, v: attention(q, k, v, keys, mask_fn=same_segment,
                                               mask_params=seg, block_size=4, window=window),
                     q, k, v)
    yb, vb = jax.vjp(lambda q, k, v: attention(q, k, v, keys & same_segment(seg, rows, rows),
                                               block_size=4, window=window), q, k, v)
    assert_close(ya, yb, rtol=1e-12)
    assert_close(va(ct), vb(ct), rtol=1e-11)


def test_vmap_over_examples_with_their_segment_ids():
    """A vmap over unbatched sequences, each with its segment ids ``(T,)`` (``same_segment``
    gives ``(t, s)`` masks), equals the batched call with ``(B, 1, t, s)`` ones."""
    q, k, v = _jqkv(3, 8, 8, 2, 2, 3, seed=5)
    seg = _segments(3, 8)

    def one(q, k, v, seg):
        return attention(q, k, v, causal=True, block_size=3, mask_fn=same_segment,
                         mask_params=seg)
    got = jax.jit(jax.vmap(one))(q, k, v, seg)
    want = attention(q, k, v, causal=True, block_size=3, mask_fn=same_segment,
                     mask_params=seg)
    assert_close(got, want, rtol=1e-12)


def test_no_t_by_s_residual_only_the_segment_ids():
    """A step keeps the ``(B, T)`` segment ids, not the ``(B, 1, T, T)`` mask that the
    dense form keeps (so the test can fail)."""
    b, t, n, h = 2, 512, 2, 8
    q = jax.ShapeDtypeStruct((b, t, n, h), jnp.float32)
    seg = jax.ShapeDtypeStruct((b, t), jnp.int32)

    def by_fn(q, k, v, seg):
        return jnp.sum(attention(q, k, v, causal=True, mask_fn=same_segment, mask_params=seg))

    def dense(q, k, v, seg):
        rows = jnp.arange(t, dtype=jnp.int32)
        return jnp.sum(attention(q, k, v, same_segment(seg, rows, rows), causal=True))

    res = saved_residuals(by_fn, q, q, q, seg)
    assert max(math.prod(r.shape) for r in res) == b * t * n * h, [str(r) for r in res]
    assert any(r.shape == (b, t) and r.dtype == jnp.int32 for r in res)
    assert any(math.prod(r.shape) >= b * t * t for r in saved_residuals(dense, q, q, q, seg))


def test_errors_at_trace_time():
    q, k, v = _jqkv(2, 4, 6, 2, 2, 3, seed=0)
    seg = (_segments(2, 4), _segments(2, 6))
    with pytest.raises(TypeError, match="mask_fn must be callable"):
        attention(q, k, v, mask_fn=seg, mask_params=seg)
    with pytest.raises(ValueError, match="mask_params is given but mask_fn is None"):
        attention(q, k, v, mask_params=seg)
    with pytest.raises(TypeError, match=r"must return a boolean \(True = attend\) array, got "
                                        r"float64"):
        attention(q, k, v, mask_fn=lambda p, i, j: same_segment(p, i, j).astype(float),
                  mask_params=seg)
    with pytest.raises(ValueError, match=r"mask_fn\(mask_params, rows \(t,\) int32, cols "
                                         r"\(s,\) int32\) returned shape \(3, 1, 4, 6\) .* "
                                         r"with B = 2, N = 2"):
        attention(q, k, v, mask_fn=same_segment,
                  mask_params=(_segments(3, 4), _segments(3, 6)))
    with pytest.raises(TypeError, match=r"mask_fn closes over 2 traced value\(s\)"):
        jax.jit(lambda seg: attention(
            q, k, v, mask_fn=lambda p, i, j: same_segment(seg, i, j)))(seg)


def test_same_segment_refuses_short_or_float_ids_eagerly_and_under_jit():
    """Ids shorter than the positions would be gathered past their end (clamped ids,
    sequences silently mixed): refused when the op traces ``same_segment`` at ``(T,)``."""
    q, k, v = _jqkv(2, 6, 6, 2, 2, 3, seed=0)

    def call(ids):
        return attention(q, k, v, mask_fn=same_segment, mask_params=ids)
    for f in (call, jax.jit(call)):
        with pytest.raises(ValueError, match=r"same_segment: the query segment ids have shape "
                                             r"\(2, 5\), fewer than the 6 query positions"):
            f(_segments(2, 5))
        with pytest.raises(ValueError, match=r"the key segment ids have shape \(2, 4\), fewer "
                                             r"than the 6 key positions"):
            f((_segments(2, 6), _segments(2, 4)))
        with pytest.raises(TypeError, match=r"same_segment: the query segment ids must have an "
                                            r"integer dtype"):
            f(_segments(2, 6).astype(jnp.float64))
