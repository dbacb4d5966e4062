"""Plain-JAX twin of :mod:`funcnet.ops.smoothing`."""
from __future__ import annotations

from funcnet.ops.smoothing import check_smooth_labels_args, smoothed

__all__ = ["smooth_labels"]


def smooth_labels(labels, alpha: float, *, axis=-1, where=None):
    """Reference label smoothing ``(1 - alpha) t + alpha / K``."""
    return smoothed(*check_smooth_labels_args(labels, alpha, axis, where))
