"""The data-parallel training step, written once for one device's shard of the batch.

:func:`data_parallel_step` returns a pure, unmapped function::

    params, state, opt_state, metrics = step(params, state, opt_state, x, y, key)

Inside ``jax.pmap(..., axis_name=a)`` or ``jax.shard_map`` over a mesh axis ``a`` it
computes the loss of the local shard, its gradient, ``lax.pmean`` of the gradients and
metrics over ``a``, and the same optimizer update on every device; with
``axis_name=None`` it is an ordinary single-device step (what ``jax.jit`` with shardings
runs on the global batch). :mod:`funcnet.parallel.pmap` and
:mod:`funcnet.parallel.sharded` wrap it.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet import ops
from funcnet.nn import Layer
from funcnet.optim import apply_updates

__all__ = ["data_parallel_step"]

_tree_map = jax.tree_util.tree_map


def check_step_args(fn: str, model, opt, loss_fn, metrics_fn, accum_steps) -> int:
    """Construction-time checks shared by every step factory; returns ``accum_steps``."""
    if not isinstance(model, Layer):
        raise TypeError(f"{fn}: model must be a funcnet.nn.Layer (init, apply), got "
                        f"{type(model).__name__}")
    if isinstance(opt, Layer) or not (hasattr(opt, "init") and hasattr(opt, "update")):
        raise TypeError(f"{fn}: opt must be an optimizer with init(params) and "
                        f"update(grads, state, params), got {type(opt).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"{fn}: loss_fn must be callable loss_fn(logits, labels) -> scalar, "
                        f"got {type(loss_fn).__name__}")
    if metrics_fn is not None and not callable(metrics_fn):
        raise TypeError(f"{fn}: metrics_fn must be None or callable metrics_fn(logits, "
                        f"labels) -> dict of scalars, got {type(metrics_fn).__name__}")
    if (isinstance(accum_steps, bool) or not isinstance(accum_steps, (int, np.integer))
            or accum_steps < 1):
        raise ValueError(f"{fn}: accum_steps must be a positive int, got {accum_steps!r}")
    return int(accum_steps)


def device_key(key, axis_name):
    """``fold_in(key, lax.axis_index(axis_name))``: a different dropout key per device.

    ``None`` (no stochastic layers) and ``axis_name=None`` (one device) leave ``key``
    unchanged.
    """
    if key is None or axis_name is None:
        return key
    return jax.random.fold_in(key, lax.axis_index(axis_name))


def micro_batches(x, k: int):
    """``(n, ...) -> (k, n // k, ...)`` with micro-batch ``i`` = ``x[i::k]``.

    Strided rather than contiguous: when ``x`` is the global batch sharded in contiguous
    blocks over devices, every device keeps ``1/k`` of each of its rows in each
    micro-batch (no data moves), and ``x[i::k]`` of a device shard is part of ``x[i::k]``
    of the global batch when the shard size is a multiple of ``k``.
    """
    def split(a):
        return jnp.swapaxes(a.reshape((a.shape[0] // k, k) + a.shape[1:]), 0, 1)
    return _tree_map(split, x)


def data_parallel_step(model: Layer, opt, loss_fn: Callable = ops.softmax_cross_entropy,
                       axis_name=None, *, metrics_fn: Callable | None = None,
                       accum_steps: int = 1) -> Callable:
    """The per-device data-parallel training step (unmapped; map it with pmap/shard_map).

    For the local shard ``(x, y)`` of the global batch and the replicated ``params``::

        key_d   = fold_in(key, axis_index(axis_name))            # per-device dropout key
        loss_d, g_d = value_and_grad(loss_fn(model.apply(params, state, x, key_d, train=True), y))
        g       = pmean(g_d, axis_name)                          # mean over devices
        params  = apply_updates(params, opt.update(g, opt_state, params))

    With equal shards and a batch-mean ``loss_fn``, ``g`` is the gradient of the loss of
    the global batch, so every device takes the step single-device training takes on the
    global batch. Batch norm written as ``BatchNorm(axis_name=axis_name)`` normalises with
    the statistics of the global batch (its ``lax.pmean``), and its running statistics
    come out identical on all devices; its backward pass is exact because JAX transposes
    that ``pmean`` (a device's ``g_d`` then holds every device's contributions through the
    statistics, and the ``pmean`` above still yields the global-batch gradient).

    Gradient accumulation (``accum_steps=k``): the shard is split into ``k`` micro-batches
    ``x[i::k]`` processed in a ``lax.scan`` (one micro-batch of activations in memory);
    their gradients are summed, divided by ``k`` and ``pmean``-ed once. Batch-norm state
    is threaded through the micro-batches (``k`` running-average updates), micro-batch
    ``i`` uses key ``fold_in(key_d, i)``, and the loss/metrics are the micro-batch means.
    This equals ``k`` calls of ``funcnet.optim.accumulate(opt, k)`` on the global
    micro-batches ``x_global[i::k]``. (Alternatively pass ``opt=accumulate(opt, k)`` and
    call the step once per micro-batch.)

    Args:
      model: a :class:`funcnet.nn.Layer`; its ``BatchNorm`` layers should use
        ``axis_name=axis_name`` for synchronised statistics (without it each device
        normalises with its own shard's statistics and the running statistics differ).
      opt: an optimizer (``init``/``update``, e.g. :func:`funcnet.optim.adam`).
      loss_fn: ``loss_fn(logits, y) -> scalar``, a mean over the batch.
      axis_name: the mapped axis (pmap ``axis_name`` or mesh axis) to average over;
        ``None`` for one device.
      metrics_fn: optional ``metrics_fn(logits, y) -> {name: scalar}`` of batch means
        (e.g. accuracy); they are ``pmean``-ed like the loss.
      accum_steps: number ``k`` of micro-batches per step (static int >= 1).

    Returns:
      ``step(params, state, opt_state, x, y, key=None) -> (params, state, opt_state,
      metrics)``: ``x`` ``(n, ...)`` and ``y`` ``(n, ...)`` this device's shard (``n``
      divisible by ``accum_steps``), ``key`` a PRNG key shared by all devices (or
      ``None`` when the model has no dropout), ``metrics`` ``{"loss": (), **metrics_fn}``
      averaged over devices, computed before the update.

    Raises:
      TypeError: ``model``, ``opt``, ``loss_fn`` or ``metrics_fn`` of the wrong kind.
      ValueError: ``accum_steps`` not a positive int; at trace time, a shard size not
        divisible by ``accum_steps``.
    """
    fn = "data_parallel_step"
    k = check_step_args(fn, model, opt, loss_fn, metrics_fn, accum_steps)

    def grads_and_metrics(params, state, x, y, key):
        def objective(p):
            logits, new_state = model.apply(p, state, x, key=key, train=True)
            return loss_fn(logits, y), (logits, new_state)

        (loss, (logits, new_state)), grads = jax.value_and_grad(
            objective, has_aux=True)(params)
        metrics = {"loss": loss}
        if metrics_fn is not None:
            metrics.update(metrics_fn(logits, y))
        # Keep the state's dtypes so that it is a stable scan carry / pmap output.
        new_state = _tree_map(lambda n, o: n.astype(jnp.result_type(o)), new_state, state)
        return grads, new_state, metrics

    def accumulated(params, state, x, y, key):
        xs, ys = micro_batches((x, y), k)

        def body(carry, inp):
            g_sum, st = carry
            i, xb, yb = inp
            kb = None if key is None else jax.random.fold_in(key, i)
            g, st, m = grads_and_metrics(params, st, xb, yb, kb)
            return (_tree_map(jnp.add, g_sum, g), st), m

        zeros = _tree_map(jnp.zeros_like, params)
        (g_sum, state), ms = lax.scan(body, (zeros, state), (jnp.arange(k), xs, ys))
        grads = _tree_map(lambda g: g / jnp.asarray(k, g.dtype), g_sum)
        return grads, state, _tree_map(lambda m: jnp.mean(m, axis=0), ms)

    def step(params, state, opt_state, x, y, key=None):
        for name, a in (("x", x), ("y", y)):
            if not jnp.shape(a) or jnp.shape(a)[0] % k:
                raise ValueError(f"{fn}: {name} has shape {tuple(jnp.shape(a))}; the "
                                 f"per-device batch must be divisible by accum_steps={k}")
        if jnp.shape(x)[0] != jnp.shape(y)[0]:
            raise ValueError(f"{fn}: x has shape {tuple(jnp.shape(x))} but y has shape "
                             f"{tuple(jnp.shape(y))}: different batch sizes")
        key = device_key(key, axis_name)
        if k == 1:
            grads, state, metrics = grads_and_metrics(params, state, x, y, key)
        else:
            grads, state, metrics = accumulated(params, state, x, y, key)
        if axis_name is not None:
            grads, metrics = lax.pmean((grads, metrics), axis_name)
        updates, opt_state = opt.update(grads, opt_state, params)
        return apply_updates(params, updates), state, opt_state, metrics

    return step
