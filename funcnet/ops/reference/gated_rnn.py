"""Plain-JAX twins of :func:`funcnet.ops.lstm` and :func:`funcnet.ops.gru`.

Written independently of the ops' cells (per-step input projection, gates split with
``jnp.split``), as a ``lax.scan`` that JAX differentiates.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from funcnet.ops.rnn import check_recurrent_args

__all__ = ["lstm", "gru"]


def lstm(xs, h0, c0, wx, wh, b):
    """Reference LSTM, gates ``[i, f, g, o]``: ``c = f c + i g``, ``h = o tanh(c)``."""
    check_recurrent_args("lstm", 4, xs, {"h0": h0, "c0": c0}, {"wx": wx, "wh": wh, "b": b})

    def step(carry, x):
        h, c = carry
        zi, zf, zg, zo = jnp.split(x @ wx + h @ wh + b[None, :], 4, axis=1)
        c = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
        h = jax.nn.sigmoid(zo) * jnp.tanh(c)
        return (h, c), h

    carry, hs = lax.scan(step, (h0, c0), xs)
    return hs, carry


def gru(xs, h0, wx, wh, bx, bh):
    """Reference GRU (reset gate after the recurrent matmul, as PyTorch/cuDNN/Flax)."""
    check_recurrent_args("gru", 3, xs, {"h0": h0}, {"wx": wx, "wh": wh, "bx": bx, "bh": bh})

    def step(h, x):
        xr, xz, xn = jnp.split(x @ wx + bx[None, :], 3, axis=1)
        hr, hz, hn = jnp.split(h @ wh + bh[None, :], 3, axis=1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        return h, h

    h_last, hs = lax.scan(step, h0, xs)
    return hs, h_last
