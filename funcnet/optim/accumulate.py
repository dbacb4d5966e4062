"""Gradient accumulation: step on the mean of ``every_k`` micro-batch gradients.

One implementation, two spellings: :func:`accumulate` (funcnet's) and :class:`MultiSteps`
(optax's class, same arguments). The state has optax's ``MultiStepsState`` fields, so a
state can be continued by either library, and ``acc_grads`` holds the running mean as
in optax (Welford's update ``acc + (g - acc) / (n + 1)``).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    OptState, Updates, abs_sq, check_optional_dtype, check_state,
    check_updates, current_learning_rate, optimizer, promote_dtypes, safe_increment,
    zero_count, zeros_like, zeros_like_updates)
from funcnet.optim.combine import call_update
from funcnet._describe import call_text, described

_map = jax.tree_util.tree_map


class MultiStepsState(NamedTuple):
    """State of :func:`accumulate` / :class:`MultiSteps` (optax's ``MultiStepsState``).

    Attributes:
      mini_step: int32, micro-batches accumulated since the last real step
        (0 .. k - 1).
      gradient_step: int32, number of real (inner) steps taken.
      inner_opt_state: the wrapped optimizer's state.
      acc_grads: running mean (or sum, ``use_grad_mean=False``) of the micro-batch
        gradients since the last real step, shaped like ``params``.
      skip_state: what ``should_skip_update_fn`` returned last (``()`` without one).
    """

    mini_step: jax.Array
    gradient_step: jax.Array
    inner_opt_state: OptState
    acc_grads: Updates
    skip_state: Any = ()


AccumulateState = MultiStepsState


def _no_skip(updates, gradient_step, params):
    del updates, gradient_step, params
    return jnp.array(False, jnp.bool_), ()


def skip_not_finite(updates, gradient_step, params):
    """A ``should_skip_update_fn``: skip micro-batches whose gradients are not finite.

    Returns:
      ``(should_skip, {"should_skip", "num_not_finite"})``.
    """
    del gradient_step, params
    bad = sum(jnp.sum(~jnp.isfinite(g)).astype(jnp.int32)
              for g in jax.tree_util.tree_leaves(updates))
    bad = jnp.asarray(bad, jnp.int32)
    return bad > 0, {"should_skip": bad > 0, "num_not_finite": bad}


def skip_large_updates(updates, gradient_step, params, max_squared_norm):
    """A ``should_skip_update_fn`` (bind ``max_squared_norm`` with ``functools.partial``):
    skip micro-batches whose squared global norm exceeds it, or is NaN.

    Returns:
      ``(should_skip, {"should_skip", "norm_squared"})``.
    """
    del gradient_step, params
    sq = sum(jnp.sum(abs_sq(g)) for g in jax.tree_util.tree_leaves(updates))
    sq = jnp.asarray(sq)
    skip = jnp.logical_or(jnp.isnan(sq), sq > max_squared_norm)
    return skip, {"should_skip": skip, "norm_squared": sq}


def _multi_steps(fn, opt, every_k_schedule, use_grad_mean, should_skip_update_fn,
                 accumulator_dtype):
    _checks.check_optimizer(fn, "opt", opt)
    if callable(every_k_schedule):
        k_of, static_k = every_k_schedule, None
    else:
        static_k = _checks.static_int(fn, "every_k", every_k_schedule, minimum=1)
        k_of = lambda step: static_k  # noqa: E731
    mean = _checks.static_bool(fn, "use_grad_mean", use_grad_mean)
    skip_fn = _no_skip if should_skip_update_fn is None else should_skip_update_fn
    acc_dtype = check_optional_dtype(fn, "accumulator_dtype", accumulator_dtype)

    def init(params):
        gradient_step = zero_count()
        _, skip_state = skip_fn(zeros_like(params), gradient_step, params)
        return MultiStepsState(mini_step=zero_count(), gradient_step=gradient_step,
                               inner_opt_state=opt.init(params),
                               acc_grads=zeros_like(params, acc_dtype), skip_state=skip_state)

    def update(updates, state, params=None, **extra_args):
        check_updates(fn, updates, params)
        check_state(fn, state, MultiStepsState, updates, "acc_grads")
        skip, skip_state = skip_fn(updates, state.gradient_step, params)

        def add(g, a):
            dt = promote_dtypes(g.dtype, a.dtype)
            g, acc = g.astype(dt), a.astype(dt)
            return acc + (g - acc) / (state.mini_step + 1).astype(dt) if mean else acc + g

        acc = _map(add, updates, state.acc_grads)

        def step():
            new, inner = call_update(opt, _map(lambda a, g: a.astype(g.dtype), acc, updates),
                                     state.inner_opt_state, params, extra_args)
            inner = _map(lambda n, o: jnp.asarray(n).astype(jnp.result_type(o)), inner,
                         state.inner_opt_state)  # a cond needs the same dtypes
            return new, state._replace(
                mini_step=zero_count(), gradient_step=safe_increment(state.gradient_step),
                inner_opt_state=inner, skip_state=skip_state,
                acc_grads=_map(jnp.zeros_like, state.acc_grads))

        def no_step(**changes):
            return zeros_like_updates(step), state._replace(skip_state=skip_state, **changes)

        def accumulate_or_step():
            if static_k == 1:
                return step()
            wait = lambda: no_step(  # noqa: E731
                mini_step=safe_increment(state.mini_step),
                acc_grads=_map(lambda a, s: a.astype(s.dtype), acc, state.acc_grads))
            return jax.lax.cond(state.mini_step >= jnp.asarray(k_of(state.gradient_step),
                                                                 jnp.int32) - 1, step, wait)

        if should_skip_update_fn is None:
            return accumulate_or_step()
        return jax.lax.cond(skip, no_step, accumulate_or_step)

    def learning_rate(state):
        check_state(fn, state, MultiStepsState)
        return current_learning_rate(opt, state.inner_opt_state)

    return optimizer(init, update, learning_rate)


@described
def accumulate(opt, every_k: int, *, use_grad_mean: bool = True,
               should_skip_update_fn: Callable | None = None, accumulator_dtype=None):
    """Accumulate gradients over ``every_k`` calls and step on their mean.

    Calls ``1 .. every_k - 1`` of each group fold the gradients into ``acc_grads`` and
    return zero updates (the inner state is unchanged); call ``every_k`` returns
    ``opt.update(mean of the k gradients, inner_opt_state, params)`` and resets the
    accumulator. So ``k`` calls with micro-batch gradients ``g_1..g_k`` move the
    parameters like one call of ``opt`` on ``(g_1 + ... + g_k) / k``. The branch is a
    ``lax.cond`` on the int32 counter: ``init``/``update`` jit and run inside
    ``lax.scan`` (micro-batching within a step), and under ``vmap`` it becomes a select.

    Args:
      opt: the optimizer to wrap (funcnet's or optax's).
      every_k: a Python int >= 1, or a function ``gradient_step -> k`` (as optax's
        ``every_k_schedule``).
      use_grad_mean: average (default) or sum the micro-batch gradients (keyword-only).
      should_skip_update_fn: ``(grads, gradient_step, params) -> (skip, skip_state)``,
        e.g. :func:`skip_not_finite`; a skipped call changes nothing but ``skip_state``.
      accumulator_dtype: dtype of ``acc_grads`` (default: the parameters' dtype; optax's
        ``MultiSteps`` defaults to float32).

    Returns:
      An ``Optimizer`` with state :class:`MultiStepsState` (alias ``AccumulateState``),
      fields ``mini_step, gradient_step, inner_opt_state, acc_grads, skip_state``.

    Raises:
      TypeError: ``every_k`` not an int (nor a function).
      ValueError: ``every_k < 1``; grads that do not match the accumulator.

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
    return _multi_steps("accumulate", opt, every_k, use_grad_mean, should_skip_update_fn,
                        accumulator_dtype)


class MultiSteps:
    """optax's ``MultiSteps`` interface over :func:`accumulate` (same arguments and
    defaults: ``accumulator_dtype=jnp.float32``).

    Attributes:
      inner_opt: the wrapped optimizer.
    """

    def __init__(self, opt, every_k_schedule, use_grad_mean: bool = True,
                 should_skip_update_fn: Callable | None = None,
                 accumulator_dtype=jnp.float32):
        self.inner_opt = opt
        self._opt = _multi_steps("MultiSteps", opt, every_k_schedule, use_grad_mean,
                                 should_skip_update_fn, accumulator_dtype)
        self.init, self.update = self._opt
        # what current_learning_rate (and so fit's history and fingerprint) reads
        self._learning_rate_fn = self._opt._learning_rate_fn
        self._description = call_text(
            "MultiSteps", inspect.signature(MultiSteps),
            (opt, every_k_schedule, use_grad_mean, should_skip_update_fn, accumulator_dtype),
            {})

    def has_updated(self, state) -> jax.Array:
        """Whether the last ``update`` stepped the inner optimizer."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self):
        """The ``(init, update)`` pair as an ``Optimizer``."""
        return self._opt
