"""gelu, silu/swish, leaky_relu, softplus: custom VJPs vs their twins, central differences
and jax.nn (values and gradients), second order, vmap, residuals, saturation, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import (assert_equal_peers, assert_raises_everywhere,
                             assert_second_order_and_vmap, rand)

# (id, op name, kwargs, the jax.nn function of the same name)
CASES = [
    ("gelu_tanh", "gelu", {}, jax.nn.gelu),
    ("gelu_erf", "gelu", {"approximate": False}, lambda x: jax.nn.gelu(x, approximate=False)),
    ("silu", "silu", {}, jax.nn.silu),
    ("swish", "swish", {}, jax.nn.swish),
    ("leaky_relu", "leaky_relu", {}, jax.nn.leaky_relu),
    ("leaky_relu_0.2", "leaky_relu", {"negative_slope": 0.2},
     lambda x: jax.nn.leaky_relu(x, 0.2)),
    ("leaky_relu_neg", "leaky_relu", {"negative_slope": -0.5},
     lambda x: jax.nn.leaky_relu(x, -0.5)),
    ("softplus", "softplus", {}, jax.nn.softplus),
]
IDS = [c[0] for c in CASES]


def _fns(name, kw):
    return (lambda x: getattr(ops, name)(x, **kw)), (lambda x: getattr(R, name)(x, **kw))


def _x(seed=0, shape=(4, 7), scale=2.5):
    x = scale * rand(shape, seed)
    x.reshape(-1)[:3] = (0.0, -0.0, 1e-3)   # the kink of leaky_relu and its neighbourhood
    return x


@pytest.mark.parametrize("case_id,name,kw,jnn", CASES, ids=IDS)
def test_vjp_matches_reference_and_central_differences(case_id, name, kw, jnn):
    op, twin = _fns(name, kw)
    x = _x()
    if name == "leaky_relu":      # central differences straddle the kink: keep away from 0
        x[0, :3] = (0.5, -0.5, 1.0)
    check_vjp(op, twin, (x,), seed=3)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_jax_nn(dtype):
    """Same values as jax.nn (same formula), and the same gradient, kink included:
    d leaky_relu/dx (0) = 1 as jax.grad(jax.nn.leaky_relu)."""
    assert_equal_peers([(i, _fns(name, kw)[0], jnn) for i, name, kw, jnn in CASES],
                       jnp.asarray(_x(1), dtype))


def test_second_order_and_vmap_through_the_custom_rules():
    """grad(grad) differentiates the hand-written backward rules; vmap(grad) batches them."""
    assert_second_order_and_vmap([(i, *_fns(name, kw)) for i, name, kw, _ in CASES],
                                 jnp.asarray(_x(2, (6,))))
    # the second derivative is not trivially zero: gelu'' (0) = sqrt(2/pi) (exact form)
    g2 = jax.grad(jax.grad(lambda v: ops.gelu(v, approximate=False)))(0.0)
    np.testing.assert_allclose(g2, np.sqrt(2 / np.pi), rtol=1e-12)


@pytest.mark.parametrize("case_id,name,kw,jnn", CASES, ids=IDS)
def test_op_is_custom_vjp_and_keeps_one_residual(case_id, name, kw, jnn):
    """The backward pass keeps one array of x's shape: x itself (gelu, silu, softplus)
    or a boolean mask (leaky_relu), never a second float array."""
    op = _fns(name, kw)[0]
    x = jnp.asarray(_x(3))
    assert "custom_vjp_call" in str(jax.make_jaxpr(op)(x))
    kept = saved_residuals(op, x)
    assert len(kept) == 1 and kept[0].shape == x.shape, kept
    assert kept[0].dtype == (np.bool_ if name == "leaky_relu" else np.float64)
    assert kept[0].is_argument == (name != "leaky_relu")


@pytest.mark.parametrize("dtype, big", [(jnp.float64, 700.0), (jnp.float32, 1e4)])
def test_saturation_is_finite(dtype, big):
    """Large |x|: no overflow (softplus(1000) = 1000), gradients exactly 0 or 1, no NaN."""
    x = jnp.asarray([-big, -40.0, 40.0, big], dtype)

    @jax.jit
    def run(x):
        return [(f(x), jax.vmap(jax.grad(f))(x)) for f in
                (ops.gelu, lambda v: ops.gelu(v, approximate=False), ops.silu, ops.softplus)]

    for y, g in run(x):
        assert jnp.all(jnp.isfinite(y)) and jnp.all(jnp.isfinite(g))
        np.testing.assert_allclose(y, [0, 0, 40, big], atol=1e-12, rtol=1e-6)
        np.testing.assert_allclose(g, [0, 0, 1, 1], atol=1e-12, rtol=1e-6)


def test_leaky_relu_nan_propagates_and_kink_derivative_is_one():
    x = jnp.asarray([np.nan, 0.0, -2.0])
    y = ops.leaky_relu(x, 0.1)
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == pytest.approx(-0.2)
    np.testing.assert_array_equal(jax.vmap(jax.grad(lambda v: ops.leaky_relu(v, 0.1)))(x)[1:],
                                  [1.0, 0.1])


def test_reference_mode_gives_forward_mode():
    x = jnp.asarray(_x(4))
    with ops.reference_mode():
        y, y_dot = jax.jvp(ops.gelu, (x,), (jnp.ones_like(x),))
    assert_close(y_dot, jax.vmap(jax.vmap(jax.grad(ops.gelu)))(x), 1e-12, "jvp")
    assert_close(y, ops.gelu(x), 1e-15)


@pytest.mark.parametrize("call, exc, match", [
    (lambda x: ops.gelu(x.astype(jnp.int32)), TypeError,
     r"gelu: x must have a floating dtype, got int32"),
    (lambda x: ops.silu(x > 0), TypeError, r"silu: x must have a floating dtype, got bool"),
    (lambda x: ops.swish(x.astype(jnp.int32)), TypeError, r"silu: x must have a floating"),
    (lambda x: ops.softplus(x.astype(jnp.int8)), TypeError, r"softplus: x must have a float"),
    (lambda x: ops.leaky_relu(x.astype(jnp.int32)), TypeError, r"leaky_relu: x must have a"),
    (lambda x: ops.gelu(x, approximate="tanh"), TypeError,
     r"gelu: approximate must be a bool, got str 'tanh'"),
    (lambda x: ops.leaky_relu(x, negative_slope=float("nan")), ValueError,
     r"leaky_relu: negative_slope must be finite, got nan"),
    (lambda x: ops.leaky_relu(x, negative_slope="0.1"), TypeError,
     r"leaky_relu: negative_slope must be a Python float, got str"),
    (lambda x: ops.gelu([1.0, 2.0]), TypeError, r"gelu: x must be an array, got list"),
])
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, (jnp.asarray(_x(5, (3,))),), exc, match)


def test_traced_slope_is_rejected_under_jit():
    """A slope must be static: a traced one (a learned PReLU slope) is a TypeError."""
    with pytest.raises(TypeError, match=r"leaky_relu: negative_slope must be a Python float"):
        jax.jit(ops.leaky_relu)(jnp.ones(3), 0.1)
