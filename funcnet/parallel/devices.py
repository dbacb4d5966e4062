"""Placing pytrees on devices: replicas for ``pmap``, batch shards, meshes.

Two layouts are used by the data-parallel steps:

- ``pmap`` layout: every leaf carries a leading device axis. :func:`replicate` copies
  params / state / optimizer state to ``(D, ...)``; :func:`shard_batch` reshapes a
  batch ``(N, ...)`` to ``(D, N // D, ...)``; :func:`unreplicate` takes replica 0 back.
- mesh layout (``jax.jit`` with shardings, ``shard_map``, ``fit(mesh=...)``): global
  ``jax.Array`` s laid out over a one-axis :class:`jax.sharding.Mesh` (:func:`make_mesh`);
  params are replicated (:func:`put_replicated`), batches are split along the mesh axis
  (:func:`funcnet.parallel.global_batch`). :func:`put_replicated` and :func:`to_host` are
  :mod:`funcnet.train.sharding`'s (``fit`` uses them), re-exported here.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from funcnet._checks import check_array_leaves, check_same_leading, static_int
from funcnet.train.sharding import put_replicated, require_mesh, to_host

__all__ = ["make_mesh", "put_replicated", "replicate", "shard_batch", "to_host", "unreplicate"]

_tree_map = jax.tree_util.tree_map


def _devices(fn: str, devices, default=jax.local_devices) -> list:
    """``devices`` as a non-empty list; ``None`` gives ``default()``."""
    devices = list(default() if devices is None else devices)
    if not devices:
        raise ValueError(f"{fn}: devices is empty")
    return devices


def replicate(tree, devices: Sequence[jax.Device] | None = None, *, axis_name: str = "batch"):
    """Copies every leaf of ``tree`` to each device, stacked on a new leading axis.

    The result is the ``pmap`` layout of params, batch-norm state and optimizer state:
    a leaf of shape ``s`` becomes a ``jax.Array`` of shape ``(D,) + s`` whose slice ``d``
    lives on ``devices[d]``.

    Args:
      tree: a pytree of arrays (NumPy or jax; scalars such as step counters included).
      devices: the devices to replicate over, in ``pmap`` order; default
        ``jax.local_devices()``.
      axis_name: the name of the ``pmap`` axis that will take the result (default
        ``"batch"``, :func:`pmap_train_step`'s): JAX's ``pmap`` returns arrays laid out on
        a mesh of that axis name, and inputs laid out on the same one let its second
        step reuse the first step's program instead of compiling it again.

    Returns:
      The pytree with leaves of shape ``(D,) + leaf.shape``, ``D = len(devices)``.

    Raises:
      TypeError: a leaf is not an array.
      ValueError: ``devices`` is empty.
    """
    fn = "replicate"
    check_array_leaves(fn, "tree", tree)
    devices = _devices(fn, devices)
    if not isinstance(axis_name, str):
        raise TypeError(f"{fn}: axis_name must be a str, got {type(axis_name).__name__}")

    # pmap's own layout: a NamedSharding splitting the leading axis over the devices.
    sharding = NamedSharding(Mesh(np.array(devices), (axis_name,)), PartitionSpec(axis_name))

    def put(a):
        shards = [jax.device_put(jnp.asarray(a)[None], d) for d in devices]
        return jax.make_array_from_single_device_arrays(
            (len(devices),) + tuple(jnp.shape(a)), sharding, shards)

    return _tree_map(put, tree)


def unreplicate(tree):
    """Replica 0 of a pytree in the ``pmap`` layout: ``leaf[0]`` for every leaf.

    Use it on params / state returned by a ``pmap`` step (all replicas are equal after a
    synchronised step) before evaluating, saving or printing them.

    Args:
      tree: a pytree whose leaves have a leading device axis ``(D, ...)``.

    Returns:
      The pytree with leaves ``leaf[0]`` of shape ``leaf.shape[1:]``.

    Raises:
      TypeError: a leaf is not an array.
      ValueError: a leaf has no leading axis.
    """
    check_array_leaves("unreplicate", "tree", tree, min_rank=1)
    return _tree_map(lambda a: a[0], tree)


def shard_batch(x, num_devices: int | None = None):
    """Splits the leading (batch) axis over devices: ``(N, ...) -> (D, N // D, ...)``.

    Rows ``d * N // D .. (d + 1) * N // D - 1`` go to device ``d`` (contiguous blocks), so
    the global batch is ``x_sharded.reshape((N,) + x.shape[1:])``. NumPy inputs stay NumPy
    (``pmap`` transfers them); ``x`` may be a pytree such as ``(images, labels)``.

    Args:
      x: an array ``(N, ...)`` or a pytree of arrays with the same leading size ``N``.
      num_devices: ``D``; default ``jax.local_device_count()``.

    Returns:
      ``x`` with every leaf reshaped to ``(D, N // D) + leaf.shape[1:]``.

    Raises:
      ValueError: ``N`` is not divisible by ``D``, leaves disagree on ``N``, a leaf is a
        scalar, or ``num_devices`` < 1.
      TypeError: a leaf is not an array, ``num_devices`` not an int.
    """
    fn = "shard_batch"
    if num_devices is None:
        d = jax.local_device_count()
        why = f"the {d} local devices"
    else:
        d = static_int(fn, "num_devices", num_devices, minimum=1)
        why = f"num_devices={d}"
    n = check_same_leading(fn, {"x": x}, d, why)
    return _tree_map(lambda a: a.reshape((d, n // d) + tuple(a.shape[1:])), x)


def make_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = "data") -> Mesh:
    """A one-axis :class:`~jax.sharding.Mesh` for data parallelism.

    Args:
      devices: the devices, default ``jax.devices()`` (all processes' devices, ordered by
        process: process ``p`` owns a contiguous block of the mesh, which is what
        :func:`funcnet.parallel.process_batch` assumes).
      axis_name: the mesh axis name the batch is split over.

    Returns:
      ``Mesh(np.array(devices), (axis_name,))``.

    Raises:
      ValueError: ``devices`` is empty. TypeError: ``axis_name`` is not a str.
    """
    if not isinstance(axis_name, str):
        raise TypeError(f"make_mesh: axis_name must be a str, got {type(axis_name).__name__}")
    return Mesh(np.array(_devices("make_mesh", devices, jax.devices)), (axis_name,))


def check_mesh_axis(fn: str, mesh, axis_name) -> str:
    """``mesh`` must be a Mesh with axis ``axis_name`` (default: its only axis)."""
    require_mesh(fn, mesh)
    if axis_name is None:
        if len(mesh.axis_names) != 1:
            raise ValueError(f"{fn}: mesh has axes {mesh.axis_names}; pass axis_name= to "
                             f"choose the data axis")
        return mesh.axis_names[0]
    if axis_name not in mesh.axis_names:
        raise ValueError(f"{fn}: axis_name {axis_name!r} is not an axis of the mesh "
                         f"{dict(mesh.shape)}")
    return axis_name
