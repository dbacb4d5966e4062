"""Wrappers around an optimizer: ``apply_if_finite`` and ``inject_hyperparams``.

Both keep optax's state classes and field names, so ``state.hyperparams["learning_rate"]``
and ``state.notfinite_count`` read the same with either library.
"""
from __future__ import annotations

import functools
import inspect
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.base import (
    check_state, current_learning_rate, optimizer, promote_dtypes,
    safe_increment, zero_count, zeros_like_updates)
from funcnet.optim.combine import call_update
from funcnet._describe import call_text, described, describe_value


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite` (optax's fields).

    Attributes:
      notfinite_count: consecutive non-finite updates so far (reset by a finite one).
      last_finite: whether the last update was finite.
      total_notfinite: non-finite updates since ``init`` (never reset).
      inner_state: the wrapped optimizer's state.
    """

    notfinite_count: Any
    last_finite: Any
    total_notfinite: Any
    inner_state: Any


@described
def apply_if_finite(inner, max_consecutive_errors: int):
    """Skip updates whose gradients hold a NaN or an infinity (optax's
    ``apply_if_finite``): such a step returns zero updates and leaves ``inner``'s state
    unchanged, unless it is the ``max_consecutive_errors + 1``-th in a row, which is
    applied (so a run that stays broken does not stall silently).

    Args:
      inner: the optimizer to wrap.
      max_consecutive_errors: int >= 0.

    Returns:
      An ``Optimizer`` with state :class:`ApplyIfFiniteState`.
    """
    fn = "apply_if_finite"
    _checks.check_optimizer(fn, "inner", inner)
    _checks.static_int(fn, "max_consecutive_errors", max_consecutive_errors, minimum=0)

    def init(params):
        return ApplyIfFiniteState(notfinite_count=zero_count(),
                                  last_finite=jnp.array(True, jnp.bool_),
                                  total_notfinite=zero_count(), inner_state=inner.init(params))

    def update(updates, state, params=None, **extra_args):
        check_state(fn, state, ApplyIfFiniteState)
        leaves = jax.tree_util.tree_leaves(updates)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in leaves], jnp.bool_))
        count = jnp.where(finite, zero_count(), safe_increment(state.notfinite_count))

        def apply():
            return call_update(inner, updates, state.inner_state, params, extra_args)

        zeros = zeros_like_updates(apply)
        new, inner_state = jax.lax.cond(
            jnp.logical_or(finite, count > max_consecutive_errors), apply,
            lambda: (zeros, state.inner_state))
        return new, state._replace(
            notfinite_count=count, last_finite=finite, inner_state=inner_state,
            total_notfinite=jnp.where(finite, state.total_notfinite,
                                      safe_increment(state.total_notfinite)))

    def learning_rate(state):
        check_state(fn, state, ApplyIfFiniteState)
        return current_learning_rate(inner, state.inner_state)

    return optimizer(init, update, learning_rate)


# ------------------------------------------------------------------ injected values


class InjectStatefulHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams` (optax >= 0.2.5's class and fields).

    Attributes:
      count: updates done so far (int32).
      hyperparams: ``{name: value}`` of the numeric hyperparameters: the values used by
        the last update (at ``init``, by the first). Assigning a new value to a
        non-scheduled one changes the next update.
      hyperparams_states: ``{name: schedule state}`` of the scheduled ones.
      inner_state: the inner optimizer's state.
    """

    count: jax.Array
    hyperparams: dict
    hyperparams_states: dict
    inner_state: Any


class WrappedScheduleState(NamedTuple):
    """State of a plain schedule in :func:`inject_hyperparams`: its step count."""

    count: jax.Array


class _WrappedSchedule:
    """A plain schedule ``step -> value`` as a stateful one (optax's ``WrappedSchedule``)."""

    def __init__(self, schedule_fn: Callable):
        self.schedule_fn = schedule_fn

    def init(self):
        return WrappedScheduleState(count=zero_count())

    def update(self, state, **extra_args):
        del extra_args
        return state._replace(count=safe_increment(state.count))  # keeps optax's class

    def __call__(self, state, **extra_args):
        del extra_args
        return self.schedule_fn(state.count)


def _is_stateful_schedule(v) -> bool:
    return callable(v) and hasattr(v, "init") and hasattr(v, "update")


def _convert_floats(x, dtype, strong: bool = False):
    """Python floats, weakly typed and NumPy float arrays -> ``dtype``; other values as is.

    A concrete value becomes a NumPy array (the state holds ``jnp.asarray`` of it).
    ``strong``: also strongly typed float arrays (a schedule's value: optax's schedules
    return weakly typed values that optax converts; funcnet's return strongly typed ones,
    converted here so that the state holds the hyperparameter dtype either way).
    """
    if isinstance(x, jax.Array) and not strong and not getattr(x, "weak_type", False):
        return x
    current = x.dtype if hasattr(x, "dtype") else type(x)
    if not jnp.issubdtype(current, jnp.floating):
        return x
    if isinstance(x, (float, np.floating, np.ndarray)):  # cast by NumPy: concrete under
        return np.asarray(x).astype(dtype)  # jit too, so the inner constructor checks it
    return jnp.asarray(x, dtype=dtype)


def _tree_dtype(tree):
    dtypes = [jnp.result_type(x) for x in jax.tree_util.tree_leaves(tree)]
    return promote_dtypes(*dtypes) if dtypes else jnp.result_type(float)


def _rounding_hint(err: ValueError, given: dict, cast: dict, dtype) -> str:
    """For an error of the inner optimizer's constructor: the hyperparameters it names
    whose value the cast to ``dtype`` changed (``b2=0.999`` is 1.0 in bfloat16), and the
    fix; else ``""``."""
    changed = []
    for k, v in given.items():
        if not re.search(rf"\b{re.escape(k)}\b", str(err)):
            continue
        try:
            before, after = float(v), float(cast[k])
        except TypeError:  # an array of several values, or traced
            continue
        if before != after:
            changed.append(f"{k}={before!r} to {after!r}")
    if not changed:
        return ""
    return (f"\n  inject_hyperparams: float hyperparameters are cast to "
            f"{jnp.dtype(dtype).name} (hyperparam_dtype; default: the parameters' dtype), "
            f"which rounds {', '.join(changed)}: pass hyperparam_dtype=jnp.float32")


def _static_int_hint(err: TypeError, hp: dict) -> str:
    """The fix for an int hyperparameter the inner optimizer needs as a Python int (a size
    or a count that fixes its program): the state keeps ints as integer arrays, as
    optax's does, so it must be named in ``static_args``; ``""`` for other errors."""
    for name, value in hp.items():
        if (f"{name} must be" in str(err) and _checks.is_array(value)
                and jnp.issubdtype(value.dtype, jnp.integer)):
            return (f"\n  inject_hyperparams: {name} is kept in the state as an integer "
                    f"array (as optax keeps it); pass static_args=('{name}',) to keep it "
                    f"a Python int")
    return ""


def _structural_ints(inner_factory: Callable, other: dict, numeric: dict) -> set:
    """The names of the Python int hyperparameters ``inner_factory`` needs as Python ints
    (a size or a count that fixes its program: ``scale_by_lbfgs``'s ``memory_size``,
    ``galore``'s ``rank``, ``schedule_free_adamw``'s ``warmup_steps``), found by building
    the optimizer abstractly with each one traced: a ``TypeError`` marks it."""
    ints = [k for k, v in numeric.items()
            if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))]
    found = set()
    for name in ints:
        def build(value, name=name):
            inner_factory(**other, **{**numeric, name: value})
            return ()
        try:
            jax.eval_shape(build, numeric[name])
        except TypeError:  # also JAX's ConcretizationTypeError
            found.add(name)
        except Exception:  # noqa: BLE001  # another error is for init to report
            pass
    return found


def inject_hyperparams(inner_factory: Callable, static_args=(), hyperparam_dtype=None):
    """Make the numeric hyperparameters of ``inner_factory`` part of the state, so that
    they can be scheduled, read and changed between steps (optax's
    ``inject_hyperparams``)::

        opt = inject_hyperparams(adam)(learning_rate=cosine_decay_schedule(1e-3, 1000),
                                       b1=0.9)
        state = opt.init(params)
        state.hyperparams["b1"] = 0.95          # used by the next update

    At each update, a schedule is evaluated at its own count (0 for the first update)
    and the inner optimizer is rebuilt with the current values (so concrete values are
    validated by its constructor; traced ones are not).

    Args:
      inner_factory: a function returning an optimizer, e.g. :func:`adam`.
      static_args: names of arguments that are not hyperparameters (e.g. a callable
        that is not a schedule); bools and non-numbers are static anyway. So is a Python
        int that ``inner_factory`` needs as a Python int because it fixes the optimizer's
        program (``scale_by_lbfgs``'s ``memory_size``, ``galore``'s ``rank``,
        ``schedule_free_adamw``'s ``warmup_steps``, ``adafactor``'s
        ``min_dim_size_to_factor``): found by building the optimizer once with that int
        traced, it is left out of ``state.hyperparams`` (optax keeps it there as an integer
        array, which works eagerly only). Other ints are kept in the state as integer
        arrays, as optax keeps them.
      hyperparam_dtype: dtype of float hyperparameters (default: the highest dtype of
        the parameters).

    Returns:
      A function with ``inner_factory``'s arguments that returns an ``Optimizer`` with
      state :class:`InjectStatefulHyperparamsState`.

    Raises:
      ValueError: ``static_args`` names an argument ``inner_factory`` does not have.
    """
    fn = "inject_hyperparams"
    _checks.check_callable(fn, "inner_factory", inner_factory)
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static <= set(signature.parameters):
        raise ValueError(f"{fn}: static_args {sorted(static)} must be arguments of "
                         f"inner_factory, which has {sorted(signature.parameters)}")

    @functools.wraps(inner_factory)  # its name, docstring and signature
    def wrapped(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        scheduled, numeric, other = {}, {}, {}
        for name, value in bound.arguments.items():
            if name in static or isinstance(value, (bool, np.bool_)):
                other[name] = value
            elif _is_stateful_schedule(value):
                scheduled[name] = value
            elif callable(value):
                scheduled[name] = _WrappedSchedule(value)
            elif isinstance(value, (int, float, np.ndarray, jax.Array)):
                numeric[name] = value
            else:
                other[name] = value
        for name in _structural_ints(inner_factory, other, numeric):
            other[name] = numeric.pop(name)

        def dtype_for(params):
            return hyperparam_dtype if hyperparam_dtype is not None else _tree_dtype(params)

        def values(given, sched_states, dt, extra_args):
            """The hyperparameters in ``dt`` (scheduled ones at their states) and the
            inner optimizer built with them."""
            raw = {**given, **{k: f(sched_states[k], **extra_args) for k, f in scheduled.items()}}
            hp = {k: _convert_floats(v, dt, strong=k in scheduled) for k, v in raw.items()}
            try:
                return hp, inner_factory(**other, **hp)
            except ValueError as err:
                hint = _rounding_hint(err, raw, hp, dt)
                if not hint:
                    raise
                raise ValueError(f"{err}{hint}") from err
            except TypeError as err:
                hint = _static_int_hint(err, hp)
                if not hint:
                    raise
                raise TypeError(f"{err}{hint}") from err

        def init(params):
            dt = dtype_for(params)
            sched_states = {k: f.init() for k, f in scheduled.items()}
            hp, inner = values(numeric, sched_states, dt, {})
            return InjectStatefulHyperparamsState(
                count=zero_count(), hyperparams={k: jnp.asarray(v) for k, v in hp.items()},
                hyperparams_states=sched_states, inner_state=inner.init(params))

        def update(updates, state, params=None, **extra_args):
            check_state(fn, state, InjectStatefulHyperparamsState)
            hp, inner = values(state.hyperparams, state.hyperparams_states, dtype_for(params),
                               extra_args)
            sched_states = {k: f.update(state.hyperparams_states[k], **extra_args)
                            for k, f in scheduled.items()}
            new, inner_state = call_update(inner, updates, state.inner_state, params, extra_args)
            hp = {k: jnp.asarray(v) for k, v in hp.items()}
            return new, state._replace(count=safe_increment(state.count), hyperparams=hp,
                                       hyperparams_states=sched_states, inner_state=inner_state)

        def learning_rate(state):
            check_state(fn, state, InjectStatefulHyperparamsState)
            if "learning_rate" in scheduled:
                return jnp.asarray(scheduled["learning_rate"](
                    state.hyperparams_states["learning_rate"]))
            if "learning_rate" in state.hyperparams:
                return jnp.asarray(state.hyperparams["learning_rate"])
            return None

        opt = optimizer(init, update, learning_rate)
        opt._description = call_text(
            f"inject_hyperparams({describe_value(inner_factory)}, static_args="
            f"{describe_value(sorted(static))}, hyperparam_dtype="
            f"{describe_value(hyperparam_dtype)})", signature, args, kwargs)
        return opt

    return wrapped


class InjectHyperparamsState(NamedTuple):
    """optax's legacy (deprecated) 3-field state, kept for the name: optax's and funcnet's
    :func:`inject_hyperparams` both return :class:`InjectStatefulHyperparamsState`."""

    count: jax.Array
    hyperparams: dict
    inner_state: Any
