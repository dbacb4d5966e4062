"""The optimizer protocol, ``chain``, ``apply_updates`` and trace-time checks.

An optimizer is a pair of pure functions (optax's ``GradientTransformation`` protocol)::

    opt_state = opt.init(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = apply_updates(params, updates)

``init`` maps a parameter pytree to a state; ``update`` maps gradients and the state to
updates (already scaled by ``-learning_rate``: they are *added* to the parameters) and
the next state. A state is a NamedTuple (or a tuple of NamedTuples, for ``chain``) whose
leaves are all JAX arrays, with step counters as int32 scalars, so a state can be
jitted, vmapped over hyperparameters and seeds, scanned over, and checkpointed.

Hyperparameters (learning rate, betas, eps, weight decay) may be Python numbers, NumPy
numbers or JAX arrays, including tracers: an optimizer built *inside* a
``jax.jit`` / ``jax.vmap``-ed function with a traced learning rate trains one model per
learning rate in a single compiled call. Values are validated only when they are
concrete; they are cast to the dtype of the gradients, so float32 parameters work with a
float64 learning rate under ``jax_numpy_dtype_promotion="strict"``.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
Params = PyTree
Updates = PyTree
OptState = Any
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = Any  # float | jax.Array | Schedule


class Optimizer(NamedTuple):
    """A pair of pure functions: ``init(params) -> state`` and
    ``update(grads, state, params=None) -> (updates, state)``."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


class EmptyState(NamedTuple):
    """State of a stateless transformation (no leaves)."""


# --------------------------------------------------------------------------- checks


def concrete_value(x) -> np.ndarray | None:
    """``x`` as a float NumPy array when it is a concrete number, else None.

    Tracers (values under ``jit``/``vmap``/``grad``) and callables (schedules) return None:
    they are never validated.
    """
    if x is None or callable(x) or isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x, dtype=np.float64)
    except Exception:  # noqa: BLE001 - anything that is not a plain number is skipped
        return None


def _fmt(v: np.ndarray) -> str:
    return f"{v.item():g}" if v.size == 1 else np.array2string(v)


def check_nonnegative(fn: str, name: str, value) -> None:
    """Raise ``ValueError`` unless a concrete ``value`` is >= 0 (NaN fails)."""
    v = concrete_value(value)
    if v is not None and not np.all(v >= 0):
        raise ValueError(f"{fn}: {name} must be >= 0, got {_fmt(v)}")


def check_positive(fn: str, name: str, value) -> None:
    """Raise ``ValueError`` unless a concrete ``value`` is > 0 (NaN fails)."""
    v = concrete_value(value)
    if v is not None and not np.all(v > 0):
        raise ValueError(f"{fn}: {name} must be > 0, got {_fmt(v)}")


def check_unit_interval(fn: str, name: str, value) -> None:
    """Raise ``ValueError`` unless a concrete ``value`` is in [0, 1)."""
    v = concrete_value(value)
    if v is not None and not np.all((v >= 0) & (v < 1)):
        raise ValueError(f"{fn}: {name} must be in [0, 1), got {_fmt(v)}")


def check_learning_rate(fn: str, learning_rate) -> None:
    """A learning rate is a float, a scalar array or a callable schedule ``step -> lr``."""
    if callable(learning_rate):
        return
    if learning_rate is None or isinstance(learning_rate, (str, bytes, bool)):
        raise TypeError(
            f"{fn}: learning_rate must be a number, a scalar array or a schedule, "
            f"got {type(learning_rate).__name__}")
    check_nonnegative(fn, "learning_rate", learning_rate)


def check_trees_match(fn: str, name_a: str, a: PyTree, name_b: str, b: PyTree) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same tree structure and shapes.

    Both tree structures are printed on a mismatch. Runs on static structure only.
    """
    ta = jax.tree_util.tree_structure(a)
    tb = jax.tree_util.tree_structure(b)
    if ta != tb:
        raise ValueError(
            f"{fn}: {name_a} tree structure does not match {name_b}:\n"
            f"  {name_a}: {ta}\n  {name_b}: {tb}")
    leaves_a = jax.tree_util.tree_flatten_with_path(a)[0]
    leaves_b = jax.tree_util.tree_leaves(b)
    for (path, la), lb in zip(leaves_a, leaves_b):
        if np.shape(la) != np.shape(lb):
            where = jax.tree_util.keystr(path) or "<root>"
            raise ValueError(
                f"{fn}: {name_a}{where} has shape {np.shape(la)}, "
                f"expected {np.shape(lb)} as in {name_b}{where}")


def check_float_leaves(fn: str, name: str, tree: PyTree) -> None:
    """Raise ``TypeError`` if a leaf of ``tree`` does not have a floating dtype."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            where = jax.tree_util.keystr(path) or "<root>"
            raise TypeError(
                f"{fn}: {name}{where} must have a floating dtype, got {dtype} "
                f"with shape {np.shape(leaf)}")


# ------------------------------------------------------------------------ utilities


def promote_dtypes(*dtypes):
    """The standard JAX promotion of ``dtypes``, also under strict promotion mode."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*dtypes)


def cast_like(value, x: jax.Array) -> jax.Array:
    """``value`` (number, array or tracer) as an array of ``x``'s dtype."""
    return jnp.asarray(value).astype(jnp.result_type(x))


def one_minus(beta, x: jax.Array) -> jax.Array:
    """``1 - beta`` in ``x``'s dtype, formed in at least float32 (``0.999`` is ``1.0`` in
    bfloat16, so casting ``beta`` first would give 0)."""
    cdt = promote_dtypes(jnp.float32, jnp.result_type(x))
    return (1 - jnp.asarray(beta).astype(cdt)).astype(jnp.result_type(x))


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` for an int32 counter, saturating instead of overflowing."""
    top = jnp.iinfo(jnp.int32).max
    return jnp.where(count < top, count + 1, count).astype(jnp.int32)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates`` leaf by leaf, in each parameter's dtype.

    Args:
      params: a pytree of arrays.
      updates: a pytree of the same structure and shapes (as returned by ``update``).

    Returns:
      The new parameters, each leaf with the dtype of the corresponding ``params`` leaf
      (the sum is taken in the promoted dtype, then cast back).

    Raises:
      ValueError: if the structures or shapes differ (both structures are printed).
    """
    check_trees_match("apply_updates", "updates", updates, "params", params)

    def add(p, u):
        pd, ud = jnp.result_type(p), jnp.result_type(u)
        dt = promote_dtypes(pd, ud)
        return (jnp.asarray(p).astype(dt) + jnp.asarray(u).astype(dt)).astype(pd)

    return jax.tree_util.tree_map(add, params, updates)


def chain(*transforms: Optimizer, name: str = "chain") -> Optimizer:
    """Compose transformations: each one's updates are the next one's input.

    The state is the tuple of the states of ``transforms``. ``update`` checks that
    ``grads`` has a floating dtype and, when ``params`` is given, the same tree
    structure and shapes as ``params``.

    Args:
      *transforms: ``Optimizer`` blocks, applied left to right.
      name: the name used in error messages (the aliases pass their own).

    Returns:
      An ``Optimizer``.

    Example:
      >>> import jax.numpy as jnp
      >>> from funcnet import optim
      >>> opt = optim.chain(optim.clip_by_global_norm(1.0), optim.scale(-2.0))
      >>> updates, _ = opt.update({"w": jnp.array([3.0, 4.0])}, opt.init(None))
      >>> print(updates["w"])
      [-1.2 -1.6]
    """
    for i, t in enumerate(transforms):
        if not (isinstance(t, tuple) and hasattr(t, "init") and hasattr(t, "update")):
            raise TypeError(
                f"{name}: argument {i} must be an Optimizer (init, update), "
                f"got {type(t).__name__}")

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params=None):
        check_float_leaves(name, "grads", grads)
        if params is not None:
            check_trees_match(name, "grads", grads, "params", params)
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"{name}: state must be a tuple of {len(transforms)} states (from init), "
                f"got {jax.tree_util.tree_structure(state)}")
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return Optimizer(init, update)
