"""The errors of ``fit``: a non-finite run, and a checkpoint directory of another run."""
from __future__ import annotations

from typing import Any

__all__ = ["NonFiniteError", "RunMismatchError"]


class NonFiniteError(FloatingPointError):
    """A training step produced a NaN or an infinity (in the loss, the params or the state).

    ``fit`` drops that step's update, stops, and raises this error; the message names the
    epoch and the step. Nothing non-finite is ever checkpointed.

    Attributes:
      params, state, opt_state: the last finite ones (before the failing step's update).
      epoch: the 1-based epoch of the failing step.
      step: the 1-based step within that epoch.
      history: the history of the epochs completed before it.
    """

    def __init__(self, message: str, *, params: Any = None, state: Any = None,
                 opt_state: Any = None, epoch: int | None = None, step: int | None = None,
                 history: dict | None = None):
        super().__init__(message)
        self.params, self.state, self.opt_state = params, state, opt_state
        self.epoch, self.step, self.history = epoch, step, history


class RunMismatchError(ValueError):
    """A checkpoint directory holds another run's checkpoints (or ``resume=False``).

    ``fit`` never resumes from nor writes into it; ``overwrite=True`` deletes them first.
    """
