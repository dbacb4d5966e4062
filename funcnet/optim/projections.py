"""optax's ``optax.projections``: Euclidean projections of pytrees onto convex sets, for
projected gradient descent::

    from funcnet.optim import projections
    params = optim.apply_updates(params, updates)
    params = projections.projection_l2_ball(params, scale)    # back into the feasible set

Every function returns ``argmin_p ||x - p||_2^2 subject to p in C`` with optax's name,
arguments, defaults and values. The l1/l2 balls and spheres, the simplex, the vector,
hyperplane and halfspace treat the whole tree as one vector (all leaves together); the
box-type sets (box, hypercube, l-inf ball, non-negative orthant) act element by element.
All are plain ``jnp`` (``jit``, ``vmap``, ``grad`` and ``jacfwd`` work); the simplex has
optax's Jacobian ``diag(s) - s s^T / |S|`` on the support ``S = {p > 0}``.

Differences from optax, all where optax raises or changes dtypes: every floating or
complex leaf keeps its dtype, also in a tree of mixed dtypes and under strict dtype
promotion (optax's simplex returns float64 for float32 input under ``jax_enable_x64``, and
its l1 ball raises for it); integer leaves become JAX's default float, except in the
box-type sets with integer bounds (as optax); a scalar bound (``lower``, ``upper``,
``scale`` of the hypercube) applies to every leaf of a tree (optax: to a single array
only). Bad input raises ``TypeError``/``ValueError`` naming the function and the argument.

References:
  Duchi, Shalev-Shwartz, Singer & Chandra (2008), "Efficient projections onto the
  l1-ball for learning in high dimensions", ICML (the sort-based simplex and l1 ball
  algorithm, shared with :func:`funcnet.ops.sparsemax`); Martins & Astudillo (2016),
  https://arxiv.org/abs/1602.02068 (the simplex's Jacobian).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks
from funcnet.ops.sparsemax import sparsemax_grad, sparsemax_last
from funcnet.optim import tree as _tree
from funcnet.optim.base import (
    cast_like, check_hyperparameter, check_trees_match, promote_dtypes)

__all__ = [
    "projection_box", "projection_halfspace", "projection_hypercube",
    "projection_hyperplane", "projection_l1_ball", "projection_l1_sphere",
    "projection_l2_ball", "projection_l2_sphere", "projection_linf_ball",
    "projection_non_negative", "projection_simplex", "projection_vector"]


# ------------------------------------------------------------------------- helpers
def _floats(fn: str, name: str, tree, *, complex_ok: bool = True, to_float: bool = True):
    """``tree`` with array leaves: ``TypeError`` naming the leaf for a non-numeric (or,
    unless ``complex_ok``, complex) one; integer leaves as JAX's default float."""
    def leaf(path, x):
        _checks.check_array(fn, f"{name}{_checks.path_str(path)}", x)
        dt = jnp.result_type(x)
        if not jnp.issubdtype(dt, jnp.number) or (
                not complex_ok and jnp.issubdtype(dt, jnp.complexfloating)):
            kind = "real or complex" if complex_ok else "real"
            raise TypeError(f"{fn}: {name}{_checks.path_str(path)} must have a {kind} "
                            f"numeric dtype, got {dt} with shape {_checks.shape_of(x)}")
        integer = not jnp.issubdtype(dt, jnp.inexact)
        return jnp.asarray(x, jnp.result_type(float) if to_float and integer else dt)
    return jax.tree_util.tree_map_with_path(leaf, tree)


def _check_scale(fn: str, scale, low_inclusive: bool = False) -> None:
    check_hyperparameter(fn, "scale", scale, 0.0, low_inclusive=low_inclusive)


def _scale(factor, tree):
    """``factor * x`` for every leaf, in the leaf's dtype (``optax.tree.scale``, without
    promotion)."""
    return jax.tree_util.tree_map(lambda x: cast_like(factor, x) * x, tree)


def _ravel(tree):
    """``(vector, unravel)``: all elements in the leaves' promoted dtype, and back to the
    tree (each leaf in its own shape and dtype), as ``jax.flatten_util.ravel_pytree``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dt = promote_dtypes(*[x.dtype for x in leaves])
    flat = jnp.concatenate([jnp.ravel(x).astype(dt) for x in leaves])

    def unravel(v):
        parts = jnp.split(v, np.cumsum([x.size for x in leaves])[:-1])
        return treedef.unflatten([  # a real leaf of a complex vector: its real part
            (p if jnp.iscomplexobj(x) else jnp.real(p)).reshape(x.shape).astype(x.dtype)
            for p, x in zip(parts, leaves)])
    return flat, unravel


@jax.custom_jvp
def _unit_simplex(v):
    """Projection of a vector onto ``{p >= 0, sum p = 1}`` (sparsemax's forward)."""
    return sparsemax_last(v)


@_unit_simplex.defjvp
def _unit_simplex_jvp(primals, tangents):
    p = _unit_simplex(primals[0])
    return p, sparsemax_grad(p > 0, tangents[0])   # dp = [p > 0](dv - sum_S dv / |S|)


def _signed_simplex(fn: str, tree, scale, signed: bool):
    """``scale * unit_simplex(x / scale)`` of the raveled tree (``signed``: of ``|x|``,
    times ``sign(x)``: the l1 sphere)."""
    tree = _floats(fn, "tree", tree, complex_ok=signed)
    if _tree.size(tree) == 0:
        raise ValueError(f"{fn}: tree has no element (structure "
                         f"{jax.tree_util.tree_structure(tree)}), nothing can sum to scale")
    flat, unravel = _ravel(tree)
    values = jnp.abs(flat) if signed else flat
    s = cast_like(scale, values)
    p = s * _unit_simplex(values / s)
    return unravel(jnp.sign(flat) * p.astype(flat.dtype) if signed else p)


def _per_leaf(fn: str, name: str, bound, tree) -> list:
    """``bound``'s value for every leaf of ``tree``: a tree of ``tree``'s structure, or one
    number / array for all leaves."""
    if bound is None:
        raise TypeError(f"{fn}: {name} must be a scalar, an array or a tree, got None")
    ts, bs = jax.tree_util.tree_structure(tree), jax.tree_util.tree_structure(bound)
    if bs == ts:
        return jax.tree_util.tree_leaves(bound)
    if jax.tree_util.treedef_is_leaf(bs):
        return [bound] * ts.num_leaves
    raise ValueError(f"{fn}: {name} must be a scalar, an array or a tree of tree's "
                     f"structure:\n  tree: {ts}\n  {name}: {bs}")


def _box(fn: str, tree, lower, upper, names=("lower", "upper")):
    """``clip(x, lower, upper)`` leaf by leaf, each bound broadcast to (and cast to) the
    leaf; ``ValueError`` for a concrete ``lower > upper``."""
    tree = _floats(fn, "tree", tree, complex_ok=False, to_float=False)
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    bounds = [_floats(fn, n, b, complex_ok=False, to_float=False)
              for n, b in zip(names, (lower, upper))]
    out = []
    for (path, x), lo, hi in zip(flat, *(_per_leaf(fn, n, b, tree)
                                         for n, b in zip(names, bounds))):
        where = _checks.path_str(path)
        for n, b in zip(names, (lo, hi)):
            _checks.check_broadcastable(fn, f"{n} for tree{where}", b, x.shape,
                                        f"(tree{where}'s shape)")
        dt = (x.dtype if jnp.issubdtype(x.dtype, jnp.inexact)
              else promote_dtypes(x.dtype, lo.dtype, hi.dtype))
        lo, hi = (jnp.broadcast_to(b.astype(dt), x.shape) for b in (lo, hi))
        c_lo, c_hi = _checks.concrete(lo), _checks.concrete(hi)
        if c_lo is not None and c_hi is not None and np.any(c_lo > c_hi):
            i = np.unravel_index(np.argmax(c_lo > c_hi), c_lo.shape)
            raise ValueError(f"{fn}: {names[0]} > {names[1]} for tree{where} at index "
                             f"{tuple(map(int, i))} ({c_lo[i]} > {c_hi[i]}): the box is "
                             f"empty")
        out.append(jnp.clip(x.astype(dt), lo, hi))
    return treedef.unflatten(out)


def _coefficient(fn: str, x, a, b=None):
    """``(x, a, c)`` with ``c = <x, a>/<a, a>`` (no ``b``) or ``(b - <x, a>)/<a, a>``;
    ``x`` and ``a`` real trees of the same structure and shapes."""
    x, a = (_floats(fn, n, t, complex_ok=False) for n, t in (("x", x), ("a", a)))
    check_trees_match(fn, "a", a, "x", x)
    xa, aa = _tree.vdot(x, a), _tree.vdot(a, a)
    if b is None:
        return x, a, xa / aa
    check_hyperparameter(fn, "b", b)
    return x, a, (cast_like(b, xa) - xa) / aa


def _add_scale(x, c, a):
    """``x + c a`` leaf by leaf, in ``x``'s dtypes."""
    return jax.tree_util.tree_map(lambda u, v: u + cast_like(c, u) * v.astype(u.dtype), x, a)


# -------------------------------------------------------------------- box-type sets
def projection_non_negative(tree: Any) -> Any:
    """Projection onto the non-negative orthant, ``p = max(x, 0)`` element by element
    (``jax.nn.relu``), optax's ``projections.projection_non_negative``.

    Shapes: any tree of real arrays; the result has its structure, shapes and dtypes.

    Raises:
      TypeError: a complex or non-numeric leaf.
    """
    tree = _floats("projection_non_negative", "tree", tree, complex_ok=False, to_float=False)
    return jax.tree_util.tree_map(jax.nn.relu, tree)


def projection_box(tree: Any, lower: Any, upper: Any) -> Any:
    """Projection onto the box ``lower <= p <= upper``, ``p = clip(x, lower, upper)``
    element by element, optax's ``projections.projection_box``.

    Shapes: ``tree`` any tree of real arrays; ``lower``, ``upper`` each a scalar or array
    for every leaf, or a tree of ``tree``'s structure whose leaves broadcast to the
    leaves' shapes. The result has ``tree``'s structure, shapes and (floating) dtypes.

    Raises:
      ValueError: a bound of another structure, a shape that does not broadcast, a
        concrete ``lower > upper``. TypeError: a complex or non-numeric leaf or bound.
    """
    return _box("projection_box", tree, lower, upper)


def projection_hypercube(tree: Any, scale: Any = 1) -> Any:
    """Projection onto the hypercube ``0 <= p <= scale`` (the unit one by default),
    optax's ``projections.projection_hypercube``: :func:`projection_box` with ``lower=0``,
    ``upper=scale`` (a scalar, an array or a tree; concrete values must be ``>= 0``)."""
    fn = "projection_hypercube"
    for path, s in jax.tree_util.tree_flatten_with_path(scale)[0]:
        c = _checks.concrete(s)
        if c is not None and np.any(c < 0):
            raise ValueError(f"{fn}: scale{_checks.path_str(path)} must be >= 0, got "
                             f"{np.min(c)}")
    return _box(fn, tree, 0, scale, names=("0", "scale"))


def projection_linf_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
    """Projection onto the l-infinity ball ``max |p| <= scale``, ``p = clip(x, -scale,
    scale)`` element by element, optax's ``projections.projection_linf_ball``. ``scale``:
    a scalar ``>= 0`` (possibly traced)."""
    fn = "projection_linf_ball"
    _check_scale(fn, scale, low_inclusive=True)
    return _box(fn, tree, jnp.negative(scale), scale, names=("-scale", "scale"))


# ----------------------------------------------------- sets of the tree as one vector
def projection_simplex(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
    """Projection onto the simplex ``{p >= 0, sum(p) = scale}`` of all elements of all
    leaves together, optax's ``projections.projection_simplex``.

    With ``u`` the ``n`` elements of ``x / scale`` sorted in decreasing order (Duchi et al.
    2008; :func:`funcnet.ops.sparsemax` of each slice is this with ``scale=1``)::

        k = max{k : 1 + k u_k > u_1 + ... + u_k},  tau = (u_1 + ... + u_k - 1) / k
        p = scale * max(x / scale - tau, 0)

    Jacobian (optax's custom JVP): ``diag(s) - s s^T / |S|`` on the support ``s = [p > 0]``.
    A ``-inf`` element gets 0 (while one element is finite).

    Shapes: ``tree`` any tree of real arrays (at least one element), ``scale`` the sum, a
    scalar ``> 0`` (possibly traced); the result has ``tree``'s structure, shapes and
    (floating) dtypes.

    Raises:
      ValueError: a concrete ``scale <= 0``, a non-scalar ``scale``, a tree without
        elements. TypeError: a complex or non-numeric leaf.
    """
    fn = "projection_simplex"
    _check_scale(fn, scale)
    return _signed_simplex(fn, tree, scale, signed=False)


def projection_l1_sphere(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
    """Projection onto the l1 sphere ``sum |p| = scale`` of the whole tree, ``p = sign(x)
    * projection_simplex(|x|, scale)``, optax's ``projections.projection_l1_sphere``.
    ``scale``: a scalar ``> 0``; complex leaves allowed (``sign(x) = x / |x|``). As optax,
    a zero tree maps to 0 (any point of the sphere is nearest)."""
    fn = "projection_l1_sphere"
    _check_scale(fn, scale)
    return _signed_simplex(fn, tree, scale, signed=True)


def projection_l1_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
    """Projection onto the l1 ball ``sum |p| <= scale`` of the whole tree (Duchi et al.
    2008): ``x`` if ``||x||_1 <= scale``, else :func:`projection_l1_sphere` (a
    ``lax.cond``, so ``grad`` at an inside point is the identity), optax's
    ``projections.projection_l1_ball``. ``scale``: a scalar ``> 0``."""
    fn = "projection_l1_ball"
    _check_scale(fn, scale)
    tree = _floats(fn, "tree", tree)
    if _tree.size(tree) == 0:
        return tree
    norm = _tree.norm(tree, ord=1)
    return jax.lax.cond(norm <= cast_like(scale, norm), lambda t: t,
                        lambda t: _signed_simplex(fn, t, scale, signed=True), tree)


def projection_l2_sphere(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
    """Projection onto the l2 sphere ``||p||_2 = scale`` of the whole tree, ``p = scale x
    / ||x||_2``, optax's ``projections.projection_l2_sphere``. ``scale``: a scalar ``> 0``.
    As optax, a zero tree gives NaN (every point of the sphere is nearest)."""
    fn = "projection_l2_sphere"
    _check_scale(fn, scale)
    tree = _floats(fn, "tree", tree)
    norm = _tree.norm(tree)
    return _scale(cast_like(scale, norm) / norm, tree)


def projection_l2_ball(tree: Any, scale: jax.typing.ArrayLike = 1) -> Any:
    """Projection onto the l2 ball ``||p||_2 <= scale`` of the whole tree, optax's
    ``projections.projection_l2_ball``::

        p = x * scale / sqrt(max(||x||_2^2, scale^2))

    (no square root of 0: ``grad`` at ``x = 0`` is the identity). ``scale``: a scalar
    ``> 0`` (possibly traced); complex leaves allowed."""
    fn = "projection_l2_ball"
    _check_scale(fn, scale)
    tree = _floats(fn, "tree", tree)
    squared = _tree.norm(tree, squared=True)
    s = cast_like(scale, squared)
    return _scale(s / jnp.sqrt(jnp.maximum(squared, s * s)), tree)


def projection_vector(x: Any, a: Any) -> Any:
    """Projection onto the line of the vector ``a``, ``p = <x, a> / <a, a> a`` (trees of
    the same structure and shapes, real leaves; NaN for ``a = 0``, as optax), optax's
    ``projections.projection_vector``. The result has ``a``'s dtypes."""
    _, a, c = _coefficient("projection_vector", x, a)
    return _scale(c, a)


def projection_hyperplane(x: Any, a: Any, b: jax.typing.ArrayLike) -> Any:
    """Projection onto the hyperplane ``<a, p> = b``, ``p = x + (b - <x, a>) / <a, a> a``,
    optax's ``projections.projection_hyperplane``. ``x``, ``a``: real trees of the same
    structure and shapes; ``b``: a real scalar. The result has ``x``'s dtypes."""
    x, a, c = _coefficient("projection_hyperplane", x, a, b)
    return _add_scale(x, c, a)


def projection_halfspace(x: Any, a: Any, b: jax.typing.ArrayLike) -> Any:
    """Projection onto the halfspace ``<a, p> <= b``, ``p = x + min((b - <x, a>) / <a, a>,
    0) a`` (``x`` itself when inside), optax's ``projections.projection_halfspace``.
    Arguments as :func:`projection_hyperplane`."""
    x, a, c = _coefficient("projection_halfspace", x, a, b)
    return _add_scale(x, jnp.clip(c, max=0), a)
