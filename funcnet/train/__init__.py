"""Training: THE training step, batched evaluation, and ``fit`` (a scan per epoch).

::

    from funcnet import nn, optim, train
    step = train.make_train_step(model, optim.adam(1e-3))    # jitted, buffers donated
    params, state, opt_state, history = train.fit(
        model, params, state, optim.adam(1e-3), (x, y), epochs=10, batch_size=64,
        key=jax.random.PRNGKey(0), eval_data=(x_test, y_test),
        callbacks=[train.EarlyStopping("eval_loss", patience=3)])
    train.evaluate(model, params, state, x_test, y_test)     # {"loss": ..., "accuracy": ...}

- :mod:`.step`: :func:`train_step` (the one pure step: gradients, optional cross-device
  mean over ``axis_name``, metrics, accumulation, mixed precision) and
  :func:`make_train_step` (its ``jax.jit``); :mod:`funcnet.parallel` maps it.
- :mod:`.evaluate`: :func:`evaluate`; :mod:`.metrics`: :func:`accuracy`,
  :func:`default_metrics`.
- :mod:`.loop`: :func:`fit`, with shuffling, non-finite guards, checkpoints of the run
  (:mod:`.run`: fingerprint, history, resume), callbacks (:mod:`.callbacks`), a device
  mesh (:mod:`.sharding`) and iterables of batches with prefetch (:mod:`.feed`).
- :mod:`.progress`: the per-epoch progress bar / log lines.
"""
from funcnet.train.callbacks import EarlyStopping, KeepBest, TrainState
from funcnet.train.errors import NonFiniteError, RunMismatchError
from funcnet.train.evaluate import evaluate
from funcnet.train.loop import SCAN_MAX_BYTES, fit
from funcnet.train.metrics import (accuracy, cast_floating, classification_metrics,
                                   default_metrics)
from funcnet.train.step import make_train_step, train_step

__all__ = ["SCAN_MAX_BYTES", "EarlyStopping", "KeepBest", "NonFiniteError",
           "RunMismatchError", "TrainState", "accuracy", "cast_floating",
           "classification_metrics", "default_metrics", "evaluate", "fit",
           "make_train_step", "train_step"]
