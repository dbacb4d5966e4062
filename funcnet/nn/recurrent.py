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

from funcnet import ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dict, check_float_input, check_init_shape,
                             check_no_params, fmt, promote, shape_of)

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
      dtype: dtype of the params.

    Returns:
      A :class:`Layer` named ``"RNN(hidden_size)"``.

    Raises:
      ValueError: an input that is not ``(T, N, D)`` / ``(T, D)`` with ``D ==
        params["wx"].shape[0]``, or params of another shape or structure.
      TypeError: input dtype different from the params dtype.

    References:
      Elman (1990); Glorot & Bengio (2010); note 004 (RNN).
    """
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
        raise ValueError(f"RNN: hidden_size must be a positive int, got {hidden_size!r}")
    H = hidden_size
    name = f"RNN({H})"
    wh_init = w_init if wh_init is None else wh_init
    keys = ("wx", "wh", "b", "h0") if learn_h0 else ("wx", "wh", "b")

    def init(key, input_shape):
        shape = check_init_shape(name, input_shape, (2, 3),
                                 "rank 3 (T, N, D) or rank 2 (T, D)",
                                 batch_axis=1 if len(tuple(input_shape)) == 3 else None)
        D = shape[-1]
        kx, kh, kb, k0 = jax.random.split(key, 4)
        params = {"wx": w_init(kx, (D, H), dtype), "wh": wh_init(kh, (H, H), dtype),
                  "b": b_init(kb, (H,), dtype)}
        if learn_h0:
            params["h0"] = b_init(k0, (H,), dtype)
        return shape[:-1] + (H,), params, ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_dict(name, "params", params, keys)
        check_no_params(name, (), state)
        wx, wh, b = params["wx"], params["wh"], params["b"]
        if (len(shape_of(wx)) != 2 or shape_of(wx)[1] != H or shape_of(wh) != (H, H)
                or shape_of(b) != (H,) or (learn_h0 and shape_of(params["h0"]) != (H,))):
            raise ValueError(
                f"{name}: params have shapes { {k: shape_of(v) for k, v in params.items()} }, "
                f"expected wx (D, {H}), wh ({H}, {H}), b ({H},)"
                + (f", h0 ({H},)" if learn_h0 else "") + " (params of another model?)")
        D = shape_of(wx)[0]
        if x.ndim not in (2, 3) or x.shape[-1] != D:
            raise ValueError(f"{name}: input has shape {fmt(x.shape)}, expected time-major "
                             f"(T, N, {D}) or one sequence (T, {D}) (params['wx'] has shape "
                             f"{shape_of(wx)})")
        check_float_input(name, x, wx, "params['wx']")
        x, params = promote(x, params)
        wx, wh, b = params["wx"], params["wh"], params["b"]
        xs = x[:, None, :] if x.ndim == 2 else x
        n = xs.shape[1]
        h0 = (jnp.broadcast_to(params["h0"][None, :], (n, H)) if learn_h0
              else jnp.zeros((n, H), x.dtype))
        hs = ops.rnn(xs, h0, wx, wh, b)
        return (hs[:, 0, :] if x.ndim == 2 else hs), state

    return Layer(init, apply, name)
