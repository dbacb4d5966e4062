"""Dropout of the attention probabilities: the keep masks of
:func:`funcnet.ops.dot_product_attention`, drawn block by block and drawn again in its
backward pass (no ``T x S`` mask is kept), and their application. Shared by the blockwise
passes (:mod:`funcnet.ops.attention`), the sliding-window passes
(:mod:`funcnet.ops._local_attention`) and the twin (:mod:`funcnet.ops.reference.attention`).

Both masks are addressed by position, so they do not depend on how the keys (or, with a
window, the queries) are split into blocks:

- every key: column ``j`` of the ``(B, N, T, S)`` mask from ``fold_in(key, j)``, one draw
  of shape ``(B, N, T)`` (:func:`keep_probabilities`);
- a sliding window (a query block sees only a span of keys, so a column cannot be drawn
  whole): row ``i`` from ``fold_in(key, i)``, one draw of shape ``(B, N, width)`` over the
  offsets ``i - j`` its window spans (:func:`window_keep_probabilities`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet.ops.dropout import keep_mask, keep_probability

__all__: list[str] = []


def keep_probabilities(key, rate, rows: tuple, cols):
    """The dropout keep mask of the probabilities of key columns ``cols``: ``(*rows,
    len(cols))`` booleans, ``P(keep) = 1 - rate``. Column ``j`` is drawn from
    ``fold_in(key, j)`` with shape ``rows`` (``(B, K, G, T)``, i.e. ``(B, N, T)``), so the
    mask does not depend on how the keys are split into blocks."""
    return jax.vmap(lambda j: keep_mask(jax.random.fold_in(key, j), rate, rows),
                    out_axes=-1)(cols)


def window_keep_probabilities(key, rate, heads: tuple, rows, cols, window: int,
                              causal: bool):
    """The keep mask of the probabilities of queries ``rows`` and keys ``cols`` (int
    vectors of positions) under a sliding window: ``(*heads, len(rows), len(cols))``
    booleans, ``P(keep) = 1 - rate`` inside the window (outside it, where the probability
    is 0, any value). Row ``i`` draws the offsets its window spans from ``fold_in(key,
    i)``, shape ``(*heads, width)`` (``heads``: ``(B, K, G)``, i.e. ``(B, N)``); element
    ``(i, j)`` is entry ``d = i - j`` of it (``width = W``, causal) or ``d = i - j + W - 1``
    (``width = 2W - 1``). So a block of queries draws only its rows' windows, whatever the
    block size."""
    width = window if causal else 2 * window - 1
    drawn = jax.vmap(lambda i: keep_mask(jax.random.fold_in(key, i), rate, heads + (width,)),
                     out_axes=-2)(rows)                        # (*heads, rows, width)
    d = rows[:, None] - cols[None, :] + (0 if causal else window - 1)
    d = jnp.clip(d, 0, width - 1).reshape((1,) * len(heads) + d.shape)
    return jnp.take_along_axis(drawn, d, axis=-1)


def drop(p, keep, rate):
    """``p * keep / (1 - rate)`` (the identity when ``keep`` is ``None``; ``1 - rate``
    rounded to ``p``'s dtype, also for a traced ``rate``)."""
    if keep is None:
        return p
    return jnp.where(keep, p / keep_probability(rate, p.dtype), jnp.zeros((), p.dtype))
