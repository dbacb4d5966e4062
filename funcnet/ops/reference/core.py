"""Plain-JAX twins of the core ops: the same maths written for ``jax.grad`` to differentiate.

No ``custom_vjp`` here. Each twin calls the very check function of its op
(``check_<op>_args`` of the op's module), so a test never compares an op with a twin that
accepted different input, and uses the shared label and array helpers
(:mod:`funcnet.ops._labels`, :mod:`funcnet.ops._arrays`) for the same numbers.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from funcnet import _checks
from funcnet.ops._arrays import as_array, compute_dtype
from funcnet.ops._labels import mask_log, num_rows, one_hot, take_labels, valid_labels
from funcnet.ops.activations import check_softmax_args, stable_log_softmax, stable_softmax
from funcnet.ops.linear import check_affine_args, check_matmul_args
from funcnet.ops.losses import (check_cross_entropy_args, check_integer_labels, empty_rows_zeroed,
                                check_multiclass_hinge_args, check_softmax_cross_entropy_args)
from funcnet.ops.losses_elementwise import (check_binary_cross_entropy_args,
                                            check_elementwise_args, clip_bounds)
from funcnet.ops.normalization import check_batch_norm_args
from funcnet.ops.regularization import check_l2_args
from funcnet.ops.smoothing import smoothing_mix


def matmul(x, w):
    check_matmul_args("matmul", x, w)
    return jnp.matmul(x, w)


def affine(x, w, b):
    check_affine_args("affine", x, w, b)
    y = jnp.matmul(x, w)
    return y + jnp.broadcast_to(b, y.shape)


def relu(x):
    _checks.check_float("relu", "x", x)
    # jax.nn.relu: max(x, 0), so NaN stays NaN (as the op), with derivative [x > 0] (0 at
    # the kink and at NaN); autodiff of a bare jnp.maximum would give 1/2 at x = 0.
    return jax.nn.relu(as_array(x))


def sigmoid(x):
    _checks.check_float("sigmoid", "x", x)
    # Not 1 / (1 + exp(-x)): its autodiff gradient is NaN for x < -710 (exp overflows).
    return jax.nn.sigmoid(as_array(x))


def tanh(x):
    _checks.check_float("tanh", "x", x)
    return jnp.tanh(as_array(x))


# softmax / log_softmax: the op's forward formula (shifted by the max, as jax.nn), so a +inf
# logit gives the same all-NaN row as the op and jax.nn (logsumexp would give NaN only at
# the +inf entry); autodiff of it is what the backward rules are checked against.
# With where= the same selects as jax.nn, so autodiff gives 0 outside the mask (also in a
# row with nothing kept: the NaN of 0/0 there never passes a select).
def log_softmax(x, axis=-1, where=None):
    return stable_log_softmax(*check_softmax_args("log_softmax", x, axis, where))


def softmax(x, axis=-1, where=None):
    return stable_softmax(*check_softmax_args("softmax", x, axis, where))


def _log_softmax(x):
    return x - logsumexp(x, axis=-1, keepdims=True)


def softmax_cross_entropy(logits, labels, axis=-1, where=None, *,
                          label_smoothing: float = 0.0):
    logits, labels, is_index, a, keep = check_softmax_cross_entropy_args(
        "softmax_cross_entropy", logits, labels, axis, where, label_smoothing)
    logp = _log_softmax(logits)
    if not is_index:   # smoothing and where already applied to the labels
        return -jnp.sum(labels * mask_log(labels, logp)) / num_rows(logits)
    rows = -take_labels(logp, labels)
    if _checks.is_traced(a):   # per row, as the op mixes its means
        rows = smoothing_mix(a, rows, -jnp.sum(logp, axis=-1) / logp.shape[-1])
    elif a:   # (1 - a) one-hot + a / C, without building the one-hot row
        rows = (1 - a) * rows - a / logp.shape[-1] * jnp.sum(logp, axis=-1)
    if keep is not None:
        rows = jnp.where(keep, rows, jnp.zeros((), rows.dtype))
    return jnp.mean(rows)


def softmax_cross_entropy_with_integer_labels(logits, labels, axis=-1, where=None):
    check_integer_labels("softmax_cross_entropy_with_integer_labels", labels)
    return softmax_cross_entropy(logits, labels, axis, where)


def safe_softmax_cross_entropy(logits, labels):
    _checks.check_float("safe_softmax_cross_entropy", "labels", labels)
    return softmax_cross_entropy(empty_rows_zeroed(logits, labels), labels)


def cross_entropy(probs, labels, eps: float = 1e-7):
    probs, labels, is_index, eps = check_cross_entropy_args("cross_entropy", probs, labels, eps)
    if is_index:
        return -jnp.mean(jnp.log(take_labels(probs, labels) + eps))
    return -jnp.sum(labels * mask_log(labels, jnp.log(probs + eps))) / num_rows(probs)


def multiclass_hinge(scores, labels, margin=1.0):
    scores, labels, margin = check_multiclass_hinge_args("multiclass_hinge", scores, labels,
                                                         margin)
    c = scores.shape[-1]
    z = scores - take_labels(scores, labels)[..., None] + margin
    # where(z > 0, z, 0) (not maximum) so the tie subgradient is 0, as in the op.
    keep = (z > 0) & ~one_hot(labels, c, jnp.bool_)
    rows = jnp.sum(jnp.where(keep, z, jnp.zeros((), z.dtype)), axis=-1)
    return jnp.mean(jnp.where(valid_labels(labels, c), rows, jnp.asarray(jnp.nan, rows.dtype)))


def mean_squared_error(pred, target):
    pred, target = check_elementwise_args("mean_squared_error", "pred", pred, "target", target)
    return jnp.mean((pred - target) ** 2)


def binary_cross_entropy(probs, targets, eps: float = 1e-7):
    probs, targets, eps = check_binary_cross_entropy_args("binary_cross_entropy", probs,
                                                          targets, eps)
    ct = compute_dtype(probs.dtype)
    lo, hi = clip_bounds(eps, ct)
    p, t = jnp.clip(probs.astype(ct), lo, hi), targets.astype(ct)
    return -jnp.mean(t * jnp.log(p) + (1 - t) * jnp.log(1 - p)).astype(probs.dtype)


def sigmoid_binary_cross_entropy(logits, targets):
    logits, targets = check_elementwise_args("sigmoid_binary_cross_entropy", "logits", logits,
                                             "targets", targets)
    return -jnp.mean(targets * jax.nn.log_sigmoid(logits)
                     + (1 - targets) * jax.nn.log_sigmoid(-logits))


def l2_penalty(params, weight_decay):
    leaves, weight_decay = check_l2_args("l2_penalty", params, weight_decay)
    dtype = weight_decay.dtype
    total = sum((jnp.sum(leaf.astype(dtype) ** 2) for leaf in leaves), jnp.zeros((), dtype))
    return 0.5 * weight_decay * total


def batch_norm(x, gamma, beta, eps: float = 1e-5, axis_name=None):
    eps = check_batch_norm_args("batch_norm", x, gamma, beta, eps, axis_name)
    ct = compute_dtype(x.dtype)
    xc = x.astype(ct)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(xc, axis=axes)
    if axis_name is not None:
        mean = lax.pmean(mean, axis_name)
    centered = xc - jnp.broadcast_to(mean, xc.shape)
    var = jnp.mean(centered ** 2, axis=axes)
    if axis_name is not None:
        var = lax.pmean(var, axis_name)
    scale = jnp.broadcast_to(gamma.astype(ct) / jnp.sqrt(var + eps), xc.shape)
    y = centered * scale + jnp.broadcast_to(beta.astype(ct), xc.shape)
    return y.astype(x.dtype), mean, var
