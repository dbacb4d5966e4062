"""Dense (fully connected, Affine) layer, row-vector convention (note 004).

References:
  Note 004 "Dense Layer"; note 002 "Affine".
"""
from __future__ import annotations

from funcnet import _checks, ops
from funcnet.nn import initializers
from funcnet.nn.base import (Layer, check_dtype, check_input_shape, check_weight_args,
                             init_checked, kernel_and_bias, weights_and_input)
from funcnet._describe import described

__all__ = ["Dense"]


@described
def Dense(out_features: int, *, use_bias: bool = True, w_init=initializers.he_normal(),
          b_init=initializers.zeros, dtype=None) -> Layer:
    """Fully connected layer ``y = x W + b`` (note 004: ``Y = XW + B``, row vectors).

    ``y[..., j] = b[j] + sum_i x[..., i] w[i, j]``, computed by :func:`funcnet.ops.affine`
    (:func:`funcnet.ops.matmul` without bias), whose backward rule is note 004's
    ``dX = dY W^T``, ``dW = X^T dY``, ``dB = sum_n dY``. Note 004's column form ``a = W h``
    is the transpose: its ``W`` is this ``w.T``.

    Shapes:
      input: ``(N, D)``, one example ``(D,)``, or any ``(..., D)``: the layer acts on the
        last axis, every leading axis is batch (as Flax's ``Dense``; e.g. ``(N, T, D)``
        token features in a transformer). Images need a :func:`Flatten` first.
      output: ``(..., out_features)``.
      params: ``{"w": (D, out_features), "b": (out_features,)}`` (no ``"b"`` when
        ``use_bias=False``); state: ``()``.

    Args:
      out_features: ``H``, the number of output units, an int >= 1.
      use_bias: add the bias ``b``.
      w_init: initializer for ``w`` (``init(key, shape, dtype)``; any
        ``jax.nn.initializers`` initializer works). Default
        :func:`~funcnet.nn.initializers.he_normal` (a plain normal with ``Var = 2/D``,
        right for a ReLU that follows); pass ``xavier_normal()`` before sigmoid/tanh,
        ``lecun_normal()`` for the book's "Xavier" ``1/sqrt(D)`` scale. Flax's ``Dense``
        defaults to LeCun normal truncated at 2 sigma (``Var = 1/D``): pass
        ``jax.nn.initializers.lecun_normal()`` for the same draw.
      b_init: initializer for ``b``; default zeros.
      dtype: dtype of the params; ``None`` is JAX's default float dtype (float64 under
        ``jax_enable_x64``). The input and the params are promoted to their common dtype.

    Returns:
      A :class:`Layer` named ``"Dense(out_features)"``.

    Raises:
      TypeError: at construction, a non-int ``out_features``, a non-callable initializer
        or a non-float ``dtype``; in ``apply`` a non-float input (or a list).
      ValueError: at construction ``out_features < 1``; in ``init`` a bad ``input_shape``;
        in ``apply`` params that are not ``{"w": (D, H), "b": (H,)}`` with ``H ==
        out_features``, and (from :func:`funcnet.ops.affine`, prefixed with the layer
        name) an input whose last axis is not ``D``.

    References:
      Note 004 (Dense Layer, forward and backward).
    """
    H = _checks.static_int("Dense", "out_features", out_features, minimum=1)
    name = f"Dense({H})"
    check_weight_args(name, dtype, use_bias, w_init=w_init, b_init=b_init)
    shapes = {"w": (None, H), "b": (H,)} if use_bias else {"w": (None, H)}

    def init(key, input_shape):
        shape = check_input_shape(name, key, input_shape, range(1, 64), "(..., D)",
                                  needs=1)
        dt = check_dtype(name, dtype)
        return init_checked(name, apply, lambda k: (kernel_and_bias(
            k, (shape[-1], H), use_bias, w_init, b_init, dt), ()), key, shape, dt)

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, params = weights_and_input(name, params, state, x, shapes)
        with _checks.context(name):
            if use_bias:
                return ops.affine(x, params["w"], params["b"]), state
            return ops.matmul(x, params["w"]), state

    return Layer(init, apply, name)
