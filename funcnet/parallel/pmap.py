"""Data parallelism with ``jax.pmap``: one replica of the model per local device."""
from __future__ import annotations

from typing import Callable, Sequence

import jax

from funcnet import ops
from funcnet.nn import Layer
from funcnet.parallel.step import data_parallel_step

__all__ = ["pmap_train_step"]


def pmap_train_step(model: Layer, opt, loss_fn: Callable = ops.softmax_cross_entropy,
                    axis_name: str = "batch", *, metrics_fn: Callable | None = None,
                    accum_steps: int = 1, devices: Sequence[jax.Device] | None = None,
                    donate: bool = False) -> Callable:
    """:func:`~funcnet.parallel.data_parallel_step` under ``jax.pmap(axis_name=axis_name)``.

    Usage (``D`` local devices, global batch ``N = D * n``)::

        step = pmap_train_step(model, optim.adam(1e-3), ops.softmax_cross_entropy)
        params, state, opt_state = replicate((params, state, opt_state))
        for x, y in batches:                          # x: (N, ...), y: (N,)
            xs, ys = shard_batch((x, y))              # (D, n, ...), (D, n)
            params, state, opt_state, metrics = step(params, state, opt_state, xs, ys, key)
        params, state = unreplicate((params, state))

    Gradients and metrics are ``lax.pmean``-ed over ``axis_name``, so all replicas stay
    equal and take the step of single-device training on the global batch; give the
    model's ``BatchNorm`` layers the same ``axis_name`` for synchronised statistics. The
    ``key`` is broadcast (``in_axes=None``) and folded with the device index inside.

    Args:
      model, opt, loss_fn, metrics_fn, accum_steps: as for
        :func:`~funcnet.parallel.data_parallel_step`.
      axis_name: the ``pmap`` axis name (must match ``BatchNorm(axis_name=...)``).
      devices: passed to ``jax.pmap`` (default: all local devices).
      donate: donate the buffers of ``params``, ``state`` and ``opt_state``.

    Returns:
      ``step(params, state, opt_state, xs, ys, key=None) -> (params, state, opt_state,
      metrics)``; params / state / opt_state in the replicated layout ``(D, ...)``
      (:func:`~funcnet.parallel.replicate`), ``xs``/``ys`` ``(D, n, ...)``
      (:func:`~funcnet.parallel.shard_batch`), ``metrics`` leaves of shape ``(D,)``
      (equal entries).

    Raises:
      TypeError, ValueError: as :func:`~funcnet.parallel.data_parallel_step`; ``jax.pmap``
        raises if the leading axes do not equal the device count.
    """
    step = data_parallel_step(model, opt, loss_fn, axis_name, metrics_fn=metrics_fn,
                              accum_steps=accum_steps)
    mapped = jax.pmap(step, axis_name=axis_name, in_axes=(0, 0, 0, 0, 0, None),
                      devices=devices, donate_argnums=(0, 1, 2) if donate else ())

    def run(params, state, opt_state, xs, ys, key=None):
        return mapped(params, state, opt_state, xs, ys, key)

    return run
