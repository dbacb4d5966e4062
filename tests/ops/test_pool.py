"""max_pool2d / avg_pool2d: custom VJPs vs the reduce_window twins and central
differences on both lowerings (reshape path, general path), the documented tie rule,
small residuals, errors. jit / vmap / pmap of both ops: tests/ops/test_conv.py (CNN loss)."""
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcnet.gradcheck import assert_close
from funcnet.ops import pool
from funcnet.ops import reference as R
from funcnet.ops.pool import avg_pool2d, max_pool2d
from funcnet.ops.reference.pool import max_pool2d_tie_rule_grad
from funcnet.gradcheck import check_vjp
from tests.ops._cases import on_cpu, rand

# (x shape, window, stride, padding); the comment names the lowering taken
CASES = [
    ((1, 4, 4, 1), 2, None, 0),                  # reshape path, batch 1, C 1
    ((2, 5, 7, 3), 2, None, 0),                  # reshape path, odd sizes cropped
    ((2, 7, 6, 3), 3, 2, 1),                     # general: stride 2, padding 1
    ((1, 8, 7, 2), 3, 2, "SAME"),                # general
    ((2, 5, 5, 3), (2, 3), (1, 2), ((0, 1), (1, 0))),
    ((1, 6, 6, 3), 3, 1, "VALID"),               # general, overlapping windows
    ((1, 6, 5, 2), 2, 2, 1),                     # stride == window but padded: general
]
IDS = [str(i) for i in range(len(CASES))]


@pytest.mark.parametrize("case, op", [
    *[(c, "max_pool2d") for c in CASES],
    *[(CASES[i], "avg_pool2d") for i in (0, 1, 2, 4, 6)],   # both paths, padding kinds
], ids=[f"{i}-max" for i in IDS] + [f"{i}-avg" for i in ("0", "1", "2", "4", "6")])
def test_pool_vjp_matches_reference_and_finite_differences(case, op):
    shape, window, stride, padding = case
    f, r = getattr(pool, op), getattr(R, op)
    check_vjp([lambda x: f(x, window, stride, padding)],
               lambda x: r(x, window, stride, padding), (rand(shape, 11),))


def test_reshape_path_is_taken_exactly_when_stride_equals_window_without_padding():
    taken = [pool._is_reshape_path(pool.check_pool_args("max_pool2d", np.zeros(c[0]), *c[1:]))
             for c in CASES]
    assert taken == [True, True, False, False, False, False, False]


@pytest.mark.parametrize("shape, window", [((2, 5, 7, 3), 2), ((2, 9, 9, 4), 3),
                                           ((1, 7, 7, 5), 7), ((2, 6, 8, 3), (2, 4))],
                         ids=["2x2-cropped", "3x3", "7x7-global", "2x4"])
@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_reshape_path_lowerings_agree_bitwise_on_ties_and_nans(shape, window, dtype):
    """The reshape path's two forward lowerings (argmax of the transposed windows on CPU,
    the elementwise slice pass elsewhere, picked by ``lax.platform_dependent``) give the
    same ``y`` and ``idx`` bit for bit: rounded data (many ties), a constant block, NaNs."""
    x = np.round(rand(shape, 21) * 2)
    x[0, :3, :3, 0] = 1.0
    x[0, 1, 2, 1], x[-1, 0, 1, -1], x[-1, 0, 0, -1] = np.nan, np.nan, np.inf
    x = jnp.asarray(x, dtype)
    geom = pool.check_pool_args("max_pool2d", x, window, None, 0)
    assert pool._is_reshape_path(geom)
    (yb, ib), (ys, is_) = (jax.jit(partial(f, geom=geom))(x)
                           for f in (pool._max_pool_blocks, pool._max_pool_slices))
    np.testing.assert_array_equal(np.asarray(yb, np.float32), np.asarray(ys, np.float32))
    assert ib.dtype == is_.dtype == jnp.int8
    np.testing.assert_array_equal(ib, is_)
    np.testing.assert_array_equal(np.asarray(ys, np.float32),
                                  np.asarray(R.max_pool2d(x, window), np.float32))


@pytest.mark.parametrize("case, data", [
    (CASES[0], "integers"), (CASES[1], "integers"), (CASES[2], "integers"),
    (CASES[3], "integers"), (CASES[5], "integers"), (CASES[0], "constant"),
    (CASES[5], "constant"),
], ids=["0-int", "1-int", "2-int", "3-int", "5-int", "0-const", "5-const"])
def test_max_pool_ties_go_to_the_first_maximum_in_row_major_order(case, data):
    shape, window, stride, padding = case
    x = np.round(rand(shape, 12)) if data == "integers" else np.ones(shape)
    y = R.max_pool2d(x, window, stride, padding)
    dy = rand(y.shape, 13)
    dx = jax.jit(lambda x, dy: jax.vjp(lambda x: max_pool2d(x, window, stride, padding),
                                       x)[1](dy)[0])(x, dy)
    want = max_pool2d_tie_rule_grad(x, dy, window, stride, padding)
    assert_close(dx, want, 1e-12, "tie rule")
    # every dy lands on exactly one input: the total is preserved
    np.testing.assert_allclose(np.sum(dx), np.sum(dy), rtol=1e-12)


def test_max_pool_tie_rule_differs_from_naive_split():
    """Guard that the tie test can fail: an all-equal 2x2 window sends dy to (0, 0) only."""
    dx = jax.grad(lambda x: jnp.sum(max_pool2d(x, 2)))(np.ones((1, 2, 2, 1)))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1.0, 0.0], [0.0, 0.0]])


@pytest.mark.parametrize("case, window_elems, dtype", [
    (((2, 6, 6, 3), 2, None, 0), 4, jnp.int8),
    (((2, 7, 6, 3), 3, 2, 1), 9, jnp.int8),
    (((1, 12, 12, 2), 12, None, 0), 144, jnp.int32),
])
def test_max_pool_residual_is_only_the_argmax_index(case, window_elems, dtype):
    shape, window, stride, padding = case
    geom = pool.check_pool_args("max_pool2d", np.zeros(shape), window, stride, padding)
    y, res = jax.eval_shape(lambda x: pool._max_pool2d_fwd(x, geom), np.zeros(shape))
    assert res.dtype == dtype and res.shape == y.shape
    idx = jax.jit(lambda x: pool._max_pool2d_fwd(x, geom)[1])(rand(shape, 14))
    assert 0 <= int(jnp.min(idx)) and int(jnp.max(idx)) < window_elems


def test_avg_pool_padding_counts_as_zeros():
    y = avg_pool2d(np.ones((1, 2, 2, 1)), 2, 1, 1)     # 3x3 outputs, corners see 1 of 4
    np.testing.assert_allclose(y[0, :, :, 0], [[.25, .5, .25], [.5, 1., .5], [.25, .5, .25]])


@pytest.mark.parametrize("op", [max_pool2d, avg_pool2d])
def test_op_is_custom_vjp_and_grad_uses_the_hand_written_rule(op):
    x = np.zeros((1, 5, 5, 2))
    f = lambda x: jnp.sum(op(x, 3, 2, 1))  # noqa: E731
    assert "custom_vjp_call" in str(jax.make_jaxpr(lambda x: op(x, 3, 2, 1))(x))
    # jax 0.10 inlines fwd/bwd into make_jaxpr(grad): check that no autodiff rule of
    # reduce_window (select_and_scatter_add / pad-based transposes of it) appears
    grad_jaxpr = str(jax.make_jaxpr(jax.grad(f))(x))
    assert "reduce_window" not in grad_jaxpr and "select_and_scatter" not in grad_jaxpr
    ref = getattr(R, op.__name__)
    ref_jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(ref(x, 3, 2, 1))))(x))
    assert "reduce_window" in ref_jaxpr or "select_and_scatter" in ref_jaxpr


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("x, kwargs, exc, match", [
    (np.zeros((4, 4, 1)), {}, ValueError, r"x has shape \(4, 4, 1\) \(rank 3\), expected rank 4 \(N, H, W, C\)"),
    (np.zeros((1, 4, 4, 1), np.int32), {}, TypeError, r"x must have a floating dtype"),
    (np.zeros((1, 4, 4, 1)), dict(window=0), ValueError, r"window must be >= 1, got 0"),
    (np.zeros((1, 4, 4, 1)), dict(window=2.0), TypeError, r"window must be an int or a pair"),
    (np.zeros((1, 4, 4, 1)), dict(stride=(1, 0)), ValueError, r"stride must be >= 1, got \(1, 0\)"),
    (np.zeros((1, 4, 4, 1)), dict(padding=2), ValueError,
     r"padding \(\(2, 2\), \(2, 2\)\) must be smaller than the window \(2, 2\)"),
    (np.zeros((1, 4, 4, 1)), dict(window=5), ValueError,
     r"window \(5, 5\) is larger than the padded input \(4, 4\)"),
])
def test_pool_bad_input_raises(name, x, kwargs, exc, match):
    for fn in (getattr(pool, name), getattr(R, name)):
        with pytest.raises(exc, match=f"{name}: " + match):
            fn(x, **kwargs)


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=["reshape", "general"])
def test_max_pool_nan_propagates_and_gets_the_gradient(case):
    shape, window, stride, padding = case
    x = rand(shape, 15)
    x[0, 1, 1, 0] = np.nan
    f = lambda x: max_pool2d(x, window, stride, padding)  # noqa: E731
    y, dx = jax.jit(lambda x: (f(x), jax.vjp(f, x)[1](jnp.ones(f(x).shape, x.dtype))[0]))(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(R.max_pool2d(x, window, stride, padding)))
    # every window holding the NaN outputs NaN and routes its dy = 1 to it
    assert np.isnan(y[0, :, :, 0]).sum() >= 1
    assert float(dx[0, 1, 1, 0]) == int(np.isnan(y[0, :, :, 0]).sum())


def test_grad_of_grad_matches_reference():
    """Second derivative through both pools (general path) composed with a nonlinearity."""
    x = rand((1, 5, 5, 2), 16)

    def outer(mp, ap):
        inner = jax.grad(lambda x: jnp.sum(jnp.sin(mp(x, 3, 2, 1)) + ap(x, 3, 2, 1) ** 3))
        return jax.grad(lambda x: jnp.sum(jnp.cos(inner(x))))

    got = jax.jit(outer(max_pool2d, avg_pool2d))(x)
    want = on_cpu(outer(R.max_pool2d, R.avg_pool2d), x)
    assert_close(got, want, 1e-10, "grad(grad)")
