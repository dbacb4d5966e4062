"""sparsemax, multiclass_sparsemax_loss, sparsemax_loss: custom VJPs vs their twins and
central differences (float64), values and gradients equal to optax's (projection_simplex
and the two losses' .mean()), optax's own test cases, the Jacobian of Proposition 2,
masked classes, residuals, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere, labels, normal, rand

Z = 2.0 * rand((6, 7), 0)
Y = labels(1, (6,), 7)
YB = jnp.asarray(np.random.default_rng(2).integers(0, 2, (6, 7)), jnp.int32)


def _optax(fn):
    with jax.numpy_dtype_promotion("standard"):
        return fn()


@pytest.mark.parametrize("axis", [-1, 0])
def test_sparsemax_vjp_matches_reference_and_central_differences(axis):
    check_vjp(lambda z: ops.sparsemax(z, axis), lambda z: R.sparsemax(z, axis), (Z,), seed=3)


def test_losses_vjp_match_reference_and_central_differences():
    check_vjp(lambda z: ops.multiclass_sparsemax_loss(z, Y),
              lambda z: R.multiclass_sparsemax_loss(z, Y), (Z,), seed=4)
    check_vjp(lambda z: ops.sparsemax_loss(z, YB), lambda z: R.sparsemax_loss(z, YB),
              (Z,), seed=5)


def test_values_and_gradients_equal_optax():
    """sparsemax = vmap(projection_simplex), and the losses = optax's per-row /
    per-element values averaged; the gradient of the multiclass loss is p - e_y."""
    z = jnp.asarray(Z)
    want_p = _optax(lambda: jax.vmap(optax.projections.projection_simplex)(z))
    assert_close(ops.sparsemax(z), want_p, 1e-14, "sparsemax")
    assert_close(ops.sparsemax(z.T, axis=0), want_p.T, 1e-14, "sparsemax axis 0")
    for ours, theirs, lab in [
            (ops.multiclass_sparsemax_loss, optax.losses.multiclass_sparsemax_loss, Y),
            (ops.sparsemax_loss, optax.losses.sparsemax_loss, YB)]:
        mine = jax.jit(jax.value_and_grad(lambda s: ours(s, lab)))(z)
        ref = _optax(lambda: jax.jit(jax.value_and_grad(lambda s: theirs(s, lab).mean()))(z))
        assert_close(mine, ref, 1e-12, ours.__name__)
    g = jax.grad(lambda s: ops.multiclass_sparsemax_loss(s, Y))(z)
    assert_close(g, (want_p - jax.nn.one_hot(Y, 7)) / 6, 1e-14, "p - e_y")


def test_the_jacobian_is_proposition_2():
    """J = diag(s) - s s^T / |S| with s the support (optax's theoretical Jacobian test)."""
    x = jnp.asarray(np.random.default_rng(0).random(5))
    p = ops.sparsemax(x)
    s = (p > 0).astype(x.dtype)
    want = jnp.diag(s) - jnp.outer(s, s) / jnp.sum(s)
    assert_close(jax.jacrev(ops.sparsemax)(x), want, 1e-14, "jacrev")
    with ops.reference_mode():
        assert_close(jax.jacfwd(ops.sparsemax)(x), want, 1e-14, "jacfwd of the twin")


def test_optax_cases():
    # binary: -(2y - 1) s through sparse_plus, one element and a batch
    ref = lambda y, s: float(jax.nn.sparse_plus(-(2 * y - 1) * s))  # noqa: E731
    assert float(ops.sparsemax_loss(jnp.asarray([10.0]), jnp.asarray([1]))) == ref(1, 10.0)
    got = ops.sparsemax_loss(jnp.asarray([10.0, 20.0]), jnp.asarray([1, 0]))
    np.testing.assert_allclose(got, (ref(1, 10.0) + ref(0, 20.0)) / 2, rtol=1e-12)
    # multiclass: a large score on the right class gives 0, and the gradient p - e_y
    y = jnp.asarray([1, 0, 2])
    scores = 1e5 * jax.nn.one_hot(y, 3)
    assert float(ops.multiclass_sparsemax_loss(scores, y)) == 0.0
    np.testing.assert_allclose(jax.grad(ops.multiclass_sparsemax_loss)(scores, y), 0.0,
                               atol=1e-12)
    # the projection: sums to 1, in [0, 1], a -inf score is a class with probability 0
    p = ops.sparsemax(jnp.asarray(np.random.RandomState(0).randn(3, 50), jnp.float32))
    np.testing.assert_allclose(jnp.sum(p, axis=1), 1.0, rtol=1e-5)
    assert jnp.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(ops.sparsemax(jnp.asarray([0.0, 0.0, -jnp.inf])),
                                  [0.5, 0.5, 0.0])


def test_masked_classes_and_sparsity():
    """-inf scores get p = 0 and no gradient; with a clear winner p is one-hot (sparse)
    and its gradient 0, where softmax's would not be."""
    z = jnp.asarray([[1.0, -jnp.inf, 0.5, 0.2], [5.0, 0.0, 0.0, 0.0]])
    p = ops.sparsemax(z)
    # sorted 1, 0.5, 0.2: k = 2 (1 + 2 * 0.5 > 1.5, 1 + 3 * 0.2 < 1.7), tau = (1.5 - 1) / 2
    np.testing.assert_allclose(p, [[0.75, 0.0, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0]], atol=1e-12)
    g = jax.grad(lambda s: jnp.sum(ops.sparsemax(s) * jnp.arange(4.0)[None]))(z)
    assert jnp.isfinite(g).all() and g[0, 1] == 0 and not jnp.any(g[1])
    assert np.isfinite(float(ops.multiclass_sparsemax_loss(z, jnp.asarray([2, 0]))))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_low_precision_keeps_the_dtype(dtype):
    z = normal(3, (4, 9), 2.0, dtype)
    p = ops.sparsemax(z)
    assert p.dtype == dtype
    np.testing.assert_allclose(np.sum(np.asarray(p, np.float32), -1), 1.0, rtol=2e-2)
    loss, g = jax.value_and_grad(ops.multiclass_sparsemax_loss)(z, labels(4, (4,), 9))
    assert loss.dtype == dtype and g.dtype == dtype


def test_residuals_are_the_support_or_p():
    z = jnp.asarray(Z)
    kept = saved_residuals(ops.sparsemax, z)
    assert len(kept) == 1 and kept[0].dtype == np.bool_ and kept[0].shape == z.shape, kept
    kept = saved_residuals(lambda s: ops.multiclass_sparsemax_loss(s, Y), z)
    assert [k.dtype for k in kept if k.shape == z.shape] == [np.float64], kept


def test_vmap_and_second_order():
    z = jnp.asarray(Z)

    @jax.jit
    def run(z):
        out = []
        for f in (ops.sparsemax, R.sparsemax):
            d1 = jax.grad(lambda v: jnp.sum(jnp.sin(3.0 * f(v))))
            out.append((jax.grad(lambda v: jnp.sum(d1(v) ** 2))(z),
                        jax.vmap(jax.grad(lambda v: f(v)[0] * v[1]))(z)))
        return out

    got, want = run(z)
    assert_close(got, want, 1e-10, "grad(grad), vmap(grad)")


@pytest.mark.parametrize("call, exc, match", [
    (lambda z, y: ops.sparsemax(z.astype(jnp.int32)), TypeError,
     r"sparsemax: x must have a floating dtype"),
    (lambda z, y: ops.sparsemax(z[0, 0]), ValueError, r"sparsemax: x must have at least one"),
    (lambda z, y: ops.sparsemax(z, axis=2), ValueError, r"sparsemax: axis 2 is out of range"),
    (lambda z, y: ops.sparsemax(z[:, :0]), ValueError, r"sparsemax: x has shape \(6, 0\)"),
    (lambda z, y: ops.multiclass_sparsemax_loss(z, y.astype(jnp.float64)), TypeError,
     r"multiclass_sparsemax_loss: labels must be integer class indices of shape \(6,\)"),
    (lambda z, y: ops.multiclass_sparsemax_loss(z, y[:3]), ValueError,
     r"multiclass_sparsemax_loss: integer labels have shape \(3,\), expected \(6,\)"),
    (lambda z, y: ops.sparsemax_loss(z, z), TypeError,
     r"sparsemax_loss: labels must be integers or bools \(0 / 1"),
    (lambda z, y: ops.sparsemax_loss(z, y), ValueError,
     r"sparsemax_loss: logits have shape \(6, 7\) but labels have shape \(6,\)"),
])
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, (jnp.asarray(Z), Y), exc, match)


def test_concrete_labels_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"sparsemax_loss: labels hold 2 .*expected 0 or 1"):
        ops.sparsemax_loss(jnp.asarray(Z), jnp.full((6, 7), 2))
    with pytest.raises(ValueError, match=r"multiclass_sparsemax_loss: labels hold 7"):
        ops.multiclass_sparsemax_loss(jnp.asarray(Z), jnp.full((6,), 7))


@pytest.mark.parametrize("dtype, big", [(jnp.float32, 3e7), (jnp.bfloat16, 300.0),
                                        (jnp.float16, 3000.0), (jnp.float32, -1e4)])
def test_large_scores_keep_the_simplex(dtype, big):
    """sparsemax is shift-invariant and computed on z - max(z): at scores where
    ``sum(u) - 1`` rounds to ``sum(u)`` it still gives a distribution (before: all zeros
    at [3e7, 0, 0] in float32 and a sum of 0.999 at -1e4 everywhere), op and twin alike,
    and the multiclass loss is the exact one."""
    z = jnp.asarray([[big, 0.0, 0.0]] if big > 0 else [[big] * 3], dtype)
    want = np.array([[1.0, 0.0, 0.0]] if big > 0 else [[1 / 3] * 3])
    for mode in (False, True):
        if mode:
            with ops.reference_mode():
                p = ops.sparsemax(z)
        else:
            p = ops.sparsemax(z)
        assert p.dtype == dtype
        np.testing.assert_allclose(np.asarray(p, np.float64), want, atol=1e-3,
                                   err_msg=f"reference_mode={mode}")
    label = jnp.asarray([0])
    loss, grad = jax.value_and_grad(ops.multiclass_sparsemax_loss)(z, label)
    exact = 0.0 if big > 0 else 1 / 3
    np.testing.assert_allclose(float(loss), exact, atol=1e-3)
    np.testing.assert_allclose(np.asarray(grad, np.float64), want - np.eye(3)[[0]], atol=1e-3)
