"""Callbacks of ``fit``: the protocol, early stopping and keeping the best model.

The protocol: a callback is any callable ``cb(epoch, logs) -> bool``, called after every
epoch (1-based ``epoch``) with ``logs``, the dict of Python floats that also goes into the
history (``loss``, the metrics, ``eval_loss`` and the eval metrics with ``eval_data``,
``learning_rate`` when known, ``epoch_time``). Returning ``True`` stops training after
this epoch (every callback still sees it, and the epoch is checkpointed).

A callback that needs the model defines ``on_epoch_end(epoch, logs, train_state) ->
bool`` as well; ``fit`` then calls that instead, with ``train_state`` a
:class:`TrainState` of the params, state and optimizer state after the epoch. They are
the live arrays of the run: ``fit`` donates them to the next epoch, so a callback that
keeps them must copy them (as :class:`KeepBest` does). Logs stay light (floats only).

Resuming: a callback's counters live in the history, not in the checkpoint. Before
training, ``fit`` calls ``on_resume(history, train_state) -> bool`` of every callback that
has one. For a new run ``history`` is empty (``{}``), so a callback reused from an earlier
``fit`` call starts afresh (the return value is then ignored). When ``fit`` resumes a run,
``history`` is the restored history (one entry per epoch done;
``None`` where a value was not measured, e.g. ``eval_loss`` of epochs trained without
``eval_data``), ``train_state`` the restored params, state and optimizer state of the
last epoch done. :class:`EarlyStopping` and :class:`KeepBest` replay the history, so a
resumed run stops at the same epoch as the uninterrupted one; ``True`` means the run had
already stopped, and ``fit`` then trains nothing and says so.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from funcnet import _checks
from funcnet.train.run import stable_name

__all__ = ["EarlyStopping", "KeepBest", "TrainState", "call_callback", "check_monitors",
           "describe_callback", "recorded_stopper", "resume_callbacks"]


class TrainState(NamedTuple):
    """The training state after an epoch, as given to ``on_epoch_end`` callbacks."""

    params: Any
    state: Any
    opt_state: Any


def call_callback(cb, epoch: int, logs: dict, train_state: TrainState) -> bool:
    """Calls ``cb`` by the protocol (``on_epoch_end`` if it has one) and returns its bool."""
    hook = getattr(cb, "on_epoch_end", None)
    result = hook(epoch, dict(logs), train_state) if callable(hook) else cb(epoch, dict(logs))
    return bool(result)


def resume_callbacks(callbacks, history: dict, train_state: TrainState):
    """Calls ``on_resume(history, train_state)`` of every callback that has one (all of
    them, in order); returns the first that says the run had stopped, else ``None``."""
    stopped = None
    for cb in callbacks:
        hook = getattr(cb, "on_resume", None)
        if callable(hook) and bool(hook({k: list(v) for k, v in history.items()},
                                        train_state)) and stopped is None:
            stopped = cb
    return stopped


def check_monitors(fn: str, callbacks, keys, eval_data: bool) -> None:
    """Before training: every callback's ``monitor`` (:class:`EarlyStopping`,
    :class:`KeepBest`, or any callback with a str ``monitor``) names a log entry ``fit``
    writes. ``keys`` is the set of them, or ``None`` when the metric names are not known
    yet (batches from an iterable); ``eval_*`` needs ``eval_data``."""
    for i, cb in enumerate(callbacks):
        monitor = getattr(cb, "monitor", None)
        if not isinstance(monitor, str):
            continue
        where = f"{fn}: callbacks[{i}] ({type(cb).__name__}) monitors {monitor!r}"
        if monitor.startswith("eval_") and not eval_data:
            raise ValueError(f"{where}, which is logged only with eval_data=(x, y)")
        if keys is not None and monitor not in keys:
            raise ValueError(f"{where}, which {fn} does not log; the logs hold "
                             f"{', '.join(sorted(keys))}")


def recorded_stopper(callbacks, name: str | None):
    """The callback (one without ``on_resume``, which decides itself) whose
    :func:`stable_name` the checkpoint records as having stopped the run, else ``None``:
    remove it from ``callbacks`` to train on."""
    if name is None:
        return None
    return next((cb for cb in callbacks if not callable(getattr(cb, "on_resume", None))
                 and stable_name(cb) == name), None)


def describe_callback(cb) -> str:
    """A callback as the "nothing to train" note names it."""
    return repr(cb) if callable(getattr(cb, "on_resume", None)) else stable_name(cb)


class _Monitor:
    """Shared bookkeeping: a monitored log entry, its mode and the best value so far."""

    def __init__(self, fn: str, monitor: str, mode: str, min_delta: float = 0.0):
        if not isinstance(monitor, str):
            raise TypeError(f"{fn}: monitor must be a str (a key of the logs), got "
                            f"{type(monitor).__name__}")
        self.monitor = monitor
        self.mode = _checks.static_choice(fn, "mode", mode, ("auto", "min", "max"))
        if mode == "auto":
            self.mode = "max" if "acc" in monitor else "min"
        self.min_delta = _checks.static_float(fn, "min_delta", min_delta, 0.0)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self._fn = fn

    def _value(self, logs: dict) -> float:
        if self.monitor not in logs:
            raise KeyError(f"{self._fn}: monitor {self.monitor!r} is not in the logs "
                           f"{sorted(logs)}; pass eval_data to fit for eval_* entries")
        return float(logs[self.monitor])

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best_value is None:
            return True
        if self.mode == "min":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def _record(self, epoch: int, value: float) -> bool:
        if self._improved(value):
            self.best_value, self.best_epoch = value, epoch
            return True
        return False

    def _replay(self, history: dict) -> list[tuple[int, float]]:
        """Forgets the best so far and returns ``(epoch, value)`` of every epoch of
        ``history`` that measured ``monitor`` (``None`` entries were not measured; a NaN
        was, and never improves). Lists shorter than ``history["epoch"]`` (histories
        written before they were padded) are aligned to its end."""
        self.best_value = self.best_epoch = None
        epochs = list(history.get("epoch") or [])
        values = list(history.get(self.monitor) or [])
        offset = len(epochs) - len(values)
        return [(int(epoch), float(values[i - offset])) for i, epoch in enumerate(epochs)
                if i >= offset and values[i - offset] is not None]


class EarlyStopping(_Monitor):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    An epoch improves when its value beats the best so far by more than ``min_delta``
    (lower for ``mode="min"``, higher for ``"max"``; ``"auto"``: ``max`` for names
    containing ``acc``, else ``min``). Training stops after the ``patience``-th epoch in a
    row without improvement.

    Example::

        stop = train.EarlyStopping("eval_loss", patience=3)
        fit(..., eval_data=(x_val, y_val), callbacks=[stop])
        stop.stopped_epoch, stop.best_epoch, stop.best_value

    Args:
      monitor: the log entry to watch (``"eval_loss"``, ``"eval_accuracy"``, ``"loss"``).
      patience: epochs without improvement before stopping (int >= 1).
      min_delta: the smallest change that counts as an improvement (>= 0).
      mode: ``"min"``, ``"max"`` or ``"auto"``.

    Raises:
      TypeError, ValueError: bad arguments; ``KeyError`` when called with logs that lack
        ``monitor``.
    """

    def __init__(self, monitor: str = "eval_loss", *, patience: int = 5,
                 min_delta: float = 0.0, mode: str = "auto"):
        super().__init__("EarlyStopping", monitor, mode, min_delta)
        self.patience = _checks.static_int("EarlyStopping", "patience", patience, minimum=1)
        self.wait = 0
        self.stopped_epoch: int | None = None

    def __call__(self, epoch: int, logs: dict) -> bool:
        return self._step(epoch, self._value(logs))

    def _step(self, epoch: int, value: float) -> bool:
        if self._record(epoch, value):
            self.wait = 0
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_resume(self, history: dict, train_state: TrainState | None = None) -> bool:
        """Replays ``history`` (see the module docstring); ``True``: the run had stopped
        (``stopped_epoch`` says when)."""
        self.wait, self.stopped_epoch = 0, None
        return any(self._step(epoch, value) for epoch, value in self._replay(history))

    def __repr__(self) -> str:
        return (f"EarlyStopping({self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, mode={self.mode!r})")


class KeepBest(_Monitor):
    """Keeps a copy of the params, state and optimizer state of the best epoch.

    After ``fit``, ``keeper.best`` is a :class:`TrainState` of device copies (with the
    run's sharding), ``keeper.best_epoch`` and ``keeper.best_value`` say which epoch and
    value. Never stops training.

    Example::

        keeper = train.KeepBest("eval_accuracy")
        fit(..., eval_data=(x_val, y_val), callbacks=[keeper])
        params, state = keeper.best.params, keeper.best.state

    Args:
      monitor: the log entry to watch.
      mode: ``"min"``, ``"max"`` or ``"auto"`` (``max`` for names containing ``acc``).
    """

    def __init__(self, monitor: str = "eval_loss", *, mode: str = "auto"):
        super().__init__("KeepBest", monitor, mode)
        self.best: TrainState | None = None

    def on_epoch_end(self, epoch: int, logs: dict, train_state: TrainState | None) -> bool:
        if self._record(epoch, self._value(logs)) and train_state is not None:
            self.best = _copy(train_state)
        return False

    def on_resume(self, history: dict, train_state: TrainState | None = None) -> bool:
        """Replays ``history``: ``best_epoch`` and ``best_value`` are the run's. ``best``
        holds ``train_state`` when the best epoch is the last one done (the restored
        checkpoint); an earlier best epoch's arrays were not kept, so ``best`` stays
        ``None`` (with a warning) until an epoch after the resume improves on it."""
        self.best = None
        for epoch, value in self._replay(history):
            self._record(epoch, value)
        done = (history.get("epoch") or [None])[-1]
        if self.best_epoch is not None and self.best_epoch == done:
            if train_state is not None:
                self.best = _copy(train_state)
        elif self.best_epoch is not None:
            warnings.warn(
                f"KeepBest: resumed at epoch {done}, but the best epoch so far is "
                f"{self.best_epoch} ({self.monitor} = {self.best_value}), whose params were "
                f"not kept; best stays None until a later epoch improves on it",
                RuntimeWarning, stacklevel=2)
        return False

    def __call__(self, epoch: int, logs: dict) -> bool:
        return self.on_epoch_end(epoch, logs, None)

    def __repr__(self) -> str:
        return f"KeepBest({self.monitor!r}, mode={self.mode!r})"


def _copy(train_state: TrainState) -> TrainState:
    """Device copies of a :class:`TrainState` (``fit`` donates the originals)."""
    return TrainState(*jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True),
                                              tuple(train_state)))
