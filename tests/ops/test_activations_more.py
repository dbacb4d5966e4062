"""The rest of jax.nn's activations (relu6, hard_tanh, hard_sigmoid, hard_silu, sparse_plus,
sparse_sigmoid, elu, celu, selu, mish, log_sigmoid, soft_sign, squareplus, glu): custom
VJPs vs their twins and central differences (float64), values and gradients equal to
jax.nn's at the kinks too, second order, vmap, residuals, jax.nn's own test cases, errors.
"""
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
    ("relu6", "relu6", {}, jax.nn.relu6),
    ("hard_tanh", "hard_tanh", {}, jax.nn.hard_tanh),
    ("hard_sigmoid", "hard_sigmoid", {}, jax.nn.hard_sigmoid),
    ("hard_silu", "hard_silu", {}, jax.nn.hard_silu),
    ("hard_swish", "hard_swish", {}, jax.nn.hard_swish),
    ("sparse_plus", "sparse_plus", {}, jax.nn.sparse_plus),
    ("sparse_sigmoid", "sparse_sigmoid", {}, jax.nn.sparse_sigmoid),
    ("elu", "elu", {}, jax.nn.elu),
    ("elu_0.3", "elu", {"alpha": 0.3}, lambda x: jax.nn.elu(x, 0.3)),
    ("celu", "celu", {}, jax.nn.celu),
    ("celu_2.5", "celu", {"alpha": 2.5}, lambda x: jax.nn.celu(x, 2.5)),
    ("selu", "selu", {}, jax.nn.selu),
    ("mish", "mish", {}, jax.nn.mish),
    ("log_sigmoid", "log_sigmoid", {}, jax.nn.log_sigmoid),
    ("soft_sign", "soft_sign", {}, jax.nn.soft_sign),
    ("squareplus", "squareplus", {}, jax.nn.squareplus),
    ("squareplus_0.5", "squareplus", {"b": 0.5}, lambda x: jax.nn.squareplus(x, 0.5)),
    ("glu", "glu", {}, jax.nn.glu),
    ("glu_axis0", "glu", {"axis": 0}, lambda x: jax.nn.glu(x, axis=0)),
]
IDS = [c[0] for c in CASES]
MASKED = {"relu6", "hard_tanh", "hard_sigmoid"}   # keep a boolean mask, not x
KINKS = [-6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0]


def _fns(name, kw):
    return (lambda x: getattr(ops, name)(x, **kw)), (lambda x: getattr(R, name)(x, **kw))


def _x(seed=0, shape=(4, 8), scale=3.0):
    return scale * rand(shape, seed)


@pytest.mark.parametrize("case_id,name,kw,jnn", CASES, ids=IDS)
def test_vjp_matches_reference_and_central_differences(case_id, name, kw, jnn):
    """Random points (none within the differences' step of a kink)."""
    op, twin = _fns(name, kw)
    x = _x()
    assert np.min(np.abs(x[..., None] - np.asarray(KINKS))) > 1e-3
    check_vjp(op, twin, (x,), seed=3)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32, jnp.bfloat16])
def test_values_and_gradients_equal_jax_nn_kinks_included(dtype):
    """jax.grad of jax.nn is the judge at the kinks: relu6'(0) = relu6'(6) = 0,
    hard_tanh'(+-1) = 1, sparse_sigmoid'(+-1) = 1/4, elu'(0) = alpha, celu'(0) = 1, ..."""
    x = jnp.asarray(np.concatenate([np.asarray(KINKS * 2)[None, :8].repeat(2, 0),
                                    _x(1, (2, 8))]), dtype)
    assert_equal_peers([(i, _fns(name, kw)[0], jnn) for i, name, kw, jnn in CASES], x)


def test_second_order_and_vmap_through_the_custom_rules():
    assert_second_order_and_vmap([(i, *_fns(name, kw)) for i, name, kw, _ in CASES],
                                 jnp.asarray(_x(2, (6,))))
    # a second derivative that is not trivially zero: elu''(x < 0) = alpha e^x
    g2 = jax.grad(jax.grad(lambda v: ops.elu(v, 0.3)))(-0.5)
    np.testing.assert_allclose(g2, 0.3 * np.exp(-0.5), rtol=1e-12)


@pytest.mark.parametrize("case_id,name,kw,jnn", CASES, ids=IDS)
def test_op_is_custom_vjp_and_keeps_one_residual(case_id, name, kw, jnn):
    """One residual of x's shape: x itself, or a boolean mask for the piecewise-linear ops."""
    op = _fns(name, kw)[0]
    x = jnp.asarray(_x(3))
    assert "custom_vjp_call" in str(jax.make_jaxpr(op)(x))
    kept = saved_residuals(op, x)
    assert len(kept) == 1 and kept[0].shape == x.shape, kept
    assert kept[0].dtype == (np.bool_ if name in MASKED else np.float64)
    assert kept[0].is_argument == (name not in MASKED)


# ------------------------------------------------------------ jax.nn's own test cases
def test_jax_nn_cases_values():
    np.testing.assert_allclose(ops.sparse_plus(jnp.float32(89.0)), 89.0)
    np.testing.assert_allclose(ops.sparse_sigmoid(jnp.array([-2.0, 2.0, 0.0])), [0, 1, 0.5])
    np.testing.assert_allclose(ops.squareplus(jnp.float32(1e3)), 1e3, atol=1e-3)
    np.testing.assert_allclose(ops.mish(jnp.float32(1e3)), 1e3, atol=1e-3)
    np.testing.assert_allclose(ops.elu(jnp.float32(1e4)), 1e4)
    np.testing.assert_allclose(ops.glu(jnp.array([1.0, 0.0]), axis=0), [0.5])
    for dtype in (jnp.float64, jnp.float32, jnp.bfloat16, jnp.float16):
        zero = jnp.zeros((), dtype)
        assert ops.squareplus(zero, 4.0) == 1 and ops.squareplus(zero).dtype == dtype
        assert ops.mish(zero) == 0 and ops.mish(zero).dtype == dtype
        assert ops.sparse_plus(zero).dtype == dtype


def test_jax_nn_cases_gradients():
    grad = lambda f, v: float(jax.grad(f)(jnp.float64(v)))  # noqa: E731
    assert grad(ops.relu6, 0.0) == 0 and grad(ops.relu6, 6.0) == 0
    assert grad(ops.relu6, 1.0) == 1 and grad(ops.relu6, -1.0) == 0
    for v in (0.0, 2.0, -2.0):   # sparse_plus' = sparse_sigmoid
        assert grad(ops.sparse_plus, v) == float(ops.sparse_sigmoid(jnp.float64(v)))
    assert grad(ops.elu, 1e4) == 1.0 and grad(ops.squareplus, 0.0) == 0.5
    np.testing.assert_allclose(grad(ops.mish, 0.0), 0.6, rtol=1e-12)  # tanh(log 2)
    np.testing.assert_allclose(grad(ops.mish, 1e-8), jax.grad(jax.nn.mish)(1e-8), rtol=1e-12)
    for f in (ops.elu, ops.hard_tanh):   # jax.nn's memory test: nothing is materialised
        jax.make_jaxpr(f)(jax.ShapeDtypeStruct((10 ** 12,), jnp.float32))


def test_nan_propagates_and_large_inputs_stay_finite():
    for _, name, kw, _ in CASES:
        op = _fns(name, kw)[0]
        assert np.isnan(op(jnp.full((2, 2), np.nan))).all(), name
    big = jnp.asarray([-1e4, -40.0, 40.0, 1e4], jnp.float32)
    for name in ("relu6", "hard_tanh", "hard_sigmoid", "hard_silu", "sparse_plus",
                 "sparse_sigmoid", "elu", "celu", "selu", "mish", "log_sigmoid",
                 "soft_sign", "squareplus"):
        op = getattr(ops, name)
        y, g = op(big), jax.vmap(jax.grad(op))(big)
        assert jnp.isfinite(y).all() and jnp.isfinite(g).all(), name
    # hard_tanh passes the cotangent of a NaN input on, as jax.grad of jax.nn.hard_tanh
    assert float(jax.grad(ops.hard_tanh)(jnp.float64(np.nan))) == 1.0


def test_reference_mode_gives_forward_mode():
    x = jnp.asarray(_x(4))
    with ops.reference_mode():
        y, y_dot = jax.jvp(ops.glu, (x,), (jnp.ones_like(x),))
    assert_close(y_dot, jax.jvp(jax.nn.glu, (x,), (jnp.ones_like(x),))[1], 1e-12, "jvp")
    assert_close(y, ops.glu(x), 1e-15)


@pytest.mark.parametrize("call, exc, match", [
    (lambda x: ops.relu6(x.astype(jnp.int32)), TypeError,
     r"relu6: x must have a floating dtype, got int32"),
    (lambda x: ops.hard_swish(x > 0), TypeError, r"hard_silu: x must have a floating"),
    (lambda x: ops.mish(x.astype(jnp.int8)), TypeError, r"mish: x must have a floating"),
    (lambda x: ops.glu(x.astype(jnp.int32)), TypeError, r"glu: x must have a floating"),
    (lambda x: ops.elu(x, alpha=float("nan")), ValueError, r"elu: alpha must be finite"),
    (lambda x: ops.elu(x, alpha="1"), TypeError, r"elu: alpha must be a Python float"),
    (lambda x: ops.celu(x, alpha=0.0), ValueError, r"celu: alpha must be nonzero"),
    (lambda x: ops.squareplus(x, b=0.0), ValueError, r"squareplus: b must be in \(0, inf\)"),
    (lambda x: ops.squareplus(x, b=-4), ValueError, r"squareplus: b must be in \(0, inf\)"),
    (lambda x: ops.glu(x), ValueError,
     r"glu: x has shape \(3,\), whose size 3 along axis 0 is odd"),
    (lambda x: ops.glu(x[0]), ValueError, r"glu: x must have at least one axis"),
    (lambda x: ops.glu(x, axis=1), ValueError,
     r"glu: axis 1 is out of range for an input of rank 1"),
    (lambda x: ops.glu(x, axis=0.0), TypeError, r"glu: axis must be"),
    (lambda x: ops.soft_sign([1.0, 2.0]), TypeError, r"soft_sign: x must be an array, got list"),
])
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, (jnp.asarray(_x(5, (3,))),), exc, match)


@pytest.mark.parametrize("name, kw", [("elu", "alpha"), ("celu", "alpha"),
                                      ("squareplus", "b")])
def test_a_traced_hyperparameter_is_refused(name, kw):
    """alpha and b are static: a learned one would need its own cotangent."""
    with pytest.raises(TypeError, match=rf"{name}: {kw} must be a Python float"):
        jax.jit(lambda x, a: getattr(ops, name)(x, **{kw: a}))(jnp.ones(3), 1.0)


def test_eager_gradients_of_numpy_inputs():
    """``jax.grad`` of each new op called eagerly on a NumPy array (no ``jit``): the
    residuals may then be NumPy-backed, which has no unary minus on the oldest supported
    JAX; the rules must not rely on one."""
    x = _x(6, (2, 4))
    for case_id, name, kw, jnn in CASES:
        g = jax.grad(lambda v: jnp.sum(jnp.sin(_fns(name, kw)[0](v))))(x)
        want = jax.grad(lambda v: jnp.sum(jnp.sin(jnn(v))))(jnp.asarray(x))
        assert_close(g, want, 1e-12, case_id)
    for loss, labels in ((ops.multiclass_sparsemax_loss, np.array([0, 3])),
                         (ops.sparsemax_loss, (x > 0).astype(np.int32))):
        assert np.isfinite(jax.grad(loss)(x, labels)).all()
    assert np.isfinite(jax.grad(lambda v: jnp.sum(ops.sparsemax(v) ** 2))(x)).all()
