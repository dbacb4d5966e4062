"""``fit``: epochs of mini-batch training with the one training step of :mod:`.step`.

Epoch ``e`` (0-based) draws its randomness from :func:`funcnet.data.epoch_keys` ``(key,
e)``: a shuffling key (a permutation of the N examples; the last ``N % batch_size`` of it
are dropped) and a model key folded with the step index for each step. Three ways to
feed the steps, all with the same guarded step (:mod:`.epochs`):

- scan path: the training set lives on the device(s) and the whole epoch (shuffle,
  gather, every step) is ONE jitted call, a ``lax.scan`` over the batches;
- per-step path (arrays too large for the device): the same batches are gathered on the
  host and a jitted step runs once per batch;
- iterables: ``data`` is a callable ``epoch -> iterable of (x, y)`` (re-created for each
  epoch, e.g. a :class:`funcnet.data.Loader`) or a re-iterable object.

The per-step paths read the batches through :class:`~funcnet.train.feed.Prefetcher`: on
an accelerator a background thread copies the next batches to the device while the step
runs; on the CPU (by default) the host arrays go straight to the jitted step. Because an
epoch depends only on ``(params, state, opt_state, key, e)`` (and, for a callable, on
``data(e)``), resuming from a checkpoint written after epoch ``k`` reproduces the
uninterrupted run bit for bit.
"""
from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from funcnet import _checks, data as fdata, nn, ops, optim
from funcnet.train import sharding
from funcnet.train._checks import (FIT_LOGS, check_batch_split, check_config, check_labels,
                                   check_manager, check_mesh, check_model_args, check_pair, is_pair,
                                   num_rows, trace_outputs)
from funcnet.train.callbacks import (TrainState, call_callback, check_monitors,
                                     describe_callback, recorded_stopper, resume_callbacks)
from funcnet.train.epochs import all_finite, compiled
from funcnet.train.errors import NonFiniteError
from funcnet.train.evaluate import evaluate_checked
from funcnet.train.metrics import KEPT, check_per_example_loss
from funcnet.train import feed
from funcnet.train.feed import Prefetcher
from funcnet.train.progress import EpochProgress
from funcnet.train.run import (fingerprint, restore_template, resume_point, save_metadata,
                               stable_name)

__all__ = ["SCAN_MAX_BYTES", "fit"]

SCAN_MAX_BYTES = 1 << 30
"""Training sets up to this size (x and y bytes together) run as one scan per epoch."""


def _scan_limit() -> int:
    """Bytes of training data to keep on the device: a quarter of its memory if known."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - backends without memory statistics
        stats = {}
    limit = stats.get("bytes_limit")
    return min(SCAN_MAX_BYTES, limit // 4) if limit else SCAN_MAX_BYTES


def _nbytes(tree) -> int:
    return sum(int(np.prod(a.shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
               for a in jax.tree_util.tree_leaves(tree))


def _epoch_source(fn: str, data):
    """``("arrays", (x, y))`` or ``("batches", epoch -> iterable)`` from ``data`` (a list
    or a tuple of ``(x, y)`` batches is a re-iterable of batches: a pair's ``y`` is never
    a tuple)."""
    if (isinstance(data, tuple) and not is_pair(data) and data
            and all(is_pair(batch) for batch in data)):
        return "batches", lambda epoch: data
    if is_pair(data) or isinstance(data, tuple):
        return "arrays", check_pair(fn, "data", data)
    if _checks.is_array(data):
        raise TypeError(f"{fn}: data must be a pair (x, y) of arrays, a callable epoch -> "
                        f"iterable of (x, y) batches, or a re-iterable of batches; got one "
                        f"array of shape {tuple(data.shape)}")
    if callable(data):
        return "batches", data
    if hasattr(data, "__iter__"):
        if iter(data) is data:
            raise TypeError(f"{fn}: data is an iterator ({type(data).__name__}), which can be "
                            f"consumed only once; pass a callable epoch -> iterable (e.g. "
                            f"lambda epoch: make_batches(epoch)) or a re-iterable object")
        return "batches", lambda epoch: data
    raise TypeError(f"{fn}: data must be a pair (x, y) of arrays, a callable epoch -> "
                    f"iterable of (x, y) batches, or a re-iterable of batches; got "
                    f"{type(data).__name__}")


def _learning_rate(opt, opt_state) -> float | None:
    lr = optim.current_learning_rate(opt, opt_state)
    return None if lr is None else float(sharding.to_host(lr))


def _means(metrics: dict, weights=None) -> dict:
    """Host means of per-step metrics, loss first: weighted by batch rows for iterables,
    and the metrics of a dict ``y`` with a ``"mask"`` by each step's kept entries (the
    steps' ``KEPT`` counts; 0 for an epoch without one), as :func:`evaluate` weighs them."""
    kept = metrics.get(KEPT)
    order = ["loss"] + sorted(k for k in metrics if k not in ("loss", KEPT))

    def mean(k):
        w = weights if k == "loss" or kept is None else np.asarray(kept, np.float64)
        if w is not None and not np.sum(w) > 0:
            return 0.0
        return float(np.average(np.asarray(metrics[k], np.float64), weights=w))

    return {k: mean(k) for k in order}


def _non_finite(losses: np.ndarray, bad: int, epoch: int, epochs: int, carry,
                history: dict) -> NonFiniteError:
    n, loss = losses.size, losses[bad - 1]
    where = f"epoch {epoch + 1}/{epochs}, step {bad}/{n}"
    what = (f"loss is {loss} at {where}" if not np.isfinite(loss) else
            f"the update of {where} made the params, state or optimizer state non-finite "
            f"(its loss: {loss})")
    return NonFiniteError(
        f"fit: {what}; that update was dropped and training stopped: the error's params, "
        f"state and opt_state are the last finite ones (nothing non-finite was "
        f"checkpointed). Lower the learning rate, clip gradients or check the data for "
        f"NaN/inf", params=carry[0], state=carry[1], opt_state=carry[2], epoch=epoch + 1,
        step=bad, history=history)


def _per_step_epoch(one_step, carry, prefetcher, model_key):
    """``(carry, metrics, weights)``: one jitted step per batch of ``prefetcher``.

    ``metrics`` holds the host stack of each metric over the steps, ``weights`` the batch
    sizes.
    """
    per_step, weights, copy = [], [], None
    with prefetcher as feed:
        for xb, yb in feed:
            carry, m = one_step(*carry, xb, yb, model_key)
            if copy is None:
                copy = _copies_ahead(m)
            if copy:
                for a in m.values():
                    a.copy_to_host_async()
            per_step.append(m)
            weights.append(num_rows(xb))
    return carry, _stack_on_host(per_step), weights


def _copies_ahead(metrics: dict) -> bool:
    """Whether an epoch starts each step's device-to-host metric copies as it goes: on an
    accelerator, so that the epoch's end reads values already on the host (on an H200 a
    synchronous read of one scalar took 0.3 ms: two metrics made fit's per-step path 2x a
    hand-written loop, ``benchmarks/results/gpu/dispatch.md``); not on a CPU, where the
    read is a view (an async copy added 2.6 us per value to a 0.55 us read on the 2-core
    CPU), nor for values that this process does not hold whole (:func:`sharding.to_host`
    gathers those)."""
    return bool(metrics) and all(a.is_fully_addressable and
                                 all(d.platform != "cpu" for d in a.devices())
                                 for a in metrics.values())


def _stack_on_host(per_step: list) -> dict:
    """``{name: (steps,) NumPy array}`` from the steps' metric dicts.

    One read per value, cheaper than stacking on the device (a dispatch per value); the
    replicated values of a multi-process mesh go through :func:`sharding.to_host`.
    """
    if not per_step:
        return {}
    if all(a.is_fully_addressable for a in per_step[0].values()):      # one process
        return {k: np.array([np.asarray(m[k]) for m in per_step]) for k in per_step[0]}
    per_step = sharding.to_host(per_step)
    return {k: np.stack([m[k] for m in per_step]) for k in per_step[0]}


def fit(model, params, state, opt, data, epochs: int, *, batch_size: int | None = None,
        key, eval_data=None, checkpoint=None, checkpoint_every: int = 1,
        resume: bool = True, overwrite: bool = False, progress=None, scan=None,
        opt_state=None, loss_fn: Callable = ops.softmax_cross_entropy,
        metrics_fn: Callable | None = None, compute_dtype=None, eval_batch_size: int = 1024,
        callbacks=(), mesh=None, prefetch: int | None = None, config=None):
    """Trains ``model`` for ``epochs`` epochs of shuffled mini-batches.

    Each epoch runs :func:`funcnet.train.train_step` on every batch: as one jitted
    ``lax.scan`` when the training set fits on the device (``scan=None`` decides by its
    byte size against :data:`SCAN_MAX_BYTES` or a quarter of the device memory), else as
    a loop of jitted steps, one per batch. Both give the same parameters for the same
    ``key``. After each epoch the means of the step metrics (train mode, before each
    update), the learning rate of the epoch's first update (below), and with
    ``eval_data`` the :func:`evaluate` loss and metrics (prefixed ``eval_``) go into
    ``logs``: reported, appended to the history, and passed to every callback.

    Learning rate: ``logs["learning_rate"]`` is
    ``float(funcnet.optim.current_learning_rate(opt, opt_state))`` read from the
    optimizer state BEFORE the epoch runs: the rate the epoch's first update uses (for a
    schedule, its value at the number of updates made so far, counted by the optimizer:
    through ``optim.accumulate(opt, k)`` that is one update per ``k`` steps). It is left
    out when the optimizer does not expose it (e.g. ``optax.adam(1e-3)``); an optax
    ``inject_hyperparams`` state holds, with a schedule, the rate of the previous update.

    Data: ``(x, y)`` arrays (``batch_size`` required), or batches from a callable
    ``epoch -> iterable of (x, y)`` (0-based epoch; re-created for every epoch, so a
    resume is exact; e.g. :class:`funcnet.data.Loader` over memory-mapped arrays) or a
    re-iterable object (``iter(data)`` per epoch). ``x`` may be a pytree of arrays with
    ``y``'s leading size, for a model of several inputs (e.g. ``{"tokens": (N, T),
    "lengths": (N,)}``): every leaf is shuffled and batched alike, and the model's
    ``apply`` gets the same pytree. ``y`` is an array or a dict of arrays with the same
    leading size (targets that travel together, e.g. padded sequence labels
    ``{"labels": (N, T) with -100 in the padding, "mask": (N, T)}``): batched alike, and
    ``loss_fn`` / ``metrics_fn`` get the dict; its ``"labels"`` entry, when it holds
    class indices, is range-checked where its ``"mask"`` entry is true, and the default
    metrics are its accuracy there. With a ``"mask"``, every metric (not the loss) is
    weighted by the kept entries, in each epoch's means of the steps (a step by its
    batch's true ``"mask"`` entries) and in the ``eval_`` logs (see :func:`evaluate`):
    a masked accuracy is over every kept token. ``prefetch``: on an accelerator
    (default 2) a background thread copies up to that many batches to the device ahead
    of the step; on the CPU (default 0: no thread) the NumPy batches are handed to the
    jitted step as they are, which costs less than the thread overlaps there. A batch
    must not be overwritten after it is yielded (JAX may read host memory in place).

    Devices: ``mesh`` (e.g. ``funcnet.parallel.make_mesh()``) runs data-parallel over
    every device of the mesh: params, state and optimizer state replicated, each batch
    split along its rows (``batch_size`` divisible by ``mesh.size``), the step being the
    global-batch program under ``jax.jit`` with shardings (XLA inserts the all-reduces;
    batch norm uses the global batch's statistics). It equals single-device training on
    the same global batches up to the order of floating-point sums. With several
    processes every process calls ``fit`` with the same arguments (the same full arrays,
    or batches that are global arrays from :func:`funcnet.parallel.global_batch`); only
    process 0 writes checkpoints (use a shared directory to resume).

    Checkpointing: ``checkpoint`` is a manager (``save(step, tree, metadata=...)``,
    ``restore(step=None, like=None) -> (step, tree)``, ``metadata(step=None)``,
    ``latest_step()``, ``clear()``; e.g. :class:`funcnet.checkpoint.CheckpointManager`).
    The tree ``{"params", "state", "opt_state", "epoch", "key"}`` is saved as step
    ``epoch`` (epochs done) every ``checkpoint_every`` epochs, after the last one and when
    a callback stops training; its metadata holds the run's fingerprint (see
    :mod:`funcnet.train.run`) and the history since the start. With ``resume=True`` the
    latest checkpoint of THIS run is restored (a damaged latest falls back to the newest
    readable one), announced ("resumed at epoch 3 of 10"), and training continues; the
    result equals the uninterrupted run bit for bit, and the history covers every epoch
    since the start. A checkpoint at or past ``epochs`` trains nothing and says so.
    Checkpoints of another run (or ``resume=False`` into a directory that holds
    checkpoints) raise :class:`funcnet.train.RunMismatchError` unless ``overwrite=True``,
    which deletes them first.

    Non-finite values: every step is guarded; the first step whose loss, new params, new
    state or new optimizer state holds a NaN or an infinity is dropped and
    :class:`funcnet.train.NonFiniteError`
    (a ``FloatingPointError``) is raised after its epoch, naming the epoch and step and
    carrying the last finite params, state and optimizer state. Nothing non-finite is
    ever checkpointed.

    Args:
      model: a :class:`funcnet.nn.Layer`.
      params, state: from ``model.init`` (not modified: ``fit`` copies before donating).
      opt: a :mod:`funcnet.optim` optimizer.
      data: ``(x, y)``, a callable ``epoch -> iterable of (x, y)``, or a re-iterable.
      epochs: total number of epochs (including those restored from a checkpoint).
      batch_size: examples per step for arrays, in ``[1, N]`` (``N % batch_size``
        examples, different ones each epoch, are left out); ``None`` for iterables.
      key: a PRNG key (or int seed) for shuffling and dropout.
      eval_data: optional ``(x, y)`` evaluated after every epoch, at
        ``optim.eval_params(opt_state, params)``: the params themselves, or a
        schedule-free optimizer's average ``x`` (the returned params stay its iterate).
      checkpoint: optional checkpoint manager (above).
      checkpoint_every: save every this many epochs.
      resume: restore this run's latest checkpoint if there is one.
      overwrite: delete another run's checkpoints (or, with ``resume=False``, any) first.
      progress: ``None``/``True`` report each epoch (tqdm bar on a terminal when tqdm is
        installed, else a log line; process 0 only), ``False`` silent.
      scan: ``None`` automatic, ``True`` / ``False`` force the scan / per-step path
        (arrays only).
      opt_state: optimizer state to continue from; default ``opt.init(params)``.
      loss_fn: ``loss_fn(logits, labels) -> scalar`` batch mean.
      metrics_fn: ``metrics_fn(logits, labels) -> {name: batch mean}``; default
        :func:`funcnet.train.default_metrics` of ``loss_fn`` (accuracy for class labels,
        nothing for a regression).
      compute_dtype: e.g. ``jnp.bfloat16`` for mixed precision (see :func:`train_step`).
      eval_batch_size: batch size of the evaluation.
      callbacks: a list (or tuple; ``None`` for none) of callables ``cb(epoch, logs) ->
        bool`` (True stops training), or objects
        with ``on_epoch_end(epoch, logs, train_state)`` (see
        :mod:`funcnet.train.callbacks`, :class:`EarlyStopping`, :class:`KeepBest`). Before
        training, each callback's ``on_resume(history, train_state)`` (when it has one)
        replays the run's history: the restored one on a resume (a run that a callback
        had stopped trains nothing and says so), an empty one for a new run, so that
        callback objects reused from another ``fit`` call start afresh.
      mesh: a :class:`jax.sharding.Mesh` to train data-parallel on, or ``None``.
      prefetch: batches prepared ahead of the step by a background thread (per-step
        paths); ``None``: 2 on an accelerator, 0 (no thread) on the CPU.
      config: what else defines the run and ``fit`` cannot see, as JSON (e.g. ``{"lr":
        1e-3, "b1": 0.9, "augment": "flip"}``: an optax optimizer's hyperparameters,
        which are closures, or a data version): part of the run's fingerprint, so a rerun
        with another ``config`` is refused instead of resumed.

    Returns:
      ``(params, state, opt_state, history)``; ``history`` is a dict of lists, one entry
      per epoch since the start of the run (restored epochs included): ``epoch``
      (1-based), ``loss``, the metrics, ``eval_loss`` and the eval metrics,
      ``learning_rate`` when known (the rate of the epoch's first update, above),
      ``epoch_time`` (seconds, the first of a call including compilation). Every list is
      as long as ``epoch``: ``None`` where a value was not measured (``eval_*`` of
      epochs trained, before a resume, without ``eval_data``).

    Raises:
      ValueError: bad shapes, sizes or counts (rows of ``x`` and ``y``, ``batch_size``,
        labels out of range, a batch not divisible by the mesh's devices, non-finite
        input params), a checkpoint directory of another run (``RunMismatchError``).
      TypeError: bad ``model``, ``opt``, ``data``, ``key``, ``checkpoint``, ``mesh``,
        ``callbacks``.
      FloatingPointError: :class:`NonFiniteError`, above.
    """
    fn = "fit"
    # ---------------------------------------------------------------- checks first
    compute_dtype = check_model_args(fn, model, loss_fn, metrics_fn, compute_dtype)
    _checks.check_optimizer(fn, "opt", opt)
    epochs = _checks.static_int(fn, "epochs", epochs, minimum=0)
    checkpoint_every = _checks.static_int(fn, "checkpoint_every", checkpoint_every, minimum=1)
    eval_batch_size = _checks.static_int(fn, "eval_batch_size", eval_batch_size, minimum=1)
    if prefetch is not None:
        prefetch = _checks.static_int(fn, "prefetch", prefetch, minimum=0)
    resume = _checks.static_bool(fn, "resume", resume)
    overwrite = _checks.static_bool(fn, "overwrite", overwrite)
    key = _checks.check_key(fn, key, allow_seed=True)
    config = check_config(fn, config)
    devices = check_mesh(fn, mesh)
    if mesh is not None:   # jax.make_mesh's Explicit axes: funcnet compiles in Auto mode
        mesh = sharding.auto_axes(mesh)
        params, state, opt_state, data, eval_data = sharding.auto_leaves(
            (params, state, opt_state, data, eval_data))
    if scan is not None:
        scan = _checks.static_bool(fn, "scan", scan)
    if progress is not None:
        progress = _checks.static_bool(fn, "progress", progress)
    callbacks = _callback_list(fn, callbacks)
    for i, cb in enumerate(callbacks):
        if not (callable(cb) or callable(getattr(cb, "on_epoch_end", None))):
            raise TypeError(f"{fn}: callbacks[{i}] must be callable cb(epoch, logs) -> bool, "
                            f"got {type(cb).__name__}")
    kind, source = _epoch_source(fn, data)
    if kind == "arrays":
        x, y = source
        if batch_size is None:
            raise TypeError(f"{fn}: batch_size is required with (x, y) arrays")
        batch_size = _checks.check_batch_size(fn, batch_size, num_rows(x))
        check_batch_split(fn, "batch_size", batch_size, devices)
        outputs = trace_outputs(fn, "data", model, params, state, x, y, loss_fn, metrics_fn,
                                FIT_LOGS, "eval_")
        check_labels(fn, "data y", y, outputs.num_classes)
        train_metrics = outputs.metrics
        if scan is None:
            scan = _nbytes(x) + _nbytes(y) <= _scan_limit()
    else:
        train_metrics = None          # known at the first batch
        if batch_size is not None:
            raise TypeError(f"{fn}: batch_size is for (x, y) arrays; an iterable of batches "
                            f"sets its own batch size, got batch_size={batch_size!r}")
        if scan:
            raise ValueError(f"{fn}: scan=True needs (x, y) arrays; batches from an "
                             f"iterable run one jitted step each")
        scan = False
        if isinstance(data, fdata.Loader):   # its batch sizes are known before training
            last = 0 if data.drop_last else data.num_examples % data.batch_size
            check_batch_split(fn, "data: the Loader's batch_size", data.batch_size, devices)
            if last:
                check_batch_split(fn, "data: the Loader's last batch (drop_last=False) of",
                                  last, devices)
                _check_train_batch(f"{fn}: data: the Loader's last batch (drop_last=False, "
                                   f"{last} row{'s' if last > 1 else ''})", model, params, state,
                                   data.x, last)
    if eval_data is not None:
        check_per_example_loss(fn, "loss_fn (with eval_data)", loss_fn)
        ex, ey = check_pair(fn, "eval_data", eval_data)
        eval_outputs = trace_outputs(fn, "eval_data", model, params, state, ex, ey, loss_fn,
                                     metrics_fn)
        check_labels(fn, "eval_data y", ey, eval_outputs.num_classes)
    if checkpoint is not None:
        check_manager(fn, checkpoint)
    if not bool(all_finite((params, state))):
        raise ValueError(f"{fn}: params or state hold NaN or infinite values before "
                         f"training")

    # ------------------------------------------------------------ run and resume
    if opt_state is None:
        opt_state = opt.init(params)
    first_lr = _learning_rate(opt, opt_state)

    def check_callback_monitors(metrics):   # before the first step (iterables: its batch)
        logged = None if metrics is None else {"loss", *metrics, "epoch_time"} | (
            set() if first_lr is None else {"learning_rate"}) | (
            set() if eval_data is None else {f"eval_{k}" for k in ("loss",
                                                                   *eval_outputs.metrics)})
        check_monitors(fn, callbacks, logged, eval_data is not None)

    check_callback_monitors(train_metrics)
    fp = fingerprint(model=model, params=params, state=state, opt_state=opt_state,
                     learning_rate=first_lr, loss_fn=loss_fn, key=key,
                     batch_size=batch_size, data=source, config=config,
                     optimizer=optim.describe(opt), model_config=nn.describe(model))
    start, history, stop_name = 0, {}, None
    writer = jax.process_index() == 0
    given = (params, state, opt_state)       # the caller's arrays: their shardings are kept
    if checkpoint is not None:
        like = restore_template(*given, key)
        start, tree, history, stop_name = resume_point(
            fn, checkpoint, resume=resume, overwrite=overwrite, fp=fp, like=like,
            writer=writer)
        if tree is not None:
            params, state, opt_state = tree["params"], tree["state"], tree["opt_state"]
    params, state, opt_state = feed.place((params, state, opt_state), mesh, given)
    layout = None if mesh is None else sharding.layout((params, state, opt_state), mesh)
    if checkpoint is not None and layout is not None:   # every process, before epoch 1
        sharding.check_host_readable(fn, {"params": params, "state": state,
                                          "opt_state": opt_state}, "checkpoint=")
    bar = EpochProgress(epochs, enabled=progress is not False and writer,  # one process logs
                        start=min(start, epochs))
    # every callback starts from this run's history (empty for a new run): no counter or
    # best epoch is carried over from an earlier fit call with the same callback objects
    stopper = resume_callbacks(callbacks, history, TrainState(params, state, opt_state))
    if start == 0:
        stopper = None
    elif stopper is None:       # a callback without on_resume that stopped the run, if here
        stopper = recorded_stopper(callbacks, stop_name)
    if start > 0 and (start >= epochs or stopper is not None):
        stop_epoch = getattr(stopper, "stopped_epoch", None) or start
        why = (f"checkpoint at epoch {start} of {epochs}" if start >= epochs else
               f"{describe_callback(stopper)} had stopped this run at epoch {stop_epoch}")
        bar.note(f"fit: nothing to train: {why}")
        bar.close()
        return params, state, opt_state, history
    if start > 0:
        bar.note(f"fit: resumed at epoch {start} of {epochs}")

    # ------------------------------------------------------------------ epochs
    epoch_scan, one_step = compiled(model, opt, loss_fn, metrics_fn, compute_dtype,
                                    batch_size, mesh, layout)
    put_rep = (lambda t: t) if mesh is None else (lambda t: sharding.put_replicated(t, mesh))
    if scan:
        x_dev, y_dev = (jax.tree_util.tree_map(jnp.asarray, (x, y)) if mesh is None
                        else put_rep((x, y)))
        key_dev = put_rep(key)
    else:
        labels_ok = None
        if kind == "batches":
            labels_ok = _lazy_label_check(fn, model, params, state, loss_fn, metrics_fn,
                                          check_callback_monitors)
        put = feed.batch_putter(fn, mesh, devices, labels_ok, checked=kind == "arrays")
        # arrays: the scan path's batches (fdata.Loader draws the same permutation)
        epoch_batches = (fdata.Loader(x, y, batch_size, key=key) if kind == "arrays"
                         else source)
        if prefetch is None:
            prefetch = 0 if feed.platform(mesh) == "cpu" else 2
    try:
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            lr = _learning_rate(opt, opt_state)
            if scan:
                (params, state, opt_state, counters), metrics = epoch_scan(
                    params, state, opt_state, x_dev, y_dev, key_dev,
                    put_rep(np.asarray(epoch, np.int32)))
                weights = None
            else:
                _, model_key = fdata.epoch_keys(key, epoch)
                carry = (params, state, opt_state, put_rep(np.zeros((2,), np.int32)))
                (params, state, opt_state, counters), metrics, weights = _per_step_epoch(
                    one_step, carry, Prefetcher(epoch_batches(epoch), put, prefetch),
                    put_rep(model_key))
                if not weights:
                    raise ValueError(f"{fn}: data gave no batches for epoch {epoch} "
                                     f"(0-based)")
            metrics, (bad, _) = sharding.to_host((metrics, counters))
            if int(bad):
                raise _non_finite(np.asarray(metrics["loss"]), int(bad), epoch, epochs,
                                  (params, state, opt_state), history)
            logs = _means(metrics, weights)
            if eval_data is not None:
                ev = evaluate_checked(model, optim.eval_params(opt_state, params), state,
                                      ex, ey, eval_batch_size,
                                      loss_fn, metrics_fn, compute_dtype, mesh, devices)
                logs.update({f"eval_{k}": v for k, v in ev.items()})
            if lr is not None:
                logs["learning_rate"] = lr
            logs["epoch_time"] = time.perf_counter() - t0
            _append(history, {"epoch": epoch + 1, **logs})
            bar.update(epoch + 1, logs, logs["epoch_time"])
            done = epoch + 1
            save = checkpoint is not None and writer
            if save and (done % checkpoint_every == 0 or done == epochs):
                # before the callbacks: an error in one of them keeps this epoch
                _save(checkpoint, done, (params, state, opt_state), key, mesh,
                      save_metadata(fp, history, done))
            train_state = TrainState(params, state, opt_state)
            stops = [call_callback(cb, done, logs, train_state) for cb in callbacks]
            stop = any(stops)
            if save and stop:        # the record of who stopped it (the same step again)
                first = callbacks[stops.index(True)]
                _save(checkpoint, done, (params, state, opt_state), key, mesh,
                      save_metadata(fp, history, done, stopped_by=stable_name(first)))
            if stop:
                bar.note(f"fit: stopped by a callback after epoch {done} of {epochs}")
                break
    finally:
        bar.close()
    return params, state, opt_state, history


def _callback_list(fn: str, callbacks) -> tuple:
    """``callbacks`` as a tuple: a list or tuple of them, or ``None`` for none."""
    if callbacks is None:
        return ()
    if callable(callbacks) or callable(getattr(callbacks, "on_epoch_end", None)):
        raise TypeError(f"{fn}: callbacks must be a list of callbacks, got one "
                        f"{type(callbacks).__name__}: pass callbacks=[it]")
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"{fn}: callbacks must be a list or tuple of callbacks, got "
                        f"{type(callbacks).__name__}")
    return tuple(callbacks)


def _check_train_batch(what: str, model, params, state, x, rows: int) -> None:
    """Traces the model in training mode on a batch of ``rows`` rows of ``x`` (shapes
    only): what it refuses (batch norm on one row) is refused before any epoch runs,
    not after the epoch whose last batch it is."""
    spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(
        (rows,) + tuple(a.shape[1:]), a.dtype), x, is_leaf=_checks.is_array)
    with _checks.context(what):
        jax.eval_shape(lambda p, s, a: model.apply(p, s, a, key=jax.random.PRNGKey(0),
                                                   train=True), params, state, spec)


def _save(manager, done: int, arrays, key, mesh, metadata: dict) -> None:
    """Checkpoint ``done`` (epochs done) of ``(params, state, opt_state)``."""
    if mesh is not None:   # the replicated arrays, read from this process
        arrays = sharding.to_host(arrays)
    tree = {"params": arrays[0], "state": arrays[1], "opt_state": arrays[2], "epoch": done,
            "key": key}
    manager.save(done, tree, metadata=metadata)


def _append(history: dict, row: dict) -> None:
    """Appends one epoch's ``row`` to ``history``, keeping every list as long as
    ``history["epoch"]``: ``None`` where an entry was not measured (``eval_loss`` of the
    epochs before a resume that added ``eval_data``, and the other way round)."""
    done = len(history.get("epoch", ()))
    for k in [*row, *(k for k in history if k not in row)]:
        history.setdefault(k, [None] * done).append(row.get(k))


def _lazy_label_check(fn: str, model, params, state, loss_fn, metrics_fn,
                      on_metrics: Callable) -> Callable:
    """``check(x, y)`` of host labels for iterables: the class count (and the loss's and
    metrics' shapes and names) from the first batch of each shape; the first batch's
    metric names go to ``on_metrics`` (the callbacks' monitors, checked before the first
    step)."""
    classes: dict = {}
    # shapes only: the arrays themselves are donated to the first step
    params, state = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                           (params, state))

    def check(x, y):
        leaves, treedef = jax.tree_util.tree_flatten((x, y))
        shape = (treedef, *((tuple(a.shape[1:]), str(a.dtype)) for a in leaves))
        if shape not in classes:
            outputs = trace_outputs(fn, "a batch of data", model, params, state, x, y,
                                    loss_fn, metrics_fn, FIT_LOGS, "eval_")
            if not classes:
                on_metrics(outputs.metrics)
            classes[shape] = outputs.num_classes
        check_labels(fn, "a batch's y", y, classes[shape])

    return check
