"""Plain-JAX twin of :func:`funcnet.ops.dropout` (same mask for the same key)."""
from __future__ import annotations

import jax.numpy as jnp

from funcnet import _checks
from funcnet.ops.dropout import check_dropout_args, keep_probability, keep_mask


def dropout(x, rate, key, broadcast_dims=()):
    """Reference inverted dropout ``y = x * m / (1 - rate)``, ``m ~ Bernoulli(1 - rate)``.

    Args:
      x: floating array; rate: Python float in ``[0, 1)`` or a traced scalar; key: PRNG key;
      broadcast_dims: axes along which one mask value is shared (mask size 1 there).

    Returns:
      Array of ``x``'s shape and dtype; ``x`` itself when ``rate == 0``.
    """
    x, rate, key, shape = check_dropout_args("dropout", x, rate, key, broadcast_dims)
    if not _checks.is_traced(rate) and rate == 0.0:
        return x
    m = keep_mask(key, rate, shape)
    return jnp.where(m, x, jnp.zeros((), x.dtype)) / keep_probability(rate, x.dtype)
