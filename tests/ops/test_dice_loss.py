"""dice_loss, binary_dice_loss, multiclass_generalized_dice_loss: the custom VJP vs its
twin and central differences (float64, every option, the class weights' and the targets'
gradients included), values and gradients equal to optax's .mean(), optax's own test
cases, residuals, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import funcnet.ops as ops
from funcnet.gradcheck import assert_close, check_vjp
from funcnet.nn.memory import saved_residuals
from funcnet.ops import reference as R
from tests.ops._cases import assert_raises_everywhere, rand

RNG = np.random.default_rng(0)
X = rand((3, 4, 5, 4), 1)                                      # (N, H, W, C) logits
T = np.asarray(jax.nn.one_hot(RNG.integers(0, 4, (3, 4, 5)), 4))
XB = rand((3, 4, 5), 2)                                        # binary (N, H, W)
TB = (RNG.random((3, 4, 5)) > 0.5).astype(np.float64)
W = np.asarray([0.0, 1.0, 2.0, 0.5])

# (id, kwargs): every option of dice_loss
OPTIONS = [("default", {}), ("tversky", dict(alpha=0.3, beta=0.7)),
           ("sum", dict(reduction="sum")), ("none", dict(reduction="none")),
           ("background", dict(ignore_background=True)), ("axis", dict(axis=(1,))),
           ("no_smooth", dict(smooth=0.0)),
           ("probs", dict(apply_softmax=False))]


def _optax():
    """optax's dice losses broadcast (C,) weights against (N, C): allow it for them."""
    import contextlib
    stack = contextlib.ExitStack()
    stack.enter_context(jax.numpy_dtype_promotion("standard"))
    stack.enter_context(jax.numpy_rank_promotion("allow"))
    return stack


def _inputs(kw):
    return (np.asarray(jax.nn.softmax(X)) if kw.get("apply_softmax") is False else X), T


@pytest.mark.parametrize("case_id, kw", OPTIONS, ids=[o[0] for o in OPTIONS])
def test_dice_vjp_matches_reference_and_central_differences(case_id, kw):
    """Both inputs differentiated: the logits (through the softmax) and the targets."""
    check_vjp(lambda x, t: ops.dice_loss(x, t, **kw), lambda x, t: R.dice_loss(x, t, **kw),
              _inputs(kw), seed=3)


def test_class_weights_generalized_and_binary_vjps():
    check_vjp(lambda x, t, w: ops.dice_loss(x, t, class_weights=w),
              lambda x, t, w: R.dice_loss(x, t, class_weights=w), (X, T, W), seed=4)
    for kw in ({}, dict(ignore_background=True)):
        check_vjp(lambda x, t: ops.multiclass_generalized_dice_loss(x, t, **kw),
                  lambda x, t: R.multiclass_generalized_dice_loss(x, t, **kw), (X, T),
                  seed=5)
    for kw in ({}, dict(apply_sigmoid=False)):
        xb = np.asarray(jax.nn.sigmoid(XB)) if kw else XB
        check_vjp(lambda x, t: ops.binary_dice_loss(x, t, **kw),
                  lambda x, t: R.binary_dice_loss(x, t, **kw), (xb, TB), seed=6)


@pytest.mark.parametrize("case_id, kw", OPTIONS + [("weights", dict(class_weights=W))],
                         ids=[o[0] for o in OPTIONS] + ["weights"])
def test_values_and_gradients_equal_optax_mean(case_id, kw):
    x, t = _inputs(kw)

    def mine(x, t):
        return ops.dice_loss(x, t, **kw)

    def theirs(x, t):
        with _optax():
            return optax.losses.dice_loss(x, t, **kw).mean()

    assert_close(jax.value_and_grad(mine, (0, 1))(x, t),
                 jax.value_and_grad(theirs, (0, 1))(x, t), 1e-12, case_id)


def test_generalized_and_binary_equal_optax():
    pairs = [(lambda x, t: ops.multiclass_generalized_dice_loss(x, t),
              lambda x, t: optax.losses.multiclass_generalized_dice_loss(x, t), X, T),
             (lambda x, t: ops.multiclass_generalized_dice_loss(x, t, ignore_background=True),
              lambda x, t: optax.losses.multiclass_generalized_dice_loss(
                  x, t, ignore_background=True), X, T),
             (ops.binary_dice_loss, lambda x, t: optax.losses.binary_dice_loss(x, t).mean(),
              XB, TB),
             (ops.binary_dice_loss, lambda x, t: optax.losses.binary_dice_loss(x, t).mean(),
              XB[..., None], TB[..., None])]
    for mine, theirs, x, t in pairs:
        with _optax():     # jitted: one compile each, not one dispatch per primitive
            want = jax.jit(jax.value_and_grad(theirs, (0, 1)))(x, t)
        assert_close(jax.jit(jax.value_and_grad(mine, (0, 1)))(x, t), want, 1e-12,
                     "generalized/binary")


def test_optax_cases():
    targets = jnp.array([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]])[..., None]
    assert float(ops.dice_loss(jnp.where(targets, 10.0, -10.0), targets)) < 0.01
    assert float(ops.dice_loss(jnp.where(targets, -10.0, 10.0), targets)) > 0.7
    onehot = jax.nn.one_hot(jnp.array([[0, 1, 2], [1, 0, 2], [2, 2, 1]]), 3)[None]
    assert float(ops.dice_loss(jnp.where(onehot, 10.0, -10.0), onehot)) < 0.01
    for big in (100.0, -100.0):     # numerical stability, and all-zero / all-one targets
        for t in (jnp.ones((1, 4, 4, 1)), jnp.zeros((1, 4, 4, 1))):
            loss, g = jax.value_and_grad(ops.dice_loss)(jnp.full((1, 4, 4, 1), big), t)
            assert np.isfinite(float(loss)) and jnp.isfinite(g).all()
    # the weighting parameters, by hand (optax's test), on probabilities
    probs, t = jnp.array([[[0.1, 0.9], [0.8, 0.2]]]), jnp.array([[[0.0, 1.0], [1.0, 0.0]]])
    inter, p_sum, t_sum = (jnp.sum(a, axis=1) for a in (probs * t, probs, t))
    for alpha, beta in ((0.3, 0.7), (0.5, 0.5)):
        den = inter + alpha * (p_sum - inter) + beta * (t_sum - inter) + 1.0
        want = jnp.mean(1.0 - (inter + 1.0) / den)
        got = ops.dice_loss(probs, t, alpha=alpha, beta=beta, apply_softmax=False)
        np.testing.assert_allclose(got, want, rtol=1e-12)
    # softmax inside = probabilities given; equal weights = no weights; background left out
    np.testing.assert_allclose(ops.dice_loss(X, T),
                               ops.dice_loss(jax.nn.softmax(X), T, apply_softmax=False),
                               rtol=1e-12)
    np.testing.assert_allclose(ops.dice_loss(X, T, class_weights=np.ones(4)),
                               ops.dice_loss(X, T), rtol=1e-14)
    with _optax():
        per_class = optax.losses.dice_loss(X, T, reduction="none").mean(0)
    np.testing.assert_allclose(ops.dice_loss(X, T, ignore_background=True),
                               per_class[1:].mean(), rtol=1e-12)
    # a binary (N, H, W) input equals its (N, H, W, 1) form
    np.testing.assert_allclose(ops.binary_dice_loss(XB, TB),
                               ops.binary_dice_loss(XB[..., None], TB[..., None]), rtol=1e-14)


def test_binary_probabilities_are_accepted():
    """optax's binary_dice_loss(apply_sigmoid=False) checks that the size-1 class axis sums
    to 1 and so refuses valid probabilities; here they are the sigmoid's output."""
    p = jax.nn.sigmoid(jnp.asarray(XB))
    np.testing.assert_allclose(ops.binary_dice_loss(p, TB, apply_sigmoid=False),
                               ops.binary_dice_loss(XB, TB), rtol=1e-12)
    with _optax(), pytest.raises(ValueError, match="sum to 1"):
        optax.losses.binary_dice_loss(p, TB, apply_sigmoid=False)


def test_residuals_are_the_inputs_only():
    kept = saved_residuals(ops.dice_loss, jnp.asarray(X), jnp.asarray(T))
    assert all(k.is_argument or k.shape != X.shape for k in kept), kept
    assert sum(k.shape == X.shape for k in kept) == 2, kept


def test_jit_vmap_and_float32():
    x32, t32 = jnp.asarray(X, jnp.float32), jnp.asarray(T, jnp.float32)
    loss = jax.jit(ops.dice_loss)(x32, t32)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, ops.dice_loss(X, T), rtol=1e-5)
    per = jax.vmap(lambda x, t: ops.dice_loss(x[None], t[None]))(X, T)
    np.testing.assert_allclose(per.mean(), ops.dice_loss(X, T), rtol=1e-12)


@pytest.mark.parametrize("call, exc, match", [
    (lambda x, t: ops.dice_loss(x, t[..., :2]), ValueError,
     r"dice_loss: predictions has shape \(3, 4, 5, 4\) but targets has shape \(3, 4, 5, 2\)"),
    (lambda x, t: ops.dice_loss(x.astype(jnp.int32), t), TypeError,
     r"dice_loss: predictions must have a floating dtype"),
    (lambda x, t: ops.dice_loss(x, t, axis=3), ValueError,
     r"dice_loss: axis 3 must name distinct spatial axes"),
    (lambda x, t: ops.dice_loss(x, t, class_weights=jnp.ones(3)), ValueError,
     r"dice_loss: class_weights has shape \(3,\), expected \(4,\)"),
    (lambda x, t: ops.dice_loss(x, t, reduction="max"), ValueError,
     r"dice_loss: reduction must be one of 'mean', 'sum', 'none'"),
    (lambda x, t: ops.dice_loss(x, t, smooth=-1.0), ValueError, r"dice_loss: smooth must be"),
    (lambda x, t: ops.binary_dice_loss([[1.0, 2.0]], [[0.0, 1.0]]), TypeError,
     r"binary_dice_loss: predictions must be an array, got list"),
    (lambda x, t: ops.multiclass_generalized_dice_loss(x[..., :1], t), ValueError,
     r"multiclass_generalized_dice_loss: predictions has shape \(3, 4, 5, 1\)"),
])
def test_bad_input_raises_eagerly_and_under_jit(call, exc, match):
    assert_raises_everywhere(call, (jnp.asarray(X), jnp.asarray(T)), exc, match)


def test_concrete_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match=r"dice_loss: with apply_softmax=False, predictions "
                                         r"must be probabilities that sum to 1"):
        ops.dice_loss(jnp.asarray(X), jnp.asarray(T), apply_softmax=False)


def test_fit_reports_the_pixel_accuracy_of_a_dice_loss():
    """default_metrics: the multiclass Dice losses take one-hot targets, so their default
    metric is the accuracy of the argmax over the class axis (pixel accuracy)."""
    from funcnet import train
    for loss in (ops.dice_loss, ops.multiclass_generalized_dice_loss):
        got = train.default_metrics(loss)(jnp.asarray(X), jnp.asarray(T))
        want = np.mean(np.argmax(X, -1) == np.argmax(T, -1))
        np.testing.assert_allclose(got["accuracy"], want, rtol=1e-6)
    assert train.default_metrics(ops.binary_dice_loss)(jnp.asarray(XB), jnp.asarray(TB)) == {}
