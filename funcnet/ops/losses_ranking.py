"""optax's listwise ranking loss: ``ranking_softmax_loss`` (ListNet's softmax
cross-entropy between the relevance labels and the scores of each list).

Per list ``l`` of items ``i`` (the last axis), with ``y'_i = y_i w_i`` over the valid
items (``where``)::

    loss_l = -sum_i y'_i log softmax(s_l)_i

It is :func:`funcnet.ops.softmax_cross_entropy` with a class mask (the invalid items
leave the softmax and the sum; a list without a valid item counts 0), whose hand-written
rule ``ds_i = p_i sum_j y'_j - y'_i`` is the backward pass; the weights multiply the
labels before it, and the reduction rescales its mean over all lists.

References:
  Cao et al. (2007), "Learning to Rank: From Pairwise Approach to Listwise Approach"
  (ListNet). Bruch et al. (2019), "An Analysis of the Softmax Cross Entropy Loss for
  Learning-to-Rank with Binary Relevance".
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_array
from funcnet.ops._mode import has_twin
from funcnet.ops.losses import softmax_cross_entropy

__all__ = ["ranking_softmax_loss"]

_REDUCTIONS = {"mean": jnp.mean, "sum": jnp.sum, "none": None}


def check_ranking_args(logits, labels, where, weights, reduce_fn):
    """``(logits, labels * weights, where, reduction)``, shared with the twin: labels
    (any real or integer dtype, cast as optax casts them) and weights of the logits'
    shape, ``reduce_fn`` one of ``jnp.mean``, ``jnp.sum``, ``None``."""
    fn = "ranking_softmax_loss"
    _checks.check_float(fn, "logits", logits)
    _checks.check_array(fn, "labels", labels)
    logits, labels = as_array(logits), as_array(labels)
    _checks.check_min_rank(fn, "logits", logits, 1)
    _checks.check_nonempty(fn, "logits", logits, "at least one list of one item")
    _checks.check_same_shape(fn, "labels", labels, "logits", logits)
    labels = labels.astype(logits.dtype)
    if where is not None:
        where = _checks.check_bool(fn, "where", where)
        _checks.check_same_shape(fn, "where", where, "logits", logits)
    if weights is not None:
        _checks.check_float(fn, "weights", weights)
        _checks.check_same_shape(fn, "weights", weights, "logits", logits)
        labels = labels * as_array(weights).astype(logits.dtype)
    reduction = next((k for k, f in _REDUCTIONS.items() if f is reduce_fn), None)
    if reduction is None:
        raise TypeError(f"{fn}: reduce_fn must be jnp.mean, jnp.sum or None, got "
                        f"{reduce_fn!r:.60}")
    return logits, labels, where, reduction


def ranking_scale(logits, where, reduction):
    """The factor that turns the mean over all lists into the reduction: ``n / (valid
    lists, at least 1)`` for the mean, ``n`` for the sum, 1 for ``None`` (the mean of
    optax's unreduced per-list values, 0 for an invalid list)."""
    lists = math.prod(logits.shape[:-1])
    if reduction == "sum":
        return float(lists)
    if reduction == "none" or where is None:
        return 1.0
    valid = jnp.sum(jnp.any(where, axis=-1)).astype(logits.dtype)
    return lists / jnp.maximum(valid, 1.0)


@has_twin
def ranking_softmax_loss(logits, labels, *, where=None, weights=None, reduce_fn=jnp.mean):
    """Listwise softmax ranking loss: ``optax.losses.ranking_softmax_loss(...)`` (a scalar
    already with ``reduce_fn=jnp.mean`` or ``jnp.sum``; its ``.mean()`` with ``None``).

    Forward, per list (module docstring): ``-sum_i y_i w_i log softmax(s)_i`` over the
    valid items; ``jnp.mean`` averages over the lists with at least one valid item (0 if
    there is none), ``jnp.sum`` sums them, ``None`` averages optax's per-list values over
    every list. Backward: ``ds_i = p_i sum_j y'_j - y'_i`` (0 for invalid items), ``dy_i =
    -w_i log p_i``, ``dw_i = -y_i log p_i``, times the reduction's factor. Residuals:
    those of :func:`softmax_cross_entropy` (the log-probabilities and the labels).

    Args:
      logits: ``(..., L)`` floating scores of ``L`` items per list.
      labels: ``(..., L)`` relevance (floating, integer or bool; cast to the logits'
        dtype, as optax does).
      where: optional bool ``(..., L)``: the valid items.
      weights: optional floating ``(..., L)`` per-item weights.
      reduce_fn: ``jnp.mean`` (default), ``jnp.sum`` or ``None``.

    Returns:
      Scalar loss, of the logits' dtype.

    Raises:
      ValueError: shapes that differ, an empty input.
      TypeError: non-floating logits or weights, a non-bool ``where``, another
        ``reduce_fn``.
    """
    logits, labels, where, reduction = check_ranking_args(logits, labels, where, weights,
                                                          reduce_fn)
    return (softmax_cross_entropy(logits, labels, where=where)
            * ranking_scale(logits, where, reduction))
