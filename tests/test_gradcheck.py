"""funcnet.gradcheck: central differences, and VJP checks that catch a wrong rule."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_grads_rev, check_vjp, numerical_grad


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


def _rule(fwd_fn, bwd_fn):
    """A ``custom_vjp`` function of one argument with the given forward and backward."""
    f = jax.custom_vjp(fwd_fn)
    f.defvjp(lambda x: (fwd_fn(x), x), lambda x, g: (bwd_fn(x, g),))
    return f


Z = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3))
                + 1j * np.random.default_rng(1).normal(size=(2, 3)))


def test_numerical_grad_of_complex_input_is_jax_grads_convention():
    f = lambda z: jnp.sum(jnp.abs(z) ** 2 + jnp.real(z) * jnp.imag(z))  # noqa: E731
    assert_close(numerical_grad(f, Z), jax.grad(f)(Z), 1e-8)
    mixed = {"z": Z, "x": jnp.linspace(-1.0, 1.0, 4)}
    g = lambda t: f(t["z"]) + jnp.sum(t["x"] ** 3)  # noqa: E731
    assert_close(numerical_grad(g, mixed), jax.grad(g)(mixed), 1e-8)
    with pytest.raises(TypeError, match="f must return a real scalar"):
        numerical_grad(lambda z: jnp.sum(z), Z)


def test_check_vjp_on_complex_inputs_and_outputs():
    good = _rule(jnp.sin, lambda z, g: g * jnp.cos(z))
    out = check_vjp(good, jnp.sin, (Z,))
    assert jnp.iscomplexobj(out["grads"][0])
    conjugated = _rule(jnp.sin, lambda z, g: jnp.conj(g * jnp.cos(z)))
    with pytest.raises(AssertionError, match="vjp vs reference"):
        check_vjp(conjugated, jnp.sin, (Z,))
    with pytest.raises(AssertionError, match="output"):        # the imaginary part dropped
        check_vjp(lambda z: jnp.sin(z).real.astype(z.dtype), jnp.sin, (Z,), fd_rtol=None)
    with pytest.raises(AssertionError, match="max abs error 5"):
        assert_close(np.array([1 + 0j]), np.array([1 + 5j]), 1e-10)


def test_check_vjp_differentiates_the_float_leaves_of_a_mixed_pytree():
    """A pytree argument holding float and integer leaves (an embedding table and its
    ids) is differentiated in its float leaves, the integer ones held fixed."""
    params = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(5, 3))),
              "ids": jnp.array([0, 3, 1, 3])}

    def gather(scale):
        f = jax.custom_vjp(lambda p: p["w"][p["ids"]])
        f.defvjp(lambda p: (p["w"][p["ids"]], p), lambda p, g: ({
            "w": scale * jnp.zeros_like(p["w"]).at[p["ids"]].add(g),
            "ids": np.zeros(p["ids"].shape, jax.dtypes.float0)},))
        return f

    out = check_vjp(gather(1.0), lambda p: p["w"][p["ids"]], (params,))
    assert out["grads"][0]["w"].shape == (5, 3)
    with pytest.raises(AssertionError, match="vjp vs reference"):
        check_vjp(gather(10.0), lambda p: p["w"][p["ids"]], (params,))


def test_assert_close_with_non_finite_expected_values():
    """An infinity in the expected leaf must be matched, and does not widen the bound of
    the leaf's other entries; the same infinity or NaN on both sides is equal."""
    with pytest.raises(AssertionError, match="where np.float64.inf. was expected"):
        assert_close(np.array([1.0, 2.0]), np.array([np.inf, 2.0]), 1e-10)
    with pytest.raises(AssertionError, match="max abs error"):
        assert_close(np.array([np.inf, 999.0]), np.array([np.inf, 2.0]), 1e-10)
    with pytest.raises(AssertionError, match="max abs error"):
        assert_close(np.array([np.nan, 2.0]), np.array([1.0, 2.0]), 1e-10)
    assert_close(np.array([-np.inf, np.nan, 1.0]), np.array([-np.inf, np.nan, 1.0]), 1e-12)
    x = jnp.array([0.0, 1.0, 2.0, 3.0])     # sqrt's gradient is inf at 0
    wrong = _rule(jnp.sqrt, lambda x, g: 7.0 * g * 0.5 / jnp.sqrt(x))
    with pytest.raises(AssertionError, match="max abs error"):
        check_vjp(wrong, jnp.sqrt, (x,), fd_rtol=None, cotangent=jnp.ones(4))
    check_vjp(_rule(jnp.sqrt, lambda x, g: g * 0.5 / jnp.sqrt(x)), jnp.sqrt, (x,),
              fd_rtol=None, cotangent=jnp.ones(4))
