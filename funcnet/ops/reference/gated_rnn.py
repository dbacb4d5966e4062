"""Plain-JAX twins of :func:`funcnet.ops.lstm` and :func:`funcnet.ops.gru`.

Written independently of the ops' cells (per-step input projection, gates split with
``jnp.split``), as a ``lax.scan`` that JAX differentiates. With ``lengths``, the padded
steps (``t >= lengths[n]``) keep the carry and output 0 (``jnp.where``); without, every
step is real.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from funcnet.ops._mesh import split_like, vary_like
from funcnet.ops.reference.rnn import real_steps
from funcnet.ops.rnn import check_recurrent_args

__all__ = ["lstm", "gru"]


def lstm(xs, h0, c0, wx, wh, b, lengths=None):
    """Reference LSTM, gates ``[i, f, g, o]``: ``c = f c + i g``, ``h = o tanh(c)``."""
    check_recurrent_args("lstm", 4, xs, {"h0": h0, "c0": c0}, {"wx": wx, "wh": wh, "b": b})
    xs, valid, (h0, c0) = real_steps("lstm", xs, lengths, h0, c0)

    def step(carry, inp):
        x, real = inp
        h, c = carry
        zi, zf, zg, zo = jnp.split(x @ wx + h @ wh + b[None, :], 4, axis=1)
        c_new = jax.nn.sigmoid(zf) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
        h_new = jax.nn.sigmoid(zo) * jnp.tanh(c_new)
        carry = (jnp.where(real, h_new, h), jnp.where(real, c_new, c))
        return carry, jnp.where(real, h_new, 0)

    init = split_like(vary_like((h0, c0), xs, valid, wx, wh, b), xs)
    carry, hs = lax.scan(step, init, (xs, valid))
    return hs, carry


def gru(xs, h0, wx, wh, bx, bh, lengths=None):
    """Reference GRU (reset gate after the recurrent matmul, as PyTorch/cuDNN/Flax)."""
    check_recurrent_args("gru", 3, xs, {"h0": h0}, {"wx": wx, "wh": wh, "bx": bx, "bh": bh})
    xs, valid, (h0,) = real_steps("gru", xs, lengths, h0)

    def step(h, inp):
        x, real = inp
        xr, xz, xn = jnp.split(x @ wx + bx[None, :], 3, axis=1)
        hr, hz, hn = jnp.split(h @ wh + bh[None, :], 3, axis=1)
        r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)
        h_new = (1 - z) * n + z * h
        return jnp.where(real, h_new, h), jnp.where(real, h_new, 0)

    init = split_like(vary_like(h0, xs, valid, wx, wh, bx, bh), xs)
    h_last, hs = lax.scan(step, init, (xs, valid))
    return hs, h_last
