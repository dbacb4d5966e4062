"""Label-argument checks shared by the classification losses and their reference twins."""
from __future__ import annotations

import jax.numpy as jnp

from funcnet.ops import _checks


def check_class_labels(fn: str, scores_name: str, scores, labels, *, allow_probs: bool) -> bool:
    """Validate ``labels`` against ``scores`` of shape ``(..., C)``.

    Integer labels must have shape ``scores.shape[:-1]`` (class indices). With
    ``allow_probs``, floating labels must have ``scores``' full shape (one-hot or
    probabilities). Returns True for index labels.
    """
    _checks.check_float(fn, scores_name, scores)
    _checks.check_min_rank(fn, scores_name, scores, 1)
    _checks.check_array(fn, "labels", labels)
    lshape, sshape = _checks.shape_of(labels), _checks.shape_of(scores)
    is_int = jnp.issubdtype(jnp.result_type(labels), jnp.integer)
    if is_int:
        if lshape != sshape[:-1]:
            raise ValueError(
                f"{fn}: integer labels have shape {lshape}, expected {sshape[:-1]} "
                f"(one class index per row of {scores_name} {sshape})")
        return True
    if not allow_probs:
        raise TypeError(
            f"{fn}: labels must be integer class indices of shape {sshape[:-1]}, got dtype "
            f"{jnp.result_type(labels)} with shape {lshape}")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.floating):
        raise TypeError(f"{fn}: labels must be integer indices or floating probabilities, "
                        f"got dtype {jnp.result_type(labels)}")
    if lshape != sshape:
        if lshape == sshape[:-1]:
            raise TypeError(
                f"{fn}: labels with shape {lshape} look like class indices but have dtype "
                f"{jnp.result_type(labels)}; cast them to an integer dtype")
        raise ValueError(
            f"{fn}: labels have shape {lshape}, expected {sshape[:-1]} (integer indices) or "
            f"{sshape} (one-hot / probabilities) to match {scores_name}")
    _checks.check_same_dtype(fn, scores_name, scores, "labels", labels)
    return False


def num_rows(scores) -> int:
    """Number of examples: the product of every axis but the class axis (at least 1)."""
    n = 1
    for d in scores.shape[:-1]:
        n *= d
    return n


def one_hot(labels, num_classes: int, dtype):
    """``(...) int -> (..., C)``; an index outside ``[0, C)`` gives a zero row."""
    classes = jnp.arange(num_classes, dtype=labels.dtype).reshape((1,) * labels.ndim + (-1,))
    return (labels[..., None] == classes).astype(dtype)
