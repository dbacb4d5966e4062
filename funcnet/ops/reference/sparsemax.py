"""Plain-JAX twins of :mod:`funcnet.ops.sparsemax` (differentiated by JAX through the
sort, the cumulative sum and the threshold's gather)."""
from __future__ import annotations

import jax.numpy as jnp

from funcnet.ops.activations_piecewise import sparse_plus_forward
from funcnet.ops.sparsemax import (check_multiclass_sparsemax_args,
                                   check_sparsemax_args, check_sparsemax_binary_args,
                                   multiclass_sparsemax_rows, signed_scores, sparsemax_last)

__all__ = ["sparsemax", "multiclass_sparsemax_loss", "sparsemax_loss"]


def sparsemax(x, axis: int = -1):
    """Reference sparsemax: the sort-based projection, autodiff for the backward pass."""
    x, axis = check_sparsemax_args(x, axis)
    return jnp.moveaxis(sparsemax_last(jnp.moveaxis(x, axis, -1)), -1, axis)


def multiclass_sparsemax_loss(scores, labels):
    """Reference multiclass sparsemax loss, the mean of optax's per-row values."""
    return jnp.mean(multiclass_sparsemax_rows(
        *check_multiclass_sparsemax_args(scores, labels))[0])


def sparsemax_loss(logits, labels):
    """Reference binary sparsemax loss ``mean(sparse_plus(where(y, -s, s)))``."""
    return jnp.mean(sparse_plus_forward(signed_scores(
        *check_sparsemax_binary_args(logits, labels))))
