"""Schedules composed of the basic ones (:mod:`funcnet.optim.schedules`), optax's names:
linear warm-ups followed by a constant, a cosine or an exponential decay, piecewise
interpolation, one-cycle and SGDR (warm restarts). The policy on arguments is the basic
schedules' (see there).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import Schedule
from funcnet.optim.schedules import (
    _as, _boundaries_and_scales, _cosine, _counts, _dtype, _values, constant_schedule,
    exponential_decay, join_schedules, linear_schedule)
from funcnet._describe import described


@described
def warmup_constant_schedule(init_value, peak_value, warmup_steps: int) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value``, then constant."""
    with _checks.context("warmup_constant_schedule"):
        return linear_schedule(init_value, peak_value, warmup_steps)


@described
def warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps: int, decay_steps: int,
                                 end_value=0.0, exponent=1.0) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value``, then cosine decay to
    ``end_value``::

        step < warmup_steps:  lr = init_value + (peak_value - init_value) step / warmup_steps
        otherwise:            cosine_decay_schedule(peak_value, decay_steps - warmup_steps,
                                  alpha=end_value / peak_value, exponent)(step - warmup_steps)

    ``decay_steps`` counts the warm-up too, as in optax.

    Args:
      init_value, peak_value, end_value: values >= 0.
      warmup_steps: int >= 0.
      decay_steps: int > ``warmup_steps``.
      exponent: >= 0.

    Returns:
      A schedule.

    References:
      Goyal et al., "Accurate, Large Minibatch SGD", 2017 (warm-up); Loshchilov & Hutter,
      "SGDR", ICLR 2017 (cosine).
    """
    fn = "warmup_cosine_decay_schedule"
    c = _counts(fn, warmup_steps=(warmup_steps, 0), decay_steps=(decay_steps, 1))
    if c["decay_steps"] <= c["warmup_steps"]:
        raise ValueError(f"{fn}: decay_steps must be > warmup_steps, got decay_steps="
                         f"{decay_steps}, warmup_steps={warmup_steps}")
    _values(fn, init_value=init_value, peak_value=peak_value, end_value=end_value,
            exponent=exponent)
    warmup = linear_schedule(init_value, peak_value, c["warmup_steps"])
    decay = _cosine_to(peak_value, end_value, c["decay_steps"] - c["warmup_steps"], exponent)
    return join_schedules([warmup, decay], [c["warmup_steps"]])


def _cosine_to(peak_value, end_value, steps: int, exponent=1.0) -> Schedule:
    """Cosine from ``peak_value`` (step 0) to ``end_value`` (step ``steps`` >= 1 and
    after): :func:`_cosine` with ``alpha = end_value / peak_value`` (0 when the peak is 0,
    as in optax)."""
    def schedule(step):
        dt = _dtype(peak_value, end_value, exponent)
        p, e = _as(peak_value, dt), _as(end_value, dt)
        alpha = jnp.where(p == 0, jnp.zeros((), dt), e / jnp.where(p == 0, 1, p))
        return _cosine(p, alpha, exponent, step, float(steps), dt)

    return schedule


@described
def warmup_exponential_decay_schedule(init_value, peak_value, warmup_steps: int,
                                      transition_steps: int, decay_rate,
                                      transition_begin: int = 0, staircase: bool = False,
                                      end_value=None) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps``, then
    :func:`exponential_decay` from ``peak_value`` (its step counted from the warm-up's
    end). Arguments as in those two functions."""
    with _checks.context("warmup_exponential_decay_schedule"):
        warmup = linear_schedule(init_value, peak_value, warmup_steps)
        decay = exponential_decay(peak_value, transition_steps, decay_rate, transition_begin,
                                  staircase, end_value)
        return join_schedules([warmup, decay], [warmup_steps])


@described
def piecewise_interpolate_schedule(interpolate_type: str, init_value,
                                   boundaries_and_scales: Mapping | None = None) -> Schedule:
    """Interpolate between the accumulated values of :func:`piecewise_constant_schedule`::

        b_0 = 0, v_0 = init_value;  b_k = k-th boundary, v_k = v_(k-1) * its scale
        b_k <= step < b_(k+1):  lr = interp(v_k, v_(k+1), (step - b_k) / (b_(k+1) - b_k))
        step >= last boundary:  lr = v_last

    ``interp`` is linear (:func:`linear_schedule`) or cosine
    (``v_(k+1) + (v_k - v_(k+1)) * ½(1 + cos(π p))``); an interval of length 0 (a
    boundary at 0) is skipped.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: value at step 0, >= 0.
      boundaries_and_scales: ``{boundary_step: scale}``, boundaries ints >= 0, scales
        >= 0; ``None`` or ``{}`` for a constant.

    Returns:
      A schedule.

    Example:
      >>> from funcnet import optim
      >>> sched = optim.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})
      >>> print([round(float(sched(s)), 6) for s in (0, 2, 4, 6, 8, 10)])
      [1.0, 0.55, 0.1, 0.0505, 0.001, 0.001]
    """
    fn = "piecewise_interpolate_schedule"
    kind = _checks.static_choice(fn, "interpolate_type", interpolate_type,
                                 ("linear", "cosine"))
    _values(fn, init_value=init_value)
    knots = [(0, init_value)]
    for b, scale in _boundaries_and_scales(fn, boundaries_and_scales):
        knots.append((b, knots[-1][1] * scale))
    with _checks.context(fn):
        return _interpolate(kind, knots)


def _interpolate(kind: str, knots: list) -> Schedule:
    """``knots = [(0, v_0), (b_1, v_1), ...]`` (boundaries increasing, equal ones allowed)
    joined by linear or cosine pieces, constant ``v_last`` after the last knot."""
    pieces = []
    for (b0, v0), (b1, v1) in zip(knots, knots[1:]):
        if b1 == b0:  # empty interval: only its end value, from b1 on, can show
            pieces.append(constant_schedule(v1))
        elif kind == "linear":
            pieces.append(linear_schedule(v0, v1, b1 - b0))
        else:
            pieces.append(_cosine_to(v0, v1, b1 - b0))
    if not pieces:
        return constant_schedule(knots[0][1])
    return join_schedules(pieces, [b for b, _ in knots[1:-1]])


def _onecycle(fn, kind, transition_steps, peak_value, pcts, div_factor, final_div_factor):
    """Both one-cycle schedules: their knots (``int(pct * T)`` truncates as optax's)."""
    steps = _checks.static_int(fn, "transition_steps", transition_steps, minimum=1)
    _values(fn, peak_value=peak_value)
    for name, d in (("div_factor", div_factor), ("final_div_factor", final_div_factor)):
        _checks.check_hyperparameter(fn, name, d, 0.0, low_inclusive=False)
    names = ("pct_start", "pct_final")
    pcts = [_checks.static_float(fn, n, p, 0.0, 1.0) for n, p in zip(names, pcts)]
    if len(pcts) == 2 and pcts[0] > pcts[1]:
        raise ValueError(f"{fn}: pct_start must be <= pct_final, got pct_start={pcts[0]:g}, "
                         f"pct_final={pcts[1]:g}")
    init = peak_value / div_factor
    values = [peak_value, init][:len(pcts)]
    knots = [(0, init), *[(int(p * steps), v) for p, v in zip(pcts, values)],
             (steps, init / final_div_factor)]
    with _checks.context(fn):
        return _interpolate(kind, knots)


@described
def linear_onecycle_schedule(transition_steps: int, peak_value, pct_start=0.3,
                             pct_final=0.85, div_factor=25.0, final_div_factor=1e4
                             ) -> Schedule:
    """One-cycle schedule with three linear phases (Smith & Topin 2017), as optax's::

        init = peak_value / div_factor;  a = int(pct_start T), b = int(pct_final T)
        [0, a]: init -> peak_value;  [a, b]: peak_value -> init;
        [b, T]: init -> init / final_div_factor;  constant after T = transition_steps

    Args:
      transition_steps: int >= 1.
      peak_value: maximum value, >= 0.
      pct_start, pct_final: fractions of ``transition_steps``,
        ``0 <= pct_start <= pct_final <= 1``.
      div_factor, final_div_factor: > 0.

    Returns:
      A schedule.

    References:
      Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
      Large Learning Rates", 2017, https://arxiv.org/abs/1708.07120.
    """
    return _onecycle("linear_onecycle_schedule", "linear", transition_steps, peak_value,
                     (pct_start, pct_final), div_factor, final_div_factor)


@described
def cosine_onecycle_schedule(transition_steps: int, peak_value, pct_start=0.3,
                             div_factor=25.0, final_div_factor=1e4) -> Schedule:
    """One-cycle schedule with two cosine phases (Smith & Topin 2017), as optax's::

        init = peak_value / div_factor;  a = int(pct_start T)
        [0, a]: cosine init -> peak_value;  [a, T]: cosine peak_value -> init /
        final_div_factor;  constant after T = transition_steps

    Args:
      transition_steps: int >= 1.
      peak_value: maximum value, >= 0.
      pct_start: fraction of ``transition_steps`` spent rising, in ``[0, 1]``.
      div_factor, final_div_factor: > 0.

    Returns:
      A schedule.

    References:
      Smith & Topin, "Super-Convergence", 2017, https://arxiv.org/abs/1708.07120.
    """
    return _onecycle("cosine_onecycle_schedule", "cosine", transition_steps, peak_value,
                     (pct_start,), div_factor, final_div_factor)


@described
def sgdr_schedule(cosine_kwargs: Iterable[Mapping]) -> Schedule:
    """SGD with warm restarts: :func:`warmup_cosine_decay_schedule` cycles joined end to
    end, cycle ``i`` from the sum of the earlier cycles' ``decay_steps`` on.

    Args:
      cosine_kwargs: one or more dicts of :func:`warmup_cosine_decay_schedule`
        arguments (``decay_steps``, the cycle's length, included).

    Returns:
      A schedule.

    References:
      Loshchilov & Hutter, "SGDR", ICLR 2017, https://arxiv.org/abs/1608.03983.
    """
    fn = "sgdr_schedule"
    if isinstance(cosine_kwargs, Mapping) or not isinstance(cosine_kwargs, Iterable):
        raise TypeError(f"{fn}: cosine_kwargs must be an iterable of dicts, got "
                        f"{type(cosine_kwargs).__name__}")
    schedules, ends = [], [0]
    for i, kwargs in enumerate(cosine_kwargs):
        if not isinstance(kwargs, Mapping):
            raise TypeError(f"{fn}: cosine_kwargs[{i}] must be a dict of "
                            f"warmup_cosine_decay_schedule arguments, got "
                            f"{type(kwargs).__name__}")
        with _checks.context(f"{fn}: cosine_kwargs[{i}]"):
            schedules.append(warmup_cosine_decay_schedule(**kwargs))
        ends.append(ends[-1] + kwargs["decay_steps"])
    if not schedules:
        raise ValueError(f"{fn}: cosine_kwargs is empty, expected at least one cycle")
    return join_schedules(schedules, ends[1:-1])


# funcnet's earlier short name: the same function.
warmup_cosine_decay = warmup_cosine_decay_schedule
