"""Gradient transformations: the blocks that the named optimizers chain together.

Each block has optax's name, signature and defaults, and its state NamedTuple (optax's
class and field names) right above it. States hold arrays only (``count`` is an int32
scalar). ``scale_by_*`` blocks produce a *direction*; the learning rate and the sign are
applied by :func:`scale_by_learning_rate`. Every ``update`` takes
``(updates, state, params=None, **extra_args)`` and ignores what it does not use.

The adaptive directions (Adam, RMSProp, AdaGrad) are in :mod:`.adaptive`.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    EmptyState, Updates, bias_correction as _debias, cast_like, check_decay,
    check_empty_state, check_hyperparameter, check_optional_dtype, check_scalar_or_schedule,
    check_state, moment, optimizer, promote_dtypes, safe_increment, scheduled, split,
    zero_count, zeros_like)
from funcnet._describe import described

_map = jax.tree_util.tree_map


# ----------------------------------------------------------------- stateless blocks


def _stateless(fn: str, transform):
    """A block with ``EmptyState``; ``transform(updates, params)`` gives the updates. The
    state given is returned as is (any leaf-free state: optax's ``EmptyState`` too)."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None, **extra_args):
        del extra_args
        check_empty_state(fn, state)
        return transform(updates, params), state

    return optimizer(init, update)


@described
def identity():
    """Leave updates unchanged (optax's ``identity``); state ``EmptyState()``."""
    return _stateless("identity", lambda u, p: u)


@described
def set_to_zero():
    """Map updates to zeros, to freeze parameters (e.g. in :func:`multi_transform`)."""
    return _stateless("set_to_zero", lambda u, p: _map(jnp.zeros_like, u))


def _scale(step_size):
    return _stateless("scale", lambda u, p: _map(lambda g: g * cast_like(step_size, g), u))


@described
def scale(step_size):
    """Multiply every update by a constant: ``u <- step_size * u``.

    Args:
      step_size: a finite number or a scalar (possibly traced) array, of any sign (use
        :func:`scale_by_schedule` for a schedule).

    Returns:
      A stateless ``Optimizer`` (state ``EmptyState()``).
    """
    check_hyperparameter("scale", "step_size", step_size)
    return _scale(step_size)


class ScaleByScheduleState(NamedTuple):
    """Number of updates done so far (optax's ``ScaleByScheduleState``)."""

    count: jax.Array  # int32 scalar


def _scale_by_schedule(step_size_fn, fn="scale_by_schedule", name="step_size_fn"):
    def init(params):
        del params
        return ScaleByScheduleState(count=zero_count())

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, ScaleByScheduleState)
        step = scheduled(fn, name, step_size_fn, state.count)
        updates = _map(lambda g: g * cast_like(step, g), updates)
        return updates, state._replace(count=safe_increment(state.count))

    return optimizer(init, update)


@described
def scale_by_schedule(step_size_fn):
    """Multiply updates by ``step_size_fn(count)``, ``count`` = updates done so far.

    Args:
      step_size_fn: a function ``int32 step -> scalar`` (e.g. a schedule of
        :mod:`funcnet.optim.schedules`); the first update uses ``step_size_fn(0)``.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByScheduleState`.
    """
    _checks.check_callable("scale_by_schedule", "step_size_fn", step_size_fn, "step -> value")
    return _scale_by_schedule(step_size_fn)


@described
def scale_by_learning_rate(learning_rate=None, *, flip_sign: bool = True):
    """``u <- -lr * u`` (descent), ``lr`` a number, an array or a schedule ``step -> lr``.

    Args:
      learning_rate: a finite number >= 0, a scalar (possibly traced) array, or a
        schedule evaluated at the number of updates done so far. ``None`` means no
        scaling (:func:`identity`), as in optax.
      flip_sign: multiply by ``-lr`` (default) rather than ``lr`` (keyword-only).

    Returns:
      ``scale(-lr)`` for a constant, ``scale_by_schedule(lambda t: -lr(t))`` for a
      schedule; either reports ``lr`` to :func:`~funcnet.optim.current_learning_rate`.

    Raises:
      TypeError: for a string or other non-number.
      ValueError: for a concrete negative, NaN or infinite ``learning_rate`` (optax
        accepts a negative one as ascent; here use ``scale(+lr)``).
    """
    fn = "scale_by_learning_rate"
    sign = -1.0 if _checks.static_bool(fn, "flip_sign", flip_sign) else 1.0
    if learning_rate is None:
        return identity()
    check_scalar_or_schedule(fn, "learning_rate", learning_rate)
    if callable(learning_rate):
        block = _scale_by_schedule(lambda count: sign * learning_rate(count), fn,
                                   "learning_rate")

        def current(state):
            check_state(fn, state, ScaleByScheduleState)
            return jnp.asarray(learning_rate(state.count))

        return optimizer(*block, current)
    return optimizer(*_scale(sign * learning_rate), lambda state: jnp.asarray(learning_rate))


# ------------------------------------------------------------------- momentum, EMA


class TraceState(NamedTuple):
    """Aggregated past updates (optax's ``TraceState``)."""

    trace: Updates


@described
def trace(decay, nesterov: bool = False, accumulator_dtype=None):
    """Momentum as a trace of past updates (Polyak 1964; optax's ``trace``)::

        t_k = decay * t_{k-1} + g_k,   u_k = t_k   (nesterov: u_k = g_k + decay * t_k)

    ``t_0 = 0``. Followed by ``scale_by_learning_rate(lr)`` this is note 003's
    ``v <- decay v - lr g; W <- W + v`` for a constant ``lr`` (its ``v`` is ``-lr t``).

    Args:
      decay: momentum coefficient in [0, 1] (1: a plain running sum).
      nesterov: Nesterov's look-ahead (Sutskever et al., 2013).
      accumulator_dtype: dtype of ``t`` (default: the parameters' dtype).

    Returns:
      An ``Optimizer`` with state :class:`TraceState`.

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
      Sutskever, Martens, Dahl, Hinton, "On the importance of initialization and
      momentum in deep learning", ICML 2013. Note 003.
    """
    fn = "trace"
    check_hyperparameter(fn, "decay", decay, 0.0, 1.0)  # 1: a running sum, still defined
    nesterov = _checks.static_bool(fn, "nesterov", nesterov)
    acc_dtype = check_optional_dtype(fn, "accumulator_dtype", accumulator_dtype)

    def init(params):
        return TraceState(trace=zeros_like(params, acc_dtype))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, TraceState, updates, "trace")

        def step(g, t):
            dt = promote_dtypes(g.dtype, t.dtype)
            new = g.astype(dt) + (cast_like(decay, t) * t).astype(dt)  # decay*t in t's dtype
            out = g.astype(dt) + cast_like(decay, new) * new if nesterov else new
            return out, new.astype(t.dtype)  # out in the promoted dtype, as optax

        out, new = split(updates, _map(step, updates, state.trace), 2)
        return out, state._replace(trace=new)

    return optimizer(init, update)


class EmaState(NamedTuple):
    """Update count and moving average (optax's ``EmaState``)."""

    count: jax.Array  # int32 scalar
    ema: Updates


@described
def ema(decay, debias: bool = True, accumulator_dtype=None):
    """Exponential moving average of the updates (optax's ``ema``)::

        e_k = decay * e_{k-1} + (1 - decay) * g_k,   u_k = e_k / (1 - decay^k) if debias

    With ``e_0 = 0``. It is also the EMA of *parameters* (Polyak averaging for
    evaluation): ``avg, s = ema(0.999).update(params, s)`` after each step gives the
    debiased average of the parameters seen so far (``s = ema(0.999).init(params)``).

    Args:
      decay: in [0, 1).
      debias: divide by ``1 - decay^k`` (the state keeps the biased ``e_k``).
      accumulator_dtype: dtype of ``e`` (default: the parameters' dtype).

    Returns:
      An ``Optimizer`` with state :class:`EmaState`.

    References:
      Kingma & Ba, ICLR 2015, Section 3 (bias correction). Note 004 (moving average).
    """
    fn = "ema"
    check_decay(fn, "decay", decay)
    debias = _checks.static_bool(fn, "debias", debias)
    acc_dtype = check_optional_dtype(fn, "accumulator_dtype", accumulator_dtype)

    def init(params):
        return EmaState(count=zero_count(), ema=zeros_like(params, acc_dtype))

    def update(updates, state, params=None, **extra_args):
        del params, extra_args
        check_state(fn, state, EmaState, updates, "ema")
        count = safe_increment(state.count)
        new = _map(lambda g, e: moment(decay, g, e), updates, state.ema)
        out = _map(lambda e: e / _debias(decay, count, e) if debias else e, new)
        return out, state._replace(count=count, ema=_map(lambda n, e: n.astype(e.dtype),
                                                         new, state.ema))

    return optimizer(init, update)
