"""Line searches (optax's ``scale_by_backtracking_linesearch``) and
:func:`value_and_grad_from_state`, with the helpers the zoom line search
(:mod:`.linesearch_zoom`) and L-BFGS (:mod:`.lbfgs`) share.

A line search is a block whose ``update`` takes optax's extra keyword arguments::

    updates, state = opt.update(grads, state, params, value=f(params), grad=grads,
                                value_fn=f, **data)

``value`` and ``grad`` are the loss and its gradient at ``params``, ``value_fn(params,
**data)`` the loss (``data``: the extra keyword arguments that name parameters of
``value_fn``; any other one is a ``TypeError``, as in optax). The block evaluates
``value_fn`` along the line ``params + eta * updates`` inside one ``lax.while_loop``
and returns ``eta * updates``. Names, signatures, defaults and state classes are optax
0.2.8's (``ScaleByBacktrackingLinesearchState`` with ``BacktrackingLinesearchInfo``), so
states move between the libraries; a state keeps its dtypes (as optax's ``cast_like``).
"""
from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.contrib_common import tree_vdot
from funcnet.optim.base import (
    Updates, check_count, check_hyperparameter, check_nonnegative, check_state, optimizer,
    promote_dtypes, zeros_like)
from funcnet._describe import described

_map = jax.tree_util.tree_map


# ------------------------------------------------------------------ shared helpers


def add_scale(x, eta, y):
    """``x + eta * y`` leaf by leaf (optax's ``tree.add_scale``), in the promoted dtype."""
    eta = jnp.asarray(eta)
    with jax.numpy_dtype_promotion("standard"):
        return _map(lambda a, b: a + eta * b, x, y)


def scale_tree(eta, tree):
    """``eta * tree``, each leaf in the promoted dtype of ``eta`` and the leaf."""
    def one(u):
        dt = promote_dtypes(jnp.result_type(eta), u.dtype)
        return jnp.asarray(eta).astype(dt) * u.astype(dt)
    return _map(one, tree)


def cast_tree_like(tree, other):
    """``tree``'s leaves with the dtypes of ``other``'s, in ``other``'s structure (node
    classes included: a state made by optax stays optax's, as optax's ``cast_like``)."""
    leaves, treedef = jax.tree_util.tree_flatten(other)
    return treedef.unflatten([jnp.asarray(t).astype(jnp.result_type(o)) for t, o in
                              zip(jax.tree_util.tree_leaves(tree), leaves, strict=True)])


def real_dtype(params):
    """The real dtype of the first leaf of ``params`` (the line search's scalars)."""
    leaves = jax.tree_util.tree_leaves(params)
    dt = jnp.result_type(leaves[0]) if leaves else jnp.result_type(float)
    return jnp.finfo(dt).dtype


def default_int(value) -> jax.Array:
    """``value`` as JAX's default int (int64 under x64, as optax's ``jnp.asarray(0)``),
    not weakly typed: a jitted loop sees the same types before and after a step."""
    return jnp.asarray(value, jnp.result_type(int))


def default_float(value) -> jax.Array:
    """``value`` as JAX's default float, not weakly typed (see :func:`default_int`)."""
    return jnp.asarray(value, jnp.result_type(float))


def value_fn_kwargs(fn: str, value_fn, extra_args: Mapping) -> dict:
    """The extra arguments that name a parameter of ``value_fn`` (optax's split);
    ``TypeError`` naming any other one."""
    try:
        names = set(inspect.signature(value_fn).parameters)
    except (TypeError, ValueError):
        names = set()
    unused = sorted(k for k in extra_args if k not in names)
    if unused:
        raise TypeError(f"{fn}: update got keyword arguments {unused} that value_fn does "
                        f"not take (extra arguments of update go to value_fn)")
    return dict(extra_args)


def check_line_args(fn: str, params, value, grad, value_fn) -> None:
    """What a line search's ``update`` needs besides the updates (``TypeError``)."""
    for name, got, what in (("params", params, "the current parameters"),
                            ("value", value, "the loss at params"),
                            ("grad", grad, "the gradient at params"),
                            ("value_fn", value_fn, "the loss function")):
        if got is None:
            raise TypeError(f"{fn}: update needs {name}= ({what}); call update(grads, "
                            f"state, params, value=value, grad=grad, value_fn=f)")
    _checks.check_callable(fn, "value_fn", value_fn, "params -> scalar loss")


def check_factor(fn: str, name: str, value, low: float, allow_inf: bool = False) -> None:
    """A number >= ``low`` (``math.inf`` too when ``allow_inf``), possibly traced."""
    v = _checks.concrete(value) if not callable(value) else None
    if allow_inf and v is not None and v.shape == () and math.isinf(float(v)) and v > 0:
        return
    check_hyperparameter(fn, name, value, low)


def failed_print(verbose: bool, failed, message: str, **values) -> None:
    """``jax.debug.print(message)`` when ``failed`` (traced), if ``verbose``."""
    if verbose:
        jax.lax.cond(failed, lambda: jax.debug.print(message, ordered=True, **values),
                     lambda: None)


# ---------------------------------------------------------- value_and_grad_from_state


def _find(state, key: str, found: list) -> list:
    """Every field named ``key`` of a NamedTuple (or key of a dict) inside ``state``."""
    fields = getattr(state, "_fields", None)
    if fields is not None:
        for name in fields:
            child = getattr(state, name)
            if name == key:
                found.append(child)
            else:
                _find(child, key, found)
    elif isinstance(state, Mapping):
        for name, child in state.items():
            if name == key:
                found.append(child)
            else:
                _find(child, key, found)
    elif isinstance(state, (tuple, list)):
        for child in state:
            _find(child, key, found)
    return found


def value_and_grad_from_state(value_fn):
    """``jax.value_and_grad(value_fn)`` that reuses the value and gradient a line search
    stored in the optimizer state (optax's ``value_and_grad_from_state``).

    The returned function ``(params, *args, state, **kwargs) -> (value, grad)`` reads the
    fields ``value`` and ``grad`` of the state (of :func:`scale_by_zoom_linesearch`, or
    of :func:`scale_by_backtracking_linesearch` with ``store_grad=True``: the loss and
    gradient at the point the last line search accepted, i.e. at ``params``) and returns
    them when the value is finite; otherwise (the first step: ``init`` stores ``inf``)
    it computes ``jax.value_and_grad(value_fn)(params, *args, **kwargs)`` (a
    ``lax.cond``). Only for a deterministic loss: a stored value is that of the last
    ``value_fn`` call.

    Example: the loop in :func:`~funcnet.optim.lbfgs`'s docstring (optax's): ``value,
    grad = value_and_grad(params, state=state)`` then ``opt.update(grad, state, params,
    value=value, grad=grad, value_fn=f)``.

    Raises:
      TypeError: ``value_fn`` is not callable.
      ValueError (at the call): the state holds no ``value``/``grad`` field, more than
        one, or ``grad`` is ``None`` (``store_grad=False``).
    """
    fn = "value_and_grad_from_state"
    _checks.check_callable(fn, "value_fn", value_fn, "params -> scalar loss")

    def value_and_grad(params, *fn_args, state, **fn_kwargs):
        got = {}
        for key in ("value", "grad"):
            found = _find(state, key, [])
            if len(found) != 1 or found[0] is None:
                what = "none" if not found else ("None" if len(found) == 1 else
                                                 f"{len(found)} of them")
                raise ValueError(
                    f"{fn}: the state must hold exactly one field {key!r} (a line "
                    f"search's; backtracking needs store_grad=True), found {what}")
            got[key] = found[0]
        value, grad = got["value"], got["grad"]
        return jax.lax.cond(
            jnp.isfinite(value), lambda p, a, k: (value, grad),
            lambda p, a, k: jax.value_and_grad(value_fn)(p, *a, **k),
            params, fn_args, fn_kwargs)

    return value_and_grad


# ------------------------------------------------------------ backtracking search


class BacktrackingLinesearchInfo(NamedTuple):
    """optax's ``BacktrackingLinesearchInfo``: the number of ``value_fn`` evaluations of
    the last search and its final sufficient-decrease error (0: success)."""

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """optax's ``ScaleByBacktrackingLinesearchState``: the accepted learning rate, the
    loss there, the gradient there (``None`` unless ``store_grad``) and the info."""

    learning_rate: jax.Array
    value: jax.Array
    grad: Optional[Updates]
    info: BacktrackingLinesearchInfo


class _Backtrack(NamedTuple):
    learning_rate: jax.Array
    new_value: jax.Array
    new_grad: Any
    decrease_error: jax.Array
    iter_num: jax.Array


@described
def scale_by_backtracking_linesearch(max_backtracking_steps, slope_rtol=1e-4,
                                     decrease_factor=0.8, increase_factor=1.5,
                                     max_learning_rate=1.0, atol=0.0, rtol=0.0,
                                     store_grad=False, verbose=False):
    """Backtracking (Armijo) line search, optax's ``scale_by_backtracking_linesearch``.

    With ``w`` the params, ``u`` the updates, ``f = value_fn``, ``s = Re<u, conj(grad)>``
    (the slope; ``u`` must be a descent direction, ``s < 0``), the search starts at
    ``eta = min(increase_factor * eta_prev, max_learning_rate)`` and multiplies ``eta``
    by ``decrease_factor`` until::

        err(eta) = max(f(w + eta u) - (1 + rtol) f(w) - eta slope_rtol s, 0) <= atol

    (a NaN error counts as ``inf``), for at most ``max_backtracking_steps + 1``
    evaluations of ``f``. The output is ``eta u`` (``0`` when the last error is
    ``inf``); the state keeps ``eta`` (the next search's start), ``f`` there and, with
    ``store_grad``, the gradient there (one ``vjp`` at the accepted point), for
    :func:`value_and_grad_from_state`.

    Args:
      max_backtracking_steps: an int >= 0.
      slope_rtol: >= 0, the Armijo constant ``c``.
      decrease_factor: in (0, 1].
      increase_factor: >= 1 (``math.inf``: start every search at max_learning_rate).
      max_learning_rate: >= 0.
      atol, rtol: >= 0, absolute and relative tolerances of the criterion.
      store_grad: keep the gradient at the accepted point in the state.
      verbose: print (``jax.debug.print``) when a search fails.

    Returns:
      An ``Optimizer`` with state :class:`ScaleByBacktrackingLinesearchState`; its
      ``update`` needs ``params``, ``value=``, ``grad=`` and ``value_fn=``; other keyword
      arguments go to ``value_fn``. Usage: ``chain(sgd(1.0),
      scale_by_backtracking_linesearch(15))`` in the loop of
      :func:`value_and_grad_from_state`.

    References:
      Nocedal & Wright, Numerical Optimization, 1999, Algorithm 3.1. Vaswani et al.,
      "Painless Stochastic Gradient", 2019, https://arxiv.org/abs/1905.09997.
    """
    fn = "scale_by_backtracking_linesearch"
    check_count(fn, "max_backtracking_steps", max_backtracking_steps, 0)
    check_nonnegative(fn, "slope_rtol", slope_rtol)
    check_hyperparameter(fn, "decrease_factor", decrease_factor, 0.0, 1.0, low_inclusive=False)
    check_factor(fn, "increase_factor", increase_factor, 1.0, allow_inf=True)
    check_nonnegative(fn, "max_learning_rate", max_learning_rate)
    check_nonnegative(fn, "atol", atol)
    check_nonnegative(fn, "rtol", rtol)
    store_grad = _checks.static_bool(fn, "store_grad", store_grad)
    verbose = _checks.static_bool(fn, "verbose", verbose)

    def init(params):
        rd = real_dtype(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.asarray(1.0, rd), value=jnp.asarray(jnp.inf, rd),
            grad=zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(default_int(0), jnp.asarray(jnp.inf, rd)))

    def update(updates, state, params=None, *, value=None, grad=None, value_fn=None,
               **extra_args):
        check_state(fn, state, ScaleByBacktrackingLinesearchState)
        check_line_args(fn, params, value, grad, value_fn)
        kwargs = value_fn_kwargs(fn, value_fn, extra_args)
        f = functools.partial(value_fn, **kwargs)
        rd = real_dtype(params)
        with jax.numpy_dtype_promotion("standard"):
            slope = jnp.real(tree_vdot(updates, _map(jnp.conj, grad))).astype(rd)
            value = jnp.asarray(value).astype(rd)
            c, tol, r = (jnp.asarray(x).astype(rd) for x in (slope_rtol, atol, rtol))

            def decrease_error(eta, new_value):
                err = new_value - (1 + r) * value - eta * c * slope
                return jnp.maximum(jnp.where(jnp.isnan(err), jnp.inf, err), 0)

            def searching(s):
                return ~(s.decrease_error <= tol) & (s.iter_num <= max_backtracking_steps)

            def step(s):
                eta = jnp.where(s.iter_num > 0, decrease_factor * s.learning_rate,
                                s.learning_rate).astype(rd)
                new_params = add_scale(params, eta, updates)
                if store_grad:
                    new_value, vjp = jax.vjp(f, new_params)
                    err = decrease_error(eta, new_value)
                    stop = (err <= tol) | (s.iter_num == max_backtracking_steps)
                    new_grad = jax.lax.cond(stop, lambda: vjp(jnp.ones_like(new_value))[0],
                                            lambda: s.new_grad)
                else:
                    new_value, new_grad = f(new_params), s.new_grad
                    err = decrease_error(eta, new_value)
                return cast_tree_like(_Backtrack(eta, new_value, new_grad, err,
                                                 s.iter_num + 1), s)

            start = jnp.minimum(increase_factor * state.learning_rate, max_learning_rate)
            s = jax.lax.while_loop(searching, step, _Backtrack(
                start.astype(rd), value, zeros_like(params), jnp.asarray(jnp.inf, rd),
                jnp.asarray(0, jnp.int32)))
        failed_print(verbose, s.decrease_error > tol,
                     f"{fn}: no step size with sufficient decrease found (value {{value}}, "
                     f"slope {{slope}}, step {{eta}}, decrease error {{err}})",
                     value=value, slope=slope, eta=s.learning_rate, err=s.decrease_error)
        eta = jnp.where(jnp.isinf(s.decrease_error), 0, s.learning_rate).astype(rd)
        new_state = ScaleByBacktrackingLinesearchState(
            eta, s.new_value, s.new_grad if store_grad else None,
            BacktrackingLinesearchInfo(s.iter_num, s.decrease_error))
        return scale_tree(eta, updates), cast_tree_like(new_state, state)

    return optimizer(init, update)
