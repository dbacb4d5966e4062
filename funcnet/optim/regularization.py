"""Gradient clipping and weight decay blocks (optax's names, signatures and states)."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet.optim.base import (
    PyTree, abs_sq, cast_like, check_hyperparameter,
    check_scalar_or_schedule, check_state, check_trees_match, optimizer, promote_dtypes,
    safe_increment, zero_count)
from funcnet.optim.combine import masked
from funcnet.optim.transforms import _stateless

_map = jax.tree_util.tree_map


def global_norm(updates: PyTree) -> jax.Array:
    """``sqrt(sum over all leaves of sum(|x|^2))``, the L2 norm of the flattened tree
    (complex leaves count ``|x|^2``); 0 for a tree without leaves (optax's signature)."""
    sq = [jnp.sum(abs_sq(jnp.asarray(x))) for x in jax.tree_util.tree_leaves(updates)]
    if not sq:
        return jnp.zeros([])
    dt = promote_dtypes(*[s.dtype for s in sq])
    return jnp.sqrt(sum(s.astype(dt) for s in sq))


def clip(max_delta):
    """Clip every update elementwise to ``[-max_delta, max_delta]``.

    Args:
      max_delta: >= 0, a number or a (possibly traced) scalar array.

    Returns:
      A stateless ``Optimizer``.
    """
    check_hyperparameter("clip", "max_delta", max_delta, 0.0)
    return _stateless("clip", lambda u, p: _map(
        lambda g: jnp.clip(g, -cast_like(max_delta, g), cast_like(max_delta, g)), u))


def clip_by_global_norm(max_norm):
    """Rescale the whole update tree so that its global L2 norm is at most ``max_norm``::

        n = sqrt(sum_i ||g_i||^2)
        g_i <- g_i                    if n < max_norm
        g_i <- (g_i / n) * max_norm   otherwise

    Args:
      max_norm: the largest allowed global norm, > 0 (number or traced array).

    Returns:
      A stateless ``Optimizer``.

    Raises:
      ValueError: if a concrete ``max_norm`` is <= 0, NaN or infinite.

    Example:
      >>> import jax.numpy as jnp
      >>> from funcnet import optim
      >>> clip = optim.clip_by_global_norm(1.0)
      >>> g, _ = clip.update({"a": jnp.array([3.0]), "b": jnp.array([4.0])}, clip.init(None))
      >>> print(g["a"], g["b"])
      [0.6] [0.8]

    References:
      Pascanu, Mikolov, Bengio, "On the difficulty of training recurrent neural
      networks", ICML 2013.
    """
    check_hyperparameter("clip_by_global_norm", "max_norm", max_norm, 0.0,
                         low_inclusive=False)

    def transform(updates, params):
        del params
        norm = global_norm(updates)

        def clip_leaf(g):
            n = norm.astype(g.dtype)
            m = cast_like(max_norm, n)
            # select() on both branches; the division is unused where n < max_norm.
            return jax.lax.select(jnp.real(n) < jnp.real(m), g, (g / n) * m)

        return _map(clip_leaf, updates)

    return _stateless("clip_by_global_norm", transform)


class WeightDecaySchedule(NamedTuple):
    """Update count, for a scheduled weight decay (optax's ``WeightDecaySchedule``)."""

    count: jax.Array  # int32 scalar


def add_decayed_weights(weight_decay=0.0, mask=None):
    """Add ``weight_decay * param`` to each update: ``u <- u + wd * w``.

    Applied to gradients and followed by ``scale_by_learning_rate``, this is gradient
    descent on ``L + (wd / 2) * sum_k W_k^2`` (the L2 term of note 001; note 001 writes
    ``sum_k W_k^2`` without a strength, i.e. ``wd = 2``). Applied after an adaptive
    block (as in :func:`~funcnet.optim.adamw`) it is decoupled weight decay.

    Args:
      weight_decay: >= 0 (number or traced array), or a schedule ``step -> wd``
        evaluated at the number of updates done so far.
      mask: ``None`` (decay every leaf), or a tree of bools with the structure of
        ``params`` (or a prefix of it), or a function ``params -> such a tree``: the
        block is then ``masked(add_decayed_weights(wd), mask)`` (e.g. no decay of
        biases).

    Returns:
      An ``Optimizer``; state ``EmptyState()`` (``WeightDecaySchedule`` for a schedule;
      ``MaskedState`` around it with a mask). ``update`` requires ``params``.

    Raises:
      ValueError: for a concrete negative ``weight_decay``; at ``update``, a missing
        ``params`` or ``params`` that do not match the updates.
    """
    fn = "add_decayed_weights"
    check_scalar_or_schedule(fn, "weight_decay", weight_decay)
    scheduled = callable(weight_decay)

    def decay(updates, params, wd):
        if isinstance(wd, (int, float)) and wd == 0:  # as optax: no params needed
            return updates
        if params is None:
            raise ValueError(f"{fn}: update needs params (got params=None)")
        check_trees_match(fn, "grads", updates, "params", params)

        def add(g, p):  # wd * p in p's dtype, the sum in the promoted dtype, as optax
            dt = promote_dtypes(g.dtype, p.dtype)
            return g.astype(dt) + (cast_like(wd, p) * p).astype(dt)

        return _map(add, updates, params)

    if not scheduled:
        block = _stateless(fn, lambda u, p: decay(u, p, weight_decay))
    else:
        def init(params):
            del params
            return WeightDecaySchedule(count=zero_count())

        def update(updates, state, params=None, **extra_args):
            del extra_args
            check_state(fn, state, WeightDecaySchedule)
            out = decay(updates, params, weight_decay(state.count))
            return out, state._replace(count=safe_increment(state.count))

        block = optimizer(init, update)
    return block if mask is None else masked(block, mask)

