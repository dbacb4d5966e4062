"""Vanilla (Elman) recurrent layer, time-major (note 004 "RNN").

Note 004 writes, with column vectors, ``a_t = W h_{t-1} + U x_t``, ``h_t = act(a_t)``,
``o_t = V h_t``. In funcnet's row-vector convention the same network is::

    h_t = tanh(x_t @ wx + h_{t-1} @ wh + b)        wx = U^T, wh = W^T   (this layer)
    o_t = h_t @ v                                   v = V^T   (a Dense head)

References:
  Elman (1990), "Finding Structure in Time", Cognitive Science 14. Note 004 (RNN).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_weight_args,
                             init_checked, weights_and_input)

__all__ = ["RNN"]


def RNN(hidden_size: int, *, w_init=initializers.xavier_normal(), wh_init=None,
        b_init=initializers.zeros, learn_h0: bool = False, dtype=None) -> Layer:
    """Vanilla RNN returning every hidden state: ``h_t = tanh(x_t wx + h_{t-1} wh + b)``.

    Runs :func:`funcnet.ops.rnn` (backward: BPTT in one reverse ``lax.scan``). The initial
    state ``h_0`` is zeros, or the learned vector ``params["h0"]`` (broadcast over the
    batch) when ``learn_h0=True``. For the note's output ``o_t = V h_t`` apply a
    :func:`Dense` head to ``hs.reshape(T * N, H)`` (every step) or to ``hs[-1]`` (the last).

    Shapes:
      input: time-major ``(T, N, D)``, or one sequence ``(T, D)`` (e.g. inside ``jax.vmap``).
      output: all hidden states ``(T, N, H)`` (or ``(T, H)``).
      params: ``{"wx": (D, H), "wh": (H, H), "b": (H,)}`` plus ``"h0": (H,)`` if
        ``learn_h0``; state ``()``.

    Args:
      hidden_size: ``H``, a positive int.
      w_init: initializer of ``wx``; default Xavier normal (tanh units, Glorot 2010).
      wh_init: initializer of ``wh``; defaults to ``w_init``.
      b_init: initializer of ``b`` (and of ``h0``); default zeros.
      learn_h0: make ``h_0`` a trained parameter instead of zeros.
      dtype: dtype of the params; ``None`` is JAX's default float dtype. The input and
        the params are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"RNN(hidden_size)"``.

    Raises:
      TypeError, ValueError: bad constructor arguments or ``input_shape``; an input that
        is not rank 2/3 or not floating, or params of another shape or structure; and
        :func:`funcnet.ops.rnn`'s errors (``D != params["wx"].shape[0]``), prefixed with
        the layer name.

    References:
      Elman (1990); Glorot & Bengio (2010); note 004 (RNN).
    """
    H = _checks.static_int("RNN", "hidden_size", hidden_size, minimum=1)
    name = f"RNN({H})"
    learn_h0 = _checks.static_bool(name, "learn_h0", learn_h0)
    wh_init = w_init if wh_init is None else wh_init
    check_weight_args(name, dtype, w_init=w_init, wh_init=wh_init, b_init=b_init)
    shapes = {"wx": (None, H), "wh": (H, H), "b": (H,)}
    if learn_h0:
        shapes["h0"] = (H,)
    layout = "time-major (T, N, D) or one sequence (T, D)"

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, (2, 3), layout, batch_axis=1,
                                  batched_rank=3)
        dt = check_dtype(name, dtype)

        def make(key):
            kx, kh, kb, k0 = jax.random.split(key, 4)
            params = {"wx": w_init(kx, (shape[-1], H), dt), "wh": wh_init(kh, (H, H), dt),
                      "b": b_init(kb, (H,), dt)}
            if learn_h0:
                params["h0"] = b_init(k0, (H,), dt)
            return params, ()
        return init_checked(apply, make, key, shape, dt, batch_axis=1)

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, params = weights_and_input(name, params, state, x, shapes)
        _checks.check_rank(name, "x", x, (2, 3), layout)
        xs = x[:, None, :] if x.ndim == 2 else x
        n = xs.shape[1]
        h0 = (jnp.broadcast_to(params["h0"][None, :], (n, H)) if learn_h0
              else jnp.zeros((n, H), x.dtype))
        with _checks.context(name):
            hs = ops.rnn(xs, h0, params["wx"], params["wh"], params["b"])
        return (hs[:, 0, :] if x.ndim == 2 else hs), state

    return Layer(init, apply, name)
