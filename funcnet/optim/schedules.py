"""Learning-rate schedules: pure functions ``step -> value``, with optax's names.

As ``optax.schedules``, this namespace also holds the compound schedules
(:mod:`.schedules_compound`) and :func:`~funcnet.optim.inject_hyperparams`.

``step`` is the number of updates done so far (0 for the first update): a Python int,
or an integer array (traced under ``jit``). Every schedule computes in floating point
(JAX's default float, promoted with float array arguments), so huge step counts such as
``int(1e10)`` never overflow int32; it returns a float array and works under
``jit``/``vmap``, its hyperparameters may themselves be traced arrays.

Policy (one rule for all schedules, as for the optimizers' learning rates): counts
(``*_steps``, ``transition_begin``, boundaries) are Python ints (``TypeError``
otherwise) and non-negative (``ValueError``); values (``init_value``, ``peak_value``,
``end_value``, scales, ``alpha``, ``power``, ``exponent``) are finite and >= 0 when
concrete; ``decay_rate``, ``div_factor``, ``final_div_factor`` > 0; the one-cycle
fractions ``0 <= pct_start <= pct_final <= 1``. optax accepts negative values and turns a
zero or negative ``transition_steps``/``decay_rate`` into a constant schedule; funcnet
refuses the negative ones and ``decay_rate=0`` (deliberate differences), and keeps
optax's ``transition_steps=0`` = constant for the polynomial schedules (a warm-up of 0
steps). Where one-cycle phase boundaries fall on one step, optax's ``{boundary: scale}``
dict keeps only the last scale; funcnet skips the empty phase instead.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.base import Schedule, check_nonnegative, promote_dtypes
from funcnet._describe import described


def _dtype(*values):
    """The float dtype to compute in: default float, promoted with floating array args."""
    floats = [v.dtype for v in values
              if hasattr(v, "dtype") and jnp.issubdtype(v.dtype, jnp.floating)]
    return promote_dtypes(jnp.result_type(float), *floats)


def _as(x, dt):
    """``x`` as a float array of ``dt``; a Python int goes through ``float`` first, so a
    step beyond int32 does not overflow."""
    return jnp.asarray(float(x) if isinstance(x, (int, np.integer)) else x).astype(dt)


def _power(x, dt):
    """An exponent: a Python number stays one (``x ** 2`` is exact, as in optax)."""
    return x if isinstance(x, (int, float)) else _as(x, dt)


def _counts(fn, **counts):
    return {k: _checks.static_int(fn, k, v, minimum=m) for k, (v, m) in counts.items()}


def _values(fn, **values):
    for k, v in values.items():
        check_nonnegative(fn, k, v)


def _boundaries_and_scales(fn, boundaries_and_scales) -> list:
    """``{boundary: scale}`` (or ``None``) checked (boundaries ints >= 0, scales >= 0) and
    sorted by boundary."""
    if boundaries_and_scales is not None and not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(f"{fn}: boundaries_and_scales must be a dict {{step: scale}}, got "
                        f"{type(boundaries_and_scales).__name__}")
    items = sorted((boundaries_and_scales or {}).items())
    for b, s in items:
        _checks.static_int(fn, "boundary", b, minimum=0)
        check_nonnegative(fn, f"scale at boundary {b}", s)
    return items


@described
def constant_schedule(value) -> Schedule:
    """``lr(step) = value``.

    Example:
      >>> from funcnet import optim
      >>> print(round(float(optim.constant_schedule(0.1)(7)), 6))
      0.1
    """
    _values("constant_schedule", value=value)
    return lambda step: _as(value, _dtype(value))


@described
def polynomial_schedule(init_value, end_value, power, transition_steps: int,
                        transition_begin: int = 0) -> Schedule:
    """Polynomial transition from ``init_value`` to ``end_value``::

        s = clip(step - transition_begin, 0, transition_steps)
        lr(step) = (init_value - end_value) * (1 - s / transition_steps)^power + end_value

    ``transition_steps = 0`` gives the constant ``init_value`` (as in optax). With
    ``power = 1`` it is evaluated as ``init_value (1 - p) + end_value p``
    (``p = s / transition_steps``), accurate to a few ulps at both ends in float32.

    Args:
      init_value, end_value: values >= 0.
      power: >= 0.
      transition_steps: int >= 0.
      transition_begin: int >= 0; ``init_value`` before it.

    Returns:
      A schedule.
    """
    fn = "polynomial_schedule"
    _values(fn, init_value=init_value, end_value=end_value, power=power)
    c = _counts(fn, transition_steps=(transition_steps, 0), transition_begin=(transition_begin, 0))
    if c["transition_steps"] == 0:
        return constant_schedule(init_value)

    def schedule(step):
        dt = _dtype(init_value, end_value, power)
        n = c["transition_steps"]
        s = jnp.clip(_as(step, dt) - c["transition_begin"], 0, n)
        i, e = _as(init_value, dt), _as(end_value, dt)
        if isinstance(power, (int, float)) and power == 1:  # no cancellation (values >= 0)
            return i * ((n - s) / n) + e * (s / n)
        return (i - e) * ((n - s) / n) ** _power(power, dt) + e

    return schedule


@described
def linear_schedule(init_value, end_value, transition_steps: int,
                    transition_begin: int = 0) -> Schedule:
    """Linear transition: :func:`polynomial_schedule` with ``power=1``.

    Example:
      >>> from funcnet import optim
      >>> print([round(float(optim.linear_schedule(1.0, 0.0, 4)(s)), 6) for s in (0, 2, 9)])
      [1.0, 0.5, 0.0]
    """
    with _checks.context("linear_schedule"):
        return polynomial_schedule(init_value, end_value, 1, transition_steps,
                                   transition_begin)


@described
def piecewise_constant_schedule(init_value, boundaries_and_scales: Mapping | None = None
                                ) -> Schedule:
    """``lr(step) = init_value * prod of the scales whose boundary b has step >= b``.

    Args:
      init_value: value before the first boundary, >= 0.
      boundaries_and_scales: ``{boundary_step: scale}``, boundaries ints >= 0, scales
        >= 0; ``None`` for a constant.

    Returns:
      A schedule.

    Example:
      >>> from funcnet import optim
      >>> sched = optim.piecewise_constant_schedule(1.0, {10: 0.1, 20: 0.5})
      >>> print([round(float(sched(s)), 6) for s in (0, 10, 25)])
      [1.0, 0.1, 0.05]
    """
    fn = "piecewise_constant_schedule"
    _values(fn, init_value=init_value)
    items = _boundaries_and_scales(fn, boundaries_and_scales)

    def schedule(step):
        dt = _dtype(init_value, *[s for _, s in items])
        t, v = _as(step, dt), _as(init_value, dt)
        for b, s in items:
            v = jnp.where(t < b, v, _as(s, dt) * v)
        return v

    return schedule


@described
def exponential_decay(init_value, transition_steps: int, decay_rate,
                      transition_begin: int = 0, staircase: bool = False,
                      end_value=None) -> Schedule:
    """Exponential decay (optax's argument order)::

        p = (step - transition_begin) / transition_steps   (floor(p) if staircase)
        lr(step) = init_value * decay_rate^p    for step > transition_begin, else init_value

    clipped from below at ``end_value`` when ``decay_rate < 1`` (from above otherwise).

    Args:
      init_value: value at the start, >= 0.
      transition_steps: int >= 1 (steps per factor ``decay_rate``).
      decay_rate: > 0.
      transition_begin: int >= 0.
      staircase: decay in discrete intervals.
      end_value: ``None`` or a bound >= 0.

    Returns:
      A schedule.

    Example:
      >>> from funcnet import optim
      >>> print(round(float(optim.exponential_decay(1.0, 10, 0.5)(20)), 6))
      0.25
    """
    fn = "exponential_decay"
    _values(fn, init_value=init_value, end_value=0.0 if end_value is None else end_value)
    _checks.check_hyperparameter(fn, "decay_rate", decay_rate, 0.0, low_inclusive=False)
    c = _counts(fn, transition_steps=(transition_steps, 1),
                transition_begin=(transition_begin, 0))
    staircase = _checks.static_bool(fn, "staircase", staircase)

    def schedule(step):
        dt = _dtype(init_value, decay_rate, end_value)
        t = _as(step, dt) - c["transition_begin"]
        p = t / c["transition_steps"]
        p = jnp.floor(p) if staircase else p
        i, r = _as(init_value, dt), _as(decay_rate, dt)
        v = jnp.where(t <= 0, i, i * r ** p)
        if end_value is None:
            return v
        e = _as(end_value, dt)
        return jnp.where(r < 1, jnp.maximum(v, e), jnp.minimum(v, e))

    return schedule


@described
def cosine_decay_schedule(init_value, decay_steps: int, alpha=0.0, exponent=1.0) -> Schedule:
    """Cosine decay (Loshchilov & Hutter, SGDR, 2017) from ``init_value`` to
    ``alpha * init_value``::

        s = min(step, decay_steps)
        lr(step) = init_value * ((1 - alpha) * (0.5 (1 + cos(pi s / decay_steps)))^exponent
                                 + alpha)

    Args:
      init_value: value at step 0, >= 0.
      decay_steps: int >= 1; constant ``alpha * init_value`` afterwards.
      alpha: final value as a fraction of ``init_value``, >= 0.
      exponent: >= 0.

    Returns:
      A schedule.

    References:
      Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
      ICLR 2017, https://arxiv.org/abs/1608.03983.
    """
    fn = "cosine_decay_schedule"
    _values(fn, init_value=init_value, alpha=alpha, exponent=exponent)
    steps = float(_counts(fn, decay_steps=(decay_steps, 1))["decay_steps"])

    def schedule(step):
        dt = _dtype(init_value, alpha, exponent)
        return _cosine(_as(init_value, dt), _as(alpha, dt), exponent, step, steps, dt)

    return schedule


def _cosine(value, alpha, exponent, step, steps: float, dt):
    """``value * ((1 - alpha) * (0.5 (1 + cos(pi min(step, steps) / steps)))^exponent +
    alpha)``, the cosine decay of both cosine schedules."""
    cos = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(_as(step, dt), steps) / steps))
    return value * ((1 - alpha) * cos ** _power(exponent, dt) + alpha)


@described
def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[i]`` from ``boundaries[i-1]`` on, each with the step count since
    its boundary: ``lr(step) = schedules[i](step - boundaries[i-1])``.

    Args:
      schedules: ``n`` schedules.
      boundaries: ``n - 1`` ints >= 0, increasing.

    Returns:
      A schedule.
    """
    fn = "join_schedules"
    schedules, boundaries = list(schedules), list(boundaries)
    for i, s in enumerate(schedules):
        _checks.check_callable(fn, f"schedules[{i}]", s, "step -> value")
    for b in boundaries:
        _checks.static_int(fn, "boundary", b, minimum=0)
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(f"{fn}: got {len(schedules)} schedules and {len(boundaries)} "
                         f"boundaries, expected {len(schedules) - 1} boundaries")

    def schedule(step):
        out = schedules[0](step)
        for b, s in zip(boundaries, schedules[1:]):
            reached = _reached(step, b)
            if reached is not False:
                out = s(step - b) if reached is True else jnp.where(reached, s(step - b), out)
        return out

    return schedule


def _reached(step, boundary: int):
    """``step >= boundary``: a Python bool for a Python int step (exact, no int32 overflow
    for huge steps), ``False`` for an integer array whose dtype cannot hold ``boundary``
    (an int32 count never reaches ``3 * 10**9``), else a boolean array."""
    if isinstance(step, (int, np.integer)):
        return bool(step >= boundary)
    step = jnp.asarray(step)
    if jnp.issubdtype(step.dtype, jnp.integer) and boundary > jnp.iinfo(step.dtype).max:
        return False
    return step >= boundary


# funcnet's earlier short names: the same functions.
constant = constant_schedule
cosine_decay = cosine_decay_schedule
piecewise_constant = piecewise_constant_schedule


# optax.schedules' namespace: the compound schedules and the hyperparameter injection,
# defined in their own modules and re-exported here (imported last: they import this one).
from funcnet.optim.schedules_compound import (  # noqa: E402, F401
    cosine_onecycle_schedule, linear_onecycle_schedule, piecewise_interpolate_schedule,
    sgdr_schedule, warmup_constant_schedule, warmup_cosine_decay,
    warmup_exponential_decay_schedule, warmup_cosine_decay_schedule)
from funcnet.optim.wrappers import (  # noqa: E402, F401
    InjectHyperparamsState, InjectStatefulHyperparamsState, inject_hyperparams)
