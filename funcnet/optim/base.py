"""The optimizer protocol, ``apply_updates``, ``current_learning_rate`` and optim's checks.

An optimizer is a pair of pure functions (optax's ``GradientTransformationExtraArgs``
protocol)::

    opt_state = opt.init(params)
    updates, opt_state = opt.update(grads, opt_state, params, **extra_args)
    params = apply_updates(params, updates)

``init`` maps a parameter pytree to a state; ``update`` maps gradients and the state to
updates (already scaled by ``-learning_rate``: they are *added* to the parameters) and
the next state; extra keyword arguments are ignored by blocks that do not use them. A
state is a NamedTuple (or a tuple of them, for ``chain``) whose leaves are JAX arrays,
with step counters as int32 scalars, so a state can be jitted, vmapped over
hyperparameters and seeds, scanned over and checkpointed. States carry optax's class and
field names where the algorithm is the same, and every block rebuilds the state it was
given with ``state._replace(...)``: a state made by optax can be continued by funcnet and
vice versa, and keeps its class (so a ``lax.scan`` carry stays stable).

Invariant: validation runs once, at construction (hyperparameters) and at trace time
(tree structures, dtypes); nothing is checked on traced values. Hyperparameters may be
Python numbers or JAX arrays, including tracers: an optimizer built inside a ``jit`` /
``vmap``-ed function with a traced learning rate trains one model per learning rate in
one compiled call. Concrete values must be finite and in range (learning rates >= 0);
they are cast to the dtype of the gradients, so float32 parameters work with float64
hyperparameters under ``jax_numpy_dtype_promotion="strict"``.

Mixed precision (as optax): a block's updates have the promoted dtype of the gradients
and its state (float32 updates for bfloat16 gradients of float32 weights, or from a
float32 accumulator of bfloat16 weights: rounded once, by ``apply_updates``); a state
keeps its dtypes (the parameters' or ``accumulator_dtype``/``mu_dtype``), where optax's
drift to a wider gradients' dtype.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = Any
Schedule = Callable[[jax.Array], jax.Array]

_map = jax.tree_util.tree_map


class _InitUpdate(NamedTuple):
    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


class Optimizer(_InitUpdate):
    """A pair of pure functions ``init(params) -> state`` and
    ``update(grads, state, params=None, **extra_args) -> (updates, state)``.

    A NamedTuple of two fields, like optax's ``GradientTransformation``: ``init, update =
    opt`` unpacks it and optax's ``chain``/``MultiSteps``/``masked`` accept it. funcnet's
    optimizers also carry (as an attribute outside the tuple) how to read their learning
    rate from a state; :func:`current_learning_rate` uses it.
    """

    _learning_rate_fn: Callable[[OptState], Any] | None = None
    _learning_rate_factor_fn: Callable[[OptState], Any] | None = None
    _per_example_grads: bool = False


def optimizer(init, update, learning_rate_fn=None, learning_rate_factor_fn=None, *,
              per_example_grads: bool = False) -> Optimizer:
    """An :class:`Optimizer`; ``learning_rate_fn(state)`` gives the next learning rate;
    ``learning_rate_factor_fn(state)`` the factor a block applies to the learning rate of
    the ``chain`` it is in (``reduce_on_plateau``'s scale); ``per_example_grads``: its
    ``update`` takes per-example gradients (the examples on axis 0 of every leaf, DP-SGD),
    which a ``chain`` it opens checks against the params without that axis."""
    opt = Optimizer(init, update)
    if learning_rate_fn is not None:
        opt._learning_rate_fn = learning_rate_fn
    if learning_rate_factor_fn is not None:
        opt._learning_rate_factor_fn = learning_rate_factor_fn
    if per_example_grads:
        opt._per_example_grads = True
    return opt


class EmptyState(NamedTuple):
    """State of a stateless transformation (no leaves)."""


@jax.tree_util.register_pytree_node_class
class _ParamsPlaceholder:
    """A tree node without children standing for the parameters: ``init`` of it marks
    where a state holds parameter copies (``tree_map_params``; ``masked`` lets it
    through, as optax's)."""

    def tree_flatten(self):
        return (), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux, children
        return cls()


# --------------------------------------------------------------------------- checks


class StateMismatchError(ValueError):
    """An optimizer state that does not belong to this optimizer (a ``ValueError``)."""


def check_hyperparameter(fn: str, name: str, value, low=None, high=None, **bounds) -> None:
    """A number that may be traced, but not a schedule (``TypeError`` with a hint)."""
    if callable(value):
        raise TypeError(
            f"{fn}: {name} must be a number or a scalar array, got a function (a "
            f"schedule?); only learning_rate and weight_decay accept schedules, wrap the "
            f"optimizer with inject_hyperparams to schedule {name}")
    _checks.check_hyperparameter(fn, name, value, low, high, **bounds)


def check_decay(fn: str, name: str, value) -> None:
    """A decay rate / momentum coefficient in [0, 1)."""
    check_hyperparameter(fn, name, value, 0.0, 1.0, high_inclusive=False)


def check_nonnegative(fn: str, name: str, value) -> None:
    check_hyperparameter(fn, name, value, 0.0)


def check_count(fn: str, name: str, value, minimum: int) -> None:
    """A number of steps: a Python int or an integer scalar array (possibly traced, so
    ``inject_hyperparams`` and vmapped sweeps work); a concrete one must be
    ``>= minimum``. ``TypeError`` for a float (``4.0``), a bool or a schedule."""
    is_int_array = (_checks.is_array(value) and jnp.issubdtype(value.dtype, jnp.integer)
                    and np.shape(value) == ())
    if not (is_int_array or (isinstance(value, (int, np.integer))
                             and not isinstance(value, (bool, np.bool_)))):
        raise TypeError(f"{fn}: {name} must be an int or an integer scalar array, got "
                        f"{type(value).__name__} {value!r:.60}")
    v = _checks.concrete(value)
    if v is not None and int(v) < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {int(v)}")


def check_scalar_or_schedule(fn: str, name: str, value) -> None:
    """A non-negative finite number or array (possibly traced), or a schedule.

    Negative values are refused (a deliberate difference from optax, which accepts a
    negative learning rate as gradient ascent: use ``scale(+lr)`` for that).
    """
    if value is None:
        raise TypeError(f"{fn}: {name} must be a number, a scalar array or a schedule "
                        f"step -> value, got None")
    if not callable(value):
        _checks.check_hyperparameter(fn, name, value, 0.0)


def scheduled(fn: str, name: str, value, count):
    """A hyperparameter that may be a schedule, at ``count``: ``value(count)``, which must
    be a scalar (checked at trace time: an array of another shape would scale each update
    elementwise by broadcasting, as a constant of that shape is refused), or ``value``."""
    if not callable(value):
        return value
    out = value(count)
    if jnp.shape(out) != ():
        raise ValueError(f"{fn}: {name} must be a scalar or a schedule of scalars, got a "
                         f"schedule that returns shape {jnp.shape(out)}")
    return out


def check_trees_match(fn: str, name_a: str, a: PyTree, name_b: str, b: PyTree) -> None:
    """``ValueError`` unless ``a`` and ``b`` have the same tree structure and leaf shapes.

    Both tree structures are printed on a mismatch. Runs on static structure only.
    """
    ta, tb = jax.tree_util.tree_structure(a), jax.tree_util.tree_structure(b)
    if ta != tb:
        raise ValueError(f"{fn}: {name_a} tree structure does not match {name_b}:\n"
                         f"  {name_a}: {ta}\n  {name_b}: {tb}{_look_alike(ta, tb)}")
    for (path, la), lb in zip(jax.tree_util.tree_flatten_with_path(a)[0],
                              jax.tree_util.tree_leaves(b)):
        if np.shape(la) != np.shape(lb):
            where = _checks.path_str(path)
            raise ValueError(f"{fn}: {name_a}{where} has shape {np.shape(la)}, expected "
                             f"{np.shape(lb)} as in {name_b}{where}")


def _class_difference(ta, tb):
    """The first pair of node classes that differ between two tree structures, or None."""
    da, db = ta.node_data(), tb.node_data()
    if da is not None and db is not None and da[0] is not db[0]:
        return da[0], db[0]
    for ca, cb in zip(ta.children(), tb.children()):
        found = _class_difference(ca, cb)
        if found is not None:
            return found
    return None


def _look_alike(ta, tb) -> str:
    """For two structures that print alike: the line naming their differing classes
    (e.g. two libraries' ``MaskedNode``), with modules; else ``""``."""
    found = _class_difference(ta, tb) if str(ta) == str(tb) else None
    if found is None:
        return ""
    ca, cb = (f"{c.__module__}.{c.__qualname__}" for c in found)
    return (f"\n  (the structures print alike but hold different classes of the same "
            f"name: {ca} and {cb})")


def check_inexact_leaves(fn: str, name: str, tree: PyTree) -> None:
    """``TypeError`` naming the leaf unless every leaf is a floating or complex array.

    Integer parameters would be truncated by ``apply_updates`` (an Adam step turns
    ``[1, 1]`` into ``[0, 0]``), so they are refused, not converted.
    """
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{fn}: {name}{_checks.path_str(path)} must have a floating or complex "
                f"dtype, got {dtype} with shape {np.shape(leaf)} (optimize a float copy "
                f"and keep integers out of the parameter tree)")


def _describe(state) -> str:
    fields = getattr(state, "_fields", None)
    if fields is not None:
        return f"{type(state).__name__}({', '.join(fields)})"
    return f"{type(state).__name__} {jax.tree_util.tree_structure(state)}"


def check_state(fn: str, state, cls: type, grads=None, field: str | None = None) -> None:
    """The state must have ``cls``'s fields (duck-typed: optax's class of the same
    algorithm passes), else :class:`StateMismatchError` naming both; with ``grads``, the
    tree ``state.<field>`` must match them (``ValueError`` printing both structures)."""
    if getattr(state, "_fields", None) != cls._fields:
        raise StateMismatchError(
            f"{fn}: opt_state is {_describe(state)}, expected {cls.__name__}("
            f"{', '.join(cls._fields)}): a state made by another optimizer? Build it with "
            f"this optimizer's init")
    if field is not None:
        check_trees_match(fn, "grads", grads, f"state.{field}", getattr(state, field))


def check_empty_state(fn: str, state) -> None:
    """A stateless block accepts any state without leaves (EmptyState, (), {}, None)."""
    if jax.tree_util.tree_leaves(state):
        raise StateMismatchError(
            f"{fn}: opt_state is {_describe(state)} with arrays, expected EmptyState(): a "
            f"state made by another optimizer? Build it with this optimizer's init")


def check_updates(fn: str, grads, params, per_example: bool = False) -> None:
    """What every public entry point checks once: float/complex grads, and params (when
    given) of the same structure and shapes (``per_example``: the grads' shapes without
    their axis 0, the examples) and a float/complex dtype."""
    check_inexact_leaves(fn, "grads", grads)
    if params is not None:
        if per_example:
            check_trees_match(fn, "grads without axis 0", _without_batch_axis(fn, grads),
                              "params", params)
        else:
            check_trees_match(fn, "grads", grads, "params", params)
        check_inexact_leaves(fn, "params", params)


def _without_batch_axis(fn: str, grads):
    """Shape stand-ins of per-example grads without axis 0 (``ValueError`` for a scalar
    leaf: an already averaged gradient)."""
    def one(path, g):
        if np.ndim(g) == 0:
            raise ValueError(f"{fn}: grads{_checks.path_str(path)} is a scalar: this "
                             f"optimizer takes per-example gradients, the examples on axis "
                             f"0 of every leaf")
        return jax.ShapeDtypeStruct(np.shape(g)[1:], jnp.result_type(g))
    return jax.tree_util.tree_map_with_path(one, grads)


def check_optional_dtype(fn: str, name: str, dtype):
    """``None`` (the parameters' dtype) or a floating / complex dtype (an accumulator's)."""
    return None if dtype is None else _checks.check_dtype(fn, name, dtype, kind=jnp.inexact)


# ------------------------------------------------------------------------ utilities


def promote_dtypes(*dtypes):
    """The standard JAX promotion of ``dtypes``, also under strict promotion mode."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*dtypes)


def tree_dtype(fn: str, tree, which: str) -> np.dtype:
    """The leaves' ``"lowest"`` dtype (it promotes to all the others) or ``"highest"``
    (all the others promote to it), as optax's ``tree.dtype(tree, which)``; JAX's
    default float for a tree without leaves. ``ValueError`` when there is none."""
    dtypes = {jnp.result_type(x) for x in jax.tree_util.tree_leaves(tree)}
    if not dtypes:
        return jnp.result_type(float)
    for d in dtypes:
        if all(promote_dtypes(d, e) == (e if which == "lowest" else d) for e in dtypes):
            return d
    raise ValueError(f"{fn}: params' dtypes {sorted(map(str, dtypes))} have no {which} one "
                     f"(none promotes to all the others)")


def cast_like(value, x: jax.Array) -> jax.Array:
    """``value`` (number, array or tracer) as an array of ``x``'s dtype."""
    return jnp.asarray(value).astype(jnp.result_type(x))


def _wide(x) -> np.dtype:
    """The real dtype in which scalar coefficients for ``x`` are formed: at least JAX's
    default float (float64 under ``jax_enable_x64``, as optax's Python-float arithmetic)."""
    dt = promote_dtypes(jnp.result_type(float), jnp.result_type(x))
    return jnp.finfo(dt).dtype


def one_minus(beta, x: jax.Array) -> jax.Array:
    """``1 - beta`` in ``x``'s dtype: a Python or NumPy number as optax's Python-scalar
    arithmetic forms it (``1 - 0.99999`` in float64, then rounded once: ``1 - float32(
    0.99999)`` is 1.4e-3 off), an array in at least float32 (``0.999`` is ``1.0`` in
    bfloat16, so casting ``beta`` first would give 0)."""
    if isinstance(beta, (int, float, np.number)) and not isinstance(beta, bool):
        return jnp.asarray(1 - beta).astype(jnp.result_type(x))
    return (1 - jnp.asarray(beta).astype(_wide(x))).astype(jnp.result_type(x))


def bias_correction(decay, count: jax.Array, x: jax.Array) -> jax.Array:
    """``1 - decay ** count`` formed in at least float32, then cast to ``x``'s dtype
    (``decay ** t`` rounds to 1 in bfloat16)."""
    dt = _wide(x)
    return (1 - jnp.asarray(decay).astype(dt) ** count.astype(dt)).astype(jnp.result_type(x))


def abs_sq(x: jax.Array) -> jax.Array:
    """``|x|^2`` elementwise: ``real(conj(x) x)`` for complex ``x``, ``x * x`` otherwise."""
    return (jnp.conj(x) * x).real if jnp.iscomplexobj(x) else x * x


def moment(decay, g: jax.Array, m: jax.Array, *, squared: bool = False) -> jax.Array:
    """``decay * m + (1 - decay) * g`` (``|g|^2`` when ``squared``), in the promoted
    dtype of ``g`` and ``m``; ``decay * m`` is rounded to ``m``'s dtype first and
    ``(1 - decay) * g`` to ``g``'s, as optax's Python-scalar arithmetic does."""
    dt = promote_dtypes(g.dtype, m.dtype)
    g = abs_sq(g) if squared else g
    return (cast_like(decay, m) * m).astype(dt) + (one_minus(decay, g) * g).astype(dt)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` in ``count``'s dtype, saturating at the dtype's largest value
    instead of overflowing (optax's ``safe_increment``); funcnet's counters are int32.

    Raises:
      ValueError: for a count that is neither an integer nor a float.
    """
    count = jnp.asarray(count)
    if jnp.issubdtype(count.dtype, jnp.integer):
        top = jnp.iinfo(count.dtype).max
    elif jnp.issubdtype(count.dtype, jnp.floating):
        top = jnp.finfo(count.dtype).max
    else:
        raise ValueError(f"safe_increment: count must have an integer or a floating dtype, "
                         f"got {count.dtype}")
    top = jnp.asarray(top, count.dtype)
    return jnp.where(count < top, count + jnp.ones((), count.dtype), top)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def zeros_like(tree, dtype=None):
    return _map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def zeros_like_updates(fn: Callable[[], tuple]):
    """Zeros of the shapes and dtypes of the updates ``fn()`` returns (first of its pair),
    found abstractly (``fn`` is not run): the skip branch of a ``lax.cond`` must match the
    update branch, whose updates may be wider than the gradients."""
    return _map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn)[0])


def select_tree(cond, if_true, if_false):
    """``jnp.where(cond, a, b)`` leaf by leaf, in the structure (and node classes) of
    ``if_false``: a wrapper that swaps in a freshly initialised inner state keeps the
    classes of the state it was given (optax's ones, in a state made by optax)."""
    treedef = jax.tree_util.tree_structure(if_false)
    true_leaves = jax.tree_util.tree_leaves(if_true)
    if len(true_leaves) != treedef.num_leaves:
        raise ValueError(f"select_tree: {len(true_leaves)} leaves, expected "
                         f"{treedef.num_leaves} as in {treedef}")
    return treedef.unflatten([jnp.where(cond, a, b) for a, b in
                              zip(true_leaves, jax.tree_util.tree_leaves(if_false))])


def split(treedef_source, pairs_tree, n: int):
    """Unzip a tree whose leaves are ``n``-tuples into ``n`` trees of ``treedef_source``."""
    treedef = jax.tree_util.tree_structure(treedef_source)
    parts = treedef.flatten_up_to(pairs_tree)
    return tuple(treedef.unflatten([p[i] for p in parts]) for i in range(n))


# ------------------------------------------------------------------- applying updates


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates`` leaf by leaf, in each parameter's dtype.

    Args:
      params: a pytree of floating or complex arrays.
      updates: a pytree of the same structure and shapes (as returned by ``update``).

    Returns:
      The new parameters, each leaf with the dtype of the corresponding ``params`` leaf
      (the sum is taken in the promoted dtype, then cast back).

    Raises:
      ValueError: if the structures or shapes differ (both structures are printed).
      TypeError: if a parameter has an integer dtype (optax would truncate the sum).
    """
    check_trees_match("apply_updates", "updates", updates, "params", params)
    check_inexact_leaves("apply_updates", "params", params)

    def add(p, u):
        pd = jnp.result_type(p)
        dt = promote_dtypes(pd, jnp.result_type(u))
        return (jnp.asarray(p).astype(dt) + jnp.asarray(u).astype(dt)).astype(pd)

    return _map(add, params, updates)


def incremental_update(new_tensors: Params, old_tensors: Params, step_size) -> Params:
    """Polyak averaging: ``step_size * new + (1 - step_size) * old`` leaf by leaf, in
    the promoted dtype of ``new`` and ``old`` (as optax: a float32 average of bfloat16
    weights stays float32).

    The moving average of parameters of target networks and of evaluation copies
    (optax's ``incremental_update``); ``step_size`` in [0, 1], possibly traced. For the
    debiased EMA of parameters, see :func:`~funcnet.optim.ema`.

    Raises:
      ValueError: for trees that differ, or a concrete ``step_size`` outside [0, 1].
    """
    fn = "incremental_update"
    check_hyperparameter(fn, "step_size", step_size, 0.0, 1.0)
    check_trees_match(fn, "new_tensors", new_tensors, "old_tensors", old_tensors)

    def average(n, o):  # each term in its tensor's dtype, the sum in the promoted one
        dt = promote_dtypes(n.dtype, o.dtype)
        return (cast_like(step_size, n) * n).astype(dt) + (one_minus(step_size, o) * o).astype(dt)

    return _map(average, new_tensors, old_tensors)


# ------------------------------------------------------------ current learning rate


def _injected_learning_rate(state):
    """``hyperparams["learning_rate"]`` of the first inject_hyperparams-like state found
    in the tree (duck-typed, so optax's states work too), else None."""
    hp = getattr(state, "hyperparams", None)
    if isinstance(hp, Mapping) and "learning_rate" in hp:
        return jnp.asarray(hp["learning_rate"])
    if isinstance(state, Mapping):
        children = state.values()
    elif isinstance(state, (tuple, list)):
        children = state
    else:
        return None
    for child in children:
        found = _injected_learning_rate(child)
        if found is not None:
            return found
    return None


def current_learning_rate(opt, opt_state) -> jax.Array | None:
    """The learning rate that the NEXT ``opt.update(..., opt_state, ...)`` will use.

    * funcnet optimizers built with a constant return it; with a schedule, they return
      ``schedule(count)`` at the state's count (the value the next step uses);
    * wrappers (``chain``, ``masked``, ``accumulate``/``MultiSteps``, ``apply_if_finite``,
      ``inject_hyperparams``) look inside; in a ``chain``, the first block with a
      learning rate wins; ``multi_transform`` gives None (one rate per group);
    * any other optimizer (optax's included): the ``hyperparams["learning_rate"]`` of an
      ``inject_hyperparams`` state anywhere in ``opt_state``. optax stores there the
      value used by the *last* update when the learning rate is a schedule (the current
      one for a constant or a manually set value);
    * else None (e.g. ``optax.adam(1e-3)``: its learning rate is not in its state).

    Args:
      opt: the optimizer (funcnet's or optax's).
      opt_state: its state.

    Returns:
      A scalar array (traced under ``jit``) or None.
    """
    fn = getattr(opt, "_learning_rate_fn", None)
    if fn is not None:
        return fn(opt_state)
    return _injected_learning_rate(opt_state)
