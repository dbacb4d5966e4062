"""Label checks and label arithmetic shared by the classification losses and their twins.

Policy for class indices (one source for ``softmax_cross_entropy``, ``cross_entropy``,
``multiclass_hinge`` and their twins):

* checked at trace time: integer dtype, shape ``scores.shape[:-1]``, at least one row
  and one class;
* checked on concrete values (an eager call): every index in ``[0, C)``, else
  ``ValueError`` naming the bad value;
* under ``jit``/``vmap``/``grad`` the values are unknown: an index outside ``[0, C)``
  (negative ones included, no wrap-around) makes that row's loss NaN, so the mean loss is
  NaN and a NaN check sees it, and gives that row a zero gradient, so parameters are not
  corrupted by it. :func:`take_labels` implements both, and the twins use it too.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops._arrays import as_array, promote_pair


def check_class_labels(fn: str, scores_name: str, scores, labels, *, allow_probs: bool):
    """Validate ``scores`` ``(..., C)`` and ``labels``; return ``(scores, labels, is_index)``.

    Integer labels must have shape ``scores.shape[:-1]`` (class indices; their values are
    checked when concrete). With ``allow_probs``, floating labels must have ``scores``'
    full shape (one-hot or probabilities); they and ``scores`` are promoted to their common
    dtype (JAX's standard promotion, as optax).
    """
    _checks.check_float(fn, scores_name, scores)
    scores = as_array(scores)
    _checks.check_min_rank(fn, scores_name, scores, 1)
    sshape = scores.shape
    _checks.check_nonempty(fn, scores_name, scores, "at least one row and one class (the "
                           "loss is a mean over rows of a softmax/max over classes)")
    _checks.check_array(fn, "labels", labels)
    labels = as_array(labels)
    lshape, ldtype = labels.shape, labels.dtype
    if jnp.issubdtype(ldtype, jnp.integer):
        if lshape != sshape[:-1]:
            raise ValueError(f"{fn}: integer labels have shape {lshape}, expected {sshape[:-1]} "
                             f"(one class index per row of {scores_name} {sshape})")
        _checks.check_index_range(fn, "labels", labels, sshape[-1],
                                  f"class indices in [0, {sshape[-1]})")
        return scores, _checks.as_indices(labels, sshape[-1]), True
    if not allow_probs:
        raise TypeError(f"{fn}: labels must be integer class indices of shape {sshape[:-1]}, "
                        f"got dtype {ldtype} with shape {lshape}")
    if not jnp.issubdtype(ldtype, jnp.floating):
        raise TypeError(f"{fn}: labels must be integer indices or floating probabilities, "
                        f"got dtype {ldtype}")
    if lshape != sshape:
        if lshape == sshape[:-1]:
            raise TypeError(f"{fn}: labels with shape {lshape} look like class indices but "
                            f"have dtype {ldtype}; cast them to an integer dtype")
        raise ValueError(f"{fn}: labels have shape {lshape}, expected {sshape[:-1]} (integer "
                         f"indices) or {sshape} (one-hot / probabilities) to match {scores_name}")
    scores, labels = promote_pair(scores, labels)
    return scores, labels, False


def num_rows(scores) -> int:
    """Number of examples: the product of every axis but the class axis."""
    return math.prod(scores.shape[:-1])


def valid_labels(labels, num_classes: int):
    """Boolean ``(...)``: the index is in ``[0, C)``."""
    return (labels >= 0) & (labels < num_classes)


def one_hot(labels, num_classes: int, dtype):
    """``(...) int -> (..., C)``; an index outside ``[0, C)`` gives a zero row."""
    classes = jnp.arange(num_classes, dtype=labels.dtype).reshape((1,) * labels.ndim + (-1,))
    return (labels[..., None] == classes).astype(dtype)


def take_labels(a, labels):
    """``a[..., labels]`` row by row, ``(..., C), (...) -> (...)``, by a gather.

    Exact (no ``a * one_hot`` product, which is NaN where ``a`` is infinite), and NaN for
    an index outside ``[0, C)``; its derivative with respect to ``a`` is the one-hot row
    (zero for such an index).
    """
    valid = valid_labels(labels, a.shape[-1])
    idx = jnp.where(valid, labels, jnp.zeros((), labels.dtype))[..., None]
    picked = jnp.take_along_axis(a, idx, axis=-1, mode="promise_in_bounds")[..., 0]
    return jnp.where(valid, picked, jnp.asarray(jnp.nan, a.dtype))


def mask_log(t, log_q):
    """``log_q`` with ``-inf`` replaced by 0 where ``t == 0`` (``0 log 0 = 0``).

    ``t * mask_log(t, log_q)`` is the cross-entropy term without ``0 * -inf = NaN`` at a
    masked (``-inf``) logit or a zero probability whose label is 0; it is also the
    derivative with respect to ``t`` used by the losses (0 there instead of ``+inf``).
    """
    return jnp.where((t == 0) & jnp.isneginf(log_q), jnp.zeros((), log_q.dtype), log_q)
