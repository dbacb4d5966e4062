"""Plain-JAX twin of :mod:`funcnet.ops.losses_ranking` (on the reference
``softmax_cross_entropy``, differentiated by JAX)."""
from __future__ import annotations

import jax.numpy as jnp

from funcnet.ops.losses_ranking import check_ranking_args, ranking_scale
from funcnet.ops.reference.core import softmax_cross_entropy

__all__ = ["ranking_softmax_loss"]


def ranking_softmax_loss(logits, labels, *, where=None, weights=None, reduce_fn=jnp.mean):
    """Reference listwise softmax ranking loss."""
    logits, labels, where, reduction = check_ranking_args(logits, labels, where, weights,
                                                          reduce_fn)
    return (softmax_cross_entropy(logits, labels, where=where)
            * ranking_scale(logits, where, reduction))
