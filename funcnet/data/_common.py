"""Argument checks and conversions shared by the data helpers.

Every check runs on static shapes (never on array values), so the helpers that use them
also work on ``jnp`` arrays inside ``jax.jit``. Keys are checked by
:func:`funcnet._checks.check_key` (the one key validator).
"""
from __future__ import annotations

import numpy as np

from funcnet import _checks


def check_pair(fn: str, x, y) -> int:
    """Checks that ``x`` and ``y`` hold the same number of examples and returns it.

    Raises:
      ValueError: either is a scalar, or their first dimensions differ.
    """
    xs, ys = tuple(np.shape(x)), tuple(np.shape(y))
    if not xs or not ys:
        raise ValueError(
            f"{fn}: x and y must have a leading example dimension, got x with shape {xs} "
            f"and y with shape {ys}")
    if xs[0] != ys[0]:
        raise ValueError(
            f"{fn}: x has shape {xs} and y has shape {ys}; their first dimensions (the "
            f"numbers of examples) must match")
    return xs[0]


def check_batch_size(fn: str, batch_size, n: int) -> int:
    """Checks that ``batch_size`` is a static Python int in ``[1, n]`` and returns it.

    Raises:
      TypeError: ``batch_size`` is not an int (e.g. a traced value).
      ValueError: ``batch_size <= 0`` or ``batch_size > n``.
    """
    batch_size = _checks.static_int(fn, "batch_size", batch_size)
    if not 1 <= batch_size <= n:
        raise ValueError(
            f"{fn}: batch_size must be in [1, {n}] (the number of examples), got {batch_size}")
    return int(batch_size)


def to_images(raw: np.ndarray, max_value: float, *, flatten: bool, normalize: bool,
              dtype) -> np.ndarray:
    """Converts integer images ``(N, H, W)`` to NHWC ``(N, H, W, 1)`` or flat ``(N, H*W)``.

    Args:
      raw: integer pixels, shape ``(N, H, W)``.
      max_value: the largest possible pixel value (e.g. 255 or 16); with ``normalize``
        the pixels are divided by it, so they land in ``[0, 1]``.
      flatten: return ``(N, H*W)`` instead of ``(N, H, W, 1)``.
      normalize: divide by ``max_value``.
      dtype: a floating NumPy dtype for the result.

    Raises:
      TypeError: ``dtype`` is not a floating dtype.
    """
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise TypeError(f"images dtype must be a floating dtype, got {dtype}")
    images = raw.astype(dtype)
    if normalize:
        images /= dtype.type(max_value)
    n = raw.shape[0]
    flat = (n, int(np.prod(raw.shape[1:])))
    return images.reshape(flat) if flatten else images.reshape(raw.shape + (1,))
