"""nn.CrossAttention: values and gradients against plain JAX (einsum, and
jax.nn.dot_product_attention) with the same params, in float64 under jit, vmap (per
example equals the batch) and grad; key padding; shapes; errors eagerly and under jit."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, numpy_init, randn, struct, trace_apply
from tests.nn.test_attention_layer import flax_params, raise_eagerly_and_under_jit

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)
CA = nn.CrossAttention
N, T, S, F, FC = 3, 4, 6, 6, 5            # S != T, Fc != F


def _proj(params, a, p):
    b = params.get(f"b{p}", jnp.zeros((params[f"w{p}"].shape[1],), a.dtype))
    return a @ params[f"w{p}"] + b[None, None, :]


def plain_cross(params, x, ctx, mask=None, *, heads, rate=0.0, key=None):
    """Cross-attention written out in plain JAX (Vaswani et al. 2017, 3.2.2-3.2.3)."""
    n, t, _ = x.shape
    s = ctx.shape[1]
    q, k, v = _proj(params, x, "q"), _proj(params, ctx, "k"), _proj(params, ctx, "v")
    d = q.shape[-1]
    hd = d // heads
    q, k, v = (a.reshape(n, -1, heads, hd).transpose(0, 2, 1, 3) for a in (q, k, v))
    logits = jnp.einsum("nhtd,nhsd->nhts", q, k) / np.sqrt(hd)
    if mask is not None:
        logits = jnp.where(mask, logits, -0.7 * float(jnp.finfo(jnp.float32).max))
    p = jax.nn.softmax(logits, axis=-1)
    if rate:   # key column j's (N, heads, T) keep mask from fold_in(key, j) (the op's rule)
        keep = jnp.stack([jax.random.bernoulli(jax.random.fold_in(key, j), 1 - rate,
                                               (n, heads, t)) for j in range(s)], axis=-1)
        p = jnp.where(keep, p / (1 - rate), 0.0)
    o = jnp.einsum("nhts,nhsd->nthd", p, v).reshape(n, t, d)
    return _proj(params, o, "o")


def jaxnn_cross(params, x, ctx, mask=None, *, heads):
    """The same through jax.nn.dot_product_attention (its softmax runs in float32)."""
    n, t, _ = x.shape
    q, k, v = _proj(params, x, "q"), _proj(params, ctx, "k"), _proj(params, ctx, "v")
    d = q.shape[-1]
    split = lambda a: a.reshape(n, a.shape[1], heads, d // heads)  # noqa: E731
    with jax.numpy_dtype_promotion("standard"):
        o = jax.nn.dot_product_attention(split(q), split(k), split(v), mask=mask)
    return _proj(params, o.reshape(n, t, d), "o")


def _inputs(seed=0):
    x, ctx = randn((N, T, F), seed), randn((N, S, FC), seed + 1)
    lengths = jnp.array([S, 3, 1])                          # padded contexts
    mask = (jnp.arange(S)[None, :] < lengths[:, None])[:, None, None, :]   # (N, 1, 1, S)
    return x, ctx, mask


@functools.lru_cache(maxsize=None)
def _vs_plain(heads, use_bias, mask_kind, rate):
    layer = CA(heads, qkv_features=4, out_features=3, use_bias=use_bias, dropout_rate=rate)

    def pick(mask):
        return {"none": None, "pad": mask, "ts": mask[0, 0, 0][None, :] & (
            jnp.arange(T)[:, None] >= 0)}[mask_kind]

    def ours(p, x, c, mask, key):
        m = pick(mask)
        return layer.apply(p, (), (x, c) if m is None else (x, c, m), key=key,
                           train=rate > 0)[0]

    def theirs(p, x, c, mask, key):
        return plain_cross(p, x, c, pick(mask), heads=heads, rate=rate, key=key)

    def jaxnn(p, x, c, mask, key):
        return jaxnn_cross(p, x, c, pick(mask), heads=heads)

    def with_grad(f, p, x, c, mask, key):
        loss = lambda p, x, c: jnp.sum(jnp.sin(f(p, x, c, mask, key)))  # noqa: E731
        return f(p, x, c, mask, key), jax.grad(loss, (0, 1, 2))(p, x, c)

    @jax.jit
    def run(p, x, c, mask, key):
        fs = (ours, theirs) + ((jaxnn,) if rate == 0 else ())
        return [with_grad(f, p, x, c, mask, key) for f in fs]
    return layer, run


@pytest.mark.parametrize("heads, use_bias, mask_kind, rate", [
    (2, True, "none", 0.0), (1, False, "pad", 0.0), (4, True, "pad", 0.0),
    (2, True, "ts", 0.0), (2, True, "pad", 0.3)],
    ids=["plain", "nobias_pad", "4heads_pad", "mask_TS", "dropout_pad"])
def test_equals_plain_jax_cross_attention(heads, use_bias, mask_kind, rate):
    layer, run = _vs_plain(heads, use_bias, mask_kind, rate)
    _, params, _ = numpy_init(layer, ((-1, T, F), (-1, S, FC)), seed=heads)
    assert params["wq"].shape == (F, 4) and params["wk"].shape == (FC, 4)
    x, ctx, mask = _inputs(heads)
    results = run(params, x, ctx, mask, jax.random.PRNGKey(7))
    (y, g), (y_ref, g_ref) = results[:2]
    assert y.shape == (N, T, 3) and y.dtype == F64
    if use_bias:   # q.bk is the same in every logit of a row: softmax ignores it
        for grads in (g, g_ref):
            assert np.max(np.abs(grads[0].pop("bk"))) < 1e-13
        if rate == 0:
            assert np.max(np.abs(results[2][1][0].pop("bk"))) < 1e-5   # float32 softmax
    assert_close(y, y_ref, 1e-10, "value vs einsum")
    assert_close(g, g_ref, 1e-10, "grads (params, x, context) vs einsum")
    if rate == 0:   # jax.nn rounds its softmax to float32 even for float64 inputs
        y_nn, g_nn = results[2]
        assert_close(y, y_nn, 1e-6, "value vs jax.nn")
        assert_close(g, g_nn, 1e-5, "grads vs jax.nn")
    if mask_kind == "pad":   # padded context rows get no gradient
        assert not np.any(g[2][1, 3:]) and not np.any(g[2][2, 1:])
        assert np.all(np.any(g[2][0] != 0, axis=-1))


@functools.lru_cache(maxsize=None)
def _padding_run():
    layer = CA(2, dtype=F64)

    @jax.jit
    def run(p, x, c, mask):
        f = lambda p, x, c: layer.apply(p, (), (x, c, mask))[0]  # noqa: E731
        y = f(p, x, c)
        g = jax.grad(lambda p, x, c: jnp.sum(jnp.cos(f(p, x, c))), (0, 1))(p, x, c)
        each = jax.vmap(lambda xi, ci, mi: layer.apply(p, (), (xi, ci, mi))[0])(x, c, mask)
        per_ex = jax.vmap(jax.grad(lambda p, xi, ci, mi: jnp.sum(jnp.cos(
            layer.apply(p, (), (xi, ci, mi))[0]))), (None, 0, 0, 0))(p, x, c, mask)
        per_ex_batched = jax.vmap(jax.grad(lambda p, xi, ci, mi: jnp.sum(jnp.cos(
            layer.apply(p, (), (xi[None], ci[None], mi[None]))[0]))), (None, 0, 0, 0))(
                p, x, c, mask)
        return y, g, each, per_ex, per_ex_batched
    return layer, run


def test_key_padding_and_per_example_vmap():
    """Padded context rows change nothing; vmap over examples (mask (N, 1, 1, S) becomes
    one sequence's (1, 1, S)) equals the batch in values and gradients."""
    layer, run = _padding_run()
    _, params, _ = numpy_init(layer, ((-1, T, F), (-1, S, FC), (-1, 1, 1, S)), seed=3)
    x, ctx, mask = _inputs(5)
    y, g, each, per_ex, per_ex_batched = run(params, x, ctx, mask)
    junk = jnp.where(mask[:, 0, 0, :, None], ctx, 1e3 * randn(ctx.shape, 11))
    y2, g2, *_ = run(params, x, junk, mask)
    assert_close(y2, y, 1e-12, "padded context changes nothing")
    assert_close(g2, g, 1e-12, "nor the gradients")
    assert not np.allclose(run(params, x, junk, jnp.ones_like(mask))[0], y)  # the mask acts
    assert_close(each, y, 1e-12, "per-example values")
    assert_close(per_ex, per_ex_batched, 1e-12, "per-example gradients")
    summed = jax.tree_util.tree_map(lambda a: a.sum(0), per_ex)
    assert np.max(np.abs(summed.pop("bk"))) < 1e-13 and np.max(np.abs(g[0].pop("bk"))) < 1e-13
    assert_close(summed, g[0], 1e-10, "per-example gradients sum to the batch gradient")


def test_context_equal_to_x_is_multi_head_self_attention():
    """Same params, context = x: the shared code path gives MultiHeadAttention exactly."""
    _, params, _ = numpy_init(CA(2), ((-1, T, F), (-1, T, F)), seed=1)
    x = randn((N, T, F), 2)
    mask = jnp.asarray(np.random.default_rng(0).random((N, 1, T, T)) > 0.3)
    y_ca = jax.jit(CA(2).apply)(params, (), (x, x, mask))[0]
    y_mha = jax.jit(nn.MultiHeadAttention(2).apply)(params, (), (x, mask))[0]
    np.testing.assert_array_equal(y_ca, y_mha)


def test_equals_flax_with_inputs_kv():
    linen = pytest.importorskip("flax.linen")
    heads = 2
    layer = CA(heads, dtype=jnp.float32)
    _, p, _ = numpy_init(layer, ((-1, T, F), (-1, S, FC)), seed=4)
    x, ctx, mask = _inputs(1)
    fl = flax_params(p, heads)
    mod = linen.MultiHeadDotProductAttention(num_heads=heads, dtype=F64, param_dtype=F64)
    with jax.numpy_dtype_promotion("standard"):
        want = mod.apply(fl, x, ctx, mask=mask)
    assert_close(jax.jit(layer.apply)(p, (), (x, ctx, mask))[0], want, 1e-6, "vs flax")


SHAPES = [
    (CA(2), ((-1, T, F), (-1, S, FC)), (-1, T, F)),
    (CA(3, qkv_features=6, out_features=2), ((-1, T, F), (-1, S, FC), (-1, 1, 1, S)),
     (-1, T, 2)),
    (CA(1, use_bias=False), ((T, F), (S, FC), (T, S)), (T, F)),
    (CA(2, dropout_rate=0.5), ((T, F), (S, FC), (1, 1, S)), (T, F)),
    (CA(2), ((2, T, F), (2, S, FC), (T, S)), (2, T, F)),
]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("layer, in_shape, out", SHAPES, ids=[str(c[1]) for c in SHAPES])
def test_init_shapes_agree_with_apply(layer, in_shape, out, train):
    out_shape, params, state = abstract_init(layer, in_shape)
    assert out_shape == out and state == ()
    assert params["wk"].shape[0] == params["wv"].shape[0] == FC
    fill = lambda s: tuple(2 if d == -1 else d for d in s)  # noqa: E731
    xs = tuple(struct(fill(s), jnp.bool_ if i == 2 else F64) for i, s in enumerate(in_shape))
    y, _ = trace_apply(layer, params, state, xs, key=KEY, train=train)
    assert y.shape == fill(out) and y.dtype == F64


def test_default_init_promotion_and_summary():
    layer = CA(2, dtype=jnp.float32)
    out, p, s = layer.init(KEY, ((-1, T, F), (-1, S, FC)))
    assert {k: v.shape for k, v in p.items()} == {
        "wq": (F, F), "wk": (FC, F), "wv": (FC, F), "wo": (F, F),
        "bq": (F,), "bk": (F,), "bv": (F,), "bo": (F,)}
    assert all(v.dtype == jnp.float32 for v in p.values())
    x, ctx, _ = _inputs()
    y, _ = jax.jit(layer.apply)(p, s, (x.astype(jnp.float32), ctx))   # float64 context wins
    assert y.dtype == F64
    text = nn.summary(layer, ((-1, T, F), (-1, S, FC)))
    assert "CrossAttention(2)" in text
    assert nn.count_params(p) == 2 * F * F + 2 * FC * F + 4 * F == 156


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, exc, match", [
    ({"num_heads": 0}, ValueError, r"CrossAttention: num_heads must be >= 1, got 0"),
    ({"num_heads": 4, "qkv_features": 6}, ValueError,
     r"CrossAttention\(4\): qkv_features is 6, expected a multiple of num_heads=4"),
    ({"num_heads": 2, "dropout_rate": -0.1}, ValueError, r"CrossAttention\(2\): dropout_rate"),
    ({"num_heads": 2, "use_bias": 1}, TypeError, r"CrossAttention\(2\): use_bias must be a bool"),
    ({"num_heads": 2, "causal": True}, TypeError, r"unexpected keyword argument 'causal'"),
])
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        CA(**kwargs)


@pytest.mark.parametrize("in_shape, exc, match", [
    ((-1, T, F), TypeError, r"CrossAttention\(2\): input_shape must be a tuple of shapes "
                            r"\(x, context\) or \(x, context, mask\), got \(-1, 4, 6\)"),
    (((-1, T, F),), ValueError, r"CrossAttention\(2\): input_shape \(\(-1, 4, 6\)\) has 1 "
                                r"entries, expected 2 or 3"),
    (((-1, T, F), (-1, S)), ValueError, r"CrossAttention\(2\): input_shape \(-1, 6\) has "
                                        r"rank 2, expected rank 2 or 3|context"),
    (((-1, T, F), (-1, S, FC), (-1, 1, 1, T)), ValueError,
     r"CrossAttention\(2\): dot_product_attention: mask has shape \(1, 1, 1, 4\), expected "
     r"a shape broadcastable to \(1, 2, 4, 6\)"),
    (((-1, T, F), (S, FC)), ValueError, r"CrossAttention\(2\): context has shape \(6, 5\) "
                                        r"\(rank 2\), expected rank 3"),
])
def test_init_errors(in_shape, exc, match):
    with pytest.raises(exc, match=match):
        CA(2).init(KEY, in_shape)


def test_apply_errors_eagerly_and_under_jit():
    layer = CA(2, dtype=F64)
    _, p, s = numpy_init(layer, ((-1, T, F), (-1, S, FC)))
    x, ctx, mask = _inputs()
    bad = [
        (p, x, TypeError, r"CrossAttention\(2\): input must be a tuple \(x, context\) or "
                          r"\(x, context, mask\), got an array of shape \(3, 4, 6\)"),
        (p, (x,), ValueError, r"CrossAttention\(2\): input must be a tuple .* of 1 entries"),
        (p, (x, ctx, mask, mask), ValueError, r"CrossAttention\(2\): input must be a tuple"),
        (p, (x, ctx[:2]), ValueError, r"CrossAttention\(2\): x has shape \(3, 4, 6\) but "
                                      r"context has shape \(2, 6, 5\), expected the same "
                                      r"leading \(batch\) size"),
        (p, (x, ctx[0]), ValueError, r"CrossAttention\(2\): context has shape \(6, 5\) "
                                     r"\(rank 2\), expected rank 3 \(N, S, Fc\)"),
        (p, (x[0], ctx), ValueError, r"CrossAttention\(2\): context has shape \(3, 6, 5\) "
                                     r"\(rank 3\), expected rank 2 \(S, Fc\)"),
        (p, (x, ctx, mask[:, :, :, :4]), ValueError,
         r"CrossAttention\(2\): dot_product_attention: mask has shape \(3, 1, 1, 4\)"),
        (p, (x, ctx, jnp.ones((N, S), bool)), ValueError,
         r"CrossAttention\(2\): dot_product_attention: mask has shape \(3, 6\), expected a "
         r"shape broadcastable to \(3, 2, 4, 6\)"),   # a (N, S) mask is not read as (T, S)
        (p, (x, ctx, mask.astype(F64)), TypeError,
         r"CrossAttention\(2\): dot_product_attention: mask must have dtype bool"),
        (p, (x, ctx.astype(jnp.int32)), TypeError,
         r"CrossAttention\(2\): context must have a floating dtype"),
        (p, (x, randn((N, S, 4))), ValueError, r"CrossAttention\(2\): affine: "),
        (dict(p, wv=p["wv"][:4]), (x, ctx), ValueError,
         r"CrossAttention\(2\): params\['wv'\] has shape \(4, 6\), expected \(5, 6\)"),
        ({k: v for k, v in p.items() if k != "bk"}, (x, ctx), ValueError,
         r"CrossAttention\(2\): params must be a dict with keys"),
    ]
    raise_eagerly_and_under_jit(layer, s, bad)
    drop = CA(2, dropout_rate=0.5)
    with pytest.raises(ValueError, match=r"CrossAttention\(2\): train=True with "
                                         r"dropout_rate=0.5 needs a PRNG key"):
        drop.apply(p, s, (x, ctx), train=True)
