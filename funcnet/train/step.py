"""One training step and batched evaluation, as pure functions and jitted factories.

::

    step = make_train_step(model, opt)               # jitted, params/state/opt_state donated
    params, state, opt_state, metrics = step(params, state, opt_state, x, y, key)
    metrics = evaluate(model, params, state, x_test, y_test, batch_size=256)

Mixed precision (``compute_dtype=jnp.bfloat16``): params and inputs are cast to bfloat16
for the forward and backward pass; gradients come back in the master weights' dtype
(float32) through the cast's transpose, the optimizer state and the update stay float32,
the logits are cast to float32 before the loss, and batch-norm running statistics keep
their dtype.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import ops
from funcnet.optim import apply_updates
from funcnet.train._checks import (check_data, check_loss_fn, check_model, check_optimizer,
                                   check_positive_int)
from funcnet.train.metrics import accuracy, cast_floating, correct, per_example_loss

__all__ = ["evaluate", "make_train_step", "train_step", "unalias"]


def train_step(model, opt, loss_fn: Callable = ops.softmax_cross_entropy, *,
               compute_dtype=None) -> Callable:
    """The pure (unjitted) training step of ``model`` under ``opt``.

    ``step(params, state, opt_state, x, y, key) -> (params, state, opt_state, metrics)``:
    the loss ``loss_fn(model.apply(params, state, x, key=key, train=True), y)``, its
    gradient by ``jax.value_and_grad(..., has_aux=True)`` (the aux carries the new
    batch-norm state and the logits), ``opt.update`` and ``apply_updates``.

    Args:
      model: a :class:`funcnet.nn.Layer`.
      opt: a :mod:`funcnet.optim` (or optax) optimizer.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` mean over the batch; default
        :func:`funcnet.ops.softmax_cross_entropy`.
      compute_dtype: ``None`` (compute in the params' dtype) or e.g. ``jnp.bfloat16``.

    Returns:
      ``step``; ``x`` is ``(N, ...)``, ``y`` ``(N,)`` int labels or ``(N, C)`` one-hot,
      ``key`` a PRNG key (dropout), ``metrics`` ``{"loss": (), "accuracy": ()}`` of the
      batch BEFORE the update, in float32 (loss in the logits' dtype).

    Raises:
      TypeError: ``model`` is not a Layer, ``opt`` has no ``init``/``update``, or
        ``loss_fn`` is not callable.
    """
    check_model("train_step", model)
    check_optimizer("train_step", opt)
    check_loss_fn("train_step", loss_fn)

    def step(params, state, opt_state, x, y, key):
        def objective(p):
            logits, new_state = model.apply(cast_floating(p, compute_dtype), state,
                                            cast_floating(x, compute_dtype), key=key,
                                            train=True)
            if compute_dtype is not None:
                logits = logits.astype(jnp.float32)
            return loss_fn(logits, y), (logits, new_state)

        (loss, (logits, new_state)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        # Keep the state's dtypes (and so a scan carry's type) whatever the compute dtype.
        new_state = jax.tree_util.tree_map(lambda n, o: n.astype(jnp.result_type(o)),
                                           new_state, state)
        updates, opt_state = opt.update(grads, opt_state, params)
        params = apply_updates(params, updates)
        return params, new_state, opt_state, {"loss": loss, "accuracy": accuracy(logits, y)}

    return step


def make_train_step(model, opt, loss_fn: Callable = ops.softmax_cross_entropy, *,
                    compute_dtype=None, donate: bool = True) -> Callable:
    """:func:`train_step` under ``jax.jit``, donating ``params``, ``state``, ``opt_state``.

    With ``donate=True`` the buffers of the three donated arguments are reused for the
    results: do not use the arrays you passed in after the call (keep the returned ones).

    Args:
      model, opt, loss_fn, compute_dtype: as for :func:`train_step`.
      donate: donate the first three arguments' buffers to XLA.

    Returns:
      The jitted ``step(params, state, opt_state, x, y, key)``.
    """
    step = train_step(model, opt, loss_fn, compute_dtype=compute_dtype)
    if not donate:
        return jax.jit(step)
    jitted = jax.jit(step, donate_argnums=(0, 1, 2))

    @functools.wraps(step)
    def donating_step(params, state, opt_state, x, y, key):
        params, state, opt_state = unalias((params, state, opt_state))
        return jitted(params, state, opt_state, x, y, key)

    return donating_step


def unalias(tree):
    """``tree`` with every array leaf that repeats an earlier leaf's buffer copied.

    XLA refuses to donate one buffer twice, and e.g. an optimizer ``init`` may share one
    zeros tree between two moments (``mu=zeros, nu=zeros``). Cheap: only ids are compared,
    and only repeated leaves are copied.
    """
    seen = set()

    def fresh(a):
        if isinstance(a, jax.Array):
            if id(a) in seen:
                return jnp.array(a, copy=True)
            seen.add(id(a))
        return a

    return jax.tree_util.tree_map(fresh, tree)


@functools.lru_cache(maxsize=64)
def _eval_batch(model, loss_fn: Callable) -> Callable:
    """Jitted ``(params, state, x, y, mask) -> (sum of losses, number correct)`` of a batch."""

    def run(params, state, x, y, mask):
        logits, _ = model.apply(params, state, x, train=False)
        losses = per_example_loss(loss_fn, logits, y)
        return (jnp.sum(losses * mask.astype(losses.dtype)),
                jnp.sum(correct(logits, y) * mask))

    return jax.jit(run)


def evaluate(model, params, state, x, y, batch_size: int = 1024, *,
             loss_fn: Callable = ops.softmax_cross_entropy) -> dict:
    """Mean loss and accuracy of ``model`` on ``(x, y)`` in eval mode (``train=False``).

    Runs a jitted function on batches of ``batch_size`` (compiled once per model and
    batch shape); the last, partial batch is padded and its padding masked out, so every
    example counts exactly once.

    Args:
      model: a :class:`funcnet.nn.Layer`.
      params, state: the model's pytrees (batch norm uses the running statistics).
      x: ``(N, ...)`` inputs; y: ``(N,)`` int labels or ``(N, C)`` one-hot.
      batch_size: examples per call, clipped to ``N``.
      loss_fn: a batch-mean loss ``loss_fn(logits, labels)``.

    Returns:
      ``{"loss": float, "accuracy": float}`` (Python floats, means over the N examples).

    Raises:
      ValueError: ``x`` and ``y`` have different numbers of rows, or ``batch_size`` < 1.
      TypeError: ``model`` is not a Layer or ``loss_fn`` is not callable.
    """
    check_model("evaluate", model)
    check_loss_fn("evaluate", loss_fn)
    x, y = check_data("evaluate", "data", (x, y))
    n = x.shape[0]
    batch_size = min(check_positive_int("evaluate", "batch_size", batch_size), n)
    run = _eval_batch(model, loss_fn)
    loss_sum, n_correct = 0.0, 0.0
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        mask = (idx < n).astype(np.float32)
        idx = np.minimum(idx, n - 1)
        ls, nc = run(params, state, x[idx], y[idx], mask)
        loss_sum += float(ls)
        n_correct += float(nc)
    return {"loss": loss_sum / n, "accuracy": n_correct / n}
