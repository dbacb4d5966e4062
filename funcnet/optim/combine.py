"""Combinators: ``chain``, ``masked`` and ``multi_transform`` (optax's names and states).

``chain`` is where every named optimizer checks its inputs once per ``update`` (float
or complex gradients, parameters of the same tree) and where a state of another
optimizer is reported with both tree structures.
"""
from __future__ import annotations

import inspect
from collections import namedtuple
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import (
    OptState, StateMismatchError, _ParamsPlaceholder, check_inexact_leaves, check_state,
    check_updates, current_learning_rate, optimizer, promote_dtypes)
from funcnet._describe import described

_map = jax.tree_util.tree_map


def _accepts_extra_args(update) -> bool:
    """Whether ``update`` takes ``**kwargs`` (optax's plain ``GradientTransformation``
    does not; those blocks get no extra arguments, as in ``optax.chain``)."""
    try:
        params = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_update(t, updates, state, params, extra_args):
    """``t.update(updates, state, params, **extra_args)``, dropping the extra arguments
    for an update that does not accept them."""
    if extra_args and not _accepts_extra_args(t.update):
        return t.update(updates, state, params)
    return t.update(updates, state, params, **extra_args)


@described
def chain(*transforms, name: str = "chain"):
    """Compose transformations: each one's updates are the next one's input.

    The state is the tuple of the states of ``transforms`` (as in optax). ``update``
    checks once that the gradients are float or complex and, when ``params`` is given,
    that it has their tree structure and shapes and is float or complex; every block's
    error is prefixed with ``name``. Extra keyword arguments of ``update`` go to every
    block that accepts them.

    Args:
      *transforms: optimizers (funcnet's or optax's), applied left to right.
      name: the name used in error messages (keyword-only; the aliases pass their own).

    Returns:
      An ``Optimizer``; :func:`~funcnet.optim.current_learning_rate` reports the learning
      rate of the first block that has one, times the factor of every block that scales
      it (:func:`~funcnet.optim.reduce_on_plateau`'s scale).

    Raises:
      TypeError: if an argument is not an optimizer.
      StateMismatchError (a ``ValueError``): a state of another optimizer, with both
        tree structures.

    Example:
      >>> import jax.numpy as jnp
      >>> from funcnet import optim
      >>> opt = optim.chain(optim.clip_by_global_norm(1.0), optim.scale(-2.0))
      >>> updates, _ = opt.update({"w": jnp.array([3.0, 4.0])}, opt.init(None))
      >>> print(updates["w"])
      [-1.2 -1.6]
    """
    for i, t in enumerate(transforms):
        _checks.check_optimizer(name, f"argument {i}", t)
    # a first block taking per-example gradients (DP-SGD's aggregate) makes the chain one
    per_example = bool(transforms) and getattr(transforms[0], "_per_example_grads", False)

    def init(params):
        check_inexact_leaves(name, "params", params)
        with _checks.context(name):
            return tuple(t.init(params) for t in transforms)

    def check_tuple(state):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise StateMismatchError(f"{name}: opt_state must be a tuple of "
                                     f"{len(transforms)} states (from init)")

    def update(updates, state, params=None, **extra_args):
        check_updates(name, updates, params, per_example)
        try:
            check_tuple(state)
            new_state = []
            for t, s in zip(transforms, state):
                with _checks.context(name):
                    updates, s = call_update(t, updates, s, params, extra_args)
                new_state.append(s)
        except StateMismatchError as err:
            raise StateMismatchError(_mismatch_message(name, init, updates, state, err)) from None
        return updates, tuple(new_state)

    def learning_rate(state):
        check_tuple(state)
        lr, factors = None, []
        for t, s in zip(transforms, state):
            factor_fn = getattr(t, "_learning_rate_factor_fn", None)
            if factor_fn is not None:
                factors.append(jnp.asarray(factor_fn(s)))
            elif lr is None:
                lr = current_learning_rate(t, s)
        if lr is None:
            return None
        for f in factors:   # e.g. reduce_on_plateau's scale (float32 for float32 params)
            dt = promote_dtypes(lr.dtype, f.dtype)
            lr = lr.astype(dt) * f.astype(dt)
        return lr

    return optimizer(init, update, learning_rate, per_example_grads=per_example)


def _mismatch_message(name, init, updates, state, err) -> str:
    """The block's message, then the structure given and the one ``init`` builds."""
    try:
        expected = str(jax.tree_util.tree_structure(jax.eval_shape(init, updates)))
    except Exception:  # noqa: BLE001 - the expected structure is only a courtesy
        expected = "(unknown)"
    head = str(err) if str(err).startswith(name) else f"{name}: {err}"
    return (f"{head}\n  opt_state given: {jax.tree_util.tree_structure(state)}\n"
            f"  this optimizer's: {expected}")


# ------------------------------------------------------------------------- masking


class MaskedState(NamedTuple):
    """The inner transformation's state, over the masked-in leaves only."""

    inner_state: Any


def _is_masked_node_class(cls) -> bool:
    """A NamedTuple class named ``MaskedNode`` without fields (funcnet's, optax's)."""
    return (isinstance(cls, type) and issubclass(cls, tuple) and cls.__name__ == "MaskedNode"
            and getattr(cls, "_fields", None) == ())


class _MaskedNodeType(type):
    """The metaclass of :class:`MaskedNode`: the class compares equal to every
    structurally equivalent class (a NamedTuple named ``MaskedNode`` without fields, such
    as ``optax.MaskedNode``) and counts their instances as its own.

    JAX compares the node classes of two tree structures with ``==``, so masked states
    (``masked``, ``multi_transform``, ``adamw(mask=...)``) of funcnet and optax have equal
    structures and move between the libraries in both directions, without funcnet
    importing optax. The hash stays the identity's: a dict keyed by the class itself
    tells the two apart (tree structures are not hashed by node class).
    """

    def __eq__(cls, other):
        return cls is other or (_is_masked_node_class(cls) and _is_masked_node_class(other))

    def __ne__(cls, other):
        return not _MaskedNodeType.__eq__(cls, other)

    __hash__ = type.__hash__

    def __instancecheck__(cls, obj):
        return _is_masked_node_class(type(obj))


class MaskedNode(namedtuple("MaskedNode", ()), metaclass=_MaskedNodeType):
    """Stands for a masked-out leaf (a node without children, skipped by tree_map).

    Interchangeable with ``optax.MaskedNode`` in tree structures (``==``) and
    ``isinstance`` (see ``_MaskedNodeType``).
    """

    __slots__ = ()


def _mask_callable(mask) -> bool:
    leaves = jax.tree_util.tree_leaves(_map(callable, mask))
    return bool(leaves) and all(leaves)


def _mask_tree(fn, mask, tree, what):
    """``mask`` (a tree of bools, a prefix of ``tree``'s, or a function of ``tree``)."""
    m = mask(tree) if _mask_callable(mask) else mask
    try:
        jax.tree_util.tree_structure(m).flatten_up_to(tree)
    except (ValueError, TypeError):
        raise ValueError(
            f"{fn}: mask tree structure is not a prefix of {what}:\n"
            f"  mask: {jax.tree_util.tree_structure(m)}\n"
            f"  {what}: {jax.tree_util.tree_structure(tree)}") from None
    return m


def _apply_mask(tree, mask_tree):
    return _map(lambda m, p: p if m else MaskedNode(), mask_tree, tree)


@described
def masked(inner, mask, *, mask_compatible_extra_args: bool = False):
    """Apply ``inner`` to the leaves where ``mask`` is True; pass the others through.

    The inner state covers the masked-in leaves only (the others are
    :class:`MaskedNode`), as in optax; e.g. no weight decay on biases::

        masked(add_decayed_weights(1e-4), lambda p: jax.tree_util.tree_map(
            lambda x: x.ndim > 1, p))

    Args:
      inner: the optimizer to apply.
      mask: a tree of bools with the structure of the parameters or a prefix of it, or a
        function ``params -> such a tree`` (static: it fixes the program).
      mask_compatible_extra_args: also mask extra ``update`` arguments that have the
        parameters' tree structure (keyword-only).

    Returns:
      An ``Optimizer`` with state :class:`MaskedState`.

    Raises:
      ValueError: a mask tree that is not a prefix of the parameters (both printed).
    """
    fn = "masked"
    _checks.check_optimizer(fn, "inner", inner)
    compat = _checks.static_bool(fn, "mask_compatible_extra_args", mask_compatible_extra_args)

    def init(params):
        if isinstance(params, _ParamsPlaceholder):   # tree_map_params's probe
            return MaskedState(inner_state=inner.init(params))
        m = _mask_tree(fn, mask, params, "params")
        return MaskedState(inner_state=inner.init(_apply_mask(params, m)))

    def update(updates, state, params=None, **extra_args):
        check_state(fn, state, MaskedState)
        m = _mask_tree(fn, mask, updates, "updates")
        if compat:
            structure = jax.tree_util.tree_structure(updates)
            extra_args = {k: (_apply_mask(v, m) if jax.tree_util.tree_structure(v) == structure
                              else v) for k, v in extra_args.items()}
        inner_params = None if params is None else _apply_mask(params, m)
        new, inner_state = call_update(inner, _apply_mask(updates, m), state.inner_state,
                                       inner_params, extra_args)
        out = _map(lambda keep, n, u: n if keep else u, m, new, updates)
        return out, state._replace(inner_state=inner_state)

    def learning_rate(state):
        check_state(fn, state, MaskedState)
        return current_learning_rate(inner, state.inner_state)

    return optimizer(init, update, learning_rate)


class MultiTransformState(NamedTuple):
    """One masked inner state per label (optax's ``PartitionState``)."""

    inner_states: Mapping[Hashable, OptState]


@described
def multi_transform(transforms, param_labels, *, mask_compatible_extra_args: bool = False):
    """Apply a different optimizer to each group of parameters (optax's
    ``multi_transform`` / ``partition``): ``transforms[label]`` to the leaves labelled
    ``label``, each through :func:`masked`.

    Args:
      transforms: ``{label: optimizer}``.
      param_labels: a tree of labels with the parameters' structure (or a prefix of
        it), or a function ``params -> such a tree``.
      mask_compatible_extra_args: as in :func:`masked` (keyword-only).

    Returns:
      An ``Optimizer`` with state :class:`MultiTransformState`;
      :func:`~funcnet.optim.current_learning_rate` gives None (one rate per group).

    Raises:
      ValueError: at ``init``, if a label has no transformation.
    """
    fn = "multi_transform"
    if not isinstance(transforms, Mapping):
        raise TypeError(f"{fn}: transforms must be a dict {{label: optimizer}}, got "
                        f"{type(transforms).__name__}")
    for label, t in transforms.items():
        _checks.check_optimizer(fn, f"transforms[{label!r}]", t)

    def parts(tree):
        labels = param_labels(tree) if callable(param_labels) else param_labels
        return {g: masked(t, _map(lambda label, g=g: label == g, labels),
                          mask_compatible_extra_args=mask_compatible_extra_args)
                for g, t in transforms.items()}, labels

    def init(params):
        groups, labels = parts(params)
        missing = set(jax.tree_util.tree_leaves(labels)) - set(transforms)
        if missing:
            raise ValueError(f"{fn}: labels {sorted(map(repr, missing))} have no "
                             f"transformation; transforms has {sorted(map(repr, transforms))}")
        return MultiTransformState({g: t.init(params) for g, t in groups.items()})

    def update(updates, state, params=None, **extra_args):
        check_state(fn, state, MultiTransformState)
        groups, _ = parts(updates)
        new = {}
        for g, t in groups.items():
            updates, new[g] = t.update(updates, state.inner_states[g], params, **extra_args)
        return updates, state._replace(inner_states=new)

    return optimizer(init, update)


partition = multi_transform  # optax's newer name
PartitionState = MultiTransformState
