"""Grouped-query attention (``num_kv_heads``) in nn.MultiHeadAttention and nn.CrossAttention:
values and gradients against a plain-einsum formulation that repeats each key/value head
(float64, 1e-10), ``num_kv_heads=num_heads`` is today's layer bit for bit, errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from tests.nn._models import randn

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)
NEG = -0.7 * float(jnp.finfo(jnp.float32).max)


def plain_gqa(params, x, ctx, mask, *, heads, kv, causal, rope=None, soft_cap=None,
              scale=None, qk_norm=False):
    """Grouped-query attention in plain JAX: key/value head ``j`` repeated for query heads
    ``j G .. j G + G - 1`` (``G = heads / kv``), then multi-head attention; with ``rope``
    (keyword arguments), ``q`` and ``k`` rotated by the twin of ops.rotary_embedding; with
    ``soft_cap`` ``c``, the logits ``x`` become ``c tanh(x / c)`` before the mask; ``scale``
    replaces ``1/sqrt(dh)``; ``qk_norm``: every head's ``q``, ``k`` divided by their RMS
    over ``dh`` (``eps = 1e-6``) times ``params["q_norm"]`` / ``["k_norm"]``, before rope."""
    b = {p: params.get(f"b{p}", jnp.zeros((params[f"w{p}"].shape[1],), F64)) for p in "qkvo"}
    q, k, v = (a @ params[f"w{p}"] + b[p][None, None, :] for a, p in ((x, "q"), (ctx, "k"),
                                                                        (ctx, "v")))
    (n, t, d), s = q.shape, ctx.shape[1]
    dh = d // heads
    q = q.reshape(n, t, heads, dh)
    k, v = (a.reshape(n, s, kv, dh) for a in (k, v))
    if qk_norm:
        q, k = (a / jnp.sqrt(jnp.mean(a * a, -1, keepdims=True) + 1e-6)
                * params[f"{p}_norm"][None, None, None] for a, p in ((q, "q"), (k, "k")))
    if rope is not None:
        q, k = (R.rotary_embedding(a, None, **rope) for a in (q, k))
    k, v = (jnp.repeat(a, heads // kv, axis=2) for a in (k, v))
    logits = jnp.einsum("nthd,nshd->nhts", q, k) * (1 / np.sqrt(dh) if scale is None
                                                    else scale)
    if soft_cap is not None:
        logits = soft_cap * jnp.tanh(logits / soft_cap)
    allowed = jnp.ones((1, 1, t, s), bool) if mask is None else mask
    if causal:
        allowed = allowed & jnp.tril(jnp.ones((t, s), bool))[None, None]
    p = jax.nn.softmax(jnp.where(allowed, logits, NEG), axis=-1)
    o = jnp.einsum("nhts,nshd->nthd", p, v).reshape(n, t, d)
    return o @ params["wo"] + b["o"][None, None, :]


CASES = {  # name: (cross, heads, kv, causal, use_bias, with_mask)
    "gqa_causal_mask": (False, 4, 2, True, True, True),
    "mqa": (False, 6, 1, False, False, False),
    "cross_gqa_mask": (True, 4, 2, False, True, True),
}


@functools.lru_cache(maxsize=None)
def _run(case):
    cross, heads, kv, causal, use_bias, with_mask = CASES[case]
    if cross:
        layer = nn.CrossAttention(heads, num_kv_heads=kv, qkv_features=8, use_bias=use_bias)
    else:
        layer = nn.MultiHeadAttention(heads, num_kv_heads=kv, qkv_features=12, causal=causal,
                                      out_features=5, use_bias=use_bias)

    def ours(p, x, ctx, mask):
        xin = (x, ctx) if cross else x
        xin = (*xin, mask) if cross and with_mask else (xin, mask) if with_mask else xin
        return layer.apply(p, (), xin)[0]

    def theirs(p, x, ctx, mask):
        return plain_gqa(p, x, ctx if cross else x, mask if with_mask else None, heads=heads,
                         kv=kv, causal=causal)

    @jax.jit
    def run(p, x, ctx, mask):
        def grads(f):
            return jax.grad(lambda p, x, c: jnp.sum(jnp.sin(f(p, x, c, mask))), (0, 1, 2))
        return [(f(p, x, ctx, mask), grads(f)(p, x, ctx)) for f in (ours, theirs)]
    return layer, cross, run


@pytest.mark.parametrize("case", list(CASES))
def test_equals_plain_einsum_with_repeated_kv_heads(case):
    layer, cross, run = _run(case)
    t, s = 5, 7 if cross else 5
    in_shape = ((-1, t, 6), (-1, s, 3)) if cross else (-1, t, 6)
    _, params, _ = layer.init(jax.random.PRNGKey(1), in_shape)
    heads, kv = CASES[case][1:3]
    dh = params["wq"].shape[1] // heads
    assert params["wk"].shape == params["wv"].shape == (3 if cross else 6, kv * dh)
    params = {k: v + 0.1 * randn(v.shape, i) for i, (k, v) in enumerate(params.items())}
    x, ctx = randn((2, t, 6), 2), randn((2, s, 3) if cross else (2, t, 6), 3)
    mask = jnp.asarray(np.random.default_rng(4).random((2, 1, t, s)) > 0.3)
    (y, g), (y_ref, g_ref) = run(params, x, ctx, mask)
    assert y.dtype == F64
    assert_close(y, y_ref, 1e-10, "value")
    if "bk" in params:   # q.bk is the same in every logit of a row: softmax ignores it
        for grads in (g, g_ref):
            assert np.max(np.abs(grads[0].pop("bk"))) < 1e-13
    if not cross:   # ctx is x there: its gradient goes through the x argument
        g, g_ref = g[:2], g_ref[:2]
    assert_close(g, g_ref, 1e-10, "grads (params, x, context)")


@pytest.mark.parametrize("cross", [False, True])
def test_num_kv_heads_equal_to_num_heads_is_todays_layer_bit_for_bit(cross):
    make = nn.CrossAttention if cross else functools.partial(nn.MultiHeadAttention,
                                                             causal=True)
    in_shape = ((-1, 4, 6), (-1, 3, 5)) if cross else (-1, 4, 6)
    x = randn((2, 4, 6), 1)
    xin = (x, randn((2, 3, 5), 2)) if cross else x
    (_, p0, _), (_, p1, _) = (layer.init(KEY, in_shape)
                              for layer in (make(3), make(3, num_kv_heads=3)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, p0, p1)
    y0 = make(3).apply(p0, (), xin)[0]
    y1 = make(3, num_kv_heads=3).apply(p0, (), xin)[0]
    np.testing.assert_array_equal(y0, y1)


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_heads=4, num_kv_heads=3), ValueError,
     r"MultiHeadAttention\(4\): num_heads=4 is not a multiple of num_kv_heads=3"),
    (dict(num_heads=4, num_kv_heads=0), ValueError,
     r"MultiHeadAttention\(4\): num_kv_heads must be >= 1, got 0"),
    (dict(num_heads=4, num_kv_heads=2.0), TypeError,
     r"MultiHeadAttention\(4\): num_kv_heads must be an int"),
    (dict(num_heads=2, decode=True), ValueError,
     r"MultiHeadAttention\(2\): decode=True needs causal=True"),
    (dict(num_heads=2, causal=True, decode="yes"), TypeError,
     r"MultiHeadAttention\(2\): decode must be a bool"),
])
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        nn.MultiHeadAttention(**kwargs)


def test_cross_constructor_error_and_params_of_another_head_layout():
    with pytest.raises(ValueError, match=r"CrossAttention\(6\): num_heads=6 is not a multiple "
                                         r"of num_kv_heads=4"):
        nn.CrossAttention(6, num_kv_heads=4)
    gqa, mha = nn.MultiHeadAttention(4, num_kv_heads=2), nn.MultiHeadAttention(4)
    p = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype),
                               jax.eval_shape(lambda k: gqa.init(k, (-1, 3, 8))[1], KEY))
    x = jnp.zeros((2, 3, 8), F64)
    for apply in (mha.apply, jax.jit(mha.apply)):
        with pytest.raises(ValueError, match=r"MultiHeadAttention\(4\): params\['wk'\] has "
                                             r"shape \(8, 4\), expected \(8, 8\)"):
            apply(p, (), x)
