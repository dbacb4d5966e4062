"""Learning-rate schedules: pure functions ``step -> value``.

``step`` is the number of updates done so far (0 for the first update), a Python int or
an int32 array (traced under ``jit``). Every schedule returns a scalar float array and
works under ``jit``/``vmap``; its hyperparameters may themselves be traced arrays.
Pass a schedule as the ``learning_rate`` of any optimizer.
"""
from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp
import numpy as np

from funcnet.optim.base import (
    Schedule, check_nonnegative, concrete_value, promote_dtypes)


def _dtype(*values):
    """The float dtype to compute in: default float, promoted with floating array args."""
    floats = [v.dtype for v in values
              if hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating)]
    return promote_dtypes(jnp.result_type(float), *floats)


def _as(x, dt):
    return jnp.asarray(x).astype(dt)


def _check_int(fn: str, name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")


def constant(value) -> Schedule:
    """``lr(step) = value``.

    Example:
      >>> from funcnet import optim
      >>> print(round(float(optim.constant(0.1)(7)), 6))
      0.1
    """
    check_nonnegative("constant", "value", value)

    def schedule(step):
        del step
        return _as(value, _dtype(value))

    return schedule


def exponential_decay(init, decay_rate, transition_steps, staircase: bool = False) -> Schedule:
    """``lr(step) = init * decay_rate ** (step / transition_steps)``.

    With ``staircase=True`` the exponent is ``floor(step / transition_steps)``.

    Args:
      init: value at step 0.
      decay_rate: factor per ``transition_steps`` steps, >= 0.
      transition_steps: int >= 1.
      staircase: decay in discrete intervals (keyword allowed).

    Returns:
      A schedule. Matches ``optax.exponential_decay(init, transition_steps, decay_rate,
      staircase=...)`` (note the different argument order).

    Example:
      >>> from funcnet import optim
      >>> print(round(float(optim.exponential_decay(1.0, 0.5, 10)(20)), 6))
      0.25
    """
    fn = "exponential_decay"
    check_nonnegative(fn, "decay_rate", decay_rate)
    _check_int(fn, "transition_steps", transition_steps, minimum=1)

    def schedule(step):
        dt = _dtype(init, decay_rate)
        p = _as(step, dt) / _as(transition_steps, dt)
        if staircase:
            p = jnp.floor(p)
        return _as(init, dt) * _as(decay_rate, dt) ** p

    return schedule


def cosine_decay(init, decay_steps, alpha=0.0) -> Schedule:
    """Cosine decay (Loshchilov & Hutter, SGDR, 2017) from ``init`` to ``alpha * init``::

        s = min(step, decay_steps)
        lr(step) = init * ((1 - alpha) * 0.5 * (1 + cos(pi * s / decay_steps)) + alpha)

    Args:
      init: value at step 0.
      decay_steps: int >= 1; constant ``alpha * init`` afterwards.
      alpha: final value as a fraction of ``init``, in [0, 1].

    Returns:
      A schedule (= ``optax.cosine_decay_schedule(init, decay_steps, alpha)``).
    """
    fn = "cosine_decay"
    _check_int(fn, "decay_steps", decay_steps, minimum=1)
    a = concrete_value(alpha)
    if a is not None and not np.all((a >= 0) & (a <= 1)):
        raise ValueError(f"{fn}: alpha must be in [0, 1], got {a.item():g}")

    def schedule(step):
        dt = _dtype(init, alpha)
        s = jnp.minimum(_as(step, dt), _as(decay_steps, dt))
        cos = 0.5 * (1 + jnp.cos(jnp.pi * s / _as(decay_steps, dt)))
        al = _as(alpha, dt)
        return _as(init, dt) * ((1 - al) * cos + al)

    return schedule


def warmup_cosine_decay(init, peak, warmup_steps, decay_steps, end=0.0) -> Schedule:
    """Linear warm-up from ``init`` to ``peak``, then cosine decay from ``peak`` to ``end``::

        step < warmup_steps:  lr = init + (peak - init) * step / warmup_steps
        otherwise:            s = min(step - warmup_steps, D),  D = decay_steps - warmup_steps
                              lr = end + (peak - end) * 0.5 * (1 + cos(pi * s / D))

    ``decay_steps`` counts the warm-up too, as in
    ``optax.warmup_cosine_decay_schedule(init, peak, warmup_steps, decay_steps, end)``.

    Args:
      init: value at step 0.
      peak: value at step ``warmup_steps``.
      warmup_steps: int >= 0.
      decay_steps: int > ``warmup_steps``; total length of warm-up plus decay.
      end: value from step ``decay_steps`` on.

    Returns:
      A schedule.

    References:
      Goyal et al., "Accurate, Large Minibatch SGD", 2017 (warm-up); Loshchilov & Hutter,
      "SGDR", ICLR 2017 (cosine).
    """
    fn = "warmup_cosine_decay"
    _check_int(fn, "warmup_steps", warmup_steps, minimum=0)
    _check_int(fn, "decay_steps", decay_steps, minimum=1)
    if decay_steps <= warmup_steps:
        raise ValueError(
            f"{fn}: decay_steps must be > warmup_steps, got decay_steps={decay_steps}, "
            f"warmup_steps={warmup_steps}")

    def schedule(step):
        dt = _dtype(init, peak, end)
        t = _as(step, dt)
        i, p, e = _as(init, dt), _as(peak, dt), _as(end, dt)
        d = _as(decay_steps - warmup_steps, dt)
        s = jnp.clip(t - warmup_steps, 0, d)
        decayed = e + (p - e) * 0.5 * (1 + jnp.cos(jnp.pi * s / d))
        if warmup_steps == 0:
            return decayed
        warm = i + (p - i) * jnp.minimum(t, warmup_steps) / _as(warmup_steps, dt)
        return jnp.where(t < warmup_steps, warm, decayed)

    return schedule


def piecewise_constant(init, boundaries_and_scales: Mapping[int, float]) -> Schedule:
    """``lr(step) = init * prod of the scales whose boundary b satisfies step >= b``.

    Args:
      init: value before the first boundary.
      boundaries_and_scales: ``{boundary_step: scale}``, boundaries ints >= 0, scales
        >= 0 numbers.

    Returns:
      A schedule (= ``optax.piecewise_constant_schedule``).

    Example:
      >>> from funcnet import optim
      >>> sched = optim.piecewise_constant(1.0, {10: 0.1, 20: 0.5})
      >>> print([round(float(sched(s)), 6) for s in (0, 10, 25)])
      [1.0, 0.1, 0.05]
    """
    fn = "piecewise_constant"
    if not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(
            f"{fn}: boundaries_and_scales must be a dict {{step: scale}}, "
            f"got {type(boundaries_and_scales).__name__}")
    items = sorted(boundaries_and_scales.items())
    for b, s in items:
        _check_int(fn, "boundary", b, minimum=0)
        check_nonnegative(fn, f"scale at boundary {b}", s)

    def schedule(step):
        dt = _dtype(init, *[s for _, s in items])
        t = jnp.asarray(step)
        v = _as(init, dt)
        for b, s in items:
            v = v * jnp.where(t < b, jnp.ones([], dt), _as(s, dt))
        return v

    return schedule


__all__ = ["constant", "exponential_decay", "cosine_decay", "warmup_cosine_decay",
           "piecewise_constant"]
