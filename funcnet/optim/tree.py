"""optax's ``optax.tree`` namespace: pytree arithmetic, reductions, casting, random
trees and state look-ups, with optax's names, signatures and results::

    import funcnet.optim as optax
    optax.tree.norm(grads)                       # global L2 norm, for logging
    params = optax.tree.add_scale(params, -lr, grads)
    count = optax.tree.get(opt_state, "count")

Arithmetic maps leaf by leaf (trees of the same structure); reductions add or compare
leaf after leaf in optax's order, promoting mixed leaf dtypes (float32 + float64 gives
float64) also under strict dtype promotion. The names already used by funcnet's blocks
come from one source: ``bias_correction`` and the moment updates from
:mod:`.transforms_extra_tree`, ``map_params`` is :func:`~.wrappers_extra.tree_map_params`,
``vdot`` :func:`~.contrib_common.tree_vdot`, ``get``/``set`` :mod:`.tree_state`.
``funcnet.optim.tree_utils`` holds the older ``tree_*`` names.
"""
from __future__ import annotations

import functools
import inspect
import operator
from typing import Any, Optional

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.optim.base import abs_sq, promote_dtypes, select_tree, tree_dtype
from funcnet.optim.base import zeros_like as _zeros_like
from funcnet.optim.contrib_common import _sum, tree_l1, tree_vdot
from funcnet.optim.transforms_extra_tree import (
    bias_correction, update_infinity_moment, update_moment, update_moment_per_elem_norm)
from funcnet.optim.tree_state import get, get_all_with_path, set  # noqa: A004
from funcnet.optim.wrappers_extra import tree_map_params as map_params

__all__ = [
    "add", "add_scale", "allclose", "batch_shape", "bias_correction", "cast", "cast_like",
    "clip", "conj", "div", "dtype", "full_like", "get", "get_all_with_path", "map_params",
    "max", "min", "mul", "norm", "ones_like", "random_like", "real", "scale", "set", "size",
    "split_key_like", "sub", "sum", "unwrap_random_key_data", "update_infinity_moment",
    "update_moment", "update_moment_per_elem_norm", "vdot", "where", "zeros_like"]

_builtin_sum = sum


def _map(fn: str, f, *trees, none_leaves: bool = False):
    """``jax.tree_util.tree_map(f, *trees)``; a ``ValueError`` naming ``fn`` and both
    structures when the trees differ. ``none_leaves``: ``None`` is a leaf (given to
    ``f``)."""
    is_leaf = (lambda x: x is None) if none_leaves else None
    try:
        return jax.tree_util.tree_map(f, *trees, is_leaf=is_leaf)
    except ValueError as err:
        structures = "\n".join(f"  tree {i}: {jax.tree_util.tree_structure(t)}"
                               for i, t in enumerate(trees))
        raise ValueError(f"{fn}: the trees do not have the same structure:\n{structures}\n"
                         f"({err})") from None


# ----------------------------------------------------------------------- arithmetic


def add(tree_x: Any, tree_y: Any, *other_trees: Any) -> Any:
    """``tree_x + tree_y (+ ...)`` leaf by leaf, optax's ``tree.add``."""
    return _map("add", lambda *xs: functools.reduce(operator.add, xs),
                tree_x, tree_y, *other_trees)


def sub(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x - tree_y`` leaf by leaf, optax's ``tree.sub``."""
    return _map("sub", operator.sub, tree_x, tree_y)


def mul(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x * tree_y`` leaf by leaf, optax's ``tree.mul``."""
    return _map("mul", operator.mul, tree_x, tree_y)


def div(tree_x: Any, tree_y: Any) -> Any:
    """``tree_x / tree_y`` leaf by leaf, optax's ``tree.div``."""
    return _map("div", operator.truediv, tree_x, tree_y)


def scale(scalar, tree: Any) -> Any:
    """``scalar * tree``, optax's ``tree.scale``."""
    return jax.tree_util.tree_map(lambda x: scalar * x, tree)


def add_scale(tree_x: Any, scalar, tree_y: Any) -> Any:
    """``tree_x + scalar * tree_y`` (a ``None`` leaf of ``tree_x`` stays ``None``),
    optax's ``tree.add_scale``."""
    scalar = jnp.asarray(scalar)
    return _map("add_scale", lambda x, y: None if x is None else x + scalar * y,
                tree_x, tree_y, none_leaves=True)


def where(condition, tree_x, tree_y):
    """``jnp.where(condition, x, y)`` leaf by leaf, optax's ``tree.where``."""
    _map("where", lambda x, y: None, tree_x, tree_y)  # structure check only
    with _checks.context("where"):
        return select_tree(condition, tree_x, tree_y)


def clip(tree: Any, min_value=None, max_value=None) -> Any:
    """Every leaf clipped to ``[min_value, max_value]`` (``None``: no bound), optax's
    ``tree.clip``."""
    return jax.tree_util.tree_map(lambda x: jnp.clip(x, min_value, max_value), tree)


def conj(tree: Any) -> Any:
    """The complex conjugate of every leaf, optax's ``tree.conj``."""
    return jax.tree_util.tree_map(jnp.conj, tree)


def real(tree: Any) -> Any:
    """The real part of every leaf, optax's ``tree.real``."""
    return jax.tree_util.tree_map(jnp.real, tree)


def batch_shape(tree: Any, shape: tuple[int, ...] = ()):
    """Every leaf broadcast to ``(*shape, *leaf.shape)``, optax's ``tree.batch_shape``."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))),
                                  tree)


# ----------------------------------------------------------------------- reductions


def vdot(tree_x: Any, tree_y: Any):
    """``sum over leaves of sum(conj(x) * y)``, optax's ``tree.vdot``."""
    _map("vdot", lambda x, y: None, tree_x, tree_y)   # structure check only
    if not jax.tree_util.tree_leaves(tree_x):
        return _sum([], int)                          # optax's integer 0
    return tree_vdot(tree_x, tree_y)


def sum(tree: Any, associative_reduction: bool = False):  # noqa: A001 - optax's name
    """The sum of all elements of all leaves, optax's ``tree.sum``.

    ``associative_reduction=True`` adds the leaves' sums pairwise (a tree of additions,
    optax's ``jax.tree.reduce_associative``) instead of one after another: same value up
    to rounding.
    """
    sums = [jnp.sum(x) for x in jax.tree_util.tree_leaves(tree)]
    if not associative_reduction or len(sums) < 2:
        return _sum(sums, int)
    dt = promote_dtypes(*[s.dtype for s in sums])
    sums = [s.astype(dt) for s in sums]
    while len(sums) > 1:
        sums = [a + b for a, b in zip(sums[::2], sums[1::2])] + sums[len(sums) // 2 * 2:]
    return sums[0]


def _extreme(reduce, tree, initial: float):
    parts = [reduce(x) for x in jax.tree_util.tree_leaves(tree) if jnp.size(x)]
    with jax.numpy_dtype_promotion("standard"):   # as optax's reduce from a Python inf
        return functools.reduce(jnp.maximum if initial < 0 else jnp.minimum, parts,
                                initial)


def max(tree: Any):  # noqa: A001 - optax's name
    """The largest element of all (non-empty) leaves, ``-inf`` for none, optax's
    ``tree.max``."""
    return _extreme(jnp.max, tree, -float("inf"))


def min(tree: Any):  # noqa: A001 - optax's name
    """The smallest element of all (non-empty) leaves, ``inf`` for none, optax's
    ``tree.min``."""
    return _extreme(jnp.min, tree, float("inf"))


def size(tree: Any) -> int:
    """The number of elements of all leaves, optax's ``tree.size``."""
    return _builtin_sum(jnp.size(x) for x in jax.tree_util.tree_leaves(tree))


def norm(tree: Any, ord: int | str | float | None = None,  # noqa: A002 - optax's name
         squared: bool = False) -> jax.Array:
    """The vector norm of all leaves together, optax's ``tree.norm``::

        ord=None or 2: sqrt(sum |x|^2)      ord=1: sum |x|      ord=inf: max |x|

    Args:
      tree: a pytree of arrays (real or complex).
      ord: ``None``, 1, 2, ``jnp.inf``, ``"inf"`` or ``"infinity"``.
      squared: return the norm squared.

    Returns:
      A scalar array.

    Raises:
      ValueError: for another ``ord``.
    """
    if ord is None or ord == 2:
        sq = sum(jax.tree_util.tree_map(abs_sq, tree))
        return jnp.asarray(sq if squared else jnp.sqrt(sq))
    if ord == 1:
        out = tree_l1(tree)
    elif ord == jnp.inf or ord in ("inf", "infinity"):
        out = max(jax.tree_util.tree_map(jnp.abs, tree))
    else:
        raise ValueError(f"norm: unsupported ord {ord!r}, expected None, 1, 2, inf, "
                         f"'inf' or 'infinity'")
    return jnp.asarray(abs_sq(jnp.asarray(out)) if squared else out)


def allclose(a: Any, b: Any, rtol=1e-05, atol=1e-08, equal_nan: bool = False):
    """``jnp.allclose`` of every pair of leaves, and-ed, optax's ``tree.allclose``."""
    close = _map("allclose", lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol,
                                                       equal_nan=equal_nan), a, b)
    return functools.reduce(operator.and_, jax.tree_util.tree_leaves(close), True)


# ------------------------------------------------------------------- filled and cast


def zeros_like(tree: Any, dtype=None) -> Any:
    """Zeros shaped like every leaf (in ``dtype`` if given), optax's
    ``tree.zeros_like``."""
    return _zeros_like(tree, dtype)


def ones_like(tree: Any, dtype=None) -> Any:
    """Ones shaped like every leaf (in ``dtype`` if given), optax's ``tree.ones_like``."""
    return jax.tree_util.tree_map(lambda x: jnp.ones_like(x, dtype=dtype), tree)


def full_like(tree: Any, fill_value, dtype=None) -> Any:
    """``fill_value`` shaped like every leaf, optax's ``tree.full_like``."""
    return jax.tree_util.tree_map(lambda x: jnp.full_like(x, fill_value, dtype=dtype), tree)


def cast(tree, dtype):
    """Every leaf cast to ``dtype`` (``None``: the tree unchanged), optax's
    ``tree.cast``."""
    return tree if dtype is None else jax.tree_util.tree_map(lambda x: x.astype(dtype), tree)


def cast_like(tree, other_tree):
    """Every leaf cast to the dtype of ``other_tree``'s leaf (kept where that has no
    dtype), optax's ``tree.cast_like``."""
    return _map("cast_like", lambda t, o: t.astype(o.dtype) if hasattr(o, "dtype") else t,
                tree, other_tree)


_HANDLERS = (None, "promote", "highest", "lowest")


def dtype(tree, mixed_dtype_handler: Optional[str] = None):
    """The dtype of the leaves, optax's ``tree.dtype``; JAX's default float for no leaf.

    Args:
      tree: a pytree.
      mixed_dtype_handler: ``None`` (all leaves must share a dtype), ``"promote"``
        (their promoted dtype), ``"highest"``/``"lowest"`` (the one all others promote
        to / that promotes to all others).

    Raises:
      ValueError: mixed dtypes with ``None``; no highest/lowest one; another handler.
    """
    if mixed_dtype_handler not in _HANDLERS:
        raise ValueError(f"dtype: invalid value for mixed_dtype_handler="
                         f"{mixed_dtype_handler!r}, expected one of {_HANDLERS}")
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    if not leaves:
        return jnp.result_type(float)
    dtypes = [jnp.asarray(x).dtype for _, x in leaves]
    if mixed_dtype_handler is None:
        bad = [f"{jax.tree_util.keystr(p)} has {d}" for (p, _), d in zip(leaves, dtypes)
               if d != dtypes[0]]
        if bad:
            raise ValueError(f"dtype: expected dtype={dtypes[0]} for every leaf but "
                             f"{'; '.join(bad)} (pass mixed_dtype_handler=)")
        return dtypes[0]
    if mixed_dtype_handler == "promote":
        return promote_dtypes(*dtypes)
    return tree_dtype("dtype", tree, mixed_dtype_handler)


# -------------------------------------------------------------------------- random


def split_key_like(rng_key, target_tree):
    """One key per leaf of ``target_tree`` (``jax.random.split`` into its number of
    leaves), in its structure, optax's ``tree.split_key_like``."""
    treedef = jax.tree_util.tree_structure(target_tree)
    return treedef.unflatten(jax.random.split(rng_key, treedef.num_leaves))


def random_like(rng_key, target_tree, sampler=jax.random.normal, dtype=None):
    """Random leaves of ``target_tree``'s shapes (and dtypes, or ``dtype``), drawn by
    ``sampler(key, shape, dtype)`` with one key per leaf, optax's ``tree.random_like``
    (the same key gives optax's values)."""
    _checks.check_callable("random_like", "sampler", sampler, "(key, shape, dtype)")
    takes_sharding = "out_sharding" in inspect.signature(sampler).parameters

    def leaf(x, key):
        if takes_sharding:
            return sampler(key, x.shape, dtype or x.dtype,
                           out_sharding=jax.typeof(x).sharding)
        return sampler(key, x.shape, dtype or x.dtype)

    return jax.tree_util.tree_map(leaf, target_tree, split_key_like(rng_key, target_tree))


def unwrap_random_key_data(input_tree):
    """Typed PRNG keys (``jax.random.key``) replaced by their raw data, other leaves
    kept, optax's ``tree.unwrap_random_key_data``."""
    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x
    return jax.tree_util.tree_map(leaf, input_tree)
