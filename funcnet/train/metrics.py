"""Metrics of a batch (accuracy, per-example losses) and the casts of mixed precision."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["accuracy", "cast_floating", "correct", "per_example_loss"]


def _class_indices(labels, num_classes: int):
    """Integer class indices ``(N,)`` from index labels ``(N,)`` or one-hot ``(N, C)``."""
    labels = jnp.asarray(labels)
    if labels.ndim == 2 and labels.shape[-1] == num_classes:
        return jnp.argmax(labels, axis=-1)
    return labels


def correct(logits, labels) -> jax.Array:
    """Per-example correctness ``argmax(logits) == label`` as ``float32`` 0/1, shape ``(N,)``.

    Args:
      logits: ``(N, C)`` scores.
      labels: ``(N,)`` int class indices or ``(N, C)`` one-hot / probabilities (the class
        with the largest probability counts as the label).

    Returns:
      ``(N,)`` float32, 1.0 where the prediction is right.
    """
    idx = _class_indices(labels, logits.shape[-1])
    pred = jnp.argmax(logits, axis=-1)
    return (pred.astype(idx.dtype) == idx).astype(jnp.float32)


def accuracy(logits, labels) -> jax.Array:
    """Fraction of examples whose ``argmax(logits)`` is the label, a float32 scalar.

    Args:
      logits: ``(N, C)`` scores.
      labels: ``(N,)`` int class indices or ``(N, C)`` one-hot / probabilities.

    Returns:
      A float32 scalar in ``[0, 1]``.
    """
    return jnp.mean(correct(logits, labels))


def per_example_loss(loss_fn: Callable, logits, labels) -> jax.Array:
    """The loss of each example, ``(N,)``: ``loss_fn`` (a batch mean) on batches of one.

    Works for any loss that returns the mean over the batch (every loss of
    :mod:`funcnet.ops`), so a padded evaluation batch can mask out its padding.
    """
    return jax.vmap(lambda lg, t: loss_fn(lg[None], t[None]))(logits, labels)


def cast_floating(tree, dtype):
    """Casts every floating leaf of ``tree`` to ``dtype``; other leaves are kept.

    ``dtype=None`` returns ``tree`` unchanged. Used for mixed precision: the float32
    master weights are cast to e.g. ``bfloat16`` for the forward/backward pass; the cast's
    transpose brings the gradients back to float32.
    """
    if dtype is None:
        return tree

    def cast(a):
        return a.astype(dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating) else a

    return jax.tree_util.tree_map(cast, tree)
