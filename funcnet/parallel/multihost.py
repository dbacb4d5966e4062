"""Several processes (hosts) training one model: a thin layer over ``jax.distributed``.

JAX's multi-controller runtime is the engine: every process runs the same program,
``jax.devices()`` lists the devices of all processes, and a ``jax.Array`` laid out over a
mesh of those devices is global. funcnet adds three helpers::

    funcnet.parallel.initialize()                 # first thing; a no-op on one process
    x_local, y_local = process_batch(x, y)        # this process's rows of the global batch
    xg, yg = global_batch((x_local, y_local), mesh)   # one global, row-sharded jax.Array each

and the mesh steps of :mod:`funcnet.parallel.sharded` run on the result. Gradients
are reduced over all processes' devices by XLA's collectives (ICI/DCN on TPU pods, gloo on
CPU, NCCL on GPU).
"""
from __future__ import annotations

import os
import warnings

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from funcnet._checks import (check_array_leaves, check_divisible, check_same_leading,
                              static_int)
from funcnet.parallel.devices import check_mesh_axis, make_mesh

__all__ = ["global_batch", "initialize", "process_batch"]


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, **kwargs) -> bool:
    """Starts JAX's distributed runtime when there is more than one process.

    Call it in every process before any other JAX call. Cases:

    - already initialised: nothing to do, returns ``True``;
    - ``num_processes == 1``: a single process, nothing to do, returns ``False``;
    - arguments (or ``JAX_COORDINATOR_ADDRESS``) given: ``jax.distributed.initialize``
      with them and ``**kwargs`` (e.g. ``local_device_ids``, ``initialization_timeout``);
    - nothing given: ``jax.distributed.initialize()`` auto-detects a cluster (Cloud TPU
      pod slices, SLURM, Open MPI, Kubernetes); when none is detected (a laptop, one
      Colab runtime) this is a no-op returning ``False``. If JAX was already used in the
      process (too late to start the runtime), it warns and returns ``False``.

    On CPU the cross-process collectives use gloo (JAX's default
    ``jax_cpu_collectives_implementation``).

    Args:
      coordinator_address: ``"host:port"`` of process 0's coordinator service.
      num_processes: total number of processes.
      process_id: this process's index in ``[0, num_processes)``.
      **kwargs: passed on to ``jax.distributed.initialize``.

    Returns:
      ``True`` if the distributed runtime is running, ``False`` for a single process.

    Raises:
      RuntimeError: from JAX, with explicit arguments after the backend was already used
        (call ``initialize`` first), or if a cluster could not be joined.
      ValueError: from JAX, for inconsistent explicit arguments.
    """
    if jax.distributed.is_initialized():
        return True
    if num_processes == 1:
        return False
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
    explicit = explicit or bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id, **kwargs)
    except ValueError:
        if explicit:
            raise
        return False  # no cluster detected: one process
    except RuntimeError as e:
        if explicit or "before" not in str(e):
            raise
        warnings.warn(
            "initialize: JAX was already used in this process, so its distributed runtime "
            "can no longer start; continuing as a single process. On a multi-host system "
            "call funcnet.parallel.initialize() before any other JAX call.", stacklevel=2)
        return False
    return True


def _index_and_count(fn: str, process_index, process_count) -> tuple[int, int]:
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    pi = static_int(fn, "process_index", pi, minimum=0)
    pc = static_int(fn, "process_count", pc, minimum=1)
    if pi >= pc:
        raise ValueError(f"{fn}: process_index {pi} is not < process_count {pc}")
    return pi, pc


def process_batch(*arrays, process_index: int | None = None,
                  process_count: int | None = None) -> tuple:
    """This process's contiguous block of rows of a global batch.

    With ``P`` processes and a global batch of ``N`` rows, process ``p`` gets rows
    ``p * N // P .. (p + 1) * N // P - 1`` of every array. That is the block of the
    global batch that :func:`global_batch` places on process ``p``'s devices for a mesh
    whose devices are in ``jax.devices()`` order (:func:`~funcnet.parallel.make_mesh`),
    so training on the assembled global array equals training on the whole batch. Every
    process may load the full data set (small sets) and call this per batch, or read
    only its own block of each batch from storage with the same arithmetic.

    Args:
      *arrays: arrays (or pytrees of arrays) sharing the leading size ``N``, e.g.
        ``x, y``.
      process_index: ``p``; default ``jax.process_index()``.
      process_count: ``P``; default ``jax.process_count()``.

    Returns:
      A tuple with one entry per argument, each leaf cut to ``N // P`` rows.

    Raises:
      ValueError: no arrays, ``N`` not divisible by ``P``, leading sizes that differ, or
        ``process_index``/``process_count`` out of range.
      TypeError: a leaf is not an array; ``process_index``/``process_count`` not ints.
    """
    fn = "process_batch"
    pi, pc = _index_and_count(fn, process_index, process_count)
    n = check_same_leading(fn, {"arrays": arrays}, pc, f"process_count={pc}")
    if n is None:
        raise ValueError(f"{fn}: pass at least one array, e.g. process_batch(x, y)")
    lo, hi = pi * (n // pc), (pi + 1) * (n // pc)
    return tuple(jax.tree_util.tree_map(lambda a: a[lo:hi], arr) for arr in arrays)


def global_batch(local, mesh: Mesh | None = None, axis_name: str | None = None):
    """Assembles per-process batches into global arrays split over the mesh's data axis.

    ``jax.make_array_from_process_local_data(NamedSharding(mesh, P(axis_name)), leaf)``
    for every leaf: the global array has ``process_count * n`` rows, process ``p``'s
    ``n`` rows in block ``p`` (with a :func:`~funcnet.parallel.make_mesh` mesh), split
    over its local devices. With one process it simply places the batch over the mesh.

    Args:
      local: an array ``(n, ...)`` or a pytree of them, this process's rows
        (:func:`process_batch`).
      mesh: the mesh; default ``make_mesh()``.
      axis_name: the data axis of the mesh; default its only axis.

    Returns:
      ``local`` with every leaf a global ``jax.Array`` of shape
      ``(process_count * n, ...)`` sharded ``P(axis_name)``.

    Raises:
      ValueError: ``n`` not divisible by this process's number of devices on the mesh.
      TypeError: a leaf is not an array; ``mesh`` not a Mesh.
    """
    fn = "global_batch"
    mesh = make_mesh() if mesh is None else mesh
    axis_name = check_mesh_axis(fn, mesh, axis_name)
    check_array_leaves(fn, "local", local, min_rank=1)
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    check_divisible(fn, "local", local, max(local_devices, 1),
                    "devices this process holds on the mesh")
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    return jax.tree_util.tree_map(
        lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), local)
