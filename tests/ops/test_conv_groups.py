"""conv2d with kernel dilation and feature groups (grouped, depthwise): every backward
lowering against autodiff of the twin (lax.conv_general_dilated with rhs_dilation /
feature_group_count) and central differences; jit, vmap, grad-of-grad; residuals; the
shape of the im2col rule (no convolution, no dense block-diagonal kernel); errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn import memory
from funcnet.ops.conv import conv2d
from funcnet.ops.reference.conv import conv2d as ref_conv2d
from tests.ops._cases import rand

IMPLS = ("im2col", "xla", "auto")

# (x shape, (KH, KW), Cout, stride, padding, dilation, groups, with bias,
#  lax's (window_strides, padding, rhs_dilation))
CASES = {
    "dilated": ((2, 8, 7, 3), (3, 3), 2, 1, 2, 2, 1, True,
                ((1, 1), [(2, 2), (2, 2)], (2, 2))),
    "grouped-same": ((2, 7, 6, 6), (3, 2), 4, 2, "SAME", (2, 1), 2, True,   # Cg 3, Kg 2
                     ((2, 2), "SAME", (2, 1))),
    "grouped-valid": ((1, 6, 7, 4), (2, 3), 6, 1, 0, (1, 2), 2, False,      # Cg 2, Kg 3
                      ((1, 1), "VALID", (1, 2))),
    "depthwise-x2": ((1, 9, 8, 4), (3, 3), 8, (2, 1), ((1, 0), (2, 1)), 2, 4, True,
                     ((2, 1), [(1, 0), (2, 1)], (2, 2))),
    "depthwise-same": ((2, 6, 6, 3), (3, 3), 3, 1, "SAME", 3, 3, True,      # ConvNeXt-like
                       ((1, 1), "SAME", (3, 3))),
}


def _args(case, seed=0):
    xs, (kh, kw), cout, _, _, _, groups, bias, _ = case
    return (rand(xs, seed), rand((kh, kw, xs[3] // groups, cout), seed + 1),
            rand((cout,), seed + 2) if bias else None)


def _geometry(case):
    return dict(zip(("stride", "padding", "dilation", "groups"), case[3:7]))


@pytest.mark.parametrize("name", list(CASES))
def test_vjp_matches_reference_and_finite_differences(name):
    """Every lowering against jax.vjp of the twin (1e-10) and central differences; the
    value against lax.conv_general_dilated called here directly."""
    case = CASES[name]
    geo = _geometry(case)
    fs = [lambda x, w, b, i=impl: conv2d(x, w, b, **geo, impl=i) for impl in IMPLS]
    y = check_vjp(fs, lambda x, w, b: ref_conv2d(x, w, b, **geo), _args(case), seed=1)["value"]
    x, w, b = _args(case)
    strides, padding, dilation = case[8]
    want = lax.conv_general_dilated(x, w, strides, padding, rhs_dilation=dilation,
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                    feature_group_count=geo["groups"])
    assert_close(y, want if b is None else want + b[None, None, None], 1e-12,
                 f"{name}: value vs lax")


@pytest.mark.parametrize("name", ["grouped-same", "depthwise-x2"])
def test_jit_vmap_and_grad_of_grad_match_reference(name):
    """One program: vmap over a leading axis equals a loop of calls, and grad(grad) of a
    grouped (or depthwise), dilated, strided conv equals the twin's, for both lowerings."""
    x, w, b = _args(CASES[name], seed=3)
    xs = rand((2,) + x.shape, 9)
    geo = _geometry(CASES[name])
    convs = [lambda x, w, i=impl: conv2d(x, w, b, **geo, impl=i) for impl in IMPLS[:2]]
    convs.append(lambda x, w: ref_conv2d(x, w, b, **geo))

    def outer(conv):
        inner = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums=1)
        return jax.grad(lambda x: jnp.sum(inner(x, w) ** 2))

    @jax.jit
    def run(x, xs):
        mapped = [jax.vmap(lambda x, c=c: jax.grad(lambda x: jnp.sum(c(x, w) ** 2))(x))(xs)
                  for c in convs]
        looped = [jnp.stack([jax.grad(lambda x, c=c: jnp.sum(c(x, w) ** 2))(xi) for xi in xs])
                  for c in convs[:2]]
        return mapped, looped, [outer(c)(x) for c in convs]

    mapped, looped, gg = run(x, xs)
    for k in range(2):
        assert_close(mapped[k], looped[k], 1e-12, f"vmap vs loop, {IMPLS[k]}")
        assert_close(mapped[k], mapped[2], 1e-10, f"vmap vs reference, {IMPLS[k]}")
        assert_close(gg[k], gg[2], 1e-10, f"grad(grad), {IMPLS[k]}")


def test_residuals_are_the_inputs_only():
    x, w, b = _args(CASES["depthwise-x2"])
    geo = _geometry(CASES["depthwise-x2"])
    for impl in IMPLS:
        assert memory.residual_bytes(lambda x, w: jnp.sum(conv2d(x, w, b, **geo, impl=impl)),
                                     x, w, include_arguments=False) == 0, impl


@pytest.mark.parametrize("name", ["depthwise-same", "grouped-valid"])
def test_im2col_rule_has_no_convolution_and_no_dense_kernel(name):
    """The im2col backward of a grouped or depthwise conv adds no convolution (the
    forward one is the only one) and never builds the dense block-diagonal
    ``(KH, KW, Cin, Cout)`` kernel; the depthwise rule has no matmul at all."""
    case = CASES[name]
    x, w, b = _args(case)
    geo = _geometry(case)
    grad = jax.grad(lambda x, w: jnp.sum(conv2d(x, w, b, **geo, impl="im2col")), (0, 1))
    jaxpr = str(jax.make_jaxpr(grad)(x, w))
    (kh, kw), cin, cout = case[1], case[0][3], case[2]
    assert jaxpr.count("conv_general_dilated[") == 1
    assert f"f64[{kh},{kw},{cin},{cout}]" not in jaxpr
    assert ("dot_general" in jaxpr) == (cin != geo["groups"])


ERRORS = [
    (dict(groups=4), ValueError,
     r"conv2d: x has shape \(2, 8, 8, 6\): in_channels 6 is not divisible by groups=4"),
    (dict(groups=2, w=np.zeros((3, 3, 3, 5))), ValueError,
     r"conv2d: w has shape \(3, 3, 3, 5\): out_channels 5 is not divisible by groups=2"),
    (dict(groups=2), ValueError,
     r"conv2d: w has shape \(3, 3, 6, 4\), expected in_channels 6 / groups 2 = 3 to match "
     r"x \(2, 8, 8, 6\)"),
    (dict(groups=0), ValueError, r"conv2d: groups must be >= 1, got 0"),
    (dict(groups=1.5), TypeError, r"conv2d: groups must be an int, got float 1.5"),
    (dict(dilation=0), ValueError, r"conv2d: dilation must be >= 1, got 0"),
    (dict(dilation=(1, 2, 3)), TypeError, r"conv2d: dilation must be an int or a pair"),
    (dict(dilation=(4, 1)), ValueError,
     r"conv2d: dilated kernel \(9, 3\) is larger than the padded input \(8, 8\)"),
]


@pytest.mark.parametrize("kwargs, exc, match", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_bad_dilation_or_groups_raises_eagerly_and_under_jit(kwargs, exc, match):
    args = dict(x=np.zeros((2, 8, 8, 6)), w=np.zeros((3, 3, 6, 4)))
    args.update(kwargs)
    x, w = args.pop("x"), args.pop("w")
    for f in (conv2d, ref_conv2d):
        with pytest.raises(exc, match=match):
            f(x, w, **args)
        with pytest.raises(exc, match=match):
            jax.jit(lambda x, w, f=f: f(x, w, **args))(x, w)


def test_depthwise_im2col_rule_keeps_one_window_slice_at_a_time():
    """A 7x7 depthwise backward (ConvNeXt) on CPU: XLA's temp buffers stay a few times the
    input, not the 49 window slices of an unrolled im2col rule."""
    x, w = rand((2, 16, 16, 16), 1), rand((7, 7, 1, 16), 2)       # unrolled: ~49x x.nbytes
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv2d(x, w, None, 1, "SAME", groups=16,
                                                        impl="im2col") ** 2), (0, 1)))
    temp = grad.lower(x, w).compile().memory_analysis().temp_size_in_bytes
    assert temp < 8 * x.nbytes, (temp, x.nbytes)
