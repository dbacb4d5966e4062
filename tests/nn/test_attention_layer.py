"""nn.MultiHeadAttention: shape agreement, values and gradients against a hand-written
plain-JAX multi-head attention with the same params (and Flax's layer), dropout, masks,
dtype promotion, errors (eagerly and under jit)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, randn, struct, trace_apply

F64, F32 = jnp.float64, jnp.float32
KEY = jax.random.PRNGKey(0)
MHA = nn.MultiHeadAttention


def plain_mha(params, x, mask=None, *, heads, causal=False, rate=0.0, key=None):
    """Multi-head self-attention written out in plain JAX (Vaswani et al. 2017, 3.2.2)."""
    n, t, _ = x.shape
    b = {p: params.get(f"b{p}", jnp.zeros((params[f"w{p}"].shape[1],), x.dtype))
         for p in "qkvo"}
    q, k, v = (x @ params[f"w{p}"] + b[p][None, None, :] for p in "qkv")
    d = q.shape[-1]
    split = lambda a: a.reshape(n, t, heads, d // heads).transpose(0, 2, 1, 3)  # noqa: E731
    s = jnp.einsum("nhtd,nhsd->nhts", split(q), split(k)) / np.sqrt(d // heads)
    allowed = jnp.ones((1, 1, t, t), bool) if mask is None else mask
    if causal:
        allowed = allowed & jnp.tril(jnp.ones((t, t), bool))[None, None]
    s = jnp.where(allowed, s, -0.7 * float(jnp.finfo(jnp.float32).max))
    p = jax.nn.softmax(s, axis=-1)
    if rate:   # probabilities dropped; key column j's (N, heads, T) mask from fold_in(key, j)
        keep = jnp.stack([jax.random.bernoulli(jax.random.fold_in(key, j), 1 - rate,
                                               (n, heads, t)) for j in range(t)], axis=-1)
        p = jnp.where(keep, p / (1 - rate), 0.0)
    o = jnp.einsum("nhts,nhsd->nthd", p, split(v)).reshape(n, t, d)
    return o @ params["wo"] + b["o"][None, None, :]


SHAPE_CASES = [
    (MHA(2, dtype=F64), (-1, 5, 8)),
    (MHA(4, qkv_features=8, out_features=3, causal=True, dtype=F64), (-1, 6, 5)),
    (MHA(1, use_bias=False, dropout_rate=0.3, dtype=F64), (-1, 4, 3)),
    (MHA(2, dtype=F64), (7, 4)),
    (MHA(2, causal=True, dtype=F64), ((-1, 5, 4), (-1, 1, 1, 5))),
    (MHA(3, qkv_features=6, dtype=F64), ((-1, 4, 2), (4, 4))),
]


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("layer,in_shape", SHAPE_CASES,
                         ids=[f"{c[0].name}{c[1]}" for c in SHAPE_CASES])
def test_shape_agreement(layer, in_shape, batch, train):
    out_shape, params, state = abstract_init(layer, in_shape)
    fill = lambda s: tuple(batch if d == -1 else d for d in s)  # noqa: E731
    if isinstance(in_shape[0], tuple):
        x = (struct(fill(in_shape[0]), F64), struct(fill(in_shape[1]), jnp.bool_))
    else:
        x = struct(fill(in_shape), F64)
    y, new_state = trace_apply(layer, params, state, x, key=KEY, train=train)
    assert y.shape == fill(out_shape) and y.dtype == F64
    assert new_state == state == ()


@functools.lru_cache(maxsize=None)
def _vs_plain(heads, causal, rate, use_bias, with_mask):
    layer = MHA(heads, causal=causal, dropout_rate=rate, use_bias=use_bias, qkv_features=6,
                out_features=5)

    def loss(f):
        return lambda p, x: jnp.sum(jnp.sin(f(p, x)))

    def ours(p, x, mask, key):
        return layer.apply(p, (), (x, mask) if with_mask else x, key=key, train=rate > 0)[0]

    def theirs(p, x, mask, key):
        return plain_mha(p, x, mask if with_mask else None, heads=heads, causal=causal,
                         rate=rate, key=key)

    @jax.jit
    def run(p, x, mask, key):
        return [(f(p, x, mask, key), jax.grad(loss(lambda p, x: f(p, x, mask, key)),
                                              (0, 1))(p, x)) for f in (ours, theirs)]
    return layer, run


@pytest.mark.parametrize("heads, causal, rate, use_bias, with_mask", [
    (2, False, 0.0, True, False), (3, True, 0.0, True, True), (1, True, 0.4, False, False),
    (2, False, 0.25, True, True)], ids=["plain", "causal_mask", "dropout_nobias",
                                        "dropout_mask"])
def test_equals_hand_written_multi_head_attention(heads, causal, rate, use_bias, with_mask):
    layer, run = _vs_plain(heads, causal, rate, use_bias, with_mask)
    _, params, _ = layer.init(jax.random.PRNGKey(1), (-1, 7, 4))
    params = {k: v + 0.1 * randn(v.shape, i) for i, (k, v) in enumerate(params.items())}
    x = randn((2, 7, 4), 9)
    mask = jnp.asarray(np.random.default_rng(3).random((2, 1, 7, 7)) > 0.3)
    (y, g), (y_ref, g_ref) = run(params, x, mask, jax.random.PRNGKey(5))
    assert y.shape == (2, 7, 5) and y.dtype == F64
    assert_close(y, y_ref, 1e-10, "value")
    if use_bias:   # q.bk is the same in every logit of a row: softmax ignores it
        for grads in (g, g_ref):
            assert np.max(np.abs(grads[0].pop("bk"))) < 1e-13
    assert_close(g, g_ref, 1e-10, "grads (params, x)")


def flax_params(params, heads):
    """funcnet's attention params as Flax's ``(F, heads, head_dim)`` kernels."""
    d, out = params["wo"].shape
    hd = d // heads
    return {"params": {
        **{name: {"kernel": params[f"w{p}"].reshape(-1, heads, hd),
                  "bias": params[f"b{p}"].reshape(heads, hd)}
           for p, name in (("q", "query"), ("k", "key"), ("v", "value"))},
        "out": {"kernel": params["wo"].reshape(heads, hd, out), "bias": params["bo"]}}}


def test_equals_flax_multi_head_dot_product_attention():
    """Same function as Flax's layer once its (F, heads, head_dim) kernels are reshaped."""
    linen = pytest.importorskip("flax.linen")
    heads, f, t = 2, 6, 5
    layer = MHA(heads, causal=True, dtype=F32)
    _, params, _ = layer.init(jax.random.PRNGKey(2), (-1, t, f))
    params = {k: v + 0.1 * randn(v.shape, i).astype(F32) for i, (k, v) in enumerate(params.items())}
    x = randn((3, t, f), 4).astype(F32)
    fl = flax_params(params, heads)
    mod = linen.MultiHeadDotProductAttention(num_heads=heads, dtype=F32, param_dtype=F32)
    with jax.numpy_dtype_promotion("standard"):
        want = mod.apply(fl, x, mask=linen.make_causal_mask(jnp.ones((3, t))))
    y, _ = jax.jit(layer.apply)(params, (), x)
    assert_close(y, want, 1e-5, "vs flax")


def test_dropout_needs_a_key_is_per_key_and_off_in_eval():
    layer = MHA(2, dropout_rate=0.5, dtype=F64)
    _, p, s = layer.init(KEY, (-1, 4, 6))
    x = randn((2, 4, 6), 1)
    apply = jax.jit(layer.apply, static_argnames="train")
    y_eval = apply(p, s, x)[0]
    np.testing.assert_array_equal(apply(p, s, x, key=KEY, train=False)[0], y_eval)
    y1, y2, y3 = (apply(p, s, x, key=jax.random.PRNGKey(i), train=True)[0] for i in (1, 1, 2))
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(y1, y3) and not np.allclose(y1, y_eval)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(2\): train=True with "
                                         r"dropout_rate=0.5 needs a PRNG key"):
        layer.apply(p, s, x, train=True)
    rate0 = jax.jit(MHA(2, dtype=F64).apply, static_argnames="train")
    assert_close(rate0(p, s, x, key=KEY, train=True)[0], y_eval, 1e-14, "rate 0 in training")


def test_default_init_dtype_and_promotion():
    _, p, _ = MHA(4).init(KEY, (-1, 3, 512))
    assert all(v.dtype == F64 for v in p.values())            # dtype=None: x64 default
    assert abs(float(jnp.var(p["wq"])) * 1024 / 2 - 1) < 0.03   # Xavier: 2/(in+out)
    assert not np.any(p["bq"]) and not np.any(p["bo"])
    layer = MHA(2, dtype=F32)
    _, p32, _ = layer.init(KEY, (-1, 3, 4))
    assert all(v.dtype == F32 for v in p32.values())
    y, _ = jax.jit(layer.apply)(p32, (), randn((1, 3, 4)))      # float64 input wins
    assert y.dtype == F64
    y1, _ = jax.jit(layer.apply)(p32, (), randn((3, 4)))        # one sequence
    assert_close(y1, y[0], 1e-12, "unbatched")


def test_in_a_model_and_summary():
    model = nn.serial(nn.Dense(8, dtype=F64), nn.Residual(MHA(2, causal=True, dtype=F64)),
                      nn.Dense(3, dtype=F64))
    out, params, state = model.init(KEY, (-1, 5, 4))
    assert out == (-1, 5, 3)
    y, _ = jax.jit(model.apply)(params, state, randn((2, 5, 4)))
    assert y.shape == (2, 5, 3)
    assert "MultiHeadAttention(2)" in nn.summary(model, (-1, 5, 4))


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs, exc, match", [
    ({"num_heads": 0}, ValueError, r"MultiHeadAttention: num_heads must be >= 1, got 0"),
    ({"num_heads": 2.0}, TypeError, r"MultiHeadAttention: num_heads must be an int"),
    ({"num_heads": 4, "qkv_features": 6}, ValueError,
     r"MultiHeadAttention\(4\): qkv_features is 6, expected a multiple of num_heads=4"),
    ({"num_heads": 2, "out_features": 0}, ValueError,
     r"MultiHeadAttention\(2\): out_features must be >= 1"),
    ({"num_heads": 2, "dropout_rate": 1.0}, ValueError,
     r"MultiHeadAttention\(2\): dropout_rate must be in \[0, 1\), got 1"),
    ({"num_heads": 2, "causal": "yes"}, TypeError,
     r"MultiHeadAttention\(2\): causal must be a bool"),
    ({"num_heads": 2, "w_init": 3}, TypeError, r"MultiHeadAttention\(2\): w_init must be callable"),
    ({"num_heads": 2, "dtype": jnp.int32}, TypeError, r"MultiHeadAttention\(2\): dtype must be a"),
])
def test_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        MHA(**kwargs)


@pytest.mark.parametrize("in_shape, match", [
    ((-1, 5, 3), r"MultiHeadAttention\(2\): the input features F=3 \(qkv_features=None\) is 3, "
                 r"expected a multiple of num_heads=2"),
    ((-1, 2, 5, 4), r"MultiHeadAttention\(2\): input_shape \(-1, 2, 5, 4\) has rank 4, "
                    r"expected rank 2 or 3"),
    (((-1, 5, 4), (-1, 1, 1, 6)), r"MultiHeadAttention\(2\): dot_product_attention: mask has "
                                  r"shape \(1, 1, 1, 6\), expected a shape broadcastable to "
                                  r"\(1, 2, 5, 5\)"),
])
def test_init_errors(in_shape, match):
    with pytest.raises(ValueError, match=match):
        MHA(2).init(KEY, in_shape)


def raise_eagerly_and_under_jit(layer, state, bad):
    """Each ``(params, input, exception, match)`` of ``bad`` raises in ``layer.apply``,
    eagerly and under ``jax.jit``."""
    for params, xin, exc, match in bad:
        with pytest.raises(exc, match=match):
            layer.apply(params, state, xin)
        with pytest.raises(exc, match=match):
            jax.jit(lambda params, xin: layer.apply(params, state, xin))(params, xin)


def test_apply_errors_eagerly_and_under_jit():
    layer = MHA(2, dtype=F64)
    _, p, s = layer.init(KEY, (-1, 5, 4))
    x = randn((2, 5, 4))
    bad = [
        (p, randn((2, 5, 3)), ValueError, r"MultiHeadAttention\(2\): affine: "),
        (p, randn((2, 1, 5, 4)), ValueError,
         r"MultiHeadAttention\(2\): x has shape \(2, 1, 5, 4\) \(rank 4\), expected rank 2 or 3"),
        (p, (x, jnp.ones((2, 1, 5, 4), bool)), ValueError,
         r"MultiHeadAttention\(2\): dot_product_attention: mask has shape \(2, 1, 5, 4\)"),
        (p, (x, jnp.ones((2, 1, 5, 5))), TypeError,
         r"MultiHeadAttention\(2\): dot_product_attention: mask must have dtype bool"),
        (p, (x, None, None), ValueError, r"MultiHeadAttention\(2\): input must be x or a pair"),
        ({k: v for k, v in p.items() if k != "bo"}, x, ValueError,
         r"MultiHeadAttention\(2\): params must be a dict with keys"),
        (dict(p, wk=p["wk"][:, :2]), x, ValueError,
         r"MultiHeadAttention\(2\): params\['wk'\] has shape \(4, 2\), expected \(4, 4\)"),
        (p, randn((2, 5, 4)).astype(jnp.int32), TypeError,
         r"MultiHeadAttention\(2\): x must have a floating dtype"),
    ]
    raise_eagerly_and_under_jit(layer, s, bad)


def test_per_example_vmap_with_a_key_padding_mask_equals_the_batch():
    """vmap over examples turns a (N, 1, 1, T) mask into one sequence's (1, 1, T): the
    layer reads it as that sequence's mask (values and per-example gradients)."""
    layer = MHA(2)
    n, t, f = 3, 5, 4
    _, params, _ = layer.init(KEY, ((-1, t, f), (-1, 1, 1, t)))
    x = randn((n, t, f), seed=1)
    lengths = jnp.array([5, 3, 1])
    mask = (jnp.arange(t)[None, :] < lengths[:, None])[:, None, None, :]
    batch = layer.apply(params, (), (x, mask))[0]
    each = jax.vmap(lambda xi, mi: layer.apply(params, (), (xi, mi))[0])(x, mask)
    assert_close(each, batch, 1e-12, "per-example attention")

    def loss(p, xi, mi):
        return jnp.sum(layer.apply(p, (), (xi[None], mi[None]))[0] ** 2)

    def loss_one(p, xi, mi):
        return jnp.sum(layer.apply(p, (), (xi, mi))[0] ** 2)

    grads = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0))(params, x, mask)
    grads_one = jax.vmap(jax.grad(loss_one), in_axes=(None, 0, 0))(params, x, mask)
    assert_close(grads_one, grads, 1e-12, "per-example gradients")
