"""Autoregressive decoding with ``decode=True`` (nn.MultiHeadAttention's key/value cache,
nn.PositionEmbedding's index): a small GPT (Embedding, PositionEmbedding, Repeat of pre-LN
blocks with grouped-query causal attention, LayerNorm, Dense) decoded token by token, and
a prompt chunk then single tokens, gives the logits of one causal forward pass over the
whole sequence (float64, 1e-10); a jitted greedy generation loop (lax.scan) gives the
tokens of greedy decoding by full forward passes; a KeepRest/OnFirst stack with a padding
mask; one sequence (T, F); errors eagerly and under jit, overflow (NaN under jit)."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet import nn
from funcnet.nn import decoding
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, numpy_init, randint, randn

KEY = jax.random.PRNGKey(0)
V, D, L, N = 11, 16, 8, 2


def gpt(decode=False):
    attn = nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(4, num_kv_heads=2, causal=True,
                                                           decode=decode))
    mlp = nn.serial(nn.LayerNorm(), nn.Dense(32), nn.GELU(), nn.Dense(D))
    block = nn.serial(nn.Residual(attn), nn.Residual(mlp))
    return nn.serial(nn.Embedding(V, D), nn.PositionEmbedding(10, decode=decode),
                     nn.Repeat(block, 2), nn.LayerNorm(), nn.Dense(V))


@functools.lru_cache(maxsize=None)
def models():
    """The training model, its params, the decode model, its empty cache for (N, L), and
    their jitted applies (shared by the tests)."""
    model, dec = gpt(), gpt(decode=True)
    _, params, state = numpy_init(model, (-1, L))
    # the empty cache without drawing params: zeros (index 0) of the shapes init gives
    cache = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                   abstract_init(dec, (N, L))[2])
    return model, params, state, dec, cache, jax.jit(model.apply), jax.jit(dec.apply)


def test_decode_state_layout():
    model, params, state, dec, cache, *_ = models()
    pos, blocks = cache[1], cache[2][0][1]          # PositionEmbedding, Repeat's attention
    assert not jax.tree_util.tree_leaves(state)     # the training model keeps no state
    assert pos["index"].shape == () and pos["index"].dtype == jnp.int32
    assert blocks["k"].shape == blocks["v"].shape == (2, N, L, 2, 4)   # (layers, N, L, K, dh)
    assert blocks["index"].shape == (2,) and blocks["index"].dtype == jnp.int32
    # the decode model takes the training model's params (same tree, same shapes)
    _, dparams, _ = jax.eval_shape(lambda k: dec.init(k, (N, L)), KEY)
    assert jax.tree_util.tree_structure(dparams) == jax.tree_util.tree_structure(params)


def decode_in_chunks(step, params, cache, ids, chunks):
    """``step`` (a decode model's apply) over ``ids`` ``(N, sum(chunks))`` chunk by chunk:
    the logits of all positions, concatenated, and the last state."""
    outs, at = [], 0
    for t in chunks:
        y, cache = step(params, cache, ids[:, at:at + t])
        outs.append(y)
        at += t
    return jnp.concatenate(outs, axis=1), cache


@pytest.mark.parametrize("chunks", [[1] * L, [3, 1, 1, 1, 1, 1], [5, 3]],
                         ids=["token_by_token", "prompt_then_tokens", "two_chunks"])
def test_chunked_decoding_equals_one_causal_forward_pass(chunks):
    model, params, state, dec, cache, full, step = models()
    ids = randint((N, L), V, seed=1)
    want, _ = full(params, state, ids)
    got, c = decode_in_chunks(step, params, cache, ids, chunks)
    assert_close(got, want, 1e-10, "decoded logits")
    assert int(c[1]["index"]) == L and np.all(c[2][0][1]["index"] == L)


@pytest.mark.parametrize("window", [None, 3])
def test_visible_fn_is_the_causal_window_of_absolute_positions(window):
    """decoding.visible_fn: query row r (at start + r) sees key column c (at keys[c]) when
    the key is written (>= 0), not in its future and within the window, per block."""
    start, keys = jnp.int32(5), jnp.asarray([3, 4, -1, 2, 5, 6, 7, 0], jnp.int32)
    rows, cols = jnp.arange(3, dtype=jnp.int32), jnp.asarray([1, 2, 4, 5, 7], jnp.int32)
    got = decoding.visible_fn(window)((start, keys), rows, cols)
    p, j = 5 + np.arange(3)[:, None], np.asarray([4, -1, 5, 6, 0])[None, :]
    want = (j >= 0) & (j <= p) & (j > p - (window or 10 ** 9))
    np.testing.assert_array_equal(got, want)
    assert got.shape == (3, 5) and got.dtype == jnp.bool_
    assert decoding.visible_fn(window) is decoding.visible_fn(window)   # one per window


@functools.lru_cache(maxsize=None)
def generate_fn(prompt_len):
    _, _, _, dec, _, _, _ = models()

    @jax.jit
    def generate(params, cache, prompt):          # prompt (N, P) -> (N, L - P) new ids
        logits, cache = dec.apply(params, cache, prompt)
        tok = jnp.argmax(logits[:, -1], axis=-1)

        def body(carry, _):
            tok, cache = carry
            logits, cache = dec.apply(params, cache, tok[:, None])
            return (jnp.argmax(logits[:, -1], axis=-1), cache), tok
        (_, cache), toks = lax.scan(body, (tok, cache), None, length=L - prompt_len)
        return toks.T, cache
    return generate


def test_jitted_greedy_generation_loop_equals_full_forward_greedy():
    model, params, state, dec, cache, full, _ = models()
    prompt = randint((N, 3), V, seed=2)
    toks, end = generate_fn(3)(params, cache, prompt)
    assert toks.shape == (N, L - 3) and np.all(end[2][0][1]["index"] == L)
    seq = jnp.zeros((N, L), jnp.int32).at[:, :3].set(prompt)   # causal: the zeros after
    for t in range(3, L):                                      # position t change nothing
        nxt = jnp.argmax(full(params, state, seq)[0][:, t - 1], axis=-1)
        seq = seq.at[:, t].set(nxt.astype(jnp.int32))
    np.testing.assert_array_equal(toks, seq[:, 3:])
    # the cache is a value: the same empty cache starts another generation
    np.testing.assert_array_equal(generate_fn(3)(params, cache, prompt)[0], toks)


def test_keep_rest_stack_with_a_padding_mask_and_one_sequence():
    """(x, mask) through KeepRest/OnFirst/DropRest: the mask of decode=True covers the L
    cache positions; a (T, F) sequence gets a cache without N."""
    def stack(decode):
        attn = nn.serial(nn.OnFirst(nn.LayerNorm()),
                         nn.MultiHeadAttention(2, causal=True, decode=decode))
        mlp = nn.serial(nn.LayerNorm(), nn.Dense(D))
        return nn.serial(nn.KeepRest(attn, residual=True), nn.OnFirst(nn.Residual(mlp)),
                         nn.DropRest)
    model, dec = stack(False), stack(True)
    _, params, state = numpy_init(model, ((-1, L, D), (-1, 1, 1, L)))
    x = randn((N, L, D), 3)
    mask = jnp.asarray([[True] * L, [True] * 5 + [False] * 3]).reshape(N, 1, 1, L)
    want, _ = jax.jit(model.apply)(params, state, (x, mask))
    _, _, cache = dec.init(KEY, ((N, L, D), (N, 1, 1, L)))
    step = jax.jit(dec.apply)
    y1, c = step(params, cache, (x[:, :5], mask))
    y2, c = step(params, c, (x[:, 5:], mask))
    assert_close(jnp.concatenate([y1, y2], axis=1), want, 1e-10, "masked stack")
    # one sequence (T, F): the cache is (L, K, dh), index ()
    layer = nn.MultiHeadAttention(2, causal=True, decode=True)
    p = numpy_init(nn.MultiHeadAttention(2, causal=True), (L, D))[1]
    out, _, c = layer.init(KEY, (L, D))
    assert out == (L, D) and c["k"].shape == (L, 2, 8) and c["index"].shape == ()
    assert not any(np.any(a) for a in jax.tree_util.tree_leaves(c))   # empty: zeros, index 0
    full_y = jax.jit(nn.MultiHeadAttention(2, causal=True).apply)(p, (), x[0])[0]
    ys, step = [], jax.jit(layer.apply)
    for a in range(0, L, 2):
        y, c = step(p, c, x[0, a:a + 2])
        ys.append(y)
    assert_close(jnp.concatenate(ys), full_y, 1e-10, "one sequence")


def _raises(f, exc, match, *args):
    """``f(*args)`` raises eagerly and under ``jax.jit``."""
    for g in (f, jax.jit(f)):
        with pytest.raises(exc, match=match):
            g(*args)


def test_errors_eagerly_and_under_jit():
    model, params, state, dec, cache, *_ = models()
    ids = randint((N, 1), V)
    layer = nn.MultiHeadAttention(4, num_kv_heads=2, causal=True, decode=True)
    name = r"(?<!\): )MultiHeadAttention\(4\)"    # named once
    p = numpy_init(nn.MultiHeadAttention(4, num_kv_heads=2), (-1, 3, D))[1]
    _, _, c = layer.init(KEY, (N, L, D))
    x = randn((N, 3, D), 1)
    # the training model's state (no cache) in the decode model
    _raises(dec.apply, ValueError, r"serial\[1\] \(PositionEmbedding\(10\)\): state must be "
            r"a dict with keys \['index'\], got tuple \(\); decode=True keeps", params, state,
            ids)
    mixed = cache[:2] + state[2:]   # the decode state of the positions only
    _raises(dec.apply, ValueError, r"serial\[2\] \(Repeat\(serial, 2\)\): serial\[0\] "
            r"\(Residual\(serial\)\): serial\[1\] \(MultiHeadAttention\(4\)\): state must be a "
            r"dict with keys \['index', 'k', 'v'\], got tuple \(\); decode=True keeps",
            params, mixed, ids)
    _raises(layer.apply, ValueError, name + r": state\['k'\] has shape \(2, 8, 2, 4\), "
            r"expected \(3, \*, 2, 4\)", p, c, randn((3, 1, D)))
    bad = dict(c, index=jnp.zeros((), jnp.float32))
    _raises(layer.apply, TypeError, name + r": state\['index'\] must have an integer dtype",
            p, bad, x)
    _raises(layer.apply, ValueError, name + r": the input has 9 positions, more than the 8 "
            r"of the key/value cache", p, c, randn((N, 9, D)))
    _raises(layer.apply, ValueError, name + r": mask has shape \(2, 1, 1, 3\), expected a "
            r"shape broadcastable to \(2, 4, 3, 8\) over the L cache positions",
            p, c, (x, jnp.ones((N, 1, 1, 3), bool)))
    _raises(layer.apply, TypeError, name + r": mask must have dtype bool",
            p, c, (x, jnp.ones((N, 1, 1, L))))
    # a cache given to the layer without decode
    _raises(nn.MultiHeadAttention(4, num_kv_heads=2).apply, ValueError,
            name + r": state must be empty", p, c, x)
    for shape in ((-1, L, D), (N, -1, D)):
        with pytest.raises(ValueError, match=name + r": decode=True allocates a key/value "
                                                 r"cache of L positions for each of the N "
                                                 r"sequences: init with known sizes"):
            layer.init(KEY, shape)
    pos = nn.PositionEmbedding(4, decode=True)
    _raises(pos.apply, ValueError, r"PositionEmbedding\(4\): state must be a dict with keys "
            r"\['index'\], got tuple \(\)", {"pos_embedding": jnp.zeros((4, D))}, (), x)


OVERFLOW = {   # layer, params of its shape, what overflows
    "attention": (nn.MultiHeadAttention(2, causal=True, decode=True),
                  nn.MultiHeadAttention(2, causal=True), "the key/value cache"),
    "positions": (nn.PositionEmbedding(4, decode=True), nn.PositionEmbedding(4),
                  r"the position table \(max_length\)"),
}


@pytest.mark.parametrize("case", list(OVERFLOW))
def test_overflow_refused_eagerly_and_nan_under_jit(case):
    layer, plain, what = OVERFLOW[case]
    p = numpy_init(plain, (-1, 4, 4))[1]
    _, _, s = layer.init(KEY, (1, 4, 4))
    x = randn((1, 2, 4), 1)
    s = dict(s, index=jnp.asarray(3, jnp.int32))
    with pytest.raises(ValueError, match=rf"^{re.escape(layer.name)}: state\['index'\] is 3: 2 "
                                         rf"more positions do not fit in the 4 of {what}"):
        layer.apply(p, s, x)
    y, s2 = jax.jit(layer.apply)(p, s, x)
    assert np.all(np.isnan(y)) and int(s2["index"]) == 5
    y, _ = jax.jit(layer.apply)(p, dict(s, index=jnp.asarray(2, jnp.int32)), x)
    assert np.all(np.isfinite(y))                               # fits exactly
