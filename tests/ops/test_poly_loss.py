"""poly_loss_cross_entropy (PolyLoss, Leng et al. 2022; optax's name and keywords).

The op is ``optax.losses.poly_loss_cross_entropy(x, t, epsilon=, axis=, where=).mean()``:
checked against its twin and central differences (float64, the suite's conftest), against
optax (value and gradient, index labels as their one-hot rows), against
softmax_cross_entropy at ``epsilon = 0``, in reference mode, and for its errors.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet import train
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as ref
from tests.ops._cases import (assert_raises_everywhere, channels_first_classes, labels,
                             normal, probs, uniform)

X, Y, T, CLASSES, ROWS = channels_first_classes(120)  # classes on axis 1: (N, C, T)
TC = jnp.where(CLASSES, T, 0.0)
X2, Y2, P2 = normal(124, (6, 4), 3.0), labels(125, (6,), 4), probs(126, (6, 4))
SOFT = uniform(127, (6, 4), 0.0, 1.0)             # label rows that do not sum to 1

# (id, args, keywords): op and twin agree and match central differences
CASES = [
    ("probs", (X2, P2), {}),
    ("index", (X2, Y2), {}),
    ("probs_eps_neg1", (X2, P2), dict(epsilon=-1.0)),
    ("index_eps_5", (X2, Y2), dict(epsilon=5.0)),
    ("soft_rows", (X2, SOFT), dict(epsilon=2.0)),
    ("index_axis1_rows", (X, Y), dict(axis=1, where=ROWS)),
    ("index_axis1_classes", (X, Y), dict(axis=1, where=CLASSES)),
    ("probs_axis1_classes", (X, TC), dict(axis=1, where=CLASSES, epsilon=0.5)),
    ("probs_axes02", (X, T), dict(axis=(0, 2))),
]


def _bind(fn, **kw):
    return lambda x, t: fn(x, t, **kw)


@pytest.mark.parametrize("case_id, args, kw", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(case_id, args, kw):
    check_vjp(_bind(ops.poly_loss_cross_entropy, **kw),
              _bind(ref.poly_loss_cross_entropy, **kw), args, rtol=1e-10, fd_rtol=1e-6)


def test_values_and_gradients_equal_optax_mean():
    optax = pytest.importorskip("optax")
    poly = optax.losses.poly_loss_cross_entropy
    onehot2 = jax.nn.one_hot(Y2, 4, dtype=X2.dtype)
    onehot = jax.nn.one_hot(Y, 5, axis=1, dtype=X.dtype)
    rows = np.broadcast_to(ROWS[:, None, :], X.shape)   # optax's softmax: a full mask
    cases = {   # id: (funcnet, optax) of the logits
        "probs": (lambda x: ops.poly_loss_cross_entropy(x, P2), lambda x: poly(x, P2)),
        "index": (lambda x: ops.poly_loss_cross_entropy(x, Y2, epsilon=-1.0),
                  lambda x: poly(x, onehot2, epsilon=-1.0)),
        "soft_rows": (lambda x: ops.poly_loss_cross_entropy(x, SOFT, epsilon=3.0),
                      lambda x: poly(x, SOFT, epsilon=3.0)),
    }
    cases3 = {
        "index_axis1_rows": (lambda x: ops.poly_loss_cross_entropy(x, Y, axis=1, where=ROWS),
                             lambda x: poly(x, onehot, axis=1, where=rows)),
        "probs_axis1_classes": (
            lambda x: ops.poly_loss_cross_entropy(x, TC, axis=1, where=CLASSES),
            lambda x: poly(x, TC, axis=1, where=CLASSES)),
    }

    def both(cases, x):
        return {k: (jax.value_and_grad(f)(x),
                    jax.value_and_grad(lambda x, g=g: jnp.mean(g(x)))(x))
                for k, (f, g) in cases.items()}

    with jax.numpy_dtype_promotion("standard"):
        got = jax.jit(lambda x2, x: {**both(cases, x2), **both(cases3, x)})(X2, X)
    for k, ((v, g), (wv, wg)) in got.items():
        assert_close(v, wv, 1e-12, f"{k} value")
        assert_close(g, wg, 1e-10, f"{k} gradient")


def test_epsilon_zero_is_softmax_cross_entropy():
    for t in (Y2, P2):
        v, g = jax.value_and_grad(ops.poly_loss_cross_entropy, (0, 1) if t is P2 else 0)(
            X2, t, epsilon=0.0)
        wv, wg = jax.value_and_grad(ops.softmax_cross_entropy, (0, 1) if t is P2 else 0)(
            X2, t)
        assert_close(v, wv, 1e-12, "value")
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(wg)):
            assert_close(a, b, 1e-12, "gradient")


def test_masked_logits_padding_and_reference_mode():
    """A ``-inf`` logit whose label is 0 gives finite values and gradients (as the
    cross-entropy); a ``-100`` padding label in a masked row counts 0 with zero gradient;
    in reference mode the op runs its twin (no custom_vjp in the program)."""
    x = jnp.array([[0.0, -jnp.inf, 1.0], [2.0, 0.5, 1.0]])
    y = jnp.array([2, 0])
    v, g = jax.jit(jax.value_and_grad(ops.poly_loss_cross_entropy))(x, y)
    assert np.isfinite(float(v)) and np.all(np.isfinite(np.asarray(g)))
    assert float(g[0, 1]) == 0.0
    pad = jnp.array([1, -100, 3, 0])
    x4, keep = normal(128, (4, 5)), np.asarray(pad) >= 0
    v, g = jax.value_and_grad(lambda x: ops.poly_loss_cross_entropy(x, pad, where=keep))(x4)
    kept = ops.poly_loss_cross_entropy(x4[keep], pad[keep])
    assert_close(v, kept * 3 / 4, 1e-12, "padded value")
    assert np.all(np.asarray(g[1]) == 0) and np.all(np.asarray(g[keep]) != 0)
    assert "custom_vjp_call" in str(jax.make_jaxpr(ops.poly_loss_cross_entropy)(X2, Y2))
    with ops.reference_mode():
        assert "custom_vjp_call" not in str(
            jax.make_jaxpr(ops.poly_loss_cross_entropy)(X2, Y2))


def test_default_metrics_report_accuracy():
    """A classification loss: the default metrics report the accuracy, over the loss's
    class axis when it is given."""
    want = np.mean(np.argmax(np.asarray(X2), -1) == np.asarray(Y2))
    for t in (Y2, jax.nn.one_hot(Y2, 4)):
        got = train.default_metrics(ops.poly_loss_cross_entropy)(X2, t)
        np.testing.assert_allclose(got["accuracy"], want)
    axis1 = functools.partial(ops.poly_loss_cross_entropy, axis=1, epsilon=1.0)
    np.testing.assert_allclose(train.default_metrics(axis1)(X, Y)["accuracy"],
                               np.mean(np.argmax(np.asarray(X), 1) == np.asarray(Y)))


ERRORS = [
    ("epsilon_nan", (X2, Y2), dict(epsilon=float("nan")), ValueError,
     "poly_loss_cross_entropy: epsilon must be finite, got nan"),
    ("epsilon_str", (X2, Y2), dict(epsilon="2"), TypeError,
     "poly_loss_cross_entropy: epsilon must be a number or a scalar array, got str"),
    ("labels_shape", (X2, Y2[:5]), {}, ValueError, "poly_loss_cross_entropy: .*labels"),
    ("int_logits", (np.zeros((2, 3), np.int32), np.zeros(2, np.int32)), {}, TypeError,
     "poly_loss_cross_entropy: logits must have a floating dtype"),
    ("axis_range", (X, Y), dict(axis=3), ValueError, "axis 3 is out of range"),
    ("where_shape", (X, Y), dict(axis=1, where=np.ones((3, 4, 5), bool)), ValueError,
     r"where has shape \(3, 4, 5\)"),
]


@pytest.mark.parametrize("case_id, args, kw, exc, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(case_id, args, kw, exc, match):
    assert_raises_everywhere(lambda x, t: ops.poly_loss_cross_entropy(x, t, **kw), args, exc,
                             match)


def test_a_traced_epsilon_is_taken():
    """A jitted function's argument (sweeps: tests/ops/test_regression_poly_sweep.py)."""
    got = jax.jit(ops.poly_loss_cross_entropy)(X2, Y2, epsilon=2.0)
    assert_close(got, ops.poly_loss_cross_entropy(X2, Y2, epsilon=2.0), 1e-14, "jit")
