"""OnFirst / KeepRest / DropRest: a key-padding mask (and a context) flows through a
pre-LN transformer stack to the attention inside it. Values and gradients against the
block written by hand in plain JAX (float64, jit), padding invariance, per-example vmap,
key/train pass-through, summary, errors eagerly and under jit."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import numpy_init, randn
from tests.nn.test_attention_cross import plain_cross
from tests.nn.test_attention_layer import plain_mha, raise_eagerly_and_under_jit

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)
N, T, S, F, H = 3, 5, 4, 4, 2
LENGTHS = jnp.array([5, 3, 1])
MASK = (jnp.arange(T)[None, :] < LENGTHS[:, None])[:, None, None, :]        # (N, 1, 1, T)
SHAPES = ((-1, T, F), (-1, 1, 1, T))


def ffn():
    return nn.serial(nn.LayerNorm(), nn.Dense(6), nn.Tanh(), nn.Dense(F))


def encoder_block():
    attn = nn.serial(nn.OnFirst(nn.LayerNorm()), nn.MultiHeadAttention(H))  # (x, m) -> y
    return nn.serial(nn.KeepRest(attn, residual=True), nn.OnFirst(nn.Residual(ffn())))


ENCODER = nn.serial(encoder_block(), encoder_block(), nn.DropRest)
STATE = ((((), ()), ((), (), (), ())),) * 2 + ((),)


def _ln(p, x):
    mu = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, -1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + 1e-5) * p["gamma"][None, None] + p["beta"][None, None]


def _ffn(p, x):
    h = jnp.tanh(_ln(p[0], x) @ p[1]["w"] + p[1]["b"][None, None])
    return h @ p[3]["w"] + p[3]["b"][None, None]


def plain_encoder(params, x, mask):
    """The two pre-LN blocks written out: x += MHA(LN(x), mask); x += FFN(x)."""
    for (ln_p, mha_p), ffn_p in params[:2]:
        x = x + plain_mha(mha_p, _ln(ln_p, x), mask, heads=H)
        x = x + _ffn(ffn_p, x)
    return x


def no_bk(grads):
    """The key bias gets a zero gradient (q.bk is the same in every logit of a row, softmax
    ignores it): checked to round-off, then set to 0 for the relative comparisons."""
    def zero(path, g):
        if getattr(path[-1], "key", None) != "bk":
            return g
        assert np.max(np.abs(g)) < 1e-13
        return jnp.zeros_like(g)
    return jax.tree_util.tree_map_with_path(zero, grads)


@functools.lru_cache(maxsize=None)
def _encoder_run():
    def ours(p, x, m):
        return ENCODER.apply(p, STATE, (x, m))[0]

    @jax.jit
    def run(p, x, m):
        out, real = [], m[:, 0, 0, :, None].astype(F64)
        for f in (ours, plain_encoder):
            g = jax.grad(lambda p, x: jnp.sum(jnp.sin(f(p, x, m)) * real), (0, 1))(p, x)
            out.append((f(p, x, m), g))
        each = jax.vmap(lambda xi, mi: ENCODER.apply(p, STATE, (xi, mi))[0])(x, m)
        return out, each
    return run


def test_encoder_with_a_padding_mask_equals_the_hand_written_blocks():
    out_shape, params, state = numpy_init(ENCODER, SHAPES)
    assert out_shape == (-1, T, F) and state == STATE
    x = randn((N, T, F), 1)
    ((y, g), (y_ref, g_ref)), each = _encoder_run()(params, x, MASK)
    assert_close(y, y_ref, 1e-10, "value")
    assert_close(no_bk(g), no_bk(g_ref), 1e-10, "grads (params, x)")
    assert_close(each, y, 1e-12, "per-example vmap equals the batch")
    # padded tokens change nothing at the real positions (values and gradients)
    junk = jnp.where(MASK[:, 0, 0, :, None], x, 100.0 * randn(x.shape, 2))
    ((y2, g2), _), _ = _encoder_run()(params, junk, MASK)
    real = np.asarray(MASK[:, 0, 0, :])
    assert_close(y2[real], y[real], 1e-12, "padding invariance")
    assert_close(no_bk(g2[0]), no_bk(g[0]), 1e-10, "param grads of the real positions")
    ((y3, _), _), _ = _encoder_run()(params, junk, jnp.ones_like(MASK))
    assert not np.allclose(y3[real], y[real])    # without the mask the padding leaks in


def test_today_the_mask_cannot_reach_the_attention_without_the_combinators():
    """What the combinators add: LayerNorm and Residual take one array."""
    with pytest.raises(TypeError, match=r"Residual\(serial\): serial\[0\] \(LayerNorm\): "
                                        r"input_shape must be one shape"):
        nn.Residual(nn.serial(nn.LayerNorm(), nn.MultiHeadAttention(H))).init(KEY, SHAPES)
    # parallel(LayerNorm, Identity) already reads like OnFirst for a pair (other params tree)
    x = randn((N, T, F))
    ln = nn.LayerNorm()
    _, p, _ = ln.init(KEY, SHAPES[0])
    y_par = nn.parallel(ln, nn.Identity).apply((p, ()), ((), ()), (x, MASK))[0]
    y_on = nn.OnFirst(ln).apply(p, (), (x, MASK))[0]
    assert_close(y_on[0], y_par[0], 1e-15, "OnFirst = parallel(layer, Identity)")
    assert y_on[1] is MASK and y_par[1] is MASK


def test_decoder_block_with_cross_attention_and_a_context_mask():
    ctx_mask = (jnp.arange(S)[None, :] < jnp.array([4, 2, 3])[:, None])[:, None, None, :]
    self_attn = nn.OnFirst(nn.Residual(nn.serial(nn.LayerNorm(),
                                                 nn.MultiHeadAttention(H, causal=True))))
    cross = nn.KeepRest(nn.serial(nn.OnFirst(nn.LayerNorm()), nn.CrossAttention(H)),
                        residual=True)
    decoder = nn.serial(self_attn, cross, nn.OnFirst(nn.Residual(ffn())), nn.DropRest)
    shapes = ((-1, T, F), (-1, S, 3), (-1, 1, 1, S))
    out, params, state = numpy_init(decoder, shapes, seed=4)
    assert out == (-1, T, F)
    x, ctx = randn((N, T, F), 5), randn((N, S, 3), 6)

    def plain(p, x, ctx):
        (ln1, mha), (ln2, ca), ffn_p = p[0], p[1], p[2]
        x = x + plain_mha(mha, _ln(ln1, x), heads=H, causal=True)
        x = x + plain_cross(ca, _ln(ln2, x), ctx, ctx_mask, heads=H)
        return x + _ffn(ffn_p, x)

    run = jax.jit(lambda p, x, c: [(f(p, x, c), jax.grad(lambda p, c: jnp.sum(
        jnp.sin(f(p, x, c))), (0, 1))(p, c)) for f in (
            lambda p, x, c: decoder.apply(p, state, (x, c, ctx_mask))[0], plain)])
    (y, g), (y_ref, g_ref) = run(params, x, ctx)
    assert_close(y, y_ref, 1e-10, "value")
    assert_close(no_bk(g), no_bk(g_ref), 1e-10, "grads (params, context)")
    assert not np.any(g[1][1, 2:]) and not np.any(g[1][2, 3:])   # padded context rows
    text = nn.summary(decoder, shapes, input_dtype=(None, None, jnp.bool_))
    assert "KeepRest(serial, residual=True)" in text and "CrossAttention(2)" in text
    assert "OnFirst(Residual(serial))" in text


def test_key_and_train_reach_the_wrapped_layer():
    """Dropout inside KeepRest / OnFirst: the same key gives what the layer gives alone."""
    mha = nn.MultiHeadAttention(H, dropout_rate=0.5)
    _, p, _ = mha.init(KEY, SHAPES)
    x, k = randn((N, T, F)), jax.random.PRNGKey(3)
    alone = mha.apply(p, (), (x, MASK), key=k, train=True)[0]
    (y, m), _ = nn.KeepRest(mha).apply(p, (), (x, MASK), key=k, train=True)
    np.testing.assert_array_equal(y, alone)
    assert m is MASK
    (y_res, _), _ = nn.KeepRest(mha, residual=True).apply(p, (), (x, MASK), key=k, train=True)
    assert_close(y_res, x + alone, 1e-15, "residual")
    drop = nn.Dropout(0.5)
    (d, _), _ = nn.OnFirst(drop).apply((), (), (x, MASK), key=k, train=True)
    np.testing.assert_array_equal(d, drop.apply((), (), x, key=k, train=True)[0])
    (e, _), _ = nn.OnFirst(drop).apply((), (), (x, MASK), key=k, train=False)
    np.testing.assert_array_equal(e, x)


def test_shapes_pass_through_and_drop_rest_is_a_value_layer():
    on = nn.OnFirst(nn.Dense(3))
    out, p, s = on.init(KEY, ((-1, T, F), None, (-1,)))    # any rest: None, lengths
    assert out == ((-1, T, 3), None, (-1,)) and set(p) == {"w", "b"} and s == ()
    keep = nn.KeepRest(nn.serial(nn.OnFirst(nn.LayerNorm()), nn.MultiHeadAttention(H)))
    assert keep.init(KEY, SHAPES)[0] == ((-1, T, F), (-1, 1, 1, T))
    assert nn.DropRest() is nn.DropRest
    assert nn.DropRest.init(KEY, ((2, 3), (4,), None))[0] == (2, 3)
    x = randn((2, 3))
    assert nn.DropRest.apply((), (), [x, None])[0] is x


# ------------------------------------------------------------------------------ errors
def test_constructor_errors():
    with pytest.raises(TypeError, match=r"OnFirst: argument 0 must be a Layer"):
        nn.OnFirst(3)
    with pytest.raises(TypeError, match=r"KeepRest: argument 0 must be a Layer"):
        nn.KeepRest(lambda x: x)
    with pytest.raises(TypeError, match=r"KeepRest: residual must be a bool"):
        nn.KeepRest(nn.Identity, residual="yes")


@pytest.mark.parametrize("layer, in_shape, exc, match", [
    (nn.OnFirst(nn.LayerNorm()), (-1, T, F), TypeError,
     r"OnFirst\(LayerNorm\): input_shape must be a tuple of shapes \(x, \*rest\), got "
     r"\(-1, 5, 4\)"),
    (nn.OnFirst(nn.LayerNorm()), ((-1, T, F),), ValueError,
     r"OnFirst\(LayerNorm\): input_shape \(\(-1, 5, 4\)\) has 1 entries, expected at least 2"),
    (nn.OnFirst(nn.Dense(3)), ((-1, T, 0), (-1,)), ValueError,
     r"OnFirst\(Dense\(3\)\): Dense\(3\): input_shape \(-1, 5, 0\) must have positive "
     r"sizes"),
    (nn.KeepRest(nn.serial(nn.DropRest, nn.Dense(3)), residual=True), SHAPES, ValueError,
     r"KeepRest\(serial, residual=True\): layer maps shape \(-1, 5, 4\) to "
     r"\(-1, 5, 3\); x \+ layer\(\(x, \*rest\)\) needs the same shape"),
    (nn.KeepRest(nn.Identity, residual=True), SHAPES, ValueError,
     r"KeepRest\(Identity, residual=True\): layer outputs the tuple of shapes"),
    (nn.KeepRest(nn.MultiHeadAttention(H)), ((-1, T, F), (-1, 1, 1, 6)), ValueError,
     r"KeepRest\(MultiHeadAttention\(2\)\): MultiHeadAttention\(2\): dot_product_attention: "
     r"mask has shape \(1, 1, 1, 6\)"),
    (nn.DropRest, (-1, T, F), TypeError, r"DropRest: input_shape must be a tuple of shapes"),
])
def test_init_errors(layer, in_shape, exc, match):
    with pytest.raises(exc, match=match):
        layer.init(KEY, in_shape)


def test_apply_errors_eagerly_and_under_jit():
    block = encoder_block()
    _, p, s = numpy_init(block, SHAPES)
    x = randn((N, T, F))
    _, pd, _ = numpy_init(nn.serial(nn.DropRest, nn.Dense(3)), SHAPES)
    shrink = nn.KeepRest(nn.serial(nn.DropRest, nn.Dense(3)), residual=True)
    bad = [
        (block, p, s, x, TypeError, r"serial\[0\] \(KeepRest\(serial, residual=True\)\): "
                                    r"input must be a tuple \(x, \*rest\), e\.g\. \(x, "
                                    r"mask\), got an array of shape \(3, 5, 4\)"),
        (block, p, s, (x,), ValueError, r"KeepRest\(serial, residual=True\)\): input must be "
                                        r"a tuple \(x, \*rest\) of at least 2 entries"),
        (block, p, s, (x, MASK[:, :, :, :4]), ValueError,
         r"serial\[0\] \(KeepRest\(serial, residual=True\)\): serial\[1\] "
         r"\(MultiHeadAttention\(2\)\): dot_product_attention: mask has shape \(3, 1, 1, 4\)"),
        (block, p, s, (x[..., :3], MASK), ValueError,
         r"KeepRest\(serial, residual=True\)\): serial\[0\] \(OnFirst\(LayerNorm\)\): "),
        (nn.OnFirst(nn.LayerNorm()), p[0][0], (), x, TypeError,
         r"OnFirst\(LayerNorm\): input must be a tuple \(x, \*rest\)"),
        (shrink, pd, ((), ()), (x, MASK), ValueError,
         r"KeepRest\(serial, residual=True\): layer maps shape \(3, 5, 4\) to \(3, 5, 3\)"),
        (nn.DropRest, (), (), x, TypeError, r"DropRest: input must be a tuple"),
        (nn.DropRest, {"w": x}, (), (x, MASK), ValueError, r"DropRest: params must be empty"),
    ]
    for layer, params, state, *row in bad:
        raise_eagerly_and_under_jit(layer, state, [(params, *row)])
    with pytest.raises(TypeError, match=r"OnFirst\(LayerNorm\): train must be a bool"):
        nn.OnFirst(nn.LayerNorm()).apply(p[0][0], (), (x, MASK), train="no")
