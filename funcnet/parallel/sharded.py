"""Data parallelism over a device mesh: ``jax.jit`` with shardings, and ``shard_map``.

Both steps take params / state / optimizer state replicated over the mesh
(:func:`~funcnet.parallel.put_replicated`) and a global batch split along the mesh's
data axis (:func:`~funcnet.parallel.global_batch`), and return replicated results. They
work unchanged with several processes (``jax.distributed``), each feeding its part of the
batch. Both map the one step of :func:`funcnet.train.train_step` and return its metrics.

- :func:`sharded_train_step`: the step on the GLOBAL batch (no ``axis_name``), compiled
  by ``jax.jit`` with ``NamedSharding`` s; XLA partitions it and inserts the
  all-reduces. Batch norm normalises with global-batch statistics: the means over the
  sharded batch axis become all-reduces (a ``BatchNorm(axis_name=...)`` whose name is not
  bound falls back to these statistics, so one model definition serves every style).
- :func:`shard_map_train_step`: the explicit per-device program (``axis_name`` = the mesh
  axis) under ``jax.shard_map``, with ``lax.pmean`` over the mesh axis, like ``pmap``;
  sync batch norm needs ``BatchNorm(axis_name=<mesh axis>)``.
"""
from __future__ import annotations

from typing import Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from funcnet import _checks, ops
from funcnet.nn import Layer
from funcnet.parallel.devices import check_mesh_axis, make_mesh
from funcnet.train import sharding, train_step

__all__ = ["shard_map_train_step", "sharded_train_step"]


def _runner(fn: str, compiled, devices: int, axis_name: str) -> Callable:
    """``run(params, state, opt_state, x, y, key=None)``; a clear error for a ragged batch.

    The check runs only when the compiled step fails, so a call costs no Python checks.
    """
    def run(params, state, opt_state, x, y, key=None):
        try:
            return compiled(params, state, opt_state, x, y, key)
        except ValueError:  # what jit / shard_map raise for rows that do not split
            _checks.check_same_leading(fn, {"x": x, "y": y}, devices,
                                       f"{devices} devices of mesh axis {axis_name!r}")
            raise

    return run


def _setup(fn: str, model, opt, loss_fn, mesh, axis_name, metrics_fn, accum_steps,
           compute_dtype, donate, step_axis):
    mesh = make_mesh() if mesh is None else mesh
    axis_name = check_mesh_axis(fn, mesh, axis_name)
    mesh = sharding.auto_axes(mesh)          # jax.make_mesh's Explicit axes: see auto_axes
    step = train_step(model, opt, loss_fn, axis_name=axis_name if step_axis else None,
                      metrics_fn=metrics_fn, accum_steps=accum_steps,
                      compute_dtype=compute_dtype)
    donate = (0, 1, 2) if _checks.static_bool(fn, "donate", donate) else ()
    return mesh, axis_name, step, donate


def sharded_train_step(model: Layer, opt, loss_fn: Callable = ops.softmax_cross_entropy,
                       mesh: Mesh | None = None, *, axis_name: str | None = None,
                       metrics_fn: Callable | None = None, accum_steps: int = 1,
                       compute_dtype=None, donate: bool = False) -> Callable:
    """A data-parallel step as ``jax.jit`` of the global-batch step with shardings.

    ``in_shardings``: params, state, opt_state and key replicated ``P()``; ``x`` and ``y``
    ``P(axis_name)`` (rows split over the devices). ``out_shardings``: everything
    replicated. A leaf of params / state / opt_state already laid out on ``mesh`` (a
    ``NamedSharding`` of it: a weight split over a ``"model"`` axis for tensor
    parallelism, or over the data axis for FSDP; ``opt.init`` of such params lays the
    moments out alike) keeps its sharding in and out; the step is compiled once per
    layout (switched to when a call's layout differs). Arrays laid out on a mesh with
    ``Explicit`` axes (``jax.make_mesh``'s default) are moved to its ``Auto`` twin, the
    mode the step is compiled in. The program is :func:`funcnet.train.train_step` (no
    ``axis_name``) on the global batch, so it equals single-device training by
    construction, up to the order of floating-point sums. Dropout masks are drawn for the
    global batch from the one ``key``.

    Args:
      model, opt, loss_fn, metrics_fn, accum_steps, compute_dtype: as for
        :func:`funcnet.train.train_step`.
      mesh: a mesh; default ``make_mesh()`` (all devices, axis ``"data"``).
      axis_name: the mesh axis the batch is split over; default: the mesh's only axis.
      donate: donate the buffers of ``params``, ``state`` and ``opt_state``.

    Returns:
      ``step(params, state, opt_state, x, y, key=None) -> (params, state, opt_state,
      metrics)`` on global arrays: ``x`` ``(N, ...)``, ``y`` ``(N, ...)`` with ``N``
      divisible by the number of devices on ``axis_name`` (and by ``accum_steps``).

    Raises:
      TypeError: ``mesh`` is not a Mesh; the checks of ``train_step``.
      ValueError: ``axis_name`` not in the mesh; when called, ``N`` not divisible by the
        number of devices.
    """
    fn = "sharded_train_step"
    mesh, axis_name, step, donate = _setup(fn, model, opt, loss_fn, mesh, axis_name,
                                           metrics_fn, accum_steps, compute_dtype, donate,
                                           step_axis=False)
    rep, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(axis_name))

    def compile_for(layout):    # layout: sharding.layout of (params, state, opt_state)
        carry = (rep,) * 3 if layout is None else jax.tree_util.tree_unflatten(*layout)
        return jax.jit(step, in_shardings=(*carry, data, data, rep),
                       out_shardings=(*carry, rep), donate_argnums=donate)

    compiled = {None: compile_for(None)}
    current = [None]
    attempt = _runner(fn, lambda *args: compiled[current[0]](*args),
                      mesh.shape[axis_name], axis_name)

    def run(params, state, opt_state, x, y, key=None):
        try:
            return attempt(params, state, opt_state, x, y, key)
        except Exception:   # noqa: BLE001 -- re-raised unless the layout changed
            # "Sharding passed to jit does not match" (a new layout of the params) or a
            # ShardingTypeError (arrays on an Explicit mesh): place them, switch, retry
            given = (params, state, opt_state, x, y)
            moved = sharding.auto_leaves(given)
            layout = sharding.layout(moved[:3], mesh)
            same = all(a is b for a, b in zip(jax.tree_util.tree_leaves(moved),
                                              jax.tree_util.tree_leaves(given)))
            if layout == current[0] and same:
                raise   # e.g. rows that do not split, named by _runner
            if layout not in compiled:
                compiled[layout] = compile_for(layout)
            current[0] = layout
            return attempt(*moved, key)

    return run


def shard_map_train_step(model: Layer, opt, loss_fn: Callable = ops.softmax_cross_entropy,
                         mesh: Mesh | None = None, *, axis_name: str | None = None,
                         metrics_fn: Callable | None = None, accum_steps: int = 1,
                         compute_dtype=None, donate: bool = False) -> Callable:
    """:func:`funcnet.train.train_step` (``axis_name`` = the mesh axis) under ``shard_map``.

    Each device runs the per-device step on its block of rows (``in_specs`` ``P(axis)``
    for ``x``/``y``, ``P()`` for the rest), with ``lax.pmean`` of gradients and metrics,
    per-device dropout keys and sync batch norm through ``BatchNorm(axis_name=axis)``,
    exactly as under ``pmap``. ``check_vma=False``: the gradients of the replicated
    params are per-device values until the explicit ``pmean`` (pmap semantics); the
    results, identical on every device, are returned replicated (``out_specs`` ``P()``).

    Args:
      model, opt, loss_fn, metrics_fn, accum_steps, compute_dtype: as for
        :func:`funcnet.train.train_step`.
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
    mesh, axis_name, step, donate = _setup(fn, model, opt, loss_fn, mesh, axis_name,
                                           metrics_fn, accum_steps, compute_dtype, donate,
                                           step_axis=True)
    mapped = jax.shard_map(step, mesh=mesh,
                           in_specs=(P(), P(), P(), P(axis_name), P(axis_name), P()),
                           out_specs=P(), check_vma=False)
    compiled = jax.jit(mapped, donate_argnums=donate)
    return _runner(fn, compiled, mesh.shape[axis_name], axis_name)
