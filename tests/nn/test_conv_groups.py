"""Conv2D / Conv1D with dilation and groups: values and gradients against
lax.conv_general_dilated (always), Flax's ``nn.Conv`` and Equinox's ``nn.Conv2d`` with
copied weights (when installed); params shapes, per-group fan-in, describe/summary, errors
at construction, in init and in apply (eagerly and under jit)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet import nn
from funcnet.gradcheck import assert_close
from tests.nn._models import abstract_init, randn, random_params

F64 = jnp.float64
KEY = jax.random.PRNGKey(0)



# (layer, x shape, lax arguments: strides, padding, rhs_dilation, groups, dimension numbers)
LAYERS = {
    "conv2d-grouped-dilated": (
        lambda: nn.Conv2D(6, (3, 2), (2, 1), ((1, 2), (0, 1)), (2, 3), 3, dtype=F64),
        (2, 9, 10, 6), ((2, 1), [(1, 2), (0, 1)], (2, 3), 3, ("NHWC", "HWIO", "NHWC"))),
    "conv2d-depthwise": (
        lambda: nn.Conv2D(8, 3, padding="SAME", groups=4, dtype=F64),
        (2, 6, 5, 4), ((1, 1), "SAME", (1, 1), 4, ("NHWC", "HWIO", "NHWC"))),
    "conv1d-causal-dilated": (    # WaveNet-style: kernel 2, dilation 2, left padding 2
        lambda: nn.Conv1D(4, 2, padding=(2, 0), dilation=2, groups=2, dtype=F64),
        (2, 9, 6), ((1,), [(2, 0)], (2,), 2, ("NWC", "WIO", "NWC"))),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_values_and_gradients_equal_lax_conv(name):
    make, shape, (strides, padding, dilation, groups, dn) = LAYERS[name]
    layer = make()
    p = random_params(layer, (-1,) + shape[1:], seed=1)
    x = randn(shape, seed=5)

    def ours(p, x):
        return layer.apply(p, (), x)[0]

    def theirs(p, x):
        y = lax.conv_general_dilated(x, p["w"], strides, padding, rhs_dilation=dilation,
                                     dimension_numbers=dn, feature_group_count=groups)
        return y + p["b"][(None,) * (y.ndim - 1)]

    @jax.jit
    def both(p, x):
        y = theirs(p, x)
        ct = jnp.cos(jnp.arange(y.size, dtype=F64)).reshape(y.shape)
        return ours(p, x), y, ours(p, x[0]), [jax.vjp(f, p, x)[1](ct) for f in (ours, theirs)]

    y, y_ref, y_one, (g, g_ref) = both(p, x)
    assert_close(y, y_ref, 1e-10, f"{name}: value")
    assert_close(y_one, y_ref[0], 1e-10, f"{name}: one example, no batch axis")
    assert_close(g, g_ref, 1e-10, f"{name}: vjp")


def test_params_shapes_and_per_group_fan_in():
    """Kernels hold Cin/groups input channels; He normal's fan_in is KH*KW*Cin/groups
    (Flax, PyTorch): a depthwise 3x3 kernel has std sqrt(2/9), not sqrt(2/(9*Cin))."""
    out, p, _ = nn.Conv2D(512, 3, groups=64).init(KEY, (-1, 8, 8, 64))
    assert out == (-1, 6, 6, 512) and p["w"].shape == (3, 3, 1, 512)
    np.testing.assert_allclose(np.std(p["w"]), np.sqrt(2 / 9), rtol=0.05)
    out, p, _ = nn.Conv1D(4, 3, dilation=2, groups=2).init(KEY, (-1, 9, 6))
    assert out == (-1, 5, 4) and p["w"].shape == (3, 3, 4) and p["b"].shape == (4,)


def test_describe_and_summary():
    assert "dilation=2, groups=4" in nn.describe(nn.Conv2D(8, 3, dilation=2, groups=4))
    assert "dilation=3, groups=2" in nn.describe(nn.Conv1D(4, 3, dilation=3, groups=2))
    text = nn.summary(nn.serial(nn.Conv2D(8, 7, padding=3, groups=8), nn.ReLU()),
                      (-1, 16, 16, 8))
    assert "Total params: 400" in text          # 7*7*1*8 + 8: no dense (7, 7, 8, 8) kernel


def test_flax_conv_with_groups_and_dilation_gives_the_same_numbers():
    linen = pytest.importorskip("flax.linen")
    x2, x1 = randn((2, 9, 10, 6), seed=7), randn((2, 9, 6), seed=8)
    cases = [(linen.Conv(6, (3, 2), (2, 1), ((1, 2), (0, 1)), kernel_dilation=(2, 3),
                         feature_group_count=3, dtype=F64, param_dtype=F64),
              LAYERS["conv2d-grouped-dilated"][0](), x2),
             (linen.Conv(4, (2,), padding=((2, 0),), kernel_dilation=(2,),
                         feature_group_count=2, dtype=F64, param_dtype=F64),
              LAYERS["conv1d-causal-dilated"][0](), x1)]
    for flax_layer, layer, x in cases:
        variables = flax_layer.init(KEY, x)
        kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
        assert kernel.shape == abstract_init(layer, (-1,) + x.shape[1:])[1]["w"].shape
        assert_close(layer.apply({"w": kernel, "b": bias}, (), x)[0],
                     flax_layer.apply(variables, x), 1e-10, layer.name)


def test_equinox_conv2d_with_groups_and_dilation_gives_the_same_numbers():
    eqx = pytest.importorskip("equinox")
    conv = eqx.nn.Conv2d(6, 6, (3, 2), (2, 1), ((1, 2), (0, 1)), (2, 3), 3, dtype=F64,
                         key=KEY)
    x = randn((9, 10, 6), seed=9)                             # one example, (H, W, C)
    p = {"w": jnp.transpose(conv.weight, (2, 3, 1, 0)), "b": conv.bias.reshape(6)}
    want = jnp.transpose(conv(jnp.transpose(x, (2, 0, 1))), (1, 2, 0))
    assert_close(LAYERS["conv2d-grouped-dilated"][0]().apply(p, (), x)[0], want, 1e-10,
                 "Conv2D vs eqx.nn.Conv2d")


@pytest.mark.parametrize("make, exc, match", [
    (lambda: nn.Conv2D(6, 3, groups=4), ValueError,
     r"Conv2D\(6\): out_channels 6 is not divisible by groups=4"),
    (lambda: nn.Conv1D(4, 3, groups=3), ValueError,
     r"Conv1D\(4\): out_channels 4 is not divisible by groups=3"),
    (lambda: nn.Conv2D(8, 3, groups=0), ValueError, r"Conv2D\(8\): groups must be >= 1, got 0"),
    (lambda: nn.Conv2D(8, 3, dilation=(1, 0)), ValueError,
     r"Conv2D\(8\): dilation must be >= 1, got \(1, 0\)"),
    (lambda: nn.Conv1D(8, 3, dilation=1.5), TypeError,
     r"Conv1D\(8\): dilation must be an int, got float 1.5"),
    (lambda: nn.Conv2D(8, 3, groups=4).init(KEY, (-1, 5, 5, 6)), ValueError,
     r"Conv2D\(8\): input_shape \(-1, 5, 5, 6\): in_channels 6 is not divisible by groups=4"),
    (lambda: nn.Conv2D(4, 3, dilation=3).init(KEY, (-1, 6, 6, 1)), ValueError,
     r"Conv2D\(4\): conv2d: dilated kernel \(7, 7\) is larger than the padded input"),
], ids=["out-channels", "conv1d-out-channels", "groups-0", "dilation-0", "conv1d-dilation",
        "init-in-channels", "init-dilated-kernel"])
def test_bad_arguments_and_input_shapes_raise(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("layer, p_shapes, x_shape, match", [
    (nn.Conv2D(8, 3, groups=4), ((3, 3, 2, 8), (8,)), (2, 5, 5, 6),
     r"Conv2D\(8\): conv2d: x has shape \(2, 5, 5, 6\): in_channels 6 is not divisible by "
     r"groups=4"),
    (nn.Conv2D(8, 3, groups=4), ((3, 3, 2, 8), (8,)), (5, 5, 4),       # one example
     r"Conv2D\(8\): conv2d: w has shape \(3, 3, 2, 8\), expected in_channels 4 / groups 4 = "
     r"1 to match x \(1, 5, 5, 4\)"),
    (nn.Conv1D(4, 2, groups=2), ((2, 3, 4), (4,)), (2, 7, 4),
     r"Conv1D\(4\) \(as conv2d on \(N, 1, L, C\)\): conv2d: w has shape \(1, 2, 3, 4\), "
     r"expected in_channels 4 / groups 2 = 2"),
], ids=["conv2d-channels", "conv2d-one-example", "conv1d"])
def test_params_that_do_not_fit_the_input_raise_eagerly_and_under_jit(layer, p_shapes, x_shape,
                                                                      match):
    p = {"w": jnp.zeros(p_shapes[0]), "b": jnp.zeros(p_shapes[1])}
    x = jnp.zeros(x_shape)
    with pytest.raises(ValueError, match=match):
        layer.apply(p, (), x)
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda p, x: layer.apply(p, (), x))(p, x)
