"""Argument checks and conversions shared by the data helpers.

Every check runs on static shapes (never on array values), so the helpers that use them
also work on ``jnp`` arrays inside ``jax.jit``.
"""
from __future__ import annotations

import jax
import numpy as np


def as_key(fn: str, key) -> jax.Array:
    """Returns ``key`` as a JAX PRNG key; an ``int`` seed becomes ``jax.random.PRNGKey(seed)``.

    Args:
      fn: name of the calling function, for error messages.
      key: a raw ``uint32`` key of shape ``(2,)``, a typed key (``jax.random.key``) or a
        Python ``int`` seed.

    Raises:
      TypeError: ``key`` is none of the above.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return jax.random.PRNGKey(int(key))
    dtype = getattr(key, "dtype", None)
    if dtype is not None and (jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
                              or (dtype == np.uint32 and np.ndim(key) == 1)):
        return key
    raise TypeError(
        f"{fn}: key must be a JAX PRNG key (jax.random.key / jax.random.PRNGKey) or an int "
        f"seed, got {type(key).__name__} with dtype {dtype} and shape {np.shape(key)}")


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
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(
            f"{fn}: batch_size must be a Python int (static under jit), got "
            f"{type(batch_size).__name__}")
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
    return images.reshape(n, -1) if flatten else images.reshape(raw.shape + (1,))
