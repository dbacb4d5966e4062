"""Dense (fully connected, Affine) layer, row-vector convention (note 004).

References:
  Note 004 "Dense Layer"; note 002 "Affine".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from funcnet import ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dict, check_float_input, check_init_shape,
                             check_no_params, fmt, promote, shape_of)

__all__ = ["Dense"]


def Dense(out_features: int, *, w_init=initializers.he_normal(), b_init=initializers.zeros,
          dtype=None) -> Layer:
    """Fully connected layer ``y = x W + b`` (note 004: ``Y = XW + B``, row vectors).

    ``y[n, j] = b[j] + sum_i x[n, i] w[i, j]``, computed by :func:`funcnet.ops.affine`
    (whose backward rule is note 004's ``dX = dY W^T``, ``dW = X^T dY``,
    ``dB = sum_n dY``). Note 004's column form ``a = W h`` is the transpose: its ``W`` is
    this ``w.T``.

    Shapes:
      input: ``(N, D)``, or one example ``(D,)`` (e.g. inside ``jax.vmap``). Higher ranks
        are rejected, not silently flattened: put a :func:`Flatten` first (for images) or
        reshape sequence outputs ``(T, N, H) -> (T*N, H)`` yourself.
      output: ``(N, out_features)`` (or ``(out_features,)``).
      params: ``{"w": (D, out_features), "b": (out_features,)}``; state: ``()``.

    Args:
      out_features: ``H``, the number of output units.
      w_init: initializer for ``w`` (``init(key, shape, dtype)``). Default
        :func:`~funcnet.nn.initializers.he_normal()` (``Var = 2/D``, right for a ReLU that
        follows); pass ``xavier_normal`` before sigmoid/tanh, ``lecun_normal`` for the
        book's "Xavier" ``1/sqrt(D)`` scale.
      b_init: initializer for ``b``; default zeros.
      dtype: dtype of the params (the input must have the same dtype).

    Returns:
      A :class:`Layer` named ``"Dense(out_features)"``.

    Raises:
      ValueError: at construction if ``out_features`` is not a positive int; in
        ``init``/``apply`` if the input rank is not 1 or 2, its feature size is not
        ``params["w"].shape[0]``, or the params are not ``{"w": (D, H), "b": (H,)}``
        with ``H == out_features``.
      TypeError: in ``apply`` if the input dtype differs from the params dtype.

    References:
      Note 004 (Dense Layer, forward and backward).
    """
    if not isinstance(out_features, int) or isinstance(out_features, bool) or out_features < 1:
        raise ValueError(f"Dense: out_features must be a positive int, got {out_features!r}")
    H = out_features
    name = f"Dense({H})"

    def init(key, input_shape):
        shape = check_init_shape(name, input_shape, (1, 2), "rank 2 (N, D) or rank 1 (D,)")
        D = shape[-1]
        kw, kb = jax.random.split(key)
        params = {"w": w_init(kw, (D, H), dtype), "b": b_init(kb, (H,), dtype)}
        return shape[:-1] + (H,), params, ()

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_dict(name, "params", params, ("w", "b"))
        w, b = params["w"], params["b"]
        if len(shape_of(w)) != 2 or shape_of(w)[1] != H or shape_of(b) != (H,):
            raise ValueError(
                f"{name}: params have w shape {shape_of(w)} and b shape {shape_of(b)}, "
                f"expected w (D, {H}) and b ({H},) (params of another layer or model?)")
        D = shape_of(w)[0]
        if x.ndim not in (1, 2):
            raise ValueError(f"{name}: input has shape {fmt(x.shape)}, expected rank 2 "
                             f"(N, {D}) or one example ({D},)")
        if x.shape[-1] != D:
            raise ValueError(
                f"{name}: input has shape {fmt(x.shape)}, expected (N, {D}): {x.shape[-1]} "
                f"features but params['w'] has shape {shape_of(w)}")
        check_float_input(name, x, w, "params['w']")
        check_no_params(name, (), state)
        x, (w, b) = promote(x, (w, b))
        return ops.affine(x, w, b), state

    return Layer(init, apply, name)
