"""Random draws that XLA:CPU compiles quickly: one source for every array the library draws
(dropout masks, initial weights, optimizer noise)."""
from __future__ import annotations

import math

import jax

__all__: list[str] = []


def draw(sample, key, shape):
    """``sample(key, shape)`` (e.g. ``lambda k, s: jax.random.normal(k, s, dtype)``), the
    same values bit for bit, drawn flat on CPU.

    JAX's generators number the elements of a draw row-major, so a draw of shape ``shape``
    equals the draw of ``(prod(shape),)`` reshaped, for every PRNG implementation
    (threefry, partitionable or not, rbg, unsafe_rbg; ``tests/test_random.py``). XLA:CPU
    compiles the flat draw much faster: with JAX 0.10 on a 2-core CPU, a ``(2, 4, 5, 9)``
    Bernoulli draw takes 1.2 s to compile and the flat one 0.16 s, a ``(3, 3, 16, 16)``
    normal (a conv kernel, drawn eagerly at ``init``) 1.0 s against 0.2 s, with run times
    within noise of each other. So CPU draws ``prod(shape)`` values and reshapes them
    (``lax.platform_dependent``); every other platform draws ``shape`` itself, its
    program unchanged (on TPU a reshape of a flat array is a relayout, not free).
    """
    shape = tuple(shape)
    if len(shape) < 2:
        return sample(key, shape)
    size = math.prod(shape)
    return jax.lax.platform_dependent(
        key, cpu=lambda k: sample(k, (size,)).reshape(shape),
        default=lambda k: sample(k, shape))


def normal_like(key, x):
    """A standard normal draw of ``x``'s shape and dtype (:func:`draw`)."""
    return draw(lambda k, s: jax.random.normal(k, s, x.dtype), key, x.shape)
