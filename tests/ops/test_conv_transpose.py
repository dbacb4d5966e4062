"""conv_transpose2d: every lowering against autodiff of its twin and central differences
(stride, padding, output_padding, dilation, groups, depthwise, 1x1, non-square, 'SAME' /
'VALID'); values against lax.conv_transpose and PyTorch; the adjoint identity with
conv2d; jit, vmap, grad(grad), bfloat16; structure (custom_vjp, no residual beyond the
inputs, conv2d's lowerings); errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from funcnet import ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn import memory
from funcnet.ops import reference as R
from funcnet.ops.conv import conv2d
from tests.ops._cases import assert_raises_everywhere, rand

IMPLS = ("im2col", "xla", "auto")

# name: (x shape, (KH, KW), Cout, stride, padding, output_padding, dilation, groups, bias)
CASES = {
    "s1": ((1, 4, 5, 3), (3, 3), 2, 1, 0, 0, 1, 1, True),
    "s2-op1": ((2, 3, 4, 3), (3, 3), 4, 2, 1, 1, 1, 1, True),
    "unet-4x4-s2-p1": ((1, 3, 3, 4), (4, 4), 2, 2, 1, 0, 1, 1, True),
    "nonsquare-op": ((1, 3, 4, 2), (2, 3), 3, (2, 3), (1, 0), (1, 2), 1, 1, False),
    "lohi-pads": ((1, 3, 3, 2), (3, 3), 2, 2, ((0, 2), (1, 0)), 1, 1, 1, True),
    "dilated-op>=s": ((1, 4, 4, 2), (3, 3), 2, 1, 2, 1, 2, 1, True),
    "grouped": ((1, 3, 3, 4), (3, 2), 6, 2, 1, 0, 1, 2, True),        # Cin/G 2, Cout/G 3
    "depthwise": ((1, 4, 4, 3), (3, 3), 3, 2, 1, 1, 1, 3, True),
    "depthwise-reduce": ((1, 4, 4, 6), (3, 3), 3, 1, 1, 0, (1, 2), 3, False),  # 6 -> 3
    "1x1-s2-crop": ((1, 4, 4, 2), (1, 1), 3, 2, 1, 1, 1, 1, True),   # padding > d*(K-1)
    "same": ((1, 3, 4, 2), (3, 1), 2, 2, "SAME", 0, 1, 1, True),     # KW < stride
    "valid-k<s": ((1, 3, 2, 2), (2, 2), 2, 3, "VALID", 0, 1, 1, True),
}


def _args(case, seed=0):
    xs, (kh, kw), cout, *_, groups, bias = case
    return (rand(xs, seed), rand((kh, kw, cout // groups, xs[3]), seed + 1),
            rand((cout,), seed + 2) if bias else None)


def _geometry(case):
    return dict(zip(("stride", "padding", "output_padding", "dilation", "groups"), case[3:8]))


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _lohi(padding):
    """PyTorch-style padding (int, pair, pair of (lo, hi) pairs) as (lo, hi) pairs."""
    return tuple(_pair(p) for p in _pair(padding))


def _lax_conv_transpose(x, w, case):
    """``lax.conv_transpose(..., transpose_kernel=True)`` (groups = 1 only); an int
    padding as PyTorch's ``p``: the dilated input is padded by ``d*(K-1) - p`` (+ the
    output padding on the high side)."""
    _, (kh, kw), _, stride, padding, extra, dilation, _, _ = case
    dilation = _pair(dilation)
    if not isinstance(padding, str):
        padding = [(d * (k - 1) - lo, d * (k - 1) - hi + e) for d, k, (lo, hi), e in
                   zip(dilation, (kh, kw), _lohi(padding), _pair(extra))]
    return lax.conv_transpose(x, w, _pair(stride), padding, rhs_dilation=dilation,
                              dimension_numbers=("NHWC", "HWIO", "NHWC"),
                              transpose_kernel=True)


@pytest.mark.parametrize("name", list(CASES))
def test_vjp_matches_reference_and_finite_differences(name):
    """Every lowering against jax.vjp of the twin (1e-10) and central differences; the
    value against lax.conv_transpose (groups = 1)."""
    case = CASES[name]
    geo = _geometry(case)
    fs = [lambda x, w, b, i=impl: ops.conv_transpose2d(x, w, b, **geo, impl=i)
          for impl in IMPLS]
    args = _args(case)
    y = check_vjp(fs, lambda x, w, b: R.conv_transpose2d(x, w, b, **geo), args,
                  seed=1)["value"]
    assert y.dtype == jnp.float64
    if geo["groups"] == 1:
        x, w, b = args
        want = _lax_conv_transpose(x, w, case)
        assert_close(y, want if b is None else want + b[None, None, None], 1e-12, f"{name}: vs lax")


def test_values_equal_pytorch_conv_transpose2d():
    """PyTorch's weight ``(Cin, Cout/G, KH, KW)`` is ``w.transpose(3, 2, 0, 1)``; every
    case that PyTorch's symmetric padding can express (one jitted program)."""
    torch = pytest.importorskip("torch")
    names = [n for n, c in CASES.items()
             if not isinstance(c[4], str) and all(lo == hi for lo, hi in _lohi(c[4]))]
    data = {n: _args(CASES[n], seed=5) for n in names}
    got = jax.jit(lambda data: {n: ops.conv_transpose2d(*data[n], **_geometry(CASES[n]))
                                for n in names})(data)
    for name in names:
        x, w, b = data[name]
        geo = _geometry(CASES[name])
        want = torch.nn.functional.conv_transpose2d(
            torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(w).permute(3, 2, 0, 1),
            None if b is None else torch.from_numpy(b), geo["stride"],
            tuple(lo for lo, _ in _lohi(geo["padding"])), geo["output_padding"],
            geo["groups"], geo["dilation"]).permute(0, 2, 3, 1).numpy()
        assert_close(got[name], want, 1e-12, f"{name} vs torch")


ADJOINT = ["s2-op1", "lohi-pads", "dilated-op>=s", "grouped", "depthwise-reduce", "same",
           "valid-k<s"]


def test_adjoint_of_conv2d_with_the_same_kernel():
    """``conv_transpose2d(y, w) = vjp(conv2d(., w))(y)`` and ``<conv2d(z, w), y> = <z,
    conv_transpose2d(y, w)>`` (float64), conv2d taking the same padding (for
    ``output_padding < stride``; else its high side less the output padding)."""
    def conv(name, w):
        geo = _geometry(CASES[name])
        padding, extra = geo["padding"], _pair(geo["output_padding"])
        if any(e >= s for e, s in zip(extra, _pair(geo["stride"]))):
            padding = tuple((lo, hi - e) for (lo, hi), e in zip(_lohi(padding), extra))
        return lambda z: conv2d(z, w, None, geo["stride"], padding, geo["dilation"],
                                geo["groups"])

    @jax.jit
    def run(data):
        out = {}
        for name, (y, w, z) in data.items():
            x_t = ops.conv_transpose2d(y, w, None, **_geometry(CASES[name]))
            c, vjp = jax.vjp(conv(name, w), z)
            out[name] = (x_t, vjp(y)[0], jnp.vdot(c, y), jnp.vdot(z, x_t))
        return out

    data = {}
    for name in ADJOINT:
        y, w, _ = _args(CASES[name], seed=7)
        shape = jax.eval_shape(lambda y, w, n=name: ops.conv_transpose2d(
            y, w, None, **_geometry(CASES[n])), y, w).shape
        data[name] = (y, w, rand(shape, 8))
    for name, (x_t, vjp_y, lhs, rhs) in run(data).items():
        assert_close(x_t, vjp_y, 1e-12, f"{name}: vjp of conv2d")
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12, err_msg=name)


def test_jit_vmap_grad_of_grad_and_bfloat16():
    """One program: vmap(grad) over a leading axis and grad(grad) equal the twin's (xla
    and im2col; a negative conv padding and a depthwise kernel); in bfloat16 both
    lowerings keep the dtype and are close to float32."""
    cases = [CASES["nonsquare-op"], CASES["depthwise"]]
    data = [_args(c, seed=11) for c in cases]
    xs = [rand((2,) + a[0].shape, 12) for a in data]

    def convs(case, b):
        geo = _geometry(case)
        return [lambda x, w, i=impl: ops.conv_transpose2d(x, w, b, **geo, impl=i)
                for impl in IMPLS[:2]] + [lambda x, w: R.conv_transpose2d(x, w, b, **geo)]

    def outer(conv, w):
        inner = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))), argnums=1)
        return jax.grad(lambda x: jnp.sum(inner(x, w) ** 2))

    @jax.jit
    def run(data, xs):
        out = []
        for case, (x, w, b), xb in zip(cases, data, xs):
            fs = convs(case, b)
            loss = [lambda x, f=f: jnp.sum(f(x, w) ** 2) for f in fs]
            mapped = [jax.vmap(jax.grad(l))(xb) for l in loss]
            f16 = convs(case, None)
            x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
            low = [f(x16, w16) for f in f16[:2]]
            grads16 = jax.grad(lambda x, w: jnp.sum(f16[0](x, w).astype(jnp.float32)),
                               (0, 1))(x16, w16)
            out.append((mapped, [outer(f, w)(x) for f in fs], low, grads16,
                        f16[2](x.astype(jnp.float32), w.astype(jnp.float32))))
        return out

    for k, (mapped, gg, low, grads16, y32) in enumerate(run(data, xs)):
        for i in range(2):
            assert_close(mapped[i], mapped[2], 1e-10, f"case {k}: vmap vs twin, {IMPLS[i]}")
            assert_close(gg[i], gg[2], 1e-10, f"case {k}: grad(grad), {IMPLS[i]}")
            assert low[i].dtype == jnp.bfloat16
            assert_close(low[i].astype(jnp.float32), y32, 3e-2, f"case {k}: bf16 {IMPLS[i]}")
        assert [g.dtype for g in grads16] == [jnp.bfloat16] * 2


def test_custom_vjp_keeps_only_its_inputs_and_reuses_conv2d_lowerings():
    """A custom_vjp; no residual beyond x and w; im2col's forward (conv2d's dx) is
    matmul + col2im without a convolution, so its fwd+bwd has one (dx = conv2d's forward),
    and xla's three (the lhs-dilated conv, dx, dW) as autodiff of the twin."""
    x, w, b = _args(CASES["s2-op1"])
    geo = _geometry(CASES["s2-op1"])
    assert "custom_vjp_call" in str(jax.make_jaxpr(
        lambda x, w: ops.conv_transpose2d(x, w, b, **geo))(x, w))
    fs = [lambda x, w, i=impl: jnp.sum(ops.conv_transpose2d(x, w, b, **geo, impl=i))
          for impl in IMPLS[:2]] + [lambda x, w: jnp.sum(R.conv_transpose2d(x, w, b, **geo))]
    counts = [str(jax.make_jaxpr(jax.grad(f, (0, 1)))(x, w)).count("conv_general_dilated[")
              for f in fs]
    assert counts == [1, 3, 3]
    for f in fs[:2]:
        assert memory.residual_bytes(f, x, w, include_arguments=False) == 0


def _bad(**kwargs):
    args = dict(x=np.zeros((2, 4, 4, 6)), w=np.zeros((3, 3, 2, 6)))
    args.update(kwargs)
    return args


ERRORS = [
    (_bad(x=np.zeros((4, 4, 6))), ValueError,
     r"conv_transpose2d: x has shape \(4, 4, 6\) \(rank 3\), expected rank 4 \(N, H, W, Cin\)"),
    (_bad(w=np.zeros((3, 3, 6))), ValueError,
     r"conv_transpose2d: w has shape \(3, 3, 6\) \(rank 3\), expected rank 4 "
     r"\(KH, KW, Cout/groups, Cin\)"),
    (_bad(w=np.zeros((3, 3, 6, 2))), ValueError,
     r"conv_transpose2d: w has shape \(3, 3, 6, 2\), expected in_channels 6 on its last "
     r"axis \(KH, KW, Cout/groups, Cin\) to match x \(2, 4, 4, 6\)"),
    (_bad(groups=4), ValueError,
     r"conv_transpose2d: x has shape \(2, 4, 4, 6\): in_channels 6 is not divisible by "
     r"groups=4"),
    (_bad(b=np.zeros(4)), ValueError,
     r"conv_transpose2d: b has shape \(4,\), expected \(2,\) \(one bias per output "
     r"channel, Cout = w.shape\[2\] \* groups for w \(3, 3, 2, 6\)\)"),
    (_bad(groups=2, b=np.zeros(4)), None, None),                       # valid: Cout 4
    (_bad(x=np.zeros((2, 4, 4, 6), np.int32)), TypeError,
     r"conv_transpose2d: x must have a floating dtype, got int32"),
    (_bad(w=np.zeros((3, 3, 2, 6), np.float32)), TypeError,
     r"conv_transpose2d: x has dtype float64 but w has dtype float32"),
    (_bad(stride=2, output_padding=2), ValueError,
     r"conv_transpose2d: output_padding \(2, 2\) must be smaller than max\(stride, "
     r"dilation\) = \(2, 2\) on each axis"),
    (_bad(output_padding=(0, 1)), ValueError,
     r"output_padding \(0, 1\) must be smaller than max\(stride, dilation\) = \(1, 1\)"),
    (_bad(stride=2, padding="SAME", output_padding=1), ValueError,
     r"conv_transpose2d: output_padding \(1, 1\) needs an int or pair padding; padding "
     r"'SAME' fixes the output size"),
    (_bad(padding="FULL"), ValueError, r"conv_transpose2d: padding must be 'SAME', 'VALID'"),
    (_bad(padding=-1), ValueError, r"conv_transpose2d: padding must be non-negative"),
    (_bad(output_padding=-1), ValueError, r"conv_transpose2d: output_padding must be >= 0"),
    (_bad(padding=(1, 2, 3)), TypeError, r"conv_transpose2d: padding must be an int, a pair"),
    (_bad(x=np.zeros((1, 1, 2, 6)), w=np.zeros((1, 1, 2, 6)), padding=1), ValueError,
     r"conv_transpose2d: output size \(-1, 0\) of x \(1, 1, 2, 6\) is below 1"),
    (_bad(x=np.zeros((1, 0, 2, 6))), ValueError,
     r"conv_transpose2d: x has shape \(1, 0, 2, 6\), expected at least one row and one "
     r"column"),
    (_bad(stride=0), ValueError, r"conv_transpose2d: stride must be >= 1, got 0"),
    (_bad(groups=1.0), TypeError, r"conv_transpose2d: groups must be an int, got float"),
    (_bad(impl="cudnn"), ValueError, r"conv_transpose2d: impl must be one of"),
]


@pytest.mark.parametrize("kwargs, exc, match", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_bad_arguments_raise_eagerly_under_jit_and_in_reference_mode(kwargs, exc, match):
    kwargs = dict(kwargs)
    x, w, b = kwargs.pop("x"), kwargs.pop("w"), kwargs.pop("b", None)
    call = lambda x, w, b: ops.conv_transpose2d(x, w, b, **kwargs)  # noqa: E731
    if exc is None:
        assert call(x, w, b).shape == (2, 6, 6, 4)
        return
    assert_raises_everywhere(call, (x, w, b), exc, match)
