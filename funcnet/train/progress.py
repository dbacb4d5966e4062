"""Per-epoch progress: a tqdm bar on a terminal, else one plain log line per epoch.

tqdm is optional: it is imported lazily, and only used when it is installed and
``sys.stdout`` is a terminal. Otherwise (CI logs, pipes, notebooks' captured output,
tqdm missing) each epoch prints one line such as::

    epoch  3/10  loss 0.1234  accuracy 0.9650  eval_loss 0.1301  eval_accuracy 0.9611  0.52 s
"""
from __future__ import annotations

import sys

__all__ = ["EpochProgress", "format_metrics"]

_HIDDEN = ("epoch", "epoch_time")


def format_metrics(metrics: dict) -> str:
    """``"loss 0.1234  accuracy 0.9650  learning_rate 0.001"`` in the logs' order.

    Every entry but ``epoch`` and ``epoch_time`` (shown separately): 4 decimals, the
    learning rate with 4 significant digits.
    """
    return "  ".join(f"{k} {v:.4g}" if k == "learning_rate" else f"{k} {v:.4f}"
                     for k, v in metrics.items() if k not in _HIDDEN)


def _tqdm_or_none():
    if not sys.stdout.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class EpochProgress:
    """Reports finished epochs ``start+1 .. epochs``.

    Args:
      epochs: the last epoch number (1-based total).
      enabled: ``False`` prints nothing.
      start: epochs already done (after resuming from a checkpoint).
    """

    def __init__(self, epochs: int, enabled: bool = True, start: int = 0):
        self.epochs = epochs
        self.enabled = enabled
        self._bar = None
        if enabled:
            tqdm = _tqdm_or_none()
            if tqdm is not None:
                self._bar = tqdm(total=epochs, initial=start, unit="epoch", desc="fit")

    def update(self, epoch: int, metrics: dict, seconds: float) -> None:
        """Reports that 1-based ``epoch`` finished with ``metrics`` in ``seconds``."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(format_metrics(metrics), refresh=False)
            self._bar.update(1)
            return
        width = len(str(self.epochs))
        print(f"epoch {epoch:>{width}}/{self.epochs}  {format_metrics(metrics)}  "
              f"{seconds:.2f} s", flush=True)

    def note(self, message: str) -> None:
        """Prints one line (above the bar on a terminal), e.g. ``resumed at epoch 3 of 10``."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
