"""funcnet.gradcheck: central differences, and VJP checks that catch a wrong rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import check_grads_rev, check_vjp, numerical_grad


def test_numerical_grad_over_a_pytree():
    tree = {"a": jnp.array([1.0, -2.0]), "b": (jnp.array([[0.5]]),)}
    f = lambda t: jnp.sum(t["a"] ** 3) + jnp.sin(t["b"][0][0, 0])  # noqa: E731
    g = numerical_grad(f, tree)
    np.testing.assert_allclose(g["a"], 3 * tree["a"] ** 2, rtol=1e-8)
    np.testing.assert_allclose(g["b"][0], jnp.cos(0.5), rtol=1e-8)


@pytest.mark.parametrize("n, chunk", [(300, 64), (257, 256), (5, 256), (64, 64)])
def test_numerical_grad_chunks_large_inputs_and_compiles_once(n, chunk):
    """Every chunk has one shape (the last padded), so ``f`` is traced once; each entry of
    the gradient is its own direction's (a per-entry weight tells them apart)."""
    x = jnp.linspace(-1.0, 1.0, n)
    weights = jnp.arange(1.0, n + 1.0)
    traces = []

    def f(v):
        traces.append(v.shape)
        return jnp.sum(weights * v ** 3)
    np.testing.assert_allclose(numerical_grad(f, x, chunk=chunk), 3 * weights * x ** 2,
                               rtol=1e-6, atol=1e-6)
    assert len(traces) == 1, traces


def test_numerical_grad_keeps_each_leafs_dtype():
    """Leaves of several dtypes (NumPy, a Python float, bfloat16; perturbed in their
    common dtype) come back in the dtype JAX gives each, with no dtype warning."""
    import warnings
    x = {"a": np.array([1.0, 2.0], np.float32), "b": 0.5, "c": jnp.ones(2, jnp.bfloat16)}
    with warnings.catch_warnings(), jax.numpy_dtype_promotion("standard"):
        warnings.simplefilter("error")
        g = numerical_grad(lambda t: jnp.sum(t["a"] ** 2) + t["b"] ** 3
                           + jnp.sum(t["c"].astype(jnp.float32)), x, eps=1e-3)
    assert [g[k].dtype for k in "abc"] == [jnp.float32, jnp.float64, jnp.bfloat16]
    np.testing.assert_allclose(g["a"], [2.0, 4.0], rtol=1e-2)
    np.testing.assert_allclose(g["b"], 0.75, rtol=1e-5)   # central differences: eps^2


def test_numerical_grad_without_x64_gives_float32_and_no_warning():
    """Without ``jax_enable_x64`` a float64 NumPy leaf is a float32 JAX array: perturbed
    and returned as one, with no warning of a float64 request JAX cannot honour."""
    import warnings
    with warnings.catch_warnings(), jax.enable_x64(False):
        warnings.simplefilter("error")
        g = numerical_grad(lambda v: jnp.sum(v ** 2), np.array([1.0, 2.0]), eps=1e-2)
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, [2.0, 4.0], rtol=1e-3)


def test_numerical_grad_of_an_empty_input():
    g = numerical_grad(lambda v: jnp.sum(v), jnp.zeros((0, 3)))
    assert g.shape == (0, 3)


def test_note_001_backprop_example():
    # f(x, y, z) = (x + y) z at x=-2, y=5, z=-4: df/dx = df/dy = z = -4, df/dz = x + y = 3.
    f = lambda x, y, z: (x + y) * z  # noqa: E731
    grads = jax.grad(f, argnums=(0, 1, 2))(-2.0, 5.0, -4.0)
    assert grads == (-4.0, -4.0, 3.0)
    # The sigmoid neuron of note 001 (w = [2, -3, -3], x = [-1, -2]).
    w, x = jnp.array([2.0, -3.0, -3.0]), jnp.array([-1.0, -2.0])
    neuron = lambda w, x: ops.sigmoid(w[0] * x[0] + w[1] * x[1] + w[2])  # noqa: E731
    dw, dx = jax.grad(neuron, argnums=(0, 1))(w, x)
    np.testing.assert_allclose(dw, [-0.19661193, -0.39322387, 0.19661193], rtol=1e-7)
    np.testing.assert_allclose(dx, [0.39322387, -0.58983580], rtol=1e-7)


def _op_with_rule(bwd_scale):
    @jax.custom_vjp
    def f(x):
        return jnp.sin(x)

    f.defvjp(lambda x: (jnp.sin(x), jnp.cos(x)), lambda c, g: (bwd_scale * g * c,))
    return f


def test_check_vjp_accepts_a_correct_user_rule():
    x = jnp.linspace(-2.0, 2.0, 7)
    out = check_vjp(_op_with_rule(1.0), jnp.sin, (x,))
    assert out["grads"][0].shape == x.shape


def test_check_vjp_rejects_a_wrong_rule():
    with pytest.raises(AssertionError, match="vjp vs reference"):
        check_vjp(_op_with_rule(1.001), jnp.sin, (jnp.linspace(-2.0, 2.0, 7),))


def test_check_vjp_catches_a_wrong_reference_by_central_differences():
    wrong_ref = lambda x: jnp.sin(x)  # noqa: E731
    rule = _op_with_rule(1.0)
    # op and reference agree, but both differ from the truth of a different function:
    with pytest.raises(AssertionError, match="central differences"):
        check_vjp(lambda x: rule(x) + 0 * x, lambda x: wrong_ref(x), (jnp.linspace(-2.0, 2.0, 7),),
                  cotangent=jnp.ones(7), fd_eps=1e-1, fd_rtol=1e-9)


def test_check_vjp_skips_integer_arguments():
    logits, labels = jnp.tile(jnp.arange(4.0), (3, 1)), jnp.array([0, 1, 3])
    out = check_vjp(ops.softmax_cross_entropy, ops.reference.softmax_cross_entropy,
                    (logits, labels))
    assert len(out["grads"]) == 1


def test_check_grads_rev_on_custom_vjp_op():
    check_grads_rev(ops.tanh, (jnp.linspace(-1.0, 1.0, 5),), order=2)
    with pytest.raises(Exception):  # forward mode is not defined for custom_vjp
        jax.jvp(ops.tanh, (jnp.ones(3),), (jnp.ones(3),))
