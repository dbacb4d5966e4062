"""Placing pytrees on a device mesh: what ``fit(mesh=...)`` uses, re-exported by ``parallel``.

The mesh layout of data parallelism: params, state and optimizer state replicated over
every device of the mesh (``PartitionSpec()``), batches split along their leading axis
over all the mesh's axes. Every function here works with several processes
(``jax.distributed``): :func:`put_replicated` and :func:`put_batch` write only this
process's devices from a host value that every process holds, and :func:`to_host` reads
a replicated array from this process's first shard.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from funcnet import _checks

__all__ = ["batch_sharding", "put_batch", "put_replicated", "replicated", "require_mesh",
           "to_host"]


def require_mesh(fn: str, mesh) -> None:
    """``TypeError`` unless ``mesh`` is a :class:`jax.sharding.Mesh`."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"{fn}: mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")


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


def put_batch(tree, sharding: NamedSharding):
    """A global batch (the same host rows on every process) split by ``sharding``.

    Leaves that already are global arrays spanning other processes (built with
    :func:`funcnet.parallel.global_batch`) are kept as they are.
    """
    return jax.tree_util.tree_map(lambda a: _from_host(a, sharding), tree)


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
