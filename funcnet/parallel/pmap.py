"""Data parallelism with ``jax.pmap``: one replica of the model per local device."""
from __future__ import annotations

from typing import Callable, Sequence

import jax

from funcnet import _checks, ops
from funcnet.nn import Layer
from funcnet.train import train_step

__all__ = ["pmap_train_step"]


def check_replicated(fn: str, trees: dict, devices: int) -> None:
    """Every leaf of ``trees`` (``{name: pytree}``) has the leading device axis ``(D, ...)``.

    Raises ``ValueError`` naming the first leaf without it; the step runs it only after a
    call failed, so a correct call pays no Python checks.
    """
    for name, tree in trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if not hasattr(leaf, "shape"):  # not an array: JAX's own error says more
                continue
            shape = _checks.shape_of(leaf)
            if not shape or shape[0] != devices:
                raise ValueError(
                    f"{fn}: {name}{jax.tree_util.keystr(path)} has shape {shape}, expected a "
                    f"leading device axis of size {devices}: replicate params, state and "
                    f"opt_state with funcnet.parallel.replicate(...) and split the batch with "
                    f"funcnet.parallel.shard_batch(...) first")


def pmap_train_step(model: Layer, opt, loss_fn: Callable = ops.softmax_cross_entropy,
                    axis_name: str = "batch", *, metrics_fn: Callable | None = None,
                    accum_steps: int = 1, compute_dtype=None,
                    devices: Sequence[jax.Device] | None = None,
                    donate: bool = False) -> Callable:
    """:func:`funcnet.train.train_step` under ``jax.pmap(axis_name=axis_name)``.

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
    ``key`` is broadcast (``in_axes=None``) and folded with the device index inside;
    ``key=None`` (no stochastic layers) runs a second ``pmap`` without a key argument,
    compiled on its first call.

    Args:
      model, opt, loss_fn, metrics_fn, accum_steps, compute_dtype: as for
        :func:`funcnet.train.train_step` (the same metrics as on one device).
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
      TypeError, ValueError: as :func:`funcnet.train.train_step`; when called, a
        ``ValueError`` naming the first leaf of ``params``/``state``/``opt_state``/batch
        without the leading device axis (e.g. params that were not replicated).
    """
    fn = "pmap_train_step"
    step = train_step(model, opt, loss_fn, axis_name=axis_name, metrics_fn=metrics_fn,
                      accum_steps=accum_steps, compute_dtype=compute_dtype)
    _checks.static_bool(fn, "donate", donate)
    options = dict(axis_name=axis_name, devices=devices,
                   donate_argnums=(0, 1, 2) if donate else ())
    with_key = jax.pmap(step, in_axes=(0, 0, 0, 0, 0, None), **options)
    # key=None gets its own program without the argument: jax 0.10.2's pmap maps the
    # in_axes tuple leaf by leaf when the arguments have as many leaves as there are
    # arguments (a None argument has none), e.g. 4 param leaves + x + y with a stateless
    # optimizer, and so hands ``ys`` over unmapped.
    without_key = jax.pmap(lambda p, s, o, x, y: step(p, s, o, x, y, None), in_axes=0,
                           **options)
    count = len(devices) if devices is not None else jax.local_device_count()

    def run(params, state, opt_state, xs, ys, key=None):
        try:
            if key is None:
                return without_key(params, state, opt_state, xs, ys)
            return with_key(params, state, opt_state, xs, ys, key)
        except ValueError:  # what pmap raises for a leaf without the device axis
            check_replicated(fn, {"params": params, "state": state, "opt_state": opt_state,
                                  "xs": xs, "ys": ys}, count)
            raise

    return run
