"""smooth_labels and safe_softmax_cross_entropy under optax's names: the custom VJP vs its
twin and central differences (float64), values and gradients equal to optax's (the
``where`` count and tuple axes included; ``-inf`` logits with 0 labels), errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere, probs, rand

T = np.asarray(probs(0, (4, 6)))
WHERE = np.random.default_rng(1).random((4, 6)) > 0.3
SMOOTHING = [("last", {}), ("where", {"where": WHERE}), ("both_axes", {"axis": (0, 1)}),
             ("axis0", {"axis": 0})]


@pytest.mark.parametrize("case_id, kw", SMOOTHING, ids=[c[0] for c in SMOOTHING])
def test_smooth_labels_vjp_and_optax(case_id, kw):
    check_vjp(lambda t: ops.smooth_labels(t, 0.2, **kw),
              lambda t: R.smooth_labels(t, 0.2, **kw), (T,), seed=2)
    with jax.numpy_dtype_promotion("standard"):
        want = jax.vjp(lambda t: optax.smooth_labels(t, 0.2, **kw), T)
        got = jax.vjp(lambda t: ops.smooth_labels(t, 0.2, **kw), T)
        ct = jnp.asarray(rand((4, 6), 3))
        assert_close((got[0], got[1](ct)), (want[0], want[1](ct)), 1e-14, case_id)


def test_smooth_labels_then_cross_entropy_is_the_fused_label_smoothing():
    """optax's habit (smooth, then cross-entropy) equals the fused label_smoothing=."""
    x = jnp.asarray(rand((4, 6), 4))
    np.testing.assert_allclose(ops.softmax_cross_entropy(x, ops.smooth_labels(T, 0.1)),
                               ops.softmax_cross_entropy(x, T, label_smoothing=0.1),
                               rtol=1e-14)
    assert saved_residuals(lambda t: ops.smooth_labels(t, 0.1), jnp.asarray(T)) == []


def test_safe_softmax_cross_entropy_equals_optax_at_minus_inf():
    x = jnp.asarray(rand((4, 6), 5)).at[:, 0].set(-jnp.inf)
    t = jnp.asarray(T).at[:, 0].set(0.0)
    t = t / jnp.sum(t, axis=-1, keepdims=True)
    check_vjp(ops.safe_softmax_cross_entropy, R.safe_softmax_cross_entropy,
              (np.asarray(rand((4, 6), 6)), T), seed=7)
    with jax.numpy_dtype_promotion("standard"):
        want = jax.value_and_grad(
            lambda a, b: optax.losses.safe_softmax_cross_entropy(a, b).mean(), (0, 1))(x, t)
    got = jax.value_and_grad(ops.safe_softmax_cross_entropy, (0, 1))(x, t)
    assert np.isfinite(float(got[0]))
    assert_close((got[0], got[1][0]), (want[0], want[1][0]), 1e-12, "value and dlogits")
    # dL/dt = -log softmax(x) / n: optax's is +inf at a -inf logit, funcnet's is taken as
    # 0 there (that label is 0: documented in softmax_cross_entropy), equal elsewhere
    masked = np.isneginf(np.asarray(x))
    assert np.all(np.isposinf(np.asarray(want[1][1])[masked]))
    assert np.all(np.asarray(got[1][1])[masked] == 0)
    assert_close(got[1][1][:, 1:], want[1][1][:, 1:], 1e-12, "dlabels")


def test_safe_softmax_cross_entropy_gives_a_padded_row_zero_as_optax():
    """A row of all -inf logits with all-0 labels (padding) adds 0, as optax's safe
    variant: the value equals optax's, the gradient is optax's on the other rows and 0 on
    the padded one (optax's is NaN there); the twin agrees. With label mass on such a row
    the loss stays NaN (no finite logit), as optax's."""
    x = jnp.asarray([[-jnp.inf] * 3, [1.0, 2.0, 3.0], [0.5, -jnp.inf, 0.0]])
    t = jnp.asarray([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.0, 0.7]])
    with jax.numpy_dtype_promotion("standard"):
        want, want_g = jax.value_and_grad(
            lambda a: optax.losses.safe_softmax_cross_entropy(a, t).mean())(x)
    for mode in (False, True):
        if mode:
            with ops.reference_mode():
                got, g = jax.value_and_grad(ops.safe_softmax_cross_entropy)(x, t)
        else:
            got, g = jax.value_and_grad(ops.safe_softmax_cross_entropy)(x, t)
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=f"reference_mode={mode}")
        np.testing.assert_array_equal(g[0], np.zeros(3))
        assert_close(g[1:], want_g[1:], 1e-12, f"gradient, reference_mode={mode}")
    assert np.isnan(ops.safe_softmax_cross_entropy(x, t.at[0, 1].set(1.0)))


@pytest.mark.parametrize("call, exc, match", [
    (lambda t: ops.smooth_labels(t, 1.5), ValueError,
     r"smooth_labels: alpha must be in \[0, 1\], got 1.5"),
    (lambda t: ops.smooth_labels(t.astype(jnp.int32), 0.1), TypeError,
     r"smooth_labels: labels must have a floating dtype"),
    (lambda t: ops.smooth_labels(t, 0.1, where=t > 0.1), None, None),
    (lambda t: ops.smooth_labels(t, 0.1, where=(t > 0.1)[:, :2]), ValueError,
     r"smooth_labels: where has shape \(4, 2\) but labels has shape \(4, 6\)"),
    (lambda t: ops.safe_softmax_cross_entropy(t, jnp.zeros(4, jnp.int32)), TypeError,
     r"safe_softmax_cross_entropy: labels must have a floating dtype"),
])
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    if exc is None:     # the valid call of the table: it runs
        assert call(jnp.asarray(T)).shape == T.shape
        return
    assert_raises_everywhere(call, (jnp.asarray(T),), exc, match)
