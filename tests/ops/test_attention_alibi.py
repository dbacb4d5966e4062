"""dot_product_attention(..., alibi_slopes=m): ALiBi's ``-m_n |i - j|`` added to the scaled
logits per key block, never as a ``T x S`` array. Custom VJP (q, k, v and the slopes) vs
autodiff of the twin (float64, 1e-10) and central differences; equal to the same bias given
as ``bias=``; slopes per head or per sequence and head; with a mask, a bias, grouped heads,
several (padded) key blocks, an unbatched ``q``, dropout, a sliding window; ``vmap`` over
the slopes; the residuals (no ``T x S`` array); errors;
``nn.MultiHeadAttention(position_bias='alibi')`` uses it outside decoding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.position_bias import alibi_slopes as paper_slopes
from funcnet.ops import reference as R
from funcnet.ops.attention import dot_product_attention as attention
from tests.ops._cases import rand
from tests.ops.test_attention import DROP_KEY, _mask, _qkv
from tests.ops.test_attention_window import _band

jax.config.update("jax_enable_x64", True)

F32, F64 = jnp.float32, jnp.float64


def _slopes(kind, b, n):
    m = paper_slopes(n)
    return jnp.asarray(m if kind == "heads" else np.stack([m * (1 + i) for i in range(b)]))


def _as_bias(slopes, t, s, n):
    """The same ALiBi as an explicit ``(b, N, T, S)`` bias."""
    dist = jnp.asarray(np.abs(np.arange(t)[:, None] - np.arange(s)[None, :]), slopes.dtype)
    return -(jnp.reshape(slopes, (-1, n))[:, :, None, None] * dist[None, None])


# (id, (B, T, S, N, K, H), causal, mask kind, slopes kind, block sizes)
CASES = [
    ("heads_causal", (2, 6, 6, 4, 4, 3), True, None, "heads", (None, 2)),
    ("per_sequence_bidirectional_gqa", (2, 5, 7, 4, 2, 3), False, None, "batch", (None, 3)),
    ("heads_mask_fully_masked_row", (2, 4, 5, 4, 2, 3), False, "rows", "heads", (None, 2)),
    ("cross_t_ne_s_mqa_causal", (1, 3, 8, 2, 1, 2), True, "keys", "batch", (None, 3)),
    ("unbatched", (0, 5, 5, 2, 2, 3), True, None, "heads", (None, 2)),
]


@pytest.mark.parametrize("dims, causal, mask_kind, kind, blocks", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(dims, causal, mask_kind, kind, blocks):
    """q, k, v AND the slopes differentiated: every block size against the twin's autodiff
    (1e-10) and central differences (1e-6)."""
    b, t, s, n, kh, h = dims
    mask = _mask(mask_kind, b, t, s, n) if b else None
    slopes = _slopes(kind, b, n)
    args = _qkv(b, t, s, n, kh, h, seed=1) + (slopes,)
    fs = [lambda q, k, v, m, bs=bs: attention(q, k, v, mask, alibi_slopes=m, causal=causal,
                                              block_size=bs) for bs in blocks]
    out = check_vjp(fs, lambda q, k, v, m: R.dot_product_attention(
        q, k, v, mask, alibi_slopes=m, causal=causal), args, seed=3)
    assert out["grads"][3].shape == slopes.shape and out["grads"][3].dtype == F64
    assert float(jnp.max(jnp.abs(out["grads"][3]))) > 0
    plain = attention(*args[:3], mask, causal=causal)
    assert not np.allclose(out["value"], plain)          # the slopes do something


# (id, (B, T, S, N, K, H), causal, mask kind, slopes kind, window, query block sizes)
WINDOW_CASES = [
    ("causal_heads_fully_masked_row", (2, 7, 7, 4, 2, 3), True, "rows", "heads", 3, (None, 2)),
    ("bidirectional_per_sequence_t<s", (2, 5, 8, 2, 1, 3), False, "keys", "batch", 2,
     (None, 2)),
]


@pytest.mark.parametrize("dims, causal, mask_kind, kind, window, blocks",
                         [c[1:] for c in WINDOW_CASES], ids=[c[0] for c in WINDOW_CASES])
def test_with_a_window_vjp_matches_reference_and_the_band_in_the_mask(dims, causal, mask_kind,
                                                                      kind, window, blocks):
    """The sliding window computes ALiBi per query block over its span: every block size
    against the twin's autodiff and central differences (the slopes' gradient too), and
    the value equals the unwindowed op with the window's band in its mask."""
    b, t, s, n, kh, h = dims
    mask = _mask(mask_kind, b, t, s, n)
    slopes = _slopes(kind, b, n)
    args = _qkv(b, t, s, n, kh, h, seed=2) + (slopes,)
    fs = [lambda q, k, v, m, bs=bs: attention(q, k, v, mask, alibi_slopes=m, causal=causal,
                                              window=window, block_size=bs) for bs in blocks]
    out = check_vjp(fs, lambda q, k, v, m: R.dot_product_attention(
        q, k, v, mask, alibi_slopes=m, causal=causal, window=window), args, seed=4)
    assert float(jnp.max(jnp.abs(out["grads"][3]))) > 0
    banded = attention(*(jnp.asarray(a) for a in args[:3]),
                       mask & _band(t, s, window, causal)[None, None],
                       alibi_slopes=slopes, causal=causal)
    assert_close(out["value"], banded, 1e-12, "window vs the band in the mask")


@pytest.mark.parametrize("kind", ["heads", "batch"])
def test_equals_the_same_bias_given_as_bias(kind):
    """Value and gradients equal ``bias=-m |i - j|`` (3-key blocks, causal, a key padding
    mask, grouped heads), and the slopes' gradient is ``-sum dbias |i - j|``."""
    b, t, s, n, kh, h = 2, 7, 7, 4, 2, 3
    q, k, v = (jnp.asarray(a) for a in _qkv(b, t, s, n, kh, h, seed=4))
    mask, slopes = _mask("keys", b, t, s, n), _slopes(kind, b, n)
    bias = _as_bias(slopes, t, s, n)

    @jax.jit
    def run(q, k, v, slopes, bias):
        loss = lambda f: lambda *a: jnp.sum(jnp.sin(f(*a)))    # noqa: E731
        mine = jax.value_and_grad(loss(lambda q, k, v, m: attention(
            q, k, v, mask, alibi_slopes=m, causal=True, block_size=3)), (0, 1, 2, 3))
        other = jax.value_and_grad(loss(lambda q, k, v, c: attention(
            q, k, v, mask, bias=c, causal=True, block_size=3)), (0, 1, 2, 3))
        return mine(q, k, v, slopes), other(q, k, v, bias)
    (v1, g1), (v2, g2) = run(q, k, v, slopes, bias)
    assert abs(float(v1 - v2)) < 1e-12
    assert_close(g1[:3], g2[:3], 1e-12, "q, k, v gradients vs bias=")
    dist = jnp.asarray(np.abs(np.arange(t)[:, None] - np.arange(s)[None, :]), F64)
    want = -jnp.sum(g2[3] * dist[None, None], axis=(2, 3))
    assert_close(g1[3], want.reshape(slopes.shape) if kind == "batch" else want.sum(0),
                 1e-11, "dslopes vs -sum dbias |i - j|")


def test_with_a_bias_both_are_added_and_dropout_matches_the_bias_form():
    b, t, s, n, kh, h = 1, 5, 6, 2, 2, 3
    q, k, v = (jnp.asarray(a) for a in _qkv(b, t, s, n, kh, h, seed=5))
    slopes = _slopes("heads", b, n)
    extra = jnp.asarray(rand((1, n, t, s), 6))
    both = attention(q, k, v, bias=extra, alibi_slopes=slopes, dropout_rate=0.3,
                     dropout_key=DROP_KEY, block_size=2)
    summed = attention(q, k, v, bias=extra + _as_bias(slopes, t, s, n), dropout_rate=0.3,
                       dropout_key=DROP_KEY, block_size=4)
    assert_close(both, summed, 1e-12, "bias + alibi vs their sum as bias")
    assert_close(both, R.dot_product_attention(q, k, v, bias=extra, alibi_slopes=slopes,
                                               dropout_rate=0.3, dropout_key=DROP_KEY),
                 1e-12, "op vs twin with dropout")


def test_vmap_over_slopes_is_a_sweep():
    """A vmap over slope sets equals one call per set (value and dslopes)."""
    q, k, v = (jnp.asarray(a) for a in _qkv(2, 6, 6, 2, 2, 3, seed=8))
    sets = jnp.stack([_slopes("heads", 2, 2) * c for c in (0.5, 1.0, 3.0)])
    f = lambda m: jnp.sum(jnp.sin(attention(q, k, v, alibi_slopes=m, causal=True,  # noqa
                                            block_size=4)))
    vals, grads = jax.jit(jax.vmap(jax.value_and_grad(f)))(sets)
    for i in range(3):
        val, grad = jax.value_and_grad(f)(sets[i])
        assert abs(float(vals[i] - val)) < 1e-12
        assert_close(grads[i], grad, 1e-12, f"dslopes of set {i}")


def test_residuals_hold_no_t_by_s_array():
    """ALiBi keeps the slopes; ``bias=`` keeps the caller's ``(1, N, T, S)`` array."""
    b, t, n, h = 1, 512, 4, 8
    q = jnp.zeros((b, t, n, h), F32)
    slopes = jnp.asarray(paper_slopes(n), F32)
    bias = _as_bias(slopes, t, t, n).astype(F32)

    def saved(f, *args):
        return sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(
            jax.eval_shape(lambda *a: jax.vjp(f, *a)[1], *args)))

    with_alibi = saved(lambda q, m: attention(q, q, q, alibi_slopes=m, causal=True), q, slopes)
    with_bias = saved(lambda q, c: attention(q, q, q, bias=c, causal=True), q, bias)
    assert with_bias - with_alibi >= n * t * t - n
    assert with_alibi < 8 * b * t * n * h     # q, k, v, o and the row statistics


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(alibi_slopes=jnp.ones((3,))), ValueError,
     r"alibi_slopes has shape \(3,\), expected \(2,\) or \(2, 2\)"),
    (dict(alibi_slopes=jnp.ones((2, 2, 1))), ValueError, r"alibi_slopes has shape \(2, 2, 1\)"),
    (dict(alibi_slopes=jnp.ones((2,), bool)), TypeError, r"alibi_slopes"),
    (dict(alibi_slopes=jnp.ones((2,), jnp.int32)), TypeError, r"alibi_slopes"),
], ids=["heads", "rank", "bool", "int"])
def test_errors(kwargs, exc, match):
    q, k, v = (jnp.asarray(a) for a in _qkv(2, 3, 3, 2, 2, 2))
    with pytest.raises(exc, match=match):
        attention(q, k, v, **kwargs)
    with pytest.raises(exc, match=match):
        R.dot_product_attention(q, k, v, **kwargs)
    arrays = {n: a for n, a in kwargs.items() if isinstance(a, jax.Array)}
    static = {n: a for n, a in kwargs.items() if n not in arrays}
    with pytest.raises(exc, match=match):     # at trace time, with the slopes traced
        jax.jit(lambda q, k, v, a: attention(q, k, v, **a, **static))(q, k, v, arrays)


def test_unbatched_q_takes_per_head_slopes_only():
    q, k, v = (jnp.asarray(a) for a in _qkv(0, 3, 3, 2, 2, 2))
    with pytest.raises(ValueError, match=r"expected \(2,\): one slope per query head"):
        attention(q, k, v, alibi_slopes=jnp.ones((1, 2)))


def test_layer_uses_the_slopes_outside_decoding_and_positions_when_decoding():
    """``MultiHeadAttention(position_bias='alibi')`` passes ``alibi_slopes`` to the op in a
    full pass (no ``T x S`` residual) and a ``bias_fn`` of the absolute positions when
    decoding with the cache; both give the same outputs token by token."""
    t, f = 6, 8
    layer = nn.MultiHeadAttention(4, causal=True, position_bias="alibi", dtype=F64)
    x = jnp.asarray(rand((1, t, f), 9))
    _, params, state = layer.init(jax.random.PRNGKey(0), x.shape)
    text = str(jax.make_jaxpr(lambda p, x: layer.apply(p, state, x)[0])(params, x))
    assert f"f64[1,4,{t},{t}]" not in text        # no (1, N, T, S) bias array
    full, _ = layer.apply(params, state, x)
    dec = nn.MultiHeadAttention(4, causal=True, position_bias="alibi", dtype=F64, decode=True)
    _, _, cache = dec.init(jax.random.PRNGKey(0), (1, t, f))
    outs = []
    for i in range(t):
        y, cache = dec.apply(params, cache, x[:, i:i + 1])
        outs.append(y)
    assert_close(jnp.concatenate(outs, axis=1), full, 1e-12, "decoding vs full pass")
