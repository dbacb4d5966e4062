"""Gradient clipping and weight decay blocks."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet.optim.base import (
    EmptyState, Optimizer, PyTree, cast_like, promote_dtypes, check_nonnegative, check_positive,
    check_trees_match)

_map = jax.tree_util.tree_map


def global_norm(tree: PyTree) -> jax.Array:
    """``sqrt(sum over all leaves of sum(x^2))``, the L2 norm of the flattened tree."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.zeros([])
    sq = [jnp.sum(jnp.square(x)) for x in leaves]
    dt = promote_dtypes(*[s.dtype for s in sq])
    return jnp.sqrt(sum(s.astype(dt) for s in sq))


def clip_by_global_norm(max_norm) -> Optimizer:
    """Rescale the whole update tree so that its global L2 norm is at most ``max_norm``::

        n = sqrt(sum_i ||g_i||^2)
        g_i <- g_i                    if n < max_norm
        g_i <- g_i * max_norm / n     otherwise

    Args:
      max_norm: the largest allowed global norm, > 0 (number or traced array).

    Returns:
      A stateless ``Optimizer``.

    Raises:
      ValueError: if a concrete ``max_norm`` is <= 0.

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
    check_positive("clip_by_global_norm", "max_norm", max_norm)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        norm = global_norm(updates)

        def clip(g):
            n = norm.astype(g.dtype)
            m = cast_like(max_norm, g)
            # where() on both branches; the division is safe because n >= m > 0 there.
            return jnp.where(n < m, g, g * (m / jnp.maximum(n, m)))

        return _map(clip, updates), state

    return Optimizer(init, update)


def add_decayed_weights(weight_decay=0.0, mask=None) -> Optimizer:
    """Add ``weight_decay * param`` to each update: ``u <- u + wd * w``.

    Applied to gradients and followed by ``scale_by_learning_rate``, this is gradient
    descent on ``L + (wd / 2) * sum_k W_k^2`` (the L2 term of note 001; note 001 writes
    ``sum_k W_k^2`` without a strength, i.e. ``wd = 2``). Applied after an adaptive
    block (as in :func:`~funcnet.optim.adamw`) it is decoupled weight decay.

    Args:
      weight_decay: >= 0 (number or traced array).
      mask: ``None`` (decay every leaf), a pytree of Python bools with the structure of
        ``params``, or a function ``params -> such a tree``. Leaves marked ``False`` are
        not decayed (e.g. biases).

    Returns:
      A stateless ``Optimizer``; ``update`` requires ``params``.

    Raises:
      ValueError: for a negative concrete ``weight_decay``, a missing ``params``, or a
        ``mask`` whose structure differs from ``params``.
    """
    fn = "add_decayed_weights"
    check_nonnegative(fn, "weight_decay", weight_decay)

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError(f"{fn}: update needs params (got params=None)")
        check_trees_match(fn, "grads", updates, "params", params)
        if mask is None:
            flags = _map(lambda _: True, params)
        else:
            flags = mask(params) if callable(mask) else mask
            if jax.tree_util.tree_structure(flags) != jax.tree_util.tree_structure(params):
                raise ValueError(
                    f"{fn}: mask tree structure does not match params:\n"
                    f"  mask: {jax.tree_util.tree_structure(flags)}\n"
                    f"  params: {jax.tree_util.tree_structure(params)}")

        def decay(g, p, keep):
            if not keep:
                return g
            return g + cast_like(weight_decay, g) * p.astype(g.dtype)

        return _map(decay, updates, params, flags), state

    return Optimizer(init, update)
