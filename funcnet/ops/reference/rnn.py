"""Plain-JAX twin of :func:`funcnet.ops.rnn`: a ``lax.scan`` differentiated by JAX."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from funcnet.ops.rnn import check_rnn_args


def rnn(xs, h0, wx, wh, b):
    """Reference tanh RNN, ``h_t = tanh(x_t @ wx + h_{t-1} @ wh + b)``.

    Args:
      xs: ``(T, N, D)``; h0: ``(N, H)``; wx: ``(D, H)``; wh: ``(H, H)``; b: ``(H,)``.

    Returns:
      ``(T, N, H)``, every hidden state.
    """
    check_rnn_args("rnn", xs, h0, wx, wh, b)

    def step(h, x):
        h = jnp.tanh(x @ wx + h @ wh + b[None, :])
        return h, h

    return lax.scan(step, h0, xs)[1]
