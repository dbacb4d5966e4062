"""Schedule-free learning (Defazio et al., 2024), optax's ``optax.contrib.schedule_free``,
``schedule_free_sgd``, ``schedule_free_adamw`` and ``schedule_free_eval_params``.

The wrapper keeps the base optimizer's iterate ``z`` in its state and hands out as
parameters the interpolation ``y = b1 x + (1 - b1) z`` of ``z`` and the running average
``x``, where the gradients are taken. Evaluate (validation loss, export) at ``x``:
``schedule_free_eval_params(opt_state, params)``. Names, signatures, defaults and the
state (:class:`ScheduleFreeState`) are optax 0.2.8's.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.adaptive import scale_by_rms
from funcnet.optim.base import (
    OptState, Params, cast_like, check_hyperparameter, check_optional_dtype,
    check_scalar_or_schedule, check_state, current_learning_rate, one_minus, optimizer,
    promote_dtypes, safe_increment, scheduled, tree_dtype)
from funcnet.optim.combine import call_update, chain
from funcnet.optim.aliases import sgd
from funcnet.optim.regularization import _check_params, add_decayed_weights
from funcnet.optim.schedules_compound import warmup_constant_schedule
from funcnet.optim.transforms import scale_by_learning_rate
from funcnet._describe import described

_map = jax.tree_util.tree_map


class ScheduleFreeState(NamedTuple):
    """optax's ``ScheduleFreeState``: ``b1``, the weight sum, the step count (from 1),
    the largest learning rate so far (scalars of the parameters' lowest dtype, the count
    int32), the base optimizer's state and the base iterate ``z`` (the parameters'
    structure, in ``state_dtype``)."""

    b1: jax.Array
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: OptState
    z: Params


def _find_state(state) -> Any:
    """The first node with ScheduleFreeState's fields in ``state`` (depth first), or None:
    a schedule-free optimizer inside ``chain``, ``apply_if_finite``, ``MultiSteps``..."""
    if getattr(state, "_fields", None) == ScheduleFreeState._fields:
        return state
    children = state.values() if isinstance(state, dict) else (
        state if isinstance(state, (tuple, list)) else ())
    for child in children:
        found = _find_state(child)
        if found is not None:
            return found
    return None


def schedule_free_eval_params(state, params):
    """The parameters to evaluate a schedule-free run at: the average ``x = (y - (1 - b1)
    z) / b1`` (optax's ``schedule_free_eval_params``).

    Args:
      state: a :class:`ScheduleFreeState`, or a state holding one (e.g. of
        ``chain(clip_by_global_norm(1.0), schedule_free_adamw())`` or
        ``apply_if_finite(...)``; optax needs the ScheduleFreeState itself).
      params: the parameters ``y`` the optimizer produced.

    Returns:
      ``x``, leaf by leaf in the parameters' dtypes.

    Raises:
      ValueError: if ``state`` holds no ScheduleFreeState, or its ``z`` does not match
        ``params``.
    """
    fn = "schedule_free_eval_params"
    found = _find_state(state)
    if found is None:
        raise ValueError(f"{fn}: state holds no ScheduleFreeState (fields "
                         f"{', '.join(ScheduleFreeState._fields)}); got "
                         f"{jax.tree_util.tree_structure(state)}")
    check_state(fn, found, ScheduleFreeState, params, "z")
    b1 = found.b1

    def average(y, z):
        dt = promote_dtypes(y.dtype, z.dtype, b1.dtype)
        b = b1.astype(dt)
        return ((y.astype(dt) - (1.0 - b) * z.astype(dt)) / b).astype(y.dtype)

    return _map(average, params, found.z)


def eval_params(opt_state, params):
    """The parameters to evaluate a model at, whatever the optimizer:
    :func:`schedule_free_eval_params` when ``opt_state`` holds a schedule-free state
    (funcnet's or optax's, alone or inside ``chain``/wrappers), ``params`` itself
    otherwise. ``fit`` evaluates its ``eval_data`` at these; the params it returns,
    checkpoints and resumes stay the training iterate ``y``.

    Args:
      opt_state: any optimizer state (funcnet's or optax's).
      params: the parameters the optimizer produced.

    Returns:
      A tree like ``params``.
    """
    if _find_state(opt_state) is None:
        return params
    return schedule_free_eval_params(opt_state, params)


@described
def schedule_free(base_optimizer, learning_rate, b1=0.9, weight_lr_power=2.0,
                  state_dtype=None):
    """Make ``base_optimizer`` schedule-free (optax's ``optax.contrib.schedule_free``)::

        z_{t+1} = z_t + base_update(g(y_t))           (the base optimizer's iterate)
        c_{t+1} = lr_max^p / sum_{i<=t} lr_max,i^p     (p = weight_lr_power)
        x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}  (x_t recomputed from y_t and z_t)
        y_{t+1} = b1 x_{t+1} + (1 - b1) z_{t+1}        (the parameters handed out)

    ``lr_max`` is the largest ``learning_rate`` so far (a schedule is evaluated at the
    1-based step count, as in optax). Switch the base optimizer's momentum off (``b1``
    replaces it): ``schedule_free(adam(lr, b1=0.0), lr)``. Evaluate at
    :func:`schedule_free_eval_params`.

    Args:
      base_optimizer: an optimizer (funcnet's or optax's); extra ``update`` arguments
        are passed to it.
      learning_rate: a number >= 0, a scalar array or a schedule: the one of the base
        optimizer (warm-up, no decay), for the averaging weights.
      b1: in (0, 1] (optax's 0.9): the interpolation between ``x`` and ``z``.
      weight_lr_power: >= 0 (optax's 2.0).
      state_dtype: dtype of ``z`` (default: the parameters').

    Returns:
      An ``Optimizer`` with state :class:`ScheduleFreeState`; ``update`` needs
      ``params``; :func:`~funcnet.optim.current_learning_rate` is the base optimizer's.

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024,
      https://arxiv.org/abs/2405.15682.
    """
    fn = "schedule_free"
    _checks.check_optimizer(fn, "base_optimizer", base_optimizer)
    check_scalar_or_schedule(fn, "learning_rate", learning_rate)
    check_hyperparameter(fn, "b1", b1, 0.0, 1.0, low_inclusive=False)
    check_hyperparameter(fn, "weight_lr_power", weight_lr_power, 0.0)
    state_dtype = check_optional_dtype(fn, "state_dtype", state_dtype)

    def init(params):
        dt = tree_dtype(fn, params, "lowest")
        # copies: z and the params are distinct buffers (both can be donated)
        z = _map(lambda p: jnp.array(p, dtype=state_dtype, copy=True), params)
        return ScheduleFreeState(
            b1=jnp.asarray(b1).astype(dt), weight_sum=jnp.zeros([], dt),
            step_count=jnp.ones([], jnp.int32), max_lr=jnp.zeros([], dt),
            base_optimizer_state=base_optimizer.init(params), z=z)

    def update(updates, state, params=None, **extra_args):
        _check_params(fn, updates, params)
        check_state(fn, state, ScheduleFreeState, params, "z")
        lr = scheduled(fn, "learning_rate", learning_rate, state.step_count)
        max_lr = jnp.maximum(state.max_lr, cast_like(lr, state.max_lr))
        weight = max_lr ** cast_like(weight_lr_power, max_lr)
        total = state.weight_sum + weight
        # 0/0 (a zero learning rate so far) gives c = 0, as optax
        ck = jnp.where(jnp.isnan(weight) | jnp.isnan(total), jnp.full(weight.shape, jnp.nan,
                                                                       weight.dtype),
                       jnp.nan_to_num(weight / total, nan=0.0, posinf=jnp.inf))
        with _checks.context(fn):
            base, base_state = call_update(base_optimizer, updates,
                                           state.base_optimizer_state, params, extra_args)
        def next_z(z, u):  # z + u in the promoted dtype, stored in z's (as optax)
            dt = promote_dtypes(z.dtype, u.dtype)
            return (z.astype(dt) + u.astype(dt)).astype(z.dtype)

        z = _map(next_z, state.z, base)

        def step(y, z_old, z_new):
            # optax's dtypes: (1 - b1) z in z's dtype (a Python float times z), the rest
            # in the promoted dtype of y, z and ck
            dt = promote_dtypes(y.dtype, z_old.dtype, ck.dtype)
            c, b = ck.astype(dt), cast_like(b1, ck.astype(dt))
            rest_z = lambda z: (one_minus(b1, z) * z).astype(dt)  # noqa: E731
            x = (y.astype(dt) - rest_z(z_old)) / b
            x = (1.0 - c) * x + c * z_new.astype(dt)
            return b * x + rest_z(z_new) - y.astype(dt)

        out = _map(step, params, state.z, z)
        return out, state._replace(weight_sum=total, step_count=safe_increment(state.step_count),
                                   max_lr=max_lr, base_optimizer_state=base_state, z=z)

    return optimizer(init, update, lambda state: current_learning_rate(
        base_optimizer, state.base_optimizer_state))


def _warmed(learning_rate, warmup_steps):
    if warmup_steps is None:
        return learning_rate
    return warmup_constant_schedule(init_value=0.0, peak_value=learning_rate,
                                    warmup_steps=warmup_steps)


@described
def schedule_free_sgd(learning_rate=1.0, warmup_steps=None, b1=0.9, weight_decay=None,
                      weight_lr_power=2.0, state_dtype=None):
    """Schedule-free SGD, optax's ``optax.contrib.schedule_free_sgd``:
    ``schedule_free([add_decayed_weights(weight_decay)], sgd(lr), lr, b1, ...)``.

    Args:
      learning_rate: a number >= 0 or a scalar array (optax's 1.0).
      warmup_steps: ``None`` or an int >= 1: a linear warm-up from 0.
      b1, weight_lr_power, state_dtype: see :func:`schedule_free`.
      weight_decay: ``None`` or >= 0, added to the gradient (multiplied by the learning
        rate, as PyTorch's).

    Returns:
      An ``Optimizer`` with state :class:`ScheduleFreeState`.

    References:
      Defazio et al., "The Road Less Scheduled", 2024, https://arxiv.org/abs/2405.15682.
    """
    with _checks.context("schedule_free_sgd"):
        lr = _warmed(learning_rate, warmup_steps)
        base = sgd(lr)
        if weight_decay is not None:
            base = chain(add_decayed_weights(weight_decay), base)
        return schedule_free(base, lr, b1, weight_lr_power, state_dtype)


@described
def schedule_free_adamw(learning_rate=0.0025, warmup_steps=None, b1=0.9, b2=0.999, eps=1e-8,
                        weight_decay=0.0, weight_lr_power=2.0, state_dtype=None):
    """Schedule-free AdamW, optax's ``optax.contrib.schedule_free_adamw``: AdamW without
    momentum (optax's ``scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True)``,
    the decoupled weight decay, the learning rate) made schedule-free.

    Args:
      learning_rate: a number >= 0 or a scalar array (optax's 0.0025).
      warmup_steps: ``None`` or an int >= 1: a linear warm-up from 0.
      b1: see :func:`schedule_free`.
      b2: in [0, 1): the second moment's decay.
      eps: >= 0, outside the square root.
      weight_decay: >= 0.
      weight_lr_power, state_dtype: see :func:`schedule_free`.

    Returns:
      An ``Optimizer`` with state :class:`ScheduleFreeState`.

    References:
      Defazio et al., "The Road Less Scheduled", 2024, https://arxiv.org/abs/2405.15682.
    """
    with _checks.context("schedule_free_adamw"):
        lr = _warmed(learning_rate, warmup_steps)
        base = chain(scale_by_rms(decay=b2, eps=eps, eps_in_sqrt=False, bias_correction=True),
                     add_decayed_weights(weight_decay), scale_by_learning_rate(lr))
        return schedule_free(base, lr, b1, weight_lr_power, state_dtype)
