"""nn.MultiHeadAttention / nn.CrossAttention(logit_soft_cap=c, scale=s, qk_norm=True): the
logits' soft cap (Gemma 2), scale (T5's 1.0) and QK-norm (Gemma 3). Values and gradients
equal plain grouped-query attention with ``c tanh(s q.k / c)`` logits of RMS-normalized
``q``, ``k`` (float64, 1e-10), with rope, a sliding window and a mask; decoding with all
three (chunk by chunk) gives the full pass, also in a
Gemma-2-style decoder of local (ring buffer) and global layers; layers built inside a
``jax.vmap`` over caps or scales (a learnable cap; QKNorm's learnable scale); errors at
construction."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, numpy_init, randint, randn
from tests.nn.test_attention_decode import decode_in_chunks
from tests.nn.test_attention_gqa import plain_gqa
from tests.ops.test_attention_window import _band

CAP, ROPE, W = 0.5, {"base": 100.0}, 3

CASES = {   # name: (cross, window, scale, qk_norm)
    "self_rope_window": (False, W, None, False),
    "self_scale": (False, None, 0.2, False),
    "self_rope_qk_norm": (False, None, None, True),
    "cross_t5_scale": (True, None, 1.0, False),
    "cross_qk_norm": (True, None, None, True),
}


@functools.lru_cache(maxsize=None)
def _vs_plain(case):
    cross, window, scale, qk_norm = CASES[case]
    if cross:
        layer = nn.CrossAttention(4, num_kv_heads=2, logit_soft_cap=CAP, scale=scale,
                                  qk_norm=qk_norm)
    else:
        layer = nn.MultiHeadAttention(4, num_kv_heads=2, causal=True, rope=ROPE,
                                      window=window, logit_soft_cap=CAP, scale=scale,
                                      qk_norm=qk_norm)

    def ours(p, x, ctx, m):
        return layer.apply(p, (), (x, ctx, m) if cross else (x, m))[0]

    def plain(p, x, ctx, m, cap=CAP):
        if not cross:
            m = _band(x.shape[1], x.shape[1], window or x.shape[1], True)[None, None] & m
        return plain_gqa(p, x, ctx if cross else x, m, heads=4, kv=2, causal=False,
                         rope=None if cross else ROPE, soft_cap=cap, scale=scale,
                         qk_norm=qk_norm)

    def both(p, x, ctx, m):
        grads = [jax.value_and_grad(lambda p, x, f=f: jnp.sum(jnp.sin(f(p, x, ctx, m))),
                                    (0, 1))(p, x) for f in (ours, plain)]
        return grads, plain(p, x, ctx, m, cap=None)
    return layer, cross, jax.jit(both)


@pytest.mark.parametrize("case", list(CASES))
def test_equals_plain_attention_with_capped_logits(case):
    layer, cross, run = _vs_plain(case)
    shapes = ((-1, 6, 8), (-1, 5, 3), (-1, 1, 1, 5)) if cross else ((-1, 6, 8), (-1, 1, 1, 6))
    _, params, _ = numpy_init(layer, shapes)
    params = jax.tree_util.tree_map(lambda a: 3 * a, params)   # logits beyond the cap
    if "q_norm" in params:     # scales of every feature, not ones
        params.update(q_norm=randn((2,), seed=6), k_norm=randn((2,), seed=7))
    x, ctx = randn((2, 6, 8), seed=2), randn((2, 5, 3), seed=3)
    mask = jnp.asarray(np.arange(shapes[-1][-1]) != 1).reshape(shapes[-1][1:])[None]
    (got, want), uncapped = run(params, x, ctx, jnp.repeat(mask, 2, 0))
    assert_close(got, want, 1e-10, "values and gradients")
    apply = (lambda: layer.apply(params, (), (x, ctx, mask))[0]) if cross else (
        lambda: layer.apply(params, (), (x, mask))[0])
    assert float(jnp.max(jnp.abs(apply()[:1] - uncapped[:1]))) > 1e-2   # the cap matters


SWEEPS = {   # name: (cross, the traced keyword, its values)
    "self_rope_window_cap": (False, "logit_soft_cap", (0.3, 1.0, 4.0)),
    "cross_cap": (True, "logit_soft_cap", (0.3, 1.0, 4.0)),
    # Henry et al. 2020's QKNorm: normalized q, k and a learnable scale g
    "self_qk_norm_scale": (False, "scale", (0.5, 2.0, 6.0)),
}


@pytest.mark.parametrize("case", list(SWEEPS))
def test_a_sweep_of_layers_equals_plain_attention_and_the_static_layers(case):
    """The layer built inside ``jax.vmap`` over caps (or scales): its values and its
    gradients in the parameters and in the cap (a learnable cap, or scale) equal plain
    attention with that traced value (1e-10), and the value of each layer built with
    ``float(h)``."""
    cross, name, values = SWEEPS[case]
    qk_norm = name == "scale"
    x, ctx = randn((2, 6, 8), seed=2), randn((2, 5, 3), seed=3)

    def layer(h):
        if cross:
            return nn.CrossAttention(4, num_kv_heads=2, **{name: h})
        return nn.MultiHeadAttention(4, num_kv_heads=2, causal=True, rope=ROPE, window=W,
                                     qk_norm=qk_norm, **{name: h})

    def ours(h, p):
        return jnp.sum(jnp.sin(layer(h).apply(p, (), (x, ctx) if cross else x)[0]))

    def plain(h, p):
        m = jnp.ones((1, 1, 6, 5), bool) if cross else _band(6, 6, W, True)[None, None]
        return jnp.sum(jnp.sin(plain_gqa(p, x, ctx if cross else x, m, heads=4, kv=2,
                                         causal=False, rope=None if cross else ROPE,
                                         qk_norm=qk_norm,
                                         **{"soft_cap" if name == "logit_soft_cap"
                                            else name: h})))

    _, params, _ = numpy_init(layer(1.0), ((-1, 6, 8), (-1, 5, 3)) if cross else (-1, 6, 8))
    params = jax.tree_util.tree_map(lambda a: 3 * a, params)   # logits beyond the caps
    sweep = jax.jit(jax.vmap(lambda h: [jax.value_and_grad(f, (0, 1))(h, params)
                                        for f in (ours, plain)]))
    got, want = sweep(jnp.asarray(values))
    assert_close(got, want, 1e-10, f"values and gradients in the {name} and the params")
    assert float(jnp.min(jnp.abs(got[1][0]))) > 1e-3        # the cap's (scale's) gradient
    assert_close(got[0], jnp.stack([ours(h, params) for h in values]), 1e-12, "static")


def test_soft_cap_layers_built_in_a_sweep_of_caps_have_the_hand_derivatives():
    """``nn.SoftCap(c)`` with ``c`` traced (inside ``jax.vmap``, float32 input): values
    and the derivatives ``1 - t^2`` in ``x`` and ``t - u (1 - t^2)`` in ``c`` (``u = x /
    c``, ``t = tanh u``) written by hand; the layer's name says ``traced``."""
    x = jnp.asarray(randn((7,), seed=4) * 3, jnp.float32)
    caps = jnp.asarray([0.5, 2.0, 8.0], jnp.float32)
    names = []

    def apply(c, x):
        layer = nn.SoftCap(c)
        names.append(layer.name)
        return layer.apply((), (), x)[0]

    def run(c):
        y, pull = jax.vjp(apply, c, x)
        return y, pull(jnp.ones_like(y))
    y, (dc, dx) = jax.vmap(run)(caps)
    u = np.asarray(x)[None] / np.asarray(caps)[:, None]
    t = np.tanh(u)
    assert_close((y, dx, dc), (np.asarray(caps)[:, None] * t, 1 - t * t,
                               np.sum(t - u * (1 - t * t), axis=1)), 1e-5, "SoftCap(traced)")
    assert y.dtype == jnp.float32 and names == ["SoftCap(traced)"]


def gpt(decode=False, cap=CAP, scale=1.0, qk_norm=True):
    attn = nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(
        2, causal=True, decode=decode, rope=ROPE, logit_soft_cap=cap, scale=scale,
        qk_norm=qk_norm))
    return nn.TiedEmbedding(11, 8, nn.serial(attn, nn.LayerNorm()))


def test_decoding_with_the_cap_scale_and_qk_norm_equals_the_full_pass():
    model, dec = gpt(), gpt(decode=True)
    _, params, state = numpy_init(model, (-1, 6))
    params = jax.tree_util.tree_map(lambda a: 4 * a, params)
    ids = randint((2, 6), 11, seed=1)
    want, _ = model.apply(params, state, ids)
    cache = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                   abstract_init(dec, (2, 6))[2])
    got, _ = decode_in_chunks(jax.jit(dec.apply), params, cache, ids, [2, 1, 3])
    assert_close(got, want, 1e-10, "decoded logits")
    for other, p in ((gpt(cap=None), params), (gpt(scale=None), params),   # each matters
                     (gpt(qk_norm=False), _without_norms(params))):
        plain, _ = other.apply(p, state, ids)
        assert float(jnp.max(jnp.abs(plain - want))) > 1e-3


def _without_norms(tree):
    """``tree`` without its ``"q_norm"`` and ``"k_norm"`` entries."""
    if isinstance(tree, dict):
        return {k: _without_norms(v) for k, v in tree.items() if k not in ("q_norm", "k_norm")}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_without_norms(v) for v in tree)
    return tree


@pytest.mark.parametrize("factory", [nn.MultiHeadAttention, nn.CrossAttention])
def test_bad_caps_and_scales_are_refused_at_construction(factory):
    name = factory.__name__
    with pytest.raises(ValueError, match=rf"{name}\(2\): logit_soft_cap must be in \(0, inf\), "
                                         r"got -3"):
        factory(2, logit_soft_cap=-3.0)
    with pytest.raises(TypeError, match=rf"{name}\(2\): logit_soft_cap must be a number or a "
                                        r"scalar array, got str"):
        factory(2, logit_soft_cap="30")
    with pytest.raises(ValueError, match=rf"{name}\(2\): scale must be finite, got nan"):
        factory(2, scale=float("nan"))
    with pytest.raises(ValueError, match=rf"{name}\(2\): scale must be a scalar, got shape "
                                         r"\(2,\)"):
        factory(2, scale=jnp.ones((2,)))


def gemma2(decode=False, window=3):
    """A small Gemma-2-style decoder: pairs of a sliding-window and a global layer (GQA,
    rope, soft-capped logits, RMSNorm before and after each sublayer), repeated, and the
    final logits soft-capped by ``nn.SoftCap``."""
    def sublayer(window):
        attn = nn.MultiHeadAttention(4, num_kv_heads=2, causal=True, rope=True, window=window,
                                     logit_soft_cap=CAP, use_bias=False, decode=decode)
        mlp = nn.serial(nn.Dense(16), nn.GELU(), nn.Dense(8))
        return nn.serial(*(nn.Residual(nn.serial(nn.RMSNorm(), f, nn.RMSNorm()))
                           for f in (attn, mlp)))
    pair = nn.serial(sublayer(window), sublayer(None))
    return nn.serial(nn.TiedEmbedding(11, 8, nn.serial(nn.Repeat(pair, 2), nn.RMSNorm())),
                     nn.SoftCap(2.0))     # the final logits' cap (Gemma 2: 30)


def test_local_and_global_layers_with_the_cap_decode_to_the_full_pass():
    """One decode model holds a ring buffer of W slots (local layers) and a cache of L
    positions (global layers); chunk by chunk (one longer than W) it gives the full pass."""
    model, dec = gemma2(), gemma2(decode=True)
    length = 8
    _, params, state = numpy_init(model, (-1, length))
    params = jax.tree_util.tree_map(lambda a: 3 * a, params)
    ids = randint((2, length), 11, seed=5)
    want, _ = model.apply(params, state, ids)
    cache = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                                   abstract_init(dec, (2, length))[2])
    slots = sorted({a.shape[-3] for a in jax.tree_util.tree_leaves(cache) if a.ndim >= 4})
    assert slots == [3, length]            # ring buffers and full caches in one model
    got, _ = decode_in_chunks(jax.jit(dec.apply), params, cache, ids, [1, 4, 1, 2])
    assert_close(got, want, 1e-10, "decoded logits")
    every_key, _ = gemma2(window=None).apply(params, state, ids)   # the window matters
    assert float(jnp.max(jnp.abs(every_key - want))) > 1e-3
