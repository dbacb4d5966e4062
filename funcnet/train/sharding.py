"""Placing pytrees on a device mesh: what ``fit(mesh=...)`` uses, re-exported by ``parallel``.

The mesh layout of data parallelism: params, state and optimizer state replicated over
every device of the mesh (``PartitionSpec()``), batches split along their leading axis
over all the mesh's axes. A leaf the caller already laid out on the mesh (a
tensor-parallel or FSDP-sharded weight, a ``NamedSharding`` of that mesh) keeps its
layout instead (:func:`put_on_mesh`, :func:`layout`). Every function here works with
several processes (``jax.distributed``): :func:`put_replicated` and :func:`put_batch`
write only this process's devices from a host value that every process holds, and
:func:`to_host` reads a replicated array from this process's first shard. ``fit``,
``evaluate`` and the mesh steps compile in ``Auto`` mode (:func:`auto_axes`).
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from funcnet import _checks

__all__ = ["auto_axes", "auto_leaves", "batch_sharding", "check_host_readable", "layout",
           "mesh_sharding", "put_batch", "put_on_mesh", "put_replicated", "replicated",
           "require_mesh", "to_host"]


def require_mesh(fn: str, mesh) -> None:
    """``TypeError`` unless ``mesh`` is a :class:`jax.sharding.Mesh`."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")


def auto_axes(mesh: Mesh) -> Mesh:
    """``mesh`` with every axis ``AxisType.Auto`` (XLA's partitioner decides the layouts
    of intermediates), the mode funcnet's programs are compiled in.

    ``jax.make_mesh`` makes ``Explicit`` axes by default (jax 0.10), where every
    operation must be able to name its result's sharding. The recurrent ops and
    ``embedding`` cannot there, nor can their plain-JAX twins (a scan carry and a gather
    whose result sharding JAX cannot infer), so a model using them would fail in ``fit``
    with a ``ShardingTypeError``. The same devices and axis names in ``Auto`` mode train
    identically, whatever the model.
    """
    types = tuple(getattr(mesh, "axis_types", ()) or ())
    if all(t == AxisType.Auto for t in types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(types))


def auto_leaves(tree):
    """``tree`` with every ``jax.Array`` laid out on a mesh with ``Explicit`` axes moved to
    the same spec on that mesh's :func:`auto_axes` twin (a device copy); other leaves
    (host arrays, callables, a ``Loader``) as they are."""
    def move(a):
        s = getattr(a, "sharding", None) if isinstance(a, jax.Array) else None
        if (not isinstance(s, NamedSharding) or isinstance(s.mesh, jax.sharding.AbstractMesh)
                or auto_axes(s.mesh) is s.mesh):
            return a
        return jax.device_put(a, NamedSharding(auto_axes(s.mesh), s.spec))

    return jax.tree_util.tree_map(move, tree)


def replicated(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """Rows split over every axis of ``mesh``: ``P(*[None] * leading, mesh.axis_names)``.

    ``leading=1`` is the layout of a stack of batches ``(steps, batch, ...)``.
    """
    axes = tuple(mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(*([None] * leading), axes if len(axes) > 1
                                             else axes[0]))


def _key_data_map(f, a):
    """``f`` applied to a typed key's raw data, wrapped back into a key of the same kind."""
    return jax.random.wrap_key_data(f(jax.random.key_data(a)), impl=jax.random.key_impl(a))


def _from_host(a, sharding: NamedSharding):
    if isinstance(a, jax.Array) and (not a.is_fully_addressable or a.sharding == sharding):
        return a  # already placed, or a global array (e.g. from parallel.global_batch)
    if _checks.is_key(a):
        return _key_data_map(lambda d: _from_host(d, sharding), a)
    host = np.asarray(a)
    if jax.process_count() == 1:
        return jax.device_put(host, sharding)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def put_replicated(tree, mesh: Mesh):
    """Places every leaf of ``tree`` on all devices of ``mesh`` (spec ``P()``).

    Every process must pass the same values (e.g. params initialised from the same key).

    Args:
      tree: a pytree of arrays.
      mesh: the mesh (:func:`funcnet.parallel.make_mesh`).

    Returns:
      The pytree of global ``jax.Array`` s with ``NamedSharding(mesh, P())``.

    Raises:
      TypeError: a leaf is not an array, or ``mesh`` is not a Mesh.
    """
    fn = "put_replicated"
    require_mesh(fn, mesh)
    _checks.check_array_leaves(fn, "tree", tree)
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda a: _from_host(a, sharding), tree)


def mesh_sharding(a, mesh: Mesh) -> NamedSharding | None:
    """``a``'s ``NamedSharding`` if ``a`` is a ``jax.Array`` laid out on ``mesh``, else ``None``.

    A layout on a mesh of the same devices and axis names in another mode (an ``Explicit``
    mesh from ``jax.make_mesh``, see :func:`auto_axes`) counts, as the same spec on
    ``mesh``. A typed PRNG key is never kept (keys are replicated)."""
    if not isinstance(a, jax.Array) or _checks.is_key(a):
        return None
    s = a.sharding
    if not isinstance(s, NamedSharding) or isinstance(s.mesh, jax.sharding.AbstractMesh):
        return None
    if s.mesh == mesh:
        return s
    same = (s.mesh.axis_names == mesh.axis_names and s.mesh.devices.shape == mesh.devices.shape
            and (s.mesh.devices == mesh.devices).all())
    return NamedSharding(mesh, s.spec) if same else None  # e.g. the mesh's Explicit twin


def put_on_mesh(tree, mesh: Mesh, like=None, *, copy: bool = False):
    """Places ``tree`` on ``mesh``, keeping the caller's layouts on that mesh.

    A leaf whose counterpart in ``like`` (default: the leaf itself) is a ``jax.Array``
    with a ``NamedSharding`` of ``mesh`` (e.g. a weight split over a ``"model"`` axis for
    tensor parallelism, or over the data axis for FSDP) is placed with that sharding;
    every other leaf is replicated (:func:`put_replicated`). ``like`` is how ``fit``
    puts restored host arrays back onto the shardings of the params it was given.

    Args:
      tree: a pytree of arrays (host or device).
      mesh: the mesh.
      like: a pytree of ``tree``'s structure whose leaves' shardings are kept.
      copy: return fresh buffers for every leaf (what ``fit`` donates), never ``tree``'s
        own; else a leaf already in place is returned as it is.
    """
    like = tree if like is None else like
    rep = replicated(mesh)

    def put(a, model):
        s = mesh_sharding(model, mesh)
        if s is None:
            return _from_host(to_host(a) if copy else a, rep)
        if isinstance(a, jax.Array) and (a.sharding == s or not a.is_fully_addressable):
            return jax.device_put(a, s, may_alias=False) if copy or a.sharding != s else a
        return _from_host(np.asarray(a), s)

    return jax.tree_util.tree_map(put, tree, like)


def layout(tree, mesh: Mesh):
    """A hashable description of ``tree``'s shardings on ``mesh`` for a jit cache key:
    ``None`` when every leaf is replicated, else ``(treedef, shardings)``; rebuild the
    pytree of shardings with ``jax.tree_util.tree_unflatten(*layout)``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    shardings = tuple(mesh_sharding(a, mesh) or replicated(mesh) for a in leaves)
    if all(s.is_fully_replicated for s in shardings):
        return None
    return treedef, shardings


def put_batch(tree, sharding: NamedSharding):
    """A global batch (the same host rows on every process) split by ``sharding``.

    Leaves that already are global arrays spanning other processes (built with
    :func:`funcnet.parallel.global_batch`) are kept as they are.
    """
    return jax.tree_util.tree_map(lambda a: _from_host(a, sharding), tree)


def check_host_readable(fn: str, named: dict, why: str) -> None:
    """``ValueError`` naming the first leaf :func:`to_host` cannot read on this process: a
    ``jax.Array`` split over the devices of several processes (e.g. an FSDP weight on a
    pod), which only a gather across processes could copy. ``why`` says what needs it."""
    for name, tree in named.items():
        for path, a in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if (isinstance(a, jax.Array) and not a.is_fully_addressable
                    and not a.sharding.is_fully_replicated):
                raise ValueError(
                    f"{fn}: {name}{_checks.path_str(path)} of shape {a.shape} is split over "
                    f"the devices of several processes ({a.sharding.spec}); {why} needs "
                    f"every leaf readable on process 0: replicate it over the processes, or "
                    f"train without it and save after a gather "
                    f"(jax.experimental.multihost_utils.process_allgather)")


def to_host(tree):
    """NumPy copies of a pytree of results, also of arrays spanning other processes.

    A fully replicated ``jax.Array`` (params after a mesh step) is read from this
    process's first shard, so every process can save or print it without
    communication; a fully addressable array (one process) is read whole.

    Args:
      tree: a pytree of arrays.

    Returns:
      The pytree with NumPy array leaves; a typed PRNG key (``jax.random.key``), which
      NumPy cannot hold, stays a key, on this process's default device.

    Raises:
      ValueError: a leaf is neither fully replicated nor held by this process alone
        (gather it first, e.g. with ``jax.experimental.multihost_utils``).
    """
    def get(path, a):
        if _checks.is_key(a):
            return _key_data_map(lambda d: jax.device_put(get(path, d)), a)
        if not isinstance(a, jax.Array) or a.is_fully_addressable:
            return np.asarray(a)
        if a.sharding.is_fully_replicated:
            return np.asarray(a.addressable_shards[0].data)
        raise ValueError(f"to_host: tree{_checks.path_str(path)} of shape {a.shape} is split "
                         f"over devices of other processes ({a.sharding}); only replicated "
                         f"or process-local arrays can be copied without a gather")

    return jax.tree_util.tree_map_with_path(get, tree)
