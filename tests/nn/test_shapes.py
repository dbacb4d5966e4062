"""nn.Reshape and nn.SwapAxes: equal to jnp.reshape / jnp.swapaxes, init shapes (the -1
batch), use with Flatten/LSTM, errors eager and under jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn
from tests.nn._models import randn

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("shape, in_shape, out", [
    ((4, -1), (-1, 2, 6), (-1, 4, 3)),
    ((-1,), (5, 2, 3, 2), (5, 12)),
    ((3, 2, 2), (-1, 12), (-1, 3, 2, 2)),
    (7, (2, 7, 1), (2, 7)),
    ((), (-1, 1), (-1,)),
    ((2, 1, -1), (-1, 8), (-1, 2, 1, 4)),
])
def test_reshape_equals_jnp_reshape(shape, in_shape, out):
    layer = nn.Reshape(shape)
    got, p, s = layer.init(KEY, in_shape)
    assert got == out and p == () and s == ()
    x = randn(tuple(3 if d == -1 else d for d in in_shape))
    y, s2 = jax.jit(lambda x: layer.apply((), (), x))(x)
    want = jnp.reshape(x, (x.shape[0],) + tuple(np.atleast_1d(shape)) if shape != () else
                       (x.shape[0],))
    np.testing.assert_array_equal(y, want)
    assert y.shape == tuple(3 if d == -1 else d for d in out) and s2 == ()


def test_reshape_keeps_dtype_grad_vmap_and_flatten():
    x = randn((4, 2, 3, 2))
    flat = nn.Reshape(-1)
    np.testing.assert_array_equal(flat.apply((), (), x)[0], nn.Flatten().apply((), (), x)[0])
    ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6)
    y, _ = nn.Reshape((3, 2)).apply((), (), ids)
    assert y.dtype == jnp.int32 and y.shape == (2, 3, 2)
    w = randn((4, 12), seed=1)
    g = jax.grad(lambda x: jnp.sum(flat.apply((), (), x)[0] * w))(x)
    np.testing.assert_array_equal(g, w.reshape(x.shape))
    # per-example under vmap: an example with a batch axis of 1
    per = jax.vmap(lambda e: nn.Reshape((6, 2)).apply((), (), e[None])[0][0])(x)
    np.testing.assert_array_equal(per, x.reshape(4, 6, 2))
    # in a model: ViT-style patches of a (N, 4, 4, 1) image with p = 2 -> (N, 4 tokens, 4)
    img = randn((2, 4, 4, 1), seed=2)
    patches = nn.serial(nn.Reshape((2, 2, 2, 2)), nn.SwapAxes(2, 3), nn.Reshape((4, 4)))
    assert patches.init(KEY, (-1, 4, 4, 1))[0] == (-1, 4, 4)
    tok, _ = patches.apply(((),) * 3, ((),) * 3, img)
    want = img[..., 0].reshape(2, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(2, 4, 4)
    np.testing.assert_array_equal(tok, want)
    np.testing.assert_array_equal(tok[:, 1], img[:, 0:2, 2:4, 0].reshape(2, 4))


@pytest.mark.parametrize("shape, err, msg", [
    ((2, -1, -1), ValueError, r"Reshape\(\(2, -1, -1\)\): shape \(2, -1, -1\) must have sizes "
                              r">= 1, except one -1"),
    ((0, 3), ValueError, r"must have sizes >= 1"),
    ((2.0, 3), TypeError, r"Reshape: shape\[0\] must be an int, got float"),
    ((True,), TypeError, r"Reshape: shape\[0\] must be an int, got bool"),
    ("ab", TypeError, r"Reshape: shape\[0\] must be an int, got str"),
])
def test_reshape_bad_construction(shape, err, msg):
    with pytest.raises(err, match=msg):
        nn.Reshape(shape)


@pytest.mark.parametrize("jit", [False, True])
def test_reshape_size_mismatch_init_and_apply(jit):
    layer = nn.Reshape((4, 2))
    init = (lambda s: jax.jit(lambda k: layer.init(k, s)[1])(KEY)) if jit else \
        (lambda s: layer.init(KEY, s))
    apply = jax.jit(lambda x: layer.apply((), (), x)) if jit else \
        (lambda x: layer.apply((), (), x))
    with pytest.raises(ValueError, match=r"Reshape\(\(4, 2\)\): input_shape has shape \(-1, 3, 3\)"
                                         r": 9 values per example cannot be reshaped to "
                                         r"\(4, 2\) \(8 values\)"):
        init((-1, 3, 3))
    with pytest.raises(ValueError, match=r"Reshape\(\(4, 2\)\): x has shape \(2, 9\): 9 values"):
        apply(jnp.ones((2, 9)))
    with pytest.raises(ValueError, match=r"Reshape\(\(4, -1\)\): x has shape \(2, 9\): 9 values "
                                         r"per example are not a multiple of 4"):
        (jax.jit(lambda x: nn.Reshape((4, -1)).apply((), (), x)) if jit else
         (lambda x: nn.Reshape((4, -1)).apply((), (), x)))(jnp.ones((2, 9)))
    with pytest.raises(ValueError, match=r"Reshape\(\(4, 2\)\): input_shape \(2, -1\) has -1 at "
                                         r"axis 1, a size the layer needs"):
        init((2, -1))
    with pytest.raises(ValueError, match=r"Reshape\(\(4, 2\)\): x has shape \(\), expected rank "
                                         r">= 1"):
        apply(jnp.ones(()))
    with pytest.raises(ValueError, match=r"Reshape\(\(4, 2\)\): params must be empty"):
        layer.apply({"w": jnp.ones(2)}, (), jnp.ones((2, 8)))


@pytest.mark.parametrize("axes, in_shape, out", [
    ((0, 1), (-1, 5, 3), (5, -1, 3)),
    ((), (4, -1, 3), (-1, 4, 3)),
    ((-1, -2), (2, 5, 3), (2, 3, 5)),
    ((-2, -3), (2, 7, -1, 3, 4), (2, 7, 3, -1, 4)),
    ((1, 1), (2, 3), (2, 3)),
])
def test_swapaxes_equals_jnp_swapaxes(axes, in_shape, out):
    layer = nn.SwapAxes(*axes)
    assert layer.init(KEY, in_shape) == (out, (), ())
    x = randn(tuple(2 if d == -1 else d for d in in_shape))
    a, b = axes if axes else (0, 1)
    y, s = jax.jit(lambda x: layer.apply((), (), x))(x)
    np.testing.assert_array_equal(y, jnp.swapaxes(x, a, b))
    assert y.shape == tuple(2 if d == -1 else d for d in out) and s == ()
    # a swap is its own inverse
    np.testing.assert_array_equal(layer.apply((), (), y)[0], x)


def test_swapaxes_feeds_a_time_major_lstm():
    """Batch-major tokens (N, T, D) -> SwapAxes(0, 1) -> LSTM -> SwapAxes(0, 1): the LSTM run
    on x.swapaxes(0, 1), and init predicts the shapes with the unknown batch."""
    model = nn.serial(nn.SwapAxes(0, 1), nn.LSTM(3), nn.SwapAxes(0, 1))
    out, p, s = model.init(KEY, (-1, 5, 2))
    assert out == (-1, 5, 3)
    x = randn((4, 5, 2))

    def ours(x):
        return model.apply(p, s, x)[0]

    def lstm(x):
        return jnp.swapaxes(nn.LSTM(3).apply(p[1], s[1], jnp.swapaxes(x, 0, 1))[0], 0, 1)

    @jax.jit
    def run(x):                        # one program (eagerly: one compile per primitive)
        return [(f(x), jax.grad(lambda x: jnp.sum(f(x) ** 2))(x)) for f in (ours, lstm)]

    (y, g), (y_ref, g_ref) = run(x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("jit", [False, True])
def test_swapaxes_errors(jit):
    with pytest.raises(TypeError, match=r"SwapAxes: axis2 must be an int, got float"):
        nn.SwapAxes(0, 1.0)
    layer = nn.SwapAxes(0, 3)
    init = (lambda s: jax.jit(lambda k: layer.init(k, s)[1])(KEY)) if jit else \
        (lambda s: layer.init(KEY, s))
    apply = jax.jit(lambda x: layer.apply((), (), x)) if jit else \
        (lambda x: layer.apply((), (), x))
    with pytest.raises(ValueError, match=r"SwapAxes\(0, 3\): axis2 3 is out of range for an "
                                         r"input of rank 3"):
        init((-1, 4, 2))
    with pytest.raises(ValueError, match=r"SwapAxes\(0, 3\): axis2 3 is out of range for an "
                                         r"input of rank 2"):
        apply(jnp.ones((2, 4)))
    with pytest.raises(TypeError, match=r"SwapAxes\(0, 3\): x must be an array, got list"):
        apply([1.0, 2.0]) if not jit else layer.apply((), (), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"SwapAxes\(0, 3\): input_shape \(-1, 2, -1, 3\) must "
                                         r"have positive sizes, except one -1"):
        init((-1, 2, -1, 3))
