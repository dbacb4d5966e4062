"""Learning-rate schedules: pure functions ``step -> value``, with optax's names.

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

from collections.abc import Iterable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.base import Schedule, check_nonnegative, promote_dtypes


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


def constant_schedule(value) -> Schedule:
    """``lr(step) = value``.

    Example:
      >>> from funcnet import optim
      >>> print(round(float(optim.constant_schedule(0.1)(7)), 6))
      0.1
    """
    _values("constant_schedule", value=value)
    return lambda step: _as(value, _dtype(value))


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


def warmup_constant_schedule(init_value, peak_value, warmup_steps: int) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value``, then constant."""
    with _checks.context("warmup_constant_schedule"):
        return linear_schedule(init_value, peak_value, warmup_steps)


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


# funcnet's earlier short names: the same functions.
constant = constant_schedule
cosine_decay = cosine_decay_schedule
warmup_cosine_decay = warmup_cosine_decay_schedule
piecewise_constant = piecewise_constant_schedule
