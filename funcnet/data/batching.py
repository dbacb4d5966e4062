"""Mini-batches: a Python iterator for eager loops, and a stacked epoch for ``lax.scan``.

Shuffling is a permutation drawn from an explicit JAX PRNG key, so the same key gives the
same batches on every run and every backend.
"""
from __future__ import annotations

from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from funcnet.data._common import as_key, check_batch_size, check_pair


def batches(x, y, batch_size: int, *, key=None,
            drop_last: bool = True) -> Iterator[tuple]:
    """Iterates over ``(x_batch, y_batch)`` pairs, shuffled when a ``key`` is given.

    Arguments are checked when ``batches`` is called, not at the first ``next``.

    Args:
      x: examples, shape ``(N, ...)`` (NumPy or ``jnp``).
      y: targets, shape ``(N, ...)``.
      batch_size: examples per batch, in ``[1, N]``.
      key: a JAX PRNG key or int seed to shuffle with ``jax.random.permutation(key, N)``;
        ``None`` keeps the order of ``x``.
      drop_last: drop the final ``N % batch_size`` examples so every batch is full (and a
        jitted step compiles once); otherwise the last batch is smaller.

    Returns:
      An iterator of ``(x[idx], y[idx])`` with batches of shape ``(batch_size, ...)``, of the
      same kind (NumPy or ``jnp``) as the inputs.

    Raises:
      ValueError: the first dimensions of ``x`` and ``y`` differ, or ``batch_size`` is not in
        ``[1, N]``.
      TypeError: ``batch_size`` is not an int, or ``key`` is not a key or int.
    """
    fn = "batches"
    n = check_pair(fn, x, y)
    batch_size = check_batch_size(fn, batch_size, n)
    order = (np.arange(n) if key is None
             else np.asarray(jax.random.permutation(as_key(fn, key), n)))
    stop = n - n % batch_size if drop_last else n

    def generate():
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield x[idx], y[idx]

    return generate()


def epoch_batches(x, y, batch_size: int, key) -> tuple[jax.Array, jax.Array]:
    """One shuffled epoch stacked as ``(num_batches, batch_size, ...)`` for ``lax.scan``.

    ``num_batches = N // batch_size``; the ``N % batch_size`` examples that land last in the
    permutation are dropped (a different remainder each epoch). Works on ``jnp`` arrays
    inside ``jax.jit`` as long as ``batch_size`` is a static Python int::

        def epoch(params, key):
            xb, yb = epoch_batches(x, y, 32, key)
            return lax.scan(step, params, (xb, yb))

    Args:
      x: examples, shape ``(N, ...)``.
      y: targets, shape ``(N, ...)``.
      batch_size: static Python int in ``[1, N]``.
      key: a JAX PRNG key (or an int seed, outside of tracing).

    Returns:
      ``(xb, yb)``, ``jnp`` arrays of shapes ``(N // batch_size, batch_size) + x.shape[1:]``
      and ``(N // batch_size, batch_size) + y.shape[1:]``, with
      ``xb.reshape(-1, ...) == x[jax.random.permutation(key, N)[:num_batches * batch_size]]``.

    Raises:
      ValueError: the first dimensions of ``x`` and ``y`` differ, or ``batch_size`` is not in
        ``[1, N]``.
      TypeError: ``batch_size`` is not a Python int (e.g. traced), or ``key`` is not a key.
    """
    fn = "epoch_batches"
    n = check_pair(fn, x, y)
    batch_size = check_batch_size(fn, batch_size, n)
    num_batches = n // batch_size
    idx = jax.random.permutation(as_key(fn, key), n)[:num_batches * batch_size]

    def stack(a):
        a = jnp.asarray(a)
        return jnp.take(a, idx, axis=0).reshape((num_batches, batch_size) + a.shape[1:])

    return stack(x), stack(y)
