"""resize2d: custom VJP vs its twin (jax.image.resize) and central differences, both
methods, up and down, whole-factor nearest (repeat / block sum) and matrix paths;
PyTorch's interpolate, the interpolation matrices' definition, vmap, second order,
residuals, low precision, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from funcnet.ops.resize import resize_matrix
from tests.ops._cases import assert_raises_everywhere, rand

# (id, x shape, size, method): whole-factor nearest takes the repeat path, the rest the
# matrix path; up, down, mixed and to one pixel
CASES = [
    ("nearest_x2", (2, 3, 4, 2), (6, 8), "nearest"),
    ("nearest_x3x1", (1, 2, 3, 2), (6, 3), "nearest"),
    ("nearest_odd_up", (1, 3, 4, 2), (7, 5), "nearest"),
    ("nearest_down", (1, 5, 6, 2), (2, 4), "nearest"),
    ("linear_x2", (2, 3, 4, 2), (6, 8), "linear"),
    ("linear_odd_up", (1, 3, 4, 2), (7, 9), "linear"),
    ("linear_down", (1, 6, 5, 2), (4, 2), "linear"),
    ("linear_mixed", (1, 4, 3, 1), (2, 7), "bilinear"),
    ("linear_to_1", (1, 3, 4, 2), (1, 1), "linear"),
]


@pytest.mark.parametrize("case_id,shape,size,method", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(case_id, shape, size, method):
    x = rand(shape, len(case_id))
    check_vjp(lambda x: ops.resize2d(x, size, method),
              lambda x: R.resize2d(x, size, method), (x,), seed=3)


def test_values_are_jax_image_resize_and_pytorch_interpolate():
    """Both methods equal ``jax.image.resize`` (antialias off; on too when upsampling) and
    PyTorch's ``interpolate`` ('nearest-exact' and 'bilinear', align_corners=False)."""
    x = rand((2, 5, 7, 3), 4)
    for size in [(10, 14), (8, 9), (3, 4)]:
        for method in ("nearest", "linear"):
            got = ops.resize2d(x, size, method)
            want = jax.image.resize(x, (2, *size, 3), method, antialias=False)
            assert_close(got, want, 1e-14, f"{size} {method}")
            if size[0] >= 5 and size[1] >= 7:
                assert_close(got, jax.image.resize(x, (2, *size, 3), method), 1e-14)
    torch = pytest.importorskip("torch")
    xt = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2)
    for mode, method in (("nearest-exact", "nearest"), ("bilinear", "linear")):
        kw = {} if mode == "nearest-exact" else {"align_corners": False}
        want = torch.nn.functional.interpolate(xt, size=(11, 9), mode=mode, **kw)
        assert_close(ops.resize2d(x, (11, 9), method),
                     want.permute(0, 2, 3, 1).numpy(), 1e-12, mode)


def test_interpolation_matrices_follow_their_definition():
    """Rows sum to one; linear rows hold the two triangle weights around
    ``u = (o + 1/2) in/out - 1/2`` (one weight past the edge pixel centres); nearest rows
    one 1 at ``floor(u + 1/2)``; x2 upsampling gives the classic 3/4, 1/4 pattern."""
    for n_in, n_out in [(4, 8), (5, 3), (3, 7), (1, 4)]:
        for method in ("nearest", "linear"):
            a = resize_matrix(n_in, n_out, method)
            np.testing.assert_allclose(a.sum(1), 1.0, rtol=0, atol=1e-15)
            assert a.shape == (n_out, n_in) and (a >= 0).all()
    for o, row in enumerate(resize_matrix(5, 7, "linear")):
        u = min(max((o + 0.5) * 5 / 7 - 0.5, 0.0), 4.0)
        lo = int(np.floor(u))
        want = np.zeros(5)
        want[lo] += 1 - (u - lo)
        want[min(lo + 1, 4)] += u - lo
        np.testing.assert_allclose(row, want, atol=1e-15)
    near = resize_matrix(5, 7, "nearest")
    assert list(near.argmax(1)) == [int(np.floor((o + 0.5) * 5 / 7)) for o in range(7)]
    np.testing.assert_allclose(resize_matrix(2, 4, "linear"),
                               [[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])


_up2 = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(ops.resize2d(x, (8, 6), "nearest") * w)))


def test_nearest_whole_factor_backward_sums_each_block_and_saves_nothing():
    x, w = rand((2, 4, 3, 2), 5), rand((2, 8, 6, 2), 6)
    value, dx = _up2(x, w)
    np.testing.assert_allclose(dx, np.asarray(w).reshape(2, 4, 2, 3, 2, 2).sum((2, 4)),
                               rtol=1e-14)
    assert_close(value, jnp.sum(jnp.repeat(jnp.repeat(x, 2, 1), 2, 2) * w), 1e-14)
    for method in ("nearest", "linear"):
        res = saved_residuals(lambda x: ops.resize2d(x, (7, 5), method), x)
        assert not res, (method, res)


def test_vmap_second_order_and_identity_size():
    x = rand((3, 2, 3, 4, 2), 7)
    f = jax.vmap(lambda xi: ops.resize2d(xi, (5, 6), "linear"))
    with ops.reference_mode():
        want = f(x)
    assert_close(f(x), want, 1e-14)
    # second order: the op is linear in x, so the Hessian of a quadratic is the twin's
    xs, wv = rand((1, 3, 2, 1), 8), rand((1, 5, 4, 1), 9)

    def q(op):
        return lambda x: jnp.sum((op(x, (5, 4), "linear") * wv) ** 2)
    assert_close(jax.jit(jax.hessian(q(ops.resize2d)))(xs),
                 jax.jit(jax.hessian(q(R.resize2d)))(xs), 1e-12)
    same = rand((1, 3, 2, 1), 10)
    assert ops.resize2d(same, (3, 2)) is same


def test_low_precision_keeps_the_dtype_and_the_numbers():
    x = rand((1, 4, 4, 3), 11)
    for dtype in (jnp.bfloat16, jnp.float16, jnp.float32):
        for method in ("nearest", "linear"):
            y = jax.jit(lambda x: ops.resize2d(x, (8, 6), method))(x.astype(dtype))
            assert y.dtype == dtype
            assert_close(y.astype(jnp.float64), ops.resize2d(x, (8, 6), method),
                         1e-2 if dtype != jnp.float32 else 1e-6, str(dtype))


@pytest.mark.parametrize("x,kwargs,exc,match", [
    (np.zeros((2, 3, 3), np.float32), {}, ValueError,
     r"resize2d: x has shape \(2, 3, 3\) \(rank 3\), expected rank 4 \(N, H, W, C\)"),
    (np.zeros((1, 3, 3, 1), np.int32), {}, TypeError, r"resize2d: x .*float"),
    (np.zeros((1, 3, 3, 1), np.float32), {"size": 0}, ValueError, r"resize2d: size must be >= 1"),
    (np.zeros((1, 3, 3, 1), np.float32), {"size": (4, 2.5)}, TypeError,
     r"resize2d: size must be an int or a pair of ints, got \(4, 2.5\)"),
    (np.zeros((1, 0, 3, 1), np.float32), {}, ValueError, r"resize2d: x has shape \(1, 0, 3, 1\)"),
    (np.zeros((1, 3, 3, 1), np.float32), {"method": "cubic"}, ValueError,
     r"resize2d: method must be one of 'nearest', 'linear', got 'cubic'"),
])
def test_errors_name_the_argument(x, kwargs, exc, match):
    kwargs = {"size": 4, **kwargs}
    assert_raises_everywhere(lambda x: ops.resize2d(x, **kwargs), (x,), exc, match)
