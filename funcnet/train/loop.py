"""``fit``: epochs of mini-batch training, as one ``lax.scan`` per epoch when data fits.

Every epoch ``e`` (0-based) draws its randomness from ``jax.random.fold_in(key, e)``,
split into a shuffling key (a permutation of the N examples, as
:func:`funcnet.data.epoch_batches`; the last ``N % batch_size`` of it are dropped) and one
dropout key per step. The two execution paths consume exactly these batches and keys in
the same order:

- scan path: the training set lives on the device, and the whole epoch (shuffle, gather,
  every step) is ONE jitted call, a ``lax.scan`` over the batches;
- per-step path (data too large for the device): the batches are gathered on the host
  and a jitted step runs once per batch.

Because an epoch depends only on ``(params, state, opt_state, key, e)``, resuming from a
checkpoint written after epoch ``k`` reproduces the uninterrupted run bit for bit.
"""
from __future__ import annotations

import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from funcnet import ops
from funcnet.data import epoch_batches
from funcnet.data._common import check_batch_size
from funcnet.train._checks import (check_data, check_key, check_loss_fn,
                                   check_manager, check_model, check_optimizer,
                                   check_positive_int)
from funcnet.train.progress import EpochProgress
from funcnet.train.step import evaluate, train_step, unalias

__all__ = ["SCAN_MAX_BYTES", "fit"]

SCAN_MAX_BYTES = 1 << 30
"""Training sets up to this size (x and y bytes together) run as one scan per epoch."""

HISTORY_KEYS = ("epoch", "loss", "accuracy", "eval_loss", "eval_accuracy", "epoch_time")


def _epoch_keys(key, epoch, num_batches: int):
    """``(shuffle_key, step_keys (num_batches, ...))`` of 0-based ``epoch``."""
    shuffle_key, dropout_key = jax.random.split(jax.random.fold_in(key, epoch))
    return shuffle_key, jax.random.split(dropout_key, num_batches)


@functools.lru_cache(maxsize=32)
def _compiled(model, opt, loss_fn, compute_dtype, batch_size: int):
    """``(jitted epoch scan, jitted step)`` for one configuration (cached: no recompiles)."""
    step = train_step(model, opt, loss_fn, compute_dtype=compute_dtype)

    def epoch_scan(params, state, opt_state, x, y, key, epoch):
        num_batches = x.shape[0] // batch_size
        shuffle_key, step_keys = _epoch_keys(key, epoch, num_batches)
        xb, yb = epoch_batches(x, y, batch_size, shuffle_key)

        def body(carry, batch):
            params, state, opt_state, metrics = step(*carry, *batch)
            return (params, state, opt_state), metrics

        carry, metrics = lax.scan(body, (params, state, opt_state), (xb, yb, step_keys))
        return (*carry, metrics)

    donate = (0, 1, 2)
    return (jax.jit(epoch_scan, donate_argnums=donate),
            jax.jit(step, donate_argnums=donate))


def _run_steps(jstep, carry, x, y, key, epoch, batch_size):
    """The per-step path of one epoch: same batches and keys as the scan, one call each."""
    n = x.shape[0]
    num_batches = n // batch_size
    shuffle_key, step_keys = _epoch_keys(key, jnp.asarray(epoch, jnp.int32), num_batches)
    order = np.asarray(jax.random.permutation(shuffle_key, n))[:num_batches * batch_size]
    per_step = []
    for i in range(num_batches):
        idx = order[i * batch_size:(i + 1) * batch_size]
        *carry, metrics = jstep(*carry, x[idx], y[idx], step_keys[i])
        per_step.append(metrics)
    metrics = jax.tree_util.tree_map(lambda *m: jnp.stack(m), *per_step)
    return (*carry, metrics)


def _scan_limit() -> int:
    """Bytes of training data to keep on the device: a quarter of its memory if known."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # backends without memory statistics
        stats = {}
    limit = stats.get("bytes_limit")
    return min(SCAN_MAX_BYTES, limit // 4) if limit else SCAN_MAX_BYTES


def _check_finite(losses: np.ndarray, epoch: int, epochs: int) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        s = int(bad[0])
        raise FloatingPointError(
            f"fit: loss is {losses[s]} at epoch {epoch + 1}/{epochs}, step {s + 1}/"
            f"{losses.size} (the first non-finite loss of the epoch); lower the learning "
            f"rate, clip gradients or check the data for NaN/inf")


def fit(model, params, state, opt, data, epochs: int, *, batch_size: int, key,
        eval_data=None, checkpoint=None, checkpoint_every: int = 1, resume: bool = True,
        progress=None, scan=None, opt_state=None,
        loss_fn: Callable = ops.softmax_cross_entropy, compute_dtype=None,
        eval_batch_size: int = 1024):
    """Trains ``model`` for ``epochs`` epochs of shuffled mini-batches.

    Each epoch is one jitted ``lax.scan`` over its batches when the training set fits on
    the device (``scan=None`` decides by its byte size against :data:`SCAN_MAX_BYTES` or a
    quarter of the device memory), else a loop of jitted steps; both give the same
    parameters for the same ``key`` (see the module docstring for the batch order).
    After each epoch the mean training loss and accuracy of its steps (train mode, before
    each update) and, with ``eval_data``, :func:`evaluate`'s loss and accuracy are
    recorded and reported.

    Checkpointing: with ``checkpoint`` (anything with ``save(step, tree)``,
    ``restore(step=None, like=None) -> (step, tree)`` and ``latest_step()``, e.g.
    :class:`funcnet.checkpoint.CheckpointManager`), the tree
    ``{"params", "state", "opt_state", "epoch", "key"}`` is saved as step ``epoch`` (epochs
    done) every ``checkpoint_every`` epochs and after the last one. With ``resume=True``
    the latest checkpoint is restored first and training continues from the epoch after
    it, with the saved ``key``: the result equals the uninterrupted run bit for bit.

    Args:
      model: a :class:`funcnet.nn.Layer`.
      params, state: from ``model.init`` (not modified: ``fit`` copies before donating).
      opt: a :mod:`funcnet.optim` optimizer.
      data: ``(x, y)``, ``x`` ``(N, ...)``, ``y`` ``(N,)`` int labels or ``(N, C)``.
      epochs: total number of epochs (including those restored from a checkpoint).
      batch_size: examples per step, in ``[1, N]``; ``N % batch_size`` examples are left
        out of each epoch (different ones each epoch).
      key: a PRNG key (or int seed) for shuffling and dropout.
      eval_data: optional ``(x, y)`` evaluated after every epoch.
      checkpoint: optional checkpoint manager (above).
      checkpoint_every: save every this many epochs.
      resume: restore the latest checkpoint of ``checkpoint`` if there is one.
      progress: ``None``/``True`` report each epoch (tqdm bar on a terminal when tqdm is
        installed, else a log line), ``False`` silent.
      scan: ``None`` automatic, ``True`` / ``False`` force the scan / per-step path.
      opt_state: optimizer state to continue from; default ``opt.init(params)``.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` batch mean.
      compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision (see :func:`train_step`).
      eval_batch_size: batch size of the evaluation.

    Returns:
      ``(params, state, opt_state, history)``; ``history`` is a dict of lists, one entry
      per epoch run by this call: ``epoch`` (1-based), ``loss``, ``accuracy``,
      ``eval_loss``, ``eval_accuracy`` (empty without ``eval_data``), ``epoch_time``
      (seconds, the first including compilation).

    Raises:
      ValueError: ``x`` and ``y`` (or the eval pair) differ in rows, ``batch_size`` is not
        in ``[1, N]``, ``epochs`` < 0 or ``checkpoint_every`` < 1.
      TypeError: bad ``model``, ``opt``, ``data``, ``key`` or ``checkpoint``.
      FloatingPointError: a training loss is NaN or infinite; the message names the
        epoch and the step.
    """
    fn = "fit"
    check_model(fn, model)
    check_optimizer(fn, opt)
    check_loss_fn(fn, loss_fn)
    x, y = check_data(fn, "data", data)
    if eval_data is not None:
        check_data(fn, "eval_data", eval_data)
    epochs = check_positive_int(fn, "epochs", epochs, allow_zero=True)
    batch_size = check_batch_size(fn, batch_size, x.shape[0])
    checkpoint_every = check_positive_int(fn, "checkpoint_every", checkpoint_every)
    eval_batch_size = check_positive_int(fn, "eval_batch_size", eval_batch_size)
    key = check_key(fn, key)
    if checkpoint is not None:
        check_manager(fn, checkpoint)
    if scan is None:
        scan = x.size * x.dtype.itemsize + y.size * y.dtype.itemsize <= _scan_limit()

    # Copies: the jitted functions donate their inputs, the caller keeps its arrays (and
    # no buffer may be donated twice, e.g. an optimizer's shared zeros).
    params, state = jax.tree_util.tree_map(jnp.array, (params, state))
    if opt_state is None:
        opt_state = opt.init(params)
    opt_state = jax.tree_util.tree_map(jnp.array, opt_state)
    start = 0
    if checkpoint is not None and resume and checkpoint.latest_step() is not None:
        like = {"params": params, "state": state, "opt_state": opt_state, "epoch": 0,
                "key": key}
        _, saved = checkpoint.restore(like=like)
        params, state, opt_state = unalias((saved["params"], saved["state"],
                                            saved["opt_state"]))
        start, key = int(saved["epoch"]), saved["key"]

    epoch_scan, jstep = _compiled(model, opt, loss_fn, compute_dtype, batch_size)
    if scan:
        x, y = jnp.asarray(x), jnp.asarray(y)
    history = {k: [] for k in HISTORY_KEYS}
    bar = EpochProgress(epochs, enabled=progress is not False, start=start)
    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            carry = (params, state, opt_state)
            if scan:
                out = epoch_scan(*carry, x, y, key, jnp.asarray(epoch, jnp.int32))
            else:
                out = _run_steps(jstep, carry, x, y, key, epoch, batch_size)
            params, state, opt_state, metrics = jax.block_until_ready(out)
            metrics = jax.device_get(metrics)
            _check_finite(np.asarray(metrics["loss"]), epoch, epochs)
            logs = {"loss": float(np.mean(metrics["loss"])),
                    "accuracy": float(np.mean(metrics["accuracy"]))}
            if eval_data is not None:
                ev = evaluate(model, params, state, *eval_data, batch_size=eval_batch_size,
                              loss_fn=loss_fn)
                logs.update(eval_loss=ev["loss"], eval_accuracy=ev["accuracy"])
            logs["epoch_time"] = time.perf_counter() - t0
            for k, v in logs.items():
                history[k].append(v)
            history["epoch"].append(epoch + 1)
            bar.update(epoch + 1, logs, logs["epoch_time"])
            if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0
                                           or epoch + 1 == epochs):
                checkpoint.save(epoch + 1, {"params": params, "state": state,
                                            "opt_state": opt_state, "epoch": epoch + 1,
                                            "key": key})
    finally:
        bar.close()
    return params, state, opt_state, history
