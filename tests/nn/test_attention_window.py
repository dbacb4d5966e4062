"""nn.MultiHeadAttention(window=W): sliding-window attention against plain attention with
the band in the mask (grouped-query, rope, a padding mask; values and gradients, float64,
1e-10); decoding past the cache with a ring buffer of the last W positions (rope keys kept
at their absolute positions): token by token, in chunks longer than W, and in a jitted
lax.scan, the logits equal one windowed causal pass; dropout in training; errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, numpy_init, randint, randn
from tests.nn.test_attention_decode import decode_in_chunks
from tests.nn.test_attention_gqa import plain_gqa
from tests.ops.test_attention_window import _band, _window_by_hand

V, D, W, L, N = 11, 16, 3, 9, 2
ROPE = {"base": 100.0}


@functools.lru_cache(maxsize=None)
def _vs_plain(causal):
    layer = nn.MultiHeadAttention(4, num_kv_heads=2, causal=causal, rope=ROPE, window=W)

    def loss(f):
        return lambda p, x, m: jnp.sum(jnp.sin(f(p, x, m)))

    def plain(p, x, m):
        band = _band(x.shape[1], x.shape[1], W, causal)[None, None] & m
        return plain_gqa(p, x, x, band, heads=4, kv=2, causal=False, rope=ROPE)
    ours = jax.value_and_grad(loss(lambda p, x, m: layer.apply(p, (), (x, m))[0]), (0, 1))
    return layer, jax.jit(lambda p, x, m: (ours(p, x, m),
                                           jax.value_and_grad(loss(plain), (0, 1))(p, x, m)))


@pytest.mark.parametrize("causal", [True, False])
def test_equals_plain_attention_with_the_band_in_the_mask(causal):
    layer, run = _vs_plain(causal)
    _, params, _ = numpy_init(layer, ((-1, 7, 8), (-1, 1, 1, 7)))
    mask = jnp.asarray(np.arange(7) != 5).reshape(1, 1, 1, 7).repeat(2, 0)
    got, want = run(params, randn((2, 7, 8), seed=2), mask)
    assert_close(got, want, 1e-10, "values and gradients")


def gpt(decode=False, window=W):
    attn = nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(
        4, num_kv_heads=2, causal=True, decode=decode, rope=ROPE, window=window))
    mlp = nn.serial(nn.LayerNorm(), nn.Dense(32), nn.GELU(), nn.Dense(D))
    block = nn.serial(nn.Residual(attn), nn.Residual(mlp))
    return nn.TiedEmbedding(V, D, nn.serial(nn.Repeat(block, 2), nn.LayerNorm()))


@functools.lru_cache(maxsize=None)
def models():
    """The windowed GPT's params, its full pass on (N, L) ids, the jitted decode step and
    its empty ring cache: init with (N, L) keeps W < L positions."""
    model, dec = gpt(), gpt(decode=True)
    _, params, state = numpy_init(model, (-1, L))
    ids = randint((N, L), V, seed=1)
    want, _ = jax.jit(model.apply)(params, state, ids)
    cache = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                   abstract_init(dec, (N, L))[2])
    return params, state, ids, want, jax.jit(dec.apply), cache


@pytest.mark.parametrize("chunks", [[1] * L, [5, 1, 3]], ids=["token_by_token", "chunk>W"])
def test_ring_buffer_decodes_past_the_cache_to_the_windowed_pass(chunks):
    params, state, ids, want, step, cache = models()
    ring = cache[0][0][1]                       # Repeat's attention state
    assert ring["k"].shape == (2, N, W, 2, 4)   # (layers, N, W, K, dh): W slots, not L
    got, _ = decode_in_chunks(step, params, cache, ids, chunks)
    assert_close(got, want, 1e-10, "decoded logits")
    # the window matters: the unwindowed model's logits differ
    full, _ = jax.jit(gpt(window=None).apply)(params, state, ids)
    assert float(jnp.max(jnp.abs(full - want))) > 1e-3


def test_ring_buffer_in_a_jitted_scan():
    params, _, ids, want, _, cache = models()
    dec = gpt(decode=True)

    @jax.jit
    def teacher_forced(params, cache, ids):     # one token per scan step, L > W steps
        def one(cache, tok):
            y, cache = dec.apply(params, cache, tok[:, None])
            return cache, y[:, 0]
        return lax.scan(one, cache, ids.T)[1].transpose(1, 0, 2)
    assert_close(teacher_forced(params, cache, ids), want, 1e-10, "scanned logits")


def test_a_cache_shorter_than_the_window_overflows_as_before():
    """init with L < W: a plain cache of L positions (the window never masks inside it),
    and the usual overflow error; a mask is refused with the ring only."""
    layer = nn.MultiHeadAttention(2, causal=True, decode=True, window=4)
    _, params, cache = numpy_init(layer, (1, 3, 4))
    assert cache["k"].shape == (1, 3, 2, 2)
    x = randn((1, 2, 4))
    _, cache = layer.apply(params, cache, x)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\): state\['index'\] is 2: "
                                         r"2 more positions do not fit in the 3"):
        layer.apply(params, cache, x)
    _, params, ring = numpy_init(layer, (1, 6, 4))
    assert ring["k"].shape == (1, 4, 2, 2)
    mask = jnp.ones((1, 1, 1, 2), bool)
    for f in (layer.apply, jax.jit(layer.apply)):
        with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\): decode=True with "
                                             r"window=4 keeps the last 4 positions in a ring"):
            f(params, ring, (x, mask))


def test_dropout_draws_the_windows_mask_in_training_only():
    """``train=True``: the probabilities dropped with the op's window mask for ``key`` (the
    projections and the mask written out by hand); ``train=False``: no dropout."""
    layer = nn.MultiHeadAttention(2, causal=True, window=W, dropout_rate=0.3, use_bias=False,
                                  dtype=jnp.float64)
    _, params, _ = numpy_init(layer, (-1, 7, 4))
    x, key = randn((2, 7, 4), seed=3), jax.random.PRNGKey(4)
    q, k, v = (jnp.reshape(x @ params[f"w{p}"], (2, 7, 2, 2)) for p in "qkv")
    want = _window_by_hand(q, k, v, W, 0.3, key).reshape(2, 7, 4) @ params["wo"]
    y, _ = jax.jit(lambda p, x, key: layer.apply(p, (), x, key=key, train=True))(params, x, key)
    assert_close(y, want, 1e-12, "train=True")
    plain = nn.MultiHeadAttention(2, causal=True, window=W, use_bias=False, dtype=jnp.float64)
    assert_close(layer.apply(params, (), x, key=key, train=False)[0],
                 plain.apply(params, (), x)[0], 0.0, "train=False")


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"window": 0}, ValueError, r"MultiHeadAttention\(2\): window must be >= 1, got 0"),
    ({"window": 2.5}, TypeError, r"MultiHeadAttention\(2\): window must be an int"),
])
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nn.MultiHeadAttention(2, **kwargs)
