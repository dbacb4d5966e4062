"""Conversions shared by the data loaders.

The data helpers' argument checks are :mod:`funcnet._checks`' (``check_same_leading``,
``check_batch_size``, ``check_key``): they run on static shapes (never on array values),
so the helpers that use them also work on ``jnp`` arrays inside ``jax.jit``.
"""
from __future__ import annotations

import jax
import numpy as np


def take_rows(tree, idx):
    """``a[idx]`` for every array of ``tree``: the rows ``idx`` of examples that are one
    array ``(N, ...)`` or a pytree of them (a dict or tuple of inputs sharing ``N``)."""
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


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
