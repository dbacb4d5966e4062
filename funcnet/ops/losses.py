"""Multi-class losses: softmax cross-entropy, cross-entropy on probabilities, hinge.

Conventions (DESIGN.md): class scores are ``(..., C)``; every leading axis is a batch
axis and the loss is the mean over the ``n = prod(...)`` rows; labels are integer class
indices ``(...)`` or, where stated, one-hot / probability rows ``(..., C)``. Integer
labels are not differentiable (their cotangent is ``None``); an index outside
``[0, C)`` cannot be checked at trace time and selects no class (it contributes 0).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from funcnet.ops import _checks
from funcnet.ops._labels import check_class_labels, num_rows, one_hot
from funcnet.ops.activations import _stable_log_softmax


def _take(a, labels):
    """``a[..., labels]`` row by row: ``(..., C), (...) -> (...)``."""
    return jnp.sum(a * one_hot(labels, a.shape[-1], a.dtype), axis=-1)


# ---------------------------------------------------------------- softmax cross-entropy
@jax.custom_vjp
def _sce_index(logits, labels):
    return -jnp.mean(_take(_stable_log_softmax(logits, -1), labels))


def _sce_index_fwd(logits, labels):
    logp = _stable_log_softmax(logits, -1)
    return -jnp.mean(_take(logp, labels)), (logp, labels)


def _sce_index_bwd(res, g):
    logp, labels = res
    scale = g / num_rows(logp)
    return (jnp.exp(logp) - one_hot(labels, logp.shape[-1], logp.dtype)) * scale, None


_sce_index.defvjp(_sce_index_fwd, _sce_index_bwd)


@jax.custom_vjp
def _sce_probs(logits, labels):
    return -jnp.sum(labels * _stable_log_softmax(logits, -1)) / num_rows(logits)


def _sce_probs_fwd(logits, labels):
    logp = _stable_log_softmax(logits, -1)
    return -jnp.sum(labels * logp) / num_rows(logp), (logp, labels)


def _sce_probs_bwd(res, g):
    logp, t = res
    scale = g / num_rows(logp)
    dlogits = (jnp.exp(logp) * jnp.sum(t, axis=-1, keepdims=True) - t) * scale
    return dlogits, -logp * scale


_sce_probs.defvjp(_sce_probs_fwd, _sce_probs_bwd)


def softmax_cross_entropy(logits, labels):
    """Softmax followed by cross-entropy, fused (the Softmax-with-Loss layer, note 003).

    Forward: ``L = -(1/n) sum_i sum_k t_ik log softmax(x_i)_k`` with a max-shifted
    log-softmax, so large logits never overflow.
    Backward (notes 000 and 003): ``dL/dx_i = (softmax(x_i) - t_i) / n``. For label rows
    that do not sum to 1 the exact rule ``softmax(x_i) * sum_k t_ik - t_i`` is used; for
    probability labels ``dL/dt = -log softmax(x) / n``. Residual: the log-probabilities
    ``(..., C)`` (the probabilities are ``exp`` of them), plus the labels.

    Args:
      logits: ``(..., C)`` floating scores.
      labels: integer class indices ``(...)`` or one-hot / probabilities ``(..., C)`` of
        the logits' dtype. Index and one-hot labels give the same loss and gradient.

    Returns:
      Scalar mean loss, of the logits' dtype.

    Raises:
      ValueError: labels shape is neither ``logits.shape[:-1]`` nor ``logits.shape``.
      TypeError: float labels shaped like indices, or non-floating logits.
    """
    if check_class_labels("softmax_cross_entropy", "logits", logits, labels, allow_probs=True):
        return _sce_index(logits, labels)
    return _sce_probs(logits, labels)


# ---------------------------------------------------------- cross-entropy on probabilities
def _check_eps(fn, eps):
    return _checks.check_static_float(fn, "eps", eps, low=0.0, high=1.0)


def _ce(probs, t, eps):
    return -jnp.sum(t * jnp.log(probs + eps)) / num_rows(probs)


@partial(jax.custom_vjp, nondiff_argnums=(2,))
def _ce_probs(probs, labels, eps):
    return _ce(probs, labels, eps)


def _ce_probs_fwd(probs, labels, eps):
    return _ce(probs, labels, eps), (probs, labels)


def _ce_probs_bwd(eps, res, g):
    probs, t = res
    scale = g / num_rows(probs)
    shifted = probs + eps
    return -t / shifted * scale, -jnp.log(shifted) * scale


_ce_probs.defvjp(_ce_probs_fwd, _ce_probs_bwd)


def cross_entropy(probs, labels, eps: float = 1e-7):
    """Cross-entropy of probabilities, ``L = -(1/n) sum_i sum_k t_ik log(p_ik + eps)``.

    The mini-batch cross-entropy error of note 002, divided by the batch size ``n`` (the
    note's code divides by ``r.ndim``, a bug; see ``docs/formulas.md``). ``eps`` guards
    ``log(0)``. Backward: ``dL/dp = -t / (p + eps) / n`` (note 004 writes ``-Y/Y*`` for the
    un-averaged sum); for probability labels ``dL/dt = -log(p + eps) / n``. Prefer
    :func:`softmax_cross_entropy` on logits: it is exact where this one saturates.
    Residuals: ``probs`` and ``labels`` (both inputs).

    Args:
      probs: ``(..., C)`` probabilities.
      labels: integer indices ``(...)`` or one-hot / probabilities ``(..., C)``.
      eps: static Python float in ``[0, 1)``.

    Returns:
      Scalar mean loss.
    """
    eps = _check_eps("cross_entropy", eps)
    if check_class_labels("cross_entropy", "probs", probs, labels, allow_probs=True):
        labels = one_hot(labels, probs.shape[-1], probs.dtype)
        return _ce_probs(probs, jax.lax.stop_gradient(labels), eps)
    return _ce_probs(probs, labels, eps)


# ------------------------------------------------------------------ multiclass hinge (SVM)
def _hinge_active(scores, labels, margin):
    """``(margins, active, onehot)``: ``s_j - s_y + margin`` and the mask ``j != y, > 0``."""
    onehot = one_hot(labels, scores.shape[-1], scores.dtype)
    margins = scores - _take(scores, labels)[..., None] + margin
    active = (margins > 0) & (onehot == 0)
    return margins, active, onehot


@jax.custom_vjp
def _hinge(scores, labels, margin):
    margins, active, _ = _hinge_active(scores, labels, margin)
    return jnp.sum(jnp.where(active, margins, 0)) / num_rows(scores)


def _hinge_fwd(scores, labels, margin):
    margins, active, onehot = _hinge_active(scores, labels, margin)
    loss = jnp.sum(jnp.where(active, margins, 0)) / num_rows(scores)
    return loss, (active, onehot, margin)


def _hinge_bwd(res, g):
    active, onehot, margin = res
    scale = g / num_rows(active)
    a = active.astype(onehot.dtype)
    dscores = (a - onehot * jnp.sum(a, axis=-1, keepdims=True)) * scale
    dmargin = jnp.sum(a) * scale
    return dscores, None, dmargin.astype(jnp.result_type(margin))


_hinge.defvjp(_hinge_fwd, _hinge_bwd)


def multiclass_hinge(scores, labels, margin=1.0):
    """Multiclass SVM (hinge) loss of note 001, averaged over the batch.

    Forward: ``L = (1/n) sum_i sum_{j != y_i} max(0, s_ij - s_iy_i + margin)``.
    Backward: with ``a_ij = [s_ij - s_iy_i + margin > 0]`` for ``j != y_i``,
    ``dL/ds_ij = a_ij / n`` and ``dL/ds_iy_i = -sum_j a_ij / n``. At a tie
    (``s_ij - s_iy_i + margin == 0``) the subgradient 0 is taken, as for ReLU at 0.
    Residuals: the boolean mask ``a`` and the one-hot labels.

    Args:
      scores: ``(..., C)`` class scores ``s = x W`` (note 001 writes ``s = W x``).
      labels: integer class indices ``(...)``.
      margin: the margin (``Delta``), 1 by default; a float or a scalar array
        (differentiable).

    Returns:
      Scalar mean loss.
    """
    check_class_labels("multiclass_hinge", "scores", scores, labels, allow_probs=False)
    if jnp.ndim(margin) != 0:
        raise ValueError(f"multiclass_hinge: margin must be a scalar, got shape {jnp.shape(margin)}")
    margin = jnp.asarray(margin, scores.dtype)
    return _hinge(scores, labels, margin)
