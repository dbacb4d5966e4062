"""Data parallelism over a device mesh: ``jax.jit`` with shardings, and ``shard_map``.

Both steps take params / state / optimizer state replicated over the mesh
(:func:`~funcnet.parallel.put_replicated`) and a global batch split along the mesh's
data axis (:func:`~funcnet.parallel.global_batch`), and return replicated results. They
work unchanged with several processes (``jax.distributed``), each feeding its part of the
batch.

- :func:`sharded_train_step`: the single-device step on the GLOBAL batch, compiled by
  ``jax.jit`` with ``NamedSharding`` s; XLA partitions it and inserts the all-reduces.
  The model is written as for one device: ``BatchNorm(axis_name=None)`` already
  normalises with global-batch statistics (the means over the sharded batch axis become
  all-reduces).
- :func:`shard_map_train_step`: the explicit per-device program of
  :func:`~funcnet.parallel.data_parallel_step` under ``jax.shard_map``, with
  ``lax.pmean`` over the mesh axis, like ``pmap``; sync batch norm needs
  ``BatchNorm(axis_name=<mesh axis>)``.
"""
from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from funcnet import ops
from funcnet.nn import Layer
from funcnet.parallel.devices import batch_shape_error, check_mesh_axis, make_mesh
from funcnet.parallel.step import data_parallel_step

__all__ = ["shard_map_train_step", "sharded_train_step"]


def _checked_runner(fn: str, compiled, mesh: Mesh, axis_name: str) -> Callable:
    """``run(params, state, opt_state, x, y, key=None)`` with a clear batch-size error."""
    n_dev = mesh.shape[axis_name]

    def run(params, state, opt_state, x, y, key=None):
        err = batch_shape_error(fn, {"x": x, "y": y}, n_dev,
                                f"devices of mesh axis {axis_name!r}")
        if err is not None:
            raise err
        return compiled(params, state, opt_state, x, y, key)

    return run


def sharded_train_step(model: Layer, opt, loss_fn: Callable = ops.softmax_cross_entropy,
                       mesh: Mesh | None = None, *, axis_name: str | None = None,
                       metrics_fn: Callable | None = None, accum_steps: int = 1,
                       donate: bool = False) -> Callable:
    """A data-parallel step as ``jax.jit`` of the global-batch step with shardings.

    ``in_shardings``: params, state, opt_state and key replicated ``P()``; ``x`` and ``y``
    ``P(axis_name)`` (rows split over the devices). ``out_shardings``: everything
    replicated. The program is the single-device step (``data_parallel_step(...,
    axis_name=None)``) on the global batch, so it equals single-device training by
    construction, up to the order of floating-point sums; XLA's SPMD partitioner turns the
    batch reductions (loss mean, gradient sums, batch-norm statistics) into all-reduces.
    Dropout masks are drawn for the global batch from the one ``key``.

    Args:
      model, opt, loss_fn, metrics_fn, accum_steps: as for
        :func:`~funcnet.parallel.data_parallel_step`; ``BatchNorm`` layers must have
        ``axis_name=None`` (there is no named axis under ``jit``).
      mesh: a mesh; default ``make_mesh()`` (all devices, axis ``"data"``).
      axis_name: the mesh axis the batch is split over; default: the mesh's only axis.
      donate: donate the buffers of ``params``, ``state`` and ``opt_state``.

    Returns:
      ``step(params, state, opt_state, x, y, key=None) -> (params, state, opt_state,
      metrics)`` on global arrays: ``x`` ``(N, ...)``, ``y`` ``(N, ...)`` with ``N``
      divisible by the number of devices on ``axis_name`` (and by ``accum_steps``).

    Raises:
      TypeError: ``mesh`` is not a Mesh; the checks of ``data_parallel_step``.
      ValueError: ``axis_name`` not in the mesh; when called, ``N`` not divisible by the
        number of devices.
    """
    fn = "sharded_train_step"
    mesh = make_mesh() if mesh is None else mesh
    axis_name = check_mesh_axis(fn, mesh, axis_name)
    step = data_parallel_step(model, opt, loss_fn, None, metrics_fn=metrics_fn,
                              accum_steps=accum_steps)
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(axis_name))
    compiled = jax.jit(step, in_shardings=(rep, rep, rep, data, data, rep),
                       out_shardings=(rep, rep, rep, rep),
                       donate_argnums=(0, 1, 2) if donate else ())
    return _checked_runner(fn, compiled, mesh, axis_name)


def shard_map_train_step(model: Layer, opt, loss_fn: Callable = ops.softmax_cross_entropy,
                         mesh: Mesh | None = None, *, axis_name: str | None = None,
                         metrics_fn: Callable | None = None, accum_steps: int = 1,
                         donate: bool = False) -> Callable:
    """:func:`~funcnet.parallel.data_parallel_step` under ``jax.jit(jax.shard_map(...))``.

    Each device runs the per-device step on its block of rows (``in_specs`` ``P(axis)``
    for ``x``/``y``, ``P()`` for the rest), with ``lax.pmean`` of gradients and metrics,
    per-device dropout keys and sync batch norm through ``BatchNorm(axis_name=axis)``,
    exactly as under ``pmap``. ``check_vma=False``: the gradients of the replicated
    params are per-device values until the explicit ``pmean`` (pmap semantics); the
    results, identical on every device, are returned replicated (``out_specs`` ``P()``).

    Args:
      model, opt, loss_fn, metrics_fn, accum_steps: as for
        :func:`~funcnet.parallel.data_parallel_step`.
      mesh: a mesh; default ``make_mesh()`` (all devices, axis ``"data"``).
      axis_name: the mesh axis the batch is split over and ``pmean`` reduces over;
        default: the mesh's only axis. Use it in the model's ``BatchNorm(axis_name=...)``.
      donate: donate the buffers of ``params``, ``state`` and ``opt_state``.

    Returns:
      ``step(params, state, opt_state, x, y, key=None) -> (params, state, opt_state,
      metrics)`` on global arrays, as :func:`sharded_train_step`.

    Raises:
      As :func:`sharded_train_step`.
    """
    fn = "shard_map_train_step"
    mesh = make_mesh() if mesh is None else mesh
    axis_name = check_mesh_axis(fn, mesh, axis_name)
    step = data_parallel_step(model, opt, loss_fn, axis_name, metrics_fn=metrics_fn,
                              accum_steps=accum_steps)
    mapped = jax.shard_map(step, mesh=mesh,
                           in_specs=(P(), P(), P(), P(axis_name), P(axis_name), P()),
                           out_specs=(P(), P(), P(), P()), check_vma=False)
    compiled = jax.jit(mapped, donate_argnums=(0, 1, 2) if donate else ())
    return _checked_runner(fn, compiled, mesh, axis_name)
