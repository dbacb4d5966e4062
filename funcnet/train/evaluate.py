"""Batched evaluation in eval mode: every example counts once, on one device or a mesh."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks, ops
from funcnet.data._common import take_rows
from funcnet.train import sharding
from funcnet.train._cache import compile_cache
from funcnet.train._checks import (check_labels, check_mesh, check_model_args, check_pair,
                                   num_rows, trace_outputs)
from funcnet.train.metrics import (cast_floating, check_per_example_loss, default_metrics,
                                    kept_per_example, per_example)

__all__ = ["evaluate"]


def _weighted_sum(v, weights):
    """``sum(v * weights)`` in at least float32 (a bfloat16 loss summed over a batch in
    bfloat16 would depend on the batch size by a few parts in 1,000)."""
    dt = (_checks.compute_dtype(v.dtype) if jnp.issubdtype(v.dtype, jnp.floating)
          else jnp.float32)
    return jnp.sum(v.astype(dt) * weights.astype(dt))


@compile_cache(maxsize=64)
def _eval_batch(model, loss_fn: Callable, metrics_fn: Callable, compute_dtype, mesh,
                layout=None):
    """Jitted ``(params, state, x, y, mask) -> ({name: sum over the unmasked examples},
    the metrics' total weight)``: the loss counts each example once, the metrics each
    example by its weight (:func:`funcnet.train.metrics.kept_per_example`); on a mesh,
    params and state replicated except where ``layout``
    (:func:`funcnet.train.sharding.layout`) keeps a caller's sharding."""

    def run(params, state, x, y, mask):
        logits, _ = model.apply(cast_floating(params, compute_dtype), state,
                                cast_floating(x, compute_dtype), train=False)
        if compute_dtype is not None:
            logits = logits.astype(jnp.float32)
        rows = mask.astype(jnp.float32)
        counts = rows * kept_per_example(y, rows.shape[0])
        metrics = per_example(metrics_fn, logits, y) or {}
        loss = per_example(loss_fn, logits, y)
        sums = {"loss": _weighted_sum(loss, rows),
                **{k: _weighted_sum(v, counts) for k, v in metrics.items()}}
        return sums, jnp.sum(counts)

    if mesh is None:
        return jax.jit(run)
    rep, rows = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    weights = (rep, rep) if layout is None else jax.tree_util.tree_unflatten(*layout)
    return jax.jit(run, in_shardings=(*weights, rows, rows, rows), out_shardings=rep)


def evaluate(model, params, state, x, y, batch_size: int = 1024, *,
             loss_fn: Callable = ops.softmax_cross_entropy, metrics_fn: Callable | None = None,
             compute_dtype=None, mesh=None) -> dict:
    """Mean loss and metrics of ``model`` on ``(x, y)`` in eval mode (``train=False``).

    Runs one jitted function per batch of ``batch_size`` (compiled once per model and
    batch shape); the last, partial batch is padded and its padding masked out, so every
    example counts exactly once: the loss and the metrics are evaluated per example and
    averaged over the ``N`` examples. For padded sequence labels, ``y = {"labels": (N,
    T), "mask": (N, T)}``, each example's metrics are weighted by its count of true
    ``"mask"`` entries, so a masked accuracy comes out over every kept token of the set
    (not as the mean of each sequence's accuracy); the loss stays the per-example mean,
    which for a row-masked loss (``softmax_cross_entropy(..., where=mask)``: kept
    tokens summed over all ``N*T``) is the loss of the whole set, as in training.

    Args:
      model: a :class:`funcnet.nn.Layer`.
      params, state: the model's pytrees (batch norm uses the running statistics).
      x: ``(N, ...)`` inputs, or a pytree of them (several inputs, e.g. ``{"tokens":
        (N, T), "lengths": (N,)}``: the model's ``apply`` gets the same pytree);
        y: ``(N, ...)`` targets (e.g. ``(N,)`` int labels), or a dict of them (e.g.
        ``{"labels", "mask"}``, as in :func:`funcnet.train.fit`), each leaf padded alike.
      batch_size: examples per call, clipped to ``N`` (rounded up to a multiple of the
        mesh's device count).
      loss_fn: a batch-mean loss ``loss_fn(logits, labels)``.
      metrics_fn: ``metrics_fn(logits, labels) -> {name: batch mean}``; default
        :func:`funcnet.train.default_metrics` of ``loss_fn`` (accuracy for class labels).
      compute_dtype: e.g. ``jnp.bfloat16``: params and inputs are cast for the forward
        pass, the logits back to float32.
      mesh: a :class:`jax.sharding.Mesh`: every batch is split over its devices; params
        and state replicated, except leaves already laid out on ``mesh`` (a
        ``NamedSharding`` of it: tensor-parallel or FSDP weights), which keep their
        sharding (see :func:`funcnet.train.fit`).

    Returns:
      ``{"loss": float, **metrics}`` (Python floats, means over the N examples; the
      metrics of a dict ``y`` with a ``"mask"``: means over its true entries, 0 if none).

    Raises:
      ValueError: ``x`` and ``y`` have different numbers of rows, ``batch_size`` < 1,
        integer labels out of range for the model's outputs, or a loss over pairs of rows
        (:func:`funcnet.ops.ntxent`: no per-example value).
      TypeError: ``model`` is not a Layer, ``loss_fn`` / ``metrics_fn`` not callable,
        ``mesh`` not a Mesh.
    """
    fn = "evaluate"
    compute_dtype = check_model_args(fn, model, loss_fn, metrics_fn, compute_dtype)
    check_per_example_loss(fn, "loss_fn", loss_fn)
    x, y = check_pair(fn, "data", (x, y))
    devices = check_mesh(fn, mesh)
    if mesh is not None:   # jax.make_mesh's Explicit axes: funcnet compiles in Auto mode
        mesh = sharding.auto_axes(mesh)
        params, state, x, y = sharding.auto_leaves((params, state, x, y))
    batch_size = _checks.static_int(fn, "batch_size", batch_size, minimum=1)
    outputs = trace_outputs(fn, "x", model, params, state, x, y, loss_fn, metrics_fn)
    check_labels(fn, "y", y, outputs.num_classes)
    return evaluate_checked(model, params, state, x, y, batch_size, loss_fn, metrics_fn,
                            compute_dtype, mesh, devices)


def evaluate_checked(model, params, state, x, y, batch_size, loss_fn, metrics_fn,
                     compute_dtype, mesh, devices) -> dict:
    """:func:`evaluate` after its checks (``fit`` checks once, then calls this per epoch)."""
    n = num_rows(x)
    batch_size = min(batch_size, n)
    batch_size += -batch_size % devices                 # every device gets equal rows
    metrics_fn = default_metrics(loss_fn) if metrics_fn is None else metrics_fn
    layout = None
    if mesh is not None:   # sharded weights (tensor parallel, FSDP) stay as they are
        params, state = sharding.put_on_mesh((params, state), mesh)
        layout = sharding.layout((params, state), mesh)
        rows = sharding.batch_sharding(mesh)
    run = _eval_batch(model, loss_fn, metrics_fn, compute_dtype, mesh, layout)
    totals: dict = {}
    weight = 0.0
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = (idx < n).astype(np.float32)
        idx = np.minimum(idx, n - 1)
        batch = (take_rows(x, idx), take_rows(y, idx), mask)
        if mesh is not None:
            batch = sharding.put_batch(batch, rows)
        sums, kept = run(params, state, *batch)
        weight = weight + kept
        for k, v in sums.items():
            totals[k] = totals.get(k, 0.0) + v
    host, weight = sharding.to_host((totals, weight))
    weight = float(weight)

    def mean(k):   # the loss per example; the metrics per kept entry (0 if none)
        if k == "loss":
            return float(host[k]) / n
        return float(host[k]) / weight if weight > 0 else 0.0

    return {k: mean(k) for k in ["loss"] + sorted(k for k in host if k != "loss")}
