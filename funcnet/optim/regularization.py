"""Gradient clipping, weight decay and the per-leaf norm scalings (LARS/LAMB's trust
ratio, Adafactor's block-RMS clipping and parameter scale), with optax's names,
signatures and states."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet.optim.base import (
    EmptyState, PyTree, abs_sq, cast_like, check_hyperparameter,
    check_scalar_or_schedule, check_state, check_trees_match, optimizer, promote_dtypes,
    safe_increment, scheduled, zero_count)
from funcnet.optim.combine import masked
from funcnet.optim.transforms import _stateless
from funcnet._describe import described

_map = jax.tree_util.tree_map


def global_norm(updates: PyTree) -> jax.Array:
    """``sqrt(sum over all leaves of sum(|x|^2))``, the L2 norm of the flattened tree
    (complex leaves count ``|x|^2``); 0 for a tree without leaves (optax's signature)."""
    return jnp.sqrt(squared_norm(updates))


def squared_norm(tree: PyTree) -> jax.Array:
    """``sum over all leaves of sum(|x|^2)``, summed leaf after leaf (optax's order);
    0 for a tree without leaves."""
    sq = [jnp.sum(abs_sq(jnp.asarray(x))) for x in jax.tree_util.tree_leaves(tree)]
    if not sq:
        return jnp.zeros([])
    dt = promote_dtypes(*[s.dtype for s in sq])
    return sum(s.astype(dt) for s in sq)


def _check_params(fn: str, updates, params) -> None:
    """A block that reads the parameters: ``params`` given, with the updates' tree."""
    if params is None:
        raise ValueError(f"{fn}: update needs params (got params=None)")
    check_trees_match(fn, "grads", updates, "params", params)


@described
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


@described
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


@described
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
    check_scalar_or_schedule("add_decayed_weights", "weight_decay", weight_decay)
    return decayed_weights(weight_decay, mask)


def decayed_weights(weight_decay, mask=None):
    """:func:`add_decayed_weights` without its check of ``weight_decay`` (Fromage adds
    a negative multiple of the weights)."""
    fn = "add_decayed_weights"
    is_schedule = callable(weight_decay)

    def decay(updates, params, wd):
        if isinstance(wd, (int, float)) and wd == 0:  # as optax: no params needed
            return updates
        _check_params(fn, updates, params)

        def add(g, p):  # wd * p in p's dtype, the sum in the promoted dtype, as optax
            dt = promote_dtypes(g.dtype, p.dtype)
            return g.astype(dt) + (cast_like(wd, p) * p).astype(dt)

        return _map(add, updates, params)

    if not is_schedule:
        block = _stateless(fn, lambda u, p: decay(u, p, weight_decay))
    else:
        def init(params):
            del params
            return WeightDecaySchedule(count=zero_count())

        def update(updates, state, params=None, **extra_args):
            del extra_args
            check_state(fn, state, WeightDecaySchedule)
            out = decay(updates, params, scheduled(fn, "weight_decay", weight_decay,
                                                   state.count))
            return out, state._replace(count=safe_increment(state.count))

        block = optimizer(init, update)
    return block if mask is None else masked(block, mask)



ScaleByTrustRatioState = EmptyState  # optax's name for the (empty) state


def _rms(x: jax.Array) -> jax.Array:
    """``sqrt(mean(|x|^2))`` over the whole leaf."""
    return jnp.sqrt(jnp.mean(abs_sq(x)))


def _floored(stat, x: jax.Array, floor) -> jax.Array:
    """``max(stat(x), floor)`` for a norm-like ``stat`` (``global_norm`` of one leaf, or
    :func:`_rms`), with ``stat`` never differentiated where it is below ``floor`` (its
    gradient at 0 is NaN), as optax's ``safe_norm`` / ``safe_root_mean_squares``."""
    value = stat(x)
    low = value <= cast_like(floor, value)
    safe = stat(jnp.where(low, jnp.ones_like(x), x))
    return jnp.where(low, cast_like(floor, value), safe)


@described
def scale_by_trust_ratio(min_norm=0.0, trust_coefficient=1.0, eps=0.0):
    """Scale each leaf's update by its trust ratio (LARS / LAMB), optax's block::

        r = trust_coefficient * ||w|| / (||u|| + eps)     (one ratio per leaf)
        u <- u * r,  or u unchanged where ||w|| = 0 or ||u|| = 0

    ``||.||`` is the Frobenius norm of the whole leaf (a ``(d_in, d_out)`` kernel has one
    ratio), clipped below at ``min_norm``.

    Args:
      min_norm: >= 0, the smallest norm used (0: no clipping).
      trust_coefficient: >= 0 (LARS's ``eta``; 1 for LAMB).
      eps: >= 0, added to the update norm.

    Returns:
      A stateless ``Optimizer`` (state ``EmptyState()``, optax's
      ``ScaleByTrustRatioState``). ``update`` requires ``params``.

    Raises:
      ValueError: for a concrete negative or non-finite argument; at ``update``, a missing
        ``params`` or ``params`` that do not match the updates.

    References:
      You, Gitman, Ginsburg, "Large Batch Training of Convolutional Networks", 2017,
      https://arxiv.org/abs/1708.03888 (LARS). You et al., "Large Batch Optimization for
      Deep Learning: Training BERT in 76 minutes", ICLR 2020,
      https://arxiv.org/abs/1904.00962 (LAMB).
    """
    fn = "scale_by_trust_ratio"
    for name, value in (("min_norm", min_norm), ("trust_coefficient", trust_coefficient),
                        ("eps", eps)):
        check_hyperparameter(fn, name, value, 0.0)

    def scale_leaf(u, p):
        pn, un = _floored(global_norm, p, min_norm), _floored(global_norm, u, min_norm)
        ratio = cast_like(trust_coefficient, pn) * pn / (un + cast_like(eps, un))
        ratio = jnp.where((pn == 0) | (un == 0), jnp.ones_like(ratio), ratio)
        dt = promote_dtypes(u.dtype, p.dtype)
        return u.astype(dt) * ratio.astype(dt)

    def transform(updates, params):
        _check_params(fn, updates, params)
        return _map(scale_leaf, updates, params)

    return _stateless(fn, transform)


@described
def clip_by_block_rms(threshold):
    """Scale each leaf down so that its root mean square is at most ``threshold``::

        u <- u / max(1, sqrt(mean(|u|^2)) / threshold)     (one factor per leaf)

    (optax's ``clip_by_block_rms``; Adafactor's update clipping, the paper's ``d``).

    Args:
      threshold: > 0, a number or a (possibly traced) scalar array.

    Returns:
      A stateless ``Optimizer``.

    References:
      Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018, https://arxiv.org/abs/1804.04235 (Section 6).
    """
    fn = "clip_by_block_rms"
    check_hyperparameter(fn, "threshold", threshold, 0.0, low_inclusive=False)

    def clip_leaf(u):
        r = _rms(u)
        return u / jnp.maximum(jnp.ones_like(r), r / cast_like(threshold, r)).astype(u.dtype)

    return _stateless(fn, lambda u, p: _map(clip_leaf, u))


@described
def scale_by_param_block_rms(min_scale=1e-3):
    """Multiply each leaf's update by the root mean square of its parameter::

        u <- u * max(sqrt(mean(|w|^2)), min_scale)          (one factor per leaf)

    (optax's ``scale_by_param_block_rms``; Adafactor's relative step size).

    Args:
      min_scale: >= 0, the smallest factor (so zero-initialised leaves still move).

    Returns:
      A stateless ``Optimizer``; ``update`` requires ``params``.

    References:
      Shazeer & Stern, ICML 2018, https://arxiv.org/abs/1804.04235 (Section 8).
    """
    return _scale_by_param_block("scale_by_param_block_rms", _rms, min_scale)


def _scale_by_param_block(fn: str, stat, min_scale):
    """The stateless block ``u <- u * max(stat(w), min_scale)`` per leaf (``stat`` the
    leaf's RMS or norm, never differentiated below ``min_scale``)."""
    check_hyperparameter(fn, "min_scale", min_scale, 0.0)

    def transform(updates, params):
        _check_params(fn, updates, params)

        def scale_leaf(u, p):
            dt = promote_dtypes(u.dtype, p.dtype)
            return u.astype(dt) * _floored(stat, p, min_scale).astype(dt)

        return _map(scale_leaf, updates, params)

    return _stateless(fn, transform)
