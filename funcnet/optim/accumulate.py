"""Gradient accumulation: apply an optimizer to the mean of ``every_k`` micro-batch gradients."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.optim.base import (
    OptState, Optimizer, Updates, check_float_leaves, check_trees_match, safe_increment,
    zero_count)

_map = jax.tree_util.tree_map


class AccumulateState(NamedTuple):
    """State of :func:`accumulate`.

    Attributes:
      mini_step: int32 scalar, micro-batches accumulated since the last real step
        (0 .. every_k - 1).
      gradient_step: int32 scalar, number of real (inner) steps taken.
      inner_state: the wrapped optimizer's state.
      acc_grads: running sum of the micro-batch gradients, shaped like ``params``.
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_state: OptState
    acc_grads: Updates


def accumulate(opt: Optimizer, every_k: int) -> Optimizer:
    """Accumulate gradients over ``every_k`` calls and step on their mean (cf. optax.MultiSteps).

    Calls ``1 .. every_k - 1`` of each group add the gradients to ``acc_grads`` and return
    zero updates (the inner state is unchanged); call ``every_k`` returns
    ``opt.update(mean of the k gradients, inner_state, params)`` and resets the sum. So
    ``k`` calls with micro-batch gradients ``g_1..g_k`` move the parameters exactly like
    one call of ``opt`` with ``(g_1 + ... + g_k) / k``. The branch is a ``lax.cond`` on
    the int32 counter: the function jits, and under ``vmap`` it becomes a select.

    Args:
      opt: the optimizer to wrap. Its ``update`` must keep the state's dtypes (every
        funcnet optimizer does).
      every_k: a Python int >= 1 (static: it fixes the program).

    Returns:
      An ``Optimizer`` with state :class:`AccumulateState`.

    Raises:
      TypeError: if ``every_k`` is not an int.
      ValueError: if ``every_k < 1``; if the grads tree does not match the accumulator.

    Example:
      >>> import jax.numpy as jnp
      >>> from funcnet import optim
      >>> opt = optim.accumulate(optim.sgd(1.0), every_k=2)
      >>> p = jnp.array([0.0])
      >>> s = opt.init(p)
      >>> u1, s = opt.update(jnp.array([1.0]), s, p)
      >>> u2, s = opt.update(jnp.array([3.0]), s, p)
      >>> print(u1, u2)
      [0.] [-2.]
    """
    fn = "accumulate"
    if isinstance(every_k, bool) or not isinstance(every_k, (int, np.integer)):
        raise TypeError(f"{fn}: every_k must be an int, got {type(every_k).__name__}")
    if every_k < 1:
        raise ValueError(f"{fn}: every_k must be >= 1, got {every_k}")
    if not (isinstance(opt, tuple) and hasattr(opt, "init") and hasattr(opt, "update")):
        raise TypeError(f"{fn}: opt must be an Optimizer (init, update), got {type(opt).__name__}")
    k = int(every_k)

    def init(params):
        return AccumulateState(mini_step=zero_count(), gradient_step=zero_count(),
                               inner_state=opt.init(params),
                               acc_grads=_map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        check_float_leaves(fn, "grads", grads)
        check_trees_match(fn, "grads", grads, "state.acc_grads", state.acc_grads)
        acc = _map(lambda a, g: a + g.astype(a.dtype), state.acc_grads, grads)

        def step(_):
            mean = _map(lambda a: a / jnp.asarray(k, a.dtype), acc)
            updates, inner = opt.update(mean, state.inner_state, params)
            return (updates, AccumulateState(
                mini_step=zero_count(), gradient_step=safe_increment(state.gradient_step),
                inner_state=inner, acc_grads=_map(jnp.zeros_like, acc)))

        def skip(_):
            return (_map(jnp.zeros_like, acc), AccumulateState(
                mini_step=safe_increment(state.mini_step), gradient_step=state.gradient_step,
                inner_state=state.inner_state, acc_grads=acc))

        if k == 1:
            return step(None)
        return jax.lax.cond(state.mini_step >= k - 1, step, skip, None)

    return Optimizer(init, update)
