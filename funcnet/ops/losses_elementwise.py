"""Elementwise losses averaged over every element: MSE and binary cross-entropies (note 004).

``pred``/``probs``/``logits`` and ``targets`` must have the same shape and dtype (no
broadcasting); the loss is the mean over all ``M`` elements.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from funcnet.ops import _checks


def _check_pair(fn, a_name, a, b_name, b):
    _checks.check_float(fn, a_name, a)
    _checks.check_float(fn, b_name, b)
    _checks.check_same_shape(fn, a_name, a, b_name, b)
    _checks.check_same_dtype(fn, a_name, a, b_name, b)


# ------------------------------------------------------------------------ mean squared error
@jax.custom_vjp
def _mse(pred, target):
    return jnp.mean(jnp.square(pred - target))


def _mse_fwd(pred, target):
    diff = pred - target
    return jnp.mean(jnp.square(diff)), diff


def _mse_bwd(diff, g):
    dpred = diff * (2 * g / diff.size)
    return dpred, -dpred


_mse.defvjp(_mse_fwd, _mse_bwd)


def mean_squared_error(pred, target):
    """``L = (1/M) sum_i (pred_i - target_i)^2`` over all ``M`` elements (note 004).

    Backward: ``dL/dpred = 2 (pred - target) / M`` and ``dL/dtarget = -dL/dpred``.
    (Note 004 writes ``2/n (Y* - Y)`` labelled ``dL/dY`` with ``Y*`` the prediction: the
    value is the derivative with respect to the prediction.) Residual: ``pred - target``.

    Args:
      pred: floating array of any shape.
      target: same shape and dtype.

    Returns:
      Scalar loss.
    """
    _check_pair("mean_squared_error", "pred", pred, "target", target)
    return _mse(pred, target)


# ------------------------------------------------------------------- binary cross-entropy
def _clipped(p, eps):
    lo = jnp.asarray(eps, p.dtype)
    hi = jnp.asarray(1 - eps, p.dtype)
    inside = (p > lo) & (p < hi)
    return jnp.clip(p, lo, hi), inside


def _bce(pc, t):
    return -jnp.mean(t * jnp.log(pc) + (1 - t) * jnp.log1p(-pc))


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _bce_op(probs, targets, eps):
    return _bce(_clipped(probs, eps)[0], targets)


def _bce_fwd(probs, targets, eps):
    pc, inside = _clipped(probs, eps)
    return _bce(pc, targets), (pc, inside, targets)


def _bce_bwd(eps, res, g):
    pc, inside, t = res
    scale = g / pc.size
    dp = jnp.where(inside, ((1 - t) / (1 - pc) - t / pc) * scale, 0)
    dt = (jnp.log1p(-pc) - jnp.log(pc)) * scale
    return dp.astype(pc.dtype), dt


_bce_op.defvjp(_bce_fwd, _bce_bwd)


def binary_cross_entropy(probs, targets, eps: float = 1e-7):
    """Binary cross-entropy on probabilities, mean over all ``M`` elements (note 004).

    Forward: ``L = -(1/M) sum_i [t_i log p_i + (1 - t_i) log(1 - p_i)]`` with ``p``
    clipped to ``[eps, 1 - eps]`` against ``log(0)``.
    Backward: ``dL/dp = (1/M) [(1 - t)/(1 - p) - t/p]`` inside the clip range and 0
    outside it (the clip is flat there); note 004 omits the ``1/M``. ``dL/dt =
    (1/M) [log(1 - p) - log p]``. Residuals: the clipped ``p``, the in-range mask, ``t``.
    Prefer :func:`sigmoid_binary_cross_entropy` on logits.

    Args:
      probs: floating array of any shape, values in ``[0, 1]``.
      targets: same shape and dtype, values in ``[0, 1]``.
      eps: static Python float in ``[0, 0.5)``.

    Returns:
      Scalar loss.
    """
    _check_pair("binary_cross_entropy", "probs", probs, "targets", targets)
    eps = _checks.check_static_float("binary_cross_entropy", "eps", eps, low=0.0, high=0.5)
    return _bce_op(probs, targets, eps)


def _sbce(x, t):
    return jnp.mean(jnp.maximum(x, 0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x))))


@jax.custom_vjp
def _sbce_op(logits, targets):
    return _sbce(logits, targets)


def _sbce_fwd(logits, targets):
    return _sbce(logits, targets), (logits, targets)


def _sbce_bwd(res, g):
    x, t = res
    scale = g / x.size
    return (jax.lax.logistic(x) - t) * scale, -x * scale


_sbce_op.defvjp(_sbce_fwd, _sbce_bwd)


def sigmoid_binary_cross_entropy(logits, targets):
    """Sigmoid followed by binary cross-entropy, in the stable form, mean over elements.

    Forward: ``L = (1/M) sum_i [max(x_i, 0) - x_i t_i + log(1 + exp(-|x_i|))]``, which
    equals ``BCE(sigmoid(x), t)`` without overflow or ``log(0)`` at any ``x``.
    Backward: ``dL/dx = (sigmoid(x) - t) / M`` and ``dL/dt = -x / M``.
    Residuals: ``logits`` and ``targets`` (both inputs).

    Args:
      logits: floating array of any shape.
      targets: same shape and dtype, values in ``[0, 1]``.

    Returns:
      Scalar loss.
    """
    _check_pair("sigmoid_binary_cross_entropy", "logits", logits, "targets", targets)
    return _sbce_op(logits, targets)
