"""Plain-JAX twins of the core ops: the same maths written for ``jax.grad`` to differentiate.

No ``custom_vjp`` here. The twins run the same argument checks as the ops so a test never
compares an op with a twin that accepted different input.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

from funcnet.ops import _checks
from funcnet.ops._labels import check_class_labels, num_rows, one_hot
from funcnet.ops.linear import check_affine_args, check_matmul_args
from funcnet.ops.losses_elementwise import _check_pair
from funcnet.ops.normalization import check_batch_norm_args, compute_dtype
from funcnet.ops.regularization import _float_leaves, _widest


def matmul(x, w):
    check_matmul_args("matmul", x, w)
    return jnp.matmul(x, w)


def affine(x, w, b):
    check_affine_args("affine", x, w, b)
    y = jnp.matmul(x, w)
    return y + jnp.broadcast_to(b, y.shape)


def relu(x):
    _checks.check_float("relu", "x", x)
    return jnp.where(x > 0, x, jnp.zeros((), x.dtype))


def sigmoid(x):
    _checks.check_float("sigmoid", "x", x)
    # Not 1 / (1 + exp(-x)): its autodiff gradient is NaN for x < -710 (exp overflows).
    return jax.nn.sigmoid(x)


def tanh(x):
    _checks.check_float("tanh", "x", x)
    return jnp.tanh(x)


def log_softmax(x, axis: int = -1):
    _checks.check_float("log_softmax", "x", x)
    axis = _checks.check_axis("log_softmax", axis, jnp.ndim(x))
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis: int = -1):
    _checks.check_float("softmax", "x", x)
    axis = _checks.check_axis("softmax", axis, jnp.ndim(x))
    return jnp.exp(x - logsumexp(x, axis=axis, keepdims=True))


def _targets(scores, labels, is_index):
    return one_hot(labels, scores.shape[-1], scores.dtype) if is_index else labels


def softmax_cross_entropy(logits, labels):
    is_index = check_class_labels("softmax_cross_entropy", "logits", logits, labels,
                                  allow_probs=True)
    t = _targets(logits, labels, is_index)
    return -jnp.sum(t * log_softmax(logits)) / num_rows(logits)


def cross_entropy(probs, labels, eps: float = 1e-7):
    eps = _checks.check_static_float("cross_entropy", "eps", eps, low=0.0, high=1.0)
    is_index = check_class_labels("cross_entropy", "probs", probs, labels, allow_probs=True)
    t = _targets(probs, labels, is_index)
    return -jnp.sum(t * jnp.log(probs + eps)) / num_rows(probs)


def multiclass_hinge(scores, labels, margin=1.0):
    check_class_labels("multiclass_hinge", "scores", scores, labels, allow_probs=False)
    margin = jnp.asarray(margin, scores.dtype)
    t = one_hot(labels, scores.shape[-1], scores.dtype)
    correct = jnp.sum(scores * t, axis=-1, keepdims=True)
    z = scores - correct + margin
    # where(z > 0, z, 0) (not maximum) so the tie subgradient is 0, as in the op.
    per_class = jnp.where((z > 0) & (t == 0), z, jnp.zeros((), z.dtype))
    return jnp.sum(per_class) / num_rows(scores)


def mean_squared_error(pred, target):
    _check_pair("mean_squared_error", "pred", pred, "target", target)
    return jnp.mean((pred - target) ** 2)


def binary_cross_entropy(probs, targets, eps: float = 1e-7):
    _check_pair("binary_cross_entropy", "probs", probs, "targets", targets)
    eps = _checks.check_static_float("binary_cross_entropy", "eps", eps, low=0.0, high=0.5)
    p = jnp.clip(probs, eps, 1 - eps)
    return -jnp.mean(targets * jnp.log(p) + (1 - targets) * jnp.log(1 - p))


def sigmoid_binary_cross_entropy(logits, targets):
    _check_pair("sigmoid_binary_cross_entropy", "logits", logits, "targets", targets)
    return -jnp.mean(targets * jax.nn.log_sigmoid(logits)
                     + (1 - targets) * jax.nn.log_sigmoid(-logits))


def l2_penalty(params, weight_decay):
    leaves = _float_leaves("l2_penalty", params)
    dtype = _widest(leaves)
    total = sum((jnp.sum(leaf.astype(dtype) ** 2) for leaf in leaves), jnp.zeros((), dtype))
    return 0.5 * jnp.asarray(weight_decay, dtype) * total


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
