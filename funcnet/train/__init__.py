"""Training: one jitted step, batched evaluation, and ``fit`` (a scan per epoch).

::

    from funcnet import nn, optim, train
    step = train.make_train_step(model, optim.adam(1e-3))    # jitted, buffers donated
    params, state, opt_state, history = train.fit(
        model, params, state, optim.adam(1e-3), (x, y), epochs=10, batch_size=64,
        key=jax.random.PRNGKey(0), eval_data=(x_test, y_test))
    train.evaluate(model, params, state, x_test, y_test)     # {"loss": ..., "accuracy": ...}

- :mod:`.step`: :func:`train_step` (pure), :func:`make_train_step` (jitted),
  :func:`evaluate`; mixed precision with ``compute_dtype``.
- :mod:`.loop`: :func:`fit`, with shuffling, NaN checks, checkpoints and resuming.
- :mod:`.progress`: the per-epoch progress bar / log lines.
- :mod:`.metrics`: :func:`accuracy` and helpers.
"""
from funcnet.train.loop import SCAN_MAX_BYTES, fit
from funcnet.train.metrics import accuracy, cast_floating
from funcnet.train.step import evaluate, make_train_step, train_step

__all__ = ["SCAN_MAX_BYTES", "accuracy", "cast_floating", "evaluate", "fit",
           "make_train_step", "train_step"]
