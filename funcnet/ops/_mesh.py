"""Types of values on a mesh, for the backward rules: ``shard_map``'s varying axes
(:func:`defvjp`, :func:`vary_like`) and ``Explicit`` mesh shardings
(:func:`explicit_sharding`, :func:`split_like`, :func:`gather_sharding`).

Inside ``jax.shard_map`` (``check_vma=True``, its default) every value carries the set of
mesh axes along which it varies from device to device, and a ``custom_vjp`` backward rule
must return, for each input, a cotangent that varies along exactly that input's axes.
The notes' rules do not: ``dW = x^T dy`` varies along ``"data"`` when ``x`` is split over
it, while a replicated ``W`` does not. Plain JAX autodiff sums such a cotangent over the
devices (the transpose of the implicit broadcast of ``W``); :func:`defvjp` does the same:

    ct -> psum(ct, axes(ct) - axes(input))        (the input was broadcast along them)
    ct -> pvary(ct, axes(input) - axes(ct))       (e.g. a zero cotangent)

Outside ``shard_map``, and with ``check_vma=False``, every set is empty and the rule's
cotangents pass through untouched (no op is added to the program).

On a mesh with ``Explicit`` axes a cotangent must also have its input's sharding, as
JAX's own transpose rules give it (e.g. ``dxs = dz wx^T`` comes out whole along the
features of an ``xs`` split there); :func:`defvjp` reshards one that differs. Elsewhere
no sharding is recorded and nothing is added either.
"""
from __future__ import annotations

import jax

from funcnet._checks import is_array


def varying_axes(x) -> frozenset:
    """The manual mesh axes along which ``x`` varies (empty outside ``shard_map``)."""
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)  # JAX 0.10
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))  # JAX 0.8


def _pvary(x, axes: tuple):
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(x, axes, to="varying")
    return jax.lax.pvary(x, axes)


def match_varying(ct, axes: frozenset):
    """``ct`` summed over the axes it varies along beyond ``axes`` and broadcast along
    those of ``axes`` it lacks (``None`` and non-arrays pass through)."""
    if ct is None or not is_array(ct) or ct.dtype == jax.dtypes.float0:
        return ct
    have = varying_axes(ct)
    if have - axes:
        ct = jax.lax.psum(ct, tuple(sorted(have - axes)))
    if axes - have:
        ct = _pvary(ct, tuple(sorted(axes - have)))
    return ct


def match_sharding(ct, sharding):
    """``ct`` resharded to ``sharding`` (an input's on a mesh with ``Explicit`` axes) if
    it has another; ``None`` for ``sharding`` or ``ct`` (and non-arrays) pass through."""
    if sharding is None or ct is None or not is_array(ct) or ct.dtype == jax.dtypes.float0:
        return ct
    return _placed(ct, sharding)


@jax.tree_util.register_static
class _Types:
    """Static residual: the varying axes and the ``Explicit`` sharding (or ``None``) of
    each differentiable input (no array)."""

    def __init__(self, types: tuple):
        self.types = types

    def __eq__(self, other):
        return isinstance(other, _Types) and self.types == other.types

    def __hash__(self):
        return hash(self.types)


def defvjp(f, fwd, bwd) -> None:
    """``f.defvjp(fwd, bwd)`` (``f`` a ``jax.custom_vjp``, ``nondiff_argnums`` allowed),
    with each cotangent of ``bwd`` matched to its input's varying axes and ``Explicit``
    sharding (module doc)."""
    nondiff = frozenset(f.nondiff_argnums)

    def fwd_typed(*args):
        out, res = fwd(*args)
        types = tuple((varying_axes(a), explicit_sharding(a)) if is_array(a)
                      else (frozenset(), None)
                      for i, a in enumerate(args) if i not in nondiff)
        return out, (res, _Types(types))

    def bwd_typed(*args):
        *static, (res, types), g = args
        cts = bwd(*static, res, g)
        return tuple(match_sharding(match_varying(ct, axes), sharding)
                     for ct, (axes, sharding) in zip(cts, types.types))

    f.defvjp(fwd_typed, bwd_typed)


def vary_like(carry, *arrays):
    """``carry`` (a ``lax.scan``'s initial carry: a pytree) made to vary along every manual
    axis that any of ``arrays`` varies along: inside ``shard_map`` a loop whose body mixes
    the carry with a device's shard must start from a carry of the same type."""
    axes = frozenset().union(*(varying_axes(a) for a in jax.tree_util.tree_leaves(arrays)
                               if is_array(a)))
    return jax.tree_util.tree_map(lambda c: match_varying(c, varying_axes(c) | axes), carry)


def explicit_sharding(w):
    """``w``'s sharding when ``w`` lies on a mesh with ``Explicit`` axes (``jax.make_mesh``'s
    default from JAX 0.9 on), else ``None``: the ``out_sharding`` of a weight gradient
    that contracts a sharded batch axis, which JAX cannot infer on such a mesh."""
    sharding = getattr(jax.typeof(w), "sharding", None)
    types = getattr(getattr(sharding, "mesh", None), "axis_types", None) or ()
    explicit = getattr(getattr(jax.sharding, "AxisType", None), "Explicit", None)
    return sharding if explicit is not None and explicit in types else None


def _spec(sharding, ndim: int) -> tuple:
    spec = tuple(sharding.spec)
    return spec + (None,) * (ndim - len(spec))


def _placed(x, sharding):
    """``x`` resharded to ``sharding`` (on a mesh with ``Explicit`` axes), or ``x`` itself
    when it has that layout already (no op is added)."""
    have = explicit_sharding(x)
    if have is not None and _spec(have, x.ndim) == _spec(sharding, x.ndim):
        return x
    return jax.sharding.reshard(x, sharding)


def split_like(carry, xs, axis: int = 1):
    """``carry`` (a loop's initial carry: a pytree of ``(N, ...)`` arrays) laid out with
    its axis 0 split as axis ``axis`` of ``xs`` (the batch ``N`` of time-major
    ``(T, N, D)`` inputs) and its other axes whole, when ``xs`` lies on a mesh with
    ``Explicit`` axes; elsewhere ``carry`` itself (no op is added).

    A step that mixes the carry with one ``(N, D)`` slice of ``xs`` and replicated weights
    gives its new carry that layout, and ``lax.scan`` wants the initial carry of the same
    type: a carry of zeros made without a sharding (replicated) fails there."""
    sharding = explicit_sharding(xs)
    if sharding is None:
        return carry
    batch = _spec(sharding, xs.ndim)[axis]
    return jax.tree_util.tree_map(lambda c: _placed(c, jax.sharding.NamedSharding(
        sharding.mesh, jax.sharding.PartitionSpec(batch, *(None,) * (c.ndim - 1)))), carry)


def gather_sharding(table, ids):
    """The sharding of ``table[ids]`` (rows ``(*ids.shape, F)`` of a ``(V, F)`` table)
    when both lie on a mesh with ``Explicit`` axes, where JAX cannot infer it: split like
    ``ids``, the features like ``table``'s; elsewhere ``None``."""
    rows, ids_sharding = explicit_sharding(table), explicit_sharding(ids)
    if rows is None or ids_sharding is None:
        return None
    spec = (*_spec(ids_sharding, ids.ndim), _spec(rows, 2)[1])
    return jax.sharding.NamedSharding(rows.mesh, jax.sharding.PartitionSpec(*spec))
