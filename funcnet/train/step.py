"""THE training step of funcnet: one pure function, and its jitted form.

::

    step = train_step(model, opt)                    # pure: map it, vmap it, scan it
    step = make_train_step(model, opt)               # jax.jit, params/state/opt_state donated
    params, state, opt_state, metrics = step(params, state, opt_state, x, y, key)

Every other way of training calls this step: :func:`funcnet.train.fit` scans it over an
epoch, and :mod:`funcnet.parallel` maps it over devices (``jax.pmap`` and
``jax.shard_map`` with ``axis_name`` set, ``jax.jit`` with shardings without).

Mixed precision (``compute_dtype=jnp.bfloat16``): params and inputs are cast to bfloat16
for the forward and backward pass; gradients come back in the master weights' dtype
through the cast's transpose, the optimizer state and the update stay in that dtype, the
logits are cast to float32 before the loss, and batch-norm running statistics keep
their dtype.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

from funcnet import _checks, ops, optim
from funcnet.optim.combine import call_update
from funcnet.train._checks import check_loss, check_metrics, check_model_args
from funcnet.train.metrics import (cast_floating, class_labels, default_metrics,
                                   kept_per_example)

__all__ = ["make_train_step", "train_step"]

_tree_map = jax.tree_util.tree_map


def device_key(key, axis_name):
    """``fold_in(key, axis_index(axis_name))``: a different dropout key per device.

    ``None`` (no stochastic layers) and ``axis_name=None`` (one program for the whole
    batch) leave ``key`` unchanged.
    """
    if key is None or axis_name is None:
        return key
    return jax.random.fold_in(key, lax.axis_index(axis_name))


def micro_batches(tree, k: int):
    """``(n, ...) -> (k, n // k, ...)`` with micro-batch ``i`` = ``x[i::k]``.

    Strided rather than contiguous: when ``x`` is the global batch sharded in contiguous
    blocks over devices, every device keeps ``1/k`` of each of its rows in each
    micro-batch (no data moves), and ``x[i::k]`` of a device shard is part of ``x[i::k]``
    of the global batch when the shard size is a multiple of ``k``.
    """
    def split(a):
        return jnp.swapaxes(a.reshape((a.shape[0] // k, k) + a.shape[1:]), 0, 1)
    return _tree_map(split, tree)


def batch_kept(y):
    """The number of kept target entries of a batch whose ``y`` is a dict with a
    ``"mask"`` (the weight of its metrics); ``None`` for other targets."""
    mask = class_labels(y)[1]
    return None if mask is None else jnp.sum(kept_per_example(y, jnp.shape(mask)[0]))


def kept_weighted(metrics: dict, kept, total: Callable, mean: Callable) -> dict:
    """Metrics of several batches (devices, micro-batches) combined into the whole
    batch's: the loss (a mean over all rows) by ``mean``; every other metric, a mean over
    its batch's ``kept`` entries, as ``total(metric * kept) / total(kept)``, as ``fit``'s
    epochs and :func:`~funcnet.train.evaluate` weigh them (a batch with nothing kept adds
    nothing; with nothing kept anywhere, ``mean``)."""
    def weighted(v):
        w = kept.astype(v.dtype)
        n = total(w)
        s = total(jnp.where(w > 0, v * w, jnp.zeros_like(v)))
        return jnp.where(n > 0, s / jnp.where(n > 0, n, jnp.ones_like(n)), mean(v))
    return {k: mean(v) if k == "loss" else weighted(v) for k, v in metrics.items()}


def _averaging(opt, axis_name):
    """``opt`` whose update first averages the gradients over ``axis_name`` (``lax.pmean``).

    Internal to the step: it has ``opt``'s state, and the step returns that state, so
    ``funcnet.optim.current_learning_rate(opt, opt_state)`` reads it as usual; nothing
    asks the wrapper itself for a learning rate (it does not carry ``opt``'s reader).
    """
    if axis_name is None:
        return opt
    return optim.Optimizer(opt.init, lambda g, s, p=None, **extra: call_update(
        opt, lax.pmean(g, axis_name), s, p, extra))


def averaged_value_fn(f: Callable, axis_name) -> Callable:
    """``value_fn(p, batch) = pmean(f(p, batch), axis_name)`` with the GLOBAL gradient:
    its backward rule averages the local gradients over ``axis_name`` too.

    The batch-loss function the step hands to an optimizer (``value_fn=``: L-BFGS's line
    search evaluates it and its gradient at trial points). Under ``jax.pmap`` and
    ``shard_map(check_vma=False)``, autodiff of a ``pmean`` leaves each device its own
    local gradient, so each replica's line search would accept its own step, their
    "replicated" states would drift apart and the next step's collectives would deadlock.
    Only ``p`` is differentiated (``batch``: a pytree of the data, state and key).
    ``axis_name=None``: ``f``.
    """
    if axis_name is None:
        return f

    @jax.custom_vjp
    def value_fn(p, batch):
        return lax.pmean(f(p, batch), axis_name)

    def fwd(p, batch):
        value, vjp = jax.vjp(lambda q: f(q, batch), p)
        return lax.pmean(value, axis_name), vjp

    def bwd(vjp, ct):
        return lax.pmean(vjp(ct)[0], axis_name), None

    value_fn.defvjp(fwd, bwd)
    return value_fn


def train_step(model, opt, loss_fn: Callable = ops.softmax_cross_entropy, *,
               axis_name=None, metrics_fn: Callable | None = None, accum_steps: int = 1,
               compute_dtype=None) -> Callable:
    """The pure (unjitted) training step of ``model`` under ``opt``.

    ``step(params, state, opt_state, x, y, key=None) -> (params, state, opt_state,
    metrics)``::

        key_d       = fold_in(key, axis_index(axis_name))          # only with axis_name
        (loss, (logits, state)), g = value_and_grad(
            lambda p: loss_fn(model.apply(p, state, x, key=key_d, train=True), y))(params)
        g           = pmean(g, axis_name)                          # only with axis_name
        metrics     = pmean({"loss": loss, **metrics_fn(logits, y)}, axis_name)
        updates, opt_state = opt.update(g, opt_state, params, value=metrics["loss"],
                                        grad=g, value_fn=loss of the batch at p)
        params      = apply_updates(params, updates)

    On one device (``axis_name=None``) that is ordinary training. Mapped over devices by
    ``jax.pmap`` / ``jax.shard_map`` with ``axis_name`` bound, each device computes the
    loss and gradient of its shard, the gradients are averaged, and every device takes
    the update single-device training takes on the global batch (with equal shards and a
    batch-mean loss). ``nn.BatchNorm(axis_name=...)`` with the same name normalises with
    the global batch's statistics. Under ``jax.jit`` with shardings the global-batch
    program needs no ``axis_name``.

    Gradient accumulation (``accum_steps=k``): the batch is split into ``k`` micro-batches
    ``x[i::k]`` run in a ``lax.scan`` (one micro-batch of activations in memory), through
    ``funcnet.optim.accumulate(opt, k)`` (the one implementation of accumulation: the sum
    of the ``k`` gradients divided by ``k``, then one ``opt.update``, averaged over
    devices once). Batch-norm state is threaded through the micro-batches (``k``
    running-average updates), micro-batch ``i`` uses the key ``fold_in(key_d, i)``, and
    the metrics are the means over the micro-batches.

    Metrics of a dict ``y`` with a ``"mask"`` (means over the kept entries, e.g.
    ``accuracy(..., where=mask)``) are combined over micro-batches and devices weighted by
    each one's kept entries, so they are the global batch's even where the kept entries
    are spread unevenly (the loss, a mean over all rows, is averaged).

    Extra arguments: an ``update`` that takes ``**extra_args`` (optax's
    ``GradientTransformationExtraArgs`` and funcnet's optimizers) gets ``value=`` the
    batch loss (averaged over ``axis_name``; with ``accum_steps`` each micro-batch's), as
    ``optax.contrib.reduce_on_plateau`` and ``optax.polyak_sgd`` expect, and, without
    ``accum_steps``, ``grad=`` the (averaged) gradient and ``value_fn=`` the batch loss
    as a function of the params (same batch, key and layer state; averaged over
    ``axis_name``), as L-BFGS and the line searches (``lbfgs``,
    ``scale_by_zoom_linesearch``, ``scale_by_backtracking_linesearch``) expect; the others
    are called without them. Any object with ``init`` and ``update`` is an optimizer
    (``optax.MultiSteps`` too).

    Args:
      model: a :class:`funcnet.nn.Layer`.
      opt: a :mod:`funcnet.optim` (or optax) optimizer.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` mean over the batch; default
        :func:`funcnet.ops.softmax_cross_entropy`.
      axis_name: the mapped axis (pmap ``axis_name`` or mesh axis under ``shard_map``) to
        average gradients and metrics over; ``None`` for one program.
      metrics_fn: ``metrics_fn(logits, labels) -> {name: scalar}`` of batch means; default
        :func:`funcnet.train.default_metrics` of ``loss_fn`` (accuracy for class labels,
        nothing for a regression).
      accum_steps: the number ``k`` of micro-batches per step (a static int >= 1).
      compute_dtype: ``None`` (compute in the params' dtype) or e.g. ``jnp.bfloat16``.

    Returns:
      ``step``; ``x`` is ``(N, ...)`` (or a pytree of them), ``y`` ``(N, ...)`` or a
      pytree of them, e.g. ``{"labels", "mask"}``, handed to ``loss_fn`` and
      ``metrics_fn`` as it is (``N`` divisible by ``accum_steps``), ``key`` a PRNG key
      for dropout (``None`` without stochastic layers), ``metrics`` ``{"loss": (),
      **metrics_fn(...)}`` of the batch BEFORE the update (the loss in the logits' dtype).

    Raises:
      TypeError: ``model`` is not a Layer, ``opt`` has no ``init``/``update``,
        ``loss_fn``/``metrics_fn`` are not callable, ``accum_steps`` is not an int,
        ``compute_dtype`` is not a floating dtype.
      ValueError: ``accum_steps`` < 1; at trace time, ``x`` and ``y`` with different
        batch sizes or a batch not divisible by ``accum_steps``.
    """
    fn = "train_step"
    compute_dtype = check_model_args(fn, model, loss_fn, metrics_fn, compute_dtype)
    _checks.check_optimizer(fn, "opt", opt)
    k = _checks.static_int(fn, "accum_steps", accum_steps, minimum=1)
    metrics_fn = default_metrics(loss_fn) if metrics_fn is None else metrics_fn
    acc = optim.accumulate(_averaging(opt, axis_name), k) if k > 1 else None

    def mean(tree):   # over the devices of axis_name (identity without one)
        return tree if axis_name is None else lax.pmean(tree, axis_name)

    def mean_metrics(metrics, y):   # over the devices, each weighted by its kept entries
        kept = batch_kept(y)
        if axis_name is None or kept is None:
            return mean(metrics)
        return kept_weighted(metrics, kept, lambda a: lax.psum(a, axis_name), mean)

    def objective(p, state, x, y, key):
        logits, new_state = model.apply(cast_floating(p, compute_dtype), state,
                                        cast_floating(x, compute_dtype), key=key,
                                        train=True)
        if compute_dtype is not None:
            logits = logits.astype(jnp.float32)
        loss = loss_fn(logits, y)
        check_loss(fn, loss)                                    # trace time: a scalar
        return loss, (logits, new_state)

    def grads_and_metrics(params, state, x, y, key):
        (loss, (logits, new_state)), grads = jax.value_and_grad(
            objective, has_aux=True)(params, state, x, y, key)
        # Keep the state's dtypes (and so a scan carry's type) whatever the compute dtype.
        new_state = _tree_map(lambda n, o: n.astype(jnp.result_type(o)), new_state, state)
        return grads, new_state, {"loss": loss,
                                  **check_metrics(fn, metrics_fn(logits, y))}

    def accumulated(params, state, opt_state, x, y, key):
        acc_state = acc.init(params)._replace(inner_opt_state=opt_state)

        def body(carry, inp):
            acc_state, st, _ = carry
            i, xb, yb = inp
            kb = None if key is None else jax.random.fold_in(key, i)
            g, st, m = grads_and_metrics(params, st, xb, yb, kb)
            updates, acc_state = acc.update(g, acc_state, params, value=mean(m["loss"]))
            return (acc_state, st, updates), m

        xs, ys = micro_batches((x, y), k)
        zeros = _tree_map(jnp.zeros_like, params)
        (acc_state, state, updates), ms = lax.scan(body, (acc_state, state, zeros),
                                                   (jnp.arange(k), xs, ys))
        mean0 = lambda m: jnp.mean(m, axis=0)   # noqa: E731  (over the micro-batches)
        metrics = (_tree_map(mean0, ms) if batch_kept(y) is None else
                   kept_weighted(ms, jax.vmap(batch_kept)(ys), lambda m: jnp.sum(m, 0), mean0))
        return updates, state, acc_state.inner_opt_state, metrics

    def step(params, state, opt_state, x, y, key=None):
        # trace time: one batch size, divisible by accum_steps
        _checks.check_same_leading(fn, {"x": x, "y": y}, k, f"accum_steps={k}")
        key = device_key(key, axis_name)
        if k == 1:
            batch_state = state
            grads, state, metrics = grads_and_metrics(params, state, x, y, key)
            grads, metrics = mean(grads), mean_metrics(metrics, y)
            batch_loss = averaged_value_fn(lambda p, b: objective(p, *b)[0], axis_name)
            extra = {"value": metrics["loss"], "grad": grads,
                     "value_fn": lambda p: batch_loss(p, (batch_state, x, y, key))}
            updates, opt_state = call_update(opt, grads, opt_state, params, extra)
        else:
            updates, state, opt_state, metrics = accumulated(params, state, opt_state, x, y,
                                                             key)
            metrics = mean_metrics(metrics, y)
        return optim.apply_updates(params, updates), state, opt_state, metrics

    return step


def make_train_step(model, opt, loss_fn: Callable = ops.softmax_cross_entropy, *,
                    metrics_fn: Callable | None = None, accum_steps: int = 1,
                    compute_dtype=None, donate: bool = True) -> Callable:
    """:func:`train_step` under ``jax.jit``, donating ``params``, ``state``, ``opt_state``.

    The result IS the ``jax.jit`` of the step (no Python wrapper): a call costs what a
    hand-written jitted step costs. With ``donate=True`` the buffers of the three donated
    arguments are reused for the results: keep only the returned arrays (the ones you
    passed in are deleted), and do not pass one buffer twice.

    Args:
      model, opt, loss_fn, metrics_fn, accum_steps, compute_dtype: as for
        :func:`train_step` (one device: no ``axis_name``).
      donate: donate the first three arguments' buffers to XLA.

    Returns:
      The jitted ``step(params, state, opt_state, x, y, key=None)``.
    """
    step = train_step(model, opt, loss_fn, metrics_fn=metrics_fn, accum_steps=accum_steps,
                      compute_dtype=compute_dtype)
    _checks.static_bool("make_train_step", "donate", donate)
    return jax.jit(step, donate_argnums=(0, 1, 2) if donate else ())
