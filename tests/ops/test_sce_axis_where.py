"""softmax_cross_entropy's optax keywords ``axis`` and ``where``.

The op is ``optax.softmax_cross_entropy(x, t, axis, where).mean()`` (index labels:
``optax.softmax_cross_entropy_with_integer_labels``): checked against optax (value and
gradient), against its twin and central differences (float64, the suite's conftest), for
padded rows, masked classes and every row masked, for its errors, and for the default
call's program (``axis=-1`` is the code without the keyword).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.ops import reference as ref
from funcnet.ops.losses import _sce_index
from tests.ops._cases import (assert_raises_everywhere, channels_first_classes, labels,
                             normal, probs)

X, Y, T, CLASSES, ROWS = channels_first_classes(90)   # classes on axis 1: (N, C, T)
TC = jnp.where(CLASSES, T, 0.0)                  # probability labels, 0 on masked classes
X4 = normal(94, (2, 3, 2, 4), 2.0)                # classes on axes (1, 3): 3 * 4 = 12
Y4 = labels(95, (2, 2), 12)                       # flat indices into the (3, 4) slice


def _bind(fn, **kw):
    return lambda x, t: fn(x, t, **kw)


# (id, args, keywords): op and twin agree and match central differences
CASES = [
    ("index_axis1", (X, Y), dict(axis=1)),
    ("index_axis1_rows", (X, Y), dict(axis=1, where=ROWS)),
    ("index_axis1_classes", (X, Y), dict(axis=1, where=CLASSES)),
    ("index_rows_smoothed", (X, Y), dict(axis=1, where=ROWS, label_smoothing=0.1)),
    ("index_axes13", (X4, Y4), dict(axis=(1, 3))),
    ("probs_axis1_classes", (X, TC), dict(axis=1, where=CLASSES)),
    ("probs_axis1_rows_smoothed", (X, T), dict(axis=1, where=ROWS, label_smoothing=0.2)),
    ("probs_last_rows", (normal(96, (4, 3)), probs(97, (4, 3))),
     dict(where=np.array([True, False, True, True]))),
]


@pytest.mark.parametrize("case_id, args, kw", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_reference_and_central_differences(case_id, args, kw):
    check_vjp(_bind(ops.softmax_cross_entropy, **kw), _bind(ref.softmax_cross_entropy, **kw),
              args, rtol=1e-10, fd_rtol=1e-6)


def test_values_and_gradients_equal_optax_mean():
    optax = pytest.importorskip("optax")
    integer, soft = optax.softmax_cross_entropy_with_integer_labels, optax.softmax_cross_entropy
    cases = {   # id: (funcnet, optax) of the logits
        "index_axis1": (lambda x: ops.softmax_cross_entropy(x, Y, axis=1),
                        lambda x: integer(x, Y, axis=1)),
        "index_rows": (lambda x: ops.softmax_cross_entropy(x, Y, axis=1, where=ROWS),
                       lambda x: integer(x, Y, axis=1, where=ROWS)),
        "index_classes": (lambda x: ops.softmax_cross_entropy(x, Y, axis=1, where=CLASSES),
                          lambda x: integer(x, Y, axis=1, where=CLASSES)),
        "probs_classes": (lambda x: ops.softmax_cross_entropy(x, TC, axis=1,
                                                              where=CLASSES),
                          lambda x: soft(x, TC, axis=1, where=CLASSES)),
        "probs_rows": (lambda x: ops.softmax_cross_entropy(x, T, axis=1, where=ROWS),
                       lambda x: soft(x, T, axis=1, where=ROWS)),
        # optax's argument order: axis and where are the third and fourth positionals
        "index_positional": (lambda x: ops.softmax_cross_entropy(x, Y, 1, ROWS),
                             lambda x: integer(x, Y, 1, ROWS)),
        "probs_positional": (lambda x: ops.softmax_cross_entropy(x, TC, 1, CLASSES),
                             lambda x: soft(x, TC, 1, CLASSES)),
    }

    @jax.jit
    def both(x, x4):
        out = {k: (jax.value_and_grad(f)(x), jax.value_and_grad(lambda x, g=g: jnp.mean(g(x)))(x))
               for k, (f, g) in cases.items()}
        out["index_axes13"] = (
            jax.value_and_grad(lambda x: ops.softmax_cross_entropy(x, Y4, axis=(1, 3)))(x4),
            jax.value_and_grad(lambda x: jnp.mean(integer(x, Y4, axis=(1, 3))))(x4))
        return out

    with jax.numpy_dtype_promotion("standard"):
        got = both(X, X4)
    for k, ((v, g), (wv, wg)) in got.items():
        assert_close(v, wv, 1e-12, f"{k} value")
        assert_close(g, wg, 1e-10, f"{k} gradient")


def test_padded_rows_take_any_label_and_count_zero():
    """Rows left out by ``where`` may hold a padding label (-100): eagerly and under jit
    the loss is the kept rows' sum over ALL rows, and the padded rows' gradient is 0."""
    x = normal(98, (6, 4))
    y = jnp.array([1, -100, 3, 0, -100, 2])
    keep = np.asarray(y) >= 0
    f = jax.value_and_grad(lambda x: ops.softmax_cross_entropy(x, y, where=keep))
    for fn in (f, jax.jit(f)):
        v, g = fn(x)
        kept = ops.softmax_cross_entropy(x[keep], y[keep])
        assert_close(v, kept * (keep.sum() / keep.size), 1e-12, "value")
        assert np.all(np.asarray(g)[~keep] == 0) and np.all(np.asarray(g)[keep] != 0)
    with pytest.raises(ValueError, match="labels hold -100"):
        ops.softmax_cross_entropy(x, y)                  # no mask: the label is an error


def test_fully_masked_row_and_masked_label_class():
    """A row whose every class is masked counts 0 with zero gradient (probability and
    index labels); an index label on a masked class gives +inf, as a -inf logit does."""
    x = normal(99, (2, 3))
    where = np.array([[True, False, True], [False, False, False]])
    for t in (jnp.array([0, 1]), jnp.array([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])):
        v, g = jax.jit(jax.value_and_grad(
            lambda x, t=t: ops.softmax_cross_entropy(x, t, where=where)))(x)
        want = ops.softmax_cross_entropy(x[:1], t[:1], where=where[:1]) / 2
        assert_close(v, want, 1e-12, "value")
        assert np.all(np.asarray(g[1]) == 0) and np.all(np.asarray(g[0, 1]) == 0)
    v, g = jax.value_and_grad(lambda x: ops.softmax_cross_entropy(
        x, jnp.array([1, 0]), where=where))(x)
    assert float(v) == np.inf and np.all(np.isfinite(np.asarray(g)))


def test_vmap_over_experiments_equals_a_loop():
    """Per-experiment masks under ``vmap`` (e.g. sequences of different lengths)."""
    xs, ys = normal(100, (3, 4, 5)), labels(101, (3, 4), 5)
    masks = np.arange(4)[None, :] < np.array([[4], [2], [1]])
    f = jax.vmap(jax.value_and_grad(lambda x, y, m: ops.softmax_cross_entropy(x, y, where=m)))
    vs, gs = f(xs, ys, masks)
    for i in range(3):
        v, g = jax.value_and_grad(lambda x: ops.softmax_cross_entropy(x, ys[i],
                                                                       where=masks[i]))(xs[i])
        assert_close(vs[i], v, 1e-12, f"value {i}")
        assert_close(gs[i], g, 1e-12, f"gradient {i}")


def test_default_axis_compiles_the_plain_program():
    x, y = normal(102, (3, 4)), labels(103, (3,), 4)

    def text(f):
        return re.sub(r"module @\S+", "module",
                      jax.jit(jax.value_and_grad(f)).lower(x, y).as_text())

    assert text(lambda a, b: ops.softmax_cross_entropy(a, b, axis=-1)) == text(_sce_index)
    assert text(lambda a, b: ops.softmax_cross_entropy(a, b, axis=1)) == text(_sce_index)


ERRORS = [
    ("where_shape", (X, Y), dict(axis=1, where=np.ones((3, 4, 5), bool)), ValueError,
     r"where has shape \(3, 4, 5\), expected \(3, 5, 4\) .* or \(3, 4\)"),
    ("where_dtype", (X, Y), dict(axis=1, where=np.ones((3, 4))), TypeError,
     "where must be a bool array"),
    ("axis_range", (X, Y), dict(axis=3), ValueError, "axis 3 is out of range"),
    ("axis_repeated", (X, Y), dict(axis=(1, 1)), ValueError, "distinct axes"),
    ("labels_shape", (X, Y), dict(axis=2), ValueError, r"expected \(3, 5\)"),
    ("smoothing_class_mask", (X, Y), dict(axis=1, where=CLASSES, label_smoothing=0.1),
     ValueError, "mask of classes"),
    ("axis_float", (X, Y), dict(axis=0.1), TypeError,
     r"axis must be an int or a tuple of ints, got 0.1; label smoothing is keyword-only .*"
     r"softmax_cross_entropy\(logits, labels, label_smoothing=0.1\)"),
    ("axis_str", (X, Y), dict(axis="1"), TypeError,
     "axis must be an int or a tuple of ints, got '1'"),
]


@pytest.mark.parametrize("case_id, args, kw, exc, match", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(case_id, args, kw, exc, match):
    assert_raises_everywhere(lambda x, t: ops.softmax_cross_entropy(x, t, **kw), args, exc,
                             match)


def test_positional_label_smoothing_is_refused():
    """The third positional argument is optax's ``axis``: a smoothing value passed there
    (the order before optax's keywords) is a TypeError that names ``label_smoothing=``,
    never a silent change of meaning."""
    assert_raises_everywhere(lambda x, t: ops.softmax_cross_entropy(x, t, 0.1),
                             (X[:, 0], Y[:, 0]), TypeError,
                             r"label_smoothing=0.1\)")


def test_with_integer_labels_is_the_op_under_optax_name():
    """``softmax_cross_entropy_with_integer_labels``: optax's name and positional order,
    the same op (value, hand-written backward) and twin; float labels are refused."""
    optax = pytest.importorskip("optax")
    f = ops.softmax_cross_entropy_with_integer_labels
    check_vjp(lambda x: f(x, Y, 1, ROWS),
              lambda x: ref.softmax_cross_entropy_with_integer_labels(x, Y, 1, ROWS), (X,),
              rtol=1e-10, fd_rtol=1e-6)
    got = jax.jit(jax.value_and_grad(lambda x: f(x, Y, 1, ROWS)))(X)
    same = jax.value_and_grad(lambda x: ops.softmax_cross_entropy(x, Y, 1, ROWS))(X)
    with jax.numpy_dtype_promotion("standard"):
        theirs = jax.value_and_grad(lambda x: jnp.mean(
            optax.softmax_cross_entropy_with_integer_labels(x, Y, 1, ROWS)))(X)
    assert_close(got, same, 1e-15, "the same op")
    assert_close(got, theirs, 1e-10, "optax")
    assert "custom_vjp_call" in str(jax.make_jaxpr(lambda x: f(x, Y, 1))(X))
    assert_raises_everywhere(f, (X[:, :, 0], T[:, :, 0]), TypeError,
                             "softmax_cross_entropy_with_integer_labels: labels must have "
                             "an integer dtype")
