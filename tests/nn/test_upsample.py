"""Upsample2D / Resize2D: shapes promised by init, values against jnp.repeat, the op and
PyTorch's nn.Upsample, one example, describe texts, construction errors, and a small
U-Net-style decoder whose gradients equal its reference-mode twin's and which trains."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet import nn, ops, optim
from funcnet.gradcheck import assert_close
from tests.ops._cases import rand

KEY = jax.random.PRNGKey(0)


@pytest.mark.parametrize("layer,in_shape,out_shape", [
    (nn.Upsample2D(), (-1, 3, 4, 2), (-1, 6, 8, 2)),
    (nn.Upsample2D((3, 1), "bilinear"), (-1, 2, 5, 1), (-1, 6, 5, 1)),
    (nn.Resize2D((7, 3)), (-1, 4, 6, 2), (-1, 7, 3, 2)),
    (nn.Resize2D(5, "nearest"), (4, 6, 2), (5, 5, 2)),
])
def test_init_promises_the_shape_apply_returns(layer, in_shape, out_shape):
    shape, params, state = layer.init(KEY, in_shape)
    assert (shape, params, state) == (out_shape, (), ())
    x = rand(tuple(2 if d == -1 else d for d in in_shape), 1)
    y, _ = layer.apply(params, state, x)
    assert y.shape == tuple(2 if d == -1 else d for d in out_shape)


def test_values_are_the_ops_and_pytorchs():
    x = rand((2, 3, 4, 2), 2)
    y, _ = nn.Upsample2D((2, 3)).apply((), (), x)
    np.testing.assert_array_equal(y, jnp.repeat(jnp.repeat(x, 2, 1), 3, 2))
    y1, _ = nn.Upsample2D(2, "linear").apply((), (), x[0])          # one example
    assert_close(y1, ops.resize2d(x, (6, 8), "linear")[0], 1e-15)
    y2, _ = nn.Resize2D((5, 3)).apply((), (), x)
    assert_close(y2, ops.resize2d(x, (5, 3), "linear"), 1e-15)
    torch = pytest.importorskip("torch")
    up = torch.nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    want = up(torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert_close(nn.Upsample2D(2, "bilinear").apply((), (), x)[0], want.numpy(), 1e-12)


def test_describe_and_construction_errors():
    assert nn.describe(nn.Upsample2D(2, "linear")) == "Upsample2D(scale=2, method='linear')"
    assert nn.describe(nn.Resize2D((4, 5))) == "Resize2D(size=(4, 5), method='linear')"
    assert nn.describe(nn.Upsample2D()) != nn.describe(nn.Upsample2D(method="linear"))
    with pytest.raises(ValueError, match=r"Upsample2D: scale must be >= 1"):
        nn.Upsample2D(0)
    with pytest.raises(TypeError, match=r"Upsample2D: scale must be an int or a pair "
                                        r"of ints, got 2.0"):
        nn.Upsample2D(2.0)
    with pytest.raises(ValueError, match=r"Resize2D: method must be one of 'nearest', "
                                         r"'linear', 'bilinear', got 'bicubic'"):
        nn.Resize2D(4, "bicubic")
    with pytest.raises(ValueError, match=r"Upsample2D\(2\): x has shape \(2, 1\) \(rank 2\), "
                                         r"expected rank 3 or 4"):
        nn.Upsample2D(2).apply((), (), jnp.zeros((2, 1)))
    with pytest.raises(TypeError, match=r"Resize2D\(3\): resize2d: x .*float"):
        nn.Resize2D(3).apply((), (), jnp.zeros((1, 2, 2, 1), jnp.int32))


def _decoder():
    """Encoder conv down by 2, bottleneck, upsample (bilinear) back, skip concat, conv."""
    f64 = jnp.float64
    down = nn.serial(nn.Conv2D(4, 3, stride=2, padding=1, dtype=f64), nn.ReLU(),
                     nn.Upsample2D(2, "bilinear"), nn.Conv2D(4, 3, padding=1, dtype=f64))
    return nn.serial(nn.FanOut(2), nn.parallel(down, nn.Identity), nn.FanInConcat(-1),
                     nn.Conv2D(1, 1, dtype=f64))


def test_a_unet_style_decoder_matches_its_twin_and_trains():
    model = _decoder()
    _, params, state = model.init(KEY, (-1, 8, 8, 2))
    x = rand((4, 8, 8, 2), 3)
    target = jnp.asarray(np.asarray(x)[..., :1] ** 2)

    def loss(p):
        y, _ = model.apply(p, state, x)
        return jnp.mean((y - target) ** 2)

    g = jax.jit(jax.grad(loss))(params)
    with ops.reference_mode():
        want = jax.jit(jax.grad(loss))(params)
    assert_close(g, want, 1e-10)
    opt = optim.adam(3e-2)
    opt_state, losses = opt.init(params), []

    @jax.jit
    def train_step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s, p)
        return optim.apply_updates(p, updates), s, value

    for _ in range(60):
        params, opt_state, value = train_step(params, opt_state)
        losses.append(float(value))
    assert losses[-1] < 0.5 * losses[0], losses[::10]
