"""conv2d: custom VJP vs autodiff of the reference twin and central differences, both
backward lowerings, transforms (jit, vmap per-example grads, grad-of-grad, pmap), errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close
from funcnet.ops import reference as R
from funcnet.ops.conv import conv2d, cpu_backward
from funcnet.ops.pool import avg_pool2d, max_pool2d
from funcnet.ops.reference.conv import conv2d as ref_conv2d
from funcnet.gradcheck import check_vjp
from tests.ops._cases import rand

# (x shape, kernel (KH, KW), Cout, stride, padding, with bias)
CASES = [
    ((1, 5, 6, 1), (3, 3), 2, 1, 0, True),                   # batch 1, Cin 1
    ((2, 7, 6, 3), (3, 2), 4, 2, 1, True),                   # stride 2, odd sizes
    ((2, 6, 5, 3), (3, 3), 2, 2, "SAME", True),
    ((1, 5, 7, 4), (2, 2), 3, (2, 3), "VALID", False),       # no bias
    ((2, 5, 5, 3), (2, 3), 2, 1, ((0, 2), (1, 0)), True),    # asymmetric padding
    ((1, 4, 4, 2), (1, 1), 2, 2, (2, 1), True),              # padding > kernel - 1
]


def _args(case, seed=0):
    xs, (kh, kw), cout, _, _, bias = case
    return (rand(xs, seed), rand((kh, kw, xs[3], cout), seed + 1),
            rand((cout,), seed + 2) if bias else None)


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_conv2d_vjp_matches_reference_and_finite_differences(case):
    """Every lowering ('im2col', 'xla', 'auto') against jax.vjp of the reference (1e-10),
    and central differences (1e-6)."""
    stride, padding = case[3], case[4]
    fs = [lambda x, w, b, i=impl: conv2d(x, w, b, stride, padding, impl=i)
          for impl in ("im2col", "xla", "auto")]
    ref = lambda x, w, b: ref_conv2d(x, w, b, stride, padding)  # noqa: E731
    y = check_vjp(fs, ref, _args(case), seed=1)["value"]
    assert y.dtype == jnp.float64


def test_conv2d_without_bias_has_none_cotangent():
    x, w, _ = _args(CASES[0])
    y, vjp = jax.vjp(lambda x, w, b: conv2d(x, w, b, impl="xla"), x, w, None)
    dx, dw, db = vjp(jnp.ones(y.shape, jnp.float64))
    assert db is None and dx.shape == x.shape and dw.shape == w.shape


def test_conv2d_im2col_and_xla_agree_in_float32():
    x, w = rand((4, 12, 12, 3), 3, np.float32), rand((5, 5, 3, 8), 4, np.float32)
    loss = lambda x, w, i: jnp.sum(jnp.sin(conv2d(x, w, None, 2, "SAME", impl=i)))  # noqa
    # full float32 products: at the default precision a GPU takes TF32 (10-bit mantissa)
    # passes, and the two lowerings' sums then differ by ~1e-3 of the scale (seen on an
    # H200); on CPU the setting changes nothing
    with jax.default_matmul_precision("highest"):
        grads = jax.jit(lambda x, w: [jax.grad(loss, (0, 1))(x, w, i)
                                      for i in ("xla", "im2col")])(x, w)
    assert grads[1][1].dtype == jnp.float32
    assert_close(grads[1], grads[0], 1e-4, "im2col vs xla (float32)")


def test_op_is_custom_vjp_and_im2col_backward_has_no_convolution():
    x, w, b = _args(CASES[1])
    assert "custom_vjp_call" in str(jax.make_jaxpr(lambda x, w: conv2d(x, w, b, 2, 1))(x, w))
    # make_jaxpr(grad) inlines fwd/bwd (jax 0.10): the im2col rule is matmuls and pads,
    # so the forward convolution is the only one; autodiff of the twin adds two more
    counts = [str(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(f(x, w, b, 2, 1)), (0, 1)))(
        x, w)).count("conv_general_dilated[") for f in
        (lambda *a: conv2d(*a, impl="im2col"), lambda *a: conv2d(*a, impl="xla"), ref_conv2d)]
    assert counts == [1, 3, 3]


@pytest.mark.parametrize("w_shape, groups, want", [
    ((5, 5, 1, 6), 1, "im2col"),      # one input channel: XLA:CPU's dW conv is slow
    ((3, 3, 4, 6), 1, "xla"),         # patch rows of 36 > 27
    ((3, 3, 3, 6), 1, "im2col"),      # an RGB 3x3 kernel: rows of 27
    ((1, 1, 4, 6), 1, "im2col"),      # 1x1: im2col is one matmul, no patches
    ((3, 3, 2, 6), 2, "im2col"),      # grouped: XLA:CPU's grouped convs are slow
], ids=["one_channel", "dense", "rgb", "pointwise", "grouped"])
def test_auto_on_cpu_compiles_the_lowering_cpu_backward_picks(w_shape, groups, want):
    """impl='auto' on CPU is the lowering of ``cpu_backward`` (compiled text equal to it,
    not to the other one) and its gradient equals the other lowering's."""
    if jax.default_backend() != "cpu":
        pytest.skip("the CPU choice")
    assert cpu_backward(w_shape, groups) == want
    x = jnp.asarray(rand((2, 7, 7, w_shape[2] * groups), 3), jnp.float32)
    w = jnp.asarray(rand(w_shape, 4), jnp.float32)

    def compiled(impl):
        f = jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(conv2d(x, w, padding=1,
                                                                groups=groups, impl=impl))),
                             (0, 1)))
        return f, f.lower(x, w).compile().as_text().count("convolution")

    (auto, n_auto), (mine, n_mine), (_, n_other) = (
        compiled(i) for i in ("auto", want, "xla" if want == "im2col" else "im2col"))
    assert n_auto == n_mine != n_other
    assert_close(auto(x, w), compiled("xla" if want == "im2col" else "im2col")[0](x, w),
                 1e-4, "auto vs the other lowering")


def _cnn_loss(conv, maxpool, avgpool):
    def loss(params, x):
        h = jnp.tanh(conv(x, params["w"], params["b"], 1, 1))
        h = maxpool(h, 2)
        h = avgpool(h, (2, 1), 1, ((0, 1), (0, 0)))
        return jnp.sum(h * h)
    return loss


def _cnn_params():
    return ({"w": jnp.asarray(rand((3, 3, 2, 3), 5)), "b": jnp.asarray(rand((3,), 6))},
            jnp.asarray(rand((3, 1, 6, 5, 2), 7)))


def _losses():
    return [_cnn_loss(lambda *a, i=impl: conv2d(*a, impl=i), max_pool2d, avg_pool2d)
            for impl in ("xla", "im2col")] + [
        _cnn_loss(R.conv2d, R.max_pool2d, R.avg_pool2d)]


def test_vmap_per_example_grads_equal_a_loop_and_reference():
    """vmap(grad) of a small CNN loss (conv + max-pool + avg-pool), both lowerings."""
    params, xs = _cnn_params()
    losses = _losses()
    per_example = jax.jit(lambda p, xs: [jax.vmap(jax.grad(l), in_axes=(None, 0))(p, xs)
                                         for l in losses])(params, xs)
    one = jax.jit(lambda p, x: [jax.grad(l)(p, x) for l in losses[:-1]])
    loop = [one(params, x) for x in xs]
    for k in range(len(losses) - 1):
        stacked = jax.tree_util.tree_map(lambda *g: jnp.stack(g), *[r[k] for r in loop])
        assert_close(per_example[k], stacked, 1e-12, f"vmap(grad) vs loop, loss {k}")
        assert_close(per_example[k], per_example[-1], 1e-10, f"loss {k} vs reference")


def test_grad_of_grad_matches_reference():
    x, w, b = _args(CASES[1])

    def outer(conv):
        inner = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w, b, 2, 1))), argnums=1)
        return jax.grad(lambda x: jnp.sum(inner(x, w) ** 2))

    convs = [lambda *a, i=impl: conv2d(*a, impl=i) for impl in ("xla", "im2col")]
    got_xla, got_im2col, want = jax.jit(
        lambda x: [outer(c)(x) for c in (*convs, ref_conv2d)])(x)
    assert_close(got_xla, want, 1e-10, "grad(grad), xla")
    assert_close(got_im2col, want, 1e-10, "grad(grad), im2col")


def test_pmap_over_one_device():
    params, xs = _cnn_params()
    loss = _cnn_loss(conv2d, max_pool2d, avg_pool2d)      # impl='auto'
    g = jax.pmap(jax.grad(loss), in_axes=(None, 0))(params, xs[:1])
    want = jax.jit(jax.grad(loss))(params, xs[0])
    assert_close(jax.tree_util.tree_map(lambda a: a[0], g), want, 1e-12, "pmap")


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(w=np.zeros((5, 5, 3, 30))), ValueError,
     r"conv2d: w has shape \(5, 5, 3, 30\), expected in_channels 1 to match x \(2, 8, 8, 1\)"),
    (dict(x=np.zeros((8, 8, 1))), ValueError, r"conv2d: x has shape \(8, 8, 1\) \(rank 3\), expected rank 4 \(N, H, W, Cin\)"),
    (dict(b=np.zeros((3,))), ValueError, r"conv2d: b has shape \(3,\), expected \(4,\)"),
    (dict(b=np.zeros((4,), np.float32)), TypeError, r"conv2d: x has dtype float64 but b"),
    (dict(x=np.zeros((2, 8, 8, 1), np.int32)), TypeError, r"conv2d: x must have a floating"),
    (dict(stride=0), ValueError, r"conv2d: stride must be >= 1, got 0"),
    (dict(stride=(1, 2, 3)), TypeError, r"conv2d: stride must be an int or a pair"),
    (dict(padding=-1), ValueError, r"conv2d: padding must be non-negative"),
    (dict(padding="FULL"), ValueError, r"conv2d: padding must be 'SAME', 'VALID'"),
    (dict(padding=(1, 2, 3)), TypeError, r"conv2d: padding must be an int, a pair"),
    (dict(w=np.zeros((9, 3, 1, 4))), ValueError,
     r"conv2d: kernel \(9, 3\) is larger than the padded input \(8, 8\)"),
    (dict(impl="cudnn"), ValueError, r"conv2d: impl must be one of"),
])
def test_conv2d_bad_input_raises(kwargs, exc, match):
    args = dict(x=np.zeros((2, 8, 8, 1)), w=np.zeros((3, 3, 1, 4)), b=None, stride=1,
                padding=0)
    args.update(kwargs)
    impl = args.pop("impl", "auto")
    with pytest.raises(exc, match=match):
        conv2d(**args, impl=impl)
    if impl == "auto":   # the reference twin runs the same checks
        with pytest.raises(exc, match=match):
            ref_conv2d(**args)
