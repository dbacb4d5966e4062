"""optax 0.2.8's remaining wrappers and protocol helpers, with its names, signatures and
states: ``conditionally_transform`` / ``conditionally_mask`` (their states),
``named_chain``, ``flatten``, ``periodic_update``, ``inject_stateful_hyperparams``
(optax's deprecated alias of ``inject_hyperparams``), ``with_extra_args_support``,
``stateless``, ``stateless_with_tree_map``, ``init_empty_state`` and
``tree_map_params``; and optax's alias names of the protocol and empty states
(``GradientTransformation``, ``ScaleState``, ``Params``, ``WrappedSchedule``, ...).
"""
from __future__ import annotations

import collections
import warnings
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.optim.base import (
    EmptyState, Optimizer, OptState, Params, Schedule, StateMismatchError, Updates,
    _ParamsPlaceholder, check_count, check_state, check_trees_match, current_learning_rate,
    optimizer, promote_dtypes, safe_increment, zero_count, zeros_like_updates)
from funcnet.optim.combine import _accepts_extra_args, call_update, chain
from funcnet.optim.transforms import _stateless
from funcnet.optim.wrappers import _WrappedSchedule, inject_hyperparams
from funcnet._describe import described

_map = jax.tree_util.tree_map

# optax's names of the protocol (funcnet's Optimizer is both), of its type annotations
# and of empty states
GradientTransformation = Optimizer
GradientTransformationExtraArgs = Optimizer
ScaleState = ClipState = ClipByGlobalNormState = AddDecayedWeightsState = EmptyState
ScalarOrSchedule = Union[float, jax.Array, Schedule]
MaskOrFn = Union[Any, Callable[[Params], Any]]
TransformInitFn = Callable[[Params], OptState]
TransformUpdateFn = Callable[[Updates, OptState, Optional[Params]], tuple[Updates, OptState]]
TransformUpdateExtraArgsFn = Callable[..., tuple[Updates, OptState]]
ShouldSkipUpdateFunction = Callable[[Updates, jax.Array, Params], tuple[jax.Array, Any]]
WrappedSchedule = _WrappedSchedule


# ------------------------------------------------------------- protocol helpers


def init_empty_state(params) -> EmptyState:
    """The ``init`` of a stateless transformation (optax's ``init_empty_state``):
    ``EmptyState()`` whatever ``params``."""
    del params
    return EmptyState()


def with_extra_args_support(tx):
    """``tx`` with an ``update`` that accepts (and ignores) extra keyword arguments
    (optax's ``with_extra_args_support``). An optimizer whose ``update`` already takes
    ``**extra_args`` (every funcnet optimizer, optax's
    ``GradientTransformationExtraArgs``) is returned as is.

    Raises:
      TypeError: ``tx`` is not an optimizer.
    """
    _checks.check_optimizer("with_extra_args_support", "tx", tx)
    if _accepts_extra_args(tx.update):
        return tx

    def update(updates, state, params=None, **extra_args):
        del extra_args
        return tx.update(updates, state, params)

    return optimizer(tx.init, update, lambda state: current_learning_rate(tx, state))


def stateless(f):
    """A stateless transformation from ``f(updates, params) -> updates`` (optax's
    ``stateless``); ``params`` may be None. State ``EmptyState()``.

    Raises:
      TypeError: ``f`` is not callable.
    """
    _checks.check_callable("stateless", "f", f, "(updates, params) -> updates")
    return _stateless("stateless", f)


def stateless_with_tree_map(f):
    """A stateless transformation applying ``f(update_leaf, param_leaf) -> update_leaf``
    leaf by leaf (optax's ``stateless_with_tree_map``); ``param_leaf`` is None when
    ``update`` gets no ``params``.

    Raises:
      TypeError: ``f`` is not callable. ValueError (at ``update``): ``params`` of another
        tree than the updates.
    """
    fn = "stateless_with_tree_map"
    _checks.check_callable(fn, "f", f, "(update, param) -> update")

    def transform(updates, params):
        if params is None:
            return _map(lambda u: f(u, None), updates)
        check_trees_match(fn, "updates", updates, "params", params)
        return _map(f, updates, params)

    return _stateless(fn, transform)


def tree_map_params(initable, f, state, /, *rest, transform_non_params=None, is_leaf=None):
    """Apply ``f`` to every copy of the parameter tree inside an optimizer state (optax's
    ``tree_map_params``), e.g. to build the sharding specs of a state from those of the
    parameters::

        specs = tree_map_params(opt, lambda _, spec: spec, state, param_specs,
                                transform_non_params=lambda _: None)

    The copies are found by running ``init`` on a placeholder tree: the fields that
    ``init`` fills from the parameters (Adam's ``mu`` and ``nu``) get
    ``tree_map(f, copy, *rest)``; the others (counts) ``transform_non_params(value)``
    or are kept.

    Args:
      initable: an optimizer or its ``init`` function.
      f: applied leaf by leaf to each parameter copy and the leaves of ``rest``.
      state: the optimizer state.
      *rest: trees of the parameters' structure, passed to ``f`` (positional-only
        before them: ``initable``, ``f``, ``state``).
      transform_non_params: applied to every other leaf of the state (None: kept).
      is_leaf: passed to ``jax.tree_util.tree_map`` over the parameter copies (e.g.
        to stop at ``MaskedNode``-s).

    Returns:
      A tree of ``state``'s structure.

    Raises:
      TypeError: ``initable`` is neither callable nor has an ``init``.
    """
    fn = "tree_map_params"
    init = getattr(initable, "init", initable)
    _checks.check_callable(fn, "initable", init, "(params) -> state, or an optimizer")
    _checks.check_callable(fn, "f", f)
    with_placeholders = init(_ParamsPlaceholder())

    def leaf(marker, value):
        if isinstance(marker, _ParamsPlaceholder):
            return _map(f, value, *rest, is_leaf=is_leaf)
        return value if transform_non_params is None else transform_non_params(value)

    markers, treedef = jax.tree_util.tree_flatten(
        with_placeholders, is_leaf=lambda v: isinstance(v, _ParamsPlaceholder))
    try:
        values = treedef.flatten_up_to(state)
    except ValueError as err:
        raise ValueError(f"{fn}: state does not have the structure initable's init "
                         f"builds: {err}") from None
    return treedef.unflatten([leaf(m, v) for m, v in zip(markers, values)])


# --------------------------------------------------------------- conditional updates


class ConditionallyTransformState(NamedTuple):
    """optax's ``ConditionallyTransformState``: the inner state and the number of
    ``update`` calls so far (int32)."""

    inner_state: Any
    step: Any


class ConditionallyMaskState(NamedTuple):
    """optax's ``ConditionallyMaskState``: the number of ``update`` calls so far (int32)
    and the inner state."""

    step: Any
    inner_state: Any


def _conditionally(fn, cls, inner, should_transform_fn, forward_extra_args, zero):
    """``conditionally_transform`` (``zero`` False) and ``conditionally_mask`` (True)."""
    _checks.check_optimizer(fn, "inner", inner)
    _checks.check_callable(fn, "should_transform_fn", should_transform_fn,
                           "(step, **extra_args) -> bool")
    forward = _checks.static_bool(fn, "forward_extra_args", forward_extra_args)

    def init(params):
        return cls(step=zero_count(), inner_state=inner.init(params))

    def update(updates, state, params=None, **extra_args):
        check_state(fn, state, cls)

        def apply():
            return call_update(inner, updates, state.inner_state, params, extra_args)

        out = zeros_like_updates(apply)         # the inner updates' dtypes
        if not zero:
            out = _map(lambda u, o: u.astype(o.dtype), updates, out)
        pred = jnp.asarray(should_transform_fn(state.step, **(extra_args if forward else {})))
        if pred.shape != ():
            raise ValueError(f"{fn}: should_transform_fn must return a scalar, got shape "
                             f"{pred.shape}")
        new, inner_state = jax.lax.cond(pred.astype(jnp.bool_), apply,
                                        lambda: (out, state.inner_state))
        return new, state._replace(step=safe_increment(state.step), inner_state=inner_state)

    def learning_rate(state):
        check_state(fn, state, cls)
        return current_learning_rate(inner, state.inner_state)

    return optimizer(init, update, learning_rate)


@described
def conditionally_transform(inner, should_transform_fn, forward_extra_args=False):
    """Run ``inner`` only at the steps where ``should_transform_fn(step)`` is True; at
    the others pass the updates through unchanged and keep ``inner``'s state (optax's
    ``conditionally_transform``)::

        step = number of earlier update calls (0, 1, ...)
        u, s_inner <- inner.update(u, s_inner) if should_transform_fn(step) else (u, s_inner)

    Args:
      inner: the optimizer to run conditionally.
      should_transform_fn: ``step -> bool`` (an int32 scalar in, a scalar out; traced
        under ``jit``, so use ``jnp`` operations).
      forward_extra_args: also pass ``update``'s extra keyword arguments to
        ``should_transform_fn``.

    Returns:
      An ``Optimizer`` with state :class:`ConditionallyTransformState`. For zero
      updates at the skipped steps use :func:`conditionally_mask`.

    Raises:
      TypeError: ``inner`` is not an optimizer, ``should_transform_fn`` not callable,
        ``forward_extra_args`` not a bool. ValueError (at ``update``): a condition that
        is not a scalar.
    """
    return _conditionally("conditionally_transform", ConditionallyTransformState, inner,
                          should_transform_fn, forward_extra_args, zero=False)


@described
def conditionally_mask(inner, should_transform_fn, forward_extra_args=False):
    """Run ``inner`` only at the steps where ``should_transform_fn(step)`` is True; at
    the others return zero updates and keep ``inner``'s state (optax's
    ``conditionally_mask``). Arguments, raises: as :func:`conditionally_transform`.

    Returns:
      An ``Optimizer`` with state :class:`ConditionallyMaskState`.
    """
    return _conditionally("conditionally_mask", ConditionallyMaskState, inner,
                          should_transform_fn, forward_extra_args, zero=True)


# -------------------------------------------------------------------- named chain


@described
def named_chain(*args):
    """:func:`~funcnet.optim.chain` with a name per transformation (optax's
    ``named_chain``): the state is an ``OrderedDict`` ``{name: state}`` in the order of
    ``args``, so ``opt_state["clip"]`` reads one block's state.

    Args:
      *args: ``(name, transformation)`` pairs, names unique strings.

    Returns:
      An ``Optimizer`` whose state is an ``OrderedDict``; extra ``update`` arguments go
      to every block that accepts them.

    Raises:
      TypeError: an argument that is not a ``(str, optimizer)`` pair.
      ValueError: two transformations of the same name.
    """
    fn = "named_chain"
    for i, pair in enumerate(args):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(f"{fn}: argument {i} must be a (name, transformation) pair with "
                            f"a str name, got {type(pair).__name__} {pair!r:.60}")
        _checks.check_optimizer(fn, f"argument {i} ({pair[0]!r})", pair[1])
    names = [name for name, _ in args]
    if len(names) != len(set(names)):
        raise ValueError(f"{fn}: names must be unique, got {names}")
    inner = chain(*(t for _, t in args), name=fn)

    def as_tuple(state):
        if not isinstance(state, Mapping) or list(state) != names:
            got = list(state) if isinstance(state, Mapping) else type(state).__name__
            raise StateMismatchError(f"{fn}: opt_state must be a dict with keys {names} in "
                                     f"this order (from init), got {got}")
        return tuple(state[n] for n in names)

    def init(params):
        return collections.OrderedDict(zip(names, inner.init(params)))

    def update(updates, state, params=None, **extra_args):
        updates, new = inner.update(updates, as_tuple(state), params, **extra_args)
        return updates, collections.OrderedDict(zip(names, new))

    return optimizer(init, update, lambda state: inner._learning_rate_fn(as_tuple(state)))


# ------------------------------------------------------------------------ layouts


def _flatten_tree(tree):
    """The leaves raveled and concatenated in their promoted dtype (float64 zeros(0)
    for a tree without leaves)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.zeros((0,))
    dt = promote_dtypes(*[jnp.result_type(x) for x in leaves])
    return jnp.concatenate([jnp.ravel(x).astype(dt) for x in leaves])


def _unflatten_like(tree, flat):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    bounds = np.cumsum([np.size(x) for x in leaves])[:-1].tolist()
    parts = jnp.split(flat, bounds) if leaves else []
    return treedef.unflatten([p.reshape(np.shape(x)) for p, x in zip(parts, leaves)])


@described
def flatten(inner):
    """Run ``inner`` on the parameters and updates raveled into one vector (optax's
    ``flatten``): fewer, larger operations for a model of many small leaves. The state is
    ``inner``'s state of one vector; the updates come back in the tree of the updates.

    Leaves of several dtypes are concatenated in their promoted dtype (the updates keep
    it; ``apply_updates`` casts back). A block that works leaf by leaf (a per-leaf norm,
    trust ratio or Muon's matrices) sees one leaf: wrap only elementwise optimizers.

    Args:
      inner: the optimizer to run on the flat vector.

    Returns:
      An ``Optimizer`` whose state is ``inner``'s.

    Raises:
      TypeError: ``inner`` is not an optimizer.
    """
    fn = "flatten"
    _checks.check_optimizer(fn, "inner", inner)

    def init(params):
        return inner.init(_flatten_tree(params))

    def update(updates, state, params=None, **extra_args):
        if params is not None:
            check_trees_match(fn, "updates", updates, "params", params)
            params = _flatten_tree(params)
        flat, state = call_update(inner, _flatten_tree(updates), state, params, extra_args)
        return _unflatten_like(updates, flat), state

    return optimizer(init, update, lambda state: current_learning_rate(inner, state))


# ------------------------------------------------------------- target networks


def periodic_update(new_tensors, old_tensors, steps, update_period):
    """``new_tensors`` at the steps where ``steps % update_period == 0``, else
    ``old_tensors`` (optax's ``periodic_update``): the periodically refreshed target
    network of DQN (Mnih et al., 2015) or BYOL (Grill et al., 2020).

    Args:
      new_tensors: the online parameters.
      old_tensors: the slow copy, a tree of the same structure, shapes and dtypes.
      steps: an integer scalar (possibly traced), the online update count.
      update_period: an int or integer scalar array >= 1.

    Returns:
      ``new_tensors`` or ``old_tensors`` (selected under ``jit``).

    Raises:
      ValueError: trees that differ. TypeError: dtypes that differ, a non-integer
        ``steps`` or ``update_period``.

    References:
      Mnih et al., "Human-level control through deep reinforcement learning", Nature
      2015. Grill et al., "Bootstrap your own latent", NeurIPS 2020,
      https://arxiv.org/abs/2006.07733.
    """
    fn = "periodic_update"
    check_trees_match(fn, "new_tensors", new_tensors, "old_tensors", old_tensors)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(new_tensors)[0],
                            jax.tree_util.tree_leaves(old_tensors)):
        if jnp.result_type(a) != jnp.result_type(b):
            where = _checks.path_str(path) if path else ""
            raise TypeError(f"{fn}: new_tensors{where} has dtype "
                            f"{jnp.result_type(a)}, expected {jnp.result_type(b)} as in "
                            f"old_tensors")
    steps = jnp.asarray(steps)
    if not jnp.issubdtype(steps.dtype, jnp.integer) or steps.shape != ():
        raise TypeError(f"{fn}: steps must be an integer scalar, got {steps.dtype} with "
                        f"shape {steps.shape}")
    check_count(fn, "update_period", update_period, 1)
    period = jnp.asarray(update_period).astype(steps.dtype)
    return jax.lax.cond(steps % period == 0, lambda: new_tensors, lambda: old_tensors)


# ------------------------------------------------------------ deprecated aliases


def inject_stateful_hyperparams(inner_factory, static_args=(), hyperparam_dtype=None):
    """optax's deprecated name of :func:`~funcnet.optim.inject_hyperparams` (which takes
    stateful schedules too): warns a ``DeprecationWarning``, as optax, and returns
    ``inject_hyperparams(inner_factory, static_args, hyperparam_dtype)``."""
    warnings.warn("inject_stateful_hyperparams is deprecated, use inject_hyperparams "
                  "instead", DeprecationWarning, stacklevel=2)
    return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)
