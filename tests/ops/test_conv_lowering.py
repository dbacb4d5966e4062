"""conv2d's per-platform lowerings (``ops.conv.auto_lowering``).

A CUDA GPU takes, for a short patch row, a forward without any convolution (``ops.conv.
_forward_slices``) and the im2col backward: that forward equals XLA's (float64, bfloat16),
the composed rule equals the reference twin's gradient and central differences (run here
by giving the CPU the CUDA choice), and the program lowered for each platform from this
machine holds exactly the convolutions its choice names (conv2d and conv_transpose2d)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import conv
from funcnet.ops.conv import conv2d
from funcnet.ops.conv_transpose import conv_transpose2d
from funcnet.ops.reference.conv import conv2d as ref_conv2d
from tests.ops._cases import rand

# (x shape, kernel (KH, KW, Cin, Cout), stride, padding, dilation)
GEOMETRIES = [
    ((2, 9, 8, 1), (5, 5, 1, 3), 1, 0, 1),                        # the book CNN's layer
    ((2, 9, 9, 3), (3, 3, 3, 4), 2, "SAME", 1),                   # RGB 3x3, stride 2
    ((1, 10, 7, 2), (3, 2, 2, 3), (2, 1), ((1, 2), (0, 1)), (2, 1)),  # dilated, asymmetric
    ((3, 6, 6, 4), (1, 1, 4, 2), 1, 1, 1),                        # 1x1, padded
]
IDS = ["book_cnn", "rgb_stride2_same", "dilated_asymmetric", "pointwise_padded"]


def _geometry(x, w, stride, padding, dilation):
    return conv.check_conv2d_args("conv2d", x, w, None, stride, padding, dilation)


@pytest.mark.parametrize("xs, ws, stride, padding, dilation", GEOMETRIES, ids=IDS)
def test_forward_slices_equals_xlas_forward(xs, ws, stride, padding, dilation):
    jax.config.update("jax_enable_x64", True)
    x, w = jnp.asarray(rand(xs, 0)), jnp.asarray(rand(ws, 1))
    geometry = _geometry(x, w, stride, padding, dilation)
    got = jax.jit(conv._forward_slices, static_argnums=(2, 3, 4, 5))(x, w, *geometry)
    assert got.dtype == jnp.float64
    assert_close(got, conv._conv_forward(x, w, *geometry), 1e-12, "slices vs XLA forward")


def test_forward_slices_accumulates_bfloat16_in_float32():
    x = jnp.asarray(rand((2, 12, 12, 3), 2), jnp.bfloat16)
    w = jnp.asarray(rand((3, 3, 3, 8), 3), jnp.bfloat16)
    geometry = _geometry(x, w, 1, 1, 1)
    got = conv._forward_slices(x, w, *geometry)
    assert got.dtype == jnp.bfloat16
    want = conv._conv_forward(x.astype(jnp.float32), w.astype(jnp.float32), *geometry)
    # one bfloat16 rounding of the float32 sum (8 bits: 2^-8 of the value)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want),
                               rtol=2 ** -8, atol=1e-6)


def test_forward_slices_of_no_input_channels_is_zero():
    x, w = jnp.zeros((2, 5, 5, 0), jnp.float32), jnp.zeros((3, 3, 0, 4), jnp.float32)
    y = conv._forward_slices(x, w, *_geometry(x, w, 1, 0, 1))
    assert y.shape == (2, 3, 3, 4) and not bool(jnp.any(y))


@pytest.mark.parametrize("xs, ws, stride, padding, dilation", GEOMETRIES, ids=IDS)
def test_cuda_choice_run_here_matches_reference_and_finite_differences(
        monkeypatch, xs, ws, stride, padding, dilation):
    """impl='auto' with the CPU given CUDA's choice for the kernel: the slices forward and
    the im2col backward, composed in the op's custom rule."""
    jax.config.update("jax_enable_x64", True)
    assert conv.auto_lowering("cuda", ws, 1) == ("slices", "im2col")
    real = conv.auto_lowering
    monkeypatch.setattr(conv, "auto_lowering",
                        lambda p, w_shape, g: real("cuda" if p == "cpu" else p, w_shape, g))
    x, w, b = rand(xs, 4), rand(ws, 5), rand(ws[3:], 6)
    f = jax.jit(lambda x, w, b: conv2d(x, w, b, stride, padding, dilation))
    text = f.lower(x, w, b).as_text()
    assert "stablehlo.convolution" not in text      # really the slices forward
    check_vjp([f], lambda x, w, b: ref_conv2d(x, w, b, stride, padding, dilation),
              (x, w, b), seed=7)


@pytest.mark.parametrize("platform, w_shape, groups, want", [
    ("cuda", (5, 5, 1, 30), 1, ("slices", "im2col")),   # the book CNN: rows of 25
    ("cuda", (3, 3, 3, 64), 1, ("slices", "im2col")),   # an RGB 3x3 stem: rows of 27
    ("cuda", (3, 3, 4, 8), 1, ("xla", "xla")),          # rows of 36: cuDNN
    ("cuda", (3, 3, 1, 8), 8, ("xla", "xla")),          # depthwise: not measured
    ("cpu", (5, 5, 1, 30), 1, ("xla", "im2col")),       # XLA:CPU's forward is faster
    ("cpu", (3, 3, 4, 8), 1, ("xla", "xla")),
    ("cpu", (3, 3, 1, 8), 8, ("xla", "im2col")),
    ("tpu", (5, 5, 1, 30), 1, ("xla", "xla")),          # not measured: XLA's
    ("rocm", (5, 5, 1, 30), 1, ("xla", "xla")),
])
def test_auto_lowering_table(platform, w_shape, groups, want):
    assert conv.auto_lowering(platform, w_shape, groups) == want


@pytest.mark.parametrize("platform", ["cpu", "cuda", "tpu"])
@pytest.mark.parametrize("w_shape, groups", [((5, 5, 1, 4), 1), ((3, 3, 3, 4), 1),
                                             ((3, 3, 4, 4), 1), ((1, 1, 8, 4), 1),
                                             ((3, 3, 2, 4), 2)],
                         ids=["one_channel", "rgb", "dense", "pointwise", "grouped"])
def test_each_platforms_program_holds_the_convolutions_its_choice_names(
        platform, w_shape, groups):
    """Lowered for ``platform`` from this machine: a forward ``'xla'`` is one convolution,
    a backward ``'xla'`` two (``dx`` and ``dW``), everything else matmuls and slices;
    conv_transpose2d's forward is conv2d's ``dx`` and its ``dx`` conv2d's forward."""
    fwd, bwd = conv.auto_lowering(platform, w_shape, groups)
    x = jnp.ones((2, 7, 7, w_shape[2] * groups), jnp.float32)
    w = jnp.ones(w_shape, jnp.float32)
    y = jnp.ones((2, 7, 7, w_shape[3]), jnp.float32)

    def count(f, *args):
        g = jax.jit(jax.grad(lambda *a: jnp.sum(jnp.sin(f(*a))), (0, 1)))
        text = g.trace(*args).lower(lowering_platforms=(platform,)).as_text()
        return text.count("stablehlo.convolution")

    xla_fwd, xla_bwd = int(fwd == "xla"), int(bwd == "xla")
    assert count(lambda x, w: conv2d(x, w, padding="SAME", groups=groups), x, w) == \
        xla_fwd + 2 * xla_bwd
    assert count(lambda y, w: conv_transpose2d(y, w, padding="SAME", groups=groups),
                 y, w) == 2 * xla_bwd + xla_fwd
